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

from probe import schema, vocab
from probe.config import SEQUENTIAL_HTTP
from probe.errors import KzprobeError
from probe.eventloop import signals_held
from probe.lab import geodb
from probe.lab.geodb import lab_network_name
from probe.lab.pki import LabPKI
from probe.lab.scenario import Scenario, Site, Vantage, to_alabel
from probe.lab.topology import (
    CANARY_IP,
    CANARY_IP6,
    DOH_IP,
    DOH_IP6,
    HELPER_DOH_IP,
    HELPER_IP,
    HELPER_IP6,
    HELPER_PORT,
    LAB_NET,
    LAB_NET6,
    STATE_DIR,
    LabError,
    SiteAddresses,
    Topology,
    engine_rules,
    resolver_ip,
    resolver_ip6,
    site_addresses,
    uses_ipv6,
)

log = logging.getLogger("kzprobe.lab")

#: The lab's ``probe_asn``: AS64500, the first of RFC 5398's documentation ASNs, so that a
#: lab measurement can never pass for real Kazakh data (Kazakhtelecom is AS9198).
LAB_ASN = "AS64500"


#: Seconds the probe is given to stop after SIGINT (it writes its summary with
#: ``interrupted: true``) before it is killed.
STOP_GRACE_S = 5.0
#: The probe's exit codes that mean it could not run (sysexits(3)): the lab's verdicts
#: then say nothing about the probe's judgement.
PROBE_CANNOT_RUN = {64: "usage error", 65: "target list refused", 66: "no input", 70: "internal software error",
                    73: "cannot create output", 74: "I/O error", 78: "configuration error",
                    1: "crashed (uncaught exception)"}


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

    0, 75 (vantage offline) and 130 (interrupted) are runs; the codes of :data:`PROBE_CANNOT_RUN`
    and a death by signal (negative) are not. 65 is one of those: ``kzprobe run`` returns it only when
    it refuses its target list (a malformed row with ``--strict``, or a file that is not a list), before
    measuring anything (break test 24: the lab counted it a run and said "a verdict differs")."""
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return PROBE_CANNOT_RUN.get(exit_code)


#: Seconds a lab server may take to say READY.
START_TIMEOUT_S = 30.0
#: The probe's timeouts in the lab (seconds): short, the lab's paths are local. The
#: measurement deadline covers the phases one input can go through in sequence
#: (:meth:`probe.config.Timeouts.sequential_phases`: DNS and its listening window, connect, TLS,
#: the fetch, the throughput baseline and the re-test of a slow target) plus 1 s: at 8 s the
#: HTTPS-throttling site ended "inconclusive, deadline exceeded" (issue 12), and a fetch that
#: runs into its own timeout (a freeze, a Host dropped in path) did so whenever the shared
#: machine stalled the phases before it. The control has its own 10 s (two attempts of 5 s
#: each), well inside the deadline, so a stalled helper costs each input 10 s, not the deadline.
LAB_TIMEOUTS = {"dns_s": 1.5, "dns_listen_s": 0.4, "connect_s": 2.0, "tls_s": 2.0, "http_s": 4.0, "control_s": 10.0}
LAB_TIMEOUTS["measurement_s"] = sum(LAB_TIMEOUTS[k] for k in ("dns_s", "dns_listen_s", "connect_s", "tls_s")) \
    + SEQUENTIAL_HTTP * LAB_TIMEOUTS["http_s"] + 1.0


def verdict_word(test_keys: dict[str, Any]) -> str:
    """The ``expect`` vocabulary for a record's verdict: ``false`` (accessible), ``down``
    (blocking false, accessible false), ``inconclusive`` (blocking null), or the blocking type
    (``throttling`` included: reachable, ``accessible`` true, but slowed down by SNI)."""
    return vocab.verdict_word(*schema.our_verdict(test_keys))  # our finer verdict, not OONI's words


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One input of the scenario: truth beside what the probe said.

    Attributes:
        site: the scenario's site.
        input: the URL measured.
        expect: the truth (scenario ``expect``).
        got: the probe's verdict word (:func:`verdict_word`); "missing" = no record.
        reason: the probe's ``x_reason``.
        vantage: the vantage that measured it.
        xfail_reason, xfail_got: the scenario says the probe is known to be wrong here
            (why, and the verdict it gives today; :class:`probe.lab.scenario.Truth`).
    """

    site: Site
    input: str
    expect: str
    got: str
    reason: str = ""
    vantage: str = "client"
    xfail_reason: str = ""
    xfail_got: str = ""

    @property
    def match(self) -> bool:
        return self.expect == self.got

    @property
    def known_wrong(self) -> bool:
        """A mismatch the scenario declares (``xfail_reason``, and ``xfail_got`` when given)."""
        return (not self.match and bool(self.xfail_reason) and self.got != "missing"
                and (not self.xfail_got or self.got == self.xfail_got))


def python_m(module: str, *args: str) -> list[str]:
    """``python -P -m module args…`` with this interpreter: the lab runs its servers and probes as root,
    and a plain ``-m`` puts the working directory first on the import path, so a ``dns.py`` or
    ``ssl.py`` in the directory ``sudo kzprobe lab`` was started from ran as root (break test)."""
    return [sys.executable, "-P", "-m", module, *args]


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
        exit_codes: vantage → the probe's exit code there (``exit_code`` is the first that
            is not 0, else 0); jsonls: vantage → its measurements file.
    """

    outcomes: list[Outcome]
    exit_code: int
    jsonl: Path | None
    out_dir: Path
    stderr: str = ""
    wall_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)
    lab_id: str = ""
    exit_codes: dict[str, int] = field(default_factory=dict)
    jsonls: dict[str, Path | None] = field(default_factory=dict)

    @property
    def all_match(self) -> bool:
        return all(o.match for o in self.outcomes)

    @property
    def all_match_or_known(self) -> bool:
        """Every verdict matches the truth or is a mismatch the scenario declares known."""
        return all(o.match or o.known_wrong for o in self.outcomes)

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

    def __init__(self, scenario: Scenario, *, timeouts: dict[str, float] | None = None,
                 packets: bool = False, identity: str = "config") -> None:
        """``timeouts``: overrides of :data:`LAB_TIMEOUTS` for the probe's config (seconds);
        ``packets``: the probe's packet-level evidence on, localisation included (issue 16;
        off by default: it adds seconds per blocked site to every lab run);
        ``identity``: "config" (the probe's config names its network: ``[probe] asn/cc/network_name``)
        or "helper" (it does not, as a new user's: the probe learns it from the helper's whoami and
        the lab's database, :mod:`probe.lab.geodb`)."""
        if identity not in ("config", "helper"):
            raise ValueError(f"identity: expected 'config' or 'helper', got {identity!r}")
        self.identity = identity
        #: The lab's ASN and country databases (None until built, or without mmdb-writer).
        self.geodb: tuple[Path, Path] | None = None
        self.scenario = scenario
        self.packets = packets
        #: [packets] localise and pps of the probe's config when ``packets`` (the bench changes them)
        self.packets_localise = "always"
        self.packets_pps = 50.0  # packets/s: a TTL (2 connections, counted 10 packets) every 0.2 s
        self.timeouts = {**LAB_TIMEOUTS, **(timeouts or {})}
        self.topology = Topology()
        self.addresses = site_addresses(scenario.sites)
        self.site_addresses = SiteAddresses.plan(scenario)
        self.ipv6 = uses_ipv6(scenario)
        self.rundir = STATE_DIR / self.topology.lab_id
        self.config_path = self.rundir / "lab.toml"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._pending: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def config_path_of(self, vantage: str) -> Path:
        """The probe's config at ``vantage``: :attr:`config_path` (``lab.toml``) for the first,
        ``lab-<vantage>.toml`` beside it for the others."""
        if vantage == self.scenario.vantages[0].name:
            return self.config_path
        return self.config_path.with_name(f"lab-{vantage}.toml")

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
        self.topology.build(self.scenario, self.site_addresses)
        pki = LabPKI.create()
        pki.save(self.rundir)
        (self.rundir / "helper.pem").write_bytes(pki.issue([HELPER_IP, HELPER_IP6] if self.ipv6 else [HELPER_IP]))
        token = secrets.token_urlsafe(24)
        tok = self.rundir / "helper.token"
        tok.write_text(token + "  # kzprobe lab\n")
        tok.chmod(0o600)
        sa = self.site_addresses
        try:
            self.geodb = geodb.write(self.rundir, self.scenario)
        except ModuleNotFoundError as exc:
            if self.identity == "helper":
                raise LabError(f"the lab's ASN database needs mmdb-writer ({exc}): "
                               "pip install 'kzprobe[lab]'") from None
            log.warning("lab: no ASN database (%s: pip install 'kzprobe[lab]'): the helper's whoami says the "
                        "address only", exc)
        geo_args = ["--asn-db", str(self.geodb[0]), "--country-db", str(self.geodb[1])] if self.geodb else []

        def site(s: Site, isp: str | None) -> dict[str, Any]:
            a = s.actions(isp) if isp else s.default_actions
            return {"domain": s.domain, "display": s.display, "ip": sa.v4.get(s.domain, ""),
                    "ip6": sa.v6.get(s.domain, ""), "nat64": list(sa.nat64.get(s.domain, ())), "dns": a.dns,
                    "tls": a.tls, "http": a.http, "throttle_kbps": a.throttle_kbps, "page_bytes": s.page_bytes,
                    "down": s.down, "zone": s.zone, "zone_extra": list(s.zone_extra), "redirect": s.redirect,
                    "cert": s.cert,
                    "redirects": list(s.redirects), "vantage_status": s.vantage_status, "scheme": s.scheme,
                    "port": s.input_port, "ip_geo": sa.geo.get(s.domain, "")}

        base = {"latency_s": self.scenario.latency_ms / 1000.0, "rundir": str(self.rundir), "ipv6": self.ipv6,
                "mitm_roots": list(self.scenario.mitm_roots), "doh_down": self.scenario.doh == "down"}
        (self.rundir / "spec.json").write_text(json.dumps({**base, "sites": [site(s, None) for s in self.scenario.sites]}))
        self._spawn("inet", "inet", python_m("probe.lab.services", "inet", str(self.rundir / "spec.json")), "READY",
                    wait=False)
        allow = [LAB_NET] + ([LAB_NET6, *self.scenario.dns64_prefixes] if self.ipv6 else [])
        listens = [(f"{HELPER_IP}:{HELPER_PORT}", f"https://{HELPER_DOH_IP}/dns-query", "helper")]
        if any(not v.ipv4 for v in self.scenario.vantages):
            listens.append((f"[{HELPER_IP6}]:{HELPER_PORT}", f"https://[{DOH_IP6}]/dns-query", "helper6"))
        if self.scenario.helper == "down":  # nothing listens at the helper's address: it refuses
            listens = []
        for listen, doh, name in listens:
            self._spawn(name, "inet", [
                *python_m("probe"), "helper", "serve", "--listen", listen,
                "--token-file", str(tok), "--cert", str(self.rundir / "helper.pem"),
                "--key", str(self.rundir / "leaf-key.pem"), *(x for a in allow for x in ("--allow-private", a)),
                "--doh", doh, "--extra-anchors", str(self.rundir / "ca.pem"),
                *(x for port in sorted({s.input_port for s in self.scenario.sites if s.input_port})
                  for x in ("--allow-port", str(port))),
                *geo_args, "--rate", "1000000", "--max-concurrent", "256"], "listening", wait=False)
        self._wait_ready("inet")  # before the ISPs: each pre-forges its MITM leaves against the internet
        assert self.topology.plan is not None
        for j, isp in enumerate(self.scenario.isps):
            f = self.rundir / ("spec.json" if self.scenario.default_world else f"spec-{isp.name}.json")
            if not self.scenario.default_world:
                f.write_text(json.dumps({
                    **base, "sites": [site(s, isp.name) for s in self.scenario.sites],
                    "resolvers": [resolver_ip(j)] + ([resolver_ip6(j)] if self.ipv6 else []), "dns64": isp.dns64,
                    "engine": engine_rules(self.scenario, isp.name, sa), "dns_onpath": isp.dns_onpath}))
            else:
                spec = json.loads(f.read_text())
                f.write_text(json.dumps({**spec, "resolvers": [resolver_ip(0)], "dns64": isp.dns64,
                                         "engine": engine_rules(self.scenario, isp.name, sa),
                                         "dns_onpath": isp.dns_onpath}))
            role = self.topology.plan.censor[isp.name][0]
            self._spawn(role, role, python_m("probe.lab.services", "isp", str(f)), "READY", wait=False)
        self._wait_ready()  # the ISPs and the helpers, started side by side
        self.write_probe_config()
        for v in self.scenario.vantages[1:]:
            self.write_probe_config(v.name)

    def write_probe_config(self, vantage: str | None = None) -> Path:
        """Write the probe's config at ``vantage`` (default: the first): resolvers, DoH, trust,
        bogons, canaries, helper, timeouts. A vantage without IPv4 is given the IPv6 addresses
        of its ISP's resolver, the DoH resolver, the canary and the helper."""
        v: Vantage = self.scenario.vantage(vantage) if vantage else self.scenario.vantages[0]
        j = next(i for i, isp in enumerate(self.scenario.isps) if isp.name == v.isp)
        isp = self.scenario.isps[j]
        anchors = [str(self.rundir / "ca.pem")]
        if self.scenario.trust_mitm_root:
            anchors += [str(self.rundir / f"mitm-{n}.pem") for n in self.scenario.mitm_roots]
        q = json.dumps
        default = self.scenario.default_world
        name = self.scenario.name if default else f"{self.scenario.name}/{v.name}"
        annotations = f"lab_scenario = {q(self.scenario.name)}" + ("" if default else f", lab_vantage = {q(v.name)}")
        resolver = resolver_ip(j) if v.ipv4 else resolver_ip6(j)
        doh = f"https://{DOH_IP}/dns-query" if v.ipv4 else f"https://[{DOH_IP6}]/dns-query"
        canary = f"{CANARY_IP}:443" if v.ipv4 else f"[{CANARY_IP6}]:443"
        canaries6 = [f"[{CANARY_IP6}]:443"] if self.ipv6 else []
        helper = f"https://{HELPER_IP}:{HELPER_PORT}" if v.ipv4 else f"https://[{HELPER_IP6}]:{HELPER_PORT}"
        public = [LAB_NET] + ([LAB_NET6] if self.ipv6 else [])
        identity = "" if self.identity == "helper" else f"""asn = "{isp.asn if not default else LAB_ASN}"
cc = "KZ"
network_name = {q(lab_network_name(name))}
"""
        text = f"""# kzprobe lab {self.scenario.name} ({self.topology.lab_id}), vantage {v.describe()}
# written by probe.lab.run{"; its network from the helper's whoami (identity = helper)" if not identity else ""}
[probe]
{identity}vantage_id = "lab-{name.replace('/', '-')}"
annotations = {{ {annotations} }}

[run]
fsync = false

[dns]
system = false
udp_resolvers = ["{resolver}"]
doh_urls = ["{doh}"]

[tls]
extra_anchors = {q(anchors)}
include_mozilla = false

[bogons]
public = {q(public)}

[health]
canaries = ["{canary}"]
ipv6_canaries = {q(canaries6)}
resolver_canary = "example.com"

[helper]
url = "{helper}"
token_file = "{self.rundir / 'helper.token'}"

[packets]
enabled = {q(self.packets)}
localise = "{self.packets_localise if self.packets else 'never'}"
pps = {self.packets_pps:g}
budget_s = 60

[timeouts]
""" + "".join(f"{k} = {v}\n" for k, v in self.timeouts.items())
        path = self.config_path_of(v.name)
        path.write_text(text)
        return path

    def _spawn(self, name: str, role: str, cmd: list[str], marker: str, *, wait: bool = True
               ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in ``role``'s namespace; with ``wait``, until it prints ``marker``
        (else :meth:`_wait_ready` later: independent servers start side by side)."""
        errlog = open(self.rundir / f"{name}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KZPROBE_CONFIG", None)
        p = subprocess.Popen(self.topology.exec_prefix(role) + cmd, stdout=subprocess.PIPE, stderr=errlog,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        errlog.close()
        self.procs.append(p)
        self.topology.add_pid(p.pid)
        self._pending[name] = (p, marker)
        if wait:
            self._wait_ready(name)
        return p

    def _wait_ready(self, *names: str) -> None:
        """Wait until each started server ``names`` (default: every pending one) says it is ready.

        Raises:
            LabError: one exited or did not say so within :data:`START_TIMEOUT_S`; its log's tail.
        """
        for name in names or list(self._pending):
            p, marker = self._pending.pop(name)
            assert p.stdout is not None
            deadline = time.monotonic() + START_TIMEOUT_S
            buf = b""
            while marker.encode() not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or p.poll() is not None:
                    tail = (self.rundir / f"{name}.log").read_text(errors="replace")[-2000:]
                    why = "exited " + str(p.returncode) if p.poll() is not None else "timeout"
                    raise LabError(f"lab {name} did not start ({why}): {tail}")
                r, _, _ = select.select([p.stdout], [], [], min(left, 0.5))
                if r:
                    chunk = os.read(p.stdout.fileno(), 4096)
                    if not chunk and p.poll() is not None:
                        continue
                    buf += chunk

    def close(self) -> None:
        """Kill every child, remove namespaces and the run directory. Idempotent. Ctrl-C, SIGTERM
        and SIGHUP are held until it is done (:func:`probe.eventloop.signals_held`), then
        raised: a signal cannot leave a lab half removed."""
        with signals_held():
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
    def probe_command(self, *, out_dir: Path, inputs_file: Path, concurrency: int = 8,
                      vantage: str | None = None) -> list[str]:
        """The ``kzprobe run`` command line inside ``vantage``'s namespace (default: the first)."""
        v = vantage or self.scenario.vantages[0].name
        return self.topology.exec_prefix(v) + [
            *python_m("probe"), "run", "--config", str(self.config_path_of(v)), "--targets",
            str(inputs_file), "--out", str(out_dir), "--concurrency", str(concurrency), "--no-progress"]

    def inputs(self) -> list[str]:
        """Every input of the scenario, in order."""
        return [u for s in self.scenario.sites for u in s.inputs]

    def run_probe(self, *, out_dir: Path, concurrency: int = 8, inputs: Sequence[str] | None = None,
                  timeout_s: float | None = None, vantages: Sequence[str] | None = None) -> LabRun:
        """Run the real probe at each vantage (default: all, at once) on ``inputs`` (default:
        all) and compare. With several vantages each writes in ``out_dir/<vantage>/`` and
        ``concurrency`` is shared among them (each gets at least 2): the lab's processes and the
        probes share the machine's CPUs, and a starved lab server would make verdicts out of
        its own delays.

        On an exception here (KeyboardInterrupt from Ctrl-C or SIGTERM, a timeout) each probe
        is stopped the way a user would: SIGINT, up to :data:`STOP_GRACE_S` seconds to write
        its ``<report_id>.summary.json`` (``interrupted: true``), then SIGKILL.

        Raises:
            OutDirError: ``out_dir`` cannot be written.
            subprocess.TimeoutExpired: the probe ran longer than ``timeout_s``.
        """
        out_dir = check_out_dir(out_dir)
        inputs = list(inputs if inputs is not None else self.inputs())
        names = list(vantages) if vantages is not None else [v.name for v in self.scenario.vantages]
        several = len(self.scenario.vantages) > 1
        inputs_file = self.rundir / "inputs.txt"
        inputs_file.write_text("".join(u + "\n" for u in inputs), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
        outs = {v: check_out_dir(out_dir / v) if several else out_dir for v in names}
        before = {v: set(outs[v].glob("*.jsonl")) for v in names}
        t0 = time.monotonic()
        procs: dict[str, subprocess.Popen[bytes]] = {}
        errs: dict[str, bytes] = {}
        try:
            for v in names:
                procs[v] = subprocess.Popen(
                    self.probe_command(out_dir=outs[v], inputs_file=inputs_file, vantage=v,
                                       concurrency=max(2, concurrency // len(names)) if several else concurrency),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
                self.topology.add_pid(procs[v].pid)
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            for v, p in procs.items():
                left = None if deadline is None else max(0.1, deadline - time.monotonic())
                errs[v] = p.communicate(timeout=left)[1]
        except BaseException:
            for p in procs.values():
                stop_gracefully(p)
            raise
        wall = time.monotonic() - t0
        outcomes: list[Outcome] = []
        records: list[dict[str, Any]] = []
        jsonls: dict[str, Path | None] = {}
        for v in names:
            new = sorted(set(outs[v].glob("*.jsonl")) - before[v], key=lambda f: f.stat().st_mtime)
            jsonl = new[-1] if new else None
            recs = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()] \
                if jsonl else []
            jsonls[v] = jsonl
            records += recs
            outcomes += compare(self.scenario, inputs, recs, vantage=v)
        codes = {v: p.returncode for v, p in procs.items()}
        code = next((c for c in codes.values() if c != 0), 0)
        stderr = "".join((f"--- {v}\n" if several else "") + e.decode(errors="replace") for v, e in errs.items())
        return LabRun(outcomes=outcomes, exit_code=code, jsonl=jsonls[names[0]], out_dir=out_dir, stderr=stderr,
                      wall_s=wall, records=records, lab_id=self.topology.lab_id, exit_codes=codes, jsonls=jsonls)


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


def compare(scenario: Scenario, inputs: Sequence[str], records: Sequence[dict[str, Any]], *,
            vantage: str | None = None) -> list[Outcome]:
    """Pair every input with its record (by A-label host and path) and the site's truth at ``vantage``
    (default: the first)."""
    vantage = vantage or scenario.vantages[0].name
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
        truth = site.truth(vantage)
        out.append(Outcome(site=site, input=url, expect=truth.expect, got=got, reason=reason, vantage=vantage,
                           xfail_reason=truth.xfail_reason, xfail_got=truth.xfail_got))
    return out


def actions(site: Site, isp: str | None = None) -> str:
    """A short text of the censor's actions on ``site`` at ``isp`` (default: the site's own keys), for the table."""
    a = site.actions(isp) if isp else site.default_actions
    parts = [f"{k}={v}" for k, v in (("dns", a.dns), ("ip", a.ip), ("tls", a.tls), ("http", a.http)) if v != "ok"]
    if a.throttle_kbps:
        parts.append(f"throttle={a.throttle_kbps}kbps")
    parts += [f"tcp{r.describe()}" for r in a.tcp]
    if site.stack != "v4":
        parts.append(f"stack={site.stack}")
    if site.page_bytes:
        parts.append(f"page={site.page_bytes}B")
    if site.down:
        parts.append("down")
    if site.share_ip_with:
        parts.append(f"shares IP with {site.share_ip_with}")
    if site.zone != "ok":
        parts.append(f"zone={site.zone}")
    if site.zone_extra:
        parts.append(f"zone+{','.join(site.zone_extra)}")
    if site.redirect:
        parts.append(f"302 to {site.redirect}")
    if site.cert != "ok":
        parts.append(f"cert={site.cert}")
    if site.redirects:
        parts.append(f"{len(site.redirects)} redirect(s) by path")
    if site.vantage_status:
        parts.append(f"server answers vantages {site.vantage_status}")
    if site.input_port:
        parts.append(f"port {site.input_port}")
    return ", ".join(parts) or "none"


def run_scenario(scenario: Scenario, *, out_dir: Path, concurrency: int = 8) -> LabRun:
    """Build the lab, run the probe on every input, tear down; returns the :class:`LabRun`."""
    with Lab(scenario) as lab:
        return lab.run_probe(out_dir=out_dir, concurrency=concurrency)
