"""analysis.report's blocked-targets table takes only the rows of a (target, network) with a blocked
measurement, by integer keys: the network's label stays the whole frame's (the name most often seen
with its ASN), and the table is the one the text merge gave."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from analysis import report
from tests.analysis.test_report import T0, frame_of, measurement, synthetic_results


def test_the_network_label_is_the_whole_frames() -> None:
    x, y = ("pi", "AS1", "Name X"), ("pi", "AS1", "Name Y")
    rows = [measurement(i, "a.example", t=T0 + pd.Timedelta(hours=i), vantage=x, blocking="dns", accessible=False)
            for i in range(2)]
    rows += [measurement(10 + i, "b.example", t=T0 + pd.Timedelta(hours=i), vantage=y) for i in range(5)]
    rows += [measurement(20, "a.example", t=T0 + pd.Timedelta(hours=9), vantage=y)]  # judged, accessible
    table, n = report._blocked_targets(frame_of(rows))
    assert n == 1
    (row,) = table
    # AS1 is named "Name Y" 6 times and "Name X" twice in the frame; among a.example's rows, "Name X" leads
    assert (row["domain"], row["network"]) == ("a.example", "AS1 (Name Y)")
    assert (row["n_blocked"], row["n_judged"], row["share"]) == (2, 3, "0.67")
    assert [t["name"] for t in row["types"]] == ["dns"]


def test_no_blocked_measurement_no_rows() -> None:
    rows = [measurement(i, "b.example", t=T0 + pd.Timedelta(hours=i)) for i in range(3)]
    assert report._blocked_targets(frame_of(rows)) == ([], 0)


def test_the_country_is_a_column_of_the_html_markdown_and_csv(tmp_path: Path) -> None:
    """Measurements from several countries (OONI's, ours) were mixed in one table without the country (break test):
    a target blocked in RU and accessible in KZ on the same ASN (a CDN's) read as one intermittent row. Now each
    (target, country, network) is a row, and the country is a column in index.html, report.md and blocked.csv."""
    cdn = ("pi", "AS13335", "Cloudflare")
    rows = [measurement(i, "a.example", t=T0 + pd.Timedelta(hours=i), vantage=cdn, blocking="dns", accessible=False)
            for i in range(3)]
    rows += [measurement(10 + i, "a.example", t=T0 + pd.Timedelta(hours=i), vantage=cdn) for i in range(2)]
    rows += [measurement(20, "a.example", t=T0, vantage=("kz", "AS9198", "JSC Kazakhtelecom"), blocking="tls",
                         accessible=False)]
    for r in rows[:3]:
        r["probe_cc"] = "RU"
    frame = frame_of(rows)
    want = [("a.example", "RU", "AS13335 (Cloudflare)", 3, 3), ("a.example", "KZ", "AS9198 (JSC Kazakhtelecom)", 1, 1)]

    table, n = report._blocked_targets(frame)
    assert n == 2
    assert [(r["domain"], r["country"], r["network"], r["n_blocked"], r["n_judged"]) for r in table] == want

    paths = report.render(frame, synthetic_results(frame), out_dir=tmp_path / "out")
    html = paths.index_html.read_text(encoding="utf-8")
    section = html.split('<section id="blocked-targets">', 1)[1].split("</section>", 1)[0]
    heads = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", section)
    assert heads[:3] == ["target", "country", "network"]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in re.findall(r"<tr><td.*?</tr>", section, re.S)]
    assert [(c[1], c[2]) for c in cells] == [(w[1], w[2]) for w in want]

    md = paths.report_md.read_text(encoding="utf-8")
    md_table = md.split("## What is blocked", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in md_table.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| target | country | network | blocking type |")
    assert lines[1].count("|") == lines[0].count("|"), "the separator has a cell per column"
    md_cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert [(c[1], c[2].replace("\\", "")) for c in md_cells] == [(w[1], w[2]) for w in want]

    assert paths.blocked_csv == paths.out_dir / "blocked.csv"
    with paths.blocked_csv.open(encoding="utf-8", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == list(report.BLOCKED_CSV_COLUMNS)
    assert [(r["target"], r["country"], r["network"], int(r["n_blocked"]), int(r["n_judged"])) for r in got] == want
    assert got[0]["blocking_types"] == "dns 3" and got[0]["blocked_share"] == "1.00"
    assert got[1]["blocking_types"] == "tls 1" and got[1]["example_latest"] == frame["measurement_uid"][5]


def test_the_csv_has_every_row_the_page_caps(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(report, "MAX_BLOCKED_ROWS", 1)
    rows = [measurement(i, f"t{i}.example", t=T0, blocking="dns", accessible=False) for i in range(3)]
    frame = frame_of(rows)
    paths = report.render(frame, synthetic_results(frame), out_dir=tmp_path / "out")
    assert len(paths.blocked_csv.read_text(encoding="utf-8").splitlines()) == 1 + 3
    assert "2 more target/country/network rows" in paths.index_html.read_text(encoding="utf-8")


def test_no_blocked_measurement_an_empty_csv_with_its_header(tmp_path: Path) -> None:
    frame = frame_of([measurement(i, "b.example", t=T0 + pd.Timedelta(hours=i)) for i in range(3)])
    paths = report.render(frame, synthetic_results(frame), out_dir=tmp_path / "out")
    assert paths.blocked_csv.read_text(encoding="utf-8").strip() == ",".join(report.BLOCKED_CSV_COLUMNS)


def test_render_groups_the_blocked_pairs_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first table and blocked.csv are the same (target, country, network) groups: render makes them once
    (it grouped the whole frame twice, once for each), and both still hold every pair."""
    calls = []
    real = report.blocked_pairs

    def counted(frame: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(frame))
        return real(frame)

    monkeypatch.setattr(report, "blocked_pairs", counted)
    rows = [measurement(i, f"t{i}.example", t=T0, blocking="dns", accessible=False) for i in range(3)]
    frame = frame_of(rows)
    paths = report.render(frame, synthetic_results(frame), out_dir=tmp_path / "out")
    assert calls == [3]
    assert len(paths.blocked_csv.read_text(encoding="utf-8").splitlines()) == 1 + 3
    assert paths.index_html.read_text(encoding="utf-8").count("t1.example") >= 1
