"""The localisation's decision (table-driven: what each TTL drew → the censor's hop), and its
rate limit and stop rule on loopback."""

from __future__ import annotations

import asyncio

import pytest

from probe.packets import centrace
from probe.packets.capture import TCP, Pkt
from probe.packets.centrace import HopProbe, answers_probe, decide, inconclusive, localise
from probe.packets.pacing import Pacer
from probe.packets.trigger import make_trigger
from probe.timing import Clock


def _hops(*rows: tuple[str, str]) -> tuple[HopProbe, ...]:
    return tuple(HopProbe(ttl=i + 1, target=t, benign=b, router=None) for i, (t, b) in enumerate(rows))


E, A = "expired", "answered"


@pytest.mark.parametrize(("hops", "udp", "want"), [
    # in-path drop after router 2, path goes on (lab: sni_drop at hop 2 of 4)
    (_hops((E, E), (E, E), ("silence", E), ("silence", E), ("silence", A)), None, (2, False)),
    # in-path drop after router 1, the server right behind it (lab: tcp-actions, one router)
    (_hops((E, E), ("silence", A)), "endpoint", (1, False)),
    # a transparent proxy on router 2 resets: the benign copy is answered at TTL 2, a UDP
    # datagram with TTL 2 expires at a router (the address lies further on)
    (_hops((E, E), ("rst", A)), "router", (2, True)),
    # address/port rule: the benign copy is reset as well
    (_hops((E, E), (E, E), ("rst", "rst"), ("rst", "rst")), None, (2, False)),
    # nothing blocked: no hop
    (_hops((E, E), (A, A)), None, (None, False)),
    # blocked at the first TTL by something that is not a proxy: hop 1 at least
    (_hops(("silence", A),), "endpoint", (1, False)),
])
def test_decide(hops: tuple[HopProbe, ...], udp: str | None, want: tuple[int | None, bool]) -> None:
    assert decide(hops, udp) == want


async def test_accessible_endpoint_stops_at_once_and_is_not_located(need_capture: None) -> None:
    async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(4096)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        w.close()

    srv = await asyncio.start_server(h, "127.0.0.31", 0)
    port = srv.sockets[0].getsockname()[1]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    try:
        loc = await localise("127.0.0.31", make_trigger("http", "meduza.io", benign_name="example.com", port=port),
                             clock=Clock(), max_ttl=5, pps=4.0, wait_s=1.0, sleep=sleep)
    finally:
        srv.close()
    assert loc.failure is None and [(h.target, h.benign) for h in loc.hops] == [(A, A)]
    assert loc.censor_hop is None and loc.blocked_ttl is None and loc.endpoint_ttl == 1 and loc.packets_sent == 2


async def _silent_localisation(monkeypatch: pytest.MonkeyPatch, ip: str, per_probe: int, pps: float
                               ) -> tuple[object, list[int], list[int], list[float]]:
    """Localise towards a silent server (every TTL "silence", each round tried twice as inconclusive:
    stops after the second TTL) with the run's
    pace recorded: (localisation, packets taken, packets charged, own pauses)."""
    async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(4096)
        await asyncio.sleep(5)

    srv = await asyncio.start_server(h, ip, 0)
    port = srv.sockets[0].getsockname()[1]
    slept: list[float] = []
    taken: list[int] = []
    charged: list[int] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    class Shared(Pacer):  # the run's pace
        async def take(self, n: int = 1) -> None:
            taken.append(n)

        def charge(self, n: int) -> None:
            charged.append(n)

    monkeypatch.setattr(centrace, "PACKETS_PER_PROBE", per_probe)
    try:
        loc = await localise(ip, make_trigger("http", "x.example", benign_name="example.com", port=port),
                             clock=Clock(), max_ttl=3, pps=pps, wait_s=0.2, sleep=sleep, pacer=Shared(1.0))
    finally:
        srv.close()
    return loc, taken, charged, slept


async def test_rate_limit_between_ttls_counts_packets(need_capture: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pps`` counts packets (issue 16 "a few packets per second"; it counted probe connections of
    4-5 packets each): a TTL's two connections take 2 x PACKETS_PER_PROBE = 10 from the run's pace,
    and the localisation's own pause is 10 packets / pps."""
    loc, taken, charged, slept = await _silent_localisation(monkeypatch, "127.0.0.32", 5, 1.0)
    assert [h.ttl for h in loc.hops] == [1, 2] and loc.benign_blocked  # type: ignore[attr-defined]
    assert taken == [10, 10, 10, 10] and loc.packets_sent == 8  # type: ignore[attr-defined]
    assert charged == []  # SYN, ACK, the request, RST: 4 a connection on loopback, under the 5 counted
    # 10 packets at 1 packet/s: 10 s between TTLs (the sleep is recorded, not slept), less what the
    # TTL itself took (>= 0.2 s wait); counting connections it was 2 s
    assert len(slept) == 3 and all(6.0 < s <= 9.8 for s in slept)


async def test_packets_beyond_the_reservation_are_charged(need_capture: None, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """What the connections really sent (the capture's outgoing packets of their ports) counts: with a
    reservation of 1 packet a connection, the excess of each TTL is charged to the run's pace and
    lengthens the own pause."""
    loc, taken, charged, slept = await _silent_localisation(monkeypatch, "127.0.0.33", 1, 1.0)
    assert taken == [2, 2, 2, 2]
    assert len(charged) == 4 and all(c >= 4 for c in charged)  # >= 3 packets a connection were sent, 2 taken
    # paced by the packets sent (>= 6 at 1 packet/s), not the 2 reserved (2 s less the TTL's time)
    assert len(slept) == 3 and all(s > 4.0 for s in slept)


def test_an_answer_kept_before_the_copy_left_is_not_its_answer() -> None:
    """Flaky lab localisation (tcp-actions hostdrop, censor_hop None under load): the kernel can
    hand the local port of one TTL's probe to a later one, and the capture keeps every packet;
    the earlier probe's answer (here the server's data on that port) must not answer the later
    copy, else a dropped copy reads as answered/expired and the censor is not located."""
    old = Pkt(t=0.5, outgoing=False, raw=b"", proto=TCP, src="10.0.0.9", dst="10.0.0.2", ttl=63, ip_id=1,
              sport=80, dport=40000, flags=0x18, payload=b"HTTP/1.1 200 OK\r\n")
    assert answers_probe(old, "10.0.0.9", 80, 40000, since=0.4)
    assert not answers_probe(old, "10.0.0.9", 80, 40000, since=0.6)


@pytest.mark.parametrize(("target", "benign", "want"), [
    ("silence", "silence", True), ("silence", "connect_failed", True), ("connect_failed", "answered", True),
    ("silence", "expired", False), ("silence", "answered", False), ("rst", "rst", False), ("expired", "expired", False),
])
def test_inconclusive_rounds(target: str, benign: str, want: bool) -> None:
    assert inconclusive(target, benign) is want
