"""``kzprobe ooni sync``: OONI's measurements of one country and period → the local Parquet store.

1. **Plan** — list the bucket (:mod:`analysis.ooni_bucket`) for every upload day of the period
   widened by a margin (the key's date is the upload hour; late uploads come days after):
   ``raw/`` from 2020-10-20, ``jsonl/`` before it (the ``.x.`` copies of ``.l.`` files dropped,
   ooni/backend#613), and for a ``jsonl/`` day with no file for the country, that day's cans
   (ooni/backend#538).
2. **Estimate** — objects and bytes still to fetch (what the manifest does not hold yet),
   against the free disk space.
3. **Fetch and judge** — at most ``concurrency`` downloads at once (:class:`analysis.s3.S3Client`:
   retries with backoff, exact sizes, MD5 checked against a single-part ETag), each object
   streamed to ``DIR/.partial/`` and then read by a worker process in batches of objects
   (:func:`process_objects`, :func:`batches`): decompressed line by line with every read bounded, filtered on
   country, test and ``measurement_start_time``, de-duplicated on (report_id, input,
   measurement_start_time), judged again by :func:`analysis.load.row` (the analysis' own
   entry point, :func:`analysis.ooni.recompute`), written as Parquet parts by measurement day
   (:mod:`analysis.ooni_store`), one part a day and batch. Only then is the object recorded in ``DIR/manifest.jsonl``
   (fsynced): an interrupted download or an unfinished object is never counted, and a re-run
   fetches only what the manifest lacks (or what changed: a new ETag).
4. **Compact** — each touched month rewritten as one file (its days' parts and its earlier file
   merged, measurements repeated across objects dropped; :func:`analysis.ooni_store.compact_month`);
   ``DIR/coverage.csv`` (measurements per day and network) rewritten.

Memory does not grow with the period: one object at a time per worker, one month at a time
when compacting. A full disk stops the sync with :class:`analysis.s3.DiskFullError` (the
partial file removed; everything recorded in the manifest kept). Raw objects are kept in
``DIR/raw/<key>`` only with ``keep_raw``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from analysis import decompress_bound as db
from analysis import ooni_bucket as ob
from analysis.s3 import (
    DiskFullError,
    RetryPolicy,
    S3Client,
    S3Error,
    S3Object,
    S3RetriesExhaustedError,
    disk_full_message,
    is_disk_full,
)
from probe.errors import KzprobeError

log = logging.getLogger("kzprobe.analysis.ooni_sync")

MANIFEST = "manifest.jsonl"
LOCK = ".lock"
PARTIAL_DIR = ".partial"
#: Characters of an object's file name kept in its partial file's name (after a digest of the key):
#: at most 4 bytes each in UTF-8, so the name stays under any file system's 255 bytes.
PARTIAL_TAIL = 48
RAW_DIR = "raw"
#: Longest measurement line read (bytes). The largest real measurement in our samples is 0.93 MB
#: (``ooni-samples-more/probe-cli-pipeline-youtube``, a web_connectivity with its bodies); ×10,
#: rounded up: 16 MiB. A longer line is counted invalid and named (``key:line: longer than …``) and
#: passed over up to its newline without being held (:func:`_lines`): it is not a measurement OONI
#: publishes, and reading it whole costs memory; the lines after it are read as usual.
MAX_LINE_BYTES = 16 << 20
#: Rows per Parquet part (bounds a worker's memory on a big object).
PART_ROWS = 20_000
#: A worker reads objects in batches of at most this many compressed bytes and objects
#: (:func:`batches`): one Parquet part per day a batch, not per object.
BATCH_BYTES = 8 << 20
BATCH_OBJECTS = 64
#: Biggest object fetched (bytes); a bigger one is skipped and reported.
MAX_OBJECT_BYTES = 4 << 30
#: The invalid-line policy (:func:`junk_reason`): once an object has given at least ``JUNK_MIN_LINES``
#: lines and more than ``JUNK_SHARE`` of them were invalid (not JSON, not an object, no usable
#: ``measurement_start_time``, a measurement ``analysis.load.row`` cannot read), the rest of it is not
#: read: the object is reported as damaged (the sync's summary and its manifest entry name the
#: reason, the lines read and how many were invalid), the measurements before are kept. An object of
#: short junk lines cost ~10 CPU-s per 64 MB read to its end (bounded by the caps, but slow); OONI's
#: objects have no invalid line in our samples, so half of a thousand is far from anything real.
JUNK_MIN_LINES = 1_000
JUNK_SHARE = 0.5
#: Invalid lines named (``"file:line: why"``) at most, an object (its manifest entry's ``invalid_examples``)
#: and a sync (:attr:`SyncResult.invalid_examples`, printed in its summary); the rest are only counted.
#: Only an invalid line pays for it (a good line's path is unchanged).
MAX_INVALID_EXAMPLES = 3
MAX_SYNC_INVALID_EXAMPLES = 20
#: Longest example kept (characters; a reason quotes a bad value, bounded too).
MAX_EXAMPLE_CHARS = 300


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """What to sync and how.

    Attributes:
        cc: country (``KZ``), or None for every country.
        since, until: measurement days, both included (UTC).
        out: the output directory (store, manifest, coverage, partial and raw files).
        endpoint: the S3 endpoint (path-style; ``--endpoint-url``).
        bucket: the bucket's name.
        test_names: OONI test names to keep (``web_connectivity``).
        margin_before, margin_after: upload days listed before ``since`` and after ``until``.
        concurrency: downloads at once.
        workers: processes judging objects (None: the CPUs available; 0: in this process).
        keep_raw: keep the fetched objects under ``out/raw/``.
        use_cans: fetch a day's cans when its JSONL files for the country are missing.
        retry: the S3 retry policy.
        max_object_bytes: objects bigger than this are skipped (and reported).
        max_failed_in_a_row: objects failed after every retry (5xx, 429, timeouts, dropped transfers) in
            a row, no object fetched between, after which the sync stops fetching (the rest not tried,
            counted; exit 75): the bucket is in trouble, each object's own retries only add load and time.
    """

    cc: str | None
    since: dt.date
    until: dt.date
    out: Path
    endpoint: str = ob.DEFAULT_ENDPOINT
    bucket: str = ob.BUCKET
    test_names: tuple[str, ...] = ("web_connectivity",)
    margin_before: int = 1
    margin_after: int = 7
    concurrency: int = 4
    workers: int | None = None
    keep_raw: bool = False
    use_cans: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_object_bytes: int = MAX_OBJECT_BYTES
    max_failed_in_a_row: int = 8


@dataclass
class ObjectStats:
    """What reading one object gave (also its manifest entry's counts).

    ``written``: the object's measurements written to the store's day parts (of the test, country and
    period asked, each once within the object, with a valid start time). Not the measurements new to
    the store: one the store already holds (from another object, an earlier sync, or parts an
    interrupted sync left) is written again and dropped when its month is compacted, which is counted
    per month, not per object (:attr:`SyncResult.compaction_dropped`); what the store gained is the
    months' count after the sync (:attr:`SyncResult.stored`, ``coverage.csv``) less the count before.
    Older manifests name this count ``kept``; resuming reads only ``key`` and ``etag``
    (:func:`manifest_done`), so their entries still count as synced.
    """

    key: str
    etag: str = ""
    size: int = 0
    lines: int = 0
    written: int = 0
    other_country: int = 0
    other_test: int = 0
    out_of_period: int = 0
    duplicates: int = 0
    invalid: int = 0
    error: str | None = None
    days: list[str] = field(default_factory=list)
    invalid_examples: list[str] = field(default_factory=list)

    def bad(self, file: str, line: int, why: str) -> None:
        """Count line ``line`` of ``file`` (the key, or ``key!member`` of a can) invalid, and name it
        (``"file:line: why"``) while fewer than :data:`MAX_INVALID_EXAMPLES` are."""
        self.invalid += 1
        if len(self.invalid_examples) < MAX_INVALID_EXAMPLES:
            self.invalid_examples.append(f"{file}:{line}: {why}"[:MAX_EXAMPLE_CHARS])


@dataclass
class SyncResult:
    """The sync's account: objects planned/fetched/skipped, measurements kept, what went wrong."""

    planned: int = 0
    planned_bytes: int = 0
    already: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    failed: list[str] = field(default_factory=list)
    not_tried: int = 0  #: objects not tried once the sync gave up on the bucket (``gave_up``)
    gave_up: str = ""  #: why the sync stopped fetching (objects failed in a row), or ""
    corrupt: list[str] = field(default_factory=list)
    too_big: list[str] = field(default_factory=list)
    duplicate_family: int = 0
    can_days: list[str] = field(default_factory=list)
    lines: int = 0
    kept: int = 0  #: the objects' :attr:`ObjectStats.written`, summed (not the measurements new to the store)
    out_of_period: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    duplicates: int = 0  #: dropped: repeated within an object, plus ``compaction_dropped``
    #: duplicates dropped when the months written were compacted (rows already in the store, read from
    #: two objects, or in parts an interrupted sync left): not a part of ``kept``, it may exceed it
    compaction_dropped: int = 0
    stored: int = 0  #: rows the months written hold now (earlier syncs' too)
    retries: int = 0
    seconds: float = 0.0


class SyncBusyError(KzprobeError):
    """Another sync is writing the same output directory."""


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``OUT/.lock`` (flock) for the whole sync: two syncs into one directory would race on
    its partial files and parts."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SyncBusyError(f"another kzprobe ooni sync is writing {out} (it holds {out / LOCK}); "
                                "wait for it to finish") from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- manifest


def manifest_done(out: Path) -> dict[str, str]:
    """key → ETag of every object the manifest records as synced (a torn last line is ignored)."""
    done: dict[str, str] = {}
    p = out / MANIFEST
    if not p.exists():
        return done
    with open(p, "rb") as fh:
        for line in fh:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and isinstance(e.get("key"), str):
                done[e["key"]] = str(e.get("etag") or "")
    return done


def _append_manifest(out: Path, entries: ObjectStats | list[ObjectStats]) -> None:
    """Append objects' entries to the manifest with one write and one fsync (a batch's objects
    together: an fsync an object blocked the event loop ~5–12 ms each)."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    text = "".join(json.dumps({**vars(st), "t": now}, separators=(",", ":")) + "\n"
                   for st in (entries if isinstance(entries, list) else [entries]))
    p = out / MANIFEST
    data = text.encode("utf-8")
    try:
        # one write(2) with O_APPEND: concurrent writers (the Dask tasks) never interleave inside it
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # a short write (rare) appends the rest
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(disk_full_message(p)) from None
        raise


# --------------------------------------------------------------------------- reading one object


class _Capped(io.RawIOBase):
    """A readable that gives at most ``cap`` bytes, then raises :class:`_TooMuch` (``why``) if the
    stream had more (decompression bomb guard): every byte up to the cap is returned first."""

    def __init__(self, inner: Any, cap: int, why: str | None = None) -> None:
        self.inner, self.left, self.cap = inner, cap, cap
        self.why = why or f"more than {cap:,} bytes once decompressed"

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.left <= 0:  # at the cap: one byte more says whether the stream goes on
            if (self.inner.read(1) if not hasattr(self.inner, "readinto") else self.inner.readinto(bytearray(1))):
                raise _TooMuch(self.why)
            return 0
        view = memoryview(b)[: self.left]
        n = self.inner.readinto(view) if hasattr(self.inner, "readinto") else _readinto(self.inner, view)
        self.left -= n
        return n


def _object_cap(size: int) -> tuple[int, str]:
    """Decompressed bytes read from an object of ``size`` compressed bytes at most (the report
    loader's bound too, :func:`analysis.decompress_bound.decompressed_cap`: 200× the size, at least
    256 MiB), and the reason named when it has more (:func:`analysis.decompress_bound.past_cap`)."""
    return db.decompressed_cap(size), db.past_cap(size)


def _readinto(fh: Any, b: Any) -> int:
    data = fh.read(len(b))
    b[: len(data)] = data
    return len(data)


class _TooMuch(Exception):
    """An object past its bound (:func:`_object_cap`): the message says so, and is
    reported as it is (not as ``_TooMuch: …``: break test F10)."""


class _Junk(Exception):
    """The invalid-line policy stopped reading an object (:func:`junk_reason`)."""


def junk_reason(lines: int, invalid: int) -> str | None:
    """Why an object is given up as junk after ``lines`` lines read of which ``invalid`` were invalid
    (:data:`JUNK_MIN_LINES`, :data:`JUNK_SHARE`), or None while it is read on."""
    if lines < JUNK_MIN_LINES or invalid <= lines * JUNK_SHARE:
        return None
    return (f"junk: {invalid:,} of the {lines:,} lines read are not valid measurements (more than "
            f"{JUNK_SHARE:.0%} after at least {JUNK_MIN_LINES:,}), the rest of the object not read")


#: A run of blank lines (whitespace up to its last newline) at a position of a chunk.
_BLANKS = re.compile(rb"[ \t\r\n]*\n")
#: The bytes :meth:`bytes.isspace` calls whitespace: a line starting with one of them may be blank.
_SPACE = b" \t\n\r\x0b\x0c"


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes | memoryview | None]]:
    """(line number, line with its newline) of a stream given as chunks of bytes (the inflater's own
    pieces, :meth:`_Inflate.chunks`), blank lines (:meth:`bytes.isspace`) skipped. A line inside a
    chunk is a :class:`memoryview` of it, not a copy; a line across chunks is joined once. Where a
    :class:`io.BufferedReader` over the inflater copied each byte of a line ~5 times (the inflater's
    buffer, the reader's, the line), this splits the chunks where they are (callgrind:
    ``python -m bench.ooni_sync_callgrind``). A run of blank lines is skipped by one regex match, not a
    line at a time (64 MB of newlines took 15 CPU-s one by one). A line over :data:`MAX_LINE_BYTES`
    (without its newline) is given as ``(its number, None)`` as soon as that many bytes of it are read,
    and the rest of it is passed over chunk by chunk up to its newline (not held: memory stays under
    the cap), the lines after it given as usual; an error of the chunks' source comes out after the
    lines before it, the unfinished line it cut dropped."""
    n = 0
    head: list[bytes] = []  # the start of a line begun in an earlier chunk
    held = 0  # its bytes
    skipping = False  # inside a line over the cap (already given as None), up to its newline
    for chunk in chunks:
        pos, end = 0, len(chunk)
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            skipping = False
            pos = nl + 1
        elif head:
            nl = chunk.find(b"\n")
            if nl < 0:
                head.append(chunk)
                held += end
                if held > MAX_LINE_BYTES:
                    head, held, skipping = [], 0, True
                    n += 1
                    yield n, None
                continue
            n += 1
            if held + nl > MAX_LINE_BYTES:
                yield n, None
            else:
                head.append(chunk[: nl + 1])
                line = b"".join(head)
                if not line.isspace():
                    yield n, line
            head, held = [], 0
            pos = nl + 1
        view = memoryview(chunk)
        while pos < end:
            first = chunk[pos]
            if first in _SPACE:  # a blank line, or a run of them, or a line that starts with whitespace
                m = _BLANKS.match(chunk, pos)
                if m is not None:
                    n += chunk.count(b"\n", pos, m.end())
                    pos = m.end()
                    continue
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                break
            n += 1
            if nl - pos > MAX_LINE_BYTES:
                yield n, None
            elif first not in _SPACE or not chunk[pos:nl].isspace():
                yield n, view[pos: nl + 1]
            pos = nl + 1
        if pos < end:
            if end - pos > MAX_LINE_BYTES:
                skipping = True
                n += 1
                yield n, None
            else:
                head, held = [chunk[pos:]], end - pos
    if head:
        line = b"".join(head)
        if not line.isspace():
            yield n + 1, line


def _capped(chunks: Iterable[bytes], cap: int, why: str) -> Iterator[bytes]:
    """``chunks`` up to ``cap`` bytes in all, then :class:`_TooMuch` (``why``) if they go on
    (decompression bomb guard): every byte up to the cap is given first."""
    left = cap
    for chunk in chunks:
        if len(chunk) > left:
            if left:
                yield chunk[:left]
            raise _TooMuch(why)
        left -= len(chunk)
        yield chunk


def _sources(path: Path, ref: ob.ObjectRef, cc: str | None,
             stats: ObjectStats) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(file name for the rows, the JSONL's bytes in chunks) of an object: the object itself, or a
    can's members of the country (others skipped without decompressing them)."""
    cap, why = _object_cap(ref.size)
    if ref.layout != "can":
        with _Inflate(path) as gz:
            yield ref.key, _capped(gz.chunks(), cap, why)
        return
    import lz4.frame

    with lz4.frame.open(path, "rb") as lz, tarfile.open(fileobj=_Capped(lz, cap, why), mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            who = ob.member_country(member.name)
            if who is not None and cc is not None and who[0] != cc:
                stats.other_country += 1
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            yield f"{ref.key}!{member.name}", iter(functools.partial(_Capped(fh, member.size).read, READ_BUFFER), b"")


_decoder = msgspec.json.Decoder()

#: Compressed bytes fed to the inflater at once, and decompressed bytes it returns at most a step.
INFLATE_IN = 1 << 16
INFLATE_OUT = 1 << 20
#: Bytes read at once from a can's member (its lines split in pieces of this size).
READ_BUFFER = 256 << 10
#: Compressed bytes fed at once when a damaged member is read again to recover its last good bytes.
RECOVER_STEP = 256


def _zlib_codec() -> tuple[Any, tuple[type[BaseException], ...]]:
    """The fastest zlib-compatible inflater installed and its error types: ISA-L (``isal.isal_zlib``,
    the ``fast`` extra: decompress + split lines 23 → 8 µs a measurement on the benchmark's
    objects, 2026-12-04), else the standard library's zlib."""
    try:
        from isal import isal_zlib

        error: type[BaseException] = getattr(isal_zlib, "error")  # noqa: B009 - its stub types it as an instance
        return isal_zlib, (error,)
    except ImportError:  # pragma: no cover - isal is in the test extra; the fallback is tested by monkeypatching
        return zlib, ()


_zlib, _ZLIB_ERRORS = _zlib_codec()


class _Inflate(io.RawIOBase):
    """A gzip file (one or more members, zero padding between them allowed, as :mod:`gzip`) as a
    raw binary stream, each member's CRC and length checked.

    Unlike :class:`gzip.GzipFile`, whose buffered reads lose the bytes decompressed just before
    damage, every good byte before the damage is returned first and the error raised on the next
    read: on an error the member is read again from its start with the standard library's zlib in
    small steps (only then; bounded: what the failed step could have produced)."""

    def __init__(self, path: Path, zmod: Any = None) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._z = zmod if zmod is not None else _zlib
        self._errors: tuple[type[BaseException], ...] = (zlib.error, *(_ZLIB_ERRORS if self._z is _zlib else ()))
        self._d = self._z.decompressobj(31)
        self._pending = b""  # compressed input not consumed yet
        self._member_start = 0  # file offset of the current member
        self._member_out = 0  # bytes the current member gave so far
        self._fed = False  # the current member got input
        self._buf = memoryview(b"")
        self._err: BaseException | None = None
        self._done = False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()
        super().close()

    def _fill(self) -> bool:
        """Decompressed bytes in ``_buf``, or False at the end (the deferred error raised there)."""
        while not self._buf:
            if self._err is not None:
                err, self._err = self._err, None
                self._done = True
                raise err
            if self._done:
                return False
            self._step()
        return True

    def readinto(self, b: Any) -> int:
        if not self._fill():
            return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def chunks(self) -> Iterator[bytes]:
        """The rest of the stream in the inflater's own pieces (up to :data:`INFLATE_OUT` bytes each, not
        copied), an error after every good byte before it, as :meth:`readinto` gives them."""
        while self._fill():
            buf, self._buf = self._buf, memoryview(b"")
            whole = buf.obj  # the inflater's bytes (readinto may have taken their start)
            yield whole if isinstance(whole, bytes) and buf.nbytes == len(whole) else bytes(buf)

    def _step(self) -> None:
        data, self._pending = self._pending, b""
        if not data:
            data = self._fh.read(INFLATE_IN)
            if not data:
                self._done = True
                if self._fed:
                    self._err = EOFError("Compressed file ended before the end-of-stream marker was reached")
                return
        if not self._fed:
            stripped = data.lstrip(b"\0")  # zero padding between members (gzip accepts it)
            self._member_start += len(data) - len(stripped)
            data = stripped
            if not data:
                return
            self._fed = True
        try:
            out = self._d.decompress(data, INFLATE_OUT)
        except self._errors as exc:
            self._recover(exc, self._fh.tell())
            return
        self._pending = self._d.unconsumed_tail
        self._member_out += len(out)
        if self._d.eof:  # the member's trailer (CRC, length) checked; the next member starts here
            rest = self._d.unused_data
            self._member_start = self._fh.tell() - len(rest)
            self._pending = rest
            self._d = self._z.decompressobj(31)
            self._member_out = 0
            self._fed = False
        self._buf = memoryview(out)

    def _recover(self, exc: BaseException, end: int) -> None:
        """The current member's bytes after the ``_member_out`` already returned, up to the damage
        (the compressed input before ``end``), then ``exc``."""
        skip, got = self._member_out, []
        limit = INFLATE_IN * 1032 + INFLATE_OUT  # deflate's best ratio bounds what the failed step held
        d = zlib.decompressobj(31)
        with open(self._fh.name, "rb") as fh:
            fh.seek(self._member_start)
            left = end - self._member_start
            try:
                while not d.eof:
                    piece = d.unconsumed_tail
                    if not piece:
                        piece = fh.read(min(RECOVER_STEP, left))
                        left -= len(piece)
                        if not piece:
                            break
                    out = d.decompress(piece, 1 << 16)
                    if skip:
                        cut = min(skip, len(out))
                        skip -= cut
                        out = out[cut:]
                    got.append(out)
                    if sum(map(len, got)) > limit:
                        break
            except zlib.error:
                pass
        self._buf = memoryview(b"".join(got))
        self._err = exc
        self._done = True


#: What damaged compressed data raises while an object is read (an OSError with an errno is not one).
_DAMAGED: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, tarfile.TarError, RuntimeError, _TooMuch,
                                             _Junk, *_ZLIB_ERRORS)


def process_object(path: Path, ref: ob.ObjectRef, cfg: SyncConfig, root: Path) -> ObjectStats:
    """Read one fetched object and write its measurements of the period to the store
    (:func:`process_objects` of one object)."""
    return process_objects([(path, ref)], cfg, root)[0]


def process_objects(items: list[tuple[Path, ob.ObjectRef]], cfg: SyncConfig, root: Path) -> list[ObjectStats]:
    """Read fetched objects and write their measurements of the period to the store: one Parquet
    part per day for the whole batch (a part's fixed cost — ~2 ms to write, ~1.5 ms to read back
    when compacting — is paid once for many small objects: OONI's hourly objects of one country
    hold tens to hundreds of measurements). Measurements are de-duplicated within an object here,
    across objects when the month is compacted.

    Never raises on bad content: a corrupt or truncated compressed stream keeps the rows read
    before the damage and sets that object's ``error``; bad lines are counted ``invalid``, and an
    object mostly made of them is given up (:func:`junk_reason`: ``error`` says so). Writing
    the store may raise (a full disk): then no object of the batch is recorded, and a re-run
    reads them again (the parts already written are replaced or de-duplicated at compaction).
    """
    from analysis.load import row
    from analysis.ooni_store import mkey, table_and_valid, write_part

    since, until = cfg.since.isoformat(), cfg.until.isoformat()
    tests = set(cfg.test_names)
    # rows, mkeys, line hashes and the owning object's index, by measurement day
    by_day: dict[str, tuple[list[Any], list[int], list[str], list[int]]] = {}
    chunks: dict[str, int] = {}
    name = hashlib.sha256("\n".join(f"{ref.key}\0{ref.etag}" for _, ref in items).encode()).hexdigest()[:16]
    all_stats = [ObjectStats(key=ref.key, etag=ref.etag, size=ref.size) for _, ref in items]
    obj_days: list[set[str]] = [set() for _ in items]

    def flush(day: str) -> None:
        rows, keys, shas, owner = by_day.pop(day)
        k = chunks.get(day, 0)
        chunks[day] = k + 1
        table, valid = table_and_valid(rows, keys, shas)
        if valid is not None:  # a start time whose day parses but whose time does not: invalid
            table = table.filter(valid)
            for i, ok in enumerate(valid.to_pylist()):
                if not ok:
                    all_stats[owner[i]].written -= 1
                    r = rows[i]
                    all_stats[owner[i]].bad(r["file"], r["line"], "measurement_start_time "
                                            f"{_quote(r['measurement_start_time'])} is not a date and time")
        write_part(root, dt.date.fromisoformat(day), f"{name}-{k}", table)

    for idx, (path, ref) in enumerate(items):
        stats = all_stats[idx]
        seen: set[int] = set()
        try:
            for fname, pieces in _sources(path, ref, cfg.cc, stats):
                for lineno, raw in _lines(pieces):
                    if stats.invalid > JUNK_SHARE * stats.lines >= JUNK_SHARE * JUNK_MIN_LINES:
                        raise _Junk(junk_reason(stats.lines, stats.invalid))
                    stats.lines += 1
                    if raw is None:
                        stats.bad(fname, lineno, f"longer than {MAX_LINE_BYTES:,} bytes, skipped")
                        continue
                    try:
                        m = _decoder.decode(raw)
                    except msgspec.DecodeError as exc:
                        stats.bad(fname, lineno, f"not JSON ({exc})")
                        continue
                    except RecursionError:  # a line nested thousands deep
                        stats.bad(fname, lineno, "JSON nested too deep")
                        continue
                    if not isinstance(m, dict):
                        stats.bad(fname, lineno, f"not a JSON object ({type(m).__name__})")
                        continue
                    if (test := m.get("test_name")) not in tests:
                        if isinstance(test, str) and test:
                            stats.other_test += 1
                        else:  # no test name: not a measurement of another test, not a measurement at all
                            stats.bad(fname, lineno, f"test_name {_quote(test)} is not a test name")
                        continue
                    if cfg.cc is not None and m.get("probe_cc") != cfg.cc:
                        stats.other_country += 1
                        continue
                    start = m.get("measurement_start_time")
                    day = start[:10] if isinstance(start, str) else ""
                    # the day's text is compared with the period's, so it must be YYYY-MM-DD first
                    # ("2021-1-5 0", "2021-W01-1" are not); a day out of the period is then
                    # read as a date and time (out_of_why) before it is counted out of the period
                    if not (len(day) == 10 and day[4] == "-" == day[7] and since <= day <= until):
                        why = out_of_why(start, day)
                        if why is None:
                            stats.out_of_period += 1
                        else:
                            stats.bad(fname, lineno, f"measurement_start_time {_quote(start)} {why}")
                        continue
                    try:
                        dt.date.fromisoformat(day)
                    except ValueError:
                        stats.bad(fname, lineno, f"measurement_start_time {_quote(start)} is not a date")
                        continue
                    key = mkey(m.get("report_id"), m.get("input"), start)
                    if key in seen:
                        stats.duplicates += 1
                        continue
                    seen.add(key)
                    try:
                        r = row(m, fname, lineno)
                    except (KeyError, TypeError, AttributeError, ValueError) as exc:
                        stats.bad(fname, lineno, f"not a measurement the analysis reads ({type(exc).__name__}: {exc})")
                        continue
                    rows, keys, shas, owner = by_day.setdefault(day, ([], [], [], []))
                    rows.append(r)
                    keys.append(key)
                    end = len(raw)
                    while end and raw[end - 1] in b"\r\n":  # the line without its end, not copied
                        end -= 1
                    shas.append(hashlib.sha256(memoryview(raw)[:end]).hexdigest())
                    owner.append(idx)
                    obj_days[idx].add(day)
                    stats.written += 1
                    if len(rows) >= PART_ROWS:
                        flush(day)
            why = junk_reason(stats.lines, stats.invalid)  # read to its end, but junk all the same
            if why is not None:
                raise _Junk(why)
        except _DAMAGED as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a real I/O error (full disk writing the store …), not bad compressed data
            stats.error = (str(exc) if isinstance(exc, (_Junk, _TooMuch)) else
                           f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    for day in list(by_day):
        flush(day)
    for stats, d in zip(all_stats, obj_days, strict=True):
        stats.days = sorted(d)
    return all_stats


def out_of_why(start: Any, day: str) -> str | None:
    """Why a start time whose day is not in the period is invalid ("is not a date", "is not a date
    and time"), or None when it is a start time the store reads (then the line is out of the
    period). The day must be YYYY-MM-DD (as in the period's text, which it is compared with); the
    whole text must be a start time of :func:`analysis.start_time.parse_start_times` (the store's
    and the report loader's parser), so "2021-13-45 00:00:00", "9999-99-99" or "2021-1-5 00:00:00"
    are invalid lines, not out of the period."""
    if not (isinstance(start, str) and len(day) == 10 and day[4] == "-" == day[7]):
        return "is not a date"
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return "is not a date"
    from analysis.start_time import is_start_time

    return None if is_start_time(start) else "is not a date and time"


def _quote(v: Any) -> str:
    """A value of a bad line, quoted for an example and bounded (its JSON, at most 40 characters)."""
    text = "missing" if v is None else json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


# --------------------------------------------------------------------------- planning


#: Keys listed between two progress notes of one listing (:func:`plan`'s ``note``).
LIST_NOTE_KEYS = 10_000
#: Seconds between two notes of the listing's progress over the period's days.
LIST_NOTE_SECONDS = 5.0


async def plan(client: S3Client, cfg: SyncConfig, result: SyncResult,
               note: Callable[[str], None] | None = None) -> list[ob.ObjectRef]:
    """The objects that may hold the period's measurements (see the module docstring).

    The upload days are listed :data:`analysis.ooni_bucket.LIST_DAY_BATCH` at a time (a task per day
    and prefix for the whole period at once froze a sync of 1900–2100 at 1.5 GB, deaf to SIGTERM:
    break test F5); a listing past :func:`analysis.ooni_bucket.max_keys` keys stops the sync with an
    :class:`S3Error` naming the prefix (F1). ``note`` gets a line of progress now and then."""
    sem = asyncio.Semaphore(max(1, cfg.concurrency))
    days = ob.upload_days(cfg.since, cfg.until, cfg.margin_before, cfg.margin_after)
    wanted_tests = {ob.bucket_testname(t) for t in cfg.test_names}

    async def listing(prefix: str) -> list[ob.ObjectRef]:
        async with sem:
            out = []
            limit = ob.max_keys(prefix)
            n = 0
            async for o in client.list(prefix):
                if isinstance(o, S3Object):
                    n += 1
                    if n > limit:
                        raise S3Error(f"listing {prefix!r} at {client.url()}: more than {limit:,} keys under one "
                                      "prefix, far more than OONI's bucket holds there (an endless or hostile "
                                      "listing): stopped")
                    if note is not None and n % LIST_NOTE_KEYS == 0:
                        note(f"listing {prefix}: {n:,} keys so far")
                    ref = ob.parse_key(o.key, o.size, o.etag)
                    if cfg.cc is None and ref is not None and ref.cc is not None:
                        ok = ref.testname in wanted_tests
                    else:
                        ok = ob.wanted(ref, cfg.cc or "", cfg.test_names)
                    if ok and ref is not None:
                        out.append(ref)
            return out

    async def countries() -> list[str]:
        ccs: set[str] = set()
        for t in cfg.test_names:
            async for p in client.list(f"jsonl/{ob.bucket_testname(t)}/", delimiter="/"):
                if isinstance(p, str):
                    ccs.add(p.rstrip("/").rsplit("/", 1)[-1])
                    if len(ccs) > ob.MAX_KEYS_PER_PREFIX:
                        raise S3Error(f"listing 'jsonl/{ob.bucket_testname(t)}/' at {client.url()}: more than "
                                      f"{ob.MAX_KEYS_PER_PREFIX:,} countries: stopped")
        return sorted(ccs)

    ccs = [cfg.cc] if cfg.cc else (await countries() if any(d <= ob.JSONL_END for d in days) else [])

    async def one_day(day: dt.date) -> list[ob.ObjectRef]:
        prefixes = ob.day_prefixes(day, cfg.cc, cfg.test_names, jsonl_ccs=ccs)
        refs = [r for g in await asyncio.gather(*(listing(p) for p in prefixes)) for r in g]
        if cfg.use_cans and day <= ob.CAN_END and not any(r.layout == "jsonl" for r in refs):
            cans: list[ob.ObjectRef] = []
            for p in ob.can_prefixes(day):
                cans = await listing(p)
                if cans:
                    break
            if cans:
                result.can_days.append(day.isoformat())
            refs += cans
        return refs

    refs: list[ob.ObjectRef] = []
    last_note = time.monotonic()
    for i in range(0, len(days), ob.LIST_DAY_BATCH):
        try:
            async with asyncio.TaskGroup() as tg:  # a failed listing cancels the batch's others
                tasks = [tg.create_task(one_day(d)) for d in days[i:i + ob.LIST_DAY_BATCH]]
        except BaseExceptionGroup as eg:  # the first error as itself (the CLI's exit code reads its type)
            raise eg.exceptions[0] from None
        refs += [r for t in tasks for r in t.result()]
        if note is not None and time.monotonic() - last_note >= LIST_NOTE_SECONDS:
            last_note = time.monotonic()
            note(f"listed {min(i + ob.LIST_DAY_BATCH, len(days)):,} of {len(days):,} upload days, "
                 f"{len(refs):,} objects so far")
    kept, dropped = ob.drop_duplicate_families(refs)
    result.duplicate_family = len(dropped)
    result.can_days.sort()
    return kept


# --------------------------------------------------------------------------- the sync


def _free_bytes(p: Path) -> int | None:
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def estimate_text(result: SyncResult, todo_bytes: int, todo: int, free: int | None, keep_raw: bool) -> str:
    """The size estimate shown before fetching."""
    gb = todo_bytes / 1e9
    msg = (f"{result.planned:,} objects ({result.planned_bytes / 1e9:,.2f} GB) in the period; "
           f"{result.already:,} already synced; to fetch: {todo:,} objects, {gb:,.2f} GB compressed"
           + (f"; {result.duplicate_family} .x. duplicates of .l. files skipped" if result.duplicate_family else "")
           + (f"; cans for {len(result.can_days)} day(s) without JSONL files" if result.can_days else ""))
    if free is not None:
        need = todo_bytes if keep_raw else todo_bytes // 3
        msg += f"; about {need / 1e9:,.2f} GB of disk needed, {free / 1e9:,.1f} GB free"
        if free < need:
            msg += " (NOT ENOUGH: the sync will stop when the disk is full; what it synced is kept)"
    return msg


def _executor(cfg: SyncConfig) -> Executor | None:
    workers = cfg.workers
    if workers is None:
        try:
            workers = max(1, min(len(os.sched_getaffinity(0)), 8))
        except AttributeError:  # pragma: no cover
            workers = max(1, min(os.cpu_count() or 1, 8))
    if workers <= 0:
        return None
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    # the judging modules (pandas, pyarrow, the verdict) imported once in the fork server, not in every
    # worker (~0.7 s CPU each); no effect when this process' fork server already runs
    ctx.set_forkserver_preload(["__main__", *_PRELOAD])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_warm, initargs=(os.getpid(),))


#: Imported once in the fork server (after ``__main__``); ``analysis.ooni_forkserver_guard`` first (it dies with
#: this process: a SIGKILL of the sync left it and its workers running, break test F3);
#: ``analysis.ooni_warmed`` also builds the judge's databases there (~0.15 CPU-s that each worker paid in
#: its initializer: with two workers, one build instead of two).
_PRELOAD = ("analysis.ooni_forkserver_guard", "analysis.load", "analysis.ooni", "analysis.ooni_store",
            "analysis.ooni_warmed")


def _warm(owner: int | None = None) -> None:
    """A worker's initializer: it dies with its parent (the fork server; Linux's PR_SET_PDEATHSIG) and,
    everywhere, once the sync's process ``owner`` is gone (:mod:`analysis.parent_death`); then the judge."""
    from analysis.ooni import warm
    from analysis.parent_death import die_with_parent, watch_parent

    die_with_parent()
    watch_parent(owner)
    warm()


def batches(refs: list[ob.ObjectRef], max_bytes: int = BATCH_BYTES,
            max_objects: int = BATCH_OBJECTS) -> list[list[ob.ObjectRef]]:
    """``refs`` in order, cut into runs of at most ``max_objects`` objects and about ``max_bytes``
    compressed bytes (an object bigger than that is a batch by itself): a worker reads a batch at
    once and writes one part per day for it."""
    out: list[list[ob.ObjectRef]] = []
    size = 0
    for r in refs:
        if not out or len(out[-1]) >= max_objects or size + r.size > max_bytes:
            out.append([])
            size = 0
        out[-1].append(r)
        size += r.size
    return out


def _workers(executor: Executor | None) -> int:
    return max(1, int(getattr(executor, "_max_workers", 1) or 1)) if executor is not None else 1


async def fetch_and_store(client: S3Client, refs: list[ob.ObjectRef], cfg: SyncConfig, result: SyncResult,
                          executor: Executor | None, progress: Callable[[str, int], None] | None = None) -> set[str]:
    """Download ``refs`` (bounded), process them by :func:`batches` in ``executor`` (None: in this
    thread), record each object in the manifest once its batch's parts are written. At most a
    batch per worker and one more are in flight (downloading or being read): the partial files on
    disk stay bounded. Returns the days written."""
    from analysis.store_layout import store_root

    out = cfg.out
    root = store_root(out)
    partial = out / PARTIAL_DIR
    sem = asyncio.Semaphore(max(1, cfg.concurrency))
    in_flight = asyncio.Semaphore(_workers(executor) + 1)
    loop = asyncio.get_running_loop()
    touched: set[str] = set()
    fatal: list[BaseException] = []

    in_a_row = [0]  # objects failed after every retry since the last one fetched

    async def fetch(ref: ob.ObjectRef) -> Path | None:
        if fatal:
            return None
        async with sem:
            if fatal:
                return None
            if result.gave_up:
                result.not_tried += 1
                return None
            dest = partial / partial_name(ref.key)
            try:
                await client.download(S3Object(key=ref.key, size=ref.size, etag=ref.etag), dest,
                                      on_bytes=(lambda n: progress("bytes", n)) if progress else None,
                                      durable=cfg.keep_raw)  # a .partial/ copy is read once and removed
            except DiskFullError as exc:
                fatal.append(exc)
                return None
            except S3Error as exc:
                result.failed.append(str(exc))
                log.warning("%s", exc)
                if isinstance(exc, S3RetriesExhaustedError):
                    # a 5xx storm: each object retried on its own took 54 s for 24 objects, growing with
                    # their number (break test F16); a client backs off as a whole (a circuit breaker)
                    in_a_row[0] += 1
                    if in_a_row[0] >= cfg.max_failed_in_a_row and not result.gave_up:
                        result.gave_up = (f"the bucket failed {in_a_row[0]} objects in a row, each after "
                                          f"{client.retry.attempts} tries (last: {exc})")
                        log.warning("%s: the sync stops fetching", result.gave_up)
                return None
            in_a_row[0] = 0
            return dest

    async def batch(group: list[ob.ObjectRef]) -> None:
        todo = []
        for ref in group:
            if ref.size > cfg.max_object_bytes:
                result.too_big.append(ref.key)
            else:
                todo.append(ref)
        if not todo:
            return
        async with in_flight:
            dests = await asyncio.gather(*(fetch(r) for r in todo))
            items = [(d, r) for d, r in zip(dests, todo, strict=True) if d is not None]
            try:
                if not items:  # (after a full disk mid-batch, what was fetched is still stored if it fits)
                    return
                if executor is None:
                    stats = process_objects(items, cfg, root)
                else:
                    stats = await loop.run_in_executor(executor, process_objects, items, cfg, root)
                if cfg.keep_raw:
                    for dest, ref in items:
                        keep_raw(dest, out / RAW_DIR / ref.key, ref.key, result)
                _append_manifest(out, stats)
                for (_, ref), st in zip(items, stats, strict=True):
                    account(ref, st)
            except DiskFullError as exc:
                fatal.append(exc)
                return
            except OSError as exc:
                if is_disk_full(exc):
                    fatal.append(DiskFullError(disk_full_message(root)))
                    return
                raise
            finally:
                for d, _ in items:
                    d.unlink(missing_ok=True)

    def account(ref: ob.ObjectRef, st: ObjectStats) -> None:
        result.fetched += 1
        result.fetched_bytes += ref.size
        result.lines += st.lines
        result.kept += st.written
        result.out_of_period += st.out_of_period
        result.invalid += st.invalid
        add_examples(result, st.invalid_examples)
        result.duplicates += st.duplicates
        if st.error:
            result.corrupt.append(f"{ref.key}: {st.error} (kept the {st.written} measurements before it)")
        touched.update(st.days)
        if progress:
            progress("object", 1)
            progress("measurements", st.written)

    try:
        await asyncio.gather(*(batch(g) for g in batches(refs)))
    finally:
        _prune_empty_dirs(partial)
    if fatal:
        raise fatal[0]
    return touched


def keep_raw(dest: Path, keep: Path, key: str, result: SyncResult) -> None:
    """Move a fetched object to ``keep`` (``OUT/raw/<key>``). A path the file system refuses (a part of
    the key longer than a file name may be, Errno 36: break test F4) keeps the object's measurements and
    names the key in ``result.corrupt``; a full disk is raised."""
    try:
        keep.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dest, keep)
    except OSError as exc:
        if is_disk_full(exc):
            raise
        msg = f"{key}: stored, but its raw copy could not be kept ({exc.strerror or exc}, errno {exc.errno})"
        log.warning("%s", msg)
        result.corrupt.append(msg)


def add_examples(result: SyncResult, examples: list[str]) -> None:
    """Keep ``examples`` of invalid lines in ``result`` up to :data:`MAX_SYNC_INVALID_EXAMPLES`."""
    room = MAX_SYNC_INVALID_EXAMPLES - len(result.invalid_examples)
    if room > 0:
        result.invalid_examples += examples[:room]


def invalid_lines_text(result: SyncResult) -> list[str]:
    """The sync summary's lines naming invalid lines: the examples kept, then how many more."""
    out = [f"invalid line: {e}" for e in result.invalid_examples]
    if result.invalid > len(result.invalid_examples):
        out.append(f"… {result.invalid - len(result.invalid_examples):,} more invalid line(s) not shown (the first "
                   f"{MAX_INVALID_EXAMPLES} of each object are in {MANIFEST}: invalid_examples)")
    return out


def partial_name(key: str) -> str:
    """The file name of an object's download under ``OUT/.partial/``: flat (a digest of the key and
    its last part), not the key's own directories: creating ``raw/<day>/<HH>/<CC>/<test>/`` for each
    object and pruning it afterwards cost ~1.5 ms of the main process's CPU an object (mkdir and
    rmdir on this disk; ~18 µs a measurement at 83 an object, ``python -m bench.ooni_sync``). Bounded: at
    most the last :data:`PARTIAL_TAIL` characters of the name (a key's last part of 300 characters made a
    name the file system refused, Errno 36, and crashed the whole sync: break test F4)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return f"{digest}-{key.rsplit('/', 1)[-1][-PARTIAL_TAIL:]}"


def _prune_empty_dirs(top: Path) -> None:
    """Remove ``top`` and the directories under it that hold no file (the ``.partial/raw/<day>/…``
    left once each object's partial copy is removed); a directory with a file in it is kept."""
    if not top.is_dir() or top.is_symlink():
        return
    for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):  # deepest first
        with contextlib.suppress(OSError):  # not empty (a file), or gone
            os.rmdir(d)


def compact(cfg: SyncConfig, days: set[str] | None = None, executor: Executor | None = None) -> tuple[int, int]:
    """Compact the months of the given days (None: every month; :func:`analysis.ooni_store.compact_month`)
    and rewrite coverage.csv. Returns (rows in the months compacted, duplicates dropped).
    ``executor``: the months compacted in its processes at once (one month a task: both cores, where
    this process alone used one for the sync's last stage), else one after another here."""
    from analysis.store_layout import months, store_root

    root = store_root(cfg.out)
    rows = dups = 0
    todo = sorted({d[:7] for d in days} if days is not None else months(root))
    # in the workers even for one month, and the coverage too: this process then never imports pandas
    # and pyarrow (~0.5–0.7 CPU-s of a sync's fixed cost), which the workers have already
    done = executor.map(_compact_month, [root] * len(todo), todo) if executor is not None else (
        _compact_month(root, m) for m in todo)
    for k, x in done:
        rows += k
        dups += x
    if root.exists():
        if executor is not None:
            executor.submit(_write_coverage, root, cfg.out / "coverage.csv").result()
        else:
            _write_coverage(root, cfg.out / "coverage.csv")
    return rows, dups


def _compact_month(root: Path, month: str) -> tuple[int, int]:
    from analysis.ooni_store import compact_month

    return compact_month(root, month)


def _write_coverage(root: Path, path: Path) -> None:
    from analysis.outages import write_store_coverage

    write_store_coverage(root, path)


async def sync_async(cfg: SyncConfig, *, on_estimate: Callable[[str], None] | None = None,
                     progress: Any = None, session: Any = None,
                     on_note: Callable[[str], None] | None = None) -> SyncResult:
    """Run a sync (see the module docstring). ``progress``: a rich Progress or None; ``on_note``: the
    listing's progress lines (:func:`plan`).

    Raises:
        SyncBusyError: another sync holds ``OUT/.lock``.
        DiskFullError: the disk filled up (what was recorded is kept).
        S3Error: the bucket could not be listed.
    """
    with _locked(cfg.out):
        return await _sync_async(cfg, on_estimate=on_estimate, progress=progress, session=session, on_note=on_note)


async def _sync_async(cfg: SyncConfig, *, on_estimate: Callable[[str], None] | None = None,
                      progress: Any = None, session: Any = None,
                      on_note: Callable[[str], None] | None = None) -> SyncResult:
    import aiohttp

    t0 = time.monotonic()
    result = SyncResult()
    cfg.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cfg.out / PARTIAL_DIR, ignore_errors=True)  # an interrupted run's partial downloads
    own = session is None
    if own:
        session = aiohttp.ClientSession(headers={"User-Agent": "kzprobe-ooni-sync"}, auto_decompress=False)
    try:
        client = S3Client(cfg.endpoint, cfg.bucket, session, cfg.retry)
        refs = await plan(client, cfg, result, on_note)
        done = manifest_done(cfg.out)
        result.planned = len(refs)
        result.planned_bytes = sum(r.size for r in refs)
        todo = [r for r in refs if done.get(r.key) != r.etag]
        result.already = len(refs) - len(todo)
        todo_bytes = sum(r.size for r in todo)
        if on_estimate:
            on_estimate(estimate_text(result, todo_bytes, len(todo), _free_bytes(cfg.out), cfg.keep_raw))
        cb = None
        if progress is not None:
            task = progress.add_task("sync", total=todo_bytes, objects=0, measurements=0)
            counts = {"object": 0, "measurements": 0}

            def cb(kind: str, n: int) -> None:
                if kind == "bytes":
                    progress.advance(task, n)
                else:
                    counts[kind] += n
                    progress.update(task, objects=counts["object"], measurements=counts["measurements"])
        from analysis.store_layout import days as store_days
        from analysis.store_layout import store_root

        executor = _executor(cfg)
        try:
            touched = await fetch_and_store(client, todo, cfg, result, executor, cb)
            result.retries = client.retries
            # days touched now, and any left uncompacted by an interrupted run (they still have parts)
            root = store_root(cfg.out)
            pending = {d.isoformat() for d in store_days(root) if any((root / f"day={d}").glob("part-*.parquet"))}
            rows, dups = await loop_run(compact, cfg, touched | pending, executor)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
    finally:
        if own:
            await session.close()
    result.duplicates += dups
    result.compaction_dropped = dups
    result.stored = rows
    result.seconds = time.monotonic() - t0
    return result


async def loop_run(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a thread: the event loop (and the session it holds) stays responsive."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def sync(cfg: SyncConfig, **kw: Any) -> SyncResult:
    """:func:`sync_async` from synchronous code."""
    return asyncio.run(sync_async(cfg, **kw))


# --------------------------------------------------------------------------- Dask: one task per day and prefix


def _sync_group(cfg: SyncConfig, refs: list[ob.ObjectRef]) -> dict[str, Any]:
    """A Dask task: fetch and store one group of objects (one upload day and prefix), in-process."""
    result = SyncResult()

    async def go() -> set[str]:
        import aiohttp

        async with aiohttp.ClientSession(auto_decompress=False) as s:
            client = S3Client(cfg.endpoint, cfg.bucket, s, cfg.retry)
            return await fetch_and_store(client, refs, replace(cfg, concurrency=2), result, None)

    touched = asyncio.run(go())
    return {"days": sorted(touched), "result": asdict(result)}


def _compact_task(cfg: SyncConfig, month: str) -> tuple[int, int]:
    from analysis.ooni_store import compact_month, store_root

    return compact_month(store_root(cfg.out), month)


def group_key(ref: ob.ObjectRef) -> tuple[str, str]:
    """(upload day, prefix): the unit of work of the Dask sync (``raw/<day>/<HH>/<CC>/<test>/`` or
    ``jsonl/<test>/<CC>/<day>/``, a can by itself)."""
    if ref.layout == "can":
        return ref.day.isoformat(), ref.key
    return ref.day.isoformat(), ref.key.rsplit("/", 1)[0] + "/"


def sync_dask(cfg: SyncConfig, client: Any) -> SyncResult:
    """The same sync with every (upload day, prefix) group a Dask task on ``client`` (a
    ``distributed.Client``), then one compaction task per measurement month. The manifest is
    written by the tasks as in :func:`sync` (each line appended whole, so concurrent
    writers do not tear each other's lines)."""
    with _locked(cfg.out):
        return _sync_dask(cfg, client)


def _sync_dask(cfg: SyncConfig, client: Any) -> SyncResult:
    import aiohttp

    t0 = time.monotonic()
    result = SyncResult()
    cfg.out.mkdir(parents=True, exist_ok=True)

    async def listing() -> list[ob.ObjectRef]:
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            return await plan(S3Client(cfg.endpoint, cfg.bucket, s, cfg.retry), cfg, result)

    refs = asyncio.run(listing())
    done = manifest_done(cfg.out)
    result.planned, result.planned_bytes = len(refs), sum(r.size for r in refs)
    todo = [r for r in refs if done.get(r.key) != r.etag]
    result.already = len(refs) - len(todo)
    groups: dict[tuple[str, str], list[ob.ObjectRef]] = {}
    for r in todo:
        groups.setdefault(group_key(r), []).append(r)
    futures = client.map(_sync_group, [cfg] * len(groups), list(groups.values()), pure=False)
    days: set[str] = set()
    for out in client.gather(futures):
        days.update(out["days"])
        r = out["result"]
        for k in ("fetched", "fetched_bytes", "lines", "kept", "out_of_period", "invalid", "duplicates"):
            setattr(result, k, getattr(result, k) + r[k])
        add_examples(result, r["invalid_examples"])
        result.failed += r["failed"]
        result.not_tried += r["not_tried"]
        result.gave_up = result.gave_up or r["gave_up"]
        result.corrupt += r["corrupt"]
        result.too_big += r["too_big"]
    todo_months = sorted({d[:7] for d in days})  # one compaction task per measurement month
    for k, x in client.gather(client.map(_compact_task, [cfg] * len(todo_months), todo_months, pure=False)):
        result.stored += k
        result.duplicates += x
        result.compaction_dropped += x
    from analysis.ooni_store import store_root
    from analysis.outages import write_store_coverage

    root = store_root(cfg.out)
    if root.exists():
        write_store_coverage(root, cfg.out / "coverage.csv")
    result.seconds = time.monotonic() - t0
    return result
