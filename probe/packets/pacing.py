"""One rate for the whole run: the packet tests' probes, however many jobs run at once.

``[packets] pps`` bounds the *packets* the localisations and the DNS test's TTL-limited
queries send per second (issue 16: "a few packets per second"; before 2026-12-04 it counted
probe connections, each 4-5 packets: ~9 packets/s, bursts to ~34/s). Each job paces itself,
but up to :data:`probe.packets.evidence.MAX_JOBS` run side by side: without a shared pace,
three localisations sent three times ``pps``. A :class:`Pacer` hands out send times at
``rate`` packets per second to every job of the run, in the order asked (a reservation, no busy
loop): a token bucket whose burst is the one request (a TTL's two connections, counted 10
packets), no credit saved while idle. Packets sent beyond a reservation are :meth:`Pacer.charge`d.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """At most ``rate`` events a second, across every caller of :meth:`take`."""

    def __init__(self, rate: float, *, now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self._now, self._sleep = now, sleep
        self._next = float("-inf")

    async def take(self, n: int = 1) -> None:
        """Wait for the next slot of ``n`` events (they may start now; the next slot is ``n / rate``
        seconds later)."""
        now = self._now()
        start = max(now, self._next)
        self._next = start + n / self.rate
        if start > now:
            await self._sleep(start - now)

    def charge(self, n: int) -> None:
        """Count ``n`` events already sent beyond what was taken: the next slot moves ``n / rate``
        seconds later."""
        if n > 0:
            self._next = max(self._next, self._now()) + n / self.rate
