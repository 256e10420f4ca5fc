"""The ``kzprobe`` command: thin; every subcommand calls library functions.

Exit codes follow sysexits(3): 0 ok; 64 EX_USAGE; 65 EX_DATAERR (a malformed target
list with ``--strict``); 66 EX_NOINPUT (a target list not found); 73 EX_CANTCREAT
(the output directory cannot be written); 74 EX_IOERR (writing measurements failed
mid-run); 75 EX_TEMPFAIL (vantage offline or its TLS intercepted: nothing could be
judged); 78 EX_CONFIG (bad configuration, or ``[consent] accepted = false``: the
risk notice not accepted); 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import math
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from probe import __version__, eventloop
from probe.config import ConfigError, Settings, load_settings, state_dir
from probe.exitcodes import (
    ANALYSIS_INSTALL_HINT,
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_INTERRUPTED,
    EX_IOERR,
    EX_NOINPUT,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
)

log = logging.getLogger("kzprobe")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return v


#: Sockets one measurement may hold at once (endpoints × handshakes, DNS, DoH, HTTP).
FDS_PER_MEASUREMENT = 24


def _fit_concurrency(wanted: int) -> int:
    """Raise the open-files soft limit to the hard limit and cap concurrency to fit it.

    Running out of file descriptors would otherwise be recorded as network failures.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    room = max(1, (soft - 64) // FDS_PER_MEASUREMENT) if soft != resource.RLIM_INFINITY else wanted
    if wanted > room:
        log.warning("concurrency %d needs about %d open files but the limit is %d: using concurrency %d",
                    wanted, wanted * FDS_PER_MEASUREMENT + 64, soft, room)
        return room
    return wanted


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="measure target lists and write measurements (JSONL)",
        description="Measure every input of the target lists from this vantage point: DNS (system, ISP resolver, "
                    "DoH control), TCP, TLS (chain captured and inspected for interception roots), HTTP; judge each "
                    "against its control; write one OONI-format JSON object per measurement to "
                    "<out>/<report_id>.jsonl and print a summary table. Exit 75 when the vantage point is offline.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: $KZPROBE_CONFIG, "
                   "/etc/kzprobe/config.toml, then the XDG config dir)")
    p.add_argument("--targets", "-t", metavar="FILE", action="append",
                   help="target list: a Citizen Lab CSV or one URL a line; a path, or the name of a shipped list "
                        "(fotn-2021-kz.csv, kz.csv, global.csv, kz-mitm-2019-domains.txt, ...). Repeatable. "
                        "Default: run.targets from the config (fotn-2021-kz.csv)")
    p.add_argument("--input", "-i", metavar="URL", action="append", help="measure this URL (repeatable; "
                   "replaces --targets); a bare host name with a dot means https://HOST/, a bare word is refused")
    p.add_argument("--out", "-o", metavar="DIR", help="write the run's files here (default: $STATE_DIRECTORY, "
                   "else the XDG state dir)")
    p.add_argument("--concurrency", "-c", type=_positive_int, metavar="N", help="measurements at once (default 8)")
    p.add_argument("--strict", action="store_true", help="a malformed target row is fatal (default: report and skip)")
    p.add_argument("--json", action="store_true", help="print each measurement as a JSON line on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none anyway when not a TTY)")
    p.add_argument("--asn", metavar="ASN", help="probe_asn for the records, e.g. AS9198")
    p.add_argument("--cc", metavar="CC", help="probe_cc for the records, e.g. KZ")
    p.add_argument("--resolver", metavar="IP[:PORT]", action="append",
                   help="also query this resolver directly over UDP (your ISP's); repeatable")
    p.add_argument("--doh", metavar="URL", action="append", help="DNS-over-HTTPS control resolver; repeatable")
    p.add_argument("--extra-anchors", metavar="PEM", action="append", help="extra trust anchors (PEM file)")
    p.add_argument("--measurement-timeout", type=_seconds, metavar="S", help="deadline per input, seconds (default 90)")
    p.add_argument("--run-deadline", type=_seconds, metavar="S", help="deadline for the whole run, seconds")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="measure only the first N inputs")
    p.add_argument("--pcap", action="store_true", default=None,
                   help="keep the packets of each blocked target's packet tests as <report_id>.pcap/<uid>.pcap "
                        "in the output dir (needs CAP_NET_RAW and kzprobe[packets]; [packets] pcap)")
    p.add_argument("--localise", choices=("manual", "always", "never"), default=None,
                   help="CenTrace-style censor localisation of blocked targets ([packets] localise; default "
                        "manual: from a terminal, not on the systemd timer). Needs the packet tests: [packets] "
                        "enabled and CAP_NET_RAW (root); asked for without them, the run refuses (exit 64)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="kzprobe", description="Network-disruption measurement probe.")
    parser.add_argument("--version", action="version", version=f"kzprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    h = sub.add_parser("helper", help="the control helper server (run it on a VPS outside the censored network)")
    hsub = h.add_subparsers(dest="helper_command", required=True)
    hs = hsub.add_parser(
        "serve", help="serve the control API (docs/helper-api.md)",
        description="Serve POST /api/v1/control and GET /api/v1/health: for each input a probe sends, resolve, "
                    "connect, handshake and fetch from here, with the probe's own primitives, and answer in JSON. "
                    "Bearer tokens required; private and special-purpose addresses refused; TLS unless on loopback.")
    hs.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8443",
                    help="address to listen on (default 127.0.0.1:8443)")
    hs.add_argument("--token-file", metavar="FILE", required=True,
                    help="tokens, one per line ('# comment' names the probe); mode 600")
    hs.add_argument("--cert", metavar="PEM", help="TLS certificate chain (required unless listening on loopback)")
    hs.add_argument("--key", metavar="PEM", help="TLS private key")
    hs.add_argument("--allow-private", metavar="CIDR", action="append", default=[],
                    help="allow this special-purpose range (the lab only, e.g. 198.18.0.0/15); repeatable")
    hs.add_argument("--allow-port", metavar="PORT", type=int, action="append", default=[],
                    help="a TCP port the helper may contact besides 80 and 443 (inputs like "
                         "http://site:8080/); repeatable")
    hs.add_argument("--insecure-plain-http", action="store_true",
                    help="plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)")
    hs.add_argument("--doh", metavar="URL", action="append", help="the helper's own DoH resolver(s)")
    hs.add_argument("--extra-anchors", metavar="PEM", action="append", default=[], help="extra trust anchors")
    hs.add_argument("--asn-db", metavar="MMDB", help="ASN database (MaxMind format) whoami maps a probe's address "
                    "with, so a probe without one learns its network (default: the assets dir's, kzprobe assets "
                    "update)")
    hs.add_argument("--country-db", metavar="MMDB", help="country database (MaxMind format) for whoami (default: "
                    "the assets dir's)")
    hs.add_argument("--rate", type=_seconds, metavar="N", default=60.0,
                    help="requests per minute per token (default 60)")
    hs.add_argument("--max-concurrent", type=_positive_int, metavar="N", default=8,
                    help="control requests measured at once; more get 429 (default 8)")
    hs.add_argument("--max-connections", type=_positive_int, metavar="N", default=3584,
                    help="client connections held at once, all clients; when full a newcomer evicts the oldest of the "
                         "client holding the most (default 3584; the file-descriptor limit must allow it + 512)")
    hs.add_argument("--max-connections-per-client", type=_positive_int, metavar="N", default=64,
                    help="connections one client (IPv4 address, IPv6 /64) may hold; more are reset (default 64)")
    hs.add_argument("--header-timeout", type=_seconds, metavar="S", default=10.0,
                    help="seconds from accept to a complete request head, TLS handshake included (default 10)")
    st = sub.add_parser("status", help="the systemd timer, the last runs and where the results are",
                        description="Show kzprobe.timer's state (systemctl show; 'systemd not available' otherwise), "
                                    "the last runs from the *.summary.json files of the results directory (time, "
                                    "inputs, verdict counts, offline or not), where the results are and the disk used.")
    st.add_argument("--config", metavar="FILE", help="TOML config file (default: as for run)")
    st.add_argument("--dir", "--in", dest="dir", metavar="DIR", help="results directory (default: run.out, "
                    "$STATE_DIRECTORY, /var/lib/kzprobe if it exists, else the XDG state dir)")
    st.add_argument("--last", "-n", type=_positive_int, default=10, metavar="N", help="show the last N runs (default 10)")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    _browse_parsers(sub)
    a = sub.add_parser("assets", help="the ASN/country databases the probe maps its address with")
    asub = a.add_subparsers(dest="assets_command", required=True)
    au = asub.add_parser("update", help="download DB-IP's free ASN and country databases (CC BY 4.0)",
                         description="Download DB-IP's IP to ASN Lite and IP to Country Lite databases (MaxMind "
                                     "format, CC BY 4.0: 'IP Geolocation by DB-IP', https://db-ip.com) into the "
                                     "assets directory, where kzprobe run finds them ([geoip] asn_db/country_db "
                                     "name other files). Run it monthly; a failed update keeps the old files.")
    au.add_argument("--dir", metavar="DIR", help="where to write them (default: the XDG data dir's kzprobe/assets)")
    au.add_argument("--url", metavar="TEMPLATE", help="download URL with {kind} (asn, country) and {month} "
                    "(YYYY-MM) (default: DB-IP's)")
    from probe.lab.cli import add_parser as _add_lab_parser

    _add_lab_parser(sub)
    t = sub.add_parser("targets", help="list the inputs a target list yields (after normalisation)",
                       description="Print input, category code and notes of every input the target lists yield, "
                                   "one a line, tab-separated (IDNs as their A-label, as measured).")
    t.add_argument("files", nargs="+", metavar="FILE",
                   help="target list: a path or the name of a shipped list (e.g. fotn-2021-kz.csv)")
    t.add_argument("--strict", action="store_true", help="a malformed target row is fatal (default: report and skip)")
    _analysis_parsers(sub)
    _add_global_flags(parser)
    return parser


def _browse_parsers(sub: argparse._SubParsersAction) -> None:
    """``kzprobe list [RUN]`` and ``kzprobe show MEASUREMENT|INPUT`` (probe/browse.py)."""
    dir_help = "results directory (default: as for status)"
    ls = sub.add_parser("list", help="past runs, or the measurements of one run",
                        description="Without RUN: every run of the results directory, newest first (start, network, "
                                    "inputs, verdict counts, offline or not). With RUN (a report id or a unique "
                                    "prefix of one): its measurements, one a line, named REPORT_ID:LINE for show.")
    ls.add_argument("run", nargs="?", metavar="RUN", help="a report id (or a unique prefix): list its measurements")
    ls.add_argument("--config", metavar="FILE", help="TOML config file (default: as for run)")
    ls.add_argument("--dir", "--in", dest="dir", metavar="DIR", help=dir_help)
    ls.add_argument("--json", action="store_true", help="print as JSON")
    sh = sub.add_parser("show", help="one measurement for a person: DNS, connects, TLS chain, HTTP beside the control",
                        description="Show one measurement: DNS answers per resolver beside the control's, TCP "
                                    "connects per endpoint, the TLS chain with issuers and the verification result "
                                    "(and any interception root matched), HTTP status/title/length/body hash beside "
                                    "the control's, the verdict's rule and reason.")
    sh.add_argument("measurement", metavar="MEASUREMENT|INPUT",
                    help="REPORT_ID:LINE (from kzprobe list RUN) or an input URL (its newest measurement)")
    sh.add_argument("--config", metavar="FILE", help="TOML config file (default: as for run)")
    sh.add_argument("--dir", "--in", dest="dir", metavar="DIR", help=dir_help)
    sh.add_argument("--json", action="store_true", help="print as JSON")


def cmd_assets(args: argparse.Namespace) -> int:
    """``kzprobe assets update``: :func:`probe.assets.update`, then the attribution."""
    import aiohttp

    from probe import assets
    from probe.geoip import assets_dir

    dest = Path(args.dir) if args.dir else assets_dir()
    try:
        done = asyncio.run(assets.update(dest, url_template=args.url or assets.DBIP_URL,
                                         on_progress=lambda url: print(f"downloading {url}", file=sys.stderr)))
    except assets.AssetsError as exc:
        print(f"kzprobe assets: {exc}", file=sys.stderr)
        return EX_DATAERR
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        print(f"kzprobe assets: download failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    for u in done:
        print(f"{u.path}: {u.size} bytes, built {u.built} (from {u.url})")
    print(f"Data: {assets.ATTRIBUTION}")
    return EX_OK


def cmd_browse(args: argparse.Namespace) -> int:
    """``kzprobe list`` / ``kzprobe show``: over :mod:`probe.browse`."""
    from probe import browse
    from probe.status import results_dir

    run_out = ""
    try:
        run_out = load_settings(config_path=args.config).run_out
    except ConfigError as exc:
        if args.config:
            print(f"kzprobe: {exc}", file=sys.stderr)
            return EX_CONFIG
    directory = results_dir(args.dir, run_out)
    if args.dir and not Path(args.dir).is_dir():  # a mistyped --dir is not an empty results directory
        print(f"kzprobe {args.command}: --dir {args.dir}: no such directory", file=sys.stderr)
        return EX_NOINPUT
    from probe.safetext import json_text
    from probe.safetext import terminal_safe as safe
    try:
        if args.command == "show":
            mid, rec = browse.find_measurement(directory, args.measurement)
            view = browse.measurement_view(mid, rec)
            print(json_text(view, indent=1) if args.json
                  else safe(browse.render_measurement(view)))
        elif args.run:  # streamed: a run's file may be of any size
            rid, rows, stats = browse.iter_measurements(directory, args.run)
            (browse.write_measurements_json if args.json else browse.write_measurements)(sys.stdout, rid, rows, stats)
        else:
            runs, bad = browse.list_runs(directory)
            print(json_text(browse.runs_json(runs, bad), indent=1)
                  if args.json else safe(browse.render_runs(runs, bad)))
            labs = sorted(p for p in (directory / "lab").glob("*") if p.is_dir()) if not args.json else []
            if labs:  # `kzprobe lab run` writes beside, one directory a scenario (break test, stop 18)
                print(safe(f"lab runs: kzprobe list --dir {labs[0]}"
                           + (f" (and {len(labs) - 1} other scenario(s) in {directory / 'lab'})" if len(labs) > 1
                              else "")), file=sys.stderr)
    except browse.BrowseError as exc:
        print(f"kzprobe {args.command}: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except PermissionError as exc:
        print(f"kzprobe {args.command}: cannot read {exc.filename}: {exc.strerror} (add yourself to group kzprobe)",
              file=sys.stderr)
        return EX_NOINPUT
    return EX_OK


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every parser below it (subcommands, their subcommands, ...)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found.extend(_subparsers(child))
    return found


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and -q/--quiet on the top parser and on every subcommand, so that both
    ``kzprobe -v run`` and ``kzprobe run -v`` work. Below the top their default is SUPPRESS:
    a subcommand that does not see the flag leaves the top parser's value alone."""
    for p in _subparsers(parser):
        top = p is parser
        p.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                       help="more logging (-vv for debug); before or after the subcommand")
        # -q means something only to `run` (and before the subcommand, for it): elsewhere it is
        # accepted, so that scripts may pass it everywhere, but not advertised (break test, stop 17).
        means = top or p.prog.split()[1:] == ["run"]
        p.add_argument("-q", "--quiet", action=argparse.BooleanOptionalAction,
                       default=None if top else argparse.SUPPRESS,
                       help=("print the summary only, no per-input table (default under systemd, detected by "
                             "$INVOCATION_ID or $JOURNAL_STREAM; --no-quiet prints the table there too)")
                       if means else argparse.SUPPRESS)


def under_systemd(environ: Any = None) -> bool:
    """True when started by systemd (a service sets INVOCATION_ID; the journal, JOURNAL_STREAM)."""
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


def _quiet(args: argparse.Namespace) -> bool:
    return bool(args.quiet) if args.quiet is not None else under_systemd()


def _analysis_parsers(sub: argparse._SubParsersAction) -> None:
    """``report`` and ``claims`` (analysis/cli.py: stdlib-only at import; pandas etc. load when they run)."""
    try:
        from analysis.cli import add_parsers
    except ImportError:  # a probe-only install without the analysis package
        for name in ("report", "claims", "ooni"):
            sub.add_parser(name, help="(needs kzprobe[analysis])", add_help=False).add_argument(
                "rest", nargs=argparse.REMAINDER)
        return
    add_parsers(sub)


def cmd_analysis(args: argparse.Namespace) -> int:
    """``kzprobe report`` / ``kzprobe claims``: delegated to :mod:`analysis.cli`."""
    try:
        from analysis.cli import run as analysis_run
    except ImportError:
        print(f"kzprobe {args.command}: the analysis side is not installed: {ANALYSIS_INSTALL_HINT}", file=sys.stderr)
        return EX_CONFIG
    return analysis_run(args)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _resolve_list(name: str) -> Path:
    from probe.targets import shipped_list

    p = Path(name)
    if p.exists() or os.sep in name:
        return p
    try:
        return shipped_list(name)
    except (FileNotFoundError, ValueError):
        return p


def _load_inputs(args: argparse.Namespace, settings: Settings) -> list[Any]:
    from probe.targets import RowWarnings, load_targets, targets_from_urls

    report = RowWarnings(suffix=" (skipped)")  # the first 3 of each list, then a count: a binary file has thousands
    if args.input:
        targets = targets_from_urls(args.input, strict=args.strict, on_error=report)
    else:
        files = [_resolve_list(n) for n in (args.targets or settings.run_targets)]
        targets = load_targets(files, strict=args.strict, on_error=report)
    if report.count:
        shown = f"the first {report.limit} of each list shown above" if report.hidden else "see warnings above"
        print(f"kzprobe: {report.count} malformed target row(s) skipped ({shown})", file=sys.stderr)
    if args.limit is not None:
        targets = targets[: max(args.limit, 0)]
    return targets


#: Config key → (the ``kzprobe run`` flag that sets it, its overrides key): a bad value from a
#: flag is a usage error (64) that names the flag; from the config file, a config error (78).
_FLAG_OF_KEY = {
    "run.concurrency": ("--concurrency", "run_concurrency"), "probe.asn": ("--asn", "probe_asn"),
    "probe.cc": ("--cc", "probe_cc"), "dns.udp_resolvers": ("--resolver", "dns_udp_resolvers"),
    "dns.doh_urls": ("--doh", "dns_doh_urls"), "tls.extra_anchors": ("--extra-anchors", "tls_extra_anchors"),
    "timeouts.measurement_s": ("--measurement-timeout", "timeouts.measurement_s"),
    "timeouts.run_s": ("--run-deadline", "timeouts.run_s"),
}


def _localise_refusal(args: argparse.Namespace, settings: Any) -> str | None:
    """Why ``--localise`` (given, and asking for localisation on this run) cannot be done, naming what is missing
    (the packet tests off in the config, CAP_NET_RAW, endpoints remapped), else None. It was silently ignored."""
    flag = getattr(args, "localise", None)
    from probe.packets import privileges
    from probe.runner import PACKETS_OFF_REMEDY, PRIVILEGES_REMEDY, packets_off, wants_localise

    if flag is None or not wants_localise(settings):
        return None
    why = packets_off(settings, privileges.check() if settings.packets_enabled else None)
    if why is None:
        return None
    return (f"--localise {flag}: censor localisation needs the packet tests, which cannot run here: {why}; "
            f"{PACKETS_OFF_REMEDY.get(why, PRIVILEGES_REMEDY)} (or --localise never)")


def cmd_run(args: argparse.Namespace) -> int:
    """``kzprobe run``: flags → settings and targets → :func:`probe.campaign.run_campaign` → summary."""
    from probe import summary as summary_mod
    from probe.campaign import ConsentError, OutputDirError, check_consent, prepare_output_dir, run_campaign
    from probe.safetext import json_text

    _interrupt_on_signals()

    overrides = {
        "run_concurrency": args.concurrency, "probe_asn": args.asn, "probe_cc": args.cc,
        "dns_udp_resolvers": args.resolver, "dns_doh_urls": args.doh, "tls_extra_anchors": args.extra_anchors,
        "timeouts.measurement_s": args.measurement_timeout, "timeouts.run_s": args.run_deadline,
        "packets_pcap": getattr(args, "pcap", None), "packets_localise": getattr(args, "localise", None),
    }
    try:
        settings = load_settings(config_path=args.config, overrides=overrides)
    except ConfigError as exc:
        flag = _FLAG_OF_KEY.get(exc.key)
        if flag is not None and overrides.get(flag[1]) is not None:  # the bad value came from a flag
            print(f"kzprobe: {flag[0]}: {str(exc).split(': ', 2)[-1]}", file=sys.stderr)
            return EX_USAGE
        for key in exc.conflicts_with:  # a flag's value conflicts with the config's (fresh-user break test:
            flag = _FLAG_OF_KEY.get(key)  # --measurement-timeout 0.3 under the lab's control_s was 78)
            if flag is not None and overrides.get(flag[1]) is not None:
                value = overrides[flag[1]]
                shown = f"{value:g}" if isinstance(value, float) else value
                print(f"kzprobe: {flag[0]} {shown}: conflicts with {exc.key} of the config: "
                      f"{exc.message}", file=sys.stderr)
                return EX_USAGE
        print(f"kzprobe: {exc}", file=sys.stderr)
        return EX_CONFIG
    refusal = _localise_refusal(args, settings)
    if refusal:  # asked for, and it cannot happen: the run must not pretend it localised (before measuring)
        print(f"kzprobe: {refusal}", file=sys.stderr)
        return EX_USAGE
    try:
        check_consent(settings)  # before the target list is read (run_campaign checks it again)
    except ConsentError as exc:
        print(f"kzprobe: {str(exc).removeprefix('config: consent.accepted: ')}", file=sys.stderr)
        return EX_CONFIG
    targets = _targets_or_exit_code(lambda: _load_inputs(args, settings))
    if isinstance(targets, int):
        return targets
    if not targets:
        print("kzprobe: no inputs to measure", file=sys.stderr)
        return EX_USAGE if args.input else EX_NOINPUT  # every --input was bad: a usage error
    try:
        out = prepare_output_dir(args.out or settings.run_out or state_dir())
    except OutputDirError as exc:
        print(f"kzprobe: cannot write to output directory {exc.path}: {exc.reason}", file=sys.stderr)
        return EX_CANTCREAT

    settings = dataclasses.replace(settings, run_concurrency=_fit_concurrency(settings.run_concurrency))
    log.info("config: %s; output: %s; %d inputs; concurrency %d", settings.source, out, len(targets),
             settings.run_concurrency)
    progress = summary_mod.Progress(enabled=not args.no_progress and not args.json and sys.stderr.isatty(),
                                    total=len(targets))

    def on_record(rec: dict[str, Any]) -> None:
        if not args.json:
            return
        try:
            sys.stdout.write(json_text(rec) + "\n")
            sys.stdout.flush()
        except OSError as exc:
            # the reader went away (`| head`: EPIPE) or stdout is full (ENOSPC): stop
            # printing, keep measuring into the JSONL file
            args.json = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            log.warning("stdout unusable (%s): no more --json output; measurements continue into %s",
                        exc.strerror or exc, out)

    async def main() -> Any:
        eventloop.cancel_on_signals()
        return await run_campaign(targets, settings, out_dir=out, on_record=on_record,
                                  on_progress=progress.update)

    with progress:
        try:
            try:
                result = eventloop.run(main())  # uvloop when installed (issue 13)
            finally:
                _interrupt_on_signals()
        except (asyncio.CancelledError, KeyboardInterrupt):
            progress.stop()
            print(f"kzprobe: interrupted; measurements so far are kept in {out}", file=sys.stderr)
            return EX_INTERRUPTED
        except OSError as exc:
            progress.stop()
            print(f"kzprobe: I/O error, the run stopped: {exc}", file=sys.stderr)
            return EX_IOERR
        except ConfigError as exc:  # e.g. an extra-anchors file with no certificate (a bug is not one: it raises)
            progress.stop()
            print(f"kzprobe: {exc}", file=sys.stderr)
            return EX_CONFIG
    try:
        summary_mod.print_summary(result.run, to_stdout=not args.json, quiet=_quiet(args))
    except OSError:  # stdout closed or full: the summary is also in <report_id>.summary.json
        pass
    _print_retention(out, settings.run_retention_days, result.retention)
    if result.run.nothing_judged:
        return EX_TEMPFAIL
    return EX_OK


def _print_retention(out: Path, days: int, res: Any) -> None:
    """Say on stderr (the journal) what the retention (probe.retention) deleted and could not."""
    if res.deleted:
        runs = len({p.name.split(".", 1)[0] for p in res.deleted})
        print(f"kzprobe: retention: deleted {len(res.deleted)} files of {runs} runs older than {days} days "
              f"from {out}", file=sys.stderr)
    for err in res.errors:
        print(f"kzprobe: retention: {err}", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from probe.status import main_status

    text, code = main_status(directory=args.dir, config_path=args.config, last=args.last, as_json=args.json)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # `status --json | head`: main() exits 0 quietly
    except OSError:
        return EX_IOERR
    return code


def _interrupt_on_signals() -> None:
    """Outside the event loop, SIGTERM raises KeyboardInterrupt as SIGINT does, so that a
    signal before the run, after it (asyncio's loop restores SIGTERM's default action when
    it closes) or a second one always ends in exit 130, never in a signal status."""
    for sig in eventloop.STOP_SIGNALS:
        signal.signal(sig, signal.default_int_handler)


def _ignore_signals() -> None:
    """Ignore SIGINT/SIGTERM from now on (the exit code is decided). Python's finalization
    resets Python-level handlers to the default action, which would let a late signal kill
    the exiting process with a signal status instead of 130 (issue 11); SIG_IGN is kept."""
    for sig in eventloop.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)



def _targets_or_exit_code(load: Any) -> list[Any] | int:
    """Call ``load()``; a bad list becomes a message and its sysexits code (65, 66)."""
    from probe.targets import TargetError

    try:
        return list(load())
    except TargetError as exc:  # --strict's first bad row, or a file that is not a list: quoted briefly (F13)
        print(f"kzprobe: {exc.brief()}", file=sys.stderr)
        return EX_DATAERR
    except FileNotFoundError as exc:
        print(f"kzprobe: target list not found: {exc.filename or exc}", file=sys.stderr)
        return EX_NOINPUT
    except OSError as exc:  # a directory, no permission, ...
        print(f"kzprobe: {exc.strerror or exc}", file=sys.stderr)
        return EX_NOINPUT


def cmd_targets(args: argparse.Namespace) -> int:
    from probe.targets import load_targets

    targets = _targets_or_exit_code(lambda: load_targets([_resolve_list(f) for f in args.files], strict=args.strict))
    if isinstance(targets, int):
        return targets
    for t in targets:
        print(f"{t.input}\t{t.category_code or ''}\t{t.notes or ''}")
    return EX_OK


def cmd_helper_serve(args: argparse.Namespace) -> int:
    from probe.config import DEFAULT_DOH
    from probe.geoip import GeoIP
    from probe.helper import AddressPolicy, HelperConfigError, load_tokens
    from probe.helper.server import HelperConfig, serve
    from probe.helper.ssrf import DEFAULT_PORTS
    from probe.localnet import LocalNetwork
    from probe.measure.tls import TrustStore

    host, _, port = args.listen.rpartition(":")
    try:
        listen_port = int(port)
        if not host or not 0 <= listen_port < 65536:  # 0 = any free port
            raise ValueError
    except ValueError:
        print(f"kzprobe: --listen {args.listen!r}: expected HOST:PORT", file=sys.stderr)
        return EX_USAGE
    bad_doh = [u for u in args.doh or () if not u.startswith("https://")]
    if bad_doh:
        print(f"kzprobe: --doh {bad_doh[0]!r}: a DoH URL must be https:// (RFC 8484)", file=sys.stderr)
        return EX_USAGE
    missing = [f"{flag} {f}" for flag, f in (("--asn-db", args.asn_db), ("--country-db", args.country_db))
               if f and not Path(f).is_file()]
    if missing:
        print(f"kzprobe: {missing[0]}: no such file", file=sys.stderr)
        return EX_CONFIG
    try:
        pem = b"".join(Path(p).read_bytes() for p in args.extra_anchors) or None
        try:  # the two constructors that check a flag's value raise ValueError naming it; nothing else may
            trust = TrustStore(extra_anchors_pem=pem)
            policy = AddressPolicy(allow_private=tuple(args.allow_private), local=LocalNetwork.from_os(),
                                   ports=DEFAULT_PORTS | frozenset(args.allow_port))
        except ValueError as exc:
            raise HelperConfigError(str(exc)) from None
        config = HelperConfig(
            tokens=load_tokens(args.token_file), policy=policy, trust=trust, doh_urls=tuple(args.doh or DEFAULT_DOH),
            rate_per_token=args.rate, max_concurrent=args.max_concurrent, max_connections=args.max_connections,
            max_connections_per_client=args.max_connections_per_client, header_read_timeout_s=args.header_timeout,
            listen_host=host.strip("[]"),
            listen_port=listen_port, tls_cert=args.cert, tls_key=args.key,
            insecure_plain_http=args.insecure_plain_http, geoip=GeoIP(args.asn_db, args.country_db))
    except (HelperConfigError, OSError) as exc:
        print(f"kzprobe: {exc}", file=sys.stderr)
        return EX_CONFIG

    async def main() -> None:
        eventloop.cancel_on_signals()
        await serve(config, ready=lambda url: print(f"kzprobe helper listening on {url}", flush=True))

    try:
        asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        return EX_OK
    except HelperConfigError as exc:
        print(f"kzprobe: {exc}", file=sys.stderr)
        return EX_CONFIG
    except OSError as exc:
        print(f"kzprobe: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return EX_CANTCREAT
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kzprobe`` console script; returns the exit code.

    As the program (``argv`` None) it leaves SIGINT/SIGTERM ignored when it returns: the exit code
    is decided, and a late signal must not turn it into a signal status. Called as a function with
    ``argv`` (tests, scripts), it gives the caller back the handlers it had: a test process left
    with SIGTERM raising KeyboardInterrupt passed that to the workers it forked later, which then
    shrugged off ``terminate()`` (CI: the parallel-load Ctrl-C test's workers outlived it)."""
    saved = [signal.getsignal(sig) for sig in eventloop.STOP_SIGNALS]
    try:
        return _main(argv)
    finally:
        if argv is None:
            _ignore_signals()
        else:
            for sig, handler in zip(eventloop.STOP_SIGNALS, saved, strict=True):
                if handler is not None:  # None: a handler not set from Python, which cannot be restored
                    signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    for name in ("stdout", "stderr"):  # started with a closed stream (`>&-`)
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115
    _interrupt_on_signals()  # a SIGTERM from here on ends in exit 130 (was 143/-15 before a run's own set-up)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            return EX_USAGE if exc.code not in (0, None) else EX_OK
        _setup_logging(args.verbose)
        _rich_pipe_is_broken_pipe()
        try:
            code = _dispatch(parser, args)
            sys.stdout.flush()  # a pipe's buffer: a reader gone away shows here, not at exit
            return code
        except BrokenPipeError:
            return _stdout_gone()
    except KeyboardInterrupt:  # before or after a command's own handling of it
        _ignore_signals()
        print("kzprobe: interrupted", file=sys.stderr)
        return EX_INTERRUPTED


def _raise_broken_pipe(_console: Any) -> None:
    raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")


def _rich_pipe_is_broken_pipe() -> None:
    """rich's Console answers a broken pipe with ``SystemExit(1)`` (``claims | head`` exited 1):
    in the kzprobe command it raises BrokenPipeError instead, handled once in :func:`main`."""
    from rich.console import Console

    setattr(Console, "on_broken_pipe", _raise_broken_pipe)  # noqa: B010 (a method: mypy refuses the assignment)


def _stdout_gone() -> int:
    """The reader of stdout went away (``kzprobe targets ... | head``): quiet exit 0, as ``head``
    wanted no more. stdout goes to /dev/null so Python's flush at exit raises no second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EX_OK


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            code = cmd_run(args)
            _ignore_signals()  # the outcome is decided: a late signal must not turn it into a signal status
            return code
        if args.command == "targets":
            return cmd_targets(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command in ("list", "show"):
            return cmd_browse(args)
        if args.command == "assets":
            return cmd_assets(args)
        if args.command == "helper" and args.helper_command == "serve":
            return cmd_helper_serve(args)
        if args.command == "lab":
            from probe.lab.cli import cmd_lab

            return cmd_lab(args)
        if args.command in ("report", "claims", "ooni"):
            return cmd_analysis(args)
    except KeyboardInterrupt:
        _ignore_signals()
        print("kzprobe: interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    parser.error(f"unknown command {args.command}")
    return EX_USAGE


if __name__ == "__main__":
    sys.exit(main())
