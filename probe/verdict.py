"""Verdicts: observations + controls → ``blocking``, ``accessible``, a reason.

``blocking`` is OONI's (web_connectivity, ts-017): ``False`` (no blocking),
``"dns"``, ``"tcp_ip"``, ``"tls"``, ``"http-failure"``, ``"http-diff"``, plus
kzprobe's ``"tls_mitm"`` (interception) and ``"throttling"`` (reachable, but slowed down
on purpose: ``accessible`` is True); ``None`` means inconclusive. Every decision names the rule that made it (``Verdict.rule``);
the rules, in the order they are tried:

* ``vantage.offline`` — None: no canary reached its server; nothing can be judged
  (DESIGN.md; FC-18).
* ``vantage.intercepted`` — None: the control channel's TLS does not verify (issue
  "measuring core" §5).
* ``tls_mitm.known_root`` — tls_mitm: a chain carries a known Kazakh interception root
  (by SPKI or by name), even when verification passed (IMC 2020); needs no control.
* ``control.dns_failed`` — None: no usable DNS control ("no verdict without a control").
* ``dns.both_fail`` — False, down: the control cannot resolve the name either (OONI v0.5).
* ``vantage.resolver_broken`` — None: the probe's DNS failed, but its resolvers also fail a
  well-known name (a broken local resolver, not blocking).
* ``dns.truncated_retry_failed`` — None: a truncated answer whose TCP retry failed.
* ``dns.probe_failure`` — dns: only the probe's resolution failed (ts-017).
* ``dns.bogon`` — dns: a probe answer is a bogon, the control's is not (FC-01, FC-04;
  ooni/probe#1517).
* ``dns.injection`` — dns: several replies disagree and one is not the control's; raw
  replies kept as evidence (FC-06, FC-07; net4people).
* ``dns.blockpage_ip`` — dns: an answer is a known blockpage address (fingerprints).
* then the transport and HTTP steps, each against the control: ``tcp_ip.*``, ``tls.*``
  (``tls.unknown_issuer`` → tls_mitm: verifies from the control, not here;
  ``dns.inconsistent_then_tls_invalid`` → dns: the probe's DNS answer leads to a server whose
  certificate is not the site's, at the control too), ``http.*``,
  ``https.*`` (v0.5 ordering, FC-10, FC-12 … FC-16).
* ``throttling.sni_ratio`` — throttling, accessible: tried on an https fetch that is
  otherwise accessible (``https.verified``, ``http.match``), or that timed out mid-body
  (before ``http.*``'s failure rules): the same URL from the same address with a benign
  SNI arrived at least :data:`probe.measure.throughput.THROTTLING_RATIO` (10) times
  faster, over at least :data:`probe.measure.throughput.MIN_BYTES` each (FC-19,
  net4people/bbs#382; the method of Censored Planet's 2021 study of Twitter throttling
  in Russia, net4people/bbs#65). Never without that baseline: a slow transfer whose
  baseline failed or was too small keeps its verdict, and the reason says so.

DNS consistency is decided by address overlap with the control, then by the probe's
addresses completing a TLS handshake that verifies for the name (OONI v0.5; avoids
the CDN false positives of ooni/probe#1523, FC-02). An inconsistent answer that the
rest of the test cannot vindicate ends as ``dns`` when a later step fails.
Without a full control (helper), steps that need one end ``None`` and say why,
except the SNI differential: a handshake with the target SNI that fails where a
benign SNI to the *same address* completes is itself a same-path control
(the method of Censored Planet's Quack/Hyperquack family), so it gives ``tls``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from probe.addresses import Bogons, canonical_ip
from probe.control import ControlResult
from probe.failures import GENERIC_TIMEOUT
from probe.fingerprints import cdn_server_block
from probe.measure.http import HTTPResponse
from probe.measure.throughput import THROTTLING_RATIO, ThroughputCheck, fmt_rate
from probe.mitm import MITMFinding
from probe.nettests.web import EndpointObservation, WebObservations
from probe.vocab import Blocking, DNSConsistency, is_control_failure


#: OONI v0.4 summary: the body-length proportion above which bodies "match" (ts-017).
BODY_PROPORTION_MATCH = 0.7

#: Headers every server sends; OONI compares only the uncommon ones (ts-017).
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires", "x-powered-by",
    "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options", "etag", "x-content-type-options",
    "age", "via", "p3p", "x-xss-protection", "content-language", "cf-ray", "strict-transport-security", "link",
    "x-varnish", "content-length", "connection", "transfer-encoding", "keep-alive", "alt-svc", "report-to", "nel",
})


#: Control HTTP failures that say the control did not (or could not) reach the site —
#: a redirect its policy refused — not that the site is down.
CONTROL_UNTESTED = frozenset({"http_invalid_redirect_location_host"})


@dataclass(frozen=True, kw_only=True)
class VantageStatus:
    """What the vantage health check says about the run (see :mod:`probe.health`).

    Attributes:
        offline: True when no canary worked — nothing can be judged.
        control_intercepted_by: issuer DN of the certificate a middlebox presented on
            the control channel, None when the control channel verifies.
        ipv6_usable: False when the vantage cannot reach any IPv6 canary; None = unknown.
        resolver_failure: set when every probe-side resolver failed a well-known name
            (see :mod:`probe.health`): DNS failures here are then not evidence.
    """

    offline: bool = False
    control_intercepted_by: str | None = None
    ipv6_usable: bool | None = None
    resolver_failure: str | None = None


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The judgement of one measurement.

    Attributes:
        blocking: see the module docstring; None = inconclusive.
        accessible: True / False; None = unknown.
        reason: one human sentence with the evidence's numbers and names.
        rule: the rule id that decided (module docstring table).
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


@dataclass
class _Ctx:
    obs: WebObservations
    bogons: Bogons
    findings: list[str] = field(default_factory=list)
    dns: DNSConsistency = "unknown"
    mitm: MITMFinding | None = None

    def v(self, blocking: Blocking, accessible: bool | None, reason: str, rule: str, **kw: object) -> Verdict:
        return Verdict(blocking=blocking, accessible=accessible, reason=reason, rule=rule, dns_consistency=self.dns,
                       findings=tuple(dict.fromkeys(self.findings)), mitm=self.mitm, **kw)  # type: ignore[arg-type]


def _norm_title(t: str | None) -> str:
    return " ".join((t or "").split()).casefold()


def _host(url: str | None) -> str:
    return (urlsplit(url).hostname or "") if url else ""


def judge(obs: WebObservations, *, bogons: Bogons, vantage: VantageStatus | None = None) -> Verdict:
    """Decide ``blocking``/``accessible`` for one input's observations.

    Args:
        obs: everything the web test observed (probe side, DoH control, helper).
        bogons: the bogon set in force (a setting; see :mod:`probe.addresses`).
        vantage: the run's vantage health; None = not checked (treated as online).

    Returns:
        A :class:`Verdict`. Never raises on odd observations: missing pieces lead
        to ``blocking=None`` with the reason.
    """
    c = _Ctx(obs=obs, bogons=bogons)
    vantage = vantage or VantageStatus()
    if vantage.offline:
        return c.v(None, None, "vantage offline — nothing can be judged", "vantage.offline")
    if vantage.control_intercepted_by:
        return c.v(None, None, f"this network intercepts TLS (issuer {vantage.control_intercepted_by}): "
                               "the control is unusable", "vantage.intercepted")

    # Known interception roots are proof by themselves (the chain is the evidence).
    for e in obs.endpoints:
        if e.mitm is not None and e.mitm.mitm:
            c.mitm = e.mitm
            break
    full = obs.control if obs.control is not None and obs.control.usable else None
    if obs.control is not None and not obs.control.usable:
        c.findings.append(f"helper control unusable ({obs.control.failure})")
    if c.mitm is not None:
        verified = any(e.mitm is c.mitm and e.tls is not None and e.tls.verified for e in obs.endpoints)
        note = " — verification passed: the interception root is installed on this machine" if verified else ""
        return c.v("tls_mitm", False, f"{c.mitm.reason}{note}", "tls_mitm.known_root")

    ctl_usable = [r for r in (obs.dns_control, full) if r is not None and r.usable]
    if not ctl_usable:
        why = obs.dns_control.failure or "none"
        return c.v(None, None, f"control failure: the DNS control failed ({why}) and no usable helper", "control.dns_failed")
    ctl_addrs = {a for r in ctl_usable for a in r.dns_addresses}
    ctl_dns_failure = next((r.dns_failure for r in ctl_usable if r.dns_failure), None) if not ctl_addrs else None

    d = _dns_step(c, ctl_addrs, ctl_dns_failure, vantage)
    if d is not None:
        return d
    return _throughput_step(c, _transport_step(c, full))


def _dns_step(c: _Ctx, ctl_addrs: set[str], ctl_dns_failure: str | None, vantage: VantageStatus) -> Verdict | None:
    obs = c.obs
    probe_addrs = obs.probe_addresses()
    if not probe_addrs:
        fails = sorted({q.failure for q in obs.queries if q.failure}) or ["no answer"]
        if ctl_dns_failure:
            c.dns = "both_fail"
            return c.v(False, False, f"the name does not resolve from the control either ({ctl_dns_failure}); "
                                     f"probe: {', '.join(fails)}", "dns.both_fail")
        c.dns = "probe_failure"
        check = obs.resolver_check
        if check and not any(q.addresses() for q in check):
            why = ", ".join(sorted({q.failure or "no answer" for q in check}))
            return c.v(None, None, f"probe DNS failed ({', '.join(fails)}), and this vantage's resolvers fail the "
                                   f"well-known name {check[0].hostname} right after ({why}): a broken local "
                                   "resolver, not evidence of blocking", "vantage.resolver_broken")
        truncated = [q for q in obs.queries if q.failure and any((r.flags or 0) & 0x0200 for r in q.replies)]
        if truncated:
            return c.v(None, None, f"the resolver's answer was truncated and its TCP retry failed "
                                   f"({truncated[0].failure}): a resolver limitation, not evidence of blocking",
                       "dns.truncated_retry_failed")
        if vantage.resolver_failure:
            return c.v(None, None, f"probe DNS failed ({', '.join(fails)}), but this vantage's resolvers also fail a "
                                   f"well-known name ({vantage.resolver_failure}): a broken local resolver, not "
                                   "evidence of blocking", "vantage.resolver_broken")
        return c.v("dns", False, f"probe DNS failed ({', '.join(fails)}) while the control resolved "
                                 f"{', '.join(sorted(ctl_addrs))}", "dns.probe_failure")
    bogon = [a for a in probe_addrs if c.bogons.is_bogon(a)]
    ctl_bogon = any(c.bogons.is_bogon(a) for a in ctl_addrs)
    canon_ctl = {canonical_ip(a) for a in ctl_addrs}
    _secondary_transport_findings(c)
    if bogon and not ctl_bogon:
        c.dns = "bogon"
        return c.v("dns", False, f"the resolver answered non-global address {', '.join(bogon)}; the control "
                                 f"answered {', '.join(sorted(ctl_addrs)) or ctl_dns_failure}", "dns.bogon")
    for q in obs.queries:
        # competing datagrams only: a TCP retry after truncation (RFC 7766) and the
        # truncated reply itself are one answer, not two
        udp = [r for r in q.replies if not r.source.startswith("tcp:") and not (r.flags or 0) & 0x0200]
        sets = [frozenset(canonical_ip(a.address) for a in r.answers if a.address) for r in udp]
        sets = [s for s in sets if s]
        unparseable = [r for r in udp if r.parse_error]
        if len(udp) > 1 and (len(set(sets)) > 1 or unparseable):
            foreign = sorted({a for s in sets for a in s} - canon_ctl)
            if foreign or unparseable:
                c.dns = "injected"
                what = f"{len(q.replies)} replies to one {q.query_type} query to {q.resolver_address}"
                extra = f", {len(unparseable)} unparseable" if unparseable else ""
                return c.v("dns", False, f"DNS injection: {what}{extra}; answers not seen by the control: "
                                         f"{', '.join(foreign) or 'none parseable'}", "dns.injection")
    if obs.dns_blockpages:
        c.dns = "inconsistent"
        names = ", ".join(sorted({f.name for f in obs.dns_blockpages}))
        return c.v("dns", False, f"DNS answer is a known blockpage address ({names})", "dns.blockpage_ip")
    if {canonical_ip(a) for a in probe_addrs} & canon_ctl:
        c.dns = "consistent"
    elif any(e.tls is not None and e.tls.verified and e.source in ("probe", "both") and not c.bogons.is_bogon(e.ip)
             for e in obs.endpoints):
        c.dns = "consistent"
        c.findings.append("DNS answers differ from the control's but verify by TLS for the name (CDN/GeoDNS)")
    else:
        c.dns = "inconsistent"
    return None


def _secondary_transport_findings(c: _Ctx) -> None:
    for e in c.obs.endpoints:
        if e.tls_check:
            continue
        if not e.tcp_ok and e.tcp is not None:
            c.findings.append(f"tcp_ip: {e.address} {e.tcp.failure} ({e.source} address)")
        elif e.tls is not None and e.tls.failure and not e.tls.connect_failure:
            c.findings.append(f"tls: {e.address} {e.tls.failure} with SNI {e.tls.server_name}")


def _sni_keyed(e: EndpointObservation) -> bool | None:
    """True: benign SNI completed where the target SNI failed; False: both failed; None: not tried."""
    if e.tls_benign is None:
        return None
    return e.tls_benign.failure is None or (e.tls_no_sni is not None and e.tls_no_sni.failure is None)


def _no_helper(c: _Ctx) -> str:
    """Why there is no full control: none configured, or the configured helper failed (says how)."""
    ctl = c.obs.control
    if ctl is None:
        return "no helper configured"
    if ctl.failure:
        return f"the control helper failed ({ctl.failure})"
    return "the control helper gave no result for this step"


def _transport_step(c: _Ctx, full: ControlResult | None) -> Verdict:
    obs = c.obs
    https = obs.target.scheme == "https"
    probe_eps = [e for e in obs.endpoints if not e.tls_check and e.source in ("probe", "both")]
    worked = [e for e in probe_eps if (e.tls_ok if https else e.tcp_ok)]
    inconsistent = c.dns == "inconsistent"
    if not worked:
        if not probe_eps:
            return c.v(None, None, "no probe address could be contacted", "transport.no_endpoint")
        if inconsistent:
            return c.v("dns", False, "DNS answer differs from the control's and connecting to it failed "
                                     f"({_first_failure(probe_eps)})", "dns.inconsistent_then_failure")
        tls_failed = [e for e in probe_eps if e.tcp_ok and e.tls is not None and e.tls.failure]
        if tls_failed:
            return _tls_failed(c, tls_failed, full)
        # TCP failed everywhere the probe looked
        fail = _first_failure(probe_eps)
        if full is None:
            return c.v(None, None, f"TCP connect failed to every address ({fail}); {_no_helper(c)} to tell "
                                   "a site that is down from an IP block", "tcp_ip.no_control")
        known = [e for e in probe_eps if full.endpoint(e.ip, e.port) is not None]
        if not known:
            return c.v(None, None, f"TCP connect failed to every address ({fail}); the control did not test these "
                                   "addresses (refused by its policy, or over its endpoint limit)",
                       "tcp_ip.control_silent")
        ctl_ok = [e for e in known if full.endpoint(e.ip, e.port).tcp_failure is None]  # type: ignore[union-attr]
        if ctl_ok:
            return c.v("tcp_ip", False, f"TCP connect to {', '.join(e.address for e in ctl_ok)} failed here ({fail}) "
                                        "but works from the control", "tcp_ip.control_ok")
        return c.v(False, False, f"TCP connect fails from the control too ({fail}): the site is down", "tcp_ip.both_fail")

    pin = worked[0]
    tls_bad = pin.tls is not None and pin.tls.verification_failure is not None
    if https and tls_bad:
        assert pin.tls is not None
        vf = pin.tls.verification_failure
        issuer = pin.mitm.issuer if pin.mitm else None
        if full is None:
            return c.v(None, None, f"certificate does not verify ({vf}, issuer {issuer}); {_no_helper(c)} to tell "
                                   "a broken site from interception", "tls.verify_no_control")
        ce = full.endpoint(pin.ip, pin.port)
        if ce is not None and ce.tls_ok and ce.tls_verification_failure is None:
            return c.v("tls_mitm", False, f"certificate from issuer {issuer} does not verify here ({vf}) but the "
                                          f"control gets a valid one (issuer {ce.tls_issuer}): TLS interception",
                       "tls.unknown_issuer")
        if inconsistent:
            # the probe's resolver sent it to another server (a DNS blockpage host with its own
            # certificate): the control fails there too because it is not the site (lab kz-2021)
            return c.v("dns", False, f"DNS answer differs from the control's and the server there presents a "
                                     f"certificate that does not verify for the name ({vf})",
                       "dns.inconsistent_then_tls_invalid")
        return c.v(False, False, f"the site's certificate does not verify from the control either ({vf}): "
                                 "the site is misconfigured, not censored", "tls.both_invalid")

    fetch = obs.http
    if fetch is None:
        return c.v(None, None, "no HTTP fetch was made", "http.not_attempted")
    final = fetch.final
    resp = final.response if final is not None else None
    if fetch.failure or resp is None:
        hf = fetch.failure or (final.failure if final else "unknown")
        if inconsistent:
            return c.v("dns", False, f"DNS answer differs from the control's and the HTTP fetch failed ({hf})",
                       "dns.inconsistent_then_failure")
        t = obs.throughput
        if hf == GENERIC_TIMEOUT and t is not None and t.target.failure is not None and t.throttled:
            return _throttling(c, t)
        if full is None or full.http is None:
            return c.v(None, None, f"HTTP fetch failed ({hf}); {_no_helper(c)} to compare", "http.no_control")
        if full.http.failure is None:
            return c.v("http-failure", False, f"HTTP fetch failed here ({hf}) but works from the control "
                                              f"(status {full.http.status_code})", "http.failure")
        if is_control_failure(full.http.failure) or full.http.failure in CONTROL_UNTESTED:
            return c.v(None, None, f"HTTP fetch failed here ({hf}); the control could not test it "
                                   f"({full.http.failure})", "http.control_untested")
        return c.v(False, False, f"HTTP fetch fails from the control too ({full.http.failure}): the site is down",
                   "http.both_fail")

    # Censored Planet's precedence (censoredplanet-analysis 6e3a5f0): a known false-positive
    # signature (e.g. Akamai "Access Denied ... on this server") overrides generic blockpage
    # signatures matched by the same page.
    known_fp = any(f.expected_false_positive for f in obs.http_blockpages)
    real_bp = [] if known_fp else [f for f in obs.http_blockpages if not f.expected_false_positive]
    if real_bp:
        names = ", ".join(sorted({f.name for f in real_bp}))
        if inconsistent or c.dns == "unknown":
            return c.v("dns", False, f"DNS answer differs from the control's and leads to a blockpage ({names})",
                       "dns.blockpage_http")
        return c.v("http-diff", False, f"the response matches blockpage fingerprint {names}", "http.blockpage")
    body = b""
    if resp.body_b64:
        body = base64.b64decode(resp.body_b64)
    label = cdn_server_block(resp.status_code, resp.headers, body)
    if label:
        return c.v(False, False, f"the site's CDN/WAF refused this vantage ({label}, status {resp.status_code}): "
                                 "a server-side block, not censorship", "http.server_side", server_side=label)

    probe_final_host = _host(final.url if final else None)
    if full is not None and full.http is not None and full.http.failure is None:
        ctl_final_host = _host(full.http.final_url)
        if ctl_final_host and probe_final_host and ctl_final_host != probe_final_host:
            blocking: Blocking = "dns" if inconsistent else "http-diff"
            return c.v(blocking, False, f"the fetch ended at {probe_final_host}, the control's at {ctl_final_host}",
                       "http.final_host_differs")
        match, why = _http_match(resp, full)
        genuine_tls = https and pin.tls is not None and pin.tls.verified
        if genuine_tls:
            if not match and resp.status_code >= 400 and (full.http.status_code or 0) < 400:
                return c.v(False, False, f"the genuine server (TLS verified) answered {resp.status_code} here and "
                                         f"{full.http.status_code} to the control: server-side", "https.server_differs",
                           server_side=f"status_{resp.status_code}")
            return c.v(False, True, "fetched over verified TLS", "https.verified")
        if match:
            return c.v(False, True, f"the page matches the control's ({why})", "http.match")
        if inconsistent:
            return c.v("dns", False, f"DNS answer differs from the control's and the page differs ({why})",
                       "dns.inconsistent_then_diff")
        return c.v("http-diff", False, f"the page differs from the control's ({why})", "http.diff")

    # No HTTP control.
    if inconsistent:
        return c.v(None, None, "DNS answer differs from the control's and there is no HTTP control to check the page",
                   "dns.inconsistent_no_control")
    if https and pin.tls is not None and pin.tls.verified:
        return c.v(False, True, "fetched over verified TLS", "https.verified")
    return c.v(None, None, f"fetched over plain HTTP (status {resp.status_code}, title {resp.title!r}) and no "
                           "blockpage fingerprint matched, but without an HTTP control (helper) a blockpage that is "
                           "not in the databases cannot be told from the site", "http.no_control")


#: The verdicts of an otherwise accessible https fetch that a throttling ratio overrides.
_ACCESSIBLE_RULES = frozenset({"https.verified", "http.match"})


def _throttling(c: _Ctx, t: ThroughputCheck) -> Verdict:
    """The ``throttling.sni_ratio`` verdict for a check with a ratio ≥ 10."""
    ratio = t.ratio
    assert ratio is not None and t.baseline is not None
    cut = f"; the fetch timed out mid-body ({t.target.failure})" if t.target.failure else ""
    return c.v("throttling", True,
               f"throttled: the page arrived at {fmt_rate(t.target_bps)} here at best ({t.target.bytes} bytes in "
               f"{t.target.duration_s:.2f} s, then a re-test) but at {fmt_rate(t.baseline.bps)} from the same address {t.address} "
               f"with the benign SNI {t.baseline_sni} ({ratio:.0f}x, >= {THROTTLING_RATIO:.0f}x): the slowdown keys "
               f"on the SNI{cut}", "throttling.sni_ratio")


def _throughput_step(c: _Ctx, v: Verdict) -> Verdict:
    """``throttling.sni_ratio`` on an otherwise accessible https fetch; otherwise ``v``,
    with the reason saying why a slow transfer got no throttling verdict."""
    t = c.obs.throughput
    if t is None or not t.suspect:
        return v
    if v.rule in _ACCESSIBLE_RULES and v.blocking is False and v.accessible and t.throttled:
        return _throttling(c, t)
    if v.rule == "throttling.sni_ratio":
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


def _first_failure(eps: list[EndpointObservation]) -> str:
    for e in eps:
        if e.tls is not None and e.tls.failure:
            return e.tls.failure
        if e.tcp is not None and e.tcp.failure:
            return e.tcp.failure
    return "unknown"


def _tls_failed(c: _Ctx, eps: list[EndpointObservation], full: ControlResult | None) -> Verdict:
    e = eps[0]
    assert e.tls is not None
    keyed = _sni_keyed(e)
    diff = {True: "a benign SNI to the same address completes: the block keys on the SNI",
            False: "a benign SNI and no SNI fail too (not SNI-specific)",
            None: "no SNI retry"}[keyed]
    reason = f"TLS handshake with SNI {e.tls.server_name} to {e.address} failed ({e.tls.failure}); {diff}"
    if full is not None:
        ce = full.endpoint(e.ip, e.port)
        if ce is not None and ce.tls_ok:
            # FC-10: the helper proved TLS with this SNI to this IP works from outside.
            return c.v("tcp_ip" if keyed is False else "tls", False, reason + "; the control's handshake works",
                       "tls.control_ok")
        if ce is not None and ce.tls_attempted and ce.tls_failure:
            return c.v(False, False, f"TLS fails from the control too ({ce.tls_failure}): the site is down",
                       "tls.both_fail")
    if keyed:
        return c.v("tls", False, reason, "tls.sni_differential")
    return c.v(None, None, reason + "; no control to tell a down site from a block", "tls.no_control")


def _http_match(resp: HTTPResponse, full: ControlResult) -> tuple[bool, str]:
    """OONI v0.4 summary: status equal and (body proportion > 0.7, or uncommon headers equal, or title equal)."""
    assert full.http is not None
    ch = full.http
    status = resp.status_code == ch.status_code
    body = None
    if not resp.body_truncated and not ch.body_truncated and ch.body_length is not None:
        big = max(resp.body_length, ch.body_length)
        body = (min(resp.body_length, ch.body_length) / big if big else 1.0) > BODY_PROPORTION_MATCH
    ph = {k.lower() for k, _ in resp.headers} - COMMON_HEADERS
    chh = {k.lower() for k, _ in ch.headers} - COMMON_HEADERS
    headers = ph == chh
    title = bool(resp.title or ch.title) and _norm_title(resp.title) == _norm_title(ch.title)
    why = f"status {resp.status_code}/{ch.status_code}, body {'n/a' if body is None else body}, headers {headers}, title {title}"
    return status and (bool(body) or headers or title), why
