"""Lab topology: network namespaces joined by veth pairs, routes and nftables rules.

The default world (a scenario without ``[[isp]]``/``[[vantage]]``) is three namespaces::

    client ns                 isp ns                              internet ns
    10.77.0.2 ──veth── 10.77.0.1 (router, ISP resolver   10.78.0.1 ──veth── 10.78.0.2
    default via .1             10.76.0.53, censor; nft:           local 198.18.0.0/15 dev lo
                               IP actions, outage, redirect       (every lab address is local:
                               to the censor)                      one process binds them all;
                               198.18.0.0/15 via 10.78.0.2         a down site's address has no
                                                                   listener: connection refused)

A scenario may declare several ISPs and vantages (:mod:`probe.lab.scenario`). ISP ``j`` is a
chain of ``hops`` router namespaces (each forwards, so each decrements the TTL and answers an
expiring packet with ICMP time-exceeded); router ``censor_hop`` is the censor: the ISP
resolver, nftables (IP and per address:port SYN actions, the censor-proxy redirect),
the censor proxy and the packet engine (:mod:`probe.lab.engine`, fed through a TUN device
by policy routing). Its namespace is named after the ISP (``kzl-<id>-isp``), the other
routers ``<isp>-r<k>``. Every vantage is a client namespace named after it, linked to
router 1 of its ISP. Every ISP's last router links to the one internet namespace.

Address plan (IPv4; IPv6 in parallel where the scenario uses it):

* vantage ``i``: ``10.77.i.2/24`` (gateway ``.1``), ``fd00:77:0:i::2/64`` (gateway ``::1``);
* ISP ``j``, router ``k`` ↔ ``k+1``: ``10.(80+j).k.1/30`` ↔ ``.2``, ``fd00:80:j:k::1/64`` ↔ ``::2``;
* ISP ``j`` ↔ internet: ``10.78.j.1/30`` ↔ ``.2``, ``fd00:78:0:j::1/64`` ↔ ``::2``;
* ISP ``j``'s resolver: ``10.76.j.53``, ``fd00:76:0:j::53`` (on the censor router);
* sites and lab infrastructure: ``198.18.0.0/15`` (RFC 2544) and ``2001:db8:4b5a::/48``
  (RFC 3849), plus the NAT64 prefixes of the ISPs' DNS64 resolvers, all local in the
  internet namespace. The probe is told they are public through ``bogons.public``.

Names carry a per-run id: namespaces ``kzl-<id>-<role>``, veths ``kzl<id><nn>a|b`` so two
labs (or a crashed one) never collide. Each lab writes a state file
``/run/kzprobe-lab/<id>.json`` (namespaces, child pids); :func:`down_all` removes every lab
namespace, veth and process found by that file or by the name prefix. Needs root
(CAP_NET_ADMIN), ``ip`` and ``nft``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probe.errors import KzprobeError
from probe.lab.scenario import ISP, Scenario, Site, nat64_address

log = logging.getLogger("kzprobe.lab")

#: Name prefix of every lab namespace ("kzl-<id>-…") and veth ("kzl<id>…").
PREFIX = "kzl"
#: Directory of the per-lab state files.
STATE_DIR = Path("/run/kzprobe-lab")

CLIENT_IP, ISP_CLIENT_IP = "10.77.0.2", "10.77.0.1"
ISP_UPLINK_IP, INET_IP = "10.78.0.1", "10.78.0.2"
LAB_NET = "198.18.0.0/15"
LAB_NET6 = "2001:db8:4b5a::/48"
#: Lab infrastructure in the "internet" namespace.
AUTH_DNS_IP, AUTH_DNS_IP6 = "198.18.0.53", "2001:db8:4b5a::53"
DOH_IP, DOH_IP6 = "198.18.0.54", "2001:db8:4b5a::54"
#: The helper's own resolver (DoH, on "its VPS"): not the probe's DoH control, so a censor
#: blocking (or a scenario taking down) the DoH control leaves the helper's DNS alone.
HELPER_DOH_IP = "198.18.0.55"
CANARY_IP, CANARY_IP6 = "198.18.0.10", "2001:db8:4b5a::10"
HELPER_IP, HELPER_IP6, HELPER_PORT = "198.18.0.80", "2001:db8:4b5a::80", 8443
#: The address a DNS ``inject`` action races in (nothing serves the site there).
INJECT_IP = "198.18.255.66"
#: The ISP's transparent SNI proxy a DNS ``sniproxy`` action points at: it reads the SNI (or the
#: HTTP Host) and splices the connection to the genuine site, bytes untouched.
SNIPROXY_IP = "198.18.255.80"
#: The ISP's transparent proxy a DNS ``relay`` action answers (:mod:`probe.lab.relay`): local on each
#: censor router, so the internet (the control) cannot reach it — a relay inside the ISP.
RELAY_IP = "198.19.255.80"
#: Where the censor's injected 302 (``http = "redirect_blockpage"``) points: the ISP's blockpage host.
CENSOR_BLOCKPAGE_IP = "198.19.255.2"
#: The second address of each GeoDNS site (``zone = "geo"``): FIRST_GEO_IP + its index among them.
FIRST_GEO_IP = ipaddress.IPv4Address("198.19.128.1")
#: The answer of a DNS ``bogon`` action (RFC 1918, as Kazakh resolvers were seen answering).
BOGON_IP = "10.10.34.34"
#: Ports of the censor in the isp namespace (nft redirects :443/:80 of censored addresses there).
CENSOR_TLS_PORT, CENSOR_HTTP_PORT = 10443, 10080
#: Port of the censor's on-path DNS injector (``[[isp]] dns_onpath``): nft redirects every
#: client query to a non-local address:53 there.
ONPATH_DNS_PORT = 10053
#: First site address; site i gets FIRST_SITE_IP + i (shared addresses reuse the other site's).
FIRST_SITE_IP = ipaddress.IPv4Address("198.18.1.1")
FIRST_SITE_IP6 = ipaddress.IPv6Address("2001:db8:4b5a:1::1")
#: The packet engine's TUN device in the censor namespace, and its routing table.
TUN_NAME, TUN_TABLE = "kzltun", 100


class LabError(KzprobeError, RuntimeError):
    """The lab could not be built (a command failed); the message carries the command and its stderr."""


def resolver_ip(isp_index: int) -> str:
    """The IPv4 address of ISP ``isp_index``'s resolver."""
    return f"10.76.{isp_index}.53"


def resolver_ip6(isp_index: int) -> str:
    """The IPv6 address of ISP ``isp_index``'s resolver."""
    return f"fd00:76:0:{isp_index:x}::53"


def vantage_ips(index: int) -> tuple[str, str, str, str]:
    """(client v4, gateway v4, client v6, gateway v6) of vantage ``index``."""
    return f"10.77.{index}.2", f"10.77.{index}.1", f"fd00:77:0:{index:x}::2", f"fd00:77:0:{index:x}::1"


def site_addresses(sites: Sequence[Site]) -> dict[str, str]:
    """A-label domain → IPv4 address of its web server. Sharing sites get the other's address.

    Raises:
        ValueError: more sites than the lab range holds (about 130,000).
    """
    out: dict[str, str] = {}
    n = 0
    for s in sites:
        if not s.share_ip_with:
            ip = FIRST_SITE_IP + n
            if ip not in ipaddress.ip_network(LAB_NET) or str(ip) in (INJECT_IP, SNIPROXY_IP) or ip >= FIRST_GEO_IP:
                raise ValueError(f"too many sites for {LAB_NET}: {len(sites)}")
            out[s.domain] = str(ip)
            n += 1
    for s in sites:
        if s.share_ip_with:
            out[s.domain] = out[s.share_ip_with]
    return out


def site_addresses6(sites: Sequence[Site], v4: dict[str, str]) -> dict[str, str]:
    """A-label → IPv6 address of the sites with an AAAA record (``stack`` dual or v6): the
    same index as the IPv4 address, in ``2001:db8:4b5a:1::/64`` (sharing sites share it too)."""
    return {s.domain: str(FIRST_SITE_IP6 + (int(ipaddress.IPv4Address(v4[s.domain])) - int(FIRST_SITE_IP)))
            for s in sites if s.has_v6}


@dataclass(frozen=True, kw_only=True)
class SiteAddresses:
    """Every address of every site: ``v4`` (A), ``v6`` (AAAA), ``nat64`` (synthesised, per prefix)."""

    v4: dict[str, str]
    v6: dict[str, str]
    nat64: dict[str, tuple[str, ...]]
    geo: dict[str, str] = field(default_factory=dict)

    def of(self, domain: str) -> tuple[str, ...]:
        """Every address ``domain``'s server answers on (its A only if it has one)."""
        return tuple(a for a in (self.v4.get(domain), self.v6.get(domain), self.geo.get(domain)) if a) \
            + self.nat64.get(domain, ())

    @classmethod
    def plan(cls, scenario: Scenario) -> SiteAddresses:
        v4all = site_addresses(scenario.sites)
        v4 = {s.domain: v4all[s.domain] for s in scenario.sites if s.has_v4}
        v6 = site_addresses6(scenario.sites, v4all)
        nat64 = {d: tuple(nat64_address(p, ip) for p in scenario.dns64_prefixes) for d, ip in v4.items()} \
            if scenario.dns64_prefixes else {}
        geo = {s.domain: str(FIRST_GEO_IP + i)
               for i, s in enumerate(s for s in scenario.sites if s.zone == "geo" and s.has_v4)}
        return cls(v4=v4, v6=v6, nat64=nat64, geo=geo)


def uses_ipv6(scenario: Scenario) -> bool:
    """True when anything in the scenario speaks IPv6 (else the lab is the IPv4-only world of old)."""
    return (any(v.ipv6 != "none" for v in scenario.vantages) or any(s.has_v6 for s in scenario.sites)
            or bool(scenario.dns64_prefixes))


def _set(name: str, elems: Iterable[str], typ: str) -> str:
    elems = sorted(set(elems))
    body = f" elements = {{ {', '.join(elems)} }}" if elems else ""
    return f"  set {name} {{ type {typ};{body} }}\n"


def isp_ruleset(scenario: Scenario, addresses: dict[str, str] | SiteAddresses, *, client_if: str | Sequence[str],
                uplink_if: str, isp: str | None = None) -> str:
    """The nftables ruleset of an ISP's censor router (``nft -f`` text), table ``inet kzlab``.

    * forward: ``outage`` drops everything between the client side and the uplink; addresses
      whose site has ``ip = blackhole`` are dropped, ``rst`` answered with a TCP reset,
      ``unreachable`` with ICMP host-unreachable (ICMPv6 address-unreachable). An address
      carries the IP action of any site on it (collateral blocking). Per address:port, a SYN
      is dropped, reset or answered ICMP-unreachable (``[[site.tcp]] syn``).
    * output: ``outage`` also cuts the ISP's own resolver and censor off the uplink.
    * prerouting nat: TCP to the address:port pairs of sites with a TLS, HTTP or throttle action
      of the censor proxy (and no IP action) is redirected to the censor's ports: a TLS action's
      :443 and the site's own port if it is an https site's, an HTTP action's :80 and the site's
      own port if it is a plain-HTTP site's (:func:`probe.lab.scenario.name_ports`).

    ``addresses``: a :class:`SiteAddresses`, or (the IPv4 world of old) A-label → IPv4.
    ``client_if``: the interface(s) towards the vantages; ``isp``: whose actions (default:
    the first ISP's).
    """
    if not isinstance(addresses, SiteAddresses):
        addresses = SiteAddresses(v4=dict(addresses), v6={}, nat64={})
    isp_name = isp or scenario.isps[0].name
    downs = [client_if] if isinstance(client_if, str) else list(client_if)
    ip_action: dict[str, str] = {}
    l7_tls: set[tuple[str, int]] = set()
    l7_http: set[tuple[str, int]] = set()
    syn: dict[str, set[str]] = {"drop": set(), "rst": set(), "unreachable": set()}
    for s in scenario.sites:
        a = s.actions(isp_name)
        for addr in addresses.of(s.domain):
            if a.ip != "ok":
                ip_action[addr] = a.ip
            tls_ports, http_ports = a.proxy_ports(s.scheme, s.port)
            l7_tls.update((addr, p) for p in tls_ports)
            l7_http.update((addr, p) for p in http_ports)
            for r in a.tcp:
                if r.syn != "ok":
                    syn[r.syn].add(f"{addr} . {r.port}")
    censor_tls = [f"{addr} . {p}" for addr, p in l7_tls if addr not in ip_action]
    censor_http = [f"{addr} . {p}" for addr, p in l7_http if addr not in ip_action]
    prefix_syn = [r for i in scenario.isps if i.name == isp_name for r in i.tcp if r.syn != "ok"]

    def v4(xs: Iterable[str]) -> list[str]:
        return [x for x in xs if ":" not in x.split(" . ")[0]]

    def v6(xs: Iterable[str]) -> list[str]:
        return [x for x in xs if ":" in x.split(" . ")[0]]

    rules = "table inet kzlab {\n"
    for name, action in (("blackhole", "blackhole"), ("rst", "rst"), ("unreach", "unreachable")):
        mine = [a for a, v in ip_action.items() if v == action]
        rules += _set(name, v4(mine), "ipv4_addr") + _set(f"{name}6", v6(mine), "ipv6_addr")
    for name, elems in (("censor_tls", censor_tls), ("censor_http", censor_http)):
        rules += _set(name, v4(elems), "ipv4_addr . inet_service")
        rules += _set(f"{name}6", v6(elems), "ipv6_addr . inet_service")
    for name, action in (("syn_drop", "drop"), ("syn_rst", "rst"), ("syn_unreach", "unreachable")):
        rules += _set(name, v4(syn[action]), "ipv4_addr . inet_service")
        rules += _set(f"{name}6", v6(syn[action]), "ipv6_addr . inet_service")
    rules += "  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
    if scenario.outage:
        for d in downs:
            rules += f'    iifname "{d}" oifname "{uplink_if}" drop\n'
            rules += f'    iifname "{uplink_if}" oifname "{d}" drop\n'
    rules += "    ip daddr @blackhole drop\n    ip6 daddr @blackhole6 drop\n"
    rules += "    ip daddr @rst meta l4proto tcp reject with tcp reset\n"
    rules += "    ip daddr @rst reject with icmp type port-unreachable\n"
    rules += "    ip6 daddr @rst6 meta l4proto tcp reject with tcp reset\n"
    rules += "    ip6 daddr @rst6 reject with icmpv6 type port-unreachable\n"
    rules += "    ip daddr @unreach reject with icmp type host-unreachable\n"
    rules += "    ip6 daddr @unreach6 reject with icmpv6 type addr-unreachable\n"
    syn_only = "tcp flags & (syn | ack) == syn"
    rules += f"    {syn_only} ip daddr . tcp dport @syn_drop drop\n"
    rules += f"    {syn_only} ip6 daddr . tcp dport @syn_drop6 drop\n"
    rules += f"    {syn_only} ip daddr . tcp dport @syn_rst reject with tcp reset\n"
    rules += f"    {syn_only} ip6 daddr . tcp dport @syn_rst6 reject with tcp reset\n"
    rules += f"    {syn_only} ip daddr . tcp dport @syn_unreach reject with icmp type host-unreachable\n"
    rules += f"    {syn_only} ip6 daddr . tcp dport @syn_unreach6 reject with icmpv6 type addr-unreachable\n"
    for r in prefix_syn:  # an ISP's [[isp.tcp]] SYN rules, per prefix
        fam, unreach = ("ip6", "reject with icmpv6 type addr-unreachable") if ":" in r.prefix else \
            ("ip", "reject with icmp type host-unreachable")
        verdict = {"drop": "drop", "rst": "reject with tcp reset", "unreachable": unreach}[r.syn]
        rules += f"    {syn_only} {fam} daddr {r.prefix} tcp dport {r.port} {verdict}\n"
    rules += "  }\n"
    rules += "  chain output {\n    type filter hook output priority 0; policy accept;\n"
    if scenario.outage:
        rules += f'    oifname "{uplink_if}" drop\n'
    rules += "  }\n"
    rules += "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
    rules += f"    ip daddr . tcp dport @censor_tls redirect to :{CENSOR_TLS_PORT}\n"
    rules += f"    ip daddr . tcp dport @censor_http redirect to :{CENSOR_HTTP_PORT}\n"
    rules += f"    ip6 daddr . tcp dport @censor_tls6 redirect to :{CENSOR_TLS_PORT}\n"
    rules += f"    ip6 daddr . tcp dport @censor_http6 redirect to :{CENSOR_HTTP_PORT}\n"
    if any(i.dns_onpath for i in scenario.isps if i.name == isp_name):  # queries to any address (issue 16)
        ifs = ", ".join(f'"{d}"' for d in downs)
        for name in onpath_names(scenario, isp_name):  # only the censored names: the rest pass untouched
            rules += (f"    iifname {{ {ifs} }} meta nfproto ipv4 udp dport 53 fib daddr type != local "
                      f"{qname_match(name)} redirect to :{ONPATH_DNS_PORT}\n")
    rules += "  }\n}\n"
    return rules


def onpath_names(scenario: Scenario, isp_name: str) -> list[str]:
    """The names ISP ``isp_name``'s on-path injector answers (``[[isp]] dns_onpath``): the sites
    whose DNS action there forges an address (``inject``, ``bogon``, ``blockpage:``, ``answer:``)."""
    out = []
    for s in scenario.sites:
        d = s.actions(isp_name).dns
        if d in ("inject", "bogon") or d.startswith(("blockpage:", "answer:")):
            out.append(s.domain.lower().rstrip("."))
    return sorted(set(out))


def qname_match(name: str) -> str:
    """nft raw payload matches for a DNS query whose question name is ``name`` (wire form, the
    terminating zero label included: a longer name does not match), read after the UDP and DNS
    headers (bit 160 of the transport header), in pieces of at most 128 bits (nft's limit).
    Case-sensitive: the probe asks lower-case names (no 0x20 randomisation)."""
    wire = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split(".")) + b"\0"
    out, off = [], 160
    for i in range(0, len(wire), 16):
        chunk = wire[i:i + 16]
        out.append(f"@th,{off},{8 * len(chunk)} 0x{chunk.hex()}")
        off += 8 * len(chunk)
    return " ".join(out)


def engine_rules(scenario: Scenario, isp: str, addresses: SiteAddresses) -> list[dict[str, object]]:
    """The packet engine's rules at ISP ``isp`` (:func:`probe.lab.engine.rules_from_spec` input):
    one per (site address, port) with a per-packet TCP action, or an SNI/Host dropped (``names``) or
    FIN'd (``fin_names``) in path. Sharing sites merge their names; an address with an IP action is
    left to nftables."""
    out: dict[tuple[str, int], dict[str, object]] = {}
    for s in scenario.sites:
        a = s.actions(isp)
        if a.ip != "ok":
            continue
        per_port: dict[int, dict[str, object]] = {}
        for r in a.tcp:
            if r.needs_engine:
                per_port[r.port] = {"payload": r.payload, "budget_bytes": r.budget_bytes, "delay_ms": r.delay_ms,
                                    "loss_pct": r.loss_pct, "names": [], "fin_names": []}
        for port, act in a.engine_names(s.scheme, s.port).items():  # 443/80 and the site's own port
            if act is not None:
                rule = per_port.setdefault(port, {"payload": "ok", "budget_bytes": 0, "delay_ms": 0.0,
                                                  "loss_pct": 0.0, "names": [], "fin_names": []})
                key = "names" if act == "drop" else "fin_names"
                rule[key] = [*rule[key], s.domain]  # type: ignore[misc]
        for addr in addresses.of(s.domain):
            for port, rule in per_port.items():
                have = out.get((addr, port))
                if have is None:
                    out[(addr, port)] = {"addr": addr, "port": port, **rule, "names": list(rule["names"]),  # type: ignore[call-overload]
                                         "fin_names": list(rule["fin_names"])}  # type: ignore[call-overload]
                else:
                    for key in ("names", "fin_names"):
                        have[key] = sorted({*have[key], *rule[key]})  # type: ignore[misc]
    for i in scenario.isps:
        if i.name != isp:
            continue
        for r in i.tcp:
            if r.needs_engine:
                out[(r.prefix, r.port)] = {"addr": r.prefix, "port": r.port, "payload": r.payload,
                                           "budget_bytes": r.budget_bytes, "delay_ms": r.delay_ms,
                                           "loss_pct": r.loss_pct, "names": [], "fin_names": []}
    return [out[k] for k in sorted(out)]


def engine_watch(scenario: Scenario, isp: str, addresses: SiteAddresses) -> list[tuple[str, int]]:
    """The (address, port) flows ISP ``isp``'s packet engine must see, sorted."""
    return [(str(r["addr"]), int(r["port"])) for r in engine_rules(scenario, isp, addresses)]  # type: ignore[call-overload]


def _run(cmd: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def check_privileges() -> str | None:
    """None when the lab can run here; else a sentence saying why not (not root, no ``ip``/``nft``)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables): run it with sudo"
    for tool in ("ip", "nft"):
        if _run(["which", tool], check=False).returncode != 0:
            return f"the lab needs the '{tool}' command (Debian: apt-get install iproute2 nftables)"
    return None


def router_roles(isp: ISP) -> list[str]:
    """Namespace roles of ``isp``'s routers, hop 1 first (the censor router is named after the ISP)."""
    return [isp.name if k == isp.censor_hop else f"{isp.name}-r{k}" for k in range(1, isp.hops + 1)]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What :meth:`Topology.build` creates (computed without root, tested as such).

    Attributes:
        roles: namespace roles, vantages first, then routers, then ``inet``.
        links: ``(role a, if a, role b, if b)`` veth pairs.
        commands: role → ``ip -batch`` lines.
        sysctls: role → ``key=value`` settings.
        censor: ISP name → (censor router role, client-side interfaces, uplink interface).
        broken6: role → interfaces on which every forwarded IPv6 packet is dropped.
    """

    roles: tuple[str, ...]
    links: tuple[tuple[str, str, str, str], ...]
    commands: dict[str, list[str]]
    sysctls: dict[str, list[str]]
    censor: dict[str, tuple[str, list[str], str]]
    broken6: dict[str, list[str]]


def plan(scenario: Scenario, lab_id: str, addresses: SiteAddresses | None = None) -> Plan:
    """The namespaces, links, addresses, routes and sysctls of ``scenario``'s lab (module doc)."""
    addresses = addresses or SiteAddresses.plan(scenario)
    six = uses_ipv6(scenario)
    links: list[tuple[str, str, str, str]] = []
    cmds: dict[str, list[str]] = {}
    sysctls: dict[str, list[str]] = {}
    censor: dict[str, tuple[str, list[str], str]] = {}
    broken6: dict[str, list[str]] = {}

    def link(a: str, b: str) -> tuple[str, str]:
        n = len(links)
        pair = (f"{PREFIX}{lab_id}{n:02d}a", f"{PREFIX}{lab_id}{n:02d}b")
        links.append((a, pair[0], b, pair[1]))
        return pair

    def add(role: str, *lines: str) -> None:
        cmds.setdefault(role, ["link set lo up"]).extend(lines)

    nodad = " nodad" if six else ""
    router_sysctls = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
    if six:
        router_sysctls += ["net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1",
                           "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"]
    vantage_roles = [v.name for v in scenario.vantages]
    routers: list[str] = []
    for isp in scenario.isps:
        routers += router_roles(isp)
    inet_up: list[str] = []
    for j, isp in enumerate(scenario.isps):
        roles = router_roles(isp)
        for r in roles:
            sysctls[r] = list(router_sysctls)
        mine = [(i, v) for i, v in enumerate(scenario.vantages) if v.isp == isp.name]
        downs: list[str] = []
        for i, v in mine:
            c4, g4, c6, g6 = vantage_ips(i)
            cif, rif = link(v.name, roles[0])
            downs.append(rif)
            add(v.name, f"link set {cif} up")
            if v.ipv4:
                add(v.name, f"addr add {c4}/24 dev {cif}", f"route add default via {g4}")
            if v.ipv6 != "none":
                add(v.name, f"addr add {c6}/64 dev {cif} nodad", f"route add ::/0 via {g6}")
                sysctls[v.name] = ["net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.all.accept_ra=0",
                                   "net.ipv6.conf.default.accept_ra=0"]
            else:  # no IPv6 at this vantage: the probe must not wait on it
                sysctls[v.name] = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            add(roles[0], f"link set {rif} up", f"addr add {g4}/24 dev {rif}")
            if six:
                add(roles[0], f"addr add {g6}/64 dev {rif}{nodad}")
            if v.ipv6 == "broken":
                broken6.setdefault(roles[0], []).append(rif)
        c = isp.censor_hop
        for k in range(1, isp.hops + 1):
            role = roles[k - 1]
            if k > 1:  # the link from router k-1
                lo4, lo6 = f"10.{80 + j}.{k - 1}.1", f"fd00:80:{j:x}:{k - 1:x}::1"
                downs_k = [links[-1][3]]
                add(role, f"route add 10.{80 + j}.0.0/16 via {lo4}")
                for i, _v in mine:
                    add(role, f"route add 10.77.{i}.0/24 via {lo4}")
                    if six:
                        add(role, f"route add fd00:77:0:{i:x}::/64 via {lo6}")
                if six:
                    add(role, f"route add fd00:80:{j:x}::/48 via {lo6}")
                if k > c:
                    add(role, f"route add {resolver_ip(j)}/32 via {lo4}")
                    if six:
                        add(role, f"route add {resolver_ip6(j)}/128 via {lo6}")
            else:
                downs_k = downs
            if k < isp.hops:
                up4, up6 = f"10.{80 + j}.{k}.1", f"fd00:80:{j:x}:{k:x}::1"
                nx4, nx6 = f"10.{80 + j}.{k}.2", f"fd00:80:{j:x}:{k:x}::2"
                a_if, b_if = link(role, roles[k])
                add(role, f"link set {a_if} up", f"addr add {up4}/30 dev {a_if}", f"route add default via {nx4}")
                add(roles[k], f"link set {b_if} up", f"addr add {nx4}/30 dev {b_if}")
                if six:
                    add(role, f"addr add {up6}/64 dev {a_if}{nodad}", f"route add ::/0 via {nx6}")
                    add(roles[k], f"addr add {nx6}/64 dev {b_if}{nodad}")
                uplink = a_if
            else:  # the last router: to the internet
                a_if, b_if = link(role, "inet")
                inet_up.append(b_if)
                add(role, f"link set {a_if} up", f"addr add 10.78.{j}.1/30 dev {a_if}",
                    f"route add default via 10.78.{j}.2")
                add("inet", f"link set {b_if} up", f"addr add 10.78.{j}.2/30 dev {b_if}",
                    f"route add 10.77.0.0/16 via 10.78.{j}.1" if len(scenario.isps) == 1 else "",
                    f"route add 10.{80 + j}.0.0/16 via 10.78.{j}.1", f"route add 10.76.{j}.0/24 via 10.78.{j}.1")
                if len(scenario.isps) > 1:
                    for i, _v in mine:
                        add("inet", f"route add 10.77.{i}.0/24 via 10.78.{j}.1")
                if six:
                    add(role, f"addr add fd00:78:0:{j:x}::1/64 dev {a_if}{nodad}",
                        f"route add ::/0 via fd00:78:0:{j:x}::2")
                    add("inet", f"addr add fd00:78:0:{j:x}::2/64 dev {b_if}{nodad}",
                        f"route add fd00:80:{j:x}::/48 via fd00:78:0:{j:x}::1",
                        f"route add fd00:76:0:{j:x}::/64 via fd00:78:0:{j:x}::1")
                    for i, _v in mine:
                        add("inet", f"route add fd00:77:0:{i:x}::/64 via fd00:78:0:{j:x}::1")
                uplink = a_if
            if k == c:
                add(role, f"addr add {resolver_ip(j)}/32 dev lo")
                if any(s.actions(isp.name).dns == "relay" for s in scenario.sites):
                    add(role, f"addr add {RELAY_IP}/32 dev lo")
                if six:
                    add(role, f"addr add {resolver_ip6(j)}/128 dev lo")
                censor[isp.name] = (role, downs_k, uplink)
                watch = engine_watch(scenario, isp.name, addresses)
                if watch:
                    add(role, f"tuntap add dev {TUN_NAME} mode tun", f"link set {TUN_NAME} up",
                        f"route add default dev {TUN_NAME} table {TUN_TABLE}",
                        f"rule add pref 100 iif {TUN_NAME} lookup main", "rule add pref 101 iif lo lookup main")
                    sysctls[role] += [f"net.ipv4.conf.{TUN_NAME}.rp_filter=0"]
                    if six:
                        add(role, f"route add ::/0 dev {TUN_NAME} table {TUN_TABLE}",
                            f"rule add pref 100 from ::/0 iif {TUN_NAME} lookup main",
                            "rule add pref 101 from ::/0 iif lo lookup main")
                    for addr, port in watch:
                        add(role, f"rule add pref 110 to {addr} ipproto tcp dport {port} lookup {TUN_TABLE}",
                            f"rule add pref 111 from {addr} ipproto tcp sport {port} lookup {TUN_TABLE}")
    add("inet", f"route add local {LAB_NET} dev lo")
    if six:
        add("inet", f"route add local {LAB_NET6} dev lo",
            *(f"route add local {p} dev lo" for p in scenario.dns64_prefixes))
        sysctls["inet"] = ["net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.ip_nonlocal_bind=1",
                           "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"]
    else:
        sysctls["inet"] = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    cmds = {r: [c for c in lines if c] for r, lines in cmds.items()}
    return Plan(roles=tuple(vantage_roles + routers + ["inet"]), links=tuple(links), commands=cmds,
                sysctls=sysctls, censor=censor, broken6=broken6)


def path_addresses(scenario: Scenario, vantage: str, *, ipv6: bool = False) -> list[str]:
    """The address each router on ``vantage``'s path answers from (its interface towards the
    vantage: the source of its ICMP time-exceeded), hop 1 first. ``censor_hop`` of the ISP
    says which one is the censor."""
    i = next(n for n, v in enumerate(scenario.vantages) if v.name == vantage)
    v = scenario.vantages[i]
    j = next(n for n, isp in enumerate(scenario.isps) if isp.name == v.isp)
    out = [vantage_ips(i)[3 if ipv6 else 1]]
    for k in range(2, scenario.isps[j].hops + 1):
        out.append(f"fd00:80:{j:x}:{k - 1:x}::2" if ipv6 else f"10.{80 + j}.{k - 1}.2")
    return out


def broken6_ruleset(interfaces: Sequence[str]) -> str:
    """nftables for a router whose vantages on ``interfaces`` have broken IPv6: the address
    and the route work (neighbour discovery is local), every forwarded IPv6 packet is dropped."""
    rules = "table inet kzlabv6 {\n  chain forward {\n    type filter hook forward priority -10; policy accept;\n"
    for i in interfaces:
        rules += f'    iifname "{i}" meta nfproto ipv6 drop\n    oifname "{i}" meta nfproto ipv6 drop\n'
    return rules + "  }\n}\n"


@dataclass
class Topology:
    """The namespaces of one lab run.

    Attributes:
        lab_id: the per-run suffix (6 hex digits).
        roles: namespace roles (``client``, ``isp``, ``inet`` in the default world).
        namespaces: role → namespace name.
        pids: child process ids started in the namespaces (see :meth:`add_pid`).
        state_file: ``/run/kzprobe-lab/<id>.json``.
        plan: what :meth:`build` made (None before).
    """

    lab_id: str = field(default_factory=lambda: secrets.token_hex(3))
    pids: list[int] = field(default_factory=list)
    up: bool = False
    roles: tuple[str, ...] = ("client", "isp", "inet")
    plan: Plan | None = None

    @property
    def namespaces(self) -> dict[str, str]:
        return {k: f"{PREFIX}-{self.lab_id}-{k}" for k in self.roles}

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.lab_id}.json"

    def exec_prefix(self, role: str) -> list[str]:
        """``["ip", "netns", "exec", <ns>]`` for ``role`` (a vantage, a router, ``inet``)."""
        return ["ip", "netns", "exec", self.namespaces[role]]

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"lab_id": self.lab_id, "namespaces": self.namespaces, "pids": self.pids,
                                   "owner": os.getpid(), "owner_start": _proc_start(os.getpid()),
                                   "created": time.time()}))
        tmp.replace(self.state_file)

    def add_pid(self, pid: int) -> None:
        """Record a child process so that :func:`down_all` can kill it after a crash."""
        self.pids.append(pid)
        self._save()

    def build(self, scenario: Scenario, addresses: dict[str, str] | SiteAddresses | None = None) -> None:
        """Create namespaces, veths, addresses, routes and nftables rules.

        Raises:
            LabError: a command failed (what was made so far stays for :meth:`teardown`).
        """
        sa = addresses if isinstance(addresses, SiteAddresses) else SiteAddresses.plan(scenario)
        p = plan(scenario, self.lab_id, sa)
        self.plan = p
        self.roles = p.roles
        ns = self.namespaces
        self._save()  # before anything exists: a crash mid-build is still found by `lab down`
        self.up = True
        for n in ns.values():
            _run(["ip", "netns", "add", n])
        for a, a_if, b, b_if in p.links:
            _run(["ip", "link", "add", a_if, "netns", ns[a], "type", "veth", "peer", "name", b_if, "netns", ns[b]])
        for role in p.roles:  # sysctls first: forwarding and IPv6 settings before addresses and routes
            if p.sysctls.get(role):
                _run(self.exec_prefix(role) + ["sysctl", "-q", "-w", *p.sysctls[role]], check=False)
        for role, lines in p.commands.items():
            _run(self.exec_prefix(role) + ["ip", "-batch", "-"], input="\n".join(lines) + "\n")
        for role in p.roles:  # a TUN created by the batch needs its own sysctls afterwards
            tun = [s for s in p.sysctls.get(role, []) if TUN_NAME in s]
            if tun:
                _run(self.exec_prefix(role) + ["sysctl", "-q", "-w", *tun], check=False)
        for isp in scenario.isps:
            role, downs, uplink = p.censor[isp.name]
            _run(self.exec_prefix(role) + ["nft", "-f", "-"],
                 input=isp_ruleset(scenario, sa, client_if=downs, uplink_if=uplink, isp=isp.name))
        for role, ifs in p.broken6.items():
            _run(self.exec_prefix(role) + ["nft", "-f", "-"], input=broken6_ruleset(ifs))

    def teardown(self) -> None:
        """Kill the recorded children and every process left in the namespaces, delete the
        namespaces (their veths go with them) and the state file. Idempotent."""
        _teardown(self.lab_id, self.namespaces.values(), self.pids)
        self.up = False


def _ns_pids(ns: str) -> list[int]:
    p = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _teardown(lab_id: str, namespaces: Iterable[str], pids: Iterable[int]) -> None:
    namespaces = list(namespaces)
    victims = set(pids)
    for ns in namespaces:
        victims.update(_ns_pids(ns))
    victims.discard(os.getpid())
    _kill(victims, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(p) for p in victims):
        time.sleep(0.05)
    _kill([p for p in victims if _alive(p)], signal.SIGKILL)
    for ns in namespaces:
        _run(["ip", "netns", "del", ns], check=False)
    for link in lab_links(lab_id):  # a veth left in the root namespace by a build cut short
        _run(["ip", "link", "del", link], check=False)
    shutil.rmtree(STATE_DIR / lab_id, ignore_errors=True)  # the run directory (PKI, config, logs)
    (STATE_DIR / f"{lab_id}.json").unlink(missing_ok=True)


def lab_namespaces() -> list[str]:
    """Names of every lab namespace on this machine (any run)."""
    p = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{PREFIX}-")]


#: A lab veth: ``kzl<id><nn>a|b`` (and ``kzl<id>c|d|u|i`` from labs built before several hops).
_LINK = re.compile(rf"^{PREFIX}[0-9a-f]{{6}}([0-9]{{2}}[ab]|[cdui])$")


def lab_links(lab_id: str = "") -> list[str]:
    """Lab veths in the root namespace (none unless a build was cut short)."""
    p = _run(["ip", "-o", "link", "show"], check=False)
    out = []
    for line in p.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(f"{PREFIX}{lab_id}") and _LINK.match(name):
                out.append(name)
    return out


def owner_in_use(state: dict[str, object]) -> int | None:
    """The pid of the ``kzprobe lab run|up`` that built the lab of ``state`` (a parsed state
    file) when it is still running (same pid and start time: a recycled pid is not the
    owner) and is not this process; None when the lab is left over."""
    try:
        owner = int(state.get("owner", 0))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    if owner and owner != os.getpid() and _alive(owner) and _proc_start(owner) == state.get("owner_start"):
        return owner
    return None


@dataclass(frozen=True, kw_only=True)
class DownResult:
    """What :func:`down` did.

    Attributes:
        removed: lab ids removed, sorted.
        kept: lab id → pid of its owner, for labs kept because they are in use.
    """

    removed: tuple[str, ...] = ()
    kept: dict[str, int] = field(default_factory=dict)


def down_all(*, force: bool = False) -> list[str]:
    """:func:`down`, returning only the lab ids removed."""
    return list(down(force=force).removed)


def down(*, force: bool = False, only: Collection[str] | None = None, keep_own: bool = False) -> DownResult:
    """Remove every lab left on this machine by a crash (``kzprobe lab down``): kill the
    processes recorded in the state files and those still in lab namespaces, delete the
    namespaces, stray veths, run directories and state files.

    A lab whose owner (the ``kzprobe lab run|up`` process that built it, recorded in its
    state file) is still alive is in use and kept, unless ``force``; it is listed in
    :attr:`DownResult.kept`. Namespaces with the lab prefix but no state file are always removed.
    ``only``: just these lab ids (``kzprobe lab down ID``); the others are left alone.
    ``keep_own``: this process's labs count as in use too (a test session cleaning up while it may
    hold a lab open); otherwise they count as left over, as for any other process."""
    ids: dict[str, tuple[list[str], list[int]]] = {}
    alive: dict[str, int] = {}
    if STATE_DIR.is_dir():
        for f in STATE_DIR.glob("*.json"):
            try:
                st = json.loads(f.read_text())
                ids[st["lab_id"]] = (list(st["namespaces"].values()), [int(p) for p in st.get("pids", [])])
                owner = owner_in_use(st)
                if owner is None and keep_own and st.get("owner") == os.getpid():
                    owner = os.getpid()
                if owner is not None:
                    alive[st["lab_id"]] = owner
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                f.unlink(missing_ok=True)
    keep = {} if force else alive
    for ns in lab_namespaces():
        lab_id = ns.split("-")[1]
        ids.setdefault(lab_id, ([], []))[0].append(ns)
    for link in lab_links():
        ids.setdefault(link[len(PREFIX):len(PREFIX) + 6], ([], []))
    if only is not None:
        wanted = set(only)
        ids = {k: v for k, v in ids.items() if k in wanted}
        keep = {k: v for k, v in keep.items() if k in wanted}
    for lab_id in keep:
        ids.pop(lab_id, None)
    for lab_id, (namespaces, pids) in ids.items():
        # only pids still running a lab child (a recycled pid must not be killed)
        pids = [p for p in pids if _is_lab_process(p)]
        _teardown(lab_id, sorted(set(namespaces)), pids)
    return DownResult(removed=tuple(sorted(ids)), kept=dict(sorted(keep.items())))


def _proc_start(pid: int) -> int | None:
    """The process start time in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _is_lab_process(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"probe.lab" in cmd or b"kzprobe" in cmd or b"probe " in cmd
