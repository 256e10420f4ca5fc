"""Parsing captured packets (table-driven, packets crafted with scapy), the BPF filter on a live
loopback capture, and pcap files written and read back."""

from __future__ import annotations

import asyncio
import socket

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.utils import rdpcap

from probe.packets.capture import (
    ICMP_TIME_EXCEEDED,
    RST,
    Capture,
    bpf_program,
    hops_from_ttl,
    parse_ipv4,
    tcp_flags_text,
    write_pcap,
)
from probe.timing import Clock

SYNACK = IP(src="198.18.1.1", dst="10.77.0.2", ttl=60, id=0) / TCP(sport=443, dport=40000, flags="SA", window=64240)
RSTPKT = IP(src="198.18.1.1", dst="10.77.0.2", ttl=63, id=0) / TCP(sport=443, dport=40000, flags="RA", window=0)
DNSREPLY = (IP(src="198.18.0.80", dst="10.77.0.2", ttl=63, id=4242) / UDP(sport=53, dport=50000)
            / DNS(id=7, qr=1, qd=DNSQR(qname="meduza.io"), an=DNSRR(rrname="meduza.io", rdata="198.18.255.66")))
TIMEEX = (IP(src="10.80.0.2", dst="10.77.0.2", ttl=63) / ICMP(type=11, code=0)
          / IP(src="10.77.0.2", dst="198.18.1.1", ttl=1) / TCP(sport=40001, dport=443))


@pytest.mark.parametrize(("pkt", "want"), [
    (SYNACK, {"proto": 6, "ttl": 60, "ip_id": 0, "sport": 443, "dport": 40000, "flags": 0x12, "window": 64240}),
    (RSTPKT, {"proto": 6, "ttl": 63, "flags": 0x14, "window": 0}),
    (DNSREPLY, {"proto": 17, "src": "198.18.0.80", "ttl": 63, "ip_id": 4242, "sport": 53, "dport": 50000}),
    (TIMEEX, {"proto": 1, "src": "10.80.0.2", "icmp_type": ICMP_TIME_EXCEEDED}),
])
def test_parse_crafted(pkt: IP, want: dict[str, object]) -> None:
    p = parse_ipv4(bytes(pkt))
    assert p is not None
    for k, v in want.items():
        assert getattr(p, k) == v, k


def test_parse_quoted_header_of_an_icmp_error() -> None:
    p = parse_ipv4(bytes(TIMEEX))
    assert p is not None and p.quoted is not None
    assert (p.quoted.src, p.quoted.dst, p.quoted.proto, p.quoted.sport, p.quoted.dport) == \
        ("10.77.0.2", "198.18.1.1", 6, 40001, 443)


def test_parse_dns_payload_is_the_udp_payload() -> None:
    p = parse_ipv4(bytes(DNSREPLY))
    assert p is not None and p.payload == bytes(DNSREPLY[UDP].payload)


@pytest.mark.parametrize("raw", [b"", b"\x45" * 10, bytes(IP(version=4) / TCP())[:25], b"\x60" + b"\0" * 59,
                                 b"\x41" + b"\0" * 30])
def test_parse_rejects_garbage(raw: bytes) -> None:
    p = parse_ipv4(raw)
    assert p is None or p.flags is None  # never a TCP packet made of garbage


@pytest.mark.parametrize(("ttl", "hops"), [(64, 1), (63, 2), (60, 5), (128, 1), (120, 9), (255, 1), (250, 6)])
def test_hops_from_ttl(ttl: int, hops: int) -> None:
    assert hops_from_ttl(ttl) == hops


def test_flags_text() -> None:
    assert tcp_flags_text(0x12) == "SA" and tcp_flags_text(RST | 0x10) == "RA" and tcp_flags_text(0x19) == "FPA"


def test_bpf_program_shape() -> None:
    prog = bpf_program(["10.0.0.1", "10.0.0.2"])
    assert len(prog) == 8 + 2 * 2 and prog[-1] == (0x06, 0, 0, 2048) and prog[-2] == (0x06, 0, 0, 0)
    assert prog[1][3] == 0x0800 and 1 + 1 + prog[1][2] == len(prog) - 2  # not IPv4: drop
    # every other jump lands on the accept instruction
    for pc, (code, jt, _jf, _k) in enumerate(prog):
        if code == 0x15 and jt:
            assert pc + 1 + jt == len(prog) - 1
    with pytest.raises(ValueError):
        bpf_program([f"10.0.0.{i}" for i in range(40)])
    udp = bpf_program(["10.0.0.1"], proto=17)
    assert udp[4] == (0x15, 0, len(udp) - 2 - 5, 17)  # another protocol: drop


async def test_live_capture_keeps_only_its_protocol(need_capture: None) -> None:
    clock = Clock()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.10", 0))
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.10", 0)
    try:
        with Capture(["127.0.0.10"], clock=clock, proto=6) as cap:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"udp", u.getsockname())
            _, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
            p = await cap.wait_for(lambda p: p.proto == 6, 2.0)
            w.close()
            await asyncio.sleep(0.2)
        assert p is not None and not [q for q in cap.packets if q.proto == 17]
    finally:
        u.close()
        srv.close()


async def test_live_capture_keeps_only_its_hosts(need_capture: None) -> None:
    clock = Clock()
    got = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got.bind(("127.0.0.9", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.8", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with Capture(["127.0.0.9"], clock=clock) as cap:
            s.sendto(b"kept", got.getsockname())
            s.sendto(b"filtered", other.getsockname())
            p = await cap.wait_for(lambda p: p.payload == b"kept", 2.0)
            await asyncio.sleep(0.2)
        assert p is not None and p.dst == "127.0.0.9"
        assert not [q for q in cap.packets if q.payload == b"filtered"]
        assert [q.outgoing for q in cap.packets if q.payload == b"kept"] == [True, False]  # sent, then received
    finally:
        for x in (got, other, s):
            x.close()


def test_capture_bounded_in_packets() -> None:
    cap = Capture(["198.18.1.1"], clock=Clock(), max_packets=2)
    for _ in range(5):
        cap.feed(bytes(SYNACK))
    assert len(cap.packets) == 2 and cap.dropped == 3


def test_pcap_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cap = Capture(["198.18.1.1", "198.18.0.80"], clock=Clock())
    for pkt in (SYNACK, RSTPKT, DNSREPLY, TIMEEX):
        cap.feed(bytes(pkt))
    path = tmp_path / "x.pcap"
    assert write_pcap(path, cap.packets) == 4
    back = rdpcap(str(path))
    assert [bytes(p) for p in back] == [bytes(p) for p in (SYNACK, RSTPKT, DNSREPLY, TIMEEX)]


async def test_async_capture_opens_and_closes_off_the_event_loop(need_capture: None) -> None:
    """``async with Capture``: the packet socket is made, filtered and closed in a worker thread
    (closing one waits for the kernel's RCU grace period, 8-25 ms: it stalled every measurement's
    event loop once per packet job); what it captures is the same."""
    import threading

    from probe.packets.capture import ETH_P_ALL

    threads: list[str] = []

    class Recording(socket.socket):
        def close(self) -> None:
            threads.append(f"close:{threading.current_thread() is threading.main_thread()}")
            super().close()

    def factory() -> socket.socket:
        threads.append(f"open:{threading.current_thread() is threading.main_thread()}")
        return Recording(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))

    got = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got.bind(("127.0.0.11", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        async with Capture(["127.0.0.11"], clock=Clock(), sock_factory=factory) as cap:
            s.sendto(b"kept", got.getsockname())
            p = await cap.wait_for(lambda p: p.payload == b"kept", 2.0)
        assert p is not None and p.dst == "127.0.0.11"
        assert threads == ["open:False", "close:False"], threads
    finally:
        got.close()
        s.close()
