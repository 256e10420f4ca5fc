"""Reading a run's measurements file (``<report_id>.jsonl``) back: bounded lines, kzprobe's own verdict.

One home for what ``kzprobe list``/``show`` (:mod:`probe.browse`) and the run listing of ``kzprobe
status``/``list`` (:mod:`probe.status`: a run killed before its summary was written is counted from
its measurements) read. Every line is bounded (:data:`MAX_LINE_BYTES`, :data:`probe.bounded.MAX_JSON_DEPTH`);
a line over the bound or unparseable is counted and skipped, never fatal. What is kept of the skipped lines is
bounded too (:class:`LineStats`: the first :data:`MAX_SKIPPED_EXAMPLES` and exact counts): a results dir may hold
a corrupted or foreign file of any size.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from probe.bounded import MAX_JSON_DEPTH, json_depth_exceeds, loads_json
from probe.recordcap import MAX_RECORD_BYTES
from probe.targets import MAX_ROW_WARNINGS
from probe.vocab import Rule

__all__ = ["MAX_LINE_BYTES", "MAX_SKIPPED_EXAMPLES", "SKIP_NOT_JSON", "SKIP_NOT_OBJECT", "SKIP_TOO_LONG",
           "LineStats", "VantageSeen", "count_lines", "iter_fields", "iter_lines", "iter_records", "line_offset",
           "own_verdict", "parse_fields", "parse_record", "verdict_counts"]

#: A JSONL line longer than this is skipped unread (the writer caps a record at MAX_RECORD_BYTES).
MAX_LINE_BYTES = MAX_RECORD_BYTES + 64 * 1024
#: Skipped lines kept as examples (line number, reason); the rest are only counted. As many as
#: ``kzprobe list RUN`` shows.
MAX_SKIPPED_EXAMPLES = MAX_ROW_WARNINGS

#: Why a line was skipped (the keys of :attr:`LineStats.by_reason`; an example's reason starts with one).
SKIP_TOO_LONG = f"line over {MAX_LINE_BYTES} bytes"
SKIP_NOT_JSON = "not JSON"
SKIP_NOT_OBJECT = "not a JSON object"


@dataclass
class LineStats:
    """What :func:`iter_records` skipped, bounded whatever the file holds: the first
    :data:`MAX_SKIPPED_EXAMPLES` as ``(line, reason)`` in ``skipped``, and exact counts: ``count`` in all,
    ``by_reason`` keyed by the ``SKIP_*`` words."""

    skipped: list[tuple[int, str]] = field(default_factory=list)
    count: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    #: The byte offset (a line's start) where :func:`iter_records` stopped at its ``max_bytes``; None
    #: when it read the file to its end.
    stopped_at: int | None = None

    def skip(self, lineno: int, kind: str, detail: str = "") -> None:
        """Count line ``lineno`` as skipped for ``kind`` (a ``SKIP_*`` word); keep it as an example
        (``kind: detail``, at most 200 characters) while fewer than :data:`MAX_SKIPPED_EXAMPLES` are."""
        self.count += 1
        self.by_reason[kind] += 1
        if len(self.skipped) < MAX_SKIPPED_EXAMPLES:
            self.skipped.append((lineno, (f"{kind}: {detail}" if detail else kind)[:200]))


def iter_lines(path: Path, stats: LineStats | None = None, *, max_bytes: int | None = None, start: int = 0,
               first_line: int = 1) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a run's JSONL lines that are not blank, each bounded: a line over
    :data:`MAX_LINE_BYTES` is counted in ``stats`` and skipped, read by bounded pieces. ``start``: a
    line's start (byte offset) to read from, numbered ``first_line``; with ``max_bytes``, the lines that
    start before byte ``max_bytes`` only (``stats.stopped_at``: where it stopped)."""
    stats = stats if stats is not None else LineStats()
    with open(path, "rb") as fh:
        fh.seek(start)
        lineno = first_line - 1
        while True:
            if max_bytes is not None and fh.tell() >= max_bytes:
                stats.stopped_at = fh.tell()
                return
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, bounded reads
                    raw = fh.readline(MAX_LINE_BYTES + 1)
                stats.skip(lineno, SKIP_TOO_LONG)
                continue
            if raw.strip():
                yield lineno, raw


def parse_record(lineno: int, raw: bytes, stats: LineStats) -> dict[str, Any] | None:
    """Line ``lineno`` (:func:`iter_lines`) as a record, depth-bounded; None when it is not JSON or not
    an object (counted in ``stats``)."""
    try:
        obj = loads_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        stats.skip(lineno, SKIP_NOT_JSON, str(exc))
        return None
    if not isinstance(obj, dict):
        stats.skip(lineno, SKIP_NOT_OBJECT)
        return None
    return obj


def iter_records(path: Path, stats: LineStats | None = None, *, max_bytes: int | None = None, start: int = 0,
                 first_line: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a run's JSONL, each line bounded before it is parsed (:func:`iter_lines`,
    whose ``max_bytes``, ``start`` and ``first_line`` these are)."""
    stats = stats if stats is not None else LineStats()
    for lineno, raw in iter_lines(path, stats, max_bytes=max_bytes, start=start, first_line=first_line):
        if (rec := parse_record(lineno, raw, stats)) is not None:
            yield lineno, rec


def parse_fields(lineno: int, raw: bytes, decoder: msgspec.json.Decoder[Any],
                 stats: LineStats) -> dict[str, Any] | None:
    """Line ``lineno`` as a record of the fields ``decoder``'s :class:`msgspec.Struct` names only (fields
    typed ``Any | UnsetType = UNSET``, a nested Struct for an object): a dict of the fields present, the
    same values :func:`parse_record` gives them; None for the lines it skips, for the same reasons.

    msgspec skips the other fields without building them: ~12 µs for a 12 KB record beside ~85 µs for
    ``json.loads``. It checks no UTF-8 in what it skips, nor depth: both are checked first, as
    :func:`probe.bounded.loads_json` does. A line msgspec refuses (not JSON to it: NaN, a byte order
    mark, a lone surrogate; or a field of another type than the Struct's, e.g. ``test_keys`` not an
    object) is given to :func:`parse_record`, which answers for it (the whole record: its other fields
    are there too, which a reader of these fields does not look at)."""
    if not json_depth_exceeds(raw, MAX_JSON_DEPTH):
        try:
            raw.decode("utf-8", "surrogatepass")  # what json.loads decodes bytes with
            fields: dict[str, Any] = msgspec.to_builtins(decoder.decode(raw))
            return fields
        except (UnicodeDecodeError, msgspec.DecodeError):
            pass
    return parse_record(lineno, raw, stats)


def iter_fields(path: Path, decoder: msgspec.json.Decoder[Any], stats: LineStats | None = None, *,
                max_bytes: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`iter_records` with each record cut to the fields of ``decoder``'s Struct (:func:`parse_fields`):
    ``kzprobe list RUN`` reads its seven fields of a 200 MB run at twice the rate of whole records (~80 µs a
    12 KB record beside ~150)."""
    stats = stats if stats is not None else LineStats()
    for lineno, raw in iter_lines(path, stats, max_bytes=max_bytes):
        if (rec := parse_fields(lineno, raw, decoder, stats)) is not None:
            yield lineno, rec


def line_offset(path: Path, line: int) -> int | None:
    """The byte offset where line ``line`` (from 1, as :func:`iter_lines` numbers them: every newline
    ends one) of ``path`` starts, found by counting newlines by blocks of :data:`COUNT_BLOCK_BYTES`
    without decoding; None when the file has fewer lines before it."""
    if line < 1:
        return None
    need, at = line - 1, 0
    with open(path, "rb") as fh:
        while need:
            block = fh.read(COUNT_BLOCK_BYTES)
            if not block:
                return None
            n = block.count(b"\n")
            if n < need:
                need, at = need - n, at + len(block)
                continue
            end = -1
            for _ in range(need):
                end = block.index(b"\n", end + 1)
            return at + end + 1
    return 0


def own_verdict(tk: dict[str, Any]) -> tuple[Any, Any]:
    """kzprobe's own verdict ``(blocking, accessible)``: ``x_blocking``/``x_accessible`` where the record has
    them (records since 1.0.0 write OONI's coarser words in ``blocking``: tls and tls_mitm become
    http-failure), else ``blocking``/``accessible`` (kzprobe 0.1.0 and OONI's own records)."""
    if "x_blocking" in tk:
        return tk.get("x_blocking"), tk.get("x_accessible", tk.get("accessible"))
    return tk.get("blocking"), tk.get("accessible")


#: An issuer name read from a record is cut to this many characters (a results dir may hold anything).
MAX_ISSUER_CHARS = 200


@dataclass
class VantageSeen:
    """The vantage as a run's records saw it (``test_keys.x_vantage``, ``x_rule``), for a run killed before
    its summary said it (break test F8: a run whose every record was ``vantage.offline`` was listed
    "offline: no"). ``offline``: every record was judged with the vantage offline (its summary would say
    VANTAGE OFFLINE); ``intercepted_by``: the first printable issuer a record names."""

    records: int = 0
    offline_records: int = 0
    intercepted_by: str | None = None

    def see(self, tk: dict[str, Any]) -> None:
        """Count one record's test keys."""
        self.records += 1
        vantage = tk.get("x_vantage")
        vantage = vantage if isinstance(vantage, dict) else {}
        if vantage.get("offline") is True or tk.get("x_rule") == Rule.VANTAGE_OFFLINE:
            self.offline_records += 1
        issuer = vantage.get("control_intercepted_by")
        if self.intercepted_by is None and isinstance(issuer, str) and issuer and issuer.isprintable():
            self.intercepted_by = issuer[:MAX_ISSUER_CHARS]

    @property
    def offline(self) -> bool:
        """Every record (at least one) was measured with the vantage offline."""
        return 0 < self.records == self.offline_records


def verdict_counts(path: Path, stats: LineStats | None = None, vantage: VantageSeen | None = None, *,
                   max_bytes: int | None = None) -> Counter[str]:
    """The verdict counts of a run's JSONL, keyed as the run's summary keys them (``probe.runner.Run.counts``):
    "accessible", "down", "inconclusive" or the blocking type. A line that is not a record is skipped
    (``stats``); a record without test keys counts as inconclusive. ``vantage``, when given, sees every
    record's test keys (the same pass). ``max_bytes``: of the lines starting in the file's first
    ``max_bytes`` only (:func:`iter_records`)."""
    counts: Counter[str] = Counter()
    for _, rec in iter_records(path, stats, max_bytes=max_bytes):
        tk = rec.get("test_keys")
        tk = tk if isinstance(tk, dict) else {}
        if vantage is not None:
            vantage.see(tk)
        blocking, accessible = own_verdict(tk)
        if blocking is None:
            counts["inconclusive"] += 1
        elif blocking is False:
            counts["accessible" if accessible else "down"] += 1
        else:
            counts[str(blocking)] += 1
    return counts


#: Bytes read at a time by :func:`count_lines`.
COUNT_BLOCK_BYTES = 1 << 20


#: The newline before a blank line (ASCII white space only, as ``bytes.strip`` takes it): one match a
#: blank line, runs of them too; searched newline to newline, ~0.5 ms a MB of 800-byte lines
#: (``^…`` in MULTILINE mode tried every byte: 8.6 ms, beside 0.4 ms for counting the newlines).
_BEFORE_BLANK = re.compile(rb"\n(?=[ \t\r\x0b\x0c]*\n)")


def count_lines(path: Path, start: int = 0) -> int:
    """The complete non-blank lines (ended by a newline; a torn last line is not one; a line of white
    space only is blank, as :func:`verdict_counts` skips it) of ``path`` from byte ``start``, counted
    by blocks of :data:`COUNT_BLOCK_BYTES` without decoding: a multi-GB file costs one block of memory
    (and ~1 s a GB of reading). A line that is not a record (junk) is counted all the same."""
    n = 0
    content = False  # the line begun in an earlier block has a non-blank byte
    with open(path, "rb") as fh:
        fh.seek(start)
        while block := fh.read(COUNT_BLOCK_BYTES):
            first = block.find(b"\n")
            if first < 0:
                content = content or bool(block.strip())
                continue
            n += content or bool(block[:first].strip())
            last = block.rfind(b"\n")
            # the lines wholly in this block, each after a newline: all but the blank ones
            n += block.count(b"\n", first + 1, last + 1) - len(_BEFORE_BLANK.findall(block, first, last + 1))
            content = bool(block[last + 1:].strip())
    return n
