"""The local store of synced OONI measurements: Parquet, partitioned by measurement month.

Layout (under the store directory, ``kzprobe ooni sync --out DIR``)::

    DIR/store/day=YYYY-MM-DD/part-<batch hash>-<n>.parquet    one per batch of bucket objects (and chunk), as synced
    DIR/store/month=YYYY-MM/data-<hash>.parquet               a month compacted: its days' parts (and an earlier
                                                              data file) merged, duplicates dropped, rows in
                                                              (UTC day, file, line) order
    DIR/store/day=YYYY-MM-DD/data-<hash>.parquet              a day compacted by an older kzprobe: still read, and
                                                              merged into its month when that month is compacted
    DIR/manifest.jsonl                                        the bucket objects already synced (analysis.ooni_sync)
    DIR/coverage.csv                                          measurements per day and network (analysis.outages)

A row is one measurement, already judged again (the analysis frame's columns,
:data:`analysis.load.COLUMNS`, as :func:`analysis.load.row` makes them, so with
:func:`analysis.ooni.recompute`'s verdict beside OONI's own), plus:

* ``mkey`` — int64, the first 8 bytes of SHA-256 over ``report_id``, ``input`` and
  ``measurement_start_time`` joined by NUL: the de-duplication key;
* ``line_sha256`` — the SHA-256 (hex) of the raw JSON line as stored in the bucket;
* ``file``/``line`` — the bucket key (for a can: ``<key>!<member>``) and the 1-based line in
  it, so the raw measurement can be fetched again and checked against ``line_sha256``.

Writes are atomic (a ``.tmp`` file renamed into place), so a reader or a re-run never sees
half a file. A part's name depends only on its batch's objects (keys and ETags), so processing a batch
again overwrites its part; an object read again in another batch (a re-run after an
interruption) adds a second copy, which compaction drops (same ``mkey``).

Why a month a file: the report reads the whole store, and a file costs a fixed ~3 ms to open and
decode (its footer, a column chunk per column): a year of a country was 394 day files, ~1.2 CPU-s
of the 1M-measurement report's reading against ~0.4 for the same rows in 13 month files (issue 13).
A sync writes its parts by day as before; compaction rewrites the touched months whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import operator
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.load import COLUMNS, DTYPES, _finalize, _typed, read_store_file, rows_frame  # noqa: F401 (re-exported)
from analysis.start_time import parse_start_times
from analysis.store_layout import DAY_PREFIX as _DAY_PREFIX

# re-exported (explicitly, `as` the same name): the paths live where the sync's main process can import them
from analysis.store_layout import STORE_DIR as STORE_DIR
from analysis.store_layout import day_dir as day_dir
from analysis.store_layout import days as days
from analysis.store_layout import is_store_file as is_store_file
from analysis.store_layout import iter_store_files as iter_store_files
from analysis.store_layout import month_dir as month_dir
from analysis.store_layout import months as months
from analysis.store_layout import store_root as store_root

#: Columns beyond the analysis frame's.
EXTRA_COLUMNS = ("mkey", "line_sha256")
STORE_COLUMNS = COLUMNS + EXTRA_COLUMNS


def mkey(report_id: Any, input_: Any, start: Any) -> int:
    """The de-duplication key of a measurement: (report_id, input, measurement_start_time)."""
    if type(report_id) is str and type(start) is str and (input_ is None or type(input_) is str):
        text = f"{report_id}\0{input_ or ''}\0{start}"  # the usual case, without a generator and join
    else:
        text = "\0".join("" if v is None else str(v) for v in (report_id, input_, start))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8], "big", signed=True)






def frame_from_rows(rows: list[Any], keys: list[int], shas: list[str]) -> pd.DataFrame:
    """Rows of :func:`analysis.load.row` (+ their mkey and line hash) → a typed frame of :data:`STORE_COLUMNS`."""
    frame = rows_frame(rows)
    frame["mkey"] = pd.array(keys, dtype="int64")
    frame["line_sha256"] = pd.array(shas, dtype=DTYPES["input"])
    return frame


#: The store's Parquet schema (one for every file: parts concatenate without promotion).
def _arrow_type(column: str) -> pa.DataType:
    dtype = DTYPES.get(column)
    if column == "measurement_start_time":
        return pa.timestamp("ns", tz="UTC")
    if column in ("line",):
        return pa.int32()
    if column == "mkey":
        return pa.int64()
    if isinstance(dtype, str) and dtype == "boolean":
        return pa.bool_()
    if isinstance(dtype, str) and dtype == "Int64":
        return pa.int64()
    return pa.large_string()


SCHEMA = pa.schema([(c, _arrow_type(c)) for c in STORE_COLUMNS])


def table_from_rows(rows: list[Any], keys: list[int], shas: list[str]) -> tuple[pa.Table, int]:
    """Rows of :func:`analysis.load.row` (+ their mkey and line hash) → (a table of :data:`SCHEMA`,
    rows dropped because their ``measurement_start_time`` is not a date)."""
    table, valid = table_and_valid(rows, keys, shas)
    if valid is None:
        return table, 0
    return table.filter(valid), len(rows) - int(pc.sum(valid).as_py() or 0)


def table_and_valid(rows: list[Any], keys: list[int], shas: list[str]) -> tuple[pa.Table, pa.Array | None]:
    """Rows of :func:`analysis.load.row` (+ their mkey and line hash) → (a table of :data:`SCHEMA`
    with every row, and None when every ``measurement_start_time`` is a date, else the mask of the
    rows whose is). Built in Arrow (no pandas frame: ~4× cheaper per object than
    :func:`frame_from_rows` + conversion), all rows in one ``Table.from_pylist`` (2.3 → 0.5 ms for
    an object of 83 rows), column by column when a value does not fit its column's type."""
    try:  # one conversion of all the rows (~5x cheaper than column by column); odd values: column by column
        table = _fast_table(rows, keys, shas)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        table = _slow_table(rows, keys, shas)
    times = table.column("measurement_start_time")
    if not times.null_count:
        return table, None
    return table, times.is_valid().combine_chunks() if isinstance(times, pa.ChunkedArray) else times.is_valid()


#: :data:`SCHEMA` without the extra columns, the start time as text (as :func:`analysis.load.row` has it).
_ROWS_SCHEMA = pa.schema([pa.field(f.name, pa.large_string()) if f.name == "measurement_start_time" else f
                          for f in SCHEMA if f.name in COLUMNS])
_TIME_FIELD = SCHEMA.field("measurement_start_time")


#: A row's values in :data:`_ROWS_SCHEMA`'s order.
_ROW_VALUES = operator.itemgetter(*_ROWS_SCHEMA.names)


def _fast_table(rows: list[Any], keys: list[int], shas: list[str]) -> pa.Table:
    try:  # rows → columns in C (itemgetter, zip), one typed array a column: ~1.5 µs a row less than from_pylist
        columns = list(zip(*map(_ROW_VALUES, rows), strict=True)) if rows else [()] * len(_ROWS_SCHEMA)
        table = pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, _ROWS_SCHEMA, strict=True)],
                                     schema=_ROWS_SCHEMA)
    except KeyError:  # a row without a column: null there, as from_pylist makes it
        table = pa.Table.from_pylist(rows, schema=_ROWS_SCHEMA)
    i = table.schema.get_field_index("measurement_start_time")
    text = table.column(i).combine_chunks() if table.num_rows else pa.array([], pa.large_string())
    table = table.set_column(i, _TIME_FIELD, parse_start_times(text).cast(_TIME_FIELD.type))
    return (table.append_column(SCHEMA.field("mkey"), pa.array(keys, pa.int64()))
            .append_column(SCHEMA.field("line_sha256"), pa.array(shas, pa.large_string())))


def _slow_table(rows: list[Any], keys: list[int], shas: list[str]) -> pa.Table:
    cols: list[Any] = [[r[c] for r in rows] for c in COLUMNS]  # rows are analysis.load.Row dicts
    arrays: list[pa.Array] = []
    for name, values in zip(COLUMNS, cols, strict=True):
        typ = SCHEMA.field(name).type
        if name == "measurement_start_time":
            text = pa.array([v if isinstance(v, str) else None for v in values], pa.large_string())
            arrays.append(parse_start_times(text).cast(typ))
            continue
        try:
            arrays.append(pa.array(values, typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # an odd value (a number where text is expected …)
            arrays.append(pa.array([None if v is None else str(v) for v in values], typ))
    arrays.append(pa.array(keys, pa.int64()))
    arrays.append(pa.array(shas, pa.large_string()))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _table(frame: pd.DataFrame) -> pa.Table:
    out = {}
    for c in STORE_COLUMNS:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype("string")
        out[c] = s
    return pa.Table.from_pandas(pd.DataFrame(out), preserve_index=False).cast(SCHEMA)


def write_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> int:
    """Write ``table`` to ``path`` through ``path.tmp-<random>`` + fsync + rename; returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression=compression)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def write_part(root: Path, day: dt.date, name: str, data: pd.DataFrame | pa.Table) -> Path:
    """One object's rows of one day → ``day=…/part-<name>.parquet`` (replacing an earlier one of that name)."""
    path = day_dir(root, day) / f"part-{name}.parquet"
    # uncompressed: a part lives until the day is compacted (zstd there), and zstd costs ~1 ms an object
    write_atomic(data if isinstance(data, pa.Table) else _table(data), path, compression="none")
    return path




def _month_inputs(root: Path, month: str) -> tuple[list[Path], list[Path]]:
    """(the month partition's files, the files of its days' partitions: parts, and data files of the day layout)."""
    own = sorted(month_dir(root, month).glob("*.parquet"))
    day_files = sorted(f for d in root.glob(f"{_DAY_PREFIX}{month}-*") for f in d.glob("*.parquet"))
    return own, day_files


def compact_month(root: Path, month: str) -> tuple[int, int]:
    """Merge a month's files — its ``month=`` partition and its days' parts (and day files of the older
    layout) — into ``month=YYYY-MM/data-<hash>.parquet``, dropping repeated measurements (same ``mkey``;
    the first by file and line is kept), the rows then in (UTC day, file, line) order: the order the
    day files of the older layout gave, one after another. Returns (rows kept, duplicates dropped).

    Crash-safe: the merged file is in place before its inputs are removed, and a measurement in both
    is dropped again at the next compaction (the loader keeps one copy meanwhile).
    """
    own, day_files = _month_inputs(root, month)
    files = own + day_files
    if not files:
        return 0, 0
    if len(own) == 1 and not day_files and own[0].name.startswith("data-"):
        return pq.ParquetFile(own[0]).metadata.num_rows, 0  # compacted already (unique by construction)
    # ParquetFile.read, not read_table: no dataset discovery (~2.5 ms less a file; a day has a part per object)
    table = pa.concat_tables([pq.ParquetFile(f).read().cast(SCHEMA) for f in files], promote_options="default")
    table, before, kept = _sorted_unique(table)
    if kept:  # (UTC day, file, line): stable by day over the (file, line) order _sorted_unique left
        day = pc.floor_temporal(table.column("measurement_start_time"), unit="day")
        table = table.take(pc.sort_indices(pa.table({"d": day}), sort_keys=[("d", "ascending")]))
    tag = hashlib.sha256("\n".join(f"{f.parent.name}/{f.name}" for f in files).encode()).hexdigest()[:12]
    out = month_dir(root, month) / f"data-{tag}.parquet"
    write_atomic(table, out)
    for f in files:
        if f != out:
            f.unlink(missing_ok=True)
    for d in {f.parent for f in day_files}:
        with contextlib.suppress(OSError):  # a file written there meanwhile keeps it
            d.rmdir()  # the day's partition, now empty
    return kept, before - kept


def compact_day(root: Path, day: dt.date) -> tuple[int, int]:
    """Compact the month of ``day`` (:func:`compact_month`; the store was compacted by day before issue 13)."""
    return compact_month(root, day.isoformat()[:7])


def _sorted_unique(table: pa.Table) -> tuple[pa.Table, int, int]:
    """``table`` sorted by (file, line) (stable), each ``mkey`` once (its first row in that order);
    returns (table, rows before, rows kept). In Arrow and NumPy: the pandas round trip it replaces
    (to_pandas, sort_values, drop_duplicates, from_pandas) cost ~45 µs a measurement of the sync's
    CPU (python -m bench.ooni_sync, 2026-12-03)."""
    before = table.num_rows
    if not before:
        return table, 0, 0
    order = pc.sort_indices(table, sort_keys=[("file", "ascending"), ("line", "ascending")])
    table = table.take(order)
    keys = table.column("mkey").to_numpy(zero_copy_only=False)
    _, first = np.unique(keys, return_index=True)  # the first index of each key in sorted order
    if len(first) != before:
        first.sort()
        table = table.take(pa.array(first))
    return table, before, table.num_rows
