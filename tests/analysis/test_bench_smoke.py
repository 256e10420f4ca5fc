"""``python -m bench.analysis --quick`` runs and prints its figures (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_bench_quick_runs_and_prints_figures(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "bench.analysis", "--quick", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "10,000 measurements" in out
    assert re.search(r"analysis\.load: [0-9.]+ s, [0-9,]+ measurements/s", out), out
    assert re.search(r"peak RSS [0-9,]+ MiB", out), out
    assert re.search(r"duckdb read_json .*: [0-9.]+ s", out), out
    assert re.search(r"target ≥ [0-9,]+ measurements/s", out) and re.search(r"within [0-9.]+× of DuckDB", out), out
    assert re.search(r"(whole report for 10,000 .*: [0-9.]+ s|report: not available yet)", out), out
    assert "all targets met:" in out
    assert re.search(r"the file in the page cache at the start of each load: [0-9]+ %", out), out
    assert (tmp_path / "measurements-10000.jsonl").stat().st_size > 10_000 * 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore/posix_fadvise: Linux")
def test_cached_fraction_tells_a_dropped_file_from_a_read_one(tmp_path: Path) -> None:
    """The bench's page-cache share of its input: a file whose pages were dropped (fsync, then
    POSIX_FADV_DONTNEED) is ~0 % cached, the same file read back 100 %; an empty or missing file None."""
    import os

    from bench.analysis import cached_fraction

    f = tmp_path / "m.jsonl"
    f.write_bytes(b"x" * (64 << 10) * 16)
    with open(f, "rb+") as fh:
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    dropped = cached_fraction(f)
    assert dropped is not None and dropped < 0.5
    f.read_bytes()
    assert cached_fraction(f) == 1.0
    (tmp_path / "empty").write_bytes(b"")
    assert cached_fraction(tmp_path / "empty") is None and cached_fraction(tmp_path / "absent") is None


def test_ooni_sync_bench_runs_and_prints_figures() -> None:
    """``python -m bench.ooni_sync`` on a tiny bucket: every figure printed beside its target."""
    p = subprocess.run([sys.executable, "-m", "bench.ooni_sync", "-n", "120", "--days", "1"],
                       capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "bucket: 120 measurements in 24 objects over 1 days" in out
    assert re.search(r"sync \+ re-judge \+ store: 120 measurements in [0-9.]+ s = [0-9,]+ measurements/s"
                     r"\s+\(target ≥ 20,000: (target met|NOT met)\)", out), out
    assert re.search(r"re-judging alone .*: [0-9,]+ measurements/s per core", out), out
    # the sync's own CPU and the idle-cores rate beside the target; the CPU per stage
    assert re.search(r"CPU of the sync's processes: [0-9.,]+ s = [0-9,]+ µs a measurement; .* ≈ [0-9,]+ "
                     r"measurements/s \(target ≥ 20,000: (target met|NOT met)\)", out), out
    # the loopback bucket server's share of the cores (it must not be the bottleneck)
    assert re.search(r"the loopback bucket server \(another process, not counted above\) [0-9.,]+ s = [0-9.]+% of the "
                     r"\d+ cores", out), out
    for stage in ("decompress + split lines", "JSON decode (msgspec)", "re-judge (analysis.load.row)", "Parquet part",
                  "compaction", "all stages"):
        assert re.search(re.escape(stage) + r" +[0-9,]+ µs", out), (stage, out)
    # the floor: the compiled libraries' steps alone, against the budget of the target
    assert re.search(r"the floor: .*: [0-9,]+ µs a measurement = [0-9]+% of the 100 µs budget", out), out
    for step in ("inflate (", "split lines (bytes.split)", "JSON decode (msgspec)", "line SHA-256 (hashlib)"):
        assert re.search(re.escape(step) + r".* +[0-9,]+\.[0-9] µs", out), (step, out)
    assert re.search(r"synthetic measurements: \d+ real web_connectivity samples as templates, lines of", out), out
    assert re.search(r"peak RSS, 1 days: main process [1-9][0-9,]* MiB, largest worker [1-9][0-9,]* MiB", out), out
    assert "RSS flat in the period's length" in out and "all targets met:" in out


def test_ooni_judge_bench_runs_and_prints_figures() -> None:
    """``python -m bench.ooni_judge`` on a few copies of the real samples: each stage's µs and the
    target line (no timing asserted)."""
    p = subprocess.run([sys.executable, "-m", "bench.ooni_judge", "-n", "40", "--repeat", "1"],
                       capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for stage in ("_observe", "judge", "recompute", "row"):
        assert re.search(rf"^  {stage} +[0-9.,]+ µs$", out, re.M), out
    assert re.search(r"row ≤ 50 µs: (target met|NOT met)", out), out


def test_ooni_judge_instructions_parse_and_loop() -> None:
    """``--instructions`` reads callgrind's "Collected" line (and refuses output without one); the loops
    it runs under valgrind (``--loop N``, ``--loop-judge N`` for ``--stage judge``) run without valgrind too."""
    from bench.ooni_judge import collected

    err = "==123== Events    : Ir\n==123== Collected : 332618539\n==123== \n==123== I   refs:      332,618,539\n"
    assert collected(err) == 332618539
    with pytest.raises(ValueError):
        collected("==123== I   refs:      332,618,539\n")
    p = subprocess.run([sys.executable, "-m", "bench.ooni_judge", "--loop", "5"],
                       capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    # --stage judge's loop: the judge alone on the judgeable copies' observations, their count printed
    p = subprocess.run([sys.executable, "-m", "bench.ooni_judge", "--loop-judge", "20"],
                       capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    judged = int(p.stdout.split()[-1])
    assert 0 < judged < 20, p.stdout  # the samples hold measurements the web rules do not judge


def test_ooni_judge_instructions_judge_stage_with_no_judgeable_row(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--instructions --stage judge`` when callgrind's run judged no observation (no judgeable row among
    the copies): a message and exit 1, not a ZeroDivisionError. Valgrind's run is replaced by its result."""
    import bench.ooni_judge as oj

    monkeypatch.setattr(oj, "instructions", lambda n, stage="row": (0.0, 0))
    assert oj.main(["--instructions", "--stage", "judge", "-n", "3"]) == 1
    assert capsys.readouterr().out == "no judgeable row among the 3 copies\n"


def test_ooni_sync_callgrind_loop_runs_the_batch() -> None:
    """What ``python -m bench.ooni_sync_callgrind`` runs under valgrind (``--loop N``) runs without it: a
    batch of hourly objects through ``process_objects`` with the judge memoised, every measurement kept
    (the loop checks it)."""
    p = subprocess.run([sys.executable, "-m", "bench.ooni_sync_callgrind", "--loop", "48"],
                       capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
