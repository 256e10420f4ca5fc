"""The loopback bench's rate figures (issue 13): the steady state leaves out the run's one
start-up and its one last listening window; end to end keeps them."""

from __future__ import annotations

import pytest

from bench.worker import steady_state


def test_the_steady_rate_is_the_pace_between_the_10th_and_90th_percentile_records() -> None:
    # 3 s of start-up (health check + the first window), then 100 records/s, then a 1.5 s tail
    done = [3.0 + i / 100 for i in range(1000)]
    wall = done[-1] + 1.5
    got = steady_state(done, wall)
    assert got["steady_rate"] == pytest.approx(100.0)
    assert got["first_record_s"] == 3.0 and got["tail_s"] == pytest.approx(1.5)
    assert 1000 / wall < 80  # end to end, the fixed costs weigh: the two figures differ


def test_too_few_records_give_no_steady_rate() -> None:
    assert steady_state([0.5, 0.6], 2.0) == {"first_record_s": 0.5, "steady_rate": None, "tail_s": 2.0 - 0.6}
    assert steady_state([], 1.0) == {"first_record_s": None, "steady_rate": None, "tail_s": None}
