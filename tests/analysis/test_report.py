"""analysis.report and analysis.plots: the rendered report, parsed (html.parser), from synthetic frames.

The synthetic measurements use the contract's columns and dtypes (``analysis.load.DTYPES``);
the synthetic comparison results use the compare columns (``analysis.report.CLAIMS_CSV_COLUMNS``).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import hashlib
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import load, plots, report

HOSTILE = "<script>alert(1)</script>$x$|*_.evil"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("blocked-targets", "summary", "claims", "out-of-scope", "heatmap", "blocking-types", "mitm",
            "vantage-health", "evidence", "methods")
T0 = pd.Timestamp("2020-11-20", tz="UTC")


# ------------------------------------------------------------------ synthetic data


def measurement(i: int, domain: str, *, t: pd.Timestamp, vantage: tuple[str, str, str | None] = ("almaty-pi-1",
                "AS9198", "JSC Kazakhtelecom"), blocking: str | None = "false", accessible: bool | None = True,
                source: str = "kzprobe", offline: bool = False, mitm_root: str | None = None,
                reason: str = "matches the control") -> dict[str, Any]:
    """One row of the measurements frame (contract columns) as a dict."""
    if blocking is None:
        outcome = "inconclusive"
    elif blocking != "false":
        outcome = "blocked"
    else:
        outcome = "accessible" if accessible else "down"
    uid = hashlib.sha256(f"{domain}-{i}".encode()).hexdigest()[:24]
    return dict(  # noqa: C408 (keyword form reads like the contract's column list)
        source=source, measurement_uid=uid, report_id="r1", file=f"/data/{vantage[0]}.jsonl", line=i + 1,
        test_name="web_connectivity", data_format_version="0.2.0", input=f"https://{domain}/", domain=domain,
        measurement_start_time=t, probe_asn=vantage[1], probe_cc="KZ", probe_network_name=vantage[2],
        vantage_id=vantage[0], lab_scenario=None, blocking=blocking, accessible=accessible, outcome=outcome,
        verdict_source="recomputed" if source == "ooni" else "kzprobe",
        ooni_blocking=blocking if source == "ooni" else None, ooni_accessible=accessible if source == "ooni" else None,
        rule="vantage.offline" if offline else "rule.x", reason=reason, dns_failure=None, tcp_failure=None,
        tls_failure=None, http_failure=None, control_failure=None, mitm_root=mitm_root,
        tls_issuers=f"CN={domain} → CN=Security Certificate → CN={mitm_root}" if mitm_root else None,
        vantage_offline=offline, body_length=1234)


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → a frame with exactly ``analysis.load.COLUMNS`` and ``DTYPES``."""
    if not rows:
        return load.empty_frame()
    f = pd.DataFrame(rows, columns=list(load.COLUMNS))
    f["measurement_start_time"] = pd.to_datetime(f["measurement_start_time"], utc=True)
    return f.astype(load.DTYPES)


def synthetic_frame(n: int = 300, *, seed: int = 1, hostile: bool = True) -> pd.DataFrame:
    """Measurements from three vantage points over 40 days: blocked, intermittent, MITM, accessible,
    an offline window, OONI rows, and (``hostile``) a domain and reason carrying markup."""
    rng = np.random.default_rng(seed)
    vantages = [("almaty-pi-1", "AS9198", "JSC Kazakhtelecom"), ("astana-vps", "AS21299", "Kar-Tel LLC"),
                ("KZ/AS48716", "AS48716", None)]
    domains = ["meduza.io", "medium.com", "archive.org", "facebook.com"] + ([HOSTILE] if hostile else [])
    rows = []
    for i in range(n):
        d = domains[i % len(domains)]
        v = vantages[int(rng.integers(len(vantages)))]
        t = T0 + pd.Timedelta(seconds=int(rng.integers(40 * 86400)))
        kw: dict[str, Any] = {"vantage": v, "t": t, "source": "ooni" if v[0].startswith("KZ/") else "kzprobe"}
        if v[0] == "astana-vps" and pd.Timestamp("2020-12-05", tz="UTC") <= t < pd.Timestamp("2020-12-08", tz="UTC"):
            kw.update(blocking=None, accessible=None, offline=True, reason="vantage offline")
        elif d in ("meduza.io", HOSTILE):
            kw.update(blocking="tls" if d == "meduza.io" else "http-diff", accessible=False,
                      reason=f"blockpage {HOSTILE}" if d == HOSTILE else "reset after ClientHello")
        elif d == "facebook.com" and t < pd.Timestamp("2020-12-15", tz="UTC"):
            kw.update(blocking="tls_mitm", accessible=False, mitm_root="Qaznet Trust Network")
        elif d == "archive.org" and rng.random() < 0.4:
            kw.update(blocking="tcp_ip", accessible=False)
        rows.append(measurement(i, d, **kw))
    return frame_of(rows)


def result(cid: str, status: str, frame: pd.DataFrame, domain: str | None, *, testable: bool = True,
           expect: str = "blocked", explanation: str = "", quote: str | None = None,
           since: str | None = None) -> dict[str, Any]:
    """One row of the comparison results (compare columns), counted from ``frame``."""
    sub = frame[frame["domain"] == domain] if domain else frame.iloc[0:0]
    nb, na = int((sub["outcome"] == "blocked").sum()), int((sub["outcome"] == "accessible").sum())
    share = nb / (nb + na) if nb + na else float("nan")
    return dict(  # noqa: C408
        claim_id=cid, section=cid[:2], quote=quote or f"quote of {cid}", expect=expect, testable=testable,
        status=status, n=len(sub), n_blocked=nb, n_accessible=na, n_down=int((sub["outcome"] == "down").sum()),
        n_inconclusive=int((sub["outcome"] == "inconclusive").sum()), blocked_share=share,
        wilson_low=share * 0.8 if nb + na else float("nan"), wilson_high=min(1.0, share * 1.1) if nb + na else
        float("nan"), confidence="high" if nb + na > 30 else None, n_vantages=int(sub["vantage_id"].nunique()),
        n_networks=int(sub["probe_asn"].nunique()),
        first=sub["measurement_start_time"].min() if len(sub) else pd.NaT,
        last=sub["measurement_start_time"].max() if len(sub) else pd.NaT,
        blocking_types="tls:5", mitm_roots="", example_ids=",".join(sub["measurement_uid"].head(3)),
        since_status=since, since_n=4 if since else 0, explanation=explanation)


def synthetic_results(frame: pd.DataFrame, *, hostile: bool = True) -> pd.DataFrame:
    """Six claims: supported, contradicted (with a 'since the report' verdict), intermittent, MITM,
    not measured, out of scope; plus (``hostile``) one whose quote and explanation carry markup."""
    rows = [
        result("B1-meduza", "supported", frame, "meduza.io", explanation="all judged measurements blocked"),
        result("B1-medium-2020", "contradicted", frame, "medium.com", since="supported"),
        result("B1-archive", "supported", frame, "archive.org", expect="intermittent"),
        result("A3-drill", "supported", frame, "facebook.com", expect="mitm"),
        result("B1-lalafo", "not_measured", frame, None),
        result("C3-arrests", "out_of_scope", frame, None, testable=False,
               explanation="an arrest cannot be observed on the network"),
    ]
    if hostile:
        rows.append(result("B2-hostile", "inconclusive", frame, HOSTILE, quote=f"says {HOSTILE}",
                           explanation=f"because {HOSTILE}"))
    return pd.DataFrame(rows, columns=list(report.CLAIMS_CSV_COLUMNS))


@dataclasses.dataclass(frozen=True)
class FakeAgreement:
    """The shape of ``analysis.ooni.Agreement`` (counts, rates, pairs, disagreements)."""

    n_ooni: int
    n_compared: int
    n_agree: int
    rate: float | None
    pairs: pd.DataFrame
    disagreements: pd.DataFrame


def fake_agreement() -> FakeAgreement:
    dis = pd.DataFrame({"measurement_uid": ["u1"], "input": [f"http://{HOSTILE}/"], "file": ["/d/x.json"],
                        "line": [3], "ooni_blocking": ["dns"], "blocking": [None], "kind": ["outcome"],
                        "rule": ["dns.control_failed"], "reason": [f"control failed {HOSTILE}"]})
    pairs = pd.DataFrame({"ooni_blocking": ["dns", "false"], "blocking": ["inconclusive", "false"], "n": [1, 9]})
    return FakeAgreement(n_ooni=10, n_compared=10, n_agree=9, rate=0.9, pairs=pairs, disagreements=dis)


# ------------------------------------------------------------------ parsing helpers


class Page(HTMLParser):
    """Collects ids, tags, <img> sources, link targets and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.hrefs: list[str] = []
        self.resource_attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "img":
            self.imgs.append(a)
        if tag == "a" and a.get("href") is not None:
            self.hrefs.append(a["href"] or "")
        for k in ("src", "href", "srcset", "poster", "data", "action"):
            if a.get(k):
                self.resource_attrs.append((tag, k, a[k] or ""))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        else:
            self.text.append(data)


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    p.close()
    return p


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its IHDR chunk; asserts the signature."""
    assert data[:8] == PNG_SIGNATURE, data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[report.ReportPaths, pd.DataFrame, pd.DataFrame]:
    frame = synthetic_frame()
    results = synthetic_results(frame)
    stats = load.LoadStats(files=3, lines=310, loaded=300, torn=1, invalid=2, skipped=7,
                           errors=["a.jsonl:3: torn line", f"b.jsonl:9: bad {HOSTILE}"])
    paths = report.render(frame, results, agreement=fake_agreement(), stats=stats,
                          out_dir=tmp_path_factory.mktemp("report") / "out", title=f"Test {HOSTILE}",
                          ignore_period=False, generated_at=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC))
    return paths, frame, results


# ------------------------------------------------------------------ report tests


def test_render_writes_every_file(rendered: Any) -> None:
    paths, _, _ = rendered
    for p in (paths.index_html, paths.report_md, paths.claims_csv, *paths.images):
        assert p.is_file() and p.stat().st_size > 0, p
    assert sorted(p.name for p in paths.images) == sorted(name for name, _, _ in plots.FIGURES)


def test_html_has_every_section(rendered: Any) -> None:
    paths, _, _ = rendered
    page = parse(paths.index_html.read_text(encoding="utf-8"))
    for section in (*SECTIONS, "ooni-agreement"):
        assert section in page.ids, f"section #{section} missing"
    text = " ".join(page.text)
    for words in ("Methods and limits", "No verdict is given without a control", "Inconclusive is not blocked",
                  "--ignore-period", "Wilson", "since the report", "Loading", "torn"):
        assert words in text, words


def test_every_img_is_an_embedded_png_that_decodes(rendered: Any) -> None:
    paths, _, _ = rendered
    page = parse(paths.index_html.read_text(encoding="utf-8"))
    assert len(page.imgs) == len(plots.FIGURES)
    for img in page.imgs:
        src = img.get("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        w, h = png_size(data)
        assert w >= 300 and h >= 100, (w, h)
        assert img.get("alt"), "every figure has alt text"


def test_html_loads_nothing_from_outside(rendered: Any) -> None:
    paths, _, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    page = parse(html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, attr, value in page.resource_attrs:
        ok = value.startswith("#") if tag == "a" else value.startswith("data:")
        assert ok, (tag, attr, value[:60])
    assert "url(" not in page.style and "@import" not in page.style and "@font-face" not in page.style
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)


def test_hostile_strings_are_escaped(rendered: Any) -> None:
    paths, _, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    page = parse(html)
    assert "script" not in page.tags  # the parser saw no <script> element: it was all text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = " ".join(page.text)
    assert f"blockpage {HOSTILE}" in text  # shown to the reader exactly as the server sent it
    assert f"because {HOSTILE}" in text and f"Test {HOSTILE}" in text
    md = paths.report_md.read_text(encoding="utf-8")
    assert "<script>" not in md and "&lt;script&gt;" in md
    rows = [line for line in md.splitlines() if line.startswith("| **B2-hostile**")]
    assert len(rows) == 1  # a "|" from the data never adds a table column
    assert rows[0].count("|") - rows[0].count("\\|") == 10, rows[0]


def test_claims_csv_one_row_per_claim_with_the_compare_columns(rendered: Any) -> None:
    paths, _, results = rendered
    with paths.claims_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["claim_id"] for r in rows] == list(results["claim_id"])
    assert tuple(rows[0].keys()) == report.CLAIMS_CSV_COLUMNS
    meduza = next(r for r in rows if r["claim_id"] == "B1-meduza")
    assert meduza["status"] == "supported" and int(meduza["n"]) > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", meduza["first"])
    hostile = next(r for r in rows if r["claim_id"] == "B2-hostile")
    assert hostile["quote"] == f"says {HOSTILE}"  # CSV keeps the text as it is (csv quoting, no HTML)


def test_markdown_references_existing_pngs_and_has_every_section(rendered: Any) -> None:
    paths, _, _ = rendered
    md = paths.report_md.read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md)
    assert sorted(refs) == sorted(name for name, _, _ in plots.FIGURES)
    for r in refs:
        png_size((paths.out_dir / r).read_bytes())
    for heading in ("## Summary", "## Claims and verdicts", "## Claims out of scope", "## Outcomes by target and time",
                    "## Blocking types", "## TLS interception (MITM) evidence", "## Vantage health",
                    "## Agreement with OONI", "## Evidence (example measurements)", "## Methods and limits"):
        assert heading in md, heading


def test_claims_table_badges_since_column_and_evidence_links(rendered: Any) -> None:
    paths, _, results = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    page = parse(html)
    for status in ("supported", "contradicted", "inconclusive", "not_measured"):
        assert f'<span class="badge {status}">' in html, status
    row = re.search(r'<tr id="claim-B1-medium-2020">(.*?)</tr>', html, re.DOTALL)
    assert row and 'class="badge supported">supported</span><br><span class="muted">n = 4' in row.group(1)
    links = [h for h in page.hrefs if h.startswith("#m-")]
    assert links, "example measurement ids link to the evidence table"
    for h in links:
        assert h[1:] in page.ids, f"dangling evidence link {h}"
    uid = results.loc[results["claim_id"] == "B1-meduza", "example_ids"].iloc[0].split(",")[0]
    assert f'id="{report.anchor(uid)}"' in html and uid in html


def test_blocked_targets_table_leads_the_report(rendered: Any) -> None:
    """Issue 15 part 4: the report opens with what is blocked (target × network), before the summary and claims,
    each row's share and n counted from the frame, its example linked to the evidence table."""
    paths, frame, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    page = parse(html)
    assert page.ids.index("blocked-targets") < page.ids.index("summary") < page.ids.index("claims")
    md = paths.report_md.read_text(encoding="utf-8")
    assert md.index("## What is blocked") < md.index("## Summary") < md.index("## Claims and verdicts")
    table = re.search(r'<section id="blocked-targets">(.*?)</section>', html, re.DOTALL)
    assert table
    rows = re.findall(r"<tr><td.*?</tr>", table.group(1), re.DOTALL)
    # every (domain, ASN) pair with a blocked measurement, and only those: medium.com never is
    f = frame.assign(net=plots.network_labels(frame))
    pairs = f[f["outcome"] == "blocked"].groupby(["domain", "net"], observed=True).size()
    assert len(rows) == len(pairs) and "medium.com" not in table.group(1)
    sub = f[(f["domain"] == "archive.org") & (f["probe_asn"] == "AS9198")]
    nb, na = int((sub["outcome"] == "blocked").sum()), int((sub["outcome"] == "accessible").sum())
    assert nb > 0 and na > 0, "the synthetic archive.org is intermittent on AS9198"
    row = next(r for r in rows if "archive.org" in r and "AS9198" in r)
    assert f"{nb / (nb + na):.2f} <span class=\"muted\">({nb}/{nb + na})</span>" in row
    assert '<span class="mono">tcp_ip</span> ' + str(nb) in row
    last = sub.loc[sub["outcome"] == "blocked", "measurement_start_time"].max().strftime("%Y-%m-%d %H:%M")
    assert last in row
    links = re.findall(r'href="#(d-[0-9a-f]{12})"', table.group(1))
    assert len(links) >= len(rows) and all(a in page.ids for a in links), "each example links to its own section"
    assert all(re.search(r'href="#d-[0-9a-f]{12}"', r) for r in rows), "every row links an example measurement"


def test_blocked_targets_counts_types_share_and_dates() -> None:
    """Down and inconclusive measurements are not in the share's n; types most common first; first/last blocked."""
    t = [T0 + pd.Timedelta(days=d) for d in range(6)]
    rows = [measurement(0, "a.kz", t=t[0], blocking="dns", accessible=False),
            measurement(1, "a.kz", t=t[3], blocking="tls", accessible=False),
            measurement(2, "a.kz", t=t[4], blocking="tls", accessible=False),
            measurement(3, "a.kz", t=t[1], blocking="false", accessible=True),
            measurement(4, "a.kz", t=t[2], blocking="false", accessible=False),  # down
            measurement(5, "a.kz", t=t[5], blocking=None, accessible=None),  # inconclusive
            measurement(6, "a.kz", t=t[1], blocking="tls", accessible=False, vantage=("v2", "AS21299", "Kar-Tel")),
            measurement(7, "b.kz", t=t[1], blocking="false", accessible=True)]
    got, n = report._blocked_targets(frame_of(rows))
    assert n == 2 and [(g["domain"], g["network"]) for g in got] == [
        ("a.kz", "AS9198 (JSC Kazakhtelecom)"), ("a.kz", "AS21299 (Kar-Tel)")]
    a = got[0]
    assert [(x["name"], x["n"]) for x in a["types"]] == [("tls", 2), ("dns", 1)]
    assert (a["n_blocked"], a["n_judged"], a["share"]) == (3, 4, "0.75")
    assert (a["first"], a["last"]) == ("2020-11-20 00:00", "2020-11-24 00:00")
    assert a["example"] == frame_of(rows)["measurement_uid"][2]  # the latest blocked one
    assert report._blocked_targets(frame_of([rows[3], rows[7]])) == ([], 0)
    assert report._blocked_targets(load.empty_frame()) == ([], 0)


def test_out_of_scope_claims_listed_with_reason(rendered: Any) -> None:
    paths, _, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    oos = html.split('id="out-of-scope"', 1)[1].split("</section>", 1)[0]
    assert "C3-arrests" in oos and "an arrest cannot be observed on the network" in oos
    claims = html.split('id="claims"', 1)[1].split("</section>", 1)[0]
    assert "C3-arrests" not in claims


def test_mitm_section_shows_issuer_path_and_root(rendered: Any) -> None:
    paths, _, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    mitm = html.split('id="mitm"', 1)[1].split("</section>", 1)[0]
    assert "Qaznet Trust Network" in mitm
    assert "CN=facebook.com → CN=Security Certificate → CN=Qaznet Trust Network" in mitm


def test_vantage_offline_window_and_load_errors_shown(rendered: Any) -> None:
    paths, _, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    health = html.split('id="vantage-health"', 1)[1].split("</section>", 1)[0]
    assert "Offline windows" in health and "astana-vps" in health
    assert "a.jsonl:3: torn line" in html and "bad &lt;script&gt;" in html


def test_agreement_section_shows_rate_pairs_and_disagreements(rendered: Any) -> None:
    paths, _, _ = rendered
    html = paths.index_html.read_text(encoding="utf-8")
    sec = html.split('id="ooni-agreement"', 1)[1].split("</section>", 1)[0]
    assert "90.0 %" in sec and "dns.control_failed" in sec and ">x.json:3<" in sec  # no absolute path: its name
    assert "control failed &lt;script&gt;" in sec


def test_no_agreement_section_without_ooni_rows(tmp_path: Path) -> None:
    frame = synthetic_frame(60, hostile=False)
    frame = frame[frame["source"] == "kzprobe"].reset_index(drop=True)
    paths = report.render(frame, synthetic_results(frame, hostile=False), agreement=None, stats=None,
                          out_dir=tmp_path, title="t", ignore_period=True)
    page = parse(paths.index_html.read_text(encoding="utf-8"))
    assert "ooni-agreement" not in page.ids
    assert "Dates ignored" in " ".join(page.text)  # --ignore-period is announced


def test_empty_frame_renders_no_data_figures(tmp_path: Path) -> None:
    frame = load.empty_frame()
    results = pd.DataFrame([result("B1-meduza", "not_measured", frame, None),
                            result("C3-arrests", "out_of_scope", frame, None, testable=False, explanation="a law")],
                           columns=list(report.CLAIMS_CSV_COLUMNS))
    paths = report.render(frame, results, agreement=None, stats=load.LoadStats(), out_dir=tmp_path / "new" / "dir",
                          title="empty", ignore_period=False)
    page = parse(paths.index_html.read_text(encoding="utf-8"))
    for section in SECTIONS:
        assert section in page.ids
    assert "No measurements were loaded" in " ".join(page.text)
    for p in paths.images:
        png_size(p.read_bytes())
    assert len(list(csv.DictReader(paths.claims_csv.open(encoding="utf-8")))) == 2


def test_unwritable_out_dir_raises_report_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    frame = synthetic_frame(20, hostile=False)
    with pytest.raises(report.ReportError, match="a-file"):
        report.render(frame, synthetic_results(frame, hostile=False), out_dir=blocker / "sub", title="t")


@pytest.mark.parametrize(("raw", "escaped"), [
    ("plain.example", "plain.example"),
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ("a|b", "a\\|b"),
    ("[link](http://x)", "\\[link\\]\\(http://x\\)"),
    ("*em* _u_ `code`", "\\*em\\* \\_u\\_ \\`code\\`"),
    ("two\nlines", "two lines"),
    ("\x1b]0;PWNED\x07\u202e", "\\\\x1b\\]0;PWNED\\\\x07\\\\u202e"),  # terminal controls as kzprobe show shows them
    (None, ""),
    (float("nan"), ""),
    (3, "3"),
])
def test_md_escape(raw: object, escaped: str) -> None:
    assert report.md_escape(raw) == escaped


def test_anchor_is_a_safe_stable_id() -> None:
    a = report.anchor('x" onmouseover="alert(1)')
    assert re.fullmatch(r"m-[0-9a-f]{12}", a) and a == report.anchor('x" onmouseover="alert(1)')


@pytest.mark.parametrize(("offline", "windows"), [
    ([False, False, False], []),
    ([True, True, False, True], [("00:00", "01:00", 2), ("03:00", "03:00", 1)]),
    ([False, True, True, True], [("01:00", "03:00", 3)]),
])
def test_offline_windows(offline: list[bool], windows: list[tuple[str, str, int]]) -> None:
    rows = [measurement(i, "a.example", t=T0 + pd.Timedelta(hours=i), blocking=None if off else "false",
                        accessible=None if off else True, offline=off) for i, off in enumerate(offline)]
    got = report.offline_windows(frame_of(rows)[::-1])  # order of rows does not matter
    assert [(w["start"][-5:], w["end"][-5:], w["n"]) for w in got] == windows


# ------------------------------------------------------------------ plots


@pytest.mark.parametrize(("counts", "state"), [
    ({"blocked": 2}, "blocked (≥ 90 %)"),
    ({"blocked": 19, "accessible": 1}, "blocked (≥ 90 %)"),
    ({"blocked": 1, "down": 1, "inconclusive": 4}, "mostly blocked (50–90 %)"),
    ({"blocked": 1, "accessible": 3}, "partly blocked (10–50 %)"),
    ({"blocked": 1, "accessible": 19}, "accessible (< 10 % blocked)"),
    ({"accessible": 1, "inconclusive": 5}, "accessible (< 10 % blocked)"),
    ({"down": 1, "inconclusive": 2}, "down (not blocked)"),
    ({"inconclusive": 3}, "inconclusive only"),
])
def test_heatmap_cell_state(counts: dict[str, int], state: str) -> None:
    code = plots.cell_codes(pd.DataFrame([counts])).iloc[0]
    assert plots.CELL_STATES[code][0] == state


@pytest.mark.parametrize(("days", "freq"), [(0, "D"), (62, "D"), (63, "W"), (730, "W"), (731, "M")])
def test_time_bin_by_span(days: int, freq: str) -> None:
    assert plots.time_bin(T0, T0 + pd.Timedelta(days=days)) == freq


@pytest.mark.parametrize(("name", "fn", "alt"), plots.FIGURES)
def test_every_figure_handles_an_empty_frame_and_is_deterministic(name: str, fn: Any, alt: str,
                                                                  tmp_path: Path) -> None:
    png = fn(load.empty_frame(), path=tmp_path / name)
    assert png_size(png) and (tmp_path / name).read_bytes() == png
    frame = synthetic_frame(120)
    assert fn(frame) == fn(frame.sample(frac=1.0, random_state=3)), "same data, same bytes"


def test_heatmap_caps_rows_at_max_targets() -> None:
    rows = [measurement(i, f"site{i:03d}.example", t=T0 + pd.Timedelta(days=i % 20)) for i in range(150)]
    big = plots.outcome_heatmap(frame_of(rows), max_targets=100)
    capped = plots.outcome_heatmap(frame_of(rows[:100]), max_targets=100)
    assert png_size(big)[1] == png_size(capped)[1]  # 100 rows drawn either way


def test_labels_are_safe_for_matplotlib() -> None:
    assert plots._label("$x$") == r"\$x\$"
    assert plots._label("a\nb\x00") == "a?b?"
    assert plots._label("x" * 100, 10) == "x" * 9 + "…"
    assert plots._label(None) == "(none)"


def test_network_labels_use_one_name_per_asn() -> None:
    rows = [measurement(0, "a.example", t=T0, vantage=("v1", "AS1", "Net One")),
            measurement(1, "a.example", t=T0, vantage=("v2", "AS1", None)),
            measurement(2, "a.example", t=T0, vantage=("v3", "AS2", None))]
    assert list(plots.network_labels(frame_of(rows))) == ["AS1 (Net One)", "AS1 (Net One)", "AS2"]


# ------------------------------------------------------------------ headless browser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


#: Outline colours the screenshot test adds to a copy of the page, to find sections in the pixels.
MARK_BLOCKED, MARK_CLAIMS = (255, 0, 255), (0, 255, 255)


def test_headless_browser_screenshot(rendered: Any, tmp_path: Path) -> None:
    """The page renders in Chromium from disk (offline: in its own network namespace when root), and the
    blocked-targets table is what the reader sees first: at the top of the page, above the claims.

    A copy of the page gets solid outlines of two colours used nowhere else (magenta around
    #blocked-targets, cyan around #claims); their pixel rows in the screenshot say where the browser put them."""
    exe = chromium()
    if exe is None:
        if os.environ.get("KZPROBE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not found and KZPROBE_REQUIRE_BROWSER=1 (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium; KZPROBE_REQUIRE_BROWSER=1 makes this fail)")
    paths, _, _ = rendered
    marked = tmp_path / "index.html"
    css = (f"#blocked-targets {{ outline: 6px solid rgb{MARK_BLOCKED}; outline-offset: 4px; }}"
           f" #claims {{ outline: 6px solid rgb{MARK_CLAIMS}; outline-offset: 4px; }}")
    marked.write_text(paths.index_html.read_text(encoding="utf-8").replace("</style>", css + "</style>", 1),
                      encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
           marked.resolve().as_uri()]
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare:  # no network at all for the browser
        cmd = [unshare, "--net", *cmd]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    w, h = png_size(shot.read_bytes())
    assert (w, h) == (1280, 2400)
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        px = np.asarray(im.convert("RGB"))
    assert colours is not None and len(colours) > 50, "the screenshot is not blank"

    def rows_of(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.flatnonzero((px == np.array(rgb, dtype=px.dtype)).all(axis=2).any(axis=1))

    blocked, claims = rows_of(MARK_BLOCKED), rows_of(MARK_CLAIMS)
    assert len(blocked), "the blocked-targets table is on the first screen"
    assert blocked.min() < 400, f"the blocked-targets table starts {blocked.min()} px down: not at the top"
    assert not len(claims) or claims.min() > blocked.max(), "the claims come after the blocked-targets table"


# ------------------------------------------------------------------ times unknown, IDNs, lab scope, methods

IDN_ALABEL, IDN_UNICODE = "xn--80aswg.xn--80ao21a", "сайт.қаз"


@pytest.mark.parametrize("times,expect", [
    ([pd.NaT, pd.NaT], "No measurement time is known"),
    ([pd.NaT, T0], "From <b>2020-11-20 00:00</b> to <b>2020-11-20 00:00</b>"),
])
def test_summary_with_unknown_times(tmp_path: Path, times: list[Any], expect: str) -> None:
    f = frame_of([measurement(i, "meduza.io", t=t) for i, t in enumerate(times)])
    paths = report.render(f, pd.DataFrame(columns=list(report.CLAIMS_CSV_COLUMNS)), out_dir=tmp_path)
    html = paths.index_html.read_text(encoding="utf-8")
    assert expect in html and "<b></b>" not in html
    md = paths.report_md.read_text(encoding="utf-8")
    assert "From  to" not in md


def test_idn_shown_in_unicode_with_the_a_label(tmp_path: Path) -> None:
    assert load.unicode_domain(IDN_ALABEL) == IDN_UNICODE
    assert load.domain_label(IDN_ALABEL) == f"{IDN_UNICODE} ({IDN_ALABEL})"
    assert load.unicode_domain("xn--zz-not-valid.example") == "xn--zz-not-valid.example"  # falls back to the A-label
    assert load.domain_label("meduza.io") == "meduza.io"
    f = frame_of([measurement(i, IDN_ALABEL, t=T0 + pd.Timedelta(days=i), blocking="tls_mitm", accessible=False,
                              mitm_root="Qaznet Trust Network") for i in range(3)])
    paths = report.render(f, pd.DataFrame(columns=list(report.CLAIMS_CSV_COLUMNS)), out_dir=tmp_path)
    mitm = paths.index_html.read_text(encoding="utf-8").split('id="mitm"', 1)[1].split("</section>", 1)[0]
    assert f'title="{IDN_ALABEL}">{IDN_UNICODE} <span class="muted">({IDN_ALABEL})</span>' in mitm
    assert f"{IDN_UNICODE} ({IDN_ALABEL})" in paths.report_md.read_text(encoding="utf-8")


@pytest.mark.parametrize("draw", ["outcome_heatmap", "blocking_by_target", "mitm_evidence"])
def test_idn_in_the_figures(monkeypatch: pytest.MonkeyPatch, draw: str) -> None:
    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig, path: figs.append(fig) or b"")
    f = frame_of([measurement(i, IDN_ALABEL, t=T0 + pd.Timedelta(days=i), blocking="tls_mitm", accessible=False,
                              mitm_root="Qaznet Trust Network") for i in range(3)])
    getattr(plots, draw)(f)
    labels = [t.get_text() for ax in figs[0].axes for t in ax.get_yticklabels()]
    # the MITM figure labels a bar "target — root"
    assert any(lab.split(" — ")[0] == f"{IDN_UNICODE} ({IDN_ALABEL})" for lab in labels), labels


def test_methods_say_an_intercepted_control_is_never_outage_evidence(rendered: Any) -> None:
    paths = rendered[0]
    html = paths.index_html.read_text(encoding="utf-8")
    methods = html.split('id="methods"', 1)[1]
    assert "control channel&#39;s TLS was intercepted" in methods and "never outage evidence" in methods
    assert "never outage evidence" in paths.report_md.read_text(encoding="utf-8").split("### Limits", 1)[1]


def test_methods_give_the_network_lookups_source_and_db_ips_attribution(rendered: Any) -> None:
    """DB-IP's databases (kzprobe assets update) are CC BY 4.0: the attribution goes wherever the network names
    they gave are shown — the report's methods, HTML and Markdown (issue 15 part 1)."""
    from probe.geoip import DBIP_ATTRIBUTION

    paths = rendered[0]
    methods = paths.index_html.read_text(encoding="utf-8").split('id="methods"', 1)[1]
    assert 'id="networks"' in methods and "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0" in methods
    assert report.md_escape(DBIP_ATTRIBUTION) in paths.report_md.read_text(encoding="utf-8").split("### Limits", 1)[1]


def test_vantage_table_keeps_each_vantages_own_network_name() -> None:
    """Two lab scenarios on one ASN (AS64500) each keep their own name (second break test)."""
    from analysis.report import _summary

    rows = [measurement(0, "a.example", t=T0, vantage=("lab-big", "AS64500", "kzprobe lab (big)")),
            measurement(1, "a.example", t=T0, vantage=("lab-many", "AS64500", "kzprobe lab (many)")),
            measurement(2, "a.example", t=T0, vantage=("lab-many", "AS64500", "kzprobe lab (many)")),
            measurement(3, "a.example", t=T0, vantage=("v3", "AS2", None))]
    nets = {v["id"]: v["networks"] for v in _summary(frame_of(rows), None)["vantages"]}
    assert nets == {"lab-big": "AS64500 (kzprobe lab (big))", "lab-many": "AS64500 (kzprobe lab (many))",
                    "v3": "AS2"}


def test_report_on_the_real_ooni_samples_names_oonis_errors_untested_targets_and_repeats(tmp_path: Path) -> None:
    """Issue 14: the OONI agreement section on the 32 real measurements says where OONI is wrong and why; the
    targets OONI did not test in 2021 are listed; a fact judged in two sections counts once."""
    from analysis.claims import load_claims
    from analysis.compare import compare
    from analysis.ooni import agreement
    from tests.conftest import shared_path

    files = sorted(shared_path("data", "ooni-samples").rglob("*.json")) + \
        sorted(shared_path("data", "ooni-samples-more").glob("*.json"))
    frame = load.load(files).frame
    claims = load_claims()
    results = compare(claims, frame, country=None)
    paths = report.render(frame, results, agreement=agreement(frame), out_dir=tmp_path, title="OONI samples")
    md = paths.report_md.read_text(encoding="utf-8")
    html = paths.index_html.read_text(encoding="utf-8")
    for text in (md, html):
        assert "OONI's verdict is known to be wrong here" in text
        assert "Targets OONI did not test in the report's period" in text
        for t in ("lalafo.kg", "pana-defenders.info", "issuu.com", "mail.google.com", "tilda.cc", "tilda.ws"):
            assert t in text
    n_repeats = sum(1 for c in claims if c.same_fact_as)
    assert n_repeats and f"{n_repeats} claim(s) repeat a fact" in md
    counted = sum(n for _, n in report.iter_status_counts(results))
    assert counted == len(claims) - n_repeats


def test_weak_interception_shows_in_the_mitm_table() -> None:
    """A pre-0.4 OONI measurement judged tls_mitm on weaker evidence (no certificate) is listed, said to be weaker."""
    f = pd.DataFrame({"domain": ["www.facebook.com", "vk.com", "x.org"], "mitm_root": [None, "CN=Qaznet Trust Network",
                                                                                      None],
                      "rule": ["tls_mitm.unknown_authority_window", "tls_mitm.known_root", "http.match"],
                      "tls_issuers": [None, "CN=Qaznet Trust Network", None],
                      "measurement_start_time": pd.to_datetime(["2019-07-20", "2019-07-21", "2019-07-22"], utc=True),
                      "vantage_id": ["KZ/AS9198"] * 3})
    rows, n = report._mitm(f)
    assert n == 2
    weak = next(r for r in rows if r["alabel"] == "www.facebook.com")
    assert weak["root"] == report.WEAK_MITM_ROOT and "weaker evidence" in weak["root"]


@pytest.mark.parametrize("text,inputs,expect", [
    ("/home/ann/kz/pi-1/run.jsonl:3", ["/home/ann/kz"], "pi-1/run.jsonl:3"),
    ("/home/ann/kz/pi-1/run.jsonl:3: torn line", ["/home/ann/kz/"], "pi-1/run.jsonl:3: torn line"),
    ("/home/ann/kz/run.jsonl", ["/home/ann/other"], "run.jsonl"),  # outside every --in: its name only
    ("/home/ann/a/x.jsonl and /home/ann/b/y.jsonl", ["/home/ann/a", "/home/ann/b"], "a/x.jsonl and b/y.jsonl"),
    ("kz/pi-1/run.jsonl:9", ["kz"], "pi-1/run.jsonl:9"),
    ("run.jsonl:2", [], "run.jsonl:2"),
    ("reset after https://x.kz/a/b, HTTP/1.1", [], "reset after https://x.kz/a/b, HTTP/1.1"),  # not a path
])
def test_relative_path(text: str, inputs: list[str], expect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "is_dir", lambda self: not self.name.endswith(".jsonl"))
    assert report.relative_path(text, [Path(p) for p in inputs]) == expect


def test_rendered_report_has_no_absolute_path(rendered: Any) -> None:
    """The synthetic frame's files are absolute (/data/…) and no --in is given: only their names are shown."""
    paths, _, _ = rendered
    for p in (paths.index_html, paths.report_md):
        out = p.read_text(encoding="utf-8")
        assert "/data/" not in out and "/d/x.json" not in out, p.name
    assert "almaty-pi-1.jsonl:" in paths.index_html.read_text(encoding="utf-8")


def test_confidence_shows_in_the_verdict_badge(tmp_path: Path) -> None:
    """Issue 15 part 4: a verdict on one measurement is visibly weak ("weak (n=1)") on its badge, not in small print."""
    frame = synthetic_frame(40, hostile=False)
    one = frame[frame["domain"] == "meduza.io"].head(1)
    results = pd.DataFrame([
        {**result("B1-one", "supported", one, "meduza.io"), "confidence": "low"},
        {**result("B1-many", "supported", frame, "meduza.io"), "confidence": "high"},
        result("B1-lalafo", "not_measured", frame, None)], columns=list(report.CLAIMS_CSV_COLUMNS))
    n_many = int(results.loc[1, "n"] - results.loc[1, "n_inconclusive"])
    paths = report.render(one, results, out_dir=tmp_path / "out")
    html = paths.index_html.read_text(encoding="utf-8")
    row = re.search(r'<tr id="claim-B1-one">(.*?)</tr>', html, re.DOTALL)
    assert row and '<span class="badge supported conf-low">supported · weak (n=1)</span>' in row.group(1)
    row = re.search(r'<tr id="claim-B1-many">(.*?)</tr>', html, re.DOTALL)
    assert row and f'<span class="badge supported conf-high">supported · strong (n={n_many})</span>' in row.group(1)
    row = re.search(r'<tr id="claim-B1-lalafo">(.*?)</tr>', html, re.DOTALL)
    assert row and '<span class="badge not_measured">not measured</span>' in row.group(1)
    md = paths.report_md.read_text(encoding="utf-8")
    assert "**supported** · weak \\(n=1\\)" in md and f"**supported** · strong \\(n={n_many}\\)" in md  # escaped
