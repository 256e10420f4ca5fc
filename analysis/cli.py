"""``kzprobe report`` and ``kzprobe claims``: thin commands over :mod:`analysis`.

This module imports only the standard library at import time, so ``probe.cli`` can
register these subcommands on a probe installed without the analysis extras; pandas,
matplotlib and jinja2 are imported when a command runs, and their absence gives one clear
message (install ``kzprobe[analysis]``) and exit 78.

Which measurements: simulated lab ones (``lab_scenario``) are left out and counted unless
``--lab`` is given, and then only they are used, with a banner (:mod:`analysis.scope`);
claims are judged only on ``--country``'s (default KZ) measurements, the others counted.

Exit codes (sysexits, :class:`probe.exitcodes.ExitCode`): 0 ok (an ``--in`` holding no measurement beside
others that do is left out, named on stderr and in the report with its counts; so is one that is not a regular
file, a FIFO, a device, a socket, never opened); 66 EX_NOINPUT an ``--in``
path does not exist, or no ``--in`` holds a measurement, or every one is a lab measurement and ``--lab`` was not
given (or none is and it was); 73 EX_CANTCREAT ``--out`` cannot be created or written;
74 EX_IOERR writing the report failed midway; 78 EX_CONFIG the analysis extras (or any
third-party module they import) are missing or the claims file is invalid; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
from typing import Any

from probe.exitcodes import (
    ANALYSIS_INSTALL_HINT,
    EX_CANTCREAT,
    EX_CONFIG,
    EX_INTERRUPTED,
    EX_IOERR,
    EX_NOINPUT,
    EX_OK,
)

INSTALL_HINT = ANALYSIS_INSTALL_HINT
#: Our own top-level packages: a ModuleNotFoundError naming one of them is a bug, not a missing extra.
#: Any other missing module (msgspec, pandas, pyarrow, matplotlib, jinja2 or one of their own
#: dependencies) means the analysis extras are not (fully) installed: exit 78 with INSTALL_HINT.
OWN_PACKAGES = frozenset({"probe", "analysis", "bench", "tests"})
DASK_MODULES = frozenset({"dask", "distributed"})


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the ``report`` and ``claims`` subcommands on ``kzprobe``'s subparsers."""
    r = sub.add_parser(
        "report", help="compare measurements with the report's claims; write HTML, Markdown, CSV and plots",
        description="Load measurements (kzprobe's JSONL and OONI's JSON/JSONL, any format version, .gz too) from "
                    "every --in, judge each testable claim of Freedom on the Net 2021 — Kazakhstan against them, "
                    "and write <out>/index.html (self-contained: opens from disk with no network), report.md, "
                    "claims.csv (one row per claim), blocked.csv (what is blocked: target, country, network) and "
                    "the plots as PNG. Exit 66 when an --in does not exist or no --in holds measurements (one "
                    "without any, or not a regular file (a FIFO, a device), beside others is left out and named), "
                    "73 when --out cannot be written.")
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
    r.add_argument("--title", metavar="TEXT", default=None,
                   help="the report's title (default: kzprobe: measurements vs. Freedom on the Net 2021 — Kazakhstan)")
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
    """``--country``: ``any`` (None), else an assigned ISO 3166-1 code or ZZ (:mod:`analysis.countries`)."""
    if text.strip().lower() == "any":
        return None
    from analysis.countries import country_code

    return country_code(text)


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


def cmd_report(args: argparse.Namespace) -> int:
    """``kzprobe report``: :func:`analysis.build.build_report`; prints where the report is and a one-line summary.

    A missing ``--in`` or an unwritable ``--out`` is refused before pandas and the rest are imported
    (:mod:`analysis.preflight`: seconds saved on a Pi); build_report checks them again for library callers.
    """
    from analysis.preflight import missing_input, missing_text, output_dir_problem, output_dir_text
    from probe.config import state_dir

    inputs = args.inputs or [state_dir()]
    missing = missing_input(inputs)
    if missing is not None:
        _err(f"--in {missing_text(missing)}")
        return EX_NOINPUT
    reason = output_dir_problem(args.out)
    if reason is not None:
        _err(output_dir_text(args.out, reason))
        return EX_CANTCREAT

    from analysis.build import (
        InputMissingError,
        NoMeasurementsError,
        OutputDirError,
        build_report,
    )
    from analysis.claims import ClaimsError
    from analysis.load import LoadError
    from analysis.report import ReportError, iter_status_counts

    progress = not args.no_progress and sys.stderr.isatty()
    try:
        built = build_report(inputs, args.out, title=args.title, engine=args.engine,
                             ignore_period=args.ignore_period, as_of=args.as_of, lab=args.lab,
                             country=args.country, progress=progress,
                             stage=lambda text: _status(progress, text))
    except (InputMissingError, NoMeasurementsError) as exc:
        _err(f"--in {exc}")
        return EX_NOINPUT
    except LoadError as exc:
        _err(str(exc))
        return EX_NOINPUT
    except OutputDirError as exc:
        _err(str(exc))
        return EX_CANTCREAT
    except ClaimsError as exc:
        _err(f"claims: {exc}")
        return EX_CONFIG
    except ReportError as exc:
        _err(str(exc.strerror or exc))
        return EX_IOERR
    frame, stats, scope = built.frame, built.stats, built.scope
    for e in scope.empty_inputs:
        found = e.why if e.why else f"no measurements found ({e.counts_text})"
        _err(f"--in {e.path}: {found}; left out, the report is built from the other inputs")
    verdicts = ", ".join(f"{label} {n}" for label, n in iter_status_counts(built.results)) or "no claims"
    print(f"report: {built.paths.index_html.resolve()}")
    print((f"SIMULATED LAB MEASUREMENTS of scenario {scope.scenario_text} (--lab), not real ones: " if scope.lab
           else "")
          + f"{len(frame):,} measurements from {frame['vantage_id'].nunique()} vantage point(s), "
          f"{frame['domain'].nunique()} target(s); "
          + (f"{stats.torn + stats.invalid} bad line(s) skipped; " if hasattr(stats, "torn") else "")
          + (f"{stats.duplicates:,} duplicate measurement(s) dropped (counted once); "
             if stats is not None and getattr(stats, "duplicates", 0) else "")
          + f"engine {args.engine}; "
          f"claims: {verdicts}" + (" (dates ignored)" if args.ignore_period else "")
          + (f" (every measurement taken as of {args.as_of})" if args.as_of else "")
          + _left_out(scope))
    from analysis.report import period_hint

    hint = period_hint(built.results, ignore_period=args.ignore_period, as_of=args.as_of)
    if hint:
        print(f"hint: {hint}")
    return EX_OK


def _left_out(scope: Any) -> str:
    """The summary line's tail: what was left out of the report and why."""
    parts = []
    if scope.empty_inputs:
        parts.append(f"{len(scope.empty_inputs)} --in without measurements left out "
                     f"({', '.join(str(e.path) for e in scope.empty_inputs)})")
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
        table.add_column(col, **kw)
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
