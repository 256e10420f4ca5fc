"""IP address classification (bogons) and endpoint handling.

The bogon table follows OONI's ``netxlite/bogon.go`` (itself the IANA special-purpose
registries for IPv4 and IPv6, RFC 6890), which includes the documentation and
benchmarking ranges. Those ranges are what tests and the lab use for "public"
servers, so the set is a *setting*: :class:`Bogons` takes ``public`` ranges that are
carved out of the table (FIELD-CASES.md, note on addresses).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Private space — the one list of it (range, what, source): RFC 1918, the carrier-grade NAT
#: shared space (RFC 6598: inside a mobile ISP) and IPv6 unique local addresses (RFC 4193).
#: :data:`probe.localnet.PRIVATE_RANGES` (a redirect into it from a public origin is refused),
#: the helper's special-purpose tables (:mod:`probe.helper.ssrf`) and :data:`DEFAULT_BOGONS` take
#: it from here.
PRIVATE_SPACE: Final[tuple[tuple[str, str, str], ...]] = (
    ("10.0.0.0/8", "private-use", "RFC 1918"),
    ("100.64.0.0/10", "shared address space (CGNAT)", "RFC 6598"),
    ("172.16.0.0/12", "private-use", "RFC 1918"),
    ("192.168.0.0/16", "private-use", "RFC 1918"),
    ("fc00::/7", "unique local", "RFC 4193"),
)


def by_address(ranges: Iterable[str]) -> tuple[str, ...]:
    """CIDR ranges in address order, IPv4 first (the order of OONI's and IANA's tables)."""
    def key(r: str) -> tuple[int, int, int]:
        n = ipaddress.ip_network(r)
        return n.version, int(n.network_address), n.prefixlen
    return tuple(sorted(ranges, key=key))


#: OONI netxlite/bogon.go, as of probe-cli v3.20 (IPv4 then IPv6, in address order): its
#: private ranges from :data:`PRIVATE_SPACE`, the others here.
DEFAULT_BOGONS: Final[tuple[str, ...]] = by_address((
    *(r for r, _, _ in PRIVATE_SPACE),
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "100::/64",
    "2001::/32",
    "2001:10::/28",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fe80::/10",
    "ff00::/8",
))


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    """Parse a literal IPv4/IPv6 address (brackets and zone ids stripped); ``None`` if not one.

    Memoised (addresses are immutable): a measurement parses the same few addresses ~30
    times over (issue 13)."""
    text = text.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True, kw_only=True)
class Bogons:
    """A bogon set: ``bogons`` minus ``public``.

    Attributes:
        bogons: CIDR ranges considered non-global (default: OONI's table).
        public: CIDR ranges that are declared public *here* even though they are in
            ``bogons`` (e.g. ``198.18.0.0/15`` in the lab, ``192.0.2.0/24`` in tests).

    Raises:
        ValueError: on construction, when a range is not valid CIDR (names the range).
    """

    bogons: tuple[str, ...] = DEFAULT_BOGONS
    public: tuple[str, ...] = ()
    _bogon_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _public_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _memo: dict[str | IPAddress, bool] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bogon_nets", _nets(self.bogons, "bogons"))
        object.__setattr__(self, "_public_nets", _nets(self.public, "public"))
        object.__setattr__(self, "_memo", {})  # address → verdict (the ranges never change)

    def is_bogon(self, ip: str | IPAddress) -> bool:
        """True when ``ip`` is in the bogon set and not declared public.

        IPv4-mapped (``::ffff:a.b.c.d``) and NAT64 (``64:ff9b::a.b.c.d``, RFC 6052)
        IPv6 addresses are judged by the IPv4 address they carry (a DNS64 resolver's
        synthesized AAAA is not a bogon). A non-IP string is not a bogon (False).
        """
        memo = self._memo
        hit = memo.get(ip)
        if hit is not None:
            return hit
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        if addr is None:
            return False
        addr = embedded_ipv4(addr) or addr
        result = (not any(addr in n for n in self._public_nets if n.version == addr.version)
                  and any(addr in n for n in self._bogon_nets if n.version == addr.version))
        if len(memo) >= 4096:
            memo.clear()
        memo[ip] = result
        return result


def _nets(ranges: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    out = []
    for r in ranges:
        try:
            out.append(ipaddress.ip_network(r, strict=False))
        except ValueError as exc:
            raise ValueError(f"{what}: {r!r} is not an IP range in CIDR form ({exc})") from None
    return tuple(out)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPAT = ipaddress.IPv6Network("::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
#: The prefix lengths of RFC 6052 §2.2's address formats.
RFC6052_PREFIX_LENGTHS: Final = (32, 40, 48, 56, 64, 96)


def embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped ``::ffff:0:0/96``, NAT64
    well-known prefix ``64:ff9b::/96`` (RFC 6052) or IPv4-compatible ``::/96`` (except
    ``::`` and ``::1``); None otherwise (and for IPv4 input)."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or (addr in _IPV4_COMPAT and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def rfc6052_ipv4(addr: ipaddress.IPv6Address, prefixlen: int) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``addr`` carries in RFC 6052 §2.2's format for a ``prefixlen`` prefix: the 32 bits
    after the prefix, skipping bits 64-71 (the "u" octet; a /48 prefix puts the IPv4 address in bits 48-63
    and 72-87). None when the u octet is not zero (not that format; /96 has none). The suffix after the
    IPv4 address is ignored, as §2.2 tells translators to.

    Raises:
        ValueError: ``prefixlen`` is not one of :data:`RFC6052_PREFIX_LENGTHS`.
    """
    if prefixlen not in RFC6052_PREFIX_LENGTHS:
        raise ValueError(f"RFC 6052 prefix length {prefixlen}: must be one of {RFC6052_PREFIX_LENGTHS}")
    b = addr.packed
    if prefixlen == 96:
        return ipaddress.IPv4Address(b[12:])
    if b[8]:
        return None
    without_u = b[:8] + b[9:]
    return ipaddress.IPv4Address(without_u[prefixlen // 8:prefixlen // 8 + 4])


def nat64_local_ipv4(addr: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a translator may take a local-use NAT64 address ``64:ff9b:1::/48`` (RFC 8215)
    to; ``()`` for any other address. The operator picks the translation prefix inside the /48 (RFC 8215:
    room for several, of any RFC 6052 length), so both the /48 format (the lab's DNS64) and the /96 one
    (as ``64:ff9b::/96``) are read (:func:`rfc6052_ipv4`). A reading in 0.0.0.0/8 is the other format's zero padding
    (``64:ff9b:1::808:808`` reads 0.0.0.0 as /48, ``64:ff9b:1:808:8:800::`` 0.0.0.0 as /96) and is
    dropped when the other reading is outside 0.0.0.0/8. Not read: /56 and /64 prefixes inside it (their
    readings of the /48 format's addresses land on its IPv4 octets shifted: x.y.224.z reads as 224.z.0.0)."""
    if not isinstance(addr, ipaddress.IPv6Address) or addr not in _NAT64_LOCAL:
        return ()
    read = tuple(dict.fromkeys(v4 for n in (48, 96) if (v4 := rfc6052_ipv4(addr, n)) is not None))
    return tuple(v4 for v4 in read if v4 not in _THIS_NETWORK) or read


def tunnelled_ipv4(addr: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a tunnel address leads to: 6to4 ``2002:V4ADDR::/48`` (RFC 3056 §2) gives
    ``(V4ADDR,)``, Teredo ``2001:0:SERVER:FLAGS:PORT:CLIENT`` (RFC 4380 §4, the client's mapped address
    inverted) ``(server, client)``; ``()`` for any other address. A host with a 6to4 or Teredo interface
    sends the IPv6 packets to these IPv4 addresses (protocol 41; UDP). Unlike :func:`embedded_ipv4` the
    address is not *the* IPv4 one: OONI's bogon table lists 2002::/16 and 2001::/32 whole."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return ()
    if addr.sixtofour is not None:
        return (addr.sixtofour,)
    return addr.teredo or ()


def non_global_tunnel(ip: str | IPAddress) -> ipaddress.IPv4Address | None:
    """The first IPv4 address a 6to4 or Teredo address carries (:func:`tunnelled_ipv4`) that is not
    global (``ipaddress``'s ``is_global``, the IANA special-purpose registry: private, shared, loopback,
    link-local, documentation, benchmarking, reserved ...) or that :func:`not_local_address` refuses as a
    plain IPv4 address (multicast 224.0.0.0/4, which ``is_global`` calls global), else None. Both RFCs
    embed global addresses only (RFC 3056 §2: V4ADDR is "a valid, globally unique" IPv4 address; RFC 4380
    §4: a Teredo server's address and the client's mapped address, its NAT's outside one), so such an
    address belongs to no 6to4 site or Teredo client: it only sends packets to that IPv4 address (break
    test 24: a redirect to ``2002:a4d:1::``, the LAN gateway 10.77.0.1, was attempted)."""
    addr = parse_ip(ip) if isinstance(ip, str) else ip
    if addr is None:
        return None
    return next((v4 for v4 in tunnelled_ipv4(addr) if not v4.is_global or _machine_local(v4)), None)


@functools.lru_cache(maxsize=8192)
def canonical_ip(ip: str) -> str:
    """``ip`` as the address it denotes for comparisons: embedded IPv4 unwrapped
    (:func:`embedded_ipv4`), compressed form; a non-IP string is returned unchanged.
    Memoised (the same answers recur across measurements: re-judging OONI's, issue 14)."""
    addr = parse_ip(ip)
    if addr is None:
        return ip
    return str(embedded_ipv4(addr) or addr)


def format_endpoint(ip: str, port: int) -> str:
    """``"1.2.3.4:443"`` or ``"[2001:db8::1]:443"`` (RFC 3986 host form)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """Parse ``"ip:port"`` / ``"[ipv6]:port"`` into ``(ip, port)``.

    Raises:
        ValueError: naming ``text`` when it is not an IP literal with a port in 1..65535.
    """
    host, sep, port_s = text.rpartition(":")
    addr = parse_ip(host)
    if not sep or addr is None or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{text!r} is not an endpoint of the form IP:PORT or [IPv6]:PORT")
    return str(addr), int(port_s)


@dataclass(frozen=True, kw_only=True)
class ConnectTo:
    """Where to really dial a logical endpoint (like ``curl --connect-to``).

    Records always carry the logical endpoint (the address DNS returned); only the
    socket goes elsewhere. Production uses the empty map; loopback tests and the lab
    use it to put "192.0.2.21:443" on a 127.0.0.1 port.

    Attributes:
        mapping: ``{"192.0.2.21:443": "127.0.0.1:38211", ...}``.
        fallback: where to dial any endpoint *not* in ``mapping``; None = the endpoint
            itself. Tests set it to a closed loopback port so that no unmapped address
            is ever dialled off the machine.
    """

    mapping: Mapping[str, str] = field(default_factory=dict)
    fallback: str | None = None

    def resolve(self, ip: str, port: int) -> tuple[str, int]:
        """The ``(ip, port)`` to dial for the logical endpoint ``(ip, port)``."""
        target = self.mapping.get(format_endpoint(ip, port)) or self.fallback
        return parse_endpoint(target) if target else (ip, port)


def parse_resolver(text: str, default_port: int = 53) -> tuple[str, int]:
    """Parse a resolver address: ``"ip"``, ``"ip:port"``, ``"v6"`` or ``"[v6]:port"``.

    Raises:
        ValueError: naming ``text`` when it is not an IP address with an optional port.
    """
    addr = parse_ip(text)
    if addr is not None:
        return str(addr), default_port
    return parse_endpoint(text)


def not_local_address(ip: str) -> bool:
    """False for addresses on or around this machine: never dialled, whatever DNS or a redirect says.

    The ``allow_address`` of the web test and the endpoint filter (FIELD-CASES FC-01).

    Refused: loopback (127.0.0.0/8, ::1), unspecified / "this network" (0.0.0.0/8, ::),
    link-local (169.254.0.0/16, fe80::/10), multicast (224.0.0.0/4, ff00::/8) and the
    limited broadcast 255.255.255.255; an IPv6 address carrying an IPv4 address
    (mapped, NAT64, compatible: :func:`embedded_ipv4`) is judged by that IPv4 address, a local-use NAT64
    address by each IPv4 address it may be translated to (:func:`nat64_local_ipv4`, RFC 8215); a 6to4 or
    Teredo address tunnelling to an IPv4 address that is not global (:func:`non_global_tunnel`: RFC 3056
    §2, RFC 4380 §4) is refused. Allowed: everything else, private RFC 1918 / ULA
    space included (ISP blockpages live there). Not an IP address: False.
    """
    addr = parse_ip(ip)
    if addr is None or non_global_tunnel(addr) is not None:
        return False
    return not any(_machine_local(a) for a in (embedded_ipv4(addr) or addr, *nat64_local_ipv4(addr)))


def _machine_local(addr: IPAddress) -> bool:
    """Loopback, unspecified / "this network" 0.0.0.0/8, link-local, multicast or the limited broadcast."""
    if isinstance(addr, ipaddress.IPv4Address) and (addr.packed[0] == 0 or addr == _BROADCAST):
        return True
    return addr.is_loopback or addr.is_unspecified or addr.is_link_local or addr.is_multicast


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
