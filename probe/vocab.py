"""The closed vocabularies of kzprobe, defined once: probe, analysis and lab import them.

* **Blocking values** (:data:`Blocking`): OONI web_connectivity's ``test_keys.blocking``
  (ts-017: ``False``, ``"dns"``, ``"tcp_ip"``, ``"http-failure"``, ``"http-diff"``;
  ``None`` = inconclusive) made finer: ``"tls"`` (a TLS handshake failure the control does not
  see), ``"tls_mitm"`` (TLS interception) and ``"throttling"`` (reachable, slowed down on
  purpose; ``accessible`` True). :data:`BLOCKING_TYPES` lists the blocking types (every value
  but ``False``/``None``); :data:`BLOCKING_MEANINGS` says what each means (the report's
  glossary); :data:`BLOCKING_VALUES` is the frame's vocabulary (``False`` stored as "false").
* **OONI's vocabulary** (:data:`OONI_BLOCKING`, :func:`ooni_blocking`): what each of our values
  is in OONI's words, for the records' ``blocking``/``accessible`` keys (ours then go in ``x_``
  keys). OONI's fastpath (ooni/backend ``fastpath/core.py``, ``score_web_connectivity``) accepts
  only ``"dns"``, ``"tcp_ip"``, ``"http-diff"``, ``"http-failure"`` as a blocking type.
* **Outcomes** (:data:`Outcome`): accessible / blocked / down / inconclusive, and
  :func:`outcome`; the lab's and the run summary's verdict words (:func:`verdict_word`).
* **Rule ids** (:class:`Rule`): every ``Verdict.rule`` a record can carry. The judge's rules
  (their order, predicates and sources) are the table in :mod:`probe.verdict`; the runner's
  (``deadline``, ``internal_error``) and the analysis' (``ooni``) are listed here with theirs.
* **Control failures**: :func:`control_failure` builds ``"control_failure: <why>"`` and
  :func:`parse_control_failure` reads one back (OONI's ``control_failure`` key holds such a
  string when the test helper failed).
* **Failure strings**: OONI's (df-007), owned by :mod:`probe.failures` and re-exported here
  (:data:`FAILURE_STRINGS`, :mod:`failures`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, get_args

from probe import failures
from probe.failures import KNOWN as FAILURE_STRINGS
from probe.failures import Operation

__all__ = [
    "BLOCKING_MEANINGS", "BLOCKING_TYPES", "BLOCKING_VALUES", "Blocking", "BlockingType", "CONTROL_FAILURE_PREFIX",
    "DNSConsistency", "DNS_CONSISTENCY_VALUES", "FAILURE_STRINGS", "OONIBlockingType", "OONIDNSConsistency",
    "OONI_BLOCKING", "OONI_BLOCKING_TYPES", "OONI_DNS_CONSISTENCY", "OUTCOMES", "OUTCOME_MEANINGS", "Operation",
    "Outcome", "RULES_OUTSIDE_JUDGE", "Rule", "VERDICT_WORDS", "VerdictWord", "blocking_from_str", "blocking_str",
    "control_failure", "failures", "is_control_failure", "ooni_blocking", "ooni_dns_consistency", "outcome",
    "parse_control_failure",
    "verdict_word",
]

# --------------------------------------------------------------------------- blocking

#: A blocking type: OONI's four (ts-017) plus kzprobe's finer ``tls``, ``tls_mitm``, ``throttling``.
BlockingType = Literal["dns", "tcp_ip", "tls", "tls_mitm", "http-failure", "http-diff", "throttling"]
#: ``test_keys.blocking`` as kzprobe decides it: False (not blocked), a type, None (inconclusive).
Blocking = Literal[False] | BlockingType | None

#: Every blocking type, in the order reports list them.
BLOCKING_TYPES: Final[tuple[str, ...]] = get_args(BlockingType)
#: The frame's ``blocking`` vocabulary: ``False`` stored as ``"false"``, ``None`` as NA.
BLOCKING_VALUES: Final[tuple[str, ...]] = ("false", *BLOCKING_TYPES)

#: What each blocking type means (the report's glossary; OONI's words plus ours).
BLOCKING_MEANINGS: Final[dict[str, str]] = {
    "dns": "The DNS answer was inconsistent with the control (NXDOMAIN, a blockpage or bogon address).",
    "tcp_ip": "TCP connections to the site's addresses failed where the control's succeeded.",
    "tls": "The TLS handshake with the site's SNI was reset or timed out; the control (or a benign SNI) worked.",
    "tls_mitm": ("TLS interception: the chain contained a known interception root (e.g. Kazakhstan's 'Qaznet "
                 "Trust Network' or 'Security Certificate', matched by SPKI hash or name), or a certificate that "
                 "does not verify here while the control gets a valid one from the same address."),
    "http-failure": "The HTTP exchange failed where the control's succeeded.",
    "http-diff": "The page differed from the control's (a blockpage fingerprint, a different title or size).",
    "throttling": "The site loaded, but much slower than a baseline over the same path.",
}

#: OONI's blocking types: the only ones its fastpath scores (ooni/backend fastpath
#: ``score_web_connectivity``; anything else is "Unsupported blocking type", not an anomaly).
OONIBlockingType = Literal["dns", "tcp_ip", "http-diff", "http-failure"]
OONI_BLOCKING_TYPES: Final[tuple[str, ...]] = get_args(OONIBlockingType)

#: Each of our blocking types as OONI's web_connectivity would report it: (blocking, accessible).
#: ``tls`` and ``tls_mitm``: OONI has no TLS type — a TLS handshake failure the control does not
#: see sets ``analysisFlagTLSBlocking``, reported as ``"http-failure"`` (probe-cli
#: webconnectivitylte ``analysiscore.go``; webconnectivityqa ``tlsBlockingConnectionReset``
#: expects blocking "http-failure", accessible false; v0.4 ``summary.go`` maps ssl_* and
#: connection_reset request failures to http-failure too). An intercepted chain is a failed
#: certificate verification (ssl_unknown_authority) where the control's verifies: the same.
#: ``throttling``: web_connectivity has no throughput test — a page that arrived is not blocked,
#: accessible, for OONI; one cut mid-body by the timeout is an HTTP failure (webconnectivityqa
#: ``throttlingWithHTTPS`` expects blocking "http-failure", accessible false): pass the fetch's
#: failure to :func:`ooni_blocking`. Our finding stays in an ``x_`` key.
OONI_BLOCKING: Final[dict[str, tuple[OONIBlockingType | Literal[False], bool]]] = {
    "dns": ("dns", False),
    "tcp_ip": ("tcp_ip", False),
    "tls": ("http-failure", False),
    "tls_mitm": ("http-failure", False),
    "http-failure": ("http-failure", False),
    "http-diff": ("http-diff", False),
    "throttling": (False, True),
}


def ooni_blocking(blocking: Blocking | str, accessible: bool | None, *,
                  http_failure: str | None = None) -> tuple[OONIBlockingType | bool | None, bool | None]:
    """Our ``(blocking, accessible)`` in OONI's vocabulary, for a record's ``blocking``/``accessible``.

    ``False`` and ``None`` (inconclusive) are OONI's too and pass unchanged (with ``accessible``).
    ``http_failure``: the fetch's failure (``http_experiment_failure``); a throttled fetch that
    failed (timed out mid-body) is OONI's ``("http-failure", False)``.

    Raises:
        ValueError: ``blocking`` is not a kzprobe blocking value (a bug: verdicts come from the table).
    """
    if blocking is None or blocking is False:
        return blocking, accessible
    if blocking not in OONI_BLOCKING:
        raise ValueError(f"not a kzprobe blocking value: {blocking!r} (expected one of {', '.join(BLOCKING_TYPES)})")
    if blocking == "throttling" and http_failure:
        return "http-failure", False
    return OONI_BLOCKING[blocking]


#: OONI's ``dns_consistency`` (ts-017: "consistent" | "reverse_match" | "inconsistent" | null;
#: "reverse_match" is historical, no current OONI probe writes it, nor do we).
OONIDNSConsistency = Literal["consistent", "reverse_match", "inconsistent"]
#: Each of our :data:`DNSConsistency` values (a record's ``x_dns_consistency``) in OONI's words
#: (ts-017 "dns_consistency"; webconnectivitylte
#: ``analysisClassicDNSConsistency``): an expected failure (``both_fail``: the control cannot
#: resolve the name either) is consistent; an unexpected failure (``probe_failure``), a bogon
#: only the probe got and an injected reply are inconsistent; ``unknown`` (not determined) is null.
OONI_DNS_CONSISTENCY: Final[dict[str, OONIDNSConsistency | None]] = {
    "consistent": "consistent",
    "both_fail": "consistent",
    "inconsistent": "inconsistent",
    "bogon": "inconsistent",
    "injected": "inconsistent",
    "probe_failure": "inconsistent",
    "unknown": None,
}


def ooni_dns_consistency(value: str | None) -> OONIDNSConsistency | None:
    """Our ``dns_consistency`` in OONI's vocabulary (None for ``unknown``, None, or a value we do not know)."""
    return OONI_DNS_CONSISTENCY.get(value) if isinstance(value, str) else None


def blocking_str(blocking: object) -> str | None:
    """A record's ``blocking`` as the frame stores it: "false", a known type, else None.

    An unknown string is None here: callers that must not lose it use :func:`outcome`,
    which calls any non-empty string but "false" blocked.
    """
    if blocking is False:
        return "false"
    if isinstance(blocking, str) and blocking in BLOCKING_VALUES:
        return blocking
    return None


def blocking_from_str(s: str | None) -> Blocking:
    """The inverse of :func:`blocking_str`: "false" → False, a type → itself, anything else → None."""
    if s == "false":
        return False
    if s in BLOCKING_TYPES:
        return s  # type: ignore[return-value]
    return None


#: How the probe's DNS compared with the control's (``Verdict.dns_consistency``): OONI's
#: ``consistent``/``inconsistent`` (ts-017) made finer; a record writes OONI's word in
#: ``dns_consistency`` and ours in an ``x_`` key.
DNSConsistency = Literal["consistent", "inconsistent", "bogon", "injected", "probe_failure", "both_fail", "unknown"]
DNS_CONSISTENCY_VALUES: Final[tuple[str, ...]] = get_args(DNSConsistency)


# --------------------------------------------------------------------------- outcomes

#: One measurement's outcome, the analysis' unit of counting.
Outcome = Literal["accessible", "blocked", "down", "inconclusive"]
OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)

#: What each outcome means (the report's glossary).
OUTCOME_MEANINGS: Final[dict[str, str]] = {
    "blocked": (f"A blocking verdict ({', '.join(BLOCKING_TYPES)}) given against a control: the same "
                "observation from outside the censored network differed."),
    "accessible": "The site was reached and matched the control.",
    "down": "The site failed from the control too: it was down, not blocked.",
    "inconclusive": ("No verdict: the control failed, the vantage point was offline, or the evidence did not "
                     "decide. Never counted as blocked nor as accessible."),
}


def outcome(blocking: object, accessible: bool | None) -> Outcome:
    """The outcome of a verdict: ``blocking`` as judged (False/str/None) or as stored ("false").

    Any blocking string but "false" is ``blocked`` — a type this version does not know
    included (a newer probe's): never silently inconclusive.
    """
    if blocking is None or blocking == "":
        return "inconclusive"
    if blocking is False or blocking == "false":
        if accessible is True:
            return "accessible"
        if accessible is False:
            return "down"
        return "inconclusive"
    if isinstance(blocking, str):
        return "blocked"
    return "inconclusive"


#: The verdict words of the lab's ``expect`` and the run summary's counts: "false" (not
#: blocked, accessible), a blocking type, "down" (not blocked, not accessible), "inconclusive".
VerdictWord = Literal["false", "dns", "tcp_ip", "tls", "tls_mitm", "http-failure", "http-diff", "throttling", "down",
                      "inconclusive"]
VERDICT_WORDS: Final[tuple[str, ...]] = get_args(VerdictWord)  # a test ties it to BLOCKING_TYPES


def verdict_word(blocking: object, accessible: bool | None) -> str:
    """A verdict as one of :data:`VERDICT_WORDS` (an unknown blocking string as itself)."""
    if blocking is None:
        return "inconclusive"
    if blocking is False:
        return "false" if accessible else "down"
    return str(blocking)


# --------------------------------------------------------------------------- rule ids


class Rule(StrEnum):
    """Every rule id a verdict (``Verdict.rule``, a record's ``x_rule``) can carry.

    The judge's rules — order, predicate, source — are the table
    :data:`probe.verdict.RULES` (docs/rules.md is generated from it); a test ties the two.
    """

    VANTAGE_OFFLINE = "vantage.offline"
    VANTAGE_INTERCEPTED = "vantage.intercepted"
    TLS_MITM_KNOWN_ROOT = "tls_mitm.known_root"
    HTTPS_VERIFIED_NO_CONTROL = "https.verified_no_control"
    CONTROL_DNS_FAILED = "control.dns_failed"
    DNS_BOTH_FAIL = "dns.both_fail"
    VANTAGE_RESOLVER_BROKEN = "vantage.resolver_broken"
    DNS_TRUNCATED_RETRY_FAILED = "dns.truncated_retry_failed"
    DNS_PROBE_FAILURE = "dns.probe_failure"
    DNS_BOGON = "dns.bogon"
    DNS_INJECTION = "dns.injection"
    DNS_INJECTOR_ONPATH = "dns.injector_onpath"
    DNS_BLOCKPAGE_IP = "dns.blockpage_ip"
    DNS_SITE_OWN_ANSWER = "dns.site_own_answer"
    DNS_GHOST = "dns.ghost"
    DNS_RELAY = "dns.relay"
    VANTAGE_ADDRESS_FAMILY = "vantage.address_family"
    TRANSPORT_NO_ENDPOINT = "transport.no_endpoint"
    DNS_INCONSISTENT_THEN_FAILURE = "dns.inconsistent_then_failure"
    TLS_CONTROL_OK = "tls.control_ok"
    TLS_BOTH_FAIL = "tls.both_fail"
    TLS_SNI_DIFFERENTIAL = "tls.sni_differential"
    TLS_NO_CONTROL = "tls.no_control"
    TCP_IP_NO_CONTROL = "tcp_ip.no_control"
    TCP_IP_CONTROL_SILENT = "tcp_ip.control_silent"
    TCP_IP_CONTROL_OK = "tcp_ip.control_ok"
    TCP_IP_BOTH_FAIL = "tcp_ip.both_fail"
    TLS_VERIFY_NO_CONTROL = "tls.verify_no_control"
    TLS_UNKNOWN_ISSUER = "tls.unknown_issuer"
    DNS_INCONSISTENT_THEN_TLS_INVALID = "dns.inconsistent_then_tls_invalid"
    TLS_BOTH_INVALID = "tls.both_invalid"
    HTTP_NOT_ATTEMPTED = "http.not_attempted"
    HTTP_NO_CONTROL = "http.no_control"
    HTTP_REDIRECT_INTO_PRIVATE = "http.redirect_into_private"
    HTTP_SLOW_NO_BASELINE = "http.slow_no_baseline"
    HTTP_FAILURE = "http.failure"
    HTTP_REDIRECT_TARGET = "http.redirect_target"
    HTTP_REDIRECT_BROKEN_GENUINE = "http.redirect_broken_genuine"
    HTTP_CONTROL_UNTESTED = "http.control_untested"
    HTTP_BOTH_FAIL = "http.both_fail"
    DNS_BLOCKPAGE_HTTP = "dns.blockpage_http"
    HTTP_BLOCKPAGE = "http.blockpage"
    HTTP_SERVER_SIDE = "http.server_side"
    HTTP_FINAL_HOST_DIFFERS = "http.final_host_differs"
    HTTPS_SERVER_DIFFERS = "https.server_differs"
    HTTPS_VERIFIED = "https.verified"
    HTTP_MATCH = "http.match"
    DNS_INCONSISTENT_THEN_DIFF = "dns.inconsistent_then_diff"
    HTTP_DIFF = "http.diff"
    DNS_INCONSISTENT_NO_CONTROL = "dns.inconsistent_no_control"
    THROTTLING_SNI_RATIO = "throttling.sni_ratio"
    # --- outside the judge
    DEADLINE = "deadline"
    INTERNAL_ERROR = "internal_error"
    OONI = "ooni"
    # --- analysis.ooni: version quirks of OONI's web_connectivity (tests/analysis/test_ooni_versions.py)
    HTTP_PROBE_ERROR = "http.probe_error"
    HTTP_CANCELLED = "http.cancelled"
    HTTP_OONI_MATCH_KEYS = "http.ooni_match_keys"
    TLS_CERT_BOTH_FAIL = "tls.cert_both_fail"
    TLS_MITM_UNKNOWN_AUTHORITY_WINDOW = "tls_mitm.unknown_authority_window"


#: Rule ids no judge rule produces, with what produces them and why (docs/rules.md lists them too).
RULES_OUTSIDE_JUDGE: Final[dict[Rule, str]] = {
    Rule.DEADLINE: ("probe.runner: the measurement deadline (timeouts.measurement_s) expired; the record keeps "
                    "every step observed before it; inconclusive (\"no verdict without a control\": the "
                    "evidence is incomplete)."),
    Rule.INTERNAL_ERROR: ("probe.runner: a bug raised while measuring or judging one input; inconclusive, the "
                          "exception named in the reason, so one bad input never stops a run."),
    Rule.OONI: ("analysis.load: an OONI measurement whose verdict could not be recomputed "
                "(analysis.ooni.recompute gave None); OONI's own blocking/accessible are used."),
    Rule.HTTP_PROBE_ERROR: ("analysis.ooni: the OONI probe's HTTP failure is its own exception text (ooniprobe "
                            "2.x 'codec can't decode'), not a network event; inconclusive (fastpath fixture bug_351)."),
    Rule.HTTP_CANCELLED: ("analysis.ooni: every web_connectivity 0.5 request was cancelled by the probe itself and "
                          "none succeeded; inconclusive."),
    Rule.HTTP_OONI_MATCH_KEYS: ("analysis.ooni: an OONI response body that is not valid base64: OONI's own match "
                                "keys (ts-017) decide instead of our body comparison."),
    Rule.TLS_CERT_BOTH_FAIL: ("analysis.ooni: a certificate failure in web_connectivity 0.4 (no control TLS step) "
                              "where the control's own fetch failed too: down."),
    Rule.TLS_MITM_UNKNOWN_AUTHORITY_WINDOW: (
        "analysis.ooni: web_connectivity < 0.4 records no certificate; an unknown authority on a known "
        "interception target inside a known interception window (KZ-MITM-FACTS) is tls_mitm, weaker evidence "
        "than a matched root."),
}


# --------------------------------------------------------------------------- control failures

#: OONI's word for a failed control (test helper); our strings are ``"control_failure: <why>"``.
CONTROL_FAILURE_PREFIX: Final = "control_failure"


def control_failure(why: str) -> str:
    """``"control_failure: <why>"``: a control (DoH resolver, test helper) step that failed.

    ``why`` is a failure string (:mod:`probe.failures`) or a short sentence naming what failed.
    """
    why = why.strip()
    if not why:
        raise ValueError("control_failure needs a reason")
    return f"{CONTROL_FAILURE_PREFIX}: {why}"


def parse_control_failure(failure: str | None) -> str | None:
    """The ``<why>`` of a control failure string; None when ``failure`` is not one.

    ``"control_failure"`` alone (no reason) gives ``""``.
    """
    if not isinstance(failure, str) or not failure.startswith(CONTROL_FAILURE_PREFIX):
        return None
    rest = failure[len(CONTROL_FAILURE_PREFIX):]
    if not rest:
        return ""
    if not rest.startswith(":"):
        return None
    return rest[1:].strip()


def is_control_failure(failure: str | None) -> bool:
    """True when ``failure`` is a ``control_failure`` string (:func:`control_failure`)."""
    return parse_control_failure(failure) is not None
