"""The volunteer's own network is off limits (issue 11, 1): a loopback "home router" watcher.

The vantage's LAN is 192.168.1.0/24 with its router at 192.168.1.1 (and fd00:1::/64 for
IPv6). Every router address and port is mapped onto one loopback web server — the home
router — that serves an admin page and counts requests, for the probe AND the control.
A listed site, a DNS answer or a censor's injected redirect then points there in every
way issue 11 measured; the router must see zero requests, and the record must say that
an answer or redirect pointed into the local network (address, rule, failure string)
without any of the router's content.

The positive controls show the watcher works: an input that is itself a private literal
may redirect within private space, and the router sees that request.
"""

from __future__ import annotations

from datetime import UTC

import pytest

from probe import records
from probe.failures import HTTP_INVALID_REDIRECT, LOCAL_NETWORK_REFUSED
from probe.localnet import (
    R_MACHINE,
    R_PORT,
    R_PRIVATE_FROM_HTTPS,
    R_PRIVATE_FROM_PUBLIC,
    R_TUNNEL,
    R_VANTAGE_LAN,
    AddressPolicy,
    LocalNetwork,
)
from probe.records import RunInfo
from probe.verdict import VantageStatus
from tests.fixtures.servers import redirect

SITE = "192.0.2.200"
ROUTER = "192.168.1.1"
ROUTER_V6 = "fd00:1::1"
ISP_BLOCKPAGE = "10.10.34.35"
ROUTER_PAGE = b"<html><title>TP-LINK admin</title><body>router secret</body></html>"
#: IPv6 addresses that tunnel to an IPv4 one (6to4, RFC 3056 §2: 2002:V4ADDR::/48; Teredo, RFC 4380 §4:
#: 2001:0:SERVER:FLAGS:PORT:CLIENT, port and client inverted): a host with a 6to4 or Teredo interface sends
#: their packets to that IPv4 address. Break test 24 (finding 10): a redirect to 2002:a4d:1:: (the LAN gateway
#: 10.77.0.1) was attempted, stopped only by a missing IPv6 route.
SIXTOFOUR_ROUTER = "2002:c0a8:101::"                       # 192.168.1.1
TEREDO_ROUTER = "2001:0:4136:e378:8000:63bf:3f57:fefe"     # server 65.54.227.120, client 192.168.1.1
SIXTOFOUR_PRIVATE = "2002:a0a:2223::"                      # 10.10.34.35 (private, not the LAN)
TEREDO_PRIVATE_SERVER = "2001:0:a0a:2223:8000:63bf:bec9:1c87"  # server 10.10.34.35, client 65.54.227.120
SIXTOFOUR_LOOPBACK = "2002:7f00:1::"                       # 127.0.0.1
TUNNELS = (SIXTOFOUR_ROUTER, TEREDO_ROUTER, SIXTOFOUR_PRIVATE, TEREDO_PRIVATE_SERVER, SIXTOFOUR_LOOPBACK)


def home_policy(extra_ports: frozenset[int] = frozenset()) -> AddressPolicy:
    import ipaddress

    local = LocalNetwork(subnets=(ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd00:1::/64")),
                         addresses=(ipaddress.ip_address("192.168.1.23"),),
                         gateways=(ipaddress.ip_address(ROUTER), ipaddress.ip_address(ROUTER_V6)))
    return AddressPolicy(local=local, extra_ports=extra_ports)


@pytest.fixture
async def router(world):
    """The home router (and the ISP's private blockpage host) on one watched loopback server."""
    world.address_policy = home_policy()
    srv = await world.web_server({"/": ROUTER_PAGE, "/cgi-bin/reboot": ROUTER_PAGE, "/blocked": ROUTER_PAGE,
                                  "/login": ROUTER_PAGE}, https=True, names=("router.lan", "www.example.org"))
    for ip in (ROUTER, ROUTER_V6, "192.168.1.23", "::ffff:192.168.1.1", ISP_BLOCKPAGE, "10.10.34.36", "fd00:9::1",
               *TUNNELS):
        for port in (80, 443, 8080):
            for ep, to in srv.connect_to(ip, http_port=port).mapping.items():
                world.route(ep, to, probe=True, control=False)  # the control is not on this LAN
    return srv


def record(obs, v) -> dict:
    from datetime import datetime

    run = RunInfo(report_id="r", test_start_time=datetime.now(UTC), probe_asn="AS1", probe_cc="KZ",
                  probe_network_name="", vantage_id="", annotations=())
    return records.measurement(obs, v, run, start=datetime.now(UTC), runtime_s=0.1, vantage=VantageStatus())


def assert_nothing_stored(rec: dict) -> None:
    """Not a byte of the router's content is in the record."""
    import json

    text = json.dumps(rec)
    assert "router secret" not in text and "TP-LINK" not in text
    assert "cm91dGVyIHNlY3JldA" not in text  # base64 of the body's middle, just in case


# the redirect target, the address and the rule the record must name
REDIRECTS = [
    pytest.param("http://192.168.1.1/cgi-bin/reboot?now=1", "192.168.1.1", R_VANTAGE_LAN, id="router-literal"),
    pytest.param("http://192.168.1.1:8080/cgi-bin/reboot", "192.168.1.1", R_VANTAGE_LAN, id="router-other-port"),
    pytest.param("http://[fd00:1::1]/", "fd00:1::1", R_VANTAGE_LAN, id="router-v6"),
    pytest.param("http://[::ffff:192.168.1.1]/", "::ffff:c0a8:101", R_VANTAGE_LAN, id="router-v4-mapped"),
    pytest.param("http://192.168.1.23/", "192.168.1.23", R_VANTAGE_LAN, id="own-address"),
    pytest.param("http://router.lan/cgi-bin/reboot?now=1", "192.168.1.1", R_VANTAGE_LAN, id="router-by-name"),
    pytest.param("http://10.10.34.35/blocked", ISP_BLOCKPAGE, R_PRIVATE_FROM_PUBLIC, id="isp-blockpage-private"),
    pytest.param("http://[fd00:9::1]/", "fd00:9::1", R_PRIVATE_FROM_PUBLIC, id="ula-from-public"),
    pytest.param("http://127.0.0.1:22/", "127.0.0.1", R_MACHINE, id="loopback"),
    pytest.param(f"http://[{SIXTOFOUR_ROUTER}]/", SIXTOFOUR_ROUTER, R_VANTAGE_LAN, id="router-6to4"),
    pytest.param(f"http://[{TEREDO_ROUTER}]/", TEREDO_ROUTER, R_VANTAGE_LAN, id="router-teredo-client"),
    pytest.param(f"http://[{SIXTOFOUR_PRIVATE}]/", SIXTOFOUR_PRIVATE, R_TUNNEL, id="private-6to4"),
    pytest.param(f"http://[{TEREDO_PRIVATE_SERVER}]/", TEREDO_PRIVATE_SERVER, R_TUNNEL, id="private-teredo-server"),
    pytest.param(f"http://[{SIXTOFOUR_LOOPBACK}]/", SIXTOFOUR_LOOPBACK, R_MACHINE, id="loopback-6to4"),
]


@pytest.mark.parametrize(("location", "address", "rule"), REDIRECTS)
async def test_a_redirect_into_the_local_network_is_never_followed(world, router, location: str, address: str,
                                                                   rule: str) -> None:
    """Issue 11's attack: ``302 Location: http://192.168.1.1/cgi-bin/reboot?now=1`` from plain HTTP."""
    await world.site(SITE, {"/": redirect(location)}, names=("www.example.org",), https=False)
    world.dns("www.example.org", probe=[SITE], control=[SITE])
    world.dns("router.lan", probe=[ROUTER], control=[ROUTER])
    obs, v = await world.measure("http://www.example.org/")
    assert router.requests == [], f"the home router was sent {[r.path for r in router.requests]}"
    first, refused = obs.http.requests
    assert first.response.status_code == 302 and first.response.header("Location") == location  # evidence kept
    assert refused.ip is None and refused.response is None
    ((shown, why),) = refused.refused
    assert why == rule and address in shown
    want = HTTP_INVALID_REDIRECT if rule == R_MACHINE else LOCAL_NETWORK_REFUSED
    assert obs.http.failure == want and refused.failure == want
    rec = record(obs, v)
    assert rec["test_keys"]["requests"][0]["x_refused"][0]["rule"] == rule
    assert_nothing_stored(rec)


async def test_a_redirect_to_a_port_not_allowed_is_refused(world, router) -> None:
    """Ports: only the input's, 80 and 443 (unless http.extra_ports says more)."""
    await world.site(SITE, {"/": redirect("http://192.0.2.201:8080/admin")}, names=("www.example.org",), https=False)
    await world.site("192.0.2.201", {"/admin": b"<title>other</title>"}, names=("www.example.org",), https=False)
    world.dns("www.example.org", probe=[SITE], control=[SITE])
    obs, v = await world.measure("http://www.example.org/")
    assert obs.http.failure == LOCAL_NETWORK_REFUSED
    assert obs.http.requests[-1].refused == (("192.0.2.201:8080", R_PORT),)


async def test_extra_ports_are_allowed_when_configured(world, router, web_server) -> None:
    other = await web_server({"/admin": b"<title>other</title>"}, names=("www.example.org",))
    world.route("192.0.2.201:8080", other.http)
    world.address_policy = home_policy(extra_ports=frozenset({8080}))
    await world.site(SITE, {"/": redirect("http://192.0.2.201:8080/admin")}, names=("www.example.org",), https=False)
    world.dns("www.example.org", probe=[SITE], control=[SITE])
    obs, v = await world.measure("http://www.example.org/")
    assert obs.http.failure is None and obs.http.final.response.title == "other"


async def test_a_verified_https_site_never_leads_into_private_space(world, router) -> None:
    await world.site(SITE, {"/": redirect("http://10.10.34.35/blocked")}, names=("www.example.org",))
    world.dns("www.example.org", probe=[SITE], control=[SITE])
    obs, v = await world.measure("https://www.example.org/")
    assert router.requests == []
    assert obs.http.requests[-1].refused == ((ISP_BLOCKPAGE, R_PRIVATE_FROM_HTTPS),)
    assert obs.http.failure == LOCAL_NETWORK_REFUSED


@pytest.mark.parametrize(("answer", "says"), [
    (ROUTER, "vantage's own network"), ("192.168.1.23", "vantage's own network"),
    (ROUTER_V6, "vantage's own network"), (ISP_BLOCKPAGE, "private address"), ("fd00:9::1", "private address"),
    (SIXTOFOUR_ROUTER, "vantage's own network: not connected (gateway 192.168.1.1)"),
    (TEREDO_ROUTER, "vantage's own network: not connected (gateway 192.168.1.1)"),
    (SIXTOFOUR_PRIVATE, "6to4 or Teredo address of a non-global IPv4 address: not connected (10.10.34.35)"),
    (TEREDO_PRIVATE_SERVER, "6to4 or Teredo address of a non-global IPv4 address: not connected (10.10.34.35)"),
])
async def test_a_dns_answer_into_the_local_network_is_recorded_not_used(world, router, answer: str, says: str) -> None:
    """A DNS answer (the ISP's, or a lie) naming the router or a private address: never connected
    to; the answer stays in the record (the evidence of an ISP blockpage on a private address)."""
    await world.site(SITE, {"/": b"<title>real</title>"}, names=("www.example.org",), probe=False)
    world.dns("www.example.org", probe=[answer], control=[SITE])
    obs, v = await world.measure("https://www.example.org/")
    assert router.requests == [] and router.sni == []
    assert [ip for ip, _ in obs.skipped] == [answer] and says in obs.skipped[0][1]
    assert answer in obs.probe_addresses()
    assert all(e.ip != answer for e in obs.endpoints)
    rec = record(obs, v)
    tk = rec["test_keys"]
    assert tk["x_skipped_addresses"][0]["failure"] == LOCAL_NETWORK_REFUSED
    assert tk["x_skipped_addresses"][0]["address"] == answer
    assert v.blocking == "dns", v.reason  # the answer differs from the control's: DNS blocking, from the address alone
    assert_nothing_stored(rec)


async def test_a_control_answer_tunnelling_into_the_lan_is_not_used(world, router) -> None:
    """The control's answers (DoH, the helper's) join the probe's endpoints through the same guard: a 6to4 or
    Teredo address of the router among them is never connected to (break test 24, finding 10)."""
    await world.site(SITE, {"/": b"<title>real</title>"}, names=("www.example.org",))
    world.dns("www.example.org", probe=[SITE], control=[SITE, SIXTOFOUR_ROUTER, TEREDO_ROUTER, SIXTOFOUR_PRIVATE])
    obs, v = await world.measure("https://www.example.org/")
    assert router.requests == [] and router.sni == []
    assert [e.ip for e in obs.endpoints] == [SITE]
    assert obs.http.final.response.title == "real"


# ------------------------------------------------------------- positive controls (the watcher works)


async def test_a_private_literal_input_may_redirect_within_private_space(world, router) -> None:
    """The origin was already there (a listed http://10.10.34.36/): its redirect to another
    private address (not the vantage's LAN) is followed — and the watcher sees it."""
    world.helper = False
    await world.site("10.10.34.36", {"/": redirect("http://10.10.34.35/login")}, names=("10.10.34.36",), https=False)
    obs, v = await world.measure("http://10.10.34.36/")
    assert [r.path for r in router.requests] == ["/login"]
    assert obs.http.failure is None and obs.http.final.ip == ISP_BLOCKPAGE


async def test_even_a_private_origin_never_reaches_the_vantage_lan(world, router) -> None:
    world.helper = False
    await world.site("10.10.34.36", {"/": redirect("http://192.168.1.1/")}, names=("10.10.34.36",), https=False)
    obs, v = await world.measure("http://10.10.34.36/")
    assert router.requests == []
    assert obs.http.requests[-1].refused == ((ROUTER, R_VANTAGE_LAN),)


async def test_a_private_origin_never_follows_a_tunnel_into_private_space(world, router) -> None:
    """A private origin may redirect to 10.10.34.35 (above), not to the 6to4 address carrying it:
    RFC 3056 §2 builds a 6to4 prefix from a *globally unique* IPv4 address, so one carrying a private
    address is no 6to4 site's, only a way to send packets to that private address. Break test 24."""
    world.helper = False
    await world.site("10.10.34.36", {"/": redirect(f"http://[{SIXTOFOUR_PRIVATE}]/login")}, names=("10.10.34.36",),
                     https=False)
    obs, v = await world.measure("http://10.10.34.36/")
    assert router.requests == []
    assert obs.http.requests[-1].refused == ((SIXTOFOUR_PRIVATE, R_TUNNEL),)
    assert obs.http.failure == LOCAL_NETWORK_REFUSED


@pytest.mark.parametrize(("ip", "rule"), [
    ("2002:808:808::", None),                                   # 6to4 of 8.8.8.8: a global address, allowed
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),             # Teredo, server and client global
    ("2002:a4d:1::", R_TUNNEL),                                 # break test 24: 10.77.0.1, no LAN known here
    ("2002:c000:201::", R_TUNNEL),                              # 192.0.2.1, documentation (not global)
    (SIXTOFOUR_ROUTER, R_VANTAGE_LAN), (TEREDO_ROUTER, R_VANTAGE_LAN),
    (SIXTOFOUR_LOOPBACK, R_MACHINE),
    ("2001:0:4136:e378:8000:63bf:5601:101", R_MACHINE),         # Teredo client 169.254.254.254 (link-local)
    # review 24b: multicast, which ipaddress's is_global calls global, is refused as a plain IPv4 one is
    ("2002:e000:fb::1", R_MACHINE),                             # 6to4 of 224.0.0.251 (mDNS)
    ("2002:efff:fffa::1", R_MACHINE),                           # 6to4 of 239.255.255.250 (SSDP)
    ("2001:0:4136:e378::1fff:fffe", R_MACHINE),                 # Teredo client 224.0.0.1
    ("2002:808:808::1", None),                                  # 6to4 of 8.8.8.8, a host in it: allowed
])
def test_tunnel_addresses_are_judged_by_the_ipv4_they_carry(ip: str, rule: str | None) -> None:
    """6to4 (RFC 3056 §2) and Teredo (RFC 4380 §4: the server's and the client's mapped address) carry
    global IPv4 addresses; one carrying any other is refused from every origin, named by what it
    carries (machine-local, the vantage's LAN, else tunnel_to_non_global)."""
    from probe.addresses import not_local_address

    policy = home_policy() if rule != R_TUNNEL else AddressPolicy()
    assert policy.refuse_address(ip) == rule
    assert policy.refuse_address(ip, origin_private=True) == rule
    assert not_local_address(ip) is (rule is None)  # the control's and the helper-less guard


@pytest.mark.parametrize(("prefixlen", "ip"), [
    # RFC 6052 §2.4, the examples table: 192.0.2.33 under each prefix length of §2.2
    (32, "2001:db8:c000:221::"),
    (40, "2001:db8:1c0:2:21::"),
    (48, "2001:db8:122:c000:2:2100::"),
    (56, "2001:db8:122:3c0:0:221::"),
    (64, "2001:db8:122:344:c0:2:2100:0"),
    (96, "2001:db8:122:344::192.0.2.33"),
])
def test_rfc6052_ipv4_reads_the_rfc_examples(prefixlen: int, ip: str) -> None:
    import ipaddress

    from probe.addresses import rfc6052_ipv4
    from probe.lab.scenario import nat64_address

    assert rfc6052_ipv4(ipaddress.IPv6Address(ip), prefixlen) == ipaddress.IPv4Address("192.0.2.33")
    net = ipaddress.IPv6Network(f"{ip}/{prefixlen}", strict=False)
    for v4 in ("10.77.0.1", "255.254.253.252"):  # the lab's writer and this reader agree
        assert rfc6052_ipv4(ipaddress.IPv6Address(nat64_address(str(net), v4)), prefixlen) == ipaddress.IPv4Address(v4)
    if prefixlen < 96:  # bits 64-71 (the "u" octet) set: not that format
        assert rfc6052_ipv4(ipaddress.IPv6Address(int(ipaddress.IPv6Address(ip)) | 1 << 56), prefixlen) is None


@pytest.mark.parametrize(("ip", "rule"), [
    # review 24b: the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) is read like 64:ff9b::/96, in its /96
    # format and its /48 one (RFC 6052 §2.2: bits 48-63 and 72-87)
    ("64:ff9b:1::c0a8:101", R_VANTAGE_LAN),                     # /96 format of the router 192.168.1.1
    ("64:ff9b:1:c0a8:1:100::", R_VANTAGE_LAN),                  # /48 format of it
    ("64:ff9b:1::7f00:1", R_MACHINE),                           # /96 format of 127.0.0.1
    ("64:ff9b:1:7f00:0:100::", R_MACHINE),                      # /48 format of it
    ("64:ff9b:1::e000:fb", R_MACHINE),                          # 224.0.0.251
    ("64:ff9b:1::a0a:2223", R_PRIVATE_FROM_PUBLIC),             # 10.10.34.35: private, not the LAN
    ("64:ff9b:1:a0a:22:2300::", R_PRIVATE_FROM_PUBLIC),
    ("64:ff9b:1::808:808", None),                               # 8.8.8.8 (/48 reading 0.0.0.0: padding)
    ("64:ff9b:1:808:8:800::", None),                            # 8.8.8.8 (/96 reading 0.0.0.0: padding)
    ("64:ff9b:1:c612:1:100::", None),                           # 198.18.1.1: the lab's DNS64 answer
    ("64:ff9b:1::", R_MACHINE),                                 # 0.0.0.0 in both formats
])
def test_local_use_nat64_addresses_are_judged_by_the_ipv4_they_carry(ip: str, rule: str | None) -> None:
    from probe.addresses import not_local_address

    policy = home_policy()
    assert policy.refuse_address(ip) == rule
    assert not_local_address(ip) is (rule not in (R_MACHINE, R_TUNNEL))
    if rule == R_PRIVATE_FROM_PUBLIC:  # private space from a private origin, as 64:ff9b::/96
        assert policy.refuse_address(ip, origin_private=True) is None


# ------------------------------------------------------------------ the vantage's network from the OS


def test_local_network_from_proc(tmp_path) -> None:
    """/proc/net/route and ipv6_route (the kernel's formats) → subnets and gateways."""
    net = tmp_path / "net"
    net.mkdir()
    (net / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        "wg0\t0000080A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
    (net / "ipv6_route").write_text(
        "fd000001000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000001000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
        "fd000001000000000000000000000017 80 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n")
    (net / "if_inet6").write_text("fd000001000000000000000000000017 02 40 00 80     eth0\n")
    local = LocalNetwork.from_os(proc=tmp_path)
    assert local.why("192.168.1.1") == "gateway 192.168.1.1"
    assert local.why("192.168.1.77") == "interface subnet 192.168.1.0/24"
    assert local.why("10.8.3.4") == "interface subnet 10.8.0.0/16"
    assert local.why("fd00:1::1") == "gateway fd00:1::1"
    assert local.why("fd00:1::99") == "interface subnet fd00:1::/64"
    assert local.why("8.8.8.8") is None and local.why("192.168.2.1") is None


def _nlmsg(kind: int, body: bytes) -> bytes:
    import struct

    msg = struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body
    return msg + b"\0" * (-len(msg) % 4)


def _ifaddr(prefixlen: int, **attrs: str) -> bytes:
    import socket
    import struct

    body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, 1)
    for rtype, ip in attrs.items():
        raw = socket.inet_aton(ip)
        body += struct.pack("=HH", 4 + len(raw), {"address": 1, "local": 2}[rtype]) + raw
    return _nlmsg(20, body)


def test_netlink_address_dump_is_parsed() -> None:
    """RTM_NEWADDR messages (the kernel's layout) → every IPv4 address with its prefix; on a
    point-to-point link IFA_LOCAL is ours and IFA_ADDRESS the peer; a truncated tail is dropped."""
    import struct

    from probe.localnet import parse_ifaddr_dump

    dump = (_ifaddr(8, address="127.0.0.1", local="127.0.0.1") + _ifaddr(32, address="8.8.4.4")
            + _ifaddr(32, address="10.64.0.1", local="10.64.0.2") + _nlmsg(3, struct.pack("=i", 0)))
    got, done = parse_ifaddr_dump(dump)
    assert done
    assert [(str(a), str(n)) for a, n in got] == [("127.0.0.1", "127.0.0.0/8"), ("8.8.4.4", "8.8.4.4/32"),
                                                  ("10.64.0.2", "10.64.0.2/32")]
    assert parse_ifaddr_dump(dump[:-30]) == (got[:2], False)
    with pytest.raises(OSError):
        parse_ifaddr_dump(_nlmsg(2, struct.pack("=i", -1)))


_NS_SCRIPT = """set -e
ip link set lo up
ip addr add 8.8.4.4/32 dev lo
ip addr add 203.0.113.9/24 dev lo
ip route add local 198.18.0.0/15 dev lo
ip link add v0 type veth peer name v1
ip link set v0 up
ip link set v1 up
ip addr add 10.77.0.1/24 dev v0
ip addr add 192.0.2.77/32 dev v0
exec "$0" -c '
import sys
import probe.localnet as ln
if sys.argv[1] == "ioctl":
    def no_netlink():
        raise OSError(97, "netlink disabled by the test")
    ln._netlink_addrs_v4 = no_netlink
from probe.config import Settings
from probe.runner import address_policy
p = address_policy(Settings())
print(p.refuse_address("8.8.4.4"), p.local.why("8.8.4.4"), p.refuse_address("203.0.113.77"),
      p.refuse_address("198.18.0.5"), p.local.why("192.0.2.77"), p.local.why("10.77.0.200"),
      p.local.why("203.0.113.9"), sep="|")
' "$1"
"""


@pytest.mark.parametrize("mode", ["netlink", "ioctl"])
def test_secondary_addresses_on_lo_are_own_but_an_anyip_route_is_not(mode: str) -> None:
    """In a fresh network namespace: 8.8.4.4/32 and 203.0.113.9/24 added on lo beside 127.0.0.1
    are the vantage's own (the interfaces' ioctl gave one address each: a redirect to 8.8.4.4
    was fetched from this machine — break test); an AnyIP local route (the lab's ``inet``, where
    the helper answers for every site) makes nothing own (CI of 933d191: every site refused).
    The same without netlink (``ioctl``: a sandbox refusing netlink sockets): the ioctl gives one
    address an interface, /proc/net/fib_trie's local routes the secondary ones (they were missed);
    a veth's second address (192.0.2.77/32 beside 10.77.0.1/24) too."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        if os.environ.get("KZPROBE_REQUIRE_LAB") == "1":
            pytest.fail("KZPROBE_REQUIRE_LAB=1 but this needs root, unshare(1) and ip(8)")
        pytest.skip("needs root, unshare(1) and ip(8)")
    res = subprocess.run(["unshare", "--net", "sh", "-c", _NS_SCRIPT, sys.executable, mode],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    # without netlink the prefix of a secondary address on lo (203.0.113.9/24: the kernel's local
    # route 203.0.113.0/24) cannot be told from an AnyIP route (both "/24 host LOCAL" in fib_trie,
    # nothing in /proc/net/route): the address is own, the rest of its /24 not known
    lo_subnet = R_VANTAGE_LAN if mode == "netlink" else "None"
    assert res.stdout.strip().split("|") == [R_VANTAGE_LAN, "own address 8.8.4.4", lo_subnet, "None",
                                             "own address 192.0.2.77", "interface subnet 10.77.0.0/24",
                                             "own address 203.0.113.9"]


#: /proc/net/fib_trie of such a namespace (lo: 127.0.0.1, AnyIP 198.18.0.0/15; v0: 10.77.0.1/24,
#: 10.77.0.9/24, 192.0.2.77/32), as Linux 6 prints it (the Local table; Main repeats it).
_FIB_TRIE = """Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.77.0.0/24 2 0 2
        +-- 10.77.0.0/28 2 0 2
           +-- 10.77.0.0/31 1 0 0
              |-- 10.77.0.0
                 /24 link UNICAST
              |-- 10.77.0.1
                 /32 host LOCAL
           |-- 10.77.0.9
              /32 host LOCAL
        |-- 10.77.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.0.0/5 2 0 2
        |-- 192.0.2.77
           /32 host LOCAL
        |-- 198.18.0.0
           /15 host LOCAL
"""


def test_fib_trie_local_routes_are_the_addresses_not_broadcasts_or_anyip_ranges() -> None:
    from probe.localnet import parse_fib_trie_local

    got = parse_fib_trie_local(_FIB_TRIE + _FIB_TRIE.replace("Local:", "Main:"))
    assert [str(a) for a in got] == ["10.77.0.1", "10.77.0.9", "127.0.0.1", "192.0.2.77"]
    assert parse_fib_trie_local("|-- not-an-ip\n   /32 host LOCAL\n+-- x\n   /32 host LOCAL\n") == []


def test_carrier_grade_nat_space_is_private() -> None:
    """RFC 6598's 100.64.0.0/10 is inside the ISP (a mobile vantage's own network): a public
    site's redirect into it is refused as into RFC 1918 space (break test, stop 19)."""
    from probe.localnet import R_PRIVATE_FROM_PUBLIC, AddressPolicy, is_private

    assert is_private("100.64.5.5") and is_private("100.127.255.254") and not is_private("100.128.0.1")
    assert AddressPolicy(local=LocalNetwork()).refuse_address("100.64.5.5") == R_PRIVATE_FROM_PUBLIC


def test_private_space_has_one_home() -> None:
    """RFC 1918/6598/ULA ranges were listed in three places (localnet, the bogon table, the helper's
    SSRF table): now probe.addresses.PRIVATE_SPACE, imported by the others; no other module of
    probe/ writes one of them out."""
    import re

    from probe.addresses import DEFAULT_BOGONS, PRIVATE_SPACE, by_address
    from probe.helper.ssrf import IPV4_SPECIAL, IPV6_SPECIAL
    from probe.localnet import PRIVATE_RANGES
    from tests.conftest import REPO

    ranges = [r for r, _, _ in PRIVATE_SPACE]
    assert [str(n) for n in PRIVATE_RANGES] == ranges
    assert set(ranges) <= set(DEFAULT_BOGONS)
    assert by_address(DEFAULT_BOGONS) == DEFAULT_BOGONS
    special = IPV4_SPECIAL + IPV6_SPECIAL
    assert set(PRIVATE_SPACE) <= set(special) and [r for r, _, _ in special] == list(
        by_address(r for r, _, _ in IPV4_SPECIAL)) + list(by_address(r for r, _, _ in IPV6_SPECIAL))
    literal = re.compile("|".join(re.escape(f'"{r}"') for r in ranges))
    elsewhere = [str(p.relative_to(REPO)) for p in (REPO / "probe").rglob("*.py")
                 if p.name != "addresses.py" and literal.search(p.read_text(encoding="utf-8"))]
    assert elsewhere == []


def test_this_machines_gateway_and_subnets_are_off_limits() -> None:
    """Read from this machine's OS as the runner does: its default gateway and subnets."""
    import subprocess

    from probe.config import Settings
    from probe.runner import address_policy

    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=False).stdout
    policy = address_policy(Settings())
    for line in routes.splitlines():
        words = line.split()
        if words[:2] == ["default", "via"]:
            assert policy.refuse_address(words[2]) == R_VANTAGE_LAN, line
        elif "scope" in words and "link" in words and "/" in words[0]:
            import ipaddress

            host = str(next(ipaddress.ip_network(words[0]).hosts()))
            assert policy.refuse_address(host) in (R_VANTAGE_LAN, R_MACHINE), line
    off = address_policy(Settings(localnet_os=False, localnet_extra=("10.8.0.0/16",)))
    assert off.refuse_address("10.8.1.1") == R_VANTAGE_LAN


async def test_a_censors_redirect_to_a_private_blockpage_is_http_diff_from_its_address(world, router) -> None:
    """The censor answers plain HTTP with a 302 to the ISP's blockpage on 10.10.34.35; the control
    gets the site. Not followed, nothing fetched, and still judged: http-diff by the address."""
    await world.site(SITE, {"/": redirect("http://10.10.34.35/blocked")}, names=("www.example.org",), https=False,
                     control=False)
    await world.site(SITE, {"/": b"<title>the site</title>"}, names=("www.example.org",), https=False, probe=False)
    world.dns("www.example.org", probe=[SITE], control=[SITE])
    obs, v = await world.measure("http://www.example.org/")
    assert router.requests == []
    assert (v.blocking, v.rule) == ("http-diff", "http.redirect_into_private"), v.reason
    assert "10.10.34.35" in v.reason


async def test_a_canary_name_resolving_into_the_lan_is_not_contacted(ca, tcp_listener, monkeypatch) -> None:
    """A captive portal or a hijacking resolver answers the TLS canary's name with the router:
    the health check does not connect there (the canary fails: local_network_refused)."""
    import probe.health as health
    from probe.addresses import ConnectTo
    from probe.context import MeasureContext
    from probe.failures import LOCAL_NETWORK_REFUSED
    from probe.measure.tls import TrustStore
    from probe.timing import Clock

    trap = await tcp_listener("close")

    async def router_answer(host: str, timeout_s: float) -> list[str]:
        return [ROUTER]

    monkeypatch.setattr(health, "_host_ips", router_answer)
    ctx = MeasureContext(trust=TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=False),
                         connect_to=ConnectTo(fallback=trap.endpoint), address_policy=home_policy())
    c = await health._tls_canary("www.wikipedia.org", 443, ctx, Clock())
    assert (c.ok, c.failure) == (False, LOCAL_NETWORK_REFUSED)
    assert trap.accepted == 0
