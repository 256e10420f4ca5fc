"""TCP connect primitive (OONI df-005 ``tcp_connect``).

:func:`tcp_connect` opens one TCP connection to one endpoint with a deadline, records
how long it took and how it ended, and closes the socket again: the record says
whether the endpoint was reachable, nothing more. It never raises for network errors;
the outcome is the record's ``failure`` string (see :mod:`probe.failures`):
``connection_refused`` (RST to the SYN), ``generic_timeout_error`` (no answer within
``timeout_s``: a blackhole, or SYNs dropped), ``host_unreachable`` /
``network_unreachable`` (ICMP or no route), ``connection_reset`` ...

Endpoints are *logical*: the record carries the ``ip``/``port`` DNS returned, while the
socket dials ``connect_to.resolve(ip, port)`` (loopback tests and the lab remap
documentation addresses onto local servers; production passes no map).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from probe.addresses import ConnectTo, parse_ip
from probe.failures import classify
from probe.timing import Clock


@dataclass(frozen=True, kw_only=True)
class TCPConnect:
    """One TCP connect (OONI df-005 ``tcp_connect[]`` entry).

    Attributes:
        ip, port: the logical endpoint (what DNS returned), even when
            :class:`ConnectTo` dialled elsewhere.
        t0, t: seconds since measurement start (:meth:`Clock.now`), before the
            connect and when it completed or failed.
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
        """True when the three-way handshake completed."""
        return self.failure is None


async def open_tcp(
    ip: str, port: int, *, connect_to: ConnectTo | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to the dial address of the logical endpoint ``(ip, port)``.

    Shared by :func:`tcp_connect` and the TLS primitive. The caller applies the
    deadline (``asyncio.timeout``) and closes the writer.

    Raises:
        OSError (and subclasses): the connect failed; map it with
            :func:`probe.failures.classify` (operation ``"connect"``).
        ValueError: ``ip`` is not an IP address literal.
    """
    if parse_ip(ip) is None:
        raise ValueError(f"{ip!r} is not an IP address (a logical endpoint is an IP literal)")
    dial_ip, dial_port = (connect_to or ConnectTo()).resolve(ip, port)
    return await asyncio.open_connection(dial_ip, dial_port)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` within a second (then abort); errors while closing are irrelevant."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):  # a TLS close_notify may wait for the peer
            await writer.wait_closed()
    except Exception:
        writer.transport.abort()


async def tcp_connect(
    ip: str, port: int, *, clock: Clock, timeout_s: float, connect_to: ConnectTo | None = None
) -> TCPConnect:
    """Connect to ``ip``:``port`` (IPv4 or IPv6) within ``timeout_s`` seconds, then close.

    Args:
        ip, port: logical endpoint (an IP literal, as DNS returned it).
        clock: the measurement's time base for ``t0``/``t``.
        timeout_s: connect deadline in seconds.
        connect_to: dial elsewhere (tests, lab); None = dial ``ip``:``port``.

    Returns:
        A :class:`TCPConnect`; ``failure`` None when the connection was established.

    Raises:
        ValueError: ``ip`` is not an IP address literal (a bug in the caller).
    """
    t0 = clock.now()
    failure: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await open_tcp(ip, port, connect_to=connect_to)
    except (OSError, TimeoutError, EOFError) as exc:
        failure = classify(exc, "connect")
    t = clock.now()
    if failure is None:
        await close_writer(writer)
    return TCPConnect(ip=ip, port=port, t0=t0, t=t, failure=failure)
