"""The server side of the benchmark, run as its own process: ``python -m bench.servers CONFIG``.

One asyncio loop serves, all on 127.0.0.1 with kernel-chosen ports:

* ``n_servers`` HTTPS listeners (aiohttp), one per logical address of
  :mod:`bench.world`, each serving the same ~10 KB HTML page at every path; TLS with
  a trustme leaf for ``*.bench.example`` (ECDSA P-256), ALPN ``http/1.1``;
* a UDP DNS server answering from :func:`bench.world.dns_reply`;
* a DoH server (RFC 8484, POST and GET at ``/dns-query``) with the same answers, on its
  own HTTPS listener (the leaf also names 127.0.0.1).

CONFIG is a JSON file: ``{"cert_chain": PEM path, "key": PEM path, "n_servers": int,
"page_bytes": int}``. When everything listens, one JSON line goes to stdout:
``{"web_ports": [...], "dns_port": p, "doh_port": p}``. The process stops cleanly
when its stdin reaches EOF (the parent closed it or died) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import signal
import socket
import ssl
import sys
from typing import Any

from aiohttp import web

from bench.world import dns_reply, page

DNS_MESSAGE = "application/dns-message"


class _UDPDNS(asyncio.DatagramProtocol):
    def __init__(self, n_servers: int) -> None:
        self.n_servers = n_servers
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = dns_reply(data, self.n_servers)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _wait_for_stop() -> None:
    """Return on stdin EOF, SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.TaskGroup() as tg:
            async def on_eof() -> None:
                while await reader.read(4096):
                    pass
                stop.set()

            eof_task = tg.create_task(on_eof())
            await stop.wait()
            eof_task.cancel()
    finally:
        transport.close()


async def serve(config: dict[str, Any]) -> None:
    n_servers = int(config["n_servers"])
    body = page(int(config.get("page_bytes", 10 * 1024)))
    ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ssl_ctx.load_cert_chain(config["cert_chain"], config["key"])
    # "h2,http/1.1": the server picks h2 when offered (as most real sites do), though it speaks
    # HTTP/1.1 only: the probe then cannot send its GET over the handshake's connection (bench --server-alpn)
    ssl_ctx.set_alpn_protocols(list(config.get("alpn") or ["http/1.1"]))

    async def handle_page(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def handle_doh(request: web.Request) -> web.Response:
        if request.method == "POST":
            if request.content_type != DNS_MESSAGE:
                return web.Response(status=415, text="want application/dns-message")
            wire = await request.read()
        else:
            param = request.query.get("dns", "")
            try:
                wire = base64.urlsafe_b64decode(param + "=" * (-len(param) % 4))
            except (binascii.Error, ValueError):
                return web.Response(status=400, text="bad dns parameter")
        reply = dns_reply(wire, n_servers)
        if reply is None:
            return web.Response(status=400, text="malformed DNS query")
        return web.Response(body=reply, headers={"Content-Type": DNS_MESSAGE})

    web_app = web.Application()
    web_app.router.add_route("GET", "/{tail:.*}", handle_page)
    doh_app = web.Application()
    doh_app.router.add_route("POST", "/dns-query", handle_doh)
    doh_app.router.add_route("GET", "/dns-query", handle_doh)

    loop = asyncio.get_running_loop()
    web_runner = web.AppRunner(web_app, access_log=None)
    doh_runner = web.AppRunner(doh_app, access_log=None)
    await web_runner.setup()
    await doh_runner.setup()
    udp, _ = await loop.create_datagram_endpoint(lambda: _UDPDNS(n_servers), local_addr=("127.0.0.1", 0))
    try:
        web_ports = []
        for _ in range(n_servers):
            sock = _listening_socket()
            web_ports.append(sock.getsockname()[1])
            await web.SockSite(web_runner, sock, ssl_context=ssl_ctx, backlog=1024, shutdown_timeout=1.0).start()
        sock = _listening_socket()
        doh_port = sock.getsockname()[1]
        await web.SockSite(doh_runner, sock, ssl_context=ssl_ctx, backlog=1024, shutdown_timeout=1.0).start()
        ready = {"web_ports": web_ports, "dns_port": udp.get_extra_info("sockname")[1], "doh_port": doh_port}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await _wait_for_stop()
    finally:
        udp.close()
        await web_runner.cleanup()
        await doh_runner.cleanup()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.servers CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        config = json.load(f)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
