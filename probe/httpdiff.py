"""ts-017's five HTTP match keys: the probe's final response against the control's.

``body_length_match``, ``body_proportion``, ``status_code_match``, ``headers_match`` and
``title_match`` of a web_connectivity record's ``test_keys``, computed as OONI computes them
(ooni/spec ts-017 "Control comparison"; the algorithm of ooni/probe-cli
``webconnectivitylte/analysishttpdiff.go``, itself v0.4's and Measurement Kit's):

* ``body_proportion``: min/max of the two body lengths; ``body_length_match``: that
  proportion > 0.7. Null when the control's length is unknown (≤ 0), the probe's body is
  empty, or either body was truncated (its length is not the page's).
* ``status_code_match``: the status codes are equal. Null when either is unknown, and when
  they differ while the control's is not 2xx (the control may have failed: ooni/probe#2287).
* ``headers_match``: the two sets of header names (lowercase) are equal, or they share at
  least one name outside OONI's list of common headers. Null when either side has none.
* ``title_match``: every word of 5+ bytes of either ``<title>`` (lowercase, split on spaces)
  is in both. Null when either title is empty, the probe's body was truncated, or a status
  code is unknown.

These keys are OONI's record fields only: kzprobe's own verdict compares responses with
its own rule (:func:`probe.verdict._http_match`, documented there).
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.control_result import ControlHTTP
from probe.measure.http import HTTPResponse

#: ts-017's threshold: bodies "match" above this min/max length proportion.
BODY_PROPORTION_FACTOR = 0.7
#: Title words shorter than this many bytes are ignored (ts-017: "longer than 5 characters").
MIN_TITLE_WORD_BYTES = 5
#: OONI's common headers, ignored when looking for a shared uncommon one (webconnectivitylte
#: ``analysishttpdiff.go`` ``commonHeaders``, exactly).
OONI_COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires",
    "x-powered-by", "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options", "etag",
    "x-content-type-options", "age", "via", "p3p", "x-xss-protection", "content-language", "cf-ray",
    "strict-transport-security", "link", "x-varnish",
})


@dataclass(frozen=True, kw_only=True)
class MatchKeys:
    """The five keys; None = not computed (OONI's null)."""

    body_length_match: bool | None = None
    body_proportion: float | None = None
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None


def match_keys(resp: HTTPResponse | None, ctl: ControlHTTP | None) -> MatchKeys:
    """The match keys of the probe's final response ``resp`` against the control's ``ctl``.

    All None when either side has no response (ts-017: "null if we failed to connect").
    """
    if resp is None or ctl is None or ctl.failure is not None or ctl.status_code is None:
        return MatchKeys()
    proportion = _body_proportion(resp, ctl)
    return MatchKeys(
        body_length_match=None if proportion is None else proportion > BODY_PROPORTION_FACTOR,
        body_proportion=None if proportion is None else round(proportion, 6),
        status_code_match=_status_code_match(resp.status_code, ctl.status_code),
        headers_match=_headers_match([k for k, _ in resp.headers], [k for k, _ in ctl.headers]),
        title_match=_title_match(resp, ctl),
    )


def _body_proportion(resp: HTTPResponse, ctl: ControlHTTP) -> float | None:
    control = ctl.body_length or 0
    if control <= 0 or ctl.body_truncated or resp.body_truncated or resp.body_length <= 0:
        return None
    a, b = resp.body_length, control
    return min(a, b) / max(a, b)


def _status_code_match(probe: int, control: int) -> bool | None:
    if probe <= 0 or control <= 0:
        return None
    good = probe == control
    if not good and control // 100 != 2:
        return None  # the control may have failed: no comparison (ooni/probe#2287)
    return good


def _headers_match(probe: list[str], control: list[str]) -> bool | None:
    if not probe or not control:
        return None
    ours = {k.lower() for k in probe}
    theirs = {k.lower() for k in control}
    if ours == theirs:
        return True
    return bool((ours & theirs) - OONI_COMMON_HEADERS)


def _words(title: str) -> set[str]:
    return {w.lower() for w in title.split(" ") if len(w.encode("utf-8", "surrogatepass")) >= MIN_TITLE_WORD_BYTES}


def _title_match(resp: HTTPResponse, ctl: ControlHTTP) -> bool | None:
    if resp.status_code <= 0 or resp.body_truncated or (ctl.status_code or 0) <= 0:
        return None
    if not resp.title or not ctl.title:
        return None
    mine, theirs = _words(resp.title), _words(ctl.title)
    return mine == theirs
