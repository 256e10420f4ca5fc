"""JSONL storage: every completed line survives a crash; a torn last line is skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from probe.store import JSONLWriter, ReadStats, read_jsonl


def test_write_read_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "run.jsonl"
    with JSONLWriter(p) as w:
        for i in range(3):
            w.write({"i": i, "s": "сайт.қаз"})
    assert [o["i"] for o in read_jsonl(p)] == [0, 1, 2]
    assert p.read_text(encoding="utf-8").count("\n") == 3


def test_torn_last_line_is_skipped_with_stats(tmp_path: Path, caplog) -> None:
    p = tmp_path / "run.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b": [1, 2')
    stats = ReadStats()
    assert [o["a"] for o in read_jsonl(p, stats)] == [1, 2]
    assert stats.torn_last_line and stats.good == 2 and stats.bad_lines[0][0] == 3
    assert "torn last line" in caplog.text


def test_invalid_middle_line_is_reported_not_fatal(tmp_path: Path) -> None:
    p = tmp_path / "run.jsonl"
    p.write_bytes(b'{"a": 1}\nnot json\n[1]\n{"a": 2}\n')
    stats = ReadStats()
    assert [o["a"] for o in read_jsonl(p, stats)] == [1, 2]
    assert [n for n, _ in stats.bad_lines] == [2, 3] and not stats.torn_last_line


def test_kill_9_mid_run_keeps_every_completed_line(tmp_path: Path) -> None:
    """A writer process killed with SIGKILL: every line it finished is readable."""
    p = tmp_path / "run.jsonl"
    code = (
        "import sys, time\n"
        "from probe.store import JSONLWriter\n"
        "w = JSONLWriter(sys.argv[1])\n"
        "i = 0\n"
        "while True:\n"
        "    w.write({'i': i, 'pad': 'x' * 5000})\n"
        "    i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(p)], cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not p.exists() or p.stat().st_size < 200_000):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stats = ReadStats()
    objs = list(read_jsonl(p, stats))
    assert len(objs) > 10
    assert [o["i"] for o in objs] == list(range(len(objs)))
    assert len(stats.bad_lines) <= 1
    # every line but possibly the last is complete JSON
    lines = p.read_bytes().split(b"\n")
    for line in lines[:-1]:
        json.loads(line)


def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch) -> None:
    """Disk full mid-line (ENOSPC after a partial write): the file keeps whole lines only."""
    import errno as _errno

    p = tmp_path / "run.jsonl"
    w = JSONLWriter(p)
    w.write({"i": 0})
    real_write = os.write
    calls = {"n": 0}

    def flaky(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:7]))  # a partial write...
        raise OSError(_errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", flaky)
    try:
        w.write({"i": 1, "pad": "x" * 100})
    except OSError as exc:
        assert exc.errno == _errno.ENOSPC
    else:
        raise AssertionError("the write should have failed")
    monkeypatch.setattr(os, "write", real_write)
    w.close()
    assert p.read_bytes() == b'{"i":0}\n'
