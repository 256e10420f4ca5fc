"""Running many inputs: bounded concurrency, deadlines, progress, summary.

:func:`run` measures a list of :class:`~probe.targets.Target` with ``concurrency``
workers, each measurement under its own deadline and the whole run under an
optional one. A measurement gives its concurrency slot to the next input as soon as it
only waits (its DNS listening window, its control: issue 13), within a bounded number in
flight (:func:`max_in_flight`). Every finished measurement is appended (and fsynced) to the
run's JSONL file at once, so an interrupted run keeps everything it measured, including
those that were only waiting (judged on what they had, the reason saying so). Vantage
health is checked before and after; when the vantage is offline at the start,
every verdict of the run is forced inconclusive (the records are still written: an
outage is data too).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probe import budget, records, schema
from probe.addresses import ConnectTo
from probe.bounded import read_regular_file
from probe.config import MAX_CONFIG_BYTES, ConfigError, Settings
from probe.context import MeasureContext, new_doh_session
from probe.control import Control, HelperControl
from probe.eventloop import run_gc
from probe.fingerprints import match_dns
from probe.health import HealthReport, check_vantage
from probe.localnet import AddressPolicy, LocalNetwork
from probe.measure import http
from probe.measure.tls import TrustStore, install_tls_read_buffers
from probe.nettests.web import Partial, WebObservations, observe
from probe.packets import privileges as packet_privileges
from probe.packets.evidence import PacketEvidence, PacketSettings
from probe.packets.proof import proof_from_packets
from probe.recordcap import capped_line
from probe.records import RunInfo
from probe.scrub import scrubber_for
from probe.store import JSONLWriter
from probe.targets import Target
from probe.timing import Clock
from probe.verdict import VantageStatus, Verdict, judge
from probe.vocab import Rule

log = logging.getLogger("kzprobe.runner")


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the summary table: input, verdict and reason."""

    input: str
    blocking: Any
    accessible: bool | None
    reason: str
    rule: str


@dataclass(kw_only=True)
class RunSummary:
    """What a run did.

    Attributes:
        report_id: the run id; ``path`` is its JSONL file, ``summary_path`` the JSON summary.
        inputs: number of inputs planned; ``measured``: measurements written.
        not_measured: inputs skipped by the run deadline or an interruption.
        health_before / health_after: vantage health checks (after may be None if interrupted).
        interrupted: the run was stopped (Ctrl-C / SIGTERM).
        rows: per-input verdicts, in completion order.
        test_start_time: when the run started, UTC, OONI's "YYYY-MM-DD hh:mm:ss".
        plan: the time-budget plan (:mod:`probe.budget`): when the worst case of all the
            inputs given did not fit the budget, ``inputs`` is the part this run measures.
        io_error: why writing the measurements failed mid-run (``"OSError: [Errno 28] ..."``);
            the run then stops, keeps every line already written, and :func:`run` re-raises it.
    """

    report_id: str
    path: Path
    summary_path: Path
    inputs: int
    measured: int = 0
    not_measured: int = 0
    health_before: HealthReport | None = None
    health_after: HealthReport | None = None
    vantage_before: Any = None  # probe.vantage.VantageIdentity
    vantage_after: Any = None
    #: packet-level evidence (probe/packets): on, why off, localise, jobs run, packets sent
    packets: dict[str, Any] | None = None

    @property
    def network_changed(self) -> bool:
        """The vantage's ASN or country differ between before and after the run (both known)."""
        b, a = self.vantage_before, self.vantage_after
        return (b is not None and a is not None and b.source == a.source and b.source in ("helper", "doh_trace")
                and (b.asn, b.cc) != (a.asn, a.cc))

    def vantage_json(self) -> dict[str, Any] | None:
        if self.vantage_before is None:
            return None
        from dataclasses import asdict

        def as_json(v: Any) -> dict[str, Any]:  # never the address (probe.vantage)
            return v.summary_json() if hasattr(v, "summary_json") else asdict(v)

        out = as_json(self.vantage_before)
        out["after"] = as_json(self.vantage_after) if self.vantage_after is not None else None
        out["changed"] = self.network_changed
        return out
    interrupted: bool = False
    deadline_hit: bool = False
    rows: list[Row] = field(default_factory=list)
    runtime_s: float = 0.0
    test_start_time: str = ""
    io_error: str | None = None
    plan: budget.Plan | None = None

    @property
    def vantage_offline(self) -> bool:
        """Offline before, or after the run: nothing of this run can be judged."""
        return any(h is not None and not h.online for h in (self.health_before, self.health_after))

    @property
    def intercepted_by(self) -> str | None:
        """Issuer DN of a middlebox intercepting the control channel's TLS, None if not seen."""
        return next((h.control_intercepted_by for h in (self.health_before, self.health_after)
                     if h is not None and h.control_intercepted_by), None)

    @property
    def nothing_judged(self) -> bool:
        """Offline or intercepted control: no verdict of this run could be given (exit 75)."""
        return self.vantage_offline or self.intercepted_by is not None

    def counts(self) -> Counter[str]:
        """Verdict counts: "accessible", "down", "inconclusive", or the blocking type."""
        c: Counter[str] = Counter()
        for r in self.rows:
            if r.blocking is None:
                c["inconclusive"] += 1
            elif r.blocking is False:
                c["accessible" if r.accessible else "down"] += 1
            else:
                c[str(r.blocking)] += 1
        return c


def build_trust(settings: Settings) -> TrustStore:
    """The :class:`TrustStore` for the settings (certifi + extra anchors).

    Raises:
        OSError: an extra-anchor file is unreadable.
        ConfigError: the extra anchors hold no certificate (or the policy is unknown).
    """
    pem = b"".join(read_regular_file(p, MAX_CONFIG_BYTES * 4) for p in settings.tls_extra_anchors) or None
    try:
        return TrustStore(extra_anchors_pem=pem, include_mozilla=settings.tls_include_mozilla,
                          policy=settings.tls_policy)  # type: ignore[arg-type]
    except ValueError as exc:
        key = "tls.policy" if "policy" in str(exc) else "tls.extra_anchors"
        raise ConfigError(key, f"{', '.join(settings.tls_extra_anchors) or settings.tls_policy}: {exc}") from None


def read_token(path: str) -> str:
    """The helper token: the first non-comment line of ``path`` (a trailing ``# comment`` dropped).

    Raises:
        ConfigError: the file holds no token (names the file, never the token).
    """
    p = Path(path)
    if p.stat().st_mode & 0o077:
        log.warning("helper token file %s is readable by other users: chmod 600 it", path)
    for line in read_regular_file(p, 65536).decode("utf-8").splitlines():
        token = line.split("#", 1)[0].strip()  # "TOKEN  # comment", as the helper's file allows
        if token:
            return token
    raise ConfigError("helper.token_file", f"{path} holds no token")


def build_context(settings: Settings, *, trust: TrustStore, doh_session: Any, control: Control | None,
                  http_session: Any = None) -> MeasureContext:
    """A :class:`MeasureContext` from settings."""
    return MeasureContext(
        timeouts=settings.timeouts, trust=trust, bogons=settings.bogons(), connect_to=ConnectTo(
            mapping={k: v for k, v in settings.connect_to.items() if k != "*"}, fallback=settings.connect_to.get("*")),
        system_resolver=settings.dns_system, udp_resolvers=settings.dns_udp_resolvers, doh_urls=settings.dns_doh_urls,
        doh_session=doh_session, http_session=http_session, control=control, benign_sni=settings.tls_benign_sni,
        resolver_canary=settings.health_resolver_canary,
        max_body_bytes=settings.http_max_body_bytes, store_body_bytes=settings.http_store_body_bytes,
        max_redirects=settings.http_max_redirects, address_policy=address_policy(settings),
        asn_of=asn_lookup(settings),
    )


def resolver_network(settings: Settings) -> dict[str, Any]:
    """OONI's resolver_asn / resolver_network_name for the first ``dns.udp_resolvers`` address
    (RunInfo keywords), from the ASN database; empty when unknown (no resolver, no database)."""
    from probe.addresses import parse_endpoint
    from probe.geoip import GeoIP

    if not settings.dns_udp_resolvers:
        return {}
    first = settings.dns_udp_resolvers[0]
    try:
        ip = parse_endpoint(first)[0]
    except ValueError:  # no port: the address alone
        ip = first.strip("[]")
    db = GeoIP(settings.geoip_asn_db or None, settings.geoip_country_db or None)
    if not db.available:
        return {}
    info = db.lookup(ip)
    db.close()
    return {"resolver_asn": info.asn, "resolver_network_name": info.network_name} if info.asn else {}


def _helper_resolver_network(identity: Any) -> dict[str, Any]:
    """resolver_asn / resolver_network_name as the helper's whoami said (:mod:`probe.vantage`), when the
    probe has no database of its own; empty when unknown."""
    asn = getattr(identity, "resolver_asn", None)
    return {"resolver_asn": asn, "resolver_network_name": identity.resolver_network_name} if asn else {}


def asn_lookup(settings: Settings) -> Callable[[str], str | None] | None:
    """address → ASN from the configured (or the assets dir's) ASN database; None without one."""
    from probe.geoip import GeoIP

    db = GeoIP(settings.geoip_asn_db or None, settings.geoip_country_db or None)
    if not db.available:
        return None
    cache: dict[str, str | None] = {}

    def asn_of(address: str) -> str | None:
        if address not in cache and len(cache) < 65536:
            cache[address] = db.lookup(address).asn
        return cache.get(address) if address in cache else db.lookup(address).asn

    return asn_of


def time_budget_s(settings: Settings) -> float | None:
    """Seconds the run may take at worst: ``run.time_budget_s`` (default: the service's
    ``TimeoutStartSec`` less a margin); None = no limit. (``timeouts.run_s`` is another
    thing: a deadline that stops the run where it is and counts the rest as not measured.)"""
    return settings.run_time_budget_s


def address_policy(settings: Settings) -> AddressPolicy:
    """The vantage's address policy: its own network read from the OS (``localnet.os``)
    plus ``localnet.extra``; redirects also to ``http.extra_ports``."""
    local = LocalNetwork.from_os() if settings.localnet_os else LocalNetwork()
    return AddressPolicy(local=local.merged(settings.localnet_extra),
                         extra_ports=frozenset(int(p) for p in settings.http_extra_ports))


def _ipv4_host(s: str) -> str:
    from urllib.parse import urlsplit

    from probe.packets.evidence import _ipv4

    host = urlsplit(s).hostname or "" if "//" in s else s
    return _ipv4(host)


def _no_pcap(settings: Settings, why: str) -> None:
    """One notice when a pcap was asked for but the packet tests are off by config (fresh-user
    break test: ``--pcap`` under ``[packets] enabled = false`` kept nothing and said nothing)."""
    if settings.packets_pcap:
        log.warning("--pcap: no pcap is kept: the packet tests are off (%s)", why)


#: Why the packet tests are off, as the summary's ``packets.off_reason`` says it, and what to do about it.
PACKETS_DISABLED = "[packets] enabled = false"
PACKETS_REMAPPED = "[connect_to] remaps the endpoints"
PACKETS_OFF_REMEDY = {
    PACKETS_DISABLED: "set [packets] enabled = true in the config (or KZPROBE_PACKETS_ENABLED=true)",
    PACKETS_REMAPPED: "the config's [connect_to] dials other addresses than DNS gave (a test or lab setting): "
                      "packets to the real ones would lie; remove it",
}
PRIVILEGES_REMEDY = ("run as root, or grant CAP_NET_RAW (the systemd unit does; or: sudo setcap cap_net_raw+ep on "
                     "the Python binary)")


def packets_off(settings: Settings, priv: packet_privileges.Privileges | None) -> str | None:
    """Why the packet tests (DNS injection, reset forensics, censor localisation) cannot run with ``settings``
    and the privileges ``priv`` (:func:`probe.packets.privileges.check`; None = not asked), else None."""
    if not settings.packets_enabled:
        return PACKETS_DISABLED
    if priv is not None and not priv.capture:
        return priv.reason or "no packet capture"
    if settings.connect_to:  # the probe dials elsewhere than DNS said: packets to the logical address would lie
        return PACKETS_REMAPPED
    return None


def wants_localise(settings: Settings, env: Any = None) -> bool:
    """Whether the run localises censors (``[packets] localise``/``--localise``): "always", or "manual" from a
    terminal, not on the systemd timer (systemd sets INVOCATION_ID)."""
    env = os.environ if env is None else env
    return settings.packets_localise == "always" or (
        settings.packets_localise == "manual" and not env.get("INVOCATION_ID"))


def packet_evidence(settings: Settings, ctx: MeasureContext, out_dir: Path, report_id: str,
                    *, env: Any = None, status: dict[str, Any] | None = None) -> PacketEvidence | None:
    """The run's packet-evidence state (probe/packets), or None when off by config or without
    ``CAP_NET_RAW`` (then one notice, logged once: every other test runs unchanged).
    ``status`` (the run summary's ``packets``) gets ``enabled`` and, when off, ``off_reason``."""
    status = {} if status is None else status
    status.update(enabled=False, off_reason=None)
    priv = packet_privileges.check() if settings.packets_enabled else None
    why = packets_off(settings, priv)
    if why is not None:
        status["off_reason"] = why
        if priv is not None and not priv.capture:
            log.warning("%s", priv.notice())
            return None
        if why != PACKETS_DISABLED:
            log.info("packet-level evidence is off: %s", why)
        _no_pcap(settings, why)
        return None
    assert priv is not None  # packets_off checked it
    if settings.packets_pcap and not priv.pcap:
        log.warning("--pcap: pcap files need scapy (pip install 'kzprobe[packets]'); the packet tests run, "
                    "no pcap is kept")
    localise = wants_localise(settings, env)
    ps = PacketSettings(
        localise=localise,
        non_resolver=settings.packets_dns_probe_address or _ipv4_host(settings.helper_url),
        resolver=next((r for r in (_ipv4_host(x) for x in ctx.udp_resolvers) if r), ""),
        benign_name=ctx.benign_sni, max_ttl=settings.packets_max_ttl, pps=settings.packets_pps,
        budget_s=settings.packets_budget_s,
        pcap_dir=(out_dir / f"{report_id}.pcap") if settings.packets_pcap else None)
    status.update(enabled=True, localise=localise)
    return PacketEvidence(settings=ps, privileges=priv, asn_of=ctx.asn_of, policy=ctx.address_policy)


async def find_non_resolver(packets: PacketEvidence, settings: Settings, status: dict[str, Any]) -> None:
    """The DNS injection test's non-resolver when ``[packets] dns_probe_address`` is unset and the
    helper is named by a host name (as deployed: ``https://vps.example.org:8443``): the helper's
    IPv4 address, resolved once by the system's resolver (the test ran only for helpers given as
    an IP literal, silently). When there is none the test is off, said once in the log and in
    the summary's ``packets.dns_injection_off``; forensics and localisation run as before."""
    from urllib.parse import urlsplit

    from probe.packets.evidence import ipv4_of

    if packets.settings.non_resolver:
        return
    host = urlsplit(settings.helper_url).hostname or "" if settings.helper_url else ""
    ip = await ipv4_of(host) if host else ""
    if ip:
        packets.settings = replace(packets.settings, non_resolver=ip)
        return
    why = (f"no IPv4 address for the helper {host!r}" if host else "no helper") + \
        " and no [packets] dns_probe_address: the DNS injection test is off"
    log.info("packet-level evidence: %s", why)
    status["dns_injection_off"] = why


async def measure_one(target: Target, ctx: MeasureContext, run: RunInfo, vantage: VantageStatus, *,
                      partial: Partial | None = None, clock: Clock | None = None,
                      release: Callable[[], None] | None = None) -> dict[str, Any]:
    """Measure one input and return its df-000 record.

    Never raises for one input's trouble: the measurement deadline gives an
    inconclusive record that keeps every step observed before it (rule "deadline");
    an unexpected exception — a bug — is logged with its traceback and gives an
    inconclusive record saying so (rule "internal_error"), so one bad input never
    ends the run. ``release`` is :func:`probe.nettests.web.observe`'s: called when only
    waiting (the DNS listening window, the control) is left before the verdict.
    """
    clock = clock or Clock()
    partial = partial or Partial(target=target)
    try:
        try:
            async with asyncio.timeout(ctx.timeouts.measurement_s):
                obs = await observe(target, ctx, clock, partial, release=release)
            partial.final = obs
            verdict = judge(obs, bogons=ctx.bogons, vantage=vantage, asn_of=ctx.asn_of)
        except TimeoutError:
            obs = partial.snapshot()
            waiting = " (the control helper did not answer in time)" if partial.phase == "control" else ""
            late = (f"measurement deadline ({ctx.timeouts.measurement_s:g} s) exceeded during the "
                    f"{partial.phase} step{waiting}; what was observed before it is kept")
            if vantage.offline or vantage.control_intercepted_by:
                # the vantage's state, not the deadline, is why nothing can be judged: say that first
                v = judge(obs, bogons=ctx.bogons, vantage=vantage, asn_of=ctx.asn_of)
                verdict = replace(v, reason=f"{v.reason} ({late})")
            else:
                verdict = Verdict(blocking=None, accessible=None, rule=Rule.DEADLINE, reason=late)
        return records.measurement(obs, verdict, run, start=clock.start_utc, runtime_s=clock.now(), vantage=vantage)
    except Exception as exc:  # a bug: keep the run going, keep the evidence, say so
        log.exception("internal error while measuring %s", target.input)
        verdict = Verdict(blocking=None, accessible=None, rule=Rule.INTERNAL_ERROR,
                          reason=f"internal error ({type(exc).__name__}: {exc}) — a kzprobe bug, please report it")
        return records.measurement(partial.snapshot(), verdict, run, start=clock.start_utc, runtime_s=clock.now(),
                                   vantage=vantage)


def with_injector_proof(rec: dict[str, Any], obs: WebObservations | None, x: dict[str, Any], *,
                        ctx: MeasureContext, run: RunInfo, vantage: VantageStatus) -> dict[str, Any]:
    """``rec`` judged again with the packet proof of an on-path DNS injector found in its
    ``x_packets`` value ``x`` (issue 16 part 1: evidence strengthens the ``dns`` verdict and names
    the injector's distance, rule ``dns.injector_onpath``). Same observations, same uid, start and
    runtime; only the verdict's keys change, and only when that rule now decides. ``rec`` as it is
    when there is no proof, no observations (a deadline cut it) or another rule still decides."""
    proof = proof_from_packets(x)
    if proof is None or obs is None:
        return rec
    obs = replace(obs, packet_dns=proof)
    v = judge(obs, bogons=ctx.bogons, vantage=vantage, asn_of=ctx.asn_of)
    if v.rule != Rule.DNS_INJECTOR_ONPATH:
        return rec
    start = datetime.strptime(rec["measurement_start_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    new = records.measurement(obs, v, run, start=start, runtime_s=float(rec.get("test_runtime") or 0.0),
                              vantage=vantage)
    new["x_measurement_uid"] = rec.get("x_measurement_uid") or new["x_measurement_uid"]
    return new


def interrupted_record(partial: Partial, clock: Clock, ctx: MeasureContext, run: RunInfo, vantage: VantageStatus
                       ) -> dict[str, Any]:
    """The record of a measurement whose own steps were done (``partial.released``) when the run
    was interrupted while it waited for its DNS listening window or its control: judged on what
    it had (the first replies of each query), the reason saying what it did not wait for.
    Synchronous: it runs while the run is being cancelled."""
    obs = partial.snapshot()
    what = "the DNS listening window" if partial.phase == "dns" else "the control helper"
    note = (f"run interrupted {clock.now():.2f} s into the measurement while waiting for {what}: "
            f"later DNS replies and the control's answer, if any, were not seen")
    try:
        v = judge(obs, bogons=ctx.bogons, vantage=vantage, asn_of=ctx.asn_of)
        verdict = replace(v, reason=f"{v.reason} ({note})")
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the other records
        log.exception("internal error while judging %s", partial.target.input)
        verdict = Verdict(blocking=None, accessible=None, rule=Rule.INTERNAL_ERROR,
                          reason=f"internal error ({type(exc).__name__}: {exc}) — a kzprobe bug, please report it")
    return records.measurement(obs, verdict, run, start=clock.start_utc, runtime_s=clock.now(), vantage=vantage)


#: Measurements in flight per concurrency slot: the slot holders plus those only waiting for
#: their DNS listening window or control (issue 13: 1.5 s windows at 150/s are ~225 waiting).
IN_FLIGHT_PER_SLOT = 8


def max_in_flight(concurrency: int, udp_resolvers: int) -> int:
    """How many measurements may be in flight at once (holding a slot or waiting for their
    window): :data:`IN_FLIGHT_PER_SLOT` × ``concurrency``, fewer when the file-descriptor
    limit would not hold their sockets (one UDP socket per resolver while waiting, a few
    per slot holder); the soft limit is first raised towards the hard one."""
    want = IN_FLIGHT_PER_SLOT * concurrency
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        per_waiting = max(1, udp_resolvers) + 1
        need = 256 + 16 * concurrency + per_waiting * want
        if soft != resource.RLIM_INFINITY and soft < need:
            new = need if hard == resource.RLIM_INFINITY else min(need, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
            except (OSError, ValueError):
                pass
        if soft != resource.RLIM_INFINITY:
            want = min(want, (soft - 256 - 16 * concurrency) // per_waiting)
    except (ImportError, OSError, ValueError):
        pass
    return max(concurrency, want)


async def run(targets: Sequence[Target], settings: Settings, *, out_dir: Path, control: Control | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              on_progress: Callable[[int, int], None] | None = None, vantage_identity: Any = None,
              identify_again: Callable[[], Awaitable[Any]] | None = None) -> RunSummary:
    """Measure ``targets``; write ``<out_dir>/<report_id>.jsonl`` and ``.summary.json``.

    Args:
        targets: the inputs (already deduplicated by :mod:`probe.targets`).
        settings: run settings (concurrency, deadlines, resolvers...).
        out_dir: directory for this run's files (created).
        control: the full control (helper client), None when not configured.
        on_record: called with each record after it is written (``--json``).
        on_progress: called with (done, total) after each measurement.

    Returns:
        The :class:`RunSummary`. A Ctrl-C (task cancellation) ends the run early with
        ``interrupted=True`` and keeps every measurement already written.

    Raises:
        OSError: the output directory cannot be written (a configuration problem).
    """
    install_tls_read_buffers()  # small shared TLS read buffers for the run's connections (issue 13); idempotent
    started = datetime.now(UTC)
    t_start = time.monotonic()
    report_id = records.new_report_id(started, settings.probe_cc, settings.probe_asn)
    path = Path(out_dir) / f"{report_id}.jsonl"
    summary = RunSummary(report_id=report_id, path=path, summary_path=path.with_suffix(".summary.json"),
                         inputs=len(targets), test_start_time=started.strftime("%Y-%m-%d %H:%M:%S"),
                         vantage_before=vantage_identity)
    runinfo = RunInfo(report_id=report_id, test_start_time=started, probe_asn=settings.probe_asn,
                      probe_cc=settings.probe_cc, probe_network_name=settings.probe_network_name,
                      vantage_id=settings.probe_vantage_id,
                      probe_ip=getattr(vantage_identity, "address", None) if settings.probe_include_ip else None,
                      annotations=tuple(sorted(settings.probe_annotations.items())),
                      test_helper=records.helper_address(settings.helper_url) if settings.helper_url else None,
                      **(resolver_network(settings) or _helper_resolver_network(vantage_identity)))
    trust = build_trust(settings)
    writer = JSONLWriter(path, fsync=settings.run_fsync)
    _reserve_summary(summary.summary_path)
    scrub = scrubber_for(settings, vantage_identity)  # the probe's address is never written (issue 15, 1)

    def final(rec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The record as written: capped, scrubbed of the probe's address, and its JSON line."""
        rec, line = capped_line(rec)
        if scrub is not None and scrub.found_in(line):
            rec, line = capped_line(scrub.record(rec))
        return rec, line

    held: dict[int, dict[str, Any]] = {}  # records waiting for their packet evidence (probe/packets)
    # the records whose line is queued and not yet known to be on disk, by tag: a measurement cancelled
    # while its line was queued (another's ENOSPC ends the run's task group; a signal) still has it
    # written, and is accounted after writer.close() from writer.written_tags (re-check 24 N4: the
    # summary said measured 4 but counted 3 verdicts)
    inflight: dict[object, dict[str, Any]] = {}
    tags = itertools.count()

    def queue_line(rec: dict[str, Any]) -> int:
        key = next(tags)
        inflight[key] = rec
        return key

    packets: PacketEvidence | None = None
    # the worst case must fit the service's time limit, or the run measures what fits (issue 11, 4)
    targets, summary.plan = budget.plan(list(targets), [t.input for t in targets],
                                        concurrency=settings.run_concurrency, timeouts=settings.timeouts,
                                        budget_s=time_budget_s(settings), state_dir=path.parent)
    summary.inputs = summary.plan.selected
    if not summary.plan.fits:
        log.warning("%s", summary.plan.message())
    session = new_doh_session(trust, limit=max(8, settings.run_concurrency)) if settings.dns_doh_urls else None
    helper_session = None
    http_session = http.new_session()  # the GETs of every input: no connection or cookie shared (issue 13)
    if control is None and settings.helper_url:
        helper_session = new_doh_session(trust, limit=max(4, settings.run_concurrency))
        control = HelperControl(base_url=settings.helper_url, token=read_token(settings.helper_token_file),
                                session=helper_session, timeout_s=settings.timeouts.control_deadline_s)
    try:
        ctx = build_context(settings, trust=trust, doh_session=session, control=control, http_session=http_session)
        queue: asyncio.Queue[Target] = asyncio.Queue()
        for t in targets:
            queue.put_nowait(t)
        vantage = VantageStatus()
        io_error: OSError | None = None

        summary.packets = {}
        packets = packet_evidence(settings, ctx, path.parent, report_id, status=summary.packets)
        if packets is not None:
            await find_non_resolver(packets, settings, summary.packets)
        loop = asyncio.get_running_loop()
        room = asyncio.Semaphore(max_in_flight(settings.run_concurrency, len(settings.dns_udp_resolvers)))

        async def write_durably(rec: dict[str, Any], line: bytes) -> None:
            key = queue_line(rec)
            await writer.write_async(line, tag=key)
            del inflight[key]
            account(rec)

        def account(rec: dict[str, Any]) -> None:
            tk = rec["test_keys"]
            blocking, accessible = schema.our_verdict(tk)
            summary.rows.append(Row(input=rec["input"], blocking=blocking,
                                    accessible=accessible, reason=tk.get("x_reason", ""),
                                    rule=tk.get("x_rule", "")))
            summary.measured += 1
            if on_record is not None:
                on_record(rec)
            if on_progress is not None:
                on_progress(summary.measured, summary.inputs)

        async def with_packets(rec: dict[str, Any], obs: WebObservations | None) -> None:
            """The verdict is in ``rec`` already; the packet tests add ``x_packets`` beside it,
            running next to the other measurements (a worker never waits for them); packet proof
            of a DNS injector judges ``obs`` again (:func:`with_injector_proof`)."""
            assert packets is not None
            try:
                x = await packets.for_record(rec)
            except Exception:  # a bug in the packet tests must not cost the measurement
                log.exception("packet evidence failed for %s", rec.get("input"))
                x = None
            held.pop(id(rec), None)
            if x is not None:
                try:
                    rec = with_injector_proof(rec, obs, x, ctx=ctx, run=runinfo, vantage=vantage)
                except Exception:  # a bug: the first verdict stands, the evidence is kept
                    log.exception("judging %s with its packet evidence failed", rec.get("input"))
                rec = {**rec, "test_keys": {**rec["test_keys"], "x_packets": x}}
            rec, line = final(rec)
            await write_durably(rec, line)

        async def finish(target: Target, slot: asyncio.Future[None]) -> None:
            """One measurement, from its slot to its durable record. ``slot`` is set as soon as
            the measurement only waits (its DNS window, its control): the worker then takes the
            next input while this task waits for the verdict (issue 13)."""

            def release() -> None:
                if not slot.done():
                    slot.set_result(None)

            clock = Clock()
            partial = Partial(target=target)
            room_held = True
            try:
                try:
                    rec = await measure_one(target, ctx, runinfo, vantage, partial=partial, clock=clock,
                                            release=release)
                except asyncio.CancelledError:
                    if partial.released and partial.phase != "done":  # measured, only waiting: keep it
                        rec = final(interrupted_record(partial, clock, ctx, runinfo, vantage))[0]
                        with contextlib.suppress(OSError):
                            writer.enqueue(rec, tag=queue_line(rec))  # close() commits it, then it is accounted
                    raise
                release()
                rec, line = final(rec)  # encoded once (twice if scrubbed): the writer takes the line as it is
                if packets is not None and packets.wants(rec):
                    held[id(rec)] = rec  # written by the finally below if the run is cancelled meanwhile
                    # measured and judged: its in-flight room goes to the next input while the packet
                    # tests (MAX_JOBS at a time, their own limit) run, so they never hold measurements back
                    room_held = False
                    room.release()
                    await with_packets(rec, partial.final)
                    return
                await write_durably(rec, line)  # durable on return; the fsync runs off the event loop
            finally:
                release()
                if room_held:
                    room.release()

        async def worker(finishers: asyncio.TaskGroup) -> None:
            while True:
                try:
                    target = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await room.acquire()
                slot: asyncio.Future[None] = loop.create_future()
                job = finish(target, slot)
                try:
                    finishers.create_task(job)
                except RuntimeError:  # the finishers are shutting down (one failed: the run ends with its error)
                    job.close()
                    room.release()
                    return
                await slot  # the slot: until the measurement only waits, or is over

        try:
            summary.health_before = await check_vantage(ctx, tls_canaries=settings.health_canaries,
                                                        ipv6_canaries=settings.health_ipv6_canaries,
                                                        resolver_canary=settings.health_resolver_canary)
            vantage = summary.health_before.status()
            # the fingerprint index (~0.2 s of CPU) is built now, not on the first verdict, while
            # other measurements are in flight: it stalled their event loop (a lab DNS timeout)
            match_dns(())
            if vantage.offline:
                log.warning("vantage offline before the run: every verdict of this run will be inconclusive")
            try:
                async with asyncio.timeout(settings.timeouts.run_s):
                    try:
                        # finishers: every measurement, slot or not; tg: the concurrency slots
                        with run_gc():
                            async with asyncio.TaskGroup() as finishers, asyncio.TaskGroup() as tg:
                                for _ in range(min(settings.run_concurrency, max(len(targets), 1))):
                                    tg.create_task(worker(finishers))
                    except* OSError as group:  # the output file cannot be written (ENOSPC, EIO...)
                        io_error = _first_leaf(group)
                        summary.io_error = f"{type(io_error).__name__}: {io_error}"
            except TimeoutError:
                summary.deadline_hit = True
                log.warning("run deadline (%.0f s) reached: %d inputs not measured", settings.timeouts.run_s or 0,
                            summary.inputs - summary.measured)
            summary.health_after = await check_vantage(ctx, tls_canaries=settings.health_canaries,
                                                       ipv6_canaries=settings.health_ipv6_canaries,
                                                       resolver_canary=settings.health_resolver_canary)
            if identify_again is not None:  # the network after the run: a change is recorded (issue 15)
                summary.vantage_after = await identify_again()
                if summary.network_changed:
                    log.warning("the vantage's network changed during the run: %s %s before, %s %s after",
                                summary.vantage_before.asn, summary.vantage_before.cc,
                                summary.vantage_after.asn, summary.vantage_after.cc)
        except asyncio.CancelledError:
            summary.interrupted = True
    finally:
        # Synchronous up to the summary on disk: a second (third...) signal cancels this task
        # again, and a cancellation lands only at an await, so none may come before it
        # (two SIGTERMs 0-30 ms apart lost the summary 3 times in 30, issue 11).
        for rec in held.values():  # cancelled while its packet tests ran: the measurement without them
            try:
                writer.enqueue(rec, tag=queue_line(rec))
            except OSError as exc:
                log.error("cannot write %s: %s", rec.get("input"), exc)
        writer.close()  # waits for the writer thread: every queued line is on disk (or truncated away)
        for key in writer.written_tags:  # written, its measurement cancelled before it was accounted
            if (written := inflight.pop(key, None)) is not None:
                account(written)
        summary.measured = writer.lines_written  # the lines in the file, whatever happened
        summary.not_measured = summary.inputs - summary.measured
        if summary.packets and summary.packets.get("enabled") and packets is not None:
            summary.packets.update(jobs=packets.jobs, packets_sent=packets.packets_sent,
                                   localised=len(packets.localised))
        summary.runtime_s = round(time.monotonic() - t_start, 3)
        _write_summary(summary, settings)
        cancelled_late = False
        for sess in (session, helper_session, http_session):
            if sess is not None:
                cancelled_late = await _close_quietly(sess) or cancelled_late
    if cancelled_late:  # a signal while closing: still an interrupted process (exit 130)
        raise asyncio.CancelledError
    if summary.interrupted:
        raise asyncio.CancelledError
    if io_error is not None:
        raise io_error
    return summary


async def _close_quietly(sess: Any) -> bool:
    """Close an aiohttp session within 2 s; a further cancellation (another signal) or a
    hanging close does not stop the other closes (the summary is already written).
    Returns True when a cancellation arrived meanwhile."""
    try:
        async with asyncio.timeout(2.0):
            await sess.close()
    except asyncio.CancelledError:
        return True
    except (TimeoutError, OSError):
        pass
    return False


def _first_leaf(group: BaseExceptionGroup) -> OSError:
    """The first OSError of a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first  # type: ignore[return-value]


def summary_record(s: RunSummary, settings: Settings) -> schema.RunSummaryRecord:
    """The run summary as written to ``<report_id>.summary.json`` (:class:`probe.schema.RunSummaryRecord`)."""
    return schema.RunSummaryRecord(
        report_id=s.report_id, test_start_time=s.test_start_time, measurements_file=s.path.name, inputs=s.inputs,
        measured=s.measured, not_measured=s.not_measured, interrupted=s.interrupted, deadline_hit=s.deadline_hit,
        io_error=s.io_error, runtime_s=s.runtime_s, vantage_offline=s.vantage_offline,
        control_intercepted_by=s.intercepted_by, counts=dict(s.counts()), probe_asn=settings.probe_asn,
        probe_cc=settings.probe_cc, vantage_id=settings.probe_vantage_id,
        health_before=s.health_before.to_json() if s.health_before else None,
        health_after=s.health_after.to_json() if s.health_after else None,
        plan=s.plan.to_json() if s.plan else None, vantage=s.vantage_json(), packets=s.packets)


#: Bytes allocated to a run's ``<report_id>.summary.tmp`` when it starts (:func:`_reserve_summary`):
#: a summary is 2.7-3.7 KB (counts, both health checks, the plan, the vantage); 16 KiB leaves room.
SUMMARY_RESERVE_BYTES = 16 << 10


def _reserve_summary(summary_path: Path) -> None:
    """Allocate :data:`SUMMARY_RESERVE_BYTES` to the summary's temporary file now, so that a run that
    fills its disk (ENOSPC, EDQUOT: exit 74) still writes its summary, and with it why it stopped
    (``io_error``), over these blocks (:func:`_write_summary`); without it ``kzprobe list`` and
    ``status`` showed such a run as killed (break test 24, #7). Best effort: a disk already full
    gets no reservation (the run will say so when it writes). A run killed before its end leaves the
    file (zeros), which :mod:`probe.retention` deletes with the run."""
    tmp = summary_path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    except OSError as exc:
        log.debug("no room reserved for the summary %s: %s", tmp, exc.strerror or exc)
        return
    try:
        try:
            os.posix_fallocate(fd, 0, SUMMARY_RESERVE_BYTES)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.write(fd, bytes(SUMMARY_RESERVE_BYTES))  # a filesystem without fallocate: blocks written
    except OSError as exc:
        log.debug("no room reserved for the summary %s: %s", tmp, exc.strerror or exc)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _write_summary(s: RunSummary, settings: Settings) -> None:
    """Write the summary to ``<report_id>.summary.tmp``, over the blocks :func:`_reserve_summary` kept
    (no O_TRUNC: the text overwrites them, then the file is cut to its length; writing over allocated
    blocks needs no free space on ext4, xfs or tmpfs, where a full disk stopped the run), and rename it
    to ``<report_id>.summary.json``."""
    data = schema.to_json(summary_record(s, settings))
    tmp = s.summary_path.with_suffix(".tmp")
    try:
        text = json.dumps(data, indent=1, default=str).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o640)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
            fh.flush()
            fh.truncate(len(text))
            if settings.run_fsync:
                os.fsync(fh.fileno())
        tmp.replace(s.summary_path)
        if settings.run_fsync:  # the rename itself durable: fsync the directory
            dfd = os.open(s.summary_path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as exc:
        log.error("cannot write the run summary %s: %s", s.summary_path, exc.strerror or exc)
        tmp.unlink(missing_ok=True)
