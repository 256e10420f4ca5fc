"""TCP connect primitive. CONTRACT (filled in by the TCP/TLS/HTTP work item)."""

from __future__ import annotations

from dataclasses import dataclass

from probe.addresses import ConnectTo
from probe.timing import Clock


@dataclass(frozen=True, kw_only=True)
class TCPConnect:
    """One TCP connect (OONI df-005 ``tcp_connect[]`` entry).

    Attributes:
        ip, port: the logical endpoint (what DNS returned), even when
            :class:`ConnectTo` dialled elsewhere.
        t0, t: seconds since measurement start.
        failure: connection_refused, connection_reset, generic_timeout_error,
            host_unreachable, network_unreachable, ...; None = connected.
    """

    ip: str
    port: int
    t0: float
    t: float
    failure: str | None

    @property
    def success(self) -> bool:
        return self.failure is None


async def tcp_connect(
    ip: str, port: int, *, clock: Clock, timeout_s: float, connect_to: ConnectTo | None = None
) -> TCPConnect:
    raise NotImplementedError
