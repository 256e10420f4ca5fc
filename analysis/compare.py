"""Measurements against the report's claims: one judged row per claim.

:func:`compare` takes the claims (:mod:`analysis.claims`) and the measurements frame
(:mod:`analysis.load`, one row per measurement) and returns, for every claim, a status,
the evidence and a confidence.

Which measurements count for a claim
------------------------------------
* **Targets**: a measurement's ``domain`` matches a target when it equals it or is a
  subdomain of it (``www.meduza.io`` matches ``meduza.io``; ``notmeduza.io`` does not);
  for a claim with ``hosts = "exact"`` (the interception claims, whose lists name hosts one
  by one) only the target itself and its ``www.`` name match.
  ``targets = ["*"]`` matches every measurement. Target lists are resolved by
  :func:`analysis.claims.claim_domains`.
* **Country**: only measurements whose ``probe_cc`` is the report's country
  (``country="KZ"``; None = any) are judged against the claims: a Russian or Slovak
  vantage point that cannot reach meduza.io says nothing about Kazakhstan. The others
  are counted (``result.attrs["n_other_country"]``, see :func:`other_countries`).
* **Period**: a measurement counts when its UTC day (``measurement_start_time``) lies in
  the claim's period (inclusive). Later measurements are the "since the report" figures
  (``since_status``, ``since_n``) and are never used against the claim; earlier ones are
  left out. A one-off claim (``one_off``: a drill, an election day, a rally, a block later lifted)
  has ``since_status`` "not_applicable": what came after the event cannot support or contradict it
  (its later measurements are still counted in ``since_n``). ``ignore_period=True`` uses every
  measurement (lab runs); ``as_of`` replaces
  every measurement's day with that date (a lab scenario that models one day).

Outcomes and shares
-------------------
A measurement's ``outcome`` is ``accessible``, ``blocked``, ``down`` (the site failed
from the control too) or ``inconclusive``. Only *conclusive* measurements
(accessible + blocked) enter a share: ``down`` and ``inconclusive`` are counted and
shown, never taken as either. What the share counts (``share_of``) depends on the claim:

==================  =====================================================  ==============
expect              counted measurements ``x``                             out of
==================  =====================================================  ==============
blocked,            ``outcome == "blocked"``                               conclusive
accessible,
intermittent
mitm, no_mitm       ``blocking == "tls_mitm"`` or a ``mitm_root`` present  conclusive
down                ``outcome == "down"`` (unreachable from the control    accessible +
                    too: a DDoS)                                           blocked + down
throttled           ``blocking == "throttling"``                           conclusive
outage              ``vantage_offline``, or the control failed as well as  all
                    the first step (DNS or TCP): the vantage point itself
                    was cut off — never a row whose vantage point's
                    control channel was intercepted (``control_intercepted``)
==================  =====================================================  ==============

A vantage point whose control channel's TLS is intercepted sits inside a middlebox'd
network (a sandbox, a corporate proxy): its failures describe that middlebox, not a
shutdown, so its rows are never outage evidence (they still count in the denominator).

``blocked_share`` is x / out-of and ``wilson_low``/``wilson_high`` its Wilson score
interval at 95 % (z = 1.96; Wilson 1927, "Probable inference, the law of succession,
and statistical inference", JASA 22:209; recommended for small n by Brown, Cai &
DasGupta 2001, "Interval estimation for a binomial proportion", Statistical Science
16:101). :func:`wilson_interval` computes it.

Patterns (thresholds :data:`NOISE` = 0.1, :data:`MIN_EACH` = 3)
---------------------------------------------------------------
From x of m (share p, interval [lo, hi]):

* ``"high"`` (consistently blocked / intercepted …): p ≥ 1 − NOISE (0.9);
* ``"low"`` (consistently not): p ≤ NOISE (0.1);
* ``"intermittent"``: 0.1 < p < 0.9 and either the Wilson interval lies strictly inside
  (0.1, 0.9), or both kinds of outcome were seen at least :data:`MIN_EACH` times —
  blocked in some and accessible in other measurements beyond noise;
* ``"mixed"``: 0.1 < p < 0.9 with too few measurements to tell intermittent blocking
  from noise (e.g. 3 blocked, 1 accessible).

Status
------
* ``not_measured``: no measurement of the claim's targets in its period;
* ``inconclusive``: measurements, but none conclusive (only ``down``/``inconclusive``;
  for outages: none at all), or the pattern does not decide;
* ``out_of_scope``: the claim is not testable (laws, arrests …).

Otherwise, by expectation:

* ``blocked``: high → supported; low → contradicted; intermittent/mixed → inconclusive
  (blocked only part of the time is not what "remained inaccessible" says).
* ``accessible``: low → supported; high → contradicted; intermittent/mixed → inconclusive.
* ``intermittent`` (blocked at least part of the time, beyond noise — the report's
  "intermittently or permanently unavailable", "had trouble accessing"): intermittent
  or high → supported; low → contradicted; mixed → inconclusive.
* ``mitm``, ``throttled``, ``down``: supported when x ≥ :data:`MIN_EVENT` (2) and p > NOISE, or
  the pattern is high/intermittent; contradicted when x = 0; else inconclusive. Interception
  resting on weaker evidence (``analysis.ooni.WEAK_MITM_RULES``: a refused certificate on a known
  target in a known window, no certificate recorded) counts, and the explanation says how much.
* ``no_mitm`` (interception ended): low → supported; x ≥ MIN_EVENT beyond noise → contradicted;
  else inconclusive. Ordinary blocking is not interception and never contradicts it.
* ``outage``: supported when x ≥ MIN_EVENT *and* the cut-off measurements come from at
  least :data:`MIN_OUTAGE_NETWORKS` (2) networks (``probe_asn``): one vantage point that
  is offline looks exactly like its own uplink failing (a sandbox, a dead router), so it
  is never evidence of a shutdown on its own ("a machine with no internet must never
  report blocked"). Otherwise inconclusive, never contradicted (outages are local and
  brief: a vantage point elsewhere or at another hour cannot rule them out).

``episodic`` claims (one city, a six-day drill, protests, "several times"): supported
when x ≥ MIN_EVENT whatever the share; otherwise inconclusive, never contradicted —
measurements that miss an episode say nothing against it.

Quantifiers over several targets: ``pooled`` judges all their measurements together;
``some`` judges each target alone and is supported when at least one target is,
contradicted when every judged target is; ``many`` needs at least :data:`MIN_MANY` (3)
supporting targets (one blocked site is "some", not "many") and is contradicted when none of
at least MIN_MANY judged targets supports it; ``most`` is supported when more than half of
the judged targets (supported or contradicted) are supported, else contradicted; ``each``
("both sites") is supported when every named target is, contradicted when any is, and
inconclusive while one is not measured. The counts, shares and interval stay pooled; the
explanation gives the per-target tally.

OONI's messaging-app and circumvention tests (``analysis.ooni_apps``) count only for claims that
name them (``ooni_tests``), each test as one target ("OONI telegram"), never through their
stand-in domain: a Tor bootstrap is not the torproject.org web site.

Each result also names the claim's targets in no Citizen Lab test list of 2021
(``untested_targets``: OONI Probe did not measure them in the report's period) and the claim
stating the same fact first (``same_fact_as``: the report counts such a fact once).

If the claim names ``blocking_types`` and blocked measurements show another type, the
explanation says so (the status is unchanged: blocking is blocking, the method differs).

Confidence of a supported/contradicted status (NA for the others), from the measurements
in the share's denominator: ``k`` independent
measurements = distinct (vantage_id, UTC day) pairs; w = wilson_high − wilson_low.
``high``: k ≥ 10 and w ≤ 0.2; ``medium``: k ≥ 3 and w ≤ 0.5; else ``low``.

Speed: the frame is grouped by domain once (a stable sort of domain codes); each claim
takes the rows of its matching domains by index, so a claim costs in proportion to its
own measurements; every column is turned into a NumPy array once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from analysis.claims import ANY_TARGET, Claim, claim_domains, domain_matches, untested_targets
from analysis.columns import isin_mask
from analysis.ooni import WEAK_MITM_RULES
from analysis.ooni_apps import APP_TESTS

__all__ = [
    "CONFIDENCES",
    "DEFAULT_COUNTRY",
    "MIN_EACH",
    "MIN_EVENT",
    "NOISE",
    "RESULT_COLUMNS",
    "NOT_APPLICABLE",
    "SINCE_STATUSES",
    "STATUSES",
    "Z95",
    "compare",
    "other_countries",
    "wilson_interval",
]

#: z for a two-sided 95 % interval.
Z95 = 1.96
#: A minority outcome at or below this share is noise (false positives/negatives).
NOISE = 0.1
#: Each of blocked and accessible seen at least this often → intermittent beyond noise.
MIN_EACH = 3
#: Distinct networks (probe_asn) whose vantage points must be cut off before an outage
#: claim is supported: one offline vantage point is indistinguishable from its own uplink failing.
MIN_OUTAGE_NETWORKS = 2

#: Targets that must each support a ``many`` claim ("many anonymizing tools", "148 tools"): one
#: blocked site is 'some', not 'many'.
MIN_MANY = 3

#: The country whose claims are judged (ISO 3166-1 alpha-2, as OONI's probe_cc).
DEFAULT_COUNTRY = "KZ"

#: An event (interception, throttling, outage, an episode of blocking) seen at least this often.
MIN_EVENT = 2

STATUSES = ("supported", "contradicted", "inconclusive", "not_measured", "out_of_scope")
CONFIDENCES = ("low", "medium", "high")
STATUS_DTYPE = pd.CategoricalDtype(list(STATUSES))
#: ``since_status``: a status, or "not_applicable" for a one-off claim (``Claim.one_off``: an event or a state
#: that ended; what came after its period cannot speak for it).
NOT_APPLICABLE = "not_applicable"
SINCE_STATUSES = (*STATUSES, NOT_APPLICABLE)
SINCE_STATUS_DTYPE = pd.CategoricalDtype(list(SINCE_STATUSES))
CONFIDENCE_DTYPE = pd.CategoricalDtype(list(CONFIDENCES))

#: Columns of :func:`compare`'s result, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "claim_id", "section", "quote", "expect", "testable", "status", "n", "n_blocked",
    "n_accessible", "n_down", "n_inconclusive", "share_of", "blocked_share", "wilson_low",
    "wilson_high", "confidence", "n_vantages", "n_networks", "first", "last",
    "blocking_types", "mitm_roots", "example_ids", "since_status", "since_n", "explanation",
    "same_fact_as", "untested_targets",
)

_OUTCOME_CODES = {"accessible": 0, "blocked": 1, "down": 2, "inconclusive": 3}
_SHARE_OF = {"blocked": "blocked", "accessible": "blocked", "intermittent": "blocked",
             "mitm": "mitm", "no_mitm": "mitm", "throttled": "throttling", "outage": "outage", "down": "down"}
_NEEDED = ("domain", "measurement_start_time", "outcome", "blocking", "mitm_root",
           "vantage_id", "probe_asn", "measurement_uid")


def wilson_interval(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion x/n.

    Args:
        x: successes (0 ≤ x ≤ n).
        n: trials.
        z: the normal quantile; 1.96 for 95 %.

    Returns:
        ``(low, high)`` within [0, 1]; ``(nan, nan)`` when n = 0.

    Source: Wilson (1927), JASA 22:209–212; Brown, Cai & DasGupta (2001),
    Statistical Science 16:101–133, eq. (4). E.g. 0/20 → (0, 0.1611);
    15/148 → (0.0624, 0.1605) (Newcombe 1998, Statistics in Medicine 17:857, Table I).

    Raises:
        ValueError: x or n out of range.
    """
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"wilson_interval needs 0 <= x <= n, got x={x}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = x / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _pattern(x: int, m: int) -> str | None:
    """'high', 'low', 'intermittent', 'mixed' for x of m (see the module doc); None if m = 0."""
    if m == 0:
        return None
    p = x / m
    if p >= 1 - NOISE:
        return "high"
    if p <= NOISE:
        return "low"
    lo, hi = wilson_interval(x, m)
    if (lo > NOISE and hi < 1 - NOISE) or min(x, m - x) >= MIN_EACH:
        return "intermittent"
    return "mixed"


# --------------------------------------------------------------------------- the frame, once

@dataclass
class _Arrays:
    """The frame's columns as NumPy arrays, and its rows grouped by domain."""

    day: np.ndarray          # int64 UTC day number; NaT → a large negative sentinel
    ts: np.ndarray           # int64 ns (NaT → min int)
    outcome: np.ndarray      # int8, _OUTCOME_CODES
    blocking: np.ndarray     # object (str | None)
    mitm_root: np.ndarray    # object (str | None)
    is_mitm: np.ndarray      # bool
    is_throttle: np.ndarray  # bool
    is_weak_mitm: np.ndarray  # bool: tls_mitm on weaker evidence (analysis.ooni.WEAK_MITM_RULES)
    is_outage: np.ndarray    # bool (never where control_intercepted)
    in_country: np.ndarray   # bool: probe_cc is the report's country (all True when no filter)
    vantage: np.ndarray      # int64 codes
    asn: np.ndarray          # int64 codes
    uid: np.ndarray          # object
    order: np.ndarray        # row indices sorted by domain code
    starts: np.ndarray       # per domain code: start offset into order
    ends: np.ndarray
    domains: list[str]       # domain code → domain
    tests: dict[str, np.ndarray]  # OONI app/circumvention test name → its rows (never matched by domain)

    def rows_for_codes(self, codes: Sequence[int]) -> np.ndarray:
        if not codes:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([self.order[self.starts[c]:self.ends[c]] for c in codes])


_NAT_DAY = np.iinfo(np.int64).min // 2
_NAT_NS = np.iinfo(np.int64).min  # NaT as int64 nanoseconds


def _obj(series: pd.Series) -> np.ndarray:
    """Values as an object array with None for NA."""
    arr = np.array(series.astype(object).to_numpy(), dtype=object, copy=True)
    mask = pd.isna(series).to_numpy()
    arr[mask] = None
    return arr


def _in_country(frame: pd.DataFrame, country: str | None) -> np.ndarray:
    """Rows whose probe_cc is ``country`` (case-insensitive); all rows when ``country`` is None."""
    if country is None:
        return np.ones(len(frame), dtype=bool)
    if "probe_cc" not in frame.columns:
        raise ValueError(f"measurements frame lacks column probe_cc, needed to keep to country {country!r} "
                         "(pass country=None to judge every measurement)")
    cc = frame["probe_cc"]
    want = country.strip().upper()
    if isinstance(cc.dtype, pd.CategoricalDtype):  # judged once per category, not once per row
        ok = np.array([str(c).strip().upper() == want for c in cc.cat.categories] + [False], dtype=bool)
        return ok[cc.cat.codes.to_numpy()]
    cc = cc.astype("string").str.strip().str.upper()
    return (cc == want).fillna(False).to_numpy(dtype=bool)


def other_countries(frame: pd.DataFrame, country: str | None = DEFAULT_COUNTRY) -> list[tuple[str, int]]:
    """(probe_cc, measurements) of the rows :func:`compare` leaves out for ``country``, most first
    (a missing probe_cc shows as ``"??"``); empty when ``country`` is None."""
    if country is None or not len(frame):
        return []
    out = ~_in_country(frame, country)
    if not out.any():
        return []
    if "probe_cc" not in frame.columns:
        return [("??", int(out.sum()))]
    cc = frame["probe_cc"][out]
    if isinstance(cc.dtype, pd.CategoricalDtype):  # counted by code: no string per row
        counts = np.bincount(cc.cat.codes.to_numpy().astype(np.int64) + 1, minlength=len(cc.cat.categories) + 1)
        vc: dict[str, int] = {}
        for k, n in zip(["??", *map(str, cc.cat.categories)], counts.tolist(), strict=True):
            if n:
                vc[k] = vc.get(k, 0) + n
        return sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))
    vcs = cc.astype("string").fillna("??").value_counts()
    return sorted(((str(k), int(v)) for k, v in vcs.items()), key=lambda kv: (-kv[1], kv[0]))


def _arrays(frame: pd.DataFrame, as_of: date | None, country: str | None = None) -> _Arrays:
    missing = [c for c in _NEEDED if c not in frame.columns]
    if missing:
        raise ValueError(f"measurements frame lacks column(s) {', '.join(missing)} "
                         "(see analysis.load.COLUMNS)")
    n = len(frame)
    t = pd.to_datetime(frame["measurement_start_time"], utc=True)
    ts = np.array(t.to_numpy(dtype="datetime64[ns]").astype(np.int64), copy=True)
    nat = t.isna().to_numpy()
    day = ts // (86_400 * 10**9)
    day[nat] = _NAT_DAY
    if as_of is not None:
        day = np.full(n, (as_of - date(1970, 1, 1)).days, dtype=np.int64)
    oc = frame["outcome"]
    if isinstance(oc.dtype, pd.CategoricalDtype):  # coded once per category, not once per row
        table = np.array([_OUTCOME_CODES.get(c, 3) for c in oc.cat.categories] + [3], dtype=np.int8)
        outcome = table[oc.cat.codes.to_numpy()]
    else:
        outcome = oc.astype(object).map(_OUTCOME_CODES).fillna(3).to_numpy(dtype=np.int8)
    blocking = _obj(frame["blocking"])
    mitm_root = _obj(frame["mitm_root"])
    is_mitm = (blocking == "tls_mitm") | np.not_equal(mitm_root, None)
    is_throttle = blocking == "throttling"
    if "vantage_offline" in frame.columns:
        offline = frame["vantage_offline"].fillna(False).to_numpy(dtype=bool)
    else:
        offline = np.zeros(n, dtype=bool)
    cut_off = np.zeros(n, dtype=bool)
    if {"control_failure", "dns_failure", "tcp_failure"} <= set(frame.columns):
        cut_off = frame["control_failure"].notna().to_numpy() & (
            frame["dns_failure"].notna().to_numpy() | frame["tcp_failure"].notna().to_numpy())
    if "control_intercepted" in frame.columns:
        intercepted = frame["control_intercepted"].fillna(False).to_numpy(dtype=bool)
    else:
        intercepted = np.zeros(n, dtype=bool)
    doms = frame["domain"]  # factorized as it is (Arrow strings): the codes and texts of its object values
    tests: dict[str, np.ndarray] = {}
    if "test_name" in frame.columns:
        is_app = isin_mask(frame["test_name"], APP_TESTS)  # judged once per category, no object per row
        if is_app.any():
            doms = doms.astype(object).where(~is_app, None)  # app rows match claims by test, never by domain
            tn_arr = frame["test_name"].astype(object).to_numpy()
            tests = {t: np.flatnonzero(is_app & (tn_arr == t)) for t in APP_TESTS}
    dom_codes, dom_uniques = pd.factorize(doms, use_na_sentinel=True)
    dom_codes = dom_codes.astype(np.int64)
    order = np.argsort(dom_codes, kind="stable")
    sorted_codes = dom_codes[order]
    k = len(dom_uniques)
    starts = np.searchsorted(sorted_codes, np.arange(k), side="left")
    ends = np.searchsorted(sorted_codes, np.arange(k), side="right")
    # factorized as they are (Arrow strings, categoricals): the same codes as of their object values
    vantage = pd.factorize(frame["vantage_id"], use_na_sentinel=True)[0].astype(np.int64)
    asn = pd.factorize(frame["probe_asn"], use_na_sentinel=True)[0].astype(np.int64)
    return _Arrays(
        day=day, ts=ts, outcome=outcome, blocking=blocking, mitm_root=mitm_root,
        is_mitm=np.asarray(is_mitm, dtype=bool), is_throttle=np.asarray(is_throttle, dtype=bool),
        is_weak_mitm=(isin_mask(frame["rule"], WEAK_MITM_RULES) if "rule" in frame.columns
                      else np.zeros(n, dtype=bool)),
        is_outage=(offline | cut_off) & ~intercepted, in_country=_in_country(frame, country),
        vantage=vantage, asn=asn,
        uid=_obj(frame["measurement_uid"]), order=order, starts=starts, ends=ends,
        domains=[str(d) for d in dom_uniques], tests=tests,
    )


def _domain_index(domains: list[str], targets: set[str]) -> dict[str, list[int]]:
    """target → codes of the measured domains that equal it or are its subdomains."""
    out: dict[str, list[int]] = {}
    for code, d in enumerate(domains):
        d = d.lower().rstrip(".")
        labels = d.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix in targets:
                out.setdefault(suffix, []).append(code)
    return out


# --------------------------------------------------------------------------- judging one set of rows

@dataclass
class _Judged:
    status: str
    x: int
    m: int
    pattern: str | None
    why: str


def _counts(a: _Arrays, rows: np.ndarray) -> np.ndarray:
    return np.bincount(a.outcome[rows], minlength=4) if rows.size else np.zeros(4, dtype=np.int64)


def _x_and_m(claim: Claim, a: _Arrays, rows: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Counted measurements x, the denominator m, and the denominator's rows."""
    if claim.expect == "outage":
        return int(a.is_outage[rows].sum()), int(rows.size), rows
    if claim.expect == "down":  # down-from-everywhere (a DDoS): down among the measurements that reached a verdict
        judged = rows[a.outcome[rows] <= 2]
        return int((a.outcome[judged] == 2).sum()), int(judged.size), judged
    conclusive = rows[a.outcome[rows] <= 1]
    if claim.expect in ("mitm", "no_mitm"):
        x = int(a.is_mitm[conclusive].sum())
    elif claim.expect == "throttled":
        x = int(a.is_throttle[conclusive].sum())
    else:
        x = int((a.outcome[conclusive] == 1).sum())
    return x, int(conclusive.size), conclusive


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _judge(claim: Claim, a: _Arrays, rows: np.ndarray) -> _Judged:
    """Status of one claim on one set of rows (module doc, 'Status')."""
    if rows.size == 0:
        return _Judged("not_measured", 0, 0, None, "no measurement of its targets in the period")
    x, m, _ = _x_and_m(claim, a, rows)
    what = _SHARE_OF[claim.expect or "blocked"]
    if m == 0:
        return _Judged("inconclusive", 0, 0, None,
                       f"{rows.size} measurement(s), none conclusive (site down or no verdict)")
    pattern = _pattern(x, m)
    lo, hi = wilson_interval(x, m)
    of = {"outage": "measurements", "down": "measurements with a verdict"}.get(claim.expect or "",
                                                                          "conclusive measurements")
    if claim.expect == "accessible":
        seen = (f"accessible in {m - x} of {m} {of} (blocked {_pct(x / m)}, "
                f"95% CI {_pct(lo)}–{_pct(hi)})")
    else:
        seen = f"{what} in {x} of {m} {of} ({_pct(x / m)}, 95% CI {_pct(lo)}–{_pct(hi)})"
    expect = claim.expect
    event = expect in ("mitm", "throttled", "outage", "down")
    if expect == "outage" and x:
        cut = rows[a.is_outage[rows]]
        networks = int(np.unique(a.asn[cut]).size)
        if x >= MIN_EVENT and networks >= MIN_OUTAGE_NETWORKS:
            return _Judged("supported", x, m, pattern, f"{seen}, from {networks} networks")
        return _Judged("inconclusive", x, m, pattern,
                       f"{seen}, all from {networks} network(s): a vantage point's own link failing looks "
                       f"the same; an outage needs cut-off measurements from ≥ {MIN_OUTAGE_NETWORKS} networks")
    if claim.episodic or expect == "outage":
        if x >= MIN_EVENT:
            return _Judged("supported", x, m, pattern, seen)
        miss = ("not seen" if x == 0 else "seen only once") + "; brief or local episodes can be missed by any sample"
        return _Judged("inconclusive", x, m, pattern, f"{seen}: {miss}")
    if event:
        if (x >= MIN_EVENT and x / m > NOISE) or pattern in ("high", "intermittent"):
            return _Judged("supported", x, m, pattern, seen)
        if x == 0:
            return _Judged("contradicted", x, m, pattern, seen)
        return _Judged("inconclusive", x, m, pattern, f"{seen}: too few to call")
    if expect == "no_mitm":
        if pattern == "low":
            return _Judged("supported", x, m, pattern, seen + ": interception no more than noise")
        if x >= MIN_EVENT:
            return _Judged("contradicted", x, m, pattern, seen + ": interception went on")
        return _Judged("inconclusive", x, m, pattern, f"{seen}: too few to call")
    table = {
        "blocked": {"high": "supported", "low": "contradicted"},
        "accessible": {"low": "supported", "high": "contradicted"},
        "intermittent": {"high": "supported", "intermittent": "supported", "low": "contradicted"},
    }[expect or "blocked"]
    status = table.get(pattern or "", "inconclusive")
    note = ""
    if status == "inconclusive":
        note = (": blocked part of the time (intermittent), not what the claim says"
                if pattern == "intermittent" else ": mixed, too few to tell intermittent blocking from noise")
    elif expect == "intermittent" and pattern == "high":
        note = ": consistently blocked, at least as much as claimed"
    return _Judged(status, x, m, pattern, seen + note)


def _combine(claim: Claim, per_target: list[tuple[str, _Judged]], pooled: _Judged,
             named: frozenset[str] = frozenset()) -> tuple[str, str]:
    """Status and tally for quantifier some/many/most/each (module doc, 'Quantifiers')."""
    measured = [(t, j) for t, j in per_target if j.status != "not_measured"]
    sup = [t for t, j in measured if j.status == "supported"]
    con = [t for t, j in measured if j.status == "contradicted"]
    tally = (f"{len(sup)} of {len(measured)} measured target(s) support it"
             + (f" ({', '.join(sorted(sup)[:5])}{' …' if len(sup) > 5 else ''})" if sup else "")
             + (f", {len(con)} contradict it" if con else ""))
    if not measured:
        return "not_measured", tally
    judged = len(sup) + len(con)
    if claim.quantifier == "each":
        missing = sorted(named - {t for t, _ in measured})
        if con:
            return "contradicted", tally + f"; 'each' needs every target: {', '.join(sorted(con))} contradict it"
        if missing:
            return "inconclusive", tally + f"; 'each' needs every target, not measured: {', '.join(missing)}"
        if len(sup) == len(measured):
            return "supported", tally + " (each target on its own)"
        return "inconclusive", tally + "; 'each' needs every target supported"
    if claim.quantifier == "many":
        if len(sup) >= MIN_MANY:
            return "supported", tally
        if not sup and len(con) >= MIN_MANY:
            return "contradicted", tally + f"; none of {len(con)} judged targets supports it"
        return "inconclusive", tally + f"; 'many' needs at least {MIN_MANY} targets that support it"
    if claim.quantifier == "some":
        if sup:
            return "supported", tally
        if con and len(con) == len(measured):
            return "contradicted", tally
        return "inconclusive", tally
    if judged == 0:
        return "inconclusive", tally
    return ("supported" if len(sup) * 2 > judged else "contradicted"), tally


# --------------------------------------------------------------------------- evidence

def _type_counts(values: np.ndarray) -> list[tuple[str, int]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return []
    u, c = np.unique(np.asarray(vals, dtype=object).astype(str), return_counts=True)
    pairs = sorted(zip(u.tolist(), c.tolist()), key=lambda p: (-p[1], p[0]))
    return [(k, int(v)) for k, v in pairs]


def _fmt_counts(pairs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{k}:{v}" for k, v in pairs)


def _confidence(a: _Arrays, denom_rows: np.ndarray, x: int, m: int) -> str | None:
    if m == 0:
        return None
    lo, hi = wilson_interval(x, m)
    keys = np.unique(a.vantage[denom_rows] * (1 << 32) + (a.day[denom_rows] & 0xFFFFFFFF))
    k = int(keys.size)
    w = hi - lo
    if k >= 10 and w <= 0.2:
        return "high"
    if k >= 3 and w <= 0.5:
        return "medium"
    return "low"


def _examples(claim: Claim, a: _Arrays, rows: np.ndarray, limit: int = 5) -> str:
    if rows.size == 0:
        return ""
    if claim.expect == "outage":
        pick = rows[a.is_outage[rows]]
    elif claim.expect in ("mitm", "no_mitm"):
        pick = rows[a.is_mitm[rows]]
    elif claim.expect == "down":
        pick = rows[a.outcome[rows] == 2]
    elif claim.expect == "throttled":
        pick = rows[a.is_throttle[rows]]
    elif claim.expect == "accessible":
        pick = rows[a.outcome[rows] == 0]
    else:
        pick = rows[a.outcome[rows] == 1]
    if pick.size == 0:
        pick = rows[a.outcome[rows] <= 1] if (a.outcome[rows] <= 1).any() else rows
    pick = pick[np.argsort(a.ts[pick], kind="stable")][:limit]
    return ", ".join(str(u) for u in a.uid[pick] if u is not None)


def _ts(v: int | None) -> pd.Timestamp:
    return pd.Timestamp(v, unit="ns", tz="UTC") if v is not None else pd.NaT


def _row(claim: Claim, a: _Arrays | None, used: np.ndarray, since: np.ndarray,
         per_target: dict[str, np.ndarray] | None, ignore_period: bool) -> dict[str, Any]:
    base: dict[str, Any] = {
        "claim_id": claim.id, "section": claim.section, "quote": claim.quote,
        "expect": claim.expect, "testable": claim.testable,
        "share_of": _SHARE_OF.get(claim.expect or ""),
        "n": 0, "n_blocked": 0, "n_accessible": 0, "n_down": 0, "n_inconclusive": 0,
        "blocked_share": None, "wilson_low": None, "wilson_high": None, "confidence": None,
        "n_vantages": 0, "n_networks": 0, "first": pd.NaT, "last": pd.NaT,
        "blocking_types": "", "mitm_roots": "", "example_ids": "",
        "since_status": None, "since_n": 0,
        "same_fact_as": claim.same_fact_as, "untested_targets": ", ".join(untested_targets(claim)),
    }
    if not claim.testable or a is None:
        reason = claim.untestable_reason or "not testable"
        return base | {"status": "out_of_scope", "explanation": f"Out of scope: {reason}."}
    j = _judge(claim, a, used)
    status, why = j.status, j.why
    if per_target is not None and claim.quantifier in ("some", "many", "most", "each") and used.size:
        judged = [(t, _judge(claim, a, r)) for t, r in sorted(per_target.items())]
        status, tally = _combine(claim, judged, j, named=claim_domains(claim))
        why = f"{why}; {tally}"
    counts = _counts(a, used)
    blocked_rows = used[a.outcome[used] == 1]
    btypes = _type_counts(a.blocking[blocked_rows])
    if claim.blocking_types and btypes:
        other = [t for t, _ in btypes if t not in claim.blocking_types]
        if other:
            why += (f"; the report names {', '.join(claim.blocking_types)} but the blocking seen "
                    f"includes {', '.join(other)} (blocked all the same, by another method)")
    x, m, denom_rows = _x_and_m(claim, a, used) if used.size else (0, 0, used)
    dated = a.ts[used][a.ts[used] != _NAT_NS]
    lo, hi = wilson_interval(x, m)
    base.update({
        "status": status,
        "n": int(used.size), "n_accessible": int(counts[0]), "n_blocked": int(counts[1]),
        "n_down": int(counts[2]), "n_inconclusive": int(counts[3]),
        "blocked_share": x / m if m else None,
        "wilson_low": lo if m else None, "wilson_high": hi if m else None,
        "confidence": _confidence(a, denom_rows, x, m) if status in ("supported", "contradicted") else None,
        "n_vantages": int(np.unique(a.vantage[used]).size) if used.size else 0,
        "n_networks": int(np.unique(a.asn[used][a.asn[used] >= 0]).size) if used.size else 0,
        "first": _ts(int(dated.min())) if dated.size else pd.NaT,
        "last": _ts(int(dated.max())) if dated.size else pd.NaT,
        "blocking_types": _fmt_counts(btypes),
        "mitm_roots": _fmt_counts(_type_counts(a.mitm_root[used])) if used.size else "",
        "example_ids": _examples(claim, a, used),
    })
    if not ignore_period:
        base["since_n"] = int(since.size)
        if claim.one_off:  # an event that ended: later measurements neither support nor contradict it
            base["since_status"] = NOT_APPLICABLE
        else:
            base["since_status"] = _judge(claim, a, since).status if since.size else "not_measured"
    prefix = "All periods (ignore_period): " if ignore_period else ""
    down_note = ""
    if counts[2] or counts[3]:
        down_note = f" ({int(counts[2])} down and {int(counts[3])} inconclusive not counted)"
    if claim.expect in ("outage", "down"):
        down_note = ""
    if claim.expect in ("mitm", "no_mitm"):
        weak = int((a.is_mitm[used] & a.is_weak_mitm[used]).sum())
        if weak:
            why += (f"; {weak} of the intercepted measurements rest on weaker evidence (a certificate refused on a "
                    "known target in a known interception window; the OONI version recorded no certificate)")
    if base["untested_targets"]:
        why += (f"; not in OONI's 2021 test lists ({base['untested_targets']}): OONI Probe did not measure "
                "them in the report's period")
    if claim.same_fact_as:
        why += f"; the same fact as {claim.same_fact_as} (counted once)"
    base["explanation"] = f"{prefix}{status.replace('_', ' ')}: {why}{down_note}."
    return base


# --------------------------------------------------------------------------- public

def compare(claims: Sequence[Claim], frame: pd.DataFrame, *, ignore_period: bool = False,
            as_of: date | None = None, country: str | None = DEFAULT_COUNTRY) -> pd.DataFrame:
    """Judge every claim against the measurements.

    Args:
        claims: from :func:`analysis.claims.load_claims` (untestable ones give
            ``out_of_scope`` rows).
        frame: the measurements, columns of :data:`analysis.load.COLUMNS` (at least
            domain, measurement_start_time, outcome, blocking, mitm_root, vantage_id,
            probe_asn, measurement_uid; vantage_offline, control_failure, dns_failure and
            tcp_failure are used for outages when present, control_intercepted to leave rows
            out of outage evidence, probe_cc for ``country``).
        ignore_period: use every measurement for every claim, whatever its date (lab
            runs); ``since_status`` is then NA and ``since_n`` 0.
        as_of: take every measurement as made on this UTC day (a lab scenario modelling
            one day, e.g. ``date(2021, 5, 31)``); ``None`` = their own dates.
        country: judge the claims only on measurements whose ``probe_cc`` is this
            (ISO 3166-1 alpha-2; default ``"KZ"``, the report's country); None = every
            measurement. The others are counted, never used.

    Returns:
        One row per claim, in claim order, columns :data:`RESULT_COLUMNS`: status and
        since_status categorical (:data:`SINCE_STATUSES`: a status or "not_applicable"), confidence categorical
        (:data:`CONFIDENCES`, NA unless supported/contradicted), blocked_share / wilson_low /
        wilson_high Float64 (NA when nothing conclusive; the share of ``share_of``),
        first/last UTC timestamps, counts int64, blocking_types and mitm_roots as
        ``"tls:5, dns:1"``, example_ids up to 5 measurement_uids, explanation one sentence.
        The rules are in the module docstring. ``result.attrs``: ``country`` and
        ``n_other_country`` (measurements left out because of their probe_cc).

    Raises:
        ValueError: the frame lacks a needed column (probe_cc only when ``country`` is set).
    """
    a = _arrays(frame, as_of, country) if len(frame.columns) else None
    if a is None and any(c.testable for c in claims):
        raise ValueError("measurements frame has no columns (see analysis.load.COLUMNS)")
    all_rows = np.arange(len(frame), dtype=np.int64)
    targets: set[str] = set()
    doms_of: dict[str, frozenset[str]] = {}
    for c in claims:
        if c.testable:
            doms_of[c.id] = claim_domains(c)
            targets |= doms_of[c.id]
    index = _domain_index(a.domains, targets) if a is not None else {}
    out = []
    for c in claims:
        if not c.testable or a is None:
            out.append(_row(c, None, all_rows[:0], all_rows[:0], None, ignore_period))
            continue
        doms = doms_of[c.id]
        start = (c.period_start - date(1970, 1, 1)).days
        end = (c.period_end - date(1970, 1, 1)).days

        def split(rows: np.ndarray, start: int = start, end: int = end) -> tuple[np.ndarray, np.ndarray]:
            """(rows in the period, rows after it); all rows when periods are ignored."""
            rows = rows[a.in_country[rows]]
            if ignore_period:
                return rows, rows[:0]
            d = a.day[rows]
            return rows[(d >= start) & (d <= end)], rows[d > end]

        if ANY_TARGET in doms:
            used, since = split(all_rows)
            per_target = None
        else:
            per_target = {}
            codes_of = {t: [k for k in index.get(t, ()) if domain_matches(a.domains[k], t, c.hosts)] for t in doms}
            for t in doms:
                codes = codes_of[t]
                if codes:
                    per_target[t] = split(a.rows_for_codes(codes))[0]
            codes = sorted({k for t in doms for k in codes_of[t]})
            rows = a.rows_for_codes(codes)
            for t in c.ooni_tests:  # each OONI app/circumvention test counts as one target
                trows = a.tests.get(t, np.empty(0, dtype=np.int64))
                if trows.size:
                    per_target[f"OONI {t}"] = split(trows)[0]
                    rows = np.concatenate([rows, trows])
            used, since = split(rows)
        out.append(_row(c, a, used, since, per_target, ignore_period))
    result = pd.DataFrame(out, columns=list(RESULT_COLUMNS))
    result["status"] = result["status"].astype(STATUS_DTYPE)
    result["since_status"] = result["since_status"].astype(SINCE_STATUS_DTYPE)
    result["confidence"] = result["confidence"].astype(CONFIDENCE_DTYPE)
    for col in ("blocked_share", "wilson_low", "wilson_high"):
        result[col] = result[col].astype("Float64")
    for col in ("first", "last"):
        result[col] = pd.to_datetime(result[col], utc=True)
    for col in ("n", "n_blocked", "n_accessible", "n_down", "n_inconclusive", "n_vantages",
                "n_networks", "since_n"):
        result[col] = result[col].astype("int64")
    result["testable"] = result["testable"].astype(bool)
    result.attrs["country"] = country
    result.attrs["n_other_country"] = int((~a.in_country).sum()) if a is not None else 0
    return result
