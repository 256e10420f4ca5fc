"""DNS wire format by hand for the hot path: plain A/AAAA queries and their plain replies.

Issue 13: building and parsing ``dns.message`` objects was half of the probe's UDP DNS CPU.
This module builds a query (RFC 1035 §4.1) and reads a reply without creating any
dnspython object, for the common case only; for anything else it answers ``None`` and the
caller (:mod:`probe.measure.dns`) uses dnspython exactly as before, so the record of an odd
reply (mangled, FC-06; extended rcodes; unknown record types; names needing escapes) is
the one dnspython's parse gives. When this module does accept a reply, the outcome is the
one dnspython's parse would give (tested against it: ``tests/measure/test_dnswire.py``,
tables and hypothesis): the same header checks, the same compression rules (pointers must
point backwards, at most 16 hops, a name at most 255 octets, every read bounds-checked),
no trailing bytes, the same merging of records into RRsets (same owner/class/type; TTL the
minimum, above 2^31-1 read as 0; duplicates dropped; a CNAME set keeps its last record).

Accepted: opcode QUERY, at most one question, and in every section only records of class
IN of type A (4 octets), AAAA (16), CNAME, NS (one name each) or SOA (two names + 20 octets),
plus at most one OPT record in the additional section with the root owner, no options and
no extended-rcode bits. Names: labels of letters, digits, ``-`` and ``_`` only (what
dnspython prints without escapes), never the root as a CNAME target.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from typing import NamedTuple

from probe.errors import KzprobeError

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1
QTYPES = {"A": TYPE_A, "AAAA": TYPE_AAAA}

#: dnspython's default EDNS payload for ``make_query(use_edns=0)`` (RFC 6891; DNS flag day 2020).
EDNS_PAYLOAD = 1232
_MAX_POINTER_HOPS = 16  # dnspython's MAX_COMPRESSION_POINTER_CHAIN
_MAX_NAME_WIRE = 255
_LABEL_OK = re.compile(rb"[A-Za-z0-9_-]{1,63}")
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QTAIL = struct.Struct("!HH")
_RD = 0x0100
_QR = 0x8000


class Odd(KzprobeError):
    """The message is not one this module reads: use dnspython (never leaves :func:`parse_reply`)."""


def new_id() -> int:
    """A random 16-bit query id (RFC 5452 §9.2)."""
    return int.from_bytes(os.urandom(2), "big")


def build_query(name: str, qtype: str, *, qid: int, edns: bool) -> bytes | None:
    """The wire form of a recursive query for ``name`` (A-label text, a trailing dot allowed),
    byte for byte what ``dns.message.make_query(name, qtype, use_edns=0 if edns else False)``
    makes with id ``qid``; None when the name is not plain letters/digits/hyphens/underscores
    labels (dnspython then builds it, or rejects it)."""
    if qtype not in QTYPES:
        return None
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    out = bytearray(_HEADER.pack(qid, _RD, 1, 0, 0, 1 if edns else 0))
    for label in labels:
        raw = label.encode("ascii", "replace")
        if not _LABEL_OK.fullmatch(raw):
            return None
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) - 12 > _MAX_NAME_WIRE:
        return None
    out += _QTAIL.pack(QTYPES[qtype], CLASS_IN)
    if edns:
        out += b"\x00" + _RR.pack(TYPE_OPT, EDNS_PAYLOAD, 0, 0)
    return bytes(out)


def _name(wire: bytes, pos: int, end: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at ``pos``, never past ``end``.

    Returns (text without the final dot, "" for the root; position after the name where it
    starts). Raises :class:`Odd` for what dnspython would refuse (or print with escapes)."""
    labels: list[bytes] = []
    total = 1
    start = pos  # the segment being read: a pointer must point before it (dnspython)
    biggest = pos
    after = -1
    hops = 0
    limit = end
    while True:
        if pos >= limit:
            raise Odd("name runs past the end")
        n = wire[pos]
        if n == 0:
            pos += 1
            break
        if n < 64:
            label = wire[pos + 1:pos + 1 + n]
            if pos + 1 + n > limit or not _LABEL_OK.fullmatch(label):
                raise Odd("label")
            labels.append(label)
            total += n + 1
            pos += 1 + n
        elif n >= 192:
            if pos + 2 > limit:
                raise Odd("pointer runs past the end")
            target = ((n & 0x3F) << 8) | wire[pos + 1]
            if target >= biggest:
                raise Odd("pointer does not point backwards")
            hops += 1
            if hops > _MAX_POINTER_HOPS:
                raise Odd("pointer chain too long")
            if after < 0:
                after = pos + 2
            biggest = target
            limit = start  # the target may not overlap what was read of this name
            pos = start = target
        else:
            raise Odd("label type")
    if total > _MAX_NAME_WIRE:
        raise Odd("name too long")
    return b".".join(labels).decode("ascii"), (after if after >= 0 else pos)


class RRset(NamedTuple):
    """An answer-section RRset as dnspython would hold it (owner in lower case)."""

    owner: str
    rtype: int
    ttl: int
    values: list[str]  # dotted/colon address text (A/AAAA), target name text (CNAME)


class Reply(NamedTuple):
    """What the decoder needs of a reply."""

    qid: int
    flags: int
    rcode: int
    question: tuple[str, int, int] | None  # (name in lower case, type, class)
    answer: list[RRset]


def parse_reply(wire: bytes) -> Reply | None:
    """Read a plain reply (see the module docstring); None when it is not one (use dnspython)."""
    try:
        return _parse(wire)
    except (Odd, IndexError, struct.error, UnicodeDecodeError, ValueError, OSError):
        return None


def _parse(wire: bytes) -> Reply:
    end = len(wire)
    if end < 12:
        raise Odd("short header")
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(wire, 0)
    if flags & 0x7800 or qd > 1:  # opcode other than QUERY; several questions
        raise Odd("opcode or question count")
    pos = 12
    question = None
    if qd:
        qname, pos = _name(wire, pos, end)
        if pos + 4 > end:
            raise Odd("question runs past the end")
        qt, qc = _QTAIL.unpack_from(wire, pos)
        pos += 4
        question = (qname.lower(), qt, qc)
    sets: dict[tuple[str, int], RRset] = {}
    seen_opt = False
    for section, count in ((1, an), (2, ns), (3, ar)):
        for _ in range(count):
            owner, pos = _name(wire, pos, end)
            if pos + 10 > end:
                raise Odd("record header runs past the end")
            rtype, rclass, ttl, rdlen = _RR.unpack_from(wire, pos)
            pos += 10
            rd_end = pos + rdlen
            if rd_end > end:
                raise Odd("RDATA runs past the end")
            if rtype == TYPE_OPT:
                if section != 3 or seen_opt or owner or rdlen or ttl >> 24:
                    raise Odd("OPT")
                seen_opt = True
                continue
            if rclass != CLASS_IN:
                raise Odd("class")
            value: str | None = None
            if rtype == TYPE_A:
                if rdlen != 4:
                    raise Odd("A length")
                value = socket.inet_ntop(socket.AF_INET, wire[pos:rd_end])
            elif rtype == TYPE_AAAA:
                if rdlen != 16 or not any(wire[pos:pos + 10]):
                    raise Odd("AAAA length, or ::/80 (dnspython prints those its own way)")
                value = socket.inet_ntop(socket.AF_INET6, wire[pos:rd_end])
            elif rtype in (TYPE_CNAME, TYPE_NS):
                target, after = _name(wire, pos, rd_end)
                if after != rd_end or (rtype == TYPE_CNAME and not target):
                    raise Odd("name RDATA")
                value = target
            elif rtype == TYPE_SOA:
                _, after = _name(wire, pos, rd_end)
                _, after = _name(wire, after, rd_end)
                if after + 20 != rd_end:
                    raise Odd("SOA RDATA")
            else:
                raise Odd("type")
            pos = rd_end
            if section != 1 or rtype in (TYPE_NS, TYPE_SOA):
                continue
            assert value is not None
            if ttl > 0x7FFFFFFF:
                ttl = 0
            key = (owner.lower(), rtype)
            rs = sets.get(key)
            if rs is None:
                sets[key] = RRset(key[0], rtype, ttl, [value])
                continue
            if ttl < rs.ttl:
                rs = sets[key] = rs._replace(ttl=ttl)
            if rtype == TYPE_CNAME:  # a singleton type: the last one stays (dnspython)
                rs.values[:] = [value]
            elif rtype == TYPE_AAAA:
                packed = socket.inet_pton(socket.AF_INET6, value)
                if all(socket.inet_pton(socket.AF_INET6, v) != packed for v in rs.values):
                    rs.values.append(value)
            elif value not in rs.values:
                rs.values.append(value)
    if pos != end:
        raise Odd("trailing bytes")
    return Reply(qid, flags, flags & 0xF, question, list(sets.values()))
