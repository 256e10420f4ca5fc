"""Measurement records in OONI's base data format (df-000) with web test_keys.

Top-level keys follow df-000 (``measurement_start_time``, ``test_start_time``,
``probe_asn``, ``probe_cc``, ``test_keys`` …); ``test_keys`` follow web_connectivity
(ts-017: ``queries`` df-002, ``tcp_connect`` df-005, ``tls_handshakes`` df-006,
``requests`` df-001, ``control``, ``blocking``, ``accessible``). kzprobe's additions
are under ``x_`` keys. ``probe_ip`` is ``"127.0.0.1"`` (OONI's redaction value)
unless the user opted in.

The shape is :mod:`probe.schema` (one schema for the writer and the analysis' loader);
OONI's verdict keys (``blocking``, ``accessible``, ``dns_consistency``, the five match keys,
``control_failure``) hold OONI's vocabulary and kzprobe's finer verdict is in ``x_blocking``,
``x_accessible``, ``x_dns_consistency``. docs/ooni-records.md maps every field and says why.

OONI lists ``requests`` newest first (the last redirect hop is ``requests[0]``);
we do the same, so OONI tooling reads our files unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from msgspec import UNSET

from probe import SOFTWARE_NAME, __version__, schema, vocab
from probe.addresses import format_endpoint, parse_endpoint
from probe.control import ControlResult, control_to_json
from probe.failures import LOCAL_NETWORK_REFUSED
from probe.fastrec import builder
from probe.httpdiff import match_keys
from probe.measure.dns import DNSAnswer, DNSQuery, DNSReply
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse, LazyResponse, b64_bytes
from probe.measure.tcp import TCPConnect
from probe.measure.throughput import ThroughputCheck, Transfer
from probe.measure.tls import TLSHandshake
from probe.mitm import MITMFinding
from probe.nettests.web import WebObservations
from probe.timing import ooni_time
from probe.verdict import VantageStatus, Verdict

TEST_NAME = "web_connectivity"
#: Our web test's version (see :data:`probe.schema.TEST_VERSION`: unmistakable for OONI's).
TEST_VERSION = schema.TEST_VERSION
DATA_FORMAT_VERSION = schema.DATA_FORMAT_VERSION
REDACTED_IP = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """Per-run metadata shared by every measurement of the run.

    Attributes:
        report_id: unique id of the run (also the JSONL file name stem).
        test_start_time: UTC start of the run.
        probe_asn: "AS1234" (from config; "AS0" when unknown).
        probe_cc: ISO 3166 alpha-2 ("ZZ" when unknown).
        probe_network_name: the network's name, "" when unknown.
        vantage_id: a label for this vantage point (config), "" when unset.
        probe_ip: the probe's IP only when the user opted in, else None (redacted).
        annotations: extra df-000 ``annotations`` for every measurement of the run
            (config ``[probe] annotations``; the lab sets ``lab_scenario``).
        test_helper: the full control (test helper) of the run, written as df-000
            ``test_helpers.backend``: its base URL (no credentials, path or query), or a
            label for an in-process control; None = no test helper (DoH control only).
    """

    report_id: str
    test_start_time: datetime
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    probe_network_name: str = ""
    vantage_id: str = ""
    probe_ip: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    test_helper: str | None = None
    resolver_asn: str | None = None
    resolver_network_name: str = ""


def new_report_id(start: datetime, probe_cc: str, probe_asn: str) -> str:
    """An OONI-like report id: ``YYYYMMDDThhmmssZ_webconnectivity_CC_ASN_<random>``."""
    return f"{start.strftime('%Y%m%dT%H%M%SZ')}_webconnectivity_{probe_cc}_{probe_asn.removeprefix('AS')}_{uuid.uuid4().hex[:16]}"


def helper_address(url: str) -> str:
    """A helper URL as recorded in ``test_helpers``: scheme, host and port only (never a
    user:password, path or query, which may carry secrets)."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme}://{host}{f':{u.port}' if u.port else ''}"


# --- df-002 -------------------------------------------------------------------------------


def _answer(a: DNSAnswer) -> schema.DNSAnswerRec:
    return schema.DNSAnswerRec(answer_type=a.answer_type, ttl=a.ttl, ipv4=a.ipv4 or UNSET, ipv6=a.ipv6 or UNSET,
                               hostname=a.hostname or UNSET, x_bogon=True if a.bogon else UNSET)


def query_rec(q: DNSQuery) -> schema.DNSQueryRec:
    """df-002 ``queries[]`` entry plus ``x_replies`` (raw replies, base64)."""
    return schema.DNSQueryRec(
        answers=[_answer(a) for a in q.answers], engine=q.engine, failure=q.failure, hostname=q.hostname,
        query_type=q.query_type, resolver_address=q.resolver_address, t0=q.t0, t=q.t,
        x_replies=[schema.DNSReplyRec(t=r.t, raw=r.raw_b64, source=r.source, rcode=r.rcode, flags=r.flags,
                                      answers=[_answer(a) for a in r.answers], parse_error=r.parse_error)
                   for r in q.replies],
        x_replies_dropped=q.replies_dropped or UNSET)


def query_json(q: DNSQuery) -> dict[str, Any]:
    """:func:`query_rec` as JSON."""
    return schema.to_json(query_rec(q))


# --- df-006 -------------------------------------------------------------------------------


def tls_rec(h: TLSHandshake, tags: list[str]) -> schema.TLSHandshakeRec:
    """df-006 ``tls_handshakes[]`` entry (``peer_certificates`` as sent, base64 DER).

    ``failure`` is what OONI's probe would record: the handshake's failure, or — the handshake
    having completed — the certificate verification's (``ssl_unknown_authority`` …) with
    ``no_tls_verify`` false: an intercepted chain is a failed verification to OONI's pipeline
    (ooni/data ``measurement_to_tls_observation`` reads ``no_tls_verify`` false + an ssl_*
    failure as an invalid certificate). We handshake without verifying and verify the captured
    chain afterwards, so the chain is kept either way; ``x_handshake_failure`` is the
    handshake's own failure.
    """
    return schema.TLSHandshakeRec(
        address=format_endpoint(h.ip, h.port), server_name=h.server_name or "", cipher_suite=h.cipher_suite,
        failure=h.failure or h.verification_failure, negotiated_protocol=h.negotiated_protocol,
        no_tls_verify=False, peer_certificates=[schema.BinaryData(data=c) for c in h.peer_certificates],
        t0=h.t0, t=h.t, tls_version=h.tls_version, tags=tags, x_handshake_failure=h.failure,
        x_alpn_offered=list(h.alpn_offered), x_chain_source=h.chain_source,
        x_verification_failure=h.verification_failure, x_verified_anchor=h.verified_anchor,
        x_verification_policy=h.verification_policy)


def tls_json(h: TLSHandshake, tags: list[str]) -> dict[str, Any]:
    """:func:`tls_rec` as JSON."""
    return schema.to_json(tls_rec(h, tags))


# --- df-001 -------------------------------------------------------------------------------


def maybe_binary(data: bytes) -> schema.MaybeBinary:
    """df-001 ``MaybeBinaryData``: the text when ``data`` is UTF-8, else base64 ``BinaryData``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return schema.BinaryData(data=base64.b64encode(data).decode())


def _header_value(v: str) -> schema.MaybeBinary:
    try:
        v.encode("utf-8")
        return v
    except UnicodeEncodeError:  # surrogate-escaped bytes: not UTF-8
        return schema.BinaryData(data=base64.b64encode(v.encode("utf-8", "surrogateescape")).decode())


def headers_map(headers: Sequence[tuple[str, str]]) -> dict[str, schema.MaybeBinary]:
    """df-001 ``headers``: the FIRST value of a repeated header (names compared case-insensitively,
    as HTTP does); every value stays in ``headers_list``."""
    out: dict[str, schema.MaybeBinary] = {}
    seen: set[str] = set()
    for k, v in headers:
        if k.lower() not in seen:
            seen.add(k.lower())
            out[k] = _header_value(v)
    return out


def _headers_list(headers: Sequence[tuple[str, str]]) -> list[tuple[str, schema.MaybeBinary]]:
    return [(k, _header_value(v)) for k, v in headers]


def request_recs(fetch: HTTPFetch) -> list[schema.HTTPTransactionRec]:
    """df-001 ``requests[]``, newest hop first (OONI order)."""
    out = []
    for r in reversed(fetch.requests):
        resp = r.response
        response = None
        if resp is not None:
            body: schema.MaybeBinary | None = None
            if resp.body_b64:
                body = maybe_binary(base64.b64decode(resp.body_b64))
            response = schema.HTTPResponseRec(
                code=resp.status_code, headers_list=_headers_list(resp.headers), headers=headers_map(resp.headers),
                body=body, body_is_truncated=resp.body_truncated, x_body_length=resp.body_length,
                x_body_sha256=resp.body_sha256, x_title=resp.title)
        out.append(schema.HTTPTransactionRec(
            address=format_endpoint(r.ip, r.port) if r.ip and r.port else None, failure=r.failure, t0=r.t0, t=r.t,
            request=schema.HTTPRequestRec(method=r.method, url=r.url, headers_list=_headers_list(r.request_headers),
                                          headers=headers_map(r.request_headers)),
            response=response, x_body_bytes_received=r.body_bytes_received, x_body_duration_s=r.body_duration_s,
            x_body_stall_s=UNSET if r.body_stall_s is None else r.body_stall_s,
            # a redirect or answer into the local network: address and rule, nothing fetched
            x_refused=[schema.RefusedRec(address=a, rule=rule) for a, rule in r.refused] if r.refused else UNSET,
            x_reused_tls_handshake=True if r.reused_tls_handshake else UNSET))
    return out


def requests_json(fetch: HTTPFetch) -> list[dict[str, Any]]:
    """:func:`request_recs` as JSON."""
    return [schema.to_json(r) for r in request_recs(fetch)]


# --- x_ details ---------------------------------------------------------------------------


def _transfer_json(t: Transfer) -> dict[str, Any]:
    return {"bytes": t.bytes, "duration_s": t.duration_s, "bps": round(t.bps, 1), "failure": t.failure,
            "status_code": t.status_code}


def throughput_json(t: ThroughputCheck | None) -> dict[str, Any] | None:
    """``x_throughput``: the final https hop's rate and its benign-SNI baseline (FC-19).

    Shape: ``{"url", "address", "bytes", "target_bps", "baseline_bps", "ratio",
    "throttled", "target": {bytes, duration_s, bps, failure, status_code},
    "baseline": {same} | None, "baseline_server_name", "baseline_failure", "retest": {same} | None,
    "note"}``; ``target_bps`` is the better of the target fetch and its re-test;
    rates in bytes per second, durations in seconds, ``ratio`` = baseline/target
    (None without a usable baseline). None when nothing was timed.
    """
    if t is None:
        return None
    ratio = t.ratio
    return {
        "url": t.url,
        "address": t.address,
        "bytes": t.target.bytes,
        "target_bps": round(t.target_bps, 1),
        "baseline_bps": round(t.baseline.bps, 1) if t.baseline is not None else None,
        "ratio": round(ratio, 2) if ratio is not None else None,
        "throttled": t.throttled,
        "target": _transfer_json(t.target),
        "baseline": _transfer_json(t.baseline) if t.baseline is not None else None,
        "baseline_server_name": t.baseline_sni,
        "baseline_failure": t.baseline_failure,
        "retest": _transfer_json(t.retest) if t.retest is not None else None,
        "note": t.note,
    }


def mitm_json(f: MITMFinding | None) -> dict[str, Any] | None:
    return None if f is None else asdict(f)


def _dns_experiment_failure(obs: WebObservations) -> str | None:
    if obs.probe_addresses():
        return None
    return next((q.failure for q in obs.queries if q.failure), None)


def _control_json(c: ControlResult, server_name: str) -> dict[str, Any]:
    """ts-017 ``control``: :func:`probe.control.control_to_json`, with the SNI the control's
    handshakes used (the input's domain) as ``tls_handshake[].server_name``."""
    out = control_to_json(c)
    for h in (out.get("tls_handshake") or {}).values():
        h["server_name"] = server_name
    return out


def control_failure(c: ControlResult | None, run: RunInfo) -> str | None:
    """ts-017 ``control_failure``: set whenever the test helper gave no usable answer — also
    when there is none (``control`` is then ``{}``): OONI's tools read a null
    ``control_failure`` as "the control worked"."""
    if c is not None:
        return c.failure
    if run.test_helper:
        return vocab.control_failure("the test helper gave no answer before the measurement ended")
    return vocab.control_failure("no test helper configured (DNS control only)")


def ooni_verdict(verdict: Verdict, obs: WebObservations) -> tuple[Any, bool | None, str | None]:
    """``(blocking, accessible, dns_consistency)`` in OONI's vocabulary (ts-017) for our verdict.

    :func:`probe.vocab.ooni_blocking` maps the blocking type; two cases follow OONI's
    classic analysis (webconnectivitylte ``analysisclassic.go``) further:
    ``throttling`` whose fetch failed mid-body is an HTTP failure there (the page never
    arrived whole), and a blocking type with an inconsistent DNS answer is ``"dns"``
    (``setBlockingString``).
    """
    dns_consistency = vocab.ooni_dns_consistency(verdict.dns_consistency)
    blocking, accessible = vocab.ooni_blocking(verdict.blocking, verdict.accessible,
                                               http_failure=obs.http.failure if obs.http is not None else None)
    if isinstance(blocking, str) and dns_consistency == "inconsistent":
        blocking = "dns"
    return blocking, accessible, dns_consistency


def http_experiment_failure(obs: WebObservations) -> str | None:
    """ts-017 ``http_experiment_failure``: the fetch's failure; without a fetch (no endpoint
    worked), the failure of the step that stopped it, as OONI's classic analysis records it
    (webconnectivitylte ``analysisclassic.go`` ``setHTTPExperimentFailure``; webconnectivityqa
    ``tlsBlockingConnectionReset``: ``connection_reset``) — the first target-SNI TLS failure
    (the verification's included), else the first TCP failure, of the probe's own addresses,
    else the DNS failure. The fetch's own failure stays in ``requests[0].failure``."""
    if obs.http is not None:
        return obs.http.failure
    mine = [e for e in obs.endpoints if not e.tls_check and e.source in ("probe", "both")]
    for e in mine:
        if e.tls is not None and not e.tls.connect_failure and (e.tls.failure or e.tls.verification_failure):
            return e.tls.failure or e.tls.verification_failure
    for e in mine:
        f = e.tcp.failure if e.tcp is not None else (e.tls.failure if e.tls is not None else None)
        if f:
            return f
    return _dns_experiment_failure(obs)


def _tcp_blocked(e: Any, control: ControlResult | None) -> bool | None:
    """ts-017 ``tcp_connect[].status.blocked``: the probe failed where the control connected."""
    ce = control.endpoint(e.ip, e.port) if control is not None and control.usable else None
    if ce is None:
        return None
    return e.tcp.failure is not None and ce.tcp_failure is None


def build(obs: WebObservations, verdict: Verdict, run: RunInfo, *, start: datetime, runtime_s: float,
          annotations: dict[str, str] | None = None, vantage: VantageStatus | None = None) -> schema.Measurement:
    """The :class:`probe.schema.Measurement` of one web measurement (see :func:`measurement`)."""
    tcp_list: list[schema.TCPConnectRec] = []
    tls_list: list[schema.TLSHandshakeRec] = []
    extra_tls: list[schema.TLSHandshakeRec] = []
    for e in obs.endpoints:
        fetch_body = "fetch_body=false" if e.tls_check else "fetch_body=true"
        if e.tcp is not None and not e.tls_check:
            tcp_list.append(schema.TCPConnectRec(
                ip=e.ip, port=e.port, t0=e.tcp.t0, t=e.tcp.t,
                status=schema.TCPStatus(success=e.tcp.failure is None, failure=e.tcp.failure,
                                        blocked=_tcp_blocked(e, obs.control)),
                tags=[f"source={e.source}", fetch_body]))
        if e.tls is not None:
            tls_list.append(tls_rec(e.tls, ["sni=target", f"source={e.source}", fetch_body]
                                    + (["purpose=validate_address"] if e.tls_check else [])))
        # the retries with a benign SNI and without SNI are ours: not OONI's handshakes
        for h, tag in ((e.tls_benign, "sni=benign"), (e.tls_no_sni, "sni=none")):
            if h is not None:
                extra_tls.append(tls_rec(h, [tag, f"source={e.source}"]))
    rt = obs.redirect_target  # a failed redirect target measured again step by step (issue 12)
    if rt is not None:
        if rt.tcp is not None:
            tcp_list.append(schema.TCPConnectRec(
                ip=rt.ip, port=rt.port, t0=rt.tcp.t0, t=rt.tcp.t,
                status=schema.TCPStatus(success=rt.tcp.failure is None, failure=rt.tcp.failure, blocked=None),
                tags=["purpose=redirect_target"]))
        if rt.tls is not None:
            tls_list.append(tls_rec(rt.tls, ["sni=target", "purpose=redirect_target"]))
        for h, tag in ((rt.tls_benign, "sni=benign"), (rt.tls_no_sni, "sni=none")):
            if h is not None:
                extra_tls.append(tls_rec(h, [tag, "purpose=redirect_target"]))
    mitm = verdict.mitm or next((e.mitm for e in obs.endpoints if e.mitm is not None and
                                 (e.mitm.mitm or e.mitm.leaf_traits)), None)
    ctl_http = obs.control.http if obs.control is not None and obs.control.usable else None
    final = obs.http.requests[-1].response if obs.http is not None and obs.http.requests else None
    keys = match_keys(final, ctl_http)
    blocking, accessible, dns_consistency = ooni_verdict(verdict, obs)
    tk = schema.WebTestKeys(
        queries=[query_rec(q) for q in obs.queries],
        tcp_connect=tcp_list,
        tls_handshakes=tls_list,
        requests=request_recs(obs.http) if obs.http is not None else [],
        control=msgspec.convert(_control_json(obs.control, obs.target.domain), schema.ControlRec)
        if obs.control is not None else schema.ControlRec(),
        control_failure=control_failure(obs.control, run),
        dns_experiment_failure=_dns_experiment_failure(obs),
        http_experiment_failure=http_experiment_failure(obs),
        dns_consistency=dns_consistency,
        body_length_match=keys.body_length_match, body_proportion=keys.body_proportion,
        status_code_match=keys.status_code_match, headers_match=keys.headers_match, title_match=keys.title_match,
        blocking=blocking,
        accessible=accessible,
        x_blocking=verdict.blocking,
        x_accessible=verdict.accessible,
        x_dns_consistency=verdict.dns_consistency,
        x_reason=verdict.reason,
        x_rule=verdict.rule,
        x_findings=list(verdict.findings),
        x_server_side_block=verdict.server_side,
        x_mitm=msgspec.convert(mitm_json(mitm), schema.MITMRec) if mitm is not None else None,
        x_tls_handshakes=extra_tls,
        x_dns_control=msgspec.convert(control_to_json(obs.dns_control), schema.ControlRec),
        x_doh_queries=[query_rec(q) for q in obs.dns_control.dns_queries],
        x_skipped_addresses=[schema.SkippedRec(address=a, reason=r, failure=LOCAL_NETWORK_REFUSED)
                             for a, r in obs.skipped],
        x_blockpage_fingerprints=sorted({f.name for f in obs.dns_blockpages + obs.http_blockpages}),
        x_throughput=msgspec.convert(throughput_json(obs.throughput), schema.ThroughputRec)
        if obs.throughput is not None else None,
        x_vantage=(schema.VantageRec(offline=vantage.offline, control_intercepted_by=vantage.control_intercepted_by,
                                     ipv4_usable=vantage.ipv4_usable, ipv6_usable=vantage.ipv6_usable)
                   if vantage is not None else None),
    )
    return schema.Measurement(
        annotations={"engine_name": SOFTWARE_NAME, "engine_version": __version__,
                     **({"vantage_id": run.vantage_id} if run.vantage_id else {}), **dict(run.annotations),
                     **(annotations or {})},
        data_format_version=DATA_FORMAT_VERSION,
        input=obs.target.input,
        measurement_start_time=ooni_time(start),
        probe_asn=run.probe_asn,
        probe_cc=run.probe_cc,
        probe_ip=run.probe_ip or REDACTED_IP,
        probe_network_name=run.probe_network_name,
        report_id=run.report_id,
        resolver_asn=run.resolver_asn or UNSET,
        resolver_network_name=(run.resolver_network_name or UNSET) if run.resolver_asn else UNSET,
        software_name=SOFTWARE_NAME,
        software_version=__version__,
        test_helpers={"backend": schema.TestHelperRec(address=run.test_helper, type="https")}
        if run.test_helper else {},
        test_name=TEST_NAME,
        test_runtime=round(runtime_s, 6),
        test_start_time=ooni_time(run.test_start_time),
        test_version=TEST_VERSION,
        test_keys=tk,
        x_input_metadata=schema.InputMetadata(domain=obs.target.domain, category_code=obs.target.category_code,
                                              list=obs.target.list_name, original=obs.target.original,
                                              notes=obs.target.notes),
        x_measurement_uid=uuid.uuid4().hex,
    )


def measurement(obs: WebObservations, verdict: Verdict, run: RunInfo, *, start: datetime, runtime_s: float,
                annotations: dict[str, str] | None = None, vantage: VantageStatus | None = None) -> dict[str, Any]:
    """Build one df-000 measurement (a JSON dict) for the web test: :func:`build`, as written.

    Args:
        obs: the observations.
        verdict: their judgement.
        run: per-run metadata.
        start: this measurement's UTC start time.
        runtime_s: seconds the measurement took.
        annotations: extra df-000 ``annotations`` (strings only).
        vantage: the vantage's state when it was measured, written as ``test_keys.x_vantage``
            (``{"offline": bool, "control_intercepted_by": str | None}``) so the analysis
            can tell an offline or middleboxed vantage from a shutdown; None = not known
            (``x_vantage`` is then null).
    """
    return schema.to_json(build(obs, verdict, run, start=start, runtime_s=runtime_s, annotations=annotations,
                                vantage=vantage))


# --- reading OONI JSON back into record types -------------------------------------------
#
# Where OONI's web_connectivity test_keys overlap our records (df-001/002/005/006), these
# parse them — ours and OONI's of every version in the wild (0.0.1 … 0.5.x: missing
# timings, nulls, base64-wrapped bodies and header values). Missing numbers become 0.0,
# missing strings None; nothing here raises on odd-but-valid JSON.


def _b64_or_text(v: Any) -> str:
    """An OONI "MaybeBinary" value (str, or {"format": "base64", "data": ...}) → base64 text."""
    if isinstance(v, dict) and v.get("format") == "base64":
        return str(v.get("data") or "")
    if isinstance(v, str):
        return base64.b64encode(v.encode("utf-8", "surrogateescape")).decode()
    return ""


def _text(v: Any) -> str:
    """An OONI "MaybeBinary" value → text (base64 decoded leniently)."""
    if isinstance(v, dict) and v.get("format") == "base64":
        try:
            return base64.b64decode(v.get("data") or "", validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return ""
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _f(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else 0.0


#: The parsers build their records without the dataclasses' frozen ``__init__`` (:mod:`probe.fastrec`):
#: re-judging OONI's measurements parses ~10 records each (issue 14 part 7).
_DNSAnswer = builder(DNSAnswer)
_DNSReply = builder(DNSReply)
_DNSQuery = builder(DNSQuery)
_TCPConnect = builder(TCPConnect)
_TLSHandshake = builder(TLSHandshake)
_HTTPResponse = builder(HTTPResponse)
_HTTPRequest = builder(HTTPRequest)
_new = object.__new__
_setattr = object.__setattr__


def _parse_answer(a: dict[str, Any]) -> DNSAnswer:
    """A df-002 ``answers[]`` entry → :class:`DNSAnswer`."""
    g = a.get
    return _DNSAnswer(answer_type=g("answer_type") or "A", ipv4=g("ipv4"), ipv6=g("ipv6"), hostname=g("hostname"),
                      ttl=g("ttl"), bogon=bool(g("x_bogon")))


def _parse_reply(r: dict[str, Any]) -> DNSReply:
    """An ``x_replies[]`` entry (ours) → :class:`DNSReply`."""
    t = r.get("t")
    return _DNSReply(t=float(t) if isinstance(t, (int, float)) else 0.0, raw_b64=r.get("raw") or "",
                     source=r.get("source") or "", rcode=r.get("rcode"), flags=r.get("flags"),
                     answers=tuple([_parse_answer(a) for a in r.get("answers") or ()]),
                     parse_error=r.get("parse_error"))


def parse_query(d: dict[str, Any]) -> DNSQuery:
    """A df-002 ``queries[]`` entry → :class:`DNSQuery` (``x_replies`` restored when present).
    Numbers and nested lists are read inline, without a call each (issue 14 part 7: one query a
    re-judged OONI measurement)."""
    g = d.get
    engine = g("engine") or "system"
    t0, t, answers, replies = g("t0"), g("t"), g("answers"), g("x_replies")
    return _DNSQuery(hostname=g("hostname") or "", query_type=g("query_type") or "A",
                     engine=engine if engine in ("system", "udp", "doh") else "system",  # type: ignore[arg-type]
                     resolver_address=g("resolver_address") or "",
                     t0=float(t0) if isinstance(t0, (int, float)) else 0.0,
                     t=float(t) if isinstance(t, (int, float)) else 0.0, failure=g("failure"),
                     answers=tuple([_DNSAnswer(answer_type=a.get("answer_type") or "A", ipv4=a.get("ipv4"),
                                               ipv6=a.get("ipv6"), hostname=a.get("hostname"), ttl=a.get("ttl"),
                                               bogon=bool(a.get("x_bogon"))) for a in answers])  # no call each
                     if answers else (),
                     replies=tuple([_parse_reply(r) for r in replies]) if replies else ())


def parse_tcp_connect(d: dict[str, Any]) -> TCPConnect:
    """A df-005 ``tcp_connect[]`` entry → :class:`TCPConnect`."""
    g = d.get
    status = g("status") or {}
    failure = status.get("failure")
    if failure is None and status.get("success") is False:
        failure = "unknown_failure: success=false without failure"
    t0, t = g("t0"), g("t")
    return _TCPConnect(ip=str(g("ip") or ""), port=int(g("port") or 0),
                       t0=float(t0) if isinstance(t0, (int, float)) else 0.0,
                       t=float(t) if isinstance(t, (int, float)) else 0.0, failure=failure)


def parse_tls_handshake(d: dict[str, Any]) -> TLSHandshake:
    """A df-006 ``tls_handshakes[]`` entry → :class:`TLSHandshake` (chain kept as base64 DER)."""
    try:
        ip, port = parse_endpoint(d.get("address") or "")
    except ValueError:
        ip, port = "", 0
    certs = tuple(_b64_or_text(c) for c in d.get("peer_certificates") or () if c)
    alpn = d.get("x_alpn_offered", d.get("alpn")) or ()
    # ours since 1.0.0-kzprobe: `failure` includes the verification's, the handshake's own is apart
    failure = d["x_handshake_failure"] if "x_handshake_failure" in d else d.get("failure")
    return _TLSHandshake(ip=ip, port=port, server_name=d.get("server_name") or None,
                        alpn_offered=tuple(alpn) if isinstance(alpn, list) else (), t0=_f(d.get("t0")),
                        t=_f(d.get("t")), failure=failure, tls_version=d.get("tls_version"),
                        cipher_suite=d.get("cipher_suite"), negotiated_protocol=d.get("negotiated_protocol") or None,
                        peer_certificates=certs, chain_source="full" if len(certs) > 1 else ("leaf_only" if certs else "none"),
                        verification_failure=d.get("x_verification_failure"))


def _parse_headers(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A df-001 request's or response's headers: ``headers_list`` ([name, value] pairs) when present, else the
    ``headers`` object; text as it mostly is (str names and values) taken as it is, without a call each."""
    hl = obj.get("headers_list")
    if isinstance(hl, list):
        return tuple([(h[0], h[1]) if type(h[0]) is str and type(h[1]) is str else (_text(h[0]), _text(h[1]))
                      for h in hl if isinstance(h, list) and len(h) == 2])
    return tuple([(k if type(k) is str else str(k), v if type(v) is str else _text(v))
                  for k, v in (obj.get("headers") or {}).items()])


def parse_request(d: dict[str, Any], *, digest: bool = True, request_headers: bool = True) -> HTTPRequest:
    """A df-001 ``requests[]`` entry → :class:`HTTPRequest` (title from ``x_title`` or the body).
    ``digest=False``: ``body_sha256`` is left "" when the entry has no ``x_body_sha256`` (the
    verdict never reads it; re-judging OONI's measurements skips hashing every body).
    ``request_headers=False``: ``request_headers`` is left empty (the verdict never reads the headers
    sent; re-judging skips decoding them)."""
    g = d.get
    req = g("request") or {}
    resp = g("response") or {}
    ip = port = None
    if g("address"):
        try:
            ip, port = parse_endpoint(d["address"])
        except ValueError:
            pass
    response = None
    if g("failure") is None and isinstance(resp.get("code"), int):
        raw_body = resp.get("body")
        lazy = False
        if isinstance(raw_body, str):  # text: its bytes are at hand, no base64 round trip; the base64 made only if read
            body = raw_body.encode("utf-8", "surrogateescape")
            body_b64, lazy = "", True
        else:
            body_b64 = _b64_or_text(raw_body)
            try:
                body = b64_bytes(body_b64) if body_b64 else b""
            except ValueError:
                body = b""
        fields = {"status_code": resp["code"], "headers": _parse_headers(resp),
                  "body_length": int(resp.get("x_body_length") or len(body)),
                  "body_truncated": bool(resp.get("body_is_truncated")),
                  "body_sha256": resp.get("x_body_sha256") or (hashlib.sha256(body).hexdigest() if digest else "")}
        if not lazy:
            fields["body_b64"] = body_b64
        if "x_title" in resp:
            fields["title"] = resp["x_title"]
        response = _new(LazyResponse)  # lazy_response_of, inline
        fields["_body"] = body
        _setattr(response, "__dict__", fields)
    received = g("x_body_bytes_received")
    duration = g("x_body_duration_s")
    stall = g("x_body_stall_s")
    t0, t = g("t0"), g("t")
    return _HTTPRequest(url=str(req.get("url") or ""), ip=ip, port=port, method=str(req.get("method") or "GET"),
                       request_headers=_parse_headers(req) if request_headers else (),
                       t0=float(t0) if isinstance(t0, (int, float)) else 0.0,
                       t=float(t) if isinstance(t, (int, float)) else 0.0,
                       failure=d.get("failure"),
                       response=response,
                       body_bytes_received=received if isinstance(received, int) and not isinstance(received, bool)
                       else None,
                       body_duration_s=float(duration) if isinstance(duration, (int, float))
                       and not isinstance(duration, bool) else None,
                       body_stall_s=float(stall) if isinstance(stall, (int, float)) and not isinstance(stall, bool)
                       else None,
                       reused_tls_handshake=d.get("x_reused_tls_handshake") is True)
