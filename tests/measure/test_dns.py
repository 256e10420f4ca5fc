"""Tests for probe.measure.dns against loopback fake servers (tests/fixtures/dns_server.py).

Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are
public here (``test_bogons``); 10/8, 127/8 and ::1 stay bogons.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct

import dns.message
import dns.rrset
import pytest
import trustme

from probe import failures
from probe.measure import dns as pdns
from probe.measure.dns import DNSAnswer, query_doh, query_udp, resolve_system
from probe.timing import Clock
from tests.fixtures.dns_server import (
    NO_REPLY,
    Reply,
    fc06_replies,
    fc07_replies,
    table_for_hosts,
    turkmen_injection,
)

NAME = "www.example.org"
TIMEOUT = 1.0


def a(ip: str, ttl: int = 300, bogon: bool = False) -> DNSAnswer:
    return DNSAnswer(answer_type="A", ipv4=ip, ttl=ttl, bogon=bogon)


def cname(target: str, ttl: int = 300) -> DNSAnswer:
    return DNSAnswer(answer_type="CNAME", hostname=target, ttl=ttl)


def free_udp_port() -> int:
    """A loopback UDP port with nobody listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def udp(server, name=NAME, qtype="A", *, timeout_s=TIMEOUT, listen_s=0.15, bogons, **kw):
    return await query_udp(name, qtype, server=server.address, clock=Clock(), timeout_s=timeout_s,
                           listen_s=listen_s, bogons=bogons, **kw)


# --------------------------------------------------------------------------- UDP: one reply

ONE_REPLY_CASES = [
    pytest.param("A", Reply(ips=["192.0.2.1"], ttl=123), None, (a("192.0.2.1", 123),), id="a"),
    pytest.param("A", Reply(ips=["192.0.2.1", "192.0.2.2"]), None, (a("192.0.2.1"), a("192.0.2.2")), id="two-a"),
    pytest.param("AAAA", Reply(ips=["2001:db8::1"], ttl=60), None,
                 (DNSAnswer(answer_type="AAAA", ipv6="2001:db8::1", ttl=60),), id="aaaa"),
    pytest.param("A", Reply(ips=["10.10.34.35"]), None, (a("10.10.34.35", bogon=True),), id="bogon-a"),
    pytest.param("AAAA", Reply(ips=["::1"]), None,
                 (DNSAnswer(answer_type="AAAA", ipv6="::1", ttl=300, bogon=True),), id="bogon-aaaa"),
    pytest.param("A", Reply(rcode="NXDOMAIN"), failures.DNS_NXDOMAIN, (), id="nxdomain"),
    pytest.param("A", Reply(rcode="SERVFAIL"), failures.DNS_SERVFAIL, (), id="servfail"),
    pytest.param("A", Reply(rcode="REFUSED"), failures.DNS_REFUSED, (), id="refused"),
    pytest.param("A", Reply(rcode="NOTIMP"), failures.DNS_SERVER_MISBEHAVING, (), id="notimp"),
    pytest.param("A", Reply(), failures.DNS_NO_ANSWER, (), id="noerror-empty"),
    pytest.param("A", Reply(cnames=["cdn.example.net", "edge.example.com"], ips=["192.0.2.9"], ttl=30), None,
                 (cname("cdn.example.net", 30), cname("edge.example.com", 30), a("192.0.2.9", 30)), id="cname-chain"),
    pytest.param("A", Reply(cnames=["cdn.example.net"]), failures.DNS_NO_ANSWER, (cname("cdn.example.net"),),
                 id="cname-without-address"),
]


@pytest.mark.parametrize(("qtype", "reply", "failure", "answers"), ONE_REPLY_CASES)
async def test_udp_single_reply(dns_server_factory, test_bogons, qtype, reply, failure, answers):
    server = dns_server_factory({(NAME, qtype): [reply]})
    q = await udp(server, qtype=qtype, bogons=test_bogons)
    assert q.failure == failure
    assert q.answers == answers
    assert len(q.replies) == 1
    assert q.replies[0].answers == answers
    assert q.replies[0].parse_error is None
    assert q.replies[0].source == server.address
    assert (q.hostname, q.query_type, q.engine, q.resolver_address) == (NAME, qtype, "udp", server.address)
    assert q.t0 <= q.replies[0].t <= q.t
    assert [(r.name, r.qtype, r.edns) for r in server.queries] == [(NAME, qtype, False)]


async def test_udp_reply_records_header_and_raw_bytes(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.1"], rcode="NOERROR")]})
    q = await udp(server, bogons=test_bogons)
    reply = q.replies[0]
    raw = base64.b64decode(reply.raw_b64)
    assert raw[:2] == server.queries[0].wire[:2]
    assert reply.flags == struct.unpack("!H", raw[2:4])[0] == 0x8180
    assert reply.rcode == "NOERROR"
    assert q.addresses() == ("192.0.2.1",)


async def test_udp_timeout_when_nothing_answers(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [NO_REPLY]})
    q = await udp(server, timeout_s=0.3, bogons=test_bogons)
    assert q.failure == failures.GENERIC_TIMEOUT
    assert q.replies == () and q.answers == ()
    assert q.t - q.t0 >= 0.25
    assert len(server.queries) == 1  # one query, no retry


async def test_udp_port_unreachable_is_connection_refused(test_bogons):
    port = free_udp_port()
    q = await query_udp(NAME, "A", server=f"127.0.0.1:{port}", clock=Clock(), timeout_s=2.0, listen_s=0.1,
                        bogons=test_bogons)
    assert q.failure == failures.CONNECTION_REFUSED
    assert q.t - q.t0 < 1.5  # the ICMP error ends the wait, not the timeout
    assert q.resolver_address == f"127.0.0.1:{port}"


async def test_udp_unicode_name_is_sent_as_a_label(dns_server_factory, test_bogons):
    alabel = "xn--e1afmkfd.xn--80akhbyknj4f"
    server = dns_server_factory({(alabel, "A"): [Reply(ips=["192.0.2.5"])]})
    q = await udp(server, name="Пример.испытание", bogons=test_bogons)
    assert q.hostname == alabel
    assert q.addresses() == ("192.0.2.5",)
    assert server.queries[0].name == alabel


@pytest.mark.parametrize(("server", "expected"), [
    ("192.0.2.53", ("192.0.2.53", 53)),
    ("192.0.2.53:5353", ("192.0.2.53", 5353)),
    ("2001:db8::53", ("2001:db8::53", 53)),
    ("[2001:db8::53]", ("2001:db8::53", 53)),
    ("[2001:db8::53]:853", ("2001:db8::53", 853)),
])
def test_server_forms(server, expected):
    assert pdns._parse_server(server) == expected


@pytest.mark.parametrize("server", ["dns.example.org", "dns.example.org:53", "192.0.2.53:0", "192.0.2.53:x"])
async def test_bad_server_is_a_configuration_error(server, test_bogons):
    with pytest.raises(ValueError):
        await query_udp(NAME, "A", server=server, clock=Clock(), timeout_s=0.1, listen_s=0, bogons=test_bogons)


# --------------------------------------------------------------------------- UDP: several replies


async def test_fc07_two_forged_replies_then_genuine(dns_server_factory, test_bogons):
    """FC-07: every reply is recorded in arrival order; the first one (forged) is the answer."""
    server = dns_server_factory({(NAME, "A"): fc07_replies()})
    q = await udp(server, listen_s=0.5, bogons=test_bogons)
    assert [r.flags for r in q.replies] == [0x8400, 0x8180, 0x8180]
    assert [r.answers for r in q.replies] == [(a("198.51.100.201"),), (a("192.0.2.202"),), (a("192.0.2.71"),)]
    assert [r.t for r in q.replies] == sorted(r.t for r in q.replies)
    assert q.failure is None
    assert q.answers == (a("198.51.100.201"),)
    assert q.addresses() == ("198.51.100.201",)
    assert q.all_reply_addresses() == ("198.51.100.201", "192.0.2.202", "192.0.2.71")
    assert not any(ans.bogon for r in q.replies for ans in r.answers)  # routable, as the GFW's pools


async def test_listen_window_ends_after_first_reply(dns_server_factory, test_bogons):
    """A reply later than first + listen_s is not waited for."""
    server = dns_server_factory({(NAME, "A"): fc07_replies(genuine_delay=0.6)})
    q = await udp(server, timeout_s=2.0, listen_s=0.15, bogons=test_bogons)
    assert q.all_reply_addresses() == ("198.51.100.201", "192.0.2.202")
    assert q.t - q.t0 < 0.55


async def test_listen_window_never_exceeds_timeout(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(delay=0.1, ips=["192.0.2.1"]),
                                               Reply(delay=0.6, ips=["192.0.2.2"])]})
    q = await udp(server, timeout_s=0.3, listen_s=5.0, bogons=test_bogons)
    assert q.all_reply_addresses() == ("192.0.2.1",)
    assert q.t - q.t0 < 0.55


def _fc06_with_junk(wire: bytes) -> bytes:
    """The 2021 dump's shape: four 0xff bytes between the question and the answer."""
    return turkmen_injection(wire + b"\xff\xff\xff\xff")


def _garbage(wire: bytes) -> bytes:
    """The query id, response flags, then nothing a parser or a scan can use."""
    return wire[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\xff\xff"


@pytest.mark.parametrize(("edns", "first", "parse_error", "first_answers", "decides"), [
    pytest.param(True, lambda w: turkmen_injection(w), "BadEDNS", (a("127.0.0.1", bogon=True),), True,
                 id="fc06-edns-malformed"),
    pytest.param(False, lambda w: turkmen_injection(w), None, (a("127.0.0.1", bogon=True),), True,
                 id="fc06-variant-b-well-formed"),
    pytest.param(False, _fc06_with_junk, "BadPointer", (a("127.0.0.1", bogon=True),), True,
                 id="fc06-2021-junk-bytes"),
    pytest.param(True, _garbage, "", (), False, id="unrecoverable-garbage"),
])
async def test_fc06_injected_reply_is_evidence(dns_server_factory, test_bogons, edns, first, parse_error,
                                               first_answers, decides):
    """FC-06: the injected reply is kept byte for byte and (if addresses were recovered) wins."""
    server = dns_server_factory({("twitter.example.org", "A"): [Reply(raw=first),
                                                                Reply(delay=0.03, ips=["192.0.2.61"])]})
    q = await udp(server, name="twitter.example.org", listen_s=0.3, bogons=test_bogons, edns=edns)
    assert server.queries[0].edns is edns
    assert len(q.replies) == 2
    injected, genuine = q.replies
    assert base64.b64decode(injected.raw_b64) == first(server.queries[0].wire)
    if parse_error is None:
        assert injected.parse_error is None
    else:
        assert injected.parse_error is not None and parse_error in injected.parse_error
    assert injected.answers == first_answers
    assert injected.flags == 0x8180 and injected.rcode == "NOERROR"
    assert genuine.parse_error is None
    assert genuine.answers == (a("192.0.2.61"),)
    assert q.failure is None
    assert q.answers == (first_answers if decides else (a("192.0.2.61"),))
    assert q.all_reply_addresses() == tuple(x.address for x in first_answers) + ("192.0.2.61",)


async def test_fc06_recipe_helper(dns_server_factory, test_bogons):
    """The packaged FC-06 script (what the lead's end-to-end tests use) behaves as above."""
    server = dns_server_factory({("twitter.example.org", "A"): fc06_replies()})
    q = await udp(server, name="twitter.example.org", listen_s=0.3, bogons=test_bogons, edns=True)
    assert [bool(r.parse_error) for r in q.replies] == [True, False]
    assert q.addresses() == ("127.0.0.1",)
    assert q.answers[0].bogon is True
    assert q.all_reply_addresses() == ("127.0.0.1", "192.0.2.61")


async def test_reply_with_wrong_id_is_ignored(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["203.0.113.66"], wrong_id=True),
                                               Reply(delay=0.03, ips=["192.0.2.1"])]})
    q = await udp(server, bogons=test_bogons)
    assert len(q.replies) == 1
    assert q.answers == (a("192.0.2.1"),)
    assert "203.0.113.66" not in q.all_reply_addresses()


async def test_only_wrong_id_replies_is_a_timeout(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["203.0.113.66"], wrong_id=True)]})
    q = await udp(server, timeout_s=0.3, bogons=test_bogons)
    assert q.failure == failures.GENERIC_TIMEOUT
    assert q.replies == ()


async def test_reply_for_another_question_is_kept_but_does_not_decide(dns_server_factory, test_bogons):
    def other_question(wire: bytes) -> bytes:
        other = dns.message.make_query("other.example.org", "A")
        other.id = struct.unpack("!H", wire[:2])[0]
        resp = dns.message.make_response(other)
        resp.answer.append(dns.rrset.from_text("other.example.org.", 60, "IN", "A", "203.0.113.7"))
        return resp.to_wire()

    server = dns_server_factory({(NAME, "A"): [Reply(raw=other_question), Reply(delay=0.03, ips=["192.0.2.1"])]})
    q = await udp(server, bogons=test_bogons)
    assert len(q.replies) == 2
    assert q.replies[0].answers == ()  # not about our name
    assert q.answers == (a("192.0.2.1"),)


async def test_only_unusable_replies_is_server_misbehaving(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(raw=_garbage)]})
    q = await udp(server, timeout_s=0.5, bogons=test_bogons)
    assert q.failure == failures.DNS_SERVER_MISBEHAVING
    assert len(q.replies) == 1 and q.replies[0].parse_error


# --------------------------------------------------------------------------- DoH


async def doh(server, session, name=NAME, qtype="A", *, timeout_s=TIMEOUT, bogons):
    return await query_doh(name, qtype, url=server.url, session=session, clock=Clock(), timeout_s=timeout_s,
                           bogons=bogons)


async def test_doh_happy_path(doh_server_factory, doh_session, test_bogons):
    server = doh_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.71", "10.0.0.1"], ttl=77)]})
    q = await doh(server, doh_session, bogons=test_bogons)
    assert q.failure is None
    assert q.answers == (a("192.0.2.71", 77), a("10.0.0.1", 77, bogon=True))
    assert (q.engine, q.resolver_address, q.query_type) == ("doh", server.url, "A")
    assert len(q.replies) == 1 and q.replies[0].source == server.url and q.replies[0].rcode == "NOERROR"
    received = server.queries[0]
    assert received.transport == "doh-post"
    assert received.wire[:2] == b"\x00\x00"  # RFC 8484 §4.1: id 0
    assert base64.b64decode(q.replies[0].raw_b64)[:2] == b"\x00\x00"


@pytest.mark.parametrize(("reply", "failure", "answers"), [
    pytest.param(Reply(ips=["2001:db8::71"]), None, (DNSAnswer(answer_type="AAAA", ipv6="2001:db8::71", ttl=300),),
                 id="aaaa"),
    pytest.param(Reply(rcode="NXDOMAIN"), failures.DNS_NXDOMAIN, (), id="nxdomain"),
    pytest.param(Reply(), failures.DNS_NO_ANSWER, (), id="no-answer"),
])
async def test_doh_dns_outcomes(doh_server_factory, doh_session, test_bogons, reply, failure, answers):
    server = doh_server_factory({(NAME, "AAAA"): [reply]})
    q = await doh(server, doh_session, qtype="AAAA", bogons=test_bogons)
    assert q.failure == failure
    assert q.answers == answers


@pytest.mark.parametrize(("reply", "problem"), [
    pytest.param(Reply(ips=["192.0.2.71"], http_status=503), "HTTP status 503", id="non-200"),
    pytest.param(Reply(ips=["192.0.2.71"], content_type="text/html"), "content type", id="wrong-content-type"),
    pytest.param(Reply(raw=lambda w: b"<html>blocked</html>"), "", id="unparseable-body"),
    pytest.param(Reply(raw=lambda w: b"\x12\x34" + w[2:]), "not a response", id="query-echoed-back"),
])
async def test_doh_misbehaving_server(doh_server_factory, doh_session, test_bogons, reply, problem):
    server = doh_server_factory({(NAME, "A"): [reply]})
    q = await doh(server, doh_session, bogons=test_bogons)
    assert q.failure == failures.DNS_SERVER_MISBEHAVING
    assert q.answers == ()
    assert len(q.replies) == 1
    assert problem in (q.replies[0].parse_error or "")
    assert q.replies[0].parse_error
    sent = reply.raw(server.queries[0].wire) if reply.raw else None
    if sent is not None:
        assert base64.b64decode(q.replies[0].raw_b64) == sent


async def test_doh_intercepted_by_unknown_ca(doh_server_factory, doh_session, test_bogons):
    """A control whose TLS is intercepted (cert from a CA the client does not trust)."""
    server = doh_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.71"])]}, ca=trustme.CA())
    q = await doh(server, doh_session, bogons=test_bogons)
    assert q.failure == failures.SSL_UNKNOWN_AUTHORITY
    assert q.replies == () and q.answers == ()
    assert server.queries == []  # the query never left the client


async def test_doh_timeout(doh_server_factory, doh_session, test_bogons):
    server = doh_server_factory({(NAME, "A"): [NO_REPLY]})
    q = await doh(server, doh_session, timeout_s=0.3, bogons=test_bogons)
    assert q.failure == failures.GENERIC_TIMEOUT
    assert q.t - q.t0 >= 0.25


async def test_doh_connection_refused(doh_session, test_bogons):
    q = await query_doh(NAME, "A", url=f"https://127.0.0.1:{free_tcp_port()}/dns-query", session=doh_session,
                        clock=Clock(), timeout_s=TIMEOUT, bogons=test_bogons)
    assert q.failure == failures.CONNECTION_REFUSED


async def test_doh_bad_url_is_a_configuration_error(doh_session, test_bogons):
    with pytest.raises(ValueError):
        await query_doh(NAME, "A", url="dns.example/dns-query", session=doh_session, clock=Clock(), timeout_s=0.1,
                        bogons=test_bogons)


async def test_doh_fixture_answers_get_too(doh_server_factory, doh_session):
    """The fake DoH server also takes RFC 8484 GET ?dns=<base64url, no padding>."""
    server = doh_server_factory(table_for_hosts({NAME: ["192.0.2.71", "2001:db8::71"]}))
    wire = dns.message.make_query(NAME, "AAAA").to_wire()
    param = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
    async with doh_session.get(server.url, params={"dns": param}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/dns-message"
        msg = dns.message.from_wire(await resp.read())
    assert [rd.address for rr in msg.answer for rd in rr] == ["2001:db8::71"]
    assert server.queries[0].transport == "doh-get"


# --------------------------------------------------------------------------- system resolver


async def test_system_localhost(test_bogons):
    q = await resolve_system("localhost", clock=Clock(), timeout_s=5.0, bogons=test_bogons)
    assert q.failure is None
    assert (q.query_type, q.engine, q.resolver_address, q.replies) == ("ANY", "system", "", ())
    assert "127.0.0.1" in q.addresses()
    assert DNSAnswer(answer_type="A", ipv4="127.0.0.1", bogon=True) in q.answers
    assert all(ans.bogon and ans.ttl is None for ans in q.answers)
    assert len(q.addresses()) == len(q.answers)  # deduplicated


async def test_system_nxdomain_is_a_failure_not_an_exception(monkeypatch, test_bogons):
    """A name under .invalid (RFC 6761). getaddrinfo is faked: a real lookup of a
    non-local name would query this machine's configured (off-machine) resolver."""
    calls = []

    async def fake_getaddrinfo(host, port, **kw):
        calls.append((host, kw.get("family")))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    q = await resolve_system("nothing-here.invalid", clock=Clock(), timeout_s=1.0, bogons=test_bogons)
    assert isinstance(q.failure, str)
    assert q.failure == failures.DNS_NXDOMAIN
    assert q.answers == ()
    assert calls == [("nothing-here.invalid", socket.AF_UNSPEC)]


async def test_system_timeout_and_dedup(monkeypatch, test_bogons):
    async def slow(host, port, **kw):
        await asyncio.sleep(5)

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", slow)
    q = await resolve_system("slow.example", clock=Clock(), timeout_s=0.2, bogons=test_bogons)
    assert q.failure == failures.GENERIC_TIMEOUT

    async def dup(host, port, **kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 0))]

    monkeypatch.setattr(loop, "getaddrinfo", dup)
    q = await resolve_system("dup.example", clock=Clock(), timeout_s=1.0, bogons=test_bogons)
    assert q.failure is None
    assert q.addresses() == ("192.0.2.1", "2001:db8::1", "10.1.2.3")
    assert [x.bogon for x in q.answers] == [False, False, True]
    assert [x.answer_type for x in q.answers] == ["A", "AAAA", "A"]


async def test_decided_is_set_at_the_first_reply_while_listening_goes_on(dns_server_factory, test_bogons):
    """Issue 13: the stub's answer is known at the first reply; the window (FC-07) goes on beside."""
    server = dns_server_factory({(NAME, "A"): fc07_replies(genuine_delay=0.4)})
    decided: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(udp(server, timeout_s=2.0, listen_s=0.6, bogons=test_bogons, decided=decided))
    early = await asyncio.wait_for(asyncio.shield(decided), 1.0)
    assert not task.done()  # still listening
    assert early.answers == (a("198.51.100.201"),) and early.failure is None
    assert early.all_reply_addresses()[0] == "198.51.100.201"
    full = await task
    assert full.answers == early.answers and full.failure == early.failure  # the first reply decides both
    assert full.all_reply_addresses() == ("198.51.100.201", "192.0.2.202", "192.0.2.71")
    assert early.t - early.t0 < full.t - full.t0


async def test_decided_is_the_final_result_without_a_reply(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [NO_REPLY]})
    decided: asyncio.Future = asyncio.get_running_loop().create_future()
    q = await udp(server, timeout_s=0.2, listen_s=0.1, bogons=test_bogons, decided=decided)
    assert decided.done() and decided.result() is q and q.failure == "generic_timeout_error"


async def test_decided_waits_for_the_tcp_retry(dns_server_factory, test_bogons):
    """A truncated reply decides nothing yet: the early result is the TCP retry's, i.e. the final one."""
    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC)]},
                                tcp_table={(NAME, "A"): [Reply(ips=["192.0.2.9"], ttl=60)]})
    decided: asyncio.Future = asyncio.get_running_loop().create_future()
    q = await udp(server, listen_s=0.05, bogons=test_bogons, decided=decided)
    assert decided.result() is q and q.addresses() == ("192.0.2.9",)


# --------------------------------------------------------------------------- UDP: truncated → TCP

TC = 0x8380  # QR, TC, RD, RA


async def test_truncated_udp_reply_is_retried_over_tcp(dns_server_factory, test_bogons):
    """RFC 1035 §4.2.1: TC set → the same query over TCP (RFC 7766); its reply decides."""
    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC)]},
                                tcp_table={(NAME, "A"): [Reply(ips=["192.0.2.9"], ttl=60)]})
    q = await udp(server, listen_s=0.05, bogons=test_bogons)
    assert q.failure is None
    assert q.addresses() == ("192.0.2.9",)
    assert q.answers == (a("192.0.2.9", 60),)
    udp_reply, tcp_reply = q.replies
    assert (udp_reply.source, udp_reply.flags & 0x0200, udp_reply.answers) == (server.address, 0x0200, ())
    assert tcp_reply.source == f"tcp:{server.address}"
    assert tcp_reply.flags & 0x0200 == 0 and tcp_reply.answers == (a("192.0.2.9", 60),)
    assert udp_reply.t <= tcp_reply.t <= q.t
    assert (q.engine, q.resolver_address) == ("udp", server.address)
    assert [(r.transport, r.name) for r in server.queries] == [("udp", NAME), ("tcp", NAME)]
    assert server.queries[0].wire == server.queries[1].wire  # the same query, same id


async def test_truncated_reply_with_some_answers_takes_the_tcp_answers(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC, ips=["192.0.2.1"])]},
                                tcp_table={(NAME, "A"): [Reply(ips=["192.0.2.1", "192.0.2.2"])]})
    q = await udp(server, bogons=test_bogons)
    assert q.failure is None and q.addresses() == ("192.0.2.1", "192.0.2.2")


async def test_tcp_retry_refused(dns_server_factory, test_bogons):
    """A failed retry gives the TCP failure, not the truncated reply's dns_no_answer."""
    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC)]}, tcp=False)
    q = await udp(server, bogons=test_bogons)
    assert q.failure == failures.CONNECTION_REFUSED
    assert q.answers == ()
    assert len(q.replies) == 1 and q.replies[0].flags == TC  # the truncated reply stays as evidence


async def test_tcp_retry_timeout_keeps_the_budget(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC, ips=["192.0.2.1"])]},
                                tcp_table={(NAME, "A"): [NO_REPLY]})
    q = await udp(server, timeout_s=0.4, listen_s=0.05, bogons=test_bogons)
    assert q.failure == failures.GENERIC_TIMEOUT
    assert q.answers == ()
    assert 0.3 <= q.t - q.t0 < 0.7  # the retry ends with the query's own deadline
    assert [r.transport for r in server.queries] == ["udp", "tcp"]


async def test_tcp_retry_rcode_decides(dns_server_factory, test_bogons):
    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC)]},
                                tcp_table={(NAME, "A"): [Reply(rcode="NXDOMAIN")]})
    q = await udp(server, bogons=test_bogons)
    assert q.failure == failures.DNS_NXDOMAIN
    assert [r.rcode for r in q.replies] == ["NOERROR", "NXDOMAIN"]


async def test_tcp_retry_answering_another_question_is_misbehaving(dns_server_factory, test_bogons):
    def other_question(wire: bytes) -> bytes:
        other = dns.message.make_query("other.example.org", "A")
        other.id = struct.unpack("!H", wire[:2])[0]
        resp = dns.message.make_response(other)
        resp.answer.append(dns.rrset.from_text("other.example.org.", 60, "IN", "A", "203.0.113.7"))
        return resp.to_wire()

    server = dns_server_factory({(NAME, "A"): [Reply(flags=TC)]}, tcp_table={(NAME, "A"): [Reply(raw=other_question)]})
    q = await udp(server, bogons=test_bogons)
    assert q.failure == failures.DNS_SERVER_MISBEHAVING and q.answers == ()
    assert len(q.replies) == 2


async def test_truncated_reply_that_does_not_decide_is_not_retried(dns_server_factory, test_bogons):
    """Only the deciding (first usable) reply counts: a later truncated duplicate does not."""
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.1"]), Reply(delay=0.02, flags=TC)]},
                                tcp_table={(NAME, "A"): [Reply(ips=["192.0.2.99"])]})
    q = await udp(server, listen_s=0.2, bogons=test_bogons)
    assert q.failure is None and q.addresses() == ("192.0.2.1",)
    assert len(q.replies) == 2
    assert [r.transport for r in server.queries] == ["udp"]


async def test_fake_server_answers_tcp_from_the_same_table(dns_server_factory):
    """The fixture: RFC 7766 framing on the UDP port, same table unless tcp_table is given."""
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.5"])]})
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for _ in range(2):  # two queries on one connection
            wire = dns.message.make_query(NAME, "A").to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            msg = dns.message.from_wire(await reader.readexactly(length))
            assert [rd.address for rr in msg.answer for rd in rr] == ["192.0.2.5"]
    finally:
        writer.close()
        await writer.wait_closed()
    assert [r.transport for r in server.queries] == ["tcp", "tcp"]


# --------------------------------------------------------------------------- A and AAAA on one socket


async def test_a_and_aaaa_go_together_on_one_socket(dns_server_factory, test_bogons) -> None:
    """Issue 13: both queries leave at once from one socket, with different ids; each reply is
    matched by its id (the AAAA answer arrives first here) and each query keeps its own result."""
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.1"], delay=0.05)],
                                 (NAME, "AAAA"): [Reply(ips=["2001:db8::1"]), Reply(ips=["2001:db8::2"])]})
    decided = [asyncio.get_running_loop().create_future() for _ in range(2)]
    qa, q6 = await pdns.query_udp_many(NAME, ("A", "AAAA"), server=server.address, clock=Clock(), timeout_s=TIMEOUT,
                                       listen_s=0.2, bogons=test_bogons, decided=decided)
    assert len(server.queries) == 2 and len({q.source for q in server.queries}) == 1, server.queries
    assert server.queries[0].wire[:2] != server.queries[1].wire[:2]
    assert {q.qtype for q in server.queries} == {"A", "AAAA"}
    assert (qa.query_type, qa.failure, qa.addresses()) == ("A", None, ("192.0.2.1",))
    assert (q6.query_type, q6.failure, q6.addresses()) == ("AAAA", None, ("2001:db8::1",))
    assert len(q6.replies) == 2 and len(qa.replies) == 1  # the late duplicate is kept, with its own query
    assert decided[0].result().addresses() == ("192.0.2.1",) and decided[1].result().addresses() == ("2001:db8::1",)


async def test_one_socket_each_query_times_out_on_its_own(dns_server_factory, test_bogons) -> None:
    server = dns_server_factory({(NAME, "A"): [Reply(ips=["192.0.2.1"])], (NAME, "AAAA"): [Reply(no_reply=True)]})
    qa, q6 = await pdns.query_udp_many(NAME, ("A", "AAAA"), server=server.address, clock=Clock(), timeout_s=0.3,
                                       listen_s=0.05, bogons=test_bogons)
    assert qa.failure is None and qa.addresses() == ("192.0.2.1",)
    assert q6.failure == failures.GENERIC_TIMEOUT and not q6.replies
    assert qa.t < q6.t  # A ended with its own window, before AAAA timed out
