"""analysis.ooni_apps: OONI's messaging-app and circumvention tests, loaded with their own verdict fields
(issue 14 part 4), and used for the claims about messaging and circumvention.

No real measurement of these tests is in shared/data (only web_connectivity): the rows below are
CRAFTED test keys. Those marked "spec example" carry the verdict keys of the example output in
ooni/spec (ts-015 psiphon, ts-016 vanilla_tor, ts-018 whatsapp, ts-019 facebook_messenger, ts-020
telegram, ts-023 tor, ts-026 riseupvpn, ts-030 torsf); the others change one key as the row says.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.claims import Claim, load_claims
from analysis.compare import compare
from analysis.load import load
from analysis.ooni_apps import APP_TESTS, STANDS_FOR, judge_app, method_of

TELEGRAM_OK = {"telegram_http_blocking": False, "telegram_tcp_blocking": False, "telegram_web_failure": None,
               "telegram_web_status": "ok"}  # spec example (ts-020)
WHATSAPP_OK = {"registration_server_failure": None, "registration_server_status": "ok",
               "whatsapp_endpoints_blocked": [], "whatsapp_endpoints_status": "ok", "whatsapp_web_failure": None,
               "whatsapp_web_status": "ok"}  # spec example (ts-018)
TOR_EXAMPLE = {"dir_port_total": 10, "dir_port_accessible": 9, "obfs4_total": 14, "obfs4_accessible": 14,
               "or_port_dirauth_total": 10, "or_port_dirauth_accessible": 10, "or_port_total": 0,
               "or_port_accessible": 0}  # spec example (ts-023)
TOR_NONE = {**TOR_EXAMPLE, "dir_port_accessible": 0, "or_port_dirauth_accessible": 0, "obfs4_accessible": 3}

# (id, test_name, test_keys, extra measurement keys, expected (blocking, accessible, rule))
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], tuple[Any, Any, str]]] = [
    ("telegram-ok-spec", "telegram", TELEGRAM_OK, {}, (False, True, "ooni.telegram.ok")),
    ("telegram-tcp", "telegram", {**TELEGRAM_OK, "telegram_tcp_blocking": True, "telegram_http_blocking": True},
     {}, ("tcp_ip", False, "ooni.telegram.tcp_blocking")),
    ("telegram-http", "telegram", {**TELEGRAM_OK, "telegram_http_blocking": True}, {},
     ("http-failure", False, "ooni.telegram.http_blocking")),
    ("telegram-web-tls", "telegram", {**TELEGRAM_OK, "telegram_web_status": "blocked",
                                      "telegram_web_failure": "ssl_invalid_hostname"}, {},
     ("tls", False, "ooni.telegram.web_blocked")),
    ("whatsapp-ok-spec", "whatsapp", WHATSAPP_OK, {}, (False, True, "ooni.whatsapp.ok")),
    ("whatsapp-endpoints", "whatsapp", {**WHATSAPP_OK, "whatsapp_endpoints_status": "blocked"}, {},
     ("tcp_ip", False, "ooni.whatsapp.endpoints_blocked")),
    ("whatsapp-registration-dns", "whatsapp", {**WHATSAPP_OK, "registration_server_status": "blocked",
                                               "registration_server_failure": "dns_nxdomain_error"}, {},
     ("dns", False, "ooni.whatsapp.registration_blocked")),
    ("signal-ok", "signal", {"signal_backend_status": "ok", "signal_backend_failure": None}, {},
     (False, True, "ooni.signal.ok")),
    ("signal-blocked", "signal", {"signal_backend_status": "blocked", "signal_backend_failure": "connection_reset"},
     {"test_version": "0.2.0", "measurement_start_time": "2021-02-15 17:33:22"},
     ("http-failure", False, "ooni.signal.backend_blocked")),
    ("signal-untrusted-after-ca-change", "signal",
     {"signal_backend_status": "blocked", "signal_backend_failure": "ssl_unknown_authority"},
     {"test_version": "0.2.0", "measurement_start_time": "2022-11-01 10:00:00"},
     (None, None, "ooni.signal.untrusted")),
    ("messenger-ok-spec", "facebook_messenger", {"facebook_dns_blocking": False, "facebook_tcp_blocking": False}, {},
     (False, True, "ooni.facebook_messenger.ok")),
    ("messenger-dns-legacy-keys", "facebook_messenger",
     {"facebook-dns-blocking": True, "facebook-tcp-blocking": False}, {},
     ("dns", False, "ooni.facebook_messenger.dns_blocking")),
    ("messenger-tcp", "facebook_messenger", {"facebook_dns_blocking": False, "facebook_tcp_blocking": True}, {},
     ("tcp_ip", False, "ooni.facebook_messenger.tcp_blocking")),
    ("tor-ok-spec", "tor", TOR_EXAMPLE, {}, (False, True, "ooni.tor.ok")),
    ("tor-dirauths-blocked", "tor", TOR_NONE, {}, ("tcp_ip", False, "ooni.tor.dirauth_blocked")),
    ("tor-no-targets", "tor", {"targets": {}}, {}, (None, None, "ooni.tor.no_targets")),
    ("psiphon-ok-spec", "psiphon", {"bootstrap_time": 6.604589285, "failure": None, "max_runtime": 60}, {},
     (False, True, "ooni.psiphon.ok")),
    ("psiphon-bootstrap-failed", "psiphon", {"bootstrap_time": 0, "failure": "generic_timeout_error"}, {},
     ("http-failure", False, "ooni.psiphon.failed")),
    ("psiphon-invalid", "psiphon", {"bootstrap_time": 0, "failure": None}, {}, (None, None, "ooni.psiphon.invalid")),
    ("riseup-ok", "riseupvpn", {"api_status": "ok", "api_failure": None, "ca_cert_status": True,
                                "transport_status": {"obfs4": "ok", "openvpn": "ok"}}, {},
     (False, True, "ooni.riseupvpn.ok")),
    ("riseup-one-gateway-down-is-not-blocking", "riseupvpn",
     {"api_status": "ok", "transport_status": {"obfs4": "blocked", "openvpn": "ok"},
      "failing_gateways": [{"ip": "192.0.2.1", "port": 443, "transport_type": "obfs4"}]}, {},
     (False, True, "ooni.riseupvpn.ok")),
    ("riseup-transports", "riseupvpn", {"api_status": "ok", "transport_status": {"obfs4": "blocked",
                                                                                "openvpn": "blocked"}}, {},
     ("tcp_ip", False, "ooni.riseupvpn.transports_blocked")),
    ("riseup-api", "riseupvpn", {"api_status": "blocked", "api_failure": "invalid_ca"}, {},
     ("http-failure", False, "ooni.riseupvpn.api_blocked")),
    ("torsf-ok-spec", "torsf", {"bootstrap_time": 316.569053291, "failure": None}, {}, (False, True, "ooni.torsf.ok")),
    ("torsf-timeout", "torsf", {"bootstrap_time": 0, "failure": "generic_timeout_error"}, {},
     ("http-failure", False, "ooni.torsf.failed")),
    ("vanilla-tor-ok-spec", "vanilla_tor", {"success": True, "tor_progress": 100, "failure": None}, {},
     (False, True, "ooni.vanilla_tor.ok")),
    ("vanilla-tor-failed", "vanilla_tor", {"success": False, "tor_progress": 10, "failure": "generic_timeout_error",
                                           "error": "timeout-reached"}, {},
     ("http-failure", False, "ooni.vanilla_tor.failed")),
    ("not-run-no-tor-binary", "vanilla_tor", {"success": False, "failure": "exec: \"tor\": executable file not found"},
     {}, (None, None, "ooni.not_run")),
    ("not-run-top-level", "telegram", {"failure": "interrupted", "failed_operation": "top_level"}, {},
     (None, None, "ooni.not_run")),
]


def measurement(test: str, tk: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    m = {"test_name": test, "test_version": "0.1.0", "input": None, "probe_cc": "KZ", "probe_asn": "AS9198",
         "report_id": f"20210110T000000Z_{test}_KZ_9198_n1_x", "measurement_start_time": "2021-01-10 10:00:00",
         "data_format_version": "0.2.0", "software_name": "ooniprobe-android", "test_keys": tk}
    return m | extra


@pytest.mark.parametrize("test,tk,extra,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_tests_own_verdict(test: str, tk: dict[str, Any], extra: dict[str, Any],
                                expect: tuple[Any, Any, str]) -> None:
    v = judge_app(measurement(test, tk, **extra))
    assert (v.blocking, v.accessible, v.rule) == expect
    assert v.reason


def test_every_app_test_has_a_case_and_a_stand_in() -> None:
    assert set(APP_TESTS) == {"telegram", "whatsapp", "signal", "facebook_messenger", "tor", "psiphon", "riseupvpn",
                              "torsf", "vanilla_tor"}
    assert {c[1] for c in CASES} == set(APP_TESTS)
    assert all("." in STANDS_FOR[t] for t in APP_TESTS)


def test_judge_app_refuses_other_tests_and_odd_keys() -> None:
    with pytest.raises(ValueError, match="not an app"):
        judge_app(measurement("web_connectivity", {}))
    assert judge_app(measurement("telegram", None)).rule == "ooni.no_test_keys"
    assert judge_app(measurement("tor", {"dir_port_total": "ten", "dir_port_accessible": True})).blocking is None


@pytest.mark.parametrize("failure,op,expect", [
    ("dns_nxdomain_error", None, "dns"), ("connection_refused", None, "tcp_ip"),
    ("generic_timeout_error", "connect", "tcp_ip"), ("ssl_invalid_hostname", None, "tls"),
    ("connection_reset", "tls_handshake", "tls"), ("eof_error", None, "http-failure"), (None, None, "http-failure"),
])
def test_method_of(failure: str | None, op: str | None, expect: str) -> None:
    assert method_of(failure, op) == expect


# --------------------------------------------------------------------------- loaded into the frame

def _write(tmp_path: Path, ms: list[dict[str, Any]]) -> Path:
    p = tmp_path / "ooni.jsonl"
    p.write_text("".join(json.dumps(m) + "\n" for m in ms))
    return p


def _web(sample: Path) -> dict[str, Any]:
    return json.loads(sample.read_text())


@pytest.fixture()
def mixed(tmp_path: Path) -> pd.DataFrame:
    from tests.conftest import shared_path

    web = _web(shared_path("data", "ooni-samples", "ooni-backend-fastpath-fixtures", "report1.json"))
    ms = []
    for copy in range(40):  # 40 rounds: long enough for the loader's fast path; each its own report (no duplicates)
        ms += [measurement(c[1], c[2], **c[3], report_id=f"r{copy}-{i}") for i, c in enumerate(CASES)]
        ms += [web | {"report_id": f"w{copy}-{i}", "measurement_uid": None} for i in range(3)]
        ms += [measurement("ndt", {"failure": None}, report_id=f"n{copy}")]
    return load([_write(tmp_path, ms)]).frame


def test_app_tests_load_with_their_own_verdict(mixed: pd.DataFrame) -> None:
    apps = mixed[mixed["test_name"].astype(str).isin(APP_TESTS)]
    assert len(apps) == len(CASES) * 40 and (mixed["test_name"].astype(str) == "web_connectivity").sum() == 120
    assert "ndt" not in set(mixed["test_name"].astype(str))  # other tests are still skipped
    assert (apps["verdict_source"].astype(str) == "ooni").all() and (apps["source"].astype(str) == "ooni").all()
    first = apps.drop_duplicates("rule").set_index("rule")
    assert first.loc["ooni.telegram.tcp_blocking", "blocking"] == "tcp_ip"
    assert first.loc["ooni.telegram.tcp_blocking", "outcome"] == "blocked"
    assert first.loc["ooni.tor.ok", "outcome"] == "accessible"
    assert first.loc["ooni.signal.untrusted", "outcome"] == "inconclusive"
    assert first.loc["ooni.tor.ok", "domain"] == "torproject.org"
    # OONI's own verdict is the verdict, and it is kept beside it too
    assert (apps["ooni_blocking"].astype("string").fillna("-") == apps["blocking"].astype("string").fillna("-")).all()


def test_claims_use_app_tests_by_name_never_by_domain(mixed: pd.DataFrame) -> None:
    def claim(**kw: Any) -> Claim:
        return Claim(id="B1-x", section="B1", quote="q", expect="intermittent", quantifier="some",
                     period_start=date(2021, 1, 1), period_end=date(2021, 1, 31), **kw)

    by_test = compare([claim(ooni_tests=("telegram",))], mixed).iloc[0]
    assert by_test["n"] == 5 * 40 and by_test["status"] == "supported"
    assert "OONI telegram" in by_test["explanation"]
    by_domain = compare([claim(targets=("telegram.org",))], mixed).iloc[0]
    assert by_domain["status"] == "not_measured"  # the app test is not the web site


def test_shipped_claims_name_the_app_tests() -> None:
    by = {c.id: c for c in load_claims()}
    circ = {"tor", "psiphon", "riseupvpn", "torsf", "vanilla_tor"}
    msg = {"telegram", "whatsapp", "signal", "facebook_messenger"}
    for cid in ("B1-circumvention-148", "B1-anonymizers-blocked", "C4-circumvention-148"):
        assert set(by[cid].ooni_tests) == circ, cid
    for cid in ("B1-social-interference", "B8-messaging-before-protests", "B8-periodic-restrictions"):
        assert set(by[cid].ooni_tests) == msg, cid


def test_many_circumvention_tools_from_app_tests(tmp_path: Path) -> None:
    """'148 tools' (quantifier many): Tor and Psiphon blocked is two tools — not yet 'many'; three is."""
    c = {c.id: c for c in load_claims()}["B1-circumvention-148"]
    blocked = [measurement("tor", TOR_NONE, measurement_start_time="2020-07-0%d 10:00:00" % d) for d in (1, 2)]
    blocked += [measurement("psiphon", {"bootstrap_time": 0, "failure": "generic_timeout_error"},
                            measurement_start_time="2020-07-0%d 10:00:00" % d) for d in (1, 2)]
    two = load([_write(tmp_path, blocked)]).frame
    assert compare([c], two).iloc[0]["status"] == "inconclusive"
    more = blocked + [measurement("riseupvpn", {"api_status": "blocked", "api_failure": "connection_reset"},
                                  measurement_start_time="2020-07-0%d 10:00:00" % d) for d in (1, 2)]
    three = load([_write(tmp_path, more)]).frame
    r = compare([c], three).iloc[0]
    assert r["status"] == "supported", r["explanation"]


def test_load_row_dispatches_app_tests() -> None:
    """analysis.load.row (also what `kzprobe ooni sync --test telegram` stores) gives an app test its own verdict."""
    from analysis.load import COLUMNS, row

    m = measurement("telegram", {**TELEGRAM_OK, "telegram_tcp_blocking": True})
    r = row(m, "f", 1)
    assert set(r) == set(COLUMNS)
    assert (r["test_name"], r["blocking"], r["rule"], r["verdict_source"]) == (
        "telegram", "tcp_ip", "ooni.telegram.tcp_blocking", "ooni")
