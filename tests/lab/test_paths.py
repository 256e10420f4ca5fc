"""The lab's paths themselves (root): routers that decrement the TTL and answer ICMP
time-exceeded, the censor at its declared hop, DNS64 at the ISP resolvers, IPv6-only,
IPv4-only and broken-IPv6 vantages — checked from inside the namespaces, without the probe."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from probe.lab.run import Lab
from probe.lab.scenario import load_scenario, nat64_address
from probe.lab.topology import path_addresses, resolver_ip, resolver_ip6
from tests.lab.conftest import namespaces_of

pytestmark = pytest.mark.lab

TRACE = textwrap.dedent("""
    import json, socket, sys, time
    dst, hops, six = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "6"
    fam = socket.AF_INET6 if six else socket.AF_INET
    icmp = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if six else socket.IPPROTO_ICMP)
    icmp.settimeout(2.0)
    out = []
    for ttl in range(1, hops + 2):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        if six:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        port = 33434 + ttl
        u.sendto(b"kzprobe-trace", (dst, port))
        got = None
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and got is None:
            try:
                data, addr = icmp.recvfrom(2048)
            except TimeoutError:
                break
            typ = data[0] if six else data[(data[0] & 15) * 4]
            if (six and typ in (1, 3)) or (not six and typ in (3, 11)):
                got = [addr[0], typ]
        out.append(got)
        u.close()
    print(json.dumps(out))
""")

DNS = textwrap.dedent("""
    import json, sys, dns.message, dns.query
    r = dns.query.udp(dns.message.make_query(sys.argv[2], sys.argv[3]), sys.argv[1], timeout=3)
    print(json.dumps(sorted(rd.to_text() for rr in r.answer for rd in rr)))
""")

CONNECT = textwrap.dedent("""
    import socket, sys
    try:
        socket.create_connection((sys.argv[1], 443), timeout=float(sys.argv[2])).close()
        print("ok")
    except OSError as exc:
        print(type(exc).__name__, exc.errno)
""")


@pytest.fixture(scope="module")
def lab(require_lab: None) -> Iterator[Lab]:
    with Lab(load_scenario("ipv6-dns64")) as lab:
        yield lab
    assert namespaces_of(lab.topology.lab_id) == []


def _in(lab: Lab, vantage: str, script: str, *args: str) -> str:
    p = subprocess.run(lab.topology.exec_prefix(vantage) + [sys.executable, "-c", script, *args],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.parametrize("six", [False, True])
def test_every_router_decrements_the_ttl_and_says_so(lab: Lab, six: bool) -> None:
    """A traceroute from the dual-stack vantage: ICMP time-exceeded from each of kaztel's
    three routers in order (the censor is hop 2), then the site's own port-unreachable."""
    sc = lab.scenario
    isp = sc.isp(sc.vantage("dual").isp)
    assert (isp.hops, isp.censor_hop) == (3, 2)
    site = sc.site("dualstack.example.kz").domain
    dst = lab.site_addresses.v6[site] if six else lab.site_addresses.v4[site]
    hops = json.loads(_in(lab, "dual", TRACE, dst, str(isp.hops), "6" if six else "4"))
    exceeded, unreachable = (3, 1) if six else (11, 3)
    got = [[str(ipaddress.ip_address(a)), t] for a, t in hops[:-1]]
    assert got == [[str(ipaddress.ip_address(a)), exceeded] for a in path_addresses(sc, "dual", ipv6=six)]
    # past the last router: the internet's own unreachable (from the site's address over IPv4; Linux
    # answers IPv6 from the internet namespace's link address, the site's being a local route)
    assert hops[-1][1] == unreachable


def test_dns64_synthesises_with_each_isps_prefix(lab: Lab) -> None:
    sc = lab.scenario
    v4site = sc.site("v4only.example.kz").domain
    v4 = lab.site_addresses.v4[v4site]
    kaztel = json.loads(_in(lab, "v6only", DNS, resolver_ip6(0), v4site, "AAAA"))
    beeline = json.loads(_in(lab, "v6local", DNS, resolver_ip6(1), v4site, "AAAA"))
    tele2 = json.loads(_in(lab, "v6bare", DNS, resolver_ip6(2), v4site, "AAAA"))
    assert kaztel == [nat64_address("64:ff9b::/96", v4)]
    assert beeline == [nat64_address("64:ff9b:1::/48", v4)]
    assert tele2 == []  # no DNS64 at tele2
    # a real AAAA is never replaced; A queries are untouched
    dual = sc.site("dualstack.example.kz").domain
    assert json.loads(_in(lab, "v6only", DNS, resolver_ip6(0), dual, "AAAA")) == [lab.site_addresses.v6[dual]]
    assert json.loads(_in(lab, "dual", DNS, resolver_ip(0), v4site, "A")) == [v4]


def test_address_families_of_the_vantages(lab: Lab) -> None:
    sc = lab.scenario
    dual = sc.site("dualstack.example.kz").domain
    v4, v6 = lab.site_addresses.v4[dual], lab.site_addresses.v6[dual]
    nat = lab.site_addresses.nat64[sc.site("v4only.example.kz").domain][0]
    assert _in(lab, "dual", CONNECT, v6, "2") == "ok"
    assert _in(lab, "dual", CONNECT, v4, "2") == "ok"
    assert _in(lab, "v6only", CONNECT, v6, "2") == "ok"
    assert _in(lab, "v6only", CONNECT, nat, "2") == "ok"  # NAT64: the site answers its synthesised address
    assert _in(lab, "v6only", CONNECT, v4, "2").split()[0] == "OSError"  # no IPv4 route: network unreachable
    assert _in(lab, "v4only", CONNECT, v6, "2").split()[0] == "OSError"  # no IPv6 at all
    assert _in(lab, "broken6", CONNECT, v4, "2") == "ok"
    assert _in(lab, "broken6", CONNECT, v6, "1").split()[0] == "TimeoutError"  # address and route, packets dropped
