"""HTTP(S) GET primitive on aiohttp, pinned to a measured endpoint.

CONTRACT (filled in by the TCP/TLS/HTTP work item).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from probe.addresses import ConnectTo
from probe.timing import Clock

DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class HTTPResponse:
    """A response (OONI df-001 ``response``).

    Attributes:
        status_code: int.
        headers: (name, value) pairs in received order (OONI ``headers_list``).
        body_length: bytes read (≤ cap).
        body_truncated: True when the body did not end within the cap (read cap+1).
        body_sha256: hex SHA-256 of the bytes read.
        body_b64: base64 of the first ``store_body_bytes`` read (evidence), may be "".
        title: the <title> text decoded by header charset, then <meta charset>, then
            UTF-8 with replacement; whitespace collapsed; None when absent.
    """

    status_code: int
    headers: tuple[tuple[str, str], ...]
    body_length: int
    body_truncated: bool
    body_sha256: str
    body_b64: str
    title: str | None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), None if absent."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


@dataclass(frozen=True, kw_only=True)
class HTTPRequest:
    """One request/response hop (OONI df-001 ``requests[]`` entry).

    Attributes:
        url: the URL requested (A-label host).
        ip, port: logical endpoint used; None if the hop failed before connecting.
        method: "GET".
        request_headers: (name, value) pairs sent.
        t0, t: seconds since measurement start.
        failure: OONI failure string (connection_reset, generic_timeout_error,
            eof_error, ssl_*...), None when a response was received.
        response: None when failure is set.
    """

    url: str
    ip: str | None
    port: int | None
    method: str
    request_headers: tuple[tuple[str, str], ...]
    t0: float
    t: float
    failure: str | None
    response: HTTPResponse | None = None


@dataclass(frozen=True, kw_only=True)
class HTTPFetch:
    """A GET with its redirect chain.

    Attributes:
        requests: hops in chronological order (first request first).
        failure: the last hop's failure, or http_too_many_redirects /
            http_invalid_redirect_location_host; None = final response received.
    """

    requests: tuple[HTTPRequest, ...]
    failure: str | None

    @property
    def final(self) -> HTTPRequest | None:
        return self.requests[-1] if self.requests else None


Resolve = Callable[[str], Awaitable[list[str]]]


async def http_get(
    url: str,
    *,
    ip: str | None,
    clock: Clock,
    timeout_s: float,
    trust: "object",
    resolve: Resolve,
    connect_to: ConnectTo | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    store_body_bytes: int = 65536,
    max_redirects: int = 10,
    verify_tls: bool = True,
) -> HTTPFetch:
    raise NotImplementedError
