"""TLS handshake primitive with full-chain capture, and chain verification.

CONTRACT (filled in by the TCP/TLS/HTTP work item).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from probe.addresses import ConnectTo
from probe.timing import Clock

ChainSource = Literal["full", "leaf_only", "none"]
PolicyName = Literal["webpki", "relaxed"]


class TrustStore:
    """Trust anchors for verification: certifi's Mozilla roots plus extra anchors.

    Args:
        extra_anchors_pem: PEM bytes of extra roots (lab CA, a test CA), or None.
        include_mozilla: load certifi's bundle (True in production).
        policy: "webpki" = strict CA/B-Forum profile (production);
            "relaxed" = same chain building, relaxed extension policy for test CAs
            such as trustme's (DESIGN.md, known pitfalls).

    Raises:
        ValueError: when ``extra_anchors_pem`` holds no parseable certificate.
    """

    def __init__(self, *, extra_anchors_pem: bytes | None = None, include_mozilla: bool = True,
                 policy: PolicyName = "webpki") -> None:
        raise NotImplementedError

    def verify(self, chain_der: list[bytes], server_name: str | None, *, at: datetime | None = None
               ) -> tuple[str | None, str | None]:
        """Verify ``chain_der`` (leaf first, as sent) for ``server_name`` (DNS name or IP).

        Returns:
            ``(failure, anchor)``: failure is None when it verifies, else
            ssl_unknown_authority / ssl_invalid_hostname / ssl_invalid_certificate;
            anchor is "mozilla" or "extra" (which set the chain ended in) or None.
        """
        raise NotImplementedError

    def ssl_context(self) -> "object":
        """An ``ssl.SSLContext`` verifying against the same anchors (for HTTP/DoH clients)."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TLSHandshake:
    """One TLS handshake (OONI df-006 ``tls_handshakes[]`` entry, plus verification).

    Attributes:
        ip, port: logical endpoint.
        server_name: SNI sent; None = no SNI.
        alpn_offered: ALPN protocols offered.
        t0, t: seconds since measurement start (connect included).
        failure: the *handshake* failure (connect failure if the connect failed:
            connection_refused, generic_timeout_error, connection_reset, eof_error,
            ssl_failed_handshake ...); None = handshake completed. The handshake runs
            with verification off so a forged chain is still captured.
        connect_failure: True when ``failure`` came from the TCP connect, not TLS.
        tls_version: "TLSv1.3" ..., cipher_suite: OpenSSL name, negotiated_protocol: ALPN result.
        peer_certificates: base64 DER certificates, as sent by the server, leaf first.
        chain_source: "full" (whole chain captured), "leaf_only" (fallback), "none".
        verification_failure: result of :meth:`TrustStore.verify` (None = verified);
            None also when the handshake failed (then nothing to verify).
        verified_anchor: "mozilla" / "extra" / None.
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
    raise NotImplementedError
