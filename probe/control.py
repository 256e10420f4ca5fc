"""Controls: the same observations made from outside the censored network.

Two kinds, one result type (:class:`ControlResult`):

* :func:`doh_control` — DNS only, over DNS-over-HTTPS (RFC 8484) from the vantage
  point itself. Always run; it is the DNS control and a vantage canary.
* a full control (:class:`Control` protocol): DNS, TCP, TLS and HTTP from elsewhere.
  :func:`measure_control` is that measurement, run with the same primitives as the
  probe (one code path, same failure vocabulary, same body cap); the helper server
  runs it on a VPS, and tests run it in-process as :class:`LocalControl` with their
  own resolver and endpoint map. The field names follow OONI's web_connectivity
  control (``test_keys.control``: ``dns``, ``tcp_connect``, ``tls_handshake``,
  ``http_request``; ts-017 and the th API of ooni/probe-cli).
"""

from __future__ import annotations

import asyncio
import base64
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
from cryptography import x509

from probe import failures
from probe.addresses import format_endpoint, not_local_address, parse_ip
from probe.bounded import MAX_JSON_DEPTH, loads_json, read_body
from probe.context import MeasureContext, new_doh_session
from probe.control_result import ControlEndpoint, ControlHTTP, ControlResult, ControlSource  # re-exported
from probe.helper.api import API_VERSION, CONTROL_PATH, MAX_REQUEST_ENDPOINTS, control_from_json, control_request
from probe.measure import dns, http, tcp, tls
from probe.mitm import spki_sha256
from probe.timing import Clock
from probe.vocab import control_failure

#: Largest helper reply read (bytes after decompression): the reply holds at most 16
#: endpoints and one HTTP summary (200 headers of at most 8 KiB each, a 1 KiB title).
MAX_CONTROL_REPLY_BYTES = 4 << 20


#: The most of a helper's health reply read (its own is ~80 bytes).
HEALTH_MAX_BYTES = 4096


class Control(Protocol):
    """A full control: the helper client, or :class:`LocalControl` in tests."""

    async def measure(self, url: str, domain: str, port: int, endpoints: Sequence[tuple[str, int]]) -> ControlResult:
        """Observe ``url`` from the control's vantage; ``endpoints`` are the probe's (ip, port)."""
        ...


# Failures that are an answer about the name, not a failure of the resolver.
_DNS_ANSWERS = frozenset({failures.DNS_NXDOMAIN, failures.DNS_NO_ANSWER})


def _merge_dns(queries: Sequence[dns.DNSQuery]) -> tuple[tuple[str, ...], str | None, bool]:
    """(addresses, dns_failure, resolver_worked) from an A and an AAAA query."""
    addrs: dict[str, None] = {}
    for q in queries:
        for a in q.addresses():
            addrs.setdefault(a, None)
    if addrs:
        return tuple(addrs), None, True
    # without an address, the resolver "worked" only if every query was answered: an A
    # query that timed out beside an empty AAAA is no answer about the name
    worked = all(q.failure is None or q.failure in _DNS_ANSWERS for q in queries)
    fails = [q.failure for q in queries if q.failure]
    # NXDOMAIN beats NOERROR-without-data; otherwise the first failure
    dns_failure = failures.DNS_NXDOMAIN if failures.DNS_NXDOMAIN in fails else (fails[0] if fails else failures.DNS_NO_ANSWER)
    return (), dns_failure, worked


#: Failures of the transport, not answers from the resolver (no NXDOMAIN, no rcode, no
#: TLS verification failure): after them the DoH control retries on a fresh connection.
_DOH_RETRY_FAILURES = frozenset({failures.GENERIC_TIMEOUT, failures.CONNECTION_RESET,
                                 failures.CONNECTION_ABORTED, failures.EOF_ERROR})
_QTYPES: tuple[Literal["A", "AAAA"], ...] = ("A", "AAAA")


async def _doh_pairs(domain: str, qtypes: Sequence[Literal["A", "AAAA"]], url: str, session: aiohttp.ClientSession,
                     *, ctx: MeasureContext, clock: Clock, timeout_s: float) -> list[dns.DNSQuery]:
    """The ``qtypes`` queries of ``domain`` to ``url``, beside each other."""
    return list(await asyncio.gather(
        *(dns.query_doh(domain, qt, url=url, session=session, clock=clock, timeout_s=timeout_s,
                        bogons=ctx.bogons) for qt in qtypes)))


async def doh_control(domain: str, *, ctx: MeasureContext, clock: Clock) -> ControlResult:
    """Resolve ``domain`` (A and AAAA) with the DoH control resolvers, in order.

    The first resolver that answers (including NXDOMAIN) wins. If none answers the
    result has ``failure`` set to the last resolver's failure (e.g.
    ``generic_timeout_error``, ``ssl_unknown_authority`` when the network intercepts
    TLS): the DNS control is then unusable.

    Each resolver has ``timeouts.dns_s`` in all, as before. When it gave no address and
    its queries failed by the transport (timeout, reset, abort, EOF:
    :data:`_DOH_RETRY_FAILURES`) or answered (NOERROR without data, NXDOMAIN) — not a TLS
    failure, not a misbehaving server — the queries that failed by the transport are
    asked once more on a FRESH connection (a session with ``force_close``, same
    trust and byte bounds: issue 12, a vantage whose kept-alive DoH connections freeze
    after some bytes). Like :meth:`HelperClient.measure`, each attempt gets its share of
    the time left: the first half of ``dns_s``, the retry what remains. Both attempts'
    queries are kept in ``dns_queries`` (the record's ``x_doh_queries``; their ``t0``
    tell them apart), in the order they were made.

    Returns:
        A :class:`ControlResult` with source "doh"; ``failure`` is
        ``"control_failure: no DoH resolver configured"`` when there is none.
    """
    literal = parse_ip(domain)
    if literal is not None:  # an IP-literal input (https://8.8.8.8/) is its own answer
        return ControlResult(source="doh", failure=None, dns_addresses=(str(literal),))
    if ctx.doh_session is None or not ctx.doh_urls:
        return ControlResult(source="doh", failure=control_failure("no DoH resolver configured"))
    loop = asyncio.get_running_loop()
    last: tuple[dns.DNSQuery, ...] = ()
    failure: str = failures.GENERIC_TIMEOUT
    for url in ctx.doh_urls:
        deadline = loop.time() + ctx.timeouts.dns_s  # both attempts within dns_s, as one was
        queries = await _doh_pairs(domain, _QTYPES, url, ctx.doh_session, ctx=ctx, clock=clock,
                                   timeout_s=ctx.timeouts.dns_s / 2)
        final = queries  # the latest answer or failure of each query type
        addrs, dns_failure, worked = _merge_dns(final)
        stalled = [qt for qt in _QTYPES if any(q.query_type == qt and q.failure in _DOH_RETRY_FAILURES
                                                for q in queries)]
        others = all(q.failure is None or q.failure in _DNS_ANSWERS or q.failure in _DOH_RETRY_FAILURES
                     for q in queries)
        left = deadline - loop.time()
        if not worked and stalled and others and left > 0:
            async with new_doh_session(ctx.trust, limit=2, force_close=True) as fresh:
                retry = await _doh_pairs(domain, stalled, url, fresh, ctx=ctx, clock=clock, timeout_s=left)
            final = [q for q in queries if q.query_type not in stalled] + retry
            queries = queries + retry
            addrs, dns_failure, worked = _merge_dns(final)
        if worked:
            return ControlResult(source="doh", failure=None, dns_failure=dns_failure,
                                 dns_addresses=addrs, dns_queries=tuple(queries))
        last = tuple(queries)
        # the failure named: the A query's latest, else the AAAA's (as before the retry)
        failure = next((q.failure for q in sorted(final, key=lambda q: q.query_type) if q.failure),
                       failures.GENERIC_TIMEOUT)
    return ControlResult(source="doh", failure=failure, dns_queries=last)


async def _control_endpoint(ip: str, port: int, domain: str, tls_wanted: bool, ctx: MeasureContext,
                            clock: Clock, keep: dict[str, tls.OpenTLS] | None = None) -> ControlEndpoint:
    """Measure one endpoint; with ``keep``, a completed handshake's connection is left open in
    ``keep[ip]`` for the GET (the caller closes what it does not use)."""
    if not tls_wanted:
        c = await tcp.tcp_connect(ip, port, clock=clock, timeout_s=ctx.timeouts.connect_s, connect_to=ctx.connect_to)
        return ControlEndpoint(ip=ip, port=port, tcp_failure=c.failure)
    h, conn = await tls.tls_handshake_open(ip, port, server_name=domain, clock=clock,
                                           connect_timeout_s=ctx.timeouts.connect_s, tls_timeout_s=ctx.timeouts.tls_s,
                                           trust=ctx.trust, connect_to=ctx.connect_to, keep=keep is not None)
    if conn is not None and keep is not None:
        old = keep.pop(ip, None)
        if old is not None:
            old.close()
        keep[ip] = conn
    if h.connect_failure:
        return ControlEndpoint(ip=ip, port=port, tcp_failure=h.failure)
    issuer, spki = _leaf_facts(h.peer_certificates[0]) if h.peer_certificates else (None, None)
    return ControlEndpoint(ip=ip, port=port, tcp_failure=None, tls_attempted=True, tls_failure=h.failure,
                           tls_verification_failure=h.verification_failure, tls_issuer=issuer,
                           tls_leaf_spki_sha256=spki)


def _leaf_facts(b64_der: str) -> tuple[str | None, str | None]:
    """(issuer DN RFC 4514, SPKI SHA-256 hex) of a base64 DER leaf; (None, None) if unparseable."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(b64_der))
        return cert.issuer.rfc4514_string(), spki_sha256(cert)
    except ValueError:
        return None, None


def http_summary(fetch: http.HTTPFetch) -> ControlHTTP:
    """Reduce an :class:`~probe.measure.http.HTTPFetch` to what the control reports."""
    final = fetch.final
    if final is None or final.response is None or fetch.failure:
        return ControlHTTP(failure=fetch.failure or (final.failure if final else failures.GENERIC_TIMEOUT),
                           final_url=final.url if final else None)
    r = final.response
    return ControlHTTP(failure=None, final_url=final.url, status_code=r.status_code, headers=r.headers,
                       title=r.title, body_length=r.body_length, body_truncated=r.body_truncated,
                       body_sha256=r.body_sha256)


async def measure_control(url: str, domain: str, port: int, probe_endpoints: Sequence[tuple[str, int]], *,
                          ctx: MeasureContext, source: ControlSource = "local",
                          allow_address: Callable[[str], bool] = not_local_address,
                          allowed_ports: frozenset[int] | None = None) -> ControlResult:
    """The full control measurement, as the helper runs it.

    DNS (A+AAAA over the context's DoH resolvers), then TCP — and TLS with the
    target SNI when the URL is https — to every endpoint (the probe's, then its own
    answers, at most ``ctx.max_endpoints`` in all, never loopback/link-local), then an
    HTTP GET of ``url`` pinned to the first of its own addresses that connected.
    The probe's endpoints come first: they are what its verdict compares (did the
    address that failed at the probe connect from here?); a name with more addresses
    than the bound (a CDN's A and AAAA records) used to fill it with the control's own
    answers and leave every one of the probe's unmeasured, unsaid. The endpoints left
    over are listed in ``skipped``.

    Args:
        url: the normalised input URL (A-label host).
        domain: its host.
        port: its port.
        probe_endpoints: the (ip, port) pairs the probe resolved.
        ctx: resolvers, trust, timeouts, connect_to of the *control's* vantage.
        source: recorded as :attr:`ControlResult.source`.
        allow_address: endpoints, DNS answers used for the fetch, and redirect targets
            must pass it (the helper's SSRF guard passes a stricter one); default
            refuses loopback/link-local/multicast/unspecified.
        allowed_ports: endpoints on other ports are refused; None = any port.

    Returns:
        A :class:`ControlResult`; ``failure`` is set only when the control's own
        resolver could not be used. Refused endpoints are absent from ``endpoints``
        and listed in ``refused`` — no connection is made to them; so are the ones
        beyond the bound, listed in ``skipped``.
    """
    clock = Clock()
    dres = await doh_control(domain, ctx=ctx, clock=clock)
    if dres.failure:
        return ControlResult(source=source, failure=dres.failure, dns_queries=dres.dns_queries)
    tls_wanted = url.startswith("https://")
    eps: dict[str, tuple[str, int]] = {}
    for ip, p in probe_endpoints:  # the probe's first: its verdict compares them (docstring)
        eps.setdefault(format_endpoint(ip, p), (ip, p))
    for ip in dres.dns_addresses:
        eps.setdefault(format_endpoint(ip, port), (ip, port))
    allowed = [e for e in eps.values()
               if allow_address(e[0]) and (allowed_ports is None or e[1] in allowed_ports)]
    refused = tuple(format_endpoint(*e) for e in eps.values() if e not in allowed)
    chosen = allowed[: max(ctx.max_endpoints, 1)]
    skipped = tuple(format_endpoint(*e) for e in allowed[len(chosen):])
    # The handshakes of the control's own addresses stay open: the GET goes over the pinned one's
    # (as the probe's does, issue 13; OONI's oohelperd dials its GET anew: the request and the
    # answer are the same, one TLS handshake fewer per control). http_get dials afresh when the
    # connection does not fit (h2 chosen, unverified chain, the server closed it).
    conns: dict[str, tls.OpenTLS] = {}
    own_addrs = set(dres.dns_addresses)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_control_endpoint(ip, p, domain, tls_wanted, ctx, clock,
                                                      keep=conns if ip in own_addrs and p == port else None))
                     for ip, p in chosen]
        endpoints = {format_endpoint(t.result().ip, t.result().port): t.result() for t in tasks}
        own = [e for e in endpoints.values() if e.ip in dres.dns_addresses and e.tcp_failure is None]
        usable = [a for a in dres.dns_addresses if allow_address(a)]
        pin = own[0].ip if own else (usable[0] if usable else None)
        http_result: ControlHTTP
        if pin is None and dres.dns_addresses:
            http_result = ControlHTTP(failure=control_failure("every address refused by the control's policy"))
        elif pin is None:
            http_result = ControlHTTP(failure=dres.dns_failure or failures.DNS_NO_ANSWER)
        else:
            async def resolve(host: str) -> list[str]:
                r = await doh_control(host, ctx=ctx, clock=clock)
                return list(r.dns_addresses)

            handoff = conns.pop(pin, None)
            for conn in conns.values():  # the other endpoints' connections are not needed
                conn.close()
            conns.clear()
            fetch = await http.http_get(url, ip=pin, clock=clock, timeout_s=ctx.timeouts.http_s, trust=ctx.trust,
                                        resolve=resolve, connect_to=ctx.connect_to, max_body_bytes=ctx.max_body_bytes,
                                        store_body_bytes=0, max_redirects=ctx.max_redirects,
                                        allow_address=allow_address, session=ctx.http_session, handoff=handoff)
            http_result = http_summary(fetch)
    finally:
        for conn in conns.values():
            conn.close()
    return ControlResult(source=source, failure=None, dns_failure=dres.dns_failure, dns_addresses=dres.dns_addresses,
                         dns_queries=dres.dns_queries, endpoints=endpoints, http=http_result, refused=refused,
                         skipped=skipped)


@dataclass(frozen=True, kw_only=True)
class LocalControl:
    """A full control run in-process with its own context (tests; the helper server).

    Attributes:
        ctx: the control vantage's context (its own DoH resolver, connect_to, trust).
    """

    ctx: MeasureContext

    async def measure(self, url: str, domain: str, port: int, endpoints: Sequence[tuple[str, int]]) -> ControlResult:
        return await measure_control(url, domain, port, endpoints, ctx=self.ctx, source="local")


def control_to_json(c: ControlResult) -> dict[str, Any]:
    """OONI-shaped ``test_keys.control`` object (ts-017 field names, plus ``x_`` keys)."""
    out: dict[str, Any] = {
        "x_source": c.source,
        "failure": c.failure,
        "x_refused": list(c.refused),
        "dns": {"failure": c.dns_failure, "addrs": list(c.dns_addresses)},
        "tcp_connect": {k: {"status": e.tcp_failure is None, "failure": e.tcp_failure} for k, e in c.endpoints.items()},
        "tls_handshake": {
            k: {"server_name": None, "status": e.tls_failure is None, "failure": e.tls_failure,
                "x_verification_failure": e.tls_verification_failure, "x_issuer": e.tls_issuer,
                "x_leaf_spki_sha256": e.tls_leaf_spki_sha256}
            for k, e in c.endpoints.items() if e.tls_attempted
        },
    }
    if c.skipped:  # only when some were: a record without any keeps its shape
        out["x_skipped"] = list(c.skipped)
    if c.http is not None:
        h = c.http
        out["http_request"] = {
            "failure": h.failure, "status_code": h.status_code if h.status_code is not None else -1,
            "headers": dict(h.headers), "title": h.title or "", "body_length": h.body_length if h.body_length is not None else -1,
            "x_body_truncated": h.body_truncated, "x_body_sha256": h.body_sha256, "x_final_url": h.final_url,
        }
    return out


def _http_answer(failure: str) -> str | None:
    """``failure`` when it is a helper's HTTP status answer (``control_failure: helper answered HTTP 500``)."""
    return failure if failure.startswith(control_failure("helper answered HTTP ")) else None


@dataclass(frozen=True, kw_only=True)
class HelperControl:
    """The probe's client of a ``kzprobe helper`` (docs/helper-api.md): the full control.

    Attributes:
        base_url: the helper's base URL, e.g. ``https://vps.example.org:8443``.
        token: the bearer token (RFC 6750); never logged or repr'd.
        session: an aiohttp session verifying the helper's TLS certificate.
        timeout_s: deadline of the whole control exchange of one input, retries and their
            pauses included (seconds): the typed timeouts' ``control_s``, smaller than
            the measurement's deadline, so a hanging helper makes the control fail
            (verdicts needing it inconclusive), not every verdict ``deadline`` (issue 11, 4).
        max_reply_bytes: the reply body is read by :func:`probe.bounded.read_body` up to
            this many bytes after decompression (and twice that plus 64 KiB before);
            a larger reply is a control failure. Its JSON may nest at most
            :data:`probe.bounded.MAX_JSON_DEPTH` levels. The session must not
            decompress by itself (:func:`probe.context.new_doh_session`).
        retries: extra attempts after a transport failure, 5xx or 429 (default 1; a 429's
            ``Retry-After`` is honoured up to 5 s). Each attempt gets its share of the time
            left (a stalled first attempt leaves the retry half of ``timeout_s``) and its own
            connection (``Connection: close``: no kept-alive connection grows behind a
            per-connection byte-budget censor, issue 12).

    A helper that cannot be used gives a :class:`ControlResult` with ``failure`` set
    (``"control_failure: ..."``, :func:`probe.vocab.control_failure`), never an exception: verdicts that need it are then
    inconclusive (issue "control helper" §5).
    """

    base_url: str
    token: str = field(repr=False)
    session: Any = field(repr=False)
    timeout_s: float = 45.0
    max_reply_bytes: int = MAX_CONTROL_REPLY_BYTES
    retries: int = 1
    #: set by :meth:`health` when the server answered, but not as a kzprobe helper does (a redirect,
    #: 401/403/404, a 200 without the helper's health reply): its control replies are not used
    _not_a_helper: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    async def measure(self, url: str, domain: str, port: int, endpoints: Sequence[tuple[str, int]]) -> ControlResult:
        if self._not_a_helper:  # break test: junk health reply, yet its control replies decided verdicts
            return ControlResult(source="helper", failure=control_failure(
                f"not used: the helper failed its health check ({self._not_a_helper[0]})"))
        sent = list(endpoints)[:MAX_REQUEST_ENDPOINTS]  # the helper takes no more (400 beyond)
        body = control_request(url, sent)
        # Connection: close — every exchange on a fresh connection: a kept-alive connection
        # accumulates bytes behind a per-connection byte-budget censor until it freezes (issue 12).
        headers = {"Authorization": f"Bearer {self.token}", "Connection": "close"}
        failure = control_failure("not attempted")
        wait_s = 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s  # every attempt and pause within it
        for attempt in range(self.retries + 1):
            if attempt and wait_s:  # the helper asked to wait (429/5xx); a stall or reset retries at once
                pause = min(max(wait_s, 1.0), 5.0)
                if loop.time() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            wait_s = 0.0
            # each attempt its share of what is left, so a stalled first attempt leaves the retry time
            attempt_end = loop.time() + (deadline - loop.time()) / (self.retries + 1 - attempt)
            try:
                async with asyncio.timeout_at(attempt_end):
                    # never follow the helper's redirects: a Location into the vantage's LAN would carry
                    # the input and its addresses there (break test: 307 to 192.168.77.1)
                    async with self.session.post(f"{self.base_url.rstrip('/')}{CONTROL_PATH}", json=body,
                                                 headers=headers, allow_redirects=False) as resp:
                        if resp.status == 200:
                            reply, too_big = await read_body(resp, self.max_reply_bytes)
                            if too_big:
                                return ControlResult(source="helper", failure=control_failure(
                                    f"helper reply larger than {self.max_reply_bytes} bytes (helper.url wrong, or "
                                    "the helper compromised?)"))
                            data = loads_json(reply, max_depth=MAX_JSON_DEPTH)
                            if not isinstance(data, dict):
                                raise ValueError("helper reply is not a JSON object")
                            if data.get("api_version") != API_VERSION:
                                return ControlResult(source="helper", failure=control_failure(
                                    f"helper speaks API version {data.get('api_version')}"))
                            try:
                                return control_from_json(data, wanted=[format_endpoint(*e) for e in sent])
                            except ValueError as exc:  # out-of-range values (status_code 99999, ...)
                                return ControlResult(source="helper", failure=control_failure(
                                    f"helper reply unusable: {str(exc)[:300]}"))
                        if resp.status == 401:
                            return ControlResult(source="helper",
                                                 failure=control_failure("unauthorized (check the helper token)"))
                        failure = control_failure(f"helper answered HTTP {resp.status}")
                        if resp.status not in (429, 500, 502, 503, 504):
                            return ControlResult(source="helper", failure=failure)
                        try:
                            wait_s = float(resp.headers.get("Retry-After", "1"))
                        except ValueError:
                            wait_s = 1.0
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                why = failures.classify_aiohttp(exc, tls=self.base_url.startswith("https"))
                # the helper's own answer (HTTP 500/429) stays the reason when its retry then fails
                # (break test: a 500 then a stalled retry read generic_timeout_error)
                failure = (f"{answered}; retry: {why}" if (answered := _http_answer(failure))
                           else control_failure(why))
            except (ValueError, AttributeError, TypeError, zlib.error) as exc:  # not (the helper's) JSON, bombs
                failure = control_failure(failures.unknown(exc))
        return ControlResult(source="helper", failure=failure)

    async def health(self) -> str | None:
        """GET ``/api/v1/health``: None when the helper answers 200 with its health reply
        (``{"status": "ok", ...}``, read bounded), else a failure string. A server answering 200
        with anything else is not a working helper: it must not make an offline vantage look
        online (break test, stop 18)."""
        try:
            async with asyncio.timeout(min(self.timeout_s, 15.0)):
                async with self.session.get(f"{self.base_url.rstrip('/')}/api/v1/health",
                                            allow_redirects=False) as resp:
                    if resp.status != 200:
                        if 300 <= resp.status < 500 and resp.status not in (408, 429):  # answered, not as a helper
                            self._not_a_helper.append(f"HTTP {resp.status}")
                        return f"HTTP {resp.status}"
                    # the whole reply, decoded (a proxy's gzip), bounded: one content.read() gave the
                    # first chunk only, so a reply sent in two pieces made a working helper look down
                    body, too_big = await read_body(resp, HEALTH_MAX_BYTES)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return failures.classify_aiohttp(exc, tls=self.base_url.startswith("https"))
        except zlib.error:
            body, too_big = b"", True
        try:
            reply = None if too_big else loads_json(body)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or reply.get("status") != "ok":
            size = f"over {HEALTH_MAX_BYTES}" if too_big else str(len(body))
            failure = f"HTTP 200 but not a kzprobe helper's health reply ({size} bytes)"
            self._not_a_helper.append(failure)
            return failure
        return None
