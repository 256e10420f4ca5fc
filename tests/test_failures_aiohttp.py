"""One aiohttp-exception classifier (probe.failures.classify_aiohttp) for HTTP, DoH and the helper client.

Each row is a real loopback server doing one thing to an aiohttp request, and the OONI failure
string it must give (netxlite/errorsx: ECONNRESET → connection_reset; io.EOF and
io.ErrUnexpectedEOF → eof_error). Before issue 10, the three copies disagreed: a FIN during the
TLS handshake was eof_error for the HTTP primitive but connection_reset for DoH, and a reset
body was unknown_failure for the helper client.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from probe import failures
from probe.control import HelperControl
from probe.measure import dns, http

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def rst_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    _rst(writer)


async def fin_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()


async def rst_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(HEAD + b"x" * 10)
    await writer.drain()
    await asyncio.sleep(0.05)
    _rst(writer)


async def fin_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(HEAD + b"x" * 10)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()


async def garbage_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 abc nonsense\r\n\x00\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()


async def fin_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(5)  # the ClientHello's record header
    writer.close()


async def rst_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(5)
    _rst(writer)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Callable[..., object]) -> int:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        servers.append(srv)
        return srv.sockets[0].getsockname()[1]

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


CASES = [
    ("http", rst_head, "connection_reset"),  # ClientOSError(ECONNRESET)
    ("http", fin_head, "eof_error"),  # ServerDisconnectedError
    ("http", rst_body, "connection_reset"),  # ClientPayloadError naming ConnectionResetError
    ("http", fin_body, "eof_error"),  # ClientPayloadError(ContentLengthError): Go's ErrUnexpectedEOF
    ("http", garbage_head, "http_protocol_error"),
    ("https", fin_tls, "eof_error"),  # errno-less ConnectionResetError from asyncio's TLS layer
    ("https", rst_tls, "connection_reset"),
]


async def _aiohttp_failure(scheme: str, port: int) -> str:
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(5):
                async with session.get(f"{scheme}://127.0.0.1:{port}/", ssl=False) as resp:
                    await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return failures.classify_aiohttp(exc, tls=scheme == "https")
    raise AssertionError("the request did not fail")


@pytest.mark.parametrize(("scheme", "handler", "failure"), CASES, ids=[c[1].__name__ for c in CASES])
async def test_classify_aiohttp(serve, scheme: str, handler, failure: str) -> None:
    port = await serve(handler)
    assert await _aiohttp_failure(scheme, port) == failure


def test_http_and_doh_use_the_one_classifier() -> None:
    """The HTTP primitive and DoH delegate: no third copy to drift."""
    exc = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),  # type: ignore[arg-type]
        ConnectionResetError())
    assert http._http_failure(exc, tls=True) == dns._doh_failure(exc) == "eof_error"
    assert failures.classify_aiohttp(exc, tls=False) == "connection_reset"


@pytest.mark.parametrize(("handler", "failure"), [(rst_head, "connection_reset"), (fin_head, "eof_error"),
                                                  (rst_body, "connection_reset"), (fin_body, "eof_error")])
async def test_helper_client_uses_the_one_classifier(serve, handler, failure: str) -> None:
    port = await serve(handler)
    async with aiohttp.ClientSession() as session:
        ctl = HelperControl(base_url=f"http://127.0.0.1:{port}", token="t", session=session, timeout_s=5, retries=0)
        res = await ctl.measure("https://example.org/", "example.org", 443, [])
        assert res.failure == f"control_failure: {failure}"
        if handler in (rst_head, fin_head):  # health reads no body
            assert await ctl.health() == failure
