"""Build a lab from a scenario, run the real probe in its client namespace, compare.

:class:`Lab` is a context manager: entering builds the namespaces
(:mod:`probe.lab.topology`), writes the lab PKI and the probe's config, starts the
servers (:mod:`probe.lab.services`), the censor and the control helper
(``kzprobe helper serve``) and waits until each says it is listening; leaving kills every
child and removes the namespaces, also on an exception or Ctrl-C.

:func:`run_scenario` runs ``kzprobe run`` unchanged inside the client namespace and
returns one :class:`Outcome` per input: the scenario's ``expect`` beside the verdict
the probe wrote (``test_keys.blocking``/``accessible`` → ``false``, ``down``,
``inconclusive``, or the blocking type).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from probe import vocab
from probe.errors import KzprobeError
from probe.lab.pki import LabPKI
from probe.lab.scenario import Scenario, Site, to_alabel
from probe.lab.topology import (CANARY_IP, DOH_IP, HELPER_IP, HELPER_PORT, ISP_CLIENT_IP, LAB_NET,
                                STATE_DIR, LabError, Topology, site_addresses)

log = logging.getLogger("kzprobe.lab")

#: The lab's ``probe_asn``: AS64500, the first of RFC 5398's documentation ASNs, so that a
#: lab measurement can never pass for real Kazakh data (Kazakhtelecom is AS9198).
LAB_ASN = "AS64500"


def lab_network_name(scenario: str) -> str:
    """The lab's ``probe_network_name``: ``"kzprobe lab (<scenario>)"``."""
    return f"kzprobe lab ({scenario})"


#: Seconds the probe is given to stop after SIGINT (it writes its summary with
#: ``interrupted: true``) before it is killed.
STOP_GRACE_S = 5.0
#: The probe's exit codes that mean it could not run (sysexits(3)): the lab's verdicts
#: then say nothing about the probe's judgement.
PROBE_CANNOT_RUN = {64: "usage error", 66: "no input", 70: "internal software error", 73: "cannot create output",
                    74: "I/O error", 78: "configuration error", 1: "crashed (uncaught exception)"}


class OutDirError(KzprobeError, ValueError):
    """The output directory cannot be created or written; the message names it and why."""


def check_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (and parents) and check a file can be written in it, before a lab is built.

    Returns:
        the directory as a :class:`Path`.

    Raises:
        OutDirError: not creatable, not a directory or not writable (``/proc/x``, a
            read-only file system, a file).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".kzprobe-lab-write-test-"):
            pass
    except OSError as exc:
        raise OutDirError(f"cannot write measurements to {out}: {exc.strerror or exc}") from None
    return out


def probe_failure(exit_code: int) -> str | None:
    """What an exit code of ``kzprobe run`` says when the probe could not run (a sentence), else None.

    0, 65 (some inputs bad), 75 (vantage offline) and 130 (interrupted) are runs; the codes
    of :data:`PROBE_CANNOT_RUN` and a death by signal (negative) are not."""
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return PROBE_CANNOT_RUN.get(exit_code)


#: Seconds a lab server may take to say READY.
START_TIMEOUT_S = 30.0
#: The probe's timeouts in the lab (seconds): short, the lab's paths are local.
LAB_TIMEOUTS = {"dns_s": 1.5, "dns_listen_s": 0.4, "connect_s": 2.0, "tls_s": 2.0, "http_s": 4.0,
                "measurement_s": 8.0}


def verdict_word(test_keys: dict[str, Any]) -> str:
    """The ``expect`` vocabulary for a record's verdict: ``false`` (accessible), ``down``
    (blocking false, accessible false), ``inconclusive`` (blocking null), or the blocking type
    (``throttling`` included: reachable, ``accessible`` true, but slowed down by SNI)."""
    return vocab.verdict_word(test_keys.get("blocking"), test_keys.get("accessible"))


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One input of the scenario: truth beside what the probe said.

    Attributes:
        site: the scenario's site.
        input: the URL measured.
        expect: the truth (scenario ``expect``).
        got: the probe's verdict word (:func:`verdict_word`); "missing" = no record.
        reason: the probe's ``x_reason``.
    """

    site: Site
    input: str
    expect: str
    got: str
    reason: str = ""

    @property
    def match(self) -> bool:
        return self.expect == self.got


@dataclass
class LabRun:
    """The result of :func:`run_scenario`.

    Attributes:
        outcomes: one per input, in scenario order.
        exit_code: the probe's exit code (75 = vantage offline).
        jsonl: the measurements file (None when the probe wrote none).
        out_dir: where the probe wrote.
        stderr: the probe's stderr (warnings).
        wall_s: seconds the probe ran.
    """

    outcomes: list[Outcome]
    exit_code: int
    jsonl: Path | None
    out_dir: Path
    stderr: str = ""
    wall_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)
    lab_id: str = ""

    @property
    def all_match(self) -> bool:
        return all(o.match for o in self.outcomes)

    @property
    def probe_failure(self) -> str | None:
        """Why the probe could not run (:func:`probe_failure`), None when it ran."""
        return probe_failure(self.exit_code)


class Lab:
    """A running lab for ``scenario`` (context manager; see the module doc).

    Attributes:
        topology: the namespaces.
        addresses: A-label → site address.
        rundir: ``/run/kzprobe-lab/<id>/`` (PKI, specs, probe config, logs).
        config_path: the probe's ``lab.toml``.
    """

    def __init__(self, scenario: Scenario, *, timeouts: dict[str, float] | None = None) -> None:
        """``timeouts``: overrides of :data:`LAB_TIMEOUTS` for the probe's config (seconds)."""
        self.scenario = scenario
        self.timeouts = {**LAB_TIMEOUTS, **(timeouts or {})}
        self.topology = Topology()
        self.addresses = site_addresses(scenario.sites)
        self.rundir = STATE_DIR / self.topology.lab_id
        self.config_path = self.rundir / "lab.toml"
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- lifecycle
    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Build and start everything. Raises :class:`LabError` naming what failed."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.topology.build(self.scenario, self.addresses)
        pki = LabPKI.create()
        pki.save(self.rundir)
        (self.rundir / "helper.pem").write_bytes(pki.issue([HELPER_IP]))
        token = secrets.token_urlsafe(24)
        tok = self.rundir / "helper.token"
        tok.write_text(token + "  # kzprobe lab\n")
        tok.chmod(0o600)
        sites = [{"domain": s.domain, "display": s.display, "ip": self.addresses[s.domain], "dns": s.dns,
                  "tls": s.tls, "http": s.http, "throttle_kbps": s.throttle_kbps, "page_bytes": s.page_bytes,
                  "down": s.down} for s in self.scenario.sites]
        spec = {"latency_s": self.scenario.latency_ms / 1000.0, "rundir": str(self.rundir), "sites": sites,
                "mitm_roots": list(self.scenario.mitm_roots)}
        (self.rundir / "spec.json").write_text(json.dumps(spec))
        py = sys.executable
        self._spawn("inet", "inet", [py, "-m", "probe.lab.services", "inet", str(self.rundir / "spec.json")], "READY")
        self._spawn("isp", "isp", [py, "-m", "probe.lab.services", "isp", str(self.rundir / "spec.json")], "READY")
        self._spawn("helper", "inet", [
            py, "-m", "probe", "helper", "serve", "--listen", f"{HELPER_IP}:{HELPER_PORT}",
            "--token-file", str(tok), "--cert", str(self.rundir / "helper.pem"),
            "--key", str(self.rundir / "leaf-key.pem"), "--allow-private", LAB_NET,
            "--doh", f"https://{DOH_IP}/dns-query", "--extra-anchors", str(self.rundir / "ca.pem"),
            "--rate", "1000000", "--max-concurrent", "256"], "listening")
        self.write_probe_config()

    def write_probe_config(self) -> Path:
        """Write the probe's ``lab.toml`` (resolvers, DoH, trust, bogons, canaries, helper, timeouts)."""
        anchors = [str(self.rundir / "ca.pem")]
        if self.scenario.trust_mitm_root:
            anchors += [str(self.rundir / f"mitm-{n}.pem") for n in self.scenario.mitm_roots]
        q = json.dumps
        text = f"""# kzprobe lab {self.scenario.name} ({self.topology.lab_id}): written by probe.lab.run
[probe]
asn = "{LAB_ASN}"
cc = "KZ"
network_name = {q(lab_network_name(self.scenario.name))}
vantage_id = "lab-{self.scenario.name}"
annotations = {{ lab_scenario = {q(self.scenario.name)} }}

[run]
fsync = false

[dns]
system = false
udp_resolvers = ["{ISP_CLIENT_IP}"]
doh_urls = ["https://{DOH_IP}/dns-query"]

[tls]
extra_anchors = {q(anchors)}
include_mozilla = false

[bogons]
public = ["{LAB_NET}"]

[health]
canaries = ["{CANARY_IP}:443"]
ipv6_canaries = []
resolver_canary = "example.com"

[helper]
url = "https://{HELPER_IP}:{HELPER_PORT}"
token_file = "{self.rundir / 'helper.token'}"

[timeouts]
""" + "".join(f"{k} = {v}\n" for k, v in self.timeouts.items())
        self.config_path.write_text(text)
        return self.config_path

    def _spawn(self, name: str, role: str, cmd: list[str], marker: str) -> subprocess.Popen[bytes]:
        errlog = open(self.rundir / f"{name}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KZPROBE_CONFIG", None)
        p = subprocess.Popen(self.topology.exec_prefix(role) + cmd, stdout=subprocess.PIPE, stderr=errlog,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        errlog.close()
        self.procs.append(p)
        self.topology.add_pid(p.pid)
        assert p.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        buf = b""
        while marker.encode() not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or p.poll() is not None:
                tail = (self.rundir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise LabError(f"lab {name} did not start ({'exited ' + str(p.returncode) if p.poll() is not None else 'timeout'}): {tail}")
            r, _, _ = select.select([p.stdout], [], [], min(left, 0.5))
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk and p.poll() is not None:
                    continue
                buf += chunk
        return p

    def close(self) -> None:
        """Kill every child, remove namespaces and the run directory. Idempotent."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.topology.teardown()
        shutil.rmtree(self.rundir, ignore_errors=True)

    # -- the probe
    def probe_command(self, *, out_dir: Path, inputs_file: Path, concurrency: int = 8) -> list[str]:
        """The ``kzprobe run`` command line inside the client namespace."""
        return self.topology.exec_prefix("client") + [
            sys.executable, "-m", "probe", "run", "--config", str(self.config_path), "--targets", str(inputs_file),
            "--out", str(out_dir), "--concurrency", str(concurrency), "--no-progress"]

    def inputs(self) -> list[str]:
        """Every input of the scenario, in order."""
        return [u for s in self.scenario.sites for u in s.inputs]

    def run_probe(self, *, out_dir: Path, concurrency: int = 8, inputs: Sequence[str] | None = None,
                  timeout_s: float | None = None) -> LabRun:
        """Run the real probe in the client namespace on ``inputs`` (default: all) and compare.

        On an exception here (KeyboardInterrupt from Ctrl-C or SIGTERM, a timeout) the probe
        is stopped the way a user would: SIGINT, up to :data:`STOP_GRACE_S` seconds to write
        its ``<report_id>.summary.json`` (``interrupted: true``), then SIGKILL.

        Raises:
            OutDirError: ``out_dir`` cannot be written.
            subprocess.TimeoutExpired: the probe ran longer than ``timeout_s``.
        """
        out_dir = check_out_dir(out_dir)
        inputs = list(inputs if inputs is not None else self.inputs())
        inputs_file = self.rundir / "inputs.txt"
        inputs_file.write_text("".join(u + "\n" for u in inputs), encoding="utf-8")
        before = set(out_dir.glob("*.jsonl"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
        t0 = time.monotonic()
        p = subprocess.Popen(self.probe_command(out_dir=out_dir, inputs_file=inputs_file, concurrency=concurrency),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.topology.add_pid(p.pid)
        try:
            _stdout, stderr = p.communicate(timeout=timeout_s)
        except BaseException:
            stop_gracefully(p)
            raise
        wall = time.monotonic() - t0
        new = sorted(set(out_dir.glob("*.jsonl")) - before, key=lambda f: f.stat().st_mtime)
        jsonl = new[-1] if new else None
        records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if jsonl else []
        return LabRun(outcomes=compare(self.scenario, inputs, records), exit_code=p.returncode, jsonl=jsonl,
                      out_dir=out_dir, stderr=stderr.decode(errors="replace"), wall_s=wall, records=records,
                      lab_id=self.topology.lab_id)


def stop_gracefully(p: subprocess.Popen[bytes], *, grace_s: float = STOP_GRACE_S) -> int:
    """Stop the probe ``p`` as Ctrl-C would: SIGINT, wait up to ``grace_s`` seconds (it
    writes its summary), then SIGKILL. A second Ctrl-C while waiting kills at once.
    Returns its exit code."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=grace_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            log.warning("the probe did not stop within %.0f s of SIGINT: killed", grace_s)
            p.kill()
    try:
        p.communicate(timeout=grace_s)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        p.kill()
        p.wait()
    return p.returncode


def compare(scenario: Scenario, inputs: Sequence[str], records: Sequence[dict[str, Any]]) -> list[Outcome]:
    """Pair every input with its record (by A-label host and path) and the site's truth."""
    def key(url: str) -> tuple[str, str, str]:
        u = urlsplit(url)
        return u.scheme, to_alabel(u.hostname or ""), u.path or "/"

    by_key = {key(r["input"]): r for r in records}
    out = []
    for url in inputs:
        k = key(url)
        site = scenario.site(k[1])
        rec = by_key.get(k)
        got = verdict_word(rec["test_keys"]) if rec else "missing"
        reason = rec["test_keys"].get("x_reason", "") if rec else "no measurement written for this input"
        out.append(Outcome(site=site, input=url, expect=site.expect, got=got, reason=reason))
    return out


def actions(site: Site) -> str:
    """A short text of the censor's actions on ``site`` (for the table)."""
    parts = [f"{k}={v}" for k, v in (("dns", site.dns), ("ip", site.ip), ("tls", site.tls), ("http", site.http))
             if v != "ok"]
    if site.throttle_kbps:
        parts.append(f"throttle={site.throttle_kbps}kbps")
    if site.page_bytes:
        parts.append(f"page={site.page_bytes}B")
    if site.down:
        parts.append("down")
    if site.share_ip_with:
        parts.append(f"shares IP with {site.share_ip_with}")
    return ", ".join(parts) or "none"


def run_scenario(scenario: Scenario, *, out_dir: Path, concurrency: int = 8) -> LabRun:
    """Build the lab, run the probe on every input, tear down; returns the :class:`LabRun`."""
    with Lab(scenario) as lab:
        return lab.run_probe(out_dir=out_dir, concurrency=concurrency)
