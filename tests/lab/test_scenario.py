"""Scenario loader: strict validation, IDN domains, the shipped scenarios (no root needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from probe.lab.scenario import (
    DNS_SIMPLE,
    HTTP_ACTIONS,
    IP_ACTIONS,
    TLS_ACTIONS,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

HEAD = '[scenario]\nname = "t"\n'


def _load(text: str, tmp_path: Path) -> object:
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    return load_scenario(p)


@pytest.mark.parametrize(("text", "needles"), [
    ('[scenario]\nname = "t"\ncolour = 1\n', ["bad.toml", "[scenario]", "'colour'", "unknown key"]),
    ('[scenario]\ndescription = "x"\n', ["'name'", "missing"]),
    (HEAD + "latency_ms = -1\n", ["latency_ms", "0..5000"]),
    (HEAD + 'latency_ms = "fast"\n', ["latency_ms", "expected float"]),
    (HEAD + 'outage = "yes"\n', ["outage", "expected bool"]),
    (HEAD + '[extra]\n', ["'extra'", "unknown table"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\nfoo = 1\n', ["site #1 (a.kz)", "'foo'", "unknown key"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\n', ["site #1 (a.kz)", "'expect'", "missing"]),
    (HEAD + '[[site]]\nexpect = "dns"\n', ["site #1", "'domain'", "missing"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "blocked"\n', ["a.kz", "'expect'", "'blocked'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "lie"\n', ["a.kz", "'dns'", "'lie'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "blockpage:nope"\n', ["'dns'", "IPv4"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "blockpage:::1"\n', ["'dns'", "IPv4"]),
    # nothing serves a blockpage outside the lab's range (second break test)
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "blockpage:8.8.8.8"\n', ["'dns'", "198.18.0.0/15"]),
    # answer:<ip or site> (issue 12: the ISP resolver answers any address, or another site's)
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "answer:::1"\n', ["site #1 (a.kz)", "'dns'", "IPv4"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "answer:a..kz"\n',
     ["a.kz", "'dns'", "IPv4 address or a site"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "answer:b.kz"\n',
     ["site a.kz", "'dns'", "'b.kz' is not another site"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "answer:a.kz"\n',
     ["site a.kz", "'dns'", "not another site"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\n[site.isp.isp]\ndns = "answer:b.kz"\n',
     ["site a.kz", "isp 'isp'", "'dns'", "not another site"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "answer:b.kz"\n[[site]]\ndomain = "b.kz"\nstack = "v6"\n'
            'expect = false\n', ["site a.kz", "'dns'", "b.kz has no IPv4 address"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "tcp_ip"\nip = "drop"\n', ["'ip'", "blackhole"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "tls"\ntls = "mitm:evil"\n', ["'tls'", "mitm:qaznet"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "tls"\nhttp = "page"\n', ["'http'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nthrottle_kbps = -5\n', ["'throttle_kbps'", ">= 0"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nthrottle_kbps = 1.5\n', ["'throttle_kbps'", "int"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\ndown = 1\n', ["'down'", "bool"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\npaths = ["x"]\n', ["'paths'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\npaths = []\n', ["'paths'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nscheme = "ftp"\n', ["'scheme'"]),
    (HEAD + '[[site]]\ndomain = "a..kz"\nexpect = false\n', ["'domain'", "not a valid domain"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site]]\ndomain = "A.kz"\nexpect = false\n',
     ["a.kz", "duplicate"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nshare_ip_with = "b.kz"\n', ["'share_ip_with'", "b.kz"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nshare_ip_with = "a.kz"\n', ["'share_ip_with'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\ndown = true\n[[site]]\ndomain = "b.kz"\nexpect = false\n'
     'share_ip_with = "a.kz"\n', ["b.kz", "'down'"]),
    ('[scenario\nname = "t"\n', ["bad.toml", "not valid TOML"]),
    # degenerate scenarios: nothing to measure, one site twice, sharing loops, truth outside the vocabulary
    (HEAD, ["bad.toml", "[[site]]", "at least one site"]),
    ("site = []\n" + HEAD, ["bad.toml", "[[site]]", "at least one site"]),
    (HEAD + '[[site]]\ndomain = "сайт.қаз"\nexpect = false\n[[site]]\ndomain = "xn--80aswg.xn--80ao21a"\n'
     'expect = false\n', ["bad.toml", "duplicate"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\npaths = ["/", "/x", "/"]\n', ["a.kz", "'paths'", "twice"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nshare_ip_with = "b.kz"\n[[site]]\ndomain = "b.kz"\n'
     'expect = false\nshare_ip_with = "a.kz"\n', ["bad.toml", "'share_ip_with'", "chains are not allowed"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site]]\ndomain = "b.kz"\nexpect = false\n'
     'share_ip_with = "a.kz"\n[[site]]\ndomain = "c.kz"\nexpect = false\nshare_ip_with = "b.kz"\n',
     ["c.kz", "chains are not allowed"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = true\n', ["a.kz", "'expect'", "True"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "accessible"\n', ["a.kz", "'expect'", "'accessible'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "tls_MITM"\n', ["a.kz", "'expect'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nshare_ip_with = 3\n', ["'share_ip_with'", "str"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nshare_ip_with = "a..kz"\n', ["'share_ip_with'", "valid"]),
    ('site = {domain = "a.kz", expect = false}\n' + HEAD, ["[[site]]", "array"]),
])
def test_bad_scenarios_name_file_site_and_key(text: str, needles: list[str], tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as ei:
        _load(text, tmp_path)
    for n in needles:
        assert n in str(ei.value), (n, str(ei.value))


def test_unknown_shipped_name_lists_known() -> None:
    with pytest.raises(ScenarioError, match="kz-2021"):
        load_scenario("kz-1999")


def test_missing_file() -> None:
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario("/nonexistent/x.toml")


@pytest.mark.parametrize(("written", "alabel"), [
    ("сайт.қаз", "xn--80aswg.xn--80ao21a"),
    ("Пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"),
    ("MEDUZA.io.", "meduza.io"),
])
def test_idn_domains_stored_as_a_label(written: str, alabel: str) -> None:
    s = parse_scenario(tomllib.loads(HEAD + f'[[site]]\ndomain = "{written}"\nexpect = false\n'))
    site = s.sites[0]
    assert site.domain == alabel
    assert site.display == written.rstrip(".")
    assert s.site(written) is site and s.site(alabel) is site
    assert site.inputs == (f"https://{written.rstrip('.')}/",)


def test_defaults_and_actions() -> None:
    s = parse_scenario(tomllib.loads(
        HEAD + 'latency_ms = 30\n[[site]]\ndomain = "a.kz"\nexpect = "dns"\ndns = "blockpage:198.18.255.1"\n'
               '[[site]]\ndomain = "b.kz"\nexpect = "tls_mitm"\ntls = "mitm:qaznet"\npaths = ["/", "/x"]\n'
               '[[site]]\ndomain = "c.kz"\nexpect = "tcp_ip"\nshare_ip_with = "a.kz"\n'))
    a, b, c = s.sites
    assert s.latency_ms == 30.0 and not s.outage and not s.trust_mitm_root
    assert a.dns_blockpage_ip == "198.18.255.1" and not a.censored_l7
    assert b.censored_l7 and b.inputs == ("https://b.kz/", "https://b.kz/x")
    assert c.share_ip_with == "a.kz" and c.ip == "ok" and c.expect == "tcp_ip"
    assert s.mitm_roots == ("qaznet",)


def test_shipped_scenarios_load_and_cover_every_action() -> None:
    from probe.lab.scenario import PAYLOAD_ACTIONS, STACKS, SYN_ACTIONS, VANTAGE_IPV6

    names = shipped_scenarios()
    for needed in ("kz-2021", "kz-2020-12-drill", "kz-2020-12-drill-trusted", "protest-outage", "ipv6-dns64",
                   "tcp-actions", "two-isps", "packets"):
        assert needed in names
    scenarios = [load_scenario(n) for n in names]
    sites = [s for sc in scenarios for s in sc.sites]
    acts = [s.actions(i.name) for sc in scenarios for s in sc.sites for i in sc.isps]
    seen = {f"dns:{a.dns.split(':')[0]}" for a in acts} | {f"ip:{a.ip}" for a in acts} | \
           {f"tls:{a.tls}" for a in acts} | {f"http:{a.http}" for a in acts}
    wanted = {f"dns:{a}" for a in DNS_SIMPLE + ("blockpage", "answer")} | {f"ip:{a}" for a in IP_ACTIONS} | \
             {f"tls:{a}" for a in TLS_ACTIONS} | {f"http:{a}" for a in HTTP_ACTIONS}
    assert wanted <= seen, wanted - seen
    # issue 12, each capability in a shipped scenario: per-port TCP actions, stacks, vantages, DNS64, hops
    rules = [r for a in acts for r in a.tcp]
    assert {r.syn for r in rules} >= set(SYN_ACTIONS) - {"ok"}
    assert {r.payload for r in rules} >= set(PAYLOAD_ACTIONS) - {"ok"}
    assert any(r.budget_bytes for r in rules) and any(r.delay_ms for r in rules) and any(r.loss_pct for r in rules)
    assert {s.stack for s in sites} == set(STACKS)
    vantages = [v for sc in scenarios for v in sc.vantages]
    assert {v.ipv6 for v in vantages} == set(VANTAGE_IPV6)
    assert any(not v.ipv4 for v in vantages)
    assert {p for sc in scenarios for p in sc.dns64_prefixes} >= {"64:ff9b::/96", "64:ff9b:1::/48"}
    assert any(i.hops >= 3 and 1 < i.censor_hop < i.hops for sc in scenarios for i in sc.isps)
    assert any(len({v.isp for v in sc.vantages}) >= 2 and any(s.isp_actions for s in sc.sites) for sc in scenarios)
    assert any(s.throttle_kbps for s in sites)
    assert any(s.down for s in sites)
    assert any(s.share_ip_with for s in sites)
    assert any(sc.outage for sc in scenarios)
    assert {sc.trust_mitm_root for sc in scenarios if sc.name.startswith("kz-2020-12-drill")} == {True, False}
    kz = load_scenario("kz-2021")
    assert any(s.domain.endswith(".xn--80ao21a") for s in kz.sites)  # .қаз
    for d in ("meduza.io", "kloop.kg", "www.change.org", "www.dailymail.co.uk"):
        assert kz.site(d).tls == "sni_timeout" and kz.site(d).expect == "tls"
    for d in ("facebook.com", "www.google.com", "twitter.com", "vk.com"):
        assert kz.site(d).tls == "mitm:qaznet" and kz.site(d).expect == "tls_mitm"
    assert kz.site("medium.com").expect == "false"
    assert kz.site("pana-defenders.info").expect == "dns"
    assert kz.site("lalafo.kg").share_ip_with


@pytest.mark.parametrize(("value", "needles"), [
    ("-1", ["'page_bytes'", "0..4194304"]),
    ("5000000", ["'page_bytes'", "0..4194304"]),
    ("1.5", ["'page_bytes'", "expected int"]),
    ('"64k"', ["'page_bytes'", "expected int"]),
    ("true", ["'page_bytes'", "expected int"]),
])
def test_bad_page_bytes(value: str, needles: list[str], tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as ei:
        _load(HEAD + f'[[site]]\ndomain = "a.kz"\nexpect = "throttling"\npage_bytes = {value}\n', tmp_path)
    for n in ["bad.toml", "a.kz", *needles]:
        assert n in str(ei.value), (n, str(ei.value))


@pytest.mark.parametrize("page_bytes", [0, 100, 4096, 65536, 1 << 20])
def test_page_is_at_least_page_bytes_and_deterministic(page_bytes: int) -> None:
    from probe.lab.services import SiteSpec, page

    spec = SiteSpec(domain="a.kz", display="a.kz", ip="198.18.1.1", page_bytes=page_bytes)
    body = page(spec, "/")
    assert len(body) >= page_bytes and body == page(spec, "/")
    assert b"<title>a.kz</title>" in body and body.endswith(b"</html>\n")
    small = page(SiteSpec(domain="a.kz", display="a.kz", ip="198.18.1.1"), "/")
    assert len(body) == len(small) if page_bytes <= len(small) else len(body) < page_bytes + 200


def test_kz2021_throttled_site_expects_throttling_on_a_big_enough_page() -> None:
    from probe.measure.throughput import MIN_BYTES

    slow = load_scenario("kz-2021").site("slow.example.kz")
    assert slow.throttle_kbps and slow.expect == "throttling" and slow.page_bytes >= MIN_BYTES
    assert parse_scenario(tomllib.loads(HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "throttling"\n')).sites[0].expect \
        == "throttling"


def test_blockpage_range_is_the_lab_range() -> None:
    from probe.lab.scenario import BLOCKPAGE_NET
    from probe.lab.topology import LAB_NET

    assert str(BLOCKPAGE_NET) == LAB_NET


V6 = HEAD + '[[isp]]\nname = "a"\n[[vantage]]\nname = "v"\nisp = "a"\n'
A = '[[site]]\ndomain = "a.kz"\n'


@pytest.mark.parametrize(("text", "needles"), [
    (HEAD + '[[isp]]\nname = "Bad"\n', ["isp #1 (Bad)", "'name'", "[a-z]"]),
    (HEAD + '[[isp]]\nname = "a"\nhops = 0\n', ["isp #1 (a)", "'hops'", "1..8"]),
    (HEAD + '[[isp]]\nname = "a"\nhops = 2\ncensor_hop = 3\n', ["'censor_hop'", "1..hops"]),
    (HEAD + '[[isp]]\nname = "a"\ndns64 = "64:ff9b::/80"\n', ["'dns64'", "/96", "/80"]),
    (HEAD + '[[isp]]\nname = "a"\ndns64 = "10.0.0.0/8"\n', ["'dns64'", "IPv6"]),
    (HEAD + '[[isp]]\nname = "a"\nasn = "64500"\n', ["'asn'", "AS<number>"]),
    (HEAD + '[[isp]]\nname = "a"\ncolour = 1\n', ["isp #1 (a)", "'colour'", "unknown key"]),
    (HEAD + '[[isp]]\nname = "a"\n[[isp]]\nname = "a"\n', ["isp #2 (a)", "duplicate"]),
    (HEAD + '[[vantage]]\nname = "v"\nisp = "nope"\n', ["vantage #1 (v)", "'isp'", "nope"]),
    (HEAD + '[[vantage]]\nname = "v"\nipv4 = false\n', ["vantage #1 (v)", "'ipv6'", "no network"]),
    (HEAD + '[[vantage]]\nname = "v"\nipv6 = "half"\n', ["'ipv6'", "broken"]),
    (HEAD + '[[vantage]]\nname = "isp"\n', ["vantage #1 (isp)", "duplicate"]),
    (V6 + '[[site]]\ndomain = "a.kz"\nexpect = false\nstack = "v5"\n', ["a.kz", "'stack'", "dual"]),
    (V6 + A + 'expect = false\n[site.isp.zz]\ntls = "sni_rst"\n', ["a.kz", "'zz'", "no [[isp]]"]),
    (V6 + A + 'expect = false\n[site.isp.a]\nexpect = "dns"\n', ["isp 'a'", "'expect'", "unknown"]),
    (V6 + '[[site]]\ndomain = "a.kz"\nexpect = false\n[site.vantage.w]\nexpect = "dns"\n', ["'w'", "no [[vantage]]"]),
    (V6 + '[[site]]\ndomain = "a.kz"\nexpect = false\n[site.vantage.v]\ntls = "sni_rst"\n', ["vantage 'v'", "'tls'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nxfail_got = "dns"\n', ["a.kz", "'xfail_got'", "xfail_reason"]),
    (HEAD + A + 'expect = "dns"\nxfail_reason = "x"\nxfail_got = "dns"\n', ["'xfail_got'", "equals"]),
    (HEAD + A + 'expect = false\n[[site.tcp]]\nport = 70000\n', ["tcp #1", "'port'", "1..65535"]),
    (HEAD + A + 'expect = false\n[[site.tcp]]\nsyn = "fin"\n', ["tcp #1", "'syn'", "unreachable"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site.tcp]]\npayload = "x"\n', ["'payload'", "fin"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site.tcp]]\nloss_pct = 100\n', ["'loss_pct'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site.tcp]]\nbudget_bytes = -1\n', ["'budget_bytes'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site.tcp]]\nwhat = 1\n', ["tcp #1", "'what'", "unknown"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\n[[site.tcp]]\n[[site.tcp]]\n', ["tcp #2", "two"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "tls"\ntls = "sni_rst"\n[[site.tcp]]\nsyn = "drop"\n',
     ["a.kz", "'tcp'", "censor-proxy"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\ntcp = 1\n', ["a.kz", "'tcp'", "array"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nstack = "dual"\n[[site]]\ndomain = "b.kz"\n'
     'expect = false\nshare_ip_with = "a.kz"\n', ["b.kz", "'stack'"]),
    (HEAD + '[[site]]\ndomain = "a.kz"\nexpect = false\nzone = "localhost"\n', ["a.kz", "'zone'", "nxdomain"]),
    (HEAD + A + 'expect = false\nport = 70000\n', ["a.kz", "'port'", "1..65535"]),
    (HEAD + A + 'expect = false\nport = "80"\n', ["a.kz", "'port'", "expected int"]),
    (HEAD + A + 'expect = false\nport = 80\n', ["a.kz", "'port'", "plain HTTP on 80 and TLS on 443"]),
    (HEAD + A + 'expect = false\nscheme = "http"\nport = 443\n', ["a.kz", "'port'", "http://…:443"]),
    (HEAD + A + 'expect = "tls"\nport = 8443\ntls = "sni_rst"\n[[site.tcp]]\nsyn = "drop"\n',
     ["a.kz", "'tcp'", "port 8443", "censor-proxy"]),
    (HEAD + A + 'expect = false\nredirects = { "a" = "/b" }\n', ["a.kz", "'redirects'", "starting with '/'"]),
    (HEAD + A + 'expect = false\nredirects = { "/a" = 1 }\n', ["a.kz", "'redirects'", "Location"]),
    (HEAD + A + 'expect = false\nvantage_status = "404"\n', ["a.kz", "'vantage_status'", "captcha"]),
    (HEAD + A + 'expect = false\ndns = "inject:nx"\n', ["a.kz", "'dns'", "inject_nxdomain"]),
    (HEAD + A + 'expect = false\nhttp = "redirect"\n', ["a.kz", "'http'", "redirect_blockpage"]),
    (HEAD + A + 'expect = "tls"\ntls = "sni_fin"\nthrottle_kbps = 100\n', ["a.kz", "'throttle_kbps'", "FIN'd"]),
    (HEAD + A + 'expect = false\nhttp = "fin"\n', ["a.kz", "'http'", "host_fin"]),
])
def test_bad_new_keys_name_file_site_and_key(text: str, needles: list[str], tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as ei:
        _load(text, tmp_path)
    for n in ["bad.toml", *needles]:
        assert n in str(ei.value), (n, str(ei.value))


def test_old_scenarios_build_the_old_world() -> None:
    """Backward compatible: no [[isp]]/[[vantage]] is one ISP 'isp', one IPv4-only vantage 'client'."""
    from probe.lab.scenario import ISP, Vantage

    s = parse_scenario(tomllib.loads(HEAD + '[[site]]\ndomain = "a.kz"\nexpect = "tls"\ntls = "sni_rst"\n'))
    assert s.default_world and s.isps == (ISP(),) and s.vantages == (Vantage(),)
    a = s.sites[0]
    assert a.stack == "v4" and a.tcp == () and a.actions("isp").tls == "sni_rst" and a.truth("client").expect == "tls"
    for sc in ("kz-2021", "kz-2020-12-drill", "kz-2020-12-drill-trusted", "protest-outage"):
        assert load_scenario(sc).default_world


def test_per_isp_actions_and_per_vantage_truth() -> None:
    s = parse_scenario(tomllib.loads(HEAD + '[[isp]]\nname = "a"\n[[isp]]\nname = "b"\n'
                                     '[[vantage]]\nname = "x"\nisp = "a"\n[[vantage]]\nname = "y"\nisp = "b"\n'
                                     'ipv4 = false\nipv6 = "ok"\n'
                                     '[[site]]\ndomain = "s.kz"\ntls = "sni_timeout"\nexpect = "tls"\n'
                                     'xfail_reason = "r"\nxfail_got = "dns"\n'
                                     '[[site.tcp]]\nport = 80\npayload = "fin"\n'
                                     '[site.isp.b]\ntls = "ok"\ndns = "nxdomain"\n'
                                     '[site.vantage.y]\nexpect = "dns"\n'))
    site = s.sites[0]
    assert site.actions("a").tls == "sni_timeout" and site.actions("a").dns == "ok"
    assert site.actions("b").tls == "ok" and site.actions("b").dns == "nxdomain"
    assert site.actions("b").tcp == site.tcp and site.tcp[0].port == 80 and site.tcp[0].payload == "fin"
    assert site.truth("x").expect == "tls" and site.truth("x").xfail_got == "dns"
    assert site.truth("y").expect == "dns" and site.truth("y").xfail_reason == ""  # own expect: no inherited xfail
    assert s.isps[1].asn == "AS64501" and not s.default_world


@pytest.mark.parametrize(("prefix", "v4", "want"), [
    # RFC 6052 §2.4, the examples table (192.0.2.33)
    ("2001:db8::/32", "192.0.2.33", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "192.0.2.33", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "192.0.2.33", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "192.0.2.33", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "192.0.2.33", "2001:db8:122:344::192.0.2.33"),
    ("64:ff9b::/96", "198.18.1.1", "64:ff9b::c612:101"),
    ("64:ff9b:1::/48", "198.18.1.1", "64:ff9b:1:c612:1:100::"),
])
def test_nat64_address_is_rfc6052(prefix: str, v4: str, want: str) -> None:
    import ipaddress

    from probe.lab.scenario import nat64_address

    assert ipaddress.IPv6Address(nat64_address(prefix, v4)) == ipaddress.IPv6Address(want)


def test_isp_prefix_rules() -> None:
    s = parse_scenario(tomllib.loads(HEAD + '[[isp]]\nname = "a"\n[[isp.tcp]]\nprefix = "198.18.0.80/32"\nport = 8443\n'
                                     'budget_bytes = 100\n[[isp.tcp]]\nprefix = "2001:db8:4b5a::/64"\nport = 443\n'
                                     'syn = "rst"\n[[site]]\ndomain = "a.kz"\nexpect = false\n'))
    r1, r2 = s.isps[0].tcp
    assert (r1.prefix, r1.port, r1.budget_bytes, r1.needs_engine) == ("198.18.0.80/32", 8443, 100, True)
    assert (r2.prefix, r2.syn, r2.needs_engine) == ("2001:db8:4b5a::/64", "rst", False)
    assert any(i.tcp for n in shipped_scenarios() for i in load_scenario(n).isps)  # used by a shipped scenario


@pytest.mark.parametrize(("rule", "needles"), [
    ('port = 443\n', ["isp #1 (a)", "'prefix'", "missing"]),
    ('prefix = "198.18.0.0/24"\n', ["'port'", "missing"]),
    ('prefix = "198.18.0.1/24"\nport = 443\n', ["'prefix'", "not an address prefix"]),
    ('prefix = "x"\nport = 443\n', ["'prefix'"]),
    ('prefix = "198.18.0.0/24"\nport = 443\nsyn = "later"\n', ["'syn'"]),
    ('prefix = "198.18.0.0/24"\nport = 443\nnames = []\n', ["'names'", "unknown key"]),
])
def test_bad_isp_prefix_rules(rule: str, needles: list[str], tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as ei:
        _load(HEAD + '[[isp]]\nname = "a"\n[[isp.tcp]]\n' + rule + A + 'expect = false\n', tmp_path)
    for n in ["bad.toml", *needles]:
        assert n in str(ei.value), (n, str(ei.value))


def test_zone_is_the_sites_own_dns() -> None:
    """zone: nxdomain removes the name from the authoritative zone; an address literal is its record."""
    import dns.message
    import dns.rcode

    from probe.lab.services import SiteSpec, Zone

    z = Zone([SiteSpec(domain="gone.kz", display="gone.kz", ip="198.18.1.1", zone="nxdomain"),
              SiteSpec(domain="lo.kz", display="lo.kz", ip="198.18.1.2", zone="127.0.0.1"),
              SiteSpec(domain="ok.kz", display="ok.kz", ip="198.18.1.3")], {})
    assert z.answer(dns.message.make_query("gone.kz", "A")).rcode() == dns.rcode.NXDOMAIN
    assert z.answer(dns.message.make_query("lo.kz", "A")).answer[0][0].address == "127.0.0.1"
    assert z.answer(dns.message.make_query("ok.kz", "A")).answer[0][0].address == "198.18.1.3"


def test_zone_extra_adds_addresses_to_the_sites_own_record() -> None:
    """zone_extra (break test 24, finding 2): the site's record holds its lab address and these, A or AAAA by
    family, for every resolver; only with zone = "ok", IP literals only."""
    import dns.message

    from probe.lab.scenario import ScenarioError, parse_scenario
    from probe.lab.services import SiteSpec, Zone

    z = Zone([SiteSpec(domain="mix.kz", display="mix.kz", ip="198.18.1.4",
                       zone_extra=("10.77.0.1", "127.0.0.1", "fe80::1"))], {})
    assert sorted(rd.address for rd in z.answer(dns.message.make_query("mix.kz", "A")).answer[0]) == [
        "10.77.0.1", "127.0.0.1", "198.18.1.4"]
    assert [rd.address for rd in z.answer(dns.message.make_query("mix.kz", "AAAA")).answer[0]] == ["fe80::1"]
    s = parse_scenario({"scenario": {"name": "t"},
                        "site": [{"domain": "a.kz", "zone_extra": ["127.0.0.1", "0.0.0.0"], "expect": "false"}]})
    assert s.sites[0].zone_extra == ("127.0.0.1", "0.0.0.0")
    for bad, says in ((["localhost"], "IP addresses"), ("127.0.0.1", "a list"), ([1], "a list")):
        with pytest.raises(ScenarioError, match=says):
            parse_scenario({"scenario": {"name": "t"},
                            "site": [{"domain": "a.kz", "zone_extra": bad, "expect": "false"}]})
    with pytest.raises(ScenarioError, match="zone_extra"):
        parse_scenario({"scenario": {"name": "t"},
                        "site": [{"domain": "a.kz", "zone": "nxdomain", "zone_extra": ["10.0.0.1"], "expect": "down"}]})


def test_dns_onpath_parses_and_is_shipped() -> None:
    from probe.lab.scenario import ScenarioError, parse_scenario

    s = parse_scenario({"scenario": {"name": "t"},
                        "isp": [{"name": "k", "hops": 2, "censor_hop": 2, "dns_onpath": True}],
                        "site": [{"domain": "a.kz", "dns": "inject", "expect": "dns"}]})
    assert s.isps[0].dns_onpath
    with pytest.raises(ScenarioError, match="dns_onpath"):
        parse_scenario({"scenario": {"name": "t"}, "isp": [{"name": "k", "dns_onpath": "yes"}],
                        "site": [{"domain": "a.kz", "expect": "false"}]})
    assert any(i.dns_onpath for n in shipped_scenarios() for i in load_scenario(n).isps)


def test_new_dns_and_http_keys_issue12() -> None:
    """port, redirects, vantage_status, zone cname/geo, dns inject_nxdomain/relay, http blockpage_unknown /
    redirect_blockpage: parsed, and the input carries the port (http://site:8080/path)."""
    sc = parse_scenario(tomllib.loads(HEAD + """
[[site]]
domain = "p.kz"
scheme = "http"
port = 8080
paths = ["/news/today"]
redirects = { "/news/today" = "/b", "/b" = "https://q.kz/" }
vantage_status = "captcha"
zone = "geo"
dns = "inject_nxdomain"
expect = false
[[site]]
domain = "q.kz"
port = 443
zone = "cname"
dns = "relay"
http = "redirect_blockpage"
expect = "http-diff"
"""))
    p, q = sc.sites
    assert p.inputs == ("http://p.kz:8080/news/today",) and p.port == 8080
    assert dict(p.redirects) == {"/news/today": "/b", "/b": "https://q.kz/"}
    assert (p.vantage_status, p.zone, p.dns) == ("captcha", "geo", "inject_nxdomain")
    assert q.inputs == ("https://q.kz/",) and q.input_port == 0  # the scheme's own port: no port in the URL
    assert (q.zone, q.dns, q.http) == ("cname", "relay", "redirect_blockpage") and q.censored_l7


def test_zone_cname_without_address_and_geodns() -> None:
    """zone = "cname": a CNAME to a name with no address, for every resolver; zone = "geo": the ISPs'
    resolvers (the authoritative server's ``geo`` answer) get the second address, DoH the first."""
    import dns.message
    import dns.rcode
    import dns.rdatatype

    from probe.lab.services import SiteSpec, Zone

    z = Zone([SiteSpec(domain="c.kz", display="c.kz", ip="198.18.1.1", zone="cname"),
              SiteSpec(domain="g.kz", display="g.kz", ip="198.18.1.2", zone="geo", ip_geo="198.19.128.1")], {})
    for geo in (False, True):
        r = z.answer(dns.message.make_query("c.kz", "A"), geo=geo)
        assert r.rcode() == dns.rcode.NOERROR and [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME]
        r = z.answer(dns.message.make_query("nodata.c.kz", "A"), geo=geo)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer  # the target exists, without address
    assert z.answer(dns.message.make_query("g.kz", "A")).answer[0][0].address == "198.18.1.2"
    assert z.answer(dns.message.make_query("g.kz", "A"), geo=True).answer[0][0].address == "198.19.128.1"


def test_shipped_scenarios_use_the_issue12_dns_and_http_conditions() -> None:
    """Each DNS/HTTP condition of issue 12 is used by a shipped scenario with its expect (lab-dns-http)."""
    sites = [s for n in shipped_scenarios() for s in load_scenario(n).sites]
    assert {s.dns for s in sites} >= {"inject", "inject_nxdomain", "relay"}
    assert {s.zone for s in sites} >= {"cname", "geo", "nxdomain"}
    assert {s.vantage_status for s in sites} >= {"403", "captcha"}
    assert {s.http for s in sites} >= {"blockpage_unknown", "redirect_blockpage"}
    assert any(s.input_port and any(p != "/" for p in s.paths) for s in sites)
    assert any(s.page_bytes > 1 << 20 for s in sites)  # beyond the probe's body cap
    assert any(len(s.redirects) > 10 for s in sites) and any(len(s.redirects) == 10 for s in sites)
    assert any(s.redirect and s.redirect.startswith("https://") and
               any(o.redirect.endswith(f"//{s.domain}/") for o in sites) for s in sites)  # a loop
    assert any(v.startswith("http://") for s in sites for _p, v in s.redirects)  # https -> http


def test_name_keyed_actions_name_the_sites_own_port() -> None:
    """An SNI/Host-keyed action acts on :443/:80 and on the input's own port (https://x.kz:8443/): every one of
    them, in path (sni_drop, sni_fin, host_drop, host_fin) and in the proxy (sni_timeout, sni_rst, mitm, the
    HTTP blockpages, rst, throttling), per ISP too. Before, the in-path ones on :8443 were accepted and acted
    on :443 only, the proxy ones refused for the site but accepted per ISP (and acted on :443 only)."""
    from probe.lab.scenario import ENGINE_HTTP, ENGINE_TLS, PROXY_HTTP, PROXY_TLS, name_ports

    assert name_ports("https", 8443) == ((443, 8443), (80,)) and name_ports("http", 8080) == ((443,), (80, 8080))
    assert name_ports("https", 443) == ((443,), (80,))
    for tls in (*ENGINE_TLS, *PROXY_TLS):
        sc = parse_scenario(tomllib.loads(HEAD + '[[isp]]\nname = "a"\n[[isp]]\nname = "b"\n' + A +
                                          f'port = 8443\ntls = "{tls}"\nexpect = "tls"\n[site.isp.b]\ntls = "ok"\n'))
        site = sc.sites[0]
        a, b = site.actions("a"), site.actions("b")
        if tls in ENGINE_TLS:
            assert a.engine_names("https", site.port) == {443: ENGINE_TLS[tls], 8443: ENGINE_TLS[tls]}, tls
        else:
            assert a.proxy_ports("https", site.port) == ((443, 8443), ()), tls
        assert b.engine_names("https", 8443) == {} and b.proxy_ports("https", 8443) == ((), ())
    for http in (*ENGINE_HTTP, *PROXY_HTTP):
        sc = parse_scenario(tomllib.loads(HEAD + '[[isp]]\nname = "a"\n' + A +
                                          'scheme = "http"\nport = 8080\nexpect = "http-diff"\n'
                                          f'[site.isp.a]\nhttp = "{http}"\n'))
        a = sc.sites[0].actions("a")
        assert (a.engine_names("http", 8080) == {80: ENGINE_HTTP[http], 8080: ENGINE_HTTP[http]} if http in ENGINE_HTTP
                else a.proxy_ports("http", 8080) == ((), (80, 8080))), http
    slow = parse_scenario(tomllib.loads(HEAD + A + 'port = 8443\nthrottle_kbps = 100\n'
                                        'expect = "throttling"\n')).sites[0]
    assert slow.default_actions.proxy_ports("https", slow.port) == ((443, 8443), (80,))


@pytest.mark.parametrize(("text", "needles"), [
    # break test 24, finding 6: "/a b" passed, then the probe skipped the input as a malformed row: "missing ✗"
    (HEAD + A + 'expect = false\npaths = ["/", "/a b"]\n', ["a.kz", "'paths'", "'/a b'", "whitespace"]),
    (HEAD + A + 'expect = false\npaths = ["/a\\tb"]\n', ["a.kz", "'paths'", "whitespace or control"]),
    (HEAD + A + 'expect = false\npaths = ["/\\u0000"]\n', ["a.kz", "'paths'", "control characters"]),
    # measured, but under another path than the one written: the lab could not pair its record
    (HEAD + A + 'expect = false\npaths = ["/сайт"]\n', ["a.kz", "'paths'", "/%D1%81", "write the path"]),
    # the host: a name the list reader refuses (RFC 6761), or a label of a secret's shape (probe/secretlike.py)
    (HEAD + '[[site]]\ndomain = "shop.localhost"\nexpect = false\n', ["shop.localhost", "'domain'", "RFC 6761"]),
    # (a host of a token's shape: a known service's key; a hex or mixed-case label alone is no secret)
    (HEAD + '[[site]]\ndomain = "AKIAIOSFODNN7EXAMPLE.kz"\nexpect = false\n',
     ["'domain'", "looks like a secret"]),
])
def test_a_site_whose_input_the_probe_refuses_is_a_scenario_error(text: str, needles: list[str],
                                                                   tmp_path: Path) -> None:
    """Every input of a site passes the check the probe's list reader gives a line of the lab's inputs.txt
    (probe.targets) and is measured under the path written, or the scenario is refused naming file, site
    and key (exit 78), before a lab is built. Break test 24, finding 6: ``paths = ["/a b"]`` passed, the
    probe dropped the input as malformed and the lab reported "a verdict differs" (exit 65)."""
    with pytest.raises(ScenarioError) as ei:
        _load(text, tmp_path)
    for n in ["bad.toml", *needles]:
        assert n in str(ei.value), (n, str(ei.value))


def test_a_bad_path_exits_78_before_a_lab_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``kzprobe lab run`` on the break test's scenario: 78, naming scenario, site and key; nothing built."""
    from probe.cli import main

    def no_lab(self: object) -> None:
        raise AssertionError("a lab was built for a broken scenario")

    monkeypatch.setattr("probe.lab.run.Lab.start", no_lab)
    p = tmp_path / "sc2.toml"
    p.write_text(HEAD + 'description = "d"\n[[site]]\ndomain = "a.example"\nexpect = "false"\npaths = ["/a b"]\n'
                 '[[site]]\ndomain = "b.example"\nexpect = "false"\n', encoding="utf-8")
    assert main(["lab", "run", str(p), "--out", str(tmp_path / "out")]) == 78
    err = capsys.readouterr().err
    assert f"scenario {p}: site #1 (a.example): key 'paths': '/a b'" in err, err


def test_inputs_with_fragments_queries_and_idns_still_pair() -> None:
    """What the probe normalises but measures under the same scheme, host and path stays allowed."""
    import tomllib

    from probe.lab.scenario import parse_scenario

    sc = parse_scenario(tomllib.loads(HEAD + '[[site]]\ndomain = "Сайт.Қаз"\nexpect = false\n'
                                             'paths = ["/", "/a?b=c", "/d#e", "/%D1%81"]\n'), file="t.toml")
    assert sc.sites[0].inputs[1] == "https://Сайт.Қаз/a?b=c"
