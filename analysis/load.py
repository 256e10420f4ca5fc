"""Measurements (ours and OONI's) → one pandas DataFrame, a row per measurement.

Input: files or directories (searched recursively for ``*.jsonl``, ``*.json``,
``*.jsonl.gz``, ``*.json.gz``). A file may hold JSONL (one measurement per line — our
format, and OONI's bulk dumps), a single JSON object (pretty-printed or not, OONI's
API and test fixtures) or a JSON array of objects; any of them gzipped.

The columns and their dtypes are the contract agreed between the analysis modules
(see :data:`COLUMNS`, :data:`DTYPES` and :func:`empty_frame`): categoricals for closed
vocabularies and for file/ASN/CC/test name, pyarrow-backed strings (``string[pyarrow]``)
for text, UTC timestamps.

Speed and memory (``python -m bench.analysis`` prints the figures): our own records
have a fixed shape — :mod:`probe.schema`, the schema the probe writes — so JSONL blocks of
:data:`BLOCK_BYTES` are decoded by ``msgspec`` into a view of that schema holding only the
fields a row needs (:data:`ROW_VIEW`; the DNS replies, stored bodies and control details
are skipped without building Python objects), with the cyclic GC paused. Records of every
kzprobe version load: since 1.0.0-kzprobe our verdict is in ``x_blocking``/``x_accessible``
(``blocking``/``accessible`` hold OONI's words), in 0.1.0's it is in ``blocking``. Only
the column values are kept; every :data:`CHUNK_ROWS` rows they become a typed chunk (pyarrow strings), so 1M measurements (7 GB of JSONL) make a frame of
~460 MB and a peak RSS near 1 GB, not the GBs of parsed dicts. From
:data:`PARALLEL_MIN_BYTES` of input, worker processes share the files out and split big
JSONL files into line-aligned ranges (line numbers stay those of the file). OONI's
records, of every shape and version, take the general path (``json`` + dicts +
:func:`analysis.ooni.recompute`), ~1 ms each.

Bad input is never fatal: a torn last line (a run killed mid-write, see
:mod:`probe.store`) is counted as ``torn``, any other line that is not a JSON object as
``invalid``, a file that cannot be read as an ``error``; each is named ``file:line``
in :attr:`LoadStats.errors`. Measurements of other tests (``test_name`` not
``web_connectivity``) are counted as ``skipped``, except OONI's messaging-app and
circumvention tests (:data:`APP_TESTS`: telegram, whatsapp, signal, facebook_messenger, tor,
psiphon, riseupvpn, torsf, vanilla_tor), loaded with their own verdict (:func:`app_row`).

Bounded memory on hostile input: no JSONL line longer than :data:`MAX_LINE_BYTES` is held
(it is counted ``invalid``, "line longer than N bytes, skipped"), no whole JSON document
bigger than :data:`WHOLE_MAX_BYTES`; a gzip bomb of one endless line costs O(the cap). A
measurement whose ``measurement_start_time`` is missing or not a date is ``invalid`` (it
cannot be placed in any claim's period); a ``.gz`` file that is not gzip, or whose
compressed data is corrupt, is named "not gzip / corrupt compressed file".

Bounded time on hostile input: a line nested deeper than :data:`MAX_DEPTH` levels is
``invalid`` before any parser recurses into it; blank lines are counted (``blank``) in bulk;
a ``.gz`` file is read to at most :func:`analysis.decompress_bound.decompressed_cap` (200× its
size, at least 256 MiB, as ``kzprobe ooni sync`` reads an object; a 2 MB gzip of newlines is
2 GB), the rest named and skipped. Every count is also kept per file
(:attr:`LoadStats.by_file`).

The same measurement given twice (``--in A --in A``, overlapping copies) is counted once:
:func:`load` drops the later copies (:func:`drop_duplicates`, by measurement id) and counts
them (``duplicates``).

Columns beyond OONI's words: ``lab_scenario`` (``annotations.lab_scenario``: a simulated
lab measurement, see :mod:`analysis.scope`), ``vantage_offline`` (rule ``vantage.offline``)
and ``control_intercepted`` (bool: the vantage point's control channel's TLS was
intercepted — ``test_keys.x_vantage.control_intercepted_by``, rule ``vantage.intercepted``, or the run's
``<report_id>.summary.json`` with ``control_intercepted_by``, see
:func:`control_intercepted` and :func:`mark_intercepted_runs`; always False for OONI rows).

Verdicts: our rows carry the probe's own (``test_keys.blocking``, ``x_rule``,
``x_reason``). OONI rows are judged again by :func:`analysis.ooni.recompute` (the
probe's own :func:`probe.verdict.judge` on OONI's raw test_keys and control) where the
data allows, else OONI's own ``blocking`` is used (``verdict_source`` says which);
OONI's own verdict is always kept in ``ooni_blocking``/``ooni_accessible``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import gzip
import hashlib
import io
import json
import logging
import operator
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa

from analysis import decompress_bound as db
from analysis.columns import as_text, codes_and_labels, isin_mask, sorted_codes, value_mask  # noqa: F401 (re-exported)
from analysis.ooni_apps import APP_TESTS as _APP_TESTS
from analysis.start_time import start_times
from probe import schema, vocab
from probe.bounded import file_kind
from probe.errors import KzprobeError
from probe.vocab import Rule


def _arrow_memory_pool() -> None:
    """Arrow's buffers from the C library's allocator, not its bundled mimalloc (unless
    ``ARROW_DEFAULT_MEMORY_POOL`` says otherwise). Measured on the 2-core bench machine, the 1M-row
    report from the synced store (python -m bench.analysis): mimalloc spent ~5 s of *system* CPU
    in page faults reading the store's 394 day files (fresh memory faulted in again and again), the whole report 25.7 → 16.3 CPU-s with the system pool, the rows read
    7.3 → 2.1 CPU-s (the frame is the same: only where its buffers live changes)."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())


_arrow_memory_pool()

log = logging.getLogger("kzprobe.analysis.load")

#: Blocking values and outcomes: :mod:`probe.vocab` (``False`` is stored as the string
#: ``"false"``, ``None`` as NA).
BLOCKING_VALUES = vocab.BLOCKING_VALUES
OUTCOMES = vocab.OUTCOMES
SOURCES = ("kzprobe", "ooni")
VERDICT_SOURCES = ("kzprobe", "recomputed", "ooni")
#: The test whose measurements are loaded and judged again; others are counted as skipped, except
#: OONI's messaging-app and circumvention tests (:data:`APP_TESTS`), loaded with their own verdict.
WEB_TEST = "web_connectivity"
APP_TESTS = _APP_TESTS

STRING = pd.StringDtype("pyarrow")
BLOCKING_DTYPE = pd.CategoricalDtype(list(BLOCKING_VALUES))
OUTCOME_DTYPE = pd.CategoricalDtype(list(OUTCOMES))
SOURCE_DTYPE = pd.CategoricalDtype(list(SOURCES))
VERDICT_SOURCE_DTYPE = pd.CategoricalDtype(list(VERDICT_SOURCES))
TIME_DTYPE = pd.DatetimeTZDtype("ns", "UTC")

#: column → dtype, in frame order (the contract's table). "category" = open vocabulary.
DTYPES: dict[str, Any] = {
    "source": SOURCE_DTYPE,
    "measurement_uid": STRING,
    "report_id": STRING,
    "file": "category",
    "line": "int32",
    "test_name": "category",
    "data_format_version": STRING,
    "input": STRING,
    "domain": STRING,
    "measurement_start_time": TIME_DTYPE,
    "probe_asn": "category",
    "probe_cc": "category",
    "probe_network_name": STRING,
    "vantage_id": STRING,
    "lab_scenario": STRING,
    "blocking": BLOCKING_DTYPE,
    "accessible": "boolean",
    "outcome": OUTCOME_DTYPE,
    "verdict_source": VERDICT_SOURCE_DTYPE,
    "ooni_blocking": BLOCKING_DTYPE,
    "ooni_accessible": "boolean",
    "rule": STRING,
    "reason": STRING,
    "dns_failure": STRING,
    "tcp_failure": STRING,
    "tls_failure": STRING,
    "http_failure": STRING,
    "control_failure": STRING,
    "mitm_root": STRING,
    "tls_issuers": STRING,
    "vantage_offline": "boolean",
    "control_intercepted": "boolean",
    "body_length": "Int64",
}
#: The frame's columns, in order.
COLUMNS: tuple[str, ...] = tuple(DTYPES)
#: Rows per typed chunk while loading (bounds the Python objects alive at once).
CHUNK_ROWS = 50_000

_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
#: Files of the synced OONI store (``kzprobe ooni sync``: ``…/day=YYYY-MM-DD/*.parquet``, analysis.ooni_store).
_STORE_SUFFIX = ".parquet"


class LoadError(KzprobeError, ValueError):
    """A path given to :func:`load` does not exist or is not a measurement file."""


#: The counts :class:`LoadStats` keeps per file as well as in all.
PER_FILE = ("lines", "loaded", "torn", "invalid", "skipped", "blank", "duplicates")
#: Problems of a file logged one by one (file:line and why); the rest are counted in one line.
LOG_EXAMPLES = 3
#: Files whose problems are logged (each: its examples and count); the others are summed in one line.
LOG_FILES = 10


@dataclass
class LoadStats:
    """What loading saw.

    Attributes:
        files: files read (or attempted).
        lines: JSONL lines read (for array/object files: the elements).
        loaded: measurements that became rows.
        torn: torn last lines (no newline at the end, does not parse: an interrupted write).
        invalid: other lines/elements that are not a JSON object, or a measurement without
            the keys a row needs.
        skipped: measurements of other tests (``test_name`` not web_connectivity).
        blank: blank lines (JSONL; not in ``lines``).
        duplicates: measurements dropped because an earlier one (in file and line order) has
            the same id (see :func:`drop_duplicates`); not in ``loaded``.
        by_file: per file, its own counts (:data:`PER_FILE` keys): where the problems are.
        errors: one message per torn/invalid line or unreadable file, ``"file:line: why"``.
            At most :attr:`max_errors` are kept; the counts are always complete.

    :meth:`finish` logs the problems once per file, not once per line: its first
    :data:`LOG_EXAMPLES` problems (file:line and why), then one line counting the rest; past
    :data:`LOG_FILES` files, one line for the other files.
    """

    files: int = 0
    lines: int = 0
    loaded: int = 0
    torn: int = 0
    invalid: int = 0
    skipped: int = 0
    blank: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    max_errors: int = 1000
    by_file: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (file, line, message) not yet formatted into ``errors`` (line 0 = the whole file): the first
    #: :attr:`max_errors`, and the first :data:`LOG_EXAMPLES` of each of the first :data:`LOG_FILES`
    #: files with problems beyond them (the log names every file's first lines)
    located: list[tuple[str, int, str]] = field(default_factory=list, repr=False)
    #: file → its problems recorded since the last :meth:`finish` (all of them, not only those in ``located``)
    unlogged: dict[str, int] = field(default_factory=dict, repr=False)

    def error_at(self, file: str, line: int, msg: str) -> None:
        """Record a problem at ``file:line`` (line 0: the file as a whole)."""
        rank = self.unlogged.get(file, 0)
        self.unlogged[file] = rank + 1
        self._keep(file, line, msg, rank)

    def _keep(self, file: str, line: int, msg: str, rank: int) -> None:
        """Keep the problem ``rank`` (from 0) of ``file`` in :attr:`located` when there is room, or when
        it is one of the file's first :data:`LOG_EXAMPLES` and the file one of the first :data:`LOG_FILES`."""
        if len(self.located) < self.max_errors or (rank < LOG_EXAMPLES and len(self.unlogged) <= LOG_FILES):
            self.located.append((file, line, msg))

    def counts(self) -> tuple[int, ...]:
        """The :data:`PER_FILE` counts, in that order (to take a file's share as a difference)."""
        return tuple(getattr(self, k) for k in PER_FILE)

    def add_file(self, file: str, **counts: int) -> None:
        """Add ``counts`` (:data:`PER_FILE` keys) to ``file``'s own counts."""
        mine = self.by_file.setdefault(file, dict.fromkeys(PER_FILE, 0))
        for k, v in counts.items():
            mine[k] += v

    def finish(self) -> LoadStats:
        """Format the recorded problems into :attr:`errors` and log them, once per file: its first
        :data:`LOG_EXAMPLES` problems, then ``"FILE: N more invalid lines not shown (M in all)"``; the
        files past the first :data:`LOG_FILES` with problems in one line. Returns self.

        A flood of bad lines is a few lines on stderr (a binary file given as measurements logged
        a WARNING per line, up to 1,000; under Dask 1,000 per file); the report's data-quality
        section has the counts per file and the first :attr:`max_errors` problems."""
        examples: dict[str, list[str]] = {}
        for f, ln, msg in self.located:
            text = f"{f}:{ln}: {msg}" if ln else f"{f}: {msg}"
            if len(self.errors) < self.max_errors:
                self.errors.append(text)
            shown = examples.setdefault(f, [])
            if len(shown) < LOG_EXAMPLES:
                shown.append(text)
        files = list(self.unlogged.items())
        for f, n in files[:LOG_FILES]:
            shown = examples.get(f, [])
            for text in shown:
                log.warning("%s", text)
            if n > len(shown):
                more = n - len(shown)
                log.warning("%s: %s more invalid line%s not shown (%s in all)", f, f"{more:,}",
                            "" if more == 1 else "s", f"{n:,}")
        if len(files) > LOG_FILES:
            rest = files[LOG_FILES:]
            log.warning("%d more file%s with invalid lines not shown (%s invalid lines in them)", len(rest),
                        "" if len(rest) == 1 else "s", f"{sum(n for _, n in rest):,}")
        self.located.clear()
        self.unlogged.clear()
        return self

    def merge(self, other: LoadStats, *, line_offset: int = 0) -> None:
        """Add ``other``'s counts and recorded problems (their lines shifted by ``line_offset``)."""
        for k in ("files", *PER_FILE):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for f, c in other.by_file.items():
            self.add_file(f, **c)
        # other's problems of a file follow self's: its k-th kept one is the file's (self's count + k)-th
        before: dict[str, int] = {}
        for f, ln, msg in other.located:
            if f not in before:
                before[f] = self.unlogged.setdefault(f, 0)
            self._keep(f, ln + line_offset if ln else 0, msg, before[f])
            before[f] += 1
        for f, n in other.unlogged.items():
            self.unlogged[f] = self.unlogged.get(f, 0) + n
        for e in other.errors:
            if len(self.errors) < self.max_errors:
                self.errors.append(e)


@dataclass(frozen=True)
class LoadResult:
    """:func:`load`'s answer: the frame (columns :data:`COLUMNS`) and what was seen."""

    frame: pd.DataFrame
    stats: LoadStats


def empty_frame() -> pd.DataFrame:
    """A frame with no rows and the contract's columns and dtypes (Dask's ``meta``)."""
    return _typed({c: [] for c in COLUMNS}, finalize=True)


# --------------------------------------------------------------------------- files


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """The measurement files under ``paths`` (files as given; directories recursively, of an ``ooni
    sync`` output inside one only its ``store/``: :func:`_in_store_if_synced`, :func:`_sync_bookkeeping`),
    sorted.

    A path that exists but is neither a directory nor a regular file (a FIFO, a device, a socket,
    or a symlink to one) is left out, never opened (a FIFO blocks, /dev/zero never ends):
    :func:`refused_input` says why, :func:`load` counts and names it. Symlinks are followed to
    regular files only (in a directory too).

    Raises:
        LoadError: a path does not exist (names it; a dangling symlink says so).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file()]
            # only the store/ of a sync output inside p (a store/ beside a manifest.jsonl): its raw/
            # (--keep-raw: every measurement again, margin days too) and .partial/ (a killed sync's
            # truncated downloads) are not measurements of the report
            stores = [m.parent / "store" for m in found if m.name == _SYNC_MANIFEST and (m.parent / "store").is_dir()]
            out.extend(sorted(f for f in found if _in_store_if_synced(f, stores) and (
                (f.name.endswith(_SUFFIXES) and not _sync_bookkeeping(f)) or (
                    f.name.endswith(_STORE_SUFFIX) and f.parent.name.startswith(("month=", "day="))))))
        elif p.is_file():
            out.append(p)
        elif not p.exists():
            raise LoadError(f"{p}: {_not_a_file(p)}")
    return out


#: An ``ooni sync`` output's own files beside its ``store/`` (analysis.ooni_sync.MANIFEST, analysis.outages
#: .API_COVERAGE_META): bookkeeping, not measurements (their lines were counted as blank or skipped lines).
_SYNC_BOOKKEEPING = frozenset({"manifest.jsonl", "api-coverage.json"})


#: An ``ooni sync`` output's manifest (analysis.ooni_sync.MANIFEST): a directory holding it beside a
#: ``store/`` is a sync output, of which only ``store/`` is loaded.
_SYNC_MANIFEST = "manifest.jsonl"


def _in_store_if_synced(f: Path, stores: Sequence[Path]) -> bool:
    """False for a file of a sync output (a directory whose ``store/`` is in ``stores``) outside its
    ``store/``: its ``raw/``, ``.partial/`` or any other file there."""
    parents = f.parents
    return all(s in parents or s.parent not in parents for s in stores)


def _sync_bookkeeping(f: Path) -> bool:
    """True for a sync output's bookkeeping file (:data:`_SYNC_BOOKKEEPING`, beside a ``store/`` directory)."""
    return f.name in _SYNC_BOOKKEEPING and (f.parent / "store").is_dir()


def refused_input(path: str | Path) -> str | None:
    """Why the input ``path`` is left out unopened (``"not a regular file (a FIFO (named pipe))"``),
    or None: a directory, a regular file (or a symlink to one), or a path that does not exist
    (:func:`find_files` raises for that)."""
    p = Path(path)
    if p.is_dir() or p.is_file() or not p.exists():
        return None
    return f"{_not_a_file(p)}, not opened"


def name_refused_inputs(paths: Sequence[str | Path], stats: LoadStats) -> None:
    """Record each input left out unopened (a FIFO, a device, a socket: :func:`refused_input`) as a
    problem of the whole path in ``stats``, as both engines' loaders name it (``"PATH: why"``)."""
    for p in paths:
        why = refused_input(p)
        if why is not None:
            stats.error_at(str(p), 0, why)


def _not_a_file(p: Path) -> str:
    """Why ``p`` (neither a directory nor a regular file) cannot be read: a FIFO or a symlink to
    /dev/zero said "no such file" (break test)."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return "a symlink to nothing (dangling)" if p.is_symlink() else "no such file or directory"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    via = f", via a symlink to {os.readlink(p)}" if p.is_symlink() else ""
    return f"not a regular file ({file_kind(st.st_mode)}{via})"


class _CappedGzip(gzip.GzipFile):
    """A gzip file that ends (reads return b"") after ``limit`` decompressed bytes, never
    decompressing more than one byte past it; :attr:`truncated` then says so and
    :meth:`why` names it."""

    def __init__(self, path: Path, limit: int, compressed: int) -> None:
        super().__init__(path, "rb")
        self._left = limit
        self._compressed = compressed
        self.truncated = False

    def why(self) -> str:
        return db.past_cap(self._compressed)

    def _read(self, how: Any, size: int | None) -> bytes:
        if self.truncated:
            return b""
        data = how(self._left + 1 if size is None or size < 0 else min(size, self._left + 1))
        if len(data) > self._left:
            data = data[: self._left]
            self.truncated = True
        self._left -= len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._read(super().read, size)

    def read1(self, size: int = -1) -> bytes:
        return self._read(super().read1, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._read(super().readline, size)


def _truncated(fh: Any, path: Path, stats: LoadStats) -> None:
    """Count and name a compressed file cut at its bound (:func:`analysis.decompress_bound.decompressed_cap`)."""
    if getattr(fh, "truncated", False):
        stats.invalid += 1
        stats.error_at(str(path), 0, fh.why())


def _open(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        size = path.stat().st_size
        return _CappedGzip(path, db.decompressed_cap(size), size)
    return open(path, "rb")


#: Deepest nesting of JSON arrays/objects read (levels). OONI's measurements are at most 7 deep,
#: ours 8; a deeper line (a hostile ``[[[[…``, which would exhaust the parser's recursion) is
#: counted ``invalid`` ("nested deeper than N levels") and skipped.
MAX_DEPTH = 64

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # possessive: no backtracking on hostile text
_DEPTH_STEP = np.zeros(256, np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
_DEPTH_PIECE = 8 << 20


def too_deep(raw: bytes, limit: int | None = None) -> bool:
    """True when JSON text ``raw`` nests arrays/objects deeper than ``limit`` (:data:`MAX_DEPTH`)
    levels; brackets inside strings do not count. Linear time (regex + numpy), no recursion."""
    limit = MAX_DEPTH if limit is None else limit
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    text = _JSON_STRING.sub(b'""', raw) if b'"' in raw else raw
    level = 0
    for at in range(0, len(text), _DEPTH_PIECE):
        steps = _DEPTH_STEP[np.frombuffer(text, np.uint8, count=min(_DEPTH_PIECE, len(text) - at), offset=at)]
        run = np.cumsum(steps, dtype=np.int64)
        if level + int(run.max()) > limit:
            return True
        level += int(run[-1])
    return False


def _obj_too_deep(obj: Any, limit: int) -> bool:
    """:func:`too_deep` for a parsed value (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        elif not isinstance(o, list):
            continue
        if d > limit:
            return True
        stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return False


#: A file whose first line is not a whole JSON value is read whole (one JSON document)
#: only up to this size (decompressed); a bigger one is JSONL with a bad first line.
WHOLE_MAX_BYTES = 256 << 20

#: Longest JSONL line read (bytes). Our records are ~8 KiB (a stored body is capped, see
#: probe.records), OONI's web_connectivity measurements rarely exceed a few MiB; a longer
#: line is counted ``invalid`` and skipped without being held in memory, so one endless
#: line (a gzip bomb of zeros, a file that is not JSONL) costs O(this) memory, not its size.
MAX_LINE_BYTES = 64 << 20
#: Piece size (bytes) in which an over-long line is read and thrown away.
_DISCARD_BYTES = 1 << 20


def _cap(max_line_bytes: int | None) -> int:
    return MAX_LINE_BYTES if max_line_bytes is None else max(1, int(max_line_bytes))


def _skip_line(fh: Any, left: int | None = None, ended: list[bool] | None = None) -> int:
    """Read and drop the rest of the current line (to its newline or EOF, at most ``left`` bytes),
    :data:`_DISCARD_BYTES` at a time; returns the bytes dropped (``ended``, when given, gets
    whether they end with the newline)."""
    dropped = 0
    while left is None or left > 0:
        piece = fh.readline(_DISCARD_BYTES if left is None else min(_DISCARD_BYTES, left))
        if not piece:
            break
        dropped += len(piece)
        if left is not None:
            left -= len(piece)
        if piece.endswith(b"\n"):
            if ended is not None:
                ended.append(True)
            break
    return dropped


def _first_line(fh: Any, cap: int) -> bytes:
    """The first non-blank line of ``fh`` (at most ``cap`` + 1 bytes; its leading blanks dropped),
    b"" when there is none. Blank lines before it are skipped :data:`_DISCARD_BYTES` at a time,
    so a flood of newlines costs one pass in C, not a Python step per line."""
    while True:
        piece = fh.read(_DISCARD_BYTES)
        if not piece:
            return b""
        piece = piece.lstrip()
        if piece:
            break
    nl = piece.find(b"\n")
    if nl >= 0:
        return piece[: nl + 1][: cap + 1]
    if len(piece) > cap:
        return piece[: cap + 1]
    return piece + fh.readline(cap + 1 - len(piece))


def _is_jsonl(path: Path, max_line_bytes: int | None = None) -> bool:
    """True when the first non-blank line of ``path`` is a whole JSON value (so: JSONL), or the
    file is too big to be one JSON document (:data:`WHOLE_MAX_BYTES`, compressed files ×10), or
    its first line is longer than ``max_line_bytes`` (:data:`MAX_LINE_BYTES`) and is not the
    start of a JSON array, or is nested too deep to decode. At most that many bytes are held
    while looking."""
    cap = _cap(max_line_bytes)
    size = path.stat().st_size * (10 if path.name.endswith(".gz") else 1)
    if size > WHOLE_MAX_BYTES:
        return True
    with _open(path) as fh:
        first = _first_line(fh, cap)
    if not first:
        return True
    if len(first) > cap and not first.endswith(b"\n"):
        return not first.startswith(b"[")
    if first.startswith(b"["):
        return False
    if too_deep(first):
        return True  # one line, too deep: counted as such line by line
    try:
        msgspec.json.decode(first)
        return True
    except (msgspec.DecodeError, RecursionError):
        return False


def _records(path: Path, stats: LoadStats, max_line_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """(1-based line or element number, record) for every record of a file.

    A record is a decoded fast-path struct (our own measurements and other tests'
    ones), a parsed JSON value (anything else), or None (a line that is not JSON,
    already counted). JSONL is streamed line by line. A file whose first non-blank line
    is not a whole JSON value is read whole: a JSON array (elements numbered from 1) or
    one pretty-printed object (numbered 1); if that fails too, it is read as JSONL with
    errors. No line longer than ``max_line_bytes`` (:data:`MAX_LINE_BYTES`) is held; no
    whole document bigger than :data:`WHOLE_MAX_BYTES`.
    """
    if not _is_jsonl(path, max_line_bytes):
        with _open(path) as fh:
            data = fh.read(WHOLE_MAX_BYTES + 1)
            cut = getattr(fh, "truncated", False)
        try:
            doc = json.loads(data) if len(data) <= WHOLE_MAX_BYTES and not cut else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        del data
        if isinstance(doc, list):
            stats.lines += len(doc)
            for i, el in enumerate(doc, start=1):
                if el is None:
                    stats.invalid += 1
                    stats.error_at(str(path), i, "not a JSON object (null)")
                elif _obj_too_deep(el, MAX_DEPTH):
                    stats.invalid += 1
                    stats.error_at(str(path), i, f"element nested deeper than {MAX_DEPTH} levels, skipped")
                    el = None
                yield i, el
            return
        if isinstance(doc, dict):
            stats.lines += 1
            if _obj_too_deep(doc, MAX_DEPTH):
                stats.invalid += 1
                stats.error_at(str(path), 1, f"nested deeper than {MAX_DEPTH} levels, skipped")
                doc = None
            yield 1, doc
            return
        # not one document: read it as JSONL, with per-line errors
    with _open(path) as fh:
        yield from _jsonl_records(_blocks(fh, max_line_bytes=max_line_bytes, rewind=not path.name.endswith(".gz")),
                                  str(path), stats, max_line_bytes=max_line_bytes)
        _truncated(fh, path, stats)


#: Bytes read per block of JSONL (cut at a line end). Small enough that a block and the structs
#: decoded from it stay in the CPU's L2 cache (1 MiB a core here) while its columns are built: our
#: records loaded at 14-18 µs each (CPU) in 256-512 KiB blocks against 20-24 µs in 4 MiB blocks
#: (steady state, interleaved), and with fewer page faults (bench.analysis, 100k: ~26k → ~18k in
#: the workers, 30k → 33-36k measurements per CPU-second); below 128 KiB the per-block cost shows.
BLOCK_BYTES = 512 << 10


class _TooLong(int):
    """Yielded by :func:`_blocks` in place of a line longer than the cap: its length read (bytes)."""


def _blocks(fh: Any, limit: int | None = None, *, max_line_bytes: int | None = None,
            rewind: bool = False) -> Iterator[bytes | memoryview | _TooLong]:
    """Blocks of about :data:`BLOCK_BYTES` from ``fh``, each ending at a line end (the last
    one may not: a torn line); at most ``limit`` bytes in all (None = to EOF).

    ``rewind`` (a plain file, cheap to seek): a block read that ends inside a line is given up to
    its last line end, as a view (no copy), and the file is sought back to read that line again
    with the next block — not completed by a ``readline`` and joined to the block (a copy of every
    block: ~5 % of loading our records). A line with no end in its block takes the path below.

    A line that crosses a block's end and is longer than ``max_line_bytes``
    (:data:`MAX_LINE_BYTES`) is not held: the block up to it is yielded, then a
    :class:`_TooLong` in its place, and the rest of the line is read and dropped piecewise.
    """
    cap = _cap(max_line_bytes)
    left = limit
    while left is None or left > 0:
        block = fh.read(BLOCK_BYTES if left is None else min(BLOCK_BYTES, left))
        if not block:
            return
        if left is not None:
            left -= len(block)
        if block.endswith(b"\n") or (left is not None and left <= 0):
            yield block
            continue
        cut = block.rfind(b"\n") + 1
        if cut and rewind:
            tail_len = len(block) - cut
            fh.seek(-tail_len, os.SEEK_CUR)
            if left is not None:
                left += tail_len
            yield memoryview(block)[:cut]
            continue
        tail_len = len(block) - cut
        want = max(0, cap - tail_len) + 1  # one byte more than the cap allows: detects an over-long line
        rest = fh.readline(want if left is None else min(want, left))
        if left is not None:
            left -= len(rest)
        if tail_len + len(rest) <= cap or rest.endswith(b"\n") and tail_len + len(rest) - 1 <= cap:
            yield block + rest
            continue
        if cut:
            yield block[:cut]
        del block
        ended = [rest.endswith(b"\n")]
        dropped = 0 if ended[0] else _skip_line(fh, left, ended)
        if left is not None:
            left -= dropped
        # the line's length without its newline, as a line inside a block is counted (_jsonl_lines): it
        # was one more when the line crossed a block's end, so a file's message hung on the block size
        yield _TooLong(tail_len + len(rest) + dropped - ended[-1])


def _jsonl_records(blocks: Iterable[bytes | memoryview | _TooLong], fname: str, stats: LoadStats,
                   lines_seen: list[int] | None = None, *,
                   max_line_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, record) of JSONL text given as blocks of whole lines (see :func:`_records`).

    Fast path: a block is decoded in one call (``msgspec``'s ``decode_lines``) when every
    line is one of our web measurements (or another test's measurement); any other
    block — OONI's records, blank, bad or torn lines — is read line by line. A line longer
    than ``max_line_bytes`` (:data:`MAX_LINE_BYTES`) or nested deeper than :data:`MAX_DEPTH`
    is counted invalid and skipped; blank lines are counted (``blank``) in bulk, so a flood
    of them costs C-speed passes, not a Python step each.
    """
    cap = _cap(max_line_bytes)
    base = 0
    for block in blocks:
        if isinstance(block, _TooLong):
            base += 1
            stats.lines += 1
            stats.invalid += 1
            stats.error_at(fname, base, f"line longer than {cap} bytes ({int(block)} bytes), skipped")
            if lines_seen is not None:
                lines_seen[0] = base
            yield base, None
            continue
        nl = int(np.count_nonzero(np.frombuffer(block, np.uint8) == 10))  # 6× bytes.count's speed
        n_lines = nl + (0 if block[-1:] == b"\n" else 1)
        view = not isinstance(block, bytes)  # a memoryview (_blocks' rewind): decoded in place
        if isinstance(block, bytes) and block.isspace():  # only blank lines (a view: found below, after the decode)
            stats.blank += n_lines
            base += n_lines
            if lines_seen is not None:
                lines_seen[0] = base
            continue
        try:
            decoded = _FAST_DECODER.decode_lines(block)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            decoded = None
        if len(block) > cap and max(map(len, bytes(block).split(b"\n"))) > cap:
            decoded = None  # a line over the cap inside the block: judged line by line
        if decoded is not None and len(decoded) == n_lines and all(map(_fast_ok, decoded)):
            stats.lines += n_lines
            yield base + 1, _FastBlock(decoded)
        else:
            data = bytes(block)
            if view and data.isspace():
                stats.blank += n_lines
            else:
                yield from _jsonl_lines(data, fname, stats, base, cap)
        base += n_lines
        if lines_seen is not None:
            lines_seen[0] = base


#: A line with something other than whitespace on it (``\n``-separated).
_NONBLANK = re.compile(rb"[^\n]*?[^\s][^\n]*")


def _jsonl_lines(block: bytes, fname: str, stats: LoadStats, base: int = 0,
                 cap: int | None = None) -> Iterator[tuple[int, Any]]:
    """The lines of ``block`` (whole lines, numbered from ``base`` + 1; the last may lack its
    newline: torn when the block ends the file). Blank lines are only counted (``blank``)."""
    cap = _cap(cap)
    torn_end = -1 if block.endswith(b"\n") else len(block)  # where a last line without newline ends
    at = 0  # where the line after the previous non-blank one starts
    lineno = base
    for m in _NONBLANK.finditer(block):
        skipped = block.count(b"\n", at, m.start())  # blank lines between (a match starts a line)
        stats.blank += skipped
        lineno += skipped + 1
        at = m.end() + 1
        raw = m.group()
        is_last = m.end() == torn_end
        stats.lines += 1
        if len(raw) > cap:
            stats.invalid += 1
            stats.error_at(fname, lineno, f"line longer than {cap} bytes ({len(raw)} bytes), skipped")
            yield lineno, None
            continue
        if too_deep(raw):
            stats.invalid += 1
            stats.error_at(fname, lineno, f"nested deeper than {MAX_DEPTH} levels, skipped")
            yield lineno, None
            continue
        try:
            fast = _FAST_DECODER.decode(raw)
        except msgspec.ValidationError:
            fast = None  # valid JSON of another shape: the generic path below
        except msgspec.DecodeError as exc:
            if is_last and _is_text(raw):
                stats.torn += 1
                stats.error_at(fname, lineno, f"torn last line ({len(raw)} bytes; a run was interrupted)")
            else:
                stats.invalid += 1
                stats.error_at(fname, lineno, f"invalid JSON: {exc}" if _is_text(raw)
                               else "not text (binary data: a corrupt or non-measurement file?)")
            yield lineno, None
            continue
        if fast is not None and ((fast.test_name != WEB_TEST and fast.test_name not in APP_TESTS)
                                 or (_fast_is_ours(fast) and _asn_as_framed(fast.probe_asn))):
            yield lineno, fast
            continue
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # pragma: no cover - msgspec rejected it first
            stats.invalid += 1
            stats.error_at(fname, lineno, f"invalid JSON: {exc}")
            yield lineno, None
            continue
        if value is None:  # None is "already counted" to the caller
            stats.invalid += 1
            stats.error_at(fname, lineno, "not a JSON object (null)")
        yield lineno, value
    stats.blank += block.count(b"\n", min(at, len(block)))
    if at <= len(block) and not block.endswith(b"\n"):
        # the block's last line has no newline and only blanks (the end of a file): a blank line too,
        # as it is when it is a block of its own (``isspace``): it was not counted unless a read ended
        # just before it, so the counts hung on where blocks ended
        stats.blank += 1


def _is_text(raw: bytes) -> bool:
    """True when ``raw`` is UTF-8 without NUL bytes (JSON text, even if cut short)."""
    if b"\0" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # a torn line may end inside a multi-byte character
        try:
            raw[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


# --------------------------------------------------------------------------- fast path (our records)
#
# Our own records are decoded by msgspec into a view of the record schema the probe writes
# (probe.schema.Measurement projected on the fields a row needs, ROW_VIEW: one schema for
# writer and reader, its names and types), a block of lines per call; the DNS replies,
# stored bodies and control details are skipped without building Python objects: ~4× faster
# than json.loads into dicts, 2× faster than decoding whole records (python -m
# bench.analysis). Anything that does not fit the schema (OONI's records, odd types) takes
# the generic json path (row()).

#: The fields of :class:`probe.schema.Measurement` a row reads (None: the whole field).
ROW_VIEW: dict[str, Any] = {
    "annotations": None, "data_format_version": None, "input": None, "measurement_start_time": None,
    "probe_asn": None, "probe_cc": None, "probe_network_name": None, "report_id": None, "software_name": None,
    "test_name": None, "x_measurement_uid": None, "x_input_metadata": {"domain": None},
    "test_keys": {
        "blocking": None, "accessible": None, "x_blocking": None, "x_accessible": None, "x_rule": None,
        "x_reason": None, "dns_experiment_failure": None, "http_experiment_failure": None, "control_failure": None,
        "tcp_connect": {"status": {"failure": None}},
        "tls_handshakes": {"failure": None, "x_handshake_failure": None, "tags": None,
                           "peer_certificates": {"data": None}},
        "requests": {"failure": None, "response": {"x_body_length": None}},
        "x_mitm": {"mitm": None, "matched_subject": None, "root_tag": None},
        "x_vantage": {"control_intercepted_by": None},
    },
}
_FMeasurement: Any = schema.project(schema.Measurement, ROW_VIEW, "MeasurementRowView")
_FAST_DECODER = msgspec.json.Decoder(_FMeasurement)

#: One frame row: column name → value, every column of :data:`COLUMNS` named by :func:`row`
#: and :func:`_fast_row` (``Row(source=..., ...)``; a missing column is a KeyError when the
#: chunk is built, and a test ties the names to :data:`DTYPES`). A plain dict: a msgspec
#: struct or dataclass built by 33 keywords costs 5-10× more per row.
Row = dict
#: A row's values in :data:`COLUMNS` order.
_ROW_VALUES = operator.itemgetter(*COLUMNS)


class _FastBlock(list):
    """Consecutive lines decoded by the fast path (a list of :data:`_FMeasurement` views)."""


def _fast_ok(m: Any) -> bool:
    return (m.test_name != WEB_TEST and m.test_name not in APP_TESTS) or (
        _fast_is_ours(m) and _asn_as_framed(m.probe_asn))


def _asn_as_framed(v: str) -> bool:
    """True when ``v`` is a ``probe_asn`` already in the frame's form (:func:`_asn`): the fast path keeps it
    as it is; any other record (9198 as text, a name) takes the generic path, which normalises or refuses it."""
    if _ASNS.get(v) == v:
        return True
    try:
        return _asn(v) == v
    except ValueError:
        return False


def _fast_is_ours(m: Any) -> bool:
    return m.software_name == "kzprobe" or m.annotations.get("engine_name") == "kzprobe"


_UNSET = msgspec.UNSET
# A handshake's own failure: ``x_handshake_failure`` since 1.0.0-kzprobe (``failure`` then
# includes the certificate verification's), ``failure`` in kzprobe 0.1.0's records.


def _fast_issuers(handshakes: list[Any]) -> str | None:
    for h in handshakes:
        if not h.peer_certificates or "sni=benign" in h.tags or "sni=none" in h.tags:
            continue  # 0.1.0 kept the benign/no-SNI retries here; now they are x_tls_handshakes
        issuers = [_issuer_of(c.data) or "(unparseable)" for c in h.peer_certificates if c.data]
        return " → ".join(issuers) if issuers else None
    return None


def _fast_http_failure(tk: Any) -> str | None:
    """The fetch's failure. Since 1.0.0-kzprobe ``http_experiment_failure`` is OONI's (the step
    that stopped the test when there was no fetch); the fetch's is that of a record with requests."""
    reqs = tk.requests
    if tk.x_blocking is not _UNSET and not reqs:
        return None
    return tk.http_experiment_failure or (reqs[0].failure if reqs else None) or None


def _fast_row(m: Any, file: str, line: int) -> Any:
    """:func:`row` for one of our records decoded by the fast path (same values; built by
    :func:`_fast_columns`, the loader's own code)."""
    cols = _fast_columns([m], file, [line])
    return Row(zip(COLUMNS, (cols[c][0] for c in COLUMNS)))


def _tls_failure_of(handshakes: list[Any]) -> str | None:
    for h in handshakes:
        f = h.failure if h.x_handshake_failure is _UNSET else h.x_handshake_failure
        if f:
            return f
    return None


def _tcp_failure_of(connects: list[Any]) -> str | None:
    for c in connects:
        if c.status.failure:
            return c.status.failure
    return None


def _mitm_of(x: Any) -> str | None:
    return (x.matched_subject or x.root_tag or "unknown") if x is not None and x.mitm else None


def _domain_of_fast(meta: Any, url: str | None) -> str | None:
    return meta.domain if meta is not None and meta.domain else (domain_of(url) if url else None)


#: ``test_keys`` blocking value (as decoded) → the frame's blocking string (``"false"`` for False).
_BLOCKING_OF: dict[Any, str] = {**{v: v for v in BLOCKING_VALUES}, False: "false"}
_OUTCOME_CACHE: dict[tuple[Any, Any], str] = {}


def _outcome_cached(b: Any, accessible: Any) -> str:
    key = (b, accessible)
    try:
        return _OUTCOME_CACHE[key]
    except KeyError:
        out = _OUTCOME_CACHE[key] = vocab.outcome(b, accessible)
        return out
    except TypeError:  # pragma: no cover - unhashable (the schema allows none)
        return vocab.outcome(b, accessible)


def _fast_columns(ms: list[Any], file: str, lines: Sequence[int]) -> dict[str, list[Any]]:
    """The frame's columns (:data:`COLUMNS` → one list each) of our records ``ms`` decoded by the
    fast path (:data:`_FMeasurement` views, web_connectivity only), built column by column: one
    list comprehension per column rather than a dict per row (no transposition before typing).
    The values are those :func:`row` gives for the same records (a test ties them)."""
    n = len(ms)
    tks = [m.test_keys for m in ms]
    anns = [m.annotations for m in ms]
    # our verdict: x_blocking/x_accessible since 1.0.0-kzprobe (blocking/accessible are OONI's
    # words there); kzprobe 0.1.0 wrote ours in blocking/accessible
    raw_b = [tk.blocking if tk.x_blocking is _UNSET else tk.x_blocking for tk in tks]
    acc = [tk.accessible if tk.x_accessible is _UNSET else tk.x_accessible for tk in tks]
    rule = [tk.x_rule or None for tk in tks]
    url = [m.input for m in ms]
    cc = [m.probe_cc or None for m in ms]
    asn = [m.probe_asn or None for m in ms]
    get_b = _BLOCKING_OF.get
    hs = [tk.tls_handshakes for tk in tks]
    reqs = [tk.requests for tk in tks]
    offline, intercepted = Rule.VANTAGE_OFFLINE, INTERCEPTED_RULE
    return {
        "source": ["kzprobe"] * n,
        "measurement_uid": [m.x_measurement_uid or None for m in ms],
        "report_id": [m.report_id or None for m in ms],
        "file": [file] * n,
        "line": list(lines),
        "test_name": [m.test_name for m in ms],
        "data_format_version": [m.data_format_version or None for m in ms],
        "input": url,
        "domain": [_domain_of_fast(m.x_input_metadata, u) for m, u in zip(ms, url)],
        "measurement_start_time": [m.measurement_start_time for m in ms],
        "probe_asn": asn,
        "probe_cc": cc,
        "probe_network_name": [m.probe_network_name or None for m in ms],
        "vantage_id": [a.get("vantage_id") or f"{c or 'ZZ'}/{s or 'AS0'}" for a, c, s in zip(anns, cc, asn)],
        "lab_scenario": [a.get("lab_scenario") or None for a in anns],
        "blocking": [get_b(b) if b.__class__ is not bool or b is False else None for b in raw_b],
        "accessible": acc,
        "outcome": list(map(_outcome_cached, raw_b, acc)),
        "verdict_source": ["kzprobe"] * n,
        "ooni_blocking": [None] * n,
        "ooni_accessible": [None] * n,
        "rule": rule,
        "reason": [tk.x_reason or "" for tk in tks],
        "dns_failure": [tk.dns_experiment_failure or None for tk in tks],
        "tcp_failure": [_tcp_failure_of(tk.tcp_connect) for tk in tks],
        "tls_failure": list(map(_tls_failure_of, hs)),
        "http_failure": list(map(_fast_http_failure, tks)),
        "control_failure": [tk.control_failure or None for tk in tks],
        "mitm_root": [_mitm_of(tk.x_mitm) for tk in tks],
        "tls_issuers": list(map(_fast_issuers, hs)),
        "vantage_offline": [r == offline for r in rule],
        "control_intercepted": [r == intercepted or bool(tk.x_vantage.control_intercepted_by if tk.x_vantage else None)
                                for r, tk in zip(rule, tks)],
        "body_length": [r[0].response.x_body_length if r and r[0].response is not None else None for r in reqs],
    }


# --------------------------------------------------------------------------- one row


#: The probe's rule for a run whose control channel's TLS was intercepted (:func:`probe.verdict.judge`).
INTERCEPTED_RULE = Rule.VANTAGE_INTERCEPTED


def control_intercepted(rule: str | None, intercepted_by: str | None) -> bool:
    """True when a measurement's vantage point had its control channel's TLS intercepted.

    Our records say so in ``test_keys.x_vantage.control_intercepted_by`` (the issuer the
    middlebox presented; :func:`probe.records.measurement`), and by the rule
    ``vantage.intercepted`` (:func:`probe.verdict.judge`) for records written before
    ``x_vantage`` existed. Such a vantage point sits behind a middlebox (a sandbox, a
    corporate proxy): its failures are not evidence of a shutdown. The run's
    ``<report_id>.summary.json`` (``control_intercepted_by``) is read by :func:`load` too
    (an interception the health check saw only after the run).
    """
    return rule == INTERCEPTED_RULE or bool(intercepted_by)


def _intercepted_by(x_vantage: Any) -> str | None:
    """``x_vantage.control_intercepted_by`` of a parsed record (None when absent or malformed)."""
    return _str(x_vantage.get("control_intercepted_by")) if isinstance(x_vantage, dict) else None


def _blocking_str(v: Any) -> str | None:
    return vocab.blocking_str(v)


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _outcome(blocking: object, accessible: bool | None) -> str:
    return vocab.outcome(blocking, accessible)


@lru_cache(maxsize=65536)
def domain_of(url: str) -> str | None:
    """Lowercase IDNA A-label host of ``url`` (IP literals as written, without brackets); None if none."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".")
    if host.isascii():
        return host.lower()
    from probe.names import HostError, to_alabel

    try:
        return to_alabel(host)
    except HostError:
        return None


@lru_cache(maxsize=65536)
def unicode_domain(domain: str) -> str:
    """The Unicode form of an IDNA A-label domain for display (``xn--80aswg.xn--80ao21a`` → ``сайт.қаз``,
    IDNA 2008 via the ``idna`` package); the domain as given when it has no A-label or does not decode."""
    from probe.names import to_ulabel

    return to_ulabel(domain)


def domain_label(domain: str) -> str:
    """A display label: ``"сайт.қаз (xn--80aswg.xn--80ao21a)"`` for an IDN, the domain itself otherwise."""
    u = unicode_domain(domain)
    return domain if u == domain else f"{u} ({domain})"


def _first_failure(items: Any, key: str = "failure") -> str | None:
    if not isinstance(items, list):
        return None
    for it in items:
        if isinstance(it, dict):
            f = it.get(key)
            if f:
                return str(f)
    return None


def _tcp_failure(items: Any) -> str | None:
    if not isinstance(items, list):
        return None
    for it in items:
        if isinstance(it, dict):
            st = it.get("status")
            if isinstance(st, dict) and st.get("failure"):
                return str(st["failure"])
    return None


@lru_cache(maxsize=8192)
def _issuer_of(b64: str) -> str | None:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(base64.b64decode(b64)).issuer.rfc4514_string()
    except (ValueError, binascii.Error):
        return None


def tls_issuers(handshakes: Any) -> str | None:
    """Issuer path of the first captured chain (leaf first, ``" → "``-joined RFC 4514 DNs).

    The first handshake with the target SNI (our ``sni=target`` tag; OONI: any) that
    carries ``peer_certificates``. None when no chain was captured.
    """
    if not isinstance(handshakes, list):
        return None
    chosen = None
    for h in handshakes:
        if not isinstance(h, dict) or not h.get("peer_certificates"):
            continue
        tags = h.get("tags") or ()
        if "sni=benign" in tags or "sni=none" in tags:
            continue
        chosen = h
        break
    if chosen is None:
        return None
    issuers = []
    for c in chosen["peer_certificates"]:
        b64 = c.get("data") if isinstance(c, dict) else c
        if isinstance(b64, str) and b64:
            iss = _issuer_of(b64)
            issuers.append(iss if iss is not None else "(unparseable)")
    return " → ".join(issuers) if issuers else None


def _body_length(requests: Any) -> int | None:
    if not isinstance(requests, list) or not requests or not isinstance(requests[0], dict):
        return None
    resp = requests[0].get("response")
    if not isinstance(resp, dict):
        return None
    n = resp.get("x_body_length")
    if isinstance(n, int):
        return n
    body = resp.get("body")
    if isinstance(body, str):  # an ASCII str (O(1) to know) is its UTF-8 length: no copy of the body
        return len(body) if body.isascii() else len(body.encode("utf-8", "surrogateescape"))
    if isinstance(body, dict) and body.get("format") == "base64":
        data = body.get("data") or ""
        return max(0, len(data) * 3 // 4 - data[-2:].count("="))
    return None


def _mitm_ours(x: Any) -> str | None:
    if isinstance(x, dict) and x.get("mitm"):
        return x.get("matched_subject") or x.get("root_tag") or "unknown"
    return None


def _mitm_ooni(handshakes: Any) -> str | None:
    if not isinstance(handshakes, list):
        return None
    from analysis.ooni import inspect_cached

    for h in handshakes:
        if isinstance(h, dict) and h.get("peer_certificates"):
            chain = [c.get("data") if isinstance(c, dict) else c for c in h["peer_certificates"]]
            f = inspect_cached(tuple(c for c in chain if isinstance(c, str) and c))
            if f.mitm:
                return f.matched_subject or f.root_tag or "unknown"
    return None


def _str(v: Any) -> str | None:
    if v.__class__ is str:  # JSON's text: the one test most values need
        return v or None
    return v if isinstance(v, str) and v != "" else (None if v is None or v == "" else str(v))


#: An ASN as records write it (OONI: "AS9198"; "AS0" unknown), or as a bare number (9198, "9198"),
#: either case, leading zeros allowed; the frame's form is "AS" + the number (:func:`asn`).
_ASN_TEXT = re.compile(r"(?:[Aa][Ss])?0*(\d{1,10})")
_ASN_MAX = 2**32 - 1  # ASNs are 32-bit (RFC 6793)
_ASNS: dict[str, str] = {}  # text seen → its frame form (bounded: a hostile file of distinct values)


def _asn(v: Any) -> str | None:
    """A record's ``probe_asn`` in the frame's one form "AS<number>", None when absent (null, "").

    OONI writes "AS9198"; an integer 9198 or a digit string "9198" (a hand-made or converted record)
    is the same network and becomes "AS9198" (it made a vantage of its own, ``KZ/9198``: break test
    F15); "as9198" and "AS09198" too.

    Raises:
        ValueError: anything else (a name, a float, a boolean, a number past 2**32 - 1): the caller counts
            the measurement invalid, named file:line, rather than invent a network for it.
    """
    if v.__class__ is str:
        try:
            return _ASNS[v]
        except KeyError:
            pass
        if v == "":
            return None
        m = _ASN_TEXT.fullmatch(v)
        if m is None or int(m[1]) > _ASN_MAX:
            raise ValueError(f"probe_asn {_short(v)} is not an ASN (AS<number>)")
        out = f"AS{int(m[1])}"
        if len(_ASNS) < 100_000:
            _ASNS[v] = out
        return out
    if v is None:
        return None
    if v.__class__ is int and 0 <= v <= _ASN_MAX:
        return f"AS{v}"
    raise ValueError(f"probe_asn is {_json_type(v)} ({_short(v)}), not an ASN (AS<number>)")


_recompute: Any = None


def _ooni_judge() -> Any:
    """:func:`analysis.ooni.recompute`, imported on first use (an import statement run for every
    row cost ~1 µs of the ~100 a re-judged row takes: issue 14 part 7)."""
    global _recompute
    from analysis.ooni import recompute

    _recompute = recompute
    return recompute


def is_ours(m: dict[str, Any]) -> bool:
    """True for a kzprobe measurement (``software_name`` or ``annotations.engine_name`` "kzprobe")."""
    if m.get("software_name") == "kzprobe":
        return True
    ann = m.get("annotations")
    return isinstance(ann, dict) and ann.get("engine_name") == "kzprobe"


def ooni_uid(m: dict[str, Any]) -> str:
    """OONI's ``measurement_uid`` when present, else the first 32 hex digits of
    SHA-256 over ``report_id``, ``input`` and ``measurement_start_time`` joined by NUL
    (stable across loads)."""
    uid = m.get("measurement_uid")
    if isinstance(uid, str) and uid:
        return uid
    key = f"{m.get('report_id') or ''}\0{m.get('input') or ''}\0{m.get('measurement_start_time') or ''}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _handshake_failures(items: Any) -> str | None:
    """The first handshake failure of our ``tls_handshakes`` (``x_handshake_failure`` when present:
    see :func:`_handshake_failure`)."""
    if not isinstance(items, list):
        return None
    for it in items:
        if isinstance(it, dict):
            f = it["x_handshake_failure"] if "x_handshake_failure" in it else it.get("failure")
            if f:
                return str(f)
    return None


def _json_type(v: Any) -> str:
    """JSON's name for the type of a decoded value ("a number", "an array" ...)."""
    if isinstance(v, bool):
        return "a boolean"
    return {int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}.get(
        type(v), type(v).__name__)


def row(m: dict[str, Any], file: str, line: int) -> Any:
    """One measurement dict → its :data:`Row` (columns by name; timestamp as text).

    OONI's messaging-app and circumvention tests (:data:`APP_TESTS`) go to :func:`app_row`, so
    every caller (the loader, ``kzprobe ooni sync --test telegram``) gets them right.

    Raises:
        KeyError, TypeError, AttributeError, ValueError: the dict lacks the shape of a
            measurement (the caller counts it as invalid): among others ``test_keys`` that is
            not an object, an ``input`` that is neither a string nor null (break test: both
            were loaded as measurements).
    """
    tk = m.get("test_keys")
    if tk is not None and not isinstance(tk, dict):
        raise TypeError(f"test_keys is {_json_type(tk)}, not an object")
    if (url := m.get("input")) is not None and not isinstance(url, str):
        raise TypeError(f"input is {_json_type(url)}, not a string or null")
    if m.get("test_name") in APP_TESTS and not is_ours(m):
        return app_row(m, file, line)
    if not isinstance(tk, dict):
        tk = {}
    ann = m.get("annotations")
    if not isinstance(ann, dict):
        ann = {}
    url = m.get("input")
    url = url if isinstance(url, str) else None
    # the text columns read off the measurement in one pass, each as _str gives it (a call for none of JSON's
    # str and null: ~10 a row)
    cc, report_id, test_name, dfv, network, vantage_id, lab_scenario, dns_failure, control_failure, http_exp = [
        (v or None) if (v := d.get(k)).__class__ is str else (None if v is None else _str(v))
        for d, k in ((m, "probe_cc"), (m, "report_id"), (m, "test_name"), (m, "data_format_version"),
                     (m, "probe_network_name"), (ann, "vantage_id"), (ann, "lab_scenario"),
                     (tk, "dns_experiment_failure"), (tk, "control_failure"), (tk, "http_experiment_failure"))]
    asn = _asn(m.get("probe_asn"))
    ours = is_ours(m)
    hs = tk.get("tls_handshakes")
    if ours:
        meta = m.get("x_input_metadata")
        domain = meta.get("domain") if isinstance(meta, dict) and meta.get("domain") else (domain_of(url) if url else None)
        # our verdict: x_ keys since 1.0.0-kzprobe, blocking/accessible in kzprobe 0.1.0's records
        raw_blocking = tk["x_blocking"] if "x_blocking" in tk else tk.get("blocking")  # an unknown type stays "blocked"
        blocking = _blocking_str(raw_blocking)
        accessible = _bool(tk["x_accessible"] if "x_accessible" in tk else tk.get("accessible"))
        rule = _str(tk.get("x_rule"))
        reason = _str(tk.get("x_reason")) or ""
        uid = _str(m.get("x_measurement_uid")) or ooni_uid(m)
        vsource = "kzprobe"
        ooni_b = ooni_a = None
        mitm = _mitm_ours(tk.get("x_mitm"))
        tls_failure = _handshake_failures(hs)
    else:
        domain = domain_of(url) if url else None
        ooni_b = vocab.blocking_str(tk.get("blocking"))
        ooni_a = a if (a := tk.get("accessible")).__class__ is bool else None
        rec = (_recompute or _ooni_judge())(m)
        if rec is not None:
            blocking, accessible, rule, reason, vsource = rec.blocking_str, rec.accessible, rec.rule, rec.reason, "recomputed"
            raw_blocking = blocking
        else:
            blocking, accessible, rule, reason, vsource = ooni_b, ooni_a, Rule.OONI.value, "", "ooni"
            raw_blocking = tk.get("blocking")
        uid = ooni_uid(m)
        mitm = _mitm_ooni(hs) if hs else None  # no handshake (most of OONI's http inputs): no call
        tls_failure = _first_failure(hs) if hs else None
    requests = tk.get("requests")
    connects = tk.get("tcp_connect")
    http_failure = http_exp or (
        _str(requests[0].get("failure"))
        if isinstance(requests, list) and requests and isinstance(requests[0], dict) else None)
    if ours and "x_blocking" in tk and not requests:  # OONI's http_experiment_failure without a fetch
        http_failure = None
    # a dict display, not Row(...) (dict(**kw) makes the keyword dict, then copies it); an empty list of
    # connects, handshakes or requests has no failure, chain nor body: no call for it
    return {
        "source": "kzprobe" if ours else "ooni", "measurement_uid": uid, "report_id": report_id,
        "file": file, "line": line, "test_name": test_name, "data_format_version": dfv, "input": url, "domain": domain,
        "measurement_start_time": m.get("measurement_start_time"), "probe_asn": asn, "probe_cc": cc,
        "probe_network_name": network, "vantage_id": vantage_id or f"{cc or 'ZZ'}/{asn or 'AS0'}",
        "lab_scenario": lab_scenario,
        "blocking": blocking, "accessible": accessible, "outcome": vocab.outcome(raw_blocking, accessible),
        "verdict_source": vsource, "ooni_blocking": ooni_b, "ooni_accessible": ooni_a, "rule": rule, "reason": reason,
        "dns_failure": dns_failure,
        "tcp_failure": _tcp_failure(connects) if connects else None,
        "tls_failure": tls_failure, "http_failure": http_failure, "control_failure": control_failure,
        "mitm_root": mitm, "tls_issuers": tls_issuers(hs) if hs else None,
        "vantage_offline": rule == Rule.VANTAGE_OFFLINE if ours else False,
        "control_intercepted": control_intercepted(rule, _intercepted_by(tk.get("x_vantage"))) if ours else False,
        "body_length": _body_length(requests) if requests else None,
    }


def app_row(m: dict[str, Any], file: str, line: int) -> Any:
    """One OONI messaging-app or circumvention-tool measurement (:data:`analysis.ooni_apps.APP_TESTS`)
    → a frame :data:`Row`: OONI's own verdict from the test's keys (:func:`analysis.ooni_apps.judge_app`),
    ``verdict_source`` "ooni", ``domain`` the site the app stands for in tables (claims match these
    rows by ``test_name``, never by domain)."""
    from analysis.ooni_apps import STANDS_FOR, judge_app

    v = judge_app(m)
    tk = m.get("test_keys") if isinstance(m.get("test_keys"), dict) else {}
    ann = m.get("annotations") if isinstance(m.get("annotations"), dict) else {}
    cc, asn = _str(m.get("probe_cc")), _asn(m.get("probe_asn"))
    blocking = vocab.blocking_str(v.blocking)
    url = m.get("input") if isinstance(m.get("input"), str) else None
    return Row(
        source="ooni", measurement_uid=ooni_uid(m), report_id=_str(m.get("report_id")), file=file, line=line,
        test_name=_str(m.get("test_name")), data_format_version=_str(m.get("data_format_version")), input=url,
        domain=STANDS_FOR[str(m.get("test_name"))], measurement_start_time=m.get("measurement_start_time"),
        probe_asn=asn, probe_cc=cc, probe_network_name=_str(m.get("probe_network_name")),
        vantage_id=_str(ann.get("vantage_id")) or f"{cc or 'ZZ'}/{asn or 'AS0'}", lab_scenario=None,
        blocking=blocking, accessible=v.accessible, outcome=vocab.outcome(blocking, v.accessible),
        verdict_source="ooni", ooni_blocking=blocking, ooni_accessible=v.accessible, rule=v.rule, reason=v.reason,
        dns_failure=None, tcp_failure=None, tls_failure=None, http_failure=_str(tk.get("failure")),
        control_failure=None, mitm_root=None, tls_issuers=None, vantage_offline=False, control_intercepted=False,
        body_length=None,
    )


# --------------------------------------------------------------------------- typing


def _strings(values: list[Any]) -> pd.arrays.ArrowStringArray:
    """Text (or None) → ``string[pyarrow]``; a column of one value (a chunk's ``file``,
    ``test_name``, ``lab_scenario``, often its vantage and run) without converting every item."""
    n = len(values)
    if n > 1:
        v0 = values[0]
        if (v0 is None or v0.__class__ is str) and values.count(v0) == n:
            return pd.arrays.ArrowStringArray(pa.nulls(n, pa.large_string()) if v0 is None
                                              else pa.repeat(pa.scalar(v0, pa.large_string()), n))
    return pd.arrays.ArrowStringArray(pa.array(values, pa.large_string()))


#: The closed vocabularies' categories → their codes (:func:`_closed_categorical`).
_CODES: dict[Any, dict[Any, int]] = {}


def _closed_categorical(values: list[Any], dtype: pd.CategoricalDtype) -> pd.Categorical:
    """``values`` (text or None) as a categorical of a closed vocabulary: what
    ``astype(dtype)`` of their strings gives (a value outside the categories, or None, is NA),
    coded in Python without a string array first (a third of the typing of our records'
    columns: bench.analysis). A column of one value (``source``, ``verdict_source``, a block of
    one verdict) is one lookup."""
    codes_of = _CODES.get(dtype)
    if codes_of is None:
        codes_of = _CODES[dtype] = {v: i for i, v in enumerate(dtype.categories)}
    n = len(values)
    if n and values.count(values[0]) == n:
        codes = np.full(n, codes_of.get(values[0], -1), np.int16)
    else:
        get = codes_of.get
        codes = np.fromiter((get(v, -1) for v in values), np.int16, n)
    return pd.Categorical.from_codes(codes, dtype=dtype)


#: The open vocabularies' columns (dtype ``"category"``: the categories are the values seen, sorted).
_OPEN_CATEGORICAL = tuple(c for c, dt in DTYPES.items() if isinstance(dt, str) and dt == "category")
#: No category (a column of None).
_NO_CATEGORIES = pd.CategoricalDtype(pd.Index([], dtype=STRING))


def _open_categorical(values: list[Any]) -> pd.Categorical:
    """``values`` (text or None) as ``astype("category")`` of their strings makes them (categories the
    values seen, sorted; None is NA). A column of one value (a chunk's ``file`` and ``test_name``, often
    its ``probe_asn`` and ``probe_cc``) is one category and zeros, not a string per row."""
    n = len(values)
    if n and values.count(values[0]) == n:
        v0 = values[0]
        if v0 is None:
            return pd.Categorical.from_codes(np.full(n, -1, np.int8), dtype=_NO_CATEGORIES)
        if v0.__class__ is str:
            return pd.Categorical.from_codes(np.zeros(n, np.int8),
                                             dtype=pd.CategoricalDtype(pd.Index([v0], dtype=STRING)))
    out: pd.Categorical = _strings(values).astype("category")
    return out


def _typed(cols: dict[str, list[Any]], *, finalize: bool = False, closed: bool = False) -> pd.DataFrame:
    """Column lists → a frame. Not finalized: categorical columns stay pyarrow strings;
    :func:`_finalize` turns them into categoricals once. ``closed`` (the loader's chunks): every
    categorical column is one already — the closed vocabularies' as ``_finalize(fixed_only=True)``
    makes them, the open ones' (:data:`_OPEN_CATEGORICAL`) of the chunk's own values, merged by
    :func:`_concat` (sent from a worker as codes and a few categories, not a string per row)."""
    data: dict[str, Any] = {}
    for c, dt in DTYPES.items():
        v = cols[c]
        if c == "measurement_start_time":
            data[c] = start_times(v)
        elif closed and isinstance(dt, pd.CategoricalDtype):
            data[c] = _closed_categorical(v, dt)
        elif closed and c in _OPEN_CATEGORICAL:
            data[c] = _open_categorical(v)
        elif dt is STRING or isinstance(dt, pd.CategoricalDtype) or (isinstance(dt, str) and dt == "category"):
            data[c] = _strings(v)
        else:
            data[c] = pd.array(v, dtype=dt)
    frame = pd.DataFrame(data)
    return _finalize(frame) if finalize else frame


def rows_frame(rows: list[Any]) -> pd.DataFrame:
    """:data:`Row` dicts → a typed, not finalized frame (see :func:`_typed`)."""
    return _typed(dict(zip(COLUMNS, map(list, zip(*map(_ROW_VALUES, rows), strict=True)), strict=True)) if rows
                  else {c: [] for c in COLUMNS})


def _finalize(frame: pd.DataFrame, *, fixed_only: bool = False) -> pd.DataFrame:
    """Categorical columns from their strings (``fixed_only``: only the closed vocabularies,
    whose categories are the same everywhere, so parts stay categorical when concatenated)."""
    for c, dt in DTYPES.items():
        wanted = isinstance(dt, pd.CategoricalDtype) or (not fixed_only and isinstance(dt, str) and dt == "category")
        if wanted and (frame[c].dtype != dt or not isinstance(frame[c].dtype, pd.CategoricalDtype)):
            frame[c] = frame[c].astype(dt)
    return frame


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while rows are built: loading makes millions of
    short-lived acyclic objects, and collecting them repeatedly costs ~40 % of the time
    (measured: python -m bench.analysis). Reference counting still frees them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _frames(sources: Iterable[tuple[str, Any]], stats: LoadStats, progress: Any = None) -> Iterator[pd.DataFrame]:
    """Typed chunks of :data:`CHUNK_ROWS` rows from ``(file name, records iterator factory)`` pairs."""
    with _no_gc():
        yield from _frames_gc(sources, stats, progress)


def _frames_gc(sources: Iterable[tuple[str, Any]], stats: LoadStats, progress: Any = None) -> Iterator[pd.DataFrame]:
    # rows are gathered column by column (COLUMNS → list): our records' blocks by _fast_columns,
    # other rows (dicts of row()/app_row()) value by value
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    appends = [cols[c].append for c in COLUMNS]
    held = [0]

    def add(r: Any) -> None:
        for put, v in zip(appends, _ROW_VALUES(r), strict=True):
            put(v)
        held[0] += 1

    def add_columns(new: dict[str, list[Any]], k: int) -> None:
        for c, v in new.items():
            cols[c].extend(v)
        held[0] += k

    def flush() -> pd.DataFrame:
        df = _typed(cols, closed=True)
        bad = df["measurement_start_time"].isna().to_numpy()
        if bad.any():  # no usable time: it cannot be placed in any claim's period
            for i in bad.nonzero()[0].tolist():
                f, ln = cols["file"][i], cols["line"][i]
                stats.invalid += 1
                stats.loaded -= 1
                stats.add_file(f, invalid=1, loaded=-1)
                when = _short(cols["measurement_start_time"][i])
                stats.error_at(f, ln, f"measurement_start_time {when} is not a date "
                               "(YYYY-MM-DD hh:mm:ss UTC), skipped")
            df = df.loc[~bad].reset_index(drop=True)
        for v in cols.values():
            v.clear()
        held[0] = 0
        return df

    seen = reported = 0
    for fname, records in sources:
        n = 0
        before = stats.counts()
        try:
            for lineno, m in records():
                seen += 1
                if progress is not None and seen - reported >= 1024:
                    progress(seen - reported)
                    reported = seen
                if m is None:
                    continue
                if type(m) is _FastBlock:
                    k = len(m)
                    web: list[Any]
                    lines: Sequence[int]
                    if all(x.test_name == WEB_TEST for x in m):
                        web, lines = m, range(lineno, lineno + k)
                    else:
                        pairs = [(i, x) for i, x in enumerate(m, lineno) if x.test_name == WEB_TEST]
                        web, lines = [x for _, x in pairs], [i for i, _ in pairs]
                    seen += k - 1
                    stats.skipped += k - len(web)
                    if web:
                        add_columns(_fast_columns(web, fname, lines), len(web))
                    n += len(web)
                    if held[0] >= CHUNK_ROWS:
                        yield flush()
                    continue
                if isinstance(m, _FMeasurement):
                    if m.test_name != WEB_TEST:
                        stats.skipped += 1
                        continue
                    add_columns(_fast_columns([m], fname, [lineno]), 1)
                elif not isinstance(m, dict):
                    stats.invalid += 1
                    stats.error_at(fname, lineno, f"not a JSON object ({type(m).__name__})")
                    continue
                elif m.get("test_name") in APP_TESTS and not is_ours(m):
                    try:
                        add(app_row(m, fname, lineno))
                    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
                        stats.invalid += 1
                        stats.error_at(fname, lineno, f"not a usable measurement: {type(exc).__name__}: {exc}")
                        continue
                elif m.get("test_name") != WEB_TEST:
                    stats.skipped += 1
                    continue
                else:
                    try:
                        add(row(m, fname, lineno))
                    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
                        stats.invalid += 1
                        stats.error_at(fname, lineno, f"not a usable measurement: {type(exc).__name__}: {exc}")
                        continue
                n += 1
                if held[0] >= CHUNK_ROWS:
                    yield flush()
        except (gzip.BadGzipFile, zlib.error) as exc:  # keep what was read
            stats.invalid += 1
            stats.error_at(fname, 0, f"not gzip / corrupt compressed file: {exc}")
        except OSError as exc:  # unreadable: keep what was read
            stats.invalid += 1
            stats.error_at(fname, 0, f"cannot read: {exc}")
        except EOFError as exc:
            stats.torn += 1
            stats.error_at(fname, 0, f"compressed stream ends early: {exc}")
        stats.loaded += n
        stats.add_file(fname, **{k: now - was for k, now, was in zip(PER_FILE, stats.counts(), before, strict=True)})
    if progress is not None and seen > reported:
        progress(seen - reported)
    if held[0]:
        yield flush()


def _short(v: Any, n: int = 40) -> str:
    """``repr`` of a value from the data, at most ``n`` characters."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 1] + "…"


def _concat(parts: list[pd.DataFrame], *, finalize: bool = True) -> pd.DataFrame:
    if not parts:
        return empty_frame() if finalize else _typed({c: [] for c in COLUMNS}, closed=True)
    if len(parts) == 1:
        frame = parts[0]
    else:
        merged = _merge_categories(parts)
        frame = pd.concat(parts, ignore_index=True)
        for c in merged:  # a category no row has (a part's unused one): dropped, as astype makes none
            codes = frame[c].cat.codes.to_numpy()
            used = np.bincount(codes + 1, minlength=len(frame[c].cat.categories) + 1)[1:] > 0
            if not used.all():
                frame[c] = frame[c].cat.remove_unused_categories()
    return _finalize(frame) if finalize else frame


def _merge_categories(parts: list[pd.DataFrame]) -> list[str]:
    """Recode, in place, the open vocabularies' columns of ``parts`` (:data:`_OPEN_CATEGORICAL`) that are
    categorical of text in every part to one sorted set of categories, so that their concatenation stays
    categorical — what ``astype("category")`` of the concatenated strings gives, once the categories no row
    has are dropped (pandas' concat of categoricals whose categories differ makes strings of them: a string
    per row, then coded again). A part's codes are mapped by a lookup table of its few categories.

    Returns:
        The columns recoded.
    """
    done = []
    for c in _OPEN_CATEGORICAL:
        if not all(c in p.columns and isinstance(p[c].dtype, pd.CategoricalDtype) for p in parts):
            continue
        arrays: list[pd.Categorical] = [p[c].array for p in parts]
        if not all(a.categories.dtype == STRING for a in arrays):
            continue
        keys = [tuple(a.categories.tolist()) for a in arrays]
        cats: pd.Index = pd.Index(list({v for k in set(keys) for v in k}), dtype=STRING).sort_values()
        dtype = pd.CategoricalDtype(cats, ordered=False)
        width = _code_dtype(len(cats))
        tables: dict[tuple[str, ...], np.ndarray] = {}  # a part's categories → its codes' new values (-1 last)
        for p, a, key in zip(parts, arrays, keys, strict=True):
            table = tables.get(key)
            if table is None:
                table = tables[key] = np.append(cats.get_indexer(pd.Index(list(key), dtype=STRING)), -1).astype(width)
            p[c] = pd.Categorical.from_codes(table[a.codes], dtype=dtype, validate=False)
        done.append(c)
    return done


def _code_dtype(n: int) -> type:
    """The codes' width pandas gives ``n`` categories (``astype("category")``)."""
    return np.int8 if n < 127 else np.int16 if n < 32767 else np.int32 if n < 2147483647 else np.int64


def load_file(path: str | Path, stats: LoadStats | None = None, *, max_line_bytes: int | None = None,
              finish: bool = True) -> pd.DataFrame:
    """One file → a frame with :data:`COLUMNS` (used per partition by Dask).

    Args:
        path: a measurement file (any of the formats in the module docstring).
        stats: filled in when given (problems formatted into ``stats.errors``).
        max_line_bytes: longest JSONL line read (None = :data:`MAX_LINE_BYTES`); longer
            ones are counted invalid and skipped.
        finish: format and log the problems (:meth:`LoadStats.finish`); False leaves them in
            ``stats`` for the caller, which merges the files' stats and logs them once.

    Returns:
        The frame; empty (with the columns) when nothing loads. Never raises on bad
        content; an unreadable file counts as an error in ``stats``.
    """
    stats = stats if stats is not None else LoadStats()
    p = Path(path)
    stats.files += 1
    if p.name.endswith(_STORE_SUFFIX):
        return _store_frame(p, stats)
    frame = _concat(list(_frames([(str(p), lambda: _records(p, stats, max_line_bytes))], stats)))
    frame = mark_intercepted_runs(frame, [p])
    if finish:
        stats.finish()
    return frame


def duplicate_mask(frame: pd.DataFrame) -> pd.Series:
    """True for each row that repeats an earlier row's measurement (the same measurement given
    twice: ``--in A --in A``, overlapping copies of a directory, OONI's ``.jsonl.gz`` next to
    its raw postcan).

    A measurement is known by its id (``measurement_uid``: OONI's ``measurement_uid``, our
    ``x_measurement_uid``), or where it has none by ``report_id`` + ``input`` +
    ``measurement_start_time`` (OONI's own identity of a measurement before uids existed).
    """
    if not len(frame):
        return pd.Series(False, index=frame.index)
    uid = frame["measurement_uid"]
    if not uid.hasnans:  # every row has its id: factorized as it is (Arrow strings), no Python string per row;
        codes = pd.factorize(uid)[0]  # codes in order of first appearance: a row repeats one iff its code
        seen = np.maximum.accumulate(codes)  # is not above every earlier code
        return pd.Series(np.concatenate(([False], codes[1:] <= seen[:-1])), index=frame.index)
    return dedup_key(frame).duplicated(keep="first")


def dedup_key(frame: pd.DataFrame) -> pd.Series:
    """Each row's measurement identity (see :func:`duplicate_mask`), as text."""
    key = frame["measurement_uid"].astype(object)
    missing = key.isna().to_numpy()
    if missing.any():
        part = frame.loc[missing]
        key = key.copy()
        key[missing] = ("\0" + part["report_id"].astype(object).fillna("").astype(str) + "\0"
                        + part["input"].astype(object).fillna("").astype(str) + "\0"
                        + part["measurement_start_time"].astype(str)).to_numpy()
    return key


def drop_duplicates(frame: pd.DataFrame, stats: LoadStats | None = None) -> pd.DataFrame:
    """``frame`` without the rows that repeat an earlier one (:func:`duplicate_mask`), counted
    in ``stats`` (``duplicates`` in all and per file of the dropped copy; ``loaded`` less them)."""
    dup = duplicate_mask(frame).to_numpy()
    if not dup.any():
        return frame
    if stats is not None:
        n = int(dup.sum())
        stats.duplicates += n
        stats.loaded -= n
        for f, k in frame.loc[dup, "file"].astype(str).value_counts().items():
            stats.add_file(str(f), duplicates=int(k), loaded=-int(k))
    return frame.loc[~dup].reset_index(drop=True)


#: Largest run summary read (bytes); ours are ~2 KiB.
SUMMARY_MAX_BYTES = 1 << 20


def _run_summary(jsonl: Path) -> schema.RunSummaryRecord | None:
    """The run summary next to a run's measurements (``<report_id>.jsonl`` →
    ``<report_id>.summary.json``, written by :mod:`probe.runner`), None when absent or unreadable."""
    name = jsonl.name
    for suffix in (".jsonl.gz", ".jsonl"):
        if name.endswith(suffix):
            summary = jsonl.with_name(name[: -len(suffix)] + ".summary.json")
            break
    else:
        return None
    try:
        with open(summary, "rb") as fh:
            return schema.SUMMARY_DECODER.decode(fh.read(SUMMARY_MAX_BYTES + 1))
    except (OSError, msgspec.DecodeError, RecursionError):  # absent, unreadable, torn, not the schema
        return None


def mark_intercepted_runs(frame: pd.DataFrame, files: Iterable[Path]) -> pd.DataFrame:
    """Set ``control_intercepted`` on the rows of runs whose summary says the control channel's
    TLS was intercepted (``control_intercepted_by`` in ``<report_id>.summary.json``, which
    also covers an interception seen only by the health check after the run).

    Args:
        frame: loaded rows (:data:`COLUMNS`).
        files: the measurement files they came from.

    Returns:
        ``frame``, changed in place.
    """
    if not len(frame):
        return frame
    hit: set[str] = set()
    for f in files:
        s = _run_summary(Path(f))
        if s is not None and s.control_intercepted_by:
            hit.add(str(f))
    if hit:
        mask = frame["file"].astype(str).isin(hit).to_numpy()
        frame.loc[mask, "control_intercepted"] = True
    return frame


#: From this much input (bytes) up, loading uses worker processes (see :func:`load`).
PARALLEL_MIN_BYTES = 128 << 20
#: Size of one range (bytes); also the granularity of the progress bar in parallel mode.
RANGE_BYTES = 24 << 20
#: multiprocessing start method of the workers.
_MP_START = "fork" if sys.platform == "linux" else "spawn"


def _load_range(path: str, start: int, end: int,
                max_line_bytes: int | None = None) -> tuple[pd.DataFrame, LoadStats, int]:
    """Worker: the rows of the lines in bytes [start, end) of a JSONL file (both at line starts).

    Returns:
        (frame with ``line`` counted from the range's start, stats with unformatted
        problems, number of lines in the range) — the caller shifts the line numbers.
    """
    stats = LoadStats()
    lines = [0]

    def blocks() -> Iterator[bytes | memoryview | _TooLong]:
        with open(path, "rb") as fh:
            fh.seek(start)
            yield from _blocks(fh, end - start, max_line_bytes=max_line_bytes, rewind=True)

    frame = _concat(list(_frames([(path, lambda: _jsonl_records(blocks(), path, stats, lines,
                                                                 max_line_bytes=max_line_bytes))], stats)),
                    finalize=False)
    return frame, stats, lines[0]


def _split(path: Path, size: int) -> list[tuple[int, int]]:
    """Byte ranges of ``path`` of about :data:`RANGE_BYTES`, each starting at a line start."""
    cuts = [0]
    with open(path, "rb") as fh:
        for k in range(RANGE_BYTES, size, RANGE_BYTES):
            if k <= cuts[-1]:
                continue
            fh.seek(k - 1)
            _skip_line(fh)  # to the end of the line holding byte k-1: the next line starts a range
            pos = fh.tell()
            if pos < size:
                cuts.append(pos)
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [size], strict=True) if a < b]


#: glibc ``mallopt`` parameters (malloc.h) and the values the loader's worker processes set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_WORKER_MMAP_THRESHOLD = 64 << 20
_WORKER_TRIM_THRESHOLD = 512 << 20


def _worker_init() -> None:
    """A loader worker's start: SIGTERM has its default action (the parent's ``terminate()`` on
    Ctrl-C ends it) whatever handler the parent had when it forked — kzprobe's CLI makes SIGTERM
    raise KeyboardInterrupt, which the executor's worker loop catches, and ignores it once its exit
    code is decided: a worker inheriting either outlived ``terminate()`` (the full suite: two
    workers alive 10 s after Ctrl-C). Ctrl-C itself (SIGINT, sent to the whole process group) is
    the parent's to handle. Then :func:`_tune_malloc`."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _tune_malloc()


def _tune_malloc() -> bool:
    """In a loader worker process (glibc only; elsewhere a no-op returning False): blocks of
    :data:`BLOCK_BYTES`, their newline masks and the typed chunks come from the heap and stay
    there for the next block, instead of each being a fresh ``mmap`` the kernel zero-fills page
    by page and unmaps when freed (glibc's default for allocations above its dynamic threshold,
    and trimming the heap top above 2× it). Measured on our JSONL (10k records, steady state,
    best of 4): 0.26 → 0.20–0.23 CPU-s. Only the workers: they exit when the load is done, so the
    caller's process keeps glibc's defaults (its memory is returned to the system as before)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _WORKER_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _WORKER_TRIM_THRESHOLD))


def _workers() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(os.cpu_count() or 1, 8))


def read_store_file(path: str | Path) -> pd.DataFrame:
    """A file of the synced OONI store (:mod:`analysis.ooni_store`) → a frame with :data:`COLUMNS` and their
    dtypes. Here, not in ``analysis.ooni_store``, which imports this module: no import cycle."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[c for c in COLUMNS])
    try:
        return _store_frame_of(_store_cast(table))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):  # an older/odd schema: by pandas
        pass
    frame = table.to_pandas(types_mapper={pa.string(): DTYPES["input"], pa.large_string(): DTYPES["input"]}.get)
    for c, dtype in DTYPES.items():
        if c == "measurement_start_time":
            frame[c] = pd.to_datetime(frame[c], utc=True).astype(dtype)
        elif isinstance(dtype, pd.CategoricalDtype) or dtype == "category":
            frame[c] = frame[c].astype("string").astype(DTYPES["input"])
        else:
            frame[c] = frame[c].astype(dtype)
    return _finalize(frame[list(COLUMNS)], fixed_only=True)


def _arrow_type(dtype: Any) -> pa.DataType:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pa.timestamp("ns", tz="UTC")
    if isinstance(dtype, str) and dtype in ("int32", "boolean", "Int64"):
        return {"int32": pa.int32(), "boolean": pa.bool_(), "Int64": pa.int64()}[dtype]
    return pa.large_string()


#: The Arrow types of the frame's columns as the store holds them (:data:`analysis.ooni_store.SCHEMA`).
STORE_READ_SCHEMA = pa.schema([(c, _arrow_type(dt)) for c, dt in DTYPES.items()])


#: The frame's categorical columns: read from Parquet as dictionaries (no string per row is made).
_CATEGORICAL = tuple(c for c, dt in DTYPES.items()
                     if isinstance(dt, pd.CategoricalDtype) or (isinstance(dt, str) and dt == "category"))


def _store_cast(table: pa.Table) -> pa.Table:
    """``table``'s :data:`COLUMNS` in :data:`STORE_READ_SCHEMA` (a no-op for the store's own files; the
    categorical columns may stay dictionaries).

    Raises:
        pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError: a column cannot be cast.
    """
    table = table.select(list(COLUMNS))
    if table.schema.equals(STORE_READ_SCHEMA):
        return table
    for i, f in enumerate(STORE_READ_SCHEMA):
        have = table.schema.field(i).type
        if have == f.type or (f.name in _CATEGORICAL and pa.types.is_dictionary(have)):
            continue
        table = table.set_column(i, f.name, table.column(i).cast(f.type))
    return table


def _store_frame_of(table: pa.Table) -> pd.DataFrame:
    """Store rows (:data:`STORE_READ_SCHEMA`) → the frame's dtypes, column by column in Arrow: text as
    ``string[pyarrow]`` without copying, categorical columns from dictionaries (no Python string per row)."""
    data: dict[str, Any] = {}
    for c, dtype in DTYPES.items():
        col = table.column(c)
        if c in _CATEGORICAL:
            if not pa.types.is_dictionary(col.type):
                col = col.combine_chunks().dictionary_encode()
            cat = pd.Series(col.to_pandas())
            # the closed vocabularies' categories; the others sorted, as astype("category") makes them, and
            # of the JSONL loader's text dtype (STRING; Arrow gives ``str``), so that Dask can join a store's
            # partitions with JSONL ones (its concat refuses categories of different dtypes)
            # (set_categories recodes: astype to an unordered dtype of the same categories does not reorder)
            cat = cat.cat.set_categories(list(dtype.categories) if isinstance(dtype, pd.CategoricalDtype)
                                         else pd.Index(cat.cat.categories, dtype=STRING).sort_values())
            data[c] = cat
        elif dtype is STRING:  # the chunks (a file's rows each) kept: combining copied every string (~0.7 CPU-s
            data[c] = pd.Series(pd.arrays.ArrowStringArray(col))  # for a 1M-row text column)
        elif c == "measurement_start_time":
            data[c] = pd.Series(col.to_pandas(), dtype=dtype)
        elif isinstance(dtype, str) and dtype in ("boolean", "Int64"):  # from Arrow's bitmaps: no object per row
            data[c] = pd.Series(pd.api.types.pandas_dtype(dtype).__from_arrow__(col))
        else:
            data[c] = pd.Series(pd.array(col.to_pandas(), dtype=dtype))
    return pd.DataFrame(data)


def _read_store(files: list[Path], stats: LoadStats) -> pd.DataFrame:
    """Files of the synced OONI store → one frame (rows already judged when synced), in file order.

    The files are read by Arrow in threads (only the frame's columns: the store's ``mkey`` and
    ``line_sha256`` stay on disk), concatenated and converted once (:func:`_store_frame_of`); a
    file of an older or odd schema is read on its own (:func:`read_store_file`); an unreadable one
    is named in ``stats``."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    def one(p: Path) -> tuple[Path, Any]:
        try:
            # ParquetFile, not read_table (whose dataset machinery costs ~1.5 ms a call: a store has a file a day)
            with pq.ParquetFile(p, pre_buffer=False, read_dictionary=_CATEGORICAL) as pf:
                table = pf.read(columns=list(COLUMNS), use_threads=False)
        except (OSError, ValueError, KeyError) as exc:  # pa.ArrowException is an OSError/ValueError
            return p, exc
        try:
            return p, _store_cast(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            try:
                return p, read_store_file(p)
            except (OSError, ValueError, KeyError) as exc:
                return p, exc

    with ThreadPoolExecutor(max_workers=max(2, min(8, 2 * _workers()))) as ex:
        done = list(ex.map(one, files))
    tables: list[pa.Table] = []
    frames: list[pd.DataFrame] = []
    for p, got in done:
        if isinstance(got, BaseException):
            stats.error_at(str(p), 0, f"unreadable store file: {got}")
            continue
        n = got.num_rows if isinstance(got, pa.Table) else len(got)
        stats.lines += n
        stats.loaded += n
        stats.add_file(str(p), lines=n, loaded=n)
        if isinstance(got, pa.Table):
            tables.append(got)
        else:
            if tables:
                frames.append(_store_frame_of(pa.concat_tables(tables)))
                tables = []
            frames.append(got)
    if tables:
        frames.append(_store_frame_of(pa.concat_tables(tables)))
    if not frames:
        return _finalize(empty_frame(), fixed_only=True)
    return frames[0] if len(frames) == 1 else _concat(frames, finalize=False)


def _store_frame(p: Path, stats: LoadStats) -> pd.DataFrame:
    """A Parquet file of the synced OONI store → rows (already judged when synced); unreadable → an error."""
    return _read_store([p], stats)


def _load_task(path: str, start: int, end: int,
               max_line_bytes: int | None = None) -> tuple[pd.DataFrame, LoadStats, int]:
    """Worker: a byte range of a JSONL file (see :func:`_load_range`), or the whole file when ``end`` < 0.
    The closed-vocabulary categoricals are made here (in parallel, and smaller to send back)."""
    if path.endswith(_STORE_SUFFIX):
        stats = LoadStats()
        return _store_frame(Path(path), stats), stats, 0
    if end >= 0:
        frame, stats, n = _load_range(path, start, end, max_line_bytes)
    else:
        stats = LoadStats()
        p = Path(path)
        frame = _concat(list(_frames([(path, lambda: _records(p, stats, max_line_bytes))], stats)), finalize=False)
        n = 0
    return _finalize(frame, fixed_only=True), stats, n


def _tasks(files: list[Path]) -> tuple[list[tuple[str, int, int]], int]:
    """(path, start, end) tasks — big uncompressed JSONL files split into ranges, other files
    whole (end −1) — and the work in bytes (compressed files count 5×)."""
    tasks: list[tuple[str, int, int]] = []
    work = 0
    for f in files:
        size = f.stat().st_size
        gz = f.name.endswith(".gz")
        work += size * (5 if gz else 1)
        if not gz and size >= PARALLEL_MIN_BYTES and _is_jsonl(f):
            tasks.extend((str(f), a, b) for a, b in _split(f, size))
        else:
            tasks.append((str(f), 0, -1))
    return tasks, work


def _parallel(tasks: list[tuple[str, int, int]], stats: LoadStats, workers: int, bar: Any = None,
              name: str = "", max_line_bytes: int | None = None) -> list[pd.DataFrame]:
    """Run ``tasks`` in ``workers`` processes; results are taken in task order, so rows stay in
    file and line order and each range's line numbers are shifted by the lines before it.

    The workers are forked before the progress ``bar`` (and its refresh thread) starts: a
    fork never copies a process that has other threads running.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    parts: list[pd.DataFrame] = []
    offsets: dict[str, int] = {}
    ctx = multiprocessing.get_context(_MP_START)
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    try:
        # forks every worker now (start method "fork")
        futures = [ex.submit(_load_task, *t, max_line_bytes) for t in tasks]
        with bar if bar is not None else contextlib.nullcontext():
            task = bar.add_task("load", total=None, name=name) if bar is not None else None
            for (path, _, end), fut in zip(tasks, futures, strict=True):
                frame, st, nlines = fut.result()
                offset = offsets.get(path, 0)
                if offset and len(frame):
                    frame["line"] = (frame["line"] + offset).astype("int32")
                stats.merge(st, line_offset=offset)
                if end >= 0:
                    offsets[path] = offset + nlines
                parts.append(frame)
                if bar is not None:
                    bar.advance(task, len(frame))
    except BaseException:
        # Ctrl-C (or an error): stop the workers now rather than wait for every queued range
        # (a clean shutdown would finish them all: seconds to minutes on a big input)
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.kill()  # SIGKILL: a worker that inherited a SIGTERM handler (or SIG_IGN) shrugs off terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    return parts


def _progress_bar() -> Any:
    """A transient rich progress bar on stderr counting measurements read."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("loading {task.fields[name]}: {task.completed:,} measurements"),
                    TimeElapsedColumn(), transient=True, console=Console(stderr=True))


def load(paths: Sequence[str | Path], *, progress: bool = False, workers: int | None = None,
         max_line_bytes: int | None = None) -> LoadResult:
    """Load every measurement under ``paths`` into one frame.

    Args:
        paths: files or directories (recursive: ``*.jsonl``, ``*.json``, ``*.jsonl.gz``,
            ``*.json.gz``).
        progress: show a rich progress bar on stderr (only when stderr is a terminal).
        workers: processes to load with when there is at least :data:`PARALLEL_MIN_BYTES`
            of input: files are shared out, and big uncompressed JSONL files are split into
            line-aligned ranges of :data:`RANGE_BYTES`; None = the CPUs this process may
            use, 1 = everything in this process.
        max_line_bytes: longest JSONL line read, in bytes (None = :data:`MAX_LINE_BYTES`);
            a longer one is counted invalid ("line longer than N bytes, skipped") and
            never held in memory.

    Returns:
        A :class:`LoadResult`: the frame (one row per web_connectivity measurement,
        :data:`COLUMNS`, dtypes per :data:`DTYPES`, in file and line order) and
        :class:`LoadStats`.

    Raises:
        LoadError: a path does not exist. Bad lines and unreadable files are counted,
            never raised.
    """
    files = find_files(paths)
    stats = LoadStats()
    name_refused_inputs(paths, stats)
    workers = _workers() if workers is None else max(1, workers)
    bar = _progress_bar() if progress and sys.stderr.isatty() else None
    name = f"{len(files)} files"
    stats.files += len(files)
    # the synced OONI store's Parquet files are read together, by Arrow's threads (_read_store); the
    # JSON files by this process or by worker processes
    store = [f for f in files if f.name.endswith(_STORE_SUFFIX)]
    others = [f for f in files if not f.name.endswith(_STORE_SUFFIX)]
    tasks, work = _tasks(others) if workers > 1 else ([], 0)
    if workers > 1 and len(tasks) > 1 and work >= PARALLEL_MIN_BYTES:
        parts = _parallel(tasks, stats, workers, bar, name, max_line_bytes)
    else:
        parts = []
        with bar if bar is not None else contextlib.nullcontext():
            advance = None
            if bar is not None:
                task = bar.add_task("load", total=None, name=name)
                advance = lambda k: bar.advance(task, k)
            for f in others:
                parts.extend(_frames([(str(f), lambda f=f: _records(f, stats, max_line_bytes))], stats, advance))
    if store:  # in file order with the rest (the first copy of a measurement given twice is kept)
        first = files.index(store[0]) < (files.index(others[0]) if others else len(files))
        stored = _read_store(store, stats)
        parts = [stored, *parts] if first else [*parts, stored]
    frame = mark_intercepted_runs(drop_duplicates(_concat(parts), stats), files)
    return LoadResult(frame=frame, stats=stats.finish())


if __name__ == "__main__":  # pragma: no cover - manual use: python -m analysis.load DIR...
    r = load(sys.argv[1:], progress=True)
    print(r.frame.dtypes.to_string(), file=sys.stderr)
    print(r.stats, file=sys.stderr)
    print(r.frame.to_string(max_rows=40, max_colwidth=40))
