"""The lab's packet engine: per-packet censor actions in path, in userspace.

``tc netem`` is missing on the lab's kernel and NFQUEUE does not work, so the censor router
hands the flows it must act on packet by packet to this engine through a TUN device: policy
routing (:func:`probe.lab.topology.plan`) sends every TCP packet to or from a watched
address:port into the TUN; the engine reads it, decides, and writes it back (the kernel then
forwards it on), holds it (delay), drops it, or writes a forged segment towards the client.
The flow's own handshake is end to end: nothing here answers in place of the server.

Per watched (server address, port), a :class:`FlowRule`:

``payload`` (the client's first payload segment, whatever it holds)
    ``rst``: a RST to the client in the server's name (seq = the segment's ack), the
    segment dropped, and every later packet of the flow; ``fin``: a FIN|ACK to the client
    (as if the server closed), the same; ``drop``: that segment and every later packet of the
    flow, both ways (the client retransmits into the void).
``names`` (the TLS SNI of a ClientHello, else the HTTP ``Host``, on any port: :func:`first_payload_name`)
    when the first payload segment names one of these domains (or a subdomain), it and every
    later packet of the flow are dropped — the censor that drops "from the ClientHello on".
``fin_names``
    the same match, answered as ``payload = "fin"`` is: a FIN|ACK to the client in the server's
    name, the segment and the rest of the flow dropped (netem's DPICloseConnectionForTLSSNI /
    ...ForString: OONI's ``eof_error`` after the ClientHello or the request).
``budget_bytes``
    after this many payload bytes from the server in one flow, its packets stop (no RST, no
    FIN: the connection freezes, as the 2022-2024 "16 KB" freezes did).
``delay_ms``, ``loss_pct``
    each packet, each direction, held ``delay_ms``; each segment carrying payload, each
    direction, dropped with probability ``loss_pct`` (TCP recovers by retransmission; the
    handshake's segments are spared so that a connect timeout stays a censor's doing, not the
    dice's). The dice are seeded: a lab run loses the same share every time.

Forwarding a packet into the TUN and out again costs the kernel one more TTL decrement; the
engine gives it back (the censor router stays one hop to a traceroute). Counters in
:attr:`Engine.stats` (``"<action>:<address>:<port>"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import random
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from probe.lab.censor import Incomplete, normalise_name, parse_client_hello_sni, parse_http_host

#: <linux/if_tun.h>
TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
#: The TTL (hop limit) a forged segment leaves the censor router with, as a middlebox's own
#: packets do: at the client it is 64 minus the routers below the censor, whatever the
#: server's TTL — the difference that locates an injector (written with one more: the
#: kernel's forwarding out of the TUN takes one).
INJECTED_TTL: Final = 64
#: Flows remembered at most (oldest forgotten first).
MAX_FLOWS: Final = 65536
_TCP = 6
_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass(frozen=True, kw_only=True)
class FlowRule:
    """What the engine does to the flows of one server address:port (module doc)."""

    payload: str = "ok"
    names: tuple[str, ...] = ()
    fin_names: tuple[str, ...] = ()
    budget_bytes: int = 0
    delay_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if self.payload not in ("ok", "rst", "fin", "drop"):
            raise ValueError(f"FlowRule: payload {self.payload!r} is not ok, rst, fin or drop")
        if self.budget_bytes < 0 or self.delay_ms < 0 or not 0 <= self.loss_pct < 100:
            raise ValueError(f"FlowRule: bad budget/delay/loss {self!r}")
        object.__setattr__(self, "names", tuple(normalise_name(n) for n in self.names))
        object.__setattr__(self, "fin_names", tuple(normalise_name(n) for n in self.fin_names))

    def blocks_name(self, name: str | None) -> bool:
        """True when ``name`` (a domain or a subdomain of one) is dropped."""
        return _matches(name, self.names)

    def name_action(self, name: str | None) -> str | None:
        """What the first payload naming ``name`` gets: "drop", "fin", or None (passes)."""
        if _matches(name, self.names):
            return "drop"
        if _matches(name, self.fin_names):
            return "fin"
        return None


def first_payload_name(payload: bytes) -> str | None | Incomplete:
    """The name a client's first payload carries, read as DPI reads it whatever the port: the SNI of a
    TLS ClientHello (a handshake record: first byte 22), else the host of an HTTP/1.x request head
    (ooni/netem's DPI...ForTLSSNI rules parse the SNI of any TCP segment, no port asked)."""
    if payload[:1] == b"\x16":
        return parse_client_hello_sni(payload)
    return parse_http_host(payload)


def _matches(name: str | None, domains: tuple[str, ...]) -> bool:
    if not name or not domains:
        return False
    return any(name == n or name.endswith("." + n) for n in domains)


@dataclass(frozen=True, kw_only=True)
class Packet:
    """A parsed IPv4/IPv6 TCP packet (``raw`` is the whole datagram)."""

    raw: bytes
    version: int
    src: str
    dst: str
    ihl: int          # IP header length (IPv6: 40, no extension headers)
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes

    @property
    def tcp_offset(self) -> int:
        return self.ihl


def parse(raw: bytes) -> Packet | None:
    """A TCP packet, or None for anything else (passed through untouched)."""
    if len(raw) < 20:
        return None
    version = raw[0] >> 4
    if version == 4:
        ihl = (raw[0] & 0x0F) * 4
        if raw[9] != _TCP or len(raw) < ihl + 20:
            return None
        total = struct.unpack_from("!H", raw, 2)[0]
        src, dst = str(ipaddress.IPv4Address(raw[12:16])), str(ipaddress.IPv4Address(raw[16:20]))
        end = min(total, len(raw))
    elif version == 6:
        ihl = 40
        if len(raw) < 60 or raw[6] != _TCP:
            return None
        end = min(40 + struct.unpack_from("!H", raw, 4)[0], len(raw))
        src, dst = str(ipaddress.IPv6Address(raw[8:24])), str(ipaddress.IPv6Address(raw[24:40]))
    else:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", raw, ihl)
    doff = (raw[ihl + 12] >> 4) * 4
    flags = raw[ihl + 13]
    return Packet(raw=raw, version=version, src=src, dst=dst, ihl=ihl, sport=sport, dport=dport, seq=seq, ack=ack,
                  flags=flags, payload=raw[ihl + doff:end])


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_segment(*, src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
                ttl: int = 64, window: int = 0) -> bytes:
    """A forged TCP segment without payload (IPv4 or IPv6 after ``src``), checksums right."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window, 0, 0)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, _TCP, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, ttl, _TCP, 0, s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        return ip + tcp
    pseudo = s.packed + d.packed + struct.pack("!I3xB", len(tcp), _TCP)
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    return struct.pack("!IHBB16s16s", 6 << 28, len(tcp), _TCP, ttl, s.packed, d.packed) + tcp


def give_back_hop(raw: bytes) -> bytes:
    """``raw`` with its TTL / hop limit one higher (IPv4 header checksum updated)."""
    b = bytearray(raw)
    if b[0] >> 4 == 4:
        if b[8] < 255:
            b[8] += 1
            ihl = (b[0] & 0x0F) * 4
            b[10:12] = b"\0\0"
            b[10:12] = struct.pack("!H", _checksum(bytes(b[:ihl])))
    elif b[0] >> 4 == 6 and b[7] < 255:
        b[7] += 1
    return bytes(b)


@dataclass
class _Flow:
    payload_seen: bool = False
    dead: bool = False          # every packet dropped, both ways
    frozen: bool = False        # the server's packets dropped (byte budget spent)
    server_bytes: int = 0


@dataclass
class Engine:
    """Applies :class:`FlowRule` s to packets read from a TUN (module doc).

    Args:
        rules: (server address or prefix, port) → rule; an address's own rule wins over a prefix's.
        write: where packets go back to the kernel (the TUN's ``os.write``; a list in tests).
        rng: the loss decision (a seeded ``random.Random``; a constant in tests).
    """

    rules: dict[tuple[str, int], FlowRule]
    write: Callable[[bytes], object]
    rng: Callable[[], float] = field(default_factory=lambda: random.Random(64500).random)
    later: Callable[[float, Callable[[], object]], object] | None = None
    stats: Counter[str] = field(default_factory=Counter)
    flows: OrderedDict[tuple[str, int, str, int], _Flow] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        exact: dict[tuple[str, int], FlowRule] = {}
        self.prefixes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int, FlowRule]] = []
        for (a, p), r in self.rules.items():
            net = ipaddress.ip_network(a)
            if net.num_addresses == 1:
                exact[(str(net.network_address), p)] = r
            else:
                self.prefixes.append((net, p, r))
        self.rules = exact

    def rule_for(self, addr: str, port: int) -> FlowRule | None:
        """The rule of server ``addr``:``port``: its own, else the first prefix rule covering it."""
        rule = self.rules.get((addr, port))
        if rule is None and self.prefixes:
            ip = ipaddress.ip_address(addr)
            rule = next((r for net, p, r in self.prefixes if p == port and ip in net), None)
        return rule

    def _flow(self, key: tuple[str, int, str, int]) -> _Flow:
        f = self.flows.get(key)
        if f is None:
            f = self.flows[key] = _Flow()
            while len(self.flows) > MAX_FLOWS:
                self.flows.popitem(last=False)
        else:
            self.flows.move_to_end(key)
        return f

    def handle(self, raw: bytes) -> None:
        """Decide one packet read from the TUN: pass (TTL given back), hold, drop, or answer."""
        pkt = parse(raw)
        if pkt is None:
            self._out(give_back_hop(raw), 0.0)
            return
        rule = self.rule_for(pkt.dst, pkt.dport)
        if rule is not None:
            server, client, to_server = (pkt.dst, pkt.dport), (pkt.src, pkt.sport), True
        else:
            rule = self.rule_for(pkt.src, pkt.sport)
            server, client, to_server = (pkt.src, pkt.sport), (pkt.dst, pkt.dport), False
        if rule is None:
            self._out(give_back_hop(raw), 0.0)
            return
        tag = f"{server[0]}:{server[1]}"
        if pkt.flags & _SYN and to_server and not pkt.flags & _ACK:
            self.flows.pop((*client, *server), None)  # a new connection on a reused port
        flow = self._flow((*client, *server))
        if flow.dead or (flow.frozen and not to_server):
            self.stats[f"dropped:{tag}"] += 1
            return
        if rule.loss_pct and pkt.payload and self.rng() * 100 < rule.loss_pct:
            self.stats[f"loss:{tag}"] += 1
            return
        if to_server and pkt.payload and not flow.payload_seen:
            flow.payload_seen = True
            name = first_payload_name(pkt.payload)
            by_name = None if isinstance(name, Incomplete) else rule.name_action(name)
            if by_name is not None:
                flow.dead = True
                self.stats[f"name_{by_name}:{name}"] += 1
                self._answer(pkt, by_name, rule.delay_ms)
                return
            if rule.payload != "ok":
                flow.dead = True
                self.stats[f"payload_{rule.payload}:{tag}"] += 1
                self._answer(pkt, rule.payload, rule.delay_ms)
                return
        if not to_server and rule.budget_bytes and pkt.payload:
            flow.server_bytes += len(pkt.payload)
            if flow.server_bytes > rule.budget_bytes:
                flow.frozen = True
                self.stats[f"budget_freeze:{tag}"] += 1
                return
        self._out(give_back_hop(raw), rule.delay_ms / 1000)

    def _answer(self, pkt: Packet, action: str, delay_ms: float) -> None:
        """The forged segment of ``action`` on the client's first payload ``pkt``: a RST or a
        FIN|ACK to the client in the server's name (seq = the segment's ack); nothing for "drop"."""
        if action not in ("rst", "fin"):
            return
        flags = _RST | _ACK if action == "rst" else _FIN | _ACK
        seg = tcp_segment(src=pkt.dst, dst=pkt.src, sport=pkt.dport, dport=pkt.sport, seq=pkt.ack,
                          ack=pkt.seq + len(pkt.payload), flags=flags, ttl=INJECTED_TTL + 1,
                          window=0 if action == "rst" else 502)
        self._out(seg, delay_ms / 1000)

    def _out(self, raw: bytes, delay_s: float) -> None:
        if delay_s > 0 and self.later is not None:
            self.later(delay_s, lambda: self._write(raw))
        else:
            self._write(raw)

    def _write(self, raw: bytes) -> None:
        with contextlib.suppress(OSError):
            self.write(raw)


def open_tun(name: str) -> int:
    """Attach to the existing TUN ``name`` (``ip tuntap add mode tun``); a non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


async def run_on_tun(name: str, rules: dict[tuple[str, int], FlowRule], stop: asyncio.Event) -> Engine:
    """Serve the TUN ``name`` with ``rules`` until ``stop`` is set; returns the engine (its stats)."""
    loop = asyncio.get_running_loop()
    fd = open_tun(name)
    engine = Engine(rules=rules, write=lambda b: os.write(fd, b), later=loop.call_later)

    def readable() -> None:
        for _ in range(256):
            try:
                raw = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            engine.handle(raw)

    loop.add_reader(fd, readable)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return engine


def rules_from_spec(items: Iterable[dict[str, Any]]) -> dict[tuple[str, int], FlowRule]:
    """``[{"addr", "port", "payload", "names", "fin_names", "budget_bytes", "delay_ms", "loss_pct"}, ...]`` → rules."""
    out: dict[tuple[str, int], FlowRule] = {}
    for it in items:
        out[(str(it["addr"]), int(it["port"]))] = FlowRule(
            payload=str(it.get("payload", "ok")), names=tuple(it.get("names", ())),
            fin_names=tuple(it.get("fin_names", ())),
            budget_bytes=int(it.get("budget_bytes", 0)), delay_ms=float(it.get("delay_ms", 0.0)),
            loss_pct=float(it.get("loss_pct", 0.0)))
    return out
