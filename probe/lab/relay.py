"""The ISP's transparent proxy reached by DNS (a scenario's ``dns = "relay"``, and ``"sniproxy"``:
the same proxy placed in the internet, where the control reaches it too, :mod:`probe.lab.services`).

The ISP resolver answers the relay's address (:data:`probe.lab.topology.RELAY_IP`, local on
the censor router, unreachable from the internet) in place of the site's; the relay reads the
first flight — the ClientHello's SNI on :443, the request's Host on :80 (and on the port of an input
that has one, :meth:`NameRelay.listen_on`) — and relays the
connection verbatim to the site that name belongs to. TLS passes through untouched: the
client gets the genuine certificate and page. This is OONI's ``netemx.ISPProxyAddress``
(webconnectivityqa ``dnsHijackingToProxyWithHTTPURL``/``...HTTPSURL``: accessible, DNS
inconsistent) and the relays seen in the field (FIELD-CASES.md FC-04).

Given the ISP censor's rules (``rules``, as :class:`probe.lab.censor.Censor` takes them), the relay
applies them first, by the same SNI/Host: the ISP's DPI sees the flows to its own proxy too (a
reset, a timeout or a blockpage at the spoofed address: webconnectivityqa
``tlsBlockingConnectionResetWithInconsistentDNS``, ``httpDiffWithInconsistentDNS``, whose netem DPI
rules act by SNI on any address, and by Host at the proxy's). The ``sniproxy`` in the internet gets
no rules: the ISP's censor does not run there.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

from probe.lab.censor import Censor, CensorRule, normalise_name


class NameRelay(Censor):
    """A relay by name: each connection goes to ``addresses[<SNI or Host>]`` on the port it came to,
    unless a censor rule for that name says otherwise (module doc).

    A name it does not know (or none) is reset. Listens with :meth:`Censor.start`.
    """

    def __init__(self, addresses: Mapping[str, str], rules: Mapping[str, CensorRule] | None = None,
                 **kw: Any) -> None:
        kw.setdefault("forger", None)
        super().__init__(rules or {}, **kw)
        self.addresses = {normalise_name(k): v for k, v in addresses.items()}

    async def start_on(self, tls_sock: socket.socket, http_sock: socket.socket) -> None:
        """Listen on sockets the caller made (:meth:`Censor.start` binds by address; the internet
        namespace's proxy address needs ``IP_FREEBIND``, :func:`probe.lab.services._tcp_listener`)."""
        await self.listen_on(tls_sock, tls=True)
        await self.listen_on(http_sock, tls=False)

    async def listen_on(self, sock: socket.socket, *, tls: bool) -> None:
        """Also listen on ``sock`` (a site's own port, ``https://x.kz:8443/``): its connections are read
        as TLS (``tls``) or plain HTTP, relayed to the named site on that same port, the rules applied."""
        handler, proto = (self._handle_tls, "tls") if tls else (self._handle_http, "http")
        self._servers.append(await asyncio.start_server(self._wrap(handler, proto), sock=sock))

    def _dst(self, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        sock: socket.socket = writer.get_extra_info("socket")
        return sock.getsockname()[:2]  # not redirected: the port the client asked for

    def _next_hop(self, dst: tuple[str, int], name: str | None) -> tuple[str, int] | None:
        ip = None
        if name:
            try:
                ip = self.addresses.get(normalise_name(name))
            except ValueError:
                ip = None
        if ip is None:
            self.stats[f"relay.unknown_name:{name or '-'}"] += 1
            return None
        return ip, dst[1]
