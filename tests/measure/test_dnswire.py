"""The hand-rolled DNS wire format (issue 13) against dnspython's: byte-identical queries, and
for every reply the fast reader accepts, the very record dnspython's parse gives (tables, then
hypothesis: generated messages with compression pointers, mutations, random bytes)."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rrset
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from probe.addresses import Bogons
from probe.measure import dns as pdns
from probe.measure import dnswire

BOGONS = Bogons()
NAME = "www.example.org"


def _query(name: str = NAME, qtype: str = "A", edns: bool = False) -> pdns._Wire:
    q = pdns._make_query(name, qtype, edns=edns)
    assert q.qname is not None, "a plain name is built by hand"
    return q


def _both(raw: bytes, q: pdns._Wire) -> tuple[pdns._Decoded | None, pdns._Decoded]:
    """(fast decode or None when the fast reader declines, dnspython's decode)."""
    slow = pdns._decode_reply(raw, t=1.0, source="s", query_wire=q.wire, qname=None, qtype=q.qtype, bogons=BOGONS)
    if dnswire.parse_reply(raw) is None:
        return None, slow
    fast = pdns._decode_reply(raw, t=1.0, source="s", query_wire=q.wire, qname=q.qname, qtype=q.qtype,
                              bogons=BOGONS)
    return fast, slow


def _response(q: pdns._Wire, *rrsets: tuple[str, int, str, list[str]], rcode: int = 0, authority=(),
              additional=(), edns: bool = False) -> bytes:
    msg = dns.message.make_response(dns.message.from_wire(q.wire))
    msg.set_rcode(rcode)
    for section, items in ((msg.answer, rrsets), (msg.authority, authority), (msg.additional, additional)):
        for name, ttl, rtype, values in items:
            section.append(dns.rrset.from_text_list(name.rstrip(".") + ".", ttl, "IN", rtype, values))
    if edns:
        msg.use_edns(0)
    return msg.to_wire()


# ----------------------------------------------------------------------------- queries


@pytest.mark.parametrize("name", [NAME, "a.b", "xn--80ak6aa92e.com", "_dmarc.example.org", "x" * 63 + ".org",
                                  "example.org."])
@pytest.mark.parametrize("qtype", ["A", "AAAA"])
@pytest.mark.parametrize("edns", [False, True])
def test_a_query_is_byte_for_byte_what_dnspython_makes(name: str, qtype: str, edns: bool) -> None:
    ours = dnswire.build_query(name, qtype, qid=0x1234, edns=edns)
    ref = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
    ref.id = 0x1234
    assert ours == ref.to_wire()


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".org", "a\\.b.org", "sp ace.org", ".".join(["abcdefg"] * 40)])
def test_an_odd_name_is_left_to_dnspython(name: str) -> None:
    assert dnswire.build_query(name, "A", qid=1, edns=False) is None


@given(st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True), min_size=1, max_size=6),
       st.sampled_from(["A", "AAAA"]), st.booleans(), st.integers(0, 65535))
def test_generated_queries_match_dnspython(labels: list[str], qtype: str, edns: bool, qid: int) -> None:
    name = ".".join(labels)
    ref = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
    ref.id = qid
    assert dnswire.build_query(name, qtype, qid=qid, edns=edns) == ref.to_wire()


def test_the_queries_of_one_socket_have_different_ids() -> None:
    a = _query()
    for _ in range(200):
        b = pdns._make_query(NAME, "AAAA", edns=False, avoid_ids=frozenset({int.from_bytes(a.wire[:2], "big")}))
        assert b.wire[:2] != a.wire[:2]


# ----------------------------------------------------------------------------- replies: tables

Q = _query()
Q6 = _query(qtype="AAAA")


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def _raw(q: pdns._Wire, *answers: bytes, flags: int = 0x8180, qd: bool = True, an: int | None = None,
         ns: int = 0, ar: int = 0, tail: bytes = b"") -> bytes:
    question = q.wire[12:] if qd else b""
    if q.wire[11]:  # the query's OPT is not part of the question
        question = question[:-11]
    head = q.wire[:2] + struct.pack("!HHHHH", flags, 1 if qd else 0, len(answers) if an is None else an, ns, ar)
    return head + question + b"".join(answers) + tail


PTR = b"\xc0\x0c"  # the question name
A1 = bytes([192, 0, 2, 1])
A2 = bytes([192, 0, 2, 2])

ACCEPTED = {
    "one A": _response(Q, (NAME, 300, "A", ["192.0.2.1"])),
    "two A": _response(Q, (NAME, 300, "A", ["192.0.2.1", "192.0.2.2"])),
    "CNAME chain": _response(Q, (NAME, 60, "CNAME", ["Edge.Example.NET."]), ("edge.example.net", 30, "A",
                                                                            ["198.51.100.7"])),
    "NXDOMAIN with SOA": _response(Q, rcode=3, authority=[("example.org", 900, "SOA",
                                                            ["ns.example.org. host.example.org. 1 2 3 4 5"])]),
    "NODATA AAAA": _response(Q6, authority=[("example.org", 900, "SOA", ["a.b. c.d. 1 2 3 4 5"])]),
    "AAAA": _response(Q6, (NAME, 300, "AAAA", ["2001:db8::1", "2001:db8:0:0:1::1"])),
    "EDNS": _response(Q, (NAME, 300, "A", ["192.0.2.1"]), edns=True),
    "NS and glue": _response(Q, (NAME, 300, "A", ["192.0.2.1"]), authority=[("example.org", 5, "NS",
                                                                               ["ns1.example.org."])],
                             additional=[("ns1.example.org", 5, "A", ["192.0.2.53"])]),
    "SERVFAIL": _response(Q, rcode=2),
    "duplicate A, TTLs differ": _raw(Q, _rr(PTR, 1, 300, A1), _rr(PTR, 1, 20, A1), _rr(PTR, 1, 100, A2)),
    "A split by a CNAME (one RRset)": _raw(Q, _rr(PTR, 1, 10, A1), _rr(PTR, 5, 10, b"\x01x\xc0\x0c"),
                                          _rr(PTR, 1, 10, A2)),
    "two CNAMEs for one owner (the last stays)": _raw(Q, _rr(PTR, 5, 9, b"\x01a\xc0\x0c"),
                                                      _rr(PTR, 5, 7, b"\x01b\xc0\x0c"),
                                                      _rr(b"\x01b\xc0\x0c", 1, 5, A1)),
    "TTL above 2^31-1": _raw(Q, _rr(PTR, 1, 0x80000000, A1)),
    "owner in upper case": _raw(Q, _rr(b"\x03WWW\x07EXAMPLE\x03ORG\x00", 1, 1, A1)),
    "another name's A": _raw(Q, _rr(b"\x05other\x00", 1, 1, A1)),
    "not a response (QR clear)": _raw(Q, _rr(PTR, 1, 1, A1), flags=0x0100),
    "another question": _raw(_query("www.example.com"), _rr(PTR, 1, 1, A1)),
    "REFUSED without a question": _raw(Q, flags=0x8185, qd=False),
    "NOERROR without a question": _raw(Q, flags=0x8180, qd=False),
    "TC set": _raw(Q, flags=0x8380),
}

DECLINED = {
    "truncated header": b"\x12\x34\x81",
    "forward pointer": _raw(Q, _rr(b"\xc0\x40", 1, 1, A1)),
    "pointer to itself": _raw(Q, b"\xc0\x21" + struct.pack("!HHIH", 1, 1, 1, 4) + A1),
    "trailing junk": _raw(Q, _rr(PTR, 1, 1, A1), tail=b"\x00"),
    "count says more than there is": _raw(Q, _rr(PTR, 1, 1, A1), an=2),
    "A of 5 octets": _raw(Q, _rr(PTR, 1, 1, A1 + b"\x00")),
    "TXT record": _raw(Q, _rr(PTR, 16, 1, b"\x02hi")),
    "class CH": _raw(Q, _rr(PTR, 1, 1, A1, rclass=3)),
    "label with a dot": _raw(Q, _rr(b"\x03a.b\x00", 1, 1, A1)),
    "::ffff:192.0.2.1 (dnspython's own text)": _raw(Q6, _rr(PTR, 28, 1, bytes(10) + b"\xff\xff" + A1)),
    "OPT in the answer section": _raw(Q, _rr(b"\x00", 41, 0, b"")),
    "OPT with an extended rcode": _raw(Q, _rr(b"\x00", 41, 0x01000000, b""), an=0, ar=1),
    "opcode NOTIFY": _raw(Q, flags=0xA180),
    # FC-06: the injector copied the query's OPT between question and answer, header AN=1 AR=0
    "FC-06 mangled reply": _raw(_query(edns=True), b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
                                + _rr(PTR, 1, 60, bytes([127, 0, 0, 1])), an=1),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_a_plain_reply_is_read_by_hand_as_dnspython_reads_it(case: str) -> None:
    raw = ACCEPTED[case]
    q = Q6 if case.startswith(("AAAA", "NODATA")) else Q
    if case == "another question":
        q = Q
    fast, slow = _both(raw, q)
    assert fast is not None, "the fast reader declined a plain reply"
    assert fast == slow


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_an_odd_reply_is_left_to_dnspython(case: str) -> None:
    assert dnswire.parse_reply(DECLINED[case]) is None


def test_the_fc06_reply_keeps_its_recovery() -> None:
    q = _query(edns=True)
    raw = DECLINED["FC-06 mangled reply"][:2]
    raw = q.wire[:2] + DECLINED["FC-06 mangled reply"][2:]
    d = pdns._decode_reply(raw, t=0.0, source="s", query_wire=q.wire, qname=q.qname, qtype=q.qtype, bogons=BOGONS)
    assert d.reply.parse_error and [a.address for a in d.reply.answers] == ["127.0.0.1"] and d.usable


def test_cname_chain_answers_in_order() -> None:
    fast, _ = _both(ACCEPTED["CNAME chain"], Q)
    assert fast is not None
    assert [(a.answer_type, a.hostname or a.address, a.ttl) for a in fast.reply.answers] == [
        ("CNAME", "Edge.Example.NET", 60), ("A", "198.51.100.7", 30)]


# ----------------------------------------------------------------------------- replies: generated

_LABELS = [b"www", b"WWW", b"example", b"Example", b"org", b"a", b"b", b"x-y", b"_z"]


@st.composite
def names(draw: st.DrawFn, earlier: int) -> bytes:
    """A wire name: labels, then a pointer (maybe bad) or the root."""
    out = b"".join(bytes([len(lab)]) + lab for lab in draw(st.lists(st.sampled_from(_LABELS), max_size=3)))
    end = draw(st.sampled_from(["root", "qname", "ptr", "ptr", "junk"]))
    if end == "root":
        return out + b"\x00"
    if end == "qname":
        return out + PTR
    if end == "ptr":
        return out + struct.pack("!H", 0xC000 | draw(st.integers(0, max(earlier + 8, 12))))
    return out + bytes([draw(st.integers(64, 191))])


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, pdns._Wire]:
    q = draw(st.sampled_from([Q, Q6]))
    body = bytearray(q.wire[12:12 + len(NAME) + 2 + 4] if draw(st.booleans()) else b"")
    qd = 1 if body else 0
    counts = [0, 0, 0]
    for _ in range(draw(st.integers(0, 6))):
        section = draw(st.sampled_from([0, 0, 0, 1, 2]))
        rtype = draw(st.sampled_from([1, 1, 28, 5, 5, 2, 6, 41, 16]))
        owner = draw(names(12 + len(body)))
        if rtype == 1:
            rdata = draw(st.sampled_from([A1, A2, bytes(4), b"\x01\x02\x03"]))
        elif rtype == 28:
            rdata = draw(st.sampled_from([bytes.fromhex("20010db8000000000000000000000001"),
                                          bytes.fromhex("20010db8000000000000000000000002"), bytes(16),
                                          bytes.fromhex("fe800000000000000000000000000001")]))
        elif rtype in (5, 2):
            rdata = draw(names(12 + len(body) + len(owner) + 10))
        elif rtype == 6:
            rdata = draw(names(12 + len(body))) + draw(names(12 + len(body))) + bytes(draw(st.sampled_from([20, 19])))
        elif rtype == 41:
            owner = b"\x00"
            rdata = b""
        else:
            rdata = b"\x02hi"
        rclass = draw(st.sampled_from([1, 1, 1, 3])) if rtype != 41 else 1232
        ttl = draw(st.sampled_from([0, 5, 300, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x01000000]))
        rdlen = len(rdata) + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        body += owner + struct.pack("!HHIH", rtype, rclass, ttl, max(rdlen, 0)) + rdata
        counts[section] += 1
    flags = draw(st.sampled_from([0x8180, 0x8183, 0x8182, 0x8185, 0x8100, 0x0100, 0x8580, 0x8380, 0xA180]))
    qid = q.wire[:2] if draw(st.booleans()) else b"\x00\x00"
    raw = qid + struct.pack("!HHHHH", flags, qd, *counts) + bytes(body)
    return raw, q


SLOW = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(messages())
def test_generated_replies_decode_as_dnspython_decodes_them(msg: tuple[bytes, pdns._Wire]) -> None:
    raw, q = msg
    fast, slow = _both(raw, q)
    if fast is not None:
        assert fast == slow


@SLOW
@given(st.sampled_from(sorted(ACCEPTED)), st.data())
def test_mutated_replies_decode_as_dnspython_decodes_them(case: str, data: st.DataObject) -> None:
    raw = bytearray(ACCEPTED[case])
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    q = Q6 if case.startswith(("AAAA", "NODATA")) else Q
    fast, slow = _both(bytes(raw), q)
    if fast is not None:
        assert fast == slow


@SLOW
@given(st.binary(max_size=80))
@example(b"\x00" * 12)
def test_random_bytes_never_break_the_reader(raw: bytes) -> None:
    fast, slow = _both(Q.wire[:2] + raw, Q)
    if fast is not None:
        assert fast == slow


def test_the_generator_reaches_both_paths() -> None:
    """The generated cases are not all declined (the property tests would then test nothing)."""
    accepted = declined = 0

    @settings(max_examples=300, deadline=None, database=None)
    @given(messages())
    def count(msg: tuple[bytes, pdns._Wire]) -> None:
        nonlocal accepted, declined
        if dnswire.parse_reply(msg[0]) is None:
            declined += 1
        else:
            accepted += 1

    count()
    assert accepted > 20 and declined > 20, (accepted, declined)
