"""``kzprobe status``: the timer, the last runs and where the results are, on a deployed machine.

Everything here is read-only and never raises on what it finds: systemd missing or
not running ("systemd not available"), a results directory that does not exist yet,
torn or garbage ``*.summary.json`` files (listed under ``bad``) are all reported.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import platformdirs

from probe import schema
from probe.retention import pcap_dirs, report_id_of, run_files, run_start
from probe.runlines import LineStats, VantageSeen, count_lines, verdict_counts
from probe.safetext import json_text
from probe.store import writer_alive

#: The state directory of kzprobe.service (``StateDirectory=kzprobe``).
SYSTEM_STATE_DIR = Path("/var/lib/kzprobe")

#: ``systemctl show`` properties read for the timer and the service.
TIMER_PROPS = ("ActiveState", "SubState", "UnitFileState", "NextElapseUSecRealtime", "LastTriggerUSec")
SERVICE_PROPS = ("ActiveState", "Result", "ExecMainStatus", "ExecMainExitTimestamp")


@dataclass(frozen=True, kw_only=True)
class UnitState:
    """systemd's view of the timer and the service.

    Attributes:
        available: False when systemd cannot be asked (not installed, not PID 1, no bus).
        reason: why not, when ``available`` is False ("systemd not available: ...").
        timer / service: ``systemctl show`` properties, e.g. ``{"ActiveState": "active"}``.
    """

    available: bool
    reason: str = ""
    timer: Mapping[str, str] = field(default_factory=dict)
    service: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    """One run, from its ``<report_id>.summary.json``.

    Attributes:
        report_id: the run id; ``start``: its start, UTC ISO 8601 (None if unknown).
        inputs / measured: inputs planned and measurements written.
        counts: verdict counts ("accessible", "inconclusive", "dns", ...).
        vantage_offline: nothing of the run could be judged (exit 75).
        intercepted_by: issuer DN of a middlebox intercepting the control's TLS, or None.
        interrupted / deadline_hit: the run was stopped early.
        jsonl_bytes: size of its measurements file, bytes (0 if missing).
        budget_total: when the inputs did not fit the time budget (probe/budget.py), how
            many were given (``inputs`` is the part measured); None when they fitted.
        killed: the run ended without writing its summary (SIGKILL, power loss, the OOM killer):
            ``measured`` and ``counts`` come from its measurements file (every line written is
            kept), ``inputs`` is unknown (set to ``measured``), ``interrupted`` is True.
        unread: of a killed run's ``measured``, the lines past its file's first
            :data:`KILLED_READ_BYTES`: counted, their verdicts not read (not in ``counts``).
        running: the run is still going (its writer holds its measurements file's lock,
            :func:`probe.store.writer_alive`): counted like a killed run, so far; ``killed`` is False.
        io_error: why writing its measurements failed and the run stopped (exit 74), from its
            summary (``"OSError: [Errno 28] No space left on device"``); None when it did not.
            :func:`stop_text` says it for a person.
    """

    report_id: str
    start: str | None
    inputs: int
    measured: int
    counts: Mapping[str, int]
    vantage_offline: bool
    intercepted_by: str | None
    interrupted: bool
    deadline_hit: bool
    jsonl_bytes: int
    budget_total: int | None = None
    killed: bool = False
    unread: int = 0
    running: bool = False
    io_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Status:
    """Everything ``kzprobe status`` prints.

    Attributes:
        results_dir: where the runs are; ``exists``: whether it exists (readable or not).
        runs: the last runs, newest first. ``total_runs``: runs found in all.
        bad: ``(file, reason)`` for summary files that could not be read (torn, garbage)
            and measurement files that could not be read. A run killed before it wrote its summary
            is in ``runs`` (``killed``), counted from its measurements.
        disk_bytes: bytes used by run files and their packet captures (``<report_id>.pcap/``);
            ``free_bytes``: free space there (None if unknown).
        units: systemd's view. ``consent``: True/False/None as in the config
            (``[consent] accepted``); ``config``: the config file used, or its error.
        retention_days: the retention period (0 = forever).
        consent_error: the config's error when ``consent.accepted`` itself is invalid
            (not a TOML boolean), else "".
        config_ok: False when the config could not be used (``consent`` is then unknown).
    """

    results_dir: str
    exists: bool
    runs: Sequence[RunStatus]
    total_runs: int
    bad: Sequence[tuple[str, str]]
    disk_bytes: int
    free_bytes: int | None
    units: UnitState
    consent: bool | None
    config: str
    retention_days: int
    consent_error: str = ""
    config_ok: bool = True

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``kzprobe status --json``)."""
        d = asdict(self)
        d["bad"] = [{"file": f, "reason": r} for f, r in self.bad]
        return d


def results_dir(explicit: str | Path | None = None, run_out: str = "",
                env: Mapping[str, str] | None = None) -> Path:
    """Where a machine's results are, in order: ``explicit`` (a flag), ``run_out`` (run.out of the
    config), ``$STATE_DIRECTORY``, :data:`SYSTEM_STATE_DIR` when it exists (a deployed machine),
    else the XDG state dir (``~/.local/state/kzprobe``)."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if run_out:
        return Path(run_out)
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if SYSTEM_STATE_DIR.is_dir():
        return SYSTEM_STATE_DIR
    return Path(platformdirs.user_state_dir("kzprobe"))


def _systemctl_show(unit: str, props: Sequence[str], systemctl: str) -> dict[str, str]:
    out = subprocess.run([systemctl, "show", unit, "--property=" + ",".join(props)], capture_output=True,
                         text=True, timeout=10, check=True, env={**os.environ, "SYSTEMD_PAGER": "", "LC_ALL": "C"})
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def unit_state(*, systemctl: str | None = None, booted_marker: str | Path = "/run/systemd/system") -> UnitState:
    """Ask systemd about kzprobe.timer and kzprobe.service; never raises.

    Args:
        systemctl: the systemctl binary (default: found on PATH).
        booted_marker: exists when systemd is PID 1 (sd_booted(3)).
    """
    exe = systemctl or shutil.which("systemctl")
    if not exe:
        return UnitState(available=False, reason="systemd not available: no systemctl")
    if not Path(booted_marker).exists():
        return UnitState(available=False, reason="systemd not available: not running (no /run/systemd/system)")
    try:
        return UnitState(available=True, timer=_systemctl_show("kzprobe.timer", TIMER_PROPS, exe),
                         service=_systemctl_show("kzprobe.service", SERVICE_PROPS, exe))
    except subprocess.CalledProcessError as exc:
        msg = (exc.stderr or "").strip().splitlines()
        return UnitState(available=False, reason=f"systemd not available: {msg[0] if msg else exc}")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        return UnitState(available=False, reason=f"systemd not available: {exc}")


#: A verdict name as the runner counts them ("accessible", "tls_mitm", "http-failure" ...).
_VERDICT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _count(v: object) -> bool:
    """A plausible count: a non-negative int (not a bool), below 10^12."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**12


#: A run's summary longer than this is not read (named unreadable): the runner writes 2.7-3.7 KB and
#: reserves 16 KiB for it (probe.runner); a 300 MB junk summary was read whole and listed as a 0/0 run.
MAX_SUMMARY_BYTES = 1 << 20


def _run_status(report_id: str, summary: Path, files: Sequence[Path]) -> RunStatus:
    with open(summary, "rb") as fh:  # bounded: a results dir may hold a junk file of any size
        raw = fh.read(MAX_SUMMARY_BYTES + 1)
    if len(raw) > MAX_SUMMARY_BYTES:
        raise ValueError(f"over {MAX_SUMMARY_BYTES} bytes ({summary.stat().st_size} bytes), not read: "
                         "a run's summary is a few KB")
    try:  # the schema the runner writes (probe.schema.RunSummaryRecord): wrong types are errors
        data = schema.SUMMARY_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)[:200]) from None
    counts = data.counts
    if not all(_count(v) and _VERDICT_NAME.fullmatch(k) for k, v in counts.items()):
        raise ValueError(f"counts: expected an object of verdict names to counts, got {counts!r}"[:200])
    inputs, measured = data.inputs, data.measured
    if not (_count(inputs) and _count(measured)):
        raise ValueError(f"inputs/measured: expected counts, got {inputs!r}/{measured!r}"[:200])
    flags = {"vantage_offline": data.vantage_offline, "interrupted": data.interrupted,
             "deadline_hit": data.deadline_hit}
    intercepted = data.control_intercepted_by or None
    if intercepted is not None and (not isinstance(intercepted, str) or not intercepted.isprintable()):
        raise ValueError("control_intercepted_by: expected a printable issuer name")
    plan, budget_total = data.plan, None
    if isinstance(plan, dict) and plan.get("fits") is False:
        if not _count(plan.get("total")):
            raise ValueError(f"plan.total: expected a count, got {plan.get('total')!r}"[:200])
        budget_total = plan["total"]
    io_error = data.io_error or None
    if io_error is not None and (not io_error.isprintable() or len(io_error) > 1000):
        raise ValueError("io_error: expected a printable error message")
    jsonl = summary.parent / f"{report_id}.jsonl"
    start = run_start(report_id, files)
    return RunStatus(report_id=report_id, start=start.isoformat() if start else None,
                     inputs=inputs, measured=measured, counts=counts,
                     vantage_offline=flags["vantage_offline"], intercepted_by=intercepted,
                     interrupted=flags["interrupted"], deadline_hit=flags["deadline_hit"],
                     jsonl_bytes=jsonl.stat().st_size if jsonl.is_file() else 0, budget_total=budget_total,
                     io_error=io_error)


_ERRNO = re.compile(r"\[Errno (\d+)\]")
#: The errors that mean the disk (or the user's quota) is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def stop_text(io_error: str) -> str:
    """Why a run stopped, for a person, from its summary's ``io_error`` (``f"{type}: {exc}"`` of the
    OSError that stopped the writer, :mod:`probe.runner`): ``"stopped: disk full (ENOSPC, errno 28)"``,
    ``"stopped: I/O error (EIO, errno 5)"``, else ``"stopped: I/O error: <the message>"``."""
    m = _ERRNO.search(io_error)
    if m is None:
        return f"stopped: I/O error: {io_error}"
    code = int(m.group(1))
    what = "disk full" if code in DISK_FULL_ERRNOS else "I/O error"
    return f"stopped: {what} ({errno.errorcode.get(code, '?')}, errno {code})"


#: What ``list`` and ``status`` say of a run that ended without its summary: killed (SIGKILL, power
#: loss, the OOM killer), or stopped by an I/O error when even the summary's reserved room
#: (:func:`probe.runner._reserve_summary`) could not be had (a disk full before the run began).
NO_SUMMARY_TEXT = "KILLED or stopped by an I/O error before its summary"


#: Of a killed run's measurements file, the bytes whose records are read for their verdicts (thousands
#: of records; ~1 CPU-s); the lines past it are counted by blocks without decoding
#: (:func:`probe.runlines.count_lines`): a 200 MB file took 14.8 CPU-s to parse whole, now 1.6.
KILLED_READ_BYTES = 16 << 20


def _killed_run_status(report_id: str, jsonl: Path, files: Sequence[Path], *,
                       running: bool = False) -> RunStatus:
    """A run without a summary (killed before it ended, or still ``running``), from its measurements file:
    the verdicts of its complete lines in its first :data:`KILLED_READ_BYTES`, then the count of its complete
    non-blank lines past them (``unread``; a torn last line, the one being written, is not counted, nor a
    blank one, as the verdicts skip it; a junk line is); offline when every
    record read was judged offline, intercepted by the issuer its records name
    (:class:`probe.runlines.VantageSeen`)."""
    seen = VantageSeen()
    read = LineStats()
    counts = verdict_counts(jsonl, read, vantage=seen, max_bytes=KILLED_READ_BYTES)
    counts = Counter({(k if _VERDICT_NAME.fullmatch(k) else "invalid"): n for k, n in counts.items()})
    unread = count_lines(jsonl, read.stopped_at) if read.stopped_at is not None else 0
    measured = sum(counts.values()) + unread
    start = run_start(report_id, files)
    return RunStatus(report_id=report_id, start=start.isoformat() if start else None, inputs=measured,
                     measured=measured, counts=dict(counts), vantage_offline=seen.offline,
                     intercepted_by=seen.intercepted_by, interrupted=not running, deadline_hit=False,
                     jsonl_bytes=jsonl.stat().st_size, killed=not running, unread=unread, running=running)


def collect_runs(directory: Path) -> tuple[list[RunStatus], list[tuple[str, str]], int]:
    """Read every run of ``directory``.

    Returns:
        ``(runs newest first, bad files with reasons, bytes used by run files and packet captures)``.
    """
    runs: list[RunStatus] = []
    bad: list[tuple[str, str]] = []
    used = 0
    for rid, files in run_files(directory).items():
        for p in files:
            try:
                used += p.stat().st_size
            except OSError:
                pass
        summary = next((p for p in files if p.name.endswith(".summary.json")), None)
        jsonl = next((p for p in files if p.name.endswith(".jsonl")), None)
        running = summary is None and jsonl is not None and writer_alive(jsonl)
        late = directory / f"{rid}.summary.json"
        if summary is None and not running and not late.is_symlink() and late.is_file():
            summary = late  # the run ended between the listing and the lock's check: its summary is there
        if summary is None:
            if jsonl is not None:  # running, or killed before it ended: its measurements are there
                try:
                    runs.append(_killed_run_status(rid, jsonl, files, running=running))
                except PermissionError as exc:
                    bad.append((str(jsonl), f"cannot read: {exc.strerror} (add yourself to group kzprobe)"))
                except OSError as exc:
                    bad.append((str(jsonl), f"no summary file (the run was killed before it ended?), and the "
                                            f"measurements cannot be read: {exc.strerror or exc}"))
            else:  # only a leftover .summary.tmp: a summary torn mid-write, and no measurements
                bad.extend((str(p), "a summary torn mid-write, and no measurements file") for p in files)
            continue
        try:
            runs.append(_run_status(rid, summary, files))
        except PermissionError as exc:
            bad.append((str(summary), f"cannot read: {exc.strerror} (add yourself to group kzprobe)"))
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
            bad.append((str(summary), f"unreadable summary: {exc}"))
    used += _pcap_bytes(directory)
    bad.extend(stray_summaries(directory))
    runs.sort(key=lambda r: (r.start or "", r.report_id), reverse=True)
    return runs, sorted(bad), used


def _pcap_bytes(directory: Path) -> int:
    """Bytes of the runs' packet captures (``<report_id>.pcap/*.pcap``, regular files directly in
    each, as retention deletes them): they were left out of the disk use (break test)."""
    used = 0
    for d in pcap_dirs(directory).values():
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for p in entries:
            try:
                if p.name.endswith(".pcap") and not p.is_symlink() and p.is_file():
                    used += p.stat().st_size
            except OSError:
                pass
    return used


def stray_summaries(directory: Path) -> list[tuple[str, str]]:
    """``(file, reason)`` for every ``*.summary.json`` in ``directory`` that is not a run's
    summary: a name that is not ``<report_id>.summary.json`` (renamed, copied, garbage), a
    symlink or not a regular file; and for every ``<report_id>.jsonl`` that is a symlink or not a
    regular file (a FIFO): its run is named unreadable, not left out of ``list`` unsaid. They are
    never read (nor deleted by retention)."""
    out: list[tuple[str, str]] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return out
    for p in entries:
        if p.name.endswith(".jsonl") and report_id_of(p.name) is not None:
            if p.is_symlink():
                out.append((str(p), "a symlink, not read (a run's measurements file is a regular file)"))
            elif not p.is_file():
                out.append((str(p), "not a regular file (a FIFO, a device...), not read: a run's "
                                    "measurements file is a regular file"))
            continue
        if not p.name.endswith(".summary.json"):
            continue
        if p.is_symlink():
            out.append((str(p), "a symlink, not read (a run's summary is a regular file)"))
        elif not p.is_file():
            out.append((str(p), "not a regular file, not read"))
        elif report_id_of(p.name) is None:
            out.append((str(p), "not a kzprobe run's summary (expected <report_id>.summary.json, e.g. "
                                "20261129T060000Z_webconnectivity_KZ_9198_<16 hex>.summary.json); not read"))
    return out


def collect(directory: Path, *, last: int = 10, units: UnitState | None = None, consent: bool | None = None,
            config: str = "", retention_days: int = 90, consent_error: str = "", config_ok: bool = True) -> Status:
    """Build the :class:`Status` of ``directory`` (see :func:`results_dir`); never raises on its content.

    Args:
        last: how many runs to keep (newest first).
        units: systemd's view (default: :func:`unit_state`).
    """
    bad: list[tuple[str, str]] = []
    runs: list[RunStatus] = []
    used = 0
    try:
        exists = directory.is_dir()
        if exists:
            runs, bad, used = collect_runs(directory)
    except PermissionError as exc:  # the directory or a parent: exists, but not for this user
        exists = True
        bad = [(str(directory), f"cannot list: {exc.strerror} (add yourself to group kzprobe)")]
    try:
        free: int | None = shutil.disk_usage(directory if exists else directory.parent).free
    except OSError:
        free = None
    return Status(results_dir=str(directory), exists=exists, runs=runs[:max(last, 0)], total_runs=len(runs),
                  bad=bad, disk_bytes=used, free_bytes=free, units=units if units is not None else unit_state(),
                  consent=consent, config=config, retention_days=retention_days, consent_error=consent_error,
                  config_ok=config_ok)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"


def _usec_time(v: str) -> str:
    return "-" if not v or v in ("0", "n/a") else v


def render(s: Status) -> str:
    """The plain-text report of ``kzprobe status`` (no colour: it may go to a journal or a pipe)."""
    lines: list[str] = []
    if s.units.available:
        t, sv = s.units.timer, s.units.service
        lines.append(f"timer:    kzprobe.timer {t.get('ActiveState', '?')} ({t.get('SubState', '?')}), "
                     f"{t.get('UnitFileState', '?')}; next {_usec_time(t.get('NextElapseUSecRealtime', ''))}, "
                     f"last {_usec_time(t.get('LastTriggerUSec', ''))}")
        lines.append(f"service:  kzprobe.service {sv.get('ActiveState', '?')}, result {sv.get('Result', '?')}, "
                     f"last exit status {sv.get('ExecMainStatus', '?')} (75 = vantage offline)")
    else:
        lines.append(f"timer:    {s.units.reason}")
    if s.consent_error:
        consent = (f"INVALID — {s.consent_error}; runs refuse to start (set [consent] accepted = true, "
                   "a TOML boolean, once you accept it)")
    elif not s.config_ok:
        consent = "unknown (the config is unusable; runs refuse to start)"
    else:
        consent = {True: "accepted", False: "NOT ACCEPTED — runs refuse to start (set [consent] accepted = true)",
                   None: "not asked (no [consent] in the config)"}[s.consent]
    lines.append(f"config:   {s.config}; risk notice {consent}")
    keep = "forever" if s.retention_days == 0 else f"{s.retention_days} days"
    lines.append(f"results:  {s.results_dir}{'' if s.exists else ' (does not exist yet)'}; "
                 f"{s.total_runs} runs, {_size(s.disk_bytes)} used, {_size(s.free_bytes)} free; kept {keep}")
    if s.runs:
        lines.append("")
        lines.append(f"last {len(s.runs)} runs (newest first):")
        lines.append(f"  {'start (UTC)':<20} {'inputs':>6} {'measured':>8}  verdicts")
        for r in s.runs:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "none"
            flags = []
            if r.vantage_offline:
                flags.append("VANTAGE OFFLINE")
            if r.intercepted_by:
                flags.append(f"TLS INTERCEPTED by {r.intercepted_by}")
            if r.running:
                flags.append("RUNNING: counted from its measurements so far")
            if r.killed:
                flags.append(f"{NO_SUMMARY_TEXT}: counted from its measurements, inputs unknown")
            if r.io_error:
                flags.append(stop_text(r.io_error))
            if r.killed or r.running:
                if r.unread:
                    flags.append(f"the last {r.unread} counted, their verdicts not read (past the file's "
                                 f"first {KILLED_READ_BYTES >> 20} MB)")
            elif r.interrupted:
                flags.append("interrupted")
            if r.deadline_hit:
                flags.append("run deadline hit")
            if r.budget_total is not None:
                flags.append(f"time budget: {r.inputs} of {r.budget_total} inputs, rotating")
            start = (r.start or "?")[:19].replace("T", " ")
            lines.append(f"  {start:<20} {'?' if r.killed or r.running else r.inputs:>6} {r.measured:>8}  {counts}"
                         + (f"  [{'; '.join(flags)}]" if flags else ""))
    elif s.exists:
        lines.append("no runs yet")
    for f, reason in s.bad:
        lines.append(f"warning: {f}: {reason}")
    return "\n".join(lines)


def main_status(*, directory: str | None, config_path: str | None, last: int, as_json: bool) -> tuple[str, int]:
    """What ``kzprobe status`` prints and its exit code (0; the CLI is a thin wrapper).

    A broken config does not stop the status: it is named in the output and the
    defaults are used.
    """
    from probe.config import ConfigError, load_settings

    consent: bool | None = None
    consent_error, config_ok = "", True
    run_out, retention = "", 90
    try:
        settings = load_settings(config_path=config_path)
        consent, run_out, retention = settings.consent_accepted, settings.run_out, settings.run_retention_days
        config = settings.source
    except ConfigError as exc:
        config, config_ok = f"unusable ({exc})", False
        if exc.key.startswith("consent.") or exc.key == "KZPROBE_CONSENT_ACCEPTED":
            consent_error = f"the config's {exc.key} is invalid: {exc.message}"
    st = collect(results_dir(directory, run_out), last=last, consent=consent, config=config, retention_days=retention,
                 consent_error=consent_error, config_ok=config_ok)
    if as_json:
        return json_text(st.to_json(), indent=1), 0
    return render(st), 0

