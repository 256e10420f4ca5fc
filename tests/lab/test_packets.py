"""Packet-level evidence against the lab's ground truth (issue 16 part 5; root).

For every shipped scenario that declares packet truth (:func:`declares`: the censor's hop on a
multi-hop path, an on-path DNS injector, or resets the censor injects), the packet primitives
run inside the vantage's namespace and their findings are compared with the scenario: the
injected DNS reply's hop, the RST's distance and whether it was forged, the censor hop located
CenTrace-style; each declared kind must have been compared at least once, and
:func:`test_every_scenario_declaring_packet_truth_is_checked` fails when a shipped scenario
declaring one is not in the comparison. Then the whole probe runs in the ``packets`` lab with
packet evidence on and its records must carry the same.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
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
            t = make_trigger(job["scheme"], job["name"], benign_name="example.com", port=job.get("port"))
            if job["kind"] == "rst":
                r = await reset_forensics(job["ip"], t.port, t.payload, trigger=t.kind, clock=c, wait_s=3.0,
                                          other_port=job.get("other"))
            else:
                r = await localise(job["ip"], t, clock=c, max_ttl=7, pps=20, wait_s=1.0)
        print(json.dumps(dataclasses.asdict(r)))
    asyncio.run(main())
""")


#: Packet truth a scenario can declare (:func:`declares`).
HOP, DNS_ONPATH, RESET, SYN_RESET = "hop", "dns_onpath", "reset", "syn_reset"


def _syn_resets(site: Site, isp: str) -> list[int]:
    """The ports of ``site`` whose SYNs the censor of ``isp`` answers with its own RST."""
    a = site.actions(isp)
    ports = {r.port for r in a.tcp if r.syn == "rst"}
    if a.ip == "rst":
        ports.add(site.input_port or (443 if site.scheme == "https" else 80))
    return sorted(ports)


def declares(s: Scenario) -> set[str]:
    """The packet truth scenario ``s`` declares: ``hop`` (an ISP path of more than one router, the
    censor on one of them), ``dns_onpath`` (the censor answers DNS sent to any address), ``reset``
    (it resets or FINs a flow after the handshake: ``[[site.tcp]] payload = "rst" | "fin"``, ``tls =
    "sni_rst" | "sni_fin"``, ``http = "rst" | "host_fin"``) and ``syn_reset`` (it answers SYNs with its own
    RST: ``ip = "rst"``, ``syn = "rst"`` of a site or of an ``[[isp.tcp]]`` prefix)."""
    out: set[str] = set()
    for isp in s.isps:
        if isp.hops > 1:
            out.add(HOP)
        if isp.dns_onpath:
            out.add(DNS_ONPATH)
        if any(r.syn == "rst" for r in isp.tcp):
            out.add(SYN_RESET)
        for site in s.sites:
            a = site.actions(isp.name)
            if a.tls in ("sni_rst", "sni_fin") or a.http in ("rst", "host_fin") \
                    or any(r.payload in ("rst", "fin") for r in a.tcp):
                out.add(RESET)
            if _syn_resets(site, isp.name):
                out.add(SYN_RESET)
    return out


#: every shipped scenario declaring packet truth; among them one-router worlds where the censor is
#: the last router before the server (an in-path drop there and a terminating proxy look alike
#: from TCP alone: the UDP datagram of probe.packets.centrace tells them apart)
PATH_SCENARIOS = [n for n in shipped_scenarios() if declares(load_scenario(n))]


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
    if site.scheme == "https" and (a.tls in ("sni_drop", "sni_fin", "sni_rst", "sni_timeout")
                                   or any(r.payload in ("rst", "fin", "drop") and r.port == 443 for r in a.tcp)):
        return "https"
    if site.scheme == "http" and (a.http in ("host_drop", "host_fin", "rst")
                                  or any(r.payload in ("rst", "fin", "drop") and r.port == 80 for r in a.tcp)):
        return "http"
    return None


def test_every_scenario_declaring_packet_truth_is_checked() -> None:
    """Issue 16 part 5: every shipped scenario that declares a censor hop, an on-path DNS injector or
    injected resets is compared with its truth (a new one joins by itself), and the declaring rules
    see what they must: this fails when a scenario declaring one is left out."""
    declared = {n: declares(load_scenario(n)) for n in shipped_scenarios()}
    missing = sorted(n for n, d in declared.items() if d and n not in PATH_SCENARIOS)
    assert not missing, f"scenarios declaring packet truth not compared with it: {missing}"
    # the kinds this module knows how to compare are all declared somewhere (else a kind went untested)
    assert set().union(*declared.values()) == {HOP, DNS_ONPATH, RESET, SYN_RESET}, declared
    for name, kinds in {"packets": {HOP, DNS_ONPATH, RESET, SYN_RESET}, "two-isps": {HOP},
                        "tcp-actions": {RESET, SYN_RESET}, "http-world": {SYN_RESET}, "controls-world": {SYN_RESET},
                        "http-redirects": {RESET, SYN_RESET},
                        "dns-world": set()}.items():
        assert declared[name] == kinds, (name, declared[name])


@pytest.fixture(scope="module", params=PATH_SCENARIOS)
def lab(request: pytest.FixtureRequest, require_lab: None) -> Iterator[Lab]:
    with Lab(load_scenario(request.param)) as lab:
        yield lab
    assert namespaces_of(lab.topology.lab_id) == []


def test_packet_evidence_matches_truth(lab: Lab) -> None:
    """Per ISP with an IPv4 vantage: the DNS injection test, reset forensics and the localisation
    against the scenario's truth; every kind the scenario :func:`declares` is compared at least once.
    An ISP whose path and actions on a site equal one already compared is not compared again."""
    sc = lab.scenario
    seen: set[str] = set()
    done: set[tuple[object, ...]] = set()
    for j, isp in enumerate(sc.isps):
        vantage = next((v for v in sc.vantages if v.isp == isp.name and v.ipv4), None)
        if vantage is None:
            continue
        c = isp.censor_hop
        routers = path_addresses(sc, vantage.name)
        hop = {HOP} if isp.hops > 1 else set()
        for rule in isp.tcp:  # the censor's SYN resets of an address range (the helper's, a hoster's)
            if rule.syn != "rst":
                continue
            net = ipaddress.ip_network(rule.prefix)
            addr = str(next(iter(net.hosts()), net[0]))
            f = _in(lab, vantage.name, {"kind": "rst", "name": "prefix.example", "scheme": "https", "ip": addr,
                                        "port": rule.port})
            _check_syn_reset(f, c, None, rule.prefix)
            seen |= {SYN_RESET} | hop
        for site in sc.sites:
            a = site.actions(isp.name)
            key = (isp.hops, c, isp.dns_onpath, isp.tcp, a, site.domain)
            if key in done:
                continue
            done.add(key)
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
                    seen |= {DNS_ONPATH} | hop
            if ip is None:
                continue
            resets = _syn_resets(site, isp.name)
            for port in resets:
                other = 80 if port == 443 else 443  # as probe.packets.evidence asks
                f = _in(lab, vantage.name, {"kind": "rst", "name": site.domain, "scheme": site.scheme, "ip": ip,
                                            "port": port, "other": other})
                # the server's SYN-ACK on the other port, unless that one is reset too (or, censored
                # at layer 7, answered by the censor's proxy at hop c)
                proxied = {p for ports in a.proxy_ports(site.scheme, site.port) for p in ports}
                server = None if a.ip == "rst" or other in resets else (c if other in proxied else isp.hops + 1)
                _check_syn_reset(f, c, server, site.domain)
                seen |= {SYN_RESET} | hop
            kind = _name_keyed(site, isp.name)
            if kind is None:
                continue
            r = _in(lab, vantage.name, {"kind": "rst", "name": site.domain, "scheme": kind, "ip": ip})
            proxy = a.tls in ("sni_rst", "sni_timeout") or a.http == "rst"
            if r["outcome"] in ("rst", "fin"):
                ender, synack = r["ender"], r["synack"]
                assert ender["hops_est"] == c, (site.domain, r)  # type: ignore[index]
                # forged in path (the packet engine) vs. the terminating proxy's own RST
                assert r["injected"] is (not proxy), (site.domain, r)
                if not proxy:  # the engine's forged segments carry IP ID 0 (probe/lab/engine.py)
                    assert ender["ip_id"] == 0, (site.domain, r)  # type: ignore[index]
                assert synack["hops_est"] == (c if proxy else isp.hops + 1), (site.domain, r)  # type: ignore[index]
                seen.add(RESET)
            else:
                assert r["outcome"] == "silence", (site.domain, r)
            loc = _in(lab, vantage.name, {"kind": "loc", "name": site.domain, "scheme": kind, "ip": ip})
            assert loc["censor_hop"] == c, (site.domain, loc)
            assert loc["terminating"] is proxy, (site.domain, loc)
            assert loc["censor_address"] == routers[c - 1], (site.domain, loc)
            seen |= hop
    assert declares(sc) <= seen, f"{sc.name}: declared {sorted(declares(sc))}, compared {sorted(seen)}"


def _check_syn_reset(f: dict[str, Any], c: int, server: int | None, what: str) -> None:
    """A SYN the censor resets: the RST comes from the censor's hop (its TTL says ``c`` hops), not
    from the server beyond it; the other port's SYN-ACK (when ``server`` hops away answers it)
    comes from farther, so the RST is injected — or from as far (a proxy at ``c``), so it is not."""
    assert f["failure"] is None and f["outcome"] == "syn_rst", (what, f)
    assert f["ender"]["hops_est"] == c, (what, f)
    if server is None:
        assert f["synack"] is None and f["injected"] is None, (what, f)
    else:
        assert f["synack"]["hops_est"] == server and f["synack_port"] is not None, (what, f)
        assert f["injected"] is (server != c), (what, f)


#: The inputs of the ``kzprobe run --pcap`` run: a blocked target of each packet test, one accessible.
PCAP_SITES = ("dnsinject.example.kz", "snirst.example.kz", "hostdrop.example.kz", "open.example.kz")


@pytest.fixture(scope="module")
def packets_run(require_lab: None, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Scenario, LabRun, subprocess.CompletedProcess[str], list[dict[str, Any]], Any]]:
    """The probe in the packets lab with packet evidence on; then again without CAP_NET_RAW
    (setpriv drops it from the bounding set: root loses it on exec, as a user without it), with
    ``--pcap`` (nothing to keep: no notice beyond the one); then with ``--pcap`` on
    :data:`PCAP_SITES` (the flag as a user gives it)."""
    out = tmp_path_factory.mktemp("lab-packets-run")
    with Lab(load_scenario("packets"), packets=True) as lab:
        run = lab.run_probe(out_dir=out, concurrency=16, timeout_s=300)
        f = lab.rundir / "inputs.txt"
        f.write_text("".join(u + "\n" for u in lab.inputs()))
        cmd = lab.probe_command(out_dir=out / "noraw", inputs_file=f, concurrency=16) + ["--pcap"]
        k = len(lab.topology.exec_prefix(lab.scenario.vantages[0].name))
        cmd = cmd[:k] + ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"] + cmd[k:]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}  # as Lab.run_probe does
        noraw = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
        recs = [json.loads(line) for p in (out / "noraw").glob("*.jsonl") for line in p.read_text().splitlines()]
        f = lab.rundir / "pcap-inputs.txt"
        f.write_text("".join(u + "\n" for s in lab.scenario.sites if s.domain in PCAP_SITES for u in s.inputs))
        cmd = lab.probe_command(out_dir=out / "pcap", inputs_file=f, concurrency=4) + ["--pcap"]
        if lab.geodb is not None:  # with the lab's ASN database (its routers: the ISP's ASN), as installed
            conf = lab.rundir / "probe-geoip.toml"
            conf.write_text(Path(cmd[cmd.index("--config") + 1]).read_text()
                            + f'\n[geoip]\nasn_db = "{lab.geodb[0]}"\ncountry_db = "{lab.geodb[1]}"\n')
            cmd[cmd.index("--config") + 1] = str(conf)
        pcap = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
        assert pcap.returncode in (0, 1), pcap.stderr
    more = {"pcap": out / "pcap", "noraw": out / "noraw", "v4": dict(lab.site_addresses.v4)}
    yield lab.scenario, run, noraw, recs, more


def test_records_carry_packet_evidence(packets_run: tuple[Scenario, LabRun, Any, Any, Any]) -> None:
    sc, run, _, _, _ = packets_run
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
        elif _syn_resets(site, sc.isps[0].name):  # no handshake: forensics against the other port, no localisation
            f = x["reset_forensics"]
            assert (f["outcome"], f["injected"], f["synack_port"]) == ("syn_rst", True, 80), (site.domain, f)
            assert (f["ender"]["hops_est"], f["synack"]["hops_est"]) == (c, sc.isps[0].hops + 1), (site.domain, f)
            assert "localisation" not in x and any(s.startswith("tcp.syn_rst_injected") for s in x["findings"])
        else:
            assert x["localisation"]["censor_hop"] == c, (site.domain, x["localisation"])
            assert x["reset_forensics"]["outcome"] in ("rst", "silence")


def test_without_cap_net_raw_one_notice_and_the_same_verdicts(packets_run: tuple[Scenario, LabRun, Any, Any, Any]
                                                              ) -> None:
    sc, run, noraw, recs, more = packets_run
    assert noraw.returncode in (0, 1), noraw.stderr  # 1: something blocked (the summary's exit)
    notices = [line for line in noraw.stderr.splitlines() if "packet-level evidence is off" in line]
    assert len(notices) == 1 and "CAP_NET_RAW" in notices[0], noraw.stderr
    assert len(recs) == len(run.records)
    assert all("x_packets" not in r["test_keys"] for r in recs)
    verdict = {r["input"]: r["test_keys"]["x_blocking"] for r in run.records}
    assert {r["input"]: r["test_keys"]["x_blocking"] for r in recs} == verdict
    assert not list(more["noraw"].glob("*.pcap")), "--pcap without CAP_NET_RAW: nothing captured, nothing kept"


def test_pcap_keeps_the_packets_of_blocked_targets(packets_run: tuple[Scenario, LabRun, Any, Any, Any]) -> None:
    """``kzprobe run --pcap`` (issue 16 part 4): one pcap per blocked measurement, named in its
    ``x_packets.pcap``, holding the packets exchanged with that target's address (the DNS test's:
    the non-resolver's and the resolver's); none for an accessible one."""
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    sc, _, _, _, more = packets_run
    out, v4 = more["pcap"], more["v4"]
    recs = {r["input"]: r for p in out.glob("*.jsonl") for line in p.read_text().splitlines()
            if (r := json.loads(line))}
    sites = [s for s in sc.sites if s.domain in PCAP_SITES]
    assert sorted(recs) == sorted(u for s in sites for u in s.inputs)
    (pdir,) = out.glob("*.pcap")
    kept = {f.name for f in pdir.iterdir()}
    want = set()
    for s in sites:
        rec = recs[s.inputs[0]]
        x = rec["test_keys"].get("x_packets")
        if s.expect == "false":
            assert x is None and f"{rec['x_measurement_uid']}.pcap" not in kept, s.domain
            continue
        assert x is not None and x["pcap"] == f"{rec['x_measurement_uid']}.pcap", (s.domain, x)
        want.add(x["pcap"])
        pkts = rdpcap(str(pdir / x["pcap"]))
        peers = {p[IP].dst if p[IP].src.startswith("10.77.") else p[IP].src for p in pkts}
        target = HELPER_IP if s.default_actions.dns == "inject" else v4[s.domain]
        assert target in peers and len(pkts) >= 2, (s.domain, peers)
    assert kept == want


def test_the_located_censor_names_its_network(packets_run: tuple[Scenario, LabRun, Any, Any, Any]) -> None:
    """Issue 16 part 3: the censor's hop, address and — with the ASN database installed — network
    (the lab's database maps the ISP's routers to its ASN)."""
    sc, _, _, _, more = packets_run
    recs = [json.loads(line) for p in more["pcap"].glob("*.jsonl") for line in p.read_text().splitlines()]
    located = [r["test_keys"]["x_packets"]["localisation"] for r in recs
               if "localisation" in (r["test_keys"].get("x_packets") or {})]
    assert located, recs  # snirst and hostdrop
    isp = sc.isps[0]
    for loc in located:
        assert loc["censor_hop"] == isp.censor_hop and loc["censor_network"] == isp.asn, loc
