"""probe.eventloop.run_gc: the GC tuning of a run (issue 13) is undone afterwards and never
makes full collections rarer than CPython's default (10,000/10/10 made them 14 times rarer:
the old generation's garbage piled up, peak RSS of 1,000 bench inputs 117 MB instead of 80)."""

from __future__ import annotations

import gc

from probe.eventloop import run_gc


def test_full_collections_come_at_least_as_often_as_by_default() -> None:
    default = 700 * 10 * 10
    with run_gc():
        g0, g1, g2 = gc.get_threshold()
        assert g0 >= 700  # fewer young collections: the point
        assert g0 * g1 * g2 <= default  # full collections at least as often as by default
        assert gc.get_freeze_count() > 0  # start-up objects out of the collections


def test_thresholds_and_freeze_restored() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        with run_gc():
            raise RuntimeError("a run that fails")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() <= frozen
