"""A bounded packet capture of the traffic to and from a few IPv4 addresses, plus ICMP.

:class:`Capture` opens one ``AF_PACKET``/``SOCK_DGRAM`` socket (needs ``CAP_NET_RAW``; frames
arrive without the link header, from the IP header on, both directions), attaches a classic
BPF program so that the kernel passes only IPv4 packets from or to the given hosts and ICMP
(time-exceeded and unreachable messages come from routers, not from the hosts), and reads it
in a thread — off the event loop, bounded in time (the ``with`` block) and in packets
(``max_packets``; later ones are counted in :attr:`Capture.dropped`, not kept).

:func:`parse_ipv4` reads the fields the evidence needs (TTL, IP ID, ports, TCP flags and
window, the header an ICMP error quotes); :func:`write_pcap` writes the kept packets to a
pcap file with scapy (``kzprobe[packets]``; raw IPv4 link type).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from probe.timing import Clock

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
#: Most packets one capture keeps.
MAX_PACKETS = 512
#: Bytes kept of each packet (headers, a DNS reply, a TLS record's start).
SNAPLEN = 2048
TCP, UDP, ICMP = 6, 17, 1
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ICMP_UNREACH, ICMP_TIME_EXCEEDED = 3, 11


@dataclass(frozen=True, kw_only=True)
class Quoted:
    """The start of the datagram an ICMP error quotes (RFC 792: IP header + 8 bytes)."""

    src: str
    dst: str
    proto: int
    sport: int | None
    dport: int | None


@dataclass(frozen=True, kw_only=True)
class Pkt:
    """One captured IPv4 packet.

    Attributes:
        t: seconds since the measurement start (:meth:`Clock.now`), when read.
        outgoing: sent by this host (the capture sees both directions).
        raw: the datagram from its IP header (at most :data:`SNAPLEN` bytes).
        ttl, ip_id: the IP header's TTL and identification.
        flags, window: TCP flags and window (None for other protocols).
        payload: the TCP/UDP payload (as far as captured).
        icmp_type, icmp_code, quoted: for ICMP; ``quoted`` for errors (types 3, 11).
    """

    t: float
    outgoing: bool
    raw: bytes
    proto: int
    src: str
    dst: str
    ttl: int
    ip_id: int
    sport: int | None = None
    dport: int | None = None
    flags: int | None = None
    window: int | None = None
    seq: int | None = None
    payload: bytes = b""
    icmp_type: int | None = None
    icmp_code: int | None = None
    quoted: Quoted | None = None

    def summary(self) -> dict[str, object]:
        """The fields a record keeps of this packet."""
        out: dict[str, object] = {"t": round(self.t, 6), "src": self.src, "ttl": self.ttl, "ip_id": self.ip_id}
        if self.flags is not None:
            out["flags"] = tcp_flags_text(self.flags)
            out["window"] = self.window
        return out


def tcp_flags_text(flags: int) -> str:
    """``"SA"``, ``"RA"``, ``"FPA"`` …: tcpdump's letters for TCP flags."""
    return "".join(c for bit, c in ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "A")) if flags & bit)


def parse_ipv4(raw: bytes, *, t: float = 0.0, outgoing: bool = False) -> Pkt | None:
    """The fields of an IPv4 datagram, or None when ``raw`` is not one (or is truncated)."""
    if len(raw) < 20 or raw[0] >> 4 != 4:
        return None
    ihl = (raw[0] & 0x0F) * 4
    if ihl < 20 or len(raw) < ihl:
        return None
    total = struct.unpack_from("!H", raw, 2)[0]
    end = min(total, len(raw)) if total >= ihl else len(raw)
    ip_id = struct.unpack_from("!H", raw, 4)[0]
    ttl, proto = raw[8], raw[9]
    src, dst = socket.inet_ntoa(raw[12:16]), socket.inet_ntoa(raw[16:20])
    base = {"t": t, "outgoing": outgoing, "raw": raw, "proto": proto, "src": src, "dst": dst, "ttl": ttl,
            "ip_id": ip_id}
    body = raw[ihl:end]
    if proto == TCP and len(body) >= 20:
        sport, dport, seq = struct.unpack_from("!HHI", body, 0)
        doff = (body[12] >> 4) * 4
        flags, window = body[13], struct.unpack_from("!H", body, 14)[0]
        return Pkt(**base, sport=sport, dport=dport, seq=seq, flags=flags, window=window,
                   payload=body[doff:])
    if proto == UDP and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body, 0)
        return Pkt(**base, sport=sport, dport=dport, payload=body[8:])
    if proto == ICMP and len(body) >= 8:
        typ, code = body[0], body[1]
        quoted = None
        if typ in (ICMP_UNREACH, ICMP_TIME_EXCEEDED) and len(body) >= 28:
            q = body[8:]
            qihl = (q[0] & 0x0F) * 4
            if q[0] >> 4 == 4 and len(q) >= qihl:
                qp = q[9]
                ports = struct.unpack_from("!HH", q, qihl) if len(q) >= qihl + 4 and qp in (TCP, UDP) else (None, None)
                quoted = Quoted(src=socket.inet_ntoa(q[12:16]), dst=socket.inet_ntoa(q[16:20]), proto=qp,
                                sport=ports[0], dport=ports[1])
        return Pkt(**base, icmp_type=typ, icmp_code=code, quoted=quoted)
    return Pkt(**base)


def bpf_program(hosts: Iterable[str], proto: int | None = None) -> list[tuple[int, int, int, int]]:
    """Classic BPF (``(code, jt, jf, k)``): accept IPv4 ICMP, and IPv4 packets (of IP protocol
    ``proto`` only, when given) whose source or destination is one of ``hosts``; drop the rest
    (IPv6, ARP, the other flows: a busy host's traffic must not reach Python). The filter sees
    the packet from its IP header (an ``AF_PACKET``/``SOCK_DGRAM`` socket); the ethertype comes
    from the ancillary ``skb->protocol`` word."""
    addrs = [int(ipaddress.IPv4Address(h)) for h in dict.fromkeys(hosts)]
    if len(addrs) > 32:
        raise ValueError("at most 32 hosts per capture")
    ld_h, ld_b, ld_w, jeq, ret = 0x28, 0x30, 0x20, 0x15, 0x06  # ldh [k], ldb [k], ld [k], jeq #k, ret #k
    skf_ad_protocol = 0xFFFFF000  # SKF_AD_OFF + SKF_AD_PROTOCOL
    prog: list[tuple[int, int, int, int]] = [(ld_h, 0, 0, skf_ad_protocol), (jeq, 0, 0, ETH_P_IP),
                                             (ld_b, 0, 0, 9), (jeq, 0, 0, ICMP)]
    if proto is not None:
        prog.append((jeq, 0, 0, proto))  # jt: go on; jf: drop
    prog.append((ld_w, 0, 0, 12))
    for a in addrs:
        prog.append((jeq, 0, 0, a))
    prog.append((ld_w, 0, 0, 16))
    for a in addrs:
        prog.append((jeq, 0, 0, a))
    prog.append((ret, 0, 0, 0))
    prog.append((ret, 0, 0, SNAPLEN))
    drop, accept = len(prog) - 2, len(prog) - 1
    out = []
    for pc, (code, _jt, _jf, k) in enumerate(prog):
        if code != jeq:
            out.append((code, 0, 0, k))
        elif pc == 1:                      # IPv4? go on, else drop
            out.append((code, 0, drop - pc - 1, k))
        elif pc == 3:                      # ICMP: accept
            out.append((code, accept - pc - 1, 0, k))
        elif proto is not None and pc == 4:  # the protocol: go on, else drop
            out.append((code, 0, drop - pc - 1, k))
        else:                              # an address: accept, else the next test
            out.append((code, accept - pc - 1, 0, k))
    return out


def _attach(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    import ctypes

    code = b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_packet_socket() -> socket.socket:
    """An ``AF_PACKET``/``SOCK_DGRAM`` socket of every protocol (``ETH_P_ALL``: only those see
    the packets this host sends too; the BPF filter keeps IPv4). Raises PermissionError
    without CAP_NET_RAW."""
    return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))


class Capture:
    """Capture the packets to and from ``hosts`` (of IP protocol ``proto`` only, when given) and
    every ICMP message while in the block.

    Use as ``with Capture(hosts, clock=clock) as cap:`` (or ``async with``: opened and closed
    in a worker thread, the way the runner uses it); :meth:`wait_for` awaits a packet
    matching a predicate (the reader thread wakes the event loop). Leaving the block stops
    the thread and closes the socket; :attr:`packets` keeps what was read.

    Raises (on enter):
        PermissionError: no ``CAP_NET_RAW`` (check :func:`probe.packets.privileges.check` first).
    """

    def __init__(self, hosts: Iterable[str], *, clock: Clock, max_packets: int = MAX_PACKETS,
                 proto: int | None = None, sock_factory: Callable[[], socket.socket] = open_packet_socket) -> None:
        self.hosts = tuple(dict.fromkeys(hosts))
        self.proto = proto
        self.clock = clock
        self.max_packets = max_packets
        self.packets: list[Pkt] = []
        self.dropped = 0
        self._factory = sock_factory
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiters: list[tuple[Callable[[Pkt], bool], asyncio.Future[Pkt], asyncio.AbstractEventLoop]] = []

    def __enter__(self) -> Capture:
        sock = self._factory()
        try:
            _attach(sock, bpf_program(self.hosts, self.proto))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, InterruptedError):  # before the filter: anything
                for _ in range(10000):
                    sock.recv(SNAPLEN)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()  # __exit__ wakes the reader at once: no wait on the event loop
        self._thread = threading.Thread(target=self._read, name="kzprobe-capture", daemon=True)
        self._thread.start()
        return self

    async def __aenter__(self) -> Capture:
        """:meth:`__enter__` in a worker thread: attaching the filter and closing a packet socket
        wait for the kernel's RCU grace period (``synchronize_net``: 8-25 ms here, more under
        load), which must not stall the event loop of every other measurement."""
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *exc: object) -> None:
        """:meth:`__exit__` in a worker thread (see :meth:`__aenter__`)."""
        await asyncio.to_thread(self.__exit__, *exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._thread.join(timeout=2.0)
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for _pred, fut, loop in self._waiters:
                loop.call_soon_threadsafe(_cancel, fut)
            self._waiters.clear()

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock.fileno(), self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                return
            if sock.fileno() not in ready:
                continue
            for _ in range(64):
                try:
                    data, addr = sock.recvfrom(SNAPLEN)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return
                self.feed(data, outgoing=len(addr) > 2 and addr[2] == PACKET_OUTGOING)

    def feed(self, data: bytes, *, outgoing: bool = False) -> Pkt | None:
        """Keep one packet (the reader thread calls this; tests feed crafted packets)."""
        pkt = parse_ipv4(data, t=self.clock.now(), outgoing=outgoing)
        if pkt is None:
            return None
        if pkt.proto == ICMP and pkt.quoted is None and pkt.src not in self.hosts and pkt.dst not in self.hosts:
            return None  # an echo or the like between others
        with self._lock:
            if len(self.packets) >= self.max_packets:
                self.dropped += 1
                return None
            self.packets.append(pkt)
            hit = [(f, loop) for pred, f, loop in self._waiters if pred(pkt)]
            self._waiters = [w for w in self._waiters if not w[0](pkt)]
        for fut, loop in hit:
            loop.call_soon_threadsafe(_resolve, fut, pkt)
        return pkt

    async def wait_for(self, pred: Callable[[Pkt], bool], timeout_s: float) -> Pkt | None:
        """The first packet (already kept, or arriving within ``timeout_s``) for which ``pred`` holds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Pkt] = loop.create_future()
        with self._lock:
            for p in self.packets:
                if pred(p):
                    return p
            self._waiters.append((pred, fut, loop))
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            return None
        finally:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[1] is not fut]

    def matching(self, pred: Callable[[Pkt], bool]) -> list[Pkt]:
        with self._lock:
            return [p for p in self.packets if pred(p)]


def _resolve(fut: asyncio.Future[Pkt], pkt: Pkt) -> None:
    if not fut.done():
        fut.set_result(pkt)


def _cancel(fut: asyncio.Future[Pkt]) -> None:
    if not fut.done():
        fut.cancel()


def hops_from_ttl(ttl: int) -> int:
    """The sender's distance in hops from a received TTL, assuming the usual initial TTLs
    (64, 128, 255; the smallest not below ``ttl``): 1 = the first router."""
    initial = next(i for i in (64, 128, 255) if i >= ttl)
    return initial - ttl + 1


def write_pcap(path: str | Path, packets: Iterable[Pkt], *, clock: Clock | None = None) -> int:
    """Write ``packets`` (IPv4 datagrams) to a pcap file with scapy; returns how many.
    Timestamps: ``clock``'s UTC start plus each packet's ``t``.

    Raises:
        ImportError: scapy is not installed (``pip install 'kzprobe[packets]'``).
        OSError: the file cannot be written.
    """
    from scapy.layers.inet import IP
    from scapy.utils import PcapWriter

    n = 0
    w = PcapWriter(str(path), linktype=228, sync=False)  # LINKTYPE_IPV4: packets start at the IP header
    try:
        for p in packets:
            pkt = IP(p.raw)
            pkt.time = (clock.start_utc.timestamp() if clock is not None else 0.0) + p.t
            w.write(pkt)
            n += 1
    finally:
        w.close()
    return n
