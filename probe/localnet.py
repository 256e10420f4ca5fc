"""The vantage's own network, and the rule that keeps the probe off it.

A volunteer's Raspberry Pi sits on their home LAN. Nothing a listed site, a DNS answer
or a censor says may make the probe connect there: a ``302 Location:
http://192.168.1.1/cgi-bin/reboot?now=1`` followed from plain HTTP is a forged request
against the home router every six hours, and the router's page in shared data
(issue 11, 1). :class:`AddressPolicy` decides, for every address the probe would
connect to that it did not choose itself, whether it may:

1. **This machine and its link** (loopback, unspecified, link-local, multicast,
   broadcast; :func:`probe.addresses.not_local_address`): never.
2. **The vantage's own network** — its interface subnets, its own addresses and its
   default gateways, read from the OS (:meth:`LocalNetwork.from_os`: ``/proc/net/route``,
   ``/proc/net/ipv6_route``, ``/proc/net/if_inet6`` and every IPv4 address of every
   interface by netlink ``RTM_GETADDR``), plus ``localnet.extra`` ranges: never, whatever
   the origin.
3. **Private space** (RFC 1918, RFC 6598 shared space is *not* included; IPv6 ULA
   ``fc00::/7``): only from an origin that was already there — an input whose host is a
   private literal, or a redirect from a private hop — and never from a verified-HTTPS
   hop (the genuine site redirecting into private space is not a censor's blockpage).
   A DNS answer for a public name into private space is not used either. The answer,
   or the Location, stays in the record as evidence (address, not content): the
   fingerprints of ISP blockpages on private addresses match on the address (FC-02).
4. **Ports**: a redirect may lead to the input's port, 80, 443 and ``http.extra_ports``
   only.

A 6to4 or Teredo address (``2002::/16``, RFC 3056; ``2001::/32``, RFC 4380) is sent to the IPv4
addresses it carries (:func:`probe.addresses.tunnelled_ipv4`). Both RFCs carry global addresses only, so
one carrying any other (:func:`probe.addresses.non_global_tunnel`) is refused whatever the origin, named
by what it carries: machine-local (rule 1), the vantage's network (rule 2), else ``tunnel_to_non_global``
(private space included: no origin makes a tunnel into it a site's).

A refusal is data: the hop is recorded with ``failure`` :data:`LOCAL_NETWORK_REFUSED`
and ``x_refused`` (the address and the rule id), nothing is connected, fetched or
stored from it; refused DNS answers go to ``x_skipped_addresses`` with the same reason.
The OONI failure string for a hop that was not followed is kept where it already
applies (``http_invalid_redirect_location_host`` for machine-local addresses).
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from probe.addresses import (
    PRIVATE_SPACE,
    IPAddress,
    IPNetwork,
    embedded_ipv4,
    nat64_local_ipv4,
    non_global_tunnel,
    not_local_address,
    parse_ip,
    tunnelled_ipv4,
)
from probe.failures import LOCAL_NETWORK_REFUSED

log = logging.getLogger("kzprobe.localnet")

__all__ = ["DEFAULT_PORTS", "LOCAL_NETWORK_REFUSED", "PRIVATE_RANGES", "REFUSAL_REASONS", "AddressPolicy",
           "LocalNetwork", "describe", "is_private"]


#: Rule ids of a refusal (the ``x_refused`` reason), one per rule of the module doc.
R_MACHINE: Final = "machine_local"          # loopback, link-local, multicast, unspecified, broadcast
R_VANTAGE_LAN: Final = "vantage_lan"        # an interface subnet, own address or the default gateway
R_PRIVATE_FROM_PUBLIC: Final = "private_from_public"   # RFC 1918/ULA from an origin outside it
R_PRIVATE_FROM_HTTPS: Final = "private_from_verified_https"
R_PORT: Final = "port_not_allowed"          # not the input's port, 80, 443 or http.extra_ports
R_TUNNEL: Final = "tunnel_to_non_global"    # 6to4/Teredo carrying a non-global IPv4 (RFC 3056 §2, RFC 4380 §4)
REFUSAL_REASONS: Final = frozenset({R_MACHINE, R_VANTAGE_LAN, R_PRIVATE_FROM_PUBLIC, R_PRIVATE_FROM_HTTPS, R_PORT,
                                    R_TUNNEL})

#: RFC 1918, the carrier-grade NAT shared space (RFC 6598: inside a mobile ISP; a public site's
#: redirect into it was fetched — break test, stop 19) and IPv6 unique local addresses (RFC 4193):
#: :data:`probe.addresses.PRIVATE_SPACE`, the one list of it.
PRIVATE_RANGES: Final[tuple[IPNetwork, ...]] = tuple(ipaddress.ip_network(r) for r, _, _ in PRIVATE_SPACE)
#: Ports a redirect may always lead to (besides the input's own).
DEFAULT_PORTS: Final = frozenset({80, 443})


def is_private(ip: str | IPAddress) -> bool:
    """In RFC 1918 or ULA space (an IPv6 address carrying an IPv4 one is judged by it; a local-use NAT64
    address by each IPv4 address it may be translated to, :func:`probe.addresses.nat64_local_ipv4`)."""
    addr = parse_ip(ip) if isinstance(ip, str) else ip
    if addr is None:
        return False
    return any(a in n for a in (embedded_ipv4(addr) or addr, *nat64_local_ipv4(addr))
               for n in PRIVATE_RANGES if n.version == a.version)


@dataclass(frozen=True, kw_only=True)
class LocalNetwork:
    """The vantage's own network: what the probe never connects to.

    Attributes:
        subnets: the interface subnets (on-link routes and interface prefixes).
        addresses: the machine's own addresses.
        gateways: default (and other) gateways of the routing tables.
    """

    subnets: tuple[IPNetwork, ...] = ()
    addresses: tuple[IPAddress, ...] = ()
    gateways: tuple[IPAddress, ...] = ()

    def why(self, ip: str | IPAddress) -> str | None:
        """Which part of the local network ``ip`` is in ("gateway 192.168.1.1", "interface
        subnet 192.168.1.0/24", "own address ..."); None when it is not in it."""
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        if addr is None:
            return None
        cands = [addr, *([e] if (e := embedded_ipv4(addr)) is not None else []), *tunnelled_ipv4(addr),
                 *nat64_local_ipv4(addr)]
        for a in cands:
            if a in self.gateways:
                return f"gateway {a}"
            if a in self.addresses:
                return f"own address {a}"
            for n in self.subnets:
                if n.version == a.version and a in n:
                    return f"interface subnet {n}"
        return None

    def merged(self, extra: Iterable[str]) -> LocalNetwork:
        """This network plus ``extra`` CIDR ranges (``localnet.extra``)."""
        nets = tuple(ipaddress.ip_network(r, strict=False) for r in extra)
        return LocalNetwork(subnets=self.subnets + nets, addresses=self.addresses, gateways=self.gateways)

    @classmethod
    def from_os(cls, proc: Path = Path("/proc")) -> LocalNetwork:
        """Read the interface subnets, own addresses and gateways from the OS (Linux).

        Sources: ``/proc/net/route`` (IPv4 on-link routes and gateways),
        ``/proc/net/ipv6_route`` (the same for IPv6), ``/proc/net/if_inet6`` (IPv6
        addresses with their prefix), and every IPv4 address with its prefix of every
        interface — secondary ones too (``ip addr add 8.8.4.4/32 dev lo`` beside
        127.0.0.1) — by a netlink ``RTM_GETADDR`` dump (:func:`_addrs_v4`; without netlink:
        ``ioctl`` and ``/proc/net/fib_trie``'s local routes). Interface
        addresses, not the local routing table: a namespace with an AnyIP route
        (``ip route add local 198.18.0.0/15 dev lo``: the lab's ``inet``, where the helper
        runs beside every site) would otherwise find every site its own. A default route
        (``/0``) is never taken as a subnet. What cannot be read is logged and left out.
        """
        subnets: dict[IPNetwork, None] = {}
        addrs: dict[IPAddress, None] = {}
        gws: dict[IPAddress, None] = {}
        routes: list[tuple[IPNetwork, IPAddress | None]] = [*_routes_v4(proc / "net" / "route"),
                                                            *_routes_v6(proc / "net" / "ipv6_route")]
        for net, gw in routes:
            if gw is not None:
                gws.setdefault(gw, None)
            elif net.prefixlen > 0 and not net.is_multicast:
                subnets.setdefault(net, None)
        own: list[tuple[IPAddress, IPNetwork]] = [*_addrs_v6(proc / "net" / "if_inet6"),
                                                  *_addrs_v4(proc / "net" / "fib_trie")]
        for a, net in own:
            addrs.setdefault(a, None)
            if net.prefixlen > 0:
                subnets.setdefault(net, None)
        return cls(subnets=tuple(subnets), addresses=tuple(addrs), gateways=tuple(gws))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError as exc:
        log.info("local network: cannot read %s (%s)", path, exc.strerror or exc)
        return []


def _routes_v4(path: Path) -> Iterable[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]]:
    """(destination network, gateway or None) of ``/proc/net/route`` (little-endian hex)."""
    for line in _read_lines(path)[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(struct.pack("<I", int(f[1], 16)))
            gw = ipaddress.IPv4Address(struct.pack("<I", int(f[2], 16)))
            mask = ipaddress.IPv4Address(struct.pack("<I", int(f[7], 16)))
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except (ValueError, struct.error):
            continue
        yield net, (gw if int(gw) else None)


def _routes_v6(path: Path) -> Iterable[tuple[ipaddress.IPv6Network, ipaddress.IPv6Address | None]]:
    """(destination, gateway or None) of ``/proc/net/ipv6_route`` (32 hex digits each)."""
    for line in _read_lines(path):
        f = line.split()
        if len(f) < 10:
            continue
        try:
            dest = ipaddress.IPv6Address(bytes.fromhex(f[0]))
            net = ipaddress.IPv6Network(f"{dest}/{int(f[1], 16)}", strict=False)
            gw = ipaddress.IPv6Address(bytes.fromhex(f[4]))
        except ValueError:
            continue
        if f[9] == "lo" and not int(gw):
            continue  # the local table: own addresses (taken from if_inet6) and ::1
        yield net, (gw if int(gw) else None)


def _addrs_v6(path: Path) -> Iterable[tuple[ipaddress.IPv6Address, ipaddress.IPv6Network]]:
    for line in _read_lines(path):
        f = line.split()
        if len(f) < 6:
            continue
        try:
            a = ipaddress.IPv6Address(bytes.fromhex(f[0]))
            yield a, ipaddress.IPv6Network(f"{a}/{int(f[2], 16)}", strict=False)
        except ValueError:
            continue


_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B

# netlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NLMSG_HDR: Final = struct.Struct("=IHHII")    # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
_IFADDRMSG: Final = struct.Struct("=BBBBI")    # ifa_family, ifa_prefixlen, ifa_flags, ifa_scope, ifa_index
_RTATTR: Final = struct.Struct("=HH")          # rta_len, rta_type
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
#: Bounds of one dump: a Pi has a handful of addresses; a VPS with a /24 routed to lo as
#: addresses has 256 (~60 bytes each). Beyond the cap the rest is logged and left out.
_NETLINK_MAX_BYTES: Final = 4 << 20
_NETLINK_TIMEOUT_S: Final = 2.0


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_ifaddr_dump(data: bytes) -> tuple[list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]], bool]:
    """The IPv4 (address, interface prefix) pairs of a netlink ``RTM_NEWADDR`` dump, and
    whether the dump's end (``NLMSG_DONE``) was seen. ``IFA_LOCAL`` is the address itself
    (on a point-to-point link ``IFA_ADDRESS`` is the peer); without it, ``IFA_ADDRESS``.
    Malformed messages end the parse (what was read before stays).

    Raises:
        OSError: the kernel answered the request with an error (``NLMSG_ERROR``).
    """
    out: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]] = []
    off = 0
    while off + _NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, off)
        if length < _NLMSG_HDR.size or off + length > len(data):
            return out, False
        body = data[off + _NLMSG_HDR.size:off + length]
        off += _align4(length)
        if kind == _NLMSG_DONE:
            return out, True
        if kind == _NLMSG_ERROR:
            err = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            if err:
                raise OSError(err, f"netlink RTM_GETADDR: {os.strerror(err)}")
            continue
        if kind != _RTM_NEWADDR or len(body) < _IFADDRMSG.size:
            continue
        family, prefixlen, _f, _scope, _index = _IFADDRMSG.unpack_from(body)
        if family != socket.AF_INET:
            continue
        attrs: dict[int, bytes] = {}
        a = _IFADDRMSG.size
        while a + _RTATTR.size <= len(body):
            rlen, rtype = _RTATTR.unpack_from(body, a)
            if rlen < _RTATTR.size or a + rlen > len(body):
                break
            attrs[rtype] = body[a + _RTATTR.size:a + rlen]
            a += _align4(rlen)
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if raw is None or len(raw) != 4 or prefixlen > 32:
            continue
        ip = ipaddress.IPv4Address(raw)
        out.append((ip, ipaddress.IPv4Network(f"{ip}/{prefixlen}", strict=False)))
    return out, False


def _netlink_addrs_v4() -> list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]]:
    """Every IPv4 interface address by a netlink ``RTM_GETADDR`` dump (bounded: size, time).

    Raises:
        OSError: no netlink socket (not Linux, a sandbox) or the kernel refused the dump.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(_NETLINK_TIMEOUT_S)
        sock.bind((0, 0))
        body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        sock.sendto(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                    + body, (0, 0))
        out: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]] = []
        total = 0
        while total < _NETLINK_MAX_BYTES:
            chunk = sock.recv(65536)  # one datagram: whole netlink messages
            if not chunk:
                break
            total += len(chunk)
            got, done = parse_ifaddr_dump(chunk)
            out += got
            if done:
                return out
        log.info("local network: the netlink address dump was cut at %d bytes (%d addresses read)",
                 total, len(out))
        return out


#: ``/proc/net/fib_trie`` is ~100 bytes a route: a Pi's is a few KB; a full BGP table would be
#: ~100 MB, of which the start is read and the rest left out (logged).
_FIB_TRIE_MAX_BYTES: Final = 4 << 20


def parse_fib_trie_local(text: str) -> list[ipaddress.IPv4Address]:
    """The addresses of ``/proc/net/fib_trie`` that carry a ``/32 host LOCAL`` route: every IPv4
    address of every interface (the kernel adds that route for each, secondary ones included),
    in order, once. A wider local route (an AnyIP ``ip route add local 198.18.0.0/15 dev lo``,
    ``/15 host LOCAL``) is not an address and is left out; a ``/32`` AnyIP route looks like one
    and is taken (packets to it are delivered here, so it is this machine's all the same)."""
    out: dict[ipaddress.IPv4Address, None] = {}
    leaf: str | None = None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] in ("|--", "+--"):
            leaf = f[1] if f[0] == "|--" else None
        elif leaf is not None and f[:3] == ["/32", "host", "LOCAL"]:
            try:
                out.setdefault(ipaddress.IPv4Address(leaf), None)
            except ValueError:
                continue
    return list(out)


def _fib_trie_local(path: Path) -> list[ipaddress.IPv4Address]:
    try:
        with path.open("rb") as fh:
            data = fh.read(_FIB_TRIE_MAX_BYTES + 1)
    except OSError as exc:
        log.info("local network: cannot read %s (%s)", path, exc.strerror or exc)
        return []
    if len(data) > _FIB_TRIE_MAX_BYTES:
        log.info("local network: %s cut at %d bytes", path, _FIB_TRIE_MAX_BYTES)
        data = data[:data.rfind(b"\n", 0, _FIB_TRIE_MAX_BYTES) + 1]
    return parse_fib_trie_local(data.decode("ascii", errors="replace"))


def _addrs_v4(fib_trie: Path) -> Iterable[tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]]:
    """IPv4 address and prefix of every interface, secondary addresses included (netlink).

    Without netlink (``OSError``: a sandbox, a seccomp filter), the ``ioctl`` gives the first
    address of each interface with its netmask (``SIOCGIFADDR``/``SIOCGIFNETMASK``) and the
    kernel's local routes (``fib_trie``: :func:`parse_fib_trie_local`) every address, secondary
    ones too, as ``/32`` (their subnets come from ``/proc/net/route``'s on-link routes). No ``ip``
    command: a Pi image may lack iproute2, and the probe runs no subprocess to learn its own addresses.
    """
    try:
        yield from _netlink_addrs_v4()
        return
    except OSError as exc:
        log.info("local network: netlink address dump failed (%s); IPv4 addresses from ioctl and %s",
                 exc, fib_trie)
    seen: set[ipaddress.IPv4Address] = set()
    for a, net in _ioctl_addrs_v4():
        seen.add(a)
        yield a, net
    for a in _fib_trie_local(fib_trie):
        if a not in seen:
            yield a, ipaddress.IPv4Network(a)


def _ioctl_addrs_v4() -> Iterable[tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]]:
    """The first IPv4 address of each interface, with its netmask (``SIOCGIFADDR``/``SIOCGIFNETMASK``)."""
    try:
        names = [n for _, n in socket.if_nameindex()]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        log.info("local network: cannot list interfaces (%s)", exc)
        return
    with sock:
        for name in names:
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, req)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, req)[20:24])
            except OSError:
                continue  # no IPv4 address on this interface
            a = ipaddress.IPv4Address(addr)
            yield a, ipaddress.IPv4Network(f"{a}/{mask}", strict=False)


@dataclass(frozen=True, kw_only=True)
class AddressPolicy:
    """Where the probe may connect, given the origin that pointed there.

    Attributes:
        local: the vantage's own network (never).
        extra_ports: ports a redirect may use besides the input's, 80 and 443.
    """

    local: LocalNetwork = field(default_factory=LocalNetwork)
    extra_ports: frozenset[int] = frozenset()

    def refuse_address(self, ip: str, *, origin_private: bool = False, origin_verified_https: bool = False
                       ) -> str | None:
        """The rule id refusing a connection to ``ip``, or None when it is allowed.

        Args:
            ip: the address (IPv6 zone ids allowed).
            origin_private: the origin (the input's literal host, or the hop that
                redirected) was itself in private space.
            origin_verified_https: the origin is a verified-HTTPS hop.
        """
        tunnel = non_global_tunnel(ip)
        if tunnel is not None:  # before rule 1, which refuses it too, to name what it carries
            if not not_local_address(str(tunnel)):
                return R_MACHINE
            return R_VANTAGE_LAN if self.local.why(tunnel) is not None else R_TUNNEL
        if not not_local_address(ip):
            return R_MACHINE
        if self.local.why(ip) is not None:
            return R_VANTAGE_LAN
        if is_private(ip):
            if origin_verified_https:
                return R_PRIVATE_FROM_HTTPS
            if not origin_private:
                return R_PRIVATE_FROM_PUBLIC
        return None

    def port_allowed(self, port: int, input_port: int) -> bool:
        return port == input_port or port in DEFAULT_PORTS or port in self.extra_ports

    def allow(self, ip: str) -> bool:
        """The plain predicate for callers without an origin: only rules 1 and 2."""
        return not_local_address(ip) and self.local.why(ip) is None


def describe(ip: str, rule: str, local: LocalNetwork | None = None) -> str:
    """A short human reason for ``x_skipped_addresses`` (address, not content)."""
    text = {
        R_MACHINE: "loopback/link-local/multicast/unspecified answer not followed",
        R_VANTAGE_LAN: "points into the vantage's own network: not connected",
        R_PRIVATE_FROM_PUBLIC: "private address (RFC 1918/ULA) for a public name: recorded, not connected",
        R_PRIVATE_FROM_HTTPS: "private address from a verified-HTTPS origin: not connected",
        R_PORT: "port not allowed",
        R_TUNNEL: "6to4 or Teredo address of a non-global IPv4 address: not connected",
    }[rule]
    where = local.why(ip) if local is not None and rule == R_VANTAGE_LAN else None
    if rule == R_TUNNEL:
        where = str(non_global_tunnel(ip))
    return f"{text} ({where})" if where else text
