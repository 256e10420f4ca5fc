"""Lab scenarios: a TOML file that says what the simulated ISP does to each site.

The file is the ground truth of the lab: ``expect`` is the verdict the probe must
give for every input of the site. Format (issue 4)::

    [scenario]
    name = "kz-2021"
    description = "..."
    latency_ms = 30          # one-way client <-> internet, injected by lab servers
    trust_mitm_root = false  # the vantage installed the state root
    outage = false           # everything beyond the ISP drops (A3)
    helper = "ok"            # ok | down: the control helper is not running (its address refuses)
    doh = "ok"               # ok | down: the DoH control resolver is not serving (refuses)
                             # (controls blocked, reset, stalled or frozen by a censor: [[isp.tcp]])

    [[site]]
    domain = "meduza.io"     # IDN allowed (stored as the IDNA 2008 A-label)
    scheme = "https"         # the input's scheme: https | http
    paths = ["/"]
    dns = "ok"               # ok | nxdomain | servfail | timeout | bogon | inject | inject_nxdomain | relay
                             # | "blockpage:<ip>" | "answer:<ip or site>"  (answer: the ISP resolver answers
                             # that address, whatever it is — 127.0.0.1, 0.0.0.0, any IPv4 — or the address
                             # of another site of the scenario, named by its domain; nothing is served
                             # there for this site; inject: a forged answer races the genuine reply and wins;
                             # inject_nxdomain: the same with a forged NXDOMAIN; relay: the ISP resolver
                             # answers the ISP's transparent proxy inside the ISP, which relays by SNI/Host
                             # to the real site, the site's tls/http actions applied there too: a spoofed
                             # answer AND a second action at it) | sniproxy (the ISP's transparent proxy,
                             # which splices to the site, reachable from the internet)
    ip = "ok"                # ok | blackhole | rst | unreachable
    tls = "sni_timeout"      # ok | sni_timeout | sni_rst | "mitm:qaznet" | "mitm:isca" (sni_drop, sni_fin: below)
    http = "ok"              # ok | blockpage | rst | blockpage_unknown (a page no fingerprint knows)
                             # | redirect_blockpage (the censor answers the GET with a 302 to its blockpage host)
    throttle_kbps = 0
    page_bytes = 0           # serve pages of at least this many bytes (0 = the small default; up to 4 MiB,
                             # beyond the probe's 1 MiB body cap)
    port = 0                 # the input's port (0 = the scheme's): http://site:8080/path; the site serves it, and
                             # the censor's SNI/Host-keyed actions (tls, http, throttle_kbps) act there as on
                             # 443/80 (name_ports: DPI matches the SNI on any port); not 53, not 80 for https
                             # nor 443 for http (every site address serves HTTP on 80 and TLS on 443)
    down = false
    share_ip_with = ""       # another site's domain: same address (collateral blocking)
    zone = "ok"              # the site's own DNS, as the control and an honest resolver see it:
                             # ok | nxdomain (the name exists nowhere) | "<ip>" (its A/AAAA record
                             # is that address, whatever it is: 127.0.0.1, 0.0.0.0, another host)
                             # | cname (a CNAME to a name without A/AAAA: no address anywhere)
                             # | geo (GeoDNS/CDN: the ISPs' resolvers get a second address of the site,
                             #   the DoH control its first; both serve the genuine site)
    zone_extra = []          # with zone = "ok": addresses the site's own record also holds beside its lab
                             # address, whatever they are (["10.77.0.1", "127.0.0.1", "224.0.0.1"]): every
                             # resolver gets them too (a record mixing the site with junk)
    redirect = ""            # the site answers every request 302 with this Location (any text,
                             # broken ones included: "https://"); "" = serves its pages
    cert = "ok"              # the certificate the site serves (probe/lab/pki.py CERT_SHAPES): ok |
                             # intermediate | cross_signed | expired_root (valid) | leaf_only |
                             # expired | wrong_name | unknown_ca (site faults: the control sees them too)
    redirects = {}           # per path: {"/a" = "/b", "/b" = "http://other.example/"}: a 302 with that
                             # Location for that path only (chains, loops); other paths as above
    vantage_status = ""      # the site's server answers requests from the vantages' networks (not the
                             # control's) with "403" (a plain Forbidden page) or "captcha" (a 503
                             # Cloudflare challenge); "" = everyone alike
    expect = "tls"           # false | dns | tcp_ip | tls | tls_mitm | http-failure | http-diff | throttling
                             # | down | inconclusive

A scenario needs at least one ``[[site]]``; domains and paths are unique; ``share_ip_with``
names another site that shares no address itself (no chains, no loops). Any problem raises
:class:`ScenarioError` naming the file, the site and the key.

Beyond that one-ISP, one-vantage, IPv4 world (every key above keeps its meaning, and a
scenario without the tables below builds exactly that world)::

    [[isp]]                  # default: one ISP "isp", one router, censor on it
    name = "kaztel"          # [a-z][a-z0-9]{0,9}
    hops = 3                 # routers on the path client -> internet (1..8); each decrements the TTL
    censor_hop = 2           # which router is the censor (resolver, nftables, censor, packet engine)
    dns64 = "64:ff9b::/96"   # the ISP resolver synthesises AAAA from A with this RFC 6052 prefix
                             # (/32, /40, /48, /56, /64 or /96; "" = no DNS64); the internet serves
                             # every IPv4 site at its synthesised addresses too (NAT64 as the same site)
    asn = "AS64501"          # probe_asn of its vantages and its ASN in the lab's database (default AS64500 + index)
    dns_onpath = false       # the censor injects DNS on path: a query for a site whose dns is inject,
                             # bogon, blockpage:<ip> or answer:<...>, sent to ANY address through the censor hop, is
                             # answered by the censor itself (its own TTL), as the GFW's and Iran's
                             # injectors do; every other query goes on untouched to the address it
                             # was sent to (nft matches the censored names' wire form)
    [[isp.tcp]]              # a [[site.tcp]] rule for every address in a prefix (infrastructure too:
    prefix = "198.18.0.80/32"  # the helper, the DoH resolver; a hoster's range): prefix and port required
    port = 8443
    budget_bytes = 16384

    [[vantage]]              # default: one vantage "client" on the first ISP, IPv4 only
    name = "home"
    isp = "kaztel"
    ipv4 = true              # an IPv4 address and default route (false: IPv6-only vantage)
    ipv6 = "none"            # none | ok | broken (address and route, every IPv6 packet dropped at hop 1)

    [[site]]
    stack = "v4"             # v4 (A only) | dual (A and AAAA) | v6 (AAAA only)
    tls = "sni_drop"         # also: drop the ClientHello with this SNI and every later packet of the flow;
                             # "sni_fin": answer it with a FIN in the server's name (eof_error), the same after
    http = "host_drop"       # also: the same for a request with this Host ("host_fin": the FIN)
    xfail_reason = ""        # the probe is known to give a wrong verdict here (why, with the source);
    xfail_got = ""           #   and the verdict it gives today (the lab test then xfails only on that one)
    [[site.tcp]]             # per address:port, the packet engine / nftables at the censor hop
    port = 443               # default: the input's port
    syn = "ok"               # ok | drop | rst | unreachable (ICMP) — on the SYN
    payload = "ok"           # ok | rst | fin | drop — on the first payload segment, whatever it holds
                             #   (drop: that segment and every later packet of the flow)
    budget_bytes = 0         # after this many payload bytes from the site, its packets stop (no RST/FIN)
    delay_ms = 0             # each packet of the flow held this long, each direction
    loss_pct = 0.0           # each packet of the flow dropped with this probability (percent)
    [site.isp.kaztel]        # the censor of ISP "kaztel" acts differently on this site:
    tls = "ok"               #   dns, ip, tls, http, throttle_kbps, tcp (keys not given: the site's)
    [site.vantage.home]      # truth at vantage "home": expect, xfail_reason, xfail_got, note
    expect = false           #   (a vantage table giving expect drops the site's xfail unless it sets its own)
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from probe.errors import KzprobeError
from probe.lab.pki import CERT_SHAPES
from probe.names import HostError
from probe.names import to_alabel as _names_to_alabel
from probe.secretlike import SHAPES, secret_shape
from probe.targets import TargetError, targets_from_urls
from probe.vocab import VERDICT_WORDS, VerdictWord

#: Where a ``blockpage:<ip>`` may point: the lab's internet range (``probe.lab.topology.LAB_NET``),
#: where the lab binds the address and serves the ISP's blockpage.
BLOCKPAGE_NET = ipaddress.ip_network("198.18.0.0/15")

DNSAction = str  # "ok" | "nxdomain" | "servfail" | "timeout" | "bogon" | "inject" | "sniproxy" | "blockpage:<ip>"
#                  | "answer:<ipv4>" | "answer:<another site's domain>"
IPAction = Literal["ok", "blackhole", "rst", "unreachable"]
TLSAction = Literal["ok", "sni_timeout", "sni_rst", "sni_drop", "sni_fin", "mitm:qaznet", "mitm:isca"]
HTTPAction = Literal["ok", "blockpage", "rst", "host_drop", "host_fin", "blockpage_unknown", "redirect_blockpage"]
#: The verdict a site must get (:data:`probe.vocab.VERDICT_WORDS`): a blocking type,
#: "false" = accessible, "down", "inconclusive".
Expect = VerdictWord
Scheme = Literal["https", "http"]
Stack = Literal["v4", "dual", "v6"]
SynAction = Literal["ok", "drop", "rst", "unreachable"]
PayloadAction = Literal["ok", "rst", "fin", "drop"]
VantageIPv6 = Literal["none", "ok", "broken"]

DNS_SIMPLE = ("ok", "nxdomain", "servfail", "timeout", "bogon", "inject", "sniproxy", "inject_nxdomain", "relay")
IP_ACTIONS: tuple[str, ...] = get_args(IPAction)
TLS_ACTIONS: tuple[str, ...] = get_args(TLSAction)
HTTP_ACTIONS: tuple[str, ...] = get_args(HTTPAction)
EXPECTS: tuple[str, ...] = VERDICT_WORDS
STACKS: tuple[str, ...] = get_args(Stack)
SYN_ACTIONS: tuple[str, ...] = get_args(SynAction)
PAYLOAD_ACTIONS: tuple[str, ...] = get_args(PayloadAction)
VANTAGE_IPV6: tuple[str, ...] = get_args(VantageIPv6)
#: TLS/HTTP actions the censor proxy takes (nftables redirects the site's :443/:80, and its own port, to it);
#: the ``ENGINE_*`` ones are the packet engine's (in path, the handshake end to end).
PROXY_TLS = ("sni_timeout", "sni_rst", "mitm:qaznet", "mitm:isca")
PROXY_HTTP = ("blockpage", "rst", "blockpage_unknown", "redirect_blockpage")
#: The packet engine's actions keyed on the SNI (on :443) / the Host (on :80) of the flow's first payload
#: (and on the input's own port: :func:`name_ports`),
#: and what it does to that flow (:class:`probe.lab.engine.FlowRule` ``names``/``fin_names``): ``drop``
#: that segment and every later packet, both ways (nothing answers); ``fin`` a FIN|ACK to the client in the
#: server's name (as if it closed: ``eof_error``), the segment and the rest of the flow dropped — netem's
#: DPICloseConnectionForTLSSNI and DPICloseConnectionForString (webconnectivityqa
#: redirectWithConsistentDNSAndThenEOFForHTTP/HTTPS).
ENGINE_TLS = {"sni_drop": "drop", "sni_fin": "fin"}
ENGINE_HTTP = {"host_drop": "drop", "host_fin": "fin"}
#: Where every lab site address serves TLS and plain HTTP (a site with ``port`` serves that one too).
TLS_PORT, HTTP_PORT = 443, 80


def name_ports(scheme: str, port: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ports a site's SNI-keyed (``tls``) and Host-keyed (``http``) censor actions act on: (TLS ports,
    HTTP ports). :443 and :80 always, and the input's own port (``scheme``, ``port``) beside its scheme's:
    a DPI box matches the SNI on any port (ooni/netem dpiblock.go/dpidrop.go, DPIResetTrafficForTLSSNI and
    DPIDropTrafficForTLSSNI, the rules of webconnectivityqa, parse every client segment's SNI whatever its
    port) and the Host at the server endpoint it is told (DPI...ForString: ServerIPAddress and ServerPort).
    Without it, ``https://x.kz:8443/`` with ``tls = "sni_drop"`` was measured untouched while the truth said
    blocked (the censor acted on :443 only)."""
    if scheme == "https":
        return tuple(sorted({TLS_PORT, port})), (HTTP_PORT,)
    return (TLS_PORT,), tuple(sorted({HTTP_PORT, port}))
#: ``zone`` values beside ``ok``, ``nxdomain`` and an IP literal.
ZONE_KINDS = ("ok", "nxdomain", "cname", "geo")
VANTAGE_STATUS = ("", "403", "captcha")

#: Largest ``page_bytes`` (bytes): 4x the probe's default body cap (1 MiB), so that a page
#: larger than the cap can be served (it gets truncated); every lab server builds pages in memory.
MAX_PAGE_BYTES = 4 << 20
#: Most routers on an ISP path.
MAX_HOPS = 8
#: Prefix lengths RFC 6052 §2.2 allows for a NAT64 prefix.
NAT64_PREFIX_LENGTHS = (32, 40, 48, 56, 64, 96)
#: The default ISP and vantage (a scenario without [[isp]] / [[vantage]]).
DEFAULT_ISP, DEFAULT_VANTAGE = "isp", "client"
FIRST_ASN = 64500

#: Where shipped scenarios live.
SCENARIO_DIR = Path(__file__).with_name("scenarios")

_SCENARIO_KEYS = {"name", "description", "latency_ms", "trust_mitm_root", "outage", "helper", "doh"}
#: What a scenario's ``helper`` / ``doh`` key may say of the control.
CONTROL_STATES = ("ok", "down")
_ACTION_KEYS = {"dns", "ip", "tls", "http", "throttle_kbps", "tcp"}
_SITE_KEYS = {"domain", "scheme", "paths", "throttle_kbps", "page_bytes", "down", "share_ip_with", "expect", "note",
              "stack", "zone", "zone_extra", "redirect", "cert", "xfail_reason", "xfail_got", "isp", "vantage", "port",
              "redirects", "vantage_status"} | _ACTION_KEYS
_TCP_KEYS = {"port", "syn", "payload", "budget_bytes", "delay_ms", "loss_pct"}
_TRUTH_KEYS = {"expect", "xfail_reason", "xfail_got", "note"}
_ISP_KEYS = {"name", "hops", "censor_hop", "dns64", "asn", "tcp", "dns_onpath"}
_VANTAGE_KEYS = {"name", "isp", "ipv4", "ipv6"}
_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class ScenarioError(KzprobeError, ValueError):
    """A scenario that cannot be used. The message names file, site and key."""

    def __init__(self, file: str, where: str, message: str) -> None:
        super().__init__(f"scenario {file}: {where}: {message}")
        self.file = file
        self.where = where


@dataclass(frozen=True, kw_only=True)
class TCPRule:
    """What the censor hop does to TCP flows to one port of a site's addresses (module doc).

    Attributes:
        port: the server port.
        syn: on the client's SYN: ``drop``, ``rst`` (TCP reset) or ``unreachable`` (ICMP).
        payload: on the client's first payload segment, whatever it holds: ``rst`` (reset to
            the client), ``fin`` (a FIN to the client, as if the server closed), ``drop`` (that
            segment and every later packet of the flow, both ways).
        budget_bytes: payload bytes from the site after which its packets of that flow stop
            (no RST, no FIN: the flow freezes); 0 = none.
        delay_ms: each packet of the flow held this long, each direction (userspace).
        loss_pct: each packet dropped with this probability (percent), each direction.
    """

    port: int
    syn: SynAction = "ok"
    payload: PayloadAction = "ok"
    budget_bytes: int = 0
    delay_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def needs_engine(self) -> bool:
        """True when the packet engine must see the flow (everything but SYN actions)."""
        return self.payload != "ok" or self.budget_bytes > 0 or self.delay_ms > 0 or self.loss_pct > 0

    def describe(self) -> str:
        parts = [f"syn={self.syn}" if self.syn != "ok" else "", f"payload={self.payload}" if self.payload != "ok" else "",
                 f"budget={self.budget_bytes}B" if self.budget_bytes else "",
                 f"delay={self.delay_ms:g}ms" if self.delay_ms else "", f"loss={self.loss_pct:g}%" if self.loss_pct else ""]
        return f":{self.port} " + " ".join(p for p in parts if p)


@dataclass(frozen=True, kw_only=True)
class PrefixRule(TCPRule):
    """A :class:`TCPRule` of an ISP's censor for every address in ``prefix`` (CIDR): the
    lab's infrastructure too (the helper, the DoH resolver), or a hoster's whole range."""

    prefix: str

    def describe(self) -> str:
        return self.prefix + super().describe()


@dataclass(frozen=True, kw_only=True)
class Actions:
    """The censor's actions on one site at one ISP (module doc: dns, ip, tls, http, throttle, tcp)."""

    dns: DNSAction = "ok"
    ip: IPAction = "ok"
    tls: TLSAction = "ok"
    http: HTTPAction = "ok"
    throttle_kbps: int = 0
    tcp: tuple[TCPRule, ...] = ()

    @property
    def censored_l7(self) -> bool:
        """True when the censor proxy must see this site's connections (TLS, HTTP or throttle action)."""
        return self.tls in PROXY_TLS or self.http in PROXY_HTTP or self.throttle_kbps > 0

    def proxy_ports(self, scheme: str, port: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(TLS ports, HTTP ports) the censor proxy must see for a site of ``scheme`` on ``port``
        (:func:`name_ports`): the TLS ones for a proxy TLS action, the HTTP ones for a proxy HTTP action,
        both for throttling (by SNI and by Host); () where the proxy has nothing to do."""
        tls_ports, http_ports = name_ports(scheme, port)
        return (tls_ports if self.tls in PROXY_TLS or self.throttle_kbps else (),
                http_ports if self.http in PROXY_HTTP or self.throttle_kbps else ())

    def engine_names(self, scheme: str, port: int) -> dict[int, str]:
        """Port → what the packet engine does to a first payload naming the site there ("drop" or
        "fin"): its ``tls`` action on the TLS ports, its ``http`` action on the HTTP ports (:func:`name_ports`)."""
        tls_ports, http_ports = name_ports(scheme, port)
        out: dict[int, str] = {}
        for ports, act in ((tls_ports, ENGINE_TLS.get(self.tls)), (http_ports, ENGINE_HTTP.get(self.http))):
            if act is not None:
                out.update(dict.fromkeys(ports, act))
        return out

    @property
    def dns_blockpage_ip(self) -> str | None:
        return self.dns.split(":", 1)[1] if self.dns.startswith("blockpage:") else None


@dataclass(frozen=True, kw_only=True)
class Truth:
    """The verdict at one vantage: ``expect``, and when the probe is known to get it wrong
    today, why (``xfail_reason``, with its source) and what it says instead (``xfail_got``)."""

    expect: Expect = "false"
    xfail_reason: str = ""
    xfail_got: str = ""
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class ISP:
    """One ISP: a path of ``hops`` routers, the censor on router ``censor_hop``;
    ``dns_onpath``: the censor answers DNS queries sent to any address (module doc)."""

    name: str = DEFAULT_ISP
    hops: int = 1
    censor_hop: int = 1
    dns64: str = ""
    asn: str = f"AS{FIRST_ASN}"
    tcp: tuple[PrefixRule, ...] = ()
    dns_onpath: bool = False


@dataclass(frozen=True, kw_only=True)
class Vantage:
    """One client namespace: its ISP and address families."""

    name: str = DEFAULT_VANTAGE
    isp: str = DEFAULT_ISP
    ipv4: bool = True
    ipv6: VantageIPv6 = "none"

    @property
    def ipv6_works(self) -> bool:
        return self.ipv6 == "ok"

    def describe(self) -> str:
        fam = ("IPv4" if self.ipv4 else "no IPv4") + {"none": ", no IPv6", "ok": ", IPv6",
                                                      "broken": ", broken IPv6"}[self.ipv6]
        return f"{self.name} ({self.isp}; {fam})"


@dataclass(frozen=True, kw_only=True)
class Site:
    """One target domain of a scenario.

    Attributes:
        domain: the A-label (``xn--80aswg.xn--80ao21a``), lowercase.
        display: the domain as written in the file (U-label for IDNs).
        scheme: the scheme of the inputs the probe measures.
        paths: paths the lab web server serves; one input per path.
        dns, ip, tls, http, throttle_kbps, tcp: the censor's actions (every ISP's, unless
            ``isp_actions`` says otherwise; module doc).
        page_bytes: the site's pages are at least this long (bytes, ≤ :data:`MAX_PAGE_BYTES`);
            0 = the small default page. Throttling is only judged on a transfer of
            :data:`probe.measure.throughput.MIN_BYTES` or more (FC-19).
        down: the site's own server refuses connections (everyone sees it down).
        share_ip_with: A-label of the site whose address this site shares, "" = own address.
        zone: the site's own (authoritative) DNS: "ok" (its lab addresses), "nxdomain" (the
            name exists nowhere: ghost DNS, ooni/probe#2308) or an IP literal its record holds
            (a misconfigured site: webconnectivityqa localhostWithHTTP).
        zone_extra: with ``zone = "ok"``, the IP literals the site's record also holds beside its
            lab addresses (A or AAAA by family): every resolver, control included, gets them.
        redirect: the Location of the 302 the site answers every request with ("" = none).
        cert: the shape of the site's certificate (:data:`probe.lab.pki.CERT_SHAPES`).
        redirects: ``((path, Location), ...)``: a 302 for that path only (chains, loops).
        vantage_status: how the site's server answers the vantages' networks only ("403",
            "captcha"; "" = as everyone).
        input_port: the input's port, 0 = the scheme's default (the site serves it too).
        stack: which address families the site has (A, AAAA records and servers).
        expect: the verdict the probe must give (truth) at every vantage without its own.
        xfail_reason, xfail_got: the probe is known to be wrong here today (:class:`Truth`).
        note: free text shown with the table.
        isp_actions: ``((isp name, Actions), ...)``: another censor's actions on this site.
        vantage_truth: ``((vantage name, Truth), ...)``: the truth at one vantage.
    """

    domain: str
    display: str
    scheme: Scheme = "https"
    paths: tuple[str, ...] = ("/",)
    dns: DNSAction = "ok"
    ip: IPAction = "ok"
    tls: TLSAction = "ok"
    http: HTTPAction = "ok"
    throttle_kbps: int = 0
    tcp: tuple[TCPRule, ...] = ()
    page_bytes: int = 0
    down: bool = False
    share_ip_with: str = ""
    zone: str = "ok"
    zone_extra: tuple[str, ...] = ()
    redirect: str = ""
    cert: str = "ok"
    redirects: tuple[tuple[str, str], ...] = ()
    vantage_status: str = ""
    input_port: int = 0
    stack: Stack = "v4"
    expect: Expect = "false"
    xfail_reason: str = ""
    xfail_got: str = ""
    note: str = ""
    isp_actions: tuple[tuple[str, Actions], ...] = ()
    vantage_truth: tuple[tuple[str, Truth], ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """The URLs the probe measures for this site (U-label host, as a user would type it)."""
        hostport = self.display if not self.input_port else f"{self.display}:{self.input_port}"
        return tuple(f"{self.scheme}://{hostport}{p}" for p in self.paths)

    @property
    def port(self) -> int:
        return self.input_port or (443 if self.scheme == "https" else 80)

    @property
    def has_v4(self) -> bool:
        return self.stack in ("v4", "dual")

    @property
    def has_v6(self) -> bool:
        return self.stack in ("v6", "dual")

    @property
    def default_actions(self) -> Actions:
        return Actions(dns=self.dns, ip=self.ip, tls=self.tls, http=self.http, throttle_kbps=self.throttle_kbps,
                       tcp=self.tcp)

    def actions(self, isp: str = DEFAULT_ISP) -> Actions:
        """The censor's actions on this site at ISP ``isp``."""
        return dict(self.isp_actions).get(isp, self.default_actions)

    def truth(self, vantage: str = DEFAULT_VANTAGE) -> Truth:
        """The truth at vantage ``vantage``."""
        return dict(self.vantage_truth).get(vantage, Truth(expect=self.expect, xfail_reason=self.xfail_reason,
                                                           xfail_got=self.xfail_got, note=self.note))

    @property
    def censored_l7(self) -> bool:
        """True when the censor must see this site's connections (TLS, HTTP or throttle action)."""
        return self.default_actions.censored_l7

    @property
    def dns_blockpage_ip(self) -> str | None:
        """The address of a ``blockpage:<ip>`` DNS action, else None."""
        return self.dns.split(":", 1)[1] if self.dns.startswith("blockpage:") else None


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A whole scenario (see the module doc). ``path`` is the file it came from."""

    name: str
    description: str = ""
    latency_ms: float = 0.0
    trust_mitm_root: bool = False
    outage: bool = False
    helper: str = "ok"
    doh: str = "ok"
    sites: tuple[Site, ...] = ()
    path: str = ""
    isps: tuple[ISP, ...] = (ISP(),)
    vantages: tuple[Vantage, ...] = (Vantage(),)

    def site(self, domain: str) -> Site:
        """The site with this domain (A-label or as written). Raises KeyError."""
        a = to_alabel(domain)
        for s in self.sites:
            if s.domain == a:
                return s
        raise KeyError(domain)

    def isp(self, name: str) -> ISP:
        """The ISP named ``name``. Raises KeyError."""
        for i in self.isps:
            if i.name == name:
                return i
        raise KeyError(name)

    def vantage(self, name: str) -> Vantage:
        """The vantage named ``name``. Raises KeyError."""
        for v in self.vantages:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def mitm_roots(self) -> tuple[str, ...]:
        """Names of the interception roots the scenario uses ("qaznet", "isca")."""
        return tuple(sorted({a.tls.split(":", 1)[1] for s in self.sites for i in self.isps
                             for a in (s.actions(i.name),) if a.tls.startswith("mitm:")}))

    @property
    def dns64_prefixes(self) -> tuple[str, ...]:
        """The NAT64 prefixes of the ISPs' DNS64 resolvers, without duplicates."""
        return tuple(dict.fromkeys(i.dns64 for i in self.isps if i.dns64))

    @property
    def default_world(self) -> bool:
        """True for the one-ISP, one-vantage, IPv4-only world of a scenario without [[isp]]/[[vantage]]."""
        return self.isps == (ISP(),) and self.vantages == (Vantage(),)


def nat64_address(prefix: str, ipv4: str) -> str:
    """The IPv4 address ``ipv4`` embedded in the NAT64 ``prefix`` (RFC 6052 §2.2; bits 64-71 stay 0).

    Raises:
        ValueError: a prefix length RFC 6052 does not allow, or not IPv6/IPv4.
    """
    net = ipaddress.IPv6Network(prefix)
    v4 = ipaddress.IPv4Address(ipv4).packed
    n = net.prefixlen
    if n not in NAT64_PREFIX_LENGTHS:
        raise ValueError(f"NAT64 prefix {prefix}: length must be one of {NAT64_PREFIX_LENGTHS}")
    b = bytearray(net.network_address.packed)
    pos = n // 8
    for byte in v4:
        if pos == 8:  # bits 64..71 (the "u" octet) are zero
            pos = 9
        b[pos] = byte
        pos += 1
    return str(ipaddress.IPv6Address(bytes(b)))


def to_alabel(domain: str) -> str:
    """IDNA 2008 A-label of ``domain`` (UTS #46 mapping first), lowercase: :func:`probe.names.to_alabel`.

    Raises:
        ValueError: not a valid host name.
    """
    try:
        return _names_to_alabel(domain)
    except HostError as exc:
        raise ValueError(f"not a valid domain name {domain!r}: {exc.reason}") from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check(cond: bool, file: str, where: str, msg: str) -> None:
    if not cond:
        raise ScenarioError(file, where, msg)


def _typed(value: Any, typ: type, file: str, where: str) -> Any:
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    _check(ok, file, where, f"expected {typ.__name__}, got {value!r}")
    return value


def _choice(value: Any, choices: tuple[str, ...], file: str, where: str) -> str:
    if value is False and "false" in choices:  # expect = false (TOML boolean) reads naturally
        return "false"
    _check(isinstance(value, str) and value in choices, file, where,
           f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _dns_action(value: Any, file: str, where: str) -> str:
    _check(isinstance(value, str), file, where, f"expected a string, got {value!r}")
    if value in DNS_SIMPLE:
        return value
    if value.startswith("blockpage:"):
        try:
            ip = ipaddress.ip_address(value.split(":", 1)[1])
        except ValueError:
            raise ScenarioError(file, where, f"blockpage:<ip> needs an IPv4 address, got {value!r}") from None
        _check(ip.version == 4, file, where, f"blockpage:<ip> needs an IPv4 address, got {value!r}")
        _check(ip in BLOCKPAGE_NET, file, where, f"blockpage:<ip> must be in the lab's address range "
                                                 f"{BLOCKPAGE_NET} (the lab serves the blockpage there), got {value!r}")
        return f"blockpage:{ip}"
    if value.startswith("answer:"):
        target = value.split(":", 1)[1]
        try:
            ip = ipaddress.ip_address(target)
        except ValueError:
            try:
                return f"answer:{to_alabel(target)}"  # another site's domain (checked once every site is read)
            except ValueError:
                raise ScenarioError(file, where, f"answer:<target> needs an IPv4 address or a site's domain, "
                                                 f"got {value!r}") from None
        _check(ip.version == 4, file, where, f"answer:<ip> needs an IPv4 address (AAAA lies follow DNS64), "
                                             f"got {value!r}")
        return f"answer:{ip}"
    raise ScenarioError(file, where, f"expected one of {', '.join(DNS_SIMPLE)}, blockpage:<ip> or answer:<ip or site>, "
                                     f"got {value!r}")


def _known_keys(raw: dict[str, Any], known: set[str], file: str, where: str) -> None:
    for k in raw:
        _check(k in known, file, f"{where}: key {k!r}", f"unknown key (known: {', '.join(sorted(known))})")


def _prefix_rules(raw: Any, file: str, where: str) -> tuple[PrefixRule, ...]:
    _check(isinstance(raw, list) and all(isinstance(r, dict) for r in raw), file, f"{where}: key 'tcp'",
           "expected an array of [[isp.tcp]] tables")
    out: list[PrefixRule] = []
    for i, r in enumerate(raw):
        w = f"{where}: tcp #{i + 1}"
        _known_keys(r, _TCP_KEYS | {"prefix"}, file, w)
        for k in ("prefix", "port"):
            _check(k in r, file, f"{w}: key {k!r}", "missing (an [[isp.tcp]] rule names its prefix and port)")
        prefix = _typed(r["prefix"], str, file, f"{w}: key 'prefix'")
        try:
            net = ipaddress.ip_network(prefix)
        except ValueError as exc:
            raise ScenarioError(file, f"{w}: key 'prefix'", f"not an address prefix: {exc}") from None
        (rule,) = _tcp_rules([{k: v for k, v in r.items() if k != "prefix"}], r["port"], file, w, numbered=False)
        pr = PrefixRule(prefix=str(net), port=rule.port, syn=rule.syn, payload=rule.payload,
                        budget_bytes=rule.budget_bytes, delay_ms=rule.delay_ms, loss_pct=rule.loss_pct)
        _check(all((o.prefix, o.port) != (pr.prefix, pr.port) for o in out), file, f"{w}: key 'prefix'",
               f"{pr.prefix} port {pr.port} has two [[isp.tcp]] tables")
        out.append(pr)
    return tuple(out)


def _tcp_rules(raw: Any, default_port: int, file: str, where: str, *, numbered: bool = True) -> tuple[TCPRule, ...]:
    _check(isinstance(raw, list) and all(isinstance(r, dict) for r in raw), file, f"{where}: key 'tcp'",
           "expected an array of [[site.tcp]] tables")
    out: list[TCPRule] = []
    for i, r in enumerate(raw):
        w = f"{where}: tcp #{i + 1}" if numbered else where
        _known_keys(r, _TCP_KEYS, file, w)
        port = _typed(r.get("port", default_port), int, file, f"{w}: key 'port'")
        _check(0 < port < 65536, file, f"{w}: key 'port'", f"must be 1..65535, got {port}")
        budget = _typed(r.get("budget_bytes", 0), int, file, f"{w}: key 'budget_bytes'")
        _check(budget >= 0, file, f"{w}: key 'budget_bytes'", f"must be >= 0, got {budget}")
        delay = _typed(r.get("delay_ms", 0), float, file, f"{w}: key 'delay_ms'")
        _check(0 <= delay <= 5000, file, f"{w}: key 'delay_ms'", f"must be 0..5000 ms, got {delay:g}")
        loss = _typed(r.get("loss_pct", 0), float, file, f"{w}: key 'loss_pct'")
        _check(0 <= loss < 100, file, f"{w}: key 'loss_pct'", f"must be 0..<100 percent, got {loss:g}")
        rule = TCPRule(port=port, syn=_choice(r.get("syn", "ok"), SYN_ACTIONS, file, f"{w}: key 'syn'"),  # type: ignore[arg-type]
                       payload=_choice(r.get("payload", "ok"), PAYLOAD_ACTIONS, file, f"{w}: key 'payload'"),  # type: ignore[arg-type]
                       budget_bytes=budget, delay_ms=delay, loss_pct=loss)
        _check(all(o.port != port for o in out), file, f"{w}: key 'port'", f"port {port} has two [[site.tcp]] tables")
        out.append(rule)
    return tuple(out)


def _actions(raw: dict[str, Any], base: Actions, scheme: str, default_port: int, file: str, where: str) -> Actions:
    throttle = _typed(raw.get("throttle_kbps", base.throttle_kbps), int, file, f"{where}: key 'throttle_kbps'")
    _check(throttle >= 0, file, f"{where}: key 'throttle_kbps'", f"must be >= 0, got {throttle}")
    a = Actions(
        dns=_dns_action(raw.get("dns", base.dns), file, f"{where}: key 'dns'"),
        ip=_choice(raw.get("ip", base.ip), IP_ACTIONS, file, f"{where}: key 'ip'"),  # type: ignore[arg-type]
        tls=_choice(raw.get("tls", base.tls), TLS_ACTIONS, file, f"{where}: key 'tls'"),  # type: ignore[arg-type]
        http=_choice(raw.get("http", base.http), HTTP_ACTIONS, file, f"{where}: key 'http'"),  # type: ignore[arg-type]
        throttle_kbps=throttle,
        tcp=_tcp_rules(raw["tcp"], default_port, file, where) if "tcp" in raw else base.tcp)
    # the proxy answers the handshake itself: the packet engine cannot also sit on that port
    proxy_ports = {p for ports in a.proxy_ports(scheme, default_port) for p in ports}
    for r in a.tcp:
        _check(not (r.port in proxy_ports and (r.needs_engine or r.syn != "ok")), file, f"{where}: key 'tcp'",
               f"port {r.port} also has a censor-proxy action (tls/http/throttle_kbps): the proxy answers its "
               "connections, so per-packet actions there would never apply; use one or the other")
    engine_names = a.tls in ENGINE_TLS or a.http in ENGINE_HTTP
    _check(not (engine_names and a.throttle_kbps), file, f"{where}: key 'throttle_kbps'",
           "cannot throttle a site whose SNI/Host is dropped or FIN'd in path")
    return a


def _truth(raw: dict[str, Any], base: Truth, file: str, where: str) -> Truth:
    expect = _choice(raw["expect"], EXPECTS, file, f"{where}: key 'expect'") if "expect" in raw else base.expect
    inherit = "expect" not in raw
    reason = _typed(raw.get("xfail_reason", base.xfail_reason if inherit else ""), str, file,
                    f"{where}: key 'xfail_reason'")
    got = raw.get("xfail_got", base.xfail_got if inherit else "")
    if got:
        got = _choice(got, EXPECTS, file, f"{where}: key 'xfail_got'")
        _check(bool(reason.strip()), file, f"{where}: key 'xfail_got'", "needs an xfail_reason (why, with its source)")
        _check(got != expect, file, f"{where}: key 'xfail_got'", f"equals expect ({expect!r}): nothing is wrong")
    return Truth(expect=expect, xfail_reason=reason, xfail_got=got,  # type: ignore[arg-type]
                 note=_typed(raw.get("note", base.note), str, file, f"{where}: key 'note'"))


def _check_input(url: str, key: str, file: str, where: str, lead: str = "") -> str:
    """``url``'s input as the probe's list reader makes it from a line of the lab's ``inputs.txt``
    (:func:`probe.targets.targets_from_urls`, the plain-list line check, and the secret shapes that refuse
    a whole list: :mod:`probe.secretlike`), else :class:`ScenarioError` naming ``key`` (its message
    starting with ``lead``: the path)."""
    shape = secret_shape(url)
    if shape is not None:
        raise ScenarioError(file, f"{where}: key {key!r}",
                            f"{lead}the input {url!r} looks like a secret ({SHAPES[shape]}): the probe refuses a list "
                            "holding it")
    try:
        (target,) = targets_from_urls([url], strict=True)
    except TargetError as exc:
        raise ScenarioError(file, f"{where}: key {key!r}",
                            f"{lead}the probe refuses the input {url!r}: {exc.reason}") from None
    return target.input


def _check_inputs(display: str, scheme: str, input_port: int, paths: list[str], file: str, where: str) -> None:
    """Every input of a site (domain, port and each path) is one the probe measures, under the path as
    written: the lab pairs each input with its record by scheme, host and path (:func:`probe.lab.run.compare`).
    Break test 24, finding 6: ``paths = ["/a b"]`` passed, the probe skipped the line of ``inputs.txt`` as
    malformed, and the lab reported "a verdict differs" (or, the only site, the probe refused the list)."""
    hostport = display if not input_port else f"{display}:{input_port}"
    _check_input(f"{scheme}://{hostport}/", "domain", file, where)
    for path in paths:
        url = f"{scheme}://{hostport}{path}"
        measured = urlsplit(_check_input(url, "paths", file, where, f"{path!r}: ")).path
        _check(measured == (urlsplit(url).path or "/"), file, f"{where}: key 'paths'",
               f"{path!r}: the probe measures {url!r} under the path {measured!r}, which the lab cannot pair with "
               f"the path written; write the path as {measured!r}")


def _site(raw: Any, index: int, file: str) -> Site:
    _check(isinstance(raw, dict), file, f"site #{index + 1}", "expected a [[site]] table")
    name = raw.get("domain")
    where = f"site #{index + 1}" + (f" ({name})" if isinstance(name, str) else "")
    _known_keys(raw, _SITE_KEYS, file, where)
    _check("domain" in raw, file, f"{where}: key 'domain'", "missing")
    _check("expect" in raw, file, f"{where}: key 'expect'", "missing (the verdict the probe must give)")
    display = _typed(raw["domain"], str, file, f"{where}: key 'domain'").strip().rstrip(".")
    try:
        domain = to_alabel(display)
    except ValueError as exc:
        raise ScenarioError(file, f"{where}: key 'domain'", str(exc)) from None
    paths = raw.get("paths", ["/"])
    _check(isinstance(paths, list) and paths and all(isinstance(p, str) and p.startswith("/") for p in paths),
           file, f"{where}: key 'paths'", f"expected a non-empty list of paths starting with '/', got {paths!r}")
    _check(len(set(paths)) == len(paths), file, f"{where}: key 'paths'", f"a path is listed twice: {paths!r}")
    page_bytes = _typed(raw.get("page_bytes", 0), int, file, f"{where}: key 'page_bytes'")
    _check(0 <= page_bytes <= MAX_PAGE_BYTES, file, f"{where}: key 'page_bytes'",
           f"must be 0..{MAX_PAGE_BYTES} bytes, got {page_bytes}")
    share = _typed(raw.get("share_ip_with", ""), str, file, f"{where}: key 'share_ip_with'")
    if share:
        try:
            share = to_alabel(share)
        except ValueError as exc:
            raise ScenarioError(file, f"{where}: key 'share_ip_with'", str(exc)) from None
    zone = _typed(raw.get("zone", "ok"), str, file, f"{where}: key 'zone'")
    if zone not in ZONE_KINDS:
        try:
            zone = str(ipaddress.ip_address(zone))
        except ValueError:
            raise ScenarioError(file, f"{where}: key 'zone'",
                                f"expected {', '.join(ZONE_KINDS)} or an IP address, got {zone!r}") from None
    extra = raw.get("zone_extra", [])
    _check(isinstance(extra, list) and all(isinstance(a, str) for a in extra), file, f"{where}: key 'zone_extra'",
           f"expected a list of IP addresses, got {extra!r}")
    try:
        zone_extra = tuple(dict.fromkeys(str(ipaddress.ip_address(a)) for a in extra))
    except ValueError as exc:
        raise ScenarioError(file, f"{where}: key 'zone_extra'", f"expected IP addresses: {exc}") from None
    _check(not zone_extra or zone == "ok", file, f"{where}: key 'zone_extra'",
           f"goes with zone = \"ok\" (the site's own addresses and these), not zone = {zone!r}")
    scheme = _choice(raw.get("scheme", "https"), ("https", "http"), file, f"{where}: key 'scheme'")
    input_port = _typed(raw.get("port", 0), int, file, f"{where}: key 'port'")
    _check(0 <= input_port < 65536 and input_port not in (53,), file, f"{where}: key 'port'",
           f"must be 1..65535 (0 = the scheme's default), not 53, got {input_port}")
    if input_port == (TLS_PORT if scheme == "https" else HTTP_PORT):
        input_port = 0
    _check(input_port != (HTTP_PORT if scheme == "https" else TLS_PORT), file, f"{where}: key 'port'",
           f"every lab site address serves plain HTTP on {HTTP_PORT} and TLS on {TLS_PORT}: "
           f"{scheme}://…:{input_port} cannot be served there")
    port = input_port or (TLS_PORT if scheme == "https" else HTTP_PORT)
    _check_inputs(display, scheme, input_port, paths, file, where)
    redirects_raw = raw.get("redirects", {})
    _check(isinstance(redirects_raw, dict) and all(isinstance(k, str) and k.startswith("/") and isinstance(v, str)
                                                   for k, v in redirects_raw.items()),
           file, f"{where}: key 'redirects'", "expected a table of path (starting with '/') = Location (a string)")
    vantage_status = _typed(raw.get("vantage_status", ""), str, file, f"{where}: key 'vantage_status'")
    _check(vantage_status in VANTAGE_STATUS, file, f"{where}: key 'vantage_status'",
           f"expected one of {', '.join(repr(v) for v in VANTAGE_STATUS)}, got {vantage_status!r}")
    acts = _actions(raw, Actions(), scheme, port, file, where)
    truth = _truth(raw, Truth(), file, where)
    isp_raw = raw.get("isp", {})
    _check(isinstance(isp_raw, dict) and all(isinstance(v, dict) for v in isp_raw.values()), file,
           f"{where}: key 'isp'", "expected [site.isp.<name>] tables")
    isp_actions = []
    for isp_name, sub in isp_raw.items():
        w = f"{where}: isp {isp_name!r}"
        _known_keys(sub, _ACTION_KEYS, file, w)
        isp_actions.append((isp_name, _actions(sub, acts, scheme, port, file, w)))
    v_raw = raw.get("vantage", {})
    _check(isinstance(v_raw, dict) and all(isinstance(v, dict) for v in v_raw.values()), file,
           f"{where}: key 'vantage'", "expected [site.vantage.<name>] tables")
    vantage_truth = []
    for v_name, sub in v_raw.items():
        w = f"{where}: vantage {v_name!r}"
        _known_keys(sub, _TRUTH_KEYS, file, w)
        vantage_truth.append((v_name, _truth(sub, truth, file, w)))
    return Site(
        domain=domain, display=display, scheme=scheme, paths=tuple(paths),  # type: ignore[arg-type]
        dns=acts.dns, ip=acts.ip, tls=acts.tls, http=acts.http, throttle_kbps=acts.throttle_kbps, tcp=acts.tcp,
        page_bytes=page_bytes,
        down=_typed(raw.get("down", False), bool, file, f"{where}: key 'down'"),
        share_ip_with=share,
        zone=zone,
        zone_extra=zone_extra,
        redirect=_typed(raw.get("redirect", ""), str, file, f"{where}: key 'redirect'"),
        cert=_choice(raw.get("cert", "ok"), CERT_SHAPES, file, f"{where}: key 'cert'"),
        redirects=tuple(redirects_raw.items()), vantage_status=vantage_status, input_port=input_port,
        stack=_choice(raw.get("stack", "v4"), STACKS, file, f"{where}: key 'stack'"),  # type: ignore[arg-type]
        expect=truth.expect, xfail_reason=truth.xfail_reason, xfail_got=truth.xfail_got, note=truth.note,
        isp_actions=tuple(isp_actions), vantage_truth=tuple(vantage_truth),
    )


def _isps(raw: Any, file: str) -> tuple[ISP, ...]:
    if raw is None:
        return (ISP(),)
    _check(isinstance(raw, list) and bool(raw) and all(isinstance(r, dict) for r in raw), file, "[[isp]]",
           "expected an array of [[isp]] tables")
    out: list[ISP] = []
    for i, r in enumerate(raw):
        name = r.get("name")
        where = f"isp #{i + 1}" + (f" ({name})" if isinstance(name, str) else "")
        _known_keys(r, _ISP_KEYS, file, where)
        _check("name" in r, file, f"{where}: key 'name'", "missing")
        name = _typed(r["name"], str, file, f"{where}: key 'name'")
        _check(bool(_NAME.match(name)) and name != "inet", file, f"{where}: key 'name'",
               f"must match [a-z][a-z0-9]{{0,9}} and not be 'inet', got {name!r}")
        _check(all(o.name != name for o in out), file, f"{where}: key 'name'", "duplicate ISP name")
        hops = _typed(r.get("hops", 1), int, file, f"{where}: key 'hops'")
        _check(1 <= hops <= MAX_HOPS, file, f"{where}: key 'hops'", f"must be 1..{MAX_HOPS}, got {hops}")
        hop = _typed(r.get("censor_hop", 1), int, file, f"{where}: key 'censor_hop'")
        _check(1 <= hop <= hops, file, f"{where}: key 'censor_hop'", f"must be 1..hops ({hops}), got {hop}")
        dns64 = _typed(r.get("dns64", ""), str, file, f"{where}: key 'dns64'")
        if dns64:
            try:
                net = ipaddress.IPv6Network(dns64)
            except ValueError as exc:
                raise ScenarioError(file, f"{where}: key 'dns64'", f"not an IPv6 prefix: {exc}") from None
            _check(net.prefixlen in NAT64_PREFIX_LENGTHS, file, f"{where}: key 'dns64'",
                   f"RFC 6052 allows /{', /'.join(map(str, NAT64_PREFIX_LENGTHS))}, got /{net.prefixlen}")
            dns64 = str(net)
        asn = _typed(r.get("asn", f"AS{FIRST_ASN + i}"), str, file, f"{where}: key 'asn'")
        _check(bool(re.fullmatch(r"AS\d{1,10}", asn)), file, f"{where}: key 'asn'", f"expected AS<number>, got {asn!r}")
        onpath = _typed(r.get("dns_onpath", False), bool, file, f"{where}: key 'dns_onpath'")
        out.append(ISP(name=name, hops=hops, censor_hop=hop, dns64=dns64, asn=asn,
                       tcp=_prefix_rules(r.get("tcp", []), file, where), dns_onpath=onpath))
    return tuple(out)


def _vantages(raw: Any, isps: tuple[ISP, ...], file: str) -> tuple[Vantage, ...]:
    if raw is None:
        return (Vantage(isp=isps[0].name),)
    _check(isinstance(raw, list) and bool(raw) and all(isinstance(r, dict) for r in raw), file, "[[vantage]]",
           "expected an array of [[vantage]] tables")
    out: list[Vantage] = []
    for i, r in enumerate(raw):
        name = r.get("name")
        where = f"vantage #{i + 1}" + (f" ({name})" if isinstance(name, str) else "")
        _known_keys(r, _VANTAGE_KEYS, file, where)
        _check("name" in r, file, f"{where}: key 'name'", "missing")
        name = _typed(r["name"], str, file, f"{where}: key 'name'")
        _check(bool(_NAME.match(name)) and name != "inet", file, f"{where}: key 'name'",
               f"must match [a-z][a-z0-9]{{0,9}} and not be 'inet', got {name!r}")
        _check(all(o.name != name for o in out) and all(p.name != name for p in isps), file, f"{where}: key 'name'",
               "duplicate name (vantages and ISPs share one namespace of names)")
        isp = _typed(r.get("isp", isps[0].name), str, file, f"{where}: key 'isp'")
        _check(any(p.name == isp for p in isps), file, f"{where}: key 'isp'",
               f"no [[isp]] named {isp!r} (known: {', '.join(p.name for p in isps)})")
        ipv4 = _typed(r.get("ipv4", True), bool, file, f"{where}: key 'ipv4'")
        ipv6 = _choice(r.get("ipv6", "none"), VANTAGE_IPV6, file, f"{where}: key 'ipv6'")
        _check(ipv4 or ipv6 == "ok", file, f"{where}: key 'ipv6'",
               "a vantage without IPv4 needs ipv6 = \"ok\" (else it has no network at all)")
        out.append(Vantage(name=name, isp=isp, ipv4=ipv4, ipv6=ipv6))  # type: ignore[arg-type]
    return tuple(out)


def parse_scenario(data: dict[str, Any], *, file: str = "<string>") -> Scenario:
    """Validate parsed TOML ``data`` into a :class:`Scenario`.

    Raises:
        ScenarioError: naming ``file``, the site and the key.
    """
    for k in data:
        _check(k in ("scenario", "site", "isp", "vantage"), file, f"table {k!r}",
               "unknown table (known: scenario, site, isp, vantage)")
    head = data.get("scenario")
    _check(isinstance(head, dict), file, "[scenario]", "missing [scenario] table")
    for k in head:
        _check(k in _SCENARIO_KEYS, file, f"[scenario]: key {k!r}",
               f"unknown key (known: {', '.join(sorted(_SCENARIO_KEYS))})")
    _check("name" in head, file, "[scenario]: key 'name'", "missing")
    name = _typed(head["name"], str, file, "[scenario]: key 'name'")
    _check(bool(name.strip()) and "/" not in name, file, "[scenario]: key 'name'", f"bad name {name!r}")
    latency = _typed(head.get("latency_ms", 0), float, file, "[scenario]: key 'latency_ms'")
    _check(0 <= latency <= 5000, file, "[scenario]: key 'latency_ms'", f"must be 0..5000 ms, got {latency:g}")
    description = _typed(head.get("description", ""), str, file, "[scenario]: key 'description'")
    trust = _typed(head.get("trust_mitm_root", False), bool, file, "[scenario]: key 'trust_mitm_root'")
    outage = _typed(head.get("outage", False), bool, file, "[scenario]: key 'outage'")
    helper = _choice(head.get("helper", "ok"), CONTROL_STATES, file, "[scenario]: key 'helper'")  # type: ignore[union-attr]
    doh = _choice(head.get("doh", "ok"), CONTROL_STATES, file, "[scenario]: key 'doh'")  # type: ignore[union-attr]
    isps = _isps(data.get("isp"), file)
    vantages = _vantages(data.get("vantage"), isps, file)
    raw_sites = data.get("site", [])
    _check(isinstance(raw_sites, list), file, "[[site]]", "expected an array of [[site]] tables")
    _check(bool(raw_sites), file, "[[site]]", "no [[site]] table: a scenario needs at least one site to measure")
    sites = [_site(r, i, file) for i, r in enumerate(raw_sites)]
    seen: set[str] = set()
    for s in sites:
        _check(s.domain not in seen, file, f"site {s.display}: key 'domain'", f"duplicate domain (same as {s.domain!r})")
        seen.add(s.domain)
        for isp_name, _a in s.isp_actions:
            _check(any(i.name == isp_name for i in isps), file, f"site {s.display}: isp {isp_name!r}",
                   f"no [[isp]] named {isp_name!r} (known: {', '.join(i.name for i in isps)})")
        for v_name, _t in s.vantage_truth:
            _check(any(v.name == v_name for v in vantages), file, f"site {s.display}: vantage {v_name!r}",
                   f"no [[vantage]] named {v_name!r} (known: {', '.join(v.name for v in vantages)})")
    for s in sites:
        where = f"site {s.display}: key 'share_ip_with'"
        if s.share_ip_with:
            _check(s.share_ip_with in seen and s.share_ip_with != s.domain, file, where,
                   f"{s.share_ip_with!r} is not another site of this scenario")
            other = next(o for o in sites if o.domain == s.share_ip_with)
            _check(not other.share_ip_with, file, where,
                   f"{other.display} itself shares an address: chains are not allowed")
            _check(other.down == s.down, file, where, "sites sharing an address must agree on 'down'")
            _check(other.stack == s.stack, file, where, "sites sharing an address must agree on 'stack'")
        for isp_name, dns_action in [("", s.dns)] + [(i, a.dns) for i, a in s.isp_actions]:
            target = dns_action.split(":", 1)[1] if dns_action.startswith("answer:") else ""
            if not target or _is_ip(target):
                continue
            where = f"site {s.display}: " + (f"isp {isp_name!r}: " if isp_name else "") + "key 'dns'"
            _check(target in seen and target != s.domain, file, where,
                   f"answer:{target}: {target!r} is not another site of this scenario")
            other = next(o for o in sites if o.domain == target)
            _check(other.stack != "v6", file, where, f"answer:{target}: {other.display} has no IPv4 address")
    return Scenario(name=name, description=description, latency_ms=latency, trust_mitm_root=trust, outage=outage,
                    helper=helper, doh=doh,
                    sites=tuple(sites), path=file, isps=isps, vantages=vantages)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a shipped scenario by name (``kz-2021``) or any scenario file by path.

    Raises:
        ScenarioError: unknown name, unreadable file, bad TOML or bad content.
    """
    p = Path(name_or_path)
    if not p.is_file() and "/" not in str(name_or_path) and not str(name_or_path).endswith(".toml"):
        p = SCENARIO_DIR / f"{name_or_path}.toml"
        if not p.is_file():
            raise ScenarioError(str(name_or_path), "name",
                                f"no such shipped scenario (known: {', '.join(shipped_scenarios())})")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(str(p), "file", "not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(p), "file", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ScenarioError(str(p), "file", f"cannot read: {exc.strerror}") from None
    return parse_scenario(data, file=str(p))


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``probe/lab/scenarios/``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
