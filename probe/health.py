"""Vantage health: canaries before and after a run.

A vantage point is *online* when at least one canary works: a DoH control query
answered over verified TLS, or a TLS handshake to a well-known host that verifies.
A machine with no internet therefore reports "vantage offline — nothing can be
judged" and never "blocked" (DESIGN.md, rules that keep it honest).

The control channel is itself checked: when the DoH resolvers' TLS chains do not
verify, the handshake's issuer is recorded (``control_intercepted_by``) — a
network whose middlebox intercepts all TLS, as corporate networks do — and no
blocking verdict is given from that control.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from probe import failures
from probe.addresses import parse_endpoint, parse_ip
from probe.context import MeasureContext
from probe.measure import dns, tcp, tls
from probe.mitm import inspect_chain
from probe.timing import Clock
from probe.verdict import VantageStatus

CanaryKind = Literal["doh", "tls", "tcp6", "resolver", "helper"]


@dataclass(frozen=True, kw_only=True)
class Canary:
    """One canary check.

    Attributes:
        kind: "doh" (a DoH query), "tls" (a verified handshake), "tcp6" (an IPv6 connect),
            "resolver" (the probe's own resolver — system or UDP — resolving a well-known name),
            "helper" (the control helper's health endpoint).
        target: the DoH URL, "host:port", or "system" / the resolver's "ip:port".
        ok: it worked.
        failure: OONI failure string, None when ok.
        issuer: issuer DN of the certificate seen when verification failed (interception), else None.
        t: seconds it took.
    """

    kind: CanaryKind
    target: str
    ok: bool
    failure: str | None
    issuer: str | None = None
    t: float = 0.0


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    """The vantage's health at one moment.

    Attributes:
        checked_at: UTC time of the check.
        canaries: every canary result.
        online: any DoH or TLS canary reached its genuine server (TLS verified).
        control_intercepted_by: issuer DN when the control channel's TLS is intercepted, else None.
        ipv6_usable: the vantage has an IPv6 route and (when IPv6 canaries are configured) one of
            them connected; False without a route (an IPv4-only vantage) or when every IPv6 canary
            fails (broken IPv6); None when unknown.
        ipv4_usable: the vantage has an IPv4 route and (when it has IPv4 canaries) one worked;
            False without an IPv4 route (an IPv6-only vantage); None when unknown.
        resolver_failure: "<resolver>: <failure>" when *every* probe-side resolver failed
            the resolver canary (a broken local resolver, not censorship); None otherwise.
        helper_failure: why the configured helper's health check failed; None when it
            answered or none is configured.
    """

    checked_at: datetime
    canaries: tuple[Canary, ...]
    online: bool
    control_intercepted_by: str | None
    ipv6_usable: bool | None
    resolver_failure: str | None = None
    helper_failure: str | None = None
    ipv4_usable: bool | None = None

    def status(self) -> VantageStatus:
        """The :class:`~probe.verdict.VantageStatus` verdicts use."""
        return VantageStatus(offline=not self.online, control_intercepted_by=self.control_intercepted_by,
                             ipv6_usable=self.ipv6_usable, resolver_failure=self.resolver_failure,
                             ipv4_usable=self.ipv4_usable)

    def to_json(self) -> dict[str, object]:
        return {"checked_at": self.checked_at.isoformat(), "online": self.online,
                "control_intercepted_by": self.control_intercepted_by, "ipv6_usable": self.ipv6_usable,
                "ipv4_usable": self.ipv4_usable,
                "resolver_failure": self.resolver_failure, "helper_failure": self.helper_failure, "canaries": [c.__dict__ for c in self.canaries]}


#: Documentation addresses (RFC 5737, RFC 3849) whose route lookup tells whether the vantage has a
#: route of each family; connect() on a UDP socket sends nothing.
ROUTE_PROBES: dict[int, str] = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def has_route(family: int) -> bool:
    """Whether the vantage's routing table has a route (a default one, in practice) for ``family``:
    a UDP connect() looks the route up and sends no packet (ENETUNREACH when there is none)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((ROUTE_PROBES[family], 9))
    except OSError:
        return False
    return True


def _is_v4(host: str) -> bool:
    ip = parse_ip(host)
    return ip is not None and ip.version == 4


async def _host_ips(host: str, timeout_s: float) -> list[str]:
    if parse_ip(host) is not None:
        return [str(parse_ip(host))]
    try:
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return []
    return list(dict.fromkeys(str(i[4][0]) for i in infos))


async def _tls_canary(host: str, port: int, ctx: MeasureContext, clock: Clock, kind: CanaryKind = "tls") -> Canary:
    t0 = clock.now()
    ips = await _host_ips(host, ctx.timeouts.dns_s)
    if not ips:
        return Canary(kind=kind, target=f"{host}:{port}", ok=False, failure=failures.DNS_NXDOMAIN, t=clock.now() - t0)
    if parse_ip(host) is None:  # a name the resolver (a captive portal, a hijack) may point into the LAN
        ips = [ip for ip in ips if ctx.address_policy.refuse_address(ip) is None]
        if not ips:
            return Canary(kind=kind, target=f"{host}:{port}", ok=False, failure=failures.LOCAL_NETWORK_REFUSED,
                          t=clock.now() - t0)
    h = await tls.tls_handshake(ips[0], port, server_name=host, clock=clock, connect_timeout_s=ctx.timeouts.connect_s,
                                tls_timeout_s=ctx.timeouts.tls_s, trust=ctx.trust, connect_to=ctx.connect_to)
    issuer = None
    if h.failure is None and h.verification_failure and h.peer_certificates:
        issuer = inspect_chain(list(h.peer_certificates[:1])).issuer
    return Canary(kind=kind, target=f"{host}:{port}", ok=h.verified, failure=h.failure or h.verification_failure,
                  issuer=issuer, t=round(clock.now() - t0, 6))


async def _doh_canary(url: str, ctx: MeasureContext, clock: Clock, name: str) -> Canary:
    t0 = clock.now()
    assert ctx.doh_session is not None
    q = await dns.query_doh(name, "A", url=url, session=ctx.doh_session, clock=clock, timeout_s=ctx.timeouts.dns_s,
                            bogons=ctx.bogons)
    ok = bool(q.addresses())  # a resolver that says NXDOMAIN for a well-known name is not a control
    issuer = None
    if not ok and q.failure and q.failure.startswith("ssl_"):
        parts = urlsplit(url)
        c = await _tls_canary(parts.hostname or "", parts.port or 443, ctx, clock, kind="doh")
        issuer = c.issuer
    return Canary(kind="doh", target=url, ok=ok, failure=None if ok else q.failure, issuer=issuer,
                  t=round(clock.now() - t0, 6))


async def _tcp6_canary(endpoint: str, ctx: MeasureContext, clock: Clock) -> Canary:
    ip, port = parse_endpoint(endpoint)
    c = await tcp.tcp_connect(ip, port, clock=clock, timeout_s=min(ctx.timeouts.connect_s, 5.0),
                              connect_to=ctx.connect_to)
    return Canary(kind="tcp6", target=endpoint, ok=c.failure is None, failure=c.failure, t=round(c.t - c.t0, 6))


async def _resolver_canaries(name: str, ctx: MeasureContext, clock: Clock) -> list[Canary]:
    jobs = []
    if ctx.system_resolver:
        jobs.append(dns.resolve_system(name, clock=clock, timeout_s=ctx.timeouts.dns_s, bogons=ctx.bogons))
    for server in ctx.udp_resolvers:
        jobs.append(dns.query_udp(name, "A", server=server, clock=clock, timeout_s=ctx.timeouts.dns_s, listen_s=0.0,
                                  bogons=ctx.bogons, edns=ctx.udp_edns))
    out = []
    for q in await asyncio.gather(*jobs):
        ok = bool(q.addresses())
        out.append(Canary(kind="resolver", target=q.resolver_address or "system", ok=ok,
                          failure=None if ok else (q.failure or failures.DNS_NO_ANSWER), t=round(q.t - q.t0, 6)))
    return out


async def check_vantage(ctx: MeasureContext, *, tls_canaries: tuple[str, ...] = (), ipv6_canaries: tuple[str, ...] = (),
                        doh_name: str = "example.com", resolver_canary: str | None = "example.com") -> HealthReport:
    """Run every canary concurrently and summarise.

    Args:
        ctx: the run's context (DoH resolvers and session, trust, timeouts).
        tls_canaries: "host:port" of well-known HTTPS hosts.
        ipv6_canaries: "[v6]:port" endpoints for the IPv6 check.
        doh_name: the name asked of each DoH resolver.
        resolver_canary: a well-known name the probe's own resolvers (system, UDP) must
            resolve; when all of them fail it, DNS failures at this vantage are not
            evidence of blocking. None or "" = not checked.

    Returns:
        A :class:`HealthReport`; never raises for network failures.
    """
    clock = Clock()
    jobs = []
    if ctx.doh_session is not None:
        jobs += [_doh_canary(u, ctx, clock, doh_name) for u in ctx.doh_urls]
    for hp in tls_canaries:
        host, _, port = hp.rpartition(":")
        jobs.append(_tls_canary(host.strip("[]"), int(port or 443), ctx, clock))
    jobs += [_tcp6_canary(e, ctx, clock) for e in ipv6_canaries]
    health = getattr(ctx.control, "health", None)

    async def resolvers() -> list[Canary]:
        return await _resolver_canaries(resolver_canary, ctx, clock) if resolver_canary else []

    async def helper() -> tuple[str | None, float] | None:
        if health is None:
            return None
        t0 = clock.now()
        failure = await health()
        return failure, round(clock.now() - t0, 6)

    # all at once (the resolver canaries and the helper's health waited for the others: a run's
    # start-up paid their round trips in turn, issue 13); the results keep their order
    canaries, resolver_results, helper_result = await asyncio.gather(asyncio.gather(*jobs), resolvers(), helper())
    results = tuple(canaries) + tuple(resolver_results)
    helper_failure = None
    if helper_result is not None:
        helper_failure, took = helper_result
        results += (Canary(kind="helper", target=getattr(ctx.control, "base_url", "helper"), ok=helper_failure is None,
                           failure=helper_failure, t=took),)
    # Online means a canary reached its genuine server (verified TLS). A network where every
    # canary's TLS is intercepted may be a corporate proxy or a sandbox's egress filter: we
    # cannot tell, nothing can be judged either way, and the issuer is reported.
    online = any(c.ok for c in results if c.kind in ("doh", "tls", "helper"))
    doh = [c for c in results if c.kind == "doh"]
    intercepted = None
    if doh and not any(c.ok for c in doh):
        intercepted = next((c.issuer for c in results if c.issuer), None)
    v6 = [c for c in results if c.kind == "tcp6"]
    res = [c for c in results if c.kind == "resolver"]
    resolver_failure = None
    if res and not any(c.ok for c in res):
        resolver_failure = "; ".join(f"{c.target}: {c.failure}" for c in res)
    v4 = [c for c in results if c.kind == "tls" and c.ok and _is_v4(c.target.rpartition(":")[0])]
    ipv4_usable: bool | None = (True if v4 else None) if has_route(socket.AF_INET) else False
    ipv6_usable: bool | None = (any(c.ok for c in v6) if v6 else None) if has_route(socket.AF_INET6) else False
    return HealthReport(checked_at=datetime.now(UTC), canaries=results, online=online,
                        control_intercepted_by=intercepted, ipv6_usable=ipv6_usable,
                        resolver_failure=resolver_failure, helper_failure=helper_failure, ipv4_usable=ipv4_usable)
