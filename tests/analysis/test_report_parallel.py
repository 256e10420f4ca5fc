"""analysis.report draws a big frame's figures in forked worker processes beside the rest of the report
(:data:`analysis.report.PARALLEL_FIGURES_MIN_ROWS`): the files written are the same bytes as drawn in
this process, and a worker that dies has its figure drawn here."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from analysis import plots, report
from tests.analysis.test_report import synthetic_frame, synthetic_results

pytestmark = pytest.mark.skipif(report._figure_workers() == 0, reason="one CPU or no fork: figures drawn in-process")

WHEN = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)


def _render(tmp: Path, name: str) -> dict[str, bytes]:
    frame = synthetic_frame(400)
    out = tmp / name
    report.render(frame, synthetic_results(frame), out_dir=out, title="t", generated_at=WHEN)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _die(i: int, path: str) -> bytes:
    """A figure worker killed while drawing (module level: the pool pickles it by name)."""
    os._exit(9)


def _count_draws_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The figures drawn in this process (a forked worker's draws count in its own copy of the list)."""
    drawn: list[str] = []

    def counted(name: str, fn: Any) -> Any:
        def draw(*a: Any, **kw: Any) -> bytes:
            drawn.append(name)
            return fn(*a, **kw)  # type: ignore[no-any-return]
        return draw

    monkeypatch.setattr(plots, "FIGURES", tuple((n, counted(n, f), alt) for n, f, alt in plots.FIGURES))
    return drawn


def test_figures_from_workers_are_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _count_draws_here(monkeypatch)
    here = _render(tmp_path, "here")
    assert len(drawn) == len(plots.FIGURES)  # a small frame: drawn here
    monkeypatch.setattr(report, "PARALLEL_FIGURES_MIN_ROWS", 1)
    forked = _render(tmp_path, "forked")
    assert len(drawn) == len(plots.FIGURES), "the big frame's figures were drawn by the workers"
    assert forked == here and any(n.endswith(".png") for n in here)
    assert report._FIGURE_FRAME is None  # not kept alive after the report


def test_a_dead_worker_has_its_figure_drawn_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = _render(tmp_path, "here")
    drawn = _count_draws_here(monkeypatch)
    monkeypatch.setattr(report, "PARALLEL_FIGURES_MIN_ROWS", 1)
    monkeypatch.setattr(report, "_figure_job", _die)
    assert _render(tmp_path, "died") == here
    assert sorted(drawn) == sorted(n for n, _, _ in plots.FIGURES)
