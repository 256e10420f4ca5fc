"""The run's shared pace (probe/packets/pacing.py): ``pps`` bounds the whole run's probes, not
each job's: three localisations side by side used to send three times ``pps``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from probe.packets import evidence as ev
from probe.packets.pacing import Pacer
from probe.packets.privileges import Privileges


class VirtualTime:
    """A clock that moves only when slept on: the pace is checked without waiting for it."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(round(s, 6))


async def test_slots_are_handed_out_at_the_rate_whoever_asks() -> None:
    vt = VirtualTime()
    p = Pacer(4.0, now=vt.now, sleep=vt.sleep)
    # three jobs ask for a TTL's two probe connections at once: 0, 0.5, 1.0 s (4 a second), not all now
    await asyncio.gather(p.take(2), p.take(2), p.take(2))
    assert vt.slept == [0.5, 1.0]
    vt.t += 5.0  # idle for a while: the next one goes at once (no burst is saved up either)
    await p.take(1)
    await p.take(1)
    assert vt.slept == [0.5, 1.0, 0.25]


async def test_packets_sent_beyond_a_reservation_are_charged() -> None:
    """``charge``: packets already sent beyond what was taken (a kernel retransmission) move the
    next slot later by their share of the rate."""
    vt = VirtualTime()
    p = Pacer(10.0, now=vt.now, sleep=vt.sleep)
    await p.take(10)  # a TTL's two connections, counted 10 packets: at once
    p.charge(3)  # they sent 13
    await p.take(10)
    assert vt.slept == [1.3]
    vt.t += 60.0
    p.charge(5)  # idle since: counted from now
    p.charge(0)
    await p.take(1)
    assert vt.slept == [1.3, 0.5]


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pacer(0)


async def test_every_job_of_a_run_shares_one_pacer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The localisations and DNS tests of one run get the run's pacer, at ``[packets] pps``."""
    got: list[Any] = []

    async def loc(ip: str, trig: Any, **kw: Any) -> None:
        got.append(kw["pacer"])

    async def forensics(*a: Any, **kw: Any) -> None:
        return None

    class NoCapture:
        packets: list[Any] = []
        dropped = 0

        def __init__(self, *a: Any, **kw: Any) -> None: ...

        async def __aenter__(self) -> NoCapture:
            return self

        async def __aexit__(self, *a: Any) -> None: ...

    class AllowAll:
        def allow(self, ip: str) -> bool:
            return True

    monkeypatch.setattr(ev, "localise", loc)
    monkeypatch.setattr(ev, "reset_forensics", forensics)
    monkeypatch.setattr(ev, "Capture", NoCapture)
    e = ev.PacketEvidence(settings=ev.PacketSettings(localise=True, pps=2.5),
                          privileges=Privileges(capture=True, pcap=False), policy=AllowAll())  # type: ignore[arg-type]
    recs = [{"input": f"https://s{i}.example.kz/", "test_keys": {
        "x_blocking": "tls", "tcp_connect": [{"ip": f"198.18.1.{i}", "port": 443, "status": {"success": True}}]}}
        for i in range(3)]
    await asyncio.gather(*(e.for_record(r) for r in recs))
    assert len(got) == 3 and all(p is e.pacer for p in got) and e.pacer.rate == 2.5
