"""Reading a run's measurements file (``<report_id>.jsonl``) back: bounded lines, kzprobe's own verdict.

One home for what ``kzprobe list``/``show`` (:mod:`probe.browse`) and the run listing of ``kzprobe
status``/``list`` (:mod:`probe.status`: a run killed before its summary was written is counted from
its measurements) read. Every line is bounded (:data:`MAX_LINE_BYTES`, :data:`probe.bounded.MAX_JSON_DEPTH`);
a line over the bound or unparseable is counted and skipped, never fatal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.bounded import loads_json
from probe.recordcap import MAX_RECORD_BYTES

__all__ = ["MAX_LINE_BYTES", "LineStats", "iter_records", "own_verdict", "verdict_counts"]

#: A JSONL line longer than this is skipped unread (the writer caps a record at MAX_RECORD_BYTES).
MAX_LINE_BYTES = MAX_RECORD_BYTES + 64 * 1024


@dataclass
class LineStats:
    """What :func:`iter_records` skipped: ``(line, reason)``."""

    skipped: list[tuple[int, str]] = field(default_factory=list)


def iter_records(path: Path, stats: LineStats | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a run's JSONL, each line bounded before it is parsed."""
    stats = stats if stats is not None else LineStats()
    with open(path, "rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, bounded reads
                    raw = fh.readline(MAX_LINE_BYTES + 1)
                stats.skipped.append((lineno, f"line over {MAX_LINE_BYTES} bytes"))
                continue
            if not raw.strip():
                continue
            try:
                obj = loads_json(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                stats.skipped.append((lineno, f"not JSON: {exc}"[:200]))
                continue
            if not isinstance(obj, dict):
                stats.skipped.append((lineno, "not a JSON object"))
                continue
            yield lineno, obj


def own_verdict(tk: dict[str, Any]) -> tuple[Any, Any]:
    """kzprobe's own verdict ``(blocking, accessible)``: ``x_blocking``/``x_accessible`` where the record has
    them (records since 1.0.0 write OONI's coarser words in ``blocking``: tls and tls_mitm become
    http-failure), else ``blocking``/``accessible`` (kzprobe 0.1.0 and OONI's own records)."""
    if "x_blocking" in tk:
        return tk.get("x_blocking"), tk.get("x_accessible", tk.get("accessible"))
    return tk.get("blocking"), tk.get("accessible")


def verdict_counts(path: Path, stats: LineStats | None = None) -> Counter[str]:
    """The verdict counts of a run's JSONL, keyed as the run's summary keys them (``probe.runner.Run.counts``):
    "accessible", "down", "inconclusive" or the blocking type. A line that is not a record is skipped
    (``stats``); a record without test keys counts as inconclusive."""
    counts: Counter[str] = Counter()
    for _, rec in iter_records(path, stats):
        tk = rec.get("test_keys")
        blocking, accessible = own_verdict(tk if isinstance(tk, dict) else {})
        if blocking is None:
            counts["inconclusive"] += 1
        elif blocking is False:
            counts["accessible" if accessible else "down"] += 1
        else:
            counts[str(blocking)] += 1
    return counts
