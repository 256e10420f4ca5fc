"""HTTP(S) GET primitive on aiohttp, pinned to a measured endpoint (OONI df-001).

:func:`http_get` fetches one URL the way a browser would (browser-like request
headers, redirects followed, gzip/deflate decoded) but as a measurement:

* **Pinned.** The first request goes to the address the caller measured (``ip``), not
  to whatever the system resolver says: a custom :class:`aiohttp.abc.AbstractResolver`
  returns the pin for the URL's host. Redirect targets on other hosts are resolved
  with the caller's ``resolve`` (e.g. DoH for the control) and pinned too. The socket
  dials ``connect_to.resolve(ip, port)`` (tests, lab), the records keep the logical
  ``ip``/``port``.
* **Hop by hop.** Redirects (301, 302, 303, 307, 308 with a Location) are followed
  manually, at most ``max_redirects`` of them; every request is one
  :class:`HTTPRequest` in :attr:`HTTPFetch.requests` (OONI df-001 ``requests[]``, in
  chronological order here). A Location that is not http(s), or whose host is not a
  valid host (see below), or whose port is not 1..65535, ends the fetch with
  ``http_invalid_redirect_location_host`` without any DNS lookup; one redirect more
  than allowed with ``http_too_many_redirects``. The redirect is taken from the
  complete Location header as received, never from the capped copy in the record.
* **Valid redirect hosts only.** A Location host must be an IP literal (IPv4
  dotted quad, or a bracketed IPv6 address, zone id allowed) or a DNS name as
  :func:`probe.names.valid_host` says: labels of 1..63 characters of letters, digits,
  ``-`` and ``_`` (RFC 1035 §2.3.1 LDH, plus the underscore real names use; no leading
  or trailing ``-``; ``xn--`` labels valid IDNA 2008), at most 253 characters without
  the trailing dot, and a last label that is not a number (RFC 3696 §2: no all-numeric TLD; WHATWG URL treats
  ``127.1``, ``0x7f000001`` and ``2130706433`` as IPv4, so they are refused here
  rather than guessed). Anything else (``1.2.3.4.5``, ``a..b``, ``%zz``, a 64+ octet
  label) is ``http_invalid_redirect_location_host``.
* **No redirects into the probe's own machine or network.** With ``allow_address``
  (the helper's SSRF policy; :func:`probe.addresses.not_local_address` refuses loopback,
  unspecified, link-local, multicast and broadcast) or ``policy`` (the web test's
  :class:`probe.localnet.AddressPolicy`: also the vantage's own subnets and gateways,
  private RFC 1918/ULA space from a public or verified-HTTPS hop, and ports other than
  the input's, 80 and 443), every address a hop would use, an IP-literal host of a
  Location or each address ``resolve`` returns, must pass; refused addresses are
  skipped, and a hop left with none ends the fetch with
  ``http_invalid_redirect_location_host`` (machine-local addresses) or
  ``local_network_refused`` (a failed hop, ``ip`` None, ``refused`` naming the
  addresses and rules, no connection attempted). IP literals never reach ``resolve``,
  so without this check ``Location: http://127.0.0.1:22/`` would be fetched.
* **Bounded.** The body is read up to ``max_body_bytes`` *after* content decoding,
  reading one byte more to tell a body of exactly the cap (complete) from a longer one
  (truncated, FIELD-CASES FC-15). gzip/deflate are decoded here with bounded ``zlib``
  decompressors, one per layer of a stacked coding (``Content-Encoding: gzip, gzip``
  is undone last coding first, RFC 9110 §8.4), so a decompression bomb costs at most
  the caps; the raw (encoded) bytes read, and each intermediate layer's output, are
  capped too. A coding we cannot decode (br, zstd, compress, unknown) anywhere in the
  list leaves the body as received. Header sizes are bounded by aiohttp's parser; the
  record keeps at most :data:`MAX_STORED_HEADERS` headers, each name and value cut to
  :data:`MAX_HEADER_CHARS` characters, and a title cut to :data:`MAX_TITLE_CHARS`
  (a cut value ends with :data:`CUT_MARK`).
* **Timed transfers.** Each hop records the body bytes that arrived and the seconds
  from the response head to the end of the body read (``body_bytes_received``,
  ``body_duration_s``), also when the read failed or the hop's deadline cut it
  mid-body, so throttling can be measured (FIELD-CASES FC-19;
  :mod:`probe.measure.throughput`). ``server_name`` sends another SNI than the host
  (the benign-SNI baseline).
* **Titles compared fairly.** The ``<title>`` is decoded with the charset of the
  Content-Type header, else the ``<meta charset>`` / ``<meta http-equiv>`` of the
  page, else UTF-8 with replacement; entities unescaped, whitespace collapsed
  (FIELD-CASES FC-16).
* **Failures are data.** Network and protocol errors become OONI failure strings
  (:mod:`probe.failures`): connection_refused, connection_reset, generic_timeout_error,
  eof_error (the server closed without a response), ssl_* (certificate verification
  with ``trust.ssl_context()``; the TLS record itself comes from
  :mod:`probe.measure.tls`), http_protocol_error (unparseable status line or headers,
  giant headers), else ``"unknown_failure: ..."``.

HTTP semantics: RFC 9110 (redirects, section 15.4; Location, section 10.2.2; content
codings, section 8.4). Host names: RFC 1035 §2.3.1/§2.3.4, RFC 3696 §2. IP literals in
URLs: RFC 3986 §3.2.2, zone ids RFC 6874.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import collections
import dataclasses
import functools
import hashlib
import html
import re
import ssl
import zlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.client_exceptions import cert_errors, ssl_errors
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from probe.addresses import ConnectTo, format_endpoint, not_local_address, parse_ip
from probe.bounded import ACCEPT_ENCODING, content_codings, read_body
from probe.failures import (
    DNS_NO_ANSWER,
    HTTP_INVALID_REDIRECT,
    HTTP_TOO_MANY_REDIRECTS,
    LOCAL_NETWORK_REFUSED,
    classify,
    classify_aiohttp,
    unknown,
)
from probe.localnet import R_MACHINE, R_PORT, AddressPolicy, is_private
from probe.measure.tls import OpenTLS, TrustStore
from probe.names import valid_host
from probe.timing import Clock

DEFAULT_MAX_BODY_BYTES = 1 << 20

#: Chrome's reduced User-Agent (Windows, stable channel). Only the major version varies
#: between releases; keep it near the current stable so sites serve their normal page.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/136.0.0.0 Safari/537.36"
)
#: Request headers of every hop (Host is added per hop, first).
BROWSER_HEADERS: tuple[tuple[str, str], ...] = (
    ("User-Agent", USER_AGENT),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", ACCEPT_ENCODING),
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: aiohttp parser limits for the response status line / one header field (bytes) and
#: header count. Larger than aiohttp's defaults (8190): real sites send long cookies.
MAX_LINE_BYTES = 65536
MAX_HEADERS = 256

#: Response headers kept in a record (the first ones received); the parser accepts
#: up to :data:`MAX_HEADERS`.
MAX_STORED_HEADERS = 200
#: Longest header name / value kept in a record (characters, before :data:`CUT_MARK`).
MAX_HEADER_CHARS = 8192
#: Longest title kept in a record (characters, before :data:`CUT_MARK`).
MAX_TITLE_CHARS = 1024
#: Appended to a stored value that was cut (the original length is not kept).
CUT_MARK = "\u2026"

@dataclass(frozen=True, kw_only=True)
class HTTPResponse:
    """A response (OONI df-001 ``response``).

    Attributes:
        status_code: int.
        headers: (name, value) pairs in received order (OONI ``headers_list``); bytes
            decoded as UTF-8 with replacement. At most :data:`MAX_STORED_HEADERS`
            (200, the first received); a name or value longer than
            :data:`MAX_HEADER_CHARS` (8192 characters) is cut there and ends with
            :data:`CUT_MARK` ("…").
        body_length: bytes kept (≤ the cap), after content decoding (gzip/deflate,
            stacked layers included); the raw bytes when a coding is not supported.
        body_truncated: True when the body did not end within the cap (cap+1 bytes
            could be read). A body of exactly the cap is complete (FC-15).
        body_sha256: hex SHA-256 of the bytes kept.
        body_b64: base64 of the first ``store_body_bytes`` kept (evidence), may be "".
        title: the <title> text decoded by header charset, then <meta charset>, then
            UTF-8 with replacement; entities unescaped, whitespace collapsed; None when
            the page has no (complete) title element (FC-16). Longer than
            :data:`MAX_TITLE_CHARS` (1024 characters): cut there, "…" appended.
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

    def body_bytes(self) -> bytes:
        """The body's bytes kept (``body_b64`` decoded, b"" when none; memoised for the last few bodies
        by :func:`b64_bytes`). Raises binascii.Error (a ValueError) when ``body_b64`` is not base64."""
        return b64_bytes(self.body_b64) if self.body_b64 else b""


@dataclass(frozen=True, kw_only=True)
class HTTPRequest:
    """One request/response hop (OONI df-001 ``requests[]`` entry).

    Attributes:
        url: the URL requested (A-label host, percent-encoded, no fragment).
        ip, port: logical endpoint used; None if the hop failed before connecting
            (the redirect target did not resolve, or ``allow_address`` refused all
            its addresses).
        method: "GET".
        request_headers: (name, value) pairs sent, Host first.
        t0, t: seconds since measurement start (resolution of a redirect target,
            connect, TLS, request and body read included).
        failure: OONI failure string (connection_reset, generic_timeout_error,
            eof_error, ssl_*, dns_* for a target that did not resolve,
            http_invalid_redirect_location_host for a target whose addresses
            ``allow_address`` refused...), None when a response was received.
        response: None when failure is set.
        body_bytes_received: body bytes that arrived (after transfer decoding, before
            content decoding: what crossed the wire, up to the cap's read limit), counted
            also when the body read then failed (a timeout mid-body, FC-19); None when no
            response head arrived.
        body_duration_s: seconds (monotonic) from the response head's arrival to the end
            of the body read (its last byte, the cap, or the failure); None when no
            response head arrived. With ``body_bytes_received`` it gives the transfer's
            throughput (:mod:`probe.measure.throughput`).
        body_stall_s: when the body read failed after the head: seconds from the last body byte
            (or the head, before any) to the failure. Near 0: the body was still flowing when
            the deadline cut it (a slow, steady transfer); long: it had stopped (a freeze,
            net4people/bbs#490). None otherwise.
        refused: ``(address, rule)`` pairs the address policy refused for this hop
            (:mod:`probe.localnet`: ``"192.168.1.1:80"``, ``"vantage_lan"``): the
            evidence that a redirect or an answer pointed into the local network;
            nothing was connected to them.
        reused_tls_handshake: the request went over the connection of the caller's recorded
            TLS handshake (``http_get(handoff=...)``): ``t0``..``t`` then holds no connect and no
            handshake. False: a connection of its own.
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
    body_bytes_received: int | None = None
    body_duration_s: float | None = None
    body_stall_s: float | None = None
    refused: tuple[tuple[str, str], ...] = ()
    reused_tls_handshake: bool = False


@dataclass(frozen=True, kw_only=True)
class HTTPFetch:
    """A GET with its redirect chain.

    Attributes:
        requests: hops in chronological order (first request first).
        failure: the last hop's failure, or http_too_many_redirects /
            http_invalid_redirect_location_host (then the last hop is the redirect
            response that was not followed, or, when ``allow_address`` refused the
            target's addresses, a failed hop for the target with ``ip`` None);
            None = final response received.
    """

    requests: tuple[HTTPRequest, ...]
    failure: str | None

    @property
    def final(self) -> HTTPRequest | None:
        """The last hop (the final response when ``failure`` is None)."""
        return self.requests[-1] if self.requests else None


Resolve = Callable[[str], Awaitable[list[str]]]
#: ``(ip) -> bool``: may a hop connect to this address? (See :func:`probe.addresses.not_local_address`.)
AllowAddress = Callable[[str], bool]


# -------------------------------------------------------------------------- connector


@dataclass(frozen=True, slots=True)
class _Dial:
    """How the connector reaches one hop: the logical endpoint, its dial remap, TLS, and an
    open connection to hand over (set per hop in :data:`_DIAL`, read by :class:`_Connector`)."""

    ip: str
    port: int
    connect_to: ConnectTo
    ssl_context: ssl.SSLContext | None  # None = plain HTTP
    server_hostname: str | None  # SNI and the name verified; an IP literal sends none
    handoff: OpenTLS | None = None


#: The dial of the hop in progress in this task: aiohttp calls the connector in the task that
#: sent the request, so concurrent measurements sharing one session each see their own.
_DIAL: ContextVar[_Dial | None] = ContextVar("kzprobe_http_dial", default=None)


class _Connector(aiohttp.BaseConnector):
    """aiohttp connector that dials exactly the hop's measured endpoint (:class:`_Dial`), or
    takes over the connection whose TLS handshake the web test recorded (issue 13: one TLS
    connection per endpoint, as OONI v0.5's single-use TLS dialer).

    No DNS ever happens here: every hop is pinned by :func:`http_get`. No connection is
    reused (``force_close``): a connection belongs to one hop of one measurement, so nothing
    of one input (a keep-alive connection, a censor's view of it) carries into another.
    """

    def __init__(self) -> None:
        super().__init__(force_close=True, limit=0)

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        dial = _DIAL.get()
        if dial is None:
            raise aiohttp.ClientConnectionError("kzprobe connector: no pinned endpoint for this request")
        handoff = dial.handoff
        if handoff is not None and handoff.usable():
            proto = self._factory()
            transport = handoff.take()
            transport.set_protocol(proto)
            proto.connection_made(transport)
            return proto
        dial_ip, dial_port = dial.connect_to.resolve(dial.ip, dial.port)
        kwargs: dict[str, Any] = {}
        if dial.ssl_context is not None:
            kwargs = {"ssl": dial.ssl_context, "server_hostname": dial.server_hostname or ""}
        try:
            _, proto = await self._loop.create_connection(self._factory, dial_ip, dial_port, **kwargs)
        except cert_errors as exc:  # the same wrapping as aiohttp's TCPConnector
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl_errors as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
        return proto


def new_session() -> aiohttp.ClientSession:
    """The aiohttp session of :func:`http_get` (call inside a loop; close it when done).

    One per run is enough (:class:`probe.context.MeasureContext` ``http_session``): it keeps
    no connection and no cookie between fetches (cookies live in each fetch, for its
    redirects); it never decompresses (:func:`probe.bounded.read_body` does, within caps).
    """
    session = aiohttp.ClientSession(
        connector=_Connector(), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None), max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES, max_headers=MAX_HEADERS,
    )
    # aiohttp sends a GET once more, on a new connection, after a reset or a close before the
    # response: the record would show the second attempt's outcome (and the first one's
    # connection) while the censor saw two requests. A measurement makes one attempt, as OONI's
    # single-use TLS dialer does (no option for it: the attribute is aiohttp's own).
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


#: Client context for hops that do not verify (the benign-SNI baseline): what aiohttp's
#: ``ssl=False`` gave (no verification, ALPN http/1.1 only).
@functools.lru_cache(maxsize=1)
def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _host_key(host: str) -> str:
    return host.rstrip(".").lower()


# ----------------------------------------------------------------------------- bodies


class _BodyProgress:
    """How far one hop's body read got: kept outside the read so a hop cut by its
    deadline (``asyncio.timeout`` in :func:`http_get`) still reports the bytes that
    arrived and when (the throttled signature of FC-19: a timeout during data transfer).

    Attributes:
        t_head: clock time the response head arrived; None = no response yet.
        t_end: clock time the body read ended (or stopped); None = still reading.
        t_last: clock time the last body byte arrived; None = none yet.
        raw_bytes: body bytes received so far (transfer-decoded, not content-decoded).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.t_head: float | None = None
        self.t_end: float | None = None
        self.t_last: float | None = None
        self.raw_bytes = 0

    def received(self, n: int) -> None:
        if n > self.raw_bytes:
            self.t_last = self.clock.now()
        self.raw_bytes = n

    def head(self) -> None:
        self.t_head = self.clock.now()

    def end(self) -> None:
        if self.t_head is not None and self.t_end is None:
            self.t_end = self.clock.now()

    def fields(self, *, failed: bool = False) -> dict[str, Any]:
        """``body_bytes_received`` / ``body_duration_s`` for an :class:`HTTPRequest` (ends the read),
        and ``body_stall_s`` when the read ``failed``."""
        if self.t_head is None:
            return {}
        self.end()
        assert self.t_end is not None
        out: dict[str, Any] = {"body_bytes_received": self.raw_bytes,
                               "body_duration_s": round(max(0.0, self.t_end - self.t_head), 6)}
        if failed:
            out["body_stall_s"] = round(max(0.0, self.t_end - (self.t_last if self.t_last is not None
                                                               else self.t_head)), 6)
        return out


async def _read_body(resp: aiohttp.ClientResponse, cap: int,
                     progress: _BodyProgress | None = None) -> tuple[bytes, bool]:
    """Read and decode the body up to ``cap`` bytes: (bytes kept, truncated).

    :func:`probe.bounded.read_body` (the one bounded reader): up to ``cap + 1`` decoded
    bytes are produced, one more than the cap meaning the body did not end within it
    (FC-15); encoded input and each intermediate layer are capped at ``2 * cap + 64
    KiB``. ``progress`` counts the encoded bytes as they arrive.
    """
    def on_raw(n: int) -> None:
        if progress is not None:
            progress.received(n)

    return await read_body(resp, cap, on_raw=on_raw)


# ----------------------------------------------------------------------------- titles

_TITLE_OPEN = re.compile(r"<title\b", re.IGNORECASE)
_TITLE_CLOSE = re.compile(r"</title\s*>", re.IGNORECASE)
#: ``<meta charset=x>`` and ``<meta http-equiv=Content-Type content="...; charset=x">``;
#: the bounded gap keeps hostile pages (many unterminated tags) linear.
_META_CHARSET = re.compile(
    rb"""<meta\b[^>]{0,1024}?\bcharset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
#: WHATWG Encoding: these labels mean windows-1252 in HTML.
_WHATWG_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252",
                   "latin-1": "cp1252", "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252"}
_META_SCAN_BYTES = 16384


def _codec(label: str | None) -> str | None:
    """A Python codec name for a charset label, None when unknown."""
    if not label:
        return None
    label = label.strip().lower()
    label = _WHATWG_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def body_encoding(body: bytes, content_type: str | None) -> str:
    """The encoding to decode an HTML body with: BOM, header charset, meta, else UTF-8."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                      (codecs.BOM_UTF16_BE, "utf-16-be")):
        if body.startswith(bom):
            return name
    m = _HEADER_CHARSET.search(content_type or "")
    codec = _codec(m.group(1)) if m else None
    if codec is None:
        m2 = _META_CHARSET.search(body[:_META_SCAN_BYTES])
        codec = _codec(m2.group(1).decode("ascii")) if m2 else None
        if codec is not None and codec.startswith("utf-16"):
            codec = "utf-8"  # a meta tag readable as ASCII cannot be UTF-16 (WHATWG)
    return codec or "utf-8"


@functools.lru_cache(maxsize=4)
def _b64(data: str) -> tuple[bytes | None, bool]:
    """(the decoded bytes or None when even a lenient decode fails, whether ``data`` is strict base64).
    A strict decode gives the same bytes as the lenient one when it succeeds, so one pass serves both."""
    try:
        return base64.b64decode(data, validate=True), True
    except ValueError:  # binascii.Error is a ValueError
        pass
    try:
        return base64.b64decode(data), False
    except ValueError:
        return None, False


#: Bodies just base64-encoded by :func:`b64_encode_body` → their bytes (the last 4): decoding them
#: again would give the same bytes.
_ENCODED: collections.OrderedDict[str, bytes] = collections.OrderedDict()


def b64_encode_body(raw: bytes) -> str:
    """``base64.b64encode(raw)`` as text, remembered so that :func:`b64_bytes` and
    :func:`b64_is_strict` of it decode nothing (re-judging OONI's bodies stored as text: the body
    went text → UTF-8 → base64 → decoded again; ~10 % of a re-judged row on the real-size mix)."""
    text = base64.b64encode(raw).decode("ascii")
    _ENCODED[text] = raw
    while len(_ENCODED) > 4:
        try:
            _ENCODED.popitem(last=False)
        except KeyError:  # emptied by another thread meanwhile
            break
    return text


def _decoded(data: str) -> tuple[bytes | None, bool]:
    raw = _ENCODED.get(data)
    return (raw, True) if raw is not None else _b64(data)


def b64_bytes(data: str) -> bytes:
    """``base64.b64decode(data)``, memoised for the last few bodies: one body is decoded by the
    parser, the fingerprint matcher and the verdict's rules (re-judging OONI's, issue 14); a small
    cache, for the bodies of the measurement being judged, not across measurements.
    Raises binascii.Error (a ValueError) as b64decode does; the bytes are immutable."""
    out = _decoded(data)[0]
    return base64.b64decode(data) if out is None else out  # None: b64decode raises its own error


def b64_is_strict(data: str) -> bool:
    """``data`` decodes as strict base64 (``validate=True``); shares :func:`b64_bytes`' one decode."""
    return _decoded(data)[1]


class LazyResponse(HTTPResponse):
    """An :class:`HTTPResponse` read from a record (:func:`probe.records.parse_request`) that keeps its
    body's bytes and works out ``body_b64`` (a body stored as text) and ``title`` (a record without
    ``x_title``) only when first read (issue 14 part 7): re-judging reads the bytes (:meth:`body_bytes`),
    seldom the base64 (~4 % of a re-judged row was encoding it) and the title only when pages are
    compared. Equal to (and hashed as) the :class:`HTTPResponse` of the same fields; built by
    :func:`lazy_response`; a copy made by ``dataclasses.replace`` has every field set."""

    @functools.cached_property
    def body_b64(self) -> str:
        return b64_encode_body(self.__dict__["_body"])

    @functools.cached_property
    def title(self) -> str | None:
        return extract_title(self.__dict__["_body"], next((v for k, v in reversed(self.headers)
                                                           if k == "Content-Type"), None))

    def body_bytes(self) -> bytes:
        d = self.__dict__
        return d["_body"] if "_body" in d else super().body_bytes()

    def __eq__(self, other: object) -> bool:
        """Equal to an :class:`HTTPResponse` (either class) with the same fields, as the records it stands for."""
        if not isinstance(other, HTTPResponse):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _RESPONSE_FIELDS)

    __hash__ = HTTPResponse.__hash__


_RESPONSE_FIELDS = tuple(f.name for f in dataclasses.fields(HTTPResponse))


def lazy_response(*, body: bytes, **fields: Any) -> LazyResponse:
    """A :class:`LazyResponse` of ``body`` (the bytes kept) and the fields of :class:`HTTPResponse`;
    ``body_b64`` and ``title`` when not given are made from ``body`` on first read."""
    return lazy_response_of(fields, body)


def lazy_response_of(fields: dict[str, Any], body: bytes) -> LazyResponse:
    """:func:`lazy_response` of a dict of the fields, which becomes the record's ``__dict__`` (the caller
    gives it up). Built without the frozen ``__init__`` (:mod:`probe.fastrec`'s way: one dict, whose
    attributes read as fast as the class's own records')."""
    o = object.__new__(LazyResponse)
    fields["_body"] = body
    object.__setattr__(o, "__dict__", fields)
    return o


def extract_title(body: bytes, content_type: str | None) -> str | None:
    """The normalised ``<title>`` of an HTML body, or None when there is none (FC-16).

    A title longer than :data:`MAX_TITLE_CHARS` (1024 characters, after entity
    unescaping and whitespace collapsing) is cut there and ends with :data:`CUT_MARK`.
    """
    encoding = body_encoding(body, content_type)
    text = body.decode(encoding, errors="replace")
    if encoding.startswith("utf-8") and text.startswith("\ufeff"):
        text = text[1:]
    # the first <title ...> up to the next </title>: a scan, not a backtracking regex
    opening = _TITLE_OPEN.search(text)
    if opening is None:
        return None
    start = text.find(">", opening.end())
    closing = _TITLE_CLOSE.search(text, start + 1) if start >= 0 else None
    if closing is None:
        return None
    # NUL → U+FFFD as an HTML parser does (WHATWG HTML §13.2.5.2, RCDATA state): no title holds
    # a NUL, so a helper's reply with one is not a helper's (probe.helper.api)
    raw = text[start + 1:closing.start()].replace("\x00", "\ufffd")
    return _cut(" ".join(html.unescape(raw).split()), MAX_TITLE_CHARS)


def _cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters followed by :data:`CUT_MARK`."""
    return text if len(text) <= limit else text[:limit] + CUT_MARK


# --------------------------------------------------------------------------- failures


def _http_failure(exc: BaseException, *, tls: bool) -> str:
    """OONI failure string for an exception of one hop: :func:`probe.failures.classify_aiohttp`."""
    return classify_aiohttp(exc, tls=tls)


# -------------------------------------------------------------------------- redirects


def _redirect_target(base: URL, location: str) -> URL | None:
    """The absolute URL a Location points to, or None when it is not a usable http(s) URL.

    Unusable: another scheme, no host, a host :func:`valid_host` rejects, a port
    outside 1..65535, or anything the URL parsers refuse.
    """
    loc = location.strip()
    if not loc:
        return None
    try:
        parts = urlsplit(loc)
        if parts.scheme:
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                return None
            target = loc
        else:
            if loc.startswith("//") and not urlsplit("http:" + loc).hostname:
                return None
            target = urljoin(str(base), loc)
        url = URL(target)
        if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
            return None
        if not 0 < url.port < 65536 or not valid_host(url.raw_host):
            return None
    except ValueError:
        return None
    return url.with_fragment(None)


# ------------------------------------------------------------------------------ fetch


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.is_default_port() else f"{host}:{url.port}"


def _allowed(address: str, allow_address: AllowAddress | None) -> bool:
    """Whether a hop may use ``address``: always without a predicate; else an IP the
    predicate accepts (called with the normalised address, IPv6 zone id dropped)."""
    if allow_address is None:
        return True
    addr = parse_ip(address)
    return addr is not None and bool(allow_address(str(addr)))


#: ``(ip) -> rule id or None``: why a hop may not connect to ``ip`` (:mod:`probe.localnet`).
_Vet = Callable[[str], "str | None"]


async def _pin(host: str, resolve: Resolve, vet: _Vet
               ) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    """(logical ip, failure, refused) for a hop's host: the literal, else the first address
    ``resolve`` gives that ``vet`` accepts. When every address is refused the failure is
    http_invalid_redirect_location_host (machine-local addresses only) or
    local_network_refused; ``refused`` lists (address, rule) for the record."""
    literal = parse_ip(host)
    if literal is not None:
        rule = vet(str(literal))
        if rule is not None:
            return None, _refusal_failure([rule]), ((str(literal), rule),)
        return str(literal), None, ()
    try:
        addrs = await resolve(host)
    except Exception as exc:  # the caller's resolver: any failure is a measurement result
        return None, classify(exc, "resolve"), ()
    if not addrs:
        return None, DNS_NO_ANSWER, ()
    refused: list[tuple[str, str]] = []
    for a in addrs:
        addr = parse_ip(a)
        rule = vet(str(addr)) if addr is not None else R_MACHINE
        if rule is None:
            return str(addr), None, tuple(refused)
        refused.append((str(addr) if addr is not None else a, rule))
    return None, _refusal_failure([r for _, r in refused]), tuple(refused)


def _refusal_failure(rules: list[str]) -> str:
    """machine-local only: OONI's http_invalid_redirect_location_host; else ours."""
    return HTTP_INVALID_REDIRECT if all(r == R_MACHINE for r in rules) else LOCAL_NETWORK_REFUSED


def _stored_headers(raw: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, str], ...]:
    """The headers a record keeps: the first :data:`MAX_STORED_HEADERS`, each name and
    value decoded (UTF-8, replacement) and cut to :data:`MAX_HEADER_CHARS`."""
    return tuple((_cut(k.decode("utf-8", "replace"), MAX_HEADER_CHARS),
                  _cut(v.decode("utf-8", "replace"), MAX_HEADER_CHARS))
                 for k, v in raw[:MAX_STORED_HEADERS])


def _location(raw: tuple[tuple[bytes, bytes], ...]) -> str | None:
    """The first Location header as received (not cut), UTF-8 with replacement."""
    return next((v.decode("utf-8", "replace") for k, v in raw if k.lower() == b"location"), None)


async def _hop(session: aiohttp.ClientSession, url: URL, *, clock: Clock, t0: float, ip: str,
               connect_to: ConnectTo, ssl_context: ssl.SSLContext, max_body_bytes: int, store_body_bytes: int,
               progress: _BodyProgress, server_name: str | None = None, handoff: OpenTLS | None = None,
               jar: list[aiohttp.CookieJar]) -> tuple[HTTPRequest, str | None]:
    """One GET (no redirect following) to ``url`` at logical ``ip``; never raises for I/O.

    ``server_name`` overrides the TLS SNI (None = the URL's host). ``handoff``: an open TLS
    connection to this very endpoint and SNI to send the request over (else a fresh one is
    dialled). ``jar``: the fetch's cookies (empty, or one jar made at the first Set-Cookie).
    Returns the hop and the response's complete Location header (None: no response or no
    Location).
    """
    assert url.raw_host is not None and url.port is not None
    port = url.port
    headers = (("Host", _host_header(url)), *BROWSER_HEADERS)
    https = url.scheme == "https"
    sni = (server_name or url.raw_host.rstrip(".")) if https else None
    token = _DIAL.set(_Dial(ip=ip, port=port, connect_to=connect_to, ssl_context=ssl_context if https else None,
                            server_hostname=sni, handoff=handoff))
    base: dict[str, Any] = dict(url=str(url), ip=ip, port=port, method="GET",
                                request_headers=headers, t0=t0)
    cookies = jar[0].filter_cookies(url) if jar else None
    try:
        async with session.get(url, headers=list(headers), allow_redirects=False,
                               cookies=cookies or None) as resp:
            progress.head()
            body, truncated = await _read_body(resp, max_body_bytes, progress)
            progress.end()
            location = _location(resp.raw_headers)
            response = HTTPResponse(
                status_code=resp.status,
                headers=_stored_headers(resp.raw_headers),
                body_length=len(body),
                body_truncated=truncated,
                body_sha256=hashlib.sha256(body).hexdigest(),
                body_b64=base64.b64encode(body[:store_body_bytes]).decode("ascii"),
                title=extract_title(body, resp.headers.get("Content-Type")),
            )
            if "Set-Cookie" in resp.headers:  # kept for this fetch's redirects only
                if not jar:
                    jar.append(aiohttp.CookieJar(unsafe=True))
                jar[0].update_cookies(resp.cookies, url)
            if truncated:
                resp.close()  # do not drain an endless body
    except zlib.error as exc:
        return HTTPRequest(**base, t=clock.now(), failure=unknown(exc), **progress.fields(failed=True),
                           reused_tls_handshake=handoff is not None and handoff.taken), None
    except (aiohttp.ClientError, OSError, TimeoutError, EOFError, HttpProcessingError) as exc:
        return HTTPRequest(**base, t=clock.now(), failure=_http_failure(exc, tls=https),
                           **progress.fields(failed=True),
                           reused_tls_handshake=handoff is not None and handoff.taken), None
    finally:
        _DIAL.reset(token)
    return HTTPRequest(**base, t=clock.now(), failure=None, response=response, **progress.fields(),
                       reused_tls_handshake=handoff is not None and handoff.taken), location


async def http_get(
    url: str,
    *,
    ip: str | None,
    clock: Clock,
    timeout_s: float,
    trust: TrustStore,
    resolve: Resolve,
    connect_to: ConnectTo | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    store_body_bytes: int = 65536,
    max_redirects: int = 10,
    verify_tls: bool = True,
    allow_address: AllowAddress | None = None,
    server_name: str | None = None,
    policy: AddressPolicy | None = None,
    session: aiohttp.ClientSession | None = None,
    handoff: OpenTLS | None = None,
) -> HTTPFetch:
    """GET ``url`` pinned to ``ip``, following redirects hop by hop.

    Args:
        url: an absolute http(s) URL (Unicode hosts are converted to A-labels).
        ip: the logical address to use for the URL's host (the endpoint the caller
            measured); None = ask ``resolve``. An IP-literal host is its own address.
        clock: measurement time base.
        timeout_s: deadline of each hop in seconds (resolution of a redirect target,
            connect, TLS, request, response head and body).
        trust: anchors for TLS verification (``trust.ssl_context()``).
        resolve: ``async (host) -> [ip, ...]`` for redirect targets on other hosts; the
            first address (that ``allow_address`` accepts) is used. Its exceptions are
            mapped (dns_* strings); an empty list is dns_no_answer. It is never asked
            about an IP literal, nor about a Location host that is not valid.
        connect_to: dial elsewhere (tests, lab); records keep the logical endpoint.
        max_body_bytes: cap on the decoded body kept per hop (bytes).
        store_body_bytes: how much of the kept body goes to ``body_b64`` (bytes).
        max_redirects: redirects followed at most; one more is http_too_many_redirects.
        verify_tls: verify certificates for https (else accept any certificate).
        allow_address: ``(ip) -> bool`` vetting every address a hop would connect to
            that the caller did not choose: an IP-literal Location host, and each
            address ``resolve`` returns (including for the first URL when ``ip`` is
            None). Refused addresses are skipped; a hop with none left is recorded as
            a failed hop (``url`` set, ``ip``/``port`` None, nothing dialled) and ends
            the fetch with http_invalid_redirect_location_host. Not checked: ``ip``
            and an IP-literal host of ``url`` (the caller's own choices). None = no
            check. For the web test the predicate is :func:`probe.addresses.not_local_address` (loopback,
            unspecified, link-local, multicast refused; RFC 1918 allowed, since ISP
            blockpages live there), so a listed site or a blockpage cannot make the
            probe GET services on its own machine or link (RFC 9110 §15.4 lets a
            Location point anywhere).
        policy: the vantage's address policy (:class:`probe.localnet.AddressPolicy`),
            applied like ``allow_address`` but knowing the origin: never the vantage's
            own network; private space (RFC 1918/ULA) only from a hop already there and
            never from a verified-HTTPS hop; a redirect only to the input's port, 80,
            443 or the policy's extra ports. A hop it refuses is recorded with
            ``refused`` (address, rule) and ends the fetch with local_network_refused
            (http_invalid_redirect_location_host when only machine-local addresses were
            refused); nothing is dialled. None = no such check.
        server_name: the TLS SNI of every https hop instead of its host (the
            benign-SNI throughput baseline of :mod:`probe.measure.throughput`; use with
            ``verify_tls=False``, the certificate is then not the SNI's); None = the host.
        session: the session to send with (:func:`new_session`, one per run); None = a
            session of its own for this fetch.
        handoff: the open connection of the TLS handshake the caller recorded for ``ip``
            and the URL's port and host (:func:`probe.measure.tls.tls_handshake_open`): the
            first hop goes over it when it fits (https, same endpoint and SNI, its chain
            verified when ``verify_tls``, HTTP/1.1 negotiated or no ALPN answer, still
            open and silent), so the site sees one TLS connection; otherwise, and for every
            redirect, a fresh connection is dialled. http_get closes it when unused.

    Returns:
        An :class:`HTTPFetch`; ``failure`` None when a final (non-redirect) response
        arrived.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL with a host.
    """
    current = URL(url)
    if current.scheme not in ("http", "https") or not current.raw_host:
        if handoff is not None:
            handoff.close()
        raise ValueError(f"http_get: {url!r} is not an absolute http(s) URL")
    current = current.with_fragment(None)
    connect_to = connect_to or ConnectTo()
    ssl_context = trust.ssl_context() if verify_tls else _unverified_context()
    hops: list[HTTPRequest] = []
    pins: dict[str, str] = {}  # host → logical ip, for every host of the chain
    jar: list[aiohttp.CookieJar] = []
    first_host = current.raw_host or ""
    first_literal = parse_ip(first_host)
    if first_literal is not None:
        pins[_host_key(first_host)] = str(first_literal)
    elif ip is not None:
        pins[_host_key(first_host)] = ip
    input_port = current.port or 0
    origin_private = first_literal is not None and is_private(first_literal)
    origin_verified = False
    if handoff is not None and not (
            current.scheme == "https" and server_name is None and handoff.http11
            and (handoff.verified or not verify_tls) and handoff.port == current.port
            and handoff.ip == pins.get(_host_key(first_host))
            and (first_literal is not None or handoff.server_name == first_host.rstrip("."))):
        handoff.close()
        handoff = None

    def vet(a: str) -> str | None:
        if allow_address is not None and not _allowed(a, allow_address):
            return R_MACHINE
        if policy is not None:
            return policy.refuse_address(a, origin_private=origin_private, origin_verified_https=origin_verified)
        return None

    def refused_hop(url: URL, t0: float, failure: str, refused: tuple[tuple[str, str], ...]) -> HTTPFetch:
        hops.append(HTTPRequest(url=str(url), ip=None, port=None, method="GET",
                                request_headers=(("Host", _host_header(url)), *BROWSER_HEADERS),
                                t0=t0, t=clock.now(), failure=failure, refused=refused))
        return HTTPFetch(requests=tuple(hops), failure=failure)

    own = session is None
    if session is None:
        session = new_session()
    try:
        while True:
            t0 = clock.now()
            host = _host_key(current.raw_host or "")
            progress = _BodyProgress(clock)
            try:
                async with asyncio.timeout(timeout_s):
                    hop_ip = pins.get(host)
                    if hop_ip is None:
                        hop_ip, pin_failure, refused = await _pin(host, resolve, vet)
                        if hop_ip is None:
                            assert pin_failure is not None
                            return refused_hop(current, t0, pin_failure, refused)
                        pins[host] = hop_ip
                    elif hops and (rule := vet(hop_ip)) is not None:
                        # a host pinned earlier, reached again from another origin
                        return refused_hop(current, t0, _refusal_failure([rule]), ((hop_ip, rule),))
                    hop, location = await _hop(session, current, clock=clock, t0=t0,
                                               ip=hop_ip, connect_to=connect_to, ssl_context=ssl_context,
                                               max_body_bytes=max_body_bytes,
                                               store_body_bytes=store_body_bytes,
                                               progress=progress, server_name=server_name,
                                               handoff=handoff if not hops else None, jar=jar)
            except TimeoutError:
                location = None
                hop_ip = pins.get(host)
                hop = HTTPRequest(
                    url=str(current), ip=hop_ip, port=current.port if hop_ip else None,
                    method="GET", request_headers=(("Host", _host_header(current)), *BROWSER_HEADERS),
                    t0=t0, t=clock.now(), failure=classify(TimeoutError(), "http_round_trip"),
                    **progress.fields(failed=True),
                    reused_tls_handshake=not hops and handoff is not None and handoff.taken)
            hops.append(hop)
            if hop.failure is not None or hop.response is None:
                return HTTPFetch(requests=tuple(hops), failure=hop.failure)
            if hop.response.status_code not in REDIRECT_STATUSES or location is None:
                return HTTPFetch(requests=tuple(hops), failure=None)
            target = _redirect_target(current, location)
            if target is None:
                return HTTPFetch(requests=tuple(hops), failure=HTTP_INVALID_REDIRECT)
            if len(hops) > max_redirects:
                return HTTPFetch(requests=tuple(hops), failure=HTTP_TOO_MANY_REDIRECTS)
            # the origin of the next hop is this one: in private space? verified HTTPS?
            origin_private = hop.ip is not None and is_private(hop.ip)
            origin_verified = current.scheme == "https" and verify_tls
            if policy is not None and target.port is not None and not policy.port_allowed(target.port, input_port):
                literal = parse_ip(target.raw_host or "")
                rule = (vet(str(literal)) if literal is not None else None) or R_PORT
                shown = format_endpoint(str(literal), target.port) if literal else f"{target.raw_host}:{target.port}"
                return refused_hop(target, clock.now(), _refusal_failure([rule]), ((shown, rule),))
            current = target
    finally:
        if handoff is not None:
            handoff.close()  # not taken (no-op when it was)
        if own:
            await session.close()


__all__ = [
    "BROWSER_HEADERS", "CUT_MARK", "DEFAULT_MAX_BODY_BYTES", "MAX_HEADER_CHARS", "MAX_STORED_HEADERS",
    "MAX_TITLE_CHARS", "USER_AGENT", "AllowAddress", "HTTPFetch", "HTTPRequest", "HTTPResponse", "Resolve",
    "body_encoding", "content_codings", "extract_title", "http_get", "not_local_address", "valid_host",
]
