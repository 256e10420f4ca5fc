"""Load limits of the control helper: a per-token rate limit and a global concurrency gate.

Both shed load instead of queueing it: a request over a limit is answered 429 at once
(RFC 6585 §4) with a ``Retry-After`` (RFC 9110 §10.2.3), so an overloaded helper keeps
answering — health checks included — instead of piling up sockets and tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(kw_only=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per key (the token id): ``rate_per_minute`` refill, ``burst`` capacity.

    Args:
        rate_per_minute: requests per minute each key may make on average (> 0).
        burst: bucket capacity, i.e. requests a key may make at once after being idle
            (>= 1); None = ``ceil(rate_per_minute)``.
        clock: monotonic seconds (tests pass a fake one).

    Raises:
        ValueError: ``rate_per_minute`` <= 0 or ``burst`` < 1.

    Memory: one small record per key that ever made a request; keys are the configured
    tokens only (authentication comes first), so this is bounded by the token file.
    """

    def __init__(self, rate_per_minute: float, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_token must be > 0 requests/minute, got {rate_per_minute!r}")
        self.rate_per_s = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate_per_minute)))
        if self.burst < 1:
            raise ValueError(f"rate burst must be >= 1, got {burst!r}")
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket.

        Returns:
            0.0 when the request may go ahead; otherwise the seconds until it would
            (the caller answers 429 with ``Retry-After``; nothing was taken).
        """
        now = self._clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(tokens=self.burst, stamp=now)
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate_per_s)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate_per_s


class ConcurrencyGate:
    """At most ``limit`` requests in flight; one more is refused at once (never queued).

    Use ``if gate.try_enter(): try: ... finally: gate.leave()``.

    Raises:
        ValueError: ``limit`` < 1.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {limit!r}")
        self.limit = limit
        self.in_flight = 0

    def try_enter(self) -> bool:
        """Take a slot; False (and nothing taken) when all ``limit`` are in use."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        """Give a slot back."""
        self.in_flight = max(0, self.in_flight - 1)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3)."""
    return str(max(1, math.ceil(seconds)))


__all__ = ["ConcurrencyGate", "RateLimiter", "retry_after_header"]
