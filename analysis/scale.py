"""The same analysis under Dask, for data that outgrows one machine (``kzprobe report --engine dask``).

* :func:`load_dask` — one partition per measurement file, each loaded by
  :func:`analysis.load.load_file` (``dask.dataframe.from_map``), with
  :func:`analysis.load.empty_frame` as the schema (``meta``).
* :func:`compare_dask` — what runs per partition is the *reduction*: each partition
  keeps only the columns the comparison reads and, unless a claim concerns every
  domain (``targets = ["*"]``), only the rows whose domain is one of the claims'
  targets or a subdomain of one. The reduced partitions are then gathered and
  :func:`analysis.compare.compare` runs once, in pandas, on them. ``compare`` itself is
  not split into per-partition and combine steps (its per-claim statistics — Wilson
  intervals, distinct vantages and networks, example ids, intermittency — are computed
  on the claim's rows as a whole), so the reduction is what scales: the measurements of
  the report's targets, not the whole data set, must fit in memory. For a claim with
  ``"*"`` targets only the column projection applies.

The result equals ``compare(claims, load(paths).frame, **kw)`` (tested on a local
``distributed`` cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import COLUMNS, LoadError, empty_frame, find_files, load_file

#: Columns :func:`analysis.compare.compare` reads (its docstring), plus the evidence pointers.
COMPARE_COLUMNS: tuple[str, ...] = (
    "measurement_uid", "domain", "measurement_start_time", "outcome", "blocking", "mitm_root", "vantage_id",
    "probe_asn", "probe_cc", "lab_scenario", "vantage_offline", "control_intercepted", "control_failure",
    "dns_failure", "tcp_failure",
)

_OPEN_CATEGORICALS = ("file", "test_name", "probe_asn", "probe_cc")


def meta() -> pd.DataFrame:
    """The empty frame Dask uses as the schema (open categoricals marked as unknown categories)."""
    from dask.dataframe.utils import clear_known_categories

    return clear_known_categories(empty_frame(), cols=list(_OPEN_CATEGORICALS))


def load_dask(paths: Sequence[str | Path]) -> Any:
    """A Dask DataFrame of the measurements under ``paths``: one partition per file.

    Args:
        paths: files or directories, as for :func:`analysis.load.load`.

    Returns:
        ``dask.dataframe.DataFrame`` with :data:`analysis.load.COLUMNS` (lazy; nothing is
        read until computed). Problems in the files are logged by each partition's
        loader (:class:`analysis.load.LoadStats` is per partition and not gathered).

    Raises:
        LoadError: a path does not exist, or no measurement file is under ``paths``.
    """
    import dask.dataframe as dd

    files = [str(f) for f in find_files(paths)]
    if not files:
        raise LoadError(f"no measurement files (*.jsonl, *.json, *.gz) under {', '.join(map(str, paths))}")
    return dd.from_map(load_file, files, meta=meta(), label="load-measurements", enforce_metadata=False)


def _load_part(path: str) -> tuple[pd.DataFrame, Any]:
    """One partition: a file's rows and its loader's counts (:class:`analysis.load.LoadStats`)."""
    from analysis.load import LoadStats

    stats = LoadStats()
    return load_file(path, stats, finish=False), stats  # logged once, gathered (gather_stats)


def load_dask_counted(paths: Sequence[str | Path]) -> list[Any]:
    """:func:`load_dask` with each partition's loader counts: one ``dask.delayed`` (rows, counts) pair per
    file (:class:`analysis.load.LoadStats`). Read them once with :func:`persist_counted` (on the cluster).

    Raises:
        LoadError: a path does not exist, or no measurement file is under ``paths``.
    """
    import dask

    files = [str(f) for f in find_files(paths)]
    if not files:
        raise LoadError(f"no measurement files (*.jsonl, *.json, *.gz) under {', '.join(map(str, paths))}")
    return [dask.delayed(_load_part)(f) for f in files]


def persist_counted(pairs: list[Any]) -> tuple[Any, list[Any]]:
    """Read the files of :func:`load_dask_counted` once: (a Dask DataFrame of their rows, persisted, one
    partition per file; their :class:`analysis.load.LoadStats`, gathered, in file order)."""
    import dask
    import dask.dataframe as dd

    pairs = list(dask.persist(*pairs))
    ddf = dd.from_delayed([p[0] for p in pairs], meta=meta(), verify_meta=False)
    return ddf, list(dask.compute(*[p[1] for p in pairs]))


def gather_stats(parts: Sequence[Any], duplicates: DaskLoadStats | None = None,
                 inputs: Sequence[str | Path] = ()) -> Any:
    """The partitions' :class:`analysis.load.LoadStats` merged in file order (what the pandas engine's
    :func:`analysis.load.load` counts: files, lines, torn, invalid, blank, skipped, per file, errors),
    after the ``inputs`` left out unopened (a FIFO, a device: :func:`analysis.load.name_refused_inputs`),
    with the duplicates :func:`drop_duplicates_dask` dropped taken out of ``loaded`` as
    :func:`analysis.load.drop_duplicates` does. The files' problems are logged here, once, as the
    pandas engine logs them (:meth:`analysis.load.LoadStats.finish`): not by each partition."""
    from analysis.load import LoadStats, name_refused_inputs

    out = LoadStats()
    name_refused_inputs(inputs, out)
    for st in parts:
        out.merge(st)
    if duplicates is not None and duplicates.duplicates:
        out.duplicates += duplicates.duplicates
        out.loaded -= duplicates.duplicates
        for f, c in duplicates.by_file.items():
            out.add_file(f, duplicates=c["duplicates"], loaded=-c["duplicates"])
    return out.finish()


@dataclass
class DaskLoadStats:
    """What the Dask engine counts while loading: the duplicates it dropped, in all and per file
    of the dropped copy (torn and invalid lines are the loaders' counts: :func:`gather_stats`)."""

    duplicates: int = 0
    by_file: dict[str, dict[str, int]] = field(default_factory=dict)


def drop_duplicates_dask(ddf: Any) -> tuple[Any, DaskLoadStats]:
    """``ddf`` without the rows that repeat an earlier one (in partition, then row order: the
    same rule as :func:`analysis.load.drop_duplicates`), partitions kept, and the count.

    The keys (one short string a row) are gathered to decide; the rows stay on the cluster.
    """
    import dask
    import dask.dataframe as dd

    parts = ddf.to_delayed()
    keyed = dask.compute(*[dask.delayed(_keys_and_files)(p) for p in parts])
    seen: set[Any] = set()
    masks = []
    stats = DaskLoadStats()
    for k, files in keyed:
        dup = np.fromiter((x in seen for x in k), bool, len(k)) | k.duplicated(keep="first").to_numpy()
        seen.update(k[~dup])
        masks.append(dup)
        stats.duplicates += int(dup.sum())
        for f, n in files[dup].value_counts().items():
            mine = stats.by_file.setdefault(str(f), {"duplicates": 0})
            mine["duplicates"] += int(n)
    if not stats.duplicates:
        return ddf, stats
    kept = [dask.delayed(_without)(p, m) if m.any() else p for p, m in zip(parts, masks, strict=True)]
    return dd.from_delayed(kept, meta=ddf._meta, verify_meta=False), stats


def _keys_and_files(part: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    from analysis.load import dedup_key

    return dedup_key(part), part["file"].astype(str).reset_index(drop=True)


def _without(part: pd.DataFrame, dup: Any) -> pd.DataFrame:
    return part.loc[~dup].reset_index(drop=True)


def _matches(domains: pd.Series, targets: frozenset[str]) -> pd.Series:
    """Rows whose domain equals a target or is a subdomain of one (analysis.compare's rule)."""
    uniq = domains.dropna().unique()
    keep = set()
    for d in uniq:
        d = str(d)
        parts = d.split(".")
        if any(".".join(parts[i:]) in targets for i in range(len(parts))):
            keep.add(d)
    return domains.isin(keep).fillna(False).astype(bool)


def _reduce(part: pd.DataFrame, columns: list[str], targets: frozenset[str] | None) -> pd.DataFrame:
    """Per partition: the columns compare reads, and (targets given) the rows it can use."""
    out = part[columns]
    if targets is not None:
        out = out[_matches(out["domain"], targets)]
    return out


def compare_dask(claims: Sequence[Any], ddf: Any, **kw: Any) -> pd.DataFrame:
    """:func:`analysis.compare.compare` over a Dask DataFrame (see the module docstring for how).

    Args:
        claims: from :func:`analysis.claims.load_claims`.
        ddf: from :func:`load_dask` (any Dask DataFrame with the columns compare reads).
        **kw: passed to :func:`analysis.compare.compare` (``ignore_period``, ``as_of``).

    Returns:
        The same frame ``compare`` returns on the whole data.
    """
    from analysis.claims import claim_domains
    from analysis.compare import compare

    targets: set[str] = set()
    for c in claims:
        if c.testable:
            targets |= claim_domains(c)
    keep: frozenset[str] | None = None if "*" in targets else frozenset(targets)
    columns = [c for c in COLUMNS if c in COMPARE_COLUMNS and c in ddf.columns]
    reduced = ddf.map_partitions(_reduce, columns, keep, meta=meta()[columns])
    frame = reduced.compute()
    frame = frame.reset_index(drop=True)
    for c in frame.columns:  # partitions may carry different categories of the open vocabularies
        if c in _OPEN_CATEGORICALS:
            frame[c] = frame[c].astype("category")
    return compare(claims, frame, **kw)
