"""Censor localisation, CenTrace-style (issue 16 part 3): at which hop is the trigger blocked?

After Sundara Raman, Wang, Dalek, Mayer, Ensafi, "Network Measurement Methods for Locating and
Examining Censorship Devices" (CenTrace, ACM CoNEXT 2022; Censored Planet): for TTL = 1, 2, …
a fresh TCP connection is opened to the blocked endpoint (with the full TTL, so the handshake
completes), then the socket's IP TTL is lowered to that value and the trigger is sent — the
ClientHello with the target SNI or the HTTP request with the target Host — and, beside it on
its own connection, the same request naming a benign host. A router where the TTL runs out
answers ICMP time-exceeded (its address: the path); the censor answers the target's copy with
a RST or drops it. The first TTL at which the target's copy is reset or dropped while the
benign one goes on (or is answered) is ``blocked_ttl``.

Where the censor sits, from that:

* the benign copy at ``blocked_ttl`` went on (time-exceeded from the next router): the censor
  acted after router ``blocked_ttl - 1`` forwarded the packet — an in-path device at that
  router, ``censor_hop = blocked_ttl - 1`` (CenTrace's "blocking hop" is ``blocked_ttl``);
* the benign copy at ``blocked_ttl`` was *answered*: whatever terminates TCP is at that
  distance — the server (then the censor sat just before it, ``blocked_ttl - 1``) or a
  transparent proxy on router ``blocked_ttl`` (the Kazakh TLS interceptors and the lab's
  censor proxy). One UDP datagram with the same TTL to the same address tells them apart:
  time-exceeded from a router means the address lies further on, so a proxy at
  ``blocked_ttl`` answered (``terminating``); otherwise the server is at that distance.

Rate limited: at most ``pps`` packets per second (:data:`PACKETS_PER_PROBE`), at most ``max_ttl`` TTLs, and it
stops at the TTL where the benign request reaches the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass

from probe.packets.capture import (
    FIN,
    ICMP,
    ICMP_TIME_EXCEEDED,
    ICMP_UNREACH,
    RST,
    TCP,
    UDP,
    Capture,
    Pkt,
)
from probe.packets.conn import fresh_connection
from probe.packets.pacing import Pacer
from probe.packets.trigger import Trigger
from probe.timing import Clock

MAX_TTL = 16
#: Port of the UDP datagram that tells a proxy from the server (traceroute's base port).
UDP_PROBE_PORT = 33434
BLOCKED = ("rst", "fin", "silence")


@dataclass(frozen=True, kw_only=True)
class HopProbe:
    """One TTL: what the target's and the benign copy drew (``expired`` | ``answered`` |
    ``rst`` | ``fin`` | ``silence`` | ``connect_failed``) and the time-exceeded source."""

    ttl: int
    target: str
    benign: str
    router: str | None


@dataclass(frozen=True, kw_only=True)
class Localisation:
    """The result of :func:`localise` (module doc).

    Attributes:
        ip, port, trigger: the endpoint and the trigger kind (tls, http).
        hops: one :class:`HopProbe` per TTL tried.
        blocked_ttl: the first TTL with the censor's reaction to the target copy (None: none seen).
        censor_hop: where the censor sits (None: not located); ``censor_address`` the router's
            time-exceeded source at that hop, when it sent one.
        terminating: a transparent proxy at ``censor_hop`` answered in the server's place.
        benign_blocked: the benign copy was blocked at the same TTL too (the block does not key
            on the name: an address/port rule).
        endpoint_ttl: the TTL at which the benign copy was answered (the endpoint's distance).
        packets_sent: probe connections and datagrams sent.
    """

    ip: str
    port: int
    trigger: str
    hops: tuple[HopProbe, ...]
    blocked_ttl: int | None
    censor_hop: int | None
    censor_address: str | None
    terminating: bool
    benign_blocked: bool
    endpoint_ttl: int | None
    packets_sent: int
    t0: float
    t: float
    failure: str | None = None


def answers_probe(p: Pkt, ip: str, port: int, sport: int, since: float = 0.0) -> bool:
    """``p`` answers the TTL-limited copy sent from ``sport`` to ``ip``:``port`` at ``since``
    (capture clock): the server's side of the flow with data, a RST or a FIN, or an ICMP
    time-exceeded quoting the copy — read no earlier than the copy left. The kernel hands a
    local port freed by one TTL's probe to a later one at times; without ``since`` the earlier
    probe's kept time-exceeded answered the later copy (a dropped copy read as ``expired``)."""
    if p.outgoing or p.t < since:
        return False
    if p.proto == TCP:
        return (p.src == ip and p.sport == port and p.dport == sport
                and (bool(p.payload) or bool((p.flags or 0) & (RST | FIN))))
    q = p.quoted
    return (p.proto == ICMP and p.icmp_type == ICMP_TIME_EXCEEDED and q is not None and q.proto == TCP
            and q.sport == sport and q.dport == port)


def outcome_of(got: Pkt | None) -> tuple[str, str | None]:
    """What a copy drew (:class:`HopProbe`), from the first packet :func:`answers_probe` took:
    (``silence`` | ``expired`` | ``rst`` | ``answered`` | ``fin``, the time-exceeded source)."""
    if got is None:
        return "silence", None
    if got.proto == ICMP:
        return "expired", got.src
    if got.flags and got.flags & RST:
        return "rst", None
    if got.payload:
        return "answered", None
    return "fin", None


async def _probe(ip: str, port: int, payload: bytes, ttl: int, cap: Capture, *, connect_timeout_s: float,
                 wait_s: float) -> tuple[str, str | None, int]:
    """One TTL-limited copy on a fresh connection → (outcome, time-exceeded source, local port)."""
    loop = asyncio.get_running_loop()
    async with fresh_connection(ip, port, connect_timeout_s) as conn:
        sock, sport = conn.sock, conn.sport
        if not conn.connected:
            return "connect_failed", None, sport
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        since = cap.clock.now()
        try:
            await loop.sock_sendall(sock, payload)
        except OSError:
            return "rst", None, sport
        got = await cap.wait_for(lambda p: answers_probe(p, ip, port, sport, since), wait_s)
        return (*outcome_of(got), sport)


async def _udp_beyond(ip: str, ttl: int, cap: Capture, wait_s: float) -> tuple[str | None, str | None]:
    """Send one UDP datagram with ``ttl`` to ``ip``: (``"router"``, its address) for a
    time-exceeded from another address, (``"endpoint"``, source) for an ICMP unreachable,
    (None, None) for silence."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.bind(("0.0.0.0", 0))
        sport = sock.getsockname()[1]
        try:
            sock.sendto(b"kzprobe-centrace", (ip, UDP_PROBE_PORT + ttl))
        except OSError:
            return None, None

        def hit(p: Pkt) -> bool:
            q = p.quoted
            return (not p.outgoing and p.proto == ICMP and q is not None and q.proto == UDP and q.sport == sport
                    and p.icmp_type in (ICMP_TIME_EXCEEDED, ICMP_UNREACH))

        got = await cap.wait_for(hit, wait_s)
    finally:
        sock.close()
    if got is None:
        return None, None
    if got.icmp_type == ICMP_TIME_EXCEEDED and got.src != ip:
        return "router", got.src
    return "endpoint", got.src


def inconclusive(target: str, benign: str) -> bool:
    """A TTL's round that says nothing about the censor: the target's connection failed, or its
    copy drew nothing while the benign twin drew nothing either (its connection failed or it
    was silent too). On a starved machine (the lab's userspace packet engine, the capture
    thread) an answer can come late or a handshake time out; such a round is tried once more
    before a silence counts as a drop (a second pair of silences: an address rule)."""
    return target == "connect_failed" or (target == "silence" and benign in ("silence", "connect_failed"))


def first_blocked(hops: list[HopProbe] | tuple[HopProbe, ...]) -> HopProbe | None:
    """The first TTL whose target copy was reset, FIN'd or dropped."""
    return next((h for h in hops if h.target in BLOCKED), None)


def decide(hops: list[HopProbe] | tuple[HopProbe, ...], where: str | None) -> tuple[int | None, bool]:
    """(censor hop, terminating proxy) from the probes and the UDP datagram's answer at the
    blocked TTL (``where``: "router", "endpoint" or None; module doc)."""
    blocked = first_blocked(hops)
    if blocked is None:
        return None, False
    if blocked.benign == "answered" and where == "router":
        return blocked.ttl, True
    return max(blocked.ttl - 1, 1), False


def _sent_by(cap: Capture, ports: tuple[int, int]) -> int:
    """TCP packets this host sent from ``ports`` (the capture's outgoing ones)."""
    return len(cap.matching(lambda p: p.outgoing and p.proto == TCP and p.sport in ports))


#: Packets one probe connection is counted as before it starts: SYN, the handshake's ACK, the
#: trigger, one retransmission of it (the TTL-limited copy dies, the kernel sends it again) and
#: the closing RST: the lab measured 3.4-5.2 a connection (README "Risk"). What it really sent
#: (the capture's outgoing packets of its port) is counted after it, and any excess charged.
PACKETS_PER_PROBE = 5


async def localise(ip: str, trig: Trigger, *, clock: Clock, max_ttl: int = MAX_TTL, pps: float = 10.0,
                   wait_s: float = 1.5, connect_timeout_s: float = 5.0, capture: Capture | None = None,
                   sleep: Callable[[float], object] = asyncio.sleep, pacer: Pacer | None = None) -> Localisation:
    """Locate the censor of ``trig`` on the path to ``ip`` (module doc). ``pps``: packets per second
    at most (each TTL's two connections count :data:`PACKETS_PER_PROBE` each, or what they sent
    when more). ``pacer``: the run's shared pace in packets (:mod:`probe.packets.pacing`), asked
    for each TTL's two probe connections and the UDP datagram. Never raises for the network."""
    t0 = clock.now()
    own = capture is None
    cap = capture if capture is not None else Capture([ip], clock=clock, proto=TCP)
    hops: list[HopProbe] = []
    sent = 0
    try:
        with cap if own else contextlib.nullcontext(cap):
            for ttl in range(1, max_ttl + 1):
                for attempt in (1, 2):  # an inconclusive round is tried once more
                    reserved = 2 * PACKETS_PER_PROBE
                    if pacer is not None:
                        await pacer.take(reserved)
                    started = asyncio.get_running_loop().time()
                    (to, tr, tp), (bo, br, bp) = await asyncio.gather(
                        _probe(ip, trig.port, trig.payload, ttl, cap, connect_timeout_s=connect_timeout_s,
                               wait_s=wait_s),
                        _probe(ip, trig.port, trig.benign, ttl, cap, connect_timeout_s=connect_timeout_s,
                               wait_s=wait_s))
                    sent += 2
                    # what the two connections really sent (the kernel's retransmissions included): more
                    # than reserved is charged to the pace after the fact
                    packets = _sent_by(cap, (tp, bp))
                    if pacer is not None and packets > reserved:
                        pacer.charge(packets - reserved)
                    final = attempt == 2 or not inconclusive(to, bo)
                    stop = final and (to == bo == "connect_failed" or bo == "answered" or (
                        to in BLOCKED and bo in BLOCKED and ttl > 1 and hops[-1].target in BLOCKED))
                    if not stop:
                        pause = max(packets, reserved) / pps - (asyncio.get_running_loop().time() - started)
                        if pause > 0:
                            await sleep(pause)  # type: ignore[misc]
                    if final:
                        break
                hops.append(HopProbe(ttl=ttl, target=to, benign=bo, router=tr or br))
                if stop:
                    break
            blocked = first_blocked(hops)
            where: str | None = None
            proxy_address: str | None = None
            if blocked is not None and blocked.benign == "answered":
                if pacer is not None:
                    await pacer.take(1)
                where, proxy_address = await _udp_beyond(ip, blocked.ttl, cap, wait_s)
                sent += 1
            censor_hop, terminating = decide(hops, where)
            endpoint = next((h.ttl for h in hops if h.benign == "answered"), None)
    except OSError as exc:
        return Localisation(ip=ip, port=trig.port, trigger=trig.kind, hops=tuple(hops), blocked_ttl=None,
                            censor_hop=None, censor_address=None, terminating=False, benign_blocked=False,
                            endpoint_ttl=None, packets_sent=sent, t0=t0, t=clock.now(),
                            failure=f"capture_error: {exc.strerror or exc}")
    address = proxy_address if terminating else None
    if censor_hop is not None and address is None:
        address = next((h.router for h in hops if h.ttl == censor_hop), None)
    return Localisation(ip=ip, port=trig.port, trigger=trig.kind, hops=tuple(hops),
                        blocked_ttl=blocked.ttl if blocked else None, censor_hop=censor_hop, censor_address=address,
                        terminating=terminating, benign_blocked=bool(blocked and blocked.benign in BLOCKED),
                        endpoint_ttl=endpoint, packets_sent=sent, t0=t0, t=clock.now())
