"""``kzprobe lab``: run, up, down, list (thin; the work is in :mod:`probe.lab.run`).

Exit codes (sysexits): 0 every verdict matches the scenario's truth (or differs where the
scenario declares the probe known to be wrong: ``xfail_reason``, listed below the table); 65
EX_DATAERR some verdict differs; 66 EX_NOINPUT no such scenario; 70 EX_SOFTWARE the probe could not run
in the lab (it exited with a usage, data, input, software, cannot-create, I/O or config error
(64–66, 70, 73, 74, 78), crashed or was killed: no verdict of it was
compared); 71 EX_OSERR the lab could not be built; 73 EX_CANTCREAT ``--out`` cannot be
created or written (checked before the lab is built); 77 EX_NOPERM not root (or no
``ip``/``nft``); 78 EX_CONFIG a broken scenario file (an input the probe would refuse or measure
under another path included); 130 interrupted (the probe is stopped
with SIGINT and writes its summary, then the lab is torn down).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from probe.exitcodes import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_INTERRUPTED,
    EX_NOINPUT,
    EX_NOPERM,
    EX_OK,
    EX_OSERR,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_USAGE,
)


def _concurrency(text: str) -> int:
    """``--concurrency``: checked before the lab is built, in ``kzprobe run``'s range (1–1024)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= v <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1024, got {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kzprobe lab ...`` on the top-level subparsers."""
    lab = sub.add_parser("lab", help="the lab: a simulated Kazakh ISP in network namespaces (needs root)",
                         description="Build a simulated censored network (Linux network namespaces client — isp — "
                                     "internet) from a scenario file, run the real probe in it and compare its "
                                     "verdicts with the scenario's truth.")
    lsub = lab.add_subparsers(dest="lab_command", required=True)
    r = lsub.add_parser("run", help="build the lab, run `kzprobe run` in it, print verdicts beside the truth, "
                                    "tear down (exit 65 when a verdict differs)")
    r.add_argument("scenario", metavar="SCENARIO|PATH", help="a shipped scenario name (kzprobe lab list) or a file")
    r.add_argument("--out", "-o", metavar="DIR", help="write the measurements here (default: <state dir>/lab/<name>)")
    r.add_argument("--concurrency", "-c", type=_concurrency, default=8, metavar="N",
                   help="measurements at once, 1-1024 (default 8)")
    r.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    r.add_argument("--identity", choices=("config", "helper"), default="config",
                   help="how the probe learns its network: 'config' (the lab's config names ASN, country and "
                        "network, the default) or 'helper' (as a new user's probe: the helper's whoami and the lab's "
                        "ASN database, probe/lab/geodb.py)")
    u = lsub.add_parser("up", help="build the lab and keep it running for manual exploration (Ctrl-C ends it)")
    u.add_argument("scenario", metavar="SCENARIO|PATH", help="a shipped scenario name (kzprobe lab list) or a file")
    u.add_argument("--identity", choices=("config", "helper"), default="config",
                   help="'helper': the probe's config names no network (ASN, country), as a new user's; it learns "
                        "it from the helper's whoami and the lab's ASN database")
    d = lsub.add_parser("down", help="remove every lab namespace, veth and process left on this machine by a crash")
    d.add_argument("lab_id", nargs="*", metavar="LAB_ID",
                   help="only these labs (ids as `kzprobe lab list` shows them); default: every lab left over")
    d.add_argument("--force", action="store_true", help="also labs whose `kzprobe lab run|up` is still running")
    lsub.add_parser("list", help="list the shipped scenarios and the labs running on this machine")


def _load(name: str) -> Any:
    from probe.lab.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(name)
    except ScenarioError as exc:
        print(f"kzprobe: {exc}", file=sys.stderr)
        return EX_NOINPUT if exc.where in ("name", "file") and "not found" in str(exc) or exc.where == "name" \
            else EX_CONFIG


def _need_root() -> int | None:
    from probe.lab.topology import check_privileges

    why = check_privileges()
    if why:
        print(f"kzprobe: {why}", file=sys.stderr)
        return EX_NOPERM
    return None


def _sigterm_to_interrupt() -> None:
    """SIGTERM and SIGINT interrupt once (KeyboardInterrupt); later ones are ignored, so that a second
    signal cannot break into the teardown the first one started (two SIGTERMs 0.2 s apart during the
    build left the lab's namespaces behind 3 times in 5: break test, stop 17)."""
    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def print_table(run: Any, scenario: Any, *, file: Any = None) -> None:
    """The verdicts beside the truth, as a rich table. The scenario's names, the inputs and the probe's
    reasons (a site's title) are printed as they are, never as Rich markup, their terminal controls
    escaped (:mod:`probe.safetext`)."""
    from rich.table import Table
    from rich.text import Text

    from probe.lab.run import actions
    from probe.safetext import plain_console, terminal_safe

    out = file or sys.stdout
    console = plain_console(out, soft_wrap=False, width=None if out.isatty() else 170)
    t = Table(title=terminal_safe(f"kzprobe lab: {scenario.name} — {scenario.description}"), title_justify="left")
    several = len(scenario.vantages) > 1
    cols = (("vantage",) if several else ()) + ("site", "censor", "truth", "probe", "", "probe's reason")
    for col in cols:
        t.add_column(col, overflow="fold")
    for o in run.outcomes:
        mark = (Text("✓", style="green") if o.match else Text("✗ known", style="yellow") if o.known_wrong
                else Text("✗", style="bold red"))
        site = o.site.display + (o.input.split(o.site.display, 1)[1] if len(o.site.paths) > 1 else "")
        isp = scenario.vantage(o.vantage).isp
        row = ([scenario.vantage(o.vantage).describe()] if several else []) + [
            site, actions(o.site, isp), o.expect, o.got]  # whole: folded, never cut
        t.add_row(*(terminal_safe(x) for x in row), mark, terminal_safe(o.reason))
    console.print(t)
    n_ok = sum(o.match for o in run.outcomes)
    known = [o for o in run.outcomes if o.known_wrong]
    console.print(terminal_safe(f"{n_ok}/{len(run.outcomes)} verdicts match the truth; probe exit code "
                                f"{run.exit_code} (expected {expected_exit(scenario)}); {run.wall_s:.1f} s; "
                                f"measurements: {run.jsonl}"))
    for isp in scenario.isps:
        for r in isp.tcp:
            console.print(terminal_safe(f"censor of {isp.name}, every address of {r.describe()}"))
    for o in known:
        console.print(terminal_safe(f"known wrong ({o.vantage}) {o.input}: the probe says {o.got}, the truth is "
                                    f"{o.expect}: {o.xfail_reason}"))


def teardown_note(lab_id: str | None) -> str:
    """"the lab is torn down" when nothing of lab ``lab_id`` is left (no namespace, no state file),
    else what is left and the command that removes it: the message must not claim a teardown that
    did not finish (break test: a SIGTERM during the teardown left the namespaces of a lab the
    message called torn down)."""
    from probe.lab.topology import PREFIX, STATE_DIR, lab_namespaces

    if lab_id is None:
        return "the lab is torn down"
    left = [ns for ns in lab_namespaces() if ns.startswith(f"{PREFIX}-{lab_id}-")]
    if (STATE_DIR / f"{lab_id}.json").exists():
        left.append(str(STATE_DIR / f"{lab_id}.json"))
    if not left:
        return "the lab is torn down"
    return f"the lab {lab_id} was NOT fully torn down ({', '.join(left)} left): `kzprobe lab down` removes it"


def expected_exit(scenario: Any) -> int:
    """The probe's exit code the scenario implies: 75 (vantage offline) for an outage, else 0."""
    return EX_TEMPFAIL if scenario.outage else EX_OK


def cmd_lab(args: argparse.Namespace) -> int:
    """Dispatch ``kzprobe lab <command>``; returns the exit code."""
    if args.lab_command == "list":
        return _list()
    rc = _need_root()
    if rc is not None:
        return rc
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _sigterm_to_interrupt()
    try:
        return _cmd_lab(args)
    finally:
        # after an interrupt the signals stay ignored (the exit code 130 is decided; a late second signal
        # must not turn it into a death by signal); otherwise the caller's handlers come back
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


def _cmd_lab(args: argparse.Namespace) -> int:
    if args.lab_command == "down":
        from probe.lab.topology import down

        res = down(force=args.force, only=args.lab_id or None)
        print(f"removed {len(res.removed)} lab(s){': ' + ', '.join(res.removed) if res.removed else ''}")
        unknown = sorted(set(args.lab_id) - set(res.removed) - set(res.kept))
        if unknown:
            print(f"kzprobe: no lab {', '.join(unknown)} on this machine (`kzprobe lab list` shows them)",
                  file=sys.stderr)
            return EX_USAGE
        if res.kept:
            pids = ", ".join(f"{pid} ({lab_id})" for lab_id, pid in res.kept.items())
            print(f"kept {len(res.kept)} lab(s) still in use by pid {pids}; --force removes them")
        return EX_OK
    scenario = _load(args.scenario)
    if isinstance(scenario, int):
        return scenario
    from probe.lab.run import Lab, OutDirError, check_out_dir
    from probe.lab.topology import LabError

    if args.lab_command == "up":
        try:
            return _up(scenario, identity=args.identity)
        except LabError as exc:
            print(f"kzprobe: the lab could not be built: {exc}", file=sys.stderr)
            return EX_OSERR
        except KeyboardInterrupt:
            print("kzprobe: interrupted; the lab is torn down", file=sys.stderr)
            return EX_INTERRUPTED
    from probe.config import state_dir

    try:  # before building anything: a lab whose measurements cannot be written is no use
        out = check_out_dir(Path(args.out) if args.out else state_dir() / "lab" / scenario.name)
    except OutDirError as exc:
        print(f"kzprobe: --out: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    probe_started = False
    lab_id = None
    try:
        print(f"kzprobe lab: building {scenario.name} ({len(scenario.sites)} sites) ...", file=sys.stderr, flush=True)
        lab = Lab(scenario, identity=args.identity)
        lab_id = lab.topology.lab_id
        with lab:
            where = ", ".join(lab.topology.namespaces[v.name] for v in scenario.vantages)
            print(f"kzprobe lab: running the probe in {where} ...", file=sys.stderr, flush=True)
            probe_started = True
            run = lab.run_probe(out_dir=out, concurrency=args.concurrency)
    except LabError as exc:
        print(f"kzprobe: the lab could not be built: {exc}", file=sys.stderr)
        return EX_OSERR
    except OutDirError as exc:  # vanished or became read-only since the check
        print(f"kzprobe: --out: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    except KeyboardInterrupt:
        torn = teardown_note(lab_id)
        if probe_started:
            print(f"kzprobe: interrupted; the probe was stopped (its measurements and summary so far are in {out}); "
                  f"{torn}", file=sys.stderr)
        else:
            print(f"kzprobe: interrupted while the lab was being built, before the probe started; {torn}",
                  file=sys.stderr)
        return EX_INTERRUPTED
    failure = run.probe_failure
    if args.json:
        print(json.dumps({"scenario": scenario.name, "probe_exit_code": run.exit_code, "probe_failure": failure,
                          "jsonl": str(run.jsonl) if run.jsonl else None,
                          "outcomes": [{"vantage": o.vantage, "input": o.input, "expect": o.expect, "got": o.got,
                                        "match": o.match, "known_wrong": o.known_wrong, "xfail_reason": o.xfail_reason,
                                        "reason": o.reason} for o in run.outcomes]}, ensure_ascii=False, indent=1))
    elif failure is None or run.records:
        print_table(run, scenario)
    if run.exit_code not in (EX_OK, EX_TEMPFAIL):
        print(run.stderr[-2000:], file=sys.stderr)
    if failure is not None:
        print(f"kzprobe lab: the probe could not run in the lab: exit {run.exit_code} ({failure}); "
              f"{len(run.records)} of {len(run.outcomes)} inputs measured, no verdict compared (its stderr is above)",
              file=sys.stderr)
        return EX_SOFTWARE
    ok = run.all_match_or_known and run.exit_code == expected_exit(scenario)
    return EX_OK if ok else EX_DATAERR


def _up(scenario: Any, *, identity: str = "config") -> int:
    import shlex
    import time

    from probe.lab.run import Lab, python_m

    with Lab(scenario, identity=identity) as lab:
        inputs = lab.rundir / "inputs.txt"
        inputs.write_text("".join(u + "\n" for u in lab.inputs()), encoding="utf-8")
        first = scenario.vantages[0].name
        cmd = lab.topology.exec_prefix(first) + [*python_m("probe"), "run", "--config",
                                                 str(lab.config_path)]
        print(f"lab {scenario.name} is up (id {lab.topology.lab_id}); namespaces: "
              f"{', '.join(lab.topology.namespaces.values())}")
        print("measure one input:\n  sudo " + shlex.join(cmd + ["--input", lab.inputs()[0]]) if lab.inputs() else "")
        print("measure the scenario:\n  sudo " + shlex.join(cmd + ["--targets", str(inputs)]))
        print("a shell in the client namespace:\n  sudo " + shlex.join(lab.topology.exec_prefix(first) + ["bash"]))
        for v in scenario.vantages[1:]:
            print(f"vantage {v.describe()}:\n  sudo " + shlex.join(lab.topology.exec_prefix(v.name) + [
                *python_m("probe"), "run", "--config", str(lab.config_path_of(v.name)), "--targets",
                str(inputs)]))
        print("Ctrl-C tears the lab down.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\ntearing down ...", file=sys.stderr)
    return EX_OK


def _list() -> int:
    from probe.lab.scenario import ScenarioError, load_scenario, shipped_scenarios
    from probe.lab.topology import STATE_DIR, owner_in_use

    for name in shipped_scenarios():
        try:
            s = load_scenario(name)
            where = f"  {len(s.vantages)} vantages on {len(s.isps)} ISPs" if not s.default_world else ""
            print(f"{name:28} {len(s.sites):3} sites{where}  {s.description}")
        except ScenarioError as exc:
            print(f"{name:28} broken: {exc}")
    running = sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []
    if running:
        print("\nlabs on this machine (`kzprobe lab down` removes those left over; one in use is kept "
              "unless --force):")
        for f in running:
            try:
                st = json.loads(f.read_text())
                owner = owner_in_use(st)
                use = f"in use by pid {owner}" if owner is not None else "left over: `kzprobe lab down` removes it"
                print(f"  {st['lab_id']}  {', '.join(st['namespaces'].values())}  ({use})")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                print(f"  {f.stem}  (unreadable state file: `kzprobe lab down` removes it)")
    return EX_OK
