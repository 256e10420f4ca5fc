"""Building the report as a library call: load → choose the measurements → compare with the claims → render.

``kzprobe report`` is a thin shell over :func:`build_report` (it parses flags, prints where the report
is and a one-line summary, and maps exceptions to exit codes). Every failure is an exception naming
its input:

* :class:`InputMissingError` / :class:`NoMeasurementsError` / :class:`NothingInScopeError` (all
  :class:`analysis.load.LoadError`): an input path is missing, no input holds a measurement, or every
  measurement is of the other kind (lab vs. real) than asked;
* :class:`OutputDirError` (a :class:`analysis.report.ReportError`, an ``OSError``): the output
  directory cannot be created or written — checked before anything is loaded;
* :class:`analysis.claims.ClaimsError`: the claims file is invalid or unreadable;
* :class:`analysis.report.ReportError`: writing the report failed midway.

An input holding no measurement (random bytes, a text file) beside inputs that do is not an error: the
report is built from the others and names it with its counts (:attr:`analysis.scope.Scope.empty_inputs`);
so is one that is not a regular file (a FIFO, a device, a socket, a symlink to one), never opened.

Which measurements: simulated lab ones (``lab_scenario``) are left out and counted unless ``lab``,
and then only they are used (:mod:`analysis.scope`); claims are judged only on ``country``'s
measurements, the others counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from analysis import load as load_mod
from analysis.claims import ClaimsError, load_claims
from analysis.load import LoadError, LoadStats
from analysis.preflight import missing_input, missing_text, output_dir_problem, output_dir_text
from analysis.report import ReportError, ReportPaths, render, started_figures
from analysis.scope import EmptyInput, Scope

__all__ = ["DEFAULT_TITLE", "BuiltReport", "InputMissingError", "NoMeasurementsError", "NothingInScopeError",
           "OutputDirError", "build_report"]

DEFAULT_TITLE = "kzprobe: measurements vs. Freedom on the Net 2021 — Kazakhstan"

Engine = Literal["pandas", "dask"]


class InputMissingError(LoadError):
    """An input path does not exist (``path``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(missing_text(path))
        self.path = path


class NoMeasurementsError(LoadError):
    """An input path holds no measurement (``path``; ``stats`` the loader's counts)."""

    def __init__(self, path: Path, stats: LoadStats | None) -> None:
        counts = f"; {input_counts(path, stats).counts_text}" if isinstance(stats, LoadStats) else ""
        super().__init__(f"{path}: no measurements found (looked for *.jsonl, *.json, *.jsonl.gz, *.json.gz with "
                         f"web_connectivity measurements{counts})")
        self.path = path
        self.stats = stats


def input_counts(path: Path, stats: Any) -> EmptyInput:
    """What the loader read in the ``--in`` ``path``: its files' counts summed (``stats.by_file``)."""
    files = [str(f) for f in load_mod.find_files([path])] if path.exists() else []
    by_file = getattr(stats, "by_file", None) or {}
    total = dict.fromkeys(("lines", "invalid", "torn", "skipped"), 0)
    for f in files:
        c = by_file.get(f) or {}
        for k in total:
            total[k] += int(c.get(k) or 0)
    return EmptyInput(path=path, files=len(files), why=load_mod.refused_input(path) or "", **total)


class NothingInScopeError(LoadError):
    """Every measurement loaded is of the other kind: all simulated lab ones without ``lab``, or none with it."""

    def __init__(self, *, lab: bool, loaded: int, scope: Scope) -> None:
        if lab:
            msg = (f"no lab measurements (annotations.lab_scenario) among the {loaded:,} loaded; "
                   "leave out --lab to report on them")
        else:
            msg = (f"all {loaded:,} measurements loaded are simulated lab measurements "
                   f"(scenario {', '.join(s for s, _ in scope.lab_left_out)}, written by `kzprobe lab run`); "
                   "pass --lab to report on them as such")
        super().__init__(msg)
        self.lab = lab
        self.loaded = loaded
        self.scope = scope


class OutputDirError(ReportError):
    """The output directory cannot be created or written (``path``; ``reason`` says why)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(output_dir_text(path, reason))
        self.path = path
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class BuiltReport:
    """What :func:`build_report` wrote and what it was built from.

    Attributes:
        paths: the files written (``paths.index_html`` is the report).
        frame: the measurements reported on (after choosing lab or real ones).
        stats: the loader's counts (files, torn and invalid lines, ...), the same under Dask.
        results: one row per claim (:mod:`analysis.compare` columns).
        scope: what was left out and why (lab/real, other countries).
        agreement: agreement with OONI's own verdicts (:func:`analysis.ooni.agreement`), None
            without OONI measurements.
        engine: "pandas" or "dask".
        n_claims: the number of claims compared.
    """

    paths: ReportPaths
    frame: pd.DataFrame
    stats: Any  # LoadStats (under Dask too: gathered from the per-file loaders)
    results: pd.DataFrame
    scope: Scope
    agreement: Any
    engine: Engine
    n_claims: int


def check_output_dir(out: Path) -> None:
    """Create ``out`` if missing and try a write there; raise :class:`OutputDirError` if it fails."""
    reason = output_dir_problem(out)
    if reason is not None:
        raise OutputDirError(out, reason)


def build_report(inputs: Sequence[str | Path], out_dir: str | Path, *, title: str | None = None,
                 engine: Engine = "pandas", ignore_period: bool = False, as_of: dt.date | None = None,
                 lab: bool = False, country: str | None = "KZ", claims_path: str | Path | None = None,
                 progress: bool = False,
                 stage: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None) -> BuiltReport:
    """Load the measurements of ``inputs``, compare them with the claims and write the report to ``out_dir``.

    Args:
        inputs: files or directories of measurements (ours, OONI's JSONL, the synced OONI store).
        out_dir: where the report goes (created).
        title: the report's title; None = :data:`DEFAULT_TITLE`.
        engine: "pandas" (in this process) or "dask" (a local Dask cluster, :mod:`analysis.scale`).
        ignore_period: judge every claim on all measurements, whatever their dates.
        as_of: take every measurement as made on this date.
        lab: report on the simulated lab measurements only (otherwise they are left out).
        country: judge the claims on this country's measurements only (None: all).
        claims_path: a claims file; None = the shipped one.
        progress: show the loader's progress bar (stderr).
        stage: a context manager factory wrapping the compare-and-render stage with its
            description (``kzprobe report`` shows a spinner); None = nothing shown.

    Returns:
        A :class:`BuiltReport`.

    Raises:
        InputMissingError, NoMeasurementsError, NothingInScopeError: (``LoadError``) see the module.
        LoadError: the loader refused an input.
        OutputDirError: ``out_dir`` cannot be written (checked before loading).
        ClaimsError: the claims file is invalid or unreadable.
        ReportError: writing the report failed.
    """
    paths = [Path(p) for p in inputs]
    missing = missing_input(paths)
    if missing is not None:
        raise InputMissingError(missing)
    out = Path(out_dir)
    check_output_dir(out)
    try:
        claims = load_claims(claims_path)
    except OSError as exc:
        raise ClaimsError(claims_path or "claims", f"cannot read: {exc}") from exc
    if engine == "dask":
        frame, stats, results = _dask(paths, claims, ignore_period=ignore_period, as_of=as_of, lab=lab,
                                      country=country)
    else:
        loaded = load_mod.load(paths, progress=progress)
        frame, stats, results = loaded.frame, loaded.stats, None
    empty = _without_measurements(paths, frame, stats)
    if len(empty) == len(paths):  # none gave a measurement: nothing to report on
        raise NoMeasurementsError(empty[0], stats)
    from analysis.compare import compare, other_countries
    from analysis.scope import select

    everything = frame
    frame, scope = select(everything, lab=lab)
    if not len(frame):
        raise NothingInScopeError(lab=lab, loaded=len(everything), scope=scope)
    # an --in of garbage beside ones with measurements is counted and left out, never fatal (house rule)
    scope = dataclasses.replace(scope, country=country, other_countries=tuple(other_countries(frame, country)),
                                empty_inputs=tuple(input_counts(p, stats) for p in empty))
    wrap = stage or (lambda _text: contextlib.nullcontext())
    with (wrap(f"comparing {len(frame):,} measurements with {len(claims)} claims, drawing the report"),
          started_figures(frame, out) as figures):  # a big frame's figures: drawn beside the comparison
        if results is None:
            results = compare(claims, frame, ignore_period=ignore_period, as_of=as_of, country=country)
        agreement = None
        if load_mod.value_mask(frame["source"], "ooni").any():
            from analysis.ooni import agreement as agreement_of

            agreement = agreement_of(frame)
        from analysis.outages import coverage_beside, report_section

        volume = report_section(claims, frame, country, coverage_beside(paths))  # the API's counts beside a store
        if volume is not None:  # outage claims: the volume evidence beside the comparison's verdict (claims.csv)
            by_id = {c["id"]: c for c in volume["claims"]}
            results["volume_evidence"] = [by_id[i]["strength"] if i in by_id else "" for i in results["claim_id"]]
            results["volume_summary"] = [by_id[i]["summary"] if i in by_id else "" for i in results["claim_id"]]
        written = render(frame, results, agreement=agreement, stats=stats, out_dir=out, title=title or DEFAULT_TITLE,
                         ignore_period=ignore_period, as_of=as_of, scope=scope, volume=volume, inputs=paths,
                         figures=figures)
    return BuiltReport(paths=written, frame=frame, stats=stats, results=results, scope=scope, agreement=agreement,
                       engine=engine, n_claims=len(claims))


def _without_measurements(inputs: list[Path], frame: pd.DataFrame, stats: Any = None) -> list[Path]:
    """The inputs none of whose files contributed a measurement to ``frame`` (or only duplicates of
    other files' measurements: ``stats.by_file``), in the order given."""
    files_col = frame["file"] if len(frame) else None
    if files_col is not None and isinstance(files_col.dtype, pd.CategoricalDtype):  # its categories, not its rows
        loaded = {str(c) for c in files_col.cat.remove_unused_categories().cat.categories}
        loaded |= {"nan"} if files_col.isna().any() else set()
    else:
        loaded = set(files_col.astype(str).unique()) if files_col is not None else set()
    if stats is not None:
        loaded |= {f for f, c in getattr(stats, "by_file", {}).items() if c.get("duplicates")}
    empty = []
    for p in inputs:
        files = {str(f) for f in load_mod.find_files([p])}
        # rows of the synced OONI store (*.parquet) name the bucket object they came from, not the local file
        if any(f.endswith(".parquet") for f in files) and loaded - files:
            continue
        if not files & loaded:
            empty.append(p)
    return empty


def _dask(inputs: list[Path], claims: Any, *, ignore_period: bool, as_of: dt.date | None, lab: bool = False,
          country: str | None = "KZ") -> tuple[Any, Any, Any]:
    """Load and compare on a local Dask cluster (``distributed``, in this process, one worker thread per CPU).

    Returns (frame, stats, results). The measurements are loaded once (persisted on the
    cluster), compared there (:func:`analysis.scale.compare_dask`; only the lab's rows with
    ``lab``, else only the real ones — :func:`analysis.scope.select` — and ``country``'s) and
    then gathered whole for the figures (the caller selects them the same way). Measurements given
    twice are counted once (:func:`analysis.scale.drop_duplicates_dask`); ``stats`` is a
    :class:`analysis.load.LoadStats` gathered from the per-file loaders (:func:`analysis.scale.gather_stats`):
    the same counts as the pandas engine's (torn, invalid, blank, per file, duplicates).
    """
    from analysis import scale

    pairs = scale.load_dask_counted(inputs)  # LoadError: no measurement file at all
    _warm_caches()
    with contextlib.ExitStack() as stack:
        try:
            from distributed import Client
        except ImportError:  # dask without distributed: its local threaded scheduler
            pass
        else:
            from analysis.local_cluster import local_cluster

            # in this process (its endpoints on loopback, its loggers at the CLI's level: local_cluster)
            cluster = stack.enter_context(local_cluster(
                n_workers=1, threads_per_worker=os.cpu_count() or 1, processes=False))
            stack.enter_context(Client(cluster))
        ddf, part_stats = scale.persist_counted(pairs)  # each file read once: its rows and its counts
        ddf, dups = scale.drop_duplicates_dask(ddf)
        stats = scale.gather_stats(part_stats, dups, inputs)
        ddf = ddf.persist()
        from analysis.scope import lab_mask

        chosen = ddf.map_partitions(lambda part: part[lab_mask(part) == lab], meta=ddf._meta)
        results = scale.compare_dask(claims, chosen, ignore_period=ignore_period, as_of=as_of, country=country)
        frame = ddf.compute().reset_index(drop=True)
    for c in ("file", "test_name", "probe_asn", "probe_cc"):  # partitions carry their own categories
        if c in frame.columns:
            frame[c] = frame[c].astype("category")
    return frame, stats, results


def _warm_caches() -> None:
    """Build the probe's lazily cached databases (blockpage fingerprints, interception roots) in this thread.

    The loaders of several worker threads would otherwise build them at once, and CPython
    3.11's ``ast.literal_eval`` (used while parsing the fingerprint CSV) is not safe to run
    concurrently: "SystemError: AST constructor recursion depth mismatch".
    """
    from probe.fingerprints import match_dns
    from probe.mitm import inspect_chain, known_roots

    match_dns(())
    known_roots()
    inspect_chain(())
