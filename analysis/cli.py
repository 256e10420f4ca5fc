"""``kzprobe report`` and ``kzprobe claims``: thin commands over :mod:`analysis`.

This module imports only the standard library at import time, so ``probe.cli`` can
register these subcommands on a probe installed without the analysis extras; pandas,
matplotlib and jinja2 are imported when a command runs, and their absence gives one clear
message (install ``kzprobe[analysis]``) and exit 78.

Which measurements: simulated lab ones (``lab_scenario``) are left out and counted unless
``--lab`` is given, and then only they are used, with a banner (:mod:`analysis.scope`);
claims are judged only on ``--country``'s (default KZ) measurements, the others counted.

Exit codes (sysexits, :class:`probe.exitcodes.ExitCode`): 0 ok; 66 EX_NOINPUT an ``--in`` path does
not exist or holds no measurements, or every one is a lab measurement and ``--lab`` was not
given (or none is and it was); 73 EX_CANTCREAT ``--out`` cannot be created or written;
74 EX_IOERR writing the report failed midway; 78 EX_CONFIG the analysis extras (or any
third-party module they import) are missing or the claims file is invalid; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from probe.exitcodes import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_INTERRUPTED,
    EX_IOERR,
    EX_NOINPUT,
    EX_OK,
)

DEFAULT_TITLE = "kzprobe: measurements vs. Freedom on the Net 2021 — Kazakhstan"
INSTALL_HINT = "install kzprobe[analysis] (pip install 'kzprobe[analysis]')"
#: Our own top-level packages: a ModuleNotFoundError naming one of them is a bug, not a missing extra.
#: Any other missing module (msgspec, pandas, pyarrow, matplotlib, jinja2 or one of their own
#: dependencies) means the analysis extras are not (fully) installed: exit 78 with INSTALL_HINT.
OWN_PACKAGES = frozenset({"probe", "analysis", "bench", "tests"})
DASK_MODULES = frozenset({"dask", "distributed"})


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``report`` and ``claims`` subcommands on ``kzprobe``'s subparsers."""
    r = sub.add_parser(
        "report", help="compare measurements with the report's claims; write HTML, Markdown, CSV and plots",
        description="Load measurements (kzprobe's JSONL and OONI's JSON/JSONL, any format version, .gz too) from "
                    "every --in, judge each testable claim of Freedom on the Net 2021 — Kazakhstan against them, "
                    "and write <out>/index.html (self-contained: opens from disk with no network), report.md, "
                    "claims.csv (one row per claim) and the plots as PNG. Exit 66 when an --in does not exist or "
                    "holds no measurements, 73 when --out cannot be written.")
    r.add_argument("--in", dest="inputs", metavar="DIR", action="append",
                   help="a directory (searched recursively) or file of measurements; repeatable "
                        "(default: the probe's state dir, where `kzprobe run` writes)")
    r.add_argument("--out", "-o", metavar="DIR", required=True, help="write the report into this directory")
    when = r.add_mutually_exclusive_group()
    when.add_argument("--ignore-period", action="store_true",
                      help="judge every measurement against every claim whatever its date (lab runs); "
                           "the report says so")
    when.add_argument("--as-of", metavar="YYYY-MM-DD", type=_date,
                      help="take every measurement as made on this UTC day (a lab scenario modelling one day, "
                           "e.g. 2021-05-31); the report says so")
    r.add_argument("--lab", action="store_true",
                   help="report on the lab's simulated measurements (those with annotations.lab_scenario, "
                        "written by `kzprobe lab run`) instead of real ones; without it they are left out "
                        "and counted")
    r.add_argument("--country", metavar="CC", type=_country, default="KZ",
                   help="judge the claims only on measurements whose probe_cc is this country "
                        "(default KZ, the report's; 'any' = every country); the others are counted")
    r.add_argument("--engine", choices=("pandas", "dask"), default="pandas",
                   help="pandas (default) or dask (partitions on a local Dask cluster)")
    r.add_argument("--title", metavar="TEXT", default=DEFAULT_TITLE, help="the report's title")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (none anyway when not a TTY)")
    c = sub.add_parser(
        "claims", help="list the report's claims that a measurement can test",
        description="List the claims of seeds/claims.toml: id, report section, expected observation, period, "
                    "targets and quote. --all adds the claims no probe can test, with the reason.")
    c.add_argument("--all", action="store_true", help="also list the out-of-scope claims, with their reason")
    c.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    from analysis.ooni_cli import add_parser as _add_ooni_parser

    _add_ooni_parser(sub)


def _country(text: str) -> str | None:
    t = text.strip()
    if t.lower() == "any":
        return None
    if len(t) != 2 or not t.isascii() or not t.isalpha():
        raise argparse.ArgumentTypeError(f"expected a two-letter country code (ISO 3166-1) or 'any', got {text!r}")
    return t.upper()


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``args.command`` ("report" or "claims"); returns the exit code."""
    try:
        if args.command == "report":
            return cmd_report(args)
        if args.command == "ooni":
            from analysis.ooni_cli import run as ooni_run

            return ooni_run(args)
        return cmd_claims(args)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top and top not in OWN_PACKAGES:  # a third-party module: an extra (or one of its dependencies) missing
            print(f"kzprobe {args.command}: needs {exc.name}, which is not installed: {INSTALL_HINT}"
                  + (" and kzprobe[dask] for --engine dask" if top in DASK_MODULES else ""), file=sys.stderr)
            return EX_CONFIG
        raise
    except KeyboardInterrupt:
        print(f"kzprobe {args.command}: interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    except BrokenPipeError:  # `kzprobe claims | head`: the reader went away
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return EX_OK


def _err(msg: str) -> None:
    print(f"kzprobe report: {msg}", file=sys.stderr)


def _writable(out: Path) -> str | None:
    """None when ``out`` can be created and written; else why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / ".kzprobe-write-test"
        probe_file.touch()
        probe_file.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def cmd_report(args: argparse.Namespace) -> int:
    """``kzprobe report``: load, compare, render; prints where the report is and a one-line summary."""
    from probe.config import state_dir

    inputs = [Path(p) for p in (args.inputs or [state_dir()])]
    missing = [p for p in inputs if not p.exists()]
    if missing:
        _err(f"--in {missing[0]}: no such file or directory")
        return EX_NOINPUT
    out = Path(args.out)
    why = _writable(out)
    if why:
        _err(f"cannot write to the output directory {out}: {why}")
        return EX_CANTCREAT

    from analysis import load as load_mod
    from analysis.claims import ClaimsError, load_claims
    from analysis.report import ReportError, iter_status_counts, render

    try:
        claims = load_claims()
    except (ClaimsError, OSError) as exc:
        _err(f"claims: {exc}")
        return EX_CONFIG
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        if args.engine == "dask":
            frame, stats, results = _dask(inputs, claims, ignore_period=args.ignore_period, as_of=args.as_of,
                                          lab=args.lab, country=args.country)
        else:
            from analysis.compare import compare

            loaded = load_mod.load(inputs, progress=progress)
            frame, stats = loaded.frame, loaded.stats
            results = None
    except load_mod.LoadError as exc:
        _err(str(exc))
        return EX_NOINPUT
    empty = _without_measurements(inputs, frame, load_mod)
    if empty:
        counts = (f"; {stats.files} file(s), {stats.torn} torn and {stats.invalid} invalid line(s) in all"
                  if stats is not None else "")
        _err(f"--in {empty}: no measurements found (looked for *.jsonl, *.json, *.jsonl.gz, *.json.gz with "
             f"web_connectivity measurements{counts})")
        return EX_NOINPUT
    from analysis.compare import other_countries
    from analysis.scope import select

    everything = frame
    frame, scope = select(everything, lab=args.lab)
    if not len(frame):
        if args.lab:
            _err(f"no lab measurements (annotations.lab_scenario) among the {len(everything):,} loaded; "
                 "leave out --lab to report on them")
        else:
            _err(f"all {len(everything):,} measurements loaded are simulated lab measurements "
                 f"(scenario {', '.join(s for s, _ in scope.lab_left_out)}, written by `kzprobe lab run`); "
                 "pass --lab to report on them as such")
        return EX_NOINPUT
    scope = dataclasses.replace(scope, country=args.country,
                                other_countries=tuple(other_countries(frame, args.country)))
    with _status(progress, f"comparing {len(frame):,} measurements with {len(claims)} claims, drawing the report"):
        if results is None:
            results = compare(claims, frame, ignore_period=args.ignore_period, as_of=args.as_of,
                              country=args.country)
        agreement = None
        if (frame["source"].astype(str) == "ooni").any():
            from analysis.ooni import agreement as agreement_of

            agreement = agreement_of(frame)
        try:
            from analysis.outages import report_section

            volume = report_section(claims, frame, args.country)
            paths = render(frame, results, agreement=agreement, stats=stats, out_dir=out, title=args.title,
                           ignore_period=args.ignore_period, as_of=args.as_of, scope=scope, volume=volume)
        except ReportError as exc:
            _err(str(exc.strerror or exc))
            return EX_IOERR
    verdicts = ", ".join(f"{label} {n}" for label, n in iter_status_counts(results)) or "no claims"
    print(f"report: {paths.index_html.resolve()}")
    print((f"SIMULATED LAB MEASUREMENTS of scenario {scope.scenario_text} (--lab), not real ones: " if scope.lab
           else "")
          + f"{len(frame):,} measurements from {frame['vantage_id'].nunique()} vantage point(s), "
          f"{frame['domain'].nunique()} target(s); "
          + (f"{stats.torn + stats.invalid} bad line(s) skipped; " if stats is not None else "")
          + f"engine {args.engine}; "
          f"claims: {verdicts}" + (" (dates ignored)" if args.ignore_period else "")
          + (f" (every measurement taken as of {args.as_of})" if args.as_of else "")
          + _left_out(scope))
    return EX_OK


def _left_out(scope: Any) -> str:
    """The summary line's tail: what was left out of the report and why."""
    parts = []
    if scope.n_lab_left_out:
        parts.append(f"{scope.n_lab_left_out:,} simulated lab measurement(s) left out "
                     f"(scenario {', '.join(s for s, _ in scope.lab_left_out)}; --lab reports on them)")
    if scope.n_real_left_out:
        parts.append(f"{scope.n_real_left_out:,} real measurement(s) left out of this lab report")
    if scope.n_other_country:
        parts.append(f"{scope.n_other_country:,} measurement(s) from other countries "
                     f"({', '.join(f'{c} {n}' for c, n in scope.other_countries[:5])}) were not used against "
                     f"the claims about {scope.country}")
    return "".join(f"; {p}" for p in parts)


def _status(enabled: bool, text: str) -> Any:
    """A transient spinner on stderr (rich) while the report is computed; a no-op when not a TTY."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(text)


def _without_measurements(inputs: list[Path], frame: Any, load_mod: Any) -> Path | None:
    """The first ``--in`` none of whose files contributed a measurement to ``frame``, else None."""
    loaded = set(frame["file"].astype(str).unique()) if len(frame) else set()
    for p in inputs:
        files = {str(f) for f in load_mod.find_files([p])}
        # rows of the synced OONI store (*.parquet) name the bucket object they came from, not the local file
        if any(f.endswith(".parquet") for f in files) and loaded - files:
            continue
        if not files & loaded:
            return p
    return None


def _dask(inputs: list[Path], claims: Any, *, ignore_period: bool, as_of: dt.date | None, lab: bool = False,
          country: str | None = "KZ") -> tuple[Any, Any, Any]:
    """Load and compare on a local Dask cluster (``distributed``, in this process, one worker thread per CPU).

    Returns (frame, stats, results). The measurements are loaded once (persisted on the
    cluster), compared there (:func:`analysis.scale.compare_dask`; only the lab's rows with
    ``lab``, else only the real ones — :func:`analysis.scope.select` — and ``country``'s) and
    then gathered whole for the figures (the caller selects them the same way). ``stats`` is None: Dask's per-file loaders do not gather their counts of torn
    and invalid lines (they log them).
    """
    import contextlib
    import os

    from analysis import scale

    try:
        ddf = scale.load_dask(inputs)
    except ValueError as exc:  # no measurement file at all
        from analysis.load import LoadError

        raise LoadError(str(exc)) from exc
    _warm_caches()
    with contextlib.ExitStack() as stack:
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # dask without distributed: its local threaded scheduler
            pass
        else:
            logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger().level))
            # in this process; its HTTP endpoints on loopback only (the default is every interface, port 8787)
            cluster = stack.enter_context(LocalCluster(
                n_workers=1, threads_per_worker=os.cpu_count() or 1, processes=False,
                dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0"))
            stack.enter_context(Client(cluster))
        ddf = ddf.persist()
        from analysis.scope import lab_mask

        chosen = ddf.map_partitions(lambda part: part[lab_mask(part) == lab], meta=ddf._meta)
        results = scale.compare_dask(claims, chosen, ignore_period=ignore_period, as_of=as_of, country=country)
        frame = ddf.compute().reset_index(drop=True)
    for c in ("file", "test_name", "probe_asn", "probe_cc"):  # partitions carry their own categories
        if c in frame.columns:
            frame[c] = frame[c].astype("category")
    return frame, None, results


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


def _claim_dict(c: Any) -> dict[str, Any]:
    d = dataclasses.asdict(c)
    for k, v in d.items():
        if isinstance(v, (dt.date, dt.datetime)):
            d[k] = v.isoformat()
        elif isinstance(v, tuple):
            d[k] = list(v)
    return d


def cmd_claims(args: argparse.Namespace) -> int:
    """``kzprobe claims``: the testable claims (``--all``: and the out-of-scope ones), as a table or JSON."""
    from analysis.claims import ClaimsError, load_claims

    try:
        claims = load_claims()
    except (ClaimsError, OSError) as exc:
        print(f"kzprobe claims: {exc}", file=sys.stderr)
        return EX_CONFIG
    shown = [c for c in claims if args.all or c.testable]
    if args.json:
        json.dump([_claim_dict(c) for c in shown], sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return EX_OK
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=None if sys.stdout.isatty() else 160, no_color=not sys.stdout.isatty())
    table = Table(title=f"claims of Freedom on the Net 2021 — Kazakhstan ({len(shown)} of {len(claims)})")
    for col, kw in (("id", {"no_wrap": True}), ("§", {}), ("expect", {}), ("period", {"no_wrap": True}),
                    ("targets", {"overflow": "fold"}), ("quote", {"overflow": "fold"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for c in shown:
        targets = c.target_list or ", ".join(c.targets[:4]) + (f" (+{len(c.targets) - 4})" if len(c.targets) > 4
                                                                else "")
        quote = c.quote if c.testable else f"{c.quote}\n[out of scope: {c.untestable_reason}]"
        table.add_row(*(Text(str(x)) for x in (c.id, c.section, c.expect if c.testable else "—",
                                                f"{c.period_start} – {c.period_end}", targets, quote)))
    console.print(table)
    if not args.all:
        n_out = sum(1 for c in claims if not c.testable)
        if n_out:
            console.print(f"{n_out} more claim(s) no probe can test: kzprobe claims --all", markup=False)
    return EX_OK
