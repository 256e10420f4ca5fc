"""DNS injection test (issue 16 part 1): who answers a DNS query, and from how far.

Two queries for the target name, each from its own UDP socket, under one capture:

1. to an address on the path where **no resolver listens** (default: the control helper's
   address, port 53). No genuine reply can come; any DNS reply is injected by something on
   the path (Iris / Satellite call this probing a non-resolver; the Great Firewall's and
   Iran's injectors answer queries to any address: Anonymous, "Towards a Comprehensive
   Picture of the Great Firewall's DNS Censorship", FOCI 2014; Pearce et al., "Global
   Measurement of DNS Manipulation", USENIX Security 2017).
2. to the **ISP resolver**: every reply kept; two replies whose IP TTL differs (or whose
   IP IDs look like two different senders) are a genuine answer raced by an injected one.

Every reply is kept with its IP TTL, IP ID, DNS id, flags, rcode, addresses and arrival
time. When the non-resolver answered, the query is sent again with IP TTL 1, 2, … (one
per ``1/pps`` s): the ICMP time-exceeded sources give the path, and the first TTL that
draws a DNS reply is the **injector's hop**. The TTL of the injected reply gives an
estimate too (:func:`probe.packets.capture.hops_from_ttl`).

A captured datagram answers one of the test's queries only when it came from the address and
port asked, to the query's local port, was read no earlier than that port was bound (capture
clock), and carries the query's DNS id (a time-exceeded: quotes a datagram from that port to that
address and port). The capture keeps every packet of the resolver's and non-resolver's addresses
(other measurements' ordinary DNS queries to the ISP resolver among them), and the kernel hands a
freed local port to a later socket: a reply kept from the port's earlier owner, or arriving late
for it, is not this query's (as :func:`probe.packets.centrace.answers_probe`).

IPv4 only; needs ``CAP_NET_RAW`` for the capture (the queries are ordinary UDP).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rdatatype

from probe.packets.capture import ICMP, ICMP_TIME_EXCEEDED, UDP, Capture, Pkt, hops_from_ttl
from probe.packets.pacing import Pacer
from probe.timing import Clock

#: Most TTL-limited queries of one test (hops probed).
MAX_TTL = 16


@dataclass(frozen=True, kw_only=True)
class DNSReplyPkt:
    """One DNS reply as captured.

    Attributes:
        src: the IP source (for an injected reply: whatever address the injector forged).
        ttl, ip_id: the IP header's TTL and identification.
        hops_est: the sender's distance estimated from ``ttl`` (:func:`hops_from_ttl`).
        dns_id, flags, rcode: the DNS header (``flags`` as the 16-bit field).
        answers: A/AAAA addresses in the answer section (empty when unparseable).
        t: arrival, seconds since the measurement start.
    """

    src: str
    ttl: int
    ip_id: int
    hops_est: int
    dns_id: int
    flags: int
    rcode: int
    answers: tuple[str, ...]
    t: float
    parse_error: bool = False


@dataclass(frozen=True, kw_only=True)
class DNSInjection:
    """The result of :func:`dns_injection`.

    Attributes:
        name: the name asked.
        non_resolver: the address:53 where no resolver listens; ``nonresolver_replies`` its replies.
        resolver: the ISP resolver ("" = not asked); ``resolver_replies`` every reply it drew.
        injected: a DNS reply came from the non-resolver (on-path injection).
        raced: the resolver's replies differ in IP TTL (or IP ID pattern): two senders raced.
        injector_hop: the first IP TTL whose query drew a DNS reply (None: not located).
        path: per TTL 1… below the injector's, the ICMP time-exceeded source (None: no answer).
        packets_sent: queries sent in all.
        failure: why the test could not run (OONI-style string), None when it ran.
    """

    name: str
    non_resolver: str
    resolver: str
    nonresolver_replies: tuple[DNSReplyPkt, ...]
    resolver_replies: tuple[DNSReplyPkt, ...]
    injected: bool
    raced: bool
    injector_hop: int | None
    path: tuple[str | None, ...]
    packets_sent: int
    t0: float
    t: float
    failure: str | None = None

    @property
    def injector_hops_est(self) -> int | None:
        """The injector's distance from the TTL of its first reply."""
        return self.nonresolver_replies[0].hops_est if self.nonresolver_replies else None


def _query(name: str) -> tuple[bytes, int]:
    q = dns.message.make_query(name, dns.rdatatype.A)
    return q.to_wire(), q.id


def reply_of(pkt: Pkt, port: int = 53) -> DNSReplyPkt | None:
    """A captured UDP packet from ``port`` as a :class:`DNSReplyPkt`, None when not DNS."""
    if pkt.proto != UDP or pkt.sport != port or len(pkt.payload) < 12:
        return None
    dns_id, flags = struct.unpack_from("!HH", pkt.payload, 0)
    answers: tuple[str, ...] = ()
    bad = False
    try:
        msg = dns.message.from_wire(pkt.payload)
        answers = tuple(rd.to_text() for rr in msg.answer if rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                        for rd in rr)
    except (dns.exception.DNSException, ValueError):
        bad = True
    return DNSReplyPkt(src=pkt.src, ttl=pkt.ttl, ip_id=pkt.ip_id, hops_est=hops_from_ttl(pkt.ttl), dns_id=dns_id,
                       flags=flags, rcode=flags & 0xF, answers=answers, t=pkt.t, parse_error=bad)


def answers_query(p: Pkt, *, server: str, port: int, sport: int, qid: int, since: float) -> bool:
    """``p`` is a DNS reply to the query with id ``qid`` sent from local port ``sport`` to
    ``server``:``port``, read no earlier than ``since`` (capture clock; module doc)."""
    return (not p.outgoing and p.proto == UDP and p.t >= since and p.src == server and p.sport == port
            and p.dport == sport and len(p.payload) >= 12 and struct.unpack_from("!H", p.payload, 0)[0] == qid)


def raced(replies: tuple[DNSReplyPkt, ...]) -> bool:
    """Two or more replies that no single sender would give: different IP TTLs (different
    distances), or one with IP ID 0 beside one without (a forging middlebox's constant id)."""
    if len(replies) < 2:
        return False
    if len({r.ttl for r in replies}) > 1:
        return True
    zero = [r.ip_id == 0 for r in replies]
    return any(zero) and not all(zero)


def _udp_socket(ttl: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    if ttl is not None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.bind(("0.0.0.0", 0))
    return s


def _send(s: socket.socket, wire: bytes, addr: tuple[str, int]) -> bool:
    try:
        s.sendto(wire, addr)
        return True
    except OSError:  # no route, a full buffer: that query is simply not sent
        return False


async def dns_injection(name: str, *, non_resolver: str, resolver: str = "", clock: Clock,
                        listen_s: float = 2.0, max_ttl: int = MAX_TTL, pps: float = 5.0, port: int = 53,
                        capture: Capture | None = None, pacer: Pacer | None = None) -> DNSInjection:
    """Run the DNS injection test for ``name`` (module doc). Never raises for the network.

    Args:
        name: the target's A-label name.
        non_resolver: an IPv4 address where no resolver listens (the helper's).
        resolver: the ISP resolver's IPv4 address ("" = skip that query).
        clock: the measurement's time base.
        listen_s: how long replies are awaited after each full-TTL query.
        max_ttl: most TTL-limited queries (hops) when locating an injector.
        pps: TTL-limited queries (one packet each) per second at most.
        port: the DNS port (53; tests use others).
        capture: an open capture including both addresses, on ``clock``; None = open one.
        pacer: the run's shared pace (:mod:`probe.packets.pacing`), asked for each TTL-limited query.
    """
    t0 = clock.now()
    cm = capture if capture is not None else Capture([non_resolver] + ([resolver] if resolver else []), clock=clock,
                                                     proto=UDP)
    sent = 0
    path: list[str | None] = []
    hop: int | None = None
    socks: list[socket.socket] = []
    try:
        with cm if capture is None else contextlib.nullcontext(cm) as cap:
            since = clock.now()  # before the binds: a packet read earlier is not ours (module doc)
            s1 = _udp_socket()
            socks.append(s1)
            p1 = s1.getsockname()[1]
            wire, id1 = _query(name)
            sent += _send(s1, wire, (non_resolver, port))
            to_res: tuple[DNSReplyPkt, ...] = ()
            if resolver:
                s2 = _udp_socket()
                socks.append(s2)
                p2 = s2.getsockname()[1]
                wire2, id2 = _query(name)
                sent += _send(s2, wire2, (resolver, port))
            await asyncio.sleep(listen_s)
            to_nr = tuple(r for p in cap.matching(lambda p: answers_query(p, server=non_resolver, port=port, sport=p1,
                                                                          qid=id1, since=since))
                          if (r := reply_of(p, port)) is not None)
            if resolver:
                to_res = tuple(r for p in cap.matching(lambda p: answers_query(p, server=resolver, port=port, sport=p2,
                                                                               qid=id2, since=since))
                               if (r := reply_of(p, port)) is not None)
            if to_nr:
                for ttl in range(1, max_ttl + 1):
                    if pacer is not None:
                        await pacer.take(1)
                    sent_at = clock.now()
                    s = _udp_socket(ttl)
                    socks.append(s)
                    sp = s.getsockname()[1]
                    wire_t, id_t = _query(name)
                    sent += _send(s, wire_t, (non_resolver, port))

                    def hit(p: Pkt, sp: int = sp, qid: int = id_t, since: float = sent_at) -> bool:
                        if p.outgoing or p.t < since:
                            return False
                        if p.proto == UDP:
                            return answers_query(p, server=non_resolver, port=port, sport=sp, qid=qid, since=since)
                        q = p.quoted
                        return (p.proto == ICMP and p.icmp_type == ICMP_TIME_EXCEEDED and q is not None
                                and q.proto == UDP and q.sport == sp and q.dst == non_resolver and q.dport == port)

                    got = await cap.wait_for(hit, max(1.0 / pps, 1.0))
                    if got is not None and got.proto == UDP:
                        hop = ttl
                        break
                    path.append(got.src if got is not None else None)
                    await asyncio.sleep(1.0 / pps)
    except OSError as exc:
        return DNSInjection(name=name, non_resolver=non_resolver, resolver=resolver, nonresolver_replies=(),
                            resolver_replies=(), injected=False, raced=False, injector_hop=None, path=(),
                            packets_sent=sent, t0=t0, t=clock.now(),
                            failure=f"capture_error: {exc.strerror or exc}")
    finally:
        for s in socks:
            s.close()
    return DNSInjection(name=name, non_resolver=non_resolver, resolver=resolver, nonresolver_replies=to_nr,
                        resolver_replies=to_res, injected=bool(to_nr), raced=raced(to_res), injector_hop=hop,
                        path=tuple(path), packets_sent=sent, t0=t0, t=clock.now())
