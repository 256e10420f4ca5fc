"""Verdict rules, table-driven, on hand-built observations (no network).

Each row builds the observations a rule is about and asserts blocking, accessible
and the rule id. Every row of the rule table (probe.verdict.RULES) decides at least one
row here, and docs/rules.md is the table (tests at the end). End-to-end versions on
loopback servers are in tests/nettests/test_field_cases.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from probe.addresses import Bogons
from probe.control import ControlEndpoint, ControlHTTP, ControlResult
from probe.fingerprints import all_fingerprints, match_dns
from probe.measure.dns import DNSAnswer, DNSQuery, DNSReply
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse
from probe.measure.tcp import TCPConnect
from probe.measure.throughput import MIN_BYTES, ThroughputCheck, Transfer, fmt_rate
from probe.measure.tls import TLSHandshake
from probe.nettests.web import EndpointObservation, WebObservations
from probe.packets.proof import InjectorProof
from probe.targets import targets_from_urls
from probe.verdict import RULES, VantageStatus, decide, judge, rules_markdown
from probe.verdict_facts import Facts
from probe.vocab import RULES_OUTSIDE_JUDGE, Rule
from tests.conftest import REPO

BOGONS = Bogons(public=("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))


def q(*ips: str, failure: str | None = None, replies: tuple[DNSReply, ...] = ()) -> DNSQuery:
    answers = tuple(DNSAnswer(answer_type="A", ipv4=ip, bogon=BOGONS.is_bogon(ip)) for ip in ips)
    return DNSQuery(hostname="www.example.org", query_type="A", engine="udp", resolver_address="198.51.100.53:53",
                    t0=0.0, t=0.01, failure=failure, answers=answers, replies=replies)


def reply(*ips: str, flags: int = 0x8180, parse_error: str | None = None) -> DNSReply:
    return DNSReply(t=0.01, raw_b64="", source="198.51.100.53:53", rcode=None if parse_error else "NOERROR",
                    flags=flags, parse_error=parse_error,
                    answers=tuple(DNSAnswer(answer_type="A", ipv4=ip, bogon=BOGONS.is_bogon(ip)) for ip in ips))


def doh(*ips: str, dns_failure: str | None = None, failure: str | None = None) -> ControlResult:
    return ControlResult(source="doh", failure=failure, dns_failure=dns_failure, dns_addresses=ips)


def hs(ip: str, *, failure: str | None = None, vf: str | None = None, sni: str | None = "www.example.org",
       connect_failure: bool = False, port: int = 443) -> TLSHandshake:
    return TLSHandshake(ip=ip, port=port, server_name=sni, alpn_offered=("h2", "http/1.1"), t0=0.0, t=0.1,
                        failure=failure, connect_failure=connect_failure, verification_failure=vf,
                        peer_certificates=() if failure else ("AAAA",))


def ep(ip: str, *, source: str = "both", tcp_fail: str | None = None, tls: TLSHandshake | None = None,
       benign: TLSHandshake | None = None, port: int = 443) -> EndpointObservation:
    return EndpointObservation(ip=ip, port=port, source=source,  # type: ignore[arg-type]
                               tcp=TCPConnect(ip=ip, port=port, t0=0, t=0.01, failure=tcp_fail), tls=tls,
                               tls_benign=benign, tls_no_sni=benign)


def fetch(status: int = 200, *, title: str = "Example", length: int = 1000, failure: str | None = None,
          url: str = "https://www.example.org/", headers: tuple[tuple[str, str], ...] = ()) -> HTTPFetch:
    resp = None if failure else HTTPResponse(status_code=status, headers=headers, body_length=length,
                                             body_truncated=False, body_sha256="0" * 64, body_b64="", title=title)
    req = HTTPRequest(url=url, ip="192.0.2.1", port=443, method="GET", request_headers=(), t0=0, t=0.1,
                      failure=failure, response=resp)
    return HTTPFetch(requests=(req,), failure=failure)


def redirect_fetch(failure: str, target: str = "https://blocked.example.net/") -> HTTPFetch:
    """A 302 from the site to ``target``, whose hop failed with ``failure``."""
    first = fetch(302).requests[0]
    failed = HTTPRequest(url=target, ip=None if failure.startswith(("dns_", "http_")) else "198.51.100.9",
                         port=443, method="GET", request_headers=(), t0=0.1, t=0.2, failure=failure)
    return HTTPFetch(requests=(first, failed), failure=failure)


def helper(ip: str = "192.0.2.1", *, tcp_fail: str | None = None, tls_fail: str | None = None, vf: str | None = None,
           http: ControlHTTP | None = None, port: int = 443) -> ControlResult:
    key = f"{ip}:{port}"
    return ControlResult(source="local", failure=None, dns_addresses=(ip,),
                         endpoints={key: ControlEndpoint(ip=ip, port=port, tcp_failure=tcp_fail, tls_attempted=True,
                                                         tls_failure=tls_fail, tls_verification_failure=vf)},
                         http=http or ControlHTTP(failure=None, final_url="https://www.example.org/", status_code=200,
                                                  title="Example", body_length=1000))


def obs(url: str = "https://www.example.org/", *, queries=(), dns_control=None, control=None, endpoints=(),
        http=None, throughput: ThroughputCheck | None = None, **kw) -> WebObservations:
    target = targets_from_urls([url])[0]
    return WebObservations(target=target, queries=tuple(queries), dns_control=dns_control or doh("192.0.2.1"),
                           control=control, endpoints=tuple(endpoints), skipped=kw.pop("skipped", ()), http=http,
                           throughput=throughput, **kw)


def thr(target_s: float, baseline_s: float | None, *, nbytes: int = 4 * MIN_BYTES, cut: bool = False,
        baseline_failure: str | None = None, note: str = "") -> ThroughputCheck:
    """A throughput check: ``nbytes`` in ``target_s`` here (cut mid-body by the timeout when
    ``cut``), in ``baseline_s`` with the benign SNI (None = the baseline got no response head)."""
    base = None if baseline_s is None else Transfer(bytes=nbytes, duration_s=baseline_s, failure=baseline_failure,
                                                    status_code=200)
    target = Transfer(bytes=nbytes, duration_s=target_s, failure="generic_timeout_error" if cut else None)
    return ThroughputCheck(url="https://www.example.org/", ip="192.0.2.1", port=443, target=target,
                           baseline_sni="example.com", baseline=base,
                           baseline_failure=baseline_failure, note=note, retest=target)  # the re-test: as slow


OK_EP = ep("192.0.2.1", tls=hs("192.0.2.1"))
#: Break test 24, finding 2: one global address among non-global ones (private, loopback, "this host",
#: link-local, multicast, broadcast), the probe's and the control's answer alike.
MIXED = ("192.0.2.1", "10.77.0.1", "127.0.0.1", "0.0.0.0", "169.254.1.1", "224.0.0.1", "255.255.255.255")
MIXED_SKIPPED = tuple((a, "not contacted: non-global") for a in MIXED[1:])
#: The blockpage fingerprints those answers match, as the web test records them (127.0.0.1 and 0.0.0.0 are
#: Citizen Lab ``br`` fingerprints).
MIXED_BP = tuple(match_dns(MIXED))
HTTP_OK = ControlHTTP(failure=None, final_url="http://www.example.org/", status_code=200, title="Example",
                      body_length=1000)


def own_page(probe: tuple[str, ...], ctl: tuple[str, ...]) -> WebObservations:
    """http://www.example.org/ whose probe answers are ``probe`` and the controls' ``ctl`` (review 24b): the page
    fetched from the global probe answers and equal to the control's, the non-global ones not contacted."""
    return obs("http://www.example.org/", queries=[q(*probe)], dns_control=doh(*ctl),
               control=replace(helper(port=80, http=HTTP_OK), dns_addresses=ctl),
               endpoints=[ep(a, port=80, source="both" if a in ctl else "probe") for a in probe
                          if not BOGONS.is_bogon(a)],
               skipped=tuple((a, "not contacted: non-global") for a in probe if BOGONS.is_bogon(a)),
               dns_blockpages=tuple(match_dns(probe)), http=fetch(url="http://www.example.org/"))


CASES = [
    # id, observations, vantage, expected (blocking, accessible, rule)
    ("offline", obs(queries=[q(failure="dns_nxdomain_error")], dns_control=doh(failure="network_unreachable")),
     VantageStatus(offline=True), (None, None, "vantage.offline")),
    ("offline-machine-without-health", obs(queries=[q(failure="dns_nxdomain_error")],
                                           dns_control=doh(failure="network_unreachable")),
     None, (None, None, "control.dns_failed")),
    ("intercepted-control", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch()),
     VantageStatus(control_intercepted_by="CN=Corp Proxy CA"), (None, None, "vantage.intercepted")),
    ("accessible-https", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch()), None,
     (False, True, "https.verified")),
    # both controls down, the page over verified TLS: accessible (controlFailureWithSuccessfulHTTPSWebsite)
    ("accessible-https-no-control", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(),
                                        dns_control=doh(failure="connection_refused")), None,
     (False, True, "https.verified_no_control")),
    # ... but a plain-HTTP page without any control: no verdict
    ("http-no-control-at-all", obs("http://www.example.org/", queries=[q("192.0.2.1")],
                                   endpoints=[ep("192.0.2.1", port=80)], http=fetch("http://www.example.org/"),
                                   dns_control=doh(failure="connection_refused")), None,
     (None, None, "control.dns_failed")),
    ("dns-nxdomain-only-probe", obs(queries=[q(failure="dns_nxdomain_error")]), None,
     ("dns", False, "dns.probe_failure")),
    ("dns-both-nxdomain", obs(queries=[q(failure="dns_nxdomain_error")],
                              dns_control=doh(dns_failure="dns_nxdomain_error")), None,
     (False, False, "dns.both_fail")),
    ("dns-bogon-FC01", obs(queries=[q("127.0.0.1")], endpoints=[ep("192.0.2.1", source="control", tls=hs("192.0.2.1"))]),
     None, ("dns", False, "dns.bogon")),
    ("dns-private-relay-FC04", obs(queries=[q("10.0.0.80")],
                                   endpoints=[ep("10.0.0.80", source="probe", tls=hs("10.0.0.80"))], http=fetch()),
     None, ("dns", False, "dns.bogon")),
    ("dns-injection-FC07", obs(queries=[q("198.51.100.201", replies=(reply("198.51.100.201", flags=0x8400),
                                                                       reply("192.0.2.202"), reply("192.0.2.1")))],
                               endpoints=[OK_EP]), None, ("dns", False, "dns.injection")),
    ("dns-injection-malformed-FC06", obs(queries=[q("127.0.0.1", replies=(reply("127.0.0.1", parse_error="BadEDNS"),
                                                                           reply("192.0.2.1")))],
                                         endpoints=[OK_EP]), None, ("dns", False, "dns.bogon")),
    ("cdn-geodns-FC02", obs(queries=[q("198.51.100.31")], dns_control=doh("192.0.2.31"),
                            endpoints=[ep("198.51.100.31", source="probe", tls=hs("198.51.100.31"))],
                            http=fetch()), None, (False, True, "https.verified")),
    ("tls-sni-differential-no-helper", obs(queries=[q("192.0.2.1")],
                                           endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", failure="generic_timeout_error"),
                                                         benign=hs("192.0.2.1", sni="example.com"))]),
     None, ("tls", False, "tls.sni_differential")),
    ("tls-no-helper-no-differential", obs(queries=[q("192.0.2.1")],
                                          endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", failure="generic_timeout_error"),
                                                        benign=hs("192.0.2.1", failure="generic_timeout_error"))]),
     None, (None, None, "tls.no_control")),
    ("tls-helper-ok-FC10", obs(queries=[q("192.0.2.1")], control=helper(http=ControlHTTP(failure="eof_error")),
                               endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", failure="generic_timeout_error"),
                                             benign=hs("192.0.2.1", sni="example.com"))]),
     None, ("tls", False, "tls.control_ok")),
    ("tls-address-keyed", obs(queries=[q("192.0.2.1")], control=helper(),
                              endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", failure="connection_reset"),
                                            benign=hs("192.0.2.1", failure="connection_reset"))]),
     None, ("tcp_ip", False, "tls.control_ok")),
    ("tls-both-fail-down", obs(queries=[q("192.0.2.1")], control=helper(tls_fail="generic_timeout_error"),
                               endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", failure="generic_timeout_error"),
                                             benign=hs("192.0.2.1", failure="generic_timeout_error"))]),
     None, (False, False, "tls.both_fail")),
    ("tcp-blocked", obs(queries=[q("192.0.2.1")], control=helper(),
                        endpoints=[ep("192.0.2.1", tcp_fail="generic_timeout_error",
                                      tls=hs("192.0.2.1", failure="generic_timeout_error", connect_failure=True))]),
     None, ("tcp_ip", False, "tcp_ip.control_ok")),
    ("tcp-both-fail", obs(queries=[q("192.0.2.1")], control=helper(tcp_fail="generic_timeout_error"),
                          endpoints=[ep("192.0.2.1", tcp_fail="generic_timeout_error",
                                        tls=hs("192.0.2.1", failure="generic_timeout_error", connect_failure=True))]),
     None, (False, False, "tcp_ip.both_fail")),
    ("tcp-no-helper", obs(queries=[q("192.0.2.1")],
                          endpoints=[ep("192.0.2.1", tcp_fail="generic_timeout_error",
                                        tls=hs("192.0.2.1", failure="generic_timeout_error", connect_failure=True))]),
     None, (None, None, "tcp_ip.no_control")),
    ("tcp-control-refused-to-test", obs(queries=[q("192.0.2.1")],
                                        control=replace(helper(), endpoints={}, refused=("192.0.2.1:443",)),
                                        endpoints=[ep("192.0.2.1", tcp_fail="generic_timeout_error",
                                                      tls=hs("192.0.2.1", failure="generic_timeout_error",
                                                             connect_failure=True))]),
     None, (None, None, "tcp_ip.control_silent")),
    ("helper-unreachable-FC18", obs(queries=[q("192.0.2.1")],
                                    control=ControlResult(source="helper", failure="control_failure: generic_timeout_error"),
                                    endpoints=[ep("192.0.2.1", tcp_fail="generic_timeout_error",
                                                  tls=hs("192.0.2.1", failure="generic_timeout_error",
                                                         connect_failure=True))]),
     None, (None, None, "tcp_ip.no_control")),
    ("broken-cert-FC12", obs(queries=[q("192.0.2.1")], control=helper(vf="ssl_invalid_hostname"),
                             endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", vf="ssl_invalid_hostname"))],
                             http=fetch(failure="ssl_invalid_hostname")),
     None, (False, False, "tls.both_invalid")),
    # a DNS blockpage address whose server has its own certificate: the helper, asked to test the
    # probe's address, fails verification there too; that is not a misconfigured site (lab kz-2021)
    ("dns-blockpage-host-with-own-cert", obs(
        queries=[q("203.0.113.9")], dns_control=doh("192.0.2.1"),
        control=ControlResult(source="local", failure=None, dns_addresses=("192.0.2.1",), endpoints={
            "203.0.113.9:443": ControlEndpoint(ip="203.0.113.9", port=443, tcp_failure=None, tls_attempted=True,
                                               tls_failure=None, tls_verification_failure="ssl_invalid_hostname"),
            "192.0.2.1:443": ControlEndpoint(ip="192.0.2.1", port=443, tcp_failure=None, tls_attempted=True,
                                             tls_failure=None, tls_verification_failure=None)},
            http=ControlHTTP(failure=None, final_url="https://www.example.org/", status_code=200, title="Example",
                             body_length=1000)),
        endpoints=[ep("203.0.113.9", source="probe", tls=hs("203.0.113.9", vf="ssl_invalid_hostname"))],
        http=fetch(failure="ssl_invalid_hostname")),
     None, ("dns", False, "dns.inconsistent_then_tls_invalid")),
    ("unknown-issuer-only-here", obs(queries=[q("192.0.2.1")], control=helper(),
                                     endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", vf="ssl_unknown_authority"))],
                                     http=fetch(failure="ssl_unknown_authority")),
     None, ("tls_mitm", False, "tls.unknown_issuer")),
    ("cert-invalid-no-helper", obs(queries=[q("192.0.2.1")],
                                   endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", vf="ssl_unknown_authority"))],
                                   http=fetch(failure="ssl_unknown_authority")),
     None, (None, None, "tls.verify_no_control")),
    ("http-failure", obs("http://www.example.org/", queries=[q("192.0.2.1")], control=helper(port=80),
                         endpoints=[ep("192.0.2.1", port=80)], http=fetch(failure="connection_reset")),
     None, ("http-failure", False, "http.failure")),
    ("http-both-fail", obs("http://www.example.org/", queries=[q("192.0.2.1")],
                           control=helper(port=80, http=ControlHTTP(failure="eof_error")),
                           endpoints=[ep("192.0.2.1", port=80)], http=fetch(failure="eof_error")),
     None, (False, False, "http.both_fail")),
    ("http-control-refused-redirect", obs("http://www.example.org/", queries=[q("192.0.2.1")],
                                          control=helper(port=80, http=ControlHTTP(
                                              failure="http_invalid_redirect_location_host")),
                                          endpoints=[ep("192.0.2.1", port=80)], http=fetch(failure="connection_reset")),
     None, (None, None, "http.control_untested")),
    ("http-diff", obs("http://www.example.org/", queries=[q("192.0.2.1")], control=helper(port=80),
                      endpoints=[ep("192.0.2.1", port=80)],
                      http=fetch(403, title="Доступ ограничен", length=200, url="http://www.example.org/")),
     None, ("http-diff", False, "http.diff")),
    ("http-match-dynamic-FC16", obs("http://www.example.org/", queries=[q("192.0.2.1")],
                                    control=helper(port=80, http=ControlHTTP(failure=None, status_code=200,
                                                                             final_url="http://www.example.org/",
                                                                             title="Грани.Ру: Главное", body_length=1400)),
                                    endpoints=[ep("192.0.2.1", port=80)],
                                    http=fetch(title="Грани.Ру:  Главное", length=1000, url="http://www.example.org/")),
     None, (False, True, "http.match")),
    ("http-no-control", obs("http://www.example.org/", queries=[q("192.0.2.1")], endpoints=[ep("192.0.2.1", port=80)],
                            http=fetch(url="http://www.example.org/")),
     None, (None, None, "http.no_control")),
    ("cloudflare-challenge-FC13", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                      http=fetch(403, title="Just a moment...",
                                                 headers=(("Server", "cloudflare"), ("cf-mitigated", "challenge")))),
     None, (False, False, "http.server_side")),
    ("final-host-differs-FC14", obs("http://casino.example.org/", queries=[q("192.0.2.240")], control=helper(
        "192.0.2.121", port=80, http=ControlHTTP(failure=None, final_url="http://casino.example.org/", status_code=200,
                                                 title="Casino", body_length=1000)),
        endpoints=[ep("192.0.2.240", port=80, source="probe"), ep("192.0.2.121", port=80, source="control")],
        http=fetch(200, title="Ostrzeżenie", url="https://warning.gov.example/komunikat")),
     None, ("dns", False, "http.final_host_differs")),
]


def redirect_refused(location_ip: str, why: str) -> HTTPFetch:
    """A plain-HTTP 302 into ``location_ip`` that the address policy refused (issue 11)."""
    first = HTTPRequest(url="http://www.example.org/", ip="192.0.2.1", port=80, method="GET", request_headers=(),
                        t0=0, t=0.1, failure=None,
                        response=HTTPResponse(status_code=302, headers=(("Location", f"http://{location_ip}/"),),
                                              body_length=0, body_truncated=False, body_sha256="0" * 64,
                                              body_b64="", title=None))
    refused = HTTPRequest(url=f"http://{location_ip}/", ip=None, port=None, method="GET", request_headers=(),
                          t0=0.1, t=0.1, failure="local_network_refused", refused=((location_ip, why),))
    return HTTPFetch(requests=(first, refused), failure="local_network_refused")


# issue 11: a redirect into private space is not followed; its address is the evidence
CASES += [
    ("redirect-into-private-isp-blockpage", obs("http://www.example.org/", queries=[q("192.0.2.1")],
                                                control=helper(port=80), endpoints=[ep("192.0.2.1", port=80)],
                                                http=redirect_refused("10.10.34.35", "private_from_public")),
     None, ("http-diff", False, "http.redirect_into_private")),
    ("redirect-into-the-vantage-lan", obs("http://www.example.org/", queries=[q("192.0.2.1")],
                                          control=helper(port=80), endpoints=[ep("192.0.2.1", port=80)],
                                          http=redirect_refused("192.168.1.1", "vantage_lan")),
     None, ("http-diff", False, "http.redirect_into_private")),
    # a plain-HTTP redirect to a Location without a host, which the helper meets too: the site's own mistake
    # (webconnectivityqa redirectWithBrokenLocationForHTTP says "http-failure"; ooni/probe#2628)
    ("redirect-broken-location-plain-http-control-too", obs(
        "http://www.example.org/", queries=[q("192.0.2.1")],
        control=helper(port=80, http=ControlHTTP(failure="http_invalid_redirect_location_host")),
        endpoints=[ep("192.0.2.1", port=80)],
        http=HTTPFetch(requests=fetch(302, url="http://www.example.org/", headers=(("Location", "http://"),)).requests,
                       failure="http_invalid_redirect_location_host")),
     None, (False, False, "http.both_fail")),
    ("redirect-into-private-control-refused-too", obs(
        "http://www.example.org/", queries=[q("192.0.2.1")],
        control=helper(port=80, http=ControlHTTP(failure="http_invalid_redirect_location_host")),
        endpoints=[ep("192.0.2.1", port=80)], http=redirect_refused("10.10.34.35", "private_from_public")),
     None, (None, None, "http.control_untested")),
]


# FC-19: SNI-keyed throttling, judged by the benign-SNI baseline to the same address
TIMEOUT = "generic_timeout_error"
HTTP_URL = "http://www.example.org/"
HTTP_EP = ep("192.0.2.1", port=80)


def cut_fetch(*, stall: float, nbytes: int = 4 * MIN_BYTES, took: float = 20.0) -> HTTPFetch:
    """A plain-HTTP fetch whose body read timed out after ``nbytes`` in ``took`` s, its last byte
    ``stall`` s before the deadline (a response head arrived; the hop failed, so no response kept)."""
    req = HTTPRequest(url=HTTP_URL, ip="192.0.2.1", port=80, method="GET", request_headers=(), t0=0, t=took + 0.1,
                      failure=TIMEOUT, body_bytes_received=nbytes, body_duration_s=took, body_stall_s=stall)
    return HTTPFetch(requests=(req,), failure=TIMEOUT)


def thr_http(baseline_s: float | None, *, baseline_failure: str | None = None) -> ThroughputCheck:
    """The plain-HTTP page's throughput check: cut after 20 s here; the baseline over HTTPS from the
    same address in ``baseline_s`` (None = it got no response head: ``baseline_failure``)."""
    t = thr(20.0, baseline_s, cut=True, baseline_failure=baseline_failure,
            note="" if baseline_s is not None else f"the baseline failed ({baseline_failure}): no comparison")
    return replace(t, url=HTTP_URL)
CASES += [
    ("throttled-FC19", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=fetch(),
                           throughput=thr(8.0, 0.05)), None, ("throttling", True, "throttling.sni_ratio")),
    ("throttled-no-helper-FC19", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(),
                                     throughput=thr(8.0, 0.05)), None, ("throttling", True, "throttling.sni_ratio")),
    ("throttled-exactly-10x", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(),
                                  throughput=thr(1.0, 0.1)), None, ("throttling", True, "throttling.sni_ratio")),
    ("slow-under-10x", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(), throughput=thr(1.0, 0.11)),
     None, (False, True, "https.verified")),
    ("slow-everywhere", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=fetch(),
                            throughput=thr(8.0, 7.5)), None, (False, True, "https.verified")),
    ("slow-no-baseline", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=fetch(),
                             throughput=thr(8.0, None, baseline_failure="connection_reset",
                                            note="the baseline failed (connection_reset): no comparison")),
     None, (False, True, "https.verified")),
    ("slow-baseline-cut-mid-body", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(),
                                       throughput=thr(8.0, 0.05, baseline_failure=TIMEOUT)),
     None, (False, True, "https.verified")),
    ("slow-but-small", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(),
                           throughput=thr(8.0, 0.05, nbytes=MIN_BYTES - 1)), None, (False, True, "https.verified")),
    ("cut-mid-body-throttled-FC19", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                        http=fetch(failure=TIMEOUT), throughput=thr(20.0, 0.05, cut=True)),
     None, ("throttling", True, "throttling.sni_ratio")),
    ("cut-mid-body-throttled-no-helper", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP],
                                             http=fetch(failure=TIMEOUT), throughput=thr(20.0, 0.05, cut=True)),
     None, ("throttling", True, "throttling.sni_ratio")),
    # what OONI says (FC-19): without a baseline the timeout stays an http-failure
    ("cut-mid-body-no-baseline", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                     http=fetch(failure=TIMEOUT),
                                     throughput=thr(20.0, None, cut=True, baseline_failure="connection_reset")),
     None, ("http-failure", False, "http.failure")),
    ("cut-mid-body-slow-everywhere", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(failure=TIMEOUT),
                                         throughput=thr(20.0, 15.0, cut=True)), None, (None, None, "http.no_control")),
    # plain HTTP cut mid-body while still flowing, the helper's fetch fine, no baseline saying the site is
    # fast: a slow site looks like a throttled one (break test); a freeze stays http-failure (bbs#490)
    ("plain-http-slow-steady-no-baseline", obs(HTTP_URL, queries=[q("192.0.2.1")], control=helper(port=80),
                                               endpoints=[HTTP_EP], http=cut_fetch(stall=0.05),
                                               throughput=thr_http(None, baseline_failure="connection_refused")),
     None, (None, None, "http.slow_no_baseline")),
    ("plain-http-slow-steady-never-baselined", obs(HTTP_URL, queries=[q("192.0.2.1")], control=helper(port=80),
                                                   endpoints=[HTTP_EP], http=cut_fetch(stall=0.05)),
     None, (None, None, "http.slow_no_baseline")),
    ("plain-http-slow-steady-baseline-slow-too", obs(HTTP_URL, queries=[q("192.0.2.1")], control=helper(port=80),
                                                     endpoints=[HTTP_EP], http=cut_fetch(stall=0.05),
                                                     throughput=thr_http(15.0)),
     None, (None, None, "http.slow_no_baseline")),
    ("plain-http-frozen-mid-body", obs(HTTP_URL, queries=[q("192.0.2.1")], control=helper(port=80),
                                       endpoints=[HTTP_EP], http=cut_fetch(stall=9.5),
                                       throughput=thr_http(None, baseline_failure="connection_refused")),
     None, ("http-failure", False, "http.failure")),
    ("plain-http-slow-steady-throttled", obs(HTTP_URL, queries=[q("192.0.2.1")], control=helper(port=80),
                                             endpoints=[HTTP_EP], http=cut_fetch(stall=0.05),
                                             throughput=thr_http(0.05)),
     None, ("throttling", True, "throttling.sni_ratio")),
    # interception and blockpage-level rules come first: a throttled MITM is tls_mitm
    ("unknown-issuer-and-slow", obs(queries=[q("192.0.2.1")], control=helper(),
                                    endpoints=[ep("192.0.2.1", tls=hs("192.0.2.1", vf="ssl_unknown_authority"))],
                                    http=fetch(failure="ssl_unknown_authority"), throughput=thr(8.0, 0.05)),
     None, ("tls_mitm", False, "tls.unknown_issuer")),
    ("server-side-403-slow", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                 http=fetch(403, title="Forbidden"), throughput=thr(8.0, 0.05)),
     None, (False, False, "https.server_differs")),
]


# Rules no test executed before the table (issue 10), and the table's other rows.
#: A real DNS blockpage fingerprint (OONI fastpath ``ooni.by_4``, Belarus): its address.
BLOCKPAGE_IP = "134.17.0.7"
#: A real HTTP body fingerprint (the first OONI fastpath body signature that is not a known false positive).
HTTP_BLOCKPAGE_FP = next(f for f in all_fingerprints()
                         if f.kind == "http_body" and f.source == "ooni-fastpath" and not f.expected_false_positive)
def _qaznet_finding():
    """inspect_chain on the real Qaznet Trust Network root (2019; IMC 2020): a finding with mitm True."""
    from importlib import resources

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from probe.mitm import inspect_chain, known_roots

    root = next(r for r in known_roots() if r.tag == "qaznet-2019")
    cert = x509.load_pem_x509_certificate((resources.files("probe") / "data" / "mitm-roots" / root.file).read_bytes())
    finding = inspect_chain([cert.public_bytes(serialization.Encoding.DER)])
    assert finding.mitm
    return finding


CASES += [
    # a chain carrying the Qaznet root: interception, whatever else is seen (IMC 2020)
    ("known-interception-root", obs(queries=[q("192.0.2.1")], control=helper(),
                                    endpoints=[replace(ep("192.0.2.1", tls=hs("192.0.2.1", vf="ssl_unknown_authority")),
                                                       mitm=_qaznet_finding())],
                                    http=fetch(failure="ssl_unknown_authority")),
     None, ("tls_mitm", False, "tls_mitm.known_root")),
    # the resolver answered a known blockpage address (fingerprint databases)
    ("dns-blockpage-address", obs(queries=[q(BLOCKPAGE_IP)], dns_control=doh("192.0.2.1"),
                                  endpoints=[ep(BLOCKPAGE_IP, source="probe", tls=hs(BLOCKPAGE_IP, vf="ssl_invalid_hostname"))],
                                  dns_blockpages=tuple(match_dns([BLOCKPAGE_IP]))),
     None, ("dns", False, "dns.blockpage_ip")),
    # plain HTTP: an inconsistent answer leads to a page matching a blockpage fingerprint
    ("dns-then-blockpage-page", obs("http://www.example.org/", queries=[q("198.51.100.80")], dns_control=doh("192.0.2.1"),
                                    endpoints=[ep("198.51.100.80", source="probe", port=80)],
                                    http=fetch(200, title="Blocked", length=300, url="http://www.example.org/"),
                                    http_blockpages=(HTTP_BLOCKPAGE_FP,)),
     None, ("dns", False, "dns.blockpage_http")),
    ("http-blockpage-consistent-dns", obs("http://www.example.org/", queries=[q("192.0.2.1")], control=helper(port=80),
                                          endpoints=[ep("192.0.2.1", port=80)],
                                          http=fetch(200, title="Blocked", length=300, url="http://www.example.org/"),
                                          http_blockpages=(HTTP_BLOCKPAGE_FP,)),
     None, ("http-diff", False, "http.blockpage")),
    # RFC 7766: a truncated UDP answer (TC bit) whose TCP retry failed is a resolver limitation
    ("dns-truncated-tcp-retry-failed", obs(queries=[q(failure="generic_timeout_error", replies=(reply(flags=0x8380),))]),
     None, (None, None, "dns.truncated_retry_failed")),
    # the vantage's resolvers fail a well-known name right after this input's lookup failed
    ("resolver-check-fails-too", obs(queries=[q(failure="dns_servfail_error")],
                                     resolver_check=(replace(q(failure="dns_servfail_error"), hostname="example.com"),)),
     None, (None, None, "vantage.resolver_broken")),
    ("resolver-check-answers", obs(queries=[q(failure="dns_servfail_error")],
                                   resolver_check=(replace(q("192.0.2.9"), hostname="example.com"),)),
     None, ("dns", False, "dns.probe_failure")),
    # ... or the run's health check saw them fail
    ("resolver-broken-at-health-check", obs(queries=[q(failure="dns_servfail_error")]),
     VantageStatus(resolver_failure="dns_servfail_error"), (None, None, "vantage.resolver_broken")),
    # an inconsistent answer, then a failure: the DNS is the cause (ts-017)
    ("dns-inconsistent-then-connect-fails", obs(queries=[q("198.51.100.80")], dns_control=doh("192.0.2.1"),
                                                control=helper(),
                                                endpoints=[ep("198.51.100.80", source="probe", tcp_fail="connection_refused",
                                                              tls=hs("198.51.100.80", failure="connection_refused",
                                                                     connect_failure=True))]),
     None, ("dns", False, "dns.inconsistent_then_failure")),
    ("dns-inconsistent-then-http-fails", obs("http://www.example.org/", queries=[q("198.51.100.80")],
                                             dns_control=doh("192.0.2.1"), control=helper(port=80),
                                             endpoints=[ep("198.51.100.80", source="probe", port=80)],
                                             http=fetch(failure="connection_reset")),
     None, ("dns", False, "dns.inconsistent_then_failure")),
    # an inconsistent answer and a page unlike the control's (ts-017: dns, not http-diff)
    ("dns-inconsistent-then-page-differs", obs("http://www.example.org/", queries=[q("198.51.100.80")],
                                               dns_control=doh("192.0.2.1"), control=helper(port=80),
                                               endpoints=[ep("198.51.100.80", source="probe", port=80)],
                                               http=fetch(403, title="Something else", length=200,
                                                          url="http://www.example.org/")),
     None, ("dns", False, "dns.inconsistent_then_diff")),
    # ... and without an HTTP control nothing says whether the page is the site's (FC-04)
    ("dns-inconsistent-no-http-control", obs("http://www.example.org/", queries=[q("198.51.100.80")],
                                             dns_control=doh("192.0.2.1"),
                                             endpoints=[ep("198.51.100.80", source="probe", port=80)],
                                             http=fetch(200, url="http://www.example.org/")),
     None, (None, None, "dns.inconsistent_no_control")),
    # every address the probe got was skipped (here: IPv6 on a v4-only vantage), none contacted
    ("no-probe-endpoint", obs(queries=[q("192.0.2.1")], endpoints=[ep("192.0.2.1", source="control", tls=hs("192.0.2.1"))],
                              skipped=(("192.0.2.1", "not contacted: test"),)),
     None, (None, None, "transport.no_endpoint")),
    # an endpoint worked but the fetch never started (cut short by the measurement deadline)
    ("http-not-attempted", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=None),
     None, (None, None, "http.not_attempted")),
]

# issue 12: the wrong verdicts listed at the top
CASES += [
    # ghost DNS: both controls NXDOMAIN, the ISP resolver answers (ooni/probe#2308, webconnectivityqa ghostDNS*)
    ("dns-ghost", obs(queries=[q("198.51.100.66")], dns_control=doh(dns_failure="dns_nxdomain_error"),
                      control=replace(helper(), dns_addresses=(), dns_failure="dns_nxdomain_error", endpoints={}),
                      endpoints=[ep("198.51.100.66", source="probe", tcp_fail="connection_refused")]),
     None, ("dns", False, "dns.ghost")),
    ("dns-ghost-doh-only", obs(queries=[q("198.51.100.66")], dns_control=doh(dns_failure="dns_nxdomain_error"),
                               endpoints=[ep("198.51.100.66", source="probe", tls=hs("198.51.100.66"))],
                               http=fetch()),
     None, ("dns", False, "dns.ghost")),
    # every resolver (probe and control) answers 127.0.0.1: the site's own DNS (webconnectivityqa localhostWithHTTP)
    ("dns-localhost-everywhere", obs(queries=[q("127.0.0.1")], dns_control=doh("127.0.0.1"),
                                     control=replace(helper(), dns_addresses=("127.0.0.1",), endpoints={})),
     None, (False, False, "dns.site_own_answer")),
    # an IP-literal input in private space, the control given the same address: no name resolved anything
    ("ip-literal-private-own-address", obs("http://10.1.2.3/", queries=[q("10.1.2.3")], dns_control=doh("10.1.2.3"),
                                           control=replace(helper(), dns_addresses=("10.1.2.3",), endpoints={})),
     None, (False, False, "dns.site_own_answer")),
    # the same non-global answers at probe and control, more than one: still the site's own (localhostWithHTTP)
    ("dns-own-answer-all-non-global", obs(queries=[q("127.0.0.1", "10.77.0.1")],
                                          dns_control=doh("127.0.0.1", "10.77.0.1"),
                                          control=replace(helper(), dns_addresses=("127.0.0.1", "10.77.0.1"),
                                                          endpoints={}),
                                          dns_blockpages=tuple(match_dns(["127.0.0.1"]))),
     None, (False, False, "dns.site_own_answer")),
    # break test 24, finding 2: a global address among the non-global ones, the same at the control, the page
    # fetched from it and equal to the control's: accessible (OONI classic: the answers overlap the control's,
    # consistent; a final response without HTTP diff: blocking false, accessible true). Was dns.site_own_answer
    ("dns-mixed-own-answer-page-fetched", obs("http://www.example.org/", queries=[q(*MIXED)], dns_control=doh(*MIXED),
                                              control=replace(helper(port=80, http=HTTP_OK), dns_addresses=MIXED),
                                              endpoints=[ep("192.0.2.1", port=80)], skipped=MIXED_SKIPPED,
                                              dns_blockpages=MIXED_BP,
                                              http=fetch(url="http://www.example.org/")),
     None, (False, True, "http.match")),
    ("dns-mixed-own-answer-https-verified", obs(queries=[q(*MIXED)], dns_control=doh(*MIXED),
                                                control=replace(helper(), dns_addresses=MIXED), endpoints=[OK_EP],
                                                skipped=MIXED_SKIPPED, dns_blockpages=MIXED_BP, http=fetch()),
     None, (False, True, "https.verified")),
    # a global blockpage address among them, the same at the control: still the site's own (parked), as before
    ("dns-own-answer-blockpage-and-global", obs(queries=[q(BLOCKPAGE_IP, "192.0.2.1")],
                                                dns_control=doh(BLOCKPAGE_IP, "192.0.2.1"),
                                                control=replace(helper(), dns_addresses=(BLOCKPAGE_IP, "192.0.2.1")),
                                                endpoints=[OK_EP], http=fetch(),
                                                dns_blockpages=tuple(match_dns([BLOCKPAGE_IP]))),
     None, (False, False, "dns.site_own_answer")),
    # ... and judged on that global address when it fails: refused from the control too, the site is down
    ("dns-mixed-own-answer-global-down", obs(queries=[q(*MIXED)], dns_control=doh(*MIXED),
                                             control=replace(helper(tcp_fail="connection_refused"),
                                                             dns_addresses=MIXED),
                                             endpoints=[ep("192.0.2.1", tcp_fail="connection_refused")],
                                             skipped=MIXED_SKIPPED, dns_blockpages=MIXED_BP),
     None, (False, False, "tcp_ip.both_fail")),
    # review 24b, item 1: the site's own answer holds 127.0.0.1 (the control's too); a censor swaps it for a
    # private address, or adds one: a bogon the control did not give is the resolver's (ooni/data
    # website_experiment_results: a bogon the trusted answers lack, blocked). Were http.match, dns.blockpage_ip
    ("dns-own-loopback-censor-swaps-private", own_page(("192.0.2.1", "10.77.0.5"), ("192.0.2.1", "127.0.0.1")),
     None, ("dns", False, "dns.bogon")),
    ("dns-own-loopback-censor-adds-private",
     own_page(("192.0.2.1", "127.0.0.1", "10.77.0.5"), ("192.0.2.1", "127.0.0.1")), None, ("dns", False, "dns.bogon")),
    # review 24b, item 2: 127.0.0.1 / 0.0.0.0 (blockpage fingerprints, Citizen Lab "br") the control gave too, the
    # answers not exactly equal (one more round-robin or private address at the control, one more GeoDNS address
    # at the probe): the site's own, no blockpage. Were dns.blockpage_ip
    ("dns-own-loopback-control-round-robin",
     own_page(("192.0.2.1", "127.0.0.1"), ("192.0.2.1", "192.0.2.2", "127.0.0.1")), None, (False, True, "http.match")),
    ("dns-own-loopback-control-one-more-private",
     own_page(("192.0.2.1", "127.0.0.1"), ("192.0.2.1", "127.0.0.1", "10.0.0.9")), None, (False, True, "http.match")),
    ("dns-own-this-host-probe-geodns",
     own_page(("192.0.2.1", "192.0.2.3", "0.0.0.0"), ("192.0.2.1", "0.0.0.0")), None, (False, True, "http.match")),
    # ... while a blockpage address the control did not give still is one
    ("dns-own-loopback-censor-adds-blockpage",
     own_page(("192.0.2.1", "127.0.0.1", BLOCKPAGE_IP), ("192.0.2.1", "127.0.0.1")), None,
     ("dns", False, "dns.blockpage_ip")),
    # an IPv6-only vantage (no IPv4 route) measuring an IPv4-only site: its own routing table
    ("v6only-vantage-v4only-site", obs(queries=[q("192.0.2.1")], control=helper(),
                                       endpoints=[ep("192.0.2.1", tcp_fail="network_unreachable")]),
     VantageStatus(ipv4_usable=False, ipv6_usable=True), (None, None, "vantage.address_family")),
    # an IPv4-only vantage, an IPv6-only site: no source address of that family
    ("v4only-vantage-v6only-site", obs(queries=[q("2a00:1450::1")], dns_control=doh("2a00:1450::1"),
                                       control=helper("2a00:1450::1"),
                                       endpoints=[ep("2a00:1450::1", tcp_fail="address_not_available")]),
     None, (None, None, "vantage.address_family")),
    # broken IPv6 (its canary fails): a timeout to an IPv6-only site is no evidence
    ("broken-ipv6-vantage", obs(queries=[q("2a00:1450::1")], dns_control=doh("2a00:1450::1"),
                                control=helper("2a00:1450::1"),
                                endpoints=[ep("2a00:1450::1", tcp_fail="generic_timeout_error")]),
     VantageStatus(ipv6_usable=False), (None, None, "vantage.address_family")),
    # a redirect whose target fails: the target's layer decides (webconnectivityqa redirectWithConsistentDNSAndThen*)
    ("redirect-target-nxdomain", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                     http=redirect_fetch("dns_nxdomain_error")),
     None, ("dns", False, "http.redirect_target")),
    ("redirect-target-refused", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                    http=redirect_fetch("connection_refused")),
     None, ("tcp_ip", False, "http.redirect_target")),
    ("redirect-target-tls", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                http=redirect_fetch("ssl_unknown_authority")),
     None, ("tls", False, "http.redirect_target")),
    ("redirect-target-reset-stays-http-failure", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                                     http=redirect_fetch("connection_reset")),
     None, ("http-failure", False, "http.failure")),
    # a reset/timeout of the target does not say its step: the target's endpoint measured again decides
    # (issue 12; webconnectivityqa redirectWithConsistentDNSAndThenConnectionResetForHTTPS: XBlockingFlags 4, TLS)
    ("redirect-target-reset-in-tls-handshake",
     obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=redirect_fetch("connection_reset"),
         redirect_target=ep("198.51.100.9", source="probe", tls=hs("198.51.100.9", failure="connection_reset"),
                            benign=hs("198.51.100.9", sni="example.com"))),
     None, ("tls", False, "http.redirect_target")),
    ("redirect-target-timeout-at-connect",
     obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=redirect_fetch("generic_timeout_error"),
         redirect_target=ep("198.51.100.9", source="probe", tcp_fail="generic_timeout_error",
                            tls=hs("198.51.100.9", failure="generic_timeout_error", connect_failure=True))),
     None, ("tcp_ip", False, "http.redirect_target")),
    ("redirect-target-timeout-every-sni",
     obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=redirect_fetch("generic_timeout_error"),
         redirect_target=ep("198.51.100.9", source="probe", tls=hs("198.51.100.9", failure="generic_timeout_error"),
                            benign=hs("198.51.100.9", failure="generic_timeout_error", sni="example.com"))),
     None, ("tcp_ip", False, "http.redirect_target")),
    ("redirect-target-reset-in-http-exchange",
     obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=redirect_fetch("connection_reset"),
         redirect_target=ep("198.51.100.9", source="probe", tls=hs("198.51.100.9"))),
     None, ("http-failure", False, "http.failure")),
    # the genuine server (verified TLS) sends a broken Location: server-side (ooni/probe#2628)
    ("redirect-broken-location-genuine", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                             http=redirect_fetch("http_invalid_redirect_location_host")),
     None, (False, False, "http.redirect_broken_genuine")),
    # the same, as http_get records it: the 302 not followed is the last hop (ooni/probe#2628)
    ("redirect-broken-location-not-followed", obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP],
                                                  http=HTTPFetch(requests=fetch(302, headers=(("Location", "https://"),)
                                                                                ).requests,
                                                                 failure="http_invalid_redirect_location_host")),
     None, (False, False, "http.redirect_broken_genuine")),
]


def _relay_helper(relay_ip: str, ctl_ip: str = "192.0.2.1") -> ControlResult:
    """The helper resolved ``ctl_ip`` and connected there, and could not connect to ``relay_ip``."""
    ctl = helper(ctl_ip)
    return replace(ctl, endpoints={**ctl.endpoints, f"{relay_ip}:443": ControlEndpoint(
        ip=relay_ip, port=443, tcp_failure="connection_refused")})


NX_REPLY = DNSReply(t=0.005, raw_b64="", source="198.51.100.53:53", rcode="NXDOMAIN", flags=0x8183)

CASES += [
    # a forged NXDOMAIN racing the genuine answer, both kept by the listening window (lab dns-race)
    ("dns-injected-nxdomain-races-answer", obs(queries=[replace(q(failure="dns_nxdomain_error"),
                                                                replies=(NX_REPLY, reply("192.0.2.1")))],
                                               endpoints=[OK_EP], http=fetch()),
     None, ("dns", False, "dns.injection")),
    # the ISP relay the DNS points at, unreachable from outside, delivers the genuine site
    # (webconnectivityqa dnsHijackingToProxyWithHTTPSURL: inconsistent, accessible, blocking false)
    ("dns-relay-https", obs(queries=[q("198.51.100.80")], control=_relay_helper("198.51.100.80"),
                            endpoints=[ep("198.51.100.80", source="probe", tls=hs("198.51.100.80")),
                                       ep("192.0.2.1", source="control", tls=hs("192.0.2.1"))],
                            http=fetch()),
     None, (False, True, "dns.relay")),
    ("dns-relay-http", obs("http://www.example.org/", queries=[q("198.51.100.80")],
                           control=replace(_relay_helper("198.51.100.80"), http=ControlHTTP(
                               failure=None, final_url="http://www.example.org/", status_code=200, title="Example",
                               body_length=1000)),
                           endpoints=[ep("198.51.100.80", source="probe", port=80)],
                           http=fetch(url="http://www.example.org/")),
     None, (False, True, "dns.relay")),
]


#: The ASN database of the table's cases (probe.geoip in a run): only these addresses are known, so
#: only the cases using them see DNS consistency by ASN.
ASNS = {"198.51.100.180": "AS13335", "192.0.2.180": "AS13335", "198.51.100.181": "AS9198"}


def _cdn_helper(probe_ip: str) -> ControlResult:
    """The helper resolved 192.0.2.180 and reached the probe's address ``probe_ip`` too."""
    ctl = helper("192.0.2.180")
    key = f"{probe_ip}:443"
    return replace(ctl, endpoints={**ctl.endpoints, key: ControlEndpoint(ip=probe_ip, port=443, tcp_failure=None,
                                                                         tls_attempted=True, tls_failure=None,
                                                                         tls_verification_failure=None)})


def _refused(ip: str) -> EndpointObservation:
    return ep(ip, source="probe", tcp_fail="connection_refused",
              tls=hs(ip, failure="connection_refused", connect_failure=True))


CASES += [
    # OONI's rule (ts-017 "DNS consistency"; probe-cli's DNS analysis, before TLS validity): the
    # probe's answer in the same ASN as the control's is consistent, so a connect failure after it
    # is not DNS blocking (a CDN answering each resolver from another of its own addresses)
    ("dns-same-asn-then-connect-fails", obs(queries=[q("198.51.100.180")], dns_control=doh("192.0.2.180"),
                                            control=_cdn_helper("198.51.100.180"),
                                            endpoints=[_refused("198.51.100.180")]),
     None, ("tcp_ip", False, "tcp_ip.control_ok")),
    # ... and in another ASN it stays inconsistent: the DNS is the cause (ts-017)
    ("dns-other-asn-then-connect-fails", obs(queries=[q("198.51.100.181")], dns_control=doh("192.0.2.180"),
                                             control=_cdn_helper("198.51.100.181"),
                                             endpoints=[_refused("198.51.100.181")]),
     None, ("dns", False, "dns.inconsistent_then_failure")),
]


def injector(*answers: str, rcode: int = 0, hop: int | None = 2) -> InjectorProof:
    """Packet proof: the helper's address (no resolver there) answered with ``answers``."""
    return InjectorProof(non_resolver="203.0.113.53", answers=answers, rcode=rcode, ip_ttl=63, hops_est=2, hop=hop)


_INCONSISTENT_HTTP = dict(queries=[q("198.51.100.80")], dns_control=doh("192.0.2.1"),
                          endpoints=[ep("198.51.100.80", source="probe", port=80)],
                          http=fetch(200, url="http://www.example.org/"))
CASES += [
    # issue 16 part 1: packet proof of an on-path injector strengthens the DNS verdict. A weak case
    # (no HTTP control to judge the page behind an inconsistent answer) becomes dns ...
    ("dns-injector-proof-inconsistent-no-http-control",
     obs("http://www.example.org/", packet_dns=injector("198.51.100.80"), **_INCONSISTENT_HTTP),
     None, ("dns", False, "dns.injector_onpath")),
    # ... and so does the same case when the injector forges other addresses each time (GFW)
    ("dns-injector-proof-other-forged-address",
     obs("http://www.example.org/", packet_dns=injector("203.0.113.7"), **_INCONSISTENT_HTTP),
     None, ("dns", False, "dns.injector_onpath")),
    # no control at all (control.dns_failed without the proof): the injected address is the probe's
    ("dns-injector-proof-no-control", obs("http://www.example.org/", queries=[q("198.51.100.80")],
                                          dns_control=doh(failure="connection_refused"),
                                          endpoints=[ep("198.51.100.80", source="probe", port=80)],
                                          http=fetch(200, url="http://www.example.org/"),
                                          packet_dns=injector("198.51.100.80", hop=None)),
     None, ("dns", False, "dns.injector_onpath")),
    # ... but without a control another forged address proves nothing about the probe's answer
    ("dns-injector-proof-no-control-other-address", obs("http://www.example.org/", queries=[q("198.51.100.80")],
                                                        dns_control=doh(failure="connection_refused"),
                                                        endpoints=[ep("198.51.100.80", source="probe", port=80)],
                                                        http=fetch(200, url="http://www.example.org/"),
                                                        packet_dns=injector("203.0.113.7")),
     None, (None, None, "control.dns_failed")),
    # a forged NXDOMAIN, the probe's NXDOMAIN: the proof decides before dns.probe_failure
    ("dns-injector-proof-nxdomain", obs(queries=[q(failure="dns_nxdomain_error")], packet_dns=injector(rcode=3)),
     None, ("dns", False, "dns.injector_onpath")),
    # a bogon the injector gave: dns either way, now with the injector's hop
    ("dns-injector-proof-bogon", obs(queries=[q("10.10.34.34")], packet_dns=injector("10.10.34.34")),
     None, ("dns", False, "dns.injector_onpath")),
    # the probe's answer is the control's and the page verifies: an injector elsewhere did not touch it
    ("dns-injector-proof-probe-answer-genuine", obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(),
                                                   packet_dns=injector("203.0.113.7")),
     None, (False, True, "https.verified")),
]


def test_an_ip_literal_reason_names_no_name() -> None:
    """An IP-literal input's reason said "the name resolves to 10.1.2.3" (break test): no name, no DNS."""
    v = judge(next(c[1] for c in CASES if c[0] == "ip-literal-private-own-address"), bogons=Bogons())
    assert "resolves" not in v.reason and "the input is the IP address 10.1.2.3 itself (no DNS)" in v.reason, v.reason
    v = judge(next(c[1] for c in CASES if c[0] == "dns-localhost-everywhere"), bogons=Bogons())
    assert "the name resolves to 127.0.0.1" in v.reason


def test_a_mixed_answer_keeps_its_non_global_addresses_as_evidence() -> None:
    """Break test 24, finding 2: the page came from the one global address; the non-global ones the probe skipped
    stay in ``skipped`` (x_skipped_addresses) and a finding names them; the reason is the page's."""
    o = next(c[1] for c in CASES if c[0] == "dns-mixed-own-answer-page-fetched")
    v = judge(o, bogons=BOGONS)
    assert "the page matches the control's" in v.reason, v.reason
    assert [a for a, _ in o.skipped] == list(MIXED[1:])
    assert v.findings == ("the DNS answers also hold non-global addresses (0.0.0.0, 10.77.0.1, 127.0.0.1, 169.254.1.1, "
                          "224.0.0.1, 255.255.255.255), as the control's do: the verdict rests on the global ones",)
    # all of them non-global: the site's own misconfigured DNS, named in the reason
    v = judge(next(c[1] for c in CASES if c[0] == "dns-own-answer-all-non-global"), bogons=BOGONS)
    assert "the name resolves to 10.77.0.1, 127.0.0.1 from the control too" in v.reason, v.reason


def test_only_the_non_global_answers_the_control_gave_are_named_as_the_controls() -> None:
    """Review 24b, item 1: the finding says "as the control's do" of the non-global answers the control gave
    only (10.77.0.5, added beside the site's own 127.0.0.1, is the resolver's: dns.bogon names it)."""
    o = next(c[1] for c in CASES if c[0] == "dns-own-loopback-censor-adds-private")
    facts = Facts(o, BOGONS, VantageStatus())
    assert facts.findings("http") == ("the DNS answers also hold non-global addresses (127.0.0.1), as the "
                                      "control's do: the verdict rests on the global ones",)
    v = judge(o, bogons=BOGONS)
    assert v.reason == "the resolver answered non-global address 10.77.0.5; the control answered 127.0.0.1, 192.0.2.1"


def test_a_blockpage_reason_names_only_the_answers_the_control_did_not_give() -> None:
    """Review 24b, item 2: dns.blockpage_ip names the fingerprints of the answers the control did not give, not
    those of the site's own 127.0.0.1 the control gave too."""
    o = next(c[1] for c in CASES if c[0] == "dns-own-loopback-censor-adds-blockpage")
    v = judge(o, bogons=BOGONS)
    theirs = ", ".join(sorted({f.name for f in match_dns([BLOCKPAGE_IP])}))
    assert v.reason == f"DNS answer is a known blockpage address ({theirs})", v.reason
    assert {f.name for f in match_dns(["127.0.0.1"])} - {f.name for f in match_dns([BLOCKPAGE_IP])}


@pytest.mark.parametrize("case_id,observations,vantage,expected", CASES, ids=[c[0] for c in CASES])
def test_verdict_rules(case_id, observations, vantage, expected) -> None:
    v = judge(observations, bogons=BOGONS, vantage=vantage, asn_of=ASNS.get)
    assert (v.blocking, v.accessible, v.rule) == expected, v.reason
    assert v.reason


@pytest.mark.parametrize("case_id,observations,vantage,expected", CASES, ids=[c[0] for c in CASES])
def test_a_verdict_without_details_is_the_same_verdict(case_id, observations, vantage, expected) -> None:
    """judge(details=False) (OONI re-judging) decides by the same rule with the same blocking,
    accessible and reason (the throughput note included); it only skips findings and DNS consistency."""
    full = judge(observations, bogons=BOGONS, vantage=vantage, asn_of=ASNS.get)
    lean = judge(observations, bogons=BOGONS, vantage=vantage, asn_of=ASNS.get, details=False)
    assert (lean.blocking, lean.accessible, lean.rule, lean.reason, lean.server_side, lean.mitm) == (
        full.blocking, full.accessible, full.rule, full.reason, full.server_side, full.mitm)
    assert set(lean.findings) <= set(full.findings) and lean.dns_consistency == "unknown"
    assert len(lean.findings) <= 1  # the throughput note's only (it goes with the reason)


def test_no_blocked_verdict_when_everything_fails_offline() -> None:
    """A machine with no internet: the resolver says NXDOMAIN for everything, DoH is unreachable."""
    o = obs(queries=[q(failure="dns_nxdomain_error")], dns_control=doh(failure="network_unreachable"))
    for vantage in (None, VantageStatus(offline=True)):
        assert judge(o, bogons=BOGONS, vantage=vantage).blocking is None


def test_dns_bogon_keeps_tcp_ip_secondary_finding_FC01B() -> None:
    o = obs(queries=[q("10.10.34.35")], dns_control=doh("192.0.2.22"), control=helper("192.0.2.22"),
            endpoints=[ep("10.10.34.35", source="probe", tcp_fail="generic_timeout_error",
                          tls=hs("10.10.34.35", failure="generic_timeout_error", connect_failure=True)),
                       ep("192.0.2.22", source="control", tcp_fail="generic_timeout_error",
                          tls=hs("192.0.2.22", failure="generic_timeout_error", connect_failure=True))])
    v = judge(o, bogons=BOGONS)
    assert v.blocking == "dns" and v.rule == "dns.bogon"
    assert any("192.0.2.22:443" in f and "generic_timeout_error" in f for f in v.findings)


def test_ipv6_endpoint_failures_do_not_block_when_ipv4_works_FC08() -> None:
    v6 = ep("2001:db8:80::81", tcp_fail="generic_timeout_error",
            tls=hs("2001:db8:80::81", failure="generic_timeout_error", connect_failure=True))
    o = obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[v6, OK_EP], http=fetch())
    v = judge(o, bogons=BOGONS)
    assert (v.blocking, v.accessible) == (False, True)
    assert any("2001:db8:80::81" in f for f in v.findings)


def test_body_length_not_compared_when_truncated_FC15() -> None:
    big = fetch(url="http://www.example.org/", length=524288)
    resp = replace(big.requests[0].response, body_truncated=True, title=None)
    big = HTTPFetch(requests=(replace(big.requests[0], response=resp),), failure=None)
    ctl = helper(port=80, http=ControlHTTP(failure=None, final_url="http://www.example.org/", status_code=200,
                                           body_length=2_000_000, title=None))
    o = obs("http://www.example.org/", queries=[q("192.0.2.1")], control=ctl, endpoints=[ep("192.0.2.1", port=80)],
            http=big)
    v = judge(o, bogons=BOGONS)
    assert (v.blocking, v.accessible) == (False, True), v.reason


def test_throttling_reason_gives_both_rates_and_the_address_FC19() -> None:
    v = judge(obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(), throughput=thr(8.0, 0.05)), bogons=BOGONS)
    assert v.blocking == "throttling" and v.accessible is True
    assert "16.4 kB/s" in v.reason and "2.6 MB/s" in v.reason and "192.0.2.1:443" in v.reason
    assert "example.com" in v.reason and "160x" in v.reason
    cut = judge(obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(failure=TIMEOUT),
                    throughput=thr(20.0, 0.05, cut=True)), bogons=BOGONS)
    assert "timed out mid-body (generic_timeout_error)" in cut.reason


@pytest.mark.parametrize("throughput", [
    thr(8.0, None, baseline_failure="connection_reset", note="the baseline failed (connection_reset): no comparison"),
    thr(20.0, None, cut=True, baseline_failure="connection_reset",
        note="the baseline failed (connection_reset): no comparison"),
])
def test_no_throttling_verdict_without_a_baseline_says_so_FC19(throughput: ThroughputCheck) -> None:
    f = fetch(failure=TIMEOUT) if throughput.target.failure else fetch()
    v = judge(obs(queries=[q("192.0.2.1")], control=helper(), endpoints=[OK_EP], http=f, throughput=throughput),
              bogons=BOGONS)
    assert v.blocking != "throttling"
    assert "no throttling verdict without a benign-SNI baseline" in v.reason
    assert "connection_reset" in v.reason and fmt_rate(throughput.target.bps) in v.reason


def test_ratio_under_10_is_a_finding_not_a_verdict_FC19() -> None:
    v = judge(obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(), throughput=thr(8.0, 7.5)), bogons=BOGONS)
    assert v.rule == "https.verified" and "no throttling" not in v.reason
    assert any("not throttled by SNI" in f and "1.1x" in f for f in v.findings), v.findings


def test_fast_transfer_leaves_the_verdict_alone() -> None:
    fast = ThroughputCheck(url="https://www.example.org/", ip="192.0.2.1", port=443,
                           target=Transfer(bytes=4 * MIN_BYTES, duration_s=0.01, failure=None), note="not slow")
    v = judge(obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch(), throughput=fast), bogons=BOGONS)
    base = judge(obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch()), bogons=BOGONS)
    assert v == base


@pytest.mark.parametrize(("control", "says"), [
    (None, "no helper configured"),
    (ControlResult(source="helper", failure="control_failure: generic_timeout_error"),
     "the control helper failed (control_failure: generic_timeout_error)"),
])
def test_no_control_reason_says_whether_the_helper_is_missing_or_failed(control, says) -> None:
    """A configured but unreachable helper is not "no helper configured" (break test, finding 15)."""
    o = obs(queries=[q("192.0.2.1")], control=control,
            endpoints=[ep("192.0.2.1", tcp_fail="generic_timeout_error",
                          tls=hs("192.0.2.1", failure="generic_timeout_error", connect_failure=True))])
    v = judge(o, bogons=BOGONS)
    assert v.rule == "tcp_ip.no_control" and says in v.reason, v.reason


# --------------------------------------------------------------------------- the table itself


def test_every_rule_is_in_the_table_and_decides_a_case() -> None:
    """Every row of RULES decides at least one CASES row, giving only what it declares; the
    table's ids and the runner's/analysis' are exactly probe.vocab.Rule."""
    decided: dict[str, list[str]] = {}
    for case_id, observations, vantage, expected in CASES:
        r, v = decide(observations, bogons=BOGONS, vantage=vantage)
        assert v.rule == r.id.value
        assert v.blocking in r.gives, f"{case_id}: {r.name} gave {v.blocking!r}, declares {r.gives}"
        decided.setdefault(r.name, []).append(case_id)
    assert [r.name for r in RULES if r.name not in decided] == []
    assert len({r.name for r in RULES}) == len(RULES)
    ids = {r.id for r in RULES}
    assert ids | set(RULES_OUTSIDE_JUDGE) == set(Rule) and not ids & set(RULES_OUTSIDE_JUDGE)
    for r in RULES:
        assert "Source:" in r.doc and len(r.doc) > 40, r.name


def test_every_rule_cites_what_a_reader_can_find() -> None:
    """A file a rule's source names is in the repository, and a README section it names is a heading
    there: "GUIDE.md" and "DESIGN.md" (the team's notes, not shipped) were cited by 12 rules."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    headings = {" ".join(m.split()) for m in re.findall(r"^#+ (.+)$", readme, flags=re.M)}
    cited_sections = set()
    for r in RULES:
        for name in re.findall(r"(?<![\w/.-])([\w-]+(?:/[\w.-]+)*\.md)\b", r.doc):
            assert (REPO / name).is_file(), f"{r.name} cites {name}, which is not in the repository"
        for section in re.findall(r'README "([^"]+)"', r.doc):
            assert section in headings, f"{r.name} cites README section {section!r}, no such heading"
            cited_sections.add(section)
    assert "What a verdict means" in cited_sections  # the no-verdict-without-a-control principle


def test_the_table_follows_the_measurement() -> None:
    """Stages never go back (a DNS rule after an HTTP one would see facts it cannot trust), and the
    last rule is the HTTP stage's catch-all."""
    from probe.verdict_facts import STAGES

    order = [STAGES.index(r.stage) for r in RULES]
    assert order == sorted(order)
    assert RULES[-1].id == Rule.HTTP_NO_CONTROL and RULES[0].id == Rule.VANTAGE_OFFLINE


def test_docs_rules_md_is_the_table() -> None:
    doc = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    assert doc == rules_markdown(), "docs/rules.md is stale: python -m probe.verdict > docs/rules.md"
    for r in Rule:
        assert f"`{r.value}`" in doc


def test_dns_step_rules_are_the_ones_before_any_transport_evidence() -> None:
    from probe.verdict import DNS_STEP_RULES

    assert {"https.verified_no_control", "control.dns_failed", "dns.both_fail", "vantage.resolver_broken",
                              "dns.truncated_retry_failed", "dns.probe_failure", "dns.bogon", "dns.injection",
                              "dns.injector_onpath", "dns.blockpage_ip", "dns.site_own_answer",
                              "dns.ghost"} == DNS_STEP_RULES


def test_every_rule_id_given_outside_the_judge_has_a_test() -> None:
    """deadline, internal_error (the runner), ooni and analysis.ooni's version rules: each is asserted
    by some test (by its id or its Rule member), besides the vocabulary's own tests."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((REPO / "tests").rglob("test_*.py"))
             if p.name not in ("test_verdict.py", "test_vocab.py")]
    for rid in RULES_OUTSIDE_JUDGE:
        assert any(f'"{rid.value}"' in t or f"Rule.{rid.name}" in t for t in texts), rid


def test_relay_records_the_dns_manipulation_and_geodns_stays_consistent() -> None:
    """The relay's verdict is accessible with dns_consistency inconsistent (OONI's dnsHijackingToProxy*);
    a CDN/GeoDNS address the helper reaches from outside too stays consistent (FC-02)."""
    relay = next(o for c, o, _v, _e in CASES if c == "dns-relay-https")
    v = judge(relay, bogons=BOGONS)
    assert (v.blocking, v.accessible, v.dns_consistency) == (False, True, "inconsistent")
    geo = replace(relay, control=_cdn_helper("198.51.100.80"),
                  endpoints=(ep("198.51.100.80", source="probe", tls=hs("198.51.100.80")),))
    v = judge(geo, bogons=BOGONS)
    assert (v.blocking, v.accessible, v.rule, v.dns_consistency) == (False, True, "https.verified", "consistent")


def test_injector_proof_reason_names_the_hop_and_the_ttl() -> None:
    v = judge(obs("http://www.example.org/", packet_dns=injector("198.51.100.80"), **_INCONSISTENT_HTTP),
              bogons=BOGONS)
    assert "203.0.113.53" in v.reason and "at hop 2" in v.reason and "IP TTL 63" in v.reason, v.reason
    assert "198.51.100.80" in v.reason and v.dns_consistency == "injected"
    v = judge(obs(queries=[q("10.10.34.34")], packet_dns=injector("10.10.34.34", hop=None)), bogons=BOGONS)
    assert "~2 hops away" in v.reason and "at hop" not in v.reason, v.reason


def test_interception_keeps_the_dns_comparison_ooni_makes() -> None:
    """A verdict decided by a known interception root still carries DNS consistency as OONI computes it
    (ts-017: the answers against the control's, whatever TLS did): answers equal to the control's are
    ``consistent``; answers that differ, or no control, stay ``unknown`` (the DNS rules did not run)."""
    mitm = next(o for c, o, _v, _e in CASES if c == "known-interception-root")
    v = judge(mitm, bogons=BOGONS)
    assert (v.blocking, v.rule, v.dns_consistency) == ("tls_mitm", "tls_mitm.known_root", "consistent")
    other = replace(mitm, control=helper("192.0.2.99"), dns_control=doh("192.0.2.99"))
    assert judge(other, bogons=BOGONS).dns_consistency == "unknown"
    no_control = replace(mitm, control=None, dns_control=None)
    v = judge(no_control, bogons=BOGONS)
    assert (v.blocking, v.dns_consistency) == ("tls_mitm", "unknown")
