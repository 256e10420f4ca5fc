"""Lab scenarios pki-world, controls-world and controls-down: what the records carry beyond the
verdict (the verdicts themselves: test_lab_e2e.test_verdict_equals_truth, every shipped scenario)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from probe.lab.topology import SNIPROXY_IP

pytestmark = pytest.mark.lab


def _by_input(run, vantage: str | None = None) -> dict[str, dict]:
    return {r["input"]: r for r in run.records
            if vantage is None or r.get("annotations", {}).get("lab_vantage") == vantage}


def test_sni_proxy_is_accessible_and_the_dns_answer_recorded(lab_run) -> None:
    """The ISP's DNS sent the probe to its transparent proxy: accessible, and the record keeps the
    proxy's address as the answer and says it differs from the control's (webconnectivityqa
    dnsHijackingToProxyWithHTTPSURL)."""
    recs = _by_input(lab_run("pki-world"))
    for url in ("https://sniproxy.example.kz/", "http://sniproxy-http.example.kz/"):
        tk = recs[url]["test_keys"]
        answers = [a.get("ipv4") for q in tk["queries"] for a in (q.get("answers") or [])]
        assert SNIPROXY_IP in answers, url
        assert tk["blocking"] is False and tk["accessible"] is True, url
        assert any(SNIPROXY_IP in f and "differ from the control" in f for f in tk["x_findings"]), tk["x_findings"]
        assert tk["requests"], url  # the page fetched through the proxy is in the record


def test_site_certificate_faults_carry_ooni_failure_strings(lab_run) -> None:
    """Site faults are seen at the control too and named as OONI names them (badSSL* cases)."""
    recs = _by_input(lab_run("pki-world"))
    want = {"https://expired.example.kz/": "ssl_invalid_certificate",
            "https://wrong-name.example.kz/": "ssl_invalid_hostname",
            "https://unknown-ca.example.kz/": "ssl_unknown_authority",
            "https://leaf-only.example.kz/": "ssl_unknown_authority"}
    for url, failure in want.items():
        tk = recs[url]["test_keys"]
        assert tk["x_rule"] == "tls.both_invalid", (url, tk["x_reason"])
        assert failure in tk["x_reason"], (url, tk["x_reason"])


@pytest.mark.parametrize("vantage", ["vhdrop", "vhrst", "vhstall", "vhfrozen"])
def test_failed_helper_is_named_and_the_probe_fetch_kept(lab_run, vantage: str) -> None:
    """Where the censor blocks, resets or stalls the helper: the inputs that needed it are
    inconclusive with the helper named in the reason; the probe's own fetch is in the record; no
    input is lost."""
    run = lab_run("controls-world")
    recs = _by_input(run, vantage)
    assert len(recs) == 5  # every input of the vantage measured
    http = recs["http://open-http.example.kz/"]["test_keys"]
    assert http["blocking"] is None and "helper" in http["x_reason"] and "control_failure" in http["x_reason"]
    assert http["requests"] and http["requests"][0]["response"]["code"] == 200  # the probe's own fetch
    ip = recs["https://ip-blocked.example.kz/"]["test_keys"]
    assert ip["blocking"] is None and "helper" in ip["x_reason"]
    assert http["control_failure"], http.get("control_failure")


def test_both_controls_down_name_both(lab_run) -> None:
    recs = _by_input(lab_run("controls-down"))
    tk = recs["http://open-http.example.kz/"]["test_keys"]
    assert tk["blocking"] is None and "DNS control failed" in tk["x_reason"] and "the helper:" in tk["x_reason"]
    assert tk["requests"], "the probe's own fetch is recorded without a control"
    ok = recs["https://open-https.example.kz/"]["test_keys"]
    assert ok["x_rule"] == "https.verified_no_control" and ok["accessible"] is True


def test_failed_controls_never_cost_the_measurement_deadline(lab_run) -> None:
    """The control has its own deadline inside the measurement's: however the helper or the DoH
    control fails, every input of every vantage has a record and none is a deadline verdict."""
    from probe.lab.scenario import load_scenario

    run = lab_run("controls-world")
    sc = load_scenario("controls-world")  # every input x vantage (a282cd9 grew it to 5 x 10, this said 5 x 7)
    assert len(run.records) == len(sc.vantages) * sum(len(s.inputs) for s in sc.sites)
    assert not [r["input"] for r in run.records if r["test_keys"]["x_rule"] == "deadline"]


def test_doh_control_freezing_after_bytes_keeps_every_answer_issue12(lab_run) -> None:
    """The DoH control's kept-alive connections freeze after 2,500 B (vantage vdohfreeze): before
    the retry on a fresh connection, inputs lost their DoH answer (the helper's DNS stood in;
    measured on main: dns-blocked.example.kz, its A frozen, its AAAA answered NOERROR without
    data; 3 of 12 in the scenario's notes; it depends on which connection each query reuses).
    Now every input keeps it, and where a query froze with no address answered, the record holds both
    attempts' queries (x_doh_queries: A and AAAA, then the frozen one(s) asked again on a fresh
    connection); where one of them answered an address, the control worked and nothing is retried.
    Whether a query freezes here at all is a race: the retry itself is made to happen in the next test."""
    run = lab_run("controls-world")
    recs = _by_input(run, "vdohfreeze")
    assert len(recs) == 5
    lost = {url: r["test_keys"]["x_dns_control"] for url, r in recs.items()
            if r["test_keys"]["x_dns_control"].get("failure") or not r["test_keys"]["x_dns_control"]["dns"]["addrs"]}
    assert not lost, lost
    for url, r in recs.items():
        qs = r["test_keys"]["x_doh_queries"]
        assert [q["query_type"] for q in qs[:2]] == ["A", "AAAA"], (url, qs)
        retried = [q["query_type"] for q in qs[2:]]  # the fresh connection's: only what the transport lost
        if any(q["answers"] for q in qs[:2]):  # an address came back: the control worked, nothing is asked again
            assert retried == [], (url, qs)     # (CI: A answered, AAAA frozen: no retry, by design)
        else:
            assert retried == [q["query_type"] for q in qs[:2] if q["failure"] == "generic_timeout_error"], (url, qs)
        assert any(q["failure"] is None for q in qs), (url, qs)


#: One vantage whose ISP freezes every connection to the DoH control resolver (198.18.0.54:443)
#: after 2,500 bytes from it: the TLS handshake and one DoH answer pass, a kept-alive connection's
#: next answer never comes (controls-world's vdohfreeze, alone). Eight sites with an A record and no
#: AAAA, so an input whose A query froze has no address from its first attempt.
_DOH_FREEZE = """
[scenario]
name = "doh-freeze"
latency_ms = 2
[[isp]]
name = "dohfreeze"
[[isp.tcp]]
prefix = "198.18.0.54/32"
port = 443
budget_bytes = 2500
[[vantage]]
name = "vdohfreeze"
isp = "dohfreeze"
""" + "".join(f'[[site]]\ndomain = "open{i}.example.kz"\nexpect = false\n' for i in range(1, 9))


def test_doh_retry_on_a_fresh_connection_recovers_a_frozen_kept_alive_one_issue12(require_lab, tmp_path: Path) -> None:
    """The retry itself, made to happen. The test above passed with the retry removed whenever no A
    query happened to land on a spent connection: at controls-world's concurrency (2 a vantage) the
    controls mostly start together on fresh connections (it passed in one of the two runs measured).
    At concurrency 1 the controls of successive inputs are staggered, so a later control's A query
    (asked first) takes a connection an earlier one left kept alive with its budget spent, and
    freezes: measured on this lab with the retry disabled, 30 runs of 5 or 8 inputs, 1 to 4 inputs
    lost their DoH answer in every run (also with both cores busy). Here: some input's first
    attempt gave no address (the retry's case: else the lab no longer makes it), that input asked
    again exactly its timed-out queries, on a fresh connection, which answered, and no input lost
    its DoH answer."""
    from probe.lab.run import Lab
    from probe.lab.scenario import parse_scenario

    scenario = parse_scenario(tomllib.loads(_DOH_FREEZE), file="doh-freeze (test)")
    with Lab(scenario) as lab:
        run = lab.run_probe(out_dir=tmp_path / "out", concurrency=1, timeout_s=120)
    assert run.exit_code == 0, run.stderr[-2000:]
    assert len(run.records) == 8
    dns_control = {r["input"]: r["test_keys"]["x_dns_control"] for r in run.records}
    lost = {u: c for u, c in dns_control.items() if c.get("failure") or not c["dns"]["addrs"]}
    assert not lost, lost  # without the retry: 1 to 4 of 8 (generic_timeout_error)
    queries = {r["input"]: r["test_keys"]["x_doh_queries"] for r in run.records}
    froze = {u: qs for u, qs in queries.items() if not any(q["answers"] for q in qs[:2])}
    assert froze, ("no input's first DoH attempt lost every address: the retry was not exercised", queries)
    for url, qs in queries.items():
        first, retry = qs[:2], qs[2:]
        assert [q["query_type"] for q in first] == ["A", "AAAA"], (url, qs)
        if url not in froze:  # an address came back: the control worked, nothing is asked again
            assert retry == [], (url, qs)
            continue
        timed_out = [q["query_type"] for q in first if q["failure"] == "generic_timeout_error"]
        assert timed_out and [q["query_type"] for q in retry] == timed_out, (url, qs)
        assert any(q["answers"] for q in retry), (url, qs)  # the fresh connection answered
        assert min(q["t0"] for q in retry) >= max(q["t"] for q in first), (url, qs)  # after the first attempt
    assert run.all_match_or_known, [(o.input, o.got, o.expect) for o in run.outcomes if not o.match]
