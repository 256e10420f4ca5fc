"""Deterministic observations, one per verdict kind, for the record golden files.

No network and no randomness: certificates are Ed25519 (deterministic signatures) from
fixed keys, DNS replies have a fixed id, times are fixed. :func:`cases` returns
``(kind, observations, vantage)``; :func:`record` judges one and writes its df-000
record with the probe's own code (:func:`probe.verdict.judge`,
:func:`probe.records.measurement`).

Used by tests/test_record_golden.py (golden files under tests/data/golden/) and to write
tests/data/records-0.1.0.jsonl (the records kzprobe 0.1.0 wrote for these cases, kept
so the analysis keeps reading them).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from probe import records
from probe.addresses import Bogons, format_endpoint
from probe.control import ControlEndpoint, ControlHTTP, ControlResult
from probe.fingerprints import match_http
from probe.measure.dns import DNSAnswer, DNSQuery, DNSReply
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse
from probe.measure.tcp import TCPConnect
from probe.measure.throughput import ThroughputCheck, Transfer
from probe.measure.tls import TLSHandshake
from probe.mitm import inspect_chain
from probe.nettests.web import EndpointObservation, WebObservations
from probe.targets import Target
from probe.verdict import VantageStatus, judge

DOMAIN = "site.example.org"
IP = "198.51.100.7"
START = datetime(2021, 3, 1, 6, 0, 0, tzinfo=UTC)
BOGONS = Bogons(public=("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
RUN = records.RunInfo(report_id="20210301T060000Z_webconnectivity_KZ_9198_0000000000000000", test_start_time=START,
                      probe_asn="AS9198", probe_cc="KZ", probe_network_name="JSC Kazakhtelecom", vantage_id="kz-almaty",
                      test_helper="https://th.example.net:8443")
PAGE = (b"<!doctype html><html><head><title>Example site</title></head><body>"
        + b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>" * 20 + b"</body></html>")
#: a blockpage the shipped fingerprints know (OONI fastpath ooni.ru_4)
BLOCKPAGE = ("<html><head><title>Access restricted</title></head><body><h1>Доступ к запрашиваемому ресурсу "
             "закрыт.</h1></body></html>").encode()
KINDS = ("accessible", "down", "inconclusive", "dns", "tcp_ip", "tls", "tls_mitm", "http-failure", "http-diff",
         "throttling")


def _cert(subject: str, issuer: str, key_seed: int, issuer_seed: int, *, ca: bool, san: str | None = None) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(bytes([key_seed]) * 32)
    issuer_key = Ed25519PrivateKey.from_private_bytes(bytes([issuer_seed]) * 32)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(1000 + key_seed)
         .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
         .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, None).public_bytes(Encoding.DER)


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


LEAF = _b64(_cert(DOMAIN, "Example CA", 1, 2, ca=False, san=DOMAIN))
CA = _b64(_cert("Example CA", "Example CA", 2, 2, ca=True))
_QAZNET_PEM = (Path(records.__file__).parent / "data" / "mitm-roots" /
               "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2.pem").read_bytes()
QAZNET = _b64(x509.load_pem_x509_certificate(_QAZNET_PEM).public_bytes(Encoding.DER))
MITM_LEAF = _b64(_cert(DOMAIN, "Qaznet Trust Network", 3, 4, ca=False, san=DOMAIN))


def _reply(qtype: str, addrs: list[str], rcode: int = 0) -> DNSReply:
    q = dns.message.make_query(DOMAIN, qtype)
    q.id = 4242
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if addrs:
        r.answer.append(dns.rrset.from_text(DOMAIN + ".", 300, "IN", qtype, *addrs))
    return DNSReply(t=0.004, raw_b64=_b64(r.to_wire()), source="192.0.2.53:53",
                    rcode="NXDOMAIN" if rcode == 3 else "NOERROR", flags=0x8180 | rcode,
                    answers=tuple(DNSAnswer(answer_type=qtype, ipv4=a, ttl=300) for a in addrs))  # type: ignore[arg-type]


def _queries(addrs: list[str], nx: bool = False) -> tuple[DNSQuery, ...]:
    out = []
    for qt in ("A", "AAAA"):
        a = addrs if qt == "A" else []
        rep = _reply(qt, a, 3 if nx else 0)
        fail = "dns_nxdomain_error" if nx else (None if a else "dns_no_answer")
        out.append(DNSQuery(hostname=DOMAIN, query_type=qt, engine="udp", resolver_address="192.0.2.53:53",  # type: ignore[arg-type]
                            t0=0.001, t=0.005, failure=fail, answers=rep.answers, replies=(rep,)))
    return tuple(out)


DOH = ControlResult(source="doh", failure=None, dns_addresses=(IP,), dns_queries=tuple(
    DNSQuery(hostname=DOMAIN, query_type=qt, engine="doh", resolver_address="https://doh.example/dns-query",  # type: ignore[arg-type]
             t0=0.001, t=0.03, failure=None if qt == "A" else "dns_no_answer",
             answers=(DNSAnswer(answer_type="A", ipv4=IP, ttl=300),) if qt == "A" else (),
             replies=(_reply(qt, [IP] if qt == "A" else []),)) for qt in ("A", "AAAA")))
OFFLINE_DOH = ControlResult(source="doh", failure="control_failure: generic_timeout_error")


def helper(http_input: bool, *, status: int = 200, title: str = "Example site", length: int = len(PAGE),
           tcp_ok: bool = True) -> ControlResult:
    ep = ControlEndpoint(ip=IP, port=80 if http_input else 443, tcp_failure=None if tcp_ok else "connection_refused",
                         tls_attempted=not http_input and tcp_ok, tls_issuer=None if http_input else "CN=Example CA",
                         tls_leaf_spki_sha256=None if http_input else "ab" * 32)
    h = ControlHTTP(failure=None, final_url=f"{'http' if http_input else 'https'}://{DOMAIN}/", status_code=status,
                    headers=(("Content-Type", "text/html"), ("Server", "nginx"), ("X-Site", "1")), title=title,
                    body_length=length, body_sha256=hashlib.sha256(PAGE).hexdigest())
    if not tcp_ok:
        h = ControlHTTP(failure="connection_refused")
    return ControlResult(source="helper", failure=None, dns_addresses=(IP,),
                         endpoints={format_endpoint(ep.ip, ep.port): ep}, http=h)


def tls(chain: tuple[str, ...], failure: str | None = None, sni: str | None = DOMAIN, connect: bool = False,
        verify: str | None = None) -> TLSHandshake:
    done = failure is None
    return TLSHandshake(ip=IP, port=443, server_name=sni, alpn_offered=("h2", "http/1.1"), t0=0.01, t=0.05,
                        failure=failure, connect_failure=connect, tls_version="TLSv1.3" if done else None,
                        cipher_suite="TLS_AES_256_GCM_SHA384" if done else None,
                        negotiated_protocol="http/1.1" if done else None, peer_certificates=chain,
                        chain_source="full" if len(chain) > 1 else ("leaf_only" if chain else "none"),
                        verification_failure=verify, verified_anchor="mozilla" if done and not verify else None,
                        verification_policy="webpki")


def response(body: bytes, status: int = 200, headers: tuple[tuple[str, str], ...] | None = None,
             title: str | None = None) -> HTTPResponse:
    hs = headers if headers is not None else (
        ("Content-Type", "text/html; charset=utf-8"), ("Server", "nginx"), ("X-Site", "1"),
        ("Content-Length", str(len(body))))
    if title is None and b"<title>" in body:
        title = body.split(b"<title>")[1].split(b"</title>")[0].decode()
    return HTTPResponse(status_code=status, headers=hs, body_length=len(body), body_truncated=False,
                        body_sha256=hashlib.sha256(body).hexdigest(), body_b64=_b64(body), title=title)


def fetch(url: str, body: bytes | None, *, status: int = 200, port: int = 443, failure: str | None = None,
          headers: tuple[tuple[str, str], ...] | None = None) -> HTTPFetch:
    resp = response(body, status, headers) if body is not None and failure is None else None
    req = HTTPRequest(url=url, ip=IP, port=port, method="GET",
                      request_headers=(("Host", DOMAIN), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*")),
                      t0=0.05, t=0.12, failure=failure, response=resp,
                      body_bytes_received=len(body) if body is not None else None,
                      body_duration_s=0.01 if body is not None else None)
    return HTTPFetch(requests=(req,), failure=failure)


def target(scheme: str) -> Target:
    return Target(input=f"{scheme}://{DOMAIN}/", domain=DOMAIN, scheme=scheme,  # type: ignore[arg-type]
                  port=443 if scheme == "https" else 80, original=f"{scheme}://{DOMAIN}/", category_code="NEWS",
                  list_name="kz", line=1)


HTTPS, HTTP = target("https"), target("http")
TCP_OK = TCPConnect(ip=IP, port=443, t0=0.01, t=0.02, failure=None)


def ep(h: TLSHandshake | None, **kw: Any) -> EndpointObservation:
    return EndpointObservation(ip=IP, port=kw.pop("port", 443), source=kw.pop("source", "both"),
                               tcp=kw.pop("tcp", TCP_OK), tls=h,
                               mitm=inspect_chain(list(h.peer_certificates)) if h and h.peer_certificates else None,
                               **kw)


def cases() -> list[tuple[str, WebObservations, VantageStatus | None]]:
    """``(verdict kind, observations, vantage)`` for every kind of :data:`KINDS`, in that order."""
    ok = (LEAF, CA)
    slow = Transfer(bytes=65536, duration_s=8.0, failure=None, status_code=200)
    fast = Transfer(bytes=65536, duration_s=0.05, failure=None, status_code=200)
    big = PAGE * 40
    return [
        ("accessible", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH, control=helper(False),
                                       endpoints=(ep(tls(ok)),), skipped=(), http=fetch(HTTPS.input, PAGE)), None),
        ("down", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH,
                                 control=helper(False, tcp_ok=False),
                                 endpoints=(ep(tls((), failure="connection_refused", connect=True),
                                               tcp=TCPConnect(ip=IP, port=443, t0=0.01, t=0.02,
                                                              failure="connection_refused")),),
                                 skipped=(), http=None), None),
        ("inconclusive", WebObservations(target=HTTPS, queries=_queries([], nx=False), dns_control=OFFLINE_DOH,
                                         control=None, endpoints=(), skipped=(), http=None),
         VantageStatus(offline=True)),
        ("dns", WebObservations(target=HTTPS, queries=_queries([], nx=True), dns_control=DOH, control=helper(False),
                                endpoints=(ep(tls(ok), source="control"),), skipped=(), http=None), None),
        ("tcp_ip", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH, control=helper(False),
                                   endpoints=(ep(tls((), failure="generic_timeout_error", connect=True),
                                                 tcp=TCPConnect(ip=IP, port=443, t0=0.01, t=5.0,
                                                                failure="generic_timeout_error")),),
                                   skipped=(), http=None), None),
        ("tls", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH, control=helper(False),
                                endpoints=(ep(tls((), failure="connection_reset"),
                                              tls_benign=tls(ok, sni="benign.example.com"),
                                              tls_no_sni=tls(ok, sni=None)),), skipped=(), http=None), None),
        ("tls_mitm", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH, control=helper(False),
                                     endpoints=(ep(tls((MITM_LEAF, QAZNET), verify="ssl_unknown_authority")),),
                                     skipped=(), http=None), None),
        ("http-failure", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH, control=helper(False),
                                         endpoints=(ep(tls(ok)),), skipped=(),
                                         http=fetch(HTTPS.input, None, failure="connection_reset")), None),
        ("http-diff", WebObservations(target=HTTP, queries=_queries([IP]), dns_control=DOH, control=helper(True),
                                      endpoints=(ep(None, port=80, tcp=TCPConnect(ip=IP, port=80, t0=0.01, t=0.02,
                                                                                  failure=None)),),
                                      skipped=(), http=fetch(HTTP.input, BLOCKPAGE, port=80,
                                                             headers=(("Content-Type", "text/html"),
                                                                      ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))),
                                      http_blockpages=tuple(match_http(200, (), BLOCKPAGE))), None),
        ("throttling", WebObservations(target=HTTPS, queries=_queries([IP]), dns_control=DOH,
                                       control=helper(False, length=len(big)), endpoints=(ep(tls(ok)),), skipped=(),
                                       http=fetch(HTTPS.input, big),
                                       throughput=ThroughputCheck(url=HTTPS.input, ip=IP, port=443, target=slow,
                                                                  baseline_sni="benign.example.com", baseline=fast,
                                                                  retest=slow)), None),
    ]


def record(obs: WebObservations, vantage: VantageStatus | None, *, run: records.RunInfo = RUN) -> dict[str, Any]:
    """The df-000 record the probe writes for ``obs`` (judged with :data:`BOGONS`)."""
    v = judge(obs, bogons=BOGONS, vantage=vantage)
    return records.measurement(obs, v, run, start=START, runtime_s=0.25, vantage=vantage or VantageStatus())
