"""The lab's servers, run as child processes inside the namespaces.

``python -m probe.lab.services inet SPEC.json`` (internet namespace): one asyncio
process serves every lab address (the namespace routes all of 198.18.0.0/15 to
``lo``, so a wildcard listener receives them all):

* web servers: TLS on :443 (certificate chosen by SNI, else by the local address) and
  plain HTTP on :80; a small page per site; HTTP/1.1 keep-alive;
* the DoH control resolver (RFC 8484 POST/GET ``/dns-query``) at :data:`DOH_IP`;
* the authoritative DNS for every lab domain (UDP) at :data:`AUTH_DNS_IP`;
* the health canary (a TLS server at :data:`CANARY_IP`, IP-address certificate);
* the ISP's transparent SNI proxy at :data:`SNIPROXY_IP` (where a DNS ``sniproxy`` action
  points): the ISP relay of :mod:`probe.lab.relay` placed in the internet — it reads the
  ClientHello's SNI (or the HTTP Host), connects to that site's genuine address and splices
  the bytes both ways, so the chain the client gets is the site's own (webconnectivityqa
  dnsHijackingToProxyWithHTTPSURL); an unknown name is reset.

A site's certificate comes in the shape of its ``cert`` key (:data:`probe.lab.pki.CERT_SHAPES`:
an intermediate, cross-signed and expired-root paths, a missing intermediate, expired,
wrong-name and unknown-CA leaves).

``python -m probe.lab.services isp SPEC.json`` (an ISP's censor router): the ISP resolver
(UDP on the ISP's resolver addresses; forwards to the authoritative server, applies the
scenario's DNS actions at this ISP, and with ``dns64`` synthesises AAAA records from A
records with the ISP's NAT64 prefix, RFC 6147), the censor (:class:`probe.lab.censor.Censor`)
and the packet engine (:mod:`probe.lab.engine`).

IPv6: a site with an AAAA record is served at its IPv6 address too, and every site with an
A record at its addresses synthesised under each DNS64 prefix of the scenario — NAT64 as
"the same site answers the synthesised address" (no translator runs in the lab).

Latency (``latency_s`` = one-way, client <-> internet): no ``tc netem`` on this kernel,
so servers wait: a web server waits one RTT (2 × latency) after accepting a
connection (standing in for the TCP handshake) and one RTT before each HTTP
response; the TLS handshake adds none of its own; the authoritative server and the
DoH resolver wait one RTT before each answer. Each process prints ``READY`` on stdout
when listening and exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import contextlib
import functools
import json
import logging
import secrets
import signal
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from probe.lab.pki import LabPKI
from probe.lab.scenario import PROXY_HTTP, PROXY_TLS, nat64_address
from probe.lab.topology import (
    AUTH_DNS_IP,
    AUTH_DNS_IP6,
    BOGON_IP,
    CANARY_IP,
    CANARY_IP6,
    CENSOR_BLOCKPAGE_IP,
    CENSOR_HTTP_PORT,
    CENSOR_TLS_PORT,
    DOH_IP,
    DOH_IP6,
    HELPER_DOH_IP,
    INJECT_IP,
    ONPATH_DNS_PORT,
    RELAY_IP,
    SNIPROXY_IP,
    TUN_NAME,
)
from probe.measure.tls import SSL_READ_BUFFER_BYTES

log = logging.getLogger("kzprobe.lab.services")

#: The lab page's filler, so bodies are not trivially small (bytes).
PAGE_FILLER_BYTES = 2048
MAX_HEAD_BYTES = 16384
DNS_TTL = 60


@dataclass(frozen=True, kw_only=True)
class SiteSpec:
    """What the servers need of one site: A-label, display name, addresses, actions.

    ``ip`` is the A record ("" = none), ``ip6`` the AAAA record ("" = none), ``nat64`` the
    addresses synthesised from ``ip`` under the scenario's DNS64 prefixes (served too).
    """

    domain: str
    display: str
    ip: str
    ip6: str = ""
    nat64: tuple[str, ...] = ()
    dns: str = "ok"
    tls: str = "ok"
    http: str = "ok"
    throttle_kbps: int = 0
    page_bytes: int = 0
    down: bool = False
    zone: str = "ok"
    zone_extra: tuple[str, ...] = ()
    redirect: str = ""
    cert: str = "ok"
    redirects: tuple[tuple[str, str], ...] = ()
    vantage_status: str = ""
    scheme: str = "https"
    port: int = 0
    ip_geo: str = ""

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.ip, self.ip6, self.ip_geo) if a) + tuple(self.nat64)


def page(site: SiteSpec, path: str) -> bytes:
    """The HTML a lab site serves at ``path`` (deterministic, so probe and control agree):
    about :data:`PAGE_FILLER_BYTES` of filler, more when the site's ``page_bytes`` asks for
    a bigger page (then at least ``page_bytes`` bytes: throttling needs a page big enough
    to time, FC-19)."""
    para = "<p>" + "lorem ipsum dolor sit amet " * 4 + "</p>\n"
    head = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{site.display}</title></head>\n"
            f"<body><h1>{site.display}</h1><p>kzprobe lab page for {site.domain}{path}</p>\n")
    tail = "</body></html>\n"
    n = PAGE_FILLER_BYTES // 120
    short = len((head + tail).encode()) + n * len(para)
    if site.page_bytes > short:
        n += -(-(site.page_bytes - short) // len(para))  # ceil: at least page_bytes
    return (head + para * n + tail).encode()


class Zone:
    """Name → address of every lab site plus the canary names; answers DNS queries.

    ``zone = "cname"``: the name is a CNAME to ``nodata.<name>``, which exists with no A/AAAA
    record (a name with no address, everywhere). ``zone = "geo"``: the authoritative server
    answers the ISPs' resolvers (:meth:`answer` with ``geo``) the site's second address, the
    DoH control its first (GeoDNS/CDN)."""

    def __init__(self, sites: list[SiteSpec], extra: dict[str, str], extra6: dict[str, str] | None = None) -> None:
        own = [s for s in sites if s.zone in ("ok", "geo")]
        fixed = [s for s in sites if s.zone not in ("ok", "nxdomain", "cname", "geo")]  # that address
        self.a = ({s.domain: s.ip for s in own if s.ip} | {s.domain: s.zone for s in fixed if ":" not in s.zone}
                  | extra)
        self.aaaa = ({s.domain: s.ip6 for s in own if s.ip6} | {s.domain: s.zone for s in fixed if ":" in s.zone}
                     | (extra6 or {}))
        #: ``zone_extra``: the other addresses a site's record holds, by family.
        self.extra_a = {s.domain: tuple(a for a in s.zone_extra if ":" not in a) for s in sites if s.zone_extra}
        self.extra_aaaa = {s.domain: tuple(a for a in s.zone_extra if ":" in a) for s in sites if s.zone_extra}
        self.geo_a = {s.domain: s.ip_geo for s in sites if s.zone == "geo" and s.ip_geo}
        self.cname = {s.domain: f"nodata.{s.domain}" for s in sites if s.zone == "cname"}
        self.names = (set(self.a) | set(self.aaaa) | {s.domain for s in sites if s.zone != "nxdomain"}
                      | set(self.cname.values()))

    def answer(self, q: dns.message.Message, *, geo: bool = False) -> dns.message.Message:
        """The authoritative reply to ``q`` (A and AAAA records; the other types empty; unknown → NXDOMAIN);
        ``geo``: asked by an ISP's resolver (a GeoDNS site answers it its second address)."""
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA | dns.flags.RA
        if not q.question:
            r.set_rcode(dns.rcode.FORMERR)
            return r
        qn = q.question[0]
        name = qn.name.to_text(omit_final_dot=True).lower()
        if name not in self.names:
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif name in self.cname:
            r.answer.append(dns.rrset.from_text(qn.name, DNS_TTL, "IN", "CNAME", self.cname[name] + "."))
        elif qn.rdtype == dns.rdatatype.A and geo and name in self.geo_a:
            r.answer.append(dns.rrset.from_text(qn.name, DNS_TTL, "IN", "A", self.geo_a[name]))
        elif qn.rdtype == dns.rdatatype.A and (name in self.a or self.extra_a.get(name)):
            own = [self.a[name]] if name in self.a else []
            r.answer.append(dns.rrset.from_text_list(qn.name, DNS_TTL, "IN", "A",
                                                     own + list(self.extra_a.get(name, ()))))
        elif qn.rdtype == dns.rdatatype.AAAA and (name in self.aaaa or self.extra_aaaa.get(name)):
            own = [self.aaaa[name]] if name in self.aaaa else []
            r.answer.append(dns.rrset.from_text_list(qn.name, DNS_TTL, "IN", "AAAA",
                                                     own + list(self.extra_aaaa.get(name, ()))))
        return r


def _reply_a(q: dns.message.Message, ip: str, dns64: str = "") -> dns.message.Message:
    """A reply carrying ``ip`` for an A query; for AAAA, the same lie synthesised with
    ``dns64`` (a DNS64 resolver synthesises from whatever A it got), else no answer."""
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    qn = q.question[0]
    if qn.rdtype == dns.rdatatype.A:
        r.answer.append(dns.rrset.from_text(qn.name, DNS_TTL, "IN", "A", ip))
    elif qn.rdtype == dns.rdatatype.AAAA and dns64:
        r.answer.append(dns.rrset.from_text(qn.name, DNS_TTL, "IN", "AAAA", nat64_address(dns64, ip)))
    return r


def synthesise_aaaa(q: dns.message.Message, a_reply: dns.message.Message, prefix: str) -> dns.message.Message:
    """The DNS64 answer to the AAAA query ``q`` from the A reply ``a_reply`` (RFC 6147 §5.1.7):
    each A record embedded in ``prefix`` (RFC 6052), the A records' TTL; an empty NOERROR
    when there is no A either."""
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    qn = q.question[0]
    addrs = [(rr.ttl, rd.address) for rr in a_reply.answer if rr.rdtype == dns.rdatatype.A for rd in rr]
    if addrs:
        rrset = dns.rrset.from_text_list(qn.name, min(t for t, _ in addrs), "IN", "AAAA",
                                         [nat64_address(prefix, a) for _, a in addrs])
        r.answer.append(rrset)
    return r


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        t = asyncio.get_running_loop().create_task(self.handle(self, data, addr))
        self.tasks.add(t)  # kept until done; cancelled with the server
        t.add_done_callback(self.tasks.discard)

    def send(self, msg: dns.message.Message, addr: tuple[str, int]) -> None:
        self.send_raw(msg.to_wire(), addr)

    def send_raw(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


class _Upstream(asyncio.DatagramProtocol):
    """The ISP resolver's one socket to the authoritative server for plain forwards: the query's
    bytes go as they came under an id of its own, the reply's bytes come back as they came with
    the client's id restored. It was a dnspython parse + re-serialise and a new socket per query
    (~half the ISP process's CPU in the lab bench, py-spy; issue 13)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or not data[2] & 0x80:  # a reply (QR) with a whole header
            return
        fut = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error: the pending query times out, as dnspython's did

    async def ask(self, query: bytes, timeout_s: float) -> bytes | None:
        """The authoritative reply to ``query`` with ``query``'s id; None after ``timeout_s``."""
        if self.transport is None or len(query) < 12:
            return None
        qid = secrets.randbelow(65536)
        while qid in self.pending:
            qid = secrets.randbelow(65536)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[qid] = fut
        try:
            self.transport.sendto(qid.to_bytes(2, "big") + query[2:])
            async with asyncio.timeout(timeout_s):
                reply = await fut
        except (TimeoutError, OSError):
            return None
        finally:
            self.pending.pop(qid, None)
        return query[:2] + reply[2:]


def _raise_nofile(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _freebind(sock: socket.socket, ip: str) -> None:
    if ":" in ip:
        sock.setsockopt(41, 78, 1)  # SOL_IPV6, IPV6_FREEBIND
    else:
        sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: the address is covered by a local route only


def _tcp_listener(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _freebind(sock, ip)
    sock.bind((ip, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _udp_server(ip: str, port: int, handle: Any) -> asyncio.DatagramTransport:
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    _freebind(sock, ip)
    sock.bind((ip, port))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _UDP(handle), sock=sock)
    return transport


class InternetServices:
    """Web servers, DoH, authoritative DNS and the canary of the internet namespace."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.latency_s = float(spec["latency_s"])
        self.sites = [_site_spec(s) for s in spec["sites"]]
        self.ipv6 = bool(spec.get("ipv6", False))
        self.doh_down = bool(spec.get("doh_down", False))
        self.by_name = {s.domain: s for s in self.sites}
        self.by_ip: dict[str, SiteSpec] = {}
        self._sites_at: dict[str, list[SiteSpec]] = {}  # every site with the address among its addresses
        for s in self.sites:
            for a in s.addresses:
                self.by_ip.setdefault(a, s)
                self._sites_at.setdefault(a, []).append(s)
        canary6 = {"example.com": CANARY_IP6, "canary.lab": CANARY_IP6} if self.ipv6 else {}
        self.zone = Zone(self.sites, {"example.com": CANARY_IP, "canary.lab": CANARY_IP}, canary6)
        #: addresses a DNS ``blockpage:<ip>`` action points at: they serve the ISP's blockpage
        self.blockpage_ips = {s.dns.split(":", 1)[1] for s in self.sites if s.dns.startswith("blockpage:")} \
            | {CENSOR_BLOCKPAGE_IP}  # where the censor's injected 302 points (http = "redirect_blockpage")
        self.pki = LabPKI.load(Path(spec["rundir"]))
        self._key_file = Path(spec["rundir"]) / "leaf-key.pem"
        self._certdir = Path(spec["rundir"]) / "certs"
        self._certdir.mkdir(exist_ok=True)
        self._ctx: dict[str, ssl.SSLContext] = {}
        #: the outer (SNI-dispatching) context per local address, built once: a new SSLContext +
        #: load_cert_chain per accepted connection was about half the lab web server's CPU (issue 13)
        self._outer_ctx: dict[str, ssl.SSLContext] = {}
        self.servers: list[Any] = []
        self.sniproxy: Any = None  #: the transparent proxy at SNIPROXY_IP (a NameRelay), when a site uses it
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def rtt_s(self) -> float:
        return 2 * self.latency_s

    def _context_for(self, name: str) -> ssl.SSLContext:
        ctx = self._ctx.get(name)
        if ctx is None:
            f = self._certdir / f"{name}.pem"
            site = self.by_name.get(name)
            f.write_bytes(self.pki.issue([name], site.cert if site is not None else "ok"))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(f, self._key_file)
            ctx.set_alpn_protocols(["http/1.1"])
            self._ctx[name] = ctx
        return ctx

    def _tls_context(self, local_ip: str) -> ssl.SSLContext:
        """The server context at ``local_ip``: the certificate of the site (or infrastructure)
        at that address, and when other sites are served there too, an SNI callback that picks
        the named site's certificate (a site's certificate only at its own addresses).

        Built once per address (:meth:`start` builds them all before ``READY``: a real server has
        its certificates before the first client; building them on the first connection put
        context creation in the lab benchmark's measured window, issue 13). An address serving
        only its own site needs no SNI callback: the callback would always pick that site's
        certificate, so the site's own context is used as it is (one context per site, not two).
        """
        cached = self._outer_ctx.get(local_ip)
        if cached is not None:
            return cached
        fallback = self.by_ip.get(local_ip)
        base = self._context_for(fallback.domain if fallback else local_ip)
        served = {s.domain for s in self._sites_at.get(local_ip, ())}
        if served <= ({fallback.domain} if fallback else set()):
            self._outer_ctx[local_ip] = base
            return base
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._certdir / f"{fallback.domain if fallback else local_ip}.pem", self._key_file)
        ctx.set_alpn_protocols(["http/1.1"])

        def sni(obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            site = self.by_name.get((server_name or "").lower())
            if site is not None and local_ip in site.addresses:  # a site's certificate only at its own addresses
                obj.context = self._context_for(site.domain)
            else:
                obj.context = base
        ctx.sni_callback = sni
        self._outer_ctx[local_ip] = ctx
        return ctx

    async def _accepted(self, transport: asyncio.Transport, tls: bool) -> None:
        """A connection accepted with reading paused: wait one RTT (the TCP handshake's
        round trip), then speak TLS (if ``tls``) and HTTP/1.1."""
        loop = asyncio.get_running_loop()
        local_ip = transport.get_extra_info("sockname")[0]
        peer = (transport.get_extra_info("peername") or ("",))[0]
        reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            await asyncio.sleep(self.rtt_s)
            if transport.is_closing():
                return
            if tls:
                transport.set_protocol(protocol)  # start_tls swaps in its own and hands ours the TLS transport
                new = await loop.start_tls(transport, protocol, self._tls_context(local_ip), server_side=True,
                                           ssl_handshake_timeout=10.0)
                if new is None:
                    return
                transport = new
            else:
                transport.set_protocol(protocol)
                protocol.connection_made(transport)
                transport.resume_reading()
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            while True:
                req = await _read_request(reader)
                if req is None:
                    return
                method, path, headers, body = req
                status, ctype, payload = await self._respond(local_ip, method, path, headers, body)
                await asyncio.sleep(self.rtt_s)
                location = self._location(local_ip, path, headers)
                if location is not None and status == 200 and ctype.startswith("text/html"):
                    status, payload = 302, b""
                server, extra = "kzprobe-lab", ""
                site = self._site(local_ip, headers)
                if site is not None and local_ip not in self.blockpage_ips:
                    extra = SITE_HEADERS  # as real sites send: OONI's headers_match sees uncommon ones
                if site is not None and site.vantage_status and _from_vantage(peer) and status in (200, 302):
                    status, payload, location = (403, FORBIDDEN_HTML, None) if site.vantage_status == "403" \
                        else (503, CAPTCHA_HTML, None)
                    ctype = "text/html; charset=utf-8"
                    if site.vantage_status == "captcha":
                        server, extra = "cloudflare", "cf-mitigated: challenge\r\n"
                writer.write(_response(status, ctype, payload if method != "HEAD" else b"", len(payload),
                                       location=location if status == 302 else None, server=server, extra=extra))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError, ConnectionError, TimeoutError):
            return
        finally:
            transport.close()

    def _site(self, local_ip: str, headers: dict[str, str]) -> SiteSpec | None:
        host = headers.get("host", "").split(":")[0].lower().rstrip(".")
        return self.by_name.get(host) or self.by_ip.get(local_ip)

    def _location(self, local_ip: str, path: str, headers: dict[str, str]) -> str | None:
        """The Location a site answers ``path`` with: its ``redirects`` entry for the path, else
        its ``redirect`` for every path (None: no redirect)."""
        site = self._site(local_ip, headers)
        if site is None:
            return None
        per_path = dict(site.redirects).get(path.split("?")[0]) if site.redirects else None
        return per_path if per_path is not None else (site.redirect or None)

    async def _respond(self, local_ip: str, method: str, path: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, str, bytes]:
        if local_ip in self.blockpage_ips:
            from probe.lab.censor import BLOCKPAGE_HTML
            return 200, "text/html; charset=utf-8", BLOCKPAGE_HTML
        if local_ip in (DOH_IP, DOH_IP6, HELPER_DOH_IP) and path.split("?")[0] == "/dns-query":
            wire = body
            if method == "GET" and "dns=" in path:
                b64 = path.split("dns=", 1)[1].split("&")[0]
                wire = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            try:
                q = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                return 400, "text/plain", b"bad DNS message\n"
            r = self.zone.answer(q)
            r.id = q.id
            return 200, "application/dns-message", r.to_wire()
        host = headers.get("host", "").split(":")[0].lower().rstrip(".")
        site = self.by_name.get(host) or self.by_ip.get(local_ip)
        if site is None:
            return 200, "text/html; charset=utf-8", b"<html><body>kzprobe lab canary</body></html>\n"
        return 200, "text/html; charset=utf-8", page(site, path)

    async def _auth_dns(self, proto: _UDP, data: bytes, addr: tuple[str, int]) -> None:
        try:
            q = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        await asyncio.sleep(self.rtt_s)
        proto.send(self.zone.answer(q, geo=True), addr)

    async def start(self) -> None:
        # certificates of infrastructure made before READY (the first handshakes stay fast)
        doh = [] if self.doh_down else [DOH_IP] + ([DOH_IP6] if self.ipv6 else [])  # down: its address refuses
        infra = doh + [HELPER_DOH_IP, CANARY_IP] + ([CANARY_IP6] if self.ipv6 else [])
        for ip in infra:
            self._context_for(ip)
        loop = asyncio.get_running_loop()
        addresses = sorted({a for s in self.sites if not s.down for a in s.addresses} | set(infra) | self.blockpage_ips)
        _raise_nofile(2 * len(addresses) + 1024)
        for site in self.sites:  # every site's certificate and every address's context, before READY
            if not site.down:
                self._context_for(site.domain)
        for ip in addresses:
            self._tls_context(ip)
        for ip in addresses:  # one listener per address: a down site's address refuses connections
            for port, tls in ((443, True), (80, False)):
                self.servers.append(await loop.create_server(lambda tls=tls: _Accept(self, tls),
                                                             sock=_tcp_listener(ip, port)))
        if any(s.dns == "sniproxy" for s in self.sites):  # the ISP's relay (probe.lab.relay), in the internet
            from probe.lab.relay import NameRelay

            self.sniproxy = NameRelay({s.domain: s.ip or s.ip6 for s in self.sites if (s.ip or s.ip6) and not s.down},
                                      latency_s=0.0)
            await self.sniproxy.start_on(_tcp_listener(SNIPROXY_IP, 443), _tcp_listener(SNIPROXY_IP, 80))
            for port, on_tls in sorted({(s.port, s.scheme == "https") for s in self.sites if s.dns == "sniproxy"
                                        and s.port}):  # an input with a port reaches the proxy on that port
                await self.sniproxy.listen_on(_tcp_listener(SNIPROXY_IP, port), tls=on_tls)
        extra_ports = {(ip, s.port, s.scheme == "https") for s in self.sites if s.port and not s.down
                       for ip in s.addresses}
        for ip, port, on_tls in sorted(extra_ports):  # inputs with a port: http://site:8080/path
            self.servers.append(await loop.create_server(functools.partial(_Accept, self, on_tls),
                                                         sock=_tcp_listener(ip, port)))
        self.servers.append(await _udp_server(AUTH_DNS_IP, 53, self._auth_dns))
        if self.ipv6:
            self.servers.append(await _udp_server(AUTH_DNS_IP6, 53, self._auth_dns))


def _site_spec(raw: dict[str, Any]) -> SiteSpec:
    return SiteSpec(**{**raw, "nat64": tuple(raw.get("nat64", ())), "zone_extra": tuple(raw.get("zone_extra", ())),
                       "redirects": tuple(tuple(r) for r in raw.get("redirects", ()))})


class _Accept(asyncio.Protocol):
    """Accepts with reading paused and hands the transport to ``InternetServices._accepted``."""

    def __init__(self, svc: InternetServices, tls: bool) -> None:
        self.svc, self.tls = svc, tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self.svc._accepted(transport, self.tls))
        self.svc.tasks.add(task)  # kept until done
        task.add_done_callback(self.svc.tasks.discard)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too long") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(min(n, 65536)) if n else b""
    return parts[0], parts[1], headers, body


def _response(status: int, ctype: str, body: bytes, length: int, *, location: str | None = None,
              server: str = "kzprobe-lab", extra: str = "") -> bytes:
    reason = {200: "OK", 302: "Found", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
              503: "Service Unavailable"}.get(status, "OK")
    loc = f"Location: {location}\r\n" if location is not None else ""
    return (f"HTTP/1.1 {status} {reason}\r\nServer: {server}\r\nContent-Type: {ctype}\r\n{loc}{extra}"
            f"Content-Length: {length}\r\n\r\n").encode() + body


#: Headers every lab site sends beside the common ones (OONI's ts-017 ``headers_match`` compares the
#: uncommon header names: a page without any would "match" any censor's response without any).
SITE_HEADERS = "X-Served-By: kzlab-web-1\r\nPermissions-Policy: interest-cohort=()\r\n"
#: What a site with ``vantage_status = "403"`` answers the vantages' networks: its own plain refusal.
FORBIDDEN_HTML = (b"<!doctype html>\n<html><head><title>403 Forbidden</title></head>\n<body><h1>Forbidden</h1>"
                  b"<p>You don't have access to this resource from your network.</p></body></html>\n")
#: What a site with ``vantage_status = "captcha"`` answers them: a Cloudflare managed challenge (503,
#: ``Server: cloudflare``, ``cf-mitigated: challenge``, "Just a moment...", as OONI's netemx serves it).
CAPTCHA_HTML = (b"<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>"
                b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\"></head><body>"
                b"<div class=\"main-wrapper\"><h1>Checking if the site connection is secure</h1>"
                b"<p>Enable JavaScript and cookies to continue</p></div></body></html>\n")


def _from_vantage(peer: str) -> bool:
    """True when ``peer`` is a vantage of the lab (the clients' 10.77.0.0/16, fd00:77::/32), not the
    control helper (in the internet namespace) nor an ISP's relay."""
    return peer.startswith("10.77.") or peer.lower().startswith("fd00:77:")


class ISPServices:
    """The ISP resolver and the censor of the isp namespace."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.sites = {s["domain"]: _site_spec(s) for s in spec["sites"]}
        self.rundir = Path(spec["rundir"])
        self.resolvers: list[str] = spec.get("resolvers", [])
        self.dns64: str = spec.get("dns64", "")
        self.ipv6 = bool(spec.get("ipv6", False))
        self.engine_rules: list[dict[str, Any]] = spec.get("engine", [])
        self.dns_onpath = bool(spec.get("dns_onpath", False))
        self._stop_engine = asyncio.Event()
        self.engine_task: asyncio.Task[Any] | None = None
        self.latency_s = float(spec["latency_s"])
        self.mitm_roots: list[str] = spec.get("mitm_roots", [])
        self.need_censor = any(s.tls in PROXY_TLS or s.http in PROXY_HTTP or s.throttle_kbps
                               for s in self.sites.values())
        self.censor: Any = None
        self.relay: Any = None
        self.transport: asyncio.DatagramTransport | None = None
        self.upstream: _Upstream | None = None

    async def _forward(self, q: dns.message.Message) -> dns.message.Message:
        try:
            r = await dns.asyncquery.udp(q, AUTH_DNS_IP, timeout=max(1.0, 4 * self.latency_s + 0.5))
        except (dns.exception.DNSException, OSError):
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.SERVFAIL)
        r.id = q.id
        if (self.dns64 and q.question and q.question[0].rdtype == dns.rdatatype.AAAA and r.rcode() == dns.rcode.NOERROR
                and not any(rr.rdtype == dns.rdatatype.AAAA for rr in r.answer)):
            a_q = dns.message.make_query(q.question[0].name, dns.rdatatype.A)
            a_r = await self._forward(a_q)
            r = synthesise_aaaa(q, a_r, self.dns64)
            r.id = q.id
        return r

    def _query_site(self, data: bytes) -> tuple[dns.message.Message, str] | None:
        """The query in ``data`` and the scenario's DNS action for its name (``"ok"`` for a name
        no site has); None for a datagram that is no query with a question (dropped). The
        ISP resolver and the on-path injector read queries alike."""
        try:
            q = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        if not q.question:
            return None
        site = self.sites.get(q.question[0].name.to_text(omit_final_dot=True).lower())
        return q, site.dns if site else "ok"

    async def _resolve(self, proto: _UDP, data: bytes, addr: tuple[str, int]) -> None:
        got = self._query_site(data)
        if got is None:
            return
        q, action = got
        if action == "timeout":
            return
        if action in ("nxdomain", "servfail"):
            r = dns.message.make_response(q)
            r.flags |= dns.flags.RA
            r.set_rcode(dns.rcode.NXDOMAIN if action == "nxdomain" else dns.rcode.SERVFAIL)
            proto.send(r, addr)
            return
        if action == "bogon":
            proto.send(_reply_a(q, BOGON_IP, self.dns64), addr)
            return
        if action.startswith(("blockpage:", "answer:")):
            proto.send(_reply_a(q, self._forged_address(action), self.dns64), addr)
            return
        if action == "sniproxy":  # the ISP's transparent proxy, which splices to the genuine site
            proto.send(_reply_a(q, SNIPROXY_IP, self.dns64), addr)
            return
        if action == "relay":  # the ISP's transparent proxy (probe.lab.relay) in place of the site
            proto.send(_reply_a(q, RELAY_IP, self.dns64), addr)
            return
        if action == "inject":  # the forged answer wins the race; the genuine one follows
            proto.send(_reply_a(q, INJECT_IP, self.dns64), addr)
        if action == "inject_nxdomain":  # a forged NXDOMAIN wins the race; the genuine answer follows
            r = dns.message.make_response(q)
            r.flags |= dns.flags.RA
            r.set_rcode(dns.rcode.NXDOMAIN)
            proto.send(r, addr)
        if action == "ok" and self.upstream is not None and not (
                self.dns64 and q.question[0].rdtype == dns.rdatatype.AAAA):  # nothing to change: forwarded raw
            raw = await self.upstream.ask(data, max(1.0, 4 * self.latency_s + 0.5))
            if raw is not None:
                proto.send_raw(raw, addr)
                return
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.SERVFAIL)
            proto.send(r, addr)
            return
        proto.send(await self._forward(q), addr)

    async def _inject_onpath(self, proto: _UDP, data: bytes, addr: tuple[str, int]) -> None:
        """The on-path injector (``[[isp]] dns_onpath``): nft redirected a query sent to some
        other address here; a censored name (dns inject, bogon, blockpage, answer) is answered with the
        forged address at once — the reply leaves with this router's TTL and, through the
        redirect's NAT, from the address the client asked. nft redirects only the queries for
        those names (:func:`probe.lab.topology.qname_match`): every other query goes on to the
        address it was sent to, untouched (a resolver beyond the censor still answers it)."""
        got = self._query_site(data)
        if got is None:
            return
        q, action = got
        forged = {"inject": INJECT_IP, "bogon": BOGON_IP}.get(action) or (
            self._forged_address(action) if action.startswith(("blockpage:", "answer:")) else None)
        if forged is not None:
            proto.send(_reply_a(q, forged, self.dns64), addr)

    def _forged_address(self, action: str) -> str:
        """The address a ``blockpage:<ip>`` or ``answer:<ip or site>`` action answers: the literal
        address, or the IPv4 address of the site ``answer:`` names (the scenario checked it has one)."""
        target = action.split(":", 1)[1]
        other = self.sites.get(target)
        return other.ip if other is not None else target

    def _prewarm(self, forger: Any, upstream: ssl.SSLContext) -> None:
        """Forge every MITM site's leaf before the lab is ready: RSA key generation takes
        0.1-0.5 s each and would otherwise stall the censor's first handshakes past the
        probe's TLS timeout (a real middlebox has its leaves long made)."""
        for s in self.sites.values():
            if not s.tls.startswith("mitm:"):
                continue
            try:
                with socket.create_connection((s.ip or s.ip6, 443), timeout=10) as raw, \
                        upstream.wrap_socket(raw, server_hostname=s.domain) as tls:
                    der = tls.getpeercert(binary_form=True)
            except (OSError, ssl.SSLError) as exc:
                log.warning("cannot pre-forge %s: %s", s.domain, exc)
                continue
            if der:
                forger.forge(der, s.tls.split(":", 1)[1])

    async def start(self) -> None:
        _, self.upstream = await asyncio.get_running_loop().create_datagram_endpoint(
            _Upstream, remote_addr=(AUTH_DNS_IP, 53))
        for ip in self.resolvers:
            self.transport = await _udp_server(ip, 53, self._resolve)
        if self.dns_onpath:
            await _udp_server("0.0.0.0", ONPATH_DNS_PORT, self._inject_onpath)
        if self.engine_rules:
            from probe.lab.engine import rules_from_spec, run_on_tun

            self.engine_task = asyncio.get_running_loop().create_task(
                run_on_tun(TUN_NAME, rules_from_spec(self.engine_rules), self._stop_engine))
            await asyncio.sleep(0)
        if self.need_censor:
            from probe.lab.censor import Censor, CensorRule  # L2's middlebox
            from probe.lab.forge import Forger, make_roots

            roots = make_roots(tuple(self.mitm_roots)) if self.mitm_roots else {}  # type: ignore[arg-type]
            for name, (root, _inter) in roots.items():
                (self.rundir / f"mitm-{name}.pem").write_bytes(root.cert_pem)
            rules = {d: CensorRule(tls=s.tls if s.tls in PROXY_TLS else "ok",  # type: ignore[arg-type]
                                   http=s.http if s.http in PROXY_HTTP else "ok",  # type: ignore[arg-type]
                                   throttle_kbps=s.throttle_kbps)
                     for d, s in self.sites.items() if s.tls in PROXY_TLS or s.http in PROXY_HTTP or s.throttle_kbps}
            upstream = ssl.create_default_context(cafile=str(self.rundir / "ca.pem"))
            forger = Forger(roots) if roots else None
            if forger is not None:
                await asyncio.to_thread(self._prewarm, forger, upstream)
            self.censor = Censor(rules, forger=forger, latency_s=0.0,
                                 upstream_trust=upstream)
            self.censor.blockpage_host = CENSOR_BLOCKPAGE_IP
            await self.censor.start(["0.0.0.0", "::"] if self.ipv6 else "0.0.0.0", CENSOR_TLS_PORT, CENSOR_HTTP_PORT)
        if any(s.dns == "relay" for s in self.sites.values()):
            from probe.lab.relay import NameRelay  # the ISP's transparent proxy, reached by DNS

            # the censor's rules apply at the relay too: the ISP's DPI sees the flows to its own proxy
            self.relay = NameRelay({d: s.ip for d, s in self.sites.items() if s.ip},
                                   self.censor.rules if self.censor is not None else None,
                                   forger=self.censor.forger if self.censor is not None else None,
                                   upstream_trust=self.censor.upstream_trust if self.censor is not None else None,
                                   latency_s=0.0)
            self.relay.blockpage_host = CENSOR_BLOCKPAGE_IP
            await self.relay.start(RELAY_IP, 443, 80)
            for port, on_tls in sorted({(s.port, s.scheme == "https") for s in self.sites.values()
                                        if s.dns == "relay" and s.port}):  # an input with a port: that port too
                await self.relay.listen_on(_tcp_listener(RELAY_IP, port), tls=on_tls)


async def _main(role: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    svc: InternetServices | ISPServices = InternetServices(spec) if role == "inet" else ISPServices(spec)
    await svc.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    if isinstance(svc, ISPServices) and svc.censor is not None:
        with contextlib.suppress(Exception):
            await svc.censor.aclose()
    if isinstance(svc, ISPServices) and svc.relay is not None:
        with contextlib.suppress(Exception):
            await svc.relay.aclose()
    if isinstance(svc, ISPServices) and svc.engine_task is not None:
        svc._stop_engine.set()
        with contextlib.suppress(Exception):
            await svc.engine_task


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m probe.lab.services inet|isp SPEC.json``."""
    # every accepted TLS connection allocated a zeroed 256 KiB read buffer: ~5 % of the lab web
    # server's CPU in the lab bench (py-spy); the probe's own TLS module lowers it the same way
    asyncio.sslproto.SSLProtocol.max_size = min(asyncio.sslproto.SSLProtocol.max_size, SSL_READ_BUFFER_BYTES)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("inet", "isp"):
        print("usage: python -m probe.lab.services inet|isp SPEC.json", file=sys.stderr)
        return 64
    logging.basicConfig(level=logging.WARNING, format=f"lab-{argv[0]} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # "eof_received() has no effect when using ssl"
    asyncio.run(_main(argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
