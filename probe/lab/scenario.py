"""Lab scenarios: a TOML file that says what the simulated ISP does to each site.

The file is the ground truth of the lab: ``expect`` is the verdict the probe must
give for every input of the site. Format (issue 4)::

    [scenario]
    name = "kz-2021"
    description = "..."
    latency_ms = 30          # one-way client <-> internet, injected by lab servers
    trust_mitm_root = false  # the vantage installed the state root
    outage = false           # everything beyond the ISP drops (A3)

    [[site]]
    domain = "meduza.io"     # IDN allowed (stored as the IDNA 2008 A-label)
    scheme = "https"         # the input's scheme: https | http
    paths = ["/"]
    dns = "ok"               # ok | nxdomain | servfail | timeout | bogon | inject | "blockpage:<ip>"
    ip = "ok"                # ok | blackhole | rst | unreachable
    tls = "sni_timeout"      # ok | sni_timeout | sni_rst | "mitm:qaznet" | "mitm:isca"
    http = "ok"              # ok | blockpage | rst
    throttle_kbps = 0
    page_bytes = 0           # serve pages of at least this many bytes (0 = the small default)
    down = false
    share_ip_with = ""       # another site's domain: same address (collateral blocking)
    expect = "tls"           # false | dns | tcp_ip | tls | tls_mitm | http-failure | http-diff | throttling
                             # | down | inconclusive

A scenario needs at least one ``[[site]]``; domains and paths are unique; ``share_ip_with``
names another site that shares no address itself (no chains, no loops). Any problem raises
:class:`ScenarioError` naming the file, the site and the key.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from probe.errors import KzprobeError
from probe.names import HostError
from probe.names import to_alabel as _names_to_alabel

from probe.vocab import VERDICT_WORDS, VerdictWord

#: Where a ``blockpage:<ip>`` may point: the lab's internet range (``probe.lab.topology.LAB_NET``),
#: where the lab binds the address and serves the ISP's blockpage.
BLOCKPAGE_NET = ipaddress.ip_network("198.18.0.0/15")

DNSAction = str  # "ok" | "nxdomain" | "servfail" | "timeout" | "bogon" | "inject" | "blockpage:<ip>"
IPAction = Literal["ok", "blackhole", "rst", "unreachable"]
TLSAction = Literal["ok", "sni_timeout", "sni_rst", "mitm:qaznet", "mitm:isca"]
HTTPAction = Literal["ok", "blockpage", "rst"]
#: The verdict a site must get (:data:`probe.vocab.VERDICT_WORDS`): a blocking type,
#: "false" = accessible, "down", "inconclusive".
Expect = VerdictWord
Scheme = Literal["https", "http"]

DNS_SIMPLE = ("ok", "nxdomain", "servfail", "timeout", "bogon", "inject")
IP_ACTIONS: tuple[str, ...] = get_args(IPAction)
TLS_ACTIONS: tuple[str, ...] = get_args(TLSAction)
HTTP_ACTIONS: tuple[str, ...] = get_args(HTTPAction)
EXPECTS: tuple[str, ...] = VERDICT_WORDS

#: Largest ``page_bytes`` (bytes): the probe's default body cap (1 MiB); a bigger page
#: only gets truncated, and every lab server holds its pages in memory.
MAX_PAGE_BYTES = 1 << 20

#: Where shipped scenarios live.
SCENARIO_DIR = Path(__file__).with_name("scenarios")

_SCENARIO_KEYS = {"name", "description", "latency_ms", "trust_mitm_root", "outage"}
_SITE_KEYS = {"domain", "scheme", "paths", "dns", "ip", "tls", "http", "throttle_kbps", "page_bytes", "down",
              "share_ip_with", "expect", "note"}


class ScenarioError(KzprobeError, ValueError):
    """A scenario that cannot be used. The message names file, site and key."""

    def __init__(self, file: str, where: str, message: str) -> None:
        super().__init__(f"scenario {file}: {where}: {message}")
        self.file = file
        self.where = where


@dataclass(frozen=True, kw_only=True)
class Site:
    """One target domain of a scenario.

    Attributes:
        domain: the A-label (``xn--80aswg.xn--80ao21a``), lowercase.
        display: the domain as written in the file (U-label for IDNs).
        scheme: the scheme of the inputs the probe measures.
        paths: paths the lab web server serves; one input per path.
        dns, ip, tls, http: the censor's action per layer (module doc).
        throttle_kbps: relay rate for this SNI at the censor, kbit/s; 0 = none.
        page_bytes: the site's pages are at least this long (bytes, ≤ :data:`MAX_PAGE_BYTES`);
            0 = the small default page. Throttling is only judged on a transfer of
            :data:`probe.measure.throughput.MIN_BYTES` or more (FC-19).
        down: the site's own server refuses connections (everyone sees it down).
        share_ip_with: A-label of the site whose address this site shares, "" = own address.
        expect: the verdict the probe must give (truth).
        note: free text shown with the table.
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
    page_bytes: int = 0
    down: bool = False
    share_ip_with: str = ""
    expect: Expect = "false"
    note: str = ""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The URLs the probe measures for this site (U-label host, as a user would type it)."""
        return tuple(f"{self.scheme}://{self.display}{p}" for p in self.paths)

    @property
    def censored_l7(self) -> bool:
        """True when the censor must see this site's connections (TLS, HTTP or throttle action)."""
        return self.tls != "ok" or self.http != "ok" or self.throttle_kbps > 0

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
    sites: tuple[Site, ...] = ()
    path: str = ""

    def site(self, domain: str) -> Site:
        """The site with this domain (A-label or as written). Raises KeyError."""
        a = to_alabel(domain)
        for s in self.sites:
            if s.domain == a:
                return s
        raise KeyError(domain)

    @property
    def mitm_roots(self) -> tuple[str, ...]:
        """Names of the interception roots the scenario uses ("qaznet", "isca")."""
        return tuple(sorted({s.tls.split(":", 1)[1] for s in self.sites if s.tls.startswith("mitm:")}))


def to_alabel(domain: str) -> str:
    """IDNA 2008 A-label of ``domain`` (UTS #46 mapping first), lowercase: :func:`probe.names.to_alabel`.

    Raises:
        ValueError: not a valid host name.
    """
    try:
        return _names_to_alabel(domain)
    except HostError as exc:
        raise ValueError(f"not a valid domain name {domain!r}: {exc.reason}") from None


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
    raise ScenarioError(file, where, f"expected one of {', '.join(DNS_SIMPLE)} or blockpage:<ip>, got {value!r}")


def _site(raw: Any, index: int, file: str) -> Site:
    _check(isinstance(raw, dict), file, f"site #{index + 1}", "expected a [[site]] table")
    name = raw.get("domain")
    where = f"site #{index + 1}" + (f" ({name})" if isinstance(name, str) else "")
    for k in raw:
        _check(k in _SITE_KEYS, file, f"{where}: key {k!r}", f"unknown key (known: {', '.join(sorted(_SITE_KEYS))})")
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
    throttle = _typed(raw.get("throttle_kbps", 0), int, file, f"{where}: key 'throttle_kbps'")
    _check(throttle >= 0, file, f"{where}: key 'throttle_kbps'", f"must be >= 0, got {throttle}")
    page_bytes = _typed(raw.get("page_bytes", 0), int, file, f"{where}: key 'page_bytes'")
    _check(0 <= page_bytes <= MAX_PAGE_BYTES, file, f"{where}: key 'page_bytes'",
           f"must be 0..{MAX_PAGE_BYTES} bytes, got {page_bytes}")
    share = _typed(raw.get("share_ip_with", ""), str, file, f"{where}: key 'share_ip_with'")
    if share:
        try:
            share = to_alabel(share)
        except ValueError as exc:
            raise ScenarioError(file, f"{where}: key 'share_ip_with'", str(exc)) from None
    return Site(
        domain=domain, display=display,
        scheme=_choice(raw.get("scheme", "https"), ("https", "http"), file, f"{where}: key 'scheme'"),  # type: ignore[arg-type]
        paths=tuple(paths),
        dns=_dns_action(raw.get("dns", "ok"), file, f"{where}: key 'dns'"),
        ip=_choice(raw.get("ip", "ok"), IP_ACTIONS, file, f"{where}: key 'ip'"),  # type: ignore[arg-type]
        tls=_choice(raw.get("tls", "ok"), TLS_ACTIONS, file, f"{where}: key 'tls'"),  # type: ignore[arg-type]
        http=_choice(raw.get("http", "ok"), HTTP_ACTIONS, file, f"{where}: key 'http'"),  # type: ignore[arg-type]
        throttle_kbps=throttle,
        page_bytes=page_bytes,
        down=_typed(raw.get("down", False), bool, file, f"{where}: key 'down'"),
        share_ip_with=share,
        expect=_choice(raw["expect"], EXPECTS, file, f"{where}: key 'expect'"),  # type: ignore[arg-type]
        note=_typed(raw.get("note", ""), str, file, f"{where}: key 'note'"),
    )


def parse_scenario(data: dict[str, Any], *, file: str = "<string>") -> Scenario:
    """Validate parsed TOML ``data`` into a :class:`Scenario`.

    Raises:
        ScenarioError: naming ``file``, the site and the key.
    """
    for k in data:
        _check(k in ("scenario", "site"), file, f"table {k!r}", "unknown table (known: scenario, site)")
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
    raw_sites = data.get("site", [])
    _check(isinstance(raw_sites, list), file, "[[site]]", "expected an array of [[site]] tables")
    _check(bool(raw_sites), file, "[[site]]", "no [[site]] table: a scenario needs at least one site to measure")
    sites = [_site(r, i, file) for i, r in enumerate(raw_sites)]
    seen: set[str] = set()
    for s in sites:
        _check(s.domain not in seen, file, f"site {s.display}: key 'domain'", f"duplicate domain (same as {s.domain!r})")
        seen.add(s.domain)
    for s in sites:
        where = f"site {s.display}: key 'share_ip_with'"
        if s.share_ip_with:
            _check(s.share_ip_with in seen and s.share_ip_with != s.domain, file, where,
                   f"{s.share_ip_with!r} is not another site of this scenario")
            other = next(o for o in sites if o.domain == s.share_ip_with)
            _check(not other.share_ip_with, file, where, f"{other.display} itself shares an address: chains are not allowed")
            _check(other.down == s.down, file, where, "sites sharing an address must agree on 'down'")
    return Scenario(name=name, description=description, latency_ms=latency, trust_mitm_root=trust, outage=outage,
                    sites=tuple(sites), path=file)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a shipped scenario by name (``kz-2021``) or any scenario file by path.

    Raises:
        ScenarioError: unknown name, unreadable file, bad TOML or bad content.
    """
    p = Path(name_or_path)
    if not p.is_file() and "/" not in str(name_or_path) and not str(name_or_path).endswith(".toml"):
        p = SCENARIO_DIR / f"{name_or_path}.toml"
        if not p.is_file():
            raise ScenarioError(str(name_or_path), "name", f"no such shipped scenario (known: {', '.join(shipped_scenarios())})")
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
