"""Packet-level evidence against the lab's ground truth (issue 16 part 5; root).

For every shipped scenario whose ISP path declares the censor's hop (``hops`` > 1) or an
on-path DNS injector, the packet primitives run inside the vantage's namespace and their
findings are compared with the scenario: the injected DNS reply's hop, the RST's distance
and whether it was forged, the censor hop located CenTrace-style. Then the whole probe runs
in the ``packets`` lab with packet evidence on and its records must carry the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from probe.lab.run import Lab, LabRun
from probe.lab.scenario import Scenario, Site, load_scenario, shipped_scenarios
from probe.lab.topology import AUTH_DNS_IP, HELPER_IP, INJECT_IP, path_addresses, resolver_ip
from tests.lab.conftest import namespaces_of

pytestmark = pytest.mark.lab

PROBE = textwrap.dedent("""
    import asyncio, dataclasses, json, sys
    from probe.timing import Clock
    from probe.packets.dnsinject import dns_injection
    from probe.packets.forensics import reset_forensics
    from probe.packets.centrace import localise
    from probe.packets.trigger import make_trigger
    job = json.loads(sys.argv[1])
    async def main():
        c = Clock()
        if job["kind"] == "dns":
            r = await dns_injection(job["name"], non_resolver=job["non_resolver"], resolver=job["resolver"],
                                    clock=c, listen_s=1.0, max_ttl=6, pps=20)
        else:
            t = make_trigger(job["scheme"], job["name"], benign_name="example.com")
            if job["kind"] == "rst":
                r = await reset_forensics(job["ip"], t.port, t.payload, trigger=t.kind, clock=c, wait_s=3.0)
            else:
                r = await localise(job["ip"], t, clock=c, max_ttl=7, pps=20, wait_s=1.0)
        print(json.dumps(dataclasses.asdict(r)))
    asyncio.run(main())
""")


def declares_path(s: Scenario) -> bool:
    """The scenario declares where its censor sits on a multi-hop path, or an on-path DNS injector."""
    return any(i.hops > 1 or i.dns_onpath for i in s.isps)


#: every scenario declaring a path, and two one-router worlds where the censor is the last
#: router before the server (an in-path drop there and a terminating proxy look alike from
#: TCP alone: the UDP datagram of probe.packets.centrace tells them apart)
PATH_SCENARIOS = [n for n in shipped_scenarios() if declares_path(load_scenario(n))] + ["tcp-actions", "kz-2021"]


ASK = textwrap.dedent("""
    import json, sys
    import dns.message, dns.query
    q = dns.message.make_query(sys.argv[1], "A")
    r = dns.query.udp(q, sys.argv[2], timeout=3.0)
    print(json.dumps(sorted(rd.to_text() for rr in r.answer for rd in rr)))
""")


def _ask(lab: Lab, vantage: str, name: str, server: str) -> list[str]:
    """``name``'s A addresses as ``server`` (port 53) answers a query from ``vantage``."""
    p = subprocess.run(lab.topology.exec_prefix(vantage) + [sys.executable, "-c", ASK, name, server],
                       capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, (name, server, p.stderr)
    out: list[str] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def test_the_onpath_injector_answers_only_censored_names(require_lab: None) -> None:
    """The on-path injector (``[[isp]] dns_onpath``) answers the censored names sent to any address,
    and lets every other query go on to the resolver it was sent to (it swallowed them: issue 16
    part 3). The lab's authoritative server (AUTH_DNS_IP, beyond the censor) stands for a public
    resolver."""
    with Lab(load_scenario("packets")) as lab:
        v = lab.scenario.vantages[0].name
        open_ip = lab.site_addresses.v4["open.example.kz"]
        assert _ask(lab, v, "open.example.kz", AUTH_DNS_IP) == [open_ip]  # uncensored: the genuine answer
        assert _ask(lab, v, "dnsinject.example.kz", AUTH_DNS_IP) == [INJECT_IP]  # censored: the injector's
        # a longer name ending in a censored one is not the censored name
        assert _ask(lab, v, "www.dnsinject.example.kz", AUTH_DNS_IP) != [INJECT_IP]
        assert _ask(lab, v, "snidrop.example.kz", AUTH_DNS_IP) == [lab.site_addresses.v4["snidrop.example.kz"]]


def _in(lab: Lab, vantage: str, job: dict[str, object]) -> dict[str, object]:
    p = subprocess.run(lab.topology.exec_prefix(vantage) + [sys.executable, "-c", PROBE, json.dumps(job)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    out: dict[str, object] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def _name_keyed(site: Site, isp: str) -> str | None:
    """The trigger kind of a block the censor applies after the handshake, or None."""
    a = site.actions(isp)
    if a.ip != "ok" or any(r.syn != "ok" for r in a.tcp):
        return None
    if site.scheme == "https" and (a.tls in ("sni_drop", "sni_rst", "sni_timeout")
                                   or any(r.payload in ("rst", "drop") and r.port == 443 for r in a.tcp)):
        return "https"
    if site.scheme == "http" and (a.http in ("host_drop", "rst")
                                  or any(r.payload in ("rst", "drop") and r.port == 80 for r in a.tcp)):
        return "http"
    return None


def test_path_scenarios_are_the_expected_ones() -> None:
    """The comparison covers the scenarios that declare a path (a new one joins by itself)."""
    assert "packets" in PATH_SCENARIOS and "two-isps" in PATH_SCENARIOS


@pytest.fixture(scope="module", params=PATH_SCENARIOS)
def lab(request: pytest.FixtureRequest, require_lab: None) -> Iterator[Lab]:
    with Lab(load_scenario(request.param)) as lab:
        yield lab
    assert namespaces_of(lab.topology.lab_id) == []


def test_packet_evidence_matches_truth(lab: Lab) -> None:
    sc = lab.scenario
    checked = 0
    for j, isp in enumerate(sc.isps):
        vantage = next((v for v in sc.vantages if v.isp == isp.name and v.ipv4), None)
        if vantage is None:
            continue
        c = isp.censor_hop
        routers = path_addresses(sc, vantage.name)
        for site in sc.sites:
            a = site.actions(isp.name)
            ip = lab.site_addresses.v4.get(site.domain)
            if isp.dns_onpath and a.dns in ("inject", "bogon", "ok"):
                r = _in(lab, vantage.name, {"kind": "dns", "name": site.domain, "non_resolver": HELPER_IP,
                                            "resolver": resolver_ip(j)})
                assert r["failure"] is None
                if a.dns == "ok":
                    assert not r["injected"], (site.domain, r)
                else:
                    assert r["injected"], (site.domain, r)
                    assert r["injector_hop"] == c, (site.domain, r)
                    assert r["nonresolver_replies"][0]["hops_est"] == c  # type: ignore[index]
                    assert r["path"] == routers[:c - 1]  # time-exceeded from each router before it
                checked += 1
            kind = _name_keyed(site, isp.name)
            if kind is None or ip is None:
                continue
            r = _in(lab, vantage.name, {"kind": "rst", "name": site.domain, "scheme": kind, "ip": ip})
            proxy = a.tls in ("sni_rst", "sni_timeout") or a.http == "rst"
            if r["outcome"] in ("rst", "fin"):
                ender, synack = r["ender"], r["synack"]
                assert ender["hops_est"] == c, (site.domain, r)  # type: ignore[index]
                # forged in path (the packet engine) vs. the terminating proxy's own RST
                assert r["injected"] is (not proxy), (site.domain, r)
                assert synack["hops_est"] == (c if proxy else isp.hops + 1), (site.domain, r)  # type: ignore[index]
            else:
                assert r["outcome"] == "silence", (site.domain, r)
            loc = _in(lab, vantage.name, {"kind": "loc", "name": site.domain, "scheme": kind, "ip": ip})
            assert loc["censor_hop"] == c, (site.domain, loc)
            assert loc["terminating"] is proxy, (site.domain, loc)
            assert loc["censor_address"] == routers[c - 1], (site.domain, loc)
            checked += 1
    assert checked, f"{sc.name}: nothing compared"


@pytest.fixture(scope="module")
def packets_run(require_lab: None, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Scenario, LabRun, subprocess.CompletedProcess[str], list[dict[str, Any]]]]:
    """The probe in the packets lab with packet evidence on; then again without CAP_NET_RAW
    (setpriv drops it from the bounding set: root loses it on exec, as a user without it)."""
    out = tmp_path_factory.mktemp("lab-packets-run")
    with Lab(load_scenario("packets"), packets=True) as lab:
        run = lab.run_probe(out_dir=out, concurrency=16, timeout_s=300)
        f = lab.rundir / "inputs.txt"
        f.write_text("".join(u + "\n" for u in lab.inputs()))
        cmd = lab.probe_command(out_dir=out / "noraw", inputs_file=f, concurrency=16)
        k = len(lab.topology.exec_prefix(lab.scenario.vantages[0].name))
        cmd = cmd[:k] + ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"] + cmd[k:]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}  # as Lab.run_probe does
        noraw = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
        recs = [json.loads(line) for p in (out / "noraw").glob("*.jsonl") for line in p.read_text().splitlines()]
    yield lab.scenario, run, noraw, recs


def test_records_carry_packet_evidence(packets_run: tuple[Scenario, LabRun, Any, Any]) -> None:
    sc, run, _, _ = packets_run
    assert run.all_match_or_known, run
    c = sc.isps[0].censor_hop
    recs = {r["input"]: r for r in run.records}
    for site in sc.sites:
        rec = recs[site.inputs[0]]
        x = rec["test_keys"].get("x_packets")
        if site.expect == "false":
            assert x is None, site.domain  # never for accessible targets
            continue
        assert x is not None and x.get("failure") is None, (site.domain, x)
        if site.default_actions.dns == "inject":
            assert x["dns_injection"]["injected"] and x["dns_injection"]["injector_hop"] == c
            assert any(f.startswith("dns.injected_onpath") for f in x["findings"])
            # the proof strengthens the verdict: its rule, the injector's hop in the reason (issue 16 part 1)
            tk = rec["test_keys"]
            assert (tk["x_blocking"], tk["x_rule"]) == ("dns", "dns.injector_onpath"), tk["x_reason"]
            assert f"at hop {c}" in tk["x_reason"], tk["x_reason"]
        else:
            assert x["localisation"]["censor_hop"] == c, (site.domain, x["localisation"])
            assert x["reset_forensics"]["outcome"] in ("rst", "silence")


def test_without_cap_net_raw_one_notice_and_the_same_verdicts(packets_run: tuple[Scenario, LabRun, Any, Any]) -> None:
    sc, run, noraw, recs = packets_run
    assert noraw.returncode in (0, 1), noraw.stderr  # 1: something blocked (the summary's exit)
    notices = [line for line in noraw.stderr.splitlines() if "packet-level evidence is off" in line]
    assert len(notices) == 1 and "CAP_NET_RAW" in notices[0], noraw.stderr
    assert len(recs) == len(run.records)
    assert all("x_packets" not in r["test_keys"] for r in recs)
    verdict = {r["input"]: r["test_keys"]["x_blocking"] for r in run.records}
    assert {r["input"]: r["test_keys"]["x_blocking"] for r in recs} == verdict
