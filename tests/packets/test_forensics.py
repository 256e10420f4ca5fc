"""Reset/drop forensics on loopback: a server that resets itself (same TTL: genuine), one whose
reset leaves with another TTL (as an injector's), one that stays silent, one that answers."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from probe.packets.forensics import ip_ids_differ, reset_forensics
from probe.packets.trigger import client_hello, http_request, make_trigger
from probe.timing import Clock

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _reset(writer: asyncio.StreamWriter, ttl: int | None = None) -> None:
    s = writer.get_extra_info("socket")
    if ttl is not None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def rst_same(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(4096)
    _reset(w)


async def rst_other_ttl(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(4096)
    _reset(w, ttl=57)  # the SYN-ACK left with 64


async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(4096)
    await asyncio.sleep(10)


async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(4096)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await w.drain()
    w.close()


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(h: Handler) -> int:
        srv = await asyncio.start_server(h, "127.0.0.30", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize(("handler", "outcome", "injected"), [
    (rst_same, "rst", False),
    (rst_other_ttl, "rst", True),
    (silent, "silence", None),
    (answer, "data", None),
])
async def test_forensics(need_capture: None, server: Callable[[Handler], Awaitable[int]], handler: Handler,
                         outcome: str, injected: bool | None) -> None:
    port = await server(handler)
    r = await reset_forensics("127.0.0.30", port, client_hello("meduza.io"), trigger="tls", clock=Clock(), wait_s=1.0)
    assert r.failure is None and r.outcome == outcome
    assert r.synack is not None and r.synack.flags == "SA" and r.synack.ttl == 64
    assert r.injected is injected
    if outcome == "rst":
        assert r.ender is not None and "R" in r.ender.flags and r.ender.ttl == (57 if injected else 64)
        assert r.ender.hops_est == (8 if injected else 1)


async def test_connect_refused_is_recorded(need_capture: None) -> None:
    s = socket.socket()
    s.bind(("127.0.0.30", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: the kernel answers the SYN with a RST
    r = await reset_forensics("127.0.0.30", port, b"x", trigger="http", clock=Clock())
    assert r.outcome == "syn_rst" and r.synack is None and r.ender is not None and r.injected is None


@pytest.mark.parametrize(("synack", "ender", "want"), [
    (0, 31337, False),      # Linux: SYN-ACK with ID 0, then a counter
    (4000, 0, True),        # a constant-0 forged RST after a counting server
    (4000, 4003, False),
    (4000, 30000, True),
    (65530, 5, False),      # wrap-around
    (0, 0, False),
])
def test_ip_ids_differ(synack: int, ender: int, want: bool) -> None:
    assert ip_ids_differ(synack, ender) is want


def test_triggers() -> None:
    ch = client_hello("meduza.io")
    assert ch[0] == 0x16 and b"meduza.io" in ch  # a TLS handshake record naming the SNI
    assert http_request("meduza.io", "/x").startswith(b"GET /x HTTP/1.1\r\nHost: meduza.io\r\n")
    t = make_trigger("https", "meduza.io", benign_name="example.com")
    assert (t.kind, t.port) == ("tls", 443) and b"example.com" in t.benign and b"meduza.io" not in t.benign
    t = make_trigger("http", "meduza.io", benign_name="example.com", port=8080)
    assert (t.kind, t.port) == ("http", 8080) and b"Host: example.com" in t.benign


async def test_a_syn_reset_is_compared_with_the_other_ports_synack(
        need_capture: None, server: Callable[[Handler], Awaitable[int]]) -> None:
    """A RST to the SYN has no handshake of its own: the same server's other port gives the SYN-ACK
    (here the kernel's RST of a closed port and its SYN-ACK of an open one: one sender, one TTL)."""
    other = await server(answer)
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.30", 0))
    b.bind(("127.0.0.30", 0))
    closed, closed2 = a.getsockname()[1], b.getsockname()[1]
    a.close()
    b.close()
    r = await reset_forensics("127.0.0.30", closed, b"x", trigger="http", clock=Clock(), other_port=other)
    assert r.outcome == "syn_rst" and r.synack_port == other
    assert r.synack is not None and r.synack.flags == "SA" and r.ender is not None and "R" in r.ender.flags
    assert r.injected is False and r.synack.ttl == r.ender.ttl == 64
    assert r.packets_sent >= 2  # the SYN, then the other port's SYN (+ its ACK and closing RST)
    # the other port refused too: nothing to compare, the RST is still recorded
    r = await reset_forensics("127.0.0.30", closed, b"x", trigger="http", clock=Clock(), other_port=closed2)
    assert r.outcome == "syn_rst" and r.synack is None and r.synack_port is None and r.injected is None


class _BindTo(socket.socket):
    """A TCP socket whose bind to port 0 takes :attr:`port`: the kernel's reuse of a freed local
    port, made to happen (it does at times: centrace measured 126 reuses in 2,000 bind/close cycles)."""

    port = 0

    def bind(self, address: object) -> None:
        host, port = address  # type: ignore[misc]
        super().bind((host, port or self.port))


async def test_a_reset_kept_from_an_earlier_connection_on_the_same_local_port_is_not_this_ones(
        need_capture: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Port reuse (as centrace's answers_probe): under one capture, a connection from local port X
    was refused (the server's RST to X is kept); then the port is listened on, its accept queue full
    (backlog 0, one connection never accepted), so the next SYN is dropped, and the forensics'
    connection gets X again. Its SYN drew nothing: ``syn_timeout``. Before the fix the kept RST,
    looked up by (address, port) only, made it ``syn_rst`` with that RST as the ender."""
    from probe.packets import forensics
    from probe.packets.capture import TCP, Capture

    probe_port = socket.socket()
    probe_port.bind(("127.0.0.30", 0))
    port = probe_port.getsockname()[1]
    probe_port.close()  # nothing listens there yet: a SYN is refused
    clock = Clock()
    async with Capture(["127.0.0.30"], clock=clock, proto=TCP) as cap:
        old = socket.socket()
        old.bind(("0.0.0.0", 0))
        reused = old.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            old.connect(("127.0.0.30", port))
        old.close()
        assert await cap.wait_for(lambda p: forensics.from_server(p, "127.0.0.30", port, reused)
                                  and bool((p.flags or 0) & forensics.RST), 1.0) is not None  # the RST kept
        listener = socket.socket()
        listener.bind(("127.0.0.30", port))
        listener.listen(0)
        filler = socket.create_connection(("127.0.0.30", port), timeout=2)  # fills the queue: no accept
        monkeypatch.setattr(_BindTo, "port", reused)
        ns = type(socket)("socket_reusing")
        ns.__dict__.update({k: v for k, v in vars(socket).items() if not k.startswith("__")})
        ns.socket = _BindTo  # type: ignore[attr-defined]
        monkeypatch.setattr(forensics, "socket", ns)
        try:
            r = await reset_forensics("127.0.0.30", port, b"x", trigger="http", clock=clock, capture=cap,
                                      connect_timeout_s=0.5)
        finally:
            filler.close()
            listener.close()
    assert r.failure is None, r.failure
    assert r.outcome == "syn_timeout" and r.ender is None and r.synack is None and r.injected is None, r
    assert r.packets_sent == 1  # its own SYN (not the earlier connection's)
