"""The localisation's decision (table-driven: what each TTL drew → the censor's hop), and its
rate limit and stop rule on loopback."""

from __future__ import annotations

import asyncio

import pytest

from probe.packets.centrace import HopProbe, decide, localise
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


async def test_rate_limit_between_ttls(need_capture: None) -> None:
    async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(4096)
        await asyncio.sleep(5)  # silent: every TTL is "silence" until max_ttl

    srv = await asyncio.start_server(h, "127.0.0.32", 0)
    port = srv.sockets[0].getsockname()[1]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    taken: list[int] = []

    class Shared(Pacer):  # the run's pace: asked for each TTL's two probe connections
        async def take(self, n: int = 1) -> None:
            taken.append(n)

    try:
        loc = await localise("127.0.0.32", make_trigger("http", "x.example", benign_name="example.com", port=port),
                             clock=Clock(), max_ttl=3, pps=1.0, wait_s=0.2, sleep=sleep, pacer=Shared(1.0))
    finally:
        srv.close()
    assert taken == [2, 2]
    # two probes per TTL at 1 probe/s: ~2 s between TTLs, less what the TTL itself took;
    # both copies silent at TTL 1 and 2 → an address rule: stops after the second TTL
    assert [h.ttl for h in loc.hops] == [1, 2] and loc.benign_blocked
    assert len(slept) == 1 and 1.5 < slept[0] <= 2.0
