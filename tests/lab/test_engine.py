"""The packet engine's decisions on hand-made packets (no root, no TUN)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from probe.lab.engine import Engine, FlowRule, _checksum, give_back_hop, parse, rules_from_spec, tcp_segment

C4, S4 = "10.77.0.2", "198.18.1.1"
C6, S6 = "fd00:77::2", "2001:db8:4b5a:1::1"
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def pkt(src: str, dst: str, sport: int, dport: int, *, seq: int = 1000, ack: int = 0, flags: int = ACK,
        payload: bytes = b"", ttl: int = 60) -> bytes:
    """A TCP packet with ``payload`` (checksums right, as the kernel would hand it over)."""
    seg = tcp_segment(src=src, dst=dst, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, ttl=ttl)
    v4 = ":" not in src
    ihl = 20 if v4 else 40
    tcp = bytearray(seg[ihl:] + payload)
    tcp[16:18] = b"\0\0"
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    pseudo = s + d + (struct.pack("!BBH", 0, 6, len(tcp)) if v4 else struct.pack("!I3xB", len(tcp), 6))
    tcp[16:18] = struct.pack("!H", _checksum(pseudo + bytes(tcp)))
    if v4:
        ip = bytearray(seg[:20])
        ip[2:4] = struct.pack("!H", 20 + len(tcp))
        ip[10:12] = b"\0\0"
        ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
        return bytes(ip) + bytes(tcp)
    ip = bytearray(seg[:40])
    ip[4:6] = struct.pack("!H", len(tcp))
    return bytes(ip) + bytes(tcp)


def hello(sni: str) -> bytes:
    """A minimal TLS ClientHello carrying ``sni``."""
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    body = (b"\x03\x03" + b"\0" * 32 + b"\0" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + struct.pack("!H", len(sni_ext)) + sni_ext)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def engine(rule: FlowRule, addr: str = S4, port: int = 443, rng: float = 0.99) -> tuple[Engine, list[bytes]]:
    out: list[bytes] = []
    later: list[tuple[float, object]] = []

    def call_later(delay: float, fn: object) -> None:
        later.append((delay, fn))
        fn()  # type: ignore[operator]

    e = Engine(rules={(addr, port): rule}, write=out.append, rng=lambda: rng, later=call_later)
    e.later_calls = later  # type: ignore[attr-defined]
    return e, out


def valid(raw: bytes) -> bool:
    """IPv4 header and TCP checksums verify."""
    p = parse(raw)
    assert p is not None
    if p.version == 4:
        if _checksum(raw[:p.ihl]) != 0:
            return False
        pseudo = raw[12:20] + struct.pack("!BBH", 0, 6, len(raw) - p.ihl)
    else:
        pseudo = raw[8:40] + struct.pack("!I3xB", len(raw) - 40, 6)
    return _checksum(pseudo + raw[p.ihl:]) == 0


@pytest.mark.parametrize(("c", "s"), [(C4, S4), (C6, S6)])
def test_unwatched_and_ok_flows_pass_with_their_hop_given_back(c: str, s: str) -> None:
    e, out = engine(FlowRule(), addr=s)
    raw = pkt(c, s, 40000, 443, flags=SYN, ttl=9)
    e.handle(raw)
    e.handle(pkt(c, "198.18.9.9" if ":" not in c else "2001:db8:4b5a:1::9", 40000, 443, ttl=9))
    assert len(out) == 2
    for o in out:
        assert (o[8] if ":" not in c else o[7]) == 10 and valid(o)
    assert out[0][:7] == raw[:7] and out[0][20 if ":" not in c else 40:] == raw[20 if ":" not in c else 40:]


@pytest.mark.parametrize(("c", "s"), [(C4, S4), (C6, S6)])
@pytest.mark.parametrize("action", ["rst", "fin"])
def test_first_payload_answered_with_rst_or_fin_in_the_servers_name(c: str, s: str, action: str) -> None:
    e, out = engine(FlowRule(payload=action), addr=s)
    e.handle(pkt(c, s, 40000, 443, flags=SYN, seq=99))
    e.handle(pkt(s, c, 443, 40000, flags=SYN | ACK, seq=5000, ack=100))
    e.handle(pkt(c, s, 40000, 443, flags=ACK, seq=100, ack=5001))
    out.clear()
    e.handle(pkt(c, s, 40000, 443, flags=ACK | PSH, seq=100, ack=5001, payload=b"anything at all"))
    assert len(out) == 1
    forged = parse(out[0])
    assert forged is not None and valid(out[0])
    assert (forged.src, forged.sport, forged.dst, forged.dport) == (s, 443, c, 40000)
    assert forged.seq == 5001 and forged.ack == 100 + len(b"anything at all")
    assert forged.flags == ((RST | ACK) if action == "rst" else (FIN | ACK))
    assert (out[0][8] if ":" not in c else out[0][7]) == 65  # leaves the censor router with 64, its own TTL
    e.handle(pkt(s, c, 443, 40000, flags=ACK, seq=5001, ack=100))  # the server's, later: gone
    e.handle(pkt(c, s, 40000, 443, flags=ACK | PSH, seq=100, ack=5001, payload=b"again"))
    assert len(out) == 1 and e.stats[f"payload_{action}:{s}:443"] == 1


def test_payload_drop_drops_that_segment_and_every_later_packet_both_ways() -> None:
    e, out = engine(FlowRule(payload="drop"))
    e.handle(pkt(C4, S4, 40000, 443, flags=SYN))
    e.handle(pkt(S4, C4, 443, 40000, flags=SYN | ACK))
    n = len(out)
    for _ in range(3):  # retransmissions too
        e.handle(pkt(C4, S4, 40000, 443, payload=b"x" * 300))
    e.handle(pkt(S4, C4, 443, 40000))
    assert len(out) == n == 2
    e.handle(pkt(C4, S4, 40001, 443, flags=SYN))  # another connection starts afresh
    assert len(out) == 3


def test_name_drop_keys_on_the_sni_and_the_host() -> None:
    e, out = engine(FlowRule(names=("blocked.kz",)))
    e.handle(pkt(C4, S4, 40000, 443, payload=hello("www.blocked.kz")))
    e.handle(pkt(C4, S4, 40000, 443, payload=b"more"))
    assert out == [] and e.stats["name_drop:www.blocked.kz"] == 1
    e.handle(pkt(C4, S4, 40001, 443, payload=hello("example.com")))
    e.handle(pkt(C4, S4, 40001, 443, payload=b"more"))
    assert len(out) == 2
    h, hout = engine(FlowRule(names=("blocked.kz",)), port=80)
    h.handle(pkt(C4, S4, 40000, 80, payload=b"GET / HTTP/1.1\r\nHost: blocked.kz\r\n\r\n"))
    h.handle(pkt(C4, S4, 40001, 80, payload=b"GET / HTTP/1.1\r\nHost: other.kz\r\n\r\n"))
    assert len(hout) == 1 and parse(hout[0]).sport == 40001  # type: ignore[union-attr]


@pytest.mark.parametrize(("port", "first", "other"), [
    (443, hello("www.closed.kz"), hello("example.com")),
    (80, b"GET / HTTP/1.1\r\nHost: closed.kz\r\n\r\n", b"GET / HTTP/1.1\r\nHost: other.kz\r\n\r\n"),
], ids=["sni", "host"])
def test_name_fin_answers_the_sni_or_host_with_a_fin_in_the_servers_name(port: int, first: bytes,
                                                                         other: bytes) -> None:
    """A FIN keyed on the SNI (:443) / the Host (:80), not on the address: netem's DPICloseConnectionForTLSSNI
    and DPICloseConnectionForString (webconnectivityqa redirectWithConsistentDNSAndThenEOFForHTTP/HTTPS)."""
    e, out = engine(FlowRule(fin_names=("closed.kz",)), port=port)
    e.handle(pkt(C4, S4, 40000, port, flags=ACK | PSH, seq=100, ack=5001, payload=first))
    assert len(out) == 1
    forged = parse(out[0])
    assert forged is not None and valid(out[0])
    assert (forged.src, forged.sport, forged.dst, forged.dport, forged.flags) == (S4, port, C4, 40000, FIN | ACK)
    assert forged.seq == 5001 and forged.ack == 100 + len(first)
    assert e.stats[f"name_fin:{'www.closed.kz' if port == 443 else 'closed.kz'}"] == 1
    e.handle(pkt(S4, C4, port, 40000, flags=ACK, seq=5001, ack=100))  # the server's answer: gone
    e.handle(pkt(C4, S4, 40000, port, flags=ACK | PSH, seq=100, ack=5001, payload=b"more"))
    assert len(out) == 1
    e.handle(pkt(C4, S4, 40001, port, flags=ACK | PSH, payload=other))  # another name passes, untouched
    assert len(out) == 2 and parse(out[1]).payload == other  # type: ignore[union-attr]


@pytest.mark.parametrize(("port", "first", "name"), [
    (8443, hello("www.blocked.kz"), "www.blocked.kz"),
    (8080, b"GET / HTTP/1.1\r\nHost: blocked.kz:8080\r\n\r\n", "blocked.kz"),
    (443, b"GET / HTTP/1.1\r\nHost: blocked.kz\r\n\r\n", "blocked.kz"),
], ids=["sni-8443", "host-8080", "host-443"])
def test_name_is_read_from_the_payload_whatever_the_port(port: int, first: bytes, name: str) -> None:
    """The SNI of a ClientHello on :8443, the Host of a request on :8080: DPI reads the name from what the
    payload is, not from the port (ooni/netem DPIDropTrafficForTLSSNI parses any TCP segment's SNI). Before,
    any port but 443 was read as HTTP: a ClientHello to https://blocked.kz:8443/ passed untouched."""
    e, out = engine(FlowRule(names=("blocked.kz",)), port=port)
    e.handle(pkt(C4, S4, 40000, port, flags=ACK | PSH, payload=first))
    e.handle(pkt(C4, S4, 40000, port, payload=b"more"))
    assert out == [] and e.stats[f"name_drop:{name}"] == 1


def test_a_name_dropped_and_finned_is_dropped() -> None:
    rule = FlowRule(names=("a.kz",), fin_names=("b.kz", "a.kz"))
    assert (rule.name_action("www.a.kz"), rule.name_action("b.kz"), rule.name_action("c.kz")) == ("drop", "fin", None)
    assert rule.name_action(None) is None and rules_from_spec(
        [{"addr": S4, "port": 80, "fin_names": ["B.KZ"]}])[(S4, 80)].fin_names == ("b.kz",)


def test_byte_budget_freezes_the_servers_packets_only() -> None:
    e, out = engine(FlowRule(budget_bytes=3000))
    for _ in range(2):
        e.handle(pkt(S4, C4, 443, 40000, payload=b"d" * 1400))
    assert len(out) == 2
    e.handle(pkt(S4, C4, 443, 40000, payload=b"d" * 1400))  # 4200 > 3000: frozen from here on
    e.handle(pkt(S4, C4, 443, 40000, flags=FIN | ACK))
    assert len(out) == 2
    e.handle(pkt(C4, S4, 40000, 443, payload=b"still talking"))  # the client's still pass
    assert len(out) == 3 and e.stats[f"budget_freeze:{S4}:443"] == 1


def test_loss_and_delay() -> None:
    lossy, out = engine(FlowRule(loss_pct=50.0), rng=0.2)  # 0.2 * 100 < 50: lost
    lossy.handle(pkt(C4, S4, 40000, 443, flags=SYN))  # the handshake is spared
    lossy.handle(pkt(C4, S4, 40000, 443, payload=b"x"))
    lossy.handle(pkt(S4, C4, 443, 40000, payload=b"y"))
    assert len(out) == 1 and lossy.stats[f"loss:{S4}:443"] == 2
    kept, out2 = engine(FlowRule(loss_pct=50.0), rng=0.7)
    kept.handle(pkt(C4, S4, 40000, 443, payload=b"x"))
    assert len(out2) == 1
    slow, out3 = engine(FlowRule(delay_ms=150))
    slow.handle(pkt(C4, S4, 40000, 443))
    slow.handle(pkt(S4, C4, 443, 40000))
    assert len(out3) == 2 and [d for d, _ in slow.later_calls] == [0.15, 0.15]  # type: ignore[attr-defined]


def test_give_back_hop_keeps_the_ipv4_checksum_right_and_passes_non_tcp() -> None:
    raw = pkt(C4, S4, 1, 2, ttl=1)
    assert give_back_hop(raw)[8] == 2 and valid(give_back_hop(raw))
    assert give_back_hop(pkt(C4, S4, 1, 2, ttl=255))[8] == 255
    e, out = engine(FlowRule(payload="drop"))
    udp = bytearray(raw)
    udp[9] = 17
    e.handle(bytes(udp))
    assert len(out) == 1 and parse(bytes(udp)) is None


def test_flow_rule_validates() -> None:
    with pytest.raises(ValueError, match="payload"):
        FlowRule(payload="reset")
    with pytest.raises(ValueError):
        FlowRule(loss_pct=100)


def test_prefix_rules_cover_their_range_and_an_address_rule_wins() -> None:
    out: list[bytes] = []
    e = Engine(rules={("198.18.1.0/24", 443): FlowRule(budget_bytes=10), (S4, 443): FlowRule()}, write=out.append)
    e.handle(pkt("198.18.1.7", C4, 443, 40000, payload=b"x" * 100))  # in the prefix: over budget, frozen
    e.handle(pkt(S4, C4, 443, 40000, payload=b"x" * 100))  # its own rule (none of that)
    e.handle(pkt("198.18.1.7", C4, 80, 40000, payload=b"x" * 100))  # another port: not watched
    assert [parse(o).src for o in out] == [S4, "198.18.1.7"]  # type: ignore[union-attr]
    assert e.stats["budget_freeze:198.18.1.7:443"] == 1
