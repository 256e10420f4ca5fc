"""Where the synced OONI store's files are (no pandas, no pyarrow: the sync's main process only
downloads and keeps the manifest, and needs these paths without importing the analysis stack;
:mod:`analysis.ooni_store` re-exports them). Layout: see :mod:`analysis.ooni_store`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

#: The directory under the sync output that holds the Parquet partitions.
STORE_DIR = "store"
DAY_PREFIX = "day="
MONTH_PREFIX = "month="


def store_root(out: Path) -> Path:
    """The store directory inside a sync output (also accepted: the store directory itself)."""
    return out if out.name == STORE_DIR or any(out.glob(f"{DAY_PREFIX}*")) or any(out.glob(f"{MONTH_PREFIX}*")) \
        else out / STORE_DIR


def day_dir(root: Path, day: dt.date) -> Path:
    return root / f"{DAY_PREFIX}{day.isoformat()}"


def month_dir(root: Path, month: str) -> Path:
    """The partition of ``month`` ("YYYY-MM")."""
    return root / f"{MONTH_PREFIX}{month}"


def is_store_file(path: Path) -> bool:
    """True for a Parquet file of the store (``…/month=YYYY-MM/*.parquet``, ``…/day=YYYY-MM-DD/*.parquet``)."""
    return path.suffix == ".parquet" and path.parent.name.startswith((MONTH_PREFIX, DAY_PREFIX))


def days(root: Path) -> list[dt.date]:
    """The days that have a partition."""
    out = []
    for d in root.glob(f"{DAY_PREFIX}*"):
        try:
            out.append(dt.date.fromisoformat(d.name[len(DAY_PREFIX):]))
        except ValueError:
            continue
    return sorted(out)


def months(root: Path) -> list[str]:
    """The months ("YYYY-MM") that have a partition: a month's own, or a day's of that month."""
    out = {d.isoformat()[:7] for d in days(root)}
    for d in root.glob(f"{MONTH_PREFIX}*"):
        name = d.name[len(MONTH_PREFIX):]
        try:
            dt.date.fromisoformat(name + "-01")
        except ValueError:
            continue
        out.add(name)
    return sorted(out)


def iter_store_files(root: Path) -> Iterable[Path]:
    """The store's Parquet files: month partitions, and day partitions (parts, the older layout's data files)."""
    return sorted([*root.glob(f"{MONTH_PREFIX}*/*.parquet"), *root.glob(f"{DAY_PREFIX}*/*.parquet")])
