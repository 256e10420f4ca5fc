"""Measurements (ours and OONI's) → one pandas DataFrame, a row per measurement.

Input: files or directories (searched recursively for ``*.jsonl``, ``*.json``,
``*.jsonl.gz``, ``*.json.gz``). A file may hold JSONL (one measurement per line — our
format, and OONI's bulk dumps), a single JSON object (pretty-printed or not, OONI's
API and test fixtures) or a JSON array of objects; any of them gzipped.

The columns and their dtypes are the contract in ``/work/briefs/analysis-schema.md``
(see :data:`COLUMNS` and :func:`empty_frame`): categoricals for closed vocabularies
and for ASN/CC/test name, pyarrow-backed strings (``string[pyarrow]``) for text, UTC
timestamps. Memory: lines are parsed one at a time and only the column values are
kept; every :data:`CHUNK_ROWS` rows they become a typed DataFrame chunk (pyarrow
strings, a few dozen bytes per row and column), so a million measurements take a few
hundred MB, not the GBs of the parsed dicts (``python -m bench.analysis`` prints it).

Bad input is never fatal: a torn last line (a run killed mid-write, see
:mod:`probe.store`) is counted as ``torn``, any other line that is not a JSON object as
``invalid``, a file that cannot be read as an ``error``; each is named ``file:line``
in :attr:`LoadStats.errors`. Measurements of other tests (``test_name`` not
``web_connectivity``) are counted as ``skipped``.

Verdicts: our rows carry the probe's own (``test_keys.blocking``, ``x_rule``,
``x_reason``). OONI rows are judged again by :func:`analysis.ooni.recompute` (the
probe's own :func:`probe.verdict.judge` on OONI's raw test_keys and control) where the
data allows, else OONI's own ``blocking`` is used (``verdict_source`` says which);
OONI's own verdict is always kept in ``ooni_blocking``/``ooni_accessible``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

log = logging.getLogger("kzprobe.analysis.load")

#: Blocking values (OONI web_connectivity ts-017, plus kzprobe's ``tls_mitm`` and
#: ``throttling``); ``False`` is stored as the string ``"false"``, ``None`` as NA.
BLOCKING_VALUES = ("false", "dns", "tcp_ip", "tls", "tls_mitm", "http-failure", "http-diff", "throttling")
OUTCOMES = ("accessible", "blocked", "down", "inconclusive")
SOURCES = ("kzprobe", "ooni")
VERDICT_SOURCES = ("kzprobe", "recomputed", "ooni")
#: The test whose measurements are loaded; others are counted as skipped.
WEB_TEST = "web_connectivity"

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
    "body_length": "Int64",
}
#: The frame's columns, in order.
COLUMNS: tuple[str, ...] = tuple(DTYPES)
#: Columns whose categories are open (set after all chunks are joined).
_OPEN_CATEGORIES = ("file", "test_name", "probe_asn", "probe_cc")
#: Rows per typed chunk while loading (bounds the Python objects alive at once).
CHUNK_ROWS = 50_000

_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


class LoadError(ValueError):
    """A path given to :func:`load` does not exist or is not a measurement file."""


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
        errors: one message per torn/invalid line or unreadable file, ``"file:line: why"``.
            At most :attr:`max_errors` are kept; the counts are always complete.
    """

    files: int = 0
    lines: int = 0
    loaded: int = 0
    torn: int = 0
    invalid: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    max_errors: int = 1000

    def error(self, msg: str) -> None:
        if len(self.errors) < self.max_errors:
            self.errors.append(msg)
        log.warning("%s", msg)

    def merge(self, other: LoadStats) -> None:
        """Add ``other``'s counts and errors to these."""
        for k in ("files", "lines", "loaded", "torn", "invalid", "skipped"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
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
    """The measurement files under ``paths`` (files as given; directories recursively), sorted.

    Raises:
        LoadError: a path does not exist (names it).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(_SUFFIXES)))
        elif p.is_file():
            out.append(p)
        else:
            raise LoadError(f"{p}: no such file or directory")
    return out


def _open(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _records(path: Path, stats: LoadStats) -> Iterator[tuple[int, Any]]:
    """(1-based line or element number, parsed JSON value | exception) for every record of a file.

    JSONL is streamed line by line. A file whose first non-blank line is not a whole JSON
    value is read whole: a JSON array (elements numbered from 1) or one pretty-printed
    object (numbered 1). If that fails too, it is read as JSONL with errors.
    """
    with _open(path) as fh:
        first = b""
        while True:
            first = fh.readline()
            if not first or first.strip():
                break
        if not first:
            return
        head = first.lstrip()
        whole = head.startswith(b"[")
        if not whole:
            try:
                json.loads(first)
            except ValueError:
                whole = True
    if whole:
        with _open(path) as fh:
            data = fh.read()
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, list):
            stats.lines += len(doc)
            yield from enumerate(doc, start=1)
            return
        if isinstance(doc, dict):
            stats.lines += 1
            yield 1, doc
            return
        # not one document: fall through to JSONL with per-line errors
    with _open(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            stats.lines += 1
            try:
                yield lineno, json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                if not raw.endswith(b"\n"):
                    stats.torn += 1
                    stats.error(f"{path}:{lineno}: torn last line ({len(raw)} bytes; a run was interrupted)")
                else:
                    stats.invalid += 1
                    stats.error(f"{path}:{lineno}: invalid JSON: {exc}")
                yield lineno, None


# --------------------------------------------------------------------------- one row


def _blocking_str(v: Any) -> str | None:
    if v is False:
        return "false"
    if isinstance(v, str) and v in BLOCKING_VALUES:
        return v
    return None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _outcome(blocking: str | None, accessible: bool | None) -> str:
    if blocking is None:
        return "inconclusive"
    if blocking != "false":
        return "blocked"
    if accessible is True:
        return "accessible"
    if accessible is False:
        return "down"
    return "inconclusive"


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
    try:
        from probe.measure.dns import to_alabel

        return to_alabel(host)
    except ValueError:
        return None


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
    if isinstance(body, str):
        return len(body.encode("utf-8", "surrogateescape"))
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
    from probe.mitm import inspect_chain

    for h in handshakes:
        if isinstance(h, dict) and h.get("peer_certificates"):
            chain = [c.get("data") if isinstance(c, dict) else c for c in h["peer_certificates"]]
            f = inspect_chain([c for c in chain if isinstance(c, str) and c])
            if f.mitm:
                return f.matched_subject or f.root_tag or "unknown"
    return None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v != "" else (None if v is None or v == "" else str(v))


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
    key = "\0".join(str(m.get(k) or "") for k in ("report_id", "input", "measurement_start_time"))
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def row(m: dict[str, Any], file: str, line: int) -> tuple[Any, ...]:
    """One measurement dict → the row's values in :data:`COLUMNS` order (timestamp as text).

    Raises:
        KeyError, TypeError, AttributeError, ValueError: the dict lacks the shape of a
            measurement (the caller counts it as invalid).
    """
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        tk = {}
    ann = m.get("annotations")
    if not isinstance(ann, dict):
        ann = {}
    url = m.get("input")
    url = url if isinstance(url, str) else None
    cc = _str(m.get("probe_cc"))
    asn = _str(m.get("probe_asn"))
    ours = is_ours(m)
    if ours:
        meta = m.get("x_input_metadata")
        domain = meta.get("domain") if isinstance(meta, dict) and meta.get("domain") else (domain_of(url) if url else None)
        blocking = _blocking_str(tk.get("blocking"))
        accessible = _bool(tk.get("accessible"))
        rule = _str(tk.get("x_rule"))
        reason = _str(tk.get("x_reason")) or ""
        uid = _str(m.get("x_measurement_uid")) or ooni_uid(m)
        vsource = "kzprobe"
        ooni_b = ooni_a = None
        mitm = _mitm_ours(tk.get("x_mitm"))
    else:
        from analysis.ooni import recompute

        domain = domain_of(url) if url else None
        ooni_b = _blocking_str(tk.get("blocking"))
        ooni_a = _bool(tk.get("accessible"))
        rec = recompute(m)
        if rec is not None:
            blocking, accessible, rule, reason, vsource = rec.blocking_str, rec.accessible, rec.rule, rec.reason, "recomputed"
        else:
            blocking, accessible, rule, reason, vsource = ooni_b, ooni_a, "ooni", "", "ooni"
        uid = ooni_uid(m)
        mitm = _mitm_ooni(tk.get("tls_handshakes"))
    requests = tk.get("requests")
    http_failure = _str(tk.get("http_experiment_failure")) or (
        _str(requests[0].get("failure")) if isinstance(requests, list) and requests and isinstance(requests[0], dict) else None)
    return (
        "kzprobe" if ours else "ooni",
        uid,
        _str(m.get("report_id")),
        file,
        line,
        _str(m.get("test_name")),
        _str(m.get("data_format_version")),
        url,
        domain,
        m.get("measurement_start_time"),
        asn,
        cc,
        _str(m.get("probe_network_name")),
        _str(ann.get("vantage_id")) or f"{cc or 'ZZ'}/{asn or 'AS0'}",
        _str(ann.get("lab_scenario")),
        blocking,
        accessible,
        _outcome(blocking, accessible),
        vsource,
        ooni_b,
        ooni_a,
        rule,
        reason,
        _str(tk.get("dns_experiment_failure")),
        _tcp_failure(tk.get("tcp_connect")),
        _first_failure(tk.get("tls_handshakes")),
        http_failure,
        _str(tk.get("control_failure")),
        mitm,
        tls_issuers(tk.get("tls_handshakes")),
        rule == "vantage.offline" if ours else False,
        _body_length(requests),
    )


# --------------------------------------------------------------------------- typing


def _times(values: list[Any]) -> pd.Series:
    """OONI times ("YYYY-MM-DD hh:mm:ss", UTC) → datetime64[ns, UTC]; unparseable → NaT."""
    s = pd.Series(values, dtype=object)
    out = pd.to_datetime(s, format="%Y-%m-%d %H:%M:%S", utc=True, errors="coerce")
    bad = out.isna() & s.notna()
    if bad.any():  # other ISO forms ("2021-01-01T00:00:00Z", fractions)
        out[bad] = pd.to_datetime(s[bad], format="ISO8601", utc=True, errors="coerce")
    return out.astype(TIME_DTYPE)


def _typed(cols: dict[str, list[Any]], *, finalize: bool = False) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for c, dt in DTYPES.items():
        v = cols[c]
        if c == "measurement_start_time":
            data[c] = _times(v)
        elif isinstance(dt, str) and dt == "category" and not finalize:
            data[c] = pd.array(v, dtype=STRING)  # categories set once all chunks are joined
        elif isinstance(dt, str) and dt == "category":
            data[c] = pd.Series(pd.array(v, dtype=STRING)).astype("category")
        else:
            data[c] = pd.array(v, dtype=dt)
    return pd.DataFrame(data)


def _finalize(frame: pd.DataFrame) -> pd.DataFrame:
    for c in _OPEN_CATEGORIES:
        if not isinstance(frame[c].dtype, pd.CategoricalDtype):
            frame[c] = frame[c].astype("category")
    return frame


def _frames(files: Iterable[Path], stats: LoadStats, progress: Any = None) -> Iterator[pd.DataFrame]:
    cols: list[list[Any]] = [[] for _ in COLUMNS]

    def flush() -> pd.DataFrame:
        df = _typed(dict(zip(COLUMNS, cols)))
        for lst in cols:
            lst.clear()
        return df

    seen = 0
    for path in files:
        stats.files += 1
        fname = str(path)
        n = 0
        try:
            for lineno, m in _records(path, stats):
                seen += 1
                if progress is not None and seen % 1024 == 0:
                    progress(1024)
                if m is None:
                    continue
                if not isinstance(m, dict):
                    stats.invalid += 1
                    stats.error(f"{fname}:{lineno}: not a JSON object ({type(m).__name__})")
                    continue
                tn = m.get("test_name")
                if tn != WEB_TEST:
                    stats.skipped += 1
                    continue
                try:
                    values = row(m, fname, lineno)
                except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
                    stats.invalid += 1
                    stats.error(f"{fname}:{lineno}: not a usable measurement: {type(exc).__name__}: {exc}")
                    continue
                for lst, v in zip(cols, values):
                    lst.append(v)
                n += 1
                if len(cols[0]) >= CHUNK_ROWS:
                    yield flush()
        except OSError as exc:  # unreadable, or a corrupt gzip stream: keep what was read
            stats.invalid += 1
            stats.error(f"{fname}: cannot read: {exc}")
        except EOFError as exc:
            stats.torn += 1
            stats.error(f"{fname}: compressed stream ends early: {exc}")
        stats.loaded += n
    if progress is not None:
        progress(seen % 1024)
    if cols[0]:
        yield flush()


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return empty_frame()
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True, copy=False)
    return _finalize(frame)


def load_file(path: str | Path, stats: LoadStats | None = None) -> pd.DataFrame:
    """One file → a frame with :data:`COLUMNS` (used per partition by Dask).

    Args:
        path: a measurement file (any of the formats in the module docstring).
        stats: filled in when given.

    Returns:
        The frame; empty (with the columns) when nothing loads. Never raises on bad
        content; an unreadable file counts as an error in ``stats``.
    """
    stats = stats if stats is not None else LoadStats()
    return _concat(list(_frames([Path(path)], stats)))


def _progress_bar() -> Any:
    """A transient rich progress bar on stderr counting measurements read."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("loading {task.fields[name]}"), BarColumn(), TextColumn("{task.completed:,} measurements"),
                    TimeRemainingColumn(), transient=True)


def load(paths: Sequence[str | Path], *, progress: bool = False) -> LoadResult:
    """Load every measurement under ``paths`` into one frame.

    Args:
        paths: files or directories (recursive: ``*.jsonl``, ``*.json``, ``*.jsonl.gz``,
            ``*.json.gz``).
        progress: show a rich progress bar on stderr (only when stderr is a terminal).

    Returns:
        A :class:`LoadResult`: the frame (one row per web_connectivity measurement,
        :data:`COLUMNS`, dtypes per :data:`DTYPES`) and :class:`LoadStats`.

    Raises:
        LoadError: a path does not exist. Bad lines and unreadable files are counted,
            never raised.
    """
    files = find_files(paths)
    stats = LoadStats()
    parts: list[pd.DataFrame] = []
    if progress and sys.stderr.isatty():
        bar = _progress_bar()
        with bar:
            task = bar.add_task("load", total=None, name=f"{len(files)} files")
            parts = list(_frames(files, stats, progress=lambda k: bar.advance(task, k)))
    else:
        parts = list(_frames(files, stats))
    frame = _concat(parts)
    return LoadResult(frame=frame, stats=stats)


if __name__ == "__main__":  # pragma: no cover - manual use: python -m analysis.load DIR...
    r = load(sys.argv[1:], progress=True)
    print(r.frame.dtypes.to_string(), file=sys.stderr)
    print(r.stats, file=sys.stderr)
    print(r.frame.to_string(max_rows=40, max_colwidth=40))
