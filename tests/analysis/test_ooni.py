"""analysis.ooni: OONI's own verdict kept right, ours recomputed with the probe's judge, agreement."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load
from analysis.ooni import DNS_STEP_RULES, agreement, lenient_b64decode, recompute
from probe.records import __file__ as records_file
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def sample_files() -> dict[str, Path]:
    files = sorted(shared_path("data", "ooni-samples").rglob("*.json"))
    assert len(files) >= 17
    return {p.name: p for p in files}


@pytest.fixture(scope="module")
def frame(sample_files: dict[str, Path]) -> pd.DataFrame:
    f = load(list(sample_files.values())).frame
    return f.set_index(pd.Index([Path(x).name for x in f["file"]]))


def _m(sample_files: dict[str, Path], name: str) -> dict:
    return json.loads(sample_files[name].read_text())


def _na(v: object) -> object:
    return None if v is pd.NA or (not isinstance(v, str) and pd.isna(v)) else v


# Read by hand from each file's test_keys (blocking, accessible) and what the probe's judge
# must make of the raw data. verdict_source "ooni" = we cannot judge it (why in the comment).
BY_HAND = [
    # file, ooni_blocking, ooni_accessible, verdict_source, our blocking, our rule
    ("report1.json", "false", True, "recomputed", "false", "http.match"),  # 200, same title as the control
    ("report2.json", "false", True, "recomputed", "false", "http.match"),
    ("bug_352.json", "dns", False, "recomputed", "dns", "dns.bogon"),  # IR: answer 10.10.34.36 (private)
    ("web_connectivity_ir_fp.json", "dns", False, "recomputed", "dns", "dns.bogon"),  # same IR sinkhole
    ("web_connectivity_b64_hdr.json", "http-failure", False, "recomputed", "http-failure", "http.failure"),
    ("web_connectivity_odd_hdr.json", "dns", False, "recomputed", "dns", "dns.inconsistent_then_failure"),
    ("firefoxcom.measurement.json", "false", True, "recomputed", "false", "http.match"),
    ("issue-2456.measurement.json", "false", True, "recomputed", "false", "https.verified"),
    # Indonesia: archive.org redirected to lamanlabuh.aduankonten.id, the Kominfo blockpage that
    # OONI's fastpath fingerprint catches and the probe's blocking on its own did not
    ("20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json", "false", True, "recomputed", "http-diff",
     "http.blockpage"),
    # the control got only a CNAME and failed its own fetch (dns_lookup_error): down, not DNS blocking
    ("requests_none.json", "dns", False, "recomputed", "false", "dns.both_fail"),
    ("test_keys_none.json", None, None, "ooni", None, "ooni"),  # test_keys null
    ("web_connectivity_null.json", None, None, "ooni", None, "ooni"),  # control_failure connection_refused
    # https in v0.3.0 (no TLS records); the failure is ooniprobe's own unicode exception, not the network
    ("bug_351.json", "http-failure", False, "recomputed", None, "http.probe_error"),
    # v0.4 control has no TLS step, but its own fetch failed too: down (test_ooni_versions.py)
    ("web_connectivity_null2.json", None, None, "recomputed", "false", "tls.cert_both_fail"),
]


@pytest.mark.parametrize("name,ooni_b,ooni_a,vsource,ours_b,rule", BY_HAND, ids=[r[0][:40] for r in BY_HAND])
def test_measurements_read_by_hand(frame: pd.DataFrame, name: str, ooni_b: str | None, ooni_a: bool | None,
                                   vsource: str, ours_b: str | None, rule: str) -> None:
    r = frame.loc[name]
    assert _na(r.ooni_blocking) == ooni_b and _na(r.ooni_accessible) == ooni_a
    assert r.verdict_source == vsource and _na(r.blocking) == ours_b and r.rule == rule
    if vsource == "recomputed":
        assert r.reason  # every recomputed verdict says why


def test_ooni_verdict_columns_match_every_file(frame: pd.DataFrame, sample_files: dict[str, Path]) -> None:
    """Property over all samples: ooni_* are the file's own test_keys, whatever we recompute."""
    for name, path in sample_files.items():
        tk = json.loads(path.read_text()).get("test_keys") or {}
        b = tk.get("blocking")
        expect_b = "false" if b is False else b
        r = frame.loc[name]
        assert _na(r.ooni_blocking) == expect_b, name
        assert _na(r.ooni_accessible) == tk.get("accessible"), name
        assert r.source == "ooni"
        if r.verdict_source == "ooni":  # not recomputed: OONI's own verdict is the one used
            assert _na(r.blocking) == expect_b and _na(r.accessible) == tk.get("accessible") and r.rule == "ooni"
        else:
            assert r.verdict_source == "recomputed" and r.rule != "ooni"


def test_agreement(frame: pd.DataFrame) -> None:
    a = agreement(frame.reset_index(drop=True))
    assert a.n_ooni == 17 and a.n_compared == int((frame["verdict_source"] == "recomputed").sum()) == 15
    assert 0 < a.n_agree < a.n_compared and a.rate == pytest.approx(a.n_agree / a.n_compared)
    assert a.n_same_type <= a.n_compared and int(a.pairs["n"].sum()) == a.n_compared
    dis = a.disagreements
    assert len(dis) == a.n_compared - int(((frame["verdict_source"] == "recomputed")
                                           & (frame["outcome"].astype(str) == _ooni_outcomes(frame))
                                           & (frame["blocking"].astype("string").fillna("x")
                                              == frame["ooni_blocking"].astype("string").fillna("x"))).sum())
    assert set(dis.columns) >= {"measurement_uid", "input", "ooni_blocking", "blocking", "reason", "rule", "kind"}
    assert dis["reason"].str.len().min() > 0  # every disagreement has its reason
    names = {Path(f).name for f in dis["file"]}
    assert {"requests_none.json", "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json"} <= names
    # the clear cases agree
    assert not names & {"report1.json", "bug_352.json", "web_connectivity_ir_fp.json", "firefoxcom.measurement.json",
                        "web_connectivity_b64_hdr.json", "issue-2456.measurement.json"}
    idn = dis[dis["file"].str.endswith("5a37ec909dbf14e3.json")].iloc[0]
    assert "lamanlabuh" in idn["reason"] and idn["kind"] == "outcome"


def _ooni_outcomes(frame: pd.DataFrame) -> pd.Series:
    b = frame["ooni_blocking"].astype("string")
    a = frame["ooni_accessible"]
    out = pd.Series("inconclusive", index=frame.index)
    out[(b.notna() & (b != "false")).fillna(False).astype(bool)] = "blocked"
    out[((b == "false") & (a == True)).fillna(False).astype(bool)] = "accessible"
    out[((b == "false") & (a == False)).fillna(False).astype(bool)] = "down"
    return out


def test_agreement_on_a_frame_without_ooni_rows(frame: pd.DataFrame) -> None:
    a = agreement(frame.iloc[0:0])
    assert (a.n_compared, a.rate, len(a.disagreements)) == (0, None, 0)


# --------------------------------------------------------------------------- recompute on edited data


def test_no_control_means_no_recompute(sample_files: dict[str, Path]) -> None:
    m = _m(sample_files, "report1.json")
    assert recompute(m) is not None
    for edit in ({"control": {}}, {"control_failure": "generic_timeout_error"}):
        mm = copy.deepcopy(m)
        mm["test_keys"].update(edit)
        assert recompute(mm) is None
    mm = copy.deepcopy(m)
    del mm["test_keys"]["control"]
    assert recompute(mm) is None
    assert recompute({**m, "input": "ftp://x"}) is None
    assert recompute({**m, "test_keys": None}) is None


def test_old_https_keeps_only_dns_step_verdicts(sample_files: dict[str, Path]) -> None:
    # bug_352 is https in v0.0.1 (no tls_handshakes): the bogon answer decides at the DNS step
    r = recompute(_m(sample_files, "bug_352.json"))
    assert r is not None and r.rule in DNS_STEP_RULES
    # bug_351 is https in v0.3.0 with a consistent DNS answer: judging it would need TLS records
    m = _m(sample_files, "bug_351.json")
    m["test_keys"]["http_experiment_failure"] = "connection_reset"
    assert recompute(m) is None


def test_mitm_chain_in_ooni_data_is_ours_to_see(sample_files: dict[str, Path], tmp_path: Path) -> None:
    """An OONI v0.5 measurement whose chain carries the Qaznet root: tls_mitm, and mitm_root set."""
    m = _m(sample_files, "firefoxcom.measurement.json")
    qaznet = (Path(records_file).parent / "data" / "mitm-roots" /
              "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2.pem").read_text()
    der = base64.b64encode(base64.b64decode("".join(l for l in qaznet.splitlines() if "-----" not in l))).decode()
    for h in m["test_keys"]["tls_handshakes"]:
        h["peer_certificates"] = h["peer_certificates"][:1] + [{"data": der, "format": "base64"}]
    r = recompute(m)
    assert r is not None and (r.blocking, r.rule) == ("tls_mitm", "tls_mitm.known_root")
    (tmp_path / "m.json").write_text(json.dumps(m))
    row = load([tmp_path]).frame.iloc[0]
    assert row.mitm_root == "CN=Qaznet Trust Network,C=KZ" and row.blocking == "tls_mitm"
    assert row.tls_issuers.endswith("CN=Qaznet Trust Network,C=KZ")
    assert row.ooni_blocking == "false"  # OONI's own verdict stays beside ours


def test_doh_answers_of_the_probe_are_not_its_dns(sample_files: dict[str, Path]) -> None:
    """v0.5 also resolves over DoH from the vantage; a lying system resolver must still show."""
    m = _m(sample_files, "firefoxcom.measurement.json")
    tk = m["test_keys"]
    for q in tk["queries"]:
        if q.get("engine") != "doh":
            q["answers"] = [{"answer_type": "A", "ipv4": "10.10.34.36", "ttl": None}]
    r = recompute(m)
    assert r is not None and (r.blocking, r.rule) == ("dns", "dns.bogon")


@pytest.mark.parametrize("text,expect", [("aGk=", b"hi"), ("aGk", b"hi"), ("a G k =", b"hi"), ("!!!", b""), ("", b"")])
def test_lenient_b64(text: str, expect: bytes) -> None:
    assert lenient_b64decode(text) == expect


def test_bad_base64_body_does_not_break_the_judge(sample_files: dict[str, Path]) -> None:
    r = recompute(_m(sample_files, "web_connectivity_b64_incorrect.json"))
    assert r is not None and r.reason


def test_the_observations_hand_over_the_probe_addresses_they_walked(sample_files: dict[str, Path]) -> None:
    """``_observe`` reads the probe's addresses off the queries itself and hands them to the record
    (``WebObservations.probe_addresses``, which the verdict's facts read): the very addresses, in the
    order, that the record works out from its queries (a copy made by ``dataclasses.replace`` has none
    handed over). OONI's samples have no ``x_replies`` (ours): a hand-made query with replies, a
    duplicate, IPv6 and addresses only in the replies or only in the answers checks that half too."""
    import dataclasses

    from analysis.ooni import NotJudgeable, _observe

    seen = 0
    for name in sorted(sample_files):
        try:
            obs = _observe(_m(sample_files, name))[0]
        except NotJudgeable:
            continue
        fresh = dataclasses.replace(obs)
        assert "_probe_addresses" not in fresh.__dict__ and fresh == obs
        assert obs.__dict__["_probe_addresses"] == fresh.probe_addresses() == obs.probe_addresses(), name
        seen += bool(obs.probe_addresses())
    assert seen >= 10

    m = None
    for name in sorted(sample_files):  # the first judgeable sample with a query, its queries replaced
        try:
            if _observe(_m(sample_files, name))[0].queries:
                m = _m(sample_files, name)
                break
        except NotJudgeable:
            continue
    assert m is not None

    def ans(ip: str) -> dict[str, str]:
        return {"answer_type": "AAAA", "ipv6": ip} if ":" in ip else {"answer_type": "A", "ipv4": ip}

    host = m["test_keys"]["queries"][0]["hostname"]
    m["test_keys"]["queries"] = [
        {"hostname": host, "query_type": "A", "engine": "udp", "resolver_address": "192.0.2.53:53", "failure": None,
         "answers": [ans("192.0.2.1"), ans("192.0.2.9")],
         "x_replies": [{"t": 0.01, "raw": "", "source": "udp", "answers": [ans("192.0.2.1"), ans("2001:db8::1")]},
                       {"t": 0.02, "raw": "", "source": "udp", "answers": [ans("198.51.100.7"), ans("192.0.2.1")]}]},
        {"hostname": host, "query_type": "AAAA", "engine": "udp", "resolver_address": "192.0.2.53:53",
         "failure": None, "answers": [ans("2001:db8::1")],
         "x_replies": [{"t": 0.03, "raw": "", "source": "udp", "answers": [ans("2001:db8::2")]}]},
    ]
    obs = _observe(m)[0]
    want = ("192.0.2.1", "2001:db8::1", "198.51.100.7", "192.0.2.9", "2001:db8::2")
    assert tuple(dict.fromkeys(a for q in obs.queries for a in q.all_reply_addresses())) == want
    assert obs.__dict__["_probe_addresses"] == want == dataclasses.replace(obs).probe_addresses()


@pytest.mark.parametrize("control_connects", [False, True], ids=["th-skips-bogons", "th-refused-on-bogons"])
def test_a_bogon_among_good_answers_at_probe_and_control_is_judged_on_the_good_ones(
        sample_files: dict[str, Path], control_connects: bool) -> None:
    """Break test 24, finding 2, on OONI's data: the answers (probe and control alike) mix the site's public
    addresses with 127.0.0.1, 10.10.34.36 and 0.0.0.0 (all three DNS blockpage fingerprints too), OONI's probe
    tried them (connection_refused), the public ones worked and the page matches the control's: accessible,
    as OONI's classic analysis says (the answers overlap the control's: consistent; a final response without
    HTTP diff: blocking false, accessible true). Was dns.site_own_answer, "down"."""
    m = _m(sample_files, "report1.json")
    tk = m["test_keys"]
    odd = ["127.0.0.1", "10.10.34.36", "0.0.0.0"]
    tk["queries"][0]["answers"] += [{"answer_type": "A", "ipv4": a, "ttl": None} for a in odd]
    tk["control"]["dns"]["addrs"] += odd
    refused = {"blocked": False, "failure": "connection_refused", "success": False}
    tk["tcp_connect"] = [{"ip": a, "port": 80, "status": refused} for a in odd] + tk["tcp_connect"]
    if control_connects:
        tk["control"]["tcp_connect"].update({f"{a}:80": {"status": False, "failure": "connection_refused"}
                                             for a in odd})
    r = recompute(m)
    assert r is not None and (r.blocking, r.accessible, r.rule) == (False, True, "http.match"), r
    # the same answers, all non-global: the site's own DNS, down (webconnectivityqa localhostWithHTTP)
    tk["queries"][0]["answers"] = [a for a in tk["queries"][0]["answers"] if a.get("ipv4") in odd]
    tk["control"]["dns"]["addrs"] = odd
    tk["tcp_connect"] = [c for c in tk["tcp_connect"] if c["ip"] in odd]
    r = recompute(m)
    assert r is not None and (r.blocking, r.accessible, r.rule) == (False, False, "dns.site_own_answer"), r
