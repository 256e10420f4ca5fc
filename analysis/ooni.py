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
from functools import lru_cache
from typing import Any

import pandas as pd

from probe.addresses import Bogons, format_endpoint, parse_endpoint, parse_ip
from probe.control import ControlEndpoint, ControlHTTP, ControlResult
from probe.fingerprints import match_dns, match_http
from probe.measure.dns import DNSAnswer, DNSQuery
from probe.measure.http import HTTPFetch
from probe.measure.tcp import TCPConnect
from probe.mitm import inspect_chain
from probe.nettests.web import EndpointObservation, WebObservations
from probe.records import (
    parse_query,
    parse_request,
    parse_tcp_connect,
    parse_tls_handshake,
)
from probe import verdict
from probe.targets import Target, TargetError, normalise_url
from probe.verdict import judge
from probe.vocab import Blocking

#: Rules decided at the DNS step (before any TCP/TLS/HTTP evidence is looked at): the only
#: ones kept for https inputs measured without ``tls_handshakes`` (see the module docstring).
DNS_STEP_RULES = verdict.DNS_STEP_RULES

#: Handshake failures that are really the TCP connect's.
_CONNECT_FAILURES = frozenset({"connection_refused", "host_unreachable", "network_unreachable"})

#: The bogon set OONI uses (probe.addresses' default); no documentation range is public here.
_BOGONS = Bogons()


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


class NotJudgeable(ValueError):
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
    out: dict[str, None] = {}
    for a in values or ():
        if isinstance(a, str) and parse_ip(a) is not None:
            out.setdefault(a, None)
    return tuple(out)


def _key(endpoint: str) -> tuple[str, int] | None:
    try:
        return parse_endpoint(endpoint)
    except ValueError:
        return None


def control_result(control: dict[str, Any]) -> ControlResult:
    """OONI's ``test_keys.control`` → a full :class:`ControlResult` (source "helper").

    ``status_code``/``body_length`` of -1 (OONI's "none") become None; a TCP entry with
    ``status`` false and no failure gets ``"unknown_failure: status=false"``.
    """
    dns = control.get("dns") if isinstance(control.get("dns"), dict) else {}
    addrs = _ips(dns.get("addrs"))
    dns_failure = dns.get("failure") or (None if addrs else "dns_no_answer")
    endpoints: dict[str, ControlEndpoint] = {}
    tcp = control.get("tcp_connect") if isinstance(control.get("tcp_connect"), dict) else {}
    tls = control.get("tls_handshake") if isinstance(control.get("tls_handshake"), dict) else {}
    for k in list(tcp) + [k for k in tls if k not in tcp]:
        ep = _key(k)
        if ep is None:
            continue
        t = tcp.get(k) if isinstance(tcp.get(k), dict) else {}
        tcp_failure = t.get("failure") or (None if t.get("status", True) else "unknown_failure: status=false")
        h = tls.get(k) if isinstance(tls.get(k), dict) else None
        tls_failure = None
        if h is not None:
            tls_failure = h.get("failure") or (None if h.get("status", True) else "unknown_failure: status=false")
        endpoints[format_endpoint(*ep)] = ControlEndpoint(ip=ep[0], port=ep[1], tcp_failure=tcp_failure,
                                                          tls_attempted=h is not None, tls_failure=tls_failure)
    http = None
    hr = control.get("http_request")
    if isinstance(hr, dict) and hr:
        failure = hr.get("failure")
        status = hr.get("status_code")
        length = hr.get("body_length")
        headers = hr.get("headers") if isinstance(hr.get("headers"), dict) else {}
        http = ControlHTTP(failure=failure,
                           status_code=status if isinstance(status, int) and status >= 0 and not failure else None,
                           headers=tuple((str(k), _text(v)) for k, v in headers.items()),
                           title=_text(hr.get("title")) or None,
                           body_length=length if isinstance(length, int) and length >= 0 else None)
    return ControlResult(source="helper", failure=None, dns_failure=dns_failure, dns_addresses=addrs,
                         endpoints=endpoints, http=http)


def observations(m: dict[str, Any]) -> WebObservations:
    """An OONI web_connectivity measurement → :class:`WebObservations` for :func:`probe.verdict.judge`.

    Raises:
        NotJudgeable: no test_keys, no control, a control failure, or an input that is
            not an http(s) URL (the message says which).
    """
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        raise NotJudgeable("no test_keys")
    control = tk.get("control")
    if not isinstance(control, dict) or not control:
        raise NotJudgeable("no control in the measurement")
    if tk.get("control_failure"):
        raise NotJudgeable(f"control failure ({tk['control_failure']})")
    url = m.get("input")
    try:
        norm, domain, scheme, port = normalise_url(url if isinstance(url, str) else "")
    except TargetError as exc:
        raise NotJudgeable(f"input is not an http(s) URL: {exc.reason}") from None
    target = Target(input=norm, domain=domain, scheme=scheme, port=port, original=str(url), list_name="ooni", line=0)

    queries = [parse_query(q) for q in tk.get("queries") or () if isinstance(q, dict) and q.get("engine") != "doh"]
    literal = parse_ip(domain)
    if literal is not None and not queries:  # an IP input resolves to itself (as our web test records it)
        queries = [DNSQuery(hostname=domain, query_type="ANY", engine="system", resolver_address="", t0=0.0, t=0.0,
                            failure=None, answers=(DNSAnswer(answer_type="A" if literal.version == 4 else "AAAA",
                                                             ipv4=domain if literal.version == 4 else None,
                                                             ipv6=domain if literal.version == 6 else None),))]
    full = control_result(control)
    if literal is not None and not full.dns_addresses:
        full = ControlResult(source="helper", failure=None, dns_addresses=(domain,), endpoints=full.endpoints,
                             http=full.http)
    dns_control = ControlResult(source="helper", failure=None, dns_failure=full.dns_failure,
                                dns_addresses=full.dns_addresses)

    probe_addrs: dict[str, None] = {}
    for q in queries:
        for a in q.all_reply_addresses():
            probe_addrs.setdefault(a, None)
    ctl_addrs = set(full.dns_addresses)

    def source(ip: str) -> str:
        if ip in probe_addrs:
            return "both" if ip in ctl_addrs else "probe"
        return "control" if ip in ctl_addrs else "probe"

    handshakes = [parse_tls_handshake(h) for h in tk.get("tls_handshakes") or () if isinstance(h, dict)]
    eps: dict[tuple[str, int], EndpointObservation] = {}
    for c in tk.get("tcp_connect") or ():
        if not isinstance(c, dict):
            continue
        t = parse_tcp_connect(c)
        if not t.ip or (t.ip, t.port) in eps:
            continue
        eps[(t.ip, t.port)] = _endpoint(t, handshakes, domain, scheme, port, source(t.ip))
    for h in handshakes:  # handshakes without a tcp_connect entry (v0.5: control's addresses, redirects)
        if not h.ip or (h.ip, h.port) in eps:
            continue
        t = TCPConnect(ip=h.ip, port=h.port, t0=h.t0, t=h.t, failure=h.failure if h.failure in _CONNECT_FAILURES else None)
        if not h.server_name or h.server_name == domain:
            eps[(h.ip, h.port)] = _endpoint(t, handshakes, domain, scheme, port, source(h.ip))
        elif h.peer_certificates:
            # another name (a redirect target): only its chain matters here, as interception evidence
            f = inspect_cached(tuple(h.peer_certificates))
            if f.mitm:
                eps[(h.ip, h.port)] = EndpointObservation(ip=h.ip, port=h.port, source="probe", tcp=t, tls=h, mitm=f,
                                                          tls_check=True)

    reqs = [_clean_body(parse_request(r)) for r in tk.get("requests") or () if isinstance(r, dict)]
    fetch = None
    if reqs or tk.get("http_experiment_failure"):
        fetch = HTTPFetch(requests=tuple(reversed(reqs)), failure=tk.get("http_experiment_failure"))
    http_bp: list[Any] = []
    for r in reqs:
        if r.response is not None and r.url.startswith("http://"):
            body = base64.b64decode(r.response.body_b64) if r.response.body_b64 else b""
            http_bp.extend(match_http(r.response.status_code, r.response.headers, body))
    return WebObservations(target=target, queries=tuple(queries), dns_control=dns_control, control=full,
                           endpoints=tuple(eps.values()), skipped=(), http=fetch,
                           dns_blockpages=tuple(match_dns(probe_addrs)), http_blockpages=tuple(dict.fromkeys(http_bp)))


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
    if r.response is None or not r.response.body_b64:
        return r
    try:
        base64.b64decode(r.response.body_b64, validate=True)
        return r
    except (binascii.Error, ValueError):
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
    return EndpointObservation(ip=t.ip, port=t.port, source=src, tcp=t, tls=tls, mitm=mitm, tls_check=not main)


def recompute(measurement: dict[str, Any]) -> Recomputed | None:
    """Our verdict on one OONI web_connectivity measurement, or None where the data does not allow one.

    Args:
        measurement: the measurement as parsed from JSON (df-000 with web_connectivity
            test_keys, any version 0.0.1 … 0.5.x).

    Returns:
        A :class:`Recomputed` from :func:`probe.verdict.judge` (the probe's rules, with
        OONI's bogon table); None when :func:`observations` cannot build the input
        (no control, control failure, no test_keys, not a URL), or for an https input
        without ``tls_handshakes`` whose verdict would need them. Never raises on odd
        data (a measurement the parsers cannot read is None as well).
    """
    warm()
    try:
        obs = observations(measurement)
        v = judge(obs, bogons=_BOGONS)
    except NotJudgeable:
        return None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):  # malformed test_keys: use OONI's own
        return None
    tk = measurement.get("test_keys") or {}
    if obs.target.scheme == "https" and "tls_handshakes" not in tk and v.rule not in DNS_STEP_RULES:
        return None
    return Recomputed(blocking=v.blocking, accessible=v.accessible, rule=v.rule, reason=v.reason)


# --------------------------------------------------------------------------- agreement


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """How our recomputed verdicts compare with OONI's own.

    Attributes:
        n_ooni: OONI rows in the frame.
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
            ("outcome" or "type"), rule, reason (ours: why we decided otherwise).
    """

    n_ooni: int
    n_compared: int
    n_agree: int
    n_same_type: int
    rate: float | None
    type_rate: float | None
    pairs: pd.DataFrame
    disagreements: pd.DataFrame


def _ooni_outcome(blocking: pd.Series, accessible: pd.Series) -> pd.Series:
    b = blocking.astype("string")
    out = pd.Series("inconclusive", index=blocking.index, dtype="string")
    out[b.notna() & (b != "false")] = "blocked"
    out[(b == "false") & (accessible == True)] = "accessible"
    out[(b == "false") & (accessible == False)] = "down"
    return out


def agreement(frame: pd.DataFrame) -> Agreement:
    """Compare our verdicts with OONI's on the OONI rows of ``frame`` (the :mod:`analysis.load` frame).

    Only rows we judged ourselves (``verdict_source == "recomputed"``) are compared;
    where we used OONI's own verdict there is nothing to compare.
    """
    ooni = frame[frame["source"] == "ooni"]
    comp = ooni[ooni["verdict_source"] == "recomputed"]
    ours_o = comp["outcome"].astype("string")
    theirs_o = _ooni_outcome(comp["ooni_blocking"], comp["ooni_accessible"])
    ours_b = comp["blocking"].astype("string").fillna("inconclusive")
    theirs_b = comp["ooni_blocking"].astype("string").fillna("inconclusive")
    same_outcome = (ours_o == theirs_o).fillna(False).astype(bool)
    same_type = (ours_b == theirs_b).fillna(False).astype(bool)
    n = len(comp)
    pairs = (pd.DataFrame({"ooni_blocking": theirs_b, "blocking": ours_b})
             .value_counts().rename("n").reset_index())
    bad = comp[~(same_outcome & same_type)]
    dis = pd.DataFrame({
        "measurement_uid": bad["measurement_uid"],
        "input": bad["input"],
        "file": bad["file"].astype("string"),
        "line": bad["line"],
        "ooni_blocking": theirs_b[bad.index],
        "blocking": ours_b[bad.index],
        "kind": pd.Series(["outcome" if not s else "type" for s in same_outcome[bad.index]], index=bad.index,
                          dtype="string"),
        "rule": bad["rule"],
        "reason": bad["reason"],
    }).reset_index(drop=True)
    return Agreement(n_ooni=len(ooni), n_compared=n, n_agree=int(same_outcome.sum()), n_same_type=int(same_type.sum()),
                     rate=float(same_outcome.mean()) if n else None, type_rate=float(same_type.mean()) if n else None,
                     pairs=pairs, disagreements=dis)
