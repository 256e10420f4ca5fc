"""DNS primitives: the system resolver, direct UDP (keeps every reply), and DoH (RFC 8484).

CONTRACT (filled in by the DNS work item; keep names and fields):
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import aiohttp

from probe.addresses import Bogons
from probe.timing import Clock

Engine = Literal["system", "udp", "doh"]
QueryType = Literal["A", "AAAA", "ANY"]


@dataclass(frozen=True, kw_only=True)
class DNSAnswer:
    """One resource record of an answer (OONI df-002 ``answers[]`` entry).

    Attributes:
        answer_type: "A", "AAAA" or "CNAME".
        ipv4 / ipv6: the address for A / AAAA, else None.
        hostname: the target for CNAME, else None.
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
        raw_b64: the bytes as received, base64.
        source: "ip:port" it came from (UDP) or the DoH URL.
        rcode: "NOERROR", "NXDOMAIN", "SERVFAIL"...; None if unparseable.
        flags: header flags as int (e.g. 0x8180), None if unparseable.
        answers: A/AAAA/CNAME answers for the queried name (empty if unparseable).
        parse_error: dnspython's complaint when the bytes did not parse (FC-06),
            None when they did. Addresses are then recovered best-effort (see
            ``answers`` of the owning query) from the raw bytes.
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
        hostname: the A-label name asked for.
        query_type: "A", "AAAA", or "ANY" for getaddrinfo (both families).
        engine: "system" (getaddrinfo), "udp", or "doh".
        resolver_address: "ip:port" (udp), the DoH URL (doh), "" (system).
        t0, t: start and end, seconds since measurement start.
        failure: OONI failure string (dns_nxdomain_error, dns_no_answer,
            dns_servfail_error, generic_timeout_error, ...), None when answered.
        answers: the answer used, i.e. the first well-formed reply's answers (UDP),
            the response's (DoH), or getaddrinfo's result (system).
        replies: every reply received until the deadline (UDP: all datagrams that
            matched the query id and question, *including* unparseable ones; DoH: one).
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

    def addresses(self) -> tuple[str, ...]:
        """A and AAAA addresses of :attr:`answers`, in order, without duplicates."""
        seen: dict[str, None] = {}
        for a in self.answers:
            if a.address:
                seen.setdefault(a.address, None)
        return tuple(seen)

    def all_reply_addresses(self) -> tuple[str, ...]:
        """Addresses in *any* reply (UDP duplicates included), in arrival order."""
        seen: dict[str, None] = {}
        for r in self.replies:
            for a in r.answers:
                if a.address:
                    seen.setdefault(a.address, None)
        for a in self.answers:
            if a.address:
                seen.setdefault(a.address, None)
        return tuple(seen)


async def resolve_system(hostname: str, *, clock: Clock, timeout_s: float, bogons: Bogons) -> DNSQuery:
    raise NotImplementedError


async def query_udp(
    hostname: str,
    query_type: Literal["A", "AAAA"],
    *,
    server: str,
    clock: Clock,
    timeout_s: float,
    listen_s: float,
    bogons: Bogons,
) -> DNSQuery:
    raise NotImplementedError


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
    raise NotImplementedError
