"""analysis.compare: claims judged against synthetic measurement frames (table-driven)."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis.claims import REPORT_PERIOD, Claim, load_claims
from analysis.compare import (
    MIN_EACH,
    RESULT_COLUMNS,
    STATUSES,
    compare,
    wilson_interval,
)

try:  # A2's loader defines the frame; fall back to the contract's columns.
    from analysis.load import COLUMNS, DTYPES
except ImportError:  # pragma: no cover - only while analysis.load is being written
    COLUMNS, DTYPES = None, None

_BLOCKING_OF = {"accessible": "false", "down": "false", "blocked": "tls", "inconclusive": None}


def row(domain: str, outcome: str, *, day: str | date = "2020-12-05", blocking: str | None = "",
        vantage: str = "KZ/AS9198", mitm_root: str | None = None, offline: bool = False,
        uid: str | None = None, **extra: Any) -> dict[str, Any]:
    """One measurement in the contract's columns; ``blocking`` defaults from ``outcome``."""
    if blocking == "":
        blocking = _BLOCKING_OF[outcome]
    asn = vantage.split("/")[-1]
    return {
        "source": "kzprobe", "measurement_uid": uid, "report_id": "r1", "file": "synthetic.jsonl",
        "test_name": "web_connectivity", "data_format_version": "0.2.0",
        "input": f"https://{domain}/", "domain": domain,
        "measurement_start_time": pd.Timestamp(str(day) + "T12:00:00Z"),
        "probe_asn": asn, "probe_cc": "KZ", "probe_network_name": "net", "vantage_id": vantage,
        "lab_scenario": None, "blocking": blocking,
        "accessible": {"accessible": True, "down": False, "blocked": False}.get(outcome),
        "outcome": outcome, "verdict_source": "kzprobe", "ooni_blocking": None, "ooni_accessible": None,
        "rule": "x", "reason": "", "dns_failure": None, "tcp_failure": None, "tls_failure": None,
        "http_failure": None, "control_failure": None, "mitm_root": mitm_root, "tls_issuers": None,
        "vantage_offline": offline, "control_intercepted": False, "body_length": None,
    } | extra


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A typed measurements frame (analysis.load.DTYPES when available)."""
    for i, r in enumerate(rows):
        r["line"] = i + 1
        if r["measurement_uid"] is None:
            r["measurement_uid"] = f"m{i:05d}"
    df = pd.DataFrame(rows)
    if DTYPES is not None:
        df = df[list(COLUMNS)].astype(DTYPES)
    return df


def many(domain: str, outcome: str, count: int, *, start: str = "2020-12-01", vantages: int = 1,
         **kw: Any) -> list[dict[str, Any]]:
    """``count`` measurements on consecutive days, spread over ``vantages`` vantage points."""
    d0 = date.fromisoformat(start)
    return [row(domain, outcome, day=d0 + timedelta(days=i % 28),
                vantage=f"KZ/AS{9198 + i % vantages}", **kw) for i in range(count)]


def claim(expect: str = "blocked", targets: tuple[str, ...] = ("meduza.io",), **kw: Any) -> Claim:
    return Claim(id=kw.pop("id", "B1-test"), section="B1", quote="q", targets=targets, expect=expect,
                 period_start=kw.pop("period_start", date(2020, 6, 1)),
                 period_end=kw.pop("period_end", date(2021, 5, 31)), **kw)


def judge(c: Claim, rows: list[dict[str, Any]], **kw: Any) -> pd.Series:
    return compare([c], frame(rows), **kw).iloc[0]


# --------------------------------------------------------------------------- Wilson

@pytest.mark.parametrize(("x", "n", "low", "high"), [
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # closed forms: x = 0 → high = z²/(n+z²); x = n → low = n/(n+z²)
    (0, 10, 0.0, 1.96**2 / (10 + 1.96**2)),
    (10, 10, 10 / (10 + 1.96**2), 1.0),
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_known_values(x: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(x, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_empty_and_bad_input() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="x=3, n=2"):
        wilson_interval(3, 2)


# --------------------------------------------------------------------------- status table

CASES: list[tuple[str, Claim, list[dict[str, Any]], str]] = [
    ("blocked supported", claim("blocked"), many("meduza.io", "blocked", 20), "supported"),
    ("blocked contradicted", claim("blocked"), many("meduza.io", "accessible", 20), "contradicted"),
    ("blocked but intermittent", claim("blocked"),
     many("meduza.io", "blocked", 10) + many("meduza.io", "accessible", 10), "inconclusive"),
    ("blocked with noise ≤ 10%", claim("blocked"),
     many("meduza.io", "blocked", 18) + many("meduza.io", "accessible", 2), "supported"),
    ("mixed, too few", claim("blocked"),
     many("meduza.io", "blocked", 3) + many("meduza.io", "accessible", 1), "inconclusive"),
    ("accessible supported", claim("accessible", ("medium.com",)),
     many("medium.com", "accessible", 12), "supported"),
    ("accessible contradicted", claim("accessible", ("medium.com",)),
     many("medium.com", "blocked", 12, blocking="tcp_ip"), "contradicted"),
    ("intermittent supported", claim("intermittent", ("archive.org",)),
     many("archive.org", "blocked", 6) + many("archive.org", "accessible", 6), "supported"),
    ("intermittent: minority at MIN_EACH", claim("intermittent", ("archive.org",)),
     many("archive.org", "blocked", MIN_EACH) + many("archive.org", "accessible", 20), "supported"),
    ("intermittent: always blocked counts", claim("intermittent", ("archive.org",)),
     many("archive.org", "blocked", 8), "supported"),
    ("intermittent contradicted", claim("intermittent", ("archive.org",)),
     many("archive.org", "accessible", 30), "contradicted"),
    ("only down/inconclusive", claim("blocked"),
     many("meduza.io", "down", 5) + many("meduza.io", "inconclusive", 5), "inconclusive"),
    ("not measured (other domain)", claim("blocked"), many("kloop.kg", "blocked", 5), "not_measured"),
    ("not a subdomain", claim("blocked"), many("notmeduza.io", "blocked", 5), "not_measured"),
    ("subdomain matches", claim("blocked"), many("www.meduza.io", "blocked", 5), "supported"),
    ("mitm supported", claim("mitm", ("facebook.com",)),
     many("facebook.com", "blocked", 6, blocking="tls_mitm", mitm_root="Qaznet Trust Network"), "supported"),
    ("mitm root with cert installed", claim("mitm", ("facebook.com",)),
     many("facebook.com", "accessible", 6, mitm_root="Qaznet Trust Network"), "supported"),
    ("mitm contradicted", claim("mitm", ("facebook.com",)), many("facebook.com", "accessible", 6), "contradicted"),
    ("mitm once among many", claim("mitm", ("facebook.com",)),
     many("facebook.com", "accessible", 30)
     + [row("facebook.com", "blocked", blocking="tls_mitm", mitm_root="Qaznet Trust Network")], "inconclusive"),
    ("mitm episodic, not seen", claim("mitm", ("facebook.com",), episodic=True),
     many("facebook.com", "accessible", 30), "inconclusive"),
    ("throttled supported", claim("throttled", ("youtube.com",)),
     many("youtube.com", "blocked", 4, blocking="throttling") + many("youtube.com", "accessible", 4), "supported"),
    ("episodic intermittent: two blocked among many", claim("intermittent", ("telegram.org",), episodic=True),
     many("telegram.org", "blocked", 2) + many("telegram.org", "accessible", 100), "supported"),
    ("outage supported: two networks cut off", claim("outage", ("*",)),
     many("meduza.io", "inconclusive", 4, offline=True, vantages=2) + many("kloop.kg", "accessible", 10),
     "supported"),
    # one offline vantage point is a sandbox or a dead uplink as much as a shutdown: never enough
    ("outage: one network offline is not evidence", claim("outage", ("*",)),
     many("meduza.io", "inconclusive", 30, offline=True) + many("kloop.kg", "accessible", 10), "inconclusive"),
    ("outage by failed control and DNS", claim("outage", ("*",)),
     many("kloop.kg", "inconclusive", 4, vantages=2, dns_failure="dns_server_failure",
          control_failure="generic_timeout_error"), "supported"),
    ("outage by failed control and DNS, one network", claim("outage", ("*",)),
     many("kloop.kg", "inconclusive", 4, dns_failure="dns_server_failure",
          control_failure="generic_timeout_error"), "inconclusive"),
    ("outage never contradicted", claim("outage", ("*",)), many("kloop.kg", "accessible", 50), "inconclusive"),
    # a vantage point whose control channel is intercepted sits behind a middlebox (a sandbox, a proxy)
    ("outage: intercepted vantages offline are not evidence", claim("outage", ("*",)),
     many("meduza.io", "inconclusive", 4, offline=True, vantages=2, control_intercepted=True), "inconclusive"),
    ("outage: intercepted vantages with failed control and DNS are not evidence", claim("outage", ("*",)),
     many("kloop.kg", "inconclusive", 4, vantages=2, dns_failure="dns_server_failure",
          control_failure="ssl_unknown_authority", control_intercepted=True), "inconclusive"),
    ("some: one target enough", claim("blocked", ("a.example", "b.example"), quantifier="some"),
     many("a.example", "blocked", 5) + many("b.example", "accessible", 5), "supported"),
    ("some: all contradict", claim("blocked", ("a.example", "b.example"), quantifier="some"),
     many("a.example", "accessible", 5) + many("b.example", "accessible", 5), "contradicted"),
    ("most: 2 of 3 accessible", claim("accessible", ("a.example", "b.example", "c.example"), quantifier="most"),
     many("a.example", "accessible", 5) + many("b.example", "accessible", 5) + many("c.example", "blocked", 5),
     "supported"),
    ("most: 1 of 3 accessible", claim("accessible", ("a.example", "b.example", "c.example"), quantifier="most"),
     many("a.example", "accessible", 5) + many("b.example", "blocked", 5) + many("c.example", "blocked", 5),
     "contradicted"),
    ("out of scope", Claim(id="C3-x", section="C3", quote="q", testable=False, untestable_reason="an arrest"),
     many("meduza.io", "blocked", 5), "out_of_scope"),
]


@pytest.mark.parametrize(("name", "c", "rows", "status"), CASES, ids=[c[0] for c in CASES])
def test_status(name: str, c: Claim, rows: list[dict[str, Any]], status: str) -> None:
    r = judge(c, rows)
    assert r["status"] == status, r["explanation"]
    assert r["explanation"].startswith(status.replace("_", " ")) or status == "out_of_scope"


# --------------------------------------------------------------------------- periods

def test_out_of_period_is_since_the_report() -> None:
    c = claim("blocked", period_start=date(2020, 6, 1), period_end=date(2020, 12, 31))
    rows = many("meduza.io", "accessible", 10, start="2021-06-01")  # after the period
    r = judge(c, rows)
    assert r["status"] == "not_measured" and r["n"] == 0
    assert r["since_n"] == 10 and r["since_status"] == "contradicted"
    # the same rows count when periods are ignored (lab runs)
    r2 = judge(c, rows, ignore_period=True)
    assert r2["status"] == "contradicted" and r2["n"] == 10
    assert pd.isna(r2["since_status"]) and r2["since_n"] == 0
    assert r2["explanation"].startswith("All periods")


def test_one_off_claim_since_the_report_not_applicable() -> None:
    """The December 2020 six-day drill judged from 2026 data: neither supported nor contradicted "since the
    report" — not applicable (issue 15 part 4); inside its period it is judged as usual."""
    c = claim("mitm", period_start=date(2020, 12, 1), period_end=date(2020, 12, 31), one_off=True, episodic=True)
    rows = many("meduza.io", "accessible", 10, start="2026-11-01")
    r = judge(c, rows)
    assert (r["status"], r["since_status"], r["since_n"]) == ("not_measured", "not_applicable", 10)
    ongoing = judge(claim("blocked", period_start=date(2020, 12, 1), period_end=date(2020, 12, 31)), rows)
    assert ongoing["since_status"] == "contradicted"
    assert pd.isna(judge(c, rows, ignore_period=True)["since_status"])  # dates ignored: no "since" at all


def test_one_off_claims_in_the_claims_file() -> None:
    """Every dated episodic claim is one-off; a one-off claim has a dated period (not the whole report's)."""
    for c in load_claims():
        if c.one_off:
            assert c.period != REPORT_PERIOD, c.id
        if c.episodic and c.testable and c.period != REPORT_PERIOD:
            assert c.one_off, c.id


def test_before_period_left_out() -> None:
    c = claim("blocked", period_start=date(2021, 3, 1), period_end=date(2021, 5, 31))
    rows = many("meduza.io", "accessible", 5, start="2021-01-01") + many("meduza.io", "blocked", 5, start="2021-03-01")
    r = judge(c, rows)
    assert (r["status"], r["n"], r["since_n"]) == ("supported", 5, 0)


def test_period_bounds_inclusive() -> None:
    c = claim("blocked", period_start=date(2021, 3, 8), period_end=date(2021, 3, 8))
    rows = [row("meduza.io", "blocked", day="2021-03-08"), row("meduza.io", "blocked", day="2021-03-09")]
    r = judge(c, rows)
    assert (r["n"], r["since_n"]) == (1, 1)


def test_as_of_dates_every_measurement() -> None:
    early = claim("blocked", id="B1-early", period_start=date(2020, 6, 1), period_end=date(2020, 12, 31))
    late = claim("blocked", id="B1-late", period_start=date(2021, 4, 1), period_end=date(2021, 5, 31))
    rows = many("meduza.io", "blocked", 5, start="2026-11-01")
    res = compare([early, late], frame(rows), as_of=date(2021, 5, 31)).set_index("claim_id")
    assert res.loc["B1-late", "status"] == "supported"
    assert res.loc["B1-early", "status"] == "not_measured" and res.loc["B1-early", "since_status"] == "supported"


# --------------------------------------------------------------------------- evidence columns

def test_evidence_columns() -> None:
    rows = (many("meduza.io", "blocked", 12, vantages=3, blocking="tls")
            + many("www.meduza.io", "blocked", 2, blocking="dns")
            + many("meduza.io", "down", 1) + many("meduza.io", "inconclusive", 1))
    res = compare([claim("blocked", blocking_types=("tls",))], frame(rows))
    assert list(res.columns) == list(RESULT_COLUMNS)
    r = res.iloc[0]
    assert (r["n"], r["n_blocked"], r["n_accessible"], r["n_down"], r["n_inconclusive"]) == (16, 14, 0, 1, 1)
    assert r["blocked_share"] == 1.0 and r["share_of"] == "blocked"
    lo, hi = wilson_interval(14, 14)
    assert (r["wilson_low"], r["wilson_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert r["blocking_types"] == "tls:12, dns:2"
    assert "includes dns" in r["explanation"]  # the report names tls; dns is another method
    assert r["n_vantages"] == 3 and r["n_networks"] == 3
    assert r["first"] == pd.Timestamp("2020-12-01T12:00:00Z")
    assert r["last"] == pd.Timestamp("2020-12-12T12:00:00Z")
    assert len(r["example_ids"].split(", ")) == 5
    assert str(res["status"].dtype) == "category" and list(res["status"].cat.categories) == list(STATUSES)
    assert str(res["first"].dtype) == "datetime64[ns, UTC]"


def test_mitm_roots_listed() -> None:
    rows = many("vk.com", "blocked", 3, blocking="tls_mitm", mitm_root="Qaznet Trust Network")
    r = judge(claim("mitm", ("vk.com",)), rows)
    assert r["mitm_roots"] == "Qaznet Trust Network:3" and r["share_of"] == "mitm"


@pytest.mark.parametrize(("count", "vantages", "confidence"), [
    (2, 1, "low"),        # interval wide, one vantage-day pair … two
    (6, 3, "medium"),     # 6/6 → Wilson low 0.61: width ≤ 0.5, ≥ 3 vantage-days
    (40, 4, "high"),      # 40/40 → width 0.09, 28 vantage×day pairs
])
def test_confidence_grows_with_independent_measurements(count: int, vantages: int, confidence: str) -> None:
    r = judge(claim("blocked"), many("meduza.io", "blocked", count, vantages=vantages))
    assert r["confidence"] == confidence


def test_same_vantage_same_day_is_one_independent_measurement() -> None:
    rows = [row("meduza.io", "blocked", day="2020-12-01") for _ in range(40)]
    r = judge(claim("blocked"), rows)
    assert r["confidence"] == "low"  # 40 rows, but one vantage × day


def test_not_measured_has_no_confidence_or_share() -> None:
    r = judge(claim("blocked"), many("kloop.kg", "blocked", 3))
    assert pd.isna(r["confidence"]) and pd.isna(r["blocked_share"]) and pd.isna(r["wilson_low"])


def test_empty_frame_and_missing_columns() -> None:
    if DTYPES is not None:
        from analysis.load import empty_frame

        res = compare([claim("blocked")], empty_frame())
        assert res.iloc[0]["status"] == "not_measured"
    with pytest.raises(ValueError, match="outcome"):
        compare([claim("blocked")], pd.DataFrame({"domain": ["meduza.io"]}))


# --------------------------------------------------------------------------- the shipped claims

def test_shipped_claims_all_judged() -> None:
    claims = load_claims()
    rows = (many("meduza.io", "blocked", 10, start="2020-12-01")
            + many("facebook.com", "blocked", 5, start="2020-12-01", blocking="tls_mitm", mitm_root="Qaznet")
            + many("medium.com", "accessible", 5, start="2021-04-01"))
    res = compare(claims, frame(rows))
    assert list(res["claim_id"]) == [c.id for c in claims]
    by = res.set_index("claim_id")["status"]
    assert by["B1-meduza"] == "supported"
    assert by["A3-cert-drill-2020"] == "supported"
    assert by["B1-medium-2021"] == "supported"
    assert by["B1-medium-2020"] == "not_measured"
    assert (res.loc[~res["testable"], "status"] == "out_of_scope").all()


def test_large_frame_grouped_once() -> None:
    """Behaviour on a large frame: every row counted once per matching claim."""
    n = 200_000
    rng = np.random.default_rng(1)
    domains = np.array(["meduza.io", "www.kloop.kg", "example.org", "medium.com"])[rng.integers(0, 4, n)]
    df = pd.DataFrame({
        "domain": domains, "measurement_start_time": pd.Timestamp("2021-01-01", tz="UTC"),
        "outcome": pd.Categorical(np.where(domains == "medium.com", "accessible", "blocked")),
        "blocking": np.where(domains == "medium.com", "false", "tls"), "mitm_root": None,
        "vantage_id": "KZ/AS9198", "probe_asn": "AS9198", "probe_cc": "KZ", "measurement_uid": "x",
    })
    claims = [claim("blocked", ("meduza.io",), id="B1-a"), claim("blocked", ("kloop.kg",), id="B1-b"),
              claim("accessible", ("medium.com",), id="B1-c"), claim("outage", ("*",), id="B1-d")]
    res = compare(claims, df).set_index("claim_id")
    assert res.loc["B1-a", "n"] == (domains == "meduza.io").sum()
    assert res.loc["B1-b", "n"] == (domains == "www.kloop.kg").sum()
    assert res.loc["B1-d", "n"] == n
    assert list(res["status"][:3]) == ["supported"] * 3


def test_inconclusive_has_no_confidence() -> None:
    r = judge(claim("outage", ("*",)), many("kloop.kg", "accessible", 50, vantages=5))
    assert r["status"] == "inconclusive" and pd.isna(r["confidence"])
    assert r["share_of"] == "outage" and r["blocked_share"] == 0.0


def test_accessible_explanation_counts_accessible() -> None:
    r = judge(claim("accessible", ("medium.com",)), many("medium.com", "accessible", 5))
    assert "accessible in 5 of 5 conclusive measurements" in r["explanation"]


# The lab's kz-2021 scenario (probe/lab/scenarios/kz-2021.toml on the lab branch): what the probe
# reports for each site, one run from one vantage point.
KZ_2021 = [
    ("meduza.io", "blocked", "tls"), ("kloop.kg", "blocked", "tls"), ("www.change.org", "blocked", "tls"),
    ("www.dailymail.co.uk", "blocked", "tls"), ("medium.com", "accessible", "false"),
    ("pana-defenders.info", "blocked", "dns"), ("lalafo.kg", "blocked", "tcp_ip"),
    ("facebook.com", "blocked", "tls_mitm"), ("www.google.com", "blocked", "tls_mitm"),
    ("twitter.com", "blocked", "tls_mitm"), ("vk.com", "blocked", "tls_mitm"), ("ratel.kz", "down", "false"),
]


def _lab_rows(runs: int = 3) -> list[dict[str, Any]]:
    return [row(d, o, blocking=b, day=f"2026-11-{29 - i:02d}", vantage="lab/AS65001",
                mitm_root="Qaznet Trust Network" if b == "tls_mitm" else None)
            for i in range(runs) for d, o, b in KZ_2021]


@pytest.mark.parametrize(("cid", "status"), [
    ("B1-meduza", "supported"), ("B1-kloop", "supported"), ("B1-change-org", "supported"),
    ("B1-dailymail", "supported"), ("B1-medium-2021", "supported"), ("B1-pana-defenders", "supported"),
    ("B1-lalafo-collateral", "supported"), ("A3-cert-drill-2020", "supported"),
    ("C5-qaznet-2019-list", "supported"), ("B1-avaaz-unblocked", "not_measured"),
    ("B1-medium-2020", "contradicted"),  # the scenario models 2021: Medium accessible again
])
def test_lab_kz_2021_ignore_period(cid: str, status: str) -> None:
    res = compare(load_claims(), frame(_lab_rows()), ignore_period=True).set_index("claim_id")
    assert res.loc[cid, "status"] == status, res.loc[cid, "explanation"]


def test_lab_kz_2021_as_of_end_of_coverage() -> None:
    res = compare(load_claims(), frame(_lab_rows()), as_of=date(2021, 5, 31)).set_index("claim_id")
    assert res.loc["B1-meduza", "status"] == "supported"
    assert res.loc["B1-pana-defenders", "status"] == "supported"
    assert res.loc["B1-medium-2021", "status"] == "supported"
    # dated claims before 2021-05-31: the lab's measurements are "since" them
    assert res.loc["B1-lalafo-collateral", "status"] == "not_measured"
    # one-off events (a collateral block in March 2021, the December 2020 drill, Medium's 2020 block lifted in
    # 2021): what came after cannot support or contradict them — "since the report" is not applicable
    assert res.loc["B1-lalafo-collateral", "since_status"] == "not_applicable"
    assert res.loc["A3-cert-drill-2020", "since_status"] == "not_applicable"
    assert res.loc["B1-medium-2020", "since_status"] == "not_applicable"
    assert res.loc["B1-medium-2020", "since_n"] > 0  # the later measurements are still counted
    # an ongoing state (the order to block pana-defenders.info; meduza.io blocked) keeps its "since" verdict
    assert res.loc["B1-meduza", "since_status"] != "not_applicable"


def test_missing_start_time_only_with_ignore_period() -> None:
    rows = many("meduza.io", "blocked", 3)
    rows[0]["measurement_start_time"] = pd.NaT
    r = judge(claim("blocked"), rows)
    assert (r["n"], r["since_n"]) == (2, 0)  # an undated measurement is in no period
    r2 = judge(claim("blocked"), rows, ignore_period=True)
    assert r2["n"] == 3 and r2["first"] == pd.Timestamp("2020-12-02T12:00:00Z")


# --------------------------------------------------------------------------- country

def _cc(rows: list[dict[str, Any]], cc: str | None) -> list[dict[str, Any]]:
    for r in rows:
        r["probe_cc"] = cc
    return rows


COUNTRY_CASES = [
    # (name, rows, country, status, n, n_other_country)
    ("Russian and Slovak measurements never support a Kazakh claim",
     _cc(many("meduza.io", "blocked", 10), "RU") + _cc(many("meduza.io", "blocked", 10), "SK"),
     "KZ", "not_measured", 0, 20),
    ("no filter: every country counts", _cc(many("meduza.io", "blocked", 10), "RU"), None, "supported", 10, 0),
    ("Kazakh rows judged, the others left out",
     many("meduza.io", "accessible", 20) + _cc(many("meduza.io", "blocked", 20), "RU"), "KZ", "contradicted", 20, 20),
    ("probe_cc compared case-insensitively", _cc(many("meduza.io", "blocked", 10), "kz"), "KZ", "supported", 10, 0),
    ("a missing probe_cc is another country", _cc(many("meduza.io", "blocked", 10), None), "KZ", "not_measured", 0, 10),
    ("another report country", _cc(many("meduza.io", "blocked", 10), "RU") + many("meduza.io", "accessible", 5),
     "RU", "supported", 10, 5),
]


@pytest.mark.parametrize("name,rows,country,status,n,n_other", COUNTRY_CASES, ids=[c[0] for c in COUNTRY_CASES])
def test_country(name: str, rows: list[dict[str, Any]], country: str | None, status: str, n: int,
                 n_other: int) -> None:
    res = compare([claim("blocked", ("meduza.io",))], frame(rows), country=country)
    assert (res.iloc[0]["status"], res.iloc[0]["n"]) == (status, n)
    assert res.attrs["n_other_country"] == n_other and res.attrs["country"] == country


def test_other_countries_are_counted_by_cc() -> None:
    from analysis.compare import other_countries

    f = frame(_cc(many("meduza.io", "blocked", 3), "RU") + _cc(many("a.example", "blocked", 2), "SK")
              + many("meduza.io", "blocked", 4))
    assert other_countries(f) == [("RU", 3), ("SK", 2)]
    assert other_countries(f, None) == []


def test_country_filter_needs_probe_cc() -> None:
    f = frame(many("meduza.io", "blocked", 3)).drop(columns=["probe_cc"])
    with pytest.raises(ValueError, match="probe_cc"):
        compare([claim()], f)
    assert compare([claim()], f, country=None).iloc[0]["status"] == "supported"


# --------------------------------------------------------------------------- issue 14 part 6: new rules

def test_exact_hosts_leave_out_subdomains_the_report_never_named() -> None:
    rows = (many("facebook.com", "accessible", 10) + many("www.facebook.com", "accessible", 5)
            + many("static.facebook.com", "blocked", 10, blocking="tls_mitm", mitm_root="CN=Qaznet Trust Network"))
    sub = judge(claim("mitm", ("facebook.com",)), rows)
    exact = judge(claim("mitm", ("facebook.com",), hosts="exact"), rows)
    assert sub["n"] == 25 and sub["status"] == "supported"
    assert exact["n"] == 15 and exact["status"] == "contradicted"  # never intercepted on the hosts named


@pytest.mark.parametrize("mitm,plain,status", [
    (0, 20, "supported"),       # no interception
    (1, 20, "supported"),       # one in 21: noise
    (5, 15, "contradicted"),    # interception went on
    (1, 3, "inconclusive"),     # one of four: too few
    (0, 0, "not_measured"),
])
def test_no_mitm(mitm: int, plain: int, status: str) -> None:
    rows = many("vk.com", "accessible", plain) + many("vk.com", "blocked", mitm, blocking="tls_mitm",
                                                     start="2020-12-02") + many("other.org", "accessible", 2)
    assert judge(claim("no_mitm", ("vk.com",)), rows)["status"] == status


def test_no_mitm_is_not_contradicted_by_ordinary_blocking() -> None:
    """October 2020's blocking episodes are not interception (why C5-qaznet-2019-ended expects no_mitm)."""
    rows = many("vk.com", "blocked", 10) + many("vk.com", "accessible", 10)
    r = judge(claim("no_mitm", ("vk.com",)), rows)
    assert r["status"] == "supported" and r["blocked_share"] == 0


@pytest.mark.parametrize("down,up,episodic,status", [
    (3, 0, True, "supported"), (1, 5, True, "inconclusive"), (0, 5, True, "inconclusive"),
    (5, 1, False, "supported"), (0, 8, False, "contradicted"),
])
def test_down_from_everywhere(down: int, up: int, episodic: bool, status: str) -> None:
    rows = many("vlast.kz", "down", down) + many("vlast.kz", "accessible", up, start="2020-12-03")
    r = judge(claim("down", ("vlast.kz",), episodic=episodic), rows)
    assert r["status"] == status and r["share_of"] == "down"
    if down:
        assert r["example_ids"]


def test_down_is_not_blocked() -> None:
    r = judge(claim("down", ("vlast.kz",)), many("vlast.kz", "blocked", 6))
    assert r["status"] == "contradicted" and r["n_blocked"] == 6


@pytest.mark.parametrize("change,avaaz,status", [
    ("blocked", "blocked", "supported"),
    ("blocked", "accessible", "contradicted"),   # pooled this was 50 % 'intermittent' → supported
    ("blocked", None, "inconclusive"),           # avaaz not measured: 'both' cannot be supported
])
def test_each_judges_every_site_on_its_own(change: str, avaaz: str | None, status: str) -> None:
    rows = many("change.org", change, 10) + (many("avaaz.org", avaaz, 10) if avaaz else [])
    c = claim("blocked", ("change.org", "avaaz.org"), quantifier="each")
    r = judge(c, rows)
    assert r["status"] == status, r["explanation"]
    assert "each" in r["explanation"]


def test_pooled_would_have_supported_both_sites_wrongly() -> None:
    rows = many("change.org", "blocked", 10) + many("avaaz.org", "accessible", 10)
    assert judge(claim("intermittent", ("change.org", "avaaz.org")), rows)["status"] == "supported"
    assert judge(claim("intermittent", ("change.org", "avaaz.org"), quantifier="each"), rows)["status"] \
        == "contradicted"


@pytest.mark.parametrize("blocked_sites,status", [(1, "inconclusive"), (2, "inconclusive"), (3, "supported"),
                                                  (0, "contradicted")])
def test_many_needs_more_than_one_blocked_site(blocked_sites: int, status: str) -> None:
    sites = [f"vpn{i}.example" for i in range(6)]
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(sites):
        rows += many(s, "blocked" if i < blocked_sites else "accessible", 5)
    r = judge(claim("blocked", tuple(sites), quantifier="many"), rows)
    assert r["status"] == status, r["explanation"]
    some = judge(claim("blocked", tuple(sites), quantifier="some"), rows)
    assert some["status"] == ("supported" if blocked_sites else "contradicted")


def test_weak_interception_is_said_in_the_explanation() -> None:
    rows = (many("facebook.com", "blocked", 3, blocking="tls_mitm", rule="tls_mitm.unknown_authority_window")
            + many("facebook.com", "blocked", 2, blocking="tls_mitm", mitm_root="CN=Qaznet Trust Network",
                   start="2020-12-10"))
    r = judge(claim("mitm", ("facebook.com",)), rows)
    assert r["status"] == "supported"
    assert "3 of the intercepted measurements rest on weaker evidence" in r["explanation"]


def test_untested_targets_and_repeated_facts_are_said() -> None:
    c = claim("blocked", ("lalafo.kg",), same_fact_as="B1-first")
    r = judge(c, many("lalafo.kg", "blocked", 5))
    assert r["untested_targets"] == "lalafo.kg" and "not in OONI's 2021 test lists (lalafo.kg)" in r["explanation"]
    assert r["same_fact_as"] == "B1-first" and "counted once" in r["explanation"]
    r2 = judge(claim("blocked", ("change.org",)), many("change.org", "blocked", 5))
    assert r2["untested_targets"] == "" and pd.isna(r2["same_fact_as"]) or r2["same_fact_as"] is None


def test_shipped_claims_are_judged_with_the_new_rules() -> None:
    """Every shipped claim judges on a frame without error; the corrected ones by their new rule."""
    rows = ([row("vlast.kz", "down", day="2021-01-10", vantage=f"KZ/AS{9198 + i}") for i in range(3)]
            + many("vk.com", "accessible", 5, start="2020-10-02")
            + many("vk.com", "blocked", 5, start="2020-10-10"))
    res = compare(load_claims(), frame(rows)).set_index("claim_id")
    assert res.loc["C8-vlast-ddos", "status"] == "supported"
    assert res.loc["Overview-jan-2021-ddos", "status"] == "supported"
    assert res.loc["C5-qaznet-2019-ended", "status"] == "supported"  # October's blocking is not interception
    assert res.loc["A3-sts-oct-2020", "status"] == "supported"
