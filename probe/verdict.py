"""Verdicts: observations + controls → ``blocking``, ``accessible``, a reason, the rule that decided.

``blocking`` is OONI's (web_connectivity, ts-017) made finer — :data:`probe.vocab.Blocking`:
``False`` (no blocking), ``"dns"``, ``"tcp_ip"``, ``"tls"``, ``"http-failure"``, ``"http-diff"``,
plus kzprobe's ``"tls_mitm"`` (interception) and ``"throttling"`` (reachable, but slowed down
on purpose: ``accessible`` is True); ``None`` means inconclusive.

The rules are data: :data:`RULES` is an ordered table of small functions, each decorated
with its id (:class:`probe.vocab.Rule`), its stage and the blocking values it can give, each
with a docstring that says what it decides and its source (an OONI QA expectation, ts-017, a
field case of /work/shared/FIELD-CASES.md, a paper). :func:`judge` tries them in order and
the first that returns a verdict decides: **the order is the precedence**. docs/rules.md is
generated from the table (:func:`rules_markdown`); tests/test_verdict.py has a row for every
rule (a test checks both). To add a rule: add its id to :class:`probe.vocab.Rule`, write a
function ``@rule(Rule.X, stage=..., gives=(...))`` with a docstring naming its source, put it
in :data:`RULES` where it belongs in the precedence, add a CASES row, regenerate docs/rules.md.
A rule that can only decide when a fact holds names it (``needs="fetched"``, one of
:data:`probe.verdict_facts.GATES`): the judge then skips the run of such rules at once when the fact
is false, the same verdict for less work (tests/test_verdict_walk.py checks both claims).

The facts the rules share (the probe's addresses, the control's, DNS consistency, the first
endpoint that worked, the HTTP comparison …) are computed once, lazily, by
:class:`probe.verdict_facts.Facts`; a new rule that needs a new fact adds it there.
DNS consistency is decided by address overlap with the control, then by the probe's
addresses completing a TLS handshake that verifies for the name (OONI v0.5; avoids the CDN
false positives of ooni/probe#1523, FC-02). An inconsistent answer that the rest of the test
cannot vindicate ends as ``dns`` when a later step fails. Without a full control (helper),
steps that need one end ``None`` and say why, except the SNI differential: a handshake with
the target SNI that fails where a benign SNI to the *same address* completes is itself a
same-path control (the method of Censored Planet's Quack/Hyperquack family), so it gives ``tls``.

A slow transfer that gets no throttling verdict is not silent: a verdict of the transport or
HTTP stage says why in its reason (no benign-SNI baseline) or findings (ratio < 10x).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from urllib.parse import urlsplit

from probe.addresses import Bogons, canonical_ip, parse_ip
from probe.control import ControlEndpoint
from probe.failures import (
    ADDRESS_NOT_AVAILABLE,
    CONNECTION_REFUSED,
    DNS_NXDOMAIN,
    GENERIC_TIMEOUT,
    HOST_UNREACHABLE,
    HTTP_INVALID_REDIRECT,
    LOCAL_NETWORK_REFUSED,
)
from probe.fastrec import builder
from probe.fingerprints import cdn_server_block, match_dns
from probe.localnet import R_PRIVATE_FROM_PUBLIC, R_VANTAGE_LAN
from probe.measure.http import HTTPRequest
from probe.measure.throughput import STEADY_STALL_S, THROTTLING_RATIO, ThroughputCheck, fmt_rate
from probe.mitm import MITMFinding
from probe.nettests.web import EndpointObservation, WebObservations
from probe.verdict_facts import BODY_PROPORTION_MATCH, COMMON_HEADERS, Facts, Gate, Stage, VantageStatus, host_of
from probe.vocab import Blocking, DNSConsistency, Rule, is_control_failure

__all__ = ["BODY_PROPORTION_MATCH", "COMMON_HEADERS", "CONTROL_UNTESTED", "DNS_STEP_RULES", "RULES", "Blocking",
           "DNSConsistency", "RuleDef", "Stage", "VantageStatus", "Verdict", "decide", "judge", "rule",
           "rules_markdown"]

#: Control HTTP failures that say the control did not (or could not) reach the site —
#: a redirect its policy refused — not that the site is down.
CONTROL_UNTESTED = frozenset({"http_invalid_redirect_location_host"})


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The judgement of one measurement.

    Attributes:
        blocking: see the module docstring; None = inconclusive.
        accessible: True / False; None = unknown.
        reason: one human sentence with the evidence's numbers and names.
        rule: the rule id that decided (:class:`probe.vocab.Rule`; the table :data:`RULES`).
        dns_consistency: how the probe's DNS compared with the control's.
        findings: secondary observations (e.g. a tcp_ip failure behind a dns verdict).
        server_side: a CDN/WAF server-side block label (FC-13), else None.
        mitm: the interception finding that decided or accompanies the verdict.
    """

    blocking: Blocking
    accessible: bool | None
    reason: str
    rule: str
    dns_consistency: DNSConsistency = "unknown"
    findings: tuple[str, ...] = ()
    server_side: str | None = None
    mitm: MITMFinding | None = None


@dataclass(frozen=True, kw_only=True)
class _Out:
    """What a rule function decides; :func:`decide` adds the rule id and the shared facts."""

    blocking: Blocking
    accessible: bool | None
    reason: str
    dns: DNSConsistency | None = None
    server_side: str | None = None
    mitm: MITMFinding | None = None


_new_out = builder(_Out)
_new_verdict = builder(Verdict)


def _out(blocking: Blocking, accessible: bool | None, reason: str, **kw: object) -> _Out:
    return _new_out(blocking=blocking, accessible=accessible, reason=reason, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the rule table

RuleFn = Callable[[Facts], "_Out | None"]


@dataclass(frozen=True, kw_only=True)
class RuleDef:
    """One row of :data:`RULES`.

    Attributes:
        id: the rule id a verdict carries (several rows may share one: the same conclusion
            reached at two points of the precedence).
        stage: where it sits (:data:`Stage`).
        gives: the blocking values it can give (docs/rules.md; a test checks the cases).
        fn: the predicate: the observations' facts → a verdict, or None to let later rules try.
        needs: a fact (:data:`probe.verdict_facts.GATES`) without which ``fn`` gives no verdict, or None:
            :func:`decide` tries the rule only when it is true (tests/test_verdict_walk.py checks the
            claim on every test case and golden measurement).
    """

    id: Rule
    stage: Stage
    gives: tuple[Blocking, ...]
    fn: RuleFn
    needs: Gate | None = None

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def doc(self) -> str:
        return " ".join((self.fn.__doc__ or "").split())


def rule(rule_id: Rule, *, stage: Stage, gives: tuple[Blocking, ...],
         needs: Gate | None = None) -> Callable[[RuleFn], RuleDef]:
    """Decorator: a rule function becomes a :class:`RuleDef` (put it in :data:`RULES` to use it)."""
    def wrap(fn: RuleFn) -> RuleDef:
        if not (fn.__doc__ or "").strip() or "Source:" not in (fn.__doc__ or ""):
            raise TypeError(f"rule {rule_id} ({fn.__name__}): the docstring must say what it decides and its Source:")
        return RuleDef(id=rule_id, stage=stage, gives=gives, fn=fn, needs=needs)
    return wrap


# --- vantage, interception, controls

@rule(Rule.VANTAGE_OFFLINE, stage="vantage", gives=(None,), needs="vantage_unusable")
def vantage_offline(c: Facts) -> _Out | None:
    """No canary reached its server: nothing can be judged.
    Source: README "Set up and run (fresh machine, Python ≥ 3.11)" (VANTAGE OFFLINE: every verdict
    inconclusive, exit 75); FC-18."""
    if c.vantage.offline:
        return _out(None, None, "vantage offline — nothing can be judged")
    return None


@rule(Rule.VANTAGE_INTERCEPTED, stage="vantage", gives=(None,), needs="vantage_unusable")
def vantage_intercepted(c: Facts) -> _Out | None:
    """The control channel's TLS does not verify here (a middlebox): the control is unusable.
    Source: issue "measuring core" §5 ("no verdict without a control")."""
    if c.vantage.control_intercepted_by:
        return _out(None, None, f"this network intercepts TLS (issuer {c.vantage.control_intercepted_by}): "
                                "the control is unusable")
    return None


@rule(Rule.TLS_MITM_KNOWN_ROOT, stage="mitm", gives=("tls_mitm",), needs="mitm")
def tls_mitm_known_root(c: Facts) -> _Out | None:
    """A chain carries a known Kazakh interception root (by SPKI or by name), even when verification
    passed (the root installed): the chain is the evidence, no control needed.
    Source: Raman et al., "Investigating Large Scale HTTPS Interception in Kazakhstan", IMC 2020."""
    m = c.mitm
    if m is None:
        return None
    verified = any(e.mitm is m and e.tls is not None and e.tls.verified for e in c.obs.endpoints)
    note = " — verification passed: the interception root is installed on this machine" if verified else ""
    return _out("tls_mitm", False, f"{m.reason}{note}", mitm=m)


@rule(Rule.HTTPS_VERIFIED_NO_CONTROL, stage="control", gives=(False,), needs="fetched")
def https_verified_no_control(c: Facts) -> _Out | None:
    """No control is usable (the DoH control and the helper both failed or are absent), but the
    page was fetched over TLS that verifies for the name: no censor on the path can have changed
    it, so it is accessible without a control (the DNS consistency stays unknown). Not when the
    fetch was slow against its benign-SNI baseline (throttling is judged with the control).
    Source: webconnectivityqa controlFailureWithSuccessfulHTTPSWebsite (control_failure set,
    blocking false, accessible true); lab scenario controls-down."""
    if c.ctl_usable or not c.fetched or not c.genuine_tls:
        return None
    t = c.obs.throughput
    if t is not None and t.suspect and t.throttled:
        return None
    return _out(False, True, "fetched over verified TLS; no control was usable (the DNS control failed: "
                f"{c.obs.dns_control.failure or 'none'}; the helper: "
                f"{(c.obs.control.failure or 'unusable') if c.obs.control is not None else 'none'}), "
                "none is needed for a verified page")


@rule(Rule.CONTROL_DNS_FAILED, stage="control", gives=(None,), needs="no_control")
def control_dns_failed(c: Facts) -> _Out | None:
    """Neither the DoH control nor a helper is usable: no DNS control.
    Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null);
    ts-017 (control_failure → no verdict)."""
    if c.ctl_usable or c.injector is not None:  # packet proof needs no control (dns.injector_onpath)
        return None
    why = c.obs.dns_control.failure or "none"
    helper = "none configured" if c.obs.control is None else (c.obs.control.failure or "unusable")
    return _out(None, None, f"control failure: the DNS control failed ({why}) and no usable helper (the helper: "
                f"{helper})")


# --- DNS: no address here

@rule(Rule.DNS_BOTH_FAIL, stage="dns", gives=(False,), needs="unresolved")
def dns_both_fail(c: Facts) -> _Out | None:
    """The probe got no address and the control cannot resolve the name either: down, not blocked.
    Source: ts-017 / OONI v0.4 DNSAnalysis (compatible failures are consistent); webconnectivityqa
    websiteDownNXDOMAIN (blocking false, accessible false)."""
    if c.probe_addrs or not c.ctl_dns_failure:
        return None
    return _out(False, False, f"the name does not resolve from the control either ({c.ctl_dns_failure}); "
                              f"probe: {c.dns_failures}", dns="both_fail")


@rule(Rule.DNS_INJECTOR_ONPATH, stage="dns", gives=("dns",), needs="packet_dns")
def dns_injector_onpath(c: Facts) -> _Out | None:
    """Packet proof: a query for the name sent where no resolver listens (the helper's address,
    port 53) drew a DNS reply — only an on-path injector can send it — and the probe's own DNS
    is its work (the injected addresses, the same forged NXDOMAIN, or, with a control, answers
    neither the control's nor vindicated by TLS). ``dns`` with or without a control, before the
    rules that read the answers: the strongest DNS evidence, and the reason names the injector's
    hop (TTL-limited queries) and the distance its IP TTL gives. It turns a weak case
    (``control.dns_failed``, ``dns.inconsistent_no_control``) into ``dns``; OONI's web test has no
    such step (it only sees duplicate replies, our ``dns.injection``). Source: Pearce et al.,
    "Global Measurement of DNS Manipulation" (Iris), USENIX Security 2017 (probing non-resolvers);
    Anonymous, "Towards a Comprehensive Picture of the Great Firewall's DNS Censorship", FOCI 2014
    (injectors answer queries to any address; hop by IP TTL); net4people/bbs#16 (GFW DNS
    injection); issue 16 part 1; lab scenario packets (dnsinject.example.kz)."""
    p = c.injector
    if p is None:
        return None
    if p.answers and {canonical_ip(a) for a in p.answers} & c.canon_probe:
        mine = f"the probe's resolver gave the injected {', '.join(p.answers)}"
    elif not c.probe_addrs:
        mine = f"the probe's resolver said {c.dns_failures}, as the forged reply (NXDOMAIN)"
    else:
        said = ", ".join(p.answers) or ("NXDOMAIN" if p.nxdomain else "no address")
        mine = (f"the probe's answer ({', '.join(c.probe_addrs)}) differs from the control's "
                f"({', '.join(sorted(c.ctl_addrs)) or c.ctl_dns_failure}); the injected reply said {said}")
    return _out("dns", False, f"DNS injected on path: a query to {p.non_resolver}, where no resolver listens, was "
                              f"answered by an injector {p.distance()}; {mine}", dns="injected")


@rule(Rule.VANTAGE_RESOLVER_BROKEN, stage="dns", gives=(None,), needs="unresolved")
def vantage_resolver_check_failed(c: Facts) -> _Out | None:
    """The probe's DNS failed, and right after, its resolvers also fail a well-known name: a broken
    local resolver, not blocking. Source: FC-18 ("an outage is not censorship"); probe.health."""
    if c.probe_addrs:
        return None
    check = c.obs.resolver_check
    if not check or any(q.addresses() for q in check):
        return None
    why = ", ".join(sorted({q.failure or "no answer" for q in check}))
    return _out(None, None, f"probe DNS failed ({c.dns_failures}), and this vantage's resolvers fail the "
                            f"well-known name {check[0].hostname} right after ({why}): a broken local "
                            "resolver, not evidence of blocking", dns="probe_failure")


@rule(Rule.DNS_TRUNCATED_RETRY_FAILED, stage="dns", gives=(None,), needs="unresolved")
def dns_truncated_retry_failed(c: Facts) -> _Out | None:
    """The resolver's answer was truncated (TC) and its TCP retry failed: a resolver limitation.
    Source: RFC 7766 §5 (a truncated UDP answer must be retried over TCP)."""
    if c.probe_addrs or not c.truncated:
        return None
    return _out(None, None, f"the resolver's answer was truncated and its TCP retry failed "
                            f"({c.truncated[0].failure}): a resolver limitation, not evidence of blocking",
                dns="probe_failure")


@rule(Rule.VANTAGE_RESOLVER_BROKEN, stage="dns", gives=(None,), needs="unresolved")
def vantage_resolver_broken(c: Facts) -> _Out | None:
    """The probe's DNS failed, and the run's health check saw this vantage's resolvers fail a
    well-known name: a broken local resolver, not blocking. Source: FC-18; probe.health."""
    if c.probe_addrs or not c.vantage.resolver_failure:
        return None
    return _out(None, None, f"probe DNS failed ({c.dns_failures}), but this vantage's resolvers also fail a "
                            f"well-known name ({c.vantage.resolver_failure}): a broken local resolver, not "
                            "evidence of blocking", dns="probe_failure")


@rule(Rule.DNS_PROBE_FAILURE, stage="dns", gives=("dns",), needs="unresolved")
def dns_probe_failure(c: Facts) -> _Out | None:
    """Only the probe's resolution failed; the control resolved the name.
    Source: ts-017 (dns_experiment_failure with a resolving control → blocking "dns");
    webconnectivityqa dnsBlockingNXDOMAIN."""
    if c.probe_addrs:
        return None
    return _out("dns", False, f"probe DNS failed ({c.dns_failures}) while the control resolved "
                              f"{', '.join(sorted(c.ctl_addrs))}", dns="probe_failure")


# --- DNS: the answers

@rule(Rule.DNS_SITE_OWN_ANSWER, stage="dns", gives=(False,))
def dns_site_own_answer(c: Facts) -> _Out | None:
    """The probe's answers are exactly the control's, and they are all non-global (127.0.0.1, 0.0.0.0,
    private space) or a global one is a known blockpage address: the site's own DNS says so, seen from
    outside too — a misconfigured (or parked) site, down, not DNS blocking. Answers equal at probe and
    control are the site's own, whatever they are. Not when a global address that is no blockpage's is
    among them (127.0.0.1 and 0.0.0.0 are blockpage fingerprints too, Citizen Lab scope ``br``): the site
    is then judged on its global addresses by the rules after this one (the non-global ones are not
    contacted, kept in ``x_skipped_addresses`` and named in a finding; dns.bogon and dns.blockpage_ip
    leave the answers the control gave too alone), as OONI's classic analysis does: an answer that overlaps the
    control's is consistent, a bogon in it or not, and a final response equal to the control's is
    accessible. Source: webconnectivityqa
    localhostWithHTTP(S) (consistent, blocking false, accessible false); issue 12; probe-cli
    minipipeline dnsComputeSuccessMetricsClassic (address overlap, no bogon check) and
    webconnectivitylte analysisClassicComputeBlockingAccessible (a final response without HTTP diff:
    blocking false, accessible true); break test 24, finding 2 (198.18.7.10 with 10.77.0.1, 127.0.0.1,
    0.0.0.0 … at probe and control, the page fetched: was down). Departs from ooni/data's
    website_experiment_results (any bogon among the answers of a cleartext site: dns.bogon, ok 0)."""
    mine = c.canon_probe
    if not mine or mine != c.canon_ctl:
        return None
    odd = sorted(a for a in c.probe_addrs if c.bogons.is_bogon(a))
    bp = sorted({f.name for f in c.obs.dns_blockpages})
    if not odd and not bp:
        return None
    # a global address among them: the site is judged on it, unless it is a blockpage's
    if len(odd) < len(c.probe_addrs) and not match_dns(a for a in c.probe_addrs if not c.bogons.is_bogon(a)):
        return None
    what = ", ".join(odd) if odd else f"a known blockpage address ({', '.join(bp)})"
    if parse_ip(c.obs.target.domain) is not None:  # no name: the input's own address, no DNS asked
        return _out(False, False, f"the input is the IP address {what} itself (no DNS), the same for the "
                                  "control: the site's own address, down, not blocked", dns="consistent")
    return _out(False, False, f"the name resolves to {what} from the control too: the site's own DNS "
                              "(misconfigured), down, not blocked", dns="consistent")


@rule(Rule.DNS_BOGON, stage="dns", gives=("dns",), needs="bogon_answers")
def dns_bogon(c: Facts) -> _Out | None:
    """A probe answer is a bogon (non-global address) the control did not give. A bogon the control gave
    too is the site's own (dns.site_own_answer, or judged on the global addresses); one it lacks is the
    resolver's, whatever else the control holds: a censor adding or swapping in a private address beside a
    site's own 127.0.0.1 is caught (review 24b, item 1). Source: FC-01, FC-04; ooni/probe#1517;
    webconnectivityqa dnsBlockingBOGON, dnsHijackingToLocalhostWithHTTP(S); ooni/data
    website_experiment_results (a bogon the trusted answers lack: blocked, 0.8)."""
    added = [a for a in c.bogon_answers if canonical_ip(a) not in c.canon_ctl]
    if not added:
        return None
    return _out("dns", False, f"the resolver answered non-global address {', '.join(added)}; the "
                              f"control answered {', '.join(sorted(c.ctl_addrs)) or c.ctl_dns_failure}", dns="bogon")


@rule(Rule.DNS_INJECTION, stage="dns", gives=("dns",), needs="injection")
def dns_injection(c: Facts) -> _Out | None:
    """Several replies to one query disagree and one carries an address the control did not see (or
    cannot be parsed), or one says NXDOMAIN and another carries addresses (a forged NXDOMAIN racing
    the genuine answer, kept by the listening window): on-path injection; the raw replies are kept
    as evidence. Source: FC-06, FC-07; net4people/bbs (GFW and Turkmenistan injectors); lab
    scenario dns-race (webconnectivityqa dnsBlockingNXDOMAIN: the NXDOMAIN alone is "dns")."""
    if c.injection is None:
        return None
    return _out("dns", False, c.injection, dns="injected")


@rule(Rule.DNS_BLOCKPAGE_IP, stage="dns", gives=("dns",), needs="dns_blockpages")
def dns_blockpage_ip(c: Facts) -> _Out | None:
    """A DNS answer the control did not give is a known blockpage address. The control's own answers are
    the site's (dns.site_own_answer, or judged on their global addresses), fingerprinted or not: 127.0.0.1
    and 0.0.0.0 (Citizen Lab scope ``br``) among a site's own answers, where the control sees one more
    round-robin address or the probe one more GeoDNS address, are no blockpage (review 24b, item 2).
    Source: blockpage fingerprints (probe/data: OONI's and Citizen Lab's DNS fingerprints); probe-cli
    minipipeline dnsComputeSuccessMetricsClassic (an answer the control also gave is consistent)."""
    bp = c.obs.dns_blockpages
    if not bp:
        return None
    if c.canon_probe & c.canon_ctl:  # the control's own answers are the site's, fingerprinted or not
        bp = tuple(match_dns(a for a in c.probe_addrs if canonical_ip(a) not in c.canon_ctl))
        if not bp:
            return None
    names = ", ".join(sorted({f.name for f in bp}))
    return _out("dns", False, f"DNS answer is a known blockpage address ({names})", dns="inconsistent")


@rule(Rule.DNS_GHOST, stage="dns", gives=("dns",))
def dns_ghost(c: Facts) -> _Out | None:
    """Every usable control says the name does not exist (NXDOMAIN), yet the probe's resolver answers
    it: the "ghost" answers of a censor still configured for an expired domain. Source: ooni/probe#2308,
    fixed in ooni/probe-cli#961; webconnectivityqa ghostDNSBlockingWithHTTP(S) (blocking "dns")."""
    if not c.probe_addrs or c.ctl_addrs or not c.ctl_usable:
        return None
    if not all(r.dns_failure == DNS_NXDOMAIN for r in c.ctl_usable):
        return None
    return _out("dns", False, f"the resolver answered {', '.join(c.probe_addrs)} for a name every control says does "
                              f"not exist ({DNS_NXDOMAIN}): ghost DNS", dns="inconsistent")


# --- transport: no probe endpoint worked

@rule(Rule.TRANSPORT_NO_ENDPOINT, stage="transport", gives=(None,), needs="no_endpoint")
def transport_no_endpoint(c: Facts) -> _Out | None:
    """The probe resolved the name but none of its addresses was contacted (all skipped: off-limits
    or unsupported family): nothing to judge. Source: README "What a verdict means" (no verdict without evidence);
    ts-017 "Semantics" (blocking null on a measurement failure);
    README "Security: what the probe will and will not touch on your network"."""
    if c.probe_eps:
        return None
    return _out(None, None, "no probe address could be contacted")


def _local_failure(c: Facts, e: EndpointObservation) -> str | None:
    """Why ``e``'s failure is this vantage's own (its routing table, a family it cannot use), else None."""
    failure = (e.tcp.failure if e.tcp is not None else None) or (e.tls.failure if e.tls is not None else None)
    if failure is None:
        return None
    fam = "IPv6" if ":" in e.ip else "IPv4"
    if c.vantage.family_usable(e.ip) is False:
        return f"{e.address} {failure}: this vantage has no usable {fam}"
    if failure == ADDRESS_NOT_AVAILABLE:
        return f"{e.address} {failure}: no {fam} source address on this vantage"
    return None


@rule(Rule.VANTAGE_ADDRESS_FAMILY, stage="transport", gives=(None,), needs="none_worked")
def vantage_address_family(c: Facts) -> _Out | None:
    """Nothing worked, and every failure is the vantage's own: an address family it has no route for
    or whose health check fails (an IPv6-only vantage and an IPv4-only site, broken IPv6), or no source
    address of that family. A vantage missing an address family is never blocking: inconclusive.
    Source: issue 12; ts-017 (a local failure is no anomaly); RFC 8305 (broken IPv6)."""
    if c.worked or not c.probe_eps:
        return None
    local = [_local_failure(c, e) for e in c.probe_eps]
    if not all(local):
        return None
    return _out(None, None, "every address failed for reasons of this vantage's own network ("
                            + "; ".join(str(x) for x in local) + "): nothing can be judged here")


@rule(Rule.DNS_INCONSISTENT_THEN_FAILURE, stage="transport", gives=("dns",), needs="none_worked")
def dns_inconsistent_then_connect_failure(c: Facts) -> _Out | None:
    """The DNS answer differs from the control's and connecting to it failed: the DNS is the cause.
    Source: ts-017 / OONI v0.4 summary (inconsistent DNS followed by a failure → "dns");
    webconnectivityqa tcpBlockingConnectionRefusedWithInconsistentDNS,
    tlsBlockingConnectionResetWithInconsistentDNS."""
    if c.worked or not c.inconsistent:
        return None
    return _out("dns", False, "DNS answer differs from the control's and connecting to it failed "
                              f"({c.first_failure})")


def _sni_keyed(e: EndpointObservation) -> bool | None:
    """True: benign SNI completed where the target SNI failed; False: both failed; None: not tried."""
    if e.tls_benign is None:
        return None
    return e.tls_benign.failure is None or (e.tls_no_sni is not None and e.tls_no_sni.failure is None)


def _tls_reason(e: EndpointObservation) -> str:
    assert e.tls is not None
    diff = {True: "a benign SNI to the same address completes: the block keys on the SNI",
            False: "a benign SNI and no SNI fail too (not SNI-specific)",
            None: "no SNI retry"}[_sni_keyed(e)]
    return f"TLS handshake with SNI {e.tls.server_name} to {e.address} failed ({e.tls.failure}); {diff}"


def _ctl_ep(c: Facts, e: EndpointObservation) -> ControlEndpoint | None:
    return c.full.endpoint(e.ip, e.port) if c.full is not None else None


@rule(Rule.TLS_CONTROL_OK, stage="transport", gives=("tls", "tcp_ip"), needs="none_worked")
def tls_control_ok(c: Facts) -> _Out | None:
    """The handshake with the target SNI failed here, and the helper's handshake with the same SNI to
    the same address works: ``tls`` — or ``tcp_ip`` when a benign SNI and no SNI fail too (the block
    keys on the address, not the name). Source: FC-10; OONI v0.5 analysisFlagTLSBlocking
    (webconnectivityqa tlsBlockingConnectionResetWithConsistentDNS, where OONI says "http-failure")."""
    e = c.tls_failed
    ce = _ctl_ep(c, e) if e is not None else None
    if e is None or ce is None or not ce.tls_ok:
        return None
    return _out("tcp_ip" if _sni_keyed(e) is False else "tls", False, _tls_reason(e) + "; the control's handshake works")


@rule(Rule.TLS_BOTH_FAIL, stage="transport", gives=(False,), needs="none_worked")
def tls_both_fail(c: Facts) -> _Out | None:
    """The handshake fails from the control too: the site is down, not blocked.
    Source: ts-017 / OONI v0.5 (a failure the test helper sees as well is not blocking)."""
    e = c.tls_failed
    ce = _ctl_ep(c, e) if e is not None else None
    if ce is None or not (ce.tls_attempted and ce.tls_failure):
        return None
    return _out(False, False, f"TLS fails from the control too ({ce.tls_failure}): the site is down")


@rule(Rule.TLS_SNI_DIFFERENTIAL, stage="transport", gives=("tls",), needs="none_worked")
def tls_sni_differential(c: Facts) -> _Out | None:
    """No helper verdict, but a benign SNI (or none) to the *same address* completes where the target
    SNI fails: a same-path control. Source: Censored Planet Quack/Hyperquack (VanderSloot et al.
    2018, Raman et al. 2020): the benign-SNI differential; FC-10."""
    e = c.tls_failed
    if e is None or not _sni_keyed(e):
        return None
    return _out("tls", False, _tls_reason(e))


@rule(Rule.TLS_NO_CONTROL, stage="transport", gives=(None,), needs="none_worked")
def tls_no_control(c: Facts) -> _Out | None:
    """The handshake failed, not SNI-specific (or not retried), and no control said whether it works
    from outside. Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null)."""
    e = c.tls_failed
    if e is None:
        return None
    return _out(None, None, _tls_reason(e) + "; no control to tell a down site from a block")


@rule(Rule.TCP_IP_NO_CONTROL, stage="transport", gives=(None,), needs="none_worked")
def tcp_ip_no_control(c: Facts) -> _Out | None:
    """TCP connect failed to every address and there is no helper to test them from outside.
    Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null)
    (a DoH control says nothing about TCP)."""
    if not c.tcp_failed or c.full is not None:
        return None
    return _out(None, None, f"TCP connect failed to every address ({c.first_failure}); {c.no_helper()} to tell "
                            "a site that is down from an IP block")


@rule(Rule.TCP_IP_CONTROL_SILENT, stage="transport", gives=(None,), needs="none_worked")
def tcp_ip_control_silent(c: Facts) -> _Out | None:
    """TCP failed everywhere, and the helper tested none of these addresses (its policy refused them,
    or its endpoint limit). Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null);
    docs/helper-api.md."""
    if not c.tcp_failed or c.full is None or any(_ctl_ep(c, e) is not None for e in c.probe_eps):
        return None
    return _out(None, None, f"TCP connect failed to every address ({c.first_failure}); the control did not "
                            "test these addresses (refused by its policy, or over its endpoint limit)")


@rule(Rule.TCP_IP_CONTROL_OK, stage="transport", gives=("tcp_ip",), needs="none_worked")
def tcp_ip_control_ok(c: Facts) -> _Out | None:
    """TCP connect failed here to addresses the helper connects to: IP blocking.
    Source: ts-017 (blocking "tcp_ip"); webconnectivityqa tcpBlockingConnectTimeout."""
    if not c.tcp_failed:
        return None
    ok = [e for e in c.probe_eps if (ce := _ctl_ep(c, e)) is not None and ce.tcp_failure is None]
    if not ok:
        return None
    return _out("tcp_ip", False, f"TCP connect to {', '.join(e.address for e in ok)} failed here "
                                 f"({c.first_failure}) but works from the control")


@rule(Rule.TCP_IP_BOTH_FAIL, stage="transport", gives=(False,), needs="none_worked")
def tcp_ip_both_fail(c: Facts) -> _Out | None:
    """TCP connect fails from the helper too: the site is down.
    Source: ts-017 / OONI v0.4 summary (a failure the control shares is not blocking);
    webconnectivityqa websiteDownTCPConnect."""
    if not c.tcp_failed:
        return None
    return _out(False, False, f"TCP connect fails from the control too ({c.first_failure}): the site is down")


# --- transport: the endpoint connected; its certificate

def _vf(c: Facts) -> tuple[str, str | None]:
    pin = c.pin
    assert pin is not None and pin.tls is not None
    return pin.tls.verification_failure or "", pin.mitm.issuer if pin.mitm else None


@rule(Rule.TLS_VERIFY_NO_CONTROL, stage="transport", gives=(None,), needs="tls_bad")
def tls_verify_no_control(c: Facts) -> _Out | None:
    """The certificate does not verify and no helper can tell a broken site from interception.
    Source: FC-12 (a broken certificate is not a block); README "What a verdict means" (no verdict
    without a control); webconnectivityqa controlFailureWithSuccessfulHTTPWebsite (control unreachable:
    blocking, accessible null)."""
    if not c.tls_bad or c.full is not None:
        return None
    vf, issuer = _vf(c)
    return _out(None, None, f"certificate does not verify ({vf}, issuer {issuer}); {c.no_helper()} to tell "
                            "a broken site from interception")


@rule(Rule.TLS_UNKNOWN_ISSUER, stage="transport", gives=("tls_mitm",), needs="tls_bad")
def tls_unknown_issuer(c: Facts) -> _Out | None:
    """The certificate does not verify here but the helper gets a valid one from the same address:
    TLS interception by an unknown root. Source: IMC 2020 (Kazakhstan interception); OONI reports it
    as ssl_unknown_authority with a working control (analysisFlagTLSBlocking → http-failure)."""
    if not c.tls_bad or c.pin is None:
        return None
    ce = _ctl_ep(c, c.pin)
    if ce is None or not ce.tls_ok or ce.tls_verification_failure is not None:
        return None
    vf, issuer = _vf(c)
    return _out("tls_mitm", False, f"certificate from issuer {issuer} does not verify here ({vf}) but the "
                                   f"control gets a valid one (issuer {ce.tls_issuer}): TLS interception")


@rule(Rule.DNS_INCONSISTENT_THEN_TLS_INVALID, stage="transport", gives=("dns",), needs="tls_bad")
def dns_inconsistent_then_tls_invalid(c: Facts) -> _Out | None:
    """The probe's resolver sent it to another server (a DNS blockpage host with its own certificate):
    the certificate fails at the control too because it is not the site. Source: lab scenario kz-2021;
    webconnectivityqa badSSLWithUnknownAuthorityWithInconsistentDNS (blocking "dns")."""
    if not c.tls_bad or not c.inconsistent:
        return None
    vf, _ = _vf(c)
    return _out("dns", False, f"DNS answer differs from the control's and the server there presents a "
                              f"certificate that does not verify for the name ({vf})")


@rule(Rule.TLS_BOTH_INVALID, stage="transport", gives=(False,), needs="tls_bad")
def tls_both_invalid(c: Facts) -> _Out | None:
    """The site's certificate does not verify from the control either: misconfigured, not censored.
    Source: FC-12; webconnectivityqa badSSLWithExpiredCertificate, badSSLWithWrongServerName
    (the control fails too: blocking false, accessible false)."""
    if not c.tls_bad:
        return None
    vf, _ = _vf(c)
    return _out(False, False, f"the site's certificate does not verify from the control either ({vf}): "
                              "the site is misconfigured, not censored")


# --- HTTP: the fetch failed

@rule(Rule.HTTP_NOT_ATTEMPTED, stage="http", gives=(None,), needs="unfetched")
def http_not_attempted(c: Facts) -> _Out | None:
    """An endpoint worked but no HTTP fetch was made (cut short, e.g. by the measurement deadline
    before the fetch started): nothing to judge. Source: README "What a verdict means" (no verdict without evidence);
    ts-017 "Semantics" (blocking null on a measurement failure)."""
    if not c.reached or c.fetch is not None:
        return None
    return _out(None, None, "no HTTP fetch was made")


@rule(Rule.DNS_INCONSISTENT_THEN_FAILURE, stage="http", gives=("dns",), needs="fetch_failed")
def dns_inconsistent_then_http_failure(c: Facts) -> _Out | None:
    """The DNS answer differs from the control's and the HTTP fetch there failed.
    Source: ts-017 / OONI v0.4 summary (inconsistent DNS followed by a failure → "dns")."""
    if not c.fetch_failed or not c.inconsistent:
        return None
    return _out("dns", False, f"DNS answer differs from the control's and the HTTP fetch failed ({c.http_failure})")


def _throttling(t: ThroughputCheck) -> _Out:
    """The ``throttling.sni_ratio`` verdict for a check with a ratio ≥ 10."""
    ratio = t.ratio
    assert ratio is not None and t.baseline is not None
    cut = f"; the fetch timed out mid-body ({t.target.failure})" if t.target.failure else ""
    plain = t.url.startswith("http://")
    where = f"{t.ip} over HTTPS (the Host inside TLS)" if plain else t.address
    keys = "plain-HTTP Host" if plain else "SNI"
    return _out("throttling", True,
                f"throttled: the page arrived at {fmt_rate(t.target_bps)} here at best ({t.target.bytes} bytes in "
                f"{t.target.duration_s:.2f} s, then a re-test) but at {fmt_rate(t.baseline.bps)} from the same "
                f"address {where} with the benign SNI {t.baseline_sni} ({ratio:.0f}x, >= "
                f"{THROTTLING_RATIO:.0f}x): the slowdown keys on the {keys}{cut}")


@rule(Rule.THROTTLING_SNI_RATIO, stage="http", gives=("throttling",), needs="fetch_failed")
def throttling_cut_mid_body(c: Facts) -> _Out | None:
    """The fetch timed out mid-body, and the same URL from the same address with a benign SNI arrived
    at least 10x faster (over at least MIN_BYTES each, the slow rate confirmed by a re-test): SNI
    throttling, reachable. Never without that baseline. Source: FC-19; net4people/bbs#382; the method
    of Censored Planet's study of Twitter throttling in Russia (net4people/bbs#65). Departs from OONI:
    webconnectivityqa throttlingWithHTTPS expects "http-failure" (the record's OONI keys say so)."""
    t = c.throughput
    if not c.fetch_failed or c.http_failure != GENERIC_TIMEOUT or t is None or t.target.failure is None \
            or not t.throttled:
        return None
    return _throttling(t)


@rule(Rule.HTTP_SLOW_NO_BASELINE, stage="http", gives=(None,), needs="fetch_failed")
def http_slow_no_baseline(c: Facts) -> _Out | None:
    """A plain-HTTP page was still arriving, steadily, when the fetch timed out mid-body (its last
    byte within STEADY_STALL_S of the deadline), the helper's fetch worked, and no baseline from the
    same address says the site is fast (none fetched, it failed, or it was slow too): inconclusive.
    The helper reports that it got the page, not how fast, so a slow site and a throttled one look
    alike here. A freeze (the body stopped long before the deadline: net4people/bbs#490) stays
    http.failure; a baseline >= 10x faster is throttling (throttling.sni_ratio, before this rule).
    Source: break test (a slow-but-steady site judged "BLOCKED: http-failure"); README "What a verdict
    means" (no verdict without a control); webconnectivityqa controlFailureWithSuccessfulHTTPWebsite
    (control unreachable: blocking, accessible null). Departs from OONI: webconnectivityqa
    throttlingWithHTTP (the path to largefile.com:80 throttled: 300 ms delay, 10 % loss) expects
    "http-failure" from the timeout alone; over HTTPS (throttlingWithHTTPS) kzprobe still follows
    OONI without a baseline."""
    f = c.full
    if not c.fetch_failed or c.http_failure != GENERIC_TIMEOUT or c.fetch is None or f is None \
            or f.http is None or f.http.failure is not None:
        return None
    last = c.fetch.requests[-1]
    stall, got, took = last.body_stall_s, last.body_bytes_received, last.body_duration_s
    if not last.url.startswith("http://") or stall is None or stall > STEADY_STALL_S or not got or took is None:
        return None
    t = c.throughput
    if t is not None and t.throttled:
        return None
    if t is None or t.baseline_sni is None:
        why = "no baseline was fetched"
    elif t.baseline is None or t.ratio is None:
        why = f"the baseline did not complete ({t.baseline_failure or t.note or 'no comparison'})"
    else:
        why = f"the baseline to the same address was slow too ({fmt_rate(t.baseline.bps)})"
    return _out(None, None, f"the plain-HTTP page was still arriving when the fetch timed out ({got} bytes in "
                            f"{took:.1f} s, the last {stall:.2f} s before the deadline) and the control's fetch "
                            f"worked (status {f.http.status_code}), but {why}: a slow site looks like a throttled "
                            f"one, no verdict")


@rule(Rule.HTTP_REDIRECT_INTO_PRIVATE, stage="http", gives=("http-diff",), needs="fetch_failed")
def http_redirect_into_private(c: Facts) -> _Out | None:
    """A plain-HTTP response redirected into private space (RFC 1918/ULA) or the vantage's own network,
    which the probe never follows (probe/localnet.py), while the helper's fetch worked: an ISP
    blockpage on a private address, judged by its address (the Location), not its content.
    Source: issue 11 ("ISP blockpages on private addresses stay visible as evidence"); ts-017 (a
    response that differs from the control's is http-diff), as http.final_host_differs (FC-14)."""
    f = c.full
    if not c.fetch_failed or c.http_failure != LOCAL_NETWORK_REFUSED or f is None or f.http is None \
            or f.http.failure is not None or c.fetch is None or len(c.fetch.requests) < 2:
        return None
    origin, refused = c.fetch.requests[-2], c.fetch.requests[-1]
    where = [a for a, why in refused.refused if why in (R_PRIVATE_FROM_PUBLIC, R_VANTAGE_LAN)]
    if not origin.url.startswith("http://") or not where:
        return None
    return _out("http-diff", False, f"a plain-HTTP response redirected to {', '.join(where)} (private space, not "
                                    f"followed: the address of a blockpage) while the control's fetch worked "
                                    f"(status {f.http.status_code})")


def _redirect_hops(c: Facts) -> tuple[HTTPRequest, HTTPRequest] | None:
    """(the hop that redirected, the redirect target's failed hop) when the fetch failed after a redirect."""
    if not c.fetch_failed or c.fetch is None or len(c.fetch.requests) < 2:
        return None
    origin, last = c.fetch.requests[-2], c.fetch.requests[-1]
    if origin.response is None or last.failure is None:
        return None
    return origin, last


@rule(Rule.HTTP_REDIRECT_BROKEN_GENUINE, stage="http", gives=(False,), needs="fetch_failed")
def http_redirect_broken_genuine(c: Facts) -> _Out | None:
    """The site's own server, over TLS that verified for its name, redirected to a Location that
    cannot be followed (no valid host, a machine-local address): the site's mistake, no censor can
    forge it. Source: issue 12; ts-017 (an https response over a verified channel is not tampered
    with); ooni/probe#2628. Departs from OONI: webconnectivityqa redirectWithBrokenLocationForHTTPS
    expects "http-failure" — a response over verified TLS is the site's own, whatever its Location."""
    if not c.fetch_failed or c.fetch is None or c.fetch.failure != HTTP_INVALID_REDIRECT:
        return None
    # the redirect response itself (not followed), or the hop before a target the policy refused
    origin = next((r for r in reversed(c.fetch.requests) if r.response is not None), None)
    if origin is None or not origin.url.startswith("https://"):
        return None
    assert origin.response is not None
    location = next((v for k, v in origin.response.headers if k.lower() == "location"), "?")
    return _out(False, False, f"the genuine server (TLS verified) at {host_of(origin.url)} redirected to a "
                              f"Location that cannot be followed ({location!r}, {HTTP_INVALID_REDIRECT}, status "
                              f"{origin.response.status_code}): server-side, not censorship")


#: The layer a redirect target's failure belongs to (only failures whose step is unambiguous).
_REDIRECT_LAYER: dict[str, Blocking] = {
    CONNECTION_REFUSED: "tcp_ip", HOST_UNREACHABLE: "tcp_ip",
}


def _redirect_layer(failure: str) -> Blocking:
    if failure.startswith("dns_"):
        return "dns"
    if failure.startswith("ssl_"):
        return "tls"
    return _REDIRECT_LAYER.get(failure, "http-failure")


def _target_layer(c: Facts, last: HTTPRequest) -> tuple[Blocking, str]:
    """(layer, evidence) of a failed redirect target: its failure when unambiguous, else the target's
    endpoint measured again step by step (``WebObservations.redirect_target``)."""
    layer = _redirect_layer(last.failure or "")
    if layer != "http-failure":
        return layer, f"at the {layer} step ({last.failure})"
    e = c.obs.redirect_target
    if e is None:
        return "http-failure", ""
    if not e.tcp_ok:
        why = e.tcp.failure if e.tcp is not None else (e.tls.failure if e.tls is not None else "?")
        return "tcp_ip", f"({last.failure}); measured again, its TCP connect to {e.address} fails ({why})"
    if e.tls is not None and e.tls.failure:
        other = next((h for h in (e.tls_benign, e.tls_no_sni) if h is not None and h.failure is None), None)
        if other is not None:
            sni = other.server_name or "no SNI"
            return "tls", (f"({last.failure}); measured again, the TLS handshake with SNI {e.tls.server_name} to "
                           f"{e.address} fails ({e.tls.failure}) where {sni} to the same address completes")
        return "tcp_ip", (f"({last.failure}); measured again, every TLS handshake to {e.address} fails "
                          f"({e.tls.failure}), whatever the SNI: the block keys on the address")
    return "http-failure", ""


@rule(Rule.HTTP_REDIRECT_TARGET, stage="http", gives=("dns", "tcp_ip", "tls"), needs="fetch_failed")
def http_redirect_target(c: Facts) -> _Out | None:
    """The first response redirected, the redirect target failed, and the helper's fetch of the same
    URL worked: the layer where the target failed decides — a DNS failure of its name ``dns``, a
    refused/unreachable connect ``tcp_ip``, a TLS failure ``tls``. A reset, timeout or EOF of the
    target's hop does not say its step: the probe measures the target's endpoint again (TCP, then
    TLS with its SNI and a benign one) and that decides — connect failed ``tcp_ip``; handshake failed
    with the SNI only ``tls`` (with every SNI ``tcp_ip``); both work ``http-failure`` (the exchange
    itself, rule http.failure). Source: issue 12; ts-017 (blocking names the step that failed);
    webconnectivityqa redirectWithConsistentDNSAndThenConnectionRefusedForHTTP(S),
    redirectWithConsistentDNSAndThenConnectionResetForHTTPS, redirectWithConsistentDNSAndThenTimeoutForHTTPS
    (XBlockingFlags 4: TLS), redirectWithConsistentDNSAndThenNXDOMAIN (OONI says "http-failure" but
    for NXDOMAIN: we depart, naming the layer its own flags name; the record's OONI keys keep OONI's value)."""
    hops = _redirect_hops(c)
    f = c.full
    if hops is None or f is None or f.http is None or f.http.failure is not None:
        return None
    origin, last = hops
    layer, evidence = _target_layer(c, last)
    if layer == "http-failure":
        return None
    return _out(layer, False, f"{host_of(origin.url)} redirected to {last.url}, which failed here {evidence} "
                              f"while the control's fetch worked (status {f.http.status_code})")


@rule(Rule.HTTP_FAILURE, stage="http", gives=("http-failure",), needs="fetch_failed")
def http_failure(c: Facts) -> _Out | None:
    """The HTTP fetch failed here but works from the helper.
    Source: ts-017 (blocking "http-failure"); webconnectivityqa httpBlockingConnectionReset."""
    f = c.full
    if not c.fetch_failed or f is None or f.http is None or f.http.failure is not None:
        return None
    return _out("http-failure", False, f"HTTP fetch failed here ({c.http_failure}) but works from the control "
                                       f"(status {f.http.status_code})")


def _hostless_location(c: Facts) -> str | None:
    """The Location of the probe's last response when it names no host ("http://"): a broken
    redirect, not one a policy refused (whose Location has a host); else None."""
    if c.fetch is None or c.fetch.failure != HTTP_INVALID_REDIRECT:
        return None
    origin = next((r for r in reversed(c.fetch.requests) if r.response is not None), None)
    if origin is None or origin.response is None:
        return None
    location = next((v for k, v in origin.response.headers if k.lower() == "location"), None)
    if location is None:
        return None
    try:
        return location if not urlsplit(location.strip()).hostname else None
    except ValueError:
        return location


@rule(Rule.HTTP_CONTROL_UNTESTED, stage="http", gives=(None,), needs="fetch_failed")
def http_control_untested(c: Facts) -> _Out | None:
    """The HTTP fetch failed here and the helper could not test it (a control failure, or a redirect
    its policy refused). Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null);
    docs/helper-api.md. Not when the probe's own redirect had a Location without a host and the helper
    failed on it alike (http_invalid_redirect_location_host): the helper did test the site, which sent a
    broken redirect to both (rule http.both_fail; ooni/probe#2628)."""
    f = c.full
    if not c.fetch_failed or f is None or f.http is None or f.http.failure is None:
        return None
    if not (is_control_failure(f.http.failure) or f.http.failure in CONTROL_UNTESTED):
        return None
    if f.http.failure == HTTP_INVALID_REDIRECT and _hostless_location(c) is not None:
        return None
    return _out(None, None, f"HTTP fetch failed here ({c.http_failure}); the control could not test it "
                            f"({f.http.failure})")


@rule(Rule.HTTP_BOTH_FAIL, stage="http", gives=(False,), needs="fetch_failed")
def http_both_fail(c: Facts) -> _Out | None:
    """The HTTP fetch fails from the helper too: the site is down.
    Source: ts-017 / OONI v0.4 summary (a failure the control shares is not blocking)."""
    f = c.full
    if not c.fetch_failed or f is None or f.http is None or f.http.failure is None:
        return None
    return _out(False, False, f"HTTP fetch fails from the control too ({f.http.failure}): the site is down")


# --- HTTP: a response

def _real_blockpages(c: Facts) -> str | None:
    # Censored Planet's precedence (censoredplanet-analysis 6e3a5f0): a known false-positive
    # signature (e.g. Akamai "Access Denied ... on this server") overrides generic blockpage
    # signatures matched by the same page.
    if not c.obs.http_blockpages:
        return None
    if any(f.expected_false_positive for f in c.obs.http_blockpages):
        return None
    names = sorted({f.name for f in c.obs.http_blockpages if not f.expected_false_positive})
    return ", ".join(names) or None


@rule(Rule.DNS_BLOCKPAGE_HTTP, stage="http", gives=("dns",), needs="http_blockpages")
def dns_blockpage_http(c: Facts) -> _Out | None:
    """The DNS answer differs from the control's and leads to a page matching a blockpage fingerprint:
    the DNS is the mechanism. Source: blockpage fingerprints (OONI, Citizen Lab); Censored Planet's
    false-positive precedence (censoredplanet-analysis 6e3a5f0); ts-017."""
    names = _real_blockpages(c) if c.fetched else None
    if names is None or not c.inconsistent:
        return None
    return _out("dns", False, f"DNS answer differs from the control's and leads to a blockpage ({names})")


@rule(Rule.HTTP_BLOCKPAGE, stage="http", gives=("http-diff",), needs="http_blockpages")
def http_blockpage(c: Facts) -> _Out | None:
    """The response matches a blockpage fingerprint (no known false-positive signature matched).
    Source: OONI / Citizen Lab blockpage fingerprints; censoredplanet-analysis 6e3a5f0 precedence."""
    names = _real_blockpages(c) if c.fetched else None
    if names is None:
        return None
    return _out("http-diff", False, f"the response matches blockpage fingerprint {names}")


@rule(Rule.HTTP_SERVER_SIDE, stage="http", gives=(False,), needs="fetched")
def http_server_side(c: Facts) -> _Out | None:
    """The site's CDN/WAF refused this vantage (a Cloudflare challenge, an Akamai 403): a server-side
    block, not censorship. Source: FC-13; censoredplanet-analysis false-positive signatures;
    webconnectivityqa cloudflareCAPTCHAWithHTTP(S) (not blocking)."""
    if not c.fetched:
        return None
    resp = c.resp
    assert resp is not None
    label = cdn_server_block(resp.status_code, resp.headers, resp.body_bytes())
    if not label:
        return None
    return _out(False, False, f"the site's CDN/WAF refused this vantage ({label}, status {resp.status_code}): "
                              "a server-side block, not censorship", server_side=label)


@rule(Rule.HTTP_FINAL_HOST_DIFFERS, stage="http", gives=("dns", "http-diff"), needs="fetched")
def http_final_host_differs(c: Facts) -> _Out | None:
    """The fetch ended at another host than the control's (a redirect to a warning page): ``http-diff``,
    or ``dns`` when the DNS answer was inconsistent. Source: FC-14."""
    if not c.http_compared:
        return None
    assert c.full is not None and c.full.http is not None
    ctl_host = host_of(c.full.http.final_url)
    here = host_of(c.final.url if c.final else None)
    if not (ctl_host and here and ctl_host != here):
        return None
    return _out("dns" if c.inconsistent else "http-diff", False, f"the fetch ended at {here}, the control's at {ctl_host}")


@rule(Rule.HTTPS_SERVER_DIFFERS, stage="http", gives=(False,), needs="fetched")
def https_server_differs(c: Facts) -> _Out | None:
    """Over verified TLS the genuine server answered an error here (>= 400) and not to the control: the
    server treats this vantage differently, no censor can forge that. Source: FC-13 (server-side
    blocks); ts-017 (an https response over a verified channel is not tampered with)."""
    if not c.http_compared or not c.genuine_tls or c.match[0]:
        return None
    assert c.resp is not None and c.full is not None and c.full.http is not None
    if not (c.resp.status_code >= 400 and (c.full.http.status_code or 0) < 400):
        return None
    return _out(False, False, f"the genuine server (TLS verified) answered {c.resp.status_code} here and "
                              f"{c.full.http.status_code} to the control: server-side",
                server_side=f"status_{c.resp.status_code}")


@rule(Rule.DNS_INCONSISTENT_NO_CONTROL, stage="http", gives=(None,), needs="fetched")
def dns_inconsistent_no_control(c: Facts) -> _Out | None:
    """The DNS answer differs from the control's, a page came back, and no HTTP control can say
    whether it is the site's. Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null); FC-04 (an ISP relay
    serving the genuine page)."""
    if not c.fetched or c.http_compared or not c.inconsistent:
        return None
    return _out(None, None, "DNS answer differs from the control's and there is no HTTP control to check the page")


@rule(Rule.THROTTLING_SNI_RATIO, stage="http", gives=("throttling",), needs="fetched")
def throttling_sni_ratio(c: Facts) -> _Out | None:
    """A fetch that is otherwise accessible (verified TLS, or a page matching the control's) was slow,
    and the same URL from the same address with a benign SNI arrived at least 10x faster, over at least
    MIN_BYTES each (the slow rate confirmed by a re-test): SNI throttling, reachable. Never without that
    baseline. A plain-HTTP page's baseline is the same page over HTTPS with the benign SNI (the Host
    hidden in TLS): throttling keyed on the Host (issue 12). Source: FC-19; net4people/bbs#382;
    Censored Planet's method (net4people/bbs#65)."""
    t = c.throughput
    if not c.fetched or t is None or not t.suspect or not t.throttled:
        return None
    if not (c.genuine_tls or (c.http_compared and c.match[0])):
        return None
    return _throttling(t)


@rule(Rule.DNS_RELAY, stage="http", gives=(False,), needs="fetched")
def dns_relay(c: Facts) -> _Out | None:
    """The DNS answer is not the control's and the helper cannot reach it from outside (it reached the
    control's addresses), yet through it the vantage got the genuine site (TLS verified for the name,
    or a page matching the control's): a relay or transparent proxy of the ISP. Accessible, with the
    DNS manipulation recorded (dns_consistency inconsistent, this rule id). Source: webconnectivityqa
    dnsHijackingToProxyWithHTTPURL, dnsHijackingToProxyWithHTTPSURL (DNSConsistency "inconsistent",
    accessible, blocking false); FC-04; issue 12."""
    pin = c.pin
    if not c.fetched or pin is None or pin.ip not in c.relay_addrs:
        return None
    if c.genuine_tls:
        how = "the site's certificate verified through it"
    elif c.http_compared and c.match[0]:
        how = f"its page matches the control's ({c.match[1]})"
    else:
        return None
    return _out(False, True, f"the DNS answer {pin.ip} is not the control's and the control cannot reach it "
                             f"from outside: a relay (transparent proxy) of this network; {how}: accessible, "
                             "the DNS manipulation recorded", dns="inconsistent")


@rule(Rule.HTTPS_VERIFIED, stage="http", gives=(False,), needs="fetched")
def https_verified(c: Facts) -> _Out | None:
    """The page was fetched over TLS that verifies for the name: no censor on the path can have
    changed it. Source: webconnectivityqa successWithHTTPS (accessible); OONI v0.5 checks the
    HTTPS body no further; FC-02, FC-16."""
    if not c.fetched or not c.genuine_tls:
        return None
    return _out(False, True, "fetched over verified TLS")


@rule(Rule.HTTP_MATCH, stage="http", gives=(False,), needs="fetched")
def http_match(c: Facts) -> _Out | None:
    """The page matches the control's: status equal and (body proportion > 0.7, or the uncommon
    headers equal, or the title equal). Source: ts-017 / OONI v0.4 summary; FC-15, FC-16."""
    if not c.http_compared or not c.match[0]:
        return None
    return _out(False, True, f"the page matches the control's ({c.match[1]})")


@rule(Rule.DNS_INCONSISTENT_THEN_DIFF, stage="http", gives=("dns",), needs="fetched")
def dns_inconsistent_then_diff(c: Facts) -> _Out | None:
    """The DNS answer differs from the control's and the page differs from the control's.
    Source: ts-017 / OONI v0.4 summary (inconsistent DNS + http-diff → "dns"); webconnectivityqa
    httpDiffWithInconsistentDNS."""
    if not c.http_compared or not c.inconsistent:
        return None
    return _out("dns", False, f"DNS answer differs from the control's and the page differs ({c.match[1]})")


@rule(Rule.HTTP_DIFF, stage="http", gives=("http-diff",), needs="fetched")
def http_diff(c: Facts) -> _Out | None:
    """The page differs from the control's (status, body proportion, headers and title all differ).
    Source: ts-017 (blocking "http-diff"); webconnectivityqa httpDiffWithConsistentDNS."""
    if not c.http_compared:
        return None
    return _out("http-diff", False, f"the page differs from the control's ({c.match[1]})")


@rule(Rule.HTTP_NO_CONTROL, stage="http", gives=(None,))
def http_no_control(c: Facts) -> _Out | None:
    """The last rule: an HTTP stage that no rule above could judge — the fetch failed, or a plain-HTTP
    page came back unmatched by any fingerprint — and there is no HTTP control to compare with.
    Source: README "What a verdict means" (no verdict without a control); webconnectivityqa
    controlFailureWithSuccessfulHTTPWebsite (control unreachable: blocking, accessible null);
    ts-017 (http-diff needs the control's page)."""
    if c.fetch_failed:
        return _out(None, None, f"HTTP fetch failed ({c.http_failure}); {c.no_helper()} to compare")
    if c.fetched:
        resp = c.resp
        assert resp is not None
        return _out(None, None, f"fetched over plain HTTP (status {resp.status_code}, title {resp.title!r}) and "
                                f"no blockpage fingerprint matched, but {c.no_helper()}: without an HTTP control a "
                                "blockpage that is not in the databases cannot be told from the site")
    return None


#: The verdict rules, in order: the first that returns a verdict decides (the order is the precedence).
RULES: tuple[RuleDef, ...] = (
    vantage_offline,
    vantage_intercepted,
    tls_mitm_known_root,
    https_verified_no_control,
    control_dns_failed,
    dns_both_fail,
    dns_injector_onpath,
    vantage_resolver_check_failed,
    dns_truncated_retry_failed,
    vantage_resolver_broken,
    dns_probe_failure,
    dns_site_own_answer,
    dns_bogon,
    dns_injection,
    dns_blockpage_ip,
    dns_ghost,
    transport_no_endpoint,
    vantage_address_family,
    dns_inconsistent_then_connect_failure,
    tls_control_ok,
    tls_both_fail,
    tls_sni_differential,
    tls_no_control,
    tcp_ip_no_control,
    tcp_ip_control_silent,
    tcp_ip_control_ok,
    tcp_ip_both_fail,
    tls_verify_no_control,
    tls_unknown_issuer,
    dns_inconsistent_then_tls_invalid,
    tls_both_invalid,
    http_not_attempted,
    dns_inconsistent_then_http_failure,
    throttling_cut_mid_body,
    http_slow_no_baseline,
    http_redirect_into_private,
    http_redirect_broken_genuine,
    http_redirect_target,
    http_failure,
    http_control_untested,
    http_both_fail,
    dns_blockpage_http,
    http_blockpage,
    http_server_side,
    http_final_host_differs,
    https_server_differs,
    dns_inconsistent_no_control,
    throttling_sni_ratio,
    dns_relay,
    https_verified,
    http_match,
    dns_inconsistent_then_diff,
    http_diff,
    http_no_control,
)

#: Rules decided before any TCP/TLS/HTTP evidence is looked at (the DNS control and DNS answers).
DNS_STEP_RULES: frozenset[str] = frozenset(r.id.value for r in RULES if r.stage in ("control", "dns"))


# --------------------------------------------------------------------------- judging

#: The vantage status when none was checked (treated as online); one immutable instance.
_ONLINE = VantageStatus()


#: One step of :data:`_WALK`: (the rule's function, its row, its id's text, whether a slow transfer's note
#: applies to its verdicts).
_Step = tuple[RuleFn, RuleDef, str, bool]


def _compile(rules: tuple[RuleDef, ...]) -> tuple[tuple[Callable[[Facts], object] | None, tuple[_Step, ...]], ...]:
    """:data:`RULES` as :func:`decide` walks it: runs of consecutive rules with the same precondition
    (:attr:`RuleDef.needs`), each with its gate (None: always tried). The order is the table's."""
    runs: list[tuple[Gate | None, list[_Step]]] = []
    for r in rules:
        step = (r.fn, r, r.id.value, r.stage in ("transport", "http") and r.id is not Rule.THROTTLING_SNI_RATIO)
        if runs and runs[-1][0] == r.needs:
            runs[-1][1].append(step)
        else:
            runs.append((r.needs, [step]))
    return tuple((attrgetter(g) if g is not None else None, tuple(steps)) for g, steps in runs)


#: :data:`RULES` in runs sharing a precondition: a false one skips its run (~25 of the ~36 rules a verdict
#: tried in order on re-judged OONI measurements), each rule's function and id read once, here.
_WALK = _compile(RULES)


def decide(obs: WebObservations, *, bogons: Bogons, vantage: VantageStatus | None = None,
           asn_of: Callable[[str], str | None] | None = None, details: bool = True) -> tuple[RuleDef, Verdict]:
    """:func:`judge`, also returning the row of :data:`RULES` that decided (tests, docs)."""
    c = Facts(obs, bogons, vantage or _ONLINE, asn_of)
    for gate, steps in _WALK:
        if gate is not None and not gate(c):
            continue
        for fn, r, rid, noted in steps:
            out = fn(c)
            if out is None:
                continue
            if details:
                v = _new_verdict(blocking=out.blocking, accessible=out.accessible, reason=out.reason, rule=rid,
                                 dns_consistency=_consistency(c, r, out), findings=c.findings(r.stage),
                                 server_side=out.server_side, mitm=out.mitm)
            else:  # the same rule, blocking, accessible and reason; no findings nor DNS consistency worked out
                v = _new_verdict(blocking=out.blocking, accessible=out.accessible, reason=out.reason, rule=rid,
                                 server_side=out.server_side, mitm=out.mitm)
            if noted and obs.throughput is not None:
                v = _throughput_note(c, v)
            return r, v
    raise AssertionError(f"no rule decided for {obs.target.input}: the table must end with a catch-all")  # a bug


def _consistency(c: Facts, r: RuleDef, out: _Out) -> DNSConsistency:
    """The DNS consistency a verdict of rule ``r`` carries (its stage fixes which, :data:`Stage`)."""
    if r.stage in ("vantage", "control"):
        return "unknown"
    if r.stage == "mitm":
        return c.consistency_before_dns
    if r.stage == "dns":
        assert out.dns is not None, r.name
        return out.dns
    return out.dns or c.consistency


def judge(obs: WebObservations, *, bogons: Bogons, vantage: VantageStatus | None = None,
          asn_of: Callable[[str], str | None] | None = None, details: bool = True) -> Verdict:
    """Decide ``blocking``/``accessible`` for one input's observations: the first rule of
    :data:`RULES` that gives a verdict.

    Args:
        obs: everything the web test observed (probe side, DoH control, helper).
        bogons: the bogon set in force (a setting; see :mod:`probe.addresses`).
        vantage: the run's vantage health; None = not checked (treated as online).
        asn_of: address → ASN (:mod:`probe.geoip`): answers in the control's ASN are consistent
            (OONI); None = no database.
        details: False for a caller that keeps only ``blocking``, ``accessible``, ``reason`` and
            ``rule`` (re-judging OONI's measurements, :func:`analysis.ooni.recompute`): the same
            rule decides and those four are the same, but ``findings`` are not worked out (only a
            slow transfer's throughput note is kept) and ``dns_consistency`` is "unknown" (~2 % of a
            re-judged row).

    Returns:
        A :class:`Verdict`. Never raises on odd observations: missing pieces lead
        to ``blocking=None`` with the reason.
    """
    return decide(obs, bogons=bogons, vantage=vantage, asn_of=asn_of, details=details)[1]


def _throughput_note(c: Facts, v: Verdict) -> Verdict:
    """A slow transfer that got no throttling verdict says why: no baseline (in the reason), or a
    ratio under 10x (a finding)."""
    t = c.throughput
    if t is None or not t.suspect:
        return v
    ratio = t.ratio
    if ratio is None:
        why = t.note or "no baseline"
        return replace(v, reason=f"{v.reason}; the transfer was slow ({fmt_rate(t.target.bps)} over "
                                 f"{t.target.bytes} bytes) but {why}: no throttling verdict without a "
                                 "benign-SNI baseline to the same address")
    if ratio < THROTTLING_RATIO:
        assert t.baseline is not None
        note = (f"throughput {fmt_rate(t.target.bps)} here, {fmt_rate(t.baseline.bps)} with the benign SNI to the "
                f"same address ({ratio:.1f}x < {THROTTLING_RATIO:.0f}x): not throttled by SNI")
        return replace(v, findings=tuple(dict.fromkeys((*v.findings, note))))
    return v


def rules_markdown() -> str:
    """docs/rules.md: the table, in precedence order, then the rule ids no judge rule gives."""
    from probe import vocab
    from probe.vocab import RULES_OUTSIDE_JUDGE

    def word(b: Blocking) -> str:
        return "inconclusive" if b is None else ("false" if b is False else str(b))

    lines = [
        "# Verdict rules",
        "",
        "Generated from `probe/verdict.py` (`RULES`) by `python -m probe.verdict > docs/rules.md`;",
        "tests/test_verdict.py fails when this file and the table disagree. The rules are tried in",
        "this order; the first that gives a verdict decides (**the order is the precedence**). Each rule",
        "has at least one row in tests/test_verdict.py `CASES`.",
        "",
        "| # | rule id | stage | gives | what it decides, and its source |",
        "|---|---------|-------|-------|---------------------------------|",
    ]
    for i, r in enumerate(RULES, start=1):
        doc = r.doc.replace("|", "\\|")
        lines.append(f"| {i} | `{r.id.value}` | {r.stage} | {', '.join(word(b) for b in r.gives)} | {doc} |")
    lines += ["", "## Rule ids given outside the judge", "", "| rule id | what gives it |", "|---|---|"]
    for rid, what in RULES_OUTSIDE_JUDGE.items():
        lines.append(f"| `{rid.value}` | {what.replace('|', chr(92) + '|')} |")
    lines += ["", "## Blocking values, and OONI's", "",
              "`probe/vocab.py` owns them. A record's `blocking`/`accessible` are OONI's (its fastpath scores only",
              "`dns`, `tcp_ip`, `http-diff`, `http-failure`); kzprobe's finer value goes in an `x_` key.", "",
              "| kzprobe | meaning | OONI blocking | OONI accessible |", "|---|---|---|---|"]
    for b in vocab.BLOCKING_TYPES:
        ob, oa = vocab.OONI_BLOCKING[b]
        lines.append(f"| `{b}` | {vocab.BLOCKING_MEANINGS[b]} | `{word(ob)}` | `{str(oa).lower()}` |")
    lines += ["", "A throttled fetch that timed out mid-body is OONI's `http-failure`, not accessible "
              "(webconnectivityqa `throttlingWithHTTPS`). `false` and `null` (inconclusive) are OONI's as they are.",
              "", "## Outcomes", "", "| outcome | meaning |", "|---|---|"]
    for o, meaning in vocab.OUTCOME_MEANINGS.items():
        lines.append(f"| `{o}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(rules_markdown(), end="")
