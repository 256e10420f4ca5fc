"""Table-driven cases from pcap files (issue 16, tests): each case is a capture crafted with scapy
(what a censor's forged RST, an injected DNS reply or a router's time-exceeded looks like on the
wire), written to a pcap file, read back, fed to a :class:`~probe.packets.capture.Capture` as the
reader thread feeds it, and judged by the same functions the live tests use — no socket, no
root. The IP header fields are the evidence: TTL (distance), IP ID, window.

Sources of the shapes: Weaver, Sommer, Paxson, "Detecting Forged TCP Reset Packets" (NDSS 2009)
and Clayton, Murdoch, Watson, "Ignoring the Great Firewall of China" (PET 2006) for forged RSTs
with their own TTL and IP ID; FIELD-CASES.md FC-06/FC-07 (an unparseable injected reply, a raced
answer) for DNS; RFC 792 for the datagram an ICMP time-exceeded quotes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap

from probe.packets.capture import Capture
from probe.packets.centrace import answers_probe, outcome_of
from probe.packets.dnsinject import raced, reply_of
from probe.packets.forensics import FIN, RST, compare, from_server, is_synack
from probe.timing import Clock

CLIENT, SERVER, RESOLVER, NONRES = "10.77.0.2", "198.18.1.1", "10.76.0.53", "198.18.0.80"
SPORT, DPORT = 40000, 443


def replayed(tmp_path: Path, pkts: list[Packet]) -> Capture:
    """``pkts`` through a pcap file and into a capture of the server, the resolvers and ICMP."""
    f = tmp_path / "case.pcap"
    wrpcap(str(f), pkts)
    cap = Capture([SERVER, RESOLVER, NONRES], clock=Clock())
    for p in rdpcap(str(f)):
        cap.feed(bytes(p), outgoing=p[IP].src == CLIENT)
    return cap


def seg(flags: str, *, ttl: int, ip_id: int, window: int = 64240, sport: int = DPORT, dport: int = SPORT,
        src: str = SERVER, load: bytes = b"") -> Packet:
    p = IP(src=src, dst=CLIENT, ttl=ttl, id=ip_id) / TCP(sport=sport, dport=dport, flags=flags, window=window)
    return p / Raw(load) if load else p


SYN = IP(src=CLIENT, dst=SERVER, ttl=64, id=1) / TCP(sport=SPORT, dport=DPORT, flags="S")
HELLO = IP(src=CLIENT, dst=SERVER, ttl=64, id=2) / TCP(sport=SPORT, dport=DPORT, flags="PA") / Raw(b"\x16\x03\x01")

# (case, packets, (synack ttl/id/window/hops, ender flags/ttl/id/window/hops) or None, injected, ip ids differ)
FORENSICS = [
    ("forged RST nearer than the server, constant IP ID 0, window 0 (GFW-like)",
     [SYN, seg("SA", ttl=55, ip_id=12345), HELLO, seg("R", ttl=62, ip_id=0, window=0)],
     ((55, 12345, 64240, 10), ("R", 62, 0, 0, 3)), True, True),
    ("the server's own RST: same TTL, its IP ID counter",
     [SYN, seg("SA", ttl=55, ip_id=12345), HELLO, seg("RA", ttl=55, ip_id=12347, window=0)],
     ((55, 12345, 64240, 10), ("RA", 55, 12347, 0, 10)), False, False),
    ("the lab's packet engine: Linux SYN-ACK with IP ID 0, forged RST two hops nearer",
     [SYN, seg("SA", ttl=61, ip_id=0), HELLO, seg("RA", ttl=63, ip_id=0, window=0)],
     ((61, 0, 64240, 4), ("RA", 63, 0, 0, 2)), True, False),
    ("an injector copying the server's TTL: the TTL decides (not injected), the IP ID is recorded beside it",
     [SYN, seg("SA", ttl=55, ip_id=12345), HELLO, seg("R", ttl=55, ip_id=0, window=0)],
     ((55, 12345, 64240, 10), ("R", 55, 0, 0, 10)), False, True),
    ("a Windows server (initial TTL 128) behind an injector on a Linux box",
     [SYN, seg("SA", ttl=118, ip_id=2001), HELLO, seg("R", ttl=60, ip_id=0, window=0)],
     ((118, 2001, 64240, 11), ("R", 60, 0, 0, 5)), True, True),
    ("a forged FIN (the censor closes as if the server did: tcp-actions payload fin)",
     [SYN, seg("SA", ttl=60, ip_id=0), HELLO, seg("FA", ttl=63, ip_id=0, window=502)],
     ((60, 0, 64240, 5), ("FA", 63, 0, 502, 2)), True, False),
    ("a RST to the SYN: no SYN-ACK to compare with (the RST's distance is still recorded)",
     [SYN, seg("RA", ttl=64, ip_id=0, window=0)],
     (None, ("RA", 64, 0, 0, 1)), None, None),
    ("the RST of another flow (another client port) is not this flow's ender",
     [SYN, seg("SA", ttl=55, ip_id=12345), HELLO, seg("R", ttl=62, ip_id=0, dport=SPORT + 1)],
     ((55, 12345, 64240, 10), None), None, None),
    ("a RST from another address (a spoof for someone else) is not this flow's ender",
     [SYN, seg("SA", ttl=55, ip_id=12345), HELLO, seg("R", ttl=62, ip_id=0, src="198.18.1.2")],
     ((55, 12345, 64240, 10), None), None, None),
]


@pytest.mark.parametrize(("case", "pkts", "want", "injected", "ids"), FORENSICS, ids=[c[0] for c in FORENSICS])
def test_forensics_from_pcap(tmp_path: Path, case: str, pkts: list[Packet],
                             want: tuple[tuple[int, ...] | None, tuple[object, ...] | None], injected: bool | None,
                             ids: bool | None) -> None:
    cap = replayed(tmp_path, pkts)
    ours = cap.matching(lambda p: from_server(p, SERVER, DPORT, SPORT))
    synack = next((p for p in ours if is_synack(p)), None)
    ender = next((p for p in ours if (p.flags or 0) & (RST | FIN)), None)
    s, e, got_injected, got_ids = compare(synack, ender)
    want_s, want_e = want
    assert (None if s is None else (s.ttl, s.ip_id, s.window, s.hops_est)) == want_s
    assert (None if e is None else (e.flags, e.ttl, e.ip_id, e.window, e.hops_est)) == want_e
    assert (got_injected, got_ids) == (injected, ids)


def query(port: int, dst: str) -> Packet:
    return IP(src=CLIENT, dst=dst, ttl=64, id=7) / UDP(sport=port, dport=53) / DNS(id=0x4242, rd=1,
                                                                                  qd=DNSQR(qname="meduza.io"))


def answer(src: str, port: int, *, ttl: int, ip_id: int, ip: str, aa: int = 0) -> Packet:
    return (IP(src=src, dst=CLIENT, ttl=ttl, id=ip_id) / UDP(sport=53, dport=port)
            / DNS(id=0x4242, qr=1, rd=1, ra=1, aa=aa, qd=DNSQR(qname="meduza.io"),
                  an=DNSRR(rrname="meduza.io", rdata=ip, ttl=300)))


GARBLED = (IP(src=RESOLVER, dst=CLIENT, ttl=62, id=0) / UDP(sport=53, dport=50001)
           / Raw(b"\x42\x42\x81\x80\x00\x01\x00\x01\x00\x00\x00\x01" + b"\xc0\x0c\xff" * 4))

# (case, packets, the client port asked from, (ttl, ip id, answers, parse error) per reply, raced)
DNS_CASES = [
    ("a genuine answer alone",
     [query(50001, RESOLVER), answer(RESOLVER, 50001, ttl=63, ip_id=901, ip="198.18.1.1")],
     [(63, 901, ("198.18.1.1",), False)], False),
    ("an injected answer racing the genuine one from another distance (FC-07)",
     [query(50001, RESOLVER), answer(RESOLVER, 50001, ttl=62, ip_id=0, ip="10.10.34.34"),
      answer(RESOLVER, 50001, ttl=63, ip_id=902, ip="198.18.1.1")],
     [(62, 0, ("10.10.34.34",), False), (63, 902, ("198.18.1.1",), False)], True),
    ("the same distance, but a constant IP ID 0 beside the resolver's counter",
     [query(50001, RESOLVER), answer(RESOLVER, 50001, ttl=63, ip_id=0, ip="10.10.34.34"),
      answer(RESOLVER, 50001, ttl=63, ip_id=903, ip="198.18.1.1")],
     [(63, 0, ("10.10.34.34",), False), (63, 903, ("198.18.1.1",), False)], True),
    ("two replies of one sender (a retransmitted query answered twice): not a race",
     [query(50001, RESOLVER), answer(RESOLVER, 50001, ttl=63, ip_id=904, ip="198.18.1.1"),
      answer(RESOLVER, 50001, ttl=63, ip_id=905, ip="198.18.1.1")],
     [(63, 904, ("198.18.1.1",), False), (63, 905, ("198.18.1.1",), False)], False),
    ("an injected reply no parser takes (FC-06) is kept, and races the genuine one",
     [query(50001, RESOLVER), GARBLED, answer(RESOLVER, 50001, ttl=63, ip_id=906, ip="198.18.1.1")],
     [(62, 0, (), True), (63, 906, ("198.18.1.1",), False)], True),
    ("a reply to another client port is not this query's",
     [query(50001, RESOLVER), answer(RESOLVER, 50002, ttl=62, ip_id=0, ip="10.10.34.34"),
      answer(RESOLVER, 50001, ttl=63, ip_id=907, ip="198.18.1.1")],
     [(63, 907, ("198.18.1.1",), False)], False),
    ("the non-resolver answered: an injector two hops away (any reply there is injection)",
     [query(50003, NONRES), answer(NONRES, 50003, ttl=63, ip_id=0, ip="198.18.255.66", aa=1)],
     [(63, 0, ("198.18.255.66",), False)], False),
]


@pytest.mark.parametrize(("case", "pkts", "port", "want", "is_raced"),
                         [(c, p, 50003 if "non-resolver" in c else 50001, w, r) for c, p, w, r in DNS_CASES],
                         ids=[c[0] for c in DNS_CASES])
def test_dns_replies_from_pcap(tmp_path: Path, case: str, pkts: list[Packet], port: int,
                               want: list[tuple[object, ...]], is_raced: bool) -> None:
    cap = replayed(tmp_path, pkts)
    # as dns_injection selects them: received, to the query's port, DNS from port 53
    replies = tuple(r for p in cap.matching(lambda p: not p.outgoing and p.dport == port)
                    if (r := reply_of(p)) is not None)
    assert [(r.ttl, r.ip_id, r.answers, r.parse_error) for r in replies] == want
    assert all(r.dns_id == 0x4242 for r in replies)
    assert raced(replies) is is_raced
    if "non-resolver" in case:
        assert replies[0].src == NONRES and replies[0].hops_est == 2


def copy(ttl: int, sport: int) -> Packet:
    return IP(src=CLIENT, dst=SERVER, ttl=ttl, id=9) / TCP(sport=sport, dport=DPORT, flags="PA") / Raw(b"\x16\x03\x01")


def expired(router: str, quoted: Packet, ttl: int = 63) -> Packet:
    return IP(src=router, dst=CLIENT, ttl=ttl) / ICMP(type=11, code=0) / bytes(quoted)[:28]


# (case, packets, what the copy sent from SPORT with TTL 2 drew)
HOP_CASES = [
    ("time-exceeded quoting the copy: the router's address is the path",
     [copy(2, SPORT), expired("10.80.0.2", copy(1, SPORT))], ("expired", "10.80.0.2")),
    ("time-exceeded quoting another copy (another client port) is not this one's: silence",
     [copy(2, SPORT), expired("10.80.0.2", copy(1, SPORT + 1))], ("silence", None)),
    ("a RST from the endpoint's address (forged or not): rst",
     [copy(2, SPORT), seg("RA", ttl=63, ip_id=0, window=0)], ("rst", None)),
    ("data from the endpoint's address: answered (a terminating proxy, or the server)",
     [copy(2, SPORT), seg("PA", ttl=62, ip_id=0, load=b"\x16\x03\x03\x00\x5a")], ("answered", None)),
    ("a FIN without data: fin", [copy(2, SPORT), seg("FA", ttl=63, ip_id=0)], ("fin", None)),
    ("a bare ACK is no answer: silence", [copy(2, SPORT), seg("A", ttl=55, ip_id=1)], ("silence", None)),
    ("an echo reply (ICMP, not an error) is no answer: silence",
     [copy(2, SPORT), IP(src="10.80.0.2", dst=CLIENT, ttl=63) / ICMP(type=0)], ("silence", None)),
]


@pytest.mark.parametrize(("case", "pkts", "want"), HOP_CASES, ids=[c[0] for c in HOP_CASES])
def test_hop_outcome_from_pcap(tmp_path: Path, case: str, pkts: list[Packet], want: tuple[str, str | None]) -> None:
    cap = replayed(tmp_path, pkts)
    got = next(iter(cap.matching(lambda p: answers_probe(p, SERVER, DPORT, SPORT))), None)
    assert outcome_of(got) == want
