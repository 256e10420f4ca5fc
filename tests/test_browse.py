"""kzprobe list / list RUN / show (issue 15 part 2), over the golden records file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probe.browse import MAX_LINE_BYTES, BrowseError, find_measurement, iter_records, list_measurements, list_runs

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "records-0.1.0.jsonl"
RID = "20210301T060000Z_webconnectivity_KZ_9198_0000000000000000"
RID2 = "20210302T060000Z_webconnectivity_KZ_9198_00000000000000ff"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    shutil.copy(GOLDEN, tmp_path / f"{RID}.jsonl")
    (tmp_path / f"{RID}.summary.json").write_text(json.dumps(
        {"inputs": 10, "measured": 10, "counts": {"accessible": 1, "tls_mitm": 1, "dns": 1}, "vantage_offline": False,
         "test_start_time": "2021-03-01 06:00:00"}))
    # a second, offline run with one measurement (the first line of the golden file) and a garbage line
    first = GOLDEN.read_text().splitlines()[0]
    (tmp_path / f"{RID2}.jsonl").write_text(first + "\n{not json\n" + "[1]\n")
    (tmp_path / f"{RID2}.summary.json").write_text(json.dumps(
        {"inputs": 1, "measured": 1, "counts": {"inconclusive": 1}, "vantage_offline": True,
         "test_start_time": "2021-03-02 06:00:00"}))
    return tmp_path


def kz(*args: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    e.update({"KZPROBE_CONFIG": str(ROOT / "tests" / "data" / "empty.toml"), "NO_COLOR": "1"})
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          check=False, timeout=60)


def test_list_runs_newest_first_with_network_and_offline(results) -> None:
    runs, bad = list_runs(results)
    assert [r.report_id for r in runs] == [RID2, RID]
    res = kz("list", "--dir", str(results))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert RID2 in lines[1] and "OFFLINE" in lines[1] and "AS9198 KZ" in lines[1]
    assert RID in lines[2] and "tls_mitm: 1" in lines[2]
    j = json.loads(kz("list", "--dir", str(results), "--json").stdout)
    assert [r["report_id"] for r in j["runs"]] == [RID2, RID]
    assert j["runs"][0]["vantage_offline"] is True and j["runs"][1]["network"] == "AS9198 KZ"


def test_list_run_gives_its_measurements_and_counts_bad_lines(results) -> None:
    rid, rows, stats = list_measurements(results, RID[:20])  # a unique prefix will do
    assert rid == RID and len(rows) == 10
    assert rows[6]["id"] == f"{RID}:7" and rows[6]["verdict"] == "BLOCKED: tls_mitm"
    _, rows2, stats2 = list_measurements(results, RID2)
    assert len(rows2) == 1 and [n for n, _ in stats2.skipped] == [2, 3]
    res = kz("list", RID, "--dir", str(results))
    assert res.returncode == 0 and "BLOCKED: tls_mitm" in res.stdout and "tls_mitm.known_root" not in res.stdout
    j = json.loads(kz("list", RID, "--dir", str(results), "--json").stdout)
    assert j["measurements"][6]["rule"] == "tls_mitm.known_root"
    with pytest.raises(BrowseError, match="ambiguous"):
        list_measurements(results, "2021030")
    res = kz("list", "nope", "--dir", str(results))
    assert res.returncode == 66 and "no run 'nope'" in res.stderr


def test_show_a_measurement_for_a_person(results) -> None:
    res = kz("show", f"{RID}:1", "--dir", str(results))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "rule: https.verified" in out and "fetched over verified TLS" in out
    assert "udp 192.0.2.53:53" in out and "198.51.100.7" in out and "control (helper)" in out
    assert "issued by CN=Example CA" in out  # the TLS chain with issuers
    assert "verified (mozilla)" in out
    assert "title 'Example site', 1341 bytes" in out and out.count("3bf5c0656adcb322") == 2  # probe beside control
    j = json.loads(kz("show", f"{RID}:7", "--dir", str(results), "--json").stdout)
    assert j["rule"] == "tls_mitm.known_root" and j["mitm"]
    assert j["tls"][0]["chain"], "the intercepting chain is shown"


def test_show_by_input_gives_the_newest(results) -> None:
    mid, rec = find_measurement(results, "https://site.example.org/")
    assert mid == f"{RID2}:1"
    mid, rec = find_measurement(results, "http://site.example.org/")
    assert mid == f"{RID}:9" and rec["test_keys"]["x_rule"] == "http.blockpage"
    res = kz("show", "https://nowhere.example/", "--dir", str(results))
    assert res.returncode == 66 and "no measurement" in res.stderr


def test_an_overlong_line_is_skipped_bounded(tmp_path) -> None:
    p = tmp_path / "x.jsonl"
    with open(p, "wb") as fh:
        fh.write(b'{"a": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n{"b": 1}\n')
    from probe.browse import LineStats

    st = LineStats()
    assert [obj for _, obj in iter_records(p, st)] == [{"b": 1}]
    assert st.skipped[0][0] == 1 and "over" in st.skipped[0][1]


def test_show_by_measurement_uid(tmp_path) -> None:
    line = json.loads(GOLDEN.read_text().splitlines()[6])
    line["x_measurement_uid"] = "0123456789abcdef0123456789abcdef"
    (tmp_path / f"{RID}.jsonl").write_text(GOLDEN.read_text().splitlines()[0] + "\n" + json.dumps(line) + "\n")
    mid, rec = find_measurement(tmp_path, "0123456789abcdef0123456789abcdef")
    assert mid == f"{RID}:2" and rec["test_keys"]["x_rule"] == "tls_mitm.known_root"


def test_list_and_show_give_kzprobe_verdict_not_oonis_coarser_word(tmp_path: Path) -> None:
    """Records since 1.0.0 write OONI's word in ``blocking`` (tls_mitm → http-failure) and ours in
    ``x_blocking``: list and show give ours (the MITM distinction was lost: break test, stop 17)."""
    rec = json.loads((ROOT / "tests" / "data" / "golden" / "df000-tls_mitm.json").read_text())
    assert rec["test_keys"]["blocking"] == "http-failure" and rec["test_keys"]["x_blocking"] == "tls_mitm"
    (tmp_path / f"{RID}.jsonl").write_text(json.dumps(rec) + "\n")
    _, rows, _ = list_measurements(tmp_path, RID)
    assert rows[0]["verdict"] == "BLOCKED: tls_mitm"
    assert rows[0]["blocking"] == "tls_mitm" and rows[0]["ooni_blocking"] == "http-failure"
    res = kz("show", "--dir", str(tmp_path), f"{RID}:1")
    assert res.returncode == 0, res.stderr
    assert "BLOCKED: tls_mitm" in res.stdout and "BLOCKED: http-failure" not in res.stdout


def test_terminal_sequences_in_records_are_shown_escaped(tmp_path: Path) -> None:
    """Break test (stop 18): ESC/OSC sequences in a record's input, reason or network name reached the
    terminal raw from `list`/`show` (a hostile record could set the title, clear the screen)."""
    rec = json.loads(GOLDEN.read_text().splitlines()[0])
    rec["input"] = "https://evil.example/\x1b]0;PWNED\x07"
    rec["probe_network_name"] = "\x1b[2Jnet\x9b31m"
    rec["test_keys"]["x_reason"] = "reason \x1b[31mred\u202eevil"
    (tmp_path / f"{RID}.jsonl").write_text(json.dumps(rec) + "\n")
    for argv in (["list"], ["list", RID], ["show", f"{RID}:1"]):
        res = kz(*argv, "--dir", str(tmp_path))
        assert res.returncode == 0, res.stderr
        assert not any(c in res.stdout for c in "\x1b\x07\x9b\u202e"), (argv, res.stdout)
    out = kz("show", f"{RID}:1", "--dir", str(tmp_path)).stdout
    assert "\\x1b]0;PWNED\\x07" in out and "\\x1b[31mred" in out


def test_lone_surrogates_in_records_are_shown_escaped(tmp_path: Path) -> None:
    """Review 24: a record whose input is ``"http://a/\\ud800"`` (JSON gives a lone surrogate) made
    ``kzprobe list RUN`` and ``show`` exit 1 with UnicodeEncodeError (stdout is UTF-8, strict). Every
    listing, text or JSON, shows it as the escape ``\\ud800``; the JSON reads back as the record's string
    (RFC 8259 §7); status and the run list are unaffected."""
    rec = json.loads(GOLDEN.read_text().splitlines()[0])
    rec["input"] = "http://a/\ud800"
    rec["test_keys"]["x_reason"] = "why \udfff"
    (tmp_path / f"{RID}.jsonl").write_text(json.dumps(rec) + "\n")
    for argv in (["list"], ["list", RID], ["show", f"{RID}:1"], ["status"]):
        for mode in ([], ["--json"]):
            res = kz(*argv, *mode, "--dir", str(tmp_path))
            assert res.returncode == 0 and "Traceback" not in res.stderr, (argv, mode, res.stderr[-800:])
    assert "http://a/\\ud800" in kz("list", RID, "--dir", str(tmp_path)).stdout
    out = kz("show", f"{RID}:1", "--dir", str(tmp_path)).stdout
    assert "http://a/\\ud800" in out and "why \\udfff" in out
    listed = json.loads(kz("list", RID, "--json", "--dir", str(tmp_path)).stdout)
    assert listed["measurements"][0]["input"] == rec["input"]
    assert json.loads(kz("show", f"{RID}:1", "--json", "--dir", str(tmp_path)).stdout)["input"] == rec["input"]


def test_a_missing_dir_is_named_not_an_empty_results_directory(tmp_path: Path) -> None:
    """Break test (stop 18): `kzprobe list --dir /nonexistent` said "(no runs)" and exited 0."""
    res = kz("list", "--dir", str(tmp_path / "nope"))
    assert res.returncode == 66 and "nope: no such directory" in res.stderr


def test_list_points_at_lab_runs_beside_the_results(results: Path) -> None:
    """Break test (stop 18): lab runs (written to <results>/lab/<scenario>) were invisible to `kzprobe list`."""
    (results / "lab" / "dns-race").mkdir(parents=True)
    res = kz("list", "--dir", str(results))
    assert res.returncode == 0 and f"lab runs: kzprobe list --dir {results / 'lab' / 'dns-race'}" in res.stderr
    assert "lab runs" not in kz("list", "--dir", str(results), "--json").stderr


def _show_text(tmp_path: Path, rec: dict) -> str:
    (tmp_path / f"{RID}.jsonl").write_text(json.dumps(rec) + "\n")
    res = kz("show", "--dir", str(tmp_path), f"{RID}:1")
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_show_gives_the_interception_finding_as_text_not_a_dict(tmp_path: Path) -> None:
    """Break test: `show` printed ``INTERCEPTION: {'mitm': True, ...}`` (the record's x_mitm as a Python dict)."""
    rec = json.loads((ROOT / "tests" / "data" / "golden" / "df000-tls_mitm.json").read_text())
    out = _show_text(tmp_path, rec)
    assert "{'mitm'" not in out and "'matched_by'" not in out
    assert "  INTERCEPTION: chain contains the Kazakh interception root 'Qaznet Trust Network'" in out
    assert "matched by spki, name; known root qaznet-2019; chain position 1: CN=Qaznet Trust Network,C=KZ" in out
    # a chain inspected and found clean is no interception; forged-leaf traits alone are said as such
    rec["test_keys"]["x_mitm"].update(mitm=False, matched_by=["leaf_traits"], leaf_traits=["rsa_1024"])
    out = _show_text(tmp_path, rec)
    assert "INTERCEPTION" not in out and "forged-leaf traits (not interception by themselves): rsa_1024" in out
    rec["test_keys"]["x_mitm"].update(matched_by=[], leaf_traits=[])
    assert "INTERCEPTION" not in _show_text(tmp_path, rec)


def test_show_aligns_the_dns_controls_with_the_answers(results) -> None:
    """Break test: the ``control (doh)`` answer stood 3 columns left of ``control (helper)``'s and the queries'."""
    out = kz("show", f"{RID}:1", "--dir", str(results)).stdout
    rows = [ln for ln in out.splitlines() if ln.startswith(("  udp ", "  doh ", "  control ("))]
    controls = [ln for ln in rows if ln.startswith("  control (")]
    assert len(controls) == 2 and len(rows) > 2
    assert {ln.index("198.51.100.7") for ln in rows if "198.51.100.7" in ln} == {49}


@pytest.mark.parametrize(("query", "label"), [
    ({"engine": "system", "resolver_address": ""}, "system"),  # ours and OONI 0.4's system resolver
    ({"engine": "getaddrinfo", "resolver_address": ""}, "getaddrinfo"),  # OONI 0.5
    ({"engine": "udp", "resolver_address": "8.8.4.4:53"}, "udp 8.8.4.4:53"),
    ({"engine": "doh", "resolver_address": "https://dns.example/dns-query"}, "doh https://dns.example/dns-query"),
    ({}, "?"),
])
def test_the_resolver_label(query: dict, label: str) -> None:
    """Break test: a system-resolver query read ``system system`` (``getaddrinfo system`` on OONI's records)."""
    from probe.browse import measurement_view

    rec = {"input": "https://x.example/", "test_keys": {"queries": [{"query_type": "A", **query}]}}
    assert [q["resolver"] for q in measurement_view("r:1", rec)["dns"]] == [label]


def test_show_of_an_ooni_record_names_its_resolvers(tmp_path: Path) -> None:
    from probe.browse import measurement_view
    from tests.conftest import shared_path

    rec = json.loads(shared_path("data", "ooni-samples", "ooni-probe-cli-minipipeline-manual",
                                 "firefoxcom.measurement.json").read_text())

    view = measurement_view("r:1", rec)
    assert [q["resolver"] for q in view["dns"]][:2] == ["getaddrinfo", "udp 8.8.4.4:53"]
    # a DoH URL longer than the usual column: every answer still starts in one column
    from probe.browse import render_measurement

    text = render_measurement(view).split("\nDNS")[1].split("\nTCP")[0]
    rows = [ln for ln in text.splitlines() if ln.startswith("  ")]
    assert any("doh https://mozilla.cloudflare-dns.com/dns-query" in ln for ln in rows)
    assert len({ln.index(" 44.2") if " 44.2" in ln else ln.index(" dns_") for ln in rows
                if " 44.2" in ln or " dns_" in ln}) == 1


def test_list_shows_the_first_skipped_lines_and_a_count() -> None:
    """Break test: ``kzprobe list RUN`` printed one "line N skipped" per garbage line (400+ lines for
    100 KB of junk); it shows the first ones and counts the rest, as ``targets`` does."""
    from probe.browse import LineStats, render_measurements
    from probe.targets import MAX_ROW_WARNINGS

    stats = LineStats()
    for n in range(1, 451):
        stats.skip(n, "not JSON")
    text = render_measurements("20261204T000000Z_webconnectivity_ZZ_0_n1_x", [], stats)
    assert text.count(" skipped: not JSON") == MAX_ROW_WARNINGS
    assert f"... and {450 - MAX_ROW_WARNINGS} more skipped line(s) not shown (450 skipped in all: 450 not JSON" in text


@pytest.mark.parametrize("argv", [("list",), ("list", "--json"), ("list", RID[:13]), ("list", RID[:13], "--json"),
                                  ("show", f"{RID}:3"), ("show", f"{RID}:3", "--json")])
def test_list_and_show_into_a_closed_pipe_are_a_quiet_exit_0(results, argv) -> None:
    """Issue 15 part 3: broken-pipe handling everywhere (`kzprobe list | head`): a quiet exit 0."""
    from tests.test_cli_papercuts import _closed_pipe_run

    res = _closed_pipe_run(*argv, "--dir", str(results))
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_a_junk_run_keeps_bounded_examples_and_exact_counts(tmp_path: Path) -> None:
    """Break test: a run file of 100k junk lines kept one ``(line, reason)`` per line in memory and
    ``kzprobe list --json RUN`` printed them all (400k output lines). Now: the first 20 as examples,
    exact counts in all and by reason, in the stats object, the text and --json."""
    from probe.runlines import MAX_SKIPPED_EXAMPLES, SKIP_NOT_JSON, SKIP_NOT_OBJECT, SKIP_TOO_LONG, LineStats

    golden = GOLDEN.read_text().splitlines()
    junk = tmp_path / f"{RID}.jsonl"
    with open(junk, "wb") as fh:
        fh.write((golden[0] + "\n").encode())
        fh.write(b"garbage\x00 not json\n" * 60_000)
        fh.write(b"[1, 2]\n" * 39_999)
        fh.write(b'"' + b"x" * (MAX_LINE_BYTES + 10) + b'"\n')
        fh.write((golden[1] + "\n").encode())
    st = LineStats()
    assert len(list(iter_records(junk, st))) == 2
    assert len(st.skipped) == MAX_SKIPPED_EXAMPLES == 20  # the memory bound: examples kept, not one per line
    assert [n for n, _ in st.skipped] == list(range(2, 22))
    assert st.skipped[0][1].startswith("not JSON: ")
    assert st.count == 100_000
    assert st.by_reason == {SKIP_NOT_JSON: 60_000, SKIP_NOT_OBJECT: 39_999, SKIP_TOO_LONG: 1}

    res = kz("list", RID[:13], "--dir", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) < 20_000  # was ~9 MB: one entry a junk line
    out = json.loads(res.stdout)
    assert len(out["measurements"]) == 2
    assert len(out["skipped_lines"]) == 20 and out["skipped_lines"][0]["line"] == 2
    assert out["skipped_count"] == 100_000
    assert out["skipped_by_reason"] == {SKIP_NOT_JSON: 60_000, SKIP_NOT_OBJECT: 39_999, SKIP_TOO_LONG: 1}

    res = kz("list", RID[:13], "--dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(" skipped: ") == 20
    assert ("... and 99,980 more skipped line(s) not shown (100,000 skipped in all: 60,000 not JSON, "
            f"39,999 not a JSON object, 1 {SKIP_TOO_LONG}; the first 20 are above)") in res.stdout


def test_list_marks_the_partial_verdicts_of_a_large_killed_run(tmp_path: Path, monkeypatch) -> None:
    """Re-check 24 N4/N7: ``list`` gave a killed run's verdict counts of its first KILLED_READ_BYTES only
    (``20000/? accessible: 1578``; run 01: ``2/? accessible: 1``, its second record past an 80 MB line) with
    no mark that they were partial; ``status`` said it. ``list`` now says the same."""
    import probe.status as status
    from probe.browse import render_runs

    line = json.dumps({"test_keys": {"x_blocking": False, "x_accessible": True}}) + "\n"
    (tmp_path / f"{RID}.jsonl").write_text(line * 10)
    monkeypatch.setattr(status, "KILLED_READ_BYTES", len(line) * 4)
    runs, bad = list_runs(tmp_path)
    text = render_runs(runs, bad)
    assert " 10/?" in text and "accessible: 4" in text
    assert "PARTIAL verdicts: of the first 16 MB only, the last 6 counted, their verdicts not read" in text
    monkeypatch.setattr(status, "KILLED_READ_BYTES", 16 << 20)
    assert "PARTIAL" not in render_runs(*list_runs(tmp_path))
