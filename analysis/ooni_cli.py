"""``kzprobe ooni sync`` and ``kzprobe ooni coverage``: thin commands over :mod:`analysis.ooni_sync`
and :mod:`analysis.ooni_api` (stdlib-only at import, like :mod:`analysis.cli`).

Exit codes: 0 ok; 64 a bad argument; 69 EX_UNAVAILABLE the bucket or API could not be read
at all; 73 EX_CANTCREAT ``sync --out`` or ``coverage --store``/``--out`` cannot be created or
written (a file there, /proc/self/x; the path named; checked before anything is fetched); 74
EX_IOERR the disk (or quota) filled up, syncing or writing the coverage counts (what was synced is
kept: run again); 75 EX_TEMPFAIL some objects failed (the rest is stored; run the same command
again for them); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from probe.exitcodes import EX_CANTCREAT, EX_INTERRUPTED, EX_IOERR, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _cc(text: str) -> str | None:
    """``--cc``: ``ALL`` (None), else an assigned ISO 3166-1 code or ZZ (:mod:`analysis.countries`)."""
    if text.strip().upper() == "ALL":
        return None
    from analysis.countries import country_code

    return country_code(text)


def _count(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected {lo}–{hi}, got {v}")
        return v
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``ooni`` (``sync``, ``coverage``) on ``kzprobe``'s subparsers."""
    from analysis.ooni_bucket import BUCKET, DEFAULT_ENDPOINT

    o = sub.add_parser("ooni", help="fetch OONI's public measurements (the report's own period) into a local store")
    osub = o.add_subparsers(dest="ooni_command", required=True)
    s = osub.add_parser(
        "sync", help="OONI's measurements of a country and period → a re-judged Parquet store (resumable)",
        description="List OONI's public S3 bucket for the period (raw/ from 2020-10-20, jsonl/ before it, the "
                    "day-wide cans where JSONL files are missing), print a size estimate, fetch what the manifest "
                    "does not hold yet (bounded parallel downloads, retries), judge every measurement again and "
                    "store it as Parquet by day under OUT/store. Re-run the same command to resume. "
                    "Then: kzprobe report --in OUT --out report/")
    s.add_argument("--cc", type=_cc, required=True, metavar="CC", help="country (e.g. KZ), or ALL")
    s.add_argument("--since", type=_date, required=True, metavar="YYYY-MM-DD", help="first measurement day (UTC)")
    s.add_argument("--until", type=_date, required=True, metavar="YYYY-MM-DD", help="last measurement day, included")
    s.add_argument("--out", metavar="DIR", help="output directory (default ./ooni-<CC>-<since>--<until>)")
    s.add_argument("--endpoint-url", metavar="URL", default=DEFAULT_ENDPOINT,
                   help=f"S3 endpoint, path-style, as the AWS CLI names it (default {DEFAULT_ENDPOINT})")
    s.add_argument("--bucket", default=BUCKET, help=f"bucket name (default {BUCKET})")
    s.add_argument("--test", dest="tests", action="append", metavar="NAME",
                   help="OONI test name to keep; repeatable (default web_connectivity)")
    s.add_argument("--margin-before", type=_count(0, 60), default=1, metavar="DAYS",
                   help="upload days listed before --since (default 1)")
    s.add_argument("--margin-after", type=_count(0, 365), default=7, metavar="DAYS",
                   help="upload days listed after --until, for late uploads (default 7)")
    s.add_argument("--concurrency", type=_count(1, 64), default=4, metavar="N", help="downloads at once (default 4)")
    s.add_argument("--workers", type=_count(0, 64), metavar="N",
                   help="processes judging measurements (default: the CPUs; 0 = in this process)")
    s.add_argument("--keep-raw", action="store_true", help="keep the fetched objects under OUT/raw/")
    s.add_argument("--no-cans", action="store_true", help="never fetch day-wide cans (each holds every country)")
    s.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="local (default) or dask: one task per upload day and prefix on a local Dask cluster")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (none anyway when not a TTY)")
    s.add_argument("--coverage", action="store_true",
                   help="also ask OONI's API for the period's counts per day and network (outage evidence) and "
                        "save them beside the store, as kzprobe ooni coverage --store OUT does")
    s.add_argument("--api-url", default="https://api.ooni.io", metavar="URL", help="API base URL (with --coverage)")
    c = osub.add_parser(
        "coverage", help="measurements per day and network from OONI's API (outage evidence)",
        description="Ask OONI's API (/api/v1/aggregation, by measurement day and network, in windows of 180 days) "
                    "how many measurements each network of the country has per day, write them as CSV, and list "
                    "the drops against each network's own baseline (analysis.outages).")
    c.add_argument("--cc", type=_cc, required=True, metavar="CC", help="country (e.g. KZ)")
    c.add_argument("--since", type=_date, required=True, metavar="YYYY-MM-DD", help="first day counted (UTC)")
    c.add_argument("--until", type=_date, required=True, metavar="YYYY-MM-DD", help="last day counted (UTC)")
    c.add_argument("--test", default="web_connectivity", metavar="NAME", help="test name (default web_connectivity)")
    c.add_argument("--api-url", default="https://api.ooni.io", metavar="URL", help="API base URL")
    c.add_argument("--out", metavar="FILE", help="CSV to write (day, probe_asn, n, counts)")
    c.add_argument("--store", metavar="DIR",
                   help="a kzprobe ooni sync output: the counts go beside its store (DIR/api-coverage.csv + .json), "
                        "where kzprobe report --in DIR reads them as outage evidence")


def period_refused(since: dt.date, until: dt.date) -> str | None:
    """Why the period ``--since``..``--until`` of an ``ooni`` command is refused (exit 64), or None: it
    must be in order and lie within OONI's data, from :data:`analysis.ooni_bucket.DATA_START` to today
    (UTC) — a sync from 1900 listed 45,000 empty days, an API count asked for days with no data."""
    from analysis.ooni_bucket import DATA_START

    today = dt.datetime.now(dt.UTC).date()
    if since > until:
        return f"--since {since} is after --until {until}"
    if since < DATA_START:
        return f"--since {since} is before OONI's first measurements ({DATA_START}): no data there"
    if until > today:
        return f"--until {until} is after today ({today}, UTC): no measurement yet"
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``kzprobe ooni <command>``; returns the exit code."""
    why = period_refused(args.since, args.until)
    if why is not None:
        print(f"kzprobe ooni {args.ooni_command}: {why}", file=sys.stderr)
        return EX_USAGE
    try:
        if args.ooni_command == "sync":
            return cmd_sync(args)
        return cmd_coverage(args)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("kzprobe ooni: interrupted (what was synced is kept; run the same command again to resume)",
              file=sys.stderr)
        return EX_INTERRUPTED


def cmd_sync(args: argparse.Namespace) -> int:
    from analysis.ooni_sync import SyncBusyError, SyncConfig, invalid_lines_text, sync_async, sync_dask
    from analysis.s3 import DiskFullError, S3Error

    out = Path(args.out or f"ooni-{args.cc or 'ALL'}-{args.since}--{args.until}")
    if (why := _unwritable(out)) is not None:
        print(f"kzprobe ooni sync: --out {why}", file=sys.stderr)
        return EX_CANTCREAT
    cfg = SyncConfig(cc=args.cc, since=args.since, until=args.until, out=out, endpoint=args.endpoint_url,
                     bucket=args.bucket, test_names=tuple(args.tests or ("web_connectivity",)),
                     margin_before=args.margin_before, margin_after=args.margin_after, concurrency=args.concurrency,
                     workers=args.workers, keep_raw=args.keep_raw, use_cans=not args.no_cans)
    progress = None if args.no_progress or not sys.stderr.isatty() else _bar()
    try:
        if args.engine == "dask":
            from distributed import Client

            from analysis.local_cluster import local_cluster

            with local_cluster(processes=True) as cluster, Client(cluster) as client:
                res = sync_dask(cfg, client)
        else:
            def estimate(text: str) -> None:
                print(f"kzprobe ooni sync: {text}", file=sys.stderr)

            if progress is not None:
                with progress:
                    res = _run_stoppable(sync_async(cfg, on_estimate=estimate, progress=progress, on_note=estimate))
            else:
                res = _run_stoppable(sync_async(cfg, on_estimate=estimate, on_note=estimate))
    except SyncBusyError as exc:
        print(f"kzprobe ooni sync: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except DiskFullError as exc:
        print(f"kzprobe ooni sync: {exc}", file=sys.stderr)
        return EX_IOERR
    except S3Error as exc:
        print(f"kzprobe ooni sync: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    # the sync's output, what `kzprobe report --in` takes (the store is in it, beside the manifest and the
    # API counts); out / "store" did not exist when --out was itself named "store" (store_root)
    print(f"store: {out.resolve()}")
    print(f"{res.fetched:,} objects fetched ({res.fetched_bytes / 1e6:,.1f} MB), {res.already:,} already synced; "
          f"{summary_text(res)}; {res.retries} retries; "
          f"{res.seconds:,.1f} s" + (f"; cans used for {len(res.can_days)} day(s)" if res.can_days else ""))
    for line in invalid_lines_text(res):
        print(line, file=sys.stderr)
    for c in res.corrupt:
        print(f"damaged object: {c}", file=sys.stderr)
    for k in res.too_big:
        print(f"skipped (bigger than the object limit): {k}", file=sys.stderr)
    rc = sync_coverage(args, out) if args.coverage else EX_OK
    if res.failed or res.not_tried:
        for f in res.failed[:20]:
            print(f"failed: {f}", file=sys.stderr)
        if res.gave_up:
            print(f"kzprobe ooni sync: {res.gave_up}; stopped: {len(res.failed) + res.not_tried:,} object(s) not "
                  f"fetched ({res.not_tried:,} not tried); the rest is stored. Run the same command again later to "
                  "fetch them.", file=sys.stderr)
            return EX_TEMPFAIL
        print(f"kzprobe ooni sync: {len(res.failed)} object(s) could not be fetched; the rest is stored. "
              "Run the same command again to fetch them.", file=sys.stderr)
        return EX_TEMPFAIL
    return rc


def _unwritable(out: Path) -> str | None:
    """What stops ``out`` being used as an output directory (``out`` named), or None: checked before
    any fetch (a file there died in mkdir with a FileExistsError traceback: break test)."""
    from analysis.preflight import output_dir_problem, output_dir_text

    reason = output_dir_problem(out)
    return None if reason is None else output_dir_text(out, reason)


def summary_text(res: Any) -> str:
    """The measurements' account of a sync (:class:`analysis.ooni_sync.SyncResult`): what was read
    from the objects and dropped while reading, the duplicates the compaction of the months written
    dropped (rows already in the store, read from two objects, or left by an interrupted sync: not a
    part of what was read, it may exceed it), and what those months hold now (earlier syncs' rows
    too), so that no two figures read as one ("5,760 kept, 5,760 duplicates dropped" did: break test)."""
    return (f"{res.kept:,} measurements read from the objects ({res.duplicates - res.compaction_dropped:,} "
            f"repeated within an object and {res.out_of_period:,} outside the period dropped, {res.invalid:,} "
            f"invalid); {res.compaction_dropped:,} duplicates dropped when the months written were compacted "
            f"(already in the store, in two objects, or left by an interrupted sync); the months written hold "
            f"{res.stored:,} in all")


def _bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("sync"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[objects]:,} objects, {task.fields[measurements]:,} measurements"),
                    console=Console(stderr=True), transient=False)


def _fetch_coverage(cc: str, since: Any, until: Any, test: str, api_url: str) -> Any:
    import aiohttp

    from analysis.ooni_api import OoniApi, coverage

    async def go() -> Any:
        async with aiohttp.ClientSession(headers={"User-Agent": "kzprobe-ooni-coverage"}, auto_decompress=False) as s:
            return await coverage(OoniApi(s, api_url), cc, since, until, test)

    return _run_stoppable(go())


def _run_stoppable(coro: Any) -> Any:
    """``asyncio.run(coro)`` where SIGINT/SIGTERM/SIGHUP cancel it (then CancelledError, exit 130):
    a KeyboardInterrupt raised inside a download task instead ended in asyncio's "Task exception
    was never retrieved" traceback (break test, SIGTERM during sync)."""
    from probe.eventloop import cancel_on_signals

    async def main() -> Any:
        cancel_on_signals()
        return await coro

    return asyncio.run(main())


def _save_store_coverage(cov: Any, store: Path, args: argparse.Namespace, test: str) -> Path:
    from analysis.outages import save_api_coverage

    return save_api_coverage(cov, store, {"cc": args.cc, "since": args.since.isoformat(),
                                          "until": args.until.isoformat(), "test": test, "api_url": args.api_url})


def sync_coverage(args: argparse.Namespace, out: Path) -> int:
    """``kzprobe ooni sync --coverage``: the API's counts for the synced country and period beside the store."""
    from analysis.ooni_api import ApiError

    test = (args.tests or ["web_connectivity"])[0]
    if args.cc is None:
        print("kzprobe ooni sync: --coverage needs one country (not --cc ALL)", file=sys.stderr)
        return EX_USAGE
    try:
        cov = _fetch_coverage(args.cc, args.since, args.until, test, args.api_url)
    except ApiError as exc:
        print(f"kzprobe ooni sync: coverage counts: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    try:
        path = _save_store_coverage(cov, out, args, test)
    except OSError as exc:
        return _write_failed("sync: coverage counts", exc, out / "api-coverage.csv")
    print(f"coverage: {path.resolve()} ({int(cov['n'].sum()) if len(cov) else 0:,} measurements from OONI's API)")
    return EX_OK


def _write_failed(cmd: str, exc: OSError, path: Path) -> int:
    """Name what could not be written (``exc.filename``, else ``path``: an ENOSPC has no filename):
    a full disk or quota is 74 EX_IOERR, any other error 73 EX_CANTCREAT."""
    from analysis.s3 import is_disk_full

    print(f"kzprobe ooni {cmd}: cannot write {exc.filename or path}: {exc.strerror or exc}", file=sys.stderr)
    return EX_IOERR if is_disk_full(exc) else EX_CANTCREAT


def _unwritable_file(out: Path) -> str | None:
    """What stops ``out`` being written as a file (``out`` named), or None: its directory is created
    and written to, and ``out`` must not be a directory nor a file we cannot write; checked before
    the API is asked."""
    import os

    if (why := _unwritable(out.parent)) is not None:
        return why
    if out.is_dir():
        return f"cannot write {out}: it is a directory"
    if out.exists() and not os.access(out, os.W_OK):
        return f"cannot write {out}: permission denied"
    return None


def cmd_coverage(args: argparse.Namespace) -> int:
    from analysis.ooni_api import ApiError
    from analysis.outages import volume_drops

    if args.cc is None:
        print("kzprobe ooni coverage: --cc ALL is not supported here (one country at a time)", file=sys.stderr)
        return EX_USAGE
    if not args.out and not args.store:
        print("kzprobe ooni coverage: say where the counts go: --out FILE or --store DIR", file=sys.stderr)
        return EX_USAGE
    if args.store and (why := _unwritable(Path(args.store))) is not None:
        print(f"kzprobe ooni coverage: --store {why}", file=sys.stderr)
        return EX_CANTCREAT
    if args.out and (why := _unwritable_file(Path(args.out))) is not None:
        print(f"kzprobe ooni coverage: --out {why}", file=sys.stderr)
        return EX_CANTCREAT
    try:
        cov = _fetch_coverage(args.cc, args.since, args.until, args.test, args.api_url)
    except ApiError as exc:
        print(f"kzprobe ooni coverage: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    out = Path(args.store) / "api-coverage.csv" if args.store else Path(args.out)  # named if a write fails
    try:
        if args.store:
            out = _save_store_coverage(cov, Path(args.store), args, args.test)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            cov.to_csv(out, index=False)
    except OSError as exc:
        return _write_failed("coverage", exc, out)
    drops = volume_drops(cov[["day", "probe_asn", "n"]], since=args.since, until=args.until)
    print(f"coverage: {out.resolve()} ({len(cov):,} rows, {int(cov['n'].sum()) if len(cov) else 0:,} measurements, "
          f"{cov['probe_asn'].nunique() if len(cov) else 0} networks)")
    for d in drops.to_dict("records"):
        print(f"drop: {d['probe_asn']} {d['first']} … {d['last']}: {d['n']} measurements vs a usual "
              f"{d['baseline']}/day — {d['strength']}: {d['why']}")
    if drops.empty:
        print("no drop in volume on any network with a usable baseline")
    return EX_OK
