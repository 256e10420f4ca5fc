"""Reset and drop forensics (issue 16 part 2): did the server end the connection, or something on the path?

One TCP connection to the blocked endpoint under a capture: the SYN-ACK is kept, the
trigger (:mod:`probe.packets.trigger`) is sent, and what ends the exchange is kept — a RST,
a FIN, data, or silence. A RST (or FIN) whose IP TTL differs from the SYN-ACK's came from a
different distance than the server: an **on-path injector** (Weaver, Sommer, Paxson,
"Detecting Forged TCP Reset Packets", NDSS 2009; Clayton, Murdoch, Watson, "Ignoring the
Great Firewall of China", PET 2006: the GFW's resets carry their own TTL and IP ID). The IP
ID (a constant 0, or far from the server's) and the window are recorded beside it; the TTL
decides, since a genuine RST of the same host leaves with the same initial TTL on the same
path. Silence after the SYN-ACK is recorded as ``silence`` (a drop: nothing to compare).

A segment is the flow's only when it came from the server's address and port to the local port
AND was read no earlier than that port was bound (capture clock): the capture keeps every packet
of the address, and the kernel hands a local port freed by another connection (one reset with
SO_LINGER 0 is free at once) to a later bind, so without the time a RST kept from that earlier
connection answered this one (a dropped SYN read as ``syn_rst``), as in
:func:`probe.packets.centrace.answers_probe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

from probe.packets.capture import ACK, FIN, RST, SYN, TCP, Capture, Pkt, hops_from_ttl
from probe.packets.conn import fresh_connection
from probe.timing import Clock


@dataclass(frozen=True, kw_only=True)
class SegmentInfo:
    """The header fields compared: IP TTL, IP ID, TCP window, flags, and the distance the TTL says."""

    ttl: int
    ip_id: int
    window: int
    flags: str
    hops_est: int
    t: float

    @classmethod
    def of(cls, p: Pkt) -> SegmentInfo:
        from probe.packets.capture import tcp_flags_text

        return cls(ttl=p.ttl, ip_id=p.ip_id, window=p.window or 0, flags=tcp_flags_text(p.flags or 0),
                   hops_est=hops_from_ttl(p.ttl), t=p.t)


@dataclass(frozen=True, kw_only=True)
class ResetForensics:
    """The result of :func:`reset_forensics`.

    Attributes:
        ip, port: the endpoint.
        trigger: "tls" (ClientHello with the target SNI) or "http" (GET with the Host).
        outcome: ``rst`` | ``fin`` | ``data`` | ``silence`` (after the trigger), ``syn_rst`` /
            ``syn_timeout`` / ``connect_failed`` (no handshake).
        synack, ender: the SYN-ACK and the RST/FIN that ended the flow (None when not seen).
        injected: the ender's TTL differs from the SYN-ACK's (an on-path injector); None when
            there is nothing to compare.
        ip_id_differs: the IP IDs look like two senders (one 0, the other not; or more than
            1000 apart).
        packets_sent: packets this host sent in the flow (captured).
        synack_port: the port whose SYN-ACK was compared when it is not ``port``: a SYN answered
            by a RST has no handshake of its own, so the same server's other port (443 ↔ 80) is
            asked for one (None: ``port``'s own, or none was asked).
    """

    ip: str
    port: int
    trigger: str
    outcome: str
    synack: SegmentInfo | None
    ender: SegmentInfo | None
    injected: bool | None
    ip_id_differs: bool | None
    packets_sent: int
    t0: float
    t: float
    failure: str | None = None
    synack_port: int | None = None


def ip_ids_differ(synack: int, ender: int) -> bool:
    """IP IDs no single sender would give a few packets apart: a RST with ID 0 after a SYN-ACK
    with another (the GFW's and the lab injector's constant), or two non-zero IDs more than 1000
    apart. Linux sends its SYN-ACKs with ID 0 and a later RST with a counter: not a mismatch."""
    if synack == 0 or ender == 0:
        return ender == 0 and synack != 0
    return min((synack - ender) % 65536, (ender - synack) % 65536) > 1000


async def _synack_of(ip: str, port: int, cap: Capture, connect_timeout_s: float, clock: Clock
                     ) -> tuple[Pkt | None, int | None]:
    """The SYN-ACK of one connection to ``ip``:``port`` (closed at once, with a RST) and the
    connection's local port; (None, port) when the SYN drew none (None: no socket)."""
    since = clock.now()
    async with fresh_connection(ip, port, connect_timeout_s) as conn:
        if not conn.connected:
            return None, conn.sport
        sport = conn.sport
        return await cap.wait_for(lambda p: from_server(p, ip, port, sport, since) and is_synack(p), 0.5), sport


async def reset_forensics(ip: str, port: int, payload: bytes, *, trigger: str, clock: Clock,
                          connect_timeout_s: float = 5.0, wait_s: float = 5.0,
                          capture: Capture | None = None, other_port: int | None = None) -> ResetForensics:
    """Connect to ``ip``:``port``, send ``payload``, and compare what ends the flow with the
    SYN-ACK (module doc). A SYN answered by a RST (``syn_rst``) has no SYN-ACK of its own: with
    ``other_port``, one connection there gives the same server's SYN-ACK to compare the RST with
    (a censor resetting one port answers from its own distance). Never raises for the network.
    A ``capture`` given must run on ``clock`` (the flow's packets are those read after its bind)."""
    t0 = clock.now()
    loop = asyncio.get_running_loop()
    own = capture is None
    cap = capture if capture is not None else Capture([ip], clock=clock, proto=TCP)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    outcome = "silence"
    try:
        with cap if own else contextlib.nullcontext(cap):
            since = clock.now()  # before the bind: a packet read earlier is another flow's (module doc)
            sock.bind(("0.0.0.0", 0))
            sport = sock.getsockname()[1]

            def ours(p: Pkt) -> bool:
                return from_server(p, ip, port, sport, since)

            try:
                async with asyncio.timeout(connect_timeout_s):
                    await loop.sock_connect(sock, (ip, port))
            except (OSError, TimeoutError) as exc:
                rst = await cap.wait_for(lambda p: ours(p) and bool((p.flags or 0) & RST), 0.2)
                outcome = "syn_rst" if rst is not None else (
                    "syn_timeout" if isinstance(exc, TimeoutError) else "connect_failed")
                other, other_sport = None, None
                if rst is not None and other_port is not None and other_port != port:
                    other, other_sport = await _synack_of(ip, other_port, cap, min(connect_timeout_s, 3.0), clock)
                return _result(ip, port, trigger, outcome, other, rst, cap, (sport, other_sport), since, t0, clock,
                               synack_port=other_port if other is not None else None)
            synack = await cap.wait_for(lambda p: ours(p) and is_synack(p), 0.5)
            try:
                await loop.sock_sendall(sock, payload)
                async with asyncio.timeout(wait_s):
                    data = await loop.sock_recv(sock, 4096)
                outcome = "data" if data else "fin"
            except ConnectionResetError:
                outcome = "rst"
            except (OSError, TimeoutError):
                outcome = "silence"
            ender = None
            if outcome in ("rst", "fin"):
                flag = RST if outcome == "rst" else FIN
                ender = await cap.wait_for(lambda p: ours(p) and bool((p.flags or 0) & flag), 0.5)
            return _result(ip, port, trigger, outcome, synack, ender, cap, (sport, None), since, t0, clock)
    except OSError as exc:
        return ResetForensics(ip=ip, port=port, trigger=trigger, outcome="connect_failed", synack=None, ender=None,
                              injected=None, ip_id_differs=None, packets_sent=0, t0=t0, t=clock.now(),
                              failure=f"capture_error: {exc.strerror or exc}")
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def from_server(p: Pkt, ip: str, port: int, sport: int, since: float = 0.0) -> bool:
    """``p`` is a TCP segment of the flow ``sport`` → ``ip``:``port``, from the server's side, read
    no earlier than ``since`` (capture clock: when ``sport`` was bound; an earlier packet to that
    port was another connection's, module doc)."""
    return (p.proto == TCP and not p.outgoing and p.t >= since and p.src == ip and p.sport == port
            and p.dport == sport)


def is_synack(p: Pkt) -> bool:
    return (p.flags or 0) & (SYN | ACK) == SYN | ACK


def compare(synack: Pkt | None, ender: Pkt | None) -> tuple[SegmentInfo | None, SegmentInfo | None, bool | None,
                                                              bool | None]:
    """The SYN-ACK and the segment that ended the flow, side by side: (their fields, injected,
    IP IDs differ). Injected = a different IP TTL (module doc); None when one is missing."""
    s = SegmentInfo.of(synack) if synack is not None else None
    e = SegmentInfo.of(ender) if ender is not None else None
    injected = (s.ttl != e.ttl) if s is not None and e is not None else None
    ids = ip_ids_differ(s.ip_id, e.ip_id) if s is not None and e is not None else None
    return s, e, injected, ids


def _result(ip: str, port: int, trigger: str, outcome: str, synack: Pkt | None, ender: Pkt | None, cap: Capture,
            sports: tuple[int, int | None], since: float, t0: float, clock: Clock, *,
            synack_port: int | None = None) -> ResetForensics:
    s, e, injected, ids = compare(synack, ender)
    # this test's flows only: its local ports (the other port's connection too), from their bind on
    sent = len(cap.matching(lambda p: p.outgoing and p.proto == TCP and p.dst == ip and p.t >= since
                            and p.sport in sports))
    return ResetForensics(ip=ip, port=port, trigger=trigger, outcome=outcome, synack=s, ender=e, injected=injected,
                          ip_id_differs=ids, packets_sent=sent, t0=t0, t=clock.now(), synack_port=synack_port)
