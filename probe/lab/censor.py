"""The lab's censor: a transparent TLS/HTTP middlebox keyed on the SNI and the Host.

In the lab, nftables in the ISP namespace redirects the forwarded TCP connections of
censored sites (port 443, and an https input's own port → :attr:`Censor.tls_port`; 80, and a plain-HTTP
input's own port → :attr:`Censor.http_port`: :func:`probe.lab.scenario.name_ports`) to
this process; ``SO_ORIGINAL_DST`` gives the address the client dialled. The censor reads
the client's first flight — the TLS ClientHello (:func:`parse_client_hello_sni`) or the
HTTP request head (:func:`parse_http_host`) — looks the name up in its rules (exact name,
then parent domains), and acts:

TLS (``CensorRule.tls``)
    ``ok``: relay verbatim (the bytes already read are forwarded first).
    ``sni_timeout``: never answer; hold the connection silently until the client closes.
    This is how Kazakhstan blocks today (OONI, "Kazakhstan" report, 2024-09-19: the TLS
    handshake times out after the ClientHello), so the probe sees ``generic_timeout_error``.
    ``sni_rst``: close with a TCP RST (``SO_LINGER`` 0) after the ClientHello
    (``connection_reset``).
    ``mitm:<root>``: fetch the real certificate from the original destination with the
    client's SNI, terminate the client's TLS with a leaf forged by
    :class:`probe.lab.forge.Forger`, and relay the decrypted bytes over a second TLS
    connection to the real server — the 2019 interception (IMC 2020, Raman et al.). As in
    2019, interception needs a server certificate the injector trusts: when the upstream
    handshake fails verification under ``upstream_trust``, the connection is relayed
    untouched (``tls.mitm_passthrough:<sni>`` in :attr:`Censor.stats`).
HTTP (``CensorRule.http``)
    ``ok``: relay verbatim. ``blockpage``: answer ``200 OK`` with :data:`BLOCKPAGE_HTML`
    and close. ``rst``: RST after the request. ``blockpage_unknown``: the same with
    :data:`UNKNOWN_BLOCKPAGE_HTML` (no fingerprint knows it). ``redirect_blockpage``: answer
    ``302 Found`` to ``http://<blockpage_host>/?host=<Host>`` and close (an injected redirect).
Throttling (``CensorRule.throttle_kbps`` > 0)
    relayed bytes (both directions, each its own token bucket) flow at that rate,
    kbit/s = 1000 bit/s, for TLS (by SNI) and HTTP (by Host) relays and MITM relays.

A client whose first flight carries no name (no SNI, not TLS, not HTTP, or more than
:data:`MAX_FIRST_FLIGHT_BYTES` without completing) is relayed verbatim; one that sends
nothing complete within ``first_flight_timeout_s`` is closed. ``latency_s`` is slept once
per connection before the first byte towards the client (relayed, forged or censor-made),
modelling one-way latency on the ISP path (``tc netem`` is not available on the lab's
kernel).

IPv4 and IPv6 (``SO_ORIGINAL_DST`` on ``SOL_IP``, ``IP6T_SO_ORIGINAL_DST`` on ``SOL_IPV6``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Self

from probe.lab.forge import MITM_ROOT_NAMES, ForgeError, Forger
from probe.lab.scenario import PROXY_HTTP, PROXY_TLS
from probe.names import HostError, to_alabel

__all__ = [
    "BLOCKPAGE_FINGERPRINT",
    "BLOCKPAGE_HTML",
    "INCOMPLETE",
    "MAX_FIRST_FLIGHT_BYTES",
    "SO_ORIGINAL_DST",
    "Censor",
    "CensorRule",
    "HTTPAction",
    "Incomplete",
    "TLSAction",
    "normalise_name",
    "parse_client_hello_sni",
    "parse_http_host",
    "so_original_dst",
]

TLSAction = Literal["ok", "sni_timeout", "sni_rst", "mitm:qaznet", "mitm:isca"]
HTTPAction = Literal["ok", "blockpage", "rst", "blockpage_unknown", "redirect_blockpage"]
#: The censor proxy's actions: the scenario's (:data:`probe.lab.scenario.PROXY_TLS`, ``PROXY_HTTP``)
#: plus "ok" (relay); the Literals above spell them for the type checker (a test ties the two).
TLS_ACTIONS: tuple[str, ...] = ("ok", *PROXY_TLS)
HTTP_ACTIONS: tuple[str, ...] = ("ok", *PROXY_HTTP)

#: Cap on the first flight the censor buffers before deciding (bytes). A ClientHello with a
#: post-quantum key share is ~1.8 KB; 16 KiB is one maximal TLS record.
MAX_FIRST_FLIGHT_BYTES: Final = 16384
#: ``SO_ORIGINAL_DST`` from <linux/netfilter_ipv4.h>, read at level ``SOL_IP`` (0).
SO_ORIGINAL_DST: Final = 80
SOL_IP: Final = 0
#: ``IP6T_SO_ORIGINAL_DST`` from <linux/netfilter_ipv6/ip6_tables.h>, at level ``SOL_IPV6`` (41).
IP6T_SO_ORIGINAL_DST: Final = 80
SOL_IPV6: Final = 41
_RELAY_CHUNK = 65536

#: The blockpage the lab serves for ``http = "blockpage"``. It carries the text of the
#: Kazakh fingerprint ``d_corp_kz_ps`` ("Страница заблокирована", "page blocked"):
#: Censored Planet's ``blockpage_signatures.json`` and OONI fastpath's copy
#: ``cp.d_corp_kz_ps`` (probe/fingerprints.py; checked by tests/lab/test_censor.py).
BLOCKPAGE_HTML: Final = (
    "<!DOCTYPE html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\">"
    "<title>Страница заблокирована</title></head>\n<body><h1>Страница заблокирована</h1>\n"
    "<p>Доступ к запрошенному ресурсу ограничен в соответствии с законодательством "
    "Республики Казахстан.</p>\n</body></html>\n"
).encode()
#: The fingerprint names :data:`BLOCKPAGE_HTML` matches (Censored Planet, OONI fastpath).
BLOCKPAGE_FINGERPRINT: Final = ("d_corp_kz_ps", "cp.d_corp_kz_ps")
#: The page of ``http = "blockpage_unknown"``: a blockpage no fingerprint knows (a new ISP's, a
#: reworded one); only the comparison with the control's page can see it (checked by tests/lab).
UNKNOWN_BLOCKPAGE_HTML: Final = (
    b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Resource unavailable</title></head>\n"
    b"<body><h2>This resource is unavailable on your network</h2>\n<p>Reference 4417.</p>\n</body></html>\n"
)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, kw_only=True)
class CensorRule:
    """What the censor does to one domain (and its subdomains without a rule of their own).

    Attributes:
        tls: action on TLS connections whose SNI is this domain (module docstring).
        http: action on HTTP requests whose Host is this domain.
        throttle_kbps: relay rate in kbit/s (1 kbit = 1000 bit), both directions; 0 = no
            throttling.

    Raises:
        ValueError: an unknown action or a negative rate.
    """

    tls: TLSAction = "ok"
    http: HTTPAction = "ok"
    throttle_kbps: int = 0

    def __post_init__(self) -> None:
        if self.tls not in TLS_ACTIONS:
            raise ValueError(f"CensorRule: tls {self.tls!r} is not one of {', '.join(TLS_ACTIONS)}")
        if self.http not in HTTP_ACTIONS:
            raise ValueError(f"CensorRule: http {self.http!r} is not one of {', '.join(HTTP_ACTIONS)}")
        if (not isinstance(self.throttle_kbps, int) or isinstance(self.throttle_kbps, bool)
                or self.throttle_kbps < 0):
            raise ValueError(f"CensorRule: throttle_kbps must be an integer ≥ 0, "
                             f"not {self.throttle_kbps!r}")


def normalise_name(name: str) -> str:
    """A domain as the censor compares it: :func:`probe.names.to_alabel` (IDNA 2008, UTS #46).

    Raises:
        ValueError: not a valid domain name (the message says why).
    """
    try:
        return to_alabel(name)
    except HostError as exc:
        raise ValueError(f"censor rule: {name!r} is not a valid domain name: {exc.reason}") from None


# --------------------------------------------------------------------------- parsers


class Incomplete:
    """Type of :data:`INCOMPLETE`: the parser needs more bytes to decide."""

    _instance: Incomplete | None = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INCOMPLETE"


INCOMPLETE: Final = Incomplete()

_TLS_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_MAX_RECORD = 16384 + 2048  # TLSCiphertext limit (RFC 8446 §5.2); plaintext is ≤ 2^14


def _handshake_bytes(data: bytes) -> bytes | Incomplete | None:
    """The first handshake message's bytes (4-byte header + body) gathered across records.

    None when ``data`` is not a sequence of TLS handshake records (or announces a
    handshake message longer than 64 KiB).
    """
    buf = bytearray()
    pos = 0
    need: int | None = None
    while True:
        if need is not None and len(buf) >= need:
            return bytes(buf[:need])
        if len(data) - pos < 5:
            if pos < len(data) and data[pos] != _TLS_HANDSHAKE:
                return None
            if pos + 1 < len(data) and data[pos + 1] != 3:
                return None
            return INCOMPLETE
        ctype, major = data[pos], data[pos + 1]
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if ctype != _TLS_HANDSHAKE or major != 3 or length == 0 or length > _MAX_RECORD:
            return None
        body = data[pos + 5:pos + 5 + length]
        buf += body
        pos += 5 + length
        if need is None and len(buf) >= 4:
            need = 4 + int.from_bytes(buf[1:4], "big")
            if need > 65536 + 4:
                return None
        if len(body) < length and (need is None or len(buf) < need):
            return INCOMPLETE


def parse_client_hello_sni(data: bytes) -> str | None | Incomplete:
    """The SNI host name in a TLS ClientHello, as the censor's DPI reads it.

    Args:
        data: the bytes a client sent first on a TCP connection, possibly several TLS
            records (a ClientHello fragmented across records, RFC 8446 §5.1) and possibly
            only a prefix of them (TCP segments).

    Returns:
        the ``host_name`` of the server_name extension (RFC 6066 §3), lowercased, without a
        final dot; None when ``data`` is a complete ClientHello without SNI, or is not a TLS
        ClientHello at all (another record type, an SSLv2 hello, garbage, a malformed
        message); :data:`INCOMPLETE` when more bytes are needed to decide. Never raises.
    """
    try:
        msg = _handshake_bytes(bytes(data))
    except Exception:  # noqa: BLE001 - a parser of hostile input must not raise
        return None
    if msg is None or msg is INCOMPLETE:
        return msg
    assert isinstance(msg, bytes)
    if msg[0] != _CLIENT_HELLO:
        return None
    try:
        return _sni_from_client_hello(memoryview(msg)[4:])
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def _sni_from_client_hello(body: memoryview) -> str | None:
    def u8(i: int) -> int:
        return body[i]

    def u16(i: int) -> int:
        if i + 2 > len(body):
            raise IndexError
        return int.from_bytes(body[i:i + 2], "big")

    pos = 2 + 32                       # legacy_version, random
    pos += 1 + u8(pos)                 # legacy_session_id
    pos += 2 + u16(pos)                # cipher_suites
    pos += 1 + u8(pos)                 # legacy_compression_methods
    if pos == len(body):
        return None                    # no extensions (TLS 1.0-style hello)
    end = pos + 2 + u16(pos)
    if end > len(body):
        raise IndexError
    pos += 2
    while pos + 4 <= end:
        etype, elen = u16(pos), u16(pos + 2)
        pos += 4
        if pos + elen > end:
            raise IndexError
        if etype == _EXT_SERVER_NAME:
            lend = pos + 2 + u16(pos)
            p = pos + 2
            while p + 3 <= lend:
                ntype, nlen = u8(p), u16(p + 1)
                p += 3
                if p + nlen > lend:
                    raise IndexError
                if ntype == 0:  # host_name
                    name = bytes(body[p:p + nlen]).decode("ascii").rstrip(".").lower()
                    return name if name and name.isprintable() and " " not in name else None
                p += nlen
            return None
        pos += elen
    return None


_HTTP_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                           b"CONNECT", b"TRACE"})


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def parse_http_host(data: bytes) -> str | None | Incomplete:
    """The host an HTTP/1.x request is for: the absolute-form target's, else ``Host``'s.

    Args:
        data: the first bytes of the connection (a request head, maybe partial).

    Returns:
        the host, lowercased, port and final dot removed; None when the head is complete
        (or clearly not HTTP/1.x) and names no host; :data:`INCOMPLETE` when the head has
        not ended yet (no blank line). Never raises.
    """
    try:
        data = bytes(data)
        first_line_end = data.find(b"\n")
        first = data if first_line_end < 0 else data[:first_line_end]
        method = first.split(b" ", 1)[0]
        if method not in _HTTP_METHODS and not (first_line_end < 0 and any(
                m.startswith(method) for m in _HTTP_METHODS)):
            return None
        end = data.find(b"\r\n\r\n")
        if end < 0:
            end = data.find(b"\n\n")
        if end < 0:
            return INCOMPLETE
        lines = data[:end].decode("latin-1").splitlines()
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None
        target = parts[1]
        host: str | None = None
        if "://" in target:
            host = target.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        else:
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep and name.strip().lower() == "host":
                    host = value.strip()
                    break
        if not host:
            return None
        host = _strip_port(host).rstrip(".").lower()
        return host if host and host.isascii() and host.isprintable() and " " not in host else None
    except Exception:  # noqa: BLE001 - hostile input must not raise
        return None


def so_original_dst(sock: socket.socket) -> tuple[str, int]:
    """The destination a redirected (nftables ``redirect``/``dnat``) connection dialled.

    IPv4: ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` returns a ``struct sockaddr_in``: family
    (2 bytes, host order), port (2, network order), address (4), padding (8) —
    <linux/netfilter_ipv4.h>, <netinet/in.h>. IPv6: ``getsockopt(SOL_IPV6,
    IP6T_SO_ORIGINAL_DST)`` returns a ``struct sockaddr_in6``: family (2), port (2),
    flow info (4), address (16), scope id (4).

    Returns:
        ``(ip, port)``.

    Raises:
        OSError: no conntrack entry (the connection was not NATed; ``ENOENT``).
    """
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


# --------------------------------------------------------------------------- plumbing


class _TokenBucket:
    """Paces bytes to ``rate_Bps`` (bytes/s), with a burst of ``burst`` bytes."""

    def __init__(self, rate_Bps: float, burst: float) -> None:
        self.rate = rate_Bps
        self.burst = burst
        self.tokens = burst
        self.last = asyncio.get_running_loop().time()

    async def take(self, n: int) -> None:
        now = asyncio.get_running_loop().time()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


def _bucket(kbps: int) -> tuple[_TokenBucket | None, int]:
    """A token bucket for ``kbps`` and the read size that keeps its bursts short."""
    if kbps <= 0:
        return None, _RELAY_CHUNK
    rate = kbps * 1000 / 8
    chunk = int(min(_RELAY_CHUNK, max(512, rate / 20)))
    return _TokenBucket(rate, chunk), chunk


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER on, 0 s) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close(writer: asyncio.StreamWriter, *, graceful: bool, timeout_s: float = 2.0) -> None:
    """Close a stream: flush and FIN (bounded by ``timeout_s``) when ``graceful``; then abort.

    The final abort guarantees the socket is released even if the peer never reads.
    """
    if graceful and not writer.transport.is_closing():
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(timeout_s):
                await writer.wait_closed()
    writer.transport.abort()


class _Reset(Exception):
    """A relay leg saw a reset/error: tear both sides down."""


class _ServerTLS:
    """Server side of TLS over an already-open stream whose first bytes were already read.

    asyncio's ``start_tls`` cannot be given the ClientHello the censor consumed to read the
    SNI, so this drives an :class:`ssl.SSLObject` over memory BIOs, feeding those bytes
    first.
    """

    def __init__(self, ctx: ssl.SSLContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, initial: bytes) -> None:
        self._reader, self._writer = reader, writer
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=True)
        self._in.write(initial)

    async def _flush(self) -> None:
        data = self._out.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _fill(self) -> bool:
        data = await self._reader.read(_RELAY_CHUNK)
        if data:
            self._in.write(data)
            return True
        self._in.write_eof()
        return False

    async def handshake(self) -> None:
        """Complete the handshake. Raises ssl.SSLError / OSError / EOFError on failure."""
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise EOFError("client closed during the TLS handshake") from None
        await self._flush()

    async def read(self, n: int) -> bytes:
        """Up to ``n`` plaintext bytes; b"" at close_notify or EOF."""
        while True:
            try:
                data = self._obj.read(n)
            except ssl.SSLWantReadError:
                await self._flush()
                if self._in.eof or not await self._fill():
                    with contextlib.suppress(ssl.SSLError):
                        return self._obj.read(n)
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            await self._flush()
            return data

    async def write(self, data: bytes) -> None:
        self._obj.write(data)
        await self._flush()

    def write_eof(self) -> None:
        """Send close_notify (best effort)."""
        with contextlib.suppress(ssl.SSLError, OSError):
            self._obj.unwrap()
        data = self._out.read()
        if data and not self._writer.transport.is_closing():
            self._writer.write(data)


Reader = Callable[[int], Awaitable[bytes]]
Writer = Callable[[bytes], Awaitable[None]]


# --------------------------------------------------------------------------- censor


class Censor:
    """Transparent middlebox: reads the SNI/Host, applies the rule, otherwise relays.

    Args:
        rules: domain → :class:`CensorRule`. Domains are normalised
            (:func:`normalise_name`); a rule covers the domain and its subdomains unless a
            more specific domain has its own rule.
        forger: the MITM forger; required when any rule has ``tls = "mitm:<root>"`` for a
            root it holds.
        latency_s: one-way latency added once per connection before the first byte to the
            client (seconds, ≥ 0).
        original_dst: ``sock → (ip, port)`` of the real destination;
            :func:`so_original_dst` in the lab, a fake in tests. OSError = drop the
            connection.
        upstream_trust: client context for the MITM's upstream TLS (fetching the real
            certificate, relaying). None = no verification. It should offer ALPN
            ``http/1.1`` or nothing (the relay joins two HTTP/1.1 TLS sessions). The
            2019 injector required a browser-trusted chain but not one for the SNI
            (KZ-MITM-FACTS.md); to model that exactly, pass ``check_hostname = False``.
        first_flight_timeout_s: how long a client may take to send a complete
            ClientHello / request head (slowloris bound), and to finish a MITM handshake.
        upstream_timeout_s: connect (and upstream TLS handshake) deadline.
        max_connections: concurrent connections; beyond it new ones are reset.
        hold_s: how long ``sni_timeout`` holds a connection whose client never closes
            (a client that vanished without FIN/RST), seconds; then it is dropped.
        backlog: listen backlog of each port (asyncio's default of 100 drops SYNs when a
            benchmark opens hundreds of connections at once).
        idle_timeout_s: a relay (plain or MITM) in which no byte moved either way for this
            long is torn down (seconds).

    Raises:
        ValueError: a bad rule name, a negative latency, or a ``mitm`` rule whose root the
            forger lacks (or no forger).
        TypeError: a rule that is not a :class:`CensorRule`.

    Attributes:
        stats: ``Counter`` of what happened, keys ``"<proto>.<action>:<name>"`` — e.g.
            ``"tls.sni_timeout:meduza.io"``, ``"tls.mitm:qaznet:facebook.com"``,
            ``"tls.relay:medium.com"``, ``"tls.throttle:example.com"``,
            ``"tls.mitm_passthrough:x"``, ``"http.blockpage:x"``, ``"tls.relay:-"`` (no
            SNI) — plus ``"error.<what>"`` and ``"conn.<proto>"`` (connections accepted).
        tls_port, http_port: the bound ports after :meth:`start` (useful with port 0).
    """

    def __init__(self, rules: Mapping[str, CensorRule], *, forger: Forger | None,
                 latency_s: float = 0.0,
                 original_dst: Callable[[socket.socket], tuple[str, int]] = so_original_dst,
                 upstream_trust: ssl.SSLContext | None = None,
                 first_flight_timeout_s: float = 10.0,
                 upstream_timeout_s: float = 10.0,
                 max_connections: int = 4096,
                 hold_s: float = 600.0,
                 backlog: int = 1024,
                 idle_timeout_s: float = 300.0) -> None:
        if latency_s < 0:
            raise ValueError(f"Censor: latency_s must be ≥ 0, not {latency_s}")
        self.rules: dict[str, CensorRule] = {}
        for name, rule in rules.items():
            if not isinstance(rule, CensorRule):
                raise TypeError(f"Censor: rule for {name!r} is not a CensorRule: {rule!r}")
            if rule.tls.startswith("mitm:"):
                root = rule.tls.split(":", 1)[1]
                if forger is None or root not in forger.roots:
                    raise ValueError(f"Censor: rule for {name!r} is {rule.tls!r} but the forger "
                                     f"has no {root!r} root (roots: {', '.join(MITM_ROOT_NAMES)})")
            self.rules[normalise_name(name)] = rule
        self.forger = forger
        self.latency_s = float(latency_s)
        self.original_dst = original_dst
        self.first_flight_timeout_s = first_flight_timeout_s
        self.upstream_timeout_s = upstream_timeout_s
        self.max_connections = max_connections
        self.hold_s = hold_s
        self.backlog = backlog
        self.idle_timeout_s = idle_timeout_s
        if upstream_trust is None:
            upstream_trust = ssl.create_default_context()
            upstream_trust.check_hostname = False
            upstream_trust.verify_mode = ssl.CERT_NONE
            upstream_trust.set_alpn_protocols(["http/1.1"])
        self.upstream_trust = upstream_trust
        #: where ``redirect_blockpage`` points (the ISP's blockpage host; the lab sets it)
        self.blockpage_host = "198.19.255.2"
        self.stats: Counter[str] = Counter()
        self.tls_port: int | None = None
        self.http_port: int | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    # ---- rules

    def rule_for(self, name: str | None) -> tuple[str, CensorRule] | None:
        """``(matched domain, rule)`` for a host name: exact, then each parent domain; or None."""
        if not name:
            return None
        try:
            name = normalise_name(name)
        except ValueError:
            return None
        labels = name.split(".")
        for i in range(len(labels)):
            domain = ".".join(labels[i:])
            rule = self.rules.get(domain)
            if rule is not None:
                return domain, rule
        return None

    # ---- lifecycle

    async def start(self, host: str | list[str], tls_port: int, http_port: int) -> None:
        """Listen on ``host``:``tls_port`` (TLS side) and ``host``:``http_port`` (HTTP side);
        ``host`` may be a list (``["0.0.0.0", "::"]``: both families).

        Port 0 = any free port (see :attr:`tls_port`, :attr:`http_port`). Raises OSError
        when a port cannot be bound (nothing is left listening).
        """
        try:
            tls = await asyncio.start_server(self._wrap(self._handle_tls, "tls"), host, tls_port,
                                             reuse_address=True, backlog=self.backlog)
            self._servers.append(tls)
            http = await asyncio.start_server(self._wrap(self._handle_http, "http"), host,
                                              http_port, reuse_address=True, backlog=self.backlog)
            self._servers.append(http)
        except BaseException:
            await self.aclose()
            raise
        self.tls_port = tls.sockets[0].getsockname()[1]
        self.http_port = http.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening, cancel every connection's task, close every socket. Idempotent."""
        self._closing = True
        for server in self._servers:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def open_connections(self) -> int:
        """Client connections currently handled."""
        return len(self._tasks)

    def _wrap(self, handler: Callable[..., Awaitable[None]], proto: str
              ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            if self._closing or len(self._tasks) >= self.max_connections:
                self.stats["error.max_connections" if not self._closing else "error.closing"] += 1
                _rst(writer)
                return
            self._tasks.add(task)
            self._writers.add(writer)
            self.stats[f"conn.{proto}"] += 1
            try:
                dst = self._dst(writer)
                if dst is not None:
                    await handler(reader, writer, dst)
                graceful = True
            except asyncio.CancelledError:
                graceful = False
            except (OSError, EOFError, ssl.SSLError, TimeoutError, _Reset):
                self.stats[f"error.{proto}.connection"] += 1
                graceful = False
            except Exception:  # noqa: BLE001 - a bug: count it, never take the censor down
                self.stats[f"error.{proto}.internal"] += 1
                graceful = False
            try:
                await _close(writer, graceful=graceful and not self._closing)
            finally:
                self._writers.discard(writer)
                self._tasks.discard(task)
                writer.transport.abort()

        return run

    def _dst(self, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        sock = writer.get_extra_info("socket")
        try:
            dst = self.original_dst(sock)
        except OSError:
            self.stats["error.original_dst"] += 1
            return None
        if dst == sock.getsockname()[:2]:  # not redirected: relaying would loop to ourselves
            self.stats["error.original_dst_is_censor"] += 1
            return None
        return dst

    async def _read_first(self, reader: asyncio.StreamReader,
                          parse: Callable[[bytes], str | None | Incomplete]
                          ) -> tuple[bytes, str | None] | None:
        """The first flight and the name in it; None when the client stalled (slowloris)."""
        buf = b""
        try:
            async with asyncio.timeout(self.first_flight_timeout_s):
                while len(buf) < MAX_FIRST_FLIGHT_BYTES:
                    chunk = await reader.read(MAX_FIRST_FLIGHT_BYTES - len(buf))
                    if not chunk:
                        break
                    buf += chunk
                    name = parse(buf)
                    if not isinstance(name, Incomplete):
                        return buf, name
        except TimeoutError:
            return None
        return buf, None

    def _next_hop(self, dst: tuple[str, int], name: str | None) -> tuple[str, int] | None:
        """Where a connection the rules let through (relay, throttle, MITM) goes on to: the address
        the client dialled; a relay by name (:class:`probe.lab.relay.NameRelay`) says otherwise, and
        None (reset the client) for a name it does not know."""
        return dst

    async def _latency(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    # ---- TLS side

    async def _handle_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          dst: tuple[str, int]) -> None:
        first = await self._read_first(reader, parse_client_hello_sni)
        if first is None:
            self.stats["error.tls.first_flight_timeout"] += 1
            return
        data, sni = first
        if not data:
            return
        match = self.rule_for(sni)
        rule = match[1] if match else CensorRule()
        label = sni or "-"
        if rule.tls not in ("sni_timeout", "sni_rst"):
            hop = self._next_hop(dst, sni)
            if hop is None:
                _rst(writer)
                return
            dst = hop
        if rule.tls == "sni_timeout":
            self.stats[f"tls.sni_timeout:{label}"] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hold_s):
                    while await reader.read(_RELAY_CHUNK):  # silent until the client gives up
                        pass
            return
        if rule.tls == "sni_rst":
            self.stats[f"tls.sni_rst:{label}"] += 1
            await self._latency()
            _rst(writer)
            return
        if rule.tls.startswith("mitm:") and sni:
            await self._mitm(reader, writer, dst, data, sni, rule)
            return
        self.stats[f"tls.{'throttle' if rule.throttle_kbps else 'relay'}:{label}"] += 1
        await self._relay_plain(reader, writer, dst, data, rule.throttle_kbps)

    async def _mitm(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    dst: tuple[str, int], hello: bytes, sni: str, rule: CensorRule) -> None:
        assert self.forger is not None
        root = rule.tls.split(":", 1)[1]
        try:
            async with asyncio.timeout(self.upstream_timeout_s):
                up_reader, up_writer = await asyncio.open_connection(
                    dst[0], dst[1], ssl=self.upstream_trust, server_hostname=sni,
                    ssl_handshake_timeout=self.upstream_timeout_s)
        except ssl.SSLError:
            # 2019: no valid server certificate, no interception — the flow passes untouched
            self.stats[f"tls.mitm_passthrough:{sni}"] += 1
            await self._relay_plain(reader, writer, dst, hello, rule.throttle_kbps)
            return
        except (OSError, TimeoutError):
            self.stats["error.tls.upstream_connect"] += 1
            _rst(writer)
            return
        try:
            real_der = up_writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            try:
                ctx = await asyncio.to_thread(self.forger.ssl_context, real_der, root)
            except ForgeError:
                self.stats["error.tls.forge"] += 1
                return
            self.stats[f"tls.{rule.tls}:{sni}"] += 1
            await self._latency()
            client = _ServerTLS(ctx, reader, writer, hello)
            try:
                async with asyncio.timeout(self.first_flight_timeout_s):
                    await client.handshake()
            except (ssl.SSLError, OSError, EOFError, TimeoutError):
                self.stats[f"tls.mitm_client_refused:{sni}"] += 1
                return
            up_bucket, up_chunk = _bucket(rule.throttle_kbps)
            down_bucket, down_chunk = _bucket(rule.throttle_kbps)

            async def write_up(b: bytes) -> None:
                up_writer.write(b)
                await up_writer.drain()

            # the upstream TLS transport cannot half-close: the client's EOF closes it,
            # which ends the other leg once the server's last bytes are relayed
            await self._pipe(
                (client.read, write_up, up_writer.close, up_bucket, up_chunk, 0.0),
                (up_reader.read, client.write, client.write_eof, down_bucket, down_chunk, 0.0),
            )
        finally:
            up_writer.transport.abort()

    # ---- HTTP side

    async def _handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           dst: tuple[str, int]) -> None:
        first = await self._read_first(reader, parse_http_host)
        if first is None:
            self.stats["error.http.first_flight_timeout"] += 1
            return
        data, host = first
        if not data:
            return
        match = self.rule_for(host)
        rule = match[1] if match else CensorRule()
        label = host or "-"
        if rule.http not in PROXY_HTTP:  # relayed: somewhere to relay to
            hop = self._next_hop(dst, host)
            if hop is None:
                _rst(writer)
                return
            dst = hop
        if rule.http in ("blockpage", "blockpage_unknown", "redirect_blockpage"):
            self.stats[f"http.{rule.http}:{label}"] += 1
            await self._latency()
            if rule.http == "redirect_blockpage":  # the censor answers the GET with a 302 to its blockpage host
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://%s/?host=%s\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n" % (self.blockpage_host.encode(), label.encode()))
            else:
                page = BLOCKPAGE_HTML if rule.http == "blockpage" else UNKNOWN_BLOCKPAGE_HTML
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(page) + page)
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(self.upstream_timeout_s):
                    await writer.drain()
                    if writer.can_write_eof():
                        writer.write_eof()
                    while await reader.read(_RELAY_CHUNK):  # let the client read, then close
                        pass
            return
        if rule.http == "rst":
            self.stats[f"http.rst:{label}"] += 1
            await self._latency()
            _rst(writer)
            return
        self.stats[f"http.{'throttle' if rule.throttle_kbps else 'relay'}:{label}"] += 1
        await self._relay_plain(reader, writer, dst, data, rule.throttle_kbps)

    # ---- relaying

    async def _relay_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           dst: tuple[str, int], first: bytes, kbps: int) -> None:
        try:
            async with asyncio.timeout(self.upstream_timeout_s):
                up_reader, up_writer = await asyncio.open_connection(dst[0], dst[1])
        except (OSError, TimeoutError):
            self.stats["error.upstream_connect"] += 1
            _rst(writer)
            return
        try:
            up_bucket, up_chunk = _bucket(kbps)
            down_bucket, down_chunk = _bucket(kbps)

            def writer_of(w: asyncio.StreamWriter) -> Writer:
                async def write(b: bytes) -> None:
                    w.write(b)
                    await w.drain()
                return write

            def eof_of(w: asyncio.StreamWriter) -> Callable[[], None]:
                def eof() -> None:
                    if w.can_write_eof() and not w.transport.is_closing():
                        w.write_eof()
                return eof

            if up_bucket is not None:
                await up_bucket.take(len(first))
            await writer_of(up_writer)(first)
            await self._pipe(
                (reader.read, writer_of(up_writer), eof_of(up_writer), up_bucket, up_chunk, 0.0),
                (up_reader.read, writer_of(writer), eof_of(writer), down_bucket, down_chunk,
                 self.latency_s),
            )
            await _close(up_writer, graceful=True)
        finally:
            up_writer.transport.abort()

    async def _pipe(self, *legs: tuple[Reader, Writer, Callable[[], None],
                                       _TokenBucket | None, int, float]) -> None:
        """Run each leg (read, write, eof, bucket, chunk, delay) until both reach EOF.

        The server→client leg carries the connection's latency (slept before the first
        byte, or before the first byte of a censor-made reply). Raises _Reset when a leg
        fails, after cancelling the other, or when neither leg moved a byte for
        ``idle_timeout_s`` (a peer that vanished without FIN/RST).
        """
        loop = asyncio.get_running_loop()
        last = [loop.time()]
        idle: list[bool] = []  # counted once per connection, not once per leg

        async def idle_read(read: Reader, chunk: int) -> bytes:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        data = await read(chunk)
                except TimeoutError:
                    if loop.time() - last[0] >= self.idle_timeout_s:
                        if not idle:
                            idle.append(True)
                            self.stats["error.relay_idle"] += 1
                        raise _Reset("relay idle") from None
                    continue
                last[0] = loop.time()
                return data

        async def leg(read: Reader, write: Writer, eof: Callable[[], None],
                      bucket: _TokenBucket | None, chunk: int, delay_s: float) -> None:
            try:
                first = True
                while True:
                    data = await idle_read(read, chunk)
                    if not data:
                        eof()
                        return
                    if first and delay_s > 0:
                        await asyncio.sleep(delay_s)
                    first = False
                    if bucket is not None:
                        await bucket.take(len(data))
                    await write(data)
            except (OSError, ssl.SSLError, EOFError) as exc:
                raise _Reset(str(exc)) from exc

        try:
            async with asyncio.TaskGroup() as tg:
                for spec in legs:
                    tg.create_task(leg(*spec))
        except* _Reset:
            raise _Reset("relay leg failed") from None
