"""The helper's SSRF guard: which addresses, ports and URLs it will touch.

The control helper fetches URLs that a remote client names, so it is an SSRF target
by construction (OWASP, *Server-Side Request Forgery Prevention Cheat Sheet*). The
defence here is an allow-by-default policy for *globally reachable unicast* addresses
only, checked at every step where an address is chosen:

1. :meth:`AddressPolicy.check_url` on the request URL, before anything else (no DNS, no
   connection): scheme, userinfo, port, and an IP-literal host in every form a browser
   accepts (``http://2130706433/``, ``http://0177.0.0.1/``, ``http://0x7f.1/``,
   ``http://127.1/``, percent-encoded or full-width digits, bracketed IPv6).
2. :meth:`AddressPolicy.allows` / ``allowed_ports`` inside
   :func:`probe.control.measure_control`: the helper's own DNS answers, the probe's
   endpoints, and every redirect target (``http_get(allow_address=...)``).
3. :class:`PolicyConnectTo` at the socket: every dial of every primitive (TCP, TLS,
   HTTP) asks ``connect_to.resolve(ip, port)`` for the logical endpoint; the guard
   sends any endpoint the policy refuses to a closed loopback port of the helper
   (connection refused, no packet leaves the machine) and records it. This is the
   only check that sees the *port* of a redirect target.

Refused ranges are the IANA special-purpose address registries (RFC 6890 and its
updates):

* IPv4: https://www.iana.org/assignments/iana-ipv4-special-registry/
* IPv6: https://www.iana.org/assignments/iana-ipv6-special-registry/

IPv6 is additionally limited to global unicast 2000::/3 (IANA IPv6 address space
registry, RFC 4291 §2.4), which refuses the reserved, site-local and SRv6 blocks too.
Addresses that embed an IPv4 address are judged by it: IPv4-mapped ``::ffff:a.b.c.d``
(RFC 4291 §2.5.5.2) and the NAT64 well-known prefix ``64:ff9b::/96`` (RFC 6052, so a
helper on an IPv6-only VPS with DNS64 still works). The local-use NAT64 prefix
``64:ff9b:1::/48`` (RFC 8215), 6to4 ``2002::/16`` (RFC 3056, deprecated by RFC 7526)
and Teredo (inside ``2001::/23``) are refused outright, whatever they embed.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

from probe.addresses import (
    PRIVATE_SPACE,
    ConnectTo,
    IPAddress,
    IPNetwork,
    by_address,
    format_endpoint,
    parse_endpoint,
    parse_ip,
)
from probe.localnet import LocalNetwork
from probe.names import HostError, ends_in_number, uts46_map  # ends_in_number: WHATWG, parsed as IPv4

log = logging.getLogger("kzprobe.helper")

def _in_order(*entries: tuple[str, str, str]) -> tuple[tuple[str, str, str], ...]:
    """(range, what, source) entries in address order (private space comes from
    :data:`probe.addresses.PRIVATE_SPACE`, the one list of it)."""
    order = {r: i for i, r in enumerate(by_address(r for r, _, _ in entries))}
    return tuple(sorted(entries, key=lambda e: order[e[0]]))


#: IANA IPv4 Special-Purpose Address Registry, refused as whole blocks: (range, what, source).
#: The two globally reachable /32s inside 192.0.0.0/24 (PCP and TURN anycast) go with
#: their block; AS112 (192.31.196.0/24, 192.175.48.0/24) and AMT (192.52.193.0/24) are
#: globally reachable and allowed. 192.88.99.0/24 (6to4 relay anycast) is deprecated.
IPV4_SPECIAL: Final[tuple[tuple[str, str, str], ...]] = _in_order(
    *(e for e in PRIVATE_SPACE if ":" not in e[0]),
    ("0.0.0.0/8", "this network", "RFC 791 §3.2"),
    ("127.0.0.0/8", "loopback", "RFC 1122 §3.2.1.3"),
    ("169.254.0.0/16", "link local, cloud metadata", "RFC 3927"),
    ("192.0.0.0/24", "IETF protocol assignments", "RFC 6890 §2.1"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)", "RFC 7526"),
    ("198.18.0.0/15", "benchmarking", "RFC 2544"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"),
    ("224.0.0.0/4", "multicast", "RFC 5771"),
    ("240.0.0.0/4", "reserved", "RFC 1112 §4"),
    ("255.255.255.255/32", "limited broadcast", "RFC 8190, RFC 919"),
)

#: IANA IPv6 Special-Purpose Address Registry, refused as whole blocks: (range, what,
#: source). ``2001::/23`` goes whole, with the few globally reachable entries inside it.
#: ``::ffff:0:0/96`` and ``64:ff9b::/96`` are not here: they are judged by the IPv4
#: address they embed. Everything outside 2000::/3 is refused as well.
IPV6_SPECIAL: Final[tuple[tuple[str, str, str], ...]] = _in_order(
    *(e for e in PRIVATE_SPACE if ":" in e[0]),
    ("::/128", "unspecified", "RFC 4291"),
    ("::1/128", "loopback", "RFC 4291"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", "RFC 8215"),
    ("100::/64", "discard-only", "RFC 6666"),
    ("2001::/23", "IETF protocol assignments (Teredo, ORCHID, benchmarking ...)", "RFC 2928"),
    ("2001:db8::/32", "documentation", "RFC 3849"),
    ("2002::/16", "6to4", "RFC 3056"),
    ("3fff::/20", "documentation", "RFC 9637"),
    ("fe80::/10", "link-local unicast", "RFC 4291"),
    ("ff00::/8", "multicast", "RFC 4291"),
)

_V4_NETS: Final = tuple((ipaddress.IPv4Network(r), what) for r, what, _ in IPV4_SPECIAL)
_V6_NETS: Final = tuple((ipaddress.IPv6Network(r), what) for r, what, _ in IPV6_SPECIAL)
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_NAT64_WKP: Final = ipaddress.IPv6Network("64:ff9b::/96")

DEFAULT_PORTS: Final[frozenset[int]] = frozenset({80, 443})

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_BAD_CHAR_RE = re.compile(r"[\x00-\x20\x7f]")
_SPECIAL_NAMES: Final = ("localhost",)  # RFC 6761 §6.3: always the loopback


@dataclass(frozen=True, kw_only=True)
class AddressPolicy:
    """Which addresses and ports the helper may contact.

    Attributes:
        allow_private: CIDR ranges allowed *despite* being special-purpose (the lab's
            ``198.18.0.0/15``, the tests' ``192.0.2.0/24``); empty (the default) in
            production. An IPv4-mapped or NAT64 address is allowed when its embedded
            IPv4 address is in one of them.
        ports: TCP ports that may be contacted (default 80 and 443).
        local: the helper's own network (its interface subnets, addresses and gateways:
            :meth:`probe.localnet.LocalNetwork.from_os` when served), refused even inside
            ``allow_private`` — a VPS's neighbours and its provider's gateway are not
            measurement targets (issue 11). Empty by default (tests).

    Raises:
        ValueError: on construction, naming the bad CIDR range or port.
    """

    allow_private: tuple[str, ...] = ()
    ports: frozenset[int] = DEFAULT_PORTS
    local: LocalNetwork = field(default_factory=LocalNetwork)
    _allow_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets = []
        for r in self.allow_private:
            try:
                nets.append(ipaddress.ip_network(r, strict=False))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"allow_private: {r!r} is not an IP range in CIDR form ({exc})") from None
        object.__setattr__(self, "_allow_nets", tuple(nets))
        object.__setattr__(self, "ports", frozenset(self.ports))
        bad = sorted(p for p in self.ports if not isinstance(p, int) or not 0 < p < 65536)
        if bad or not self.ports:
            raise ValueError(f"ports: need at least one port in 1..65535, got {sorted(self.ports)!r}")

    # ------------------------------------------------------------------ addresses

    def refusal(self, ip: str) -> str | None:
        """Why ``ip`` is refused, or None when it is allowed.

        ``ip``: an IPv4/IPv6 literal (brackets and an IPv6 zone id are tolerated).
        The reason reads like ``"127.0.0.1: loopback (127.0.0.0/8)"`` or
        ``"::ffff:7f00:1: embeds 127.0.0.1, loopback (127.0.0.0/8)"``. Anything that is
        not an IP literal (a name, ``"2130706433"``) is refused: "... is not an IP address".
        """
        addr = parse_ip(ip) if isinstance(ip, str) else None
        if addr is None:
            return f"{ip!r} is not an IP address"
        why = self._why(addr)
        return None if why is None else f"{addr}: {why}"

    def allows(self, ip: str) -> bool:
        """True when the helper may connect to ``ip`` (see :meth:`refusal`); False for a non-IP string."""
        return self.refusal(ip) is None

    def allows_endpoint(self, ip: str, port: int) -> bool:
        """True when ``port`` is in :attr:`ports` and :meth:`allows` accepts ``ip``."""
        return port in self.ports and self.allows(ip)

    def _allowed_private(self, addr: IPAddress) -> bool:
        return any(addr in n for n in self._allow_nets if n.version == addr.version)

    def _why(self, addr: IPAddress) -> str | None:
        """The special-purpose block ``addr`` is in (``"loopback (127.0.0.0/8)"``), or None."""
        own = self.local.why(addr)
        if own is not None:
            return f"the helper's own network ({own})"
        if isinstance(addr, ipaddress.IPv6Address):
            embedded = addr.ipv4_mapped
            if embedded is None and addr in _NAT64_WKP and not self._allowed_private(addr):
                embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
            if embedded is not None:
                why = self._why(embedded)
                return None if why is None else f"embeds {embedded}, {why}"
        if self._allowed_private(addr):
            return None
        if isinstance(addr, ipaddress.IPv4Address):
            return next((f"{what} ({net})" for net, what in _V4_NETS if addr in net), None)
        why = next((f"{what} ({net})" for net, what in _V6_NETS if addr in net), None)
        if why is None and addr not in _GLOBAL_UNICAST:
            why = "not global unicast (outside 2000::/3)"
        return why

    # ------------------------------------------------------------------ URLs

    def check_url(self, url: str) -> str | None:
        """Why the helper must not fetch ``url`` at all, or None when it may try.

        The reason of :meth:`url_problem`, whichever its kind. None does not mean the
        URL is well-formed: parse it (:func:`probe.targets.normalise_url`) before use.
        """
        problem = self.url_problem(url)
        return None if problem is None else problem.reason

    def url_problem(self, url: str) -> UrlProblem | None:
        """What is wrong with ``url`` for the helper, before any DNS or connection; None = nothing.

        ``kind="refused"`` (the policy forbids it; the helper answers 403): a scheme
        other than http/https; userinfo (``user@``) in the authority; a port not in
        :attr:`ports` (the scheme's default port counts); ``localhost`` and
        ``*.localhost`` (RFC 6761 §6.3); an IP-literal host whose address :meth:`allows`
        refuses. IPv4 hosts are read the way browsers read them (WHATWG URL host
        parser: percent-decoding, then UTS #46 mapping, then a host whose last label
        is a number is IPv4 in ``inet_aton`` syntax: ``2130706433``, ``0177.0.0.1``,
        ``0x7f.1``, ``127.1``, ``%31%32%37.0.0.1``, full-width digits).

        ``kind="malformed"`` (not a URL the helper can read; 400): not a string;
        whitespace or control characters; no scheme; no ``//`` authority; a
        backslash in the authority (browsers end the host there, Python's parsers do
        not); a non-numeric port; bad percent-encoding in the host; a bracketed host
        that is not an IPv6 address; a host ending in a number that is not IPv4
        (``1.2.3.4.5``).

        Host names are not resolved here; their addresses are checked after DNS (by
        the ``allow_address`` passed to :func:`probe.control.measure_control`).
        """
        if not isinstance(url, str):
            return UrlProblem("malformed", "the URL is not a string")
        text = url.strip()
        if _BAD_CHAR_RE.search(text) or any(c.isspace() for c in text):
            return UrlProblem("malformed", "the URL contains whitespace or control characters")
        m = _SCHEME_RE.match(text)
        if m is None:
            return UrlProblem("malformed", "the URL has no scheme")
        scheme = m.group(1).lower()
        if scheme not in ("http", "https"):
            return UrlProblem("refused", f"scheme {m.group(1)!r} is not allowed (http and https only)")
        rest = text[m.end():]
        if not rest.startswith("//"):
            return UrlProblem("malformed", "the URL has no '//' authority")
        rest = rest[2:]
        end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
        authority = rest[:end]
        if "@" in authority:
            return UrlProblem("refused", "userinfo (user@) in the URL is not allowed")
        if "\\" in authority:
            return UrlProblem("malformed", "backslash in the URL authority")
        host, port_text = _split_host_port(authority)
        if port_text:
            if not port_text.isascii() or not port_text.isdigit():
                return UrlProblem("malformed", f"bad port {port_text!r}")
            port = int(port_text)
        else:
            port = 443 if scheme == "https" else 80
        if port not in self.ports:
            return UrlProblem("refused", f"port {port} is not allowed "
                                         f"(allowed: {', '.join(map(str, sorted(self.ports)))})")
        return self._host_problem(host)

    def _host_problem(self, host: str) -> UrlProblem | None:
        try:
            decoded = urllib.parse.unquote(host, errors="strict") if "%" in host else host
        except UnicodeDecodeError:
            return UrlProblem("malformed", f"bad percent-encoding in host {host!r}")
        if decoded.startswith("["):
            inner = decoded[1:-1].split("%", 1)[0]  # without an RFC 6874 zone id
            try:
                if not decoded.endswith("]"):
                    raise ValueError("unterminated")
                addr: IPAddress = ipaddress.IPv6Address(inner)
            except ValueError:
                return UrlProblem("malformed", f"bad IPv6 literal {host!r}")
            return _host_refusal(host, addr, self._why(addr))
        try:
            mapped = uts46_map(decoded)
        except HostError:
            return None  # not a host name browsers accept either; normalise_url rejects it
        name = mapped.lower().removesuffix(".")
        if not name:
            return None
        if name in _SPECIAL_NAMES or any(name.endswith("." + s) for s in _SPECIAL_NAMES):
            return UrlProblem("refused", f"host {host!r} is a special-use name (RFC 6761)")
        if ends_in_number(name):
            v4 = parse_ipv4_shorthand(name)
            if v4 is None:
                return UrlProblem("malformed", f"host {host!r} ends in a number but is not an IPv4 address")
            return _host_refusal(host, v4, self._why(v4))
        return None


class UrlProblem(NamedTuple):
    """Why a URL is not fetched: ``kind`` "refused" (policy, 403) or "malformed" (400), and a reason."""

    kind: Literal["refused", "malformed"]
    reason: str


def _split_host_port(authority: str) -> tuple[str, str]:
    """``("host", "port")`` of an authority without userinfo; port "" when absent."""
    if authority.startswith("["):
        close = authority.find("]")
        if close != -1:
            after = authority[close + 1:]
            return authority[: close + 1], after.removeprefix(":")
        return authority, ""
    host, sep, port = authority.rpartition(":")
    return (host, port) if sep else (authority, "")


def _host_refusal(host: str, addr: IPAddress, why: str | None) -> UrlProblem | None:
    if why is None:
        return None
    if host.strip("[]") == str(addr):
        return UrlProblem("refused", f"host {addr}: {why}")
    return UrlProblem("refused", f"host {host!r} means {addr}: {why}")


def parse_ipv4_shorthand(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any form ``inet_aton(3)`` (and browsers) accept, or None.

    ``"2130706433"``, ``"0177.0.0.1"``, ``"0x7f.1"``, ``"127.1"`` all give 127.0.0.1:
    one to four parts, each decimal, octal (leading 0) or hex (``0x``); the last part
    fills the remaining bytes. Only ASCII digits and letters and dots are considered
    (``inet_aton`` would accept trailing garbage after whitespace).
    """
    if not text or not text.isascii() or not re.fullmatch(r"[0-9A-Za-z.]+", text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


@dataclass(frozen=True, kw_only=True)
class PolicyConnectTo(ConnectTo):
    """A :class:`~probe.addresses.ConnectTo` that enforces an :class:`AddressPolicy` at the socket.

    Every measurement primitive dials ``connect_to.resolve(ip, port)`` for the logical
    endpoint it means, so this is the last check before any connection. An endpoint
    the policy refuses is dialled at ``sink`` instead (a loopback port bound but not
    listening: the connect is refused at once and nothing leaves the machine) and
    appended to :attr:`refused`. Allowed endpoints go through ``inner`` (the
    production empty map, or a test/lab map).

    Attributes:
        inner: the real endpoint map.
        policy: the address and port policy.
        sink: ``"127.0.0.1:PORT"`` of a closed loopback port.
        refused: ``"ip:port"`` endpoints refused so far, in order, no duplicates (one
            guard per request, so this is that request's list).
    """

    inner: ConnectTo = field(default_factory=ConnectTo)
    policy: AddressPolicy = field(default_factory=AddressPolicy)
    sink: str
    refused: list[str] = field(default_factory=list, compare=False)

    def resolve(self, ip: str, port: int) -> tuple[str, int]:
        if self.policy.allows_endpoint(ip, port):
            return self.inner.resolve(ip, port)
        ep = format_endpoint(ip, port)
        if ep not in self.refused:
            self.refused.append(ep)
        log.warning("address policy: refused a dial to %s", ep)
        return parse_endpoint(self.sink)


__all__ = ["DEFAULT_PORTS", "IPV4_SPECIAL", "IPV6_SPECIAL", "AddressPolicy", "PolicyConnectTo", "UrlProblem",
           "parse_ipv4_shorthand"]
