"""Golden df-000 records, one per verdict kind, compared field by field; and the OONI field
rules (ooni/spec df-000, df-001, df-002, df-005, df-006, ts-017) checked on each.

The observations are deterministic (tests/record_cases.py). Volatile fields (the
measurement uid, kzprobe's version) are normalised. To accept a deliberate change of the
format: ``KZPROBE_UPDATE_GOLDEN=1 pytest tests/test_record_golden.py``, then review the diff of
tests/data/golden/ (and say in docs/ooni-records.md why).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from probe import records, schema, vocab
from tests import record_cases

GOLDEN = Path(__file__).parent / "data" / "golden"
CASES = {k: (obs, v) for k, obs, v in record_cases.cases()}
#: OONI's web_connectivity test_keys (ts-017 and the data formats it includes); every other key must be x_.
OONI_TEST_KEYS = {"agent", "queries", "tcp_connect", "tls_handshakes", "requests", "control", "control_failure",
                  "dns_experiment_failure", "http_experiment_failure", "dns_consistency", "body_length_match",
                  "body_proportion", "status_code_match", "headers_match", "title_match", "blocking", "accessible"}
#: df-000's top-level keys (those we write); every other must be x_.
DF000_KEYS = {"annotations", "data_format_version", "input", "measurement_start_time", "probe_asn", "probe_cc",
              "probe_ip", "probe_network_name", "report_id", "software_name", "software_version", "test_helpers",
              "test_name", "test_runtime", "test_start_time", "test_version", "test_keys"}


def normalised(rec: dict[str, Any]) -> dict[str, Any]:
    rec = json.loads(json.dumps(rec))
    rec["x_measurement_uid"] = "<uid>"
    rec["software_version"] = rec["annotations"]["engine_version"] = "<version>"
    return rec


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Every field where ``a`` (got) and ``b`` (golden) differ, as ``path: got != golden``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: missing (golden has it)" for k in b if k not in a]
        out += [f"{path}.{k}: not in golden" for k in a if k not in b]
        return out + [d for k in a if k in b for d in diff(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r:.80} != {b!r:.80}"]


@pytest.fixture(scope="module")
def recs() -> dict[str, dict[str, Any]]:
    return {k: normalised(record_cases.record(obs, v)) for k, (obs, v) in CASES.items()}


@pytest.mark.parametrize("kind", record_cases.KINDS)
def test_record_matches_its_golden_file(kind: str, recs: dict[str, dict[str, Any]]) -> None:
    path = GOLDEN / f"df000-{kind}.json"
    if os.environ.get("KZPROBE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recs[kind], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    golden = json.loads(path.read_text(encoding="utf-8"))
    problems = diff(recs[kind], golden)
    assert not problems, f"{kind}: the record differs from {path.name}:\n" + "\n".join(problems[:40])


def test_one_golden_file_per_verdict_kind() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("df000-*.json")) == sorted(f"df000-{k}" for k in record_cases.KINDS)
    got = {k: vocab.verdict_word(*schema.our_verdict(json.loads((GOLDEN / f"df000-{k}.json").read_text())["test_keys"]))
           for k in record_cases.KINDS}
    assert got == {**{k: k for k in record_cases.KINDS}, "accessible": "false"}


@pytest.mark.parametrize("kind", record_cases.KINDS)
def test_every_key_written_is_in_the_schema(kind: str, recs: dict[str, dict[str, Any]]) -> None:
    """Decoding into probe.schema.Measurement and encoding back gives the record: no key is
    written that the schema (and so the loader) does not know."""
    rec = recs[kind]
    back = schema.to_json(msgspec.convert(rec, schema.Measurement))
    assert not diff(back, rec)


@pytest.mark.parametrize("kind", record_cases.KINDS)
def test_ooni_keys_hold_ooni_vocabulary_and_ours_are_x_keys(kind: str, recs: dict[str, dict[str, Any]]) -> None:
    rec = recs[kind]
    tk = rec["test_keys"]
    assert tk["blocking"] in (False, None, *vocab.OONI_BLOCKING_TYPES)  # ts-017; ooni/backend fastpath
    assert tk["dns_consistency"] in ("consistent", "reverse_match", "inconsistent", None)  # ts-017
    assert tk["accessible"] in (True, False, None)
    if tk["accessible"] is True:  # ts-017: "blocking is set to false if accessible is true"
        assert tk["blocking"] is False
    if isinstance(tk["blocking"], str):  # OONI's setBlockingString: a blocked site is not accessible
        assert tk["accessible"] is False
    assert all(k.startswith("x_") for k in set(tk) - OONI_TEST_KEYS), set(tk) - OONI_TEST_KEYS
    assert all(k.startswith("x_") for k in set(rec) - DF000_KEYS), set(rec) - DF000_KEYS
    assert "x_blocking" in tk and "x_accessible" in tk and "x_dns_consistency" in tk
    assert rec["test_version"] == schema.TEST_VERSION and rec["test_version"] not in ("0.0.1", "0.1.0")
    assert not rec["test_version"].startswith(("0.4", "0.5"))
    for k in ("body_length_match", "status_code_match", "headers_match", "title_match"):
        assert tk[k] in (True, False, None)
    assert tk["body_proportion"] is None or 0 <= tk["body_proportion"] <= 1
    if tk["control"] == {} or tk["control"].get("failure"):
        assert tk["control_failure"] and vocab.is_control_failure(tk["control_failure"])  # ts-017
    for h in tk["tls_handshakes"]:  # df-006
        assert h["no_tls_verify"] is False and "sni=target" in h["tags"] and "alpn" not in h
        assert all(set(c) == {"format", "data"} for c in h["peer_certificates"])
    for h in tk["control"].get("tls_handshake", {}).values():
        assert h["server_name"] == record_cases.DOMAIN
    for c in tk["tcp_connect"]:  # df-005 + ts-017 "blocked"
        assert set(c["status"]) == {"success", "failure", "blocked"}
    for q in tk["queries"]:  # df-002
        assert {"answers", "engine", "failure", "hostname", "query_type", "resolver_address", "t"} <= set(q)


def test_tls_mitm_is_a_failed_verification_with_the_chain_kept(recs: dict[str, dict[str, Any]]) -> None:
    tk = recs["tls_mitm"]["test_keys"]
    (h,) = tk["tls_handshakes"]
    assert (h["failure"], h["no_tls_verify"], h["x_handshake_failure"]) == ("ssl_unknown_authority", False, None)
    assert [c["data"] for c in h["peer_certificates"]] == [record_cases.MITM_LEAF, record_cases.QAZNET]
    assert (tk["blocking"], tk["accessible"], tk["x_blocking"]) == ("http-failure", False, "tls_mitm")
    assert tk["x_mitm"]["mitm"] and tk["x_mitm"]["root_tag"]


def test_tls_block_keeps_the_retries_out_of_tls_handshakes(recs: dict[str, dict[str, Any]]) -> None:
    tk = recs["tls"]["test_keys"]
    (h,) = tk["tls_handshakes"]
    assert h["failure"] == h["x_handshake_failure"] == "connection_reset" and h["server_name"] == record_cases.DOMAIN
    assert h["x_alpn_offered"] == ["h2", "http/1.1"]
    extra = tk["x_tls_handshakes"]
    assert [x["tags"][0] for x in extra] == ["sni=benign", "sni=none"] and all(x["failure"] is None for x in extra)
    assert (tk["blocking"], tk["x_blocking"]) == ("http-failure", "tls")
    # webconnectivityqa tlsBlockingConnectionReset: OONI records the TLS failure as the HTTP experiment's
    assert (tk["http_experiment_failure"], tk["requests"]) == ("connection_reset", [])


def test_throttling_is_accessible_in_ooni_words(recs: dict[str, dict[str, Any]]) -> None:
    tk = recs["throttling"]["test_keys"]
    assert (tk["blocking"], tk["accessible"], tk["x_blocking"], tk["x_accessible"]) == (False, True, "throttling", True)


def test_match_keys_http_diff(recs: dict[str, dict[str, Any]]) -> None:
    tk = recs["http-diff"]["test_keys"]
    # a 153-byte blockpage against the control's page: proportion 153/1341, titles differ,
    # only common headers (and Set-Cookie) shared, the same status
    assert tk["body_proportion"] == pytest.approx(len(record_cases.BLOCKPAGE) / len(record_cases.PAGE), abs=1e-6)
    assert (tk["body_length_match"], tk["status_code_match"], tk["headers_match"], tk["title_match"]) == \
        (False, True, False, False)
    ok = recs["accessible"]["test_keys"]
    assert (ok["body_length_match"], ok["body_proportion"], ok["status_code_match"], ok["headers_match"],
            ok["title_match"]) == (True, 1.0, True, True, True)


def test_headers_keep_the_first_of_repeated_ones_and_all_in_headers_list(recs: dict[str, dict[str, Any]]) -> None:
    resp = recs["http-diff"]["test_keys"]["requests"][0]["response"]
    assert resp["headers"]["Set-Cookie"] == "a=1"  # df-001: "the map SHOULD only contain the first value"
    assert [v for k, v in resp["headers_list"] if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert resp["body"] == record_cases.BLOCKPAGE.decode()  # df-001: a string when UTF-8


def test_body_is_base64_binary_data_only_when_not_utf8() -> None:
    assert records.maybe_binary("тест".encode()) == "тест"
    raw = b"\xff\xfe<html>\x00"
    assert records.maybe_binary(raw) == schema.BinaryData(data=base64.b64encode(raw).decode())
    assert records.headers_map([("X-A", "1"), ("x-a", "2"), ("Y", "\udcff")]) == {
        "X-A": "1", "Y": schema.BinaryData(data=base64.b64encode(b"\xff").decode())}


def test_test_helpers_and_control_failure_without_a_helper() -> None:
    obs, v = CASES["accessible"]
    from dataclasses import replace

    no_helper = replace(obs, control=None)
    rec = record_cases.record(no_helper, v, run=replace(record_cases.RUN, test_helper=None))
    assert rec["test_helpers"] == {} and rec["test_keys"]["control"] == {}
    why = vocab.parse_control_failure(rec["test_keys"]["control_failure"])
    assert why == "no test helper configured (DNS control only)"
    run = replace(record_cases.RUN, test_helper=records.helper_address("https://user:pw@th.example.org:8443/x?t=1"))
    rec = record_cases.record(no_helper, v, run=run)
    assert rec["test_helpers"] == {"backend": {"address": "https://th.example.org:8443", "type": "https"}}
    assert "no answer" in rec["test_keys"]["control_failure"]
    rec = record_cases.record(obs, v, run=run)
    assert rec["test_keys"]["control_failure"] is None
