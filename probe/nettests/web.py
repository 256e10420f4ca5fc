"""The web test: one input, DNS → endpoints → TCP → TLS → HTTP, with controls.

Flow (modelled on OONI web_connectivity v0.5, ts-017, with kzprobe's additions):

1. DNS from the vantage point (getaddrinfo and/or direct UDP to the ISP resolver,
   every reply kept) and, concurrently, the DoH control.
2. Endpoints: the probe's addresses, then the control's (so an address-level block
   can be told from a DNS lie, FC-01B), never loopback/link-local/multicast ones
   (FC-01: following a 127.0.0.1 answer reaches whatever runs locally), never the
   vantage's own network, nor private space for a public name (:mod:`probe.localnet`,
   issue 11: the answer stays in the record, in ``skipped``).
3. Per endpoint: TCP connect; TLS with the target SNI (https inputs, and port 443 of
   the probe's addresses for http inputs, to validate them as OONI v0.5 does). When
   TCP works but the target-SNI handshake fails, retry on the same address with a
   benign SNI and with no SNI: the record then says whether the block keys on the
   SNI or on the address.
4. The full control (helper) when configured, concurrently with 3.
5. HTTP GET pinned to the first probe endpoint that worked; when its final hop is
   https, big enough to time (:data:`probe.measure.throughput.MIN_BYTES`) and slow (or
   cut by its timeout mid-body), the same GET again to the same address with the
   benign SNI, as a throughput baseline (FC-19; :mod:`probe.measure.throughput`).
6. Chain inspection for TLS interception on every captured chain; blockpage
   fingerprints on DNS answers and on the final HTTP response.
7. Verdict (:mod:`probe.verdict`).
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from probe import failures
from probe.addresses import format_endpoint, parse_ip
from probe.context import MeasureContext
from probe.control import ControlResult, doh_control
from probe.fingerprints import Fingerprint, match_dns, match_http
from probe.localnet import AddressPolicy, describe, is_private
from probe.measure import dns, http, tcp, throughput, tls
from probe.mitm import MITMFinding, inspect_chain
from probe.packets.proof import InjectorProof
from probe.targets import Target
from probe.timing import Clock
from probe.vocab import control_failure

EndpointSource = Literal["probe", "control", "both"]


@dataclass(frozen=True, kw_only=True)
class EndpointObservation:
    """What the probe saw at one endpoint.

    Attributes:
        ip, port: the endpoint (port is the input's, or 443 for ``tls_check``).
        source: which side's DNS produced the address.
        tcp: the TCP connect, None when not attempted.
        tls: handshake with the target SNI, None when not attempted.
        tls_benign: retry with the benign SNI (only after ``tls`` failed), else None.
        tls_no_sni: retry without SNI (only after ``tls`` failed), else None.
        mitm: chain inspection of ``tls``'s chain, None without a chain.
        tls_check: this is the port-443 validity check for an http input.
    """

    ip: str
    port: int
    source: EndpointSource
    tcp: tcp.TCPConnect | None = None
    tls: tls.TLSHandshake | None = None
    tls_benign: tls.TLSHandshake | None = None
    tls_no_sni: tls.TLSHandshake | None = None
    mitm: MITMFinding | None = None
    tls_check: bool = False

    @property
    def address(self) -> str:
        return format_endpoint(self.ip, self.port)

    @property
    def tcp_ok(self) -> bool:
        if self.tls is not None:
            return not self.tls.connect_failure
        return self.tcp is not None and self.tcp.failure is None

    @property
    def tls_ok(self) -> bool:
        """The target-SNI handshake completed (verified or not)."""
        return self.tls is not None and self.tls.failure is None


@dataclass(frozen=True, kw_only=True)
class WebObservations:
    """Everything the web test observed for one input (input to :func:`probe.verdict.judge`).

    Attributes:
        target: the input.
        queries: probe-side DNS lookups (system and UDP), raw replies included.
        dns_control: the DoH control.
        control: the full control (helper), None when not configured.
        endpoints: per-endpoint observations, probe addresses first.
        skipped: addresses from DNS that were deliberately not contacted, with why.
        http: the HTTP fetch, None when no endpoint worked (then nothing to fetch).
        dns_blockpages: fingerprints matched by the probe's DNS answers.
        http_blockpages: fingerprints matched by plain-HTTP responses of the fetch (a
            response over verified TLS comes from the site itself, whatever it says).
        resolver_check: when the probe's resolvers gave no address for the input, the
            same resolvers asked for ``ctx.resolver_canary`` right after; else empty.
        redirect_target: when the fetch's redirect target failed with a reset, a timeout or an
            EOF before any response head (the hop does not say at which step), its endpoint
            measured again step by step — TCP, then TLS with its SNI (and the benign-SNI
            retries) — so the verdict can name the layer (issue 12); else None.
        packet_dns: packet proof of an on-path DNS injector for the name (issue 16): a reply
            from an address where no resolver listens. Never observed by :func:`observe`: the
            packet tests run after the first verdict and the runner judges again with it.
        throughput: the rate of the fetch's final https hop and its benign-SNI
            baseline (:mod:`probe.measure.throughput`); None when there was nothing to
            time (no fetch, plain HTTP, no response head, a non-timeout failure).
    """

    target: Target
    queries: tuple[dns.DNSQuery, ...]
    dns_control: ControlResult
    control: ControlResult | None
    endpoints: tuple[EndpointObservation, ...]
    skipped: tuple[tuple[str, str], ...]
    http: http.HTTPFetch | None
    dns_blockpages: tuple[Fingerprint, ...] = ()
    http_blockpages: tuple[Fingerprint, ...] = ()
    resolver_check: tuple[dns.DNSQuery, ...] = ()
    throughput: throughput.ThroughputCheck | None = None
    redirect_target: EndpointObservation | None = None
    packet_dns: InjectorProof | None = None

    def probe_addresses(self) -> tuple[str, ...]:
        """Every address in the probe's DNS replies (duplicates/injections included), in order.

        Worked out once a record (its queries never change: frozen) and kept in its ``__dict__`` under
        ``_probe_addresses``, not a field (equality, hash, repr and ``dataclasses.replace`` ignore it); a
        builder that walked the answers already hands them over there (:func:`analysis.ooni._observe`)."""
        d = self.__dict__
        got: tuple[str, ...] | None = d.get("_probe_addresses")
        if got is not None:
            return got
        d["_probe_addresses"] = out = tuple(dns.reply_addresses(self.queries))
        return out


async def _probe_dns(domain: str, ctx: MeasureContext, clock: Clock,
                     early: list[asyncio.Future[dns.DNSQuery]] | None = None) -> tuple[dns.DNSQuery, ...]:
    """The probe's own DNS for ``domain``: the system resolver and A + AAAA to each UDP resolver.

    With ``early`` (an empty list), one future per query is appended to it at once, before
    any await, each set as soon as that query's result is known (:func:`dns.query_udp_many`'s
    ``decided``), while the UDP queries keep listening for injected replies; the returned
    tuple is the complete one (issue 13: the listening window runs beside the rest)."""
    literal = parse_ip(domain)
    if literal is not None:  # an IP-literal input needs no resolution: record it as its own answer
        t = clock.now()
        ans = dns.DNSAnswer(answer_type="A" if literal.version == 4 else "AAAA",
                            ipv4=str(literal) if literal.version == 4 else None,
                            ipv6=str(literal) if literal.version == 6 else None, bogon=ctx.bogons.is_bogon(literal))
        return (dns.DNSQuery(hostname=domain, query_type="ANY", engine="system", resolver_address="", t0=t, t=t,
                             failure=None, answers=(ans,)),)
    loop = asyncio.get_running_loop()

    def future() -> asyncio.Future[dns.DNSQuery] | None:
        if early is None:
            return None
        f: asyncio.Future[dns.DNSQuery] = loop.create_future()
        early.append(f)
        return f

    async def settle(job: Awaitable[dns.DNSQuery], f: asyncio.Future[dns.DNSQuery] | None
                     ) -> tuple[dns.DNSQuery, ...]:
        q = await job
        if f is not None and not f.done():
            f.set_result(q)
        return (q,)

    jobs: list[Awaitable[tuple[dns.DNSQuery, ...]]] = []
    if ctx.system_resolver:
        jobs.append(settle(dns.resolve_system(domain, clock=clock, timeout_s=ctx.timeouts.dns_s, bogons=ctx.bogons),
                           future()))
    for server in ctx.udp_resolvers:  # A and AAAA sent together on one socket (issue 13)
        jobs.append(dns.query_udp_many(domain, ("A", "AAAA"), server=server, clock=clock,
                                       timeout_s=ctx.timeouts.dns_s, listen_s=ctx.timeouts.dns_listen_s,
                                       bogons=ctx.bogons, edns=ctx.udp_edns, decided=(future(), future())))
    return tuple(q for qs in await asyncio.gather(*jobs) for q in qs)


async def _provisional(task: asyncio.Task[tuple[dns.DNSQuery, ...]], early: list[asyncio.Future[dns.DNSQuery]]
                       ) -> tuple[dns.DNSQuery, ...]:
    """Each query's result as soon as it is known (the listening goes on in ``task``)."""
    while not early and not task.done():
        await asyncio.sleep(0)  # the task appends its futures in its first step, before any await
    if not early:
        return await task
    both = asyncio.gather(*early)
    waiters: set[asyncio.Future[Any]] = {task, both}
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        both.cancel()
        return task.result()  # raises a bug's exception
    return tuple(both.result())


async def _endpoint(ip: str, port: int, source: EndpointSource, domain: str, use_tls: bool, tls_check: bool,
                    ctx: MeasureContext, clock: Clock, keep: dict[str, tls.OpenTLS] | None = None
                    ) -> EndpointObservation:
    """Measure one endpoint. With ``keep``, a completed target-SNI handshake's connection is
    left open in ``keep[ip]`` for the GET (issue 13; the caller closes what it does not use)."""
    t = ctx.timeouts
    if not use_tls:
        c = await tcp.tcp_connect(ip, port, clock=clock, timeout_s=t.connect_s, connect_to=ctx.connect_to)
        return EndpointObservation(ip=ip, port=port, source=source, tcp=c)

    async def hs(sni: str | None) -> tls.TLSHandshake:
        return await tls.tls_handshake(ip, port, server_name=sni, clock=clock, connect_timeout_s=t.connect_s,
                                       tls_timeout_s=t.tls_s, trust=ctx.trust, connect_to=ctx.connect_to)

    if keep is not None:
        h, conn = await tls.tls_handshake_open(ip, port, server_name=domain, clock=clock,
                                               connect_timeout_s=t.connect_s, tls_timeout_s=t.tls_s,
                                               trust=ctx.trust, connect_to=ctx.connect_to)
        if conn is not None:
            old = keep.pop(ip, None)
            if old is not None:
                old.close()
            keep[ip] = conn
    else:
        h = await hs(domain)
    # The connect's own end, not the handshake's: a sub-millisecond connect followed by a TLS
    # timeout is a fast connect and a slow handshake (tcp_connect[].t is df-005's connect time).
    c = tcp.TCPConnect(ip=ip, port=port, t0=h.t0, t=h.connect_t if h.connect_t is not None else h.t,
                       failure=h.failure if h.connect_failure else None)
    benign = no_sni = None
    if h.failure is not None and not h.connect_failure and not tls_check:
        benign, no_sni = await asyncio.gather(hs(ctx.benign_sni), hs(None))
    finding = inspect_chain(list(h.peer_certificates)) if h.peer_certificates else None
    return EndpointObservation(ip=ip, port=port, source=source, tcp=c, tls=h, tls_benign=benign,
                               tls_no_sni=no_sni, mitm=finding, tls_check=tls_check)


#: Failures of a redirect target's hop that do not say at which step (connect, TLS handshake, the
#: HTTP exchange) they happened: the target's endpoint is then measured again step by step.
AMBIGUOUS_HOP_FAILURES = frozenset({failures.CONNECTION_RESET, failures.GENERIC_TIMEOUT, failures.EOF_ERROR})


async def _redirect_target(fetch: http.HTTPFetch, ctx: MeasureContext, clock: Clock) -> EndpointObservation | None:
    """The failed redirect target's endpoint, measured again (TCP, TLS with its SNI, the benign-SNI
    retries) when its hop failed ambiguously before any response head (:data:`AMBIGUOUS_HOP_FAILURES`);
    else None. The address is the one the hop used (already vetted by the address policy)."""
    if fetch.failure is None or len(fetch.requests) < 2:
        return None
    last = fetch.requests[-1]
    if last.failure not in AMBIGUOUS_HOP_FAILURES or last.ip is None or last.port is None \
            or last.response is not None or last.body_bytes_received is not None:
        return None
    host = urlsplit(last.url).hostname
    if not host:
        return None
    return await _endpoint(last.ip, last.port, "probe", host, last.url.startswith("https://"), False, ctx, clock)


def plan_endpoints(probe_addrs: tuple[str, ...], control_addrs: tuple[str, ...],
                   max_endpoints: int, *, policy: AddressPolicy | None = None, origin_private: bool = False
                   ) -> tuple[list[tuple[str, EndpointSource]], list[tuple[str, str]]]:
    """Choose the addresses to contact: probe's first, then control's; skip unsafe ones.

    Skipped (never contacted, listed with the reason as evidence: address, not content):
    machine-local answers (FC-01) and, with ``policy`` (:mod:`probe.localnet`), answers
    in the vantage's own network, and private (RFC 1918/ULA) answers unless the input
    itself is a private literal (``origin_private``) — an ISP blockpage on a private
    address stays visible as the DNS answer that named it.

    Returns:
        (chosen [(ip, source)], skipped [(ip, reason)]).
    """
    policy = policy or AddressPolicy()
    chosen: dict[str, EndpointSource] = {}
    skipped: list[tuple[str, str]] = []
    for ip in probe_addrs:
        rule = policy.refuse_address(ip, origin_private=origin_private)
        if rule is not None:
            skipped.append((ip, describe(ip, rule, policy.local)))
        else:
            chosen.setdefault(ip, "probe")
    for ip in control_addrs:
        if ip in chosen:
            chosen[ip] = "both"
        elif policy.refuse_address(ip, origin_private=origin_private) is None:
            chosen[ip] = "control"
    items = list(chosen.items())[: max(max_endpoints, 1)]
    return items, skipped


@dataclass(kw_only=True)
class Partial:
    """What :func:`observe` has seen so far (kept when the measurement deadline cuts it).

    Attributes:
        phase: the step in progress: "dns", "endpoints", "http", "throughput", "control"
            (waiting for the helper, after the probe's own steps) or "done".
        queries, dns_control, control, endpoints, skipped, http, throughput: as in
            :class:`WebObservations`, filled in as each step finishes (endpoints one by one).
        released: the probe's own steps are done and only waiting is left (the DNS
            listening window, the control): :func:`observe`'s ``release`` was called.
        final: every observation, once :func:`observe` returned them (the runner judges
            them again when packet evidence arrives: :func:`probe.runner.with_injector_proof`).
    """

    target: Target
    phase: str = "dns"
    queries: tuple[dns.DNSQuery, ...] = ()
    dns_control: ControlResult | None = None
    control: ControlResult | None = None
    endpoints: list[EndpointObservation] = field(default_factory=list)
    skipped: tuple[tuple[str, str], ...] = ()
    http: http.HTTPFetch | None = None
    throughput: throughput.ThroughputCheck | None = None
    redirect_target: EndpointObservation | None = None
    released: bool = False
    final: WebObservations | None = None

    def snapshot(self) -> WebObservations:
        """The observations so far (a missing DoH control is a control failure)."""
        ctl = self.dns_control or ControlResult(source="doh", failure=control_failure("not finished before the deadline"))
        return WebObservations(target=self.target, queries=self.queries, dns_control=ctl, control=self.control,
                               endpoints=tuple(self.endpoints), skipped=self.skipped, http=self.http,
                               throughput=self.throughput, redirect_target=self.redirect_target)


async def observe(target: Target, ctx: MeasureContext, clock: Clock, partial: Partial | None = None,
                  release: Callable[[], None] | None = None) -> WebObservations:
    """Run steps 1-6 for one input; never raises for network failures.

    Args:
        target: the input (normalised URL, A-label domain).
        ctx: the run's context.
        clock: the measurement's clock (``t0``/``t`` of every record are relative to it).
        partial: filled in step by step, so a caller that cancels this coroutine (the
            measurement deadline) keeps what was observed; None = not needed.
        release: called once (at most) when the probe's own steps are done and what is left
            is waiting — for the DNS listening window to close and/or for the helper
            control — so a runner can give the input's concurrency slot to the next one
            while this coroutine waits for the verdict (issue 13). ``partial.phase`` is
            then "dns" or "control" and ``partial.released`` is True.
    """
    p = partial if partial is not None else Partial(target=target)
    async with asyncio.TaskGroup() as dns_tg:
        # The probe's DNS listens for injected replies (FC-07) for dns_listen_s after the first
        # reply: that window runs beside everything below; only the verdict waits for it (issue 13).
        early: list[asyncio.Future[dns.DNSQuery]] = []
        dns_task = dns_tg.create_task(_probe_dns(target.domain, ctx, clock, early=early))
        doh_task = dns_tg.create_task(doh_control(target.domain, ctx=ctx, clock=clock))
        p.queries = await _provisional(dns_task, early)
        if not dns.reply_addresses(p.queries):  # no address yet: a late reply may still bring one (rare path)
            p.queries = await dns_task
        # the DoH control is not awaited here: the probe's endpoints and the helper control start
        # from the probe's own addresses; the DoH's join the plan when it answers (issue 13)
        return await _observe_rest(target, ctx, clock, p, dns_task, release, doh_task)


async def _observe_rest(target: Target, ctx: MeasureContext, clock: Clock, p: Partial,
                        dns_task: asyncio.Task[tuple[dns.DNSQuery, ...]],
                        release: Callable[[], None] | None = None,
                        doh_task: asyncio.Task[ControlResult] | None = None) -> WebObservations:
    """Steps 2-6 of :func:`observe` from the provisional DNS results in ``p.queries``;
    ``dns_task`` gives the complete ones (every reply of the listening window).

    The outcome is the one of a run that had waited for the window first: when the
    complete replies bring addresses the provisional ones did not have (an injected
    reply first, the genuine one later, or the reverse), the endpoints are planned again
    from every address, the new ones measured, the sources relabelled, and the control
    asked again with the complete list of the probe's endpoints; the HTTP fetch goes
    ahead before the window closes only when its endpoint is the first address of the
    first query, which no later reply can displace in the plan.

    ``doh_task`` (the DoH control, when not in ``p.dns_control`` yet) runs beside: the probe's
    endpoints, the helper control and the fetch start from the probe's addresses; the DoH's
    addresses join the plan when it answers (the plan is the same: the probe's come first)."""
    if doh_task is not None and doh_task.done():
        p.dns_control = doh_task.result()
    assert p.dns_control is not None or doh_task is not None
    probe_addrs = dns.reply_addresses(p.queries)
    resolver_check: tuple[dns.DNSQuery, ...] = ()
    if not probe_addrs and ctx.resolver_canary:
        resolver_check = await _probe_dns(ctx.resolver_canary, ctx, clock)
    literal = parse_ip(target.domain)  # a private literal input is its own origin (probe/localnet.py)
    origin_private = literal is not None and is_private(literal)
    https = target.scheme == "https"

    def plan(addrs: dict[str, None]) -> tuple[list[tuple[str, EndpointSource]], list[tuple[str, str]]]:
        ctl_addrs = p.dns_control.dns_addresses if p.dns_control is not None else ()
        return plan_endpoints(tuple(addrs), ctl_addrs, ctx.max_endpoints,
                              policy=ctx.address_policy, origin_private=origin_private)

    chosen, skipped = plan(probe_addrs)
    p.skipped = tuple(skipped)
    measured: dict[tuple[str, int, bool], EndpointObservation] = {}  # (ip, port, tls_check)
    started: set[tuple[str, int, bool]] = set()

    # The open connections of the target-SNI handshakes of an https input: the GET goes over
    # the pinned endpoint's one (issue 13); the others are closed once the pin is known.
    conns: dict[str, tls.OpenTLS] = {}
    keeping = True

    async def endpoint(ip: str, port: int, src: EndpointSource, use_tls: bool, tls_check: bool) -> None:
        e = await _endpoint(ip, port, src, target.domain, use_tls, tls_check, ctx, clock,
                            keep=conns if use_tls and not tls_check and keeping else None)
        measured[(ip, port, tls_check)] = e
        p.endpoints.append(e)

    def probe_eps(plan_: list[tuple[str, EndpointSource]]) -> list[tuple[str, int]]:
        return [(ip, target.port) for ip, src in plan_ if src in ("probe", "both")]

    async def control(eps: list[tuple[str, int]]) -> None:
        p.control = await _safe_control(ctx, target, eps)

    async def measure(plan_: list[tuple[str, EndpointSource]]) -> None:
        """Measure every endpoint of ``plan_`` not measured yet."""
        async with asyncio.TaskGroup() as tg:
            for ip, src in plan_:
                if (ip, target.port, False) not in started:
                    started.add((ip, target.port, False))
                    tg.create_task(endpoint(ip, target.port, src, https, False))
            if not https:
                for ip, src in plan_:
                    if src in ("probe", "both") and (ip, 443, True) not in started:
                        started.add((ip, 443, True))
                        tg.create_task(endpoint(ip, 443, src, True, True))

    def ordered(plan_: list[tuple[str, EndpointSource]]) -> tuple[EndpointObservation, ...]:
        """Plan order, not completion order; each endpoint labelled with its source in ``plan_``."""
        keys = [(ip, target.port, False, src) for ip, src in plan_]
        if not https:
            keys += [(ip, 443, True, src) for ip, src in plan_ if src in ("probe", "both")]
        out = []
        for ip, port, check, src in keys:
            e = measured.get((ip, port, check))  # None: started by a concurrent re-plan, not done yet
            if e is not None:
                out.append(e if e.source == src else replace(e, source=src))
        return tuple(out)

    p.phase = "endpoints"
    control_eps = probe_eps(chosen)
    control_task: asyncio.Task[None] | None = None
    # The control runs beside the probe's own steps, never before them: the probe's fetch does
    # not wait for a slow helper (issue 12); the control is awaited last, within its own deadline.
    try:
        async with asyncio.TaskGroup() as outer:

            def ask_control(eps: list[tuple[str, int]]) -> None:
                """(Re)start the control with the probe's endpoints ``eps`` (a late DNS reply may add some)."""
                nonlocal control_task
                if ctx.control is None:
                    return
                if control_task is not None and not control_task.done():
                    control_task.cancel()  # its answer would be about the wrong endpoints
                p.control = None
                control_task = outer.create_task(control(eps))

            ask_control(control_eps)

            async def doh_addresses() -> None:
                """When the DoH control answers, its addresses join the plan and are measured."""
                nonlocal chosen
                if doh_task is None or p.dns_control is not None:
                    return
                p.dns_control = await doh_task
                chosen, skipped_ = plan(probe_addrs)
                p.skipped = tuple(skipped_)
                await measure(chosen)

            doh_job = outer.create_task(doh_addresses())
            await measure(chosen)
            endpoints = ordered(chosen)
            p.endpoints = list(endpoints)

            async def complete_dns() -> None:
                """Wait for the listening window; re-plan if it brought new addresses."""
                nonlocal chosen, endpoints, probe_addrs, control_eps
                p.queries = await dns_task
                full = dns.reply_addresses(p.queries)
                if list(full) == list(probe_addrs):
                    return
                probe_addrs = full
                chosen, skipped_ = plan(full)
                p.skipped = tuple(skipped_)
                eps = probe_eps(chosen)
                if eps != control_eps:
                    control_eps = eps
                    ask_control(eps)
                await measure(chosen)
                endpoints = ordered(chosen)
                p.endpoints = list(endpoints)

            p.phase = "http"

            def pin_of() -> EndpointObservation | None:
                return next((e for e in endpoints if not e.tls_check and e.source in ("probe", "both")
                             and (e.tls_ok if https else e.tcp_ok)), None)

            pin = pin_of()
            first = next(iter(p.queries[0].all_reply_addresses()), None) if p.queries else None
            if not dns_task.done() and (pin is None or pin.ip != first):
                await complete_dns()  # a late reply could change which endpoint is fetched
                pin = pin_of()
            if pin is not None:
                async def resolve(host: str) -> list[str]:
                    qs = await _probe_dns(host, ctx, clock)
                    addrs = list(dict.fromkeys(a for q in qs for a in q.addresses()))  # http_get refuses local ones
                    if not addrs:  # the hop records why: NXDOMAIN or a timeout, not just "no answer"
                        why = {q.failure for q in qs}
                        if failures.DNS_NXDOMAIN in why:
                            raise socket.gaierror(socket.EAI_NONAME, f"{host}: {failures.DNS_NXDOMAIN}")
                        if failures.GENERIC_TIMEOUT in why:
                            raise TimeoutError(f"{host}: {failures.GENERIC_TIMEOUT}")
                    return addrs

                keeping = False  # endpoints measured from now on (the DoH's) keep no connection
                handoff = conns.pop(pin.ip, None) if https else None
                for conn in conns.values():  # the other endpoints' connections are not needed
                    conn.close()
                conns.clear()
                p.http = await http.http_get(target.input, ip=pin.ip, clock=clock, timeout_s=ctx.timeouts.http_s,
                                             trust=ctx.trust, resolve=resolve, connect_to=ctx.connect_to,
                                             max_body_bytes=ctx.max_body_bytes,
                                             store_body_bytes=ctx.store_body_bytes, max_redirects=ctx.max_redirects,
                                             policy=ctx.address_policy, session=ctx.http_session, handoff=handoff)
                p.redirect_target = await _redirect_target(p.http, ctx, clock)
                p.phase = "throughput"
                p.throughput = await throughput.measure_throughput(
                    p.http, benign_sni=ctx.benign_sni, clock=clock, timeout_s=ctx.timeouts.http_s, trust=ctx.trust,
                    connect_to=ctx.connect_to, max_body_bytes=ctx.max_body_bytes)
            p.phase = "dns"
            if release is not None and (not dns_task.done() or not doh_job.done()
                                        or (control_task is not None and not control_task.done())):
                p.released = True  # only waiting is left: the window, the control (issue 13)
                release()
            await complete_dns()  # the verdict waits for the window (no-op when done above)
            if ctx.control is not None and p.control is None:
                p.phase = "control"
    finally:
        for conn in conns.values():
            conn.close()  # a no-op for the one the GET took
    p.phase = "done"
    endpoints = ordered(chosen)  # every endpoint of the final plan (the DoH's included) is measured
    p.endpoints = list(endpoints)
    dns_ctl = p.dns_control
    assert dns_ctl is not None
    dns_bp = tuple(match_dns(probe_addrs))
    http_bp: tuple[Fingerprint, ...] = ()
    if p.http is not None:
        bps: list[Fingerprint] = []
        for req in p.http.requests:
            if req.response is not None and req.url.startswith("http://"):
                r = req.response
                bps.extend(match_http(r.status_code, r.headers, base64.b64decode(r.body_b64) if r.body_b64 else b""))
        http_bp = tuple(dict.fromkeys(bps))
    return WebObservations(target=target, queries=p.queries, dns_control=dns_ctl, control=p.control,
                           endpoints=endpoints, skipped=p.skipped, http=p.http, dns_blockpages=dns_bp,
                           http_blockpages=http_bp, resolver_check=resolver_check, throughput=p.throughput,
                           redirect_target=p.redirect_target)


#: Seconds the control's backstop deadline (:func:`_safe_control`) waits past the control's own.
CONTROL_BACKSTOP_S = 0.5


async def _safe_control(ctx: MeasureContext, target: Target, eps: list[tuple[str, int]]) -> ControlResult:
    """Call the full control; a control that raises is a control failure, not a crash.

    The deadline here is a backstop, :data:`CONTROL_BACKSTOP_S` after the control's own
    (``HelperControl`` keeps its deadline itself): when both were equal, this one fired first
    and a helper's "answered HTTP 500" before a stalled retry read ``generic_timeout_error``."""
    assert ctx.control is not None
    try:
        async with asyncio.timeout(ctx.timeouts.control_deadline_s + CONTROL_BACKSTOP_S):
            return await ctx.control.measure(target.input, target.domain, target.port, eps)
    except TimeoutError:
        return ControlResult(source="helper", failure=control_failure(failures.GENERIC_TIMEOUT))
    except (OSError, ValueError) as exc:  # a client bug or transport error must not lose the measurement
        return ControlResult(source="helper", failure=control_failure(failures.classify(exc, 'http_round_trip')))

