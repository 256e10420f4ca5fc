"""Measurement clock: monotonic seconds since measurement start, plus one UTC start time.

OONI records ``t0``/``t`` as float seconds relative to the start of the measurement
(df-000 and df-002 data formats); we do the same with :func:`time.monotonic` so the
numbers never jump with the wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, kw_only=True)
class Clock:
    """A measurement's time base.

    Attributes:
        start_monotonic: :func:`time.monotonic` value at the start (seconds).
        start_utc: wall-clock UTC time of the same instant (timezone-aware).
    """

    start_monotonic: float = field(default_factory=time.monotonic)
    start_utc: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> float:
        """Seconds (float) elapsed since :attr:`start_monotonic`, rounded to microseconds."""
        return round(time.monotonic() - self.start_monotonic, 6)


def ooni_time(dt: datetime) -> str:
    """Format a UTC datetime as OONI's ``"YYYY-MM-DD hh:mm:ss"`` (df-000 ``measurement_start_time``)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
