"""Lab scenarios pki-world, controls-world and controls-down: what the records carry beyond the
verdict (the verdicts themselves: test_lab_e2e.test_verdict_equals_truth, every shipped scenario)."""

from __future__ import annotations

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
    connection); where one of them answered an address, the control worked and nothing is retried."""
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
