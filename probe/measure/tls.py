"""TLS handshake primitive with full-chain capture, and chain verification.

Two separate steps, as OONI's df-006 ``tls_handshakes`` and as a censorship probe needs:

1. :func:`tls_handshake` connects (TCP, via :func:`probe.measure.tcp.open_tcp`) and runs a
   TLS handshake **with verification off** (``CERT_NONE``, no hostname check), so a
   broken, forged or intercepted chain is still completed and captured. The record
   carries the negotiated version, cipher suite, ALPN result and the certificates
   exactly as the server sent them (leaf first). The handshake ``failure`` is about the
   network and the protocol only: ``generic_timeout_error`` (no ServerHello within
   ``tls_timeout_s``), ``connection_reset`` (RST, e.g. an SNI-filtering middlebox),
   ``eof_error`` (FIN during the handshake), ``ssl_failed_handshake`` (a TLS alert or
   garbage instead of TLS) — or the connect failure, with ``connect_failure=True``.

2. :class:`TrustStore` verifies the captured chain afterwards with
   ``cryptography.x509.verification`` (RFC 5280 path building, CA/B-Forum profile) against
   certifi's Mozilla roots plus extra anchors, and names the anchor set the chain ended in
   ("mozilla" or "extra") so interception by a non-public root (a state CA) is visible
   even to a user who installed that root.

Chain capture: Python exposes the chain the peer sent only from 3.13
(``SSLObject.get_unverified_chain()``); on 3.11/3.12 the same method lives on the
private ``ssl_object._sslobj`` and returns ``_ssl.Certificate`` objects. Both are
guarded; the fallback is the leaf alone (``getpeercert(binary_form=True)``,
``chain_source="leaf_only"``). DESIGN.md, "Known pitfalls".

SNI: ``server_name`` is sent as the TLS ``server_name`` extension (RFC 6066, section 3)
after IDNA (UTS #46) conversion to an A-label; ``None`` sends no SNI at all, and so does
an IP literal (RFC 6066 forbids IP addresses in SNI; CPython never sends them).
Versions and ALPN: RFC 8446 (TLS 1.3), RFC 7301 (ALPN).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import functools
import ipaddress
import re
import ssl
import sys
import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from probe.addresses import ConnectTo, parse_ip
from probe.failures import (
    SSL_INVALID_CERTIFICATE,
    SSL_INVALID_HOSTNAME,
    SSL_UNKNOWN_AUTHORITY,
    classify,
)
from probe.measure.tcp import close_writer, open_tcp
from probe.names import to_alabel
from probe.timing import Clock

#: asyncio's TLS transport allocates a read buffer of ``SSLProtocol.max_size`` (256 KiB) per
#: connection, zeroed: ~5 % of the probe's CPU on the loopback bench (py-spy; a 256 KiB
#: ``bytearray`` costs 16-75 µs, 32 KiB 0.5 µs). A TLS record carries at most 16 KiB of data,
#: so 32 KiB per read loses nothing but a few more reads of a large body (issue 13). uvloop has
#: its own TLS transport (an uninitialised buffer) and is not affected.
SSL_READ_BUFFER_BYTES = 32 * 1024

_RECV_BUFFERS = threading.local()


def _shared_recv_buffer() -> tuple[bytearray, memoryview]:
    """This thread's TLS receive buffer (one per thread, hence per event loop)."""
    pair: tuple[bytearray, memoryview] | None = getattr(_RECV_BUFFERS, "pair", None)
    if pair is None:
        buf = bytearray(asyncio.sslproto.SSLProtocol.max_size)
        pair = _RECV_BUFFERS.pair = (buf, memoryview(buf))
    return pair


def install_tls_read_buffers() -> bool:
    """Make asyncio's TLS connections read into small shared buffers, from now on, process-wide.

    Called by a probe run's set-up (:func:`probe.runner.run`), not at import: importing this module
    changes nothing in asyncio, so a process that only imports it (the helper's server, a test,
    the analysis) keeps asyncio as it is. Idempotent. Lowers ``SSLProtocol.max_size`` to
    :data:`SSL_READ_BUFFER_BYTES` (the read buffer of every TLS connection made after this call,
    any platform) and shares one receive buffer per event-loop thread (:func:`_share_recv_buffers`).

    Returns:
        True when the receive buffers are shared (now or by an earlier call); False where they
        cannot be (Windows, another Python than CPython 3.11-3.13, an ``SSLProtocol`` of another shape).
    """
    cls = asyncio.sslproto.SSLProtocol
    if getattr(cls, "max_size", 0) > SSL_READ_BUFFER_BYTES:
        cls.max_size = SSL_READ_BUFFER_BYTES
    return bool(getattr(cls, "_kzprobe_shared_buffer", False)) or _share_recv_buffers()


def _share_recv_buffers() -> bool:
    """One TLS receive buffer per event loop instead of one per connection (issue 13, lab RSS).

    asyncio's ``SSLProtocol`` receives the socket's bytes into its own ``_ssl_buffer``
    (``get_buffer``), and ``buffer_updated`` copies them into the connection's incoming
    ``MemoryBIO`` at once: the selector transport calls ``get_buffer``, ``recv_into`` and
    ``buffer_updated`` in one synchronous callback (``_read_ready__get_buffer``), so the buffer
    holds nothing between two callbacks and every connection of a loop can receive into the
    same one. At concurrency 64 in the lab ~150 TLS connections are open at once (the
    measured sites' and the helper's): 32 KiB each, ~5 MB of the probe's peak RSS. Not on
    Windows (the proactor's overlapped ``recv_into`` keeps the buffer across callbacks), and
    only when ``SSLProtocol`` looks as expected (CPython 3.11-3.13); uvloop has its own TLS
    transport and is not affected. A thread-local buffer: a loop runs in one thread.
    """
    cls = asyncio.sslproto.SSLProtocol
    if sys.platform == "win32" or getattr(cls, "_kzprobe_shared_buffer", False):
        return False
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return False  # the callback sequence above is read from these versions' asyncio
    if not all(hasattr(cls, a) for a in ("get_buffer", "buffer_updated", "max_size")):
        return False
    original_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        buf, view = _shared_recv_buffer()
        if len(buf) < self.max_size:  # max_size raised since: get_buffer would allocate its own
            original_init(self, *args, **kwargs)
            return
        self.max_size = 0  # the original allocates bytearray(self.max_size): an empty one, not 32 KiB
        try:
            original_init(self, *args, **kwargs)
        finally:
            del self.max_size  # the class's value again
        if hasattr(self, "_ssl_buffer") and hasattr(self, "_ssl_buffer_view"):
            self._ssl_buffer, self._ssl_buffer_view = buf, view

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls._kzprobe_shared_buffer = True  # type: ignore[attr-defined]
    return True


ChainSource = Literal["full", "leaf_only", "none"]
PolicyName = Literal["webpki", "relaxed"]
AnchorSet = Literal["mozilla", "extra"]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_ENCODING_DER = getattr(getattr(ssl, "_ssl", None), "ENCODING_DER", 2)


def _parse_pem_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle that parses; unparseable blocks are skipped."""
    out = []
    for block in _PEM_CERT.findall(pem):
        try:
            with warnings.catch_warnings():
                # certifi still ships a root with a non-positive serial number
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                out.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            continue
    return out


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@functools.cache
def _mozilla_roots() -> tuple[tuple[x509.Certificate, ...], frozenset[bytes]]:
    """certifi's Mozilla bundle, parsed once per process: (certs, their DER encodings)."""
    certs = tuple(_parse_pem_certs(Path(certifi.where()).read_bytes()))
    return certs, frozenset(_der(c) for c in certs)


def _relaxed_policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """(CA policy, EE policy) that accept test CAs such as trustme's.

    ``ExtensionPolicy.permit_all()`` for both, plus the two extensions the verifier itself
    insists on: basicConstraints on CAs (cryptography still checks ``cA=TRUE`` and path
    lengths while building the chain) and subjectAltName on the leaf (any criticality:
    trustme marks it critical, which the strict profile forbids when the subject is not
    empty). Validity periods, signatures and name matching are checked as usual.
    """
    ca = ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None
    )
    ee = ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return ca, ee


def _subject(server_name: str) -> x509.DNSName | x509.IPAddress:
    addr = parse_ip(server_name)
    if addr is not None:
        return x509.IPAddress(addr)
    return x509.DNSName(to_alabel(server_name))


def _leaf_subject(leaf: x509.Certificate) -> x509.DNSName | x509.IPAddress | None:
    """A name the leaf is valid for (its own SAN), used when no server name is checked."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    dns = [n for n in san.get_values_for_type(x509.DNSName) if n and "*" not in n]
    if dns:
        return x509.DNSName(dns[0])
    ips = san.get_values_for_type(x509.IPAddress)
    if ips and isinstance(ips[0], ipaddress.IPv4Address | ipaddress.IPv6Address):
        return x509.IPAddress(ips[0])
    wild = [n for n in san.get_values_for_type(x509.DNSName) if n.startswith("*.")]
    if wild:
        return x509.DNSName("x" + wild[0][1:])
    return None


def _failure_from_message(message: str) -> str:
    """Map a ``VerificationError`` text to an OONI failure string.

    The mapping follows Go's crypto/x509, whose error types OONI maps: HostnameError →
    ssl_invalid_hostname, UnknownAuthorityError (no path to an anchor, including a
    signature that does not match any candidate issuer) → ssl_unknown_authority,
    CertificateInvalidError (expired, not yet valid, not a CA, bad extensions) →
    ssl_invalid_certificate.
    """
    m = message.lower()
    if "no matching subjectaltname" in m:
        return SSL_INVALID_HOSTNAME
    if "not valid at validation time" in m:
        return SSL_INVALID_CERTIFICATE
    if "candidates exhausted" in m and (
        "no interior errors" in m or "signature does not match" in m
        # a self-signed root no store holds, served in the chain: the builder loops on it until
        # its depth limit (Go: x509.UnknownAuthorityError; webconnectivityqa
        # badSSLWithUnknownAuthorityWithConsistentDNS expects ssl_unknown_authority)
        or "exceeds max depth" in m
    ):
        return SSL_UNKNOWN_AUTHORITY
    return SSL_INVALID_CERTIFICATE


class TrustStore:
    """Trust anchors for verification: certifi's Mozilla roots plus extra anchors.

    certifi's bundle (~150 roots) is read and parsed once per process, on the first
    verification (or :meth:`ssl_context`), and shared by every TrustStore.

    Args:
        extra_anchors_pem: PEM bytes of extra roots (lab CA, a test CA), or None.
        include_mozilla: load certifi's bundle (True in production).
        policy: "webpki" = strict CA/B-Forum profile (production);
            "relaxed" = same chain building, relaxed extension policy for test CAs
            such as trustme's (DESIGN.md, known pitfalls).

    Raises:
        ValueError: when ``extra_anchors_pem`` holds no parseable certificate, or
            ``policy`` is not one of the two names.
    """

    def __init__(self, *, extra_anchors_pem: bytes | None = None, include_mozilla: bool = True,
                 policy: PolicyName = "webpki") -> None:
        if policy not in ("webpki", "relaxed"):
            raise ValueError(f"TrustStore: policy must be 'webpki' or 'relaxed', not {policy!r}")
        self.policy: PolicyName = policy
        self.include_mozilla = include_mozilla
        self._extra_pem = extra_anchors_pem or b""
        self._extra: tuple[x509.Certificate, ...] = ()
        if extra_anchors_pem is not None:
            self._extra = tuple(_parse_pem_certs(extra_anchors_pem))
            if not self._extra:
                raise ValueError("TrustStore: extra_anchors_pem holds no parseable PEM certificate")
        self._extra_der = frozenset(_der(c) for c in self._extra)
        self._store: Store | None = None
        self._store_built = False
        self._ssl_context: ssl.SSLContext | None = None

    def _get_store(self) -> Store | None:
        if not self._store_built:
            anchors = list(self._extra)
            if self.include_mozilla:
                anchors.extend(_mozilla_roots()[0])
            self._store = Store(anchors) if anchors else None
            self._store_built = True
        return self._store

    def _anchor_set(self, anchor: x509.Certificate) -> AnchorSet:
        if self.include_mozilla and _der(anchor) in _mozilla_roots()[1]:
            return "mozilla"
        return "extra"

    def _run(self, store: Store, leaf: x509.Certificate, intermediates: list[x509.Certificate],
             subject: x509.DNSName | x509.IPAddress, at: datetime, policy: PolicyName
             ) -> tuple[str | None, AnchorSet | None]:
        builder = PolicyBuilder().store(store).time(at)
        if policy == "relaxed":
            ca_policy, ee_policy = _relaxed_policies()
            builder = builder.extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        try:
            verified = builder.build_server_verifier(subject).verify(leaf, intermediates)
        except VerificationError as exc:
            return _failure_from_message(str(exc)), None
        except ValueError:  # a certificate field the verifier cannot decode
            return SSL_INVALID_CERTIFICATE, None
        return None, self._anchor_set(verified[-1])

    def verify(self, chain_der: list[bytes], server_name: str | None, *, at: datetime | None = None
               ) -> tuple[str | None, str | None]:
        """Verify ``chain_der`` (leaf first, as sent) for ``server_name`` (DNS name or IP).

        The rest of the chain is used as untrusted intermediates, in any order; a
        certificate that does not parse is skipped (an unparseable *leaf* is
        ssl_invalid_certificate). The order of checks follows Go's crypto/x509 (and so
        OONI): leaf validity period, then the name, then the path to an anchor.

        Args:
            chain_der: DER certificates as the server sent them, leaf first.
            server_name: the name to check (A-label or Unicode DNS name, or an IP
                literal checked against iPAddress SANs); None = check the chain only.
            at: verification time (naive = UTC); None = now.

        Returns:
            ``(failure, anchor)``: failure is None when it verifies, else
            ssl_unknown_authority / ssl_invalid_hostname / ssl_invalid_certificate;
            anchor is "mozilla" or "extra" — the anchor set a chain was built to — or
            None when there is no path to an anchor. The anchor is also given when only
            the name (ssl_invalid_hostname) or, under "webpki", only an extension
            profile check failed: "valid chain to a public root, wrong name" (a
            misconfigured site, FIELD-CASES FC-12) differs from "no trusted path" (a
            forged certificate).
        """
        at = at or datetime.now(UTC)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if not chain_der:
            return SSL_INVALID_CERTIFICATE, None
        try:
            leaf = x509.load_der_x509_certificate(chain_der[0])
        except ValueError:
            return SSL_INVALID_CERTIFICATE, None
        intermediates = []
        for der in chain_der[1:]:
            try:
                intermediates.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
        leaf_name = _leaf_subject(leaf)
        if leaf_name is None:  # the leaf names nothing (no usable subjectAltName)
            if server_name and leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
                return SSL_INVALID_HOSTNAME, None  # Go: "certificate is not valid for any names"
            return SSL_INVALID_CERTIFICATE, None
        subject = leaf_name
        if server_name:
            try:
                subject = _subject(server_name)
            except (ValueError, UnicodeError):
                return SSL_INVALID_HOSTNAME, None
        store = self._get_store()
        if store is None:
            return SSL_UNKNOWN_AUTHORITY, None
        failure, anchor = self._run(store, leaf, intermediates, subject, at, self.policy)
        if failure == SSL_INVALID_HOSTNAME:
            # Which anchor would the chain reach under the right name?
            chain_failure, anchor = self._run(store, leaf, intermediates, leaf_name, at, self.policy)
            if chain_failure is not None:
                anchor = None
        elif failure == SSL_INVALID_CERTIFICATE and self.policy == "webpki":
            # A profile (extension) failure on a chain that reaches no anchor at all is,
            # first of all, an unknown authority (Go checks no extension profile).
            relaxed_failure, anchor = self._run(store, leaf, intermediates, subject, at, "relaxed")
            if relaxed_failure == SSL_UNKNOWN_AUTHORITY:
                failure = SSL_UNKNOWN_AUTHORITY
        return failure, anchor

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying ``ssl.SSLContext`` with the same anchors (for HTTP/DoH clients).

        certifi's bundle (when ``include_mozilla``) plus the extra anchors; hostname
        checking on. Note that OpenSSL's verification is more lenient than the
        "webpki" profile of :meth:`verify` (it accepts trustme certificates). The
        context is built once per TrustStore and shared.
        """
        if self._ssl_context is None:
            if self.include_mozilla:
                ctx = ssl.create_default_context(cafile=certifi.where())
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self._extra_pem:
                ctx.load_verify_locations(
                    cadata=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self._extra).decode("ascii")
                )
            self._ssl_context = ctx
        return self._ssl_context


@dataclass(frozen=True, kw_only=True)
class TLSHandshake:
    """One TLS handshake (OONI df-006 ``tls_handshakes[]`` entry, plus verification).

    Attributes:
        ip, port: logical endpoint.
        server_name: SNI sent (A-label); None = no SNI.
        alpn_offered: ALPN protocols offered.
        t0, t: seconds since measurement start; ``t0`` before the TCP connect, ``t``
            when the handshake completed or failed (connect included, verification not).
        failure: the *handshake* failure (connect failure if the connect failed:
            connection_refused, generic_timeout_error, connection_reset, eof_error,
            ssl_failed_handshake ...); None = handshake completed. The handshake runs
            with verification off so a forged chain is still captured.
        connect_failure: True when ``failure`` came from the TCP connect, not TLS.
        connect_t: seconds since measurement start when the TCP connect ended (established
            or failed): the end of the connect phase, apart from ``t`` (the end of the
            handshake). The TCP phase of an https endpoint is ``t0``..``connect_t``, the TLS
            phase ``connect_t``..``t`` (OONI df-005 / df-006 time each step on its own).
            None only in records built without it (tests, old data).
        tls_version: "TLSv1.3" ..., cipher_suite: OpenSSL name, negotiated_protocol:
            ALPN result (None = the server chose none).
        peer_certificates: base64 DER certificates, as sent by the server, leaf first.
        chain_source: "full" (whole chain captured), "leaf_only" (fallback), "none".
        verification_failure: result of :meth:`TrustStore.verify` (None = verified);
            None also when the handshake failed (then nothing to verify).
        verified_anchor: "mozilla" / "extra" / None (see :meth:`TrustStore.verify`: may
            be set alongside ssl_invalid_hostname).
        verification_policy: "webpki" or "relaxed" — which policy produced it.
    """

    ip: str
    port: int
    server_name: str | None
    alpn_offered: tuple[str, ...]
    t0: float
    t: float
    failure: str | None
    connect_failure: bool = False
    connect_t: float | None = None
    tls_version: str | None = None
    cipher_suite: str | None = None
    negotiated_protocol: str | None = None
    peer_certificates: tuple[str, ...] = ()
    chain_source: ChainSource = "none"
    verification_failure: str | None = None
    verified_anchor: str | None = None
    verification_policy: PolicyName = "webpki"

    @property
    def verified(self) -> bool:
        """Handshake completed and the chain verified for the SNI."""
        return self.failure is None and self.verification_failure is None


@functools.lru_cache(maxsize=16)
def _handshake_context(alpn: tuple[str, ...]) -> ssl.SSLContext:
    """A client context that completes any handshake: no verification, ALPN offered.

    Cached per ALPN tuple: building an SSLContext costs ~0.1 ms, and the context holds
    no per-connection state (make bench).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[list[bytes], ChainSource]:
    """The DER certificates the peer sent, leaf first, and how they were obtained.

    ``get_unverified_chain()`` (public on 3.13+, on the private ``_sslobj`` before)
    gives the whole chain as sent; otherwise only the leaf is available.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        try:
            certs = getter() or []
            ders = [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in certs]
        except Exception:  # private API: any surprise means "use the fallback"
            ders = []
        if ders:
            return ders, "full"
    leaf = ssl_object.getpeercert(binary_form=True)
    return ([leaf], "leaf_only") if leaf else ([], "none")


class OpenTLS:
    """A completed handshake's connection, kept open so the HTTP GET can go over it (issue 13).

    OONI v0.5 does the same (ooni/probe-cli ``internal/experiment/webconnectivitylte/secureflow.go``:
    the TLS connection whose handshake is recorded is handed to the HTTP transport through a
    single-use dialer). :func:`probe.measure.http.http_get` takes it for its first hop
    (:meth:`take`) when the endpoint, SNI and protocol fit; whoever holds it closes it
    (:meth:`close`) when it was not taken.

    Attributes:
        ip, port: the logical endpoint.
        server_name: the SNI sent (A-label), None = none.
        negotiated_protocol: the ALPN result (None = the server chose none).
        verified: the chain verified for the SNI (:meth:`TrustStore.verify`).
    """

    __slots__ = ("ip", "port", "server_name", "negotiated_protocol", "verified", "_reader", "_writer", "_done",
                 "taken")

    def __init__(self, *, ip: str, port: int, server_name: str | None, negotiated_protocol: str | None,
                 verified: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.ip, self.port, self.server_name = ip, port, server_name
        self.negotiated_protocol, self.verified = negotiated_protocol, verified
        self._reader, self._writer = reader, writer
        self._done = False
        self.taken = False  #: handed over by :meth:`take`

    @property
    def http11(self) -> bool:
        """The server agreed to HTTP/1.1 (ALPN http/1.1, or no ALPN answer: HTTP/1.1 by default)."""
        return self.negotiated_protocol in (None, "http/1.1")

    def usable(self) -> bool:
        """Not taken or closed yet, still open, and nothing received since the handshake
        (a server that closed an idle connection, or sent bytes unasked, gets a fresh one)."""
        if self._done or self._writer.transport.is_closing():
            return False
        r = self._reader
        return r.exception() is None and not r.at_eof() and not getattr(r, "_buffer", b"")

    def take(self) -> asyncio.Transport:
        """The TLS transport, handed over once (the caller sets its protocol and closes it)."""
        assert not self._done, "OpenTLS taken or closed already"
        self._done = self.taken = True
        return self._writer.transport  # type: ignore[return-value]

    def close(self) -> None:
        """Close the connection unless it was taken (idempotent; TLS close_notify in the background)."""
        if not self._done:
            self._done = True
            self._writer.close()


async def tls_handshake(
    ip: str,
    port: int,
    *,
    server_name: str | None,
    clock: Clock,
    connect_timeout_s: float,
    tls_timeout_s: float,
    trust: TrustStore,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    connect_to: ConnectTo | None = None,
) -> TLSHandshake:
    """Connect to ``ip``:``port``, handshake with SNI ``server_name``, capture and verify.

    Args:
        ip, port: logical endpoint (IP literal).
        server_name: SNI to send and the name to verify; None = no SNI, chain-only
            verification.
        clock: measurement time base.
        connect_timeout_s: TCP connect deadline (seconds).
        tls_timeout_s: handshake deadline (seconds), counted after the connect.
        trust: anchors and policy for the verification step.
        alpn: ALPN protocols to offer (RFC 7301), in preference order.
        connect_to: dial elsewhere (tests, lab).

    Returns:
        A :class:`TLSHandshake`. The connection is closed before returning.

    Raises:
        ValueError: ``ip`` is not an IP literal, or ``server_name`` is not a valid DNS name
            (:class:`probe.names.HostError`, e.g. ``'☃.net'``: IDNA 2008 refuses it).
    """
    h, conn = await tls_handshake_open(ip, port, server_name=server_name, clock=clock,
                                       connect_timeout_s=connect_timeout_s, tls_timeout_s=tls_timeout_s,
                                       trust=trust, alpn=alpn, connect_to=connect_to, keep=False)
    assert conn is None
    return h


async def tls_handshake_open(
    ip: str,
    port: int,
    *,
    server_name: str | None,
    clock: Clock,
    connect_timeout_s: float,
    tls_timeout_s: float,
    trust: TrustStore,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    connect_to: ConnectTo | None = None,
    keep: bool = True,
) -> tuple[TLSHandshake, OpenTLS | None]:
    """:func:`tls_handshake`, keeping the connection open when the handshake completed.

    Returns:
        ``(record, conn)``: ``conn`` is the open connection (an :class:`OpenTLS` the caller
        must :meth:`~OpenTLS.close` unless something took it) when ``keep`` and the handshake
        completed, else None (the connection is closed, as :func:`tls_handshake` does).
    """
    # an IP literal is checked against the IP SAN and sends no SNI (RFC 6066 §3); a name is its A-label
    sni = (server_name if parse_ip(server_name) is not None else to_alabel(server_name)) if server_name else None
    base = dict(ip=ip, port=port, server_name=sni, alpn_offered=tuple(alpn),
                verification_policy=trust.policy)
    t0 = clock.now()
    try:
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await open_tcp(ip, port, connect_to=connect_to)
    except (OSError, TimeoutError, EOFError) as exc:
        t = clock.now()
        return TLSHandshake(**base, t0=t0, t=t, connect_t=t, failure=classify(exc, "connect"),
                            connect_failure=True), None
    connect_t = clock.now()
    try:
        async with asyncio.timeout(tls_timeout_s):
            # "" (not None) so asyncio does not fall back to the dialled IP as the name
            await writer.start_tls(_handshake_context(alpn), server_hostname=sni or "")
    except (OSError, TimeoutError, EOFError) as exc:  # ssl.SSLError is an OSError
        t = clock.now()
        writer.transport.abort()
        return TLSHandshake(**base, t0=t0, t=t, connect_t=connect_t,
                            failure=classify(exc, "tls_handshake")), None
    t = clock.now()
    ssl_object = writer.get_extra_info("ssl_object")
    cipher = ssl_object.cipher()
    chain, source = peer_chain(ssl_object)
    version = ssl_object.version()
    negotiated = ssl_object.selected_alpn_protocol()
    if not keep:
        await close_writer(writer)
    vfailure, anchor = trust.verify(chain, sni)
    record = TLSHandshake(
        **base, t0=t0, t=t, connect_t=connect_t, failure=None,
        tls_version=version,
        cipher_suite=cipher[0] if cipher else None,
        negotiated_protocol=negotiated,
        peer_certificates=tuple(base64.b64encode(d).decode("ascii") for d in chain),
        chain_source=source,
        verification_failure=vfailure,
        verified_anchor=anchor,
    )
    if not keep:
        return record, None
    return record, OpenTLS(ip=ip, port=port, server_name=sni, negotiated_protocol=negotiated,
                           verified=vfailure is None, reader=reader, writer=writer)
