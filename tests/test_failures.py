"""Exception → OONI failure string, per operation (table-driven)."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import pytest

from probe import failures
from probe.failures import classify


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, message)
    e.verify_code = code  # type: ignore[attr-defined]
    e.verify_message = message  # type: ignore[attr-defined]
    return e


CASES = [
    (TimeoutError(), "connect", "generic_timeout_error"),
    (TimeoutError(), "tls_handshake", "generic_timeout_error"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect", "connection_refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), "tls_handshake", "connection_reset"),
    (ConnectionResetError(), "tls_handshake", "eof_error"),  # asyncio's FIN mid-handshake
    (ConnectionResetError(errno.ECONNRESET, "reset"), "http_round_trip", "connection_reset"),
    (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "read", "connection_aborted"),
    (BrokenPipeError(errno.EPIPE, "pipe"), "http_round_trip", "connection_reset"),
    (OSError(errno.EHOSTUNREACH, "no route"), "connect", "host_unreachable"),
    (OSError(errno.ENETUNREACH, "unreachable"), "connect", "network_unreachable"),
    (OSError(errno.ENETDOWN, "down"), "connect", "network_down"),
    (OSError(errno.ETIMEDOUT, "timed out"), "connect", "generic_timeout_error"),
    (OSError(errno.EAFNOSUPPORT, "af"), "connect", "address_family_not_supported"),
    (OSError(errno.EADDRNOTAVAIL, "addr"), "connect", "address_not_available"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "resolve", "dns_nxdomain_error"),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), "resolve", "dns_temporary_failure"),
    (socket.gaierror(socket.EAI_FAIL, "Non-recoverable"), "resolve", "dns_non_recoverable_failure"),
    (asyncio.IncompleteReadError(b"", 5), "read", "eof_error"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "tls_handshake", "eof_error"),
    (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), "tls_handshake", "eof_error"),
    (ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure"), "tls_handshake",
     "ssl_failed_handshake"),
    (_verify_error(20, "unable to get local issuer certificate"), "tls_handshake", "ssl_unknown_authority"),
    (_verify_error(18, "self-signed certificate"), "tls_handshake", "ssl_unknown_authority"),
    (_verify_error(19, "self-signed certificate in certificate chain"), "tls_handshake", "ssl_unknown_authority"),
    (_verify_error(62, "Hostname mismatch, certificate is not valid for 'x'."), "tls_handshake",
     "ssl_invalid_hostname"),
    (_verify_error(64, "IP address mismatch"), "tls_handshake", "ssl_invalid_hostname"),
    (_verify_error(10, "certificate has expired"), "tls_handshake", "ssl_invalid_certificate"),
    (asyncio.CancelledError(), "connect", "interrupted"),
    (ValueError("odd"), "http_round_trip", "unknown_failure: odd"),
]


@pytest.mark.parametrize("exc,op,expected", CASES, ids=[f"{type(c[0]).__name__}-{c[2]}" for c in CASES])
def test_classify(exc: BaseException, op: failures.Operation, expected: str) -> None:
    assert classify(exc, op) == expected


def test_every_constant_is_in_the_vocabulary() -> None:
    assert {c[2] for c in CASES if not c[2].startswith("unknown_failure")} <= failures.KNOWN
    assert all(s == s.lower() and " " not in s for s in failures.KNOWN)
