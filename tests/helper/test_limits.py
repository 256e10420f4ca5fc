"""The helper's load limits: token bucket per token, concurrency gate (fake clock)."""

from __future__ import annotations

import pytest

from probe.helper.limits import ConcurrencyGate, RateLimiter, retry_after_header


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    now = [0.0]
    rl = RateLimiter(60, clock=lambda: now[0])  # one a second, burst 60
    assert all(rl.acquire("a") == 0 for _ in range(60))
    wait = rl.acquire("a")
    assert wait == pytest.approx(1.0)
    assert rl.acquire("b") == 0  # per key
    now[0] += 1.0
    assert rl.acquire("a") == 0
    assert rl.acquire("a") > 0


def test_small_rate_and_explicit_burst() -> None:
    now = [0.0]
    rl = RateLimiter(2, burst=1, clock=lambda: now[0])  # one every 30 s
    assert rl.acquire("k") == 0
    assert rl.acquire("k") == pytest.approx(30.0)
    now[0] += 29.0
    assert rl.acquire("k") == pytest.approx(1.0)
    now[0] += 1.0
    assert rl.acquire("k") == 0


def test_refused_requests_take_nothing() -> None:
    now = [0.0]
    rl = RateLimiter(60, burst=1, clock=lambda: now[0])
    assert rl.acquire("k") == 0
    for _ in range(10):
        assert rl.acquire("k") > 0
    now[0] += 1.0
    assert rl.acquire("k") == 0


@pytest.mark.parametrize("rate, burst", [(0, None), (-1, None), (60, 0)])
def test_bad_limits(rate: float, burst: int | None) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


def test_gate_refuses_at_the_limit_and_never_goes_negative() -> None:
    g = ConcurrencyGate(2)
    assert g.try_enter() and g.try_enter()
    assert not g.try_enter()
    g.leave()
    assert g.try_enter()
    g.leave(), g.leave(), g.leave()
    assert g.in_flight == 0
    with pytest.raises(ValueError):
        ConcurrencyGate(0)


@pytest.mark.parametrize("seconds, header", [(0.01, "1"), (1.0, "1"), (1.2, "2"), (29.5, "30")])
def test_retry_after_whole_seconds(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header
