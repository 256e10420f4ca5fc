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

from probe.addresses import format_endpoint, parse_endpoint
from probe.control_result import ControlEndpoint, ControlHTTP, ControlResult

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


def control_request(url: str, endpoints: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The JSON body of a control request: ``{"url": url, "endpoints": ["ip:port", ...]}``."""
    return {"url": url, "endpoints": [format_endpoint(ip, port) for ip, port in endpoints]}


def _opt_str(d: Mapping[str, Any], key: str, where: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{where}.{key}: expected a string or null, got {type(v).__name__}")
    return v


def _obj(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(v).__name__}")  # noqa: TRY004
    return v


def _int_or_none(v: Any, where: str) -> int | None:
    """OONI's -1 (and null) → None; other integers as they are."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: expected an integer, got {type(v).__name__}")  # noqa: TRY004
    return None if v == -1 else v


def _str_list(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}: expected a list of strings")
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
    truncated = h.get("x_body_truncated", False)
    if not isinstance(truncated, bool):
        raise ValueError(f"{where}.x_body_truncated: expected a boolean")  # noqa: TRY004
    return ControlHTTP(
        failure=_opt_str(h, "failure", where),
        final_url=_opt_str(h, "x_final_url", where),
        status_code=_int_or_none(h.get("status_code"), f"{where}.status_code"),
        headers=tuple(headers.items()),
        title=_opt_str(h, "title", where) or None,
        body_length=_int_or_none(h.get("body_length"), f"{where}.body_length"),
        body_truncated=truncated,
        body_sha256=_opt_str(h, "x_body_sha256", where),
    )


def control_from_json(d: Mapping[str, Any]) -> ControlResult:
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
    * ``http_request`` → :class:`ControlHTTP`; OONI's placeholders are undone:
      ``status_code``/``body_length`` -1 → None, ``title`` "" → None. Absent → ``http=None``.

    Not carried, so defaults: ``dns_queries`` (empty); repeated response headers (the
    JSON object keeps one value per name, so ``headers`` has one pair per name, in
    order); an empty title becomes None.

    Args:
        d: the decoded JSON object (extra keys such as ``api_version`` are ignored).

    Returns:
        The :class:`~probe.control.ControlResult`.

    Raises:
        ValueError: ``d`` is not that shape (names the offending key): not an object,
            an unknown source, a non-endpoint key, a value of the wrong type. Wrong
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
    endpoints: dict[str, ControlEndpoint] = {}
    for key in list(tcp) + [k for k in tls if k not in tcp]:
        ip, port = _endpoint_key(key, "control.tcp_connect")
        where = f"control.tcp_connect[{key!r}]"
        tcp_failure = _opt_str(_obj(tcp[key], where), "failure", where) if key in tcp else None
        t = tls.get(key)
        if t is None:
            ep = ControlEndpoint(ip=ip, port=port, tcp_failure=tcp_failure)
        else:
            where = f"control.tls_handshake[{key!r}]"
            t = _obj(t, where)
            ep = ControlEndpoint(ip=ip, port=port, tcp_failure=tcp_failure, tls_attempted=True,
                                 tls_failure=_opt_str(t, "failure", where),
                                 tls_verification_failure=_opt_str(t, "x_verification_failure", where),
                                 tls_issuer=_opt_str(t, "x_issuer", where),
                                 tls_leaf_spki_sha256=_opt_str(t, "x_leaf_spki_sha256", where))
        endpoints[key] = ep
    http_json = d.get("http_request")
    return ControlResult(
        source=source,
        failure=_opt_str(d, "failure", "control"),
        dns_failure=_opt_str(dns, "failure", "control.dns"),
        dns_addresses=_str_list(dns.get("addrs"), "control.dns.addrs"),
        endpoints=endpoints,
        http=_http_from_json(_obj(http_json, "control.http_request")) if http_json is not None else None,
        refused=_str_list(d.get("x_refused"), "control.x_refused"),
    )


__all__ = ["API_VERSION", "CONTROL_PATH", "HEALTH_PATH", "control_from_json", "control_request"]
