"""The sync with the judge taken out, for ``python -m bench.ooni_sync``: what everything except
:func:`analysis.load.row` costs, in every process of a real sync (listing, downloads, the workers'
decompression, JSON decoding, keys, hashes, Parquet parts, compaction, start-up, IPC).

Run as a script (``python bench/ooni_sync_norow.py OUT ENDPOINT SINCE UNTIL``): the sync's fork
server preloads the main script (as ``__mp_main__``), so the workers it forks get the replacement
too. ``row`` is replaced by a memo of real rows, one per template measurement (the bench's
measurements are copies of a few real samples), with the columns that differ between copies
(file, line, report_id, start time, network) set from the measurement: rows of the same shape and
size as the judge's, for a few µs a measurement (a dict copy) instead of the judge's ~130–170 µs.
Not a way to sync anything: the verdicts are the templates'.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import analysis.load as _ld  # noqa: E402 - after the path, as a script

_real_row = _ld.row
_memo: dict[tuple[Any, ...], dict[str, Any]] = {}


def memo_row(m: dict[str, Any], fname: str, lineno: int) -> Any:
    """A real row of ``m``'s template (judged once), with ``m``'s own identity columns."""
    k = (m.get("input"), m.get("test_version"), m.get("software_name"), m.get("software_version"))
    r = _memo.get(k)
    if r is None:
        r = _memo[k] = dict(_real_row(m, fname, lineno))
    out = dict(r)
    out.update(file=fname, line=lineno, report_id=m.get("report_id"),
               measurement_start_time=m.get("measurement_start_time"), probe_asn=m.get("probe_asn"))
    return out


_ld.row = memo_row  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    import dataclasses
    import datetime as dt
    import json

    from analysis.ooni_sync import SyncConfig, sync

    out, endpoint, since, until = argv
    r = sync(SyncConfig(cc="KZ", since=dt.date.fromisoformat(since), until=dt.date.fromisoformat(until),
                        out=Path(out), endpoint=endpoint, margin_before=0, margin_after=0, use_cans=False))
    print(json.dumps(dataclasses.asdict(r)))


if __name__ == "__main__":
    main(sys.argv[1:])
