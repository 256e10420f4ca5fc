"""DNS primitives: the system resolver, direct UDP (keeps every reply), and DoH (RFC 8484).

Three ways to look a name up, one record shape out (:class:`DNSQuery`, OONI df-002
``queries[]`` plus the raw replies):

- :func:`resolve_system` asks the operating system (``getaddrinfo``), i.e. what a browser
  on this machine sees. No TTLs, no raw bytes: the OS hides them.
- :func:`query_udp` sends one query (RFC 1035 §4.2.1) to a given server and then *keeps
  listening*: on-path injectors answer before the genuine server does, sometimes twice
  (FIELD-CASES.md FC-07), sometimes with bytes a strict parser rejects (FC-06). Every
  datagram carrying the query id is kept as a :class:`DNSReply` with its raw bytes; the
  *first* usable reply decides :attr:`DNSQuery.answers` and :attr:`DNSQuery.failure`,
  exactly as a stub resolver would, and the later ones stay as evidence. When that
  reply is truncated (TC set, RFC 1035 §4.2.1 / RFC 2181 §9), the same query is asked
  again over TCP (RFC 7766, RFC 1035 §4.2.2 length prefix) to the same server, and the
  TCP reply decides instead; it is kept as one more :class:`DNSReply`.
- :func:`query_doh` posts the same query over HTTPS (RFC 8484) on a caller-provided
  :class:`aiohttp.ClientSession`: the DNS control.

No function here raises for a network problem: a failed lookup is a record whose
``failure`` is an OONI failure string (:mod:`probe.failures`). They raise only on bad
arguments (a server that is not ``ip[:port]``, a DoH URL that is not http(s)).

All times are float seconds since the measurement start (:class:`probe.timing.Clock`).
Every address in an answer carries a ``bogon`` flag from the :class:`probe.addresses.Bogons`
set passed in.

We call dnspython's message layer only (``make_query``, ``from_wire``), not its stub
resolver: that one retries, rotates servers and silently drops unparseable datagrams
(DESIGN.md, known pitfalls).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.wire

from probe import failures
from probe.addresses import Bogons, format_endpoint, parse_endpoint, parse_ip
from probe.bounded import read_body
from probe.measure import dnswire
from probe.names import to_alabel
from probe.timing import Clock

Engine = Literal["system", "udp", "doh"]
QueryType = Literal["A", "AAAA", "ANY"]

#: RFC 8484 §6 media type.
DOH_MEDIA_TYPE = "application/dns-message"
#: Largest DoH response body we read (a DNS message is at most 65535 bytes).
DOH_MAX_BODY = 64 * 1024
#: Longest CNAME chain we follow inside one reply.
MAX_CNAME_CHAIN = 16
#: Replies kept per UDP query (the first ones; injectors send one to a few, FC-07).
MAX_REPLIES_PER_QUERY = 32
#: Largest UDP datagram we accept.
_UDP_BUFSIZE = 65535
#: Prefix of :attr:`DNSReply.source` for a reply received over TCP.
TCP_SOURCE_PREFIX = "tcp:"

_TYPE_A = 1
_TYPE_CNAME = 5
_TYPE_AAAA = 28
_CLASS_IN = 1


@dataclass(frozen=True, kw_only=True)
class DNSAnswer:
    """One resource record of an answer (OONI df-002 ``answers[]`` entry).

    Attributes:
        answer_type: "A", "AAAA" or "CNAME".
        ipv4 / ipv6: the address for A / AAAA, else None.
        hostname: the target for CNAME (no trailing dot), else None.
        ttl: seconds, None when unknown (system resolver).
        bogon: the address is in the configured bogon set.
    """

    answer_type: Literal["A", "AAAA", "CNAME"]
    ipv4: str | None = None
    ipv6: str | None = None
    hostname: str | None = None
    ttl: int | None = None
    bogon: bool = False

    @property
    def address(self) -> str | None:
        return self.ipv4 or self.ipv6


@dataclass(frozen=True, kw_only=True)
class DNSReply:
    """One datagram (UDP) or response body (DoH) received: the raw evidence.

    Attributes:
        t: arrival time, seconds since measurement start.
        raw_b64: the bytes as received, base64 (standard alphabet, padded).
        source: "ip:port" it came from (UDP), "tcp:ip:port" of the server for the
            reply to the TCP retry of a truncated UDP answer (``"tcp:[v6]:port"`` for
            IPv6), or the DoH URL.
        rcode: "NOERROR", "NXDOMAIN", "SERVFAIL"...; read from the 12-byte header even
            when the rest does not parse (FC-06); None when there is no header (fewer
            than 12 bytes, or a DoH body that is not a DNS message).
        flags: the 16-bit header flags word as int (e.g. 0x8180), with the same rule
            as ``rcode``.
        answers: A/AAAA/CNAME answers for the queried name (following CNAMEs). For an
            unparseable reply, the answers recovered best-effort from the raw bytes
            (FC-06: the injected ``127.0.0.1``); empty when nothing could be recovered.
        parse_error: dnspython's complaint when the bytes did not parse (FC-06), or,
            for DoH, why the body was not taken as a DNS message (HTTP status,
            content type, size); None when they parsed.
    """

    t: float
    raw_b64: str
    source: str
    rcode: str | None
    flags: int | None
    answers: tuple[DNSAnswer, ...] = ()
    parse_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class DNSQuery:
    """One lookup (OONI df-002 ``queries[]`` entry, plus the raw replies).

    Attributes:
        hostname: the A-label name asked for (no trailing dot).
        query_type: "A", "AAAA", or "ANY" for getaddrinfo (both families).
        engine: "system" (getaddrinfo), "udp", or "doh".
        resolver_address: "ip:port" (udp), the DoH URL (doh), "" (system).
        t0, t: start and end, seconds since measurement start.
        failure: OONI failure string (dns_nxdomain_error, dns_no_answer,
            dns_servfail_error, generic_timeout_error, ...), None when answered.
        answers: the answer used. UDP: the *first* reply that answers our question
            wins, as in a stub resolver, even an unparseable one whose answers were
            recovered from the raw bytes (FC-06); an unparseable reply that yields no
            answer is skipped; when the winner is well-formed but truncated (TC), the
            TCP retry's reply is used instead (empty if the retry failed). DoH: the
            response's. System: getaddrinfo's result.
        replies: every reply received until the deadline (UDP: all datagrams from the
            server that carried the query id, *including* unparseable ones and later
            duplicates (FC-07), plus the TCP retry's reply (``source`` "tcp:..."),
            in arrival order; DoH: one; system: none). At most
            :data:`MAX_REPLIES_PER_QUERY` are kept (a flood of injected replies was kept
            in full, issue 11); the rest are only counted in ``replies_dropped``.
        replies_dropped: UDP replies with our query id received past that cap.
    """

    hostname: str
    query_type: QueryType
    engine: Engine
    resolver_address: str
    t0: float
    t: float
    failure: str | None
    answers: tuple[DNSAnswer, ...] = ()
    replies: tuple[DNSReply, ...] = ()
    replies_dropped: int = 0

    def addresses(self) -> tuple[str, ...]:
        """A and AAAA addresses of :attr:`answers`, in order, without duplicates."""
        seen: dict[str, None] = {}
        for a in self.answers:
            if a.address:
                seen.setdefault(a.address, None)
        return tuple(seen)

    def all_reply_addresses(self) -> tuple[str, ...]:
        """Addresses in *any* reply (UDP duplicates included), in arrival order."""
        return tuple(reply_addresses((self,)))


def reply_addresses(queries: Iterable[DNSQuery]) -> dict[str, None]:
    """The addresses of every query's replies (UDP duplicates and injections included), then of its
    :attr:`DNSQuery.answers`, in that order, each once: the keys of the dict returned (a dict, so that a
    caller can test membership without building a set). Of one query, :meth:`DNSQuery.all_reply_addresses`;
    of a web measurement's queries, the probe's addresses (``WebObservations.probe_addresses``, and the
    OONI re-judging's :func:`analysis.ooni._observe`, which reads ``ipv4 or ipv6`` rather than the
    ``address`` property: one call fewer an answer on the judge's path)."""
    seen: dict[str, None] = {}
    for q in queries:
        for r in q.replies:
            for a in r.answers:
                if ad := a.ipv4 or a.ipv6:
                    seen.setdefault(ad, None)
        for a in q.answers:
            if ad := a.ipv4 or a.ipv6:
                seen.setdefault(ad, None)
    return seen


# --------------------------------------------------------------------------- helpers


def _answer_for_address(ip: str, ttl: int | None, bogons: Bogons) -> DNSAnswer:
    addr = parse_ip(ip)
    bogon = bogons.is_bogon(ip)
    if addr is not None and addr.version == 6:
        return DNSAnswer(answer_type="AAAA", ipv6=ip, ttl=ttl, bogon=bogon)
    return DNSAnswer(answer_type="A", ipv4=ip, ttl=ttl, bogon=bogon)


def _rcode_failure(rcode: int, answers: tuple[DNSAnswer, ...]) -> str | None:
    """OONI's mapping of a reply's rcode (and answers) to a failure (netxlite)."""
    if rcode == dns.rcode.NOERROR:
        return None if any(a.address for a in answers) else failures.DNS_NO_ANSWER
    return {
        dns.rcode.NXDOMAIN: failures.DNS_NXDOMAIN,
        dns.rcode.SERVFAIL: failures.DNS_SERVFAIL,
        dns.rcode.REFUSED: failures.DNS_REFUSED,
    }.get(rcode, failures.DNS_SERVER_MISBEHAVING)


def _answers_from_message(msg: dns.message.Message, qname: dns.name.Name, bogons: Bogons
                          ) -> tuple[DNSAnswer, ...]:
    """A/AAAA/CNAME records of ``msg``'s answer section for ``qname`` (the name we asked).

    CNAMEs are followed from ``qname`` (at most :data:`MAX_CNAME_CHAIN`); records owned
    by other names are left out, as a stub resolver would. Answer-section order.
    """
    chain = {qname}
    for _ in range(MAX_CNAME_CHAIN):
        grew = False
        for rrset in msg.answer:
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.name in chain:
                for rd in rrset:
                    if rd.target not in chain:
                        chain.add(rd.target)
                        grew = True
        if not grew:
            break
    out: list[DNSAnswer] = []
    for rrset in msg.answer:
        if rrset.name not in chain or rrset.rdclass != dns.rdataclass.IN:
            continue
        for rd in rrset:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                out.append(_answer_for_address(rd.address, rrset.ttl, bogons))
            elif rrset.rdtype == dns.rdatatype.CNAME:
                out.append(DNSAnswer(answer_type="CNAME", hostname=rd.target.to_text(omit_final_dot=True),
                                     ttl=rrset.ttl))
    return tuple(out)


def _walk_records(raw: bytes, bogons: Bogons) -> tuple[DNSAnswer, ...]:
    """Read every RR after the question section until the end, ignoring the header counts.

    This is what recovers FC-06: the injector's copy of the query's OPT record sits
    between the question and its answer while the header says AN=1, AR=0; read as a
    plain sequence of records, the A record at the end is intact. Raises
    :class:`dns.exception.DNSException` (or ``struct.error``) on bytes that are not RRs.
    """
    parser = dns.wire.Parser(raw)
    (qdcount,) = struct.unpack("!H", raw[4:6])
    parser.seek(12)
    qname: dns.name.Name | None = None
    for _ in range(qdcount):
        name = dns.name.from_wire_parser(parser)
        parser.get_struct("!HH")
        qname = qname or name
    if qname is None:
        return ()
    chain = {qname}
    out: list[DNSAnswer] = []
    while parser.remaining() > 0:
        owner = dns.name.from_wire_parser(parser)
        rtype, rclass, ttl, rdlen = parser.get_struct("!HHIH")
        rdata_end = parser.current + rdlen
        if rdlen > parser.remaining():
            raise dns.exception.FormError("RDATA runs past the end of the message")
        if rclass == _CLASS_IN and owner in chain:
            if rtype == _TYPE_A and rdlen == 4:
                out.append(_answer_for_address(socket.inet_ntop(socket.AF_INET, parser.get_bytes(4)), ttl, bogons))
            elif rtype == _TYPE_AAAA and rdlen == 16:
                out.append(_answer_for_address(socket.inet_ntop(socket.AF_INET6, parser.get_bytes(16)), ttl, bogons))
            elif rtype == _TYPE_CNAME and len(chain) <= MAX_CNAME_CHAIN:
                target = dns.name.from_wire_parser(parser)
                chain.add(target)
                out.append(DNSAnswer(answer_type="CNAME", hostname=target.to_text(omit_final_dot=True), ttl=ttl))
        parser.seek(rdata_end)
    return tuple(out)


def _scan_tail(raw: bytes, bogons: Bogons) -> tuple[DNSAnswer, ...]:
    """Peel A/AAAA records off the end of ``raw`` (owner = pointer to the question name).

    The last resort for junk between question and answer (the 2021 FC-06 dump, whose
    query carried four ``0xff`` bytes): an appended answer ``c00c 0001 0001 <ttl>
    0004 <ip4>`` (or ``c00c 001c 0001 <ttl> 0010 <ip16>``) is still at the very end.
    """
    out: list[DNSAnswer] = []
    end = len(raw)
    while end > 12:
        for rtype, size, family in ((_TYPE_A, 4, socket.AF_INET), (_TYPE_AAAA, 16, socket.AF_INET6)):
            start = end - 12 - size
            if start < 12:
                continue
            head = raw[start:start + 12]
            if head[:6] == struct.pack("!HHH", 0xC00C, rtype, _CLASS_IN) and head[10:12] == struct.pack("!H", size):
                ttl = struct.unpack("!I", head[6:10])[0]
                out.append(_answer_for_address(socket.inet_ntop(family, raw[start + 12:end]), ttl, bogons))
                end = start
                break
        else:
            break
    return tuple(reversed(out))


def _recover_answers(raw: bytes, bogons: Bogons) -> tuple[DNSAnswer, ...]:
    """Best-effort answers from a reply dnspython refused (FC-06); empty if none found."""
    try:
        walked = _walk_records(raw, bogons)
        if any(a.address for a in walked):
            return walked
    except (dns.exception.DNSException, struct.error, ValueError, OSError):
        walked = ()
    return _scan_tail(raw, bogons) or walked


def _raw_question_matches(raw: bytes, query_wire: bytes) -> bool:
    """Whether ``raw`` (a reply that did not parse) echoes our question, byte for byte.

    Names compare case-insensitively. ``query_wire`` was built by us: one question,
    uncompressed, right after the header.
    """
    if len(raw) < 12 or raw[4:6] != b"\x00\x01" or not raw[2] & 0x80:
        return False
    parser = dns.wire.Parser(query_wire, 12)
    dns.name.from_wire_parser(parser)
    q_end = parser.current + 4
    return raw[12:q_end].lower() == query_wire[12:q_end].lower()


class _Decoded(NamedTuple):
    """A received reply, plus what deciding a lookup needs to know about it."""

    reply: DNSReply
    usable: bool  # a response to our question: well-formed, or unparseable with recovered addresses
    rcode: int | None  # full rcode (EDNS extended bits included) of a well-formed reply


def _answers_from_rrsets(rrsets: list[dnswire.RRset], qname: str, bogons: Bogons) -> tuple[DNSAnswer, ...]:
    """:func:`_answers_from_message` for :func:`probe.measure.dnswire.parse_reply`'s RRsets
    (owners in lower case, ``qname`` too): the same chain, the same order."""
    chain = {qname}
    for _ in range(MAX_CNAME_CHAIN):
        grew = False
        for rs in rrsets:
            if rs.rtype == _TYPE_CNAME and rs.owner in chain:
                for target in rs.values:
                    low = target.lower()
                    if low not in chain:
                        chain.add(low)
                        grew = True
        if not grew:
            break
    out: list[DNSAnswer] = []
    for rs in rrsets:
        if rs.owner not in chain:
            continue
        for v in rs.values:
            if rs.rtype == _TYPE_CNAME:
                out.append(DNSAnswer(answer_type="CNAME", hostname=v, ttl=rs.ttl))
            else:
                out.append(_answer_for_address(v, rs.ttl, bogons))
    return tuple(out)


def _rcode_text(value: int) -> str:
    """"NOERROR", "NXDOMAIN"...; the number for an unknown value (dnspython's names)."""
    return dns.rcode.to_text(value)  # type: ignore[arg-type]  # any int is fine at run time


_QUESTION_OPTIONAL = frozenset({dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED})


def _decode_reply(raw: bytes, *, t: float, source: str, query_wire: bytes, qname: str | None, qtype: int,
                  bogons: Bogons) -> _Decoded:
    """Turn received bytes into a :class:`DNSReply`; also say whether it answers our query.

    "Answers" means: a response (QR set) to our question, and either well-formed or
    unparseable-but-with-recovered-addresses. Only such a reply may decide a lookup.

    ``qname`` (lower case, no final dot) and ``qtype`` are the question of ``query_wire``;
    a plain reply is read by hand (:mod:`probe.measure.dnswire`, issue 13), anything else by
    dnspython as before. ``qname`` None: always dnspython (a query dnspython built).
    """
    flags = rcode = None
    if len(raw) >= 12:
        flags = (raw[2] << 8) | raw[3]
        rcode = _rcode_text(flags & 0xF)
    b64 = base64.b64encode(raw).decode("ascii")
    fast = dnswire.parse_reply(raw) if qname is not None else None
    if fast is not None:
        answers = _answers_from_rrsets(fast.answer, qname or "", bogons)
        reply = DNSReply(t=t, raw_b64=b64, source=source, rcode=_rcode_text(fast.rcode), flags=flags,
                         answers=answers)
        if not fast.flags & 0x8000 or fast.qid != (query_wire[0] << 8) | query_wire[1]:
            usable = False
        elif fast.question is None:
            usable = fast.rcode in _QUESTION_OPTIONAL
        else:
            usable = fast.question == (qname, qtype, _CLASS_IN)
        return _Decoded(reply, usable, fast.rcode)
    query = dns.message.from_wire(query_wire)
    try:
        msg = dns.message.from_wire(raw)
    except Exception as exc:  # noqa: BLE001 - anything dnspython raises on hostile bytes is evidence
        recovered = _recover_answers(raw, bogons)
        try:
            matches = _raw_question_matches(raw, query_wire)
        except dns.exception.DNSException:
            matches = False
        complaint = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        reply = DNSReply(t=t, raw_b64=b64, source=source, rcode=rcode, flags=flags,
                         answers=recovered, parse_error=" ".join(complaint.split()))
        return _Decoded(reply, matches and any(a.address for a in recovered), None)
    answers = _answers_from_message(msg, query.question[0].name, bogons)
    reply = DNSReply(t=t, raw_b64=b64, source=source, rcode=dns.rcode.to_text(msg.rcode()), flags=flags,
                     answers=answers)
    return _Decoded(reply, query.is_response(msg), msg.rcode())


def _decide(received: list[_Decoded]) -> tuple[str | None, tuple[DNSAnswer, ...]]:
    """(failure, answers) from the first reply that answers the question (first wins)."""
    for d in received:
        if not d.usable:
            continue
        if d.rcode is None:  # unparseable, usable only because addresses were recovered
            return None, d.reply.answers
        return _rcode_failure(d.rcode, d.reply.answers), d.reply.answers
    return failures.DNS_SERVER_MISBEHAVING, ()


class _Wire(NamedTuple):
    """A query as sent: its bytes and the question :func:`_decode_reply` compares replies with."""

    wire: bytes
    qname: str | None  # lower case, no final dot; None: dnspython built it (read replies with dnspython)
    qtype: int


def _make_query(hostname: str, query_type: str, *, edns: bool, id_zero: bool = False,
                avoid_ids: frozenset[int] = frozenset()) -> _Wire:
    """The query's wire form: by hand for a plain name (:func:`probe.measure.dnswire.build_query`,
    the bytes dnspython's ``make_query`` makes), else dnspython's. Raises ValueError for a
    query type other than A/AAAA, :class:`dns.exception.DNSException` for a bad name.
    ``avoid_ids``: ids already in use on the same socket."""
    if query_type not in ("A", "AAAA"):
        raise ValueError(f"query_type must be 'A' or 'AAAA', not {query_type!r}")
    qid = 0
    if not id_zero:  # RFC 8484 §4.1: DoH clients SHOULD use id 0 (HTTP caches)
        qid = dnswire.new_id()
        while qid in avoid_ids:
            qid = dnswire.new_id()
    wire = dnswire.build_query(hostname, query_type, qid=qid, edns=edns)
    qtype = dnswire.QTYPES[query_type]
    if wire is not None:
        return _Wire(wire, hostname.rstrip(".").lower(), qtype)
    query = dns.message.make_query(hostname, query_type, use_edns=0 if edns else False)
    query.id = qid
    return _Wire(query.to_wire(), None, qtype)


# --------------------------------------------------------------------------- system


async def resolve_system(hostname: str, *, clock: Clock, timeout_s: float, bogons: Bogons) -> DNSQuery:
    """Resolve ``hostname`` with the operating system's resolver: what a browser here sees.

    Calls ``getaddrinfo`` (via ``loop.getaddrinfo``, a worker thread) for both address
    families (``AF_UNSPEC``, ``SOCK_STREAM``, no flags), bounded by ``timeout_s``.

    Args:
        hostname: a host name (Unicode names are turned into A-labels first).
        clock: the measurement clock; ``t0``/``t`` are read from it.
        timeout_s: seconds before giving up with ``generic_timeout_error`` (the worker
            thread may keep running; its result is then ignored).
        bogons: the bogon set used to flag each answer.

    Returns:
        A :class:`DNSQuery` with ``query_type="ANY"``, ``engine="system"``,
        ``resolver_address=""``, answers as A/AAAA with ``ttl=None`` in getaddrinfo's
        order without duplicates, and no ``replies`` (the OS keeps the bytes).
        ``failure`` is None when at least one address came back, else the mapping of
        ``socket.gaierror`` by :func:`probe.failures.classify` (``dns_nxdomain_error``
        for EAI_NONAME, ``dns_temporary_failure`` for EAI_AGAIN, ...), ``dns_no_answer``
        for an empty result, or ``generic_timeout_error``.

    Raises:
        HostError: (a ``ValueError``) ``hostname`` is not a valid name (:func:`probe.names.to_alabel`).
    """
    name = to_alabel(hostname)
    loop = asyncio.get_running_loop()
    t0 = clock.now()
    failure: str | None = None
    answers: tuple[DNSAnswer, ...] = ()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(name, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError) as exc:
        failure = failures.classify(exc, "resolve")
    else:
        seen: dict[str, None] = {}
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                seen.setdefault(str(sockaddr[0]), None)
        answers = tuple(_answer_for_address(ip, None, bogons) for ip in seen)
        if not answers:
            failure = failures.DNS_NO_ANSWER
    return DNSQuery(hostname=name, query_type="ANY", engine="system", resolver_address="", t0=t0,
                    t=clock.now(), failure=failure, answers=answers)


# --------------------------------------------------------------------------- UDP


class _Collector(asyncio.DatagramProtocol):
    """Queues every datagram (with its arrival times) and every socket error."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queue: asyncio.Queue[tuple[bytes, Any, float, float] | BaseException] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr, self.clock.now(), asyncio.get_running_loop().time()))

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


async def _exchange_tcp(ip: str, port: int, wire: bytes, *, deadline: float, clock: Clock
                        ) -> tuple[bytes, float] | str:
    """Send ``wire`` to ``ip``:``port`` over TCP (RFC 7766) and read the reply with its id.

    Both directions carry a 2-byte length prefix (RFC 1035 §4.2.2). Messages with
    another id are skipped. ``deadline`` is in event-loop time.

    Returns:
        ``(raw reply, arrival time)``, or an OONI failure string: the connect failure
        (``connection_refused``, ...), ``generic_timeout_error`` at the deadline,
        ``eof_error`` when the server closed before a whole reply, a read failure
        (``connection_reset``, ...).
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(deadline):
            try:
                reader, writer = await asyncio.open_connection(ip, port)
            except OSError as exc:
                return failures.classify(exc, "connect")
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                if data[:2] == wire[:2]:
                    return data, clock.now()
    except TimeoutError:
        return failures.GENERIC_TIMEOUT
    except asyncio.IncompleteReadError:
        return failures.EOF_ERROR
    except OSError as exc:
        return failures.classify(exc, "read")
    finally:
        if writer is not None:
            writer.transport.abort()


def _parse_server(server: str) -> tuple[str, int]:
    """``"ip"``, ``"ip:port"`` or ``"[v6]:port"`` → ``(ip, port)``; port 53 by default."""
    addr = parse_ip(server)  # a bare address, "[v6]" included
    if addr is not None:
        return str(addr), 53
    return parse_endpoint(server.strip())


async def query_udp(
    hostname: str,
    query_type: Literal["A", "AAAA"],
    *,
    server: str,
    clock: Clock,
    timeout_s: float,
    listen_s: float,
    bogons: Bogons,
    edns: bool = False,
    decided: asyncio.Future[DNSQuery] | None = None,
) -> DNSQuery:
    """Ask ``server`` over UDP (RFC 1035 §4.2.1), and keep every reply until the deadline.

    One query is sent (no retries) from a connected UDP socket. Then datagrams are
    collected until ``min(first_reply + listen_s, start + timeout_s)``. Every datagram
    from the server whose first two bytes equal the query id is recorded as a
    :class:`DNSReply` (raw bytes, arrival time, flags, rcode, answers), including later
    duplicates (FIELD-CASES.md FC-07) and ones dnspython cannot parse, whose answers
    are recovered from the raw bytes (FC-06). Datagrams with another id are ignored.

    The *first* reply that answers our question decides the result, as a stub resolver
    would: ``answers`` are its answers, ``failure`` comes from its rcode. An unparseable
    reply decides only if addresses could be recovered from it (then ``failure`` is
    None); one that yields nothing is kept as evidence and skipped.

    Truncation (RFC 1035 §4.2.1, RFC 2181 §9): when that deciding reply is well-formed
    and has the TC flag set, the same query (same bytes, same id) is sent at once over
    TCP to the same server (RFC 7766), within what is left of ``timeout_s``, while UDP
    listening goes on. The TCP reply is recorded as one more :class:`DNSReply` with
    ``source`` "tcp:ip:port" and decides instead: ``answers`` and ``failure`` are its
    own (by the same rules; ``dns_server_misbehaving`` if it does not answer our
    question). If the retry fails, ``failure`` is its failure (``connection_refused``,
    ``generic_timeout_error``, ``eof_error``, ``connection_reset``...) and ``answers``
    is empty; the truncated reply stays in ``replies``.

    Args:
        hostname: the name to look up (Unicode names become A-labels).
        query_type: "A" or "AAAA".
        server: "ip", "ip:port" or "[ipv6]:port"; the port defaults to 53.
        clock: the measurement clock (``t0``, ``t`` and each reply's ``t``).
        timeout_s: seconds to wait for the first reply, counted from the send; also
            the end of a TCP retry.
        listen_s: seconds to keep listening after the first reply (FC-07 suggests
            1–2 s in the field); 0 stops at the first reply. Never beyond ``timeout_s``.
        bogons: the bogon set used to flag each address.
        edns: send an EDNS0 OPT record (RFC 6891, payload 1232) instead of a plain
            query; FC-06's injector mangles exactly those replies.
        decided: when given, set as soon as the result is known as a stub resolver would
            know it — the first usable reply (not truncated) — to a provisional
            :class:`DNSQuery` with that reply's answers and the replies so far, while this
            coroutine keeps listening for ``listen_s`` (issue 13: the listening window
            runs beside the rest of the measurement; the verdict waits for the returned,
            complete query). Set to the final result otherwise (no reply, a failure, a
            TCP retry). Never set twice.

    Returns:
        A :class:`DNSQuery` with ``engine="udp"``, ``resolver_address`` as "ip:port".
        ``failure``: None (NOERROR with A/AAAA answers), ``dns_no_answer`` (NOERROR,
        no address after following CNAMEs; CNAME answers are still listed),
        ``dns_nxdomain_error``, ``dns_servfail_error``, ``dns_refused_error``,
        ``dns_server_misbehaving`` (another rcode, or only replies that neither parse
        nor yield an address), ``generic_timeout_error`` (no reply),
        ``connection_refused`` (ICMP port unreachable) or another socket failure; after
        a truncated reply, the TCP retry's outcome (see above).

    Raises:
        ValueError: ``server`` is not an IP endpoint, ``query_type`` is not A/AAAA, or
            ``hostname`` is not a valid name (:class:`probe.names.HostError`).
    """
    (q,) = await query_udp_many(hostname, (query_type,), server=server, clock=clock, timeout_s=timeout_s,
                                listen_s=listen_s, bogons=bogons, edns=edns, decided=(decided,))
    return q


class _Pending:
    """One query's state on a shared socket (:func:`query_udp_many`)."""

    def __init__(self, index: int, query_type: Literal["A", "AAAA"], q: _Wire, hard_deadline: float,
                 decided: asyncio.Future[DNSQuery] | None) -> None:
        self.index = index
        self.query_type = query_type
        self.q = q
        self.qid = q.wire[:2]
        self.hard_deadline = hard_deadline
        self.deadline = hard_deadline
        self.decided = decided
        self.received: list[_Decoded] = []
        self.dropped = 0
        self.have_decision = False  # a usable reply has arrived (the first one decides)
        self.socket_failure: str | None = None
        self.tcp_task: asyncio.Task[tuple[bytes, float] | str] | None = None


async def query_udp_many(
    hostname: str,
    query_types: Sequence[Literal["A", "AAAA"]],
    *,
    server: str,
    clock: Clock,
    timeout_s: float,
    listen_s: float,
    bogons: Bogons,
    edns: bool = False,
    decided: Sequence[asyncio.Future[DNSQuery] | None] | None = None,
) -> tuple[DNSQuery, ...]:
    """:func:`query_udp` for several query types at once (A and AAAA) on ONE connected UDP
    socket (issue 13): every query is sent at once, each with its own id; a reply belongs
    to the query whose id it carries, and each query keeps its own first-reply decision,
    listening window (``first reply + listen_s``, never past ``timeout_s``), reply cap and
    TCP retry — each result is the one :func:`query_udp` alone would give. ``decided[i]``
    is query ``i``'s. Returns one :class:`DNSQuery` per type, in order."""
    name = to_alabel(hostname)
    ip, port = _parse_server(server)
    resolver = format_endpoint(ip, port)
    loop = asyncio.get_running_loop()
    t0 = clock.now()
    futures = list(decided) if decided is not None else [None] * len(query_types)

    def result(query_type: Literal["A", "AAAA"], failure: str | None, answers: tuple[DNSAnswer, ...] = (),
               replies: tuple[DNSReply, ...] = (), dropped: int = 0, deadline: float | None = None) -> DNSQuery:
        t = clock.now()
        if deadline is not None:  # a query sharing the socket ended at its own deadline, not the other's
            t = min(t, t - (loop.time() - deadline))
        return DNSQuery(hostname=name, query_type=query_type, engine="udp", resolver_address=resolver,
                        t0=t0, t=max(t, t0), failure=failure, answers=answers, replies=replies,
                        replies_dropped=dropped)

    def settle(f: asyncio.Future[DNSQuery] | None, q: DNSQuery) -> DNSQuery:
        if f is not None and not f.done():
            f.set_result(q)
        return q

    start = loop.time()
    pending: list[_Pending] = []
    out: dict[int, DNSQuery] = {}
    for i, qt in enumerate(query_types):
        try:
            wire = _make_query(name, qt, edns=edns, avoid_ids=frozenset(int.from_bytes(p.qid, "big") for p in pending))
        except dns.exception.DNSException as exc:  # e.g. a label longer than 63 octets
            out[i] = settle(futures[i], result(qt, failures.unknown(exc)))
            continue
        pending.append(_Pending(i, qt, wire, start + timeout_s, futures[i]))
    by_id = {p.qid: p for p in pending}
    if not pending:
        return tuple(out[i] for i in range(len(query_types)))

    server_ip = parse_ip(ip)
    transport: asyncio.DatagramTransport | None = None
    try:
        try:
            transport, proto = await loop.create_datagram_endpoint(lambda: _Collector(clock), remote_addr=(ip, port))
            for p in pending:
                transport.sendto(p.q.wire)
        except OSError as exc:
            why = failures.classify(exc, "connect")
            for p in pending:
                out[p.index] = settle(p.decided, result(p.query_type, why))
            return tuple(out[i] for i in range(len(query_types)))
        while True:
            remaining = max(p.deadline for p in pending if p.socket_failure is None) - loop.time() \
                if any(p.socket_failure is None for p in pending) else 0.0
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    item = await proto.queue.get()
            except TimeoutError:
                break
            if isinstance(item, BaseException):
                # ICMP errors (port unreachable → ECONNREFUSED) surface here on a connected
                # socket. Before any reply they end a lookup; after one they are noise.
                for p in pending:
                    if not p.received and p.socket_failure is None:
                        p.socket_failure = failures.classify(item, "connect")
                        settle(p.decided, result(p.query_type, p.socket_failure))
                continue
            data, addr, t_arrival, loop_arrival = item
            p_ = by_id.get(data[:2]) if len(data) >= 2 else None
            if p_ is None or p_.socket_failure is not None or loop_arrival > p_.deadline:
                continue
            p = p_
            if (addr[0] != ip and parse_ip(str(addr[0])) != server_ip) or addr[1] != port:
                continue
            if len(p.received) >= MAX_REPLIES_PER_QUERY:
                p.dropped += 1  # counted, not kept (nor decoded)
                continue
            decoded = _decode_reply(data, t=t_arrival, source=format_endpoint(str(addr[0]), addr[1]),
                                    query_wire=p.q.wire, qname=p.q.qname, qtype=p.q.qtype, bogons=bogons)
            p.received.append(decoded)
            if len(p.received) == 1:
                p.deadline = min(p.hard_deadline, loop_arrival + listen_s)
            if decoded.usable and not p.have_decision:
                p.have_decision = True
                flags = decoded.reply.flags or 0
                if decoded.rcode is not None and flags & dns.flags.TC:
                    p.tcp_task = asyncio.create_task(
                        _exchange_tcp(ip, port, p.q.wire, deadline=p.hard_deadline, clock=clock))
                elif p.decided is not None and not p.decided.done() and loop.time() < p.deadline:
                    failure0, answers0 = _decide(p.received)
                    p.decided.set_result(result(
                        p.query_type, failure0, answers0,
                        tuple(sorted((d.reply for d in p.received), key=lambda r: r.t)), p.dropped))
        if transport is not None:
            transport.close()
        tcp_results = {id(p): (await p.tcp_task if p.tcp_task is not None else None) for p in pending}
    finally:
        if transport is not None:
            transport.close()
        for p in pending:
            if p.tcp_task is not None and not p.tcp_task.done():
                p.tcp_task.cancel()

    for p in pending:
        i = p.index
        if not p.received:
            out[i] = settle(p.decided, result(p.query_type, p.socket_failure or failures.GENERIC_TIMEOUT,
                                              dropped=p.dropped, deadline=None if p.socket_failure else p.deadline))
            continue
        failure: str | None
        failure, answers = _decide(p.received)
        tcp_result = tcp_results[id(p)]
        if isinstance(tcp_result, str):
            failure, answers = tcp_result, ()
        elif tcp_result is not None:
            raw, t_tcp = tcp_result
            tcp_decoded = _decode_reply(raw, t=t_tcp, source=TCP_SOURCE_PREFIX + resolver, query_wire=p.q.wire,
                                        qname=p.q.qname, qtype=p.q.qtype, bogons=bogons)
            p.received.append(tcp_decoded)
            failure, answers = _decide([tcp_decoded])
        replies = tuple(sorted((d.reply for d in p.received), key=lambda r: r.t))
        end = p.deadline if tcp_result is None else None  # a TCP retry ends when it ends
        out[i] = settle(p.decided, result(p.query_type, failure, answers, replies, p.dropped, end))
    return tuple(out[i] for i in range(len(query_types)))


# --------------------------------------------------------------------------- DoH


def _doh_failure(exc: BaseException, *, tls: bool = True) -> str:
    """Map what an aiohttp request raised to an OONI failure: :func:`probe.failures.classify_aiohttp`
    (an intercepted control → ``ssl_unknown_authority``; a FIN during the handshake ``eof_error``)."""
    return failures.classify_aiohttp(exc, tls=tls)


async def query_doh(
    hostname: str,
    query_type: Literal["A", "AAAA"],
    *,
    url: str,
    session: aiohttp.ClientSession,
    clock: Clock,
    timeout_s: float,
    bogons: Bogons,
) -> DNSQuery:
    """Ask a DNS-over-HTTPS resolver (RFC 8484 §4.1, POST ``application/dns-message``).

    The query is ``dns.message.make_query(...)`` with id 0 and no EDNS, posted over
    ``session``; TLS trust is whatever the caller configured on the session's
    connector (the DoH control's trust store). The response body is read up to
    :data:`DOH_MAX_BODY` (64 KiB) after content decoding, by the one bounded reader
    (:func:`probe.bounded.read_body`: encoded bytes capped too, so a compressed bomb
    costs at most the caps; the session must not decompress by itself).

    Args:
        hostname: the name to look up (Unicode names become A-labels).
        query_type: "A" or "AAAA".
        url: the resolver's DoH URL, e.g. ``"https://dns.example/dns-query"``.
        session: an open aiohttp session (not closed here).
        clock: the measurement clock (``t0``, ``t``, the reply's ``t``).
        timeout_s: seconds for the whole exchange (connect, TLS, request, body).
        bogons: the bogon set used to flag each address.

    Returns:
        A :class:`DNSQuery` with ``engine="doh"``, ``resolver_address=url`` and, when
        an HTTP response arrived, one :class:`DNSReply` (``source=url``) holding the
        raw body. ``failure``: None / ``dns_nxdomain_error`` / ``dns_no_answer`` /
        ``dns_servfail_error`` / ``dns_refused_error`` from the DNS rcode, as for UDP;
        ``dns_server_misbehaving`` for a non-200 status, another content type, a body
        over 64 KiB, one that does not parse or does not answer our question (the
        reply's ``parse_error`` says which; ``answers`` stay empty); TLS failures as
        :func:`probe.failures.classify` names them for a handshake
        (``ssl_unknown_authority`` for an intercepted control, ...);
        ``generic_timeout_error``; socket failures (``connection_refused``, ...).

    Raises:
        ValueError: ``url`` is not an http(s) URL, ``query_type`` is not A/AAAA, or
            ``hostname`` is not a valid name (:class:`probe.names.HostError`).
    """
    parsed_url = urlsplit(url)
    if parsed_url.scheme not in ("https", "http") or not parsed_url.hostname:
        raise ValueError(f"{url!r} is not a DoH URL (https://host/path)")
    name = to_alabel(hostname)
    t0 = clock.now()

    def done(failure: str | None, answers: tuple[DNSAnswer, ...] = (), replies: tuple[DNSReply, ...] = ()
             ) -> DNSQuery:
        return DNSQuery(hostname=name, query_type=query_type, engine="doh", resolver_address=url,
                        t0=t0, t=clock.now(), failure=failure, answers=answers, replies=replies)

    try:
        q = _make_query(name, query_type, edns=False, id_zero=True)
    except dns.exception.DNSException as exc:
        return done(failures.unknown(exc))

    headers = {"Content-Type": DOH_MEDIA_TYPE, "Accept": DOH_MEDIA_TYPE}
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=q.wire, headers=headers, allow_redirects=False) as resp:
                body, too_big = await read_body(resp, DOH_MAX_BODY)
                t_reply = clock.now()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return done(_doh_failure(exc, tls=parsed_url.scheme == "https"))
    except zlib.error as exc:  # a corrupt compressed body
        bad = DNSReply(t=clock.now(), raw_b64="", source=url, rcode=None, flags=None,
                       parse_error=f"corrupt content coding: {exc}")
        return done(failures.DNS_SERVER_MISBEHAVING, replies=(bad,))

    b64 = base64.b64encode(body).decode("ascii")
    problem = None
    if status != 200:
        problem = f"HTTP status {status}"
    elif content_type != DOH_MEDIA_TYPE:
        problem = f"content type {content_type or '(none)'!r}, not {DOH_MEDIA_TYPE}"
    elif too_big:
        problem = f"body larger than {DOH_MAX_BODY} bytes"
    if problem is not None:
        reply = DNSReply(t=t_reply, raw_b64=b64, source=url, rcode=None, flags=None, parse_error=problem)
        return done(failures.DNS_SERVER_MISBEHAVING, replies=(reply,))

    decoded = _decode_reply(body, t=t_reply, source=url, query_wire=q.wire, qname=q.qname, qtype=q.qtype,
                            bogons=bogons)
    reply = decoded.reply
    if decoded.rcode is None or not decoded.usable:
        if reply.parse_error is None:
            reply = dataclasses.replace(reply, parse_error="not a response to our question")
        return done(failures.DNS_SERVER_MISBEHAVING, replies=(reply,))
    return done(_rcode_failure(decoded.rcode, reply.answers), reply.answers, (reply,))
