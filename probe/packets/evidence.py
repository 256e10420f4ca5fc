"""Which packet tests a blocked measurement gets, within which limits, and its ``x_packets`` key.

After the web test's verdict (never before it, never delaying it: the runner holds the
record while this runs beside the other measurements), a measurement whose kzprobe verdict
is

* ``dns``: the DNS injection test (:mod:`probe.packets.dnsinject`) for its name; also an
  inconclusive verdict whose DNS is in question (:data:`WEAK_DNS_RULES`, or an answer
  inconsistent with the control): packet proof of an injector turns it into ``dns``
  (rule ``dns.injector_onpath``, the runner judges again);
* ``tls``, ``tcp_ip``, ``http-failure`` with an IPv4 endpoint whose TCP connect worked:
  reset/drop forensics (:mod:`probe.packets.forensics`) with the trigger the input implies
  (the ClientHello with its SNI for https, the GET with its Host for http), then the
  censor's localisation (:mod:`probe.packets.centrace`) when ``localise`` allows it — at most
  once per target name per run; with none but one whose connect was refused (a RST to the
  SYN): forensics only, the RST compared with the SYN-ACK of the server's other port (443 ↔ 80);

and nothing else: accessible, inconclusive and ``http-diff`` measurements send no packet.
Every job is bounded (``budget_s``), jobs run ``MAX_JOBS`` (3) at a time and share one pace
(``pps`` packets a second for the whole run: localisations and TTL-limited queries, :mod:`probe.packets.pacing`),
and every address is checked against the vantage's own network (:mod:`probe.localnet`): never probed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from probe import schema
from probe.failures import CONNECTION_REFUSED
from probe.localnet import AddressPolicy
from probe.packets.capture import TCP, UDP, Capture, write_pcap
from probe.packets.centrace import Localisation, localise
from probe.packets.dnsinject import DNSInjection, dns_injection
from probe.packets.forensics import ResetForensics, reset_forensics
from probe.packets.pacing import Pacer
from probe.packets.privileges import Privileges
from probe.packets.trigger import make_trigger
from probe.timing import Clock
from probe.vocab import Rule

log = logging.getLogger("kzprobe.packets")

#: Packet jobs at once (each holds one capture socket and a few TCP/UDP sockets).
MAX_JOBS = 3
#: Verdicts that get forensics and localisation (an endpoint answered the SYN).
TCP_VERDICTS = ("tls", "tcp_ip", "http-failure")
#: Inconclusive verdicts whose DNS cannot be checked without packets: no control at all, or an
#: inconsistent answer and no HTTP control to judge the page (probe.verdict).
WEAK_DNS_RULES = frozenset({Rule.CONTROL_DNS_FAILED.value, Rule.DNS_INCONSISTENT_NO_CONTROL.value})


@dataclass(frozen=True, kw_only=True)
class PacketSettings:
    """The ``[packets]`` settings as used (see :mod:`probe.config`).

    Attributes:
        localise: run the CenTrace-style localisation for blocked targets.
        non_resolver: the IPv4 address where no resolver listens ("" = skip the DNS injection test).
        resolver: the ISP resolver's IPv4 address ("" = not asked).
        benign_name: the benign twin of the trigger (the TLS benign SNI).
        max_ttl: most hops probed.
        pps: packets per second at most (localisations, TTL-limited queries; the whole run).
        budget_s: the longest one measurement's packet tests may take.
        pcap_dir: where the packets of each blocked target are written (None = not kept).
    """

    localise: bool = False
    non_resolver: str = ""
    resolver: str = ""
    benign_name: str = "example.com"
    max_ttl: int = 16
    pps: float = 10.0
    budget_s: float = 60.0
    pcap_dir: Path | None = None


def _ipv4(s: str) -> str:
    """``s`` when an IPv4 literal (``ip[:port]`` allowed), else ""."""
    host = s.rsplit(":", 1)[0] if s.count(":") == 1 else s
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return ""


async def ipv4_of(host: str, *, timeout_s: float = 5.0) -> str:
    """The first IPv4 address of ``host`` from the system's resolver (as the helper's own
    connections get it), "" when it has none, fails or does not answer within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, 53, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except (OSError, TimeoutError, UnicodeError):
        return ""
    return next((_ipv4(str(i[4][0])) for i in infos if _ipv4(str(i[4][0]))), "")


def endpoint_of(test_keys: dict[str, Any]) -> str | None:
    """The IPv4 address to probe: the first whose TCP connect worked, else None."""
    for c in test_keys.get("tcp_connect") or []:
        ip = c.get("ip") or ""
        if _ipv4(ip) and (c.get("status") or {}).get("success"):
            return str(ip)
    return None


def refused_endpoint_of(test_keys: dict[str, Any]) -> str | None:
    """The first IPv4 address whose TCP connect was refused (a RST to the SYN), else None."""
    for c in test_keys.get("tcp_connect") or []:
        ip = c.get("ip") or ""
        if _ipv4(ip) and (c.get("status") or {}).get("failure") == CONNECTION_REFUSED:
            return str(ip)
    return None


def verdict_of(test_keys: dict[str, Any]) -> Any:
    return test_keys["x_blocking"] if "x_blocking" in test_keys else test_keys.get("blocking")


def dns_questioned(test_keys: dict[str, Any]) -> bool:
    """A ``dns`` verdict, or an inconclusive one whose DNS is in question (:data:`WEAK_DNS_RULES`,
    or an answer the control contradicts): the DNS injection test runs for it."""
    v = verdict_of(test_keys)
    if v == "dns":
        return True
    return v is None and (test_keys.get("x_rule") in WEAK_DNS_RULES
                          or test_keys.get("x_dns_consistency") == "inconsistent")


def findings(dns: DNSInjection | None, rst: ResetForensics | None, loc: Localisation | None) -> list[str]:
    """Short statements for the record (``x_packets.findings``)."""
    out: list[str] = []
    if dns is not None and dns.injected:
        where = f" at hop {dns.injector_hop}" if dns.injector_hop else f" ~{dns.injector_hops_est} hops away"
        out.append(f"dns.injected_onpath: a DNS reply from {dns.non_resolver}, where no resolver listens{where}")
    if dns is not None and dns.raced:
        out.append("dns.raced: the resolver's replies came from different distances (IP TTL / IP ID)")
    if rst is not None and rst.injected:
        assert rst.ender is not None and rst.synack is not None
        other = f" (port {rst.synack_port})" if rst.synack_port is not None else ""
        out.append(f"tcp.{rst.outcome}_injected: TTL {rst.ender.ttl} vs the SYN-ACK's{other} {rst.synack.ttl} "
                   f"(~{rst.ender.hops_est} hops away, the server ~{rst.synack.hops_est})")
    elif rst is not None and rst.outcome == "syn_rst" and rst.injected is None and rst.ender is not None:
        out.append(f"tcp.syn_rst: the RST answering the SYN has TTL {rst.ender.ttl} (~{rst.ender.hops_est} hops "
                   "away); no SYN-ACK of this server to compare it with")
    if loc is not None and loc.censor_hop is not None:
        what = "a terminating proxy at" if loc.terminating else "in path after"
        out.append(f"censor.located: {what} hop {loc.censor_hop}"
                   + (f" ({loc.censor_address})" if loc.censor_address else "")
                   + (" — the benign request was blocked too" if loc.benign_blocked else ""))
    return out


def checked(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` through the record schema (:class:`probe.schema.PacketsRec`): the value written."""
    return schema.to_json(msgspec.convert(out, schema.PacketsRec))


def _json(x: Any) -> Any:
    return dataclasses.asdict(x) if x is not None else None


@dataclass
class PacketEvidence:
    """Per-run state: settings, privileges, the targets already localised, the job limit."""

    settings: PacketSettings
    privileges: Privileges
    asn_of: Callable[[str], str | None] | None = None
    policy: AddressPolicy = field(default_factory=AddressPolicy)
    localised: set[str] = field(default_factory=set)
    packets_sent: int = 0
    jobs: int = 0

    def __post_init__(self) -> None:
        self._sem = asyncio.Semaphore(MAX_JOBS)
        #: ``pps`` for the whole run: the jobs running side by side share it (probe.packets.pacing)
        self.pacer = Pacer(self.settings.pps)

    def wants(self, rec: dict[str, Any]) -> bool:
        """True when ``rec``'s verdict calls for packet tests (module doc)."""
        if not self.privileges.capture:
            return False
        tk = rec.get("test_keys") or {}
        v = verdict_of(tk)
        if dns_questioned(tk):
            return bool(self.settings.non_resolver) and self._allowed(self.settings.non_resolver)
        return v in TCP_VERDICTS and (endpoint_of(tk) is not None or refused_endpoint_of(tk) is not None)

    def _allowed(self, ip: str) -> bool:
        return self.policy.allow(ip)

    async def for_record(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Run the packet tests ``rec`` calls for; the ``x_packets`` value (None: none ran)."""
        if not self.wants(rec):
            return None
        async with self._sem:
            clock = Clock()
            try:
                async with asyncio.timeout(self.settings.budget_s):
                    return await self._run(rec, clock)
            except TimeoutError:
                return checked({"failure": "generic_timeout_error", "t": clock.now(), "findings": []})

    async def _run(self, rec: dict[str, Any], clock: Clock) -> dict[str, Any] | None:
        s = self.settings
        tk = rec["test_keys"]
        url = urlsplit(rec.get("input") or "")
        name = (url.hostname or "").rstrip(".")
        v = "dns" if dns_questioned(tk) else verdict_of(tk)
        ip = endpoint_of(tk) if v in TCP_VERDICTS else None
        # no handshake at all (a RST to the SYN): forensics only, no localisation
        refused = ip is None and v in TCP_VERDICTS
        ip = refused_endpoint_of(tk) if refused else ip
        if ip is not None and not self._allowed(ip):
            return checked({"failure": "refused: the vantage's own network", "findings": [], "t": clock.now()})
        hosts = [h for h in (ip, s.non_resolver if v == "dns" else "", s.resolver if v == "dns" else "") if h]
        dns = rst = loc = None
        self.jobs += 1
        # only the protocol tested: the helper's address carries every measurement's control traffic
        async with Capture(hosts, clock=clock, proto=UDP if v == "dns" else TCP) as cap:  # opened off the loop
            if v == "dns":
                dns = await dns_injection(name, non_resolver=s.non_resolver, resolver=s.resolver, clock=clock,
                                          listen_s=1.5, max_ttl=s.max_ttl, pps=s.pps, capture=cap,
                                          pacer=self.pacer)
            elif ip is not None:
                trig = make_trigger(url.scheme, name, benign_name=s.benign_name, path=url.path or "/",
                                    port=url.port)
                other = (80 if trig.port == 443 else 443) if refused else None
                rst = await reset_forensics(ip, trig.port, trig.payload, trigger=trig.kind, clock=clock, capture=cap,
                                            wait_s=2.5, other_port=other)
                if s.localise and not refused and name not in self.localised:
                    self.localised.add(name)
                    loc = await localise(ip, trig, clock=clock, max_ttl=s.max_ttl, pps=s.pps, capture=cap,
                                         pacer=self.pacer)
            pcap = None
            if s.pcap_dir is not None and self.privileges.pcap:
                uid = rec.get("x_measurement_uid") or name
                path = s.pcap_dir / f"{uid}.pcap"
                try:
                    s.pcap_dir.mkdir(parents=True, exist_ok=True)
                    # off the loop: scapy's import (~1 s the first time) and the writing
                    await asyncio.to_thread(write_pcap, path, list(cap.packets), clock=clock)
                    pcap = path.name
                except OSError as exc:
                    log.warning("cannot write %s: %s", path, exc.strerror or exc)
            sent = len([p for p in cap.packets if p.outgoing])
            captured, dropped = len(cap.packets), cap.dropped
        self.packets_sent += sent
        out: dict[str, Any] = {"findings": findings(dns, rst, loc), "t": clock.now(), "packets_sent": sent,
                               "packets_captured": captured, "packets_dropped": dropped}
        if dns is not None:
            out["dns_injection"] = _json(dns)
            out["dns_injection"]["injector_hops_est"] = dns.injector_hops_est
        if rst is not None:
            out["reset_forensics"] = _json(rst)
        if loc is not None:
            j = _json(loc)
            j["censor_network"] = (self.asn_of(loc.censor_address) if self.asn_of and loc.censor_address else None)
            out["localisation"] = j
        if pcap:
            out["pcap"] = pcap
        return checked(out)
