"""Scenario loader: strict validation, IDN domains, the shipped scenarios (no root needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from probe.lab.scenario import (DNS_SIMPLE, HTTP_ACTIONS, IP_ACTIONS, TLS_ACTIONS, ScenarioError, load_scenario,
                                parse_scenario, shipped_scenarios)

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
    names = shipped_scenarios()
    for needed in ("kz-2021", "kz-2020-12-drill", "kz-2020-12-drill-trusted", "protest-outage"):
        assert needed in names
    scenarios = [load_scenario(n) for n in names]
    sites = [s for sc in scenarios for s in sc.sites]
    seen = {f"dns:{s.dns.split(':')[0]}" for s in sites} | {f"ip:{s.ip}" for s in sites} | \
           {f"tls:{s.tls}" for s in sites} | {f"http:{s.http}" for s in sites}
    wanted = {f"dns:{a}" for a in DNS_SIMPLE + ("blockpage",)} | {f"ip:{a}" for a in IP_ACTIONS} | \
             {f"tls:{a}" for a in TLS_ACTIONS} | {f"http:{a}" for a in HTTP_ACTIONS}
    assert wanted <= seen, wanted - seen
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
    ("-1", ["'page_bytes'", "0..1048576"]),
    ("2000000", ["'page_bytes'", "0..1048576"]),
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
