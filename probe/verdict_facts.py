"""The facts the verdict rules share, computed once per input, lazily (:class:`Facts`).

:mod:`probe.verdict`'s rules are small predicates over these: the probe's addresses and the
control's, DNS consistency, the endpoint that worked, the HTTP comparison of OONI's v0.4
summary (ts-017) … A fact a new rule needs goes here, as a cached property, so every rule
that asks gets the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter, methodcaller
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit

from probe.addresses import Bogons, canonical_ip
from probe.control_result import ControlResult
from probe.failures import DNS_NXDOMAIN
from probe.measure.dns import DNSQuery
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse
from probe.measure.throughput import ThroughputCheck
from probe.mitm import MITMFinding
from probe.nettests.web import EndpointObservation, WebObservations
from probe.packets.proof import InjectorProof
from probe.vocab import DNSConsistency


class _CachedProperty:
    """:func:`functools.cached_property` without its lock: Python 3.11's takes an RLock on every first
    access (~17 a verdict; the lock was removed in 3.12), and a :class:`Facts` lives in one thread."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func
        self.attrname = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.attrname = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.attrname] = self.func(instance)
        return value


if TYPE_CHECKING:
    from functools import cached_property
else:
    cached_property = _CachedProperty

__all__ = ["BODY_PROPORTION_MATCH", "COMMON_HEADERS", "GATES", "STAGES", "Facts", "Gate", "Stage", "VantageStatus",
           "host_of", "http_match"]

#: OONI v0.4 summary: the body-length proportion above which bodies "match" (ts-017).
BODY_PROPORTION_MATCH = 0.7

#: Headers every server sends; OONI compares only the uncommon ones (ts-017).
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires", "x-powered-by",
    "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options", "etag", "x-content-type-options",
    "age", "via", "p3p", "x-xss-protection", "content-language", "cf-ray", "strict-transport-security", "link",
    "x-varnish", "content-length", "connection", "transfer-encoding", "keep-alive", "alt-svc", "report-to", "nel",
})


@dataclass(frozen=True, kw_only=True)
class VantageStatus:
    """What the vantage health check says about the run (see :mod:`probe.health`).

    Attributes:
        offline: True when no canary worked — nothing can be judged.
        control_intercepted_by: issuer DN of the certificate a middlebox presented on
            the control channel, None when the control channel verifies.
        ipv6_usable: False when the vantage has no IPv6 route or cannot reach any IPv6 canary
            (broken IPv6); None = unknown.
        ipv4_usable: False when the vantage has no IPv4 route (an IPv6-only vantage) or cannot
            reach any IPv4 canary; None = unknown.
        resolver_failure: set when every probe-side resolver failed a well-known name
            (see :mod:`probe.health`): DNS failures here are then not evidence.
    """

    offline: bool = False
    control_intercepted_by: str | None = None
    ipv6_usable: bool | None = None
    resolver_failure: str | None = None
    ipv4_usable: bool | None = None

    def family_usable(self, ip: str) -> bool | None:
        """Whether this vantage can use ``ip``'s address family (None = unknown)."""
        return self.ipv6_usable if ":" in ip else self.ipv4_usable



#: Where a rule sits in the measurement: it fixes which facts its verdict carries.
#: ``vantage``: before anything else (no findings); ``mitm``, ``control``: before the DNS
#: comparison (DNS consistency unknown); ``dns``: the DNS comparison (the rule says the
#: consistency); ``transport``, ``http``: after it (the consistency found, and the throughput note).
Stage = Literal["vantage", "mitm", "control", "dns", "transport", "http"]
STAGES: tuple[Stage, ...] = ("vantage", "mitm", "control", "dns", "transport", "http")

#: The facts a rule may name as its precondition (``@rule(needs=...)`` in :mod:`probe.verdict`): plain
#: attributes of :class:`Facts`, each computed in ``__init__``. A rule that names one gives no verdict
#: when it is false, so the judge tries such a rule only when it is true.
Gate = Literal["vantage_unusable", "mitm", "no_control", "unresolved", "packet_dns", "bogon_answers", "injection",
               "dns_blockpages", "no_endpoint", "none_worked", "tls_bad", "unfetched", "fetch_failed", "fetched",
               "http_blockpages"]
GATES: tuple[Gate, ...] = get_args(Gate)

_first = itemgetter(0)
_lower = methodcaller("lower")

#: The endpoint sources that are the probe's own addresses (not the control's alone).
_PROBE_SOURCES = ("probe", "both")


class Facts:
    """One input's observations and the facts derived from them, each computed once.

    The facts that cost a few attribute reads, and that most verdicts ask for (the controls, the
    probe's addresses, the endpoint that worked, the HTTP stage's state), are computed in
    ``__init__`` as slots: a cached property's first read costs ~2,500 instructions of descriptor
    machinery (Python 3.11) and each later read ~320, where a plain attribute costs ~60;
    re-judging OONI's measurements reads ~20 facts, ~100 times, a verdict (issue 14 part 7). The
    facts that cost more, or that few verdicts ask for (DNS consistency, the HTTP comparison, the
    reasons' texts), are cached properties, computed when first asked.
    """

    # slots: ~45 attributes a Facts would overflow the 30 keys an instance's inline values share (Python
    # 3.11), making its __dict__ for every verdict; a slot is stored and read without one (the cached
    # properties below keep theirs in __dict__)
    __slots__ = ("obs", "bogons", "vantage", "asn_of", "vantage_unusable", "full", "ctl_usable", "no_control",
                 "ctl_addrs", "canon_ctl", "ctl_dns_failure", "mitm", "probe_addrs", "unresolved", "canon_probe",
                 "bogon_answers", "packet_dns", "injection", "dns_blockpages", "https", "probe_eps", "no_endpoint",
                 "worked", "none_worked", "pin", "tls_failed", "tcp_failed", "tls_bad", "reached", "fetch", "final",
                 "resp", "unfetched", "fetch_failed", "fetched", "http_compared", "http_blockpages", "__dict__")

    def __init__(self, obs: WebObservations, bogons: Bogons, vantage: VantageStatus,
                 asn_of: Callable[[str], str | None] | None = None) -> None:
        self.obs = obs
        self.bogons = bogons
        self.vantage = vantage
        self.asn_of = asn_of
        #: No canary worked, or the control channel's TLS is intercepted: the vantage rules decide.
        self.vantage_unusable = vantage.offline or bool(vantage.control_intercepted_by)

        # --- controls
        ctl = obs.control
        #: The full control (helper) when usable.
        self.full: ControlResult | None = ctl if ctl is not None and ctl.usable else None
        dc = obs.dns_control
        usable = [dc] if dc is not None and dc.usable else []
        if self.full is not None:
            usable.append(self.full)
        #: The usable controls: the DoH control, the helper.
        self.ctl_usable: list[ControlResult] = usable
        self.no_control = not usable
        addrs: set[str] = set()
        for r in usable:
            addrs.update(r.dns_addresses)
        #: Every usable control's addresses, and their canonical forms.
        self.ctl_addrs = addrs
        self.canon_ctl: set[str] = set(map(canonical_ip, addrs))
        #: The control's DNS failure, when no usable control resolved the name.
        self.ctl_dns_failure: str | None = None
        if not addrs:
            self.ctl_dns_failure = next((r.dns_failure for r in usable if r.dns_failure), None)
        #: The first endpoint's chain that carries a known interception root.
        self.mitm: MITMFinding | None = None
        for e in obs.endpoints:
            if e.mitm is not None and e.mitm.mitm:
                self.mitm = e.mitm
                break

        # --- DNS
        #: Every address in the probe's DNS replies, in order; ``unresolved``: none.
        self.probe_addrs: list[str] = list(obs.probe_addresses())
        self.unresolved = not self.probe_addrs
        #: Their canonical forms (:func:`probe.addresses.canonical_ip`), compared with :attr:`canon_ctl`.
        self.canon_probe: set[str] = set(map(canonical_ip, self.probe_addrs))
        #: The probe's answers that are bogons.
        self.bogon_answers: list[str] = [a for a in self.probe_addrs if bogons.is_bogon(a)] if self.probe_addrs else []
        #: The packet proof of an on-path DNS injector, whoever's answer it touched (:attr:`injector`).
        self.packet_dns = obs.packet_dns
        #: The reason text when one query got competing replies, one not the control's; else None.
        self.injection = self._injection()
        #: The probe's answers' blockpage fingerprints (known blockpage addresses).
        self.dns_blockpages = obs.dns_blockpages

        # --- transport
        https = self.https = obs.target.scheme == "https"
        eps: list[EndpointObservation] = []
        worked: list[EndpointObservation] = []
        for e in obs.endpoints:
            if not e.tls_check and e.source in _PROBE_SOURCES:
                eps.append(e)
                if e.tls_ok if https else e.tcp_ok:
                    worked.append(e)
        #: The probe's own endpoints (its addresses, not the TLS checks), and those that worked.
        self.probe_eps = eps
        self.no_endpoint = not eps
        self.worked = worked
        self.none_worked = not worked
        #: The endpoint the rest of the test trusts: the first of the probe's that worked.
        pin = self.pin = worked[0] if worked else None
        #: Nothing worked, and this endpoint connected but its handshake with the target SNI failed.
        self.tls_failed: EndpointObservation | None = None if worked else next(
            (e for e in eps if e.tcp_ok and e.tls is not None and e.tls.failure), None)
        #: Some probe endpoint, none worked, none even got to a TLS failure: TCP failed everywhere.
        self.tcp_failed = bool(eps) and not worked and self.tls_failed is None
        #: https, and the endpoint that worked presents a certificate that does not verify.
        self.tls_bad = https and pin is not None and pin.tls is not None and pin.tls.verification_failure is not None

        # --- HTTP
        #: An endpoint worked and (https) its certificate verifies: the HTTP stage applies.
        reached = self.reached = pin is not None and not self.tls_bad
        fetch: HTTPFetch | None = obs.http
        final: HTTPRequest | None = fetch.final if fetch is not None else None
        resp: HTTPResponse | None = final.response if final is not None else None
        #: The probe's fetch, its last hop, that hop's response.
        self.fetch, self.final, self.resp = fetch, final, resp
        #: An endpoint worked but no fetch was made (cut short).
        self.unfetched = reached and fetch is None
        #: The HTTP stage got no response / got one.
        self.fetch_failed = reached and fetch is not None and (bool(fetch.failure) or resp is None)
        self.fetched = reached and fetch is not None and not fetch.failure and resp is not None
        #: A response here and a working HTTP fetch at the control: the pages can be compared.
        f = self.full
        self.http_compared = self.fetched and f is not None and f.http is not None and f.http.failure is None
        #: The response's blockpage fingerprints (false-positive signatures included).
        self.http_blockpages = obs.http_blockpages

    def no_helper(self) -> str:
        """Why there is no full control: none configured, or the configured helper failed (says how)."""
        ctl = self.obs.control
        if ctl is None:
            return "no helper configured"
        if ctl.failure:
            return f"the control helper failed ({ctl.failure})"
        return "the control helper gave no result for this step"

    # --- DNS
    @cached_property
    def dns_failures(self) -> str:
        return ", ".join(sorted({q.failure for q in self.obs.queries if q.failure}) or ["no answer"])

    @cached_property
    def injector(self) -> InjectorProof | None:
        """The packet proof of an on-path DNS injector (:attr:`WebObservations.packet_dns`) when
        the probe's own DNS is its work: the probe got the injected addresses, or NXDOMAIN like the
        forged one, or — with a usable control — addresses neither the control's nor vindicated by
        TLS (injectors such as the GFW's give other forged addresses to each query). None when
        the probe's answer stands (an injector elsewhere on the path did not touch it)."""
        p = self.obs.packet_dns
        if p is None:
            return None
        mine = self.canon_probe
        if mine & {canonical_ip(a) for a in p.answers}:
            return p
        if not mine:
            nxd = any(q.failure == DNS_NXDOMAIN for q in self.obs.queries)
            return p if p.nxdomain and nxd else None
        return p if self.ctl_usable and self.inconsistent else None

    @cached_property
    def truncated(self) -> list[DNSQuery]:
        """Failed queries whose reply was truncated (TC bit): their TCP retry failed."""
        return [q for q in self.obs.queries if q.failure and any((r.flags or 0) & 0x0200 for r in q.replies)]

    def _injection(self) -> str | None:
        """:attr:`injection` (in ``__init__``: for OONI's queries, which carry no replies, a loop that skips them)."""
        for q in self.obs.queries:
            if len(q.replies) < 2:  # both verdicts below need two UDP replies (OONI's queries carry none)
                continue
            # competing datagrams only: a TCP retry after truncation (RFC 7766) and the
            # truncated reply itself are one answer, not two
            udp = [r for r in q.replies if not r.source.startswith("tcp:") and not (r.flags or 0) & 0x0200]
            sets = [frozenset(canonical_ip(a.address) for a in r.answers if a.address) for r in udp]
            sets = [s for s in sets if s]
            unparseable = [r for r in udp if r.parse_error]
            # a forged NXDOMAIN racing an answer: one reply says the name does not exist, another
            # carries addresses (FC-06: the injector answers first, the genuine reply follows)
            nx = [r for r in udp if r.rcode == "NXDOMAIN" and not r.answers]
            if nx and sets and len(udp) > 1:
                shown = ", ".join(sorted({a for s in sets for a in s}))
                first = "first" if udp[0].rcode == "NXDOMAIN" else "later"
                return (f"DNS injection: {len(q.replies)} replies to one {q.query_type} query to "
                        f"{q.resolver_address}: NXDOMAIN ({first}) and an answer ({shown}) to the same query")
            if len(udp) > 1 and (len(set(sets)) > 1 or unparseable):
                foreign = sorted({a for s in sets for a in s} - self.canon_ctl)
                if foreign or unparseable:
                    what = f"{len(q.replies)} replies to one {q.query_type} query to {q.resolver_address}"
                    extra = f", {len(unparseable)} unparseable" if unparseable else ""
                    return f"DNS injection: {what}{extra}; answers not seen by the control: " \
                           f"{', '.join(foreign) or 'none parseable'}"
        return None

    @cached_property
    def same_asn(self) -> set[str]:
        """ASNs that hold both a probe answer and a control answer (empty without a database).

        OONI's rule (ts-017 web_connectivity "DNS consistency": answers in the same ASN as the
        control's are consistent; probe-cli's DNS analysis checks it before TLS validity): a CDN
        answering each resolver from another address of its own network is not DNS tampering."""
        if self.asn_of is None or not self.ctl_addrs:
            return set()
        public = [a for a in self.probe_addrs if not self.bogons.is_bogon(a)]
        mine = {self.asn_of(a) for a in public}
        theirs = {self.asn_of(a) for a in self.ctl_addrs if not self.bogons.is_bogon(a)}
        return {a for a in mine & theirs if a and a != "AS0"}

    @cached_property
    def consistency(self) -> DNSConsistency:
        """After the DNS rules: overlap with the control, the same ASN as the control's answers
        (OONI), or verified TLS for the name (CDN/GeoDNS, FC-02)."""
        if self.canon_probe & self.canon_ctl:
            return "consistent"
        if self.same_asn:
            return "consistent"
        if self.verified_elsewhere:
            return "consistent"
        return "inconsistent"

    @property
    def consistency_before_dns(self) -> DNSConsistency:
        """For a verdict decided before the DNS rules (interception by a known root): the answers
        are ``consistent`` when they overlap the control's or share its ASN (ts-017's test, which
        OONI applies whatever the TLS outcome), else ``unknown`` — the DNS rules did not run, so
        an answer that differs is not called inconsistent here."""
        if not self.probe_addrs or not self.canon_ctl:
            return "unknown"
        if self.canon_probe & self.canon_ctl or self.same_asn:
            return "consistent"
        return "unknown"

    @cached_property
    def verified_elsewhere(self) -> bool:
        """The probe's (non-overlapping) addresses verify by TLS for the name (FC-02) — an address
        only the vantage can reach (:attr:`relay_addrs`) is the ISP's relay, not the site's."""
        if self.canon_probe & self.canon_ctl:
            return False
        relays = {canonical_ip(a) for a in self.relay_addrs}
        return any(e.tls is not None and e.tls.verified and e.source in ("probe", "both")
                   and not self.bogons.is_bogon(e.ip) and canonical_ip(e.ip) not in relays
                   for e in self.obs.endpoints)

    @cached_property
    def relay_addrs(self) -> list[str]:
        """The probe's answers that are not the control's, that the vantage connected to, and that
        the helper could not connect to from outside while it did connect to the control's own
        addresses: an address inside the vantage's ISP (a relay or transparent proxy the DNS points
        at: webconnectivityqa dnsHijackingToProxyWithHTTP(S)URL, FC-04), not a CDN node of the site."""
        f = self.full
        if f is None or not self.canon_ctl:
            return []
        ces = list(f.endpoints.values())
        if not any(ce.tcp_failure is None and canonical_ip(ce.ip) in self.canon_ctl for ce in ces):
            return []
        out = []
        for a in self.probe_addrs:
            ca = canonical_ip(a)
            if ca in self.canon_ctl or self.bogons.is_bogon(a):
                continue
            mine = [e for e in self.obs.endpoints if canonical_ip(e.ip) == ca and not e.tls_check]
            theirs = [ce for ce in ces if canonical_ip(ce.ip) == ca]
            if mine and any(e.tcp_ok for e in mine) and theirs and all(ce.tcp_failure for ce in theirs):
                out.append(a)
        return out

    @cached_property
    def inconsistent(self) -> bool:
        return self.consistency == "inconsistent"

    def findings(self, stage: Stage) -> tuple[str, ...]:
        """The secondary observations a verdict of ``stage`` carries."""
        if stage == "vantage":
            return ()
        out: list[str] = []
        if self.obs.control is not None and not self.obs.control.usable:
            out.append(f"helper control unusable ({self.obs.control.failure})")
        if stage in ("dns", "transport", "http") and self.probe_addrs:
            for e in self.obs.endpoints:
                if e.tls_check:
                    continue
                if not e.tcp_ok and e.tcp is not None:
                    out.append(f"tcp_ip: {e.address} {e.tcp.failure} ({e.source} address)")
                elif e.tls is not None and e.tls.failure and not e.tls.connect_failure:
                    out.append(f"tls: {e.address} {e.tls.failure} with SNI {e.tls.server_name}")
        # the non-global answers the control gave too (dns.bogon judges any other before these stages)
        own = sorted({a for a in self.bogon_answers if canonical_ip(a) in self.canon_ctl}) if self.bogon_answers else ()
        if stage in ("transport", "http") and own:
            out.append(f"the DNS answers also hold non-global addresses ({', '.join(own)}), as the control's do: "
                       "the verdict rests on the global ones")
        if stage in ("transport", "http") and self.verified_elsewhere:
            other = sorted({a for a in self.probe_addrs if canonical_ip(a) not in self.canon_ctl})
            out.append(f"DNS answers differ from the control's ({', '.join(other)}) but verify by TLS for the "
                       "name (CDN/GeoDNS, or a relay passing TLS through to the genuine site)")
        return tuple(dict.fromkeys(out))

    # --- transport
    @cached_property
    def first_failure(self) -> str:
        for e in self.probe_eps:
            if e.tls is not None and e.tls.failure:
                return e.tls.failure
            if e.tcp is not None and e.tcp.failure:
                return e.tcp.failure
        return "unknown"

    @property
    def genuine_tls(self) -> bool:
        """The page came over TLS that verified for its name: the pin verified, and the fetch's final
        hop (when there is one) is https — a redirect to http:// hands the page to the path again
        (lab scenario http-redirects, to-http-unknown)."""
        pin = self.pin
        final = self.final
        return (self.https and pin is not None and pin.tls is not None and pin.tls.verified
                and (final is None or final.url.startswith("https://")))

    # --- HTTP
    @cached_property
    def http_failure(self) -> str:
        assert self.fetch is not None
        return self.fetch.failure or (self.final.failure if self.final else None) or "unknown"

    @cached_property
    def match(self) -> tuple[bool, str]:
        assert self.resp is not None and self.full is not None
        return http_match(self.resp, self.full)

    @property
    def throughput(self) -> ThroughputCheck | None:
        return self.obs.throughput


def norm_title(t: str | None) -> str:
    return " ".join((t or "").split()).casefold()


@lru_cache(maxsize=4096)  # the same URLs recur across measurements; urlsplit's .hostname parses each time
def host_of(url: str | None) -> str:
    return (urlsplit(url).hostname or "") if url else ""


def http_match(resp: HTTPResponse, full: ControlResult) -> tuple[bool, str]:
    """OONI v0.4 summary: status equal and (body proportion > 0.7, or uncommon headers equal, or title equal)."""
    assert full.http is not None
    ch = full.http
    status = resp.status_code == ch.status_code
    body = None
    if not resp.body_truncated and not ch.body_truncated and ch.body_length is not None:
        big = max(resp.body_length, ch.body_length)
        body = (min(resp.body_length, ch.body_length) / big if big else 1.0) > BODY_PROPORTION_MATCH
    ph = set(map(_lower, map(_first, resp.headers))) - COMMON_HEADERS
    chh = set(map(_lower, map(_first, ch.headers))) - COMMON_HEADERS
    headers = ph == chh
    title = bool(resp.title or ch.title) and norm_title(resp.title) == norm_title(ch.title)
    why = (f"status {resp.status_code}/{ch.status_code}, body {'n/a' if body is None else body}, "
           f"headers {headers}, title {title}")
    return status and (bool(body) or headers or title), why
