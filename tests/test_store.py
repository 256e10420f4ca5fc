"""JSONL storage: every completed line survives a crash; a torn last line is skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from probe.runlines import SKIP_NOT_JSON, SKIP_NOT_OBJECT, SKIP_TOO_LONG, LineStats
from probe.store import JSONLWriter
from tests.conftest import read_jsonl


def test_write_read_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "run.jsonl"
    with JSONLWriter(p) as w:
        for i in range(3):
            w.write({"i": i, "s": "сайт.қаз"})
    assert [o["i"] for o in read_jsonl(p)] == [0, 1, 2]
    assert p.read_text(encoding="utf-8").count("\n") == 3


def test_torn_last_line_is_skipped_with_stats(tmp_path: Path) -> None:
    p = tmp_path / "run.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b": [1, 2')
    stats = LineStats()
    assert [o["a"] for o in read_jsonl(p, stats)] == [1, 2]
    assert stats.count == 1 and stats.skipped[0][0] == 3 and stats.by_reason == {SKIP_NOT_JSON: 1}


def test_invalid_middle_line_is_reported_not_fatal(tmp_path: Path) -> None:
    p = tmp_path / "run.jsonl"
    p.write_bytes(b'{"a": 1}\nnot json\n[1]\n{"a": 2}\n')
    stats = LineStats()
    assert [o["a"] for o in read_jsonl(p, stats)] == [1, 2]
    assert [n for n, _ in stats.skipped] == [2, 3] and stats.by_reason == {SKIP_NOT_JSON: 1, SKIP_NOT_OBJECT: 1}


def test_a_line_over_the_bound_is_counted_bad_and_never_held(tmp_path: Path) -> None:
    """Break test: probe.store.read_jsonl read every line whole (a line of GBs into memory; an over-long
    record was returned). A run's file is read by the bounded reader (probe.runlines.iter_records): a
    valid record 8× longer than MAX_LINE_BYTES is counted (line over the bound) and skipped in pieces
    of at most the bound (peak ~3× the bound: a piece, the next one and readline's own buffer), the records
    around it and a torn last line are read and counted as before."""
    import tracemalloc

    from probe.runlines import MAX_LINE_BYTES

    p = tmp_path / "run.jsonl"
    long = b'{"a": 9, "pad": "' + b"x" * (8 * MAX_LINE_BYTES) + b'"}\n'
    p.write_bytes(b'{"a": 1}\n' + long + b'{"a": 2}\n\n{"a": 3}\n{"a": 4, "b": [1')
    stats = LineStats()
    tracemalloc.start()
    try:
        got = [o["a"] for o in read_jsonl(p, stats)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [1, 2, 3]
    assert stats.by_reason == {SKIP_TOO_LONG: 1, SKIP_NOT_JSON: 1}
    assert [n for n, _ in stats.skipped] == [2, 6] and stats.skipped[0][1] == SKIP_TOO_LONG
    assert peak < 4 * MAX_LINE_BYTES < len(long) // 2, peak


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
    stats = LineStats()
    objs = list(read_jsonl(p, stats))
    assert len(objs) > 10
    assert [o["i"] for o in objs] == list(range(len(objs)))
    assert stats.count <= 1
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


def test_write_async_fsyncs_off_the_event_loop_in_groups(tmp_path: Path, monkeypatch) -> None:
    """Issue 13: the fsync runs in the writer thread (never the loop's), several lines per
    fsync when they queue up, and each caller returns only once its line is durable."""
    import asyncio
    import threading

    p = tmp_path / "run.jsonl"
    w = JSONLWriter(p)
    real_fsync = os.fsync
    synced: list[tuple[str, int]] = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.05)
        real_fsync(fd)
        synced.append((threading.current_thread().name, os.fstat(fd).st_size))

    monkeypatch.setattr(os, "fsync", slow_fsync)

    async def main() -> list[int]:
        loop_thread = threading.current_thread().name
        sizes: list[int] = []

        async def one(i: int) -> None:
            await w.write_async({"i": i})
            sizes.append(max(s for _, s in synced))  # durable: an fsync covered at least this much
        await asyncio.gather(*(one(i) for i in range(20)))
        assert all(name != loop_thread for name, _ in synced)
        return sizes

    asyncio.run(main())
    w.close()
    assert w.lines_written == 20
    lines = list(read_jsonl(p))
    assert sorted(rec["i"] for rec in lines) == list(range(20))
    assert len(synced) < 20  # grouped: the 20 lines did not need 20 fsyncs


def test_write_async_failure_truncates_its_batch_and_every_later_write_fails(tmp_path: Path, monkeypatch) -> None:
    import asyncio
    import errno as _errno

    p = tmp_path / "run.jsonl"
    w = JSONLWriter(p)
    w.write({"i": 0})

    def eio(fd: int) -> None:
        raise OSError(_errno.EIO, "Input/output error")

    async def main() -> None:
        monkeypatch.setattr(os, "fsync", eio)
        try:
            await w.write_async({"i": 1})
        except OSError as exc:
            assert exc.errno == _errno.EIO
        else:
            raise AssertionError("the fsync failure must reach the caller")
        try:
            await w.write_async({"i": 2})
        except OSError as exc:
            assert exc.errno == _errno.EIO
        else:
            raise AssertionError("a broken file takes no more lines")

    asyncio.run(main())
    w.close()
    assert w.lines_written == 1
    assert p.read_bytes() == b'{"i":0}\n'


def test_encode_line_reads_back_as_the_stdlib_encoder_wrote_it() -> None:
    """The writer's encoder (msgspec, issue 13) gives the values json.dumps gave: compact,
    UTF-8 unescaped, one newline; floats read back equal whatever their spelling."""
    import json

    from probe.store import encode_line

    rec = {"input": "https://пример.kz/", "t0": 1.2e-05, "t": 1e22, "n": -0.0, "big": 2**63, "none": None,
           "nested": [{"a": [1, 2.5, "\x1f\u2028\"\\/"]}], "ok": True}
    line = encode_line(rec)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert json.loads(line) == rec
    stdlib = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    assert json.loads(stdlib) == json.loads(line)
    assert "пример".encode() in line  # not \\u-escaped


def test_a_pre_encoded_line_is_written_as_it_is(tmp_path: Path) -> None:
    from probe.store import encode_line

    p = tmp_path / "r.jsonl"
    with JSONLWriter(p) as w:
        w.write(encode_line({"i": 0}))
        w.write({"i": 1})
    assert p.read_bytes() == b'{"i":0}\n{"i":1}\n'
