"""The ISP's transparent proxy reached by DNS (a scenario's ``dns = "relay"``, and ``"sniproxy"``:
the same proxy placed in the internet, where the control reaches it too, :mod:`probe.lab.services`).

The ISP resolver answers the relay's address (:data:`probe.lab.topology.RELAY_IP`, local on
the censor router, unreachable from the internet) in place of the site's; the relay reads the
first flight — the ClientHello's SNI on :443, the request's Host on :80 — and relays the
connection verbatim to the site that name belongs to. TLS passes through untouched: the
client gets the genuine certificate and page. This is OONI's ``netemx.ISPProxyAddress``
(webconnectivityqa ``dnsHijackingToProxyWithHTTPURL``/``...HTTPSURL``: accessible, DNS
inconsistent) and the relays seen in the field (FIELD-CASES.md FC-04).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

from probe.lab.censor import Censor, _rst, normalise_name, parse_client_hello_sni, parse_http_host


class NameRelay(Censor):
    """A relay by name: each connection goes to ``addresses[<SNI or Host>]`` on the port it came to.

    A name it does not know (or none) is reset. Listens with :meth:`Censor.start`.
    """

    def __init__(self, addresses: Mapping[str, str], **kw: object) -> None:
        super().__init__({}, forger=None, **kw)  # type: ignore[arg-type]
        self.addresses = {normalise_name(k): v for k, v in addresses.items()}

    async def start_on(self, tls_sock: socket.socket, http_sock: socket.socket) -> None:
        """Listen on sockets the caller made (:meth:`Censor.start` binds by address; the internet
        namespace's proxy address needs ``IP_FREEBIND``, :func:`probe.lab.services._tcp_listener`)."""
        for sock, handler, proto in ((tls_sock, self._handle_tls, "tls"), (http_sock, self._handle_http, "http")):
            self._servers.append(await asyncio.start_server(self._wrap(handler, proto), sock=sock))

    def _dst(self, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        sock: socket.socket = writer.get_extra_info("socket")
        return sock.getsockname()[:2]  # not redirected: the port the client asked for

    def _upstream(self, name: str | None) -> str | None:
        if not name:
            return None
        try:
            return self.addresses.get(normalise_name(name))
        except ValueError:
            return None

    async def _handle_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          dst: tuple[str, int]) -> None:
        await self._by_name(reader, writer, 443, parse_client_hello_sni, "tls")

    async def _handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           dst: tuple[str, int]) -> None:
        await self._by_name(reader, writer, 80, parse_http_host, "http")

    async def _by_name(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int,
                       parse: object, proto: str) -> None:
        first = await self._read_first(reader, parse)  # type: ignore[arg-type]
        if first is None or not first[0]:
            return
        data, name = first
        ip = self._upstream(name)
        if ip is None:
            self.stats[f"relay.{proto}.unknown_name"] += 1
            _rst(writer)
            return
        self.stats[f"relay.{proto}:{name}"] += 1
        await self._relay_plain(reader, writer, (ip, port), data, 0)
