"""Measurement records in OONI's base data format (df-000) with web test_keys.

Top-level keys follow df-000 (``measurement_start_time``, ``test_start_time``,
``probe_asn``, ``probe_cc``, ``test_keys`` …); ``test_keys`` follow web_connectivity
(ts-017: ``queries`` df-002, ``tcp_connect`` df-005, ``tls_handshakes`` df-006,
``requests`` df-001, ``control``, ``blocking``, ``accessible``). kzprobe's additions
are under ``x_`` keys. ``probe_ip`` is ``"127.0.0.1"`` (OONI's redaction value)
unless the user opted in.

OONI lists ``requests`` newest first (the last redirect hop is ``requests[0]``);
we do the same, so OONI tooling reads our files unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from probe import SOFTWARE_NAME, __version__
from probe.addresses import format_endpoint, parse_endpoint
from probe.control import ControlResult, control_to_json
from probe.failures import LOCAL_NETWORK_REFUSED
from probe.measure.dns import DNSAnswer, DNSQuery, DNSReply
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse, extract_title
from probe.measure.tcp import TCPConnect
from probe.measure.throughput import ThroughputCheck, Transfer
from probe.measure.tls import TLSHandshake
from probe.mitm import MITMFinding
from probe.nettests.web import WebObservations
from probe.timing import ooni_time
from probe.verdict import VantageStatus, Verdict

TEST_NAME = "web_connectivity"
#: Our web test's version; the major number changes when test_keys change shape.
TEST_VERSION = "0.1.0"
DATA_FORMAT_VERSION = "0.2.0"
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
    """

    report_id: str
    test_start_time: datetime
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    probe_network_name: str = ""
    vantage_id: str = ""
    probe_ip: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()


def new_report_id(start: datetime, probe_cc: str, probe_asn: str) -> str:
    """An OONI-like report id: ``YYYYMMDDThhmmssZ_webconnectivity_CC_ASN_<random>``."""
    return f"{start.strftime('%Y%m%dT%H%M%SZ')}_webconnectivity_{probe_cc}_{probe_asn.removeprefix('AS')}_{uuid.uuid4().hex[:16]}"


def query_json(q: DNSQuery) -> dict[str, Any]:
    """df-002 ``queries[]`` entry plus ``x_replies`` (raw replies, base64)."""
    return {
        "answers": [_answer(a) for a in q.answers],
        "engine": q.engine,
        "failure": q.failure,
        "hostname": q.hostname,
        "query_type": q.query_type,
        "resolver_address": q.resolver_address,
        "resolver_hostname": None,
        "resolver_port": None,
        "t0": q.t0,
        "t": q.t,
        "x_replies": [
            {"t": r.t, "raw": r.raw_b64, "source": r.source, "rcode": r.rcode, "flags": r.flags,
             "answers": [_answer(a) for a in r.answers], "parse_error": r.parse_error}
            for r in q.replies
        ],
        **({"x_replies_dropped": q.replies_dropped} if q.replies_dropped else {}),
    }


def _answer(a: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"answer_type": a.answer_type, "ttl": a.ttl}
    if a.ipv4:
        out["ipv4"] = a.ipv4
    if a.ipv6:
        out["ipv6"] = a.ipv6
    if a.hostname:
        out["hostname"] = a.hostname
    if a.bogon:
        out["x_bogon"] = True
    return out


def tls_json(h: TLSHandshake, tags: list[str]) -> dict[str, Any]:
    """df-006 ``tls_handshakes[]`` entry (``peer_certificates`` as sent, base64 DER)."""
    return {
        "network": "tcp",
        "address": format_endpoint(h.ip, h.port),
        "server_name": h.server_name or "",
        "alpn": list(h.alpn_offered),
        "cipher_suite": h.cipher_suite,
        "failure": h.failure,
        "negotiated_protocol": h.negotiated_protocol,
        "no_tls_verify": True,
        "peer_certificates": [{"data": c, "format": "base64"} for c in h.peer_certificates],
        "t0": h.t0,
        "t": h.t,
        "tls_version": h.tls_version,
        "tags": tags,
        "x_chain_source": h.chain_source,
        "x_verification_failure": h.verification_failure,
        "x_verified_anchor": h.verified_anchor,
        "x_verification_policy": h.verification_policy,
    }


def requests_json(fetch: HTTPFetch) -> list[dict[str, Any]]:
    """df-001 ``requests[]``, newest hop first (OONI order)."""
    out = []
    for r in reversed(fetch.requests):
        resp = r.response
        entry: dict[str, Any] = {
            "network": "tcp",
            "address": format_endpoint(r.ip, r.port) if r.ip and r.port else None,
            "failure": r.failure,
            "t0": r.t0,
            "t": r.t,
            "request": {"method": r.method, "url": r.url, "headers_list": [list(h) for h in r.request_headers],
                        "headers": dict(r.request_headers), "body": "", "body_is_truncated": False,
                        "tor": {"is_tor": False, "exit_ip": None, "exit_name": None}},
            "response": None,
            "x_body_bytes_received": r.body_bytes_received,
            "x_body_duration_s": r.body_duration_s,
        }
        if r.refused:  # a redirect or answer into the local network: address and rule, nothing fetched
            entry["x_refused"] = [{"address": a, "rule": rule} for a, rule in r.refused]
        if resp is not None:
            entry["response"] = {
                "code": resp.status_code,
                "headers_list": [list(h) for h in resp.headers],
                "headers": dict(resp.headers),
                "body": {"data": resp.body_b64, "format": "base64"} if resp.body_b64 else None,
                "body_is_truncated": resp.body_truncated,
                "x_body_length": resp.body_length,
                "x_body_sha256": resp.body_sha256,
                "x_title": resp.title,
            }
        out.append(entry)
    return out


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


def measurement(obs: WebObservations, verdict: Verdict, run: RunInfo, *, start: datetime, runtime_s: float,
                annotations: dict[str, str] | None = None, vantage: VantageStatus | None = None) -> dict[str, Any]:
    """Build one df-000 measurement dict for the web test.

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
    tcp_list, tls_list = [], []
    for e in obs.endpoints:
        if e.tcp is not None and not e.tls_check:
            tcp_list.append({"ip": e.ip, "port": e.port, "t0": e.tcp.t0, "t": e.tcp.t,
                             "status": {"success": e.tcp.failure is None, "failure": e.tcp.failure,
                                        "blocked": None},
                             "tags": [f"source={e.source}"]})
        for h, tag in ((e.tls, "sni=target"), (e.tls_benign, "sni=benign"), (e.tls_no_sni, "sni=none")):
            if h is not None:
                tags = [tag, f"source={e.source}"] + (["purpose=validate_address"] if e.tls_check else [])
                tls_list.append(tls_json(h, tags))
    http_failure = None
    if obs.http is not None:
        http_failure = obs.http.failure
    mitm = verdict.mitm or next((e.mitm for e in obs.endpoints if e.mitm is not None and
                                 (e.mitm.mitm or e.mitm.leaf_traits)), None)
    tk: dict[str, Any] = {
        "queries": [query_json(q) for q in obs.queries],
        "tcp_connect": tcp_list,
        "tls_handshakes": tls_list,
        "requests": requests_json(obs.http) if obs.http is not None else [],
        "control": control_to_json(obs.control) if obs.control is not None else {},
        "control_failure": _control_failure(obs.control),
        "dns_experiment_failure": _dns_experiment_failure(obs),
        "http_experiment_failure": http_failure,
        "dns_consistency": verdict.dns_consistency,
        "blocking": verdict.blocking,
        "accessible": verdict.accessible,
        "x_reason": verdict.reason,
        "x_rule": verdict.rule,
        "x_findings": list(verdict.findings),
        "x_server_side_block": verdict.server_side,
        "x_mitm": mitm_json(mitm),
        "x_dns_control": control_to_json(obs.dns_control),
        "x_doh_queries": [query_json(q) for q in obs.dns_control.dns_queries],
        "x_skipped_addresses": [{"address": a, "reason": r, "failure": LOCAL_NETWORK_REFUSED} for a, r in obs.skipped],
        "x_blockpage_fingerprints": sorted({f.name for f in obs.dns_blockpages + obs.http_blockpages}),
        "x_throughput": throughput_json(obs.throughput),
        "x_vantage": ({"offline": vantage.offline, "control_intercepted_by": vantage.control_intercepted_by}
                      if vantage is not None else None),
    }
    return {
        "annotations": {"engine_name": SOFTWARE_NAME, "engine_version": __version__,
                        **({"vantage_id": run.vantage_id} if run.vantage_id else {}), **dict(run.annotations),
                        **(annotations or {})},
        "data_format_version": DATA_FORMAT_VERSION,
        "input": obs.target.input,
        "measurement_start_time": ooni_time(start),
        "probe_asn": run.probe_asn,
        "probe_cc": run.probe_cc,
        "probe_ip": run.probe_ip or REDACTED_IP,
        "probe_network_name": run.probe_network_name,
        "report_id": run.report_id,
        "software_name": SOFTWARE_NAME,
        "software_version": __version__,
        "test_name": TEST_NAME,
        "test_runtime": round(runtime_s, 6),
        "test_start_time": ooni_time(run.test_start_time),
        "test_version": TEST_VERSION,
        "test_keys": tk,
        "x_input_metadata": {"domain": obs.target.domain, "category_code": obs.target.category_code,
                             "list": obs.target.list_name, "original": obs.target.original,
                             "notes": obs.target.notes},
        "x_measurement_uid": uuid.uuid4().hex,
    }


def _control_failure(c: ControlResult | None) -> str | None:
    return None if c is None else c.failure


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


def parse_query(d: dict[str, Any]) -> DNSQuery:
    """A df-002 ``queries[]`` entry → :class:`DNSQuery` (``x_replies`` restored when present)."""
    def ans(a: dict[str, Any]) -> DNSAnswer:
        return DNSAnswer(answer_type=a.get("answer_type") or "A", ipv4=a.get("ipv4"), ipv6=a.get("ipv6"),
                         hostname=a.get("hostname"), ttl=a.get("ttl"), bogon=bool(a.get("x_bogon")))

    replies = tuple(DNSReply(t=_f(r.get("t")), raw_b64=r.get("raw") or "", source=r.get("source") or "",
                             rcode=r.get("rcode"), flags=r.get("flags"),
                             answers=tuple(ans(a) for a in r.get("answers") or ()), parse_error=r.get("parse_error"))
                    for r in d.get("x_replies") or ())
    engine = d.get("engine") or "system"
    return DNSQuery(hostname=d.get("hostname") or "", query_type=d.get("query_type") or "A",
                    engine=engine if engine in ("system", "udp", "doh") else "system",  # type: ignore[arg-type]
                    resolver_address=d.get("resolver_address") or "", t0=_f(d.get("t0")), t=_f(d.get("t")),
                    failure=d.get("failure"), answers=tuple(ans(a) for a in d.get("answers") or ()), replies=replies)


def parse_tcp_connect(d: dict[str, Any]) -> TCPConnect:
    """A df-005 ``tcp_connect[]`` entry → :class:`TCPConnect`."""
    status = d.get("status") or {}
    failure = status.get("failure")
    if failure is None and status.get("success") is False:
        failure = "unknown_failure: success=false without failure"
    return TCPConnect(ip=str(d.get("ip") or ""), port=int(d.get("port") or 0), t0=_f(d.get("t0")), t=_f(d.get("t")),
                      failure=failure)


def parse_tls_handshake(d: dict[str, Any]) -> TLSHandshake:
    """A df-006 ``tls_handshakes[]`` entry → :class:`TLSHandshake` (chain kept as base64 DER)."""
    try:
        ip, port = parse_endpoint(d.get("address") or "")
    except ValueError:
        ip, port = "", 0
    certs = tuple(_b64_or_text(c) for c in d.get("peer_certificates") or () if c)
    alpn = d.get("alpn") or ()
    return TLSHandshake(ip=ip, port=port, server_name=d.get("server_name") or None,
                        alpn_offered=tuple(alpn) if isinstance(alpn, list) else (), t0=_f(d.get("t0")),
                        t=_f(d.get("t")), failure=d.get("failure"), tls_version=d.get("tls_version"),
                        cipher_suite=d.get("cipher_suite"), negotiated_protocol=d.get("negotiated_protocol") or None,
                        peer_certificates=certs, chain_source="full" if len(certs) > 1 else ("leaf_only" if certs else "none"),
                        verification_failure=d.get("x_verification_failure"))


def parse_request(d: dict[str, Any]) -> HTTPRequest:
    """A df-001 ``requests[]`` entry → :class:`HTTPRequest` (title from ``x_title`` or the body)."""
    req = d.get("request") or {}
    resp = d.get("response") or {}

    def headers(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        hl = obj.get("headers_list")
        if isinstance(hl, list):
            return tuple((_text(k), _text(v)) for k, v in (h for h in hl if isinstance(h, list) and len(h) == 2))
        return tuple((str(k), _text(v)) for k, v in (obj.get("headers") or {}).items())

    ip = port = None
    if d.get("address"):
        try:
            ip, port = parse_endpoint(d["address"])
        except ValueError:
            pass
    response = None
    if d.get("failure") is None and isinstance(resp.get("code"), int):
        body_b64 = _b64_or_text(resp.get("body"))
        try:
            body = base64.b64decode(body_b64) if body_b64 else b""
        except ValueError:
            body = b""
        rh = headers(resp)
        response = HTTPResponse(status_code=resp["code"], headers=rh,
                                body_length=int(resp.get("x_body_length") or len(body)),
                                body_truncated=bool(resp.get("body_is_truncated")),
                                body_sha256=resp.get("x_body_sha256") or hashlib.sha256(body).hexdigest(),
                                body_b64=body_b64,
                                title=resp.get("x_title") if "x_title" in resp else extract_title(body, dict(rh).get("Content-Type")))
    received = d.get("x_body_bytes_received")
    duration = d.get("x_body_duration_s")
    return HTTPRequest(url=str(req.get("url") or ""), ip=ip, port=port, method=str(req.get("method") or "GET"),
                       request_headers=headers(req), t0=_f(d.get("t0")), t=_f(d.get("t")), failure=d.get("failure"),
                       response=response,
                       body_bytes_received=received if isinstance(received, int) and not isinstance(received, bool)
                       else None,
                       body_duration_s=float(duration) if isinstance(duration, (int, float))
                       and not isinstance(duration, bool) else None)
