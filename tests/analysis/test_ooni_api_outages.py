"""OONI's API client (loopback stand-in with the real answers' shapes) and outages from volume."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import aiohttp
import pandas as pd
import pytest

from analysis.ooni_api import ApiError, OoniApi, coverage, windows
from analysis.outages import claim_evidence, strength, volume_drops
from analysis.s3 import RetryPolicy
from tests.fixtures.ooni_api import FakeOoniApi, synthetic_metadata

FAST = RetryPolicy(attempts=3, base=0.01, cap=0.02, connect_timeout=5, read_timeout=5)


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _with_api(base: str, fn):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        return await fn(OoniApi(s, base, retry=FAST, min_interval=0.0))


def test_windows_cut_at_180_days() -> None:
    w = windows(dt.date(2020, 6, 1), dt.date(2021, 5, 31))
    assert w[0] == (dt.date(2020, 6, 1), dt.date(2020, 11, 27)) and w[-1][1] == dt.date(2021, 5, 31)
    assert all((b - a).days + 1 <= 180 for a, b in w) and len(w) == 3


def test_measurements_pages_by_offset() -> None:
    with FakeOoniApi(synthetic_metadata(days=10)) as api:
        async def go(c: OoniApi) -> list:
            return [m async for m in c.measurements(probe_cc="KZ", since="2021-01-01", until="2021-01-04", limit=50)]
        rows = _run(_with_api(api.base, go))
        pages = [x for x in api.log if x.startswith("measurements")]
    kz_days = [m for m in synthetic_metadata(days=10) if m["probe_cc"] == "KZ"
               and m["measurement_start_time"][:10] < "2021-01-04"]
    assert len(rows) == len(kz_days) and len({r["measurement_uid"] for r in rows}) == len(rows)
    assert len(pages) == -(-len(rows) // 50) + (1 if len(rows) % 50 == 0 else 0)
    assert rows[0]["probe_asn"].startswith("AS") and "measurement_url" in rows[0]


def test_coverage_counts_per_day_and_network_with_a_429() -> None:
    with FakeOoniApi(synthetic_metadata(days=60)) as api:
        api.throttle_at = {1}
        cov = _run(_with_api(api.base, lambda c: coverage(c, "KZ", dt.date(2021, 1, 1), dt.date(2021, 3, 1))))
        assert api.n == 2  # one 429, then the answer
    assert set(cov.columns) >= {"day", "probe_asn", "n", "anomaly_count"}
    assert set(cov["probe_asn"]) == {"AS9198", "AS48716"}
    assert cov[(cov["day"] == "2021-01-05") & (cov["probe_asn"] == "AS48716")]["n"].item() == 40 + 4 % 3
    assert cov[cov["day"] == "2021-01-20"]["probe_asn"].tolist() == ["AS48716"]


def test_coverage_skips_a_day_that_is_no_date(caplog: pytest.LogCaptureFixture) -> None:
    """Break test: coverage kept the API's measurement_start_day as text, so an impossible day
    ("2021-02-30") became a row and volume_drops died reading it. Now such a row is skipped and
    said (a warning naming it and the count); the real days are counted as before."""
    meta = synthetic_metadata(days=10)
    odd = [dict(m, measurement_start_time=w) for m, w in zip(
        (m for m in meta if m["probe_cc"] == "KZ"), ("2021-01-0x 00:00:00", "2021-01-1- 00:00:00"), strict=False)]
    with FakeOoniApi(meta + odd) as api, caplog.at_level("WARNING", logger="analysis.ooni_api"):
        cov = _run(_with_api(api.base, lambda c: coverage(c, "KZ", dt.date(2021, 1, 1), dt.date(2021, 1, 10))))
    assert set(cov["day"]) == {f"2021-01-{d:02d}" for d in range(1, 11)}
    assert cov["n"].sum() == len([m for m in meta if m["probe_cc"] == "KZ"])
    assert "'2021-01-0x' is not a day of the window" in caplog.text and "2 row(s) skipped" in caplog.text
    volume_drops(cov)  # reads every day


def test_api_error_answer_and_quota_are_clear() -> None:
    with FakeOoniApi(synthetic_metadata(days=2)) as api:
        with pytest.raises(ApiError, match="Axis X and Y cannot be the same"):
            _run(_with_api(api.base, lambda c: c.aggregation(axis_x="probe_asn", axis_y="probe_asn",
                                                             since="2021-01-01", until="2021-01-02")))
        api.quota = 3
        with pytest.raises(ApiError, match="rate limit"):
            _run(_with_api(api.base, lambda c: c.aggregation(probe_cc="KZ", since="2021-01-01", until="2021-01-02")))


def _cov_from(meta: list[dict]) -> pd.DataFrame:
    f = pd.DataFrame({"day": [m["measurement_start_time"][:10] for m in meta if m["probe_cc"] == "KZ"],
                      "probe_asn": [m["probe_asn"] for m in meta if m["probe_cc"] == "KZ"]})
    return f.value_counts().rename("n").reset_index()


def test_a_silent_network_is_found_graded_and_tied_to_the_claim() -> None:
    drops = volume_drops(_cov_from(synthetic_metadata(days=60)))
    assert len(drops) == 1
    d = drops.iloc[0]
    assert (d["probe_asn"], d["first"], d["last"], d["days"], d["n"]) == ("AS9198", dt.date(2021, 1, 20),
                                                                          dt.date(2021, 1, 21), 2, 0)
    assert d["strength"] == "weak"  # baseline ~31/day: below STRONG_BASELINE, and below 2×MIN_BASELINE
    claim = SimpleNamespace(id="A3-almaty-jan-2021", testable=True, expect="outage",
                            period_start=dt.date(2021, 1, 1), period_end=dt.date(2021, 1, 31))
    ev = claim_evidence([claim], drops)
    assert ev[0]["strength"] == "weak" and len(ev[0]["events"]) == 1 and ev[0]["events"][0]["probe_asn"] == "AS9198"


def test_strength_levels() -> None:
    assert strength(baseline=150, n=0, days=2, countrywide=False)[0] == "strong"
    assert strength(baseline=150, n=10, days=1, countrywide=False)[0] == "moderate"
    assert strength(baseline=150, n=0, days=1, countrywide=True)[0] == "weak"
    assert strength(baseline=25, n=0, days=1, countrywide=False)[0] == "weak"


def test_every_network_dropping_together_is_weak_and_said_so() -> None:
    rows = []
    for d in range(50):
        day = (dt.date(2021, 1, 1) + dt.timedelta(days=d)).isoformat()
        for asn in ("AS9198", "AS48716", "AS21299"):
            rows.append((day, asn, 0 if d in (40, 41) else 200))
    drops = volume_drops(pd.DataFrame(rows, columns=["day", "probe_asn", "n"]))
    assert len(drops) == 3 and set(drops["strength"]) == {"weak"} and drops["countrywide"].all()
    assert "OONI's collection" in drops.iloc[0]["why"]


def test_no_baseline_no_judgement() -> None:
    rows = [((dt.date(2021, 1, 1) + dt.timedelta(days=d)).isoformat(), "AS1", 5 if d < 30 else 0) for d in range(40)]
    assert volume_drops(pd.DataFrame(rows, columns=["day", "probe_asn", "n"])).empty  # 5/day: too thin


def _frame_of(meta: list[dict]) -> pd.DataFrame:  # type: ignore[type-arg]
    """An analysis frame's columns the volume section reads, from metadata rows."""
    return pd.DataFrame({"source": "ooni", "probe_cc": [m["probe_cc"] for m in meta],
                         "probe_asn": [m["probe_asn"] for m in meta],
                         "measurement_start_time": pd.to_datetime([m["measurement_start_time"] for m in meta],
                                                                  utc=True)})


def test_api_counts_beside_a_store_are_found_and_preferred(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The API's counts saved beside a sync output are found from the output, its store/ or a file
    in it; the volume section uses them (the store holds a sample only) and shows the store's count
    per network beside them; counts of another country are not used."""
    from analysis.outages import coverage_beside, report_section, save_api_coverage

    meta = synthetic_metadata(days=60)
    out = tmp_path / "kz"
    (out / "store" / "day=2021-01-02").mkdir(parents=True)
    save_api_coverage(_cov_from(meta), out, {"cc": "KZ", "since": "2021-01-01", "until": "2021-03-01",
                                             "test": "web_connectivity", "api_url": "http://127.0.0.1:1"})
    assert coverage_beside([tmp_path / "elsewhere"]) is None
    for p in (out, out / "store", out / "store" / "day=2021-01-02"):
        found = coverage_beside([p])
        assert found is not None and found[1]["cc"] == "KZ" and found[2] == out / "api-coverage.csv"
    api = coverage_beside([out])
    sample = [m for m in meta if m["probe_cc"] == "KZ"][::50]  # what a sync kept: a sample
    claim = SimpleNamespace(id="A3-almaty-jan-2021", testable=True, expect="outage",
                            period_start=dt.date(2021, 1, 1), period_end=dt.date(2021, 1, 31))
    sec = report_section([claim], _frame_of(sample), "KZ", api)
    assert sec is not None and sec["source"] == "api"
    assert sec["n_measurements"] == sum(1 for m in meta if m["probe_cc"] == "KZ")
    assert [d["probe_asn"] for d in sec["drops"]] == ["AS9198"] and sec["claims"][0]["strength"] == "weak"
    by = {n["probe_asn"]: n for n in sec["networks"]}
    assert by["AS9198"]["in_store"] == sum(1 for m in sample if m["probe_asn"] == "AS9198")
    assert by["AS9198"]["days"] == 58 and "fetched" in sec["source_text"]
    # judged for another country: the KZ counts are not used; the store's own are
    other = report_section([claim], _frame_of(sample), "RU", api)
    assert other is None  # the frame has no RU measurement and the API counts are KZ's
    own = report_section([claim], _frame_of(sample), "KZ", None)
    assert own is not None and own["source"] == "store" and own["n_measurements"] == len(sample)
    assert "kzprobe ooni coverage --store" in own["source_text"]


def test_coverage_skips_and_counts_rows_whose_numbers_are_no_counts(caplog: pytest.LogCaptureFixture) -> None:
    """Break test: coverage trusted the API's numbers: a count "many" or a row that is not an object
    died (int("many")); a count -5, 1e308 or true and a probe_asn "Kazakhtelecom" or 2**40 became rows
    and the report printed them as outage evidence. Now each such row is skipped and counted."""
    meta = synthetic_metadata(days=10)
    day = "2021-01-05"
    good = {"measurement_start_day": day, "probe_asn": 9198}
    hostile = [dict(good, measurement_count="many"), "not an object", [1, 2], None,
               *(dict(good, measurement_count=v) for v in (-5, 10**308, True, 2.0, {"n": 1})),
               dict(good, anomaly_count=-1, measurement_count=1),
               *(dict(good, probe_asn=v, measurement_count=1) for v in ("Kazakhtelecom", 2**40, True))]
    with FakeOoniApi(meta) as api, caplog.at_level("WARNING", logger="analysis.ooni_api"):
        api.extra_rows = hostile
        cov = _run(_with_api(api.base, lambda c: coverage(c, "KZ", dt.date(2021, 1, 1), dt.date(2021, 1, 10))))
    assert set(cov["probe_asn"]) == {"AS9198", "AS48716"}
    assert cov["n"].sum() == len([m for m in meta if m["probe_cc"] == "KZ"])  # no hostile count added
    assert "13 row(s) skipped, not an object" in caplog.text and "'many'" in caplog.text


def test_a_damaged_api_coverage_file_is_named_left_out_or_its_bad_rows_skipped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Break test: a damaged api-coverage.csv beside a store killed the report (random bytes:
    UnicodeDecodeError; a count "abc": ValueError in volume_drops). Now an unreadable file is named
    and left out (the store's own counts used) and bad rows are skipped and counted; the volume
    section says so."""
    from analysis.outages import coverage_beside, report_section, save_api_coverage

    meta = synthetic_metadata(days=60)
    out = tmp_path / "kz"
    (out / "store").mkdir(parents=True)
    csv = save_api_coverage(_cov_from(meta), out, {"cc": "KZ", "since": "2021-01-01", "until": "2021-03-01"})
    sample = [m for m in meta if m["probe_cc"] == "KZ"][::50]
    with csv.open("a") as f:
        f.write("2021-01-05,AS9198,abc\n2021-02-30,AS9198,4\n2021-01-05,Kazakhtelecom,4\n2021-01-05,AS9198,-5\n")
    api = coverage_beside([out])
    assert api is not None and api[1]["bad_rows"] == 4
    sec = report_section([], _frame_of(sample), "KZ", api)
    assert sec is not None and sec["source"] == "api"
    assert sec["n_measurements"] == sum(1 for m in meta if m["probe_cc"] == "KZ")
    assert sec["problems"] == ["4 row(s) of api-coverage.csv were skipped (a day not a date, a network not an ASN "
                               "or a count not a whole number of measurements)"]
    csv.write_bytes(bytes(range(256)) * 40)
    api = coverage_beside([out])
    assert api is not None and api[0].empty and "not a coverage CSV" in api[1]["unreadable"]
    sec = report_section([], _frame_of(sample), "KZ", api)
    assert sec is not None and sec["source"] == "store" and sec["n_measurements"] == len(sample)
    assert len(sec["problems"]) == 1
    assert sec["problems"][0].startswith("api-coverage.csv beside the store could not be read")
