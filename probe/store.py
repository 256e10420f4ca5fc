"""JSONL storage: one file per run, one measurement per line, crash-safe.

Each line is written with a single ``write`` of the encoded bytes, then flushed
and ``fsync``-ed, so a ``kill -9`` mid-run leaves every completed line readable
and at most the last line torn. The readers of a run's file (:func:`probe.runlines.iter_records`,
every line bounded, and :mod:`analysis.load`) count a torn last line (and any other invalid line)
and skip it instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("kzprobe.store")

_ENCODER = msgspec.json.Encoder()


def encode_line(obj: dict[str, Any]) -> bytes:
    """``obj`` as one compact JSON line (UTF-8, no ASCII escaping, ``\\n``-terminated): what the
    writer writes, and what :func:`probe.recordcap.record_size` counts. msgspec's encoder, ~8x
    faster than ``json.dumps`` on a 17 KB record (issue 13: the stdlib encoder, run twice per
    record, was ~7 % of the probe's CPU). The values read back are the same; floats may be
    spelled differently (``0.00001`` for ``1e-05``) and a NaN or infinity is written ``null``.

    Raises:
        TypeError: a value JSON cannot hold (a bug in the record's builder).
        UnicodeEncodeError: a lone surrogate in a string (as ``json.dumps(...).encode()``).
    """
    return _ENCODER.encode(obj) + b"\n"


class JSONLWriter:
    """Append-only, fsync-per-line JSONL writer.

    Args:
        path: file to append to; parent directories are created (mode 0o750).
        fsync: fsync after every line (default True; benchmarks may turn it off).

    While open, the writer holds an exclusive ``flock`` on the file: the kernel drops it when the
    process ends, however it ends (SIGKILL, the OOM killer), so :func:`writer_alive` tells a run
    still writing from one killed before its summary. A file system without ``flock`` leaves it
    unlocked (the run is then shown as killed until its summary is written).

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
        _lock_for_life(self._fd, self.path)
        self._fsync = fsync
        self.lines_written = 0
        #: the tags given with lines now on disk (:meth:`write_async`, :meth:`enqueue`), in write order: a
        #: caller cancelled while its line was queued learns from them, after :meth:`close`, that it was written
        self.written_tags: list[object] = []
        self._cond = threading.Condition()
        self._pending: list[tuple[bytes, asyncio.AbstractEventLoop | None, asyncio.Future[None] | None,
                                  object]] = []
        self._closing = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _encode(obj: dict[str, Any] | bytes) -> bytes:
        """A pre-encoded line (:func:`encode_line`'s bytes) as it is, else ``obj`` encoded."""
        return obj if isinstance(obj, bytes) else encode_line(obj)

    def write(self, obj: dict[str, Any] | bytes) -> None:
        """Serialise ``obj`` as one compact JSON line and make it durable (``bytes``: a line
        :func:`encode_line` made already).

        Raises:
            OSError: the write failed (disk full ...); the partial line is truncated away.
        """
        self._write_lines([self._encode(obj)])

    async def write_async(self, obj: dict[str, Any] | bytes, tag: object = None) -> None:
        """:meth:`write` without blocking the event loop: the line is handed to one writer
        thread, which writes every line queued so far and fsyncs them together (group
        commit: a line is durable within one fsync of being queued), and this returns once
        the line is durable. An fsync per line on the loop stalled every measurement in
        flight (issue 13; seconds on an SD card). A cancelled caller's line is still
        written: :meth:`close` waits for the thread, so ``lines_written`` read after it
        counts every line on disk, and ``tag`` (when not None) is then in :attr:`written_tags`.

        Raises:
            OSError: the batch holding this line failed (its lines are truncated away); every
                later call raises the same error.
        """
        data = self._encode(obj)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._thread is None:
                self._thread = threading.Thread(target=self._commit_loop, name="kzprobe-jsonl", daemon=True)
                self._thread.start()
            self._pending.append((data, loop, fut, tag))
            self._cond.notify()
        await fut

    def enqueue(self, obj: dict[str, Any] | bytes, tag: object = None) -> None:
        """Queue ``obj`` for the writer thread without waiting (no event loop needed): a run's
        last lines, written while it is being cancelled (records held for packet evidence).
        :meth:`close` commits it; without a thread yet it is written at once.

        Raises:
            OSError: an earlier batch failed, or (without a thread) this write failed.
        """
        data = self._encode(obj)
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._thread is not None:
                self._pending.append((data, None, None, tag))
                self._cond.notify()
                return
        self._write_lines([data])
        if tag is not None:
            self.written_tags.append(tag)

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                batch, self._pending = self._pending, []
                if not batch and self._closing:
                    return
            error: OSError | None = None
            try:
                self._write_lines([d for d, _, _, _ in batch])
                self.written_tags.extend(t for _, _, _, t in batch if t is not None)
            except OSError as exc:
                error = exc
                with self._cond:
                    self._error = exc
            for _, loop, fut, _ in batch:
                if loop is None or fut is None:
                    continue
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle, fut, error)

    def _write_lines(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
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
        self.lines_written += len(lines)

    def close(self) -> None:
        """Commit every queued line (waiting for the writer thread), then close (idempotent)."""
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            self._thread.join()
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JSONLWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Tries, 10 ms apart, to take a writer's lock while a :func:`writer_alive` holds its shared one for a
#: moment (microseconds: open, flock, close).
LOCK_TRIES = 100


def _lock_for_life(fd: int, path: Path) -> None:
    """Take the exclusive ``flock`` a :class:`JSONLWriter` holds until it closes ``fd``. Another writer of
    the same file (it then stays unlocked after :data:`LOCK_TRIES`) or no ``flock`` here costs no line."""
    for _ in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:  # a writer_alive() of kzprobe status, for a moment
            time.sleep(0.01)
        except OSError as exc:
            log.debug("no lock on %s: %s", path, exc.strerror or exc)
            return
    log.debug("no lock on %s: another process holds it", path)


def writer_alive(path: str | Path) -> bool:
    """Whether a live process holds ``path`` open in a :class:`JSONLWriter` (its ``flock``).

    False when the file is not locked (the writer closed it or died), cannot be opened, or the
    file system has no ``flock``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _settle(fut: asyncio.Future[None], error: OSError | None) -> None:
    if fut.done():  # the caller was cancelled; its line is written all the same
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
