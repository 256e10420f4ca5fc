"""Configuration: one typed object from TOML + environment + flags.

(Only :class:`Timeouts` so far; the rest of the settings land with the CLI.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Per-phase timeouts, in seconds.

    Attributes:
        dns_s: one DNS query (system, UDP or DoH).
        dns_listen_s: after the first UDP reply, keep listening this long for more
            (injected duplicates; FIELD-CASES FC-07 asks for 1-2 s). Bounded by ``dns_s``.
        connect_s: one TCP connect.
        tls_s: one TLS handshake (after connect).
        http_s: one HTTP round trip including reading the (capped) body; per hop.
        measurement_s: whole web test of one input.
        run_s: whole run; ``None`` = no deadline.
    """

    dns_s: float = 5.0
    dns_listen_s: float = 1.5
    connect_s: float = 10.0
    tls_s: float = 10.0
    http_s: float = 20.0
    measurement_s: float = 90.0
    run_s: float | None = None
