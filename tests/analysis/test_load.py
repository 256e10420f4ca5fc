"""analysis.load: our JSONL and OONI's files of every shape into one typed frame."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import analysis.load as L
from analysis.load import COLUMNS, LoadError, empty_frame, load, load_file
from tests.conftest import shared_path

SAMPLES_DIR = "data", "ooni-samples"


@pytest.fixture(scope="module")
def samples() -> list[Path]:
    d = shared_path(*SAMPLES_DIR)
    files = sorted(d.rglob("*.json"))
    assert len(files) >= 17
    return files


@pytest.fixture(scope="module")
def ours() -> dict[str, dict]:
    """Real kzprobe records (probe.verdict.judge + probe.records.measurement), one per kind."""
    from bench.analysis import templates

    out = {}
    for i, (text, _) in enumerate(templates()):
        rec = json.loads(text.replace("@UID@", f"uid{i}").replace("@RID@", "rid").replace("@ASN@", "AS9198")
                         .replace("@CC@", "KZ").replace("@VID@", f"vp{i}").replace("2000-01-01 00:00:00", "2021-02-03 04:05:06"))
        out[rec["test_keys"]["x_rule"]] = rec
    return out


def write_jsonl(path: Path, lines: list[str | dict], *, newline_at_end: bool = True) -> Path:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    path.write_text(text + ("\n" if newline_at_end else ""))
    return path


def distinct(records: list[dict], tag: str = "d") -> list[dict]:
    """``records`` each with its own measurement id (the loader counts a repeated one once)."""
    return [{**m, "x_measurement_uid": f"{tag}{i}"} for i, m in enumerate(records)]


def test_every_ooni_sample_loads(samples: list[Path]) -> None:
    r = load([shared_path(*SAMPLES_DIR)])
    assert r.stats.files == len(samples)
    assert r.stats.loaded == len(samples) == len(r.frame)
    assert (r.stats.torn, r.stats.invalid, r.stats.skipped, r.stats.errors) == (0, 0, 0, [])
    assert set(r.frame["source"]) == {"ooni"}
    assert sorted(Path(f).name for f in r.frame["file"]) == sorted(p.name for p in samples)


def test_columns_and_dtypes_are_the_contract(samples: list[Path]) -> None:
    f = load([shared_path(*SAMPLES_DIR)]).frame
    e = empty_frame()
    assert tuple(f.columns) == tuple(e.columns) == COLUMNS
    for c in COLUMNS:
        assert f[c].dtype == e[c].dtype or (isinstance(f[c].dtype, pd.CategoricalDtype)
                                             and isinstance(e[c].dtype, pd.CategoricalDtype)), c
    assert str(f["measurement_start_time"].dtype) == "datetime64[ns, UTC]"
    assert list(f["blocking"].dtype.categories) == list(L.BLOCKING_VALUES)
    assert f["input"].dtype == pd.StringDtype("pyarrow")
    assert f["line"].dtype == "int32" and f["body_length"].dtype == "Int64"


def test_ooni_columns_by_hand(samples: list[Path]) -> None:
    """A few measurements read by hand: what the frame must say about them."""
    f = load([shared_path(*SAMPLES_DIR)]).frame.set_index(pd.Index([Path(x).name for x in load(
        [shared_path(*SAMPLES_DIR)]).frame["file"]]))
    r = f.loc["bug_352.json"]
    assert (r.input, r.domain, r.probe_cc, r.probe_asn, r.test_name) == ("https://fa.wikipedia.org", "fa.wikipedia.org",
                                                                         "IR", "AS197207", "web_connectivity")
    assert r.measurement_start_time == pd.Timestamp("2020-03-02 13:08:54", tz="UTC")
    assert (r.tcp_failure, r.http_failure, r.vantage_id) == ("generic_timeout_error", "connect_error", "IR/AS197207")
    assert r.data_format_version == "0.2.0" and r.report_id.startswith("20200302T130853Z_AS197207")
    assert len(r.measurement_uid) == 32  # no measurement_uid in the file: a stable hash
    r = f.loc["web_connectivity_b64_hdr.json"]
    assert r.measurement_uid == "01201707254a40e230fa0f9c80ea07a421b9f2ec"  # the file's own
    r = f.loc["requests_none.json"]
    assert r.dns_failure == "dns_nxdomain_error" and r.probe_network_name == "Slovak Telecom, a. s."
    r = f.loc["test_keys_none.json"]  # test_keys null: a row with everything unknown
    assert pd.isna(r.blocking) and pd.isna(r.ooni_blocking) and r.outcome == "inconclusive" and r.verdict_source == "ooni"
    r = f.loc["firefoxcom.measurement.json"]
    assert r.tls_issuers.startswith("CN=R3,O=Let's Encrypt,C=US → CN=ISRG Root X1")
    assert pd.isna(r.mitm_root) and r.body_length == 114618
    r = f.loc["web_connectivity_null.json"]
    assert r.control_failure == "connection_refused"


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    drop = ["file", "line"]
    pd.testing.assert_frame_equal(a.drop(columns=drop).reset_index(drop=True).astype({"test_name": "string",
                                  "probe_asn": "string", "probe_cc": "string"}),
                                  b.drop(columns=drop).reset_index(drop=True).astype({"test_name": "string",
                                  "probe_asn": "string", "probe_cc": "string"}))


@pytest.mark.parametrize("shape", ["jsonl", "jsonl.gz", "array", "array.gz", "pretty", "pretty.gz"])
def test_file_shapes_load_the_same(tmp_path: Path, samples: list[Path], shape: str) -> None:
    ms = [json.loads(p.read_text()) for p in samples[:5]]
    if shape.startswith("jsonl"):
        text = "\n".join(json.dumps(m) for m in ms) + "\n"
    elif shape.startswith("array"):
        text = json.dumps(ms, indent=2)
    else:
        ms = ms[:1]
        text = json.dumps(ms[0], indent=4)
    name = "m." + ("jsonl" if shape.startswith("jsonl") else "json") + (".gz" if shape.endswith(".gz") else "")
    p = tmp_path / name
    p.write_bytes(gzip.compress(text.encode()) if shape.endswith(".gz") else text.encode())
    r = load([tmp_path])
    assert r.stats.loaded == len(ms) and not r.stats.errors
    expect = load(samples[:len(ms)]).frame
    _same_rows(r.frame, expect)
    assert list(r.frame["line"]) == list(range(1, len(ms) + 1))


def test_torn_invalid_and_other_tests_are_counted_never_fatal(tmp_path: Path, ours: dict[str, dict]) -> None:
    good = ours["https.verified"]
    p = write_jsonl(tmp_path / "run.jsonl", [
        good,
        "{not json",
        "[1, 2]",
        {**good, "test_name": "signal"},
        "",
        {**good, "x_measurement_uid": "second"},
        json.dumps(good)[:500],  # torn: the run was killed mid-write
    ], newline_at_end=False)
    r = load([p])
    s = r.stats
    assert (s.loaded, s.torn, s.invalid, s.skipped) == (2, 1, 2, 1)
    assert s.lines == 6  # the blank line is not counted
    assert [e.split(": ")[0] for e in s.errors] == [f"{p}:2", f"{p}:3", f"{p}:7"]
    assert "torn last line" in s.errors[2]
    assert list(r.frame["line"]) == [1, 6] and list(r.frame["measurement_uid"]) == ["uid0", "second"]


def test_unreadable_gzip_keeps_what_was_read(tmp_path: Path, ours: dict[str, dict]) -> None:
    data = gzip.compress(("\n".join(json.dumps(m) for m in ours.values()) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    r = load([tmp_path])
    assert r.stats.torn + r.stats.invalid >= 1 and any("cut.jsonl.gz" in e for e in r.stats.errors)
    assert 0 <= len(r.frame) < len(ours)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="nope"):
        load([tmp_path / "nope"])


@pytest.mark.parametrize(("key", "value", "says"), [("test_keys", [1, 2], "test_keys is an array"),
                                                      ("test_keys", "blocked", "test_keys is a string"),
                                                      ("input", 42, "input is a number"),
                                                      ("input", ["https://x.kz/"], "input is an array")])
def test_a_record_of_the_wrong_shape_is_invalid_not_a_measurement(tmp_path: Path, key: str, value: Any,
                                                                   says: str) -> None:
    """Non-object test_keys and a non-string input were loaded as measurements (break test): each
    is counted invalid, named file:line, and skipped; the good record beside it is kept."""
    good = json.loads(shared_or_fixture_record())
    bad = {**good, key: value, "x_measurement_uid": "f" * 32}
    (tmp_path / "m.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    r = load([tmp_path])
    assert len(r.frame) == 1 and r.stats.invalid == 1
    assert any(e.startswith(f"{tmp_path / 'm.jsonl'}:2: ") and says in e for e in r.stats.errors), r.stats.errors


def shared_or_fixture_record() -> str:
    """One kzprobe 0.1.0 record (tests/data/records-0.1.0.jsonl, first line)."""
    return (Path(__file__).resolve().parents[1] / "data" / "records-0.1.0.jsonl").read_text().splitlines()[0]


def test_empty_inputs_give_the_empty_frame(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    r = load([tmp_path])
    assert len(r.frame) == 0 and tuple(r.frame.columns) == COLUMNS and r.stats.files == 1


# --------------------------------------------------------------------------- our records


EXPECT_OURS = [
    # rule, blocking, accessible, outcome
    ("https.verified", "false", True, "accessible"),
    ("dns.probe_failure", "dns", False, "blocked"),
    ("tls.control_ok", "tls", False, "blocked"),
    ("tls_mitm.known_root", "tls_mitm", False, "blocked"),
    ("tcp_ip.control_ok", "tcp_ip", False, "blocked"),
    ("tcp_ip.both_fail", "false", False, "down"),
    ("http.blockpage", "http-diff", False, "blocked"),
    ("vantage.offline", None, None, "inconclusive"),
]


@pytest.mark.parametrize("rule,blocking,accessible,outcome", EXPECT_OURS)
def test_our_records(tmp_path: Path, ours: dict[str, dict], rule: str, blocking: str | None,
                     accessible: bool | None, outcome: str) -> None:
    rec = ours[rule]
    r = load([write_jsonl(tmp_path / "ours.jsonl", [rec])])
    row = r.frame.iloc[0]
    assert row.source == "kzprobe" and row.verdict_source == "kzprobe"
    assert row.rule == rule and row.reason == rec["test_keys"]["x_reason"]
    assert (None if pd.isna(row.blocking) else row.blocking) == blocking
    assert (None if pd.isna(row.accessible) else bool(row.accessible)) == accessible
    assert row.outcome == outcome
    assert row.vantage_offline == (rule == "vantage.offline")
    assert pd.isna(row.ooni_blocking) and pd.isna(row.ooni_accessible)
    assert row.domain == rec["x_input_metadata"]["domain"] and row.vantage_id == rec["annotations"]["vantage_id"]
    assert row.measurement_uid == rec["x_measurement_uid"]
    assert row.measurement_start_time == pd.Timestamp("2021-02-03 04:05:06", tz="UTC")
    if rule == "tls_mitm.known_root":
        assert row.mitm_root == "CN=Qaznet Trust Network,C=KZ"
        assert row.tls_issuers.endswith("CN=Qaznet Trust Network,C=KZ")
    else:
        assert pd.isna(row.mitm_root)
    if rule == "https.verified":
        assert row.body_length == rec["test_keys"]["requests"][0]["response"]["x_body_length"] > 1000
        assert "trustme" in row.tls_issuers


def test_fast_path_equals_generic_path(tmp_path: Path, ours: dict[str, dict]) -> None:
    """Our records take the msgspec fast path; the dict path must give the very same row."""
    recs = list(ours.values())
    p = write_jsonl(tmp_path / "ours.jsonl", recs)
    fast = load([p]).frame
    rows = [L.row(m, str(p), i) for i, m in enumerate(recs, start=1)]
    generic = L._finalize(L.rows_frame(rows))
    pd.testing.assert_frame_equal(fast, generic)


def test_odd_types_fall_back_to_the_generic_path(tmp_path: Path, ours: dict[str, dict]) -> None:
    rec = {**ours["https.verified"], "probe_asn": 9198, "annotations": {"engine_name": "kzprobe", "lab_scenario": "kz-2021"}}
    r = load([write_jsonl(tmp_path / "odd.jsonl", [rec])])
    # an integer ASN is that network, as OONI writes it (it made a vantage KZ/9198 of its own: break test F15)
    assert r.stats.loaded == 1 and r.frame.iloc[0].probe_asn == "AS9198"
    assert r.frame.iloc[0].lab_scenario == "kz-2021" and r.frame.iloc[0].vantage_id == "KZ/AS9198"


@pytest.mark.parametrize("blocking,accessible,outcome", [
    (None, None, "inconclusive"), (None, True, "inconclusive"), ("false", True, "accessible"),
    ("false", False, "down"), ("false", None, "inconclusive"), ("dns", False, "blocked"), ("tls_mitm", None, "blocked"),
])
def test_outcome_rule(blocking: str | None, accessible: bool | None, outcome: str) -> None:
    assert L._outcome(blocking, accessible) == outcome


@pytest.mark.parametrize("blocking", [*__import__("probe.vocab").vocab.BLOCKING_TYPES, "some_future_type"])
def test_no_blocking_type_is_silently_inconclusive(tmp_path: Path, ours: dict[str, dict], blocking: str) -> None:
    """Every blocking type of probe.vocab — and one this version does not know yet — loads as
    "blocked", on the fast path and the generic one (issue 10: a new type became "inconclusive")."""
    rec = ours["dns.probe_failure"]
    # our verdict is in x_blocking (blocking holds OONI's word, docs/ooni-records.md)
    rec = {**rec, "test_keys": {**rec["test_keys"], "x_blocking": blocking, "x_accessible": False}}
    p = write_jsonl(tmp_path / "ours.jsonl", [rec])
    row = load([p]).frame.iloc[0]
    assert row.outcome == "blocked"
    assert L.row(rec, str(p), 1)["outcome"] == "blocked"
    known = blocking != "some_future_type"
    assert (row.blocking == blocking) if known else pd.isna(row.blocking)


@pytest.mark.parametrize("url,domain", [
    ("https://WWW.Example.ORG./x", "www.example.org"),
    ("https://сайт.қаз/", "xn--80aswg.xn--80ao21a"),
    ("http://[2001:db8::1]:8080/", "2001:db8::1"),
    ("not a url", None),
])
def test_domain_of(url: str, domain: str | None) -> None:
    assert L.domain_of(url) == domain


def test_parallel_ranges_give_the_same_frame_and_global_line_numbers(tmp_path: Path, ours: dict[str, dict],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    recs = [{**m, "x_measurement_uid": f"u{i}-{k}"} for i in range(40) for k, m in enumerate(ours.values())]
    lines: list[str | dict] = list(recs)
    lines.insert(200, "{broken")
    p = write_jsonl(tmp_path / "big.jsonl", lines)
    serial = load([p], workers=1)
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(L, "RANGE_BYTES", p.stat().st_size // 7)
    parallel = load([p], workers=2)
    pd.testing.assert_frame_equal(serial.frame, parallel.frame)
    assert serial.stats.errors == parallel.stats.errors == [f"{p}:201: " + serial.stats.errors[0].split(": ", 1)[1]]
    assert (parallel.stats.loaded, parallel.stats.invalid, parallel.stats.lines) == (len(recs), 1, len(recs) + 1)


def test_load_file_is_one_file(tmp_path: Path, ours: dict[str, dict]) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", list(ours.values()))
    assert len(load_file(p)) == len(ours)


def test_progress_flag_without_a_terminal(tmp_path: Path, ours: dict[str, dict]) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", list(ours.values()))
    assert len(load([p], progress=True).frame) == len(ours)


def test_parallel_over_many_files_keeps_order_and_counts(tmp_path: Path, ours: dict[str, dict],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    recs = [{**m, "x_measurement_uid": f"u{i}-{k}"} for i in range(20) for k, m in enumerate(ours.values())]
    lines: list[str | dict] = list(recs)
    lines.insert(50, "[]")
    (tmp_path / "a").mkdir()
    big = write_jsonl(tmp_path / "a" / "big.jsonl", lines)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress((json.dumps(recs[0]) + "\n{torn").encode()))
    paths = [tmp_path, shared_path(*SAMPLES_DIR)]
    serial = load(paths, workers=1)
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(L, "RANGE_BYTES", big.stat().st_size // 3)
    parallel = load(paths, workers=2)
    pd.testing.assert_frame_equal(serial.frame, parallel.frame)
    assert serial.stats == parallel.stats
    assert (parallel.stats.files, parallel.stats.torn, parallel.stats.invalid) == (2 + 17, 1, 1)
    assert parallel.stats.errors[0].startswith(f"{big}:51: ")


def test_progress_bar_on_a_terminal(tmp_path: Path, ours: dict[str, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    p = write_jsonl(tmp_path / "a.jsonl", distinct(list(ours.values()) * 300))
    assert len(load([p], progress=True, workers=1).frame) == len(ours) * 300


def test_big_file_with_a_bad_first_line_is_jsonl(tmp_path: Path, ours: dict[str, dict],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "WHOLE_MAX_BYTES", 100)
    p = write_jsonl(tmp_path / "a.jsonl", ['{"torn', *ours.values()])
    r = load([p])
    assert r.stats.loaded == len(ours) and r.stats.invalid == 1 and r.stats.errors[0].startswith(f"{p}:1: ")


def test_ours_and_ooni_mixed_in_one_jsonl(tmp_path: Path, ours: dict[str, dict], samples: list[Path]) -> None:
    ooni = [json.loads(p.read_text()) for p in samples[:3]]
    lines: list[str | dict] = [*ours.values(), ooni[0], *distinct([ours["https.verified"]]), "", ooni[1], ooni[2]]
    r = load([write_jsonl(tmp_path / "mixed.jsonl", lines)])
    f = r.frame
    assert list(f["source"]) == ["kzprobe"] * len(ours) + ["ooni", "kzprobe", "ooni", "ooni"]
    n = len(ours)
    assert list(f["line"]) == list(range(1, n + 3)) + [n + 4, n + 5]
    assert r.stats.loaded == n + 4 and not r.stats.errors


@pytest.mark.parametrize("text,expect", [
    ("2021-01-02 03:04:05", "2021-01-02 03:04:05"),
    ("2020-02-29 23:59:59", "2020-02-29 23:59:59"),
    ("2020-02-30 00:00:00", None),  # pyarrow's strptime would roll it over to 2020-03-01
    ("2021-01-02 03:04:60", None),  # and this to 03:05:00
    ("2021-01-02T03:04:05Z", "2021-01-02 03:04:05"),  # zero-padded ISO 8601 forms are read too
    ("2021-01-02T03:04:05.250000+00:00", "2021-01-02 03:04:05.250"),
    ("2021-01-02T08:04:05+05:00", "2021-01-02 03:04:05"),
    # lenient forms pandas and strptime read: not OONI's, not ours
    ("2021-1-2 03:04:05", None),
    ("2021-01-02 3:4:5", None),
    ("2021-01-02", None),
    ("2021-01-02 03:04", None),
    ("20210102T030405", None),
    (" 2021-01-02 03:04:05", None),
    ("2021-01-02 03:04:05 ", None),
    ("2021-01-02 03:04:05.", None),
    ("0000-01-01T00:00:00Z", None),  # outside datetime64[ns]: pandas raised OutOfBoundsDatetime
    ("2300-01-01 00:00:00", None),
    ("junk", None),
    (None, None),
    (5, None),
])
def test_measurement_times(text: object, expect: str | None) -> None:
    from analysis.start_time import is_start_time, start_times

    got = start_times(["2000-01-01 00:00:00", text])
    assert str(got.dtype) == "datetime64[ns, UTC]"
    assert (pd.isna(got[1]) if expect is None else got[1] == pd.Timestamp(expect, tz="UTC"))
    assert is_start_time(text) == (expect is not None)


def test_every_start_time_of_our_records_and_ooni_samples_is_read() -> None:
    """The strict parser refuses no start time our records (tests/data) or OONI's (the shared
    samples) really have."""
    import re

    from analysis.start_time import start_times

    found = []
    files = [*(Path(__file__).parents[1] / "data").rglob("*.json*"),
             *shared_path("data", "ooni-samples").rglob("*.json*"),
             *shared_path("data", "ooni-samples-more").rglob("*.json*")]
    for p in files:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", errors="replace") as fh:
            found += re.findall(r'"measurement_start_time": *"([^"]*)"', fh.read())
    assert len(found) > 300
    read = start_times(found).notna()
    assert read.all(), [t for t, ok in zip(found, read, strict=True) if not ok][:5]


def test_progress_bar_with_workers(tmp_path: Path, ours: dict[str, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    p = write_jsonl(tmp_path / "a.jsonl", distinct(list(ours.values()) * 50))
    monkeypatch.setattr(L, "RANGE_BYTES", p.stat().st_size // 4)
    assert len(load([p], progress=True, workers=2).frame) == len(ours) * 50


# --------------------------------------------------------------------------- control channel intercepted

INTERCEPTED_REASON = ("this network intercepts TLS (issuer CN=Corp Proxy CA): the control is unusable")


@pytest.mark.parametrize("rule,x_vantage,fast,expect", [
    ("vantage.intercepted", None, True, True),
    ("vantage.intercepted", None, False, True),
    # offline *and* intercepted: the rule says offline, the record's vantage state says both
    ("vantage.offline", {"offline": True, "control_intercepted_by": "CN=Corp Proxy CA"}, True, True),
    ("vantage.offline", {"offline": True, "control_intercepted_by": "CN=Corp Proxy CA"}, False, True),
    ("vantage.offline", {"offline": True, "control_intercepted_by": None}, True, False),
    ("vantage.offline", None, True, False),
    ("vantage.offline", "not an object", False, False),  # malformed: ignored, not fatal
    # a real interception seen against a working control is evidence, not an intercepted control
    ("tls_mitm.control_valid", {"offline": False, "control_intercepted_by": None}, True, False),
])
def test_control_intercepted_from_the_record(tmp_path: Path, ours: dict[str, dict], rule: str | None,
                                             x_vantage: Any, fast: bool, expect: bool) -> None:
    rec = json.loads(json.dumps(ours["vantage.offline"]))
    rec["test_keys"]["x_rule"], rec["test_keys"]["x_vantage"] = rule, x_vantage
    if not fast:  # an odd type elsewhere sends the record down the generic (dict) path
        rec["probe_asn"] = 9198
    r = load([write_jsonl(tmp_path / "run.jsonl", [rec])])
    assert len(r.frame) == 1 and bool(r.frame.iloc[0].control_intercepted) is expect


@pytest.mark.parametrize("intercepted_by,gz,expect", [("CN=Corp Proxy CA", False, True),
                                                      ("CN=Corp Proxy CA", True, True), (None, False, False)])
def test_control_intercepted_from_the_run_summary(tmp_path: Path, ours: dict[str, dict], intercepted_by: str | None,
                                                  gz: bool, expect: bool) -> None:
    recs = [ours["https.verified"], ours["tcp_ip.both_fail"]]
    text = ("\n".join(json.dumps(m) for m in recs) + "\n").encode()
    run = tmp_path / ("rid.jsonl.gz" if gz else "rid.jsonl")
    run.write_bytes(gzip.compress(text) if gz else text)
    (tmp_path / "rid.summary.json").write_text(json.dumps({"report_id": "rid", "control_intercepted_by": intercepted_by}))
    (tmp_path / "sub").mkdir()
    other = write_jsonl(tmp_path / "sub" / "other.jsonl", distinct([ours["https.verified"]]))  # another run: no summary
    whole = load([tmp_path]).frame
    files = whole["file"].astype(str)
    assert list(whole.loc[files == str(run), "control_intercepted"]) == [expect] * len(recs)
    assert list(whole.loc[files == str(other), "control_intercepted"]) == [False]
    assert list(load_file(run)["control_intercepted"]) == [expect] * len(recs)


# --------------------------------------------------------------------------- bounded memory, corrupt input

@pytest.mark.parametrize("where", ["first", "middle", "last-with-newline", "last-torn"])
def test_over_long_line_is_invalid_and_skipped(tmp_path: Path, ours: dict[str, dict], where: str) -> None:
    good = [json.dumps({**ours["https.verified"], "x_measurement_uid": f"u{i}"}) for i in range(3)]
    cap = max(map(len, good)) + 10
    long = '{"test_name": "web_connectivity", "input": "' + "x" * (cap * 3) + '"}'
    lines = {"first": [long, *good], "middle": [good[0], long, good[1], good[2]],
             "last-with-newline": [*good, long], "last-torn": [*good, long]}[where]
    p = write_jsonl(tmp_path / "run.jsonl", lines, newline_at_end=where != "last-torn")
    for kw in ({}, {"workers": 1}):
        r = load([p], max_line_bytes=cap, **kw)
        assert (r.stats.loaded, r.stats.invalid, r.stats.torn) == (3, 1, 0), r.stats
        n = lines.index(long) + 1
        assert r.stats.errors == [f"{p}:{n}: line longer than {cap} bytes ({len(long)} bytes), skipped"]
        assert sorted(r.frame["measurement_uid"]) == ["u0", "u1", "u2"]
        assert list(r.frame["line"]) == [i + 1 for i, x in enumerate(lines) if x != long]


def test_over_long_line_across_blocks_is_never_held(tmp_path: Path, ours: dict[str, dict],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A line crossing block ends, far longer than the cap: skipped piecewise (reads never exceed the cap)."""
    monkeypatch.setattr(L, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(L, "_DISCARD_BYTES", 4096)
    good = json.dumps(ours["https.verified"])
    cap = len(good) + 100
    p = write_jsonl(tmp_path / "run.jsonl", [good, "x" * 200_000, json.dumps(distinct([ours["https.verified"]])[0]),
                                             "[" * 300_000])
    biggest = []
    real_blocks = L._blocks

    def spy(*a, **kw):
        for b in real_blocks(*a, **kw):
            biggest.append(len(b) if isinstance(b, bytes) else 0)
            yield b

    monkeypatch.setattr(L, "_blocks", spy)
    r = load([p], max_line_bytes=cap, workers=1)
    assert (r.stats.loaded, r.stats.invalid) == (2, 2) and list(r.frame["line"]) == [1, 3]
    assert max(biggest) <= L.BLOCK_BYTES + cap + 1
    assert [e.split(": ")[0] for e in r.stats.errors] == [f"{p}:2", f"{p}:4"]


def test_gzip_of_one_endless_line_costs_the_cap(tmp_path: Path) -> None:
    """`head -c N /dev/zero | gzip` (a gzip bomb): one line with no end, skipped in pieces."""
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as fh:
        for _ in range(64):
            fh.write(bytes(1 << 20))
    import tracemalloc

    tracemalloc.start()
    r = load([bomb], max_line_bytes=1 << 20, workers=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(r.frame) == 0 and r.stats.invalid == 1 and r.stats.torn == 0
    assert "line longer than 1048576 bytes" in r.stats.errors[0]
    assert peak < 16 << 20, peak  # the file is 64 MiB of zeros uncompressed


@pytest.mark.parametrize("name,content,message", [
    ("not gzip at all", b"\xee\xe7" + bytes(range(256)) * 8, "not gzip / corrupt compressed file"),
    ("gzip magic, bad method", b"\x1f\x8b\x63" + bytes(range(256)) * 8, "not gzip / corrupt compressed file"),
    ("gzip header, corrupt deflate data", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(255, -1, -1)) * 8,
     "not gzip / corrupt compressed file"),
    ("gzip of binary bytes", gzip.compress(bytes(range(256)) * 8), "not text"),
])
def test_corrupt_compressed_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(content)
    r = load([p])
    assert len(r.frame) == 0 and r.stats.torn == 0 and r.stats.invalid >= 1
    assert message in r.stats.errors[0] and not any("torn" in e for e in r.stats.errors), r.stats.errors


def test_a_carriage_return_does_not_make_a_torn_line(tmp_path: Path, ours: dict[str, dict]) -> None:
    p = tmp_path / "run.jsonl"
    p.write_bytes(b"{bad\rline}\n" + json.dumps(ours["https.verified"]).encode() + b"\r\n")
    r = load([p])
    assert (r.stats.loaded, r.stats.invalid, r.stats.torn) == (1, 1, 0), r.stats.errors


@pytest.mark.parametrize("when", ["not a date", "", 20210101, None, "2021-02-30 00:00:00", "2021-1-5 00:00:00",
                                  "2021-01-05", "0000-01-01T00:00:00Z"])
def test_measurement_without_a_usable_time_is_invalid(tmp_path: Path, ours: dict[str, dict], when: object) -> None:
    bad = {**ours["https.verified"], "measurement_start_time": when, "x_measurement_uid": "bad"}
    if when is None:
        del bad["measurement_start_time"]
    p = write_jsonl(tmp_path / "run.jsonl", [ours["https.verified"], bad, ours["tls.control_ok"]])
    r = load([p])
    assert list(r.frame["line"]) == [1, 3] and r.frame["measurement_start_time"].notna().all()
    assert (r.stats.loaded, r.stats.invalid) == (2, 1)
    assert r.stats.errors[0].startswith(f"{p}:2: measurement_start_time") and "is not a date" in r.stats.errors[0]


def test_over_long_line_in_parallel_ranges(tmp_path: Path, ours: dict[str, dict],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes reading line-aligned ranges skip an over-long line the same, with global line numbers."""
    good = json.dumps(ours["https.verified"])
    cap = len(good) + 100
    lines = [*distinct([ours["https.verified"]] * 20), "y" * (cap * 5), *distinct([ours["https.verified"]] * 20, "b")]
    p = write_jsonl(tmp_path / "run.jsonl", lines)
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(L, "RANGE_BYTES", p.stat().st_size // 5)
    monkeypatch.setattr(L, "BLOCK_BYTES", 2048)
    serial = load([p], max_line_bytes=cap, workers=1)
    par = load([p], max_line_bytes=cap, workers=2)
    for r in (serial, par):
        assert (r.stats.loaded, r.stats.invalid) == (40, 1)
        assert list(r.frame["line"]) == [*range(1, 21), *range(22, 42)]
        assert r.stats.errors[0].startswith(f"{p}:21: line longer than {cap} bytes")


def _slow_task(*_a: Any, **_k: Any) -> Any:  # a range that takes far longer than the test waits
    import time

    time.sleep(60)


@pytest.mark.parametrize("parent_sigterm", ["default", "ignored", "raises"])
def test_ctrl_c_during_a_parallel_load_stops_the_workers_at_once(tmp_path: Path, ours: dict[str, dict],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 parent_sigterm: str) -> None:
    """Ctrl-C while workers load: KeyboardInterrupt now, workers gone — not after every queued
    range is done (second break test: 6–18 s to react). Whatever SIGTERM handler the parent has
    when the workers fork: kzprobe's CLI makes it raise KeyboardInterrupt, then ignores it after
    main() — a worker inheriting either outlived terminate() (full suite: fails after a CLI test)."""
    import signal

    handler = {"default": signal.SIG_DFL, "ignored": signal.SIG_IGN, "raises": signal.default_int_handler}
    before = signal.signal(signal.SIGTERM, handler[parent_sigterm])
    try:
        _ctrl_c_during_a_parallel_load(tmp_path, ours, monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, before)


def _ctrl_c_during_a_parallel_load(tmp_path: Path, ours: dict[str, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing
    import os
    import signal
    import threading
    import time

    p = write_jsonl(tmp_path / "big.jsonl", [{**m, "x_measurement_uid": f"u{i}"} for i, m in
                                              enumerate(list(ours.values()) * 20)])
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(L, "RANGE_BYTES", p.stat().st_size // 4)
    monkeypatch.setattr(L, "_load_task", _slow_task)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # as Ctrl-C does
    # the forked workers inherit a SIGTERM the parent ignores (CI: a handler left by an in-process
    # command made terminate() useless): they must be stopped all the same
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            load([p], workers=2)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    assert time.monotonic() - t0 < 30  # the slow ranges take 60 s each
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == []


def test_store_files_read_together_equal_one_by_one(tmp_path: Path) -> None:
    """The synced store's day files are read in one batch (Arrow, dictionaries for the categorical
    columns): the same frame as reading each file alone, the closed vocabularies' categories in the
    contract's order and the open ones sorted, whatever order the files hold them in; a file that is not
    Parquet is named, the others kept."""
    import datetime as dt

    from analysis.ooni_store import table_from_rows, write_part
    from tests.fixtures.ooni_bucket import as_kz, real_samples

    ms = real_samples(shared_path())[:6]
    paths = []
    for day, asns in ((1, ("AS9198", "AS48716", "AS21299")), (2, ("AS48716", "AS9198", "AS206026"))):
        rows = [L.row(as_kz(m, f"2021-01-0{day} 00:00:{i:02d}", i, asn=asns[i % 3]), f"raw/k{day}", i + 1)
                for i, m in enumerate(ms)]
        table, _ = table_from_rows(rows, list(range(len(rows))), ["0" * 64] * len(rows))
        paths.append(write_part(tmp_path / "store", dt.date(2021, 1, day), "a", table))
    (tmp_path / "store" / "day=2021-01-03").mkdir()
    (tmp_path / "store" / "day=2021-01-03" / "bad.parquet").write_bytes(b"not parquet")
    r = load([tmp_path / "store"])
    one_by_one = L._finalize(L._concat([L.read_store_file(p) for p in paths], finalize=False))
    pd.testing.assert_frame_equal(r.frame, one_by_one)
    assert list(r.frame["probe_asn"].cat.categories) == ["AS206026", "AS21299", "AS48716", "AS9198"]
    for c in ("blocking", "outcome", "source", "verdict_source", "ooni_blocking"):
        assert list(r.frame[c].cat.categories) == list(L.DTYPES[c].categories), c
    assert (r.stats.loaded, len(r.frame)) == (12, 12)
    assert r.stats.by_file[str(paths[1])]["loaded"] == 6
    assert len(r.stats.errors) == 1 and "bad.parquet: unreadable store file" in r.stats.errors[0]


@pytest.mark.parametrize("values", [
    ["blocked", "blocked", "blocked"],            # one value: the constant path
    [None, None],                                 # all NA
    ["dns", None, "tls", "not-a-blocking-value", "false", "dns"],  # mixed, one outside the vocabulary
    ["not-a-blocking-value"] * 4,                 # one value outside the vocabulary
    [],
])
def test_closed_vocabulary_columns_are_coded_as_their_strings_would_be(values: list[Any]) -> None:
    """The loader's chunks code closed vocabularies directly (_typed(closed=True)); the values equal
    the strings' astype(dtype) (NA outside the vocabulary), for a constant column and a mixed one."""
    import warnings

    got = pd.Series(L._closed_categorical(values, L.BLOCKING_DTYPE))
    with warnings.catch_warnings():  # pandas 3 deprecates astype of values outside the categories (NA today)
        warnings.simplefilter("ignore")
        want = pd.Series(L._strings(values) if values else pd.array([], dtype=L.STRING)).astype(L.BLOCKING_DTYPE)
    pd.testing.assert_series_equal(got, want)


@pytest.mark.parametrize("values", [["a"] * 3, [None] * 3, ["a", "b", None], ["a", None, None], ["é", "é"], ["x"]])
def test_text_columns_of_one_value_equal_the_converted_strings(values: list[Any]) -> None:
    """_strings takes a column of one value (or all None) without converting every item: same array."""
    import pyarrow as pa

    got = L._strings(values)
    assert got.dtype == L.STRING
    assert pa.array(got._pa_array).to_pylist() == values
    pd.testing.assert_extension_array_equal(got, pd.arrays.ArrowStringArray(pa.array(values, pa.large_string())))


def test_typed_closed_equals_finalized_strings(ours: dict[str, dict]) -> None:
    """A chunk typed with its categorical columns coded directly (closed vocabularies and open ones)
    equals the strings' chunk finalized."""
    rows = [L.row(m, "f.jsonl", i) for i, m in enumerate(ours.values(), 1)]
    cols = {c: [r[c] for r in rows] for c in COLUMNS}
    _assert_same_frame(L._typed(cols, closed=True), L._finalize(L._typed(cols)))


def _assert_same_frame(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal frames, and each categorical column's categories of the same dtype and codes of the same width."""
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for c in want.columns:
        if isinstance(want[c].dtype, pd.CategoricalDtype):
            assert got[c].cat.categories.dtype == want[c].cat.categories.dtype, c
            assert list(got[c].cat.categories) == list(want[c].cat.categories), c
            assert got[c].cat.codes.dtype == want[c].cat.codes.dtype, c


@pytest.mark.parametrize("values", [["a"] * 3, [None] * 3, ["b", "a", None, "a"], ["é", "Z", "é"], ["x"], []])
def test_open_categorical_equals_the_strings_astype_category(values: list[Any]) -> None:
    """An open vocabulary's column coded directly (one value: zeros and one category) is what
    astype("category") of its strings gives: categories seen, sorted, of dtype string; None is NA."""
    got = pd.Series(L._open_categorical(values))
    want = pd.Series(L._strings(values) if values else pd.array([], dtype=L.STRING)).astype("category")
    pd.testing.assert_series_equal(got, want)
    assert got.cat.categories.dtype == want.cat.categories.dtype == L.STRING
    assert got.cat.codes.dtype == want.cat.codes.dtype


def _chunk(file: str, asn: list[Any], test: str = "web_connectivity") -> dict[str, list[Any]]:
    n = len(asn)
    cols: dict[str, list[Any]] = {c: [None] * n for c in COLUMNS}
    cols.update(file=[file] * n, line=list(range(1, n + 1)), test_name=[test] * n, probe_asn=asn,
                probe_cc=["KZ"] * n, measurement_start_time=["2021-01-01 00:00:00"] * n, source=["kzprobe"] * n)
    return cols


def test_concat_merges_the_chunks_open_categoricals_as_the_strings_would_be() -> None:
    """Chunks whose open vocabularies are categoricals of their own values (a worker's ranges) merge into
    the frame the concatenated strings make once finalized: categories the values used, sorted (a value
    one chunk has only as an unused category is not one), None NA; an empty chunk; and a chunk whose
    column is text (the store's or an older part) leaves that column to the strings' way."""
    chunks = [_chunk("b.jsonl", ["AS2", None, "AS10"]), _chunk("a.jsonl", []), _chunk("é.jsonl", ["AS1"] * 2),
              _chunk("a.jsonl", [None, None], test="dnscheck")]
    want = L._concat([L._typed(c) for c in chunks])
    parts = [L._typed(c, closed=True) for c in chunks]
    assert all(isinstance(p["file"].dtype, pd.CategoricalDtype) for p in parts)
    parts[0]["probe_asn"] = parts[0]["probe_asn"].cat.add_categories(pd.Index(["AS9"], dtype=L.STRING))  # unused
    _assert_same_frame(L._concat(parts), want)
    _assert_same_frame(L._concat(parts, finalize=False), want)
    mixed = [L._typed(chunks[0], closed=True), L._typed(chunks[2])]
    _assert_same_frame(L._concat(mixed), L._concat([L._typed(chunks[0]), L._typed(chunks[2])]))


@pytest.mark.parametrize(("body", "n"), [("abc", 3), ("é" * 3, 6), ("\udcff", 1), ("", 0),
                                          ({"format": "base64", "data": "YWJjZA=="}, 4)])
def test_body_length_of_an_ooni_body_is_its_bytes(body: object, n: int) -> None:
    """``body_length`` counts the UTF-8 bytes of a text body (an ASCII one without encoding it; a lone
    surrogate from a non-UTF-8 byte counts as that one byte), the decoded bytes of a base64 one."""
    from analysis.load import _body_length

    assert _body_length([{"response": {"body": body}}]) == n


@pytest.mark.parametrize("tail", ["\n", "\n   \t"])
def test_counts_and_messages_do_not_hang_on_where_blocks_end(tmp_path: Path, ours: dict[str, dict],
                                                             monkeypatch: pytest.MonkeyPatch, tail: str) -> None:
    """One file, read in blocks of every size (plain: a block that ends inside a line is sought back;
    gzip: the line is completed by a read), gives one frame, the same counts and the same messages.
    Before: an over-long line crossing a block's end was named one byte longer (its newline counted),
    and a last line of blanks without a newline was a blank line only when a block began with it."""
    recs = distinct(list(ours.values()) * 3)
    cap = max(len(json.dumps(m)) for m in recs) + 10
    long = '{"input": "' + "x" * (cap + 500) + '"}'
    lines: list[str | dict] = [*recs[:5], long, "", *recs[5:12], long, "   ", *recs[12:]]
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + tail
    plain, packed = tmp_path / "run.jsonl", tmp_path / "run.jsonl.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    seen = []
    for block in (1024, 4096, len(text) // 3, 1 << 20):
        monkeypatch.setattr(L, "BLOCK_BYTES", block)
        for p in (plain, packed):
            st = L.LoadStats()
            frame = load_file(p, st, max_line_bytes=cap)
            seen.append((block, p.name, frame.drop(columns=["file"]), st.counts(),
                         [e.replace(str(p), "F") for e in st.errors]))
    first = seen[0]
    assert first[3] == (len(recs) + 2, len(recs), 0, 2, 0, 2 if tail == "\n" else 3, 0)
    assert first[4] == [f"F:6: line longer than {cap} bytes ({len(long)} bytes), skipped",
                        f"F:15: line longer than {cap} bytes ({len(long)} bytes), skipped"]
    for block, name, frame, counts, errors in seen[1:]:
        assert (counts, errors) == (first[3], first[4]), (block, name)
        pd.testing.assert_frame_equal(frame, first[2])


def test_a_sync_outputs_bookkeeping_is_not_loaded(tmp_path: Path) -> None:
    """Break test: ``report --in DIR`` of an ``ooni sync`` output counted the lines of its ``manifest.jsonl``
    (one an object) and of ``api-coverage.json`` as lines of measurement files ("files 2 … blank 144"; blank or
    skipped, as the line reads).
    They are the sync's own bookkeeping beside ``store/``: left out of the loading, as its ``coverage.csv`` is.
    The same names elsewhere (not beside a store) are still read as input."""
    import datetime as dt

    from analysis.ooni_store import table_from_rows, write_part
    from tests.fixtures.ooni_bucket import as_kz, real_samples

    out = tmp_path / "kz"
    ms = real_samples(shared_path())[:4]
    rows = [L.row(as_kz(m, f"2021-01-01 00:00:{i:02d}", i), "raw/k", i + 1) for i, m in enumerate(ms)]
    table, _ = table_from_rows(rows, list(range(len(rows))), ["0" * 64] * len(rows))
    part = write_part(out / "store", dt.date(2021, 1, 1), "a", table)
    (out / "manifest.jsonl").write_text("".join(
        json.dumps({"key": f"raw/20210101/0{i}/KZ/webconnectivity/o{i}.jsonl.gz", "size": 10, "written": 1, "t": 1.0})
        + "\n" for i in range(3)))
    (out / "api-coverage.json").write_text(json.dumps({"cc": "KZ", "since": "2021-01-01"}, indent=1) + "\n")
    (out / "coverage.csv").write_text("day,count\n")
    # review: --keep-raw's raw/ (every measurement again) and a killed sync's .partial/ (a truncated
    # download) were loaded too; only store/ is read, from the sync output or from a directory above it
    import gzip

    from analysis.ooni_sync import MANIFEST, PARTIAL_DIR, RAW_DIR

    assert L._SYNC_MANIFEST == MANIFEST
    raw = out / RAW_DIR / "20210101" / "00" / "KZ" / "webconnectivity" / "o0.jsonl.gz"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(gzip.compress("".join(json.dumps(m) + "\n" for m in ms).encode()))
    (out / PARTIAL_DIR).mkdir()
    (out / PARTIAL_DIR / "o1.jsonl.gz").write_bytes(gzip.compress((json.dumps(ms[0]) + "\n").encode())[:30])
    for given in (out, tmp_path):
        r = load([given])
        assert (r.stats.files, r.stats.loaded, r.stats.blank, r.stats.skipped, r.stats.invalid) == (1, 4, 0, 0, 0)
        assert set(r.stats.by_file) == {str(part)} and r.stats.errors == []
    assert str(raw) in L.load([out / RAW_DIR]).stats.by_file  # raw/ named itself: read
    # not beside a store: an input like any other (here one measurement)
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.jsonl").write_text(json.dumps(ms[0]) + "\n")
    assert str(other / "manifest.jsonl") in L.load([other]).stats.by_file
