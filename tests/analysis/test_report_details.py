"""The report's per-measurement sections (issue 15 part 4), from real records: the golden df-000 records of
tests/data/golden (kzprobe's own format, a TLS chain with the Qaznet root among them), written as one run's
JSONL and reported with ``analysis.build.build_report`` — the path a user takes.

Each linked measurement gets a section inside the one HTML file: DNS per resolver beside the control's,
connects, the TLS chain (issuers, verification, the matched interception root), HTTP beside the control's,
the rule and reason; sections are capped (a count of the rest) and bounded (hostile strings cut).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import report
from analysis.build import build_report
from tests.analysis.test_report import parse

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
#: golden record → (input it is given here, x_measurement_uid)
RECORDS = {
    "df000-tls_mitm.json": ("https://facebook.com/", "a" * 32),
    "df000-dns.json": ("https://meduza.io/", "b" * 32),
    "df000-tls.json": ("https://kloop.kg/", "c" * 32),
    "df000-http-diff.json": ("http://dailymail.co.uk/", "d" * 32),
    "df000-accessible.json": ("https://avaaz.org/", "e" * 32),
}


def write_run(directory: Path, *, hostile_title: str | None = None) -> Path:
    """The golden records as one run's JSONL (distinct inputs, uids and minutes) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (name, (url, uid)) in enumerate(RECORDS.items()):
        rec = json.loads((GOLDEN / name).read_text(encoding="utf-8"))
        rec["input"], rec["x_measurement_uid"] = url, uid
        if isinstance(rec.get("x_input_metadata"), dict):
            rec["x_input_metadata"]["domain"] = url.split("/")[2]
        rec["measurement_start_time"] = f"2021-03-01 06:{i:02d}:00"
        if hostile_title is not None:
            for r in rec["test_keys"].get("requests") or ():
                if isinstance(r.get("response"), dict):
                    r["response"]["x_title"] = hostile_title
        lines.append(json.dumps(rec))
    path = directory / "20210301T060000Z_webconnectivity_KZ_9198_0000000000000000.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("details")
    write_run(base / "in")
    return build_report([base / "in"], base / "out")


def section(html: str, uid: str) -> str:
    m = re.search(rf'<article class="mdetail" id="{report.detail_anchor(uid)}">(.*?)</article>', html, re.DOTALL)
    assert m, f"no section for {uid}"
    return m.group(1)


def test_every_blocked_example_has_its_own_section_linked_from_the_tables(built: Any) -> None:
    html = built.paths.index_html.read_text(encoding="utf-8")
    page = parse(html)
    blocked = html.split('<section id="blocked-targets">', 1)[1].split("</section>", 1)[0]
    for name in ("df000-tls_mitm.json", "df000-dns.json", "df000-tls.json", "df000-http-diff.json"):
        uid = RECORDS[name][1]
        a = report.detail_anchor(uid)
        assert a in page.ids, name
        assert f'href="#{a}"' in blocked, f"the blocked table links {name}'s section"
    evidence = html.split('<section id="evidence">', 1)[1].split("</section>", 1)[0]
    assert all(f'href="#{report.detail_anchor(u)}"' in evidence for _, u in list(RECORDS.values())[:4])
    # the accessible avaaz.org is the example of claim B1-avaaz-unblocked: linked from the claims table
    a = report.detail_anchor(RECORDS["df000-accessible.json"][1])
    claims = html.split('<section id="claims">', 1)[1].split("</section>", 1)[0]
    assert a in page.ids and f'href="#{a}"' in claims


def test_the_tls_chain_with_issuers_verification_and_the_matched_root(built: Any) -> None:
    s = section(built.paths.index_html.read_text(encoding="utf-8"), RECORDS["df000-tls_mitm.json"][1])
    chain = re.search(r'<ol class="chain" start="0">(.*?)</ol>', s, re.DOTALL)
    assert chain, "the chain is listed"
    items = re.findall(r"<li>(.*?)</li>", chain.group(1), re.DOTALL)
    assert len(items) == 2  # leaf, then the Qaznet root the server sent
    assert "Qaznet Trust Network" in items[1] and "interception root matched" in items[1]
    assert "interception root matched" not in items[0] and "issued by" in items[0]
    assert "Qaznet Trust Network" in items[0]  # the leaf's issuer
    assert "ssl_unknown_authority" in s  # the verification result
    assert "control: ok" in s and "CN=Example CA" in s  # the control's handshake and issuer beside
    assert "matched by spki, name" in s and "qaznet-2019" in s
    assert "198.51.100.7:443" in s  # the connect and the handshake's endpoint


def test_dns_and_http_beside_the_controls(built: Any) -> None:
    html = built.paths.index_html.read_text(encoding="utf-8")
    dns = section(html, RECORDS["df000-dns.json"][1])
    assert "control (helper)" in dns and "control (doh)" in dns
    # the ISP resolver says NXDOMAIN (per query type), both controls give the site's address
    isp = r"udp 192\.0\.2\.53:53</td><td class=\"mono\">A</td><td class=\"mono wrap\">dns_nxdomain_error"
    assert re.search(isp, dns)
    assert dns.count("198.51.100.7") >= 2
    diff = section(html, RECORDS["df000-http-diff.json"][1])
    http = diff.split("<caption>HTTP</caption>", 1)[1]
    assert '<tr class="ctl"><td>control</td>' in http and "<td>probe</td>" in http
    ctl = json.loads((GOLDEN / "df000-http-diff.json").read_text(encoding="utf-8"))["test_keys"]["control"]
    assert str(ctl["http_request"]["status_code"]) in http
    assert re.search(r"<b>Rule</b> <span class=\"mono\">http\.", diff), "the rule and its reason"


def test_sections_are_capped_with_a_count_of_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path / "in")
    monkeypatch.setattr(report, "MAX_DETAILS", 2)
    html = build_report([tmp_path / "in"], tmp_path / "out").paths.index_html.read_text(encoding="utf-8")
    assert html.count('<article class="mdetail"') == 2
    n_evidence = len(re.findall(r'<tr id="m-[0-9a-f]{12}">', html))
    assert n_evidence == len(RECORDS)
    assert f"<b>{n_evidence - 2} more example measurement(s)</b> are in the evidence table only" in html


def test_a_hostile_record_cannot_blow_up_the_page(tmp_path: Path) -> None:
    """A 200 kB title with markup: escaped and cut to DETAIL_MAX_CHARS in the section."""
    evil = "<script>x</script>" + "A" * 200_000
    write_run(tmp_path / "in", hostile_title=evil)
    html = build_report([tmp_path / "in"], tmp_path / "out").paths.index_html.read_text(encoding="utf-8")
    assert "<script>x" not in html
    s = section(html, RECORDS["df000-http-diff.json"][1])
    assert "A" * report.DETAIL_MAX_CHARS not in s and "&lt;script&gt;x&lt;/script&gt;AAA" in s
    assert len(html) < 2_000_000


def test_no_absolute_path_in_the_sections(built: Any) -> None:
    html = built.paths.index_html.read_text(encoding="utf-8")
    assert str(built.paths.out_dir.parent) not in html
    s = section(html, RECORDS["df000-tls.json"][1])
    assert "20210301T060000Z_webconnectivity_KZ_9198_0000000000000000.jsonl:3" in s


MARK_CHAIN, MARK_SECTION = (255, 0, 255), (0, 255, 255)


def test_headless_browser_renders_the_tls_chain(built: Any, tmp_path: Path) -> None:
    """Chromium (offline: its own network namespace when root) draws the interception measurement's section
    with its TLS chain: a copy of the page shows only the per-measurement sections, outlines that section
    in cyan and its chain in magenta (colours used nowhere else); the magenta box lies inside the cyan one
    and is tall enough for the two certificates' subject and issuer lines."""
    import shutil
    import subprocess

    import numpy as np

    from tests.analysis.test_report import chromium, png_size

    exe = chromium()
    if exe is None:
        import os

        if os.environ.get("KZPROBE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not found and KZPROBE_REQUIRE_BROWSER=1 (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium; KZPROBE_REQUIRE_BROWSER=1 makes this fail)")
    a = report.detail_anchor(RECORDS["df000-tls_mitm.json"][1])
    css = ("main > :not(#measurements) { display: none !important; }"
           f" #{a} {{ outline: 6px solid rgb{MARK_SECTION}; outline-offset: 2px; }}"
           f" #{a} ol.chain {{ outline: 6px solid rgb{MARK_CHAIN}; outline-offset: 2px; }}")
    marked = tmp_path / "index.html"
    marked.write_text(built.paths.index_html.read_text(encoding="utf-8").replace("</style>", css + "</style>", 1),
                      encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
           marked.resolve().as_uri()]
    unshare = shutil.which("unshare")
    import os

    if os.geteuid() == 0 and unshare:
        cmd = [unshare, "--net", *cmd]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    assert png_size(shot.read_bytes()) == (1280, 2400)
    from PIL import Image

    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"))

    def rows_of(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.flatnonzero((px == np.array(rgb, dtype=px.dtype)).all(axis=2).any(axis=1))

    sect, chain = rows_of(MARK_SECTION), rows_of(MARK_CHAIN)
    assert len(sect), "the interception measurement's section is drawn"
    assert len(chain), "its TLS chain is drawn"
    assert sect.min() < chain.min() and chain.max() < sect.max(), "the chain sits inside the section"
    assert chain.max() - chain.min() > 60, "the chain box holds two certificates (subject and issuer lines)"
    inside = px[chain.min() + 8: chain.max() - 8, 60:1200]
    assert (inside.min(axis=2) < 128).sum() > 500, "the chain box holds text"


# ------------------------------------------------------------------ the --ignore-period hint, the new dimensions


def test_a_report_whose_dates_judge_nothing_says_what_ignore_period_does(tmp_path: Path) -> None:
    """Measurements made today (a lab run) fall after every claim's period: every testable claim is 'not
    measured'. The report (HTML, Markdown) and the CLI line then say what --ignore-period and --as-of do;
    with --ignore-period the hint is gone and claims are judged."""
    run = write_run(tmp_path / "in")
    run.write_text(run.read_text(encoding="utf-8").replace('"2021-03-01 06:', '"2026-11-30 06:'), encoding="utf-8")
    built = build_report([tmp_path / "in"], tmp_path / "out")
    assert set(built.results.loc[built.results["testable"], "status"].astype(str)) == {"not_measured"}
    hint = report.period_hint(built.results, ignore_period=False)
    assert "--ignore-period judges every measurement against every claim" in hint and "--as-of DATE" in hint
    # it counts claims, not a measurement once per claim it concerns (break test, stop 18: "175 later
    # measurement(s)" for 25 measurements)
    testable = built.results[built.results["testable"].astype(bool)]
    assert f"{int((testable['since_n'] > 0).sum())} of {len(testable)} testable claim(s)" in hint
    assert "measurement(s) in all" not in hint
    html = built.paths.index_html.read_text(encoding="utf-8")
    hint_html = html.split('id="period-hint"', 1)[1].split("</p>", 1)[0]
    assert "--ignore-period judges every measurement against every claim" in hint_html
    assert html.index('id="period-hint"') < html.index('id="blocked-targets"'), "the hint is at the top"
    assert "no claim was judged because of the dates" in built.paths.report_md.read_text(encoding="utf-8")
    judged = build_report([tmp_path / "in"], tmp_path / "out2", ignore_period=True)
    assert 'id="period-hint"' not in judged.paths.index_html.read_text(encoding="utf-8")
    assert report.period_hint(judged.results, ignore_period=True) == ""
    assert (judged.results["status"].astype(str) == "supported").any()
    # the real dates inside the periods: claims judged, no hint
    day = dt.date(2021, 3, 1)
    inside = build_report([tmp_path / "in"], tmp_path / "out3", as_of=day)
    assert report.period_hint(inside.results, ignore_period=False, as_of=day) == ""
    assert "hint: No claim could be judged" in subprocess_report(tmp_path)


def subprocess_report(tmp_path: Path) -> str:
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "probe.cli", "report", "--in", str(tmp_path / "in"), "--out",
                           str(tmp_path / "cli-out")], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_lab_banner_says_what_ignore_period_does(tmp_path: Path) -> None:
    run = write_run(tmp_path / "in")
    lines = [json.loads(x) for x in run.read_text(encoding="utf-8").splitlines()]
    for rec in lines:
        rec.setdefault("annotations", {})["lab_scenario"] = "kz-2021"
    run.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    html = build_report([tmp_path / "in"], tmp_path / "out", lab=True).paths.index_html.read_text(encoding="utf-8")
    banner = html.split('id="lab-banner"', 1)[1].split("</p>", 1)[0]
    assert "<code>--ignore-period</code> (every\nmeasurement judged against every claim" in banner


def test_blocked_share_series_per_network_and_day() -> None:
    from analysis import plots
    from tests.analysis.test_report import T0, frame_of, measurement

    v1, v2 = ("pi", "AS9198", "JSC Kazakhtelecom"), ("vps", "AS21299", "Kar-Tel LLC")
    rows = [measurement(0, "a.kz", t=T0, vantage=v1, blocking="dns", accessible=False),
            measurement(1, "b.kz", t=T0, vantage=v1, blocking="false", accessible=True),
            measurement(2, "c.kz", t=T0, vantage=v1, blocking="false", accessible=True),
            measurement(3, "a.kz", t=T0, vantage=v1, blocking=None, accessible=None),
            measurement(4, "a.kz", t=T0 + pd.Timedelta(days=1), vantage=v2, blocking=None, accessible=None)]
    g = plots.blocked_share_series(frame_of(rows)).set_index("network")
    kt = g.loc["KZ · AS9198 (JSC Kazakhtelecom)"]
    assert (int(kt["blocked"]), int(kt["judged"]), int(kt["n"])) == (1, 3, 4) and abs(kt["share"] - 1 / 3) < 1e-9
    kar = g.loc["KZ · AS21299 (Kar-Tel LLC)"]
    assert int(kar["judged"]) == 0 and kar["share"] != kar["share"]  # NaN: nothing judged that day


def test_categories_come_from_the_citizen_lab_lists() -> None:
    from analysis import plots

    cats = plots.categories_of(pd.Series(["meduza.io", "www.meduza.io", "nowhere.invalid"]))
    assert cats.iloc[0] == cats.iloc[1] and cats.iloc[0].startswith("NEWS")
    assert cats.iloc[2] == plots.NO_CATEGORY


def test_network_heatmap_rows_are_country_and_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import plots
    from tests.analysis.test_report import T0, frame_of, measurement

    figs: list[Any] = []
    monkeypatch.setattr(plots, "_png", lambda fig, path: figs.append(fig) or b"")
    rows = [measurement(0, "a.kz", t=T0, vantage=("pi", "AS9198", "JSC Kazakhtelecom"), blocking="dns",
                        accessible=False),
            measurement(1, "a.kz", t=T0, vantage=("x", "AS3", None))]
    f = frame_of(rows)
    f["probe_cc"] = f["probe_cc"].cat.add_categories(["RU"])
    f.loc[1, "probe_cc"] = "RU"
    plots.network_heatmap(f)
    labels = [t.get_text() for t in figs[0].axes[0].get_yticklabels()]
    assert labels == ["KZ · AS9198 (JSC Kazakhtelecom)", "RU · AS3"]  # grouped by country


def test_claim_badges_use_no_figure_colour() -> None:
    """A 'supported' badge is not the figures' accessible green nor 'contradicted' their blocked vermillion."""
    from analysis import palette

    css = (report.TEMPLATES / "report.css").read_text(encoding="utf-8")
    badges = "\n".join(line for line in css.splitlines() if line.startswith(".badge."))
    hues = {c.upper() for c in palette.MEANINGS} - {"#FFFFFF"}
    assert not [c for c in re.findall(r"#[0-9A-Fa-f]{6}", badges) if c.upper() in hues]


def md_section(md: str, uid: str) -> str:
    """The text of ``uid``'s section of report.md, Markdown escapes and entities undone."""
    import html as htmllib

    start = md.index(f'### <a id="{report.detail_anchor(uid)}"></a>')
    end = min(i for i in (md.find("\n### ", start + 1), md.find("\n## ", start + 1)) if i >= 0)
    return htmllib.unescape(re.sub(r"\\(.)", r"\1", md[start:end]))


def test_report_md_has_the_same_sections_as_the_html(built: Any) -> None:
    """Issue 15: the per-measurement sections were HTML-only. report.md has one per measurement, in the same
    order, linked from its tables like the HTML's; every value a section of the HTML shows (each table cell,
    each certificate's subject and issuer, the rule and reason) is in the Markdown section too."""
    import html as htmllib

    page = built.paths.index_html.read_text(encoding="utf-8")
    md = built.paths.report_md.read_text(encoding="utf-8")
    html_ids = re.findall(r'<article class="mdetail" id="([^"]+)">', page)
    assert html_ids and re.findall(r'^### <a id="([^"]+)"></a>', md, re.MULTILINE) == html_ids
    for _, uid in RECORDS.values():
        h, m = section(page, uid), md_section(md, uid)
        leaves = [htmllib.unescape(t).strip() for _, t in re.findall(r"<(td|span|p|li)[^>]*>([^<]+)</\1>", h)]
        leaves += [htmllib.unescape(t).strip() for t in re.findall(r'<span class="mono wrap">([^<]+)</span>', h)]
        leaves = [t.rstrip(":;,") for t in leaves if t and t not in ("probe", "control", "—")]
        assert leaves
        missing = [t for t in leaves if t not in m]
        assert not missing, (uid, missing)
        anchor_ = report.detail_anchor(uid)
        assert f"(#{anchor_})" in md.split("## The example measurements one by one", 1)[0]  # linked from a table
    # the TLS chain and the matched root, in text
    mitm = md_section(md, RECORDS["df000-tls_mitm.json"][1])
    assert "0. CN=site.example.org, issued by CN=Qaznet Trust Network" in mitm
    assert "← interception root matched: qaznet-2019" in mitm


#: Terminal controls in a site's title (break test 24, finding 8): clear the screen, set the window title
#: (OSC 0 ... BEL), colour, a right-to-left override and a C1 CSI (U+009B).
CONTROL_TITLE = "\x1b[2J\x1b]0;PWNED\x07\x1b[31mRED\u202eevil\x9b1m"
#: Every character probe.safetext.terminal_safe escapes, as a pattern (the class is written out here so
#: that the test does not borrow the code's own list).
TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_terminal_controls_from_a_site_are_escaped_in_report_md_and_index_html(tmp_path: Path) -> None:
    """A title with ESC/OSC/BEL/bidi/C1 codes: ``cat report.md`` (or the HTML's source) cleared the screen
    and set the terminal's title, the codes copied byte for byte (old code: both files held them; checked).
    Both now show them as ``kzprobe show`` does (probe.safetext.terminal_safe): ``\\x1b`` as text."""
    write_run(tmp_path / "in", hostile_title=CONTROL_TITLE)
    paths = build_report([tmp_path / "in"], tmp_path / "out").paths
    html = paths.index_html.read_text(encoding="utf-8")
    md = paths.report_md.read_text(encoding="utf-8")
    for name, text in (("index.html", html), ("report.md", md)):
        found = TERMINAL_CONTROL.search(text)
        assert found is None, f"{name}: {found.group()!r} at {found.start()}"  # type: ignore[union-attr]
    shown = r"\x1b[2J\x1b]0;PWNED\x07\x1b[31mRED\u202eevil\x9b1m"
    assert shown in section(html, RECORDS["df000-http-diff.json"][1])
    assert shown.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]") in md  # Markdown-escaped
