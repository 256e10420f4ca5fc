"""One rate for the whole run: the packet tests' probes, however many jobs run at once.

``[packets] pps`` bounds probe connections and TTL-limited queries per second. Each
localisation and DNS injection test paces itself, but up to :data:`probe.packets.evidence.MAX_JOBS`
run side by side: without a shared pace, three localisations sent three times ``pps``. A
:class:`Pacer` hands out send times at ``rate`` per second to every job of the run, in the
order asked (a reservation, no busy loop).
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
