"""The DNS injection test on loopback: an "injector" where no resolver should listen, a resolver
raced by a second sender with another TTL, and silence."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import dns.message
import dns.rrset
import pytest
from scapy.layers.inet import IP, UDP

from probe.packets.capture import parse_ipv4
from probe.packets.dnsinject import DNSReplyPkt, dns_injection, raced, reply_of
from probe.packets.pacing import Pacer
from probe.timing import Clock

PORT = 5399


def _answer(data: bytes, ip: str) -> bytes:
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", ip))
    return r.to_wire()


class _Server(asyncio.DatagramProtocol):
    def __init__(self, reply: Callable[[asyncio.DatagramTransport, bytes, tuple[str, int]], None]) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.reply(self.transport, data, addr)


@pytest.fixture
async def servers() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()

    def inject(t: asyncio.DatagramTransport, data: bytes, addr: tuple[str, int]) -> None:
        t.sendto(_answer(data, "10.10.34.34"), addr)

    # the injector of the raced pair: a crafted datagram from the resolver's own address and port
    # (scapy), with another TTL and IP ID 0: only the IP header betrays it
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def race(t: asyncio.DatagramTransport, data: bytes, addr: tuple[str, int]) -> None:
        forged = IP(src="127.0.0.21", dst=addr[0], ttl=50, id=0) / UDP(sport=PORT, dport=addr[1]) / \
            _answer(data, "10.10.34.34")
        raw.sendto(bytes(forged), (addr[0], 0))  # first, as an injector wins the race
        t.sendto(_answer(data, "198.18.1.1"), addr)

    t1, _ = await loop.create_datagram_endpoint(lambda: _Server(inject), local_addr=("127.0.0.20", PORT))
    t2, _ = await loop.create_datagram_endpoint(lambda: _Server(race), local_addr=("127.0.0.21", PORT))
    yield
    t1.close()
    t2.close()
    raw.close()


async def test_reply_from_a_non_resolver_is_injection(need_capture: None, servers: None) -> None:
    taken: list[int] = []

    class Shared(Pacer):  # the run's pace: asked for each TTL-limited query
        async def take(self, n: int = 1) -> None:
            taken.append(n)

    r = await dns_injection("meduza.io", non_resolver="127.0.0.20", clock=Clock(), port=PORT, listen_s=0.5,
                            max_ttl=3, pps=50, pacer=Shared(50))
    assert taken == [1]
    assert r.failure is None and r.injected
    rep = r.nonresolver_replies[0]
    assert rep.answers == ("10.10.34.34",) and rep.src == "127.0.0.20" and rep.ttl == 64 and rep.hops_est == 1
    assert r.injector_hop == 1 and r.path == ()  # loopback: the first TTL reaches it
    assert r.packets_sent == 2  # the query, then one TTL-limited copy


async def test_silence_is_not_injection(need_capture: None, servers: None) -> None:
    r = await dns_injection("meduza.io", non_resolver="127.0.0.22", clock=Clock(), port=PORT, listen_s=0.3)
    assert r.failure is None and not r.injected and r.injector_hop is None and r.packets_sent == 1


async def test_raced_replies_recognised_by_ttl(need_capture: None, servers: None) -> None:
    r = await dns_injection("meduza.io", non_resolver="127.0.0.22", resolver="127.0.0.21", clock=Clock(),
                            port=PORT, listen_s=0.5)
    assert [(x.ttl, x.answers) for x in r.resolver_replies] == [(50, ("10.10.34.34",)), (64, ("198.18.1.1",))]
    assert r.raced and not r.injected  # a race at the resolver; the non-resolver stayed silent


def _rep(ttl: int, ip_id: int) -> DNSReplyPkt:
    return DNSReplyPkt(src="x", ttl=ttl, ip_id=ip_id, hops_est=1, dns_id=1, flags=0, rcode=0, answers=(), t=0.0)


@pytest.mark.parametrize(("ttls_ids", "want"), [
    ([(60, 100)], False),
    ([(60, 100), (60, 101)], False),
    ([(63, 0), (60, 5000)], True),   # two distances
    ([(60, 0), (60, 5000)], True),   # a constant IP ID 0 beside a counter
    ([(60, 0), (60, 0)], False),
])
def test_raced(ttls_ids: list[tuple[int, int]], want: bool) -> None:
    assert raced(tuple(_rep(t, i) for t, i in ttls_ids)) is want


def test_reply_of_unparseable_dns_is_kept() -> None:
    bad = b"\x12\x34\x81\x80" + b"\xff" * 20  # a header, then garbage no parser takes
    raw = bytes(IP(src="1.2.3.4", dst="10.0.0.2", ttl=61) / UDP(sport=53, dport=4000) / bad)
    p = parse_ipv4(raw)
    assert p is not None
    r = reply_of(p)
    assert r is not None and r.parse_error and r.dns_id == 0x1234 and r.answers == () and r.hops_est == 4


def _forced_port(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The test's first socket binds ``port``: the kernel's reuse of a freed local port, made to
    happen (it does at times: centrace measured 126 reuses in 2,000 bind/close cycles)."""
    from probe.packets import dnsinject

    ports, real = [port], dnsinject._udp_socket

    def udp_socket(ttl: int | None = None) -> socket.socket:
        if not ports:
            return real(ttl)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("0.0.0.0", ports.pop()))
        return s

    monkeypatch.setattr(dnsinject, "_udp_socket", udp_socket)


@pytest.fixture
async def resolver() -> AsyncIterator[str]:
    """An honest resolver at 127.0.0.26:PORT: every name is 198.18.1.1."""
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(
        lambda: _Server(lambda t, data, addr: t.sendto(_answer(data, "198.18.1.1"), addr)),
        local_addr=("127.0.0.26", PORT))
    yield "127.0.0.26"
    t.close()


async def test_a_reply_kept_for_an_earlier_owner_of_the_port_is_not_an_injection(
        need_capture: None, monkeypatch: pytest.MonkeyPatch, resolver: str) -> None:
    """Port reuse (as centrace's answers_probe): under the capture (the resolver's and the
    non-resolver's addresses), another measurement's ordinary query to the ISP resolver from local
    port X drew its reply, and X was freed; the test's query to the silent non-resolver then got X.
    Before the fix the kept reply, looked up by local port only, made the silent non-resolver an
    injector (``injected``, with the resolver's answer for another name)."""
    from probe.packets.capture import UDP as UDP_PROTO
    from probe.packets.capture import Capture

    clock = Clock()
    async with Capture(["127.0.0.22", resolver], clock=clock, proto=UDP_PROTO) as cap:
        old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        old.bind(("0.0.0.0", 0))
        reused = old.getsockname()[1]
        old.setblocking(False)
        old.sendto(dns.message.make_query("other.example", "A").to_wire(), (resolver, PORT))
        async with asyncio.timeout(2):
            assert await asyncio.get_running_loop().sock_recv(old, 512)  # its reply came; the capture keeps it
        old.close()
        _forced_port(monkeypatch, reused)
        r = await dns_injection("meduza.io", non_resolver="127.0.0.22", resolver=resolver, clock=clock,
                                port=PORT, listen_s=0.3, capture=cap, max_ttl=2, pps=50)
    assert r.failure is None
    assert not r.injected and r.nonresolver_replies == () and r.injector_hop is None, r
    assert [x.answers for x in r.resolver_replies] == [("198.18.1.1",)] and not r.raced  # its own reply only


async def test_a_late_reply_with_another_dns_id_is_not_an_injection(
        need_capture: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply that reaches the reused port after the test's query left (late for the port's earlier
    owner: its DNS id is not the query's) is not this query's answer either, even from the
    non-resolver's address and port."""
    from probe.packets import dnsinject

    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("0.0.0.0", 0))
    reused = free.getsockname()[1]
    free.close()
    _forced_port(monkeypatch, reused)
    ids: list[int] = []
    real_query = dnsinject._query

    def query(name: str) -> tuple[bytes, int]:
        wire, qid = real_query(name)
        ids.append(qid)
        return wire, qid

    monkeypatch.setattr(dnsinject, "_query", query)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    async def late() -> None:
        await asyncio.sleep(0.1)
        stale = dns.message.make_response(dns.message.make_query("other.example", "A"))
        stale.id = (ids[0] + 1) % 65536
        raw.sendto(bytes(IP(src="127.0.0.22", dst="127.0.0.1", ttl=60) / UDP(sport=PORT, dport=reused)
                         / stale.to_wire()), ("127.0.0.1", 0))

    try:
        r, _ = await asyncio.gather(
            dns_injection("meduza.io", non_resolver="127.0.0.22", clock=Clock(), port=PORT, listen_s=0.4,
                          max_ttl=2, pps=50), late())
    finally:
        raw.close()
    assert r.failure is None and not r.injected and r.nonresolver_replies == (), r
