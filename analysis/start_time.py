"""``measurement_start_time`` (OONI's and ours) → UTC timestamps, strictly: the one parser of the
report loader (:mod:`analysis.load`), the OONI store (:mod:`analysis.ooni_store`) and the sync's
period filter (:func:`analysis.ooni_sync.out_of_why`), so a line one of them places in a period
the others do not refuse.

OONI's data format (df-000) writes ``"YYYY-MM-DD hh:mm:ss"`` in UTC, and so does the probe
(:func:`probe.timing.ooni_time`); every record in ``tests/data`` and in the OONI samples
(bucket dumps, explorer and probe-cli measurements) has that form. Also read: the same, zero
padded, with a ``T``, a fraction of a second and a ``Z`` or ``±hh:mm`` offset
(``2021-01-02T03:04:05.25Z``: OONI's API writes times so). Any other text is not a start time:
an unpadded or partial form (``2021-1-5 00:00:00``, ``2021-01-05``, ``2021-01-05 0:0:0``),
spaces around it, an impossible date or time (``2020-02-30``, ``24:00:00``) or one outside
datetime64[ns] (years 1677–2262). The callers count such a line invalid and name it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: OONI's form (df-000), read by Arrow's strptime after the text matched :data:`PLAIN`.
FORMAT = "%Y-%m-%d %H:%M:%S"
#: Exactly OONI's form: strptime alone also takes "2021-1-5 0:0:0" and leading spaces.
PLAIN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
#: The zero-padded ISO 8601 forms also read (by pandas: rare).
ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?$"
#: The type of the parsed times.
TYPE = pa.timestamp("ns", tz="UTC")
_PLAIN = re.compile(PLAIN.rstrip("$") + r"\Z")
#: The whole seconds datetime64[ns] holds.
_FIRST, _LAST = dt.datetime(1677, 9, 21, 0, 12, 44), dt.datetime(2262, 4, 11, 23, 47, 16)


def parse_start_times(text: pa.Array) -> pa.Array:
    """Start times (an Arrow string array) → :data:`TYPE`, null where a value is not a start time.
    OONI's form in Arrow alone (1M values: 0.58 CPU-s at load 6, the lenient parse it replaced 0.27); other
    ISO forms by pandas (rare)."""
    plain = pc.fill_null(pc.match_substring_regex(text, PLAIN), False)
    text_plain = pc.if_else(plain, text, pa.scalar(None, text.type))
    ts = pc.strptime(text_plain, format=FORMAT, unit="ns", error_is_null=True)
    # strptime rolls impossible values over (2020-02-30 → 2020-03-01, 00:00:60 → 00:01:00; it
    # refuses other out-of-range fields): the day and the second written must be those parsed
    same = pc.is_valid(ts)
    for start, part in ((8, pc.day), (17, pc.second)):
        written = pc.cast(pc.utf8_slice_codeunits(text_plain, start, start + 2), pa.int8())
        same = pc.and_kleene(same, pc.equal(written, part(ts)))
    ts = pc.if_else(pc.fill_null(same, False), ts, pa.scalar(None, ts.type)).cast(TYPE)
    iso = pc.and_(pc.invert(plain), pc.fill_null(pc.match_substring_regex(text, ISO), False))
    if not pc.any(iso).as_py():
        return ts
    where = np.flatnonzero(iso.to_numpy(zero_copy_only=False))
    other = pd.to_datetime(pd.Series(text.take(pa.array(where)).to_pylist(), dtype=object), format="ISO8601",
                           utc=True, errors="coerce")
    inside = (other >= pd.Timestamp.min.tz_localize("UTC")) & (other <= pd.Timestamp.max.tz_localize("UTC"))
    other = other.where(inside).dt.as_unit("ns")
    out = ts.to_pandas()  # a copy: Arrow arrays are immutable
    out.iloc[where] = other.to_numpy()
    return pa.Array.from_pandas(out).cast(TYPE)


def start_times(values: Sequence[Any]) -> pd.Series:
    """Start times of any Python values → a ``datetime64[ns, UTC]`` series, NaT where a value is not
    a start time (:func:`parse_start_times`; a value that is not text is not one either)."""
    try:
        arr = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a non-string value somewhere
        arr = pa.array([v if isinstance(v, str) else None for v in values], pa.string())
    return pd.Series(parse_start_times(arr).to_pandas(), dtype=pd.DatetimeTZDtype("ns", "UTC"))


def is_start_time(value: Any) -> bool:
    """Whether one value is a start time :func:`parse_start_times` reads; OONI's form without Arrow
    (~1 µs, not ~30: the sync asks it of every line out of its period)."""
    if not isinstance(value, str):
        return False
    if _PLAIN.match(value):
        try:
            return _FIRST <= dt.datetime.fromisoformat(value) <= _LAST
        except ValueError:  # 2020-02-30, 24:00:00, 00:00:60
            return False
    return bool(parse_start_times(pa.array([value], pa.string()))[0].is_valid)

