"""One TCP connection from a fresh local port, for the packet tests: opened, handed over, and
closed with a RST (SO_LINGER 0), so no FIN/TIME_WAIT of ours follows the packets being studied.

Shared by :mod:`probe.packets.forensics` (the SYN-ACK to compare an ender with) and
:mod:`probe.packets.centrace` (each TTL-limited copy on its own connection)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class FreshConnection:
    """The connection's socket, its local port and whether the connect succeeded in time."""

    sock: socket.socket
    sport: int
    connected: bool


@contextlib.asynccontextmanager
async def fresh_connection(ip: str, port: int, connect_timeout_s: float) -> AsyncIterator[FreshConnection]:
    """Connect to ``ip``:``port`` from a new local port within ``connect_timeout_s``; a failed or
    timed-out connect is ``connected=False`` (data, not an exception). The socket is reset on exit."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind(("0.0.0.0", 0))
        sport = sock.getsockname()[1]
        try:
            async with asyncio.timeout(connect_timeout_s):
                await loop.sock_connect(sock, (ip, port))
            connected = True
        except (OSError, TimeoutError):
            connected = False
        yield FreshConnection(sock=sock, sport=sport, connected=connected)
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
