"""The result of a control (what was seen from outside the censored network): plain data.

:mod:`probe.control` measures it and :mod:`probe.helper.api` carries it over the wire; both import
these types from here, so neither imports the other lazily to dodge an import cycle (issue 10).
:mod:`probe.control` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from probe.addresses import format_endpoint
from probe.measure import dns

__all__ = ["ControlEndpoint", "ControlHTTP", "ControlResult", "ControlSource"]

ControlSource = Literal["doh", "helper", "local"]


@dataclass(frozen=True, kw_only=True)
class ControlEndpoint:
    """What the control saw at one endpoint.

    Attributes:
        ip, port: the endpoint.
        tcp_failure: failure string of the control's TCP connect; None = connected.
        tls_attempted: a TLS handshake with the target SNI was tried.
        tls_failure: handshake failure; None = completed (or not attempted).
        tls_verification_failure: verification failure of the chain the control got.
        tls_issuer: RFC 4514 issuer DN of the control's leaf (None if none).
        tls_leaf_spki_sha256: hex SHA-256 of the control's leaf SPKI (None if none).
    """

    ip: str
    port: int
    tcp_failure: str | None
    tls_attempted: bool = False
    tls_failure: str | None = None
    tls_verification_failure: str | None = None
    tls_issuer: str | None = None
    tls_leaf_spki_sha256: str | None = None

    @property
    def tls_ok(self) -> bool:
        """The control completed a handshake with the target SNI here."""
        return self.tls_attempted and self.tcp_failure is None and self.tls_failure is None


@dataclass(frozen=True, kw_only=True)
class ControlHTTP:
    """The control's fetch of the input URL (final hop of its redirect chain).

    ``failure`` None means a response was received; then the other fields are set.
    ``body_truncated`` follows the probe's rule (FIELD-CASES FC-15).
    """

    failure: str | None
    final_url: str | None = None
    status_code: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    title: str | None = None
    body_length: int | None = None
    body_truncated: bool = False
    body_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class ControlResult:
    """One control observation for an input.

    Attributes:
        source: "doh", "helper" or "local".
        failure: the control itself could not be used (unreachable, refused, its TLS
            intercepted, ...): a failure string; None = usable. When set, no verdict
            may rest on this control.
        dns_failure: the control's own DNS failure (``dns_nxdomain_error`` ...);
            None = it resolved the name.
        dns_addresses: the control's A/AAAA answers.
        dns_queries: raw DNS evidence (DoH queries), possibly empty.
        endpoints: per "ip:port" (formatted with :func:`format_endpoint`); empty for DoH.
        http: the control's HTTP result; None for DoH (no HTTP control).
        refused: "ip:port" endpoints the control would not contact (its address or
            port policy); the verdict treats them as untested.
        skipped: "ip:port" endpoints left unmeasured for a bound, not a policy: beyond the
            helper's ``max_measured_endpoints`` (the probe's own endpoints are measured first), or
            beyond the entries the probe takes from a reply (:data:`probe.helper.api.MAX_REPLY_ENDPOINTS`);
            untested, like ``refused`` (absent from ``endpoints``).
    """

    source: ControlSource
    failure: str | None
    dns_failure: str | None = None
    dns_addresses: tuple[str, ...] = ()
    dns_queries: tuple[dns.DNSQuery, ...] = ()
    endpoints: dict[str, ControlEndpoint] = field(default_factory=dict)
    http: ControlHTTP | None = None
    refused: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.failure is None

    def endpoint(self, ip: str, port: int) -> ControlEndpoint | None:
        return self.endpoints.get(format_endpoint(ip, port))
