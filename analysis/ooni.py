"""Judging OONI measurements ourselves, and how often we agree with OONI.

:func:`recompute` rebuilds the probe's own observation types from an OONI
web_connectivity measurement's raw ``test_keys`` — ``queries`` (df-002),
``tcp_connect`` (df-005), ``tls_handshakes`` (df-006), ``requests`` (df-001), parsed by
:mod:`probe.records` — and its ``control`` (the test helper's answer, ts-017: ``dns``,
``tcp_connect``, ``tls_handshake`` (v0.5), ``http_request``) into a
:class:`probe.control.ControlResult`, then calls the probe's judge
(:func:`probe.verdict.judge`). One verdict logic for our data and OONI's.

Where the data does not allow it, :func:`recompute` returns None and the analysis uses
OONI's own verdict (``verdict_source == "ooni"``):

* no ``test_keys``, no ``control`` (empty or missing), or ``control_failure`` set (the
  rule "no verdict without a control");
* an ``input`` that is not an http(s) URL;
* an https input measured before test_keys had ``tls_handshakes`` (web_connectivity
  < 0.4: the TLS step happened inside the HTTP client and left no per-endpoint record):
  only a verdict decided at the DNS step is kept, any later step needs the handshakes.

Version quirks handled here (each a row in tests/analysis/test_ooni_versions.py):

* **0.4.x handshakes carry no ``address``** (ts-017 at 0.4.0: ``tls_handshakes`` entries have
  ``server_name`` and ``t`` only): :func:`pair_handshakes` gives each its endpoint from
  ``network_events`` (a ``tls_handshake_done`` whose ``t`` equals the handshake's, on the
  connection opened by the ``connect`` before it; events of one connection are contiguous in
  0.4.x), else by the order of successful ``tcp_connect`` entries on the TLS port when the
  counts are equal; an unpaired handshake stays unpaired (never guessed).
* **0.5 cancels the parallel requests once one succeeds** (probe-cli webconnectivitylte: the
  losers end with ``unknown_failure: http_request_canceled``): a response among cancelled
  requests is the fetch; the cancellations are not failures.
* **A body that is not valid base64** (fastpath fixture ``web_connectivity_b64_incorrect``):
  a verdict that compared bodies (``http.diff``/``http.match``) is replaced by OONI's own
  match keys (``status_code_match`` and one of ``body_length_match``/``headers_match``/
  ``title_match``, ts-017's rule) — rule ``http.ooni_match_keys``.
* **Before 0.4 there are no certificates**: an ``ssl_unknown_authority`` (or OpenSSL's
  "certificate verify failed") on an https fetch of a known interception target (the exact
  hosts of ``probe/data/targets/kz-mitm-*.txt``) inside a known interception window
  (:data:`INTERCEPTION_WINDOWS`, from shared/data/KZ-MITM-FACTS.md) in KZ, with a control
  that fetched the page, is ``tls_mitm`` by rule ``tls_mitm.unknown_authority_window`` —
  weaker evidence than a matched root (:data:`WEAK_MITM_RULES`; no certificate was seen).
* **A failure string that is the probe's own exception** (ooniprobe 2.x's
  ``unknown_failure 'ascii' codec can't decode ...``, fastpath fixture ``bug_351``) is no
  network evidence: inconclusive, rule ``http.probe_error`` (OONI says ``http-failure``).
* **A certificate failure without a control TLS step** (0.4 control), where the control's own
  fetch of the URL failed too: the site fails from everywhere — down, rule
  ``tls.cert_both_fail`` (OONI says null).

Known differences from OONI's own algorithm (they show up as disagreements, each with
our rule and reason): the probe's DNS-over-HTTPS queries of v0.5 (``engine`` "doh")
are not counted as the vantage's DNS answers; a control that resolved only a CNAME and
no address counts as "the name does not resolve from the control either"; a TLS
failure where the control's handshake works is ``tls`` (OONI < 0.5 says
``http-failure``).
"""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from probe import verdict
from probe.addresses import Bogons, format_endpoint, parse_endpoint, parse_ip
from probe.control import ControlEndpoint, ControlHTTP, ControlResult
from probe.errors import KzprobeError
from probe.fastrec import builder
from probe.fingerprints import fast_body_matching, match_dns, match_http
from probe.measure.dns import DNSAnswer, DNSQuery, reply_addresses
from probe.measure.http import HTTPFetch, LazyResponse, b64_is_strict
from probe.measure.tcp import TCPConnect
from probe.mitm import inspect_chain
from probe.nettests.web import EndpointObservation, WebObservations
from probe.records import (
    parse_query,
    parse_request,
    parse_tcp_connect,
    parse_tls_handshake,
)
from probe.targets import Target, TargetError, normalise_url
from probe.verdict import judge
from probe.vocab import Blocking, Rule

#: Rules decided at the DNS step (before any TCP/TLS/HTTP evidence is looked at): the only
#: ones kept for https inputs measured without ``tls_handshakes`` (see the module docstring).
DNS_STEP_RULES = verdict.DNS_STEP_RULES

#: Handshake failures that are really the TCP connect's.
_CONNECT_FAILURES = frozenset({"connection_refused", "host_unreachable", "network_unreachable"})

#: Rules whose interception verdict rests on weaker evidence than a matched root: no
#: certificate was seen, only an unknown-authority failure on a known target in a known window.
WEAK_MITM_RULES = frozenset({Rule.TLS_MITM_UNKNOWN_AUTHORITY_WINDOW})


@dataclass(frozen=True, kw_only=True)
class InterceptionWindow:
    """A period in which Kazakhstan is known to have intercepted TLS to a list of hosts."""

    start: date
    end: date
    hosts_file: str  # a shipped list in probe/data/targets/
    source: str


#: Known interception windows (shared/data/KZ-MITM-FACTS.md), inclusive UTC days.
INTERCEPTION_WINDOWS: tuple[InterceptionWindow, ...] = (
    InterceptionWindow(start=date(2019, 7, 17), end=date(2019, 8, 7), hosts_file="kz-mitm-2019-domains.txt",
                       source="Raman et al., IMC 2020 (doi:10.1145/3419394.3423665): 17 July - 7 August 2019"),
    InterceptionWindow(start=date(2020, 12, 6), end=date(2020, 12, 11), hosts_file="kz-mitm-2019-domains.txt",
                       source="'Cyber Security Nur-Sultan 2020' drill from 6 December, six days (FotN 2021 A3; "
                              "Mozilla bug 1680927); targets 'similar to 2019'"),
    InterceptionWindow(start=date(2021, 1, 1), end=date(2024, 9, 19), hosts_file="kz-mitm-2021-2024-ooni-domains.txt",
                       source="OONI's Kazakhstan report of 2024-09-19 (interception seen 2021-2024)"),
)

#: Failure strings that say the certificate chain did not lead to a trusted root.
_UNKNOWN_AUTHORITY = ("ssl_unknown_authority", "certificate verify failed")
#: Certificate-validation failures (Go engine names, df-007).
_CERT_FAILURES = ("ssl_unknown_authority", "ssl_invalid_certificate", "ssl_invalid_hostname",
                  "certificate verify failed")
#: Text that marks a failure string as the probe's own exception, not a network event.
_PROBE_ERROR_MARKS = ("codec can't", "ordinal not in range", "object has no attribute", "Traceback",
                      "is not JSON serializable", "unexpected keyword argument")

#: The bogon set OONI uses (probe.addresses' default); no documentation range is public here.
_BOGONS = Bogons()

#: The records of :func:`_observe`, built without the dataclasses' frozen ``__init__``
#: (:mod:`probe.fastrec`; issue 14 part 7: ~15 records a measurement).
_ControlEndpoint = builder(ControlEndpoint)
_ControlHTTP = builder(ControlHTTP)
_ControlResult = builder(ControlResult)
_Target = builder(Target)
_TCPConnect = builder(TCPConnect)
_EndpointObservation = builder(EndpointObservation)
_HTTPFetch = builder(HTTPFetch)
_WebObservations = builder(WebObservations)


@dataclass(frozen=True, kw_only=True)
class Recomputed:
    """Our verdict on an OONI measurement.

    Attributes:
        blocking: a :data:`probe.vocab.Blocking` value; None = inconclusive (see :mod:`probe.verdict`).
        accessible: True / False; None = unknown.
        rule: the probe's rule id that decided (``dns.bogon``, ``http.diff`` …).
        reason: the probe's one-sentence reason, with the evidence.
    """

    blocking: Blocking
    accessible: bool | None
    rule: str
    reason: str

    @property
    def blocking_str(self) -> str | None:
        """``blocking`` as stored in the frame: "false" for False, None for inconclusive."""
        return "false" if self.blocking is False else self.blocking


_Recomputed = builder(Recomputed)


class NotJudgeable(KzprobeError, ValueError):
    """The measurement lacks what a verdict needs (the message says what)."""


def _text(v: Any) -> str:
    if isinstance(v, dict) and v.get("format") == "base64":
        try:
            return base64.b64decode(v.get("data") or "").decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return ""
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _ips(values: Any) -> tuple[str, ...]:
    """The IP addresses among OONI's ``control.dns.addrs`` (old versions mix in CNAME targets)."""
    if not values:
        return ()
    out: dict[str, None] = {}
    for a in values:
        if isinstance(a, str) and parse_ip(a) is not None:
            out.setdefault(a, None)
    return tuple(out)


@lru_cache(maxsize=65536)
def _key(endpoint: str) -> tuple[str, int] | None:
    """:func:`probe.addresses.parse_endpoint` memoised (a pure function of a short string: the
    control's endpoints recur across measurements; ~5 µs a call for an IPv6 one), None if not one."""
    try:
        return parse_endpoint(endpoint)
    except ValueError:
        return None


def measured_version(m: dict[str, Any]) -> tuple[int, ...]:
    """``test_version`` "0.4.1" → (0, 4, 1); () when missing or unreadable."""
    v = m.get("test_version")
    if not isinstance(v, str):
        return ()
    out = []
    for part in v.split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def _addr_key(a: Any) -> str | None:
    """An endpoint string as written in network events, normalised ("[::1]:443" / "1.2.3.4:443")."""
    if not isinstance(a, str):
        return None
    return _endpoint_text(a)


@lru_cache(maxsize=65536)
def _named_key(a: str) -> tuple[str, int, str] | None:
    """(ip, port, the endpoint normalised) of ``a`` (:func:`_key`, :func:`_endpoint_text`), None if not
    one; memoised: one look-up a control endpoint instead of two."""
    ep = _key(a)
    return (ep[0], ep[1], format_endpoint(*ep)) if ep else None


@lru_cache(maxsize=65536)
def _endpoint_text(a: str) -> str | None:
    """``a`` normalised as an endpoint ("[::1]:443" / "1.2.3.4:443"), None if not one; memoised."""
    ep = _key(a)
    return format_endpoint(*ep) if ep else None


def pair_handshakes(tk: dict[str, Any], tls_port: int = 443) -> tuple[list[dict[str, Any]], str | None]:
    """``tls_handshakes`` with an ``address`` on every entry that can be paired with its connect.

    web_connectivity 0.4.x writes handshakes without ``address`` (see the module docstring).
    Pairing, in order of preference:

    1. ``network_events``: each ``tls_handshake_done`` belongs to the connection of the last
       successful ``connect`` before it; a handshake takes the done event with its very ``t``
       (and failure), else the next unused one in order.
    2. the order of the successful ``tcp_connect`` entries on ``tls_port``, only when there are
       as many of them as handshakes to pair.

    Returns:
        (handshakes, how): copies of the dict entries (the input is not changed) and
        "network_events", "order", "mixed" or None when nothing needed pairing (or nothing could
        be paired).
    """
    hs = [h for h in tk.get("tls_handshakes") or () if isinstance(h, dict)]
    todo = [i for i, h in enumerate(hs) if not h.get("address")]
    if not todo:
        return hs, None
    hs = [dict(h) for h in hs]
    done: list[tuple[float | None, Any, str]] = []  # (t, failure, address) per tls_handshake_done
    current: str | None = None
    for e in tk.get("network_events") or ():
        if not isinstance(e, dict):
            continue
        op = e.get("operation")
        if op == "connect":
            current = _addr_key(e.get("address")) if not e.get("failure") else None
        elif op == "tls_handshake_done" and current is not None:
            t = e.get("t")
            done.append((float(t) if isinstance(t, (int, float)) else None, e.get("failure"), current))
    used: set[int] = set()
    how: set[str] = set()
    left: list[int] = []
    for i in todo:
        t = hs[i].get("t")
        pick = next((j for j, (dt, df, _) in enumerate(done) if j not in used and dt is not None
                     and isinstance(t, (int, float)) and abs(dt - float(t)) < 1e-6 and df == hs[i].get("failure")), None)
        if pick is None:
            pick = next((j for j in range(len(done)) if j not in used), None)
        if pick is None:
            left.append(i)
            continue
        used.add(pick)
        hs[i]["address"] = done[pick][2]
        how.add("network_events")
    if left:
        conns = [c for c in tk.get("tcp_connect") or () if isinstance(c, dict)
                 and isinstance(c.get("status"), dict) and c["status"].get("success") and c.get("port") == tls_port]
        taken = {h.get("address") for h in hs if h.get("address")}
        conns = [c for c in conns if _addr_key(format_endpoint(str(c.get("ip")), tls_port)) not in taken]
        if len(conns) == len(left):
            for i, c in zip(left, conns):
                hs[i]["address"] = format_endpoint(str(c.get("ip")), tls_port)
            how.add("order")
    if not how:
        return hs, None
    return hs, how.pop() if len(how) == 1 else "mixed"


def _cancelled(failure: Any) -> bool:
    return isinstance(failure, str) and failure.endswith("http_request_canceled")


def control_result(control: dict[str, Any]) -> ControlResult:
    """OONI's ``test_keys.control`` → a full :class:`ControlResult` (source "helper").

    ``status_code``/``body_length`` of -1 (OONI's "none") become None; a TCP entry with
    ``status`` false and no failure gets ``"unknown_failure: status=false"``.
    """
    dns = control.get("dns")
    if not isinstance(dns, dict):
        dns = {}
    addrs = _ips(dns.get("addrs"))
    dns_failure = dns.get("failure") or (None if addrs else "dns_no_answer")
    endpoints: dict[str, ControlEndpoint] = {}
    tcp = control.get("tcp_connect")
    if not isinstance(tcp, dict):
        tcp = {}
    tls = control.get("tls_handshake")
    if not isinstance(tls, dict):
        tls = {}
    for k in (list(tcp) + [k for k in tls if k not in tcp]) if tls else tcp:
        ep = _named_key(k) if type(k) is str else None
        if ep is None:
            continue
        t = tcp.get(k)
        if type(t) is not dict:
            t = {}
        tcp_failure = t.get("failure") or (None if t.get("status", True) else "unknown_failure: status=false")
        h = tls.get(k) if tls else None
        tls_failure = None
        if type(h) is dict:
            tls_failure = h.get("failure") or (None if h.get("status", True) else "unknown_failure: status=false")
        else:
            h = None
        endpoints[ep[2]] = _ControlEndpoint(ip=ep[0], port=ep[1], tcp_failure=tcp_failure,
                                           tls_attempted=h is not None, tls_failure=tls_failure)
    http = None
    hr = control.get("http_request")
    if isinstance(hr, dict) and hr:
        failure = hr.get("failure")
        status = hr.get("status_code")
        length = hr.get("body_length")
        headers = hr.get("headers")
        if not isinstance(headers, dict):
            headers = {}
        http = _ControlHTTP(failure=failure,
                           status_code=status if isinstance(status, int) and status >= 0 and not failure else None,
                           headers=tuple([(k, v) if type(k) is str and type(v) is str else (str(k), _text(v))
                                          for k, v in headers.items()]),
                           title=_text(hr.get("title")) or None,
                           body_length=length if isinstance(length, int) and length >= 0 else None)
    return _ControlResult(source="helper", failure=None, dns_failure=dns_failure, dns_addresses=addrs,
                         endpoints=endpoints, http=http)


@dataclass(frozen=True, kw_only=True)
class _Notes:
    """What :func:`_observe` had to repair (the quirks of the module docstring)."""

    paired: str | None = None      # how 0.4.x handshakes got their endpoints
    n_cancelled: int = 0           # v0.5 requests cancelled after another succeeded
    undecodable: bool = False      # a response body was not valid base64


_new_notes = builder(_Notes)
_NO_NOTES = _Notes()


def observations(m: dict[str, Any]) -> WebObservations:
    """An OONI web_connectivity measurement → :class:`WebObservations` for :func:`probe.verdict.judge`.

    Raises:
        NotJudgeable: no test_keys, no control, a control failure, or an input that is
            not an http(s) URL (the message says which).
    """
    return _observe(m)[0]


def _observe(m: dict[str, Any]) -> tuple[WebObservations, _Notes]:
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        raise NotJudgeable("no test_keys")
    control = tk.get("control")
    if not isinstance(control, dict) or not control:
        raise NotJudgeable("no control in the measurement")
    if tk.get("control_failure"):
        raise NotJudgeable(f"control failure ({tk['control_failure']})")
    url = m.get("input")
    nu = _input_target(url if isinstance(url, str) else "")
    if isinstance(nu, str):
        raise NotJudgeable(f"input is not an http(s) URL: {nu}")
    target, scheme = nu
    domain, port = target.domain, target.port

    queries = []  # loops rather than comprehensions here: a comprehension is a call of its own (3.11), for ~1 item
    for q in tk.get("queries") or ():
        if isinstance(q, dict) and q.get("engine") != "doh":
            queries.append(parse_query(q))
    literal = parse_ip(domain)
    if literal is not None and not queries:  # an IP input resolves to itself (as our web test records it)
        queries = [DNSQuery(hostname=domain, query_type="ANY", engine="system", resolver_address="", t0=0.0, t=0.0,
                            failure=None, answers=(DNSAnswer(answer_type="A" if literal.version == 4 else "AAAA",
                                                             ipv4=domain if literal.version == 4 else None,
                                                             ipv6=domain if literal.version == 6 else None),))]
    full = control_result(control)
    if literal is not None and not full.dns_addresses:
        full = _ControlResult(source="helper", failure=None, dns_addresses=(domain,), endpoints=full.endpoints,
                             http=full.http)
    dns_control = _ControlResult(source="helper", failure=None, dns_failure=full.dns_failure,
                                dns_addresses=full.dns_addresses)

    probe_addrs = reply_addresses(queries)  # WebObservations.probe_addresses(), handed over below
    ctl_addrs = full.dns_addresses

    if tk.get("tls_handshakes"):
        raw_hs, paired = pair_handshakes(tk, port if scheme == "https" else 443)
        handshakes = [parse_tls_handshake(h) for h in raw_hs]
    else:
        handshakes, paired = [], None
    eps: dict[tuple[str, int], EndpointObservation] = {}
    for c in tk.get("tcp_connect") or ():
        if not isinstance(c, dict):
            continue
        t = parse_tcp_connect(c)
        if not t.ip or (t.ip, t.port) in eps:
            continue
        # where the address came from: the probe's DNS, the control's, or both
        src = ("both" if t.ip in ctl_addrs else "probe") if t.ip in probe_addrs else \
            ("control" if t.ip in ctl_addrs else "probe")
        eps[(t.ip, t.port)] = _endpoint(t, handshakes, domain, scheme, port, src)
    for h in handshakes:  # handshakes without a tcp_connect entry (v0.5: control's addresses, redirects)
        if not h.ip or (h.ip, h.port) in eps:
            continue
        t = _TCPConnect(ip=h.ip, port=h.port, t0=h.t0, t=h.t, failure=h.failure if h.failure in _CONNECT_FAILURES else None)
        if not h.server_name or h.server_name == domain:
            src = ("both" if h.ip in ctl_addrs else "probe") if h.ip in probe_addrs else \
                ("control" if h.ip in ctl_addrs else "probe")
            eps[(h.ip, h.port)] = _endpoint(t, handshakes, domain, scheme, port, src)
        elif h.peer_certificates:
            # another name (a redirect target): only its chain matters here, as interception evidence
            f = inspect_cached(tuple(h.peer_certificates))
            if f.mitm:
                eps[(h.ip, h.port)] = _EndpointObservation(ip=h.ip, port=h.port, source="probe", tcp=t, tls=h, mitm=f,
                                                          tls_check=True)

    http_failure = tk.get("http_experiment_failure")
    # one pass over the requests: the cancelled ones, whether one was answered, an undecodable body
    raw_reqs = []
    n_cancelled = 0
    answered = undecodable = False
    for r in tk.get("requests") or ():
        if not isinstance(r, dict):
            continue
        raw_reqs.append(r)
        f = r.get("failure")
        if f is None:
            resp = r.get("response") or {}
            code = resp.get("code")
            if isinstance(code, int) and code > 0:
                answered = True
            if not undecodable and _bad_b64(resp.get("body")):
                undecodable = True
        elif _cancelled(f):
            n_cancelled += 1
    if n_cancelled and answered:
        # v0.5: the parallel fetches lost the race to one that succeeded and were cancelled
        raw_reqs = [r for r in raw_reqs if not _cancelled(r.get("failure"))]
        if _cancelled(http_failure):
            http_failure = None
    else:
        n_cancelled = 0
    reqs = []
    for raw in raw_reqs:
        req = parse_request(raw, digest=False, request_headers=False)
        reqs.append(_clean_body(req) if req.response is not None and req.response.__dict__.get("body_b64") else req)
    fetch = None
    if reqs or http_failure:
        fetch = _HTTPFetch(requests=tuple(reversed(reqs)), failure=http_failure)
    http_bp: list[Any] = []
    for r, raw in zip(reqs, raw_reqs, strict=True):
        if r.response is not None and r.url.startswith("http://"):
            text = (raw.get("response") or {}).get("body")
            # an ASCII text body is the very text the matcher would decode from its base64: taken as it is
            body: bytes | str = text if type(text) is str and text.isascii() else r.response.body_bytes()
            http_bp.extend(match_http(r.response.status_code, r.response.headers, body))
    obs = _WebObservations(target=target, queries=tuple(queries), dns_control=dns_control, control=full,
                          endpoints=tuple(eps.values()), skipped=(), http=fetch,
                          dns_blockpages=tuple(match_dns(probe_addrs)) if probe_addrs else (),
                          http_blockpages=tuple(dict.fromkeys(http_bp)) if http_bp else ())
    obs.__dict__["_probe_addresses"] = tuple(probe_addrs)  # WebObservations.probe_addresses(), walked above
    if paired is None and not n_cancelled and not undecodable:
        return obs, _NO_NOTES  # nothing repaired (most measurements): the one shared record
    return obs, _new_notes(paired=paired, n_cancelled=n_cancelled, undecodable=undecodable)


@lru_cache(maxsize=65536)
def _input_target(url: str) -> tuple[Target, str] | str:
    """The :class:`Target` of an OONI input and the scheme :func:`probe.targets.normalise_url` gave, memoised
    (a pure function of the URL; OONI's inputs recur: the test lists; the frozen record is shared), or the
    reason ``normalise_url`` refused ``url``."""
    try:
        norm, domain, scheme, port = normalise_url(url)
    except TargetError as exc:
        return exc.reason
    return _Target(input=norm, domain=domain, scheme="https" if scheme == "https" else "http", port=port,
                   original=url, list_name="ooni", line=0), scheme  # normalise_url gives only these two schemes


def _strict_b64(data: str) -> bool:
    """``data`` decodes as strict base64 (one decode shared with the parser's and the matcher's:
    :func:`probe.measure.http.b64_is_strict`)."""
    return b64_is_strict(data)


def _bad_b64(body: Any) -> bool:
    """A df-001 body given as base64 that does not decode strictly."""
    if not (isinstance(body, dict) and body.get("format") == "base64"):
        return False
    return not _strict_b64(body.get("data") or "")


def lenient_b64decode(data: str) -> bytes:
    """Decode base64 as OONI's own pipeline must: bad padding is repaired, junk characters
    dropped; b"" when nothing decodes (fastpath fixture web_connectivity_b64_incorrect)."""
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        pass
    core = "".join(ch for ch in data if ch.isalnum() or ch in "+/")
    core = core[: len(core) - len(core) % 4] if len(core) % 4 == 1 else core
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4))
    except (binascii.Error, ValueError):
        return b""


def _clean_body(r: Any) -> Any:
    """A request whose response body is not valid base64 gets it re-encoded from the lenient decode
    (the judge decodes bodies strictly)."""
    resp = r.response
    if resp is None or (type(resp) is LazyResponse and "body_b64" not in resp.__dict__):
        return r  # a text body's base64, not made yet, will be made from its bytes: strict
    if not resp.body_b64 or _strict_b64(resp.body_b64):
        return r
    fixed = base64.b64encode(lenient_b64decode(r.response.body_b64)).decode()
    return replace(r, response=replace(r.response, body_b64=fixed))


_warm_lock = threading.Lock()
_warmed = False


def warm() -> None:
    """Build the probe's lazily cached databases (blockpage fingerprints, interception roots) once.

    Loader threads (Dask's threaded workers) would otherwise build them at the same time,
    and CPython 3.11's ``ast.literal_eval``, used while parsing the fingerprint CSV, is not
    safe to run concurrently ("SystemError: AST constructor recursion depth mismatch").
    """
    global _warmed
    if _warmed:
        return
    with _warm_lock:
        if not _warmed:
            match_dns(())
            inspect_chain(())
            fast_body_matching()  # the body automaton as a DFA: ~0.55x the scan time, ~56 MB (issue 14 part 7)
            _warmed = True


@lru_cache(maxsize=4096)
def inspect_cached(chain: tuple[str, ...]) -> Any:
    """:func:`probe.mitm.inspect_chain` memoised by chain (the same chains recur across measurements)."""
    warm()
    return inspect_chain(list(chain))


def _endpoint(t: TCPConnect, handshakes: list[Any], domain: str, scheme: str, port: int, src: Any) -> EndpointObservation:
    """One probe endpoint: its TCP connect and, where one was made, its TLS handshake with the
    input's name (https inputs on their port; http inputs on 443, as v0.5 validates addresses)."""
    main = t.port == port
    want_tls = t.failure is None and ((scheme == "https" and main) or (scheme == "http" and t.port == 443))
    tls = None
    if want_tls:
        tls = next((h for h in handshakes if (h.ip, h.port) == (t.ip, t.port)
                    and (h.server_name is None or h.server_name == domain)), None)
    mitm = inspect_cached(tuple(tls.peer_certificates)) if tls is not None and tls.peer_certificates else None
    return _EndpointObservation(ip=t.ip, port=t.port, source=src, tcp=t, tls=tls, mitm=mitm, tls_check=not main)


def recompute(measurement: dict[str, Any]) -> Recomputed | None:
    """Our verdict on one OONI web_connectivity measurement, or None where the data does not allow one.

    Args:
        measurement: the measurement as parsed from JSON (df-000 with web_connectivity
            test_keys, any version 0.0.1 … 0.5.x).

    Returns:
        A :class:`Recomputed` from :func:`probe.verdict.judge` (the probe's rules, with
        OONI's bogon table), corrected for each version's quirks (module docstring); None
        when :func:`observations` cannot build the input (no control, control failure, no
        test_keys, not a URL), or for an https input without ``tls_handshakes`` whose
        verdict would need them and no quirk rule decides. Never raises on odd data (a
        measurement the parsers cannot read is None as well).
    """
    if not _warmed:
        warm()
    try:
        obs, notes = _observe(measurement)
        v = judge(obs, bogons=_BOGONS, details=False)  # only blocking, accessible, rule, reason are kept
    except NotJudgeable:
        return None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):  # malformed test_keys: use OONI's own
        return None
    tk = measurement.get("test_keys") or {}
    rec = _Recomputed(blocking=v.blocking, accessible=v.accessible, rule=v.rule, reason=v.reason)
    if notes.paired and rec.reason:
        rec = replace(rec, reason=f"{rec.reason} (0.4.x handshakes paired with their connects by {notes.paired})")
    if notes.n_cancelled and rec.reason:
        rec = replace(rec, reason=f"{rec.reason} ({notes.n_cancelled} parallel request(s) cancelled after one "
                                  "succeeded: not failures)")
    if v.rule in DNS_STEP_RULES:
        return rec
    failure = _http_failure(tk)
    if failure is not None and any(mark in failure for mark in _PROBE_ERROR_MARKS):
        return Recomputed(blocking=None, accessible=None, rule=Rule.HTTP_PROBE_ERROR,
                          reason=f"the HTTP failure is the probe's own exception ({failure[:120]}), not a network "
                                 "event: nothing to judge")
    if v.rule == Rule.HTTP_FAILURE and _cancelled(tk.get("http_experiment_failure")) and notes.n_cancelled == 0:
        return Recomputed(blocking=None, accessible=None, rule=Rule.HTTP_CANCELLED,
                          reason="every HTTP request was cancelled by the probe itself (its deadline), none "
                                 "failed on the network: nothing to judge")
    weak = _unknown_authority_in_window(measurement, obs.target.domain, failure) if failure is not None else None
    if weak is not None:
        return weak
    if obs.target.scheme == "https" and "tls_handshakes" not in tk:
        return None
    if notes.undecodable and v.rule in (Rule.HTTP_DIFF, Rule.HTTP_MATCH):
        return _match_keys(tk) or rec
    if v.rule == Rule.TLS_NO_CONTROL:
        both = _cert_both_fail(tk, obs)
        if both is not None:
            return both
    return rec


def _http_failure(tk: dict[str, Any]) -> str | None:
    """The fetch's failure: ``http_experiment_failure``, else the first request's (cancellations skipped)."""
    f = tk.get("http_experiment_failure")
    if isinstance(f, str) and f and not _cancelled(f):
        return f
    for r in tk.get("requests") or ():
        if isinstance(r, dict) and isinstance(r.get("failure"), str) and not _cancelled(r["failure"]):
            return str(r["failure"])
    return None


@lru_cache(maxsize=8)
def _window_hosts(name: str) -> frozenset[str]:
    from probe.targets import shipped_list

    out = set()
    for line in shipped_list(name).read_text(encoding="utf-8").splitlines():
        host = line.split("#", 1)[0].strip().lower().rstrip(".")
        if host:
            out.add(host)
    return frozenset(out)


def _day(m: dict[str, Any]) -> date | None:
    t = m.get("measurement_start_time")
    if not isinstance(t, str):
        return None
    try:
        return datetime.strptime(t[:10], "%Y-%m-%d").date()
    except ValueError:
        return None


def interception_window(host: str, day: date | None) -> InterceptionWindow | None:
    """The known interception window in which ``host`` (exact name) was a target on ``day``, or None."""
    if day is None:
        return None
    for w in INTERCEPTION_WINDOWS:
        if w.start <= day <= w.end and host.lower() in _window_hosts(w.hosts_file):
            return w
    return None


def _unknown_authority_in_window(m: dict[str, Any], host: str, failure: str | None) -> Recomputed | None:
    """Rule ``tls_mitm.unknown_authority_window`` (web_connectivity < 0.4, no certificates recorded)."""
    if failure is None or not any(f in failure for f in _UNKNOWN_AUTHORITY):
        return None
    if measured_version(m) >= (0, 4) or str(m.get("probe_cc") or "").upper() != "KZ":
        return None
    tk = m.get("test_keys") or {}
    ctl = (tk.get("control") or {}).get("http_request") if isinstance(tk.get("control"), dict) else None
    if not isinstance(ctl, dict) or ctl.get("failure") or not isinstance(ctl.get("status_code"), int) \
            or ctl["status_code"] <= 0:
        return None  # the control must have fetched the page: else a broken certificate looks the same
    w = interception_window(host, _day(m))
    if w is None:
        return None
    return Recomputed(blocking="tls_mitm", accessible=False, rule=Rule.TLS_MITM_UNKNOWN_AUTHORITY_WINDOW,
                      reason=f"the certificate was refused ({failure[:80]}) for {host}, a known interception target, "
                             f"on {_day(m)} inside the interception window {w.start} - {w.end} ({w.source}); the "
                             "control fetched the page. Weaker than a matched root: this version records no "
                             "certificate")


def _match_keys(tk: dict[str, Any]) -> Recomputed | None:
    """OONI's own HTTP comparison (ts-017: status code match and one of body length, headers, title)."""
    sc = tk.get("status_code_match")
    others = [tk.get(k) for k in ("body_length_match", "headers_match", "title_match")]
    if sc is None and all(o is None for o in others):
        return None
    keys = ", ".join(f"{k}={tk.get(k)}" for k in ("status_code_match", "body_length_match", "headers_match",
                                                  "title_match"))
    if sc is True and any(o is True for o in others):
        return Recomputed(blocking=False, accessible=True, rule=Rule.HTTP_OONI_MATCH_KEYS,
                          reason=f"the response body is not valid base64, so OONI's own match keys decide ({keys}): "
                                 "the page matches the control's")
    return Recomputed(blocking="http-diff", accessible=False, rule=Rule.HTTP_OONI_MATCH_KEYS,
                      reason=f"the response body is not valid base64, so OONI's own match keys decide ({keys}): "
                             "the page differs from the control's")


def _cert_both_fail(tk: dict[str, Any], obs: WebObservations) -> Recomputed | None:
    """Rule ``tls.cert_both_fail``: a certificate failure, no control TLS step, and the control's fetch failed."""
    fails = [e.tls.failure for e in obs.endpoints if e.tls is not None and e.tls.failure]
    if not fails or not all(any(c in f for c in _CERT_FAILURES) for f in fails):
        return None
    http = obs.control.http if obs.control is not None else None
    if http is None or not http.failure:
        return None
    return Recomputed(blocking=False, accessible=False, rule=Rule.TLS_CERT_BOTH_FAIL,
                      reason=f"the certificate was refused ({fails[0]}) and the control's own fetch of the URL failed "
                             f"too ({http.failure}): the site fails from everywhere (down), not censorship")


# --------------------------------------------------------------------------- agreement


#: Our rules whose verdict is known to depart from OONI's own, and why OONI's verdict is the wrong
#: one there (shown beside each disagreement; tests/analysis/test_ooni_versions.py holds a real case
#: of each where one exists).
OONI_KNOWN_ERRORS: dict[str, str] = {  # keys: probe.vocab.Rule (a StrEnum)
    Rule.HTTP_BLOCKPAGE: "the page matches a known blockpage fingerprint; OONI Probe's own verdict does not "
                      "fingerprint pages (OONI's fastpath does, later)",
    Rule.DNS_BOTH_FAIL: "the name does not resolve from the control either: the site is gone (down); OONI < 0.5 "
                     "calls an NXDOMAIN beside a control with only a CNAME 'dns'",
    Rule.HTTP_BOTH_FAIL: "the control's fetch failed too: the site is down; OONI 0.0.1 (MK) can say accessible "
                      "when both fail",
    Rule.HTTP_PROBE_ERROR: "OONI's http-failure rests on the probe's own exception text, not on a network event",
    Rule.TLS_CERT_BOTH_FAIL: "the control's fetch failed too; OONI 0.4 has no control TLS step and gives null",
    Rule.TLS_MITM_KNOWN_ROOT: "the chain ends in a known interception root; OONI's verdict does not inspect roots "
                           "(a root the user installed makes the handshake succeed)",
    Rule.TLS_MITM_UNKNOWN_AUTHORITY_WINDOW: "an unknown authority on a known interception target in a known window; "
                                         "OONI < 0.4 calls it http-failure or accessible=false",
    Rule.HTTPS_VERIFIED: "a fetch over verified TLS succeeded; OONI 0.5's classic analysis gives null for IP-address "
                      "inputs and for a success among cancelled parallel requests",
    Rule.TCP_IP_BOTH_FAIL: "the control cannot connect either: down; OONI 0.5 gives null",
}


def known_ooni_error(rule: str | None) -> str:
    """Why OONI's verdict is known to be the wrong one where ours, decided by ``rule``, differs; "" if not known."""
    return OONI_KNOWN_ERRORS.get(rule or "", "")


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """How our recomputed verdicts compare with OONI's own.

    Attributes:
        n_ooni: OONI web_connectivity rows in the frame (the app/circumvention tests keep
            OONI's own verdict and are not compared).
        n_compared: OONI rows we could judge (``verdict_source == "recomputed"``).
        n_agree: compared rows with the same outcome (blocked / accessible / down /
            inconclusive, see ``outcome`` in :mod:`analysis.load`).
        n_same_type: compared rows with the very same ``blocking`` value (NA = NA).
        rate: ``n_agree / n_compared``; None when nothing was compared.
        type_rate: ``n_same_type / n_compared``; None when nothing was compared.
        pairs: counts of (ooni_blocking, blocking) pairs over the compared rows
            (columns ooni_blocking, blocking, n; "inconclusive" for NA).
        disagreements: the compared rows whose outcome or blocking type differs:
            measurement_uid, input, file, line, ooni_blocking, blocking, kind
            ("outcome" or "type"), rule, reason (ours: why we decided otherwise), known_ooni_error
            (why OONI's verdict is known to be wrong there, :data:`OONI_KNOWN_ERRORS`; "" = not known).
        n_known_ooni_errors: disagreements where OONI's verdict is known to be the wrong one.
    """

    n_ooni: int
    n_compared: int
    n_agree: int
    n_same_type: int
    rate: float | None
    type_rate: float | None
    pairs: pd.DataFrame
    disagreements: pd.DataFrame
    n_known_ooni_errors: int = 0


def _ooni_outcome(blocking: pd.Series, accessible: pd.Series) -> pd.Series:
    from analysis.columns import as_text

    b = as_text(blocking)
    out = pd.Series("inconclusive", index=blocking.index, dtype="string")
    out[b.notna() & (b != "false")] = "blocked"
    out[(b == "false") & (accessible == True)] = "accessible"
    out[(b == "false") & (accessible == False)] = "down"
    return out


def agreement(frame: pd.DataFrame) -> Agreement:
    """Compare our verdicts with OONI's on the OONI rows of ``frame`` (the :mod:`analysis.load` frame).

    Only rows we judged ourselves (``verdict_source == "recomputed"``) are compared;
    where we used OONI's own verdict there is nothing to compare. Rows are chosen by masks and only
    the columns compared are taken (a million-row frame is not copied whole three times), the text
    of categoricals made from their codes (:func:`analysis.columns.as_text`), the known OONI errors
    looked up once per rule.
    """
    from analysis.columns import as_text, value_mask

    ooni_m = value_mask(frame["source"], "ooni")
    if "test_name" in frame.columns:  # the app/circumvention tests keep OONI's verdict: nothing to compare
        tn = frame["test_name"]
        ooni_m &= value_mask(tn, "web_connectivity") | tn.isna().to_numpy(dtype=bool)
    comp_m = ooni_m & value_mask(frame["verdict_source"], "recomputed")
    comp = frame.loc[comp_m, ["outcome", "blocking", "ooni_blocking", "ooni_accessible"]]
    ours_o = as_text(comp["outcome"])
    theirs_o = _ooni_outcome(comp["ooni_blocking"], comp["ooni_accessible"])
    ours_b = as_text(comp["blocking"]).fillna("inconclusive")
    theirs_b = as_text(comp["ooni_blocking"]).fillna("inconclusive")
    same_outcome = (ours_o == theirs_o).fillna(False).astype(bool)
    same_type = (ours_b == theirs_b).fillna(False).astype(bool)
    n = len(comp)
    pairs = (pd.DataFrame({"ooni_blocking": theirs_b, "blocking": ours_b})
             .value_counts().rename("n").reset_index())
    bad_m = ~(same_outcome & same_type).to_numpy(dtype=bool)
    bad = frame.iloc[np.flatnonzero(comp_m)[bad_m]][["measurement_uid", "input", "file", "line", "rule", "reason"]]
    rule = bad["rule"]
    rules = rule.astype("category")  # known_ooni_error once per rule, not once per row (NA: the last one)
    known = np.array([known_ooni_error(r if isinstance(r, str) else None) for r in rules.cat.categories]
                     + [known_ooni_error(None)], dtype=object)[rules.cat.codes.to_numpy()]
    dis = pd.DataFrame({
        "measurement_uid": bad["measurement_uid"],
        "input": bad["input"],
        "file": as_text(bad["file"]),
        "line": bad["line"],
        "ooni_blocking": theirs_b[bad_m],
        "blocking": ours_b[bad_m],
        "kind": pd.Series(np.where(same_outcome.to_numpy()[bad_m], "type", "outcome"), index=bad.index,
                          dtype="string"),
        "rule": rule,
        "reason": bad["reason"],
        "known_ooni_error": pd.Series(known, index=bad.index, dtype="string"),
    }).reset_index(drop=True)
    return Agreement(n_ooni=int(ooni_m.sum()), n_compared=n, n_agree=int(same_outcome.sum()),
                     n_same_type=int(same_type.sum()),
                     rate=float(same_outcome.mean()) if n else None, type_rate=float(same_type.mean()) if n else None,
                     pairs=pairs, disagreements=dis, n_known_ooni_errors=_n_known(dis))


def _n_known(dis: pd.DataFrame) -> int:
    return int((dis["known_ooni_error"].fillna("").str.len() > 0).sum()) if len(dis) else 0
