"""The loopback world the benchmark measures: names, logical addresses, DNS answers.

Shared by the server process (:mod:`bench.servers`) and the measuring workers
(:mod:`bench.worker`); it imports nothing heavy (no aiohttp, no trustme) so that a
worker's peak RSS is the probe's own.

* Inputs are ``https://site{i}.bench.example/`` for ``i`` in ``range(n)``.
* ``site{i}`` lives at the logical address ``logical_ip(i % n_servers)``: half of the
  servers in 192.0.2.0/24, half in 198.51.100.0/24 (documentation ranges, declared
  public for the run with ``bogons.public``). Each logical ``IP:443`` is a separate
  loopback TLS listener of the server process (``connect_to``).
* DNS (UDP and DoH alike): ``A site{i}.bench.example`` → that address, TTL 300;
  ``AAAA`` → NOERROR without data; ``example.com`` (the canary) → the first address;
  any other name → NXDOMAIN.
"""

from __future__ import annotations

import re
import socket
import struct

DOMAIN = "bench.example"
_SITE = re.compile(r"site(\d+)\." + re.escape(DOMAIN))
#: The ranges the logical addresses are drawn from (declared public for the run).
PUBLIC_RANGES = ("192.0.2.0/24", "198.51.100.0/24")


def site_url(i: int) -> str:
    """The i-th input."""
    return f"https://site{i}.{DOMAIN}/"


def logical_ip(k: int) -> str:
    """Logical address of server ``k``: 192.0.2.1, 198.51.100.1, 192.0.2.2, ..."""
    if not 0 <= k < 2 * 254:
        raise ValueError(f"server index {k} out of range")
    return f"192.0.2.{k // 2 + 1}" if k % 2 == 0 else f"198.51.100.{k // 2 + 1}"


def site_index(name: str) -> int | None:
    """``i`` for ``site{i}.bench.example`` (any case, trailing dot allowed), else None."""
    m = _SITE.fullmatch(name.rstrip(".").lower())
    return int(m.group(1)) if m else None


def ip_for_name(name: str, n_servers: int) -> str | None:
    """The A record of ``name`` in this world, None for a name that does not exist.

    ``example.com`` (the health and resolver canary) answers the first server's address.
    """
    if name.rstrip(".").lower() == "example.com":
        return logical_ip(0)
    i = site_index(name)
    return None if i is None else logical_ip(i % n_servers)


def dns_reply(query: bytes, n_servers: int) -> bytes | None:
    """A DNS response (RFC 1035 §4.1) to ``query``, built by hand (cheap: the server
    must not be what the benchmark measures). None for a datagram that is not a
    one-question query. The question is echoed byte for byte; additional records
    (an EDNS OPT) are dropped.
    """
    if len(query) < 12 or query[2] & 0x80:
        return None
    qdcount = struct.unpack_from("!H", query, 4)[0]
    if qdcount != 1:
        return None
    i, labels = 12, []
    while True:
        if i >= len(query):
            return None
        n = query[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(query):
            return None
        labels.append(query[i + 1:i + 1 + n])
        i += 1 + n
    if i + 4 > len(query):
        return None
    qtype, _qclass = struct.unpack_from("!HH", query, i)
    question = query[12:i + 4]
    ip = ip_for_name(b".".join(labels).decode("ascii", "replace"), n_servers)
    rd = query[2] & 0x01
    opcode = query[2] & 0x78
    answer = b""
    if ip is None:
        rcode = 3  # NXDOMAIN
    else:
        rcode = 0
        if qtype == 1:  # A
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(ip)
    header = query[:2] + bytes([0x80 | opcode | rd, 0x80 | rcode]) + struct.pack("!HHHH", 1, 1 if answer else 0, 0, 0)
    return header + question + answer


def page(size: int = 10 * 1024) -> bytes:
    """The HTML page every site serves: a <title> and ``size`` bytes in all."""
    head = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            b"<title>kzprobe bench site</title></head>\n<body>\n")
    tail = b"</body></html>\n"
    para = b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.</p>\n"
    body = bytearray(head)
    while len(body) + len(para) + len(tail) <= size:
        body += para
    body += b" " * (size - len(body) - len(tail))
    return bytes(body + tail)
