"""AddressPolicy: addresses, ports and URLs the helper refuses (no network here)."""

from __future__ import annotations

import ipaddress

import pytest

from probe.addresses import DEFAULT_BOGONS, ConnectTo
from probe.helper.ssrf import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    AddressPolicy,
    PolicyConnectTo,
    parse_ipv4_shorthand,
)

POLICY = AddressPolicy()

ALLOWED = [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "192.31.196.1", "223.255.255.255", "2606:4700:4700::1111",
    "[2001:4860:4860::8888]", "2a00:1450::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "64:ff9b::8.8.4.4",
]

REFUSED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
    "100.127.255.255", "169.254.169.254", "0.0.0.0", "0.1.2.3", "192.0.0.8", "192.0.2.1", "192.88.99.1",
    "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    "::", "::1", "[::1]", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1",
    "64:ff9b::10.1.2.3", "64:ff9b:1::808:808", "100::1", "2001::1", "2001:0:4136:e378::1", "2001:db8::1",
    "2002:808:808::1", "2002:7f00:1::", "3fff::1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0",
    "ff02::1", "fec0::1", "::7f00:1", "::127.0.0.1", "5f00::1", "4000::1",
    "not-an-ip", "", "example.org", "2130706433", "0x7f.1", "127.1",
]


@pytest.mark.parametrize("ip", ALLOWED)
def test_global_unicast_allowed(ip: str) -> None:
    assert POLICY.allows(ip), POLICY.refusal(ip)
    assert POLICY.refusal(ip) is None


@pytest.mark.parametrize("ip", REFUSED)
def test_special_purpose_refused(ip: str) -> None:
    assert not POLICY.allows(ip)
    assert POLICY.refusal(ip)


@pytest.mark.parametrize("cidr", [r for r, _, _ in IPV4_SPECIAL + IPV6_SPECIAL] + list(DEFAULT_BOGONS))
def test_every_registry_and_ooni_bogon_range_refused_at_both_ends(cidr: str) -> None:
    net = ipaddress.ip_network(cidr)
    for addr in (net.network_address, net.broadcast_address):
        assert not POLICY.allows(str(addr)), f"{addr} in {cidr}"


def test_refusal_explains() -> None:
    assert POLICY.refusal("169.254.169.254") == "169.254.169.254: link local, cloud metadata (169.254.0.0/16)"
    assert POLICY.refusal("::ffff:127.0.0.1") == "::ffff:7f00:1: embeds 127.0.0.1, loopback (127.0.0.0/8)"
    assert "not an IP address" in (POLICY.refusal("localhost") or "")


def test_allow_private_opens_only_its_ranges() -> None:
    lab = AddressPolicy(allow_private=("198.18.0.0/15", "192.0.2.0/24", "127.0.0.0/8"))
    for ip in ("198.18.0.1", "198.19.3.4", "192.0.2.10", "127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::c000:20a"):
        assert lab.allows(ip), ip
    for ip in ("10.0.0.1", "169.254.169.254", "198.51.100.1", "::1", "fe80::1"):
        assert not lab.allows(ip), ip
    assert AddressPolicy(allow_private=("fc00::/7",)).allows("fd00::1")


def test_bad_allow_private_and_ports_are_named() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        AddressPolicy(allow_private=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="ports"):
        AddressPolicy(ports=frozenset({0}))
    with pytest.raises(ValueError, match="ports"):
        AddressPolicy(ports=frozenset())


def test_allows_endpoint_checks_port_and_address() -> None:
    assert POLICY.allows_endpoint("8.8.8.8", 443)
    assert POLICY.allows_endpoint("8.8.8.8", 80)
    assert not POLICY.allows_endpoint("8.8.8.8", 22)
    assert not POLICY.allows_endpoint("127.0.0.1", 443)
    assert AddressPolicy(ports=frozenset({8443})).allows_endpoint("8.8.8.8", 8443)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("017700000001", "127.0.0.1"), ("10.1", "10.0.0.1"),
    ("169.254.43518", "169.254.169.254"), ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
    ("1.2.3.4.5", None), ("08.0.0.1", None), ("256.0.0.1", None), ("1.2.3.4 x", None), ("", None), ("abc", None),
])
def test_ipv4_shorthand_like_inet_aton(text: str, expected: str | None) -> None:
    got = parse_ipv4_shorthand(text)
    assert (str(got) if got else None) == expected


REFUSED_URLS = [
    "http://127.0.0.1/", "https://127.0.0.1/", "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/",
    "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://[fe80::1%25eth0]/", "http://[fc00::1]/",
    "http://224.0.0.1/", "http://255.255.255.255/", "http://2130706433/", "http://0177.0.0.1/", "http://0x7f.1/",
    "http://127.1/", "http://0x7f000001/", "http://127.0.0.1./", "http://%31%32%37.0.0.1/",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "http://127\u30020\u30020\u30021/", "http://[64:ff9b::7f00:1]/",
    "http://localhost/", "http://LOCALHOST./", "http://api.localhost/", "http://allowed.example:8080/",
    "http://allowed.example:22/", "http://user@allowed.example/",
    "http://user:pw@allowed.example/", "http://allowed.example\\@127.0.0.1/", "ftp://allowed.example/",
    "file:///etc/passwd", "gopher://allowed.example/", "javascript:alert(1)", "HTTPX://allowed.example/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_check_url_refuses(url: str) -> None:
    problem = POLICY.url_problem(url)
    assert problem is not None and problem.kind == "refused", problem
    assert POLICY.check_url(url) == problem.reason


@pytest.mark.parametrize("url", [
    "http://1.2.3.4.5/", "http://[::1/", "http://[zz::1]/", "http://a b/", "http:/x/", "no-scheme.example/",
    "http://allowed.example:8o/", "http://%ff%fe/", "http://allowed.example\\evil/", "http://0x/",
])
def test_check_url_malformed(url: str) -> None:
    problem = POLICY.url_problem(url)
    assert problem is not None and problem.kind == "malformed", problem


@pytest.mark.parametrize("url", [
    "http://allowed.example/", "https://allowed.example/path?q=1#frag", "http://allowed.example:80/",
    "https://allowed.example:443/", "https://8.8.8.8/", "http://[2606:4700:4700::1111]/", "https://xn--80aswg.xn--80ao21a/",
    "https://сайт.қаз/", "HTTPS://ALLOWED.EXAMPLE/", "http://a1.example.123x/", "https://1.1.1.1./dns-query",
])
def test_check_url_allows(url: str) -> None:
    assert POLICY.check_url(url) is None


def test_check_url_with_other_ports_and_lab_ranges() -> None:
    lab = AddressPolicy(allow_private=("192.0.2.0/24",), ports=frozenset({80, 443, 8080}))
    assert lab.check_url("http://allowed.example:8080/") is None
    assert lab.check_url("http://192.0.2.10/") is None
    assert lab.check_url("http://3221225994/") is None  # 192.0.2.10 in decimal: allowed here
    assert lab.check_url("http://198.51.100.1/") is not None
    assert lab.check_url("https://allowed.example:80/") is None  # any allowed port, whatever the scheme


def test_guard_sends_refused_endpoints_to_the_sink_and_records_them() -> None:
    inner = ConnectTo(mapping={"192.0.2.10:443": "127.0.0.1:1111"}, fallback="127.0.0.1:2222")
    guard = PolicyConnectTo(inner=inner, policy=AddressPolicy(allow_private=("192.0.2.0/24",)), sink="127.0.0.1:3333")
    assert guard.resolve("192.0.2.10", 443) == ("127.0.0.1", 1111)
    assert guard.resolve("192.0.2.11", 80) == ("127.0.0.1", 2222)
    assert guard.resolve("127.0.0.1", 443) == ("127.0.0.1", 3333)
    assert guard.resolve("192.0.2.10", 22) == ("127.0.0.1", 3333)
    assert guard.resolve("::1", 80) == ("127.0.0.1", 3333)
    assert guard.resolve("127.0.0.1", 443) == ("127.0.0.1", 3333)
    assert guard.refused == ["127.0.0.1:443", "192.0.2.10:22", "[::1]:80"]
