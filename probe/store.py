"""JSONL storage: one file per run, one measurement per line, crash-safe.

Each line is written with a single ``write`` of the encoded bytes, then flushed
and ``fsync``-ed, so a ``kill -9`` mid-run leaves every completed line readable
and at most the last line torn. :func:`read_jsonl` skips a torn last line (and
any other invalid line) with a warning instead of failing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kzprobe.store")


class JSONLWriter:
    """Append-only, fsync-per-line JSONL writer.

    Args:
        path: file to append to; parent directories are created (mode 0o750).
        fsync: fsync after every line (default True; benchmarks may turn it off).

    Raises:
        OSError: when the file cannot be opened (a configuration problem, e.g. a
            read-only state directory); the message names the path.
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open measurement file {self.path}: {exc.strerror}") from None
        self._fsync = fsync
        self.lines_written = 0

    def write(self, obj: dict[str, Any]) -> None:
        """Serialise ``obj`` as one compact JSON line and make it durable.

        Raises:
            OSError: the write failed (disk full ...); the partial line is truncated away.
        """
        data = (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
        start = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            # e.g. ENOSPC, or EIO from fsync: take the line back so the file stays whole
            # lines and holds exactly the lines counted (issue 11: an fsync failure left
            # a line the summary did not count)
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise
        self.lines_written += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JSONLWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ReadStats:
    """What :func:`read_jsonl` saw. ``bad_lines`` holds (line number, reason) pairs."""

    lines: int = 0
    good: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    torn_last_line: bool = False


def read_jsonl(path: str | Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file, skipping invalid lines with a warning.

    A last line without its newline that does not parse is reported as torn (the
    expected result of a crash mid-write); other invalid lines are reported with
    their line number. Neither is fatal.

    Args:
        path: the file.
        stats: filled in while iterating, when given.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    stats = stats if stats is not None else ReadStats()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            stats.lines += 1
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                if not raw.endswith(b"\n"):
                    stats.torn_last_line = True
                    log.warning("%s:%d: torn last line skipped (%d bytes; a run was interrupted)", path, lineno, len(raw))
                else:
                    log.warning("%s:%d: invalid line skipped: %s", path, lineno, exc)
                stats.bad_lines.append((lineno, str(exc)))
                continue
            stats.good += 1
            yield obj
