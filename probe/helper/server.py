"""The control helper server: ``POST /api/v1/control`` and ``GET /api/v1/health`` on aiohttp.

It runs on a VPS outside the censored network and answers, for a probe's input, what
that URL looks like from there: :func:`probe.control.measure_control` — the probe's own
primitives, failure vocabulary and body cap — with an SSRF guard around it. The API is
documented in ``docs/helper-api.md``; the wire format is :mod:`probe.helper.api`.

Per connection, before TLS or HTTP (:mod:`probe.helper.conns`): at most
``max_connections_per_client`` per client and ``max_connections`` in all (within the
file-descriptor limit; fair-share eviction when full), refusals logged once per 10 s; the
request head (TLS handshake included) within ``header_read_timeout_s``.

Per control request, in this order (cheapest refusal first):

1. authentication: ``Authorization: Bearer <token>`` (RFC 6750) matched in constant time
   against the configured tokens → 401 ``{"error": "unauthorized"}``, no detail;
2. per-token rate limit (token bucket) → 429 with ``Retry-After``;
3. body: at most ``max_body_bytes`` (413), read within ``body_read_timeout_s`` (408),
   a JSON object (400) with ``url`` (400 when :func:`probe.targets.normalise_url`
   rejects it; 403 when :meth:`AddressPolicy.check_url` does — nothing is resolved or
   dialled) and at most ``max_endpoints`` ``"ip:port"`` strings in ``endpoints`` (400);
4. global concurrency gate → 429 with ``Retry-After: 1`` when full (load is shed, not queued);
5. the measurement under ``request_deadline_s`` → 504 when it does not finish;
   otherwise 200 with ``control_to_json(result)`` plus ``"api_version": 1``.

Unexpected errors are 500 ``{"error": "internal error"}`` (logged with a traceback);
unknown paths 404, wrong methods 405; every error body is ``{"error": "<text>"}``.
Tokens are never logged: a request is logged with :func:`~probe.helper.auth.token_id`.

SSRF: see :mod:`probe.helper.ssrf` — the URL check, the address/port policy inside
``measure_control`` (its DNS answers, the probe's endpoints, every redirect) and a
guard at the socket (:class:`~probe.helper.ssrf.PolicyConnectTo`). Sources: OWASP
SSRF Prevention Cheat Sheet; IANA special-purpose address registries (RFC 6890).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from probe import __version__, failures
from probe.addresses import Bogons, ConnectTo, format_endpoint, parse_endpoint, parse_ip
from probe.config import DEFAULT_DOH, Timeouts
from probe.context import MeasureContext, new_doh_session
from probe.control import ControlResult, control_to_json, measure_control
from probe.helper.api import (
    API_VERSION,
    CONTROL_PATH,
    HEALTH_PATH,
    MAX_CONTROL_ENDPOINTS,
    MAX_DNS_ADDRS,
    MAX_REFUSED,
    MAX_SKIPPED,
    MAX_WHOAMI_RESOLVERS,
    WHOAMI_PATH,
)
from probe.helper.auth import HelperConfigError, TokenSet, bearer_token
from probe.helper.conns import FD_RESERVE, ConnectionLimiter, fd_budget, install_accept_error_filter, listen
from probe.helper.limits import ConcurrencyGate, RateLimiter, retry_after_header
from probe.helper.ssrf import AddressPolicy, PolicyConnectTo
from probe.measure.http import DEFAULT_MAX_BODY_BYTES, new_session
from probe.measure.tls import TrustStore
from probe.targets import TargetError, normalise_url

log = logging.getLogger("kzprobe.helper")


class _RedactParserErrors(logging.Filter):
    """aiohttp logs a request its parser rejects with the raw bytes (an over-long or malformed
    ``Authorization`` header included): keep the event, drop the bytes and the traceback,
    so a token never reaches the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or "rror handling request" in str(record.msg):
            exc = record.exc_info[1] if record.exc_info else None
            record.msg = "bad HTTP request rejected (%s; details withheld: they may contain credentials)"
            record.args = (type(exc).__name__ if exc else "parser error",)
            record.exc_info = None
            record.exc_text = None
        return True


def _install_log_redaction() -> None:
    """Attach :class:`_RedactParserErrors` to aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _RedactParserErrors) for f in server_log.filters):
        server_log.addFilter(_RedactParserErrors())

#: The ``Server`` header of every response (aiohttp's default names its version).
SERVER_HEADER = "kzprobe-helper"


@dataclass(frozen=True, kw_only=True)
class HelperConfig:
    """Everything the helper server needs.

    Attributes:
        tokens: accepted bearer tokens (see :func:`~probe.helper.auth.load_tokens`).
        policy: the SSRF address and port policy.
        timeouts: per-phase timeouts of the measurement (seconds); ``measurement_s``
            and ``run_s`` are not used (``request_deadline_s`` bounds a request).
        trust: TLS trust for the measurement and for DoH; None = Mozilla's roots,
            strict web-PKI policy (production).
        bogons: the bogon set used to flag DNS answers (records only; the policy decides).
        doh_urls: the helper's own DNS-over-HTTPS resolvers (RFC 8484), in order.
        connect_to: logical endpoint → socket address map (tests and the lab; empty in
            production). Always wrapped by the policy guard.
        max_redirects: redirects the HTTP fetch follows.
        max_body_bytes: largest request body accepted (bytes) → 413 beyond.
        body_read_timeout_s: time allowed to receive the request body (seconds) → 408.
        header_read_timeout_s: time allowed from accept to a complete request head, TLS
            handshake included (seconds), and from a response to the next request's head on a
            kept-alive connection; the connection is closed beyond (no answer: none is owed).
        max_connections: client connections held at once (all clients); lowered to what the
            process's file-descriptor limit leaves after :data:`~probe.helper.conns.FD_RESERVE`
            (the unit's ``LimitNOFILE`` is this plus the reserve). When full, a newcomer evicts
            the oldest connection of the client holding the most (fair share).
        max_connections_per_client: connections one client (an IPv4 address, an IPv6 /64) may
            hold at once; one more is reset at accept.
        max_endpoints: most ``endpoints`` a request may list → 400 beyond.
        max_measured_endpoints: most endpoints measured per request (the probe's first, then
            the helper's own DNS answers); the rest are named in the reply's ``x_skipped``.
        rate_per_token: requests per minute per token (token bucket refill) → 429.
        rate_burst: bucket capacity; None = ``ceil(rate_per_token)``.
        max_concurrent: control requests measured at once (all tokens) → 429 beyond.
        request_deadline_s: deadline of one measurement (seconds) → 504.
        fetch_body_cap: HTTP body cap of the fetch (bytes): the probe's 1 MiB, so both
            sides truncate alike (FIELD-CASES FC-15).
        listen_host, listen_port: where :func:`serve` listens (port 0 = any free one).
        tls_cert, tls_key: PEM paths of the certificate chain and key for HTTPS; both or
            neither.
        insecure_plain_http: allow plain HTTP on a non-loopback address (only for a
            reverse proxy on the same host that terminates TLS; see docs/helper-api.md).
        clock: monotonic clock of the rate limiter (seconds; tests pass a fake one).
        geoip: the helper's own ASN/country databases (:class:`probe.geoip.GeoIP`): whoami then also
            answers the probe's ASN, network name and country, and those of the resolvers the probe
            names (issue 15); None = the address only.

    Raises:
        HelperConfigError: no token, only one of cert/key, or a limit that is not positive.
    """

    tokens: frozenset[str]
    policy: AddressPolicy = field(default_factory=AddressPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    trust: TrustStore | None = None
    bogons: Bogons = field(default_factory=Bogons)
    doh_urls: tuple[str, ...] = DEFAULT_DOH
    connect_to: ConnectTo = field(default_factory=ConnectTo)
    max_redirects: int = 10
    max_body_bytes: int = 16 * 1024
    body_read_timeout_s: float = 10.0
    header_read_timeout_s: float = 10.0
    max_connections: int = 3584
    max_connections_per_client: int = 64
    max_endpoints: int = 16
    max_measured_endpoints: int = MAX_CONTROL_ENDPOINTS
    rate_per_token: float = 60.0
    rate_burst: int | None = None
    max_concurrent: int = 8
    request_deadline_s: float = 60.0
    fetch_body_cap: int = DEFAULT_MAX_BODY_BYTES
    listen_host: str = "127.0.0.1"
    listen_port: int = 8443
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure_plain_http: bool = False
    clock: Callable[[], float] = time.monotonic
    geoip: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", frozenset(self.tokens))
        if not self.tokens:
            raise HelperConfigError("no token configured: the helper serves nobody without one")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise HelperConfigError("tls_cert and tls_key go together: give both, or neither")
        if not self.doh_urls:
            raise HelperConfigError("doh_urls: the helper needs at least one DNS-over-HTTPS resolver")
        for name in ("max_body_bytes", "max_endpoints", "max_measured_endpoints", "max_concurrent",
                     "fetch_body_cap", "request_deadline_s", "rate_per_token", "body_read_timeout_s",
                     "header_read_timeout_s", "max_connections", "max_connections_per_client"):
            if not getattr(self, name) > 0:
                raise HelperConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_measured_endpoints > MAX_CONTROL_ENDPOINTS:  # probes before 2026-12-04 refused more
            raise HelperConfigError(f"max_measured_endpoints must be <= {MAX_CONTROL_ENDPOINTS} (the API's limit), "
                                    f"got {self.max_measured_endpoints!r}")
        if self.max_redirects < 0:
            raise HelperConfigError(f"max_redirects must be >= 0, got {self.max_redirects!r}")
        if not 0 <= self.listen_port < 65536:
            raise HelperConfigError(f"listen_port must be 0..65535, got {self.listen_port!r}")


@dataclass(kw_only=True)
class _State:
    """Per-application state (one per :func:`make_app`)."""

    config: HelperConfig
    tokens: TokenSet
    limiter: RateLimiter
    gate: ConcurrencyGate
    ctx: MeasureContext | None = None  # built at startup (it owns the DoH session)
    sink: str = ""  # a closed loopback port, where the guard sends refused dials


_STATE = web.AppKey("kzprobe_helper_state", _State)


class _Reject(Exception):
    """A request refused with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _unauthorized() -> web.Response:
    # RFC 6750 §3: a challenge, without error details (none are given to anyone).
    return _error(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="kzprobe-helper"'})


# ------------------------------------------------------------------------------ app


def make_app(config: HelperConfig) -> web.Application:
    """The helper as an aiohttp application (not listening; see :func:`start`/:func:`serve`).

    The measurement context (and its DoH session) is created when the application
    starts and closed at cleanup, together with the guard's sink socket.

    Raises:
        HelperConfigError: an invalid rate or concurrency limit.
    """
    try:
        state = _State(config=config, tokens=TokenSet(config.tokens),
                       limiter=RateLimiter(config.rate_per_token, config.rate_burst, clock=config.clock),
                       gate=ConcurrencyGate(config.max_concurrent))
    except ValueError as exc:
        raise HelperConfigError(str(exc)) from None
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_errors_middleware])
    app[_STATE] = state
    app.cleanup_ctx.append(_measurement_context)
    app.on_response_prepare.append(_response_headers)
    app.router.add_post(CONTROL_PATH, _control)
    app.router.add_get(HEALTH_PATH, _health)
    app.router.add_get(WHOAMI_PATH, _whoami)
    return app


async def _measurement_context(app: web.Application) -> AsyncIterator[None]:
    state = app[_STATE]
    cfg = state.config
    trust = cfg.trust or TrustStore()
    sink = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sink.bind(("127.0.0.1", 0))  # bound, never listening: connects to it are refused
    state.sink = format_endpoint("127.0.0.1", sink.getsockname()[1])
    session = new_doh_session(trust)
    # the controls' GETs share one session: no pooling, no cookie jar (new_session), so nothing of
    # one control carries into another; a session per GET cost a connector and a jar each (issue 13)
    http_session = new_session()
    state.ctx = MeasureContext(timeouts=cfg.timeouts, trust=trust, bogons=cfg.bogons, connect_to=cfg.connect_to,
                               system_resolver=False, doh_urls=tuple(cfg.doh_urls), doh_session=session,
                               http_session=http_session, max_body_bytes=cfg.fetch_body_cap, store_body_bytes=0,
                               max_redirects=cfg.max_redirects, max_endpoints=cfg.max_measured_endpoints)
    try:
        yield
    finally:
        state.ctx = None
        await session.close()
        await http_session.close()
        sink.close()


async def _response_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


@web.middleware
async def _errors_middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    """Every error as ``{"error": ...}`` JSON; bugs as a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _error(exc.status, (exc.reason or "error").lower(), headers)
    except Exception:
        log.exception("helper: internal error on %s %s", request.method, request.path)
        return _error(500, "internal error")


# ------------------------------------------------------------------------------ handlers


async def _health(request: web.Request) -> web.Response:
    """``GET /api/v1/health`` → ``{"status": "ok", "api_version": 1, "software_version": ...}``."""
    return web.json_response({"status": "ok", "api_version": API_VERSION, "software_version": __version__})


async def _whoami(request: web.Request) -> web.Response:
    """``GET /api/v1/whoami[?resolver=<ip>…]`` (bearer token, rate-limited as control) → ``{"probe_ip":
    "<the address this request came from>", "api_version": 1}``: how a probe learns its public address
    (issue 15). With the helper's own databases (``--asn-db``/``--country-db``) the answer also carries
    ``probe_asn``, ``probe_cc``, ``probe_network_name`` of that address and, per ``resolver`` named (at
    most :data:`MAX_WHOAMI_RESOLVERS` addresses), ``resolvers: {ip: {asn, cc, network_name}}``: a probe
    without a database of its own still learns its network (docs/helper-api.md). Behind a
    TLS-terminating proxy it is the proxy's address: such a deployment has no whoami."""
    state = request.app[_STATE]
    tid = state.tokens.match(bearer_token(request.headers.get("Authorization")))
    if tid is None:
        return _unauthorized()
    wait = state.limiter.acquire(tid)
    if wait > 0:
        return _error(429, "rate limited", {"Retry-After": retry_after_header(wait)})
    peer = (request.remote or "").split("%", 1)[0]
    if peer.startswith("::ffff:"):  # an IPv4 client on a dual-stack socket
        peer = peer.removeprefix("::ffff:")
    asked = request.query.getall("resolver", [])
    if len(asked) > MAX_WHOAMI_RESOLVERS:
        return _error(400, f"at most {MAX_WHOAMI_RESOLVERS} resolver addresses")
    try:
        resolvers = sorted({str(ipaddress.ip_address(a)) for a in asked})
    except ValueError:
        return _error(400, "resolver: not an IP address")
    log.info("whoami token=%s", tid)  # the address is not logged here (the accept log has it)
    out: dict[str, Any] = {"probe_ip": peer, "api_version": API_VERSION}
    db = state.config.geoip
    if db is not None and db.available:
        out.update(_network_json(db.lookup(peer), prefix="probe_"))
        looked = {ip: _network_json(db.lookup(ip)) for ip in resolvers}
        out["resolvers"] = {ip: v for ip, v in looked.items() if v}
    return web.json_response(out)


def _network_json(info: Any, *, prefix: str = "") -> dict[str, str]:
    """A :class:`probe.geoip.NetworkInfo` as whoami's keys (those known only)."""
    out = {f"{prefix}asn": info.asn, f"{prefix}cc": info.cc, f"{prefix}network_name": info.network_name or None}
    return {k: v for k, v in out.items() if v}


async def _control(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    t0 = time.monotonic()
    tid: str | None = None
    host = "-"
    status = 500
    try:
        tid = state.tokens.match(bearer_token(request.headers.get("Authorization")))
        if tid is None:
            status = 401
            return _unauthorized()
        wait = state.limiter.acquire(tid)
        if wait > 0:
            raise _Reject(429, "rate limited", {"Retry-After": retry_after_header(wait)})
        url, host, port, endpoints = await _read_request(request, state.config)
        if not state.gate.try_enter():
            raise _Reject(429, "busy", {"Retry-After": "1"})
        try:
            body = await _measure(state, url, host, port, endpoints)
        finally:
            state.gate.leave()
        status = 200
        return web.json_response(body)
    except _Reject as rej:
        status = rej.status
        return _error(rej.status, rej.message, rej.headers)
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's code for it); the work was cancelled
        raise
    finally:
        log.info("control token=%s host=%s status=%d %.3fs peer=%s", tid or "-", host, status,
                 time.monotonic() - t0, request.remote or "-")


async def _read_request(request: web.Request, cfg: HelperConfig) -> tuple[str, str, int, list[tuple[str, int]]]:
    """(normalised url, host, port, endpoints) of a control request, or :class:`_Reject`."""
    try:
        async with asyncio.timeout(cfg.body_read_timeout_s):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Reject(413, f"request body too large (limit {cfg.max_body_bytes} bytes)") from None
    except TimeoutError:
        raise _Reject(408, "request body not received in time") from None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Reject(400, "the body is not JSON") from None
    if not isinstance(obj, dict):
        raise _Reject(400, 'the body must be a JSON object {"url": ..., "endpoints": [...]}')
    url = obj.get("url")
    if not isinstance(url, str):
        raise _Reject(400, "url: missing, or not a string")
    eps = obj.get("endpoints", [])
    if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
        raise _Reject(400, 'endpoints: must be a list of "ip:port" strings')
    if len(eps) > cfg.max_endpoints:
        raise _Reject(400, f"endpoints: too many ({len(eps)} > {cfg.max_endpoints})")
    problem = cfg.policy.url_problem(url)
    if problem is not None and problem.kind == "refused":
        raise _Reject(403, f"refused: {problem.reason}")
    try:
        norm, host, _scheme, port = normalise_url(url)
    except TargetError as exc:
        raise _Reject(400, str(exc)) from None
    if problem is not None:  # malformed for the policy, yet normalise_url took it: still no
        raise _Reject(400, f"bad URL {url[:200]!r}: {problem.reason}")
    # The normalised form too (UTS #46 mapping can turn a name into a literal), and an
    # IP-literal host directly.
    why = cfg.policy.check_url(norm) or (cfg.policy.refusal(host) if parse_ip(host) is not None else None)
    if why is not None:
        raise _Reject(403, f"refused: {why}")
    endpoints = []
    for e in eps:
        try:
            endpoints.append(parse_endpoint(e))
        except ValueError as exc:
            raise _Reject(400, f"endpoints: {str(exc)[:200]}") from None
    return norm, host, port, endpoints


async def _measure(state: _State, url: str, host: str, port: int, endpoints: Sequence[tuple[str, int]]
                   ) -> dict[str, Any]:
    """Run the control measurement under the deadline; the response body (or :class:`_Reject` 504)."""
    cfg = state.config
    if state.ctx is None:  # pragma: no cover - only between cleanup and shutdown
        raise _Reject(503, "shutting down")
    guard = PolicyConnectTo(inner=cfg.connect_to, policy=cfg.policy, sink=state.sink)
    ctx = dataclasses.replace(state.ctx, connect_to=guard)
    try:
        async with asyncio.timeout(cfg.request_deadline_s):
            result = await measure_control(url, host, port, endpoints, ctx=ctx, source="helper",
                                           allow_address=cfg.policy.allows, allowed_ports=cfg.policy.ports)
    except TimeoutError:
        raise _Reject(504, f"the measurement did not finish within {cfg.request_deadline_s:g} s") from None
    return reply_body(_with_guard_refusals(result, guard.refused))


def reply_body(result: ControlResult) -> dict[str, Any]:
    """The 200 reply: ``control_to_json(result)`` with ``api_version``, within the API's limits of a
    reply (probe.helper.api; a probe refuses a reply past them): a name with more than
    :data:`MAX_DNS_ADDRS` addresses keeps its first ones, and so do the refused endpoints."""
    body = control_to_json(result)
    body["dns"]["addrs"] = body["dns"]["addrs"][:MAX_DNS_ADDRS]
    body["x_refused"] = body["x_refused"][:MAX_REFUSED]
    if "x_skipped" in body:
        body["x_skipped"] = body["x_skipped"][:MAX_SKIPPED]
    body["api_version"] = API_VERSION
    return body


def _with_guard_refusals(result: ControlResult, refused: Sequence[str]) -> ControlResult:
    """Add the endpoints the socket guard refused to ``result.refused``.

    ``measure_control`` filters endpoints and redirect *addresses* itself, so the guard
    only ever refuses a redirect to an allowed address on a port outside the policy
    (``Location: http://example.org:22/``). The fetch then failed on the guard's closed
    sink port (``connection_refused``); that failure is renamed to what ``http_get``
    reports for a refused redirect target, ``http_invalid_redirect_location_host``.
    """
    extra = tuple(e for e in refused if e not in result.refused)
    if not extra:
        return result
    http_result = result.http
    if http_result is not None and http_result.failure == failures.CONNECTION_REFUSED and http_result.final_url:
        port = URL(http_result.final_url).port
        if any(parse_endpoint(e)[1] == port for e in extra):
            http_result = dataclasses.replace(http_result, failure=failures.HTTP_INVALID_REDIRECT)
    return dataclasses.replace(result, refused=result.refused + extra, http=http_result)


# ------------------------------------------------------------------------------ serving


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback literals (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if host.strip().lower() == "localhost":
        return True
    addr = parse_ip(host)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr is not None and addr.is_loopback


def check_listen(config: HelperConfig) -> None:
    """Refuse to serve plain HTTP beyond loopback.

    Raises:
        HelperConfigError: ``listen_host`` is not loopback, no TLS certificate is
            configured, and ``insecure_plain_http`` is not set.
    """
    if config.tls_cert is None and not is_loopback_host(config.listen_host) and not config.insecure_plain_http:
        raise HelperConfigError(
            f"refusing to serve plain HTTP on {config.listen_host!r}: bearer tokens would cross the "
            "network in clear. Give a TLS certificate and key, listen on 127.0.0.1 behind a TLS "
            "reverse proxy, or set insecure_plain_http explicitly.")


def _server_ssl_context(config: HelperConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise HelperConfigError(f"cannot load the TLS certificate {config.tls_cert} / key {config.tls_key}: {exc}"
                                ) from None
    return ctx


@dataclass(kw_only=True)
class RunningHelper:
    """A started helper (from :func:`start`).

    Attributes:
        url: base URL, e.g. ``"https://127.0.0.1:8443"`` (the bound port when 0 was asked).
        runner: the aiohttp runner.
        limiter: the connection caps at accept (counts of refused and evicted connections).
    """

    url: str
    runner: web.AppRunner
    limiter: ConnectionLimiter | None = None

    async def close(self) -> None:
        """Stop listening, finish or cancel requests, close the DoH session."""
        await self.runner.cleanup()
        if self.limiter is not None:
            self.limiter.log.flush()


class _LimitedSite(web.SockSite):
    """aiohttp's site on our :class:`~probe.helper.conns.LimitedListener`, with a TLS handshake
    timeout (aiohttp's sites leave asyncio's 60 s)."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, *, ssl_context: ssl.SSLContext | None,
                 handshake_timeout_s: float, backlog: int = 512) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context, backlog=backlog)
        self._handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            server, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout_s if self._ssl_context is not None else None)


def connection_limiter(config: HelperConfig) -> ConnectionLimiter:
    """The accept-time caps for ``config``, within this process's file-descriptor limit
    (:func:`~probe.helper.conns.fd_budget`; logged when the limit lowers ``max_connections``).

    Raises:
        HelperConfigError: the limit leaves no room for a single connection.
    """
    allowed, soft = fd_budget(config.max_connections)
    if allowed < 1:
        raise HelperConfigError(
            f"the file-descriptor limit ({soft}) leaves no room for connections after the {FD_RESERVE} kept for "
            f"measurements: raise it (systemd LimitNOFILE={config.max_connections + FD_RESERVE}, or ulimit -n)")
    if allowed < config.max_connections:
        log.warning("helper: the file-descriptor limit (%d) allows %d connections, not max_connections=%d "
                    "(LimitNOFILE=%d would)", soft, allowed, config.max_connections,
                    config.max_connections + FD_RESERVE)
    return ConnectionLimiter(max_connections=allowed, per_client=min(config.max_connections_per_client, allowed))


async def start(config: HelperConfig) -> RunningHelper:
    """Start the helper on ``config.listen_host``:``config.listen_port`` and return at once.

    Connections are capped at accept, per client and in all (:mod:`probe.helper.conns`);
    a request head (TLS handshake included) must arrive within ``header_read_timeout_s``.

    Raises:
        HelperConfigError: see :func:`check_listen`; an unloadable certificate; a
            file-descriptor limit that leaves no room for connections.
        OSError: the address cannot be bound.
    """
    check_listen(config)
    ssl_ctx = _server_ssl_context(config)
    limiter = connection_limiter(config)
    _install_log_redaction()
    install_accept_error_filter()
    # keepalive_timeout: aiohttp closes a connection whose request head has not arrived this long
    # after it opened (or after the previous response): our header-read timeout.
    runner = web.AppRunner(make_app(config), access_log=None, handler_cancellation=True, shutdown_timeout=2.0,
                           keepalive_timeout=config.header_read_timeout_s)
    await runner.setup()
    try:
        sock = listen(config.listen_host, config.listen_port, limiter)
        site = _LimitedSite(runner, sock, ssl_context=ssl_ctx, handshake_timeout_s=config.header_read_timeout_s)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    scheme = "https" if ssl_ctx is not None else "http"
    url = f"{scheme}://{format_endpoint(host, port)}"
    log.info("helper listening on %s (%d tokens; at most %d connections, %d per client; request head within "
             "%g s)", url, len(config.tokens), limiter.max_connections, limiter.per_client,
             config.header_read_timeout_s)
    return RunningHelper(url=url, runner=runner, limiter=limiter)


async def serve(config: HelperConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the helper until cancelled (Ctrl-C, SIGTERM via the caller's loop).

    Args:
        config: the configuration.
        ready: called with the base URL once listening (the CLI prints it).

    Raises:
        HelperConfigError: see :func:`start`.
        OSError: the address cannot be bound.
    """
    helper = await start(config)
    try:
        if ready is not None:
            ready(helper.url)
        await asyncio.Event().wait()
    finally:
        await helper.close()


__all__ = ["SERVER_HEADER", "HelperConfig", "RunningHelper", "check_listen", "connection_limiter", "is_loopback_host",
           "make_app", "serve", "start"]
