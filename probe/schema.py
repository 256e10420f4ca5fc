"""The record schema: what ``kzprobe run`` writes and ``kzprobe report`` reads, defined once.

A measurement is OONI's base data format (ooni/spec df-000) for the web_connectivity test
(ts-017), its ``test_keys`` made of df-001 (``requests``), df-002 (``queries``), df-005
(``tcp_connect``) and df-006 (``tls_handshakes``); kzprobe's additions are ``x_`` keys.
docs/ooni-records.md maps every field and says why.

* The writer (:func:`probe.records.measurement`) builds a :class:`Measurement` and writes
  ``msgspec.to_builtins`` of it — so every key written is a field here.
* The loader (:mod:`analysis.load`) decodes our JSONL lines into the same structs.
* The run summary (``<report_id>.summary.json``): :class:`RunSummaryRecord`, written by
  :mod:`probe.runner`, read by :mod:`probe.status`, :mod:`analysis.load` and the lab.

Decoding is lenient on purpose: every field has a default, so records of kzprobe 0.1.0
(``test_version`` "0.1.0": our finer ``blocking`` values in ``blocking``, no ``x_blocking``,
bodies always base64, no match keys) decode too (tests/data/records-0.1.0.jsonl). Keys
that are written only when they apply default to :data:`msgspec.UNSET` (never written as
null). ``gc=False``: records are trees, never cycles (faster to decode many).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

#: Our web test's ``test_version``. OONI's web_connectivity has been 0.0.1 (ooniprobe 2),
#: 0.1.0 (Measurement Kit), 0.4.x (probe-cli) and 0.5.x (webconnectivitylte); kzprobe 0.1.0
#: wrote "0.1.0", which reads as Measurement Kit's. The "-kzprobe" pre-release label makes
#: ours unmistakable for any of OONI's (and sorts it apart under semver); the major number
#: changes when test_keys change meaning (1.0: blocking/accessible/dns_consistency in OONI's
#: vocabulary, ours in x_ keys).
TEST_VERSION = "1.0.0-kzprobe"
#: Records written before :data:`TEST_VERSION` (kzprobe 0.1.0): ``blocking`` is ours.
LEGACY_TEST_VERSIONS = frozenset({"0.1.0"})
DATA_FORMAT_VERSION = "0.2.0"


class _S(Struct, kw_only=True, gc=False):
    """Base: keyword-only, no GC tracking."""


# --------------------------------------------------------------------------- df-001 bits


class BinaryData(_S):
    """df-001 ``BinaryData``: bytes that are not UTF-8, base64-encoded."""

    format: str = "base64"
    data: str = ""


#: df-001 ``MaybeBinaryData``: a string when the bytes are UTF-8, else :class:`BinaryData`.
MaybeBinary = str | BinaryData


# --------------------------------------------------------------------------- df-002 queries


class DNSAnswerRec(_S):
    """df-002 ``answers[]``; ``x_bogon`` marks a bogon address (written only when true)."""

    answer_type: str = "A"
    ttl: int | None = None
    ipv4: str | UnsetType = UNSET
    ipv6: str | UnsetType = UNSET
    hostname: str | UnsetType = UNSET
    x_bogon: bool | UnsetType = UNSET


class DNSReplyRec(_S):
    """``x_replies[]``: one reply as received (``raw``: base64 of the wire bytes)."""

    t: float = 0.0
    raw: str = ""
    source: str = ""
    rcode: str | None = None
    flags: int | None = None
    answers: list[DNSAnswerRec] = []
    parse_error: str | None = None


class DNSQueryRec(_S):
    """df-002 ``queries[]`` plus ``x_replies`` (every reply, injected ones included)."""

    answers: list[DNSAnswerRec] = []
    engine: str = "system"
    failure: str | None = None
    hostname: str = ""
    query_type: str = "A"
    resolver_address: str = ""
    resolver_hostname: str | None = None
    resolver_port: str | None = None
    t0: float = 0.0
    t: float = 0.0
    x_replies: list[DNSReplyRec] = []
    #: replies past the per-query cap, counted only (written when any)
    x_replies_dropped: int | UnsetType = UNSET


# --------------------------------------------------------------------------- df-005 tcp_connect


class TCPStatus(_S):
    """df-005 ``status``; ``blocked`` per ts-017 (probe failed where the control connected)."""

    success: bool = False
    failure: str | None = None
    blocked: bool | None = None


class TCPConnectRec(_S):
    """df-005 ``tcp_connect[]``."""

    ip: str = ""
    port: int = 0
    t0: float = 0.0
    t: float = 0.0
    status: TCPStatus = msgspec.field(default_factory=TCPStatus)
    tags: list[str] = []


# --------------------------------------------------------------------------- df-006 tls_handshakes


class TLSHandshakeRec(_S):
    """df-006 ``tls_handshakes[]``.

    ``failure`` is OONI's: the handshake's failure, or — the handshake having completed — the
    certificate verification's (``ssl_unknown_authority``, ``ssl_invalid_hostname``,
    ``ssl_invalid_certificate``), with ``no_tls_verify`` false, so an intercepted chain reads
    as the failed verification OONI's own probe would have recorded. The chain is kept in
    ``peer_certificates`` either way. ``x_handshake_failure`` is the network/protocol failure
    alone (null when the handshake completed); ``x_alpn_offered`` the ALPN protocols offered.
    Records of kzprobe 0.1.0 had ``no_tls_verify`` true, ``failure`` = the handshake's and an
    unprefixed ``alpn``.
    """

    network: str = "tcp"
    address: str = ""
    server_name: str | None = None
    cipher_suite: str | None = None
    failure: str | None = None
    negotiated_protocol: str | None = None
    no_tls_verify: bool = False
    peer_certificates: list[BinaryData] = []
    t0: float = 0.0
    t: float = 0.0
    tls_version: str | None = None
    tags: list[str] = []
    x_handshake_failure: str | None | UnsetType = UNSET
    x_alpn_offered: list[str] | UnsetType = UNSET
    alpn: list[str] | UnsetType = UNSET  # kzprobe 0.1.0 only
    x_chain_source: str | None = None
    x_verification_failure: str | None = None
    x_verified_anchor: str | None = None
    x_verification_policy: str | None = None


# --------------------------------------------------------------------------- df-001 requests


class TorInfo(_S):
    is_tor: bool = False
    exit_ip: str | None = None
    exit_name: str | None = None


class HTTPRequestRec(_S):
    """df-001 ``Request``: ``headers`` keeps the first value of a repeated header (df-001),
    ``headers_list`` every header in order."""

    method: str = "GET"
    url: str = ""
    headers_list: list[tuple[str, MaybeBinary]] = []
    headers: dict[str, MaybeBinary] = {}
    body: MaybeBinary = ""
    body_is_truncated: bool = False
    tor: TorInfo = msgspec.field(default_factory=TorInfo)


class HTTPResponseRec(_S):
    """df-001 ``Response``: ``body`` a string when the stored bytes are UTF-8, else
    :class:`BinaryData` (kzprobe 0.1.0: always BinaryData); null when no body was stored."""

    code: int = 0
    headers_list: list[tuple[str, MaybeBinary]] = []
    headers: dict[str, MaybeBinary] = {}
    body: MaybeBinary | None = None
    body_is_truncated: bool = False
    x_body_length: int | None = None
    x_body_sha256: str | None = None
    x_title: str | None = None


class RefusedRec(_S):
    """``requests[].x_refused[]``: an address the fetch refused to contact (the vantage's own
    network; ``rule`` says which policy), nothing fetched from it."""

    address: str = ""
    rule: str = ""


class HTTPTransactionRec(_S):
    """df-001 transaction (``requests[]``, newest hop first as OONI lists them)."""

    network: str = "tcp"
    address: str | None = None
    failure: str | None = None
    t0: float = 0.0
    t: float = 0.0
    request: HTTPRequestRec = msgspec.field(default_factory=HTTPRequestRec)
    response: HTTPResponseRec | None = None
    x_body_bytes_received: int | None = None
    x_body_duration_s: float | None = None
    #: the body read failed after the head: seconds from its last byte to the failure (absent otherwise;
    #: near 0 = still flowing when cut, a slow steady transfer; long = it had stopped, a freeze)
    x_body_stall_s: float | UnsetType = UNSET
    x_refused: list[RefusedRec] | UnsetType = UNSET
    #: true: the request went over the connection of the TLS handshake recorded for its endpoint
    #: (``tls_handshakes[]``; issue 13), so ``t0``..``t`` holds no connect and no handshake;
    #: absent: a connection of its own (plain HTTP, a redirect hop, a server that picked h2,
    #: kzprobe before 0.2).
    x_reused_tls_handshake: bool | UnsetType = UNSET


# --------------------------------------------------------------------------- control (ts-017)


class ControlDNS(_S):
    failure: str | None = None
    addrs: list[str] = []


class ControlTCP(_S):
    status: bool = False
    failure: str | None = None


class ControlTLS(_S):
    server_name: str | None = None
    status: bool = False
    failure: str | None = None
    x_verification_failure: str | None = None
    x_issuer: str | None = None
    x_leaf_spki_sha256: str | None = None


class ControlHTTPRec(_S):
    failure: str | None = None
    status_code: int = -1
    headers: dict[str, str] = {}
    title: str = ""
    body_length: int = -1
    x_body_truncated: bool = False
    x_body_sha256: str | None = None
    x_final_url: str | None = None


class ControlRec(_S):
    """ts-017 ``test_keys.control`` (the test helper's answer); ``{}`` when there was none.

    Also the shape of ``x_dns_control`` (the DoH control: ``x_source`` "doh", DNS only).
    """

    x_source: str | UnsetType = UNSET
    failure: str | None | UnsetType = UNSET
    x_refused: list[str] | UnsetType = UNSET
    x_skipped: list[str] | UnsetType = UNSET  # left unmeasured for a bound (ControlResult.skipped); absent: none
    dns: ControlDNS | UnsetType = UNSET
    tcp_connect: dict[str, ControlTCP] | UnsetType = UNSET
    tls_handshake: dict[str, ControlTLS] | UnsetType = UNSET
    http_request: ControlHTTPRec | UnsetType = UNSET


# --------------------------------------------------------------------------- x_ details


class MITMRec(_S):
    """``x_mitm``: :class:`probe.mitm.MITMFinding` (the chain inspection)."""

    mitm: bool = False
    matched_by: list[str] = []
    root_tag: str | None = None
    matched_subject: str | None = None
    position: int | None = None
    leaf_traits: list[str] = []
    issuer: str | None = None
    unparseable: list[int] = []
    reason: str = ""


class TransferRec(_S):
    bytes: int = 0
    duration_s: float = 0.0
    bps: float = 0.0
    failure: str | None = None
    status_code: int | None = None


class ThroughputRec(_S):
    """``x_throughput``: see :func:`probe.records.throughput_json`."""

    url: str = ""
    address: str = ""
    bytes: int = 0
    target_bps: float = 0.0
    baseline_bps: float | None = None
    ratio: float | None = None
    throttled: bool = False
    target: TransferRec = msgspec.field(default_factory=TransferRec)
    baseline: TransferRec | None = None
    baseline_server_name: str | None = None
    baseline_failure: str | None = None
    retest: TransferRec | None = None
    note: str = ""


class VantageRec(_S):
    """``x_vantage``: the vantage's state when measured. ``ipv4_usable``/``ipv6_usable``: whether it
    could use that address family (a route, and a canary reached); null = unknown (issue 12: the
    rule vantage.address_family reads them, so the record keeps them; absent in older records)."""

    offline: bool = False
    control_intercepted_by: str | None = None
    ipv4_usable: bool | None = None
    ipv6_usable: bool | None = None


class SkippedRec(_S):
    """``x_skipped_addresses[]``: an address from DNS deliberately not contacted, and why
    (``failure``: ``local_network_refused``; absent in records of kzprobe 0.1.0)."""

    address: str = ""
    reason: str = ""
    failure: str | None = None


# --------------------------------------------------------------------------- test_keys


class DNSReplyPktRec(_S):
    """``x_packets.dns_injection.*_replies[]``: one DNS reply as captured (probe/packets/dnsinject.py)."""

    src: str = ""
    ttl: int = 0
    ip_id: int = 0
    hops_est: int = 0
    dns_id: int = 0
    flags: int = 0
    rcode: int = 0
    answers: list[str] = []
    t: float = 0.0
    parse_error: bool = False


class DNSInjectionRec(_S):
    """``x_packets.dns_injection``: :class:`probe.packets.dnsinject.DNSInjection`."""

    name: str = ""
    non_resolver: str = ""
    resolver: str = ""
    nonresolver_replies: list[DNSReplyPktRec] = []
    resolver_replies: list[DNSReplyPktRec] = []
    injected: bool = False
    raced: bool = False
    injector_hop: int | None = None
    injector_hops_est: int | None = None
    path: list[str | None] = []
    packets_sent: int = 0
    t0: float = 0.0
    t: float = 0.0
    failure: str | None = None


class SegmentRec(_S):
    """A TCP segment's compared fields (probe/packets/forensics.py ``SegmentInfo``)."""

    ttl: int = 0
    ip_id: int = 0
    window: int = 0
    flags: str = ""
    hops_est: int = 0
    t: float = 0.0


class ResetForensicsRec(_S):
    """``x_packets.reset_forensics``: :class:`probe.packets.forensics.ResetForensics`."""

    ip: str = ""
    port: int = 0
    trigger: str = ""
    outcome: str = ""
    synack: SegmentRec | None = None
    ender: SegmentRec | None = None
    injected: bool | None = None
    ip_id_differs: bool | None = None
    packets_sent: int = 0
    t0: float = 0.0
    t: float = 0.0
    failure: str | None = None
    #: the port whose SYN-ACK was compared when not ``port`` (a SYN reset: the server's other port)
    synack_port: int | None = None


class HopProbeRec(_S):
    ttl: int = 0
    target: str = ""
    benign: str = ""
    router: str | None = None


class LocalisationRec(_S):
    """``x_packets.localisation``: :class:`probe.packets.centrace.Localisation` (+ the censor's network)."""

    ip: str = ""
    port: int = 0
    trigger: str = ""
    hops: list[HopProbeRec] = []
    blocked_ttl: int | None = None
    censor_hop: int | None = None
    censor_address: str | None = None
    censor_network: str | None = None
    terminating: bool = False
    benign_blocked: bool = False
    endpoint_ttl: int | None = None
    packets_sent: int = 0
    t0: float = 0.0
    t: float = 0.0
    failure: str | None = None


class PacketsRec(_S):
    """``x_packets``: packet-level evidence of a blocked measurement (probe/packets/evidence.py).
    ``t``: seconds the packet tests took (their own clock, after the verdict)."""

    findings: list[str] = []
    t: float = 0.0
    packets_sent: int = 0
    packets_captured: int = 0
    packets_dropped: int = 0
    dns_injection: DNSInjectionRec | UnsetType = UNSET
    reset_forensics: ResetForensicsRec | UnsetType = UNSET
    localisation: LocalisationRec | UnsetType = UNSET
    pcap: str | UnsetType = UNSET
    failure: str | None | UnsetType = UNSET


class WebTestKeys(_S):
    """web_connectivity ``test_keys`` (ts-017) with kzprobe's ``x_`` keys.

    OONI's verdict keys hold OONI's vocabulary (``blocking``: false, "dns", "tcp_ip",
    "http-diff", "http-failure" or null; ``dns_consistency``: "consistent", "inconsistent" or
    null); kzprobe's finer verdict is in ``x_blocking`` / ``x_accessible`` /
    ``x_dns_consistency``. In records of kzprobe 0.1.0 ``blocking`` was ours and the x_
    verdict keys are absent (UNSET).
    """

    agent: str = "redirect"
    queries: list[DNSQueryRec] = []
    tcp_connect: list[TCPConnectRec] = []
    tls_handshakes: list[TLSHandshakeRec] = []
    requests: list[HTTPTransactionRec] = []
    control: ControlRec = msgspec.field(default_factory=ControlRec)
    control_failure: str | None = None
    dns_experiment_failure: str | None = None
    http_experiment_failure: str | None = None
    dns_consistency: str | None = None
    body_length_match: bool | None = None
    body_proportion: float | None = None
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None
    blocking: bool | str | None = None
    accessible: bool | None = None
    x_blocking: bool | str | None | UnsetType = UNSET
    x_accessible: bool | None | UnsetType = UNSET
    x_dns_consistency: str | UnsetType = UNSET
    x_reason: str = ""
    x_rule: str | None = None
    x_findings: list[str] = []
    x_server_side_block: str | None = None
    x_mitm: MITMRec | None = None
    x_tls_handshakes: list[TLSHandshakeRec] | UnsetType = UNSET
    x_dns_control: ControlRec = msgspec.field(default_factory=ControlRec)
    x_doh_queries: list[DNSQueryRec] = []
    x_skipped_addresses: list[SkippedRec] = []
    x_blockpage_fingerprints: list[str] = []
    x_throughput: ThroughputRec | None = None
    x_vantage: VantageRec | None = None
    x_packets: PacketsRec | UnsetType = UNSET


class TestHelperRec(_S):
    """df-000 ``test_helpers`` entry (``{"backend": {"address": …, "type": "https"}}``)."""

    address: str = ""
    type: str = "https"


class InputMetadata(_S):
    """``x_input_metadata``: where the input came from (the target list)."""

    domain: str | None = None
    category_code: str | None = None
    list: str | None = None
    original: str | None = None
    notes: str | None = None


class Measurement(_S):
    """One df-000 measurement of the web test."""

    annotations: dict[str, str] = {}
    data_format_version: str = DATA_FORMAT_VERSION
    input: str | None = None
    measurement_start_time: str | None = None
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    probe_ip: str = "127.0.0.1"
    probe_network_name: str = ""
    report_id: str = ""
    #: OONI's resolver_asn/resolver_network_name: of the resolver the probe asked directly
    #: (the first dns.udp_resolvers address, from the ASN database); absent when unknown
    resolver_asn: str | UnsetType = UNSET
    resolver_network_name: str | UnsetType = UNSET
    software_name: str = ""
    software_version: str = ""
    test_helpers: dict[str, TestHelperRec] | UnsetType = UNSET
    test_name: str = ""
    test_runtime: float = 0.0
    test_start_time: str = ""
    test_version: str = ""
    test_keys: WebTestKeys = msgspec.field(default_factory=WebTestKeys)
    x_input_metadata: InputMetadata | None = None
    x_measurement_uid: str | None = None


# --------------------------------------------------------------------------- run summary


class RunSummaryRecord(_S):
    """``<report_id>.summary.json``: what a run did (:class:`probe.runner.RunSummary`).

    ``counts`` maps a verdict word (``probe.vocab.VERDICT_WORDS``: "false"/"accessible",
    a blocking type, "down", "inconclusive") to a count; ``health_before``/``health_after``
    are :meth:`probe.health.HealthReport.to_json`.
    """

    report_id: str = ""
    test_start_time: str = ""
    measurements_file: str = ""
    inputs: int = 0
    measured: int = 0
    not_measured: int = 0
    interrupted: bool = False
    deadline_hit: bool = False
    io_error: str | None = None
    runtime_s: float = 0.0
    vantage_offline: bool = False
    control_intercepted_by: str | None = None
    counts: dict[str, int] = {}
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    vantage_id: str = ""
    health_before: dict[str, Any] | None = None
    health_after: dict[str, Any] | None = None
    #: the time-budget plan (:meth:`probe.budget.Plan.to_json`), None when not planned
    plan: dict[str, Any] | None = None
    #: the vantage's network as learned before the run and again after it (probe/vantage.py:
    #: source, asn, cc, network_name, failure; ``after`` the same; ``changed`` when the ASN or
    #: country differ), None when not looked up. Never the address.
    vantage: dict[str, Any] | None = None
    #: packet-level evidence this run (probe/runner.py ``packet_evidence``): ``enabled``,
    #: ``off_reason`` (no CAP_NET_RAW …), ``localise``, ``jobs``, ``packets_sent``, ``localised``,
    #: ``dns_injection_off`` (why the DNS injection test is off: no address for the non-resolver)
    packets: dict[str, Any] | None = None


def project(cls: type[Struct], spec: dict[str, Any], name: str | None = None) -> type[Struct]:
    """A read-only view of ``cls``: a struct with only the fields named in ``spec``, with the
    schema's own names, types and defaults (a field whose type is a struct, or a list/dict/
    optional of one, is projected in turn by its ``spec`` value, a dict; ``None`` keeps the field
    whole). Decoding into a view skips the other fields without building them — the loader reads
    our records through one (:data:`analysis.load.ROW_VIEW`), so it reads the schema, never a copy.

    Raises:
        KeyError: a name in ``spec`` is not a field of ``cls`` (the view would read nothing).
    """
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    out = []
    for fname, sub in spec.items():
        f = fields[fname]
        typ, factory = f.type, f.default_factory
        if sub is not None:
            inner = _struct_in(typ)
            view = project(inner, sub, f"{cls.__name__}_{fname}")
            typ = _replace_type(typ, inner, view)
            if factory is inner:
                factory = view
        if factory is not msgspec.NODEFAULT:
            out.append((fname, typ, msgspec.field(default_factory=factory)))
        else:
            out.append((fname, typ, f.default))
    return msgspec.defstruct(name or f"{cls.__name__}View", out, kw_only=True, gc=False)


def _struct_in(typ: Any) -> type[Struct]:
    """The struct type inside ``typ`` (``X``, ``list[X]``, ``X | None``, ``dict[str, X]`` …)."""
    if isinstance(typ, type) and issubclass(typ, Struct):
        return typ
    for arg in getattr(typ, "__args__", ()):
        try:
            return _struct_in(arg)
        except TypeError:
            continue
    raise TypeError(f"no struct in {typ!r}")


def _replace_type(typ: Any, old: type, new: type) -> Any:
    if typ is old:
        return new
    args = getattr(typ, "__args__", None)
    if not args:
        return typ
    new_args = tuple(_replace_type(a, old, new) for a in args)
    origin = getattr(typ, "__origin__", None)
    if origin is None:  # X | Y (types.UnionType)
        out = new_args[0]
        for a in new_args[1:]:
            out = out | a
        return out
    return origin[new_args] if origin in (list, dict, tuple) else typ.copy_with(new_args)


MEASUREMENT_DECODER = msgspec.json.Decoder(Measurement)
SUMMARY_DECODER = msgspec.json.Decoder(RunSummaryRecord)


def to_json(obj: Struct) -> dict[str, Any]:
    """A struct as the plain JSON value written (UNSET fields left out)."""
    out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(obj))
    return out


def our_verdict(test_keys: dict[str, Any]) -> tuple[Any, Any]:
    """kzprobe's own ``(blocking, accessible)`` from a record's ``test_keys`` dict:
    ``x_blocking``/``x_accessible`` since 1.0.0-kzprobe (``blocking``/``accessible`` hold OONI's
    words there), ``blocking``/``accessible`` in kzprobe 0.1.0's records."""
    if "x_blocking" in test_keys:
        return test_keys.get("x_blocking"), test_keys.get("x_accessible")
    return test_keys.get("blocking"), test_keys.get("accessible")
