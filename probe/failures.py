"""OONI failure strings, and the mapping from Python exceptions to them, per operation.

The vocabulary is OONI's (df-007-errors, and ``netxlite/errorsx`` in ooni/probe-cli).
Every measurement primitive reports a failed step as one of these strings in its
record's ``failure`` field; ``None`` means the step worked. Anything we cannot map
becomes ``"unknown_failure: <text>"``, exactly as OONI does.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Final, Literal

Operation = Literal["resolve", "connect", "tls_handshake", "http_round_trip", "read"]

# Generic / socket level
GENERIC_TIMEOUT: Final = "generic_timeout_error"
CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION_RESET: Final = "connection_reset"
CONNECTION_ABORTED: Final = "connection_aborted"
HOST_UNREACHABLE: Final = "host_unreachable"
NETWORK_UNREACHABLE: Final = "network_unreachable"
NETWORK_DOWN: Final = "network_down"
ADDRESS_FAMILY_NOT_SUPPORTED: Final = "address_family_not_supported"
ADDRESS_NOT_AVAILABLE: Final = "address_not_available"
EOF_ERROR: Final = "eof_error"
INTERRUPTED: Final = "interrupted"
# DNS
DNS_NXDOMAIN: Final = "dns_nxdomain_error"
DNS_NO_ANSWER: Final = "dns_no_answer"
DNS_REFUSED: Final = "dns_refused_error"
DNS_SERVFAIL: Final = "dns_servfail_error"
DNS_SERVER_MISBEHAVING: Final = "dns_server_misbehaving"
DNS_TEMPORARY_FAILURE: Final = "dns_temporary_failure"
DNS_NON_RECOVERABLE: Final = "dns_non_recoverable_failure"
DNS_BOGON: Final = "dns_bogon_error"
# TLS
SSL_UNKNOWN_AUTHORITY: Final = "ssl_unknown_authority"
SSL_INVALID_HOSTNAME: Final = "ssl_invalid_hostname"
SSL_INVALID_CERTIFICATE: Final = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE: Final = "ssl_failed_handshake"
# HTTP
HTTP_INVALID_REDIRECT: Final = "http_invalid_redirect_location_host"
HTTP_TOO_MANY_REDIRECTS: Final = "http_too_many_redirects"
HTTP_PROTOCOL_ERROR: Final = "http_protocol_error"
# kzprobe's own (no OONI equivalent): a DNS answer or a redirect pointed into the vantage's
# own network, or into private space from a public or verified-HTTPS origin; nothing was
# connected to (probe/localnet.py, issue 11).
LOCAL_NETWORK_REFUSED: Final = "local_network_refused"

KNOWN: Final[frozenset[str]] = frozenset(
    v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and k != "KNOWN"
)

_ERRNO: Final[dict[int, str]] = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_ABORTED,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ENETDOWN: NETWORK_DOWN,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
    errno.EAFNOSUPPORT: ADDRESS_FAMILY_NOT_SUPPORTED,
    errno.EADDRNOTAVAIL: ADDRESS_NOT_AVAILABLE,
    errno.EPIPE: CONNECTION_RESET,
}

_GAI: Final[dict[int, str]] = {
    socket.EAI_NONAME: DNS_NXDOMAIN,
    socket.EAI_AGAIN: DNS_TEMPORARY_FAILURE,
    socket.EAI_FAIL: DNS_NON_RECOVERABLE,
}
if hasattr(socket, "EAI_NODATA"):
    _GAI[socket.EAI_NODATA] = DNS_NO_ANSWER


def unknown(exc: BaseException) -> str:
    """OONI's catch-all: ``"unknown_failure: <exception text>"``."""
    text = str(exc) or type(exc).__name__
    return f"unknown_failure: {text}"


#: OpenSSL ``X509_V_ERR_*`` codes (``SSLCertVerificationError.verify_code``) whose OONI
#: equivalent is not ``ssl_invalid_certificate`` (Go: x509.UnknownAuthorityError and
#: x509.HostnameError; everything else is a x509.CertificateInvalidError).
_X509_VERIFY_CODES: Final[dict[int, str]] = {
    2: SSL_UNKNOWN_AUTHORITY,  # UNABLE_TO_GET_ISSUER_CERT
    18: SSL_UNKNOWN_AUTHORITY,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: SSL_UNKNOWN_AUTHORITY,  # SELF_SIGNED_CERT_IN_CHAIN
    20: SSL_UNKNOWN_AUTHORITY,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: SSL_UNKNOWN_AUTHORITY,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    27: SSL_UNKNOWN_AUTHORITY,  # CERT_UNTRUSTED
    62: SSL_INVALID_HOSTNAME,  # HOSTNAME_MISMATCH
    64: SSL_INVALID_HOSTNAME,  # IP_ADDRESS_MISMATCH
}


def _ssl_failure(exc: ssl.SSLError) -> str:
    reason = (getattr(exc, "reason", None) or "").upper()
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if isinstance(code, int) and code in _X509_VERIFY_CODES:
            return _X509_VERIFY_CODES[code]
        if "HOSTNAME" in reason or "Hostname mismatch" in str(exc):
            return SSL_INVALID_HOSTNAME
        if "UNABLE_TO_GET_ISSUER" in str(exc) or "self-signed" in str(exc) or "self signed" in str(exc):
            return SSL_UNKNOWN_AUTHORITY
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError) or "UNEXPECTED_EOF" in reason:
        return EOF_ERROR
    if isinstance(exc, ssl.SSLZeroReturnError):
        return EOF_ERROR
    return SSL_FAILED_HANDSHAKE


def classify(exc: BaseException, operation: Operation) -> str:
    """Map an exception raised during ``operation`` to an OONI failure string.

    Args:
        exc: the exception the network step raised.
        operation: which step failed; it disambiguates e.g. an EOF during a TLS
            handshake (``eof_error``) from one during DNS.

    Returns:
        A string from :data:`KNOWN`, or ``"unknown_failure: ..."``.
    """
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return GENERIC_TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return INTERRUPTED
    if isinstance(exc, ssl.SSLError):
        return _ssl_failure(exc)
    if isinstance(exc, socket.gaierror):
        return _GAI.get(exc.errno, unknown(exc)) if exc.errno is not None else unknown(exc)
    if isinstance(exc, asyncio.IncompleteReadError) or isinstance(exc, EOFError):
        return EOF_ERROR
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError):
        # asyncio's TLS layer (sslproto) reports a FIN received mid-handshake as a bare
        # ConnectionResetError() without errno; a real RST carries ECONNRESET.
        if exc.errno is None and operation == "tls_handshake":
            return EOF_ERROR
        return CONNECTION_RESET
    if isinstance(exc, ConnectionAbortedError):
        return CONNECTION_ABORTED
    if isinstance(exc, BrokenPipeError):
        return CONNECTION_RESET
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    # OSError subclasses raised by asyncio for multi-address connects carry the text only
    if isinstance(exc, OSError) and exc.errno is None and "Connect call failed" in str(exc):
        for sub, code in (("refused", CONNECTION_REFUSED), ("unreachable", HOST_UNREACHABLE)):
            if sub in str(exc).lower():
                return code
    return unknown(exc)


def classify_aiohttp(exc: BaseException, *, tls: bool) -> str:
    """Map what an aiohttp client request raised to an OONI failure string (one mapping for
    the HTTP primitive, DoH and the helper client).

    aiohttp wraps the socket and TLS errors; this unwraps them and applies OONI's rule
    (``netxlite/errorsx``): the failure names what the network did, not the wrapper.

    * ``ClientConnectorCertificateError``: the certificate verification (``ssl_unknown_authority``,
      ``ssl_invalid_hostname``, ``ssl_invalid_certificate``).
    * ``ClientConnectorError``: the connect or, for ``tls=True``, the TLS handshake; aiohttp does
      not tell them apart, and the two differ only for asyncio's errno-less
      ``ConnectionResetError`` — a FIN during the handshake, which Go sees as ``io.EOF``:
      ``eof_error``. A real RST carries ``ECONNRESET`` in both phases: ``connection_reset``.
    * ``ServerDisconnectedError``: the server closed cleanly (FIN) before the whole response
      head came: ``eof_error`` (a RST there is a ``ClientOSError`` with ``ECONNRESET``).
    * ``ClientPayloadError``: the body ended early. A RST (aiohttp keeps only the text of the
      connection error: ``"… ConnectionResetError(104, …)"``) is ``connection_reset``, as Go's
      read returns ``ECONNRESET``; a FIN before Content-Length or the last chunk is
      ``eof_error`` (Go: ``io.ErrUnexpectedEOF``, which OONI maps to ``eof_error``).
    * Parse errors of the status line or headers: ``http_protocol_error``; timeouts:
      ``generic_timeout_error``; other socket errors by their errno; anything else
      ``unknown_failure: …``.

    Args:
        exc: the exception.
        tls: whether the request's connection was TLS (https).
    """
    import aiohttp
    from aiohttp.http_exceptions import ContentLengthError, HttpProcessingError, TransferEncodingError

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return classify(exc.certificate_error, "tls_handshake")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return classify(exc.os_error, "tls_handshake" if tls else "connect")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return EOF_ERROR
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return GENERIC_TIMEOUT
    if isinstance(exc, aiohttp.ClientPayloadError):
        text = str(exc)
        if "ConnectionResetError" in text or "Connection reset" in text:
            return CONNECTION_RESET
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ContentLengthError, TransferEncodingError)):
            return EOF_ERROR  # body ended before Content-Length / the last chunk
        if isinstance(cur, HttpProcessingError):
            return HTTP_PROTOCOL_ERROR
        if isinstance(cur, (ssl.SSLError, ConnectionError, TimeoutError, EOFError, asyncio.IncompleteReadError)):
            return classify(cur, "read")
        if isinstance(cur, OSError) and cur.errno is not None:
            return classify(cur, "read")
        cur = cur.__cause__ or cur.__context__
    if isinstance(exc, aiohttp.ClientPayloadError):
        return EOF_ERROR
    return unknown(exc)
