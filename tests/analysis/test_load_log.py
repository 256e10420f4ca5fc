"""analysis.load's log: bad lines are said once per file — the first few with file:line and why, then one
line with the count of the rest — never one WARNING per line.

Before: every invalid line was logged (up to the 1,000 kept for the report, and 1,000 per file under
``--engine dask``): ``kzprobe report --in`` on 100,000 lines of junk wrote 1,003 lines on stderr, on 20
junk files under Dask 20,003, and no line said how many were not shown.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

import analysis.load as L
from analysis.load import load, load_file

LOGGER = "kzprobe.analysis.load"


def _junk(path: Path, n: int) -> Path:
    """``n`` invalid lines of three kinds (not JSON, binary, a JSON array) cycling from line 1."""
    kinds = [b"not json at all\n", b"\x89PNG\x00\xff\xfe binary\n", b"[1, 2, 3]\n"]
    path.write_bytes(b"".join(kinds[i % 3] for i in range(n)))
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def _expected(p: Path, n: int) -> list[str]:
    """What a file of ``n`` :func:`_junk` lines logs."""
    return [f"{p}:1: invalid JSON: JSON is malformed: invalid character (byte 4)",
            f"{p}:2: not text (binary data: a corrupt or non-measurement file?)",
            f"{p}:3: not a JSON object (list)",
            f"{p}: {n - 3:,} more invalid lines not shown ({n:,} in all)"]


def test_ten_thousand_invalid_lines_log_four_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _junk(tmp_path / "junk.jsonl", 10_000)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = load([p], workers=1)
    assert _warnings(caplog) == _expected(p, 10_000)
    assert (r.stats.lines, r.stats.invalid, r.stats.loaded) == (10_000, 10_000, 0)
    # the report's data-quality section still gets its examples and the complete counts
    assert len(r.stats.errors) == r.stats.max_errors and r.stats.by_file[str(p)]["invalid"] == 10_000


def test_a_few_invalid_lines_are_each_shown_without_a_count_line(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    p = _junk(tmp_path / "few.jsonl", 3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load([p], workers=1)
    assert _warnings(caplog) == _expected(p, 3)[:3]
    q = _junk(tmp_path / "four.jsonl", 4)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load([q], workers=1)
    assert _warnings(caplog)[-1] == f"{q}: 1 more invalid line not shown (4 in all)"


def test_each_file_gets_its_examples_even_past_the_kept_errors(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The first file fills the 1,000 errors kept for the report; the second is still named with its first lines."""
    a = _junk(tmp_path / "a.jsonl", 2_000)
    b = tmp_path / "b.jsonl.gz"
    b.write_bytes(gzip.compress(_junk(tmp_path / "b.txt", 500).read_bytes()))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = load([a, b], workers=1)
    assert _warnings(caplog) == _expected(a, 2_000) + _expected(b, 500)
    assert r.stats.invalid == 2_500


def test_many_bad_files_are_summed_past_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = [_junk(tmp_path / f"j{i:02d}.jsonl", 10 + i) for i in range(L.LOG_FILES + 5)]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = load([tmp_path], workers=1)
    got = _warnings(caplog)
    shown = files[: L.LOG_FILES]
    assert got[:-1] == [line for i, p in enumerate(shown) for line in _expected(p, 10 + i)]
    rest = sum(10 + i for i in range(L.LOG_FILES, L.LOG_FILES + 5))
    assert got[-1] == f"5 more files with invalid lines not shown ({rest:,} invalid lines in them)"
    assert r.stats.invalid == sum(10 + i for i in range(len(files)))


def test_parallel_ranges_log_as_one_file(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A big file split into ranges loaded by worker processes logs what the serial load logs."""
    p = _junk(tmp_path / "big.jsonl", 10_000)
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(L, "RANGE_BYTES", p.stat().st_size // 5)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = load([p], workers=2)
    assert _warnings(caplog) == _expected(p, 10_000)
    assert r.stats.invalid == 10_000


def test_load_file_logs_its_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Dask's per-partition loader (``load_dask``) logs as the pandas engine does, per file."""
    p = _junk(tmp_path / "junk.jsonl", 10_000)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load_file(p)
    assert _warnings(caplog) == _expected(p, 10_000)


def test_dask_engine_logs_once_in_the_gathering_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--engine dask``: the partitions do not log; the gathered counts are logged once, as pandas logs them."""
    pytest.importorskip("dask")
    import dask

    from analysis import scale

    files = [_junk(tmp_path / f"j{i}.jsonl", 3_000) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        pandas_stats = load([tmp_path], workers=1).stats
    pandas_log = _warnings(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER), dask.config.set(scheduler="threads"):
        _, parts = scale.persist_counted(scale.load_dask_counted([tmp_path]))
        assert not _warnings(caplog)  # the partitions said nothing
        stats = scale.gather_stats(parts)
    assert _warnings(caplog) == pandas_log == [line for p in files for line in _expected(p, 3_000)]
    assert (stats.invalid, stats.errors) == (pandas_stats.invalid, pandas_stats.errors)
