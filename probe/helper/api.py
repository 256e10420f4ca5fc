"""The helper's wire format (API version 1), shared by the server and the probe's client.

Request (``POST /api/v1/control``, ``Content-Type: application/json``)::

    {"url": "https://example.org/", "endpoints": ["93.184.215.14:443", "[2606:2800::1]:443"]}

Response (200): :func:`probe.control.control_to_json` of the helper's
:class:`~probe.control.ControlResult` (OONI's ``test_keys.control`` shape, ts-017
field names plus ``x_`` keys) with ``"api_version": 1`` added. :func:`control_from_json`
turns it back into a :class:`~probe.control.ControlResult`.

The result types come from :mod:`probe.control_result` (plain data), so :mod:`probe.control`
(the client) imports this module and this module never imports :mod:`probe.control`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from probe.addresses import format_endpoint, parse_endpoint, parse_ip
from probe.control_result import ControlEndpoint, ControlHTTP, ControlResult
from probe.measure.http import CUT_MARK, MAX_HEADER_CHARS, MAX_STORED_HEADERS, MAX_TITLE_CHARS

#: The API version this module speaks; in every response as ``api_version``.
API_VERSION: Final = 1
#: Path of the control endpoint (POST, bearer token).
CONTROL_PATH: Final = "/api/v1/control"
#: Path of the health endpoint (GET, no authentication).
HEALTH_PATH: Final = "/api/v1/health"
#: Path of the whoami endpoint (GET, bearer token): the address the helper sees the probe at.
WHOAMI_PATH: Final = "/api/v1/whoami"
#: Most ``resolver`` addresses one whoami request may ask the network of.
MAX_WHOAMI_RESOLVERS: Final = 4

_SOURCES: Final = ("doh", "helper", "local")

# What a reply may hold (docs/helper-api.md, "Limits of a reply"). A value outside these is not
# something a kzprobe helper sends: the reply is malformed and the control unusable, as garbage
# JSON is (break test: status_code 99999, body_length -5, 256 tcp_connect entries were accepted and
# decided "BLOCKED: http-diff, status 200/99999").
#: Most endpoints a kzprobe helper measures (its ``max_measured_endpoints`` may not be set higher):
#: the probe's first, then its own answers; the rest are named in ``x_skipped``.
MAX_CONTROL_ENDPOINTS: Final = 32
#: Most request ``endpoints`` the helper takes (400 beyond).
MAX_REQUEST_ENDPOINTS: Final = 16
#: Most ``dns.addrs`` (A and AAAA answers together).
MAX_DNS_ADDRS: Final = 128
#: Most ``x_refused`` endpoints: the probe's and the helper's own answers.
MAX_REFUSED: Final = MAX_REQUEST_ENDPOINTS + MAX_DNS_ADDRS
#: Most ``tcp_connect``/``tls_handshake`` endpoints the probe takes from a reply: every endpoint one
#: input can have (the 16 it sends, the 128 answers a reply may hold). OONI's test helper measures
#: every address, the probe's and its own, with no count bound (ooni/probe-cli
#: internal/oohelperd/ipinfo.go ipInfoToEndpoints; measure.go; only the 16 MiB request body is
#: bounded, handler.go): a reply about more endpoints than our helper's 32 is a helper's honest
#: answer, not garbage. Beyond this bound the probe keeps its own endpoints first and the first of
#: the others, and names the rest (at most :data:`MAX_REFUSED`) in ``skipped``: the reply is never
#: refused for its count; the reply's bytes stay bounded (probe.control.MAX_CONTROL_REPLY_BYTES).
MAX_REPLY_ENDPOINTS: Final = MAX_REQUEST_ENDPOINTS + MAX_DNS_ADDRS
#: Most ``x_skipped`` endpoints kept (a longer list is cut, never refused).
MAX_SKIPPED: Final = MAX_REFUSED
#: ``http_request.body_length`` above this is not a helper's (its body cap is 1 MiB by default).
MAX_BODY_LENGTH: Final = 1 << 30
#: Longest failure string (OONI's failure vocabulary, or ``unknown_failure: <text>``).
MAX_FAILURE_CHARS: Final = 4096
#: Longest other string (issuer DN, final URL, digests).
MAX_STRING_CHARS: Final = 16384


def control_request(url: str, endpoints: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The JSON body of a control request: ``{"url": url, "endpoints": ["ip:port", ...]}``."""
    return {"url": url, "endpoints": [format_endpoint(ip, port) for ip, port in endpoints]}


def _opt_str(d: Mapping[str, Any], key: str, where: str, limit: int = MAX_STRING_CHARS) -> str | None:
    """A string or null, at most ``limit`` characters, without NUL (no field of a helper's reply
    holds one: titles have theirs replaced by U+FFFD, :func:`probe.measure.http.extract_title`)."""
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{where}.{key}: expected a string or null, got {type(v).__name__}")
    if v is not None and len(v) > limit:
        raise ValueError(f"{where}.{key}: {len(v)} characters, at most {limit}")
    if v is not None and "\x00" in v:
        raise ValueError(f"{where}.{key}: contains a NUL character")
    return v


def _obj(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(v).__name__}")  # noqa: TRY004
    return v


def _int_or_none(v: Any, where: str, lo: int, hi: int) -> int | None:
    """OONI's -1 (and null) → None; other integers within ``lo``..``hi`` as they are."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: expected an integer, got {type(v).__name__}")  # noqa: TRY004
    if v == -1:
        return None
    if not lo <= v <= hi:
        raise ValueError(f"{where}: {v} is out of range (-1 or {lo}..{hi})")
    return v


def _str_list(v: Any, where: str, limit: int | None) -> tuple[str, ...]:
    """A list of strings, at most ``limit`` of them (None: any number, the caller cuts it)."""
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}: expected a list of strings")
    if limit is not None and len(v) > limit:
        raise ValueError(f"{where}: {len(v)} entries, at most {limit}")
    return tuple(v)


def _endpoint_key(key: str, where: str) -> tuple[str, int]:
    """(ip as written in ``key``, port): the key's own spelling is kept, so that
    ``ControlResult.endpoint()`` lookups by the producer's address text still work."""
    try:
        _, port = parse_endpoint(key)
    except ValueError:
        raise ValueError(f"{where}: key {key!r} is not an endpoint ip:port") from None
    return key.rpartition(":")[0].strip("[]"), port


def _http_from_json(h: Mapping[str, Any]) -> ControlHTTP:

    where = "http_request"
    headers = _obj(h.get("headers") or {}, f"{where}.headers")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError(f"{where}.headers: expected string names and values")
    if len(headers) > MAX_STORED_HEADERS:
        raise ValueError(f"{where}.headers: {len(headers)} headers, at most {MAX_STORED_HEADERS}")
    longest = MAX_HEADER_CHARS + len(CUT_MARK)
    if any(len(k) > longest or len(v) > longest for k, v in headers.items()):
        raise ValueError(f"{where}.headers: a name or value longer than {longest} characters")
    truncated = h.get("x_body_truncated", False)
    if not isinstance(truncated, bool):
        raise ValueError(f"{where}.x_body_truncated: expected a boolean")  # noqa: TRY004
    return ControlHTTP(
        failure=_opt_str(h, "failure", where, MAX_FAILURE_CHARS),
        final_url=_opt_str(h, "x_final_url", where),
        # RFC 9110 §15: a status code is three digits (100..999); a site may send one outside 100..599
        # (LinkedIn answers 999 to clients it takes for bots), which the probe sees too
        status_code=_int_or_none(h.get("status_code"), f"{where}.status_code", 100, 999),
        headers=tuple(headers.items()),
        title=_opt_str(h, "title", where, MAX_TITLE_CHARS + len(CUT_MARK)) or None,
        body_length=_int_or_none(h.get("body_length"), f"{where}.body_length", 0, MAX_BODY_LENGTH),
        body_truncated=truncated,
        body_sha256=_opt_str(h, "x_body_sha256", where),
    )


def control_from_json(d: Mapping[str, Any], *, wanted: Sequence[str] = ()) -> ControlResult:
    """Rebuild a :class:`~probe.control.ControlResult` from :func:`~probe.control.control_to_json` output.

    The inverse of ``control_to_json`` for everything it carries:

    * ``x_source`` → ``source`` (must be "doh", "helper" or "local"); ``failure``;
      ``x_refused`` → ``refused``; ``dns.failure`` / ``dns.addrs`` → ``dns_failure`` /
      ``dns_addresses``.
    * ``tcp_connect`` (keyed "ip:port") → one :class:`ControlEndpoint` each with
      ``tcp_failure``; the ``tls_handshake`` entry of the same key, when present, sets
      ``tls_attempted=True`` and the TLS fields (``failure``, ``x_verification_failure``,
      ``x_issuer``, ``x_leaf_spki_sha256``). A TLS entry without a TCP entry gets
      ``tcp_failure=None`` (a handshake implies a connection).
    * ``x_skipped`` → ``skipped`` (the helper's endpoints left unmeasured for its bound), plus the
      endpoints beyond :data:`MAX_REPLY_ENDPOINTS` this function did not take (``wanted`` — the
      probe's own, as sent — are taken first); at most :data:`MAX_SKIPPED` named.
    * ``http_request`` → :class:`ControlHTTP`; OONI's placeholders are undone:
      ``status_code``/``body_length`` -1 → None, ``title`` "" → None. Absent → ``http=None``.

    Not carried, so defaults: ``dns_queries`` (empty); repeated response headers (the
    JSON object keeps one value per name, so ``headers`` has one pair per name, in
    order); an empty title becomes None.

    Args:
        d: the decoded JSON object (extra keys such as ``api_version`` are ignored).
        wanted: the probe's own endpoints as it sent them ("ip:port", :func:`probe.addresses.format_endpoint`
            spelling); when the reply holds more than :data:`MAX_REPLY_ENDPOINTS` endpoints these are taken
            first. Empty (the default): the reply's order.

    Returns:
        The :class:`~probe.control.ControlResult`.

    Raises:
        ValueError: ``d`` is not that shape (names the offending key): not an object,
            an unknown source, a non-endpoint key, a value of the wrong type, or a value out
            of range (docs/helper-api.md, "Limits of a reply": ``status_code`` -1 or 100..999,
            ``body_length`` -1 or 0..2^30, ``tcp_connect``/``tls_handshake`` keys that are
            endpoints (any count: :data:`MAX_REPLY_ENDPOINTS` taken), 128 ``dns.addrs`` that are
            IP addresses, 144 ``x_refused`` endpoints, 200 headers, a title of at most 1025
            characters, no NUL in any string). Wrong
            types are ValueError too, on purpose: one exception for the client to turn
            into an unusable control.
    """

    d = _obj(d, "control")
    source = d.get("x_source")
    if source not in _SOURCES:
        raise ValueError(f"control.x_source: expected one of {', '.join(_SOURCES)}, got {source!r}")
    dns = _obj(d.get("dns") or {}, "control.dns")
    tcp = _obj(d.get("tcp_connect") or {}, "control.tcp_connect")
    tls = _obj(d.get("tls_handshake") or {}, "control.tls_handshake")
    every = list(tcp) + [k for k in tls if k not in tcp]  # TLS entries without a TCP entry count too
    for key in every:
        _endpoint_key(key, "control.tcp_connect")
    first = set(wanted) & set(every)
    ordered = [k for k in every if k in first] + [k for k in every if k not in first]  # the probe's first
    keys, beyond = ordered[:MAX_REPLY_ENDPOINTS], ordered[MAX_REPLY_ENDPOINTS:]
    skipped = _str_list(d.get("x_skipped"), "control.x_skipped", None)[:MAX_SKIPPED]  # cut, not refused
    for key in skipped:
        _endpoint_key(key, "control.x_skipped")
    endpoints: dict[str, ControlEndpoint] = {}
    for key in keys:
        ip, port = _endpoint_key(key, "control.tcp_connect")
        where = f"control.tcp_connect[{key!r}]"
        tcp_failure = _opt_str(_obj(tcp[key], where), "failure", where, MAX_FAILURE_CHARS) if key in tcp else None
        t = tls.get(key)
        if t is None:
            ep = ControlEndpoint(ip=ip, port=port, tcp_failure=tcp_failure)
        else:
            where = f"control.tls_handshake[{key!r}]"
            t = _obj(t, where)
            ep = ControlEndpoint(ip=ip, port=port, tcp_failure=tcp_failure, tls_attempted=True,
                                 tls_failure=_opt_str(t, "failure", where, MAX_FAILURE_CHARS),
                                 tls_verification_failure=_opt_str(t, "x_verification_failure", where,
                                                                   MAX_FAILURE_CHARS),
                                 tls_issuer=_opt_str(t, "x_issuer", where),
                                 tls_leaf_spki_sha256=_opt_str(t, "x_leaf_spki_sha256", where))
        endpoints[key] = ep
    addrs = _str_list(dns.get("addrs"), "control.dns.addrs", MAX_DNS_ADDRS)
    for a in addrs:
        if parse_ip(a) is None:
            raise ValueError(f"control.dns.addrs: {a[:64]!r} is not an IP address")
    refused = _str_list(d.get("x_refused"), "control.x_refused", MAX_REFUSED)
    for r in refused:
        _endpoint_key(r, "control.x_refused")
    http_json = d.get("http_request")
    return ControlResult(
        source=source,
        failure=_opt_str(d, "failure", "control", MAX_FAILURE_CHARS),
        dns_failure=_opt_str(dns, "failure", "control.dns", MAX_FAILURE_CHARS),
        dns_addresses=addrs,
        endpoints=endpoints,
        http=_http_from_json(_obj(http_json, "control.http_request")) if http_json is not None else None,
        refused=refused,
        skipped=(skipped + tuple(beyond))[:MAX_SKIPPED],
    )


__all__ = ["API_VERSION", "CONTROL_PATH", "HEALTH_PATH", "MAX_CONTROL_ENDPOINTS", "MAX_REPLY_ENDPOINTS",
           "control_from_json", "control_request"]
