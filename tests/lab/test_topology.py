"""Topology pieces that need no root: address plan and the ISP's nftables ruleset."""

from __future__ import annotations

import tomllib

import pytest

from probe.lab.scenario import parse_scenario
from probe.lab.topology import CENSOR_HTTP_PORT, CENSOR_TLS_PORT, isp_ruleset, site_addresses

SC = parse_scenario(tomllib.loads('''
[scenario]
name = "t"
[[site]]
domain = "blocked.kz"
ip = "blackhole"
expect = "tcp_ip"
[[site]]
domain = "neighbour.kz"
share_ip_with = "blocked.kz"
expect = "tcp_ip"
[[site]]
domain = "sni.kz"
tls = "sni_timeout"
expect = "tls"
[[site]]
domain = "rst.kz"
ip = "rst"
tls = "sni_rst"
expect = "tcp_ip"
[[site]]
domain = "unr.kz"
ip = "unreachable"
expect = "tcp_ip"
[[site]]
domain = "ok.kz"
expect = false
'''))


def test_addresses_shared_and_distinct() -> None:
    a = site_addresses(SC.sites)
    assert a["neighbour.kz"] == a["blocked.kz"]
    assert len(set(a.values())) == len(SC.sites) - 1
    assert all(ip.startswith("198.18.") for ip in a.values())


@pytest.mark.parametrize(("outage", "present", "absent"), [
    (False, ["@blackhole drop", "reject with tcp reset", "host-unreachable",
             f"redirect to :{CENSOR_TLS_PORT}", f"redirect to :{CENSOR_HTTP_PORT}"], ['oifname "up" drop']),
    (True, ['iifname "down" oifname "up" drop', 'iifname "up" oifname "down" drop', 'oifname "up" drop'], []),
])
def test_isp_ruleset(outage: bool, present: list[str], absent: list[str]) -> None:
    import dataclasses

    sc = dataclasses.replace(SC, outage=outage)
    a = site_addresses(sc.sites)
    rules = isp_ruleset(sc, a, client_if="down", uplink_if="up")
    for text in present:
        assert text in rules
    for text in absent:
        assert text not in rules
    sets = {line.split()[1]: line for line in rules.splitlines() if line.strip().startswith("set ")}
    assert a["blocked.kz"] in sets["blackhole"]
    assert a["unr.kz"] in sets["unreach"]
    assert f'{a["sni.kz"]} . 443' in sets["censor_tls"] and a["sni.kz"] not in sets["censor_http"]
    # an address with an IP action is not redirected to the censor: the IP action wins
    assert a["rst.kz"] in sets["rst"] and a["rst.kz"] not in sets["censor_tls"]
    assert a["ok.kz"] not in rules


def test_default_world_plan_is_the_old_lab() -> None:
    """A scenario without [[isp]]/[[vantage]]: client — isp — inet, the old addresses, no IPv6."""
    from probe.lab.topology import plan

    p = plan(SC, "abc123")
    assert p.roles == ("client", "isp", "inet")
    assert [(a, b) for a, _, b, _ in p.links] == [("client", "isp"), ("isp", "inet")]
    assert all(len(x) <= 15 for _, a, _, b in p.links for x in (a, b))  # IFNAMSIZ
    assert "addr add 10.77.0.2/24 dev kzlabc12300a" in p.commands["client"]
    assert "route add default via 10.77.0.1" in p.commands["client"]
    assert "addr add 10.78.0.2/30 dev kzlabc12301b" in p.commands["inet"]
    assert "addr add 10.76.0.53/32 dev lo" in p.commands["isp"]
    assert "net.ipv6.conf.all.disable_ipv6=1" in p.sysctls["client"]
    assert not any("::" in c for cmds in p.commands.values() for c in cmds)
    assert p.censor["isp"] == ("isp", ["kzlabc12300b"], "kzlabc12301a")


MULTI = parse_scenario(tomllib.loads('''
[scenario]
name = "m"
[[isp]]
name = "kt"
hops = 3
censor_hop = 2
dns64 = "64:ff9b::/96"
[[isp]]
name = "bl"
[[vantage]]
name = "a"
isp = "kt"
ipv6 = "broken"
[[vantage]]
name = "b"
isp = "kt"
ipv4 = false
ipv6 = "ok"
[[vantage]]
name = "c"
isp = "bl"
[[site]]
domain = "v4.kz"
expect = false
[[site.tcp]]
payload = "rst"
[[site]]
domain = "d.kz"
stack = "dual"
tls = "sni_drop"
expect = "tls"
[site.isp.bl]
tls = "ok"
ip = "blackhole"
'''))


def test_multi_hop_plan() -> None:
    from probe.lab.topology import TUN_NAME, plan, resolver_ip

    p = plan(MULTI, "abc123")
    assert p.roles == ("a", "b", "c", "kt-r1", "kt", "kt-r3", "bl", "inet")
    assert p.censor["kt"][0] == "kt" and p.censor["bl"][0] == "bl"
    # router 1 of kt is a plain router; the censor (resolver, TUN) is router 2
    assert not any(TUN_NAME in c for c in p.commands["kt-r1"]) and any(TUN_NAME in c for c in p.commands["kt"])
    assert f"addr add {resolver_ip(0)}/32 dev lo" in p.commands["kt"]
    assert f"route add {resolver_ip(0)}/32 via 10.80.2.1" in p.commands["kt-r3"]  # back down to the censor
    assert "route add 10.77.0.0/24 via 10.80.1.1" in p.commands["kt"]
    assert "net.ipv4.ip_forward=1" in p.sysctls["kt-r1"]
    # vantage b has no IPv4, a broken IPv6 at router 1, c is IPv4-only on the other ISP
    assert not any(c.startswith("addr add 10.") for c in p.commands["b"])
    assert any("fd00:77:0:1::2/64" in c for c in p.commands["b"])
    assert list(p.broken6) == ["kt-r1"] and len(p.broken6["kt-r1"]) == 1
    assert "net.ipv6.conf.all.disable_ipv6=1" in p.sysctls["c"]
    assert "route add local 64:ff9b::/96 dev lo" in p.commands["inet"]
    # the packet engine sees both families of the sites it acts on, at kt only (bl blackholes d.kz)
    tun_rules = [c for c in p.commands["kt"] if "lookup 100" in c and "ipproto tcp" in c]
    assert any("to 198.18.1.1 ipproto tcp dport 443" in c for c in tun_rules)
    assert any("to 2001:db8:4b5a:1::2 ipproto tcp dport 443" in c for c in tun_rules)
    assert any("to 64:ff9b::c612:101 ipproto tcp dport 443" in c for c in tun_rules)  # NAT64 of v4.kz
    assert not any("198.18.1.2 " in c for c in p.commands["bl"] if "lookup 100" in c)  # d.kz: nft, not the engine
    assert any("to 198.18.1.1 ipproto tcp dport 443" in c for c in p.commands["bl"])  # v4.kz's rule is every ISP's


def test_path_addresses_and_rulesets_per_isp() -> None:
    from probe.lab.topology import SiteAddresses, broken6_ruleset, engine_rules, path_addresses

    assert path_addresses(MULTI, "a") == ["10.77.0.1", "10.80.1.2", "10.80.2.2"]
    assert path_addresses(MULTI, "b", ipv6=True) == ["fd00:77:0:1::1", "fd00:80:0:1::2", "fd00:80:0:2::2"]
    assert path_addresses(MULTI, "c") == ["10.77.2.1"]
    sa = SiteAddresses.plan(MULTI)
    assert sa.of("d.kz") == ("198.18.1.2", "2001:db8:4b5a:1::2", "64:ff9b::c612:102")
    kt = isp_ruleset(MULTI, sa, client_if=["x", "y"], uplink_if="u", isp="kt")
    bl = isp_ruleset(MULTI, sa, client_if=["z"], uplink_if="u", isp="bl")
    assert "2001:db8:4b5a:1::2" not in kt.split("chain")[0].split("blackhole6")[1].split("}")[0]
    assert "2001:db8:4b5a:1::2" in bl.split("set blackhole6")[1].split("}")[0]
    rules = engine_rules(MULTI, "kt", sa)
    by = {(r["addr"], r["port"]): r for r in rules}
    assert by[("198.18.1.1", 443)]["payload"] == "rst" and by[("198.18.1.2", 443)]["names"] == ["d.kz"]
    assert engine_rules(MULTI, "bl", sa) == [r for r in engine_rules(MULTI, "bl", sa) if r["addr"] != "198.18.1.2"]
    assert 'iifname "q" meta nfproto ipv6 drop' in broken6_ruleset(["q"])


def test_engine_rules_key_the_fin_on_the_sni_and_the_host() -> None:
    """``tls = "sni_fin"`` / ``http = "host_fin"`` become the packet engine's ``fin_names`` on :443 / :80 of
    the site's addresses (``sni_drop`` its ``names``); sites sharing an address merge both lists."""
    from probe.lab.topology import SiteAddresses, engine_rules

    sc = parse_scenario(tomllib.loads('''
[scenario]
name = "fin"
[[site]]
domain = "fin.kz"
tls = "sni_fin"
expect = "tls"
[[site]]
domain = "drop.kz"
share_ip_with = "fin.kz"
tls = "sni_drop"
expect = "tls"
[[site]]
domain = "hostfin.kz"
scheme = "http"
http = "host_fin"
expect = "http-failure"
'''))
    sa = SiteAddresses.plan(sc)
    by = {(r["addr"], r["port"]): r for r in engine_rules(sc, "isp", sa)}
    (shared,), (own,) = sa.of("fin.kz"), sa.of("hostfin.kz")
    assert set(by) == {(shared, 443), (own, 80)}
    assert (by[(shared, 443)]["names"], by[(shared, 443)]["fin_names"]) == (["drop.kz"], ["fin.kz"])
    assert (by[(own, 80)]["names"], by[(own, 80)]["fin_names"], by[(own, 80)]["payload"]) == ([], ["hostfin.kz"], "ok")


def test_syn_sets_carry_address_and_port() -> None:
    from probe.lab.topology import SiteAddresses

    sc = parse_scenario(tomllib.loads('[scenario]\nname = "t"\n[[site]]\ndomain = "a.kz"\nexpect = "tcp_ip"\n'
                                      'stack = "dual"\n[[site.tcp]]\nsyn = "unreachable"\n'))
    text = isp_ruleset(sc, SiteAddresses.plan(sc), client_if="d", uplink_if="u")
    assert "set syn_unreach { type ipv4_addr . inet_service; elements = { 198.18.1.1 . 443 } }" in text
    assert "2001:db8:4b5a:1::1 . 443" in text.split("set syn_unreach6")[1].split("\n")[0]
    assert "reject with icmpv6 type addr-unreachable" in text


def test_isp_prefix_rules_reach_nft_and_the_engine() -> None:
    from probe.lab.topology import SiteAddresses, engine_rules, plan

    sc = parse_scenario(tomllib.loads('[scenario]\nname = "t"\n[[isp]]\nname = "a"\n'
                                      '[[isp.tcp]]\nprefix = "198.18.0.80/32"\nport = 8443\nbudget_bytes = 16384\n'
                                      '[[isp.tcp]]\nprefix = "198.18.0.54/32"\nport = 443\nsyn = "drop"\n'
                                      '[[site]]\ndomain = "a.kz"\nexpect = false\n'))
    sa = SiteAddresses.plan(sc)
    text = isp_ruleset(sc, sa, client_if="d", uplink_if="u", isp="a")
    assert "tcp flags & (syn | ack) == syn ip daddr 198.18.0.54/32 tcp dport 443 drop" in text
    rules = [(r["addr"], r["port"], r["budget_bytes"]) for r in engine_rules(sc, "a", sa)]
    assert rules == [("198.18.0.80/32", 8443, 16384)]
    cmds = plan(sc, "abc123", sa).commands["a"]
    assert "rule add pref 111 from 198.18.0.80/32 ipproto tcp sport 8443 lookup 100" in cmds


def test_onpath_injector_redirects_only_the_censored_names() -> None:
    """``[[isp]] dns_onpath``: nft sends the injector only the queries for names it forges, each
    matched on its whole wire form (issue 16 part 3: it swallowed every other query)."""
    from probe.lab.scenario import load_scenario
    from probe.lab.topology import onpath_names, qname_match

    sc = load_scenario("packets")
    assert onpath_names(sc, sc.isps[0].name) == ["dnsinject.example.kz"]
    m = qname_match("dnsinject.example.kz")  # 22 bytes: 16 + 6
    assert m == "@th,160,128 0x09646e73696e6a656374076578616d70 @th,288,48 0x6c65026b7a00"
    rules = isp_ruleset(sc, {s.domain: f"198.18.1.{i + 1}" for i, s in enumerate(sc.sites)}, client_if="c0",
                        uplink_if="u0", isp=sc.isps[0].name)
    redirects = [line for line in rules.splitlines() if "redirect to :10053" in line]
    assert len(redirects) == 1 and m in redirects[0]


def test_name_keyed_actions_act_on_the_sites_own_port_too() -> None:
    """A site on another port (https://x.kz:8443/) gets its SNI/Host-keyed actions there as on :443/:80 (DPI
    matches the SNI on any port: ooni/netem DPIDropTrafficForTLSSNI / DPIResetTrafficForTLSSNI ask no port).
    Before, the scenario took ``tls = "sni_drop"`` on :8443 and the engine watched :443 only, and a per-ISP
    ``tls = "sni_rst"`` on :8443 was redirected on :443 only: the truth said blocked, nothing was done."""
    from probe.lab.topology import SiteAddresses, engine_rules

    sc = parse_scenario(tomllib.loads('''
[scenario]
name = "ports"
[[isp]]
name = "a"
[[site]]
domain = "drop.kz"
port = 8443
tls = "sni_drop"
expect = "tls"
[[site]]
domain = "fin.kz"
scheme = "http"
port = 8080
http = "host_fin"
expect = "http-failure"
[[site]]
domain = "rst.kz"
port = 8443
tls = "sni_rst"
expect = "tls"
[[site]]
domain = "bp.kz"
scheme = "http"
port = 8080
http = "blockpage"
expect = "http-diff"
[[site]]
domain = "slow.kz"
port = 8443
throttle_kbps = 100
expect = "throttling"
[[site]]
domain = "isp.kz"
port = 8443
expect = "tls"
[site.isp.a]
tls = "sni_rst"
[[site]]
domain = "both.kz"
tls = "sni_drop"
http = "blockpage"
expect = "tls"
'''))
    sa = SiteAddresses.plan(sc)
    ip = {s.domain: sa.v4[s.domain] for s in sc.sites}
    by = {(r["addr"], r["port"]): r for r in engine_rules(sc, "a", sa)}
    assert by[(ip["drop.kz"], 8443)]["names"] == ["drop.kz"] and by[(ip["drop.kz"], 443)]["names"] == ["drop.kz"]
    assert by[(ip["fin.kz"], 8080)]["fin_names"] == ["fin.kz"] and by[(ip["fin.kz"], 80)]["fin_names"] == ["fin.kz"]
    assert (ip["drop.kz"], 80) not in by and (ip["fin.kz"], 443) not in by  # the other protocol's port: untouched
    sets = {line.split()[1]: line for line in isp_ruleset(sc, sa, client_if="d", uplink_if="u", isp="a").splitlines()
            if line.strip().startswith("set ")}
    tls, http = sets["censor_tls"], sets["censor_http"]
    for d in ("rst.kz", "isp.kz", "slow.kz"):
        assert f"{ip[d]} . 8443" in tls and f"{ip[d]} . 443" in tls
    assert f"{ip['bp.kz']} . 8080" in http and f"{ip['bp.kz']} . 80" in http and ip["bp.kz"] not in tls
    assert f"{ip['slow.kz']} . 80" in http and ip["rst.kz"] not in http  # throttling is by SNI and by Host
    # an in-path SNI drop beside a proxy HTTP action: only :80 goes to the proxy, :443 stays in path (before, the
    # whole address went to the proxy, which relayed :443 untouched: the SNI drop never happened)
    assert ip["both.kz"] not in tls and f"{ip['both.kz']} . 80" in http
    assert by[(ip["both.kz"], 443)]["names"] == ["both.kz"]
