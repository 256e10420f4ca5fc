"""probe.packets.conn: one TCP connection from a fresh local port, reset on exit (loopback only)."""

from __future__ import annotations

import asyncio
import socket

from probe.packets.conn import fresh_connection


def test_a_listening_port_connects_and_the_socket_is_closed_after() -> None:
    async def go() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            async with fresh_connection("127.0.0.1", port, 2.0) as conn:
                assert conn.connected
                assert conn.sock.getsockname()[1] == conn.sport != 0
                assert conn.sock.getpeername() == ("127.0.0.1", port)
            assert conn.sock.fileno() == -1  # closed on exit

    asyncio.run(go())


def test_a_refused_connect_is_data_not_an_exception() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: the kernel answers the SYN with a RST

    async def go() -> None:
        async with fresh_connection("127.0.0.1", port, 2.0) as conn:
            assert not conn.connected and conn.sport != 0
        assert conn.sock.fileno() == -1

    asyncio.run(go())
