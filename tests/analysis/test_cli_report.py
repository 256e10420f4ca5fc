"""``kzprobe report`` and ``kzprobe claims`` end to end (in-process through probe.cli.main).

The end-to-end report runs on the project's shared OONI samples (``shared_path``); it
fails, never skips, when they are missing.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import plots
from analysis.claims import load_claims
from probe.cli import main
from probe.exitcodes import ANALYSIS_INSTALL_HINT
from tests.analysis.test_report import PNG_SIGNATURE, SECTIONS, parse, png_size
from tests.conftest import REPO, shared_path


def samples_as_jsonl(dest: Path, *, extra: str = "") -> Path:
    """Every shared OONI sample, one compact JSON object a line, in ``dest/ooni.jsonl`` (+ ``extra``)."""
    lines = []
    for f in sorted(shared_path("data", "ooni-samples").rglob("*.json")):
        lines.append(json.dumps(json.loads(f.read_text(encoding="utf-8"))))
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "ooni.jsonl"
    out.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def ooni_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, str, Path]:
    """``kzprobe report --in ../shared/data/ooni-samples --out <tmp>``: (exit code, stdout, stderr, out dir)."""
    out = tmp_path_factory.mktemp("ooni-report") / "report"
    proc = subprocess.run([sys.executable, "-m", "probe.cli", "report", "--in",
                           str(shared_path("data", "ooni-samples")), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    return proc.returncode, proc.stdout, proc.stderr, out


def test_report_on_the_ooni_samples(ooni_report: tuple[int, str, str, Path]) -> None:
    code, stdout, stderr, out = ooni_report
    assert code == 0, stderr
    index = out / "index.html"
    assert f"report: {index.resolve()}" in stdout
    assert re.search(r"\d+ measurements from \d+ vantage point\(s\), \d+ target\(s\); .*claims: ", stdout), stdout
    page = parse(index.read_text(encoding="utf-8"))
    for section in (*SECTIONS, "ooni-agreement"):
        assert section in page.ids, section
    assert len(page.imgs) == len(plots.FIGURES)
    for img in page.imgs:
        png_size(base64.b64decode((img.get("src") or "").split(",", 1)[1]))
    for p in ("report.md", "claims.csv", "heatmap.png", "vantage-health.png"):
        assert (out / p).is_file()
    assert (out / "heatmap.png").read_bytes()[:8] == PNG_SIGNATURE


def test_ooni_report_claims_csv_has_every_claim(ooni_report: tuple[int, str, str, Path]) -> None:
    code, _, stderr, out = ooni_report
    assert code == 0, stderr
    with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    claims = load_claims()
    assert [r["claim_id"] for r in rows] == [c.id for c in claims]
    for r, c in zip(rows, claims, strict=True):
        assert (r["status"] == "out_of_scope") == (not c.testable), r["claim_id"]
    text = " ".join(parse((out / "index.html").read_text(encoding="utf-8")).text)
    assert "agreement" in text and "same outcome" in text


def test_report_missing_in_exits_66(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 66
    assert "nope: no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("kind", "says"), [
    ("fifo", "not a regular file (a FIFO (named pipe)), not opened"),
    ("zero", "not a regular file (a character device, via a symlink to /dev/zero), not opened"),
    ("socket", "not a regular file (a socket), not opened"),
])
def test_report_in_a_fifo_or_a_device_beside_a_good_in_is_left_out_and_named(
        tmp_path: Path, kind: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO or a symlink to /dev/zero as --in exited 66 with no report (break test F11) while garbage is left
    out: now it is refused up front without being opened (a FIFO would block, /dev/zero never ends), named with
    what it is, and the report is built from the good --in, exit 0."""
    import socket

    good = tmp_path / "good"
    samples_as_jsonl(good)
    bad = tmp_path / kind
    sock = None
    if kind == "fifo":
        os.mkfifo(bad)
    elif kind == "zero":
        bad.symlink_to("/dev/zero")
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(bad))
    out = tmp_path / "out"
    try:
        assert main(["report", "--in", str(good), "--in", str(bad), "--out", str(out), "--no-progress"]) == 0
    finally:
        if sock is not None:
            sock.close()
    std = capsys.readouterr()
    assert f"--in {bad}: {says}; left out, the report is built from the other inputs" in std.err
    assert "no such file" not in std.err
    assert f"1 --in without measurements left out ({bad})" in std.out
    assert re.search(r"[1-9]\d* measurements from \d+ vantage point", std.out), std.out
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"({says})" in md.replace("\\", "")
    assert says in (out / "index.html").read_text(encoding="utf-8")


def test_report_in_only_a_fifo_or_a_dangling_symlink_exits_66(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Alone, a FIFO leaves nothing to report on (66, naming it, never blocking); a dangling symlink does not exist."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["report", "--in", str(fifo), "--out", str(tmp_path / "out")]) == 66
    err = capsys.readouterr().err
    assert f"{fifo}: no measurements found" in err and "not a regular file (a FIFO (named pipe)), not opened" in err
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert main(["report", "--in", str(tmp_path / "dangling"), "--out", str(tmp_path / "out")]) == 66
    assert "no such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "not json at all\n", '{"test_name": "dnscheck"}\n'])
def test_report_in_without_measurements_exits_66(tmp_path: Path, content: str | None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    if content is not None:
        (src / "x.jsonl").write_text(content)
    assert main(["report", "--in", str(src), "--out", str(tmp_path / "out")]) == 66
    err = capsys.readouterr().err
    assert f"--in {src}: no measurements found" in err


def _garbage_input(tmp_path: Path, kind: str) -> tuple[Path, tuple[int, int, int]]:
    """An --in holding no measurement, and its (files, lines read, invalid lines)."""
    if kind == "random-bytes":  # a file of binary bytes given as --in: 3 "lines" of binary data
        path = tmp_path / "garbage.bin"
        path.write_bytes((bytes(b for b in range(256) if b != 0x0A) + b"\n") * 3)
        return path, (1, 3, 3)
    path = tmp_path / kind
    path.mkdir()
    if kind == "text-dir":  # a directory of text: notes.txt is no measurement file, x.jsonl no JSON
        (path / "notes.txt").write_text("hello, this is a text file\n")
        (path / "x.jsonl").write_text("just text\nmore text\n")
        return path, (1, 2, 2)
    return path, (0, 0, 0)  # an empty directory


@pytest.mark.parametrize("kind", ["random-bytes", "text-dir", "empty-dir"])
def test_report_one_garbage_in_of_two_is_left_out_and_named(tmp_path: Path, kind: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The analysis never dies on input: an --in holding no measurement beside one that does exited 66 with no
    report (break test); now the report is built from the good --in, exit 0, and the garbage one is named on
    stderr and in the report (HTML and Markdown) with its counts."""
    good = tmp_path / "good"
    samples_as_jsonl(good)
    bad, (files, lines, invalid) = _garbage_input(tmp_path, kind)
    out = tmp_path / "out"
    assert main(["report", "--in", str(good), "--in", str(bad), "--out", str(out)]) == 0
    std = capsys.readouterr()
    assert (f"--in {bad}: no measurements found ({files} file(s), {lines} line(s) read, {invalid} invalid, 0 torn); "
            "left out") in std.err
    assert f"1 --in without measurements left out ({bad})" in std.out
    page = parse((out / "index.html").read_text(encoding="utf-8"))
    assert "empty-inputs" in page.ids
    html = (out / "index.html").read_text(encoding="utf-8")
    row = re.search(r'id="empty-inputs".*?<tbody><tr>(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells == [bad.name, str(files), str(lines), str(invalid), "0", "0"]
    assert str(tmp_path) not in html  # the report names the input, not where it lies
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "1 input(s) held no measurement and were left out" in md
    assert f"| {bad.name} | {files} | {lines} | {invalid} | 0 | 0 |" in md.replace("\\", "")


def test_report_every_in_garbage_still_exits_66(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, (files, lines, invalid) = _garbage_input(tmp_path, "random-bytes")
    empty, _ = _garbage_input(tmp_path, "empty-dir")
    assert main(["report", "--in", str(empty), "--in", str(bad), "--out", str(tmp_path / "out")]) == 66
    assert f"--in {empty}: no measurements found" in capsys.readouterr().err


def test_report_out_not_writable_exits_73(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    samples_as_jsonl(tmp_path / "in")
    assert main(["report", "--in", str(tmp_path / "in"), "--out", str(blocker / "out")]) == 73
    assert "cannot write to the output directory" in capsys.readouterr().err


def test_report_counts_a_torn_line_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples_as_jsonl(tmp_path / "in", extra='{"test_name": "web_connectivity", "input": "https://cut')
    assert main(["report", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 bad line(s) skipped" in out, out
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "ooni.jsonl:" in html  # the load problem names file:line


def test_report_default_in_is_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    samples_as_jsonl(tmp_path / "state")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert main(["report", "--out", str(tmp_path / "out"), "--ignore-period", "--title", "Lab <run>"]) == 0
    assert "(dates ignored)" in capsys.readouterr().out
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "<title>Lab &lt;run&gt;</title>" in html and "Dates ignored" in html


def test_report_without_pandas_says_what_to_install(tmp_path: Path) -> None:
    samples_as_jsonl(tmp_path / "in")
    code = ("import sys; sys.modules['pandas'] = None\n"
            "from probe.cli import main\n"
            f"sys.exit(main(['report', '--in', {str(tmp_path / 'in')!r}, '--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert proc.returncode == 78, proc.stderr  # README: 78 = the analysis extras are missing
    assert f"needs pandas, which is not installed: {ANALYSIS_INSTALL_HINT}" in proc.stderr
    assert "pip install 'kzprobe[analysis]'" in proc.stderr and "make venv-test" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the probe itself still works without pandas
    proc = subprocess.run([sys.executable, "-c", ("import sys; sys.modules['pandas'] = None\n"
                           "from probe.cli import main; sys.exit(main(['targets', 'kz-mitm-2019-domains.txt']))")],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0 and "facebook.com" in proc.stdout, proc.stderr


def test_claims_lists_testable_claims(capsys: pytest.CaptureFixture[str]) -> None:
    claims = load_claims()
    assert main(["claims", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in shown] == [c.id for c in claims if c.testable]
    assert all(c["testable"] and c["expect"] for c in shown)


def test_claims_all_includes_out_of_scope_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    claims = load_claims()
    assert any(not c.testable for c in claims)
    assert main(["claims", "--all", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in shown] == [c.id for c in claims]
    for c in shown:
        assert c["testable"] or c["untestable_reason"], c["id"]


def test_claims_table(capsys: pytest.CaptureFixture[str]) -> None:
    claims = load_claims()
    assert main(["claims"]) == 0
    out = capsys.readouterr().out
    testable = [c for c in claims if c.testable]
    for c in testable:
        assert c.id in out
    assert "kzprobe claims --all" in out
    assert main(["claims", "--all"]) == 0
    out = capsys.readouterr().out
    oos = next(c for c in claims if not c.testable)
    assert oos.id in out and "out of scope" in out


def test_claims_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    proc = subprocess.run(f"{sys.executable} -m probe.cli claims --all --json | head -c 10",
                          shell=True, capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "Traceback" not in proc.stderr and len(proc.stdout) == 10


def test_report_engine_dask_matches_pandas(ooni_report: tuple[int, str, str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr, pandas_out = ooni_report
    assert code == 0, stderr
    out = tmp_path / "dask"
    assert main(["report", "--engine", "dask", "--in", str(shared_path("data", "ooni-samples")),
                 "--out", str(out)]) == 0
    assert "engine dask" in capsys.readouterr().out
    assert (out / "claims.csv").read_text(encoding="utf-8") == (pandas_out / "claims.csv").read_text(encoding="utf-8")
    page = parse((out / "index.html").read_text(encoding="utf-8"))
    assert "ooni-agreement" in page.ids and len(page.imgs) == len(plots.FIGURES)


# The lab's kz-2021 scenario as the probe reports it (tests/analysis/test_compare.py KZ_2021): site → the
# rule of a real kzprobe record (bench.analysis.templates: probe.verdict.judge + probe.records.measurement).
LAB_KZ_2021 = {
    "meduza.io": "tls.control_ok", "kloop.kg": "tls.control_ok", "www.change.org": "tls.control_ok",
    "www.dailymail.co.uk": "tls.control_ok", "medium.com": "https.verified", "pana-defenders.info": "dns.probe_failure",
    "lalafo.kg": "tcp_ip.control_ok", "facebook.com": "tls_mitm.known_root", "twitter.com": "tls_mitm.known_root",
    "vk.com": "tls_mitm.known_root", "ratel.kz": "tcp_ip.both_fail",
}


def lab_run(dest: Path, runs: int = 3) -> Path:
    """A lab-like run in kzprobe's own JSONL: each LAB_KZ_2021 site ``runs`` times on successive days,
    plus one measurement made while the vantage point was offline. Measurement ids are unique per ``dest``
    (two runs are two sets of measurements, never duplicates of each other)."""
    from bench.analysis import _DOMAIN, templates

    by_rule = {}
    for text, _ in templates():
        rule = json.loads(text.replace("@UID@", "u").replace("@RID@", "r").replace("@ASN@", "AS1").replace(
            "@CC@", "KZ").replace("@VID@", "v"))["test_keys"]["x_rule"]
        by_rule[rule] = text
    lines = []
    for i in range(runs):
        day = f"2026-11-{27 + i:02d}"
        for j, (site, rule) in enumerate([*LAB_KZ_2021.items(), ("offline.example", "vantage.offline")]):
            lines.append(by_rule[rule].replace(_DOMAIN, site).replace("@UID@", f"{dest.name}-{i}-{j}").replace(
                "@RID@", f"run{i}").replace("@ASN@", "AS65001").replace("@CC@", "KZ").replace(
                "@VID@", "lab-client").replace("2000-01-01", day))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "lab.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


@pytest.mark.parametrize(("flags", "expected"), [
    (["--ignore-period"], {"B1-meduza": "supported", "B1-pana-defenders": "supported",
                           "B1-lalafo-collateral": "supported", "A3-cert-drill-2020": "supported",
                           "B1-medium-2021": "supported", "B1-medium-2020": "contradicted",
                           "B1-avaaz-unblocked": "not_measured"}),
    (["--as-of", "2021-05-31"], {"B1-meduza": "supported", "B1-medium-2021": "supported",
                                 "B1-lalafo-collateral": "not_measured"}),
])
def test_report_on_a_lab_run_of_our_records(tmp_path: Path, flags: list[str], expected: dict[str, str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = lab_run(tmp_path / "lab")
    out = tmp_path / "out"
    assert main(["report", "--in", str(src), "--out", str(out), "--no-progress", *flags]) == 0
    stdout = capsys.readouterr().out
    assert "36 measurements from 1 vantage point(s), 12 target(s); 0 bad line(s) skipped" in stdout, stdout
    with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
        status = {r["claim_id"]: r["status"] for r in csv.DictReader(fh)}
    assert {k: status[k] for k in expected} == expected
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    assert "ooni-agreement" not in page.ids  # our records only
    assert "Qaznet Trust Network" in html.split('id="mitm"', 1)[1]
    assert "Offline windows" in html and "lab-client" in html
    assert ("Dates ignored" in html) == ("--ignore-period" in flags)
    assert ("taken as made on 2021-05-31" in html) == ("--as-of" in flags)


def test_report_as_of_and_ignore_period_exclude_each_other(tmp_path: Path) -> None:
    assert main(["report", "--out", str(tmp_path), "--ignore-period", "--as-of", "2021-05-31"]) == 64
    assert main(["report", "--out", str(tmp_path), "--as-of", "31.05.2021"]) == 64


# --------------------------------------------------------------------------- lab and real measurements kept apart

def as_lab(src: Path, scenario: str = "kz-2021", *, cc: str | None = None) -> Path:
    """Rewrite ``src/lab.jsonl`` (from :func:`lab_run`) as `kzprobe lab run` writes it: annotations.lab_scenario
    (the ASN is not what tells lab measurements apart); ``cc`` replaces probe_cc."""
    f = src / "lab.jsonl"
    recs = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]
    for r in recs:
        if scenario:
            r["annotations"]["lab_scenario"] = scenario
        if cc is not None:
            r["probe_cc"] = cc
    f.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return src


def test_report_leaves_lab_measurements_out_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    as_lab(lab_run(state / "lab" / "kz-2021"))  # where `kzprobe lab run` writes by default
    real = lab_run(state / "real", runs=1)       # 12 real measurements
    out = tmp_path / "out"
    assert main(["report", "--in", str(state), "--out", str(out), "--no-progress", "--ignore-period"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[1].startswith("12 measurements from 1 vantage point(s)"), stdout
    assert "36 simulated lab measurement(s) left out (scenario kz-2021; --lab reports on them)" in stdout
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    assert "lab-left-out" in page.ids and "lab-banner" not in page.ids
    assert "36 simulated lab measurement(s) left out" in " ".join(page.text)
    with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
        n_meduza = {r["claim_id"]: int(r["n"]) for r in csv.DictReader(fh)}["B1-meduza"]
    assert n_meduza == 1  # the one real measurement of meduza.io, none of the lab's three
    assert real.is_dir()


def test_report_lab_flag_reports_on_the_lab_only_with_a_banner(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    as_lab(lab_run(state / "lab" / "kz-2021"))
    lab_run(state / "real", runs=1)
    out = tmp_path / "out"
    assert main(["report", "--in", str(state), "--out", str(out), "--no-progress", "--ignore-period", "--lab"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("SIMULATED LAB MEASUREMENTS of scenario kz-2021 (--lab), not real ones: 36 measurements")
    assert "12 real measurement(s) left out of this lab report" in line
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    assert "lab-banner" in page.ids
    assert html.index('id="lab-banner"') < html.index('id="summary"')  # at the top
    assert "Simulated lab measurements of scenario kz-2021" in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "SIMULATED LAB MEASUREMENTS of scenario kz-2021" in md.split("## Summary")[0]


@pytest.mark.parametrize("lab_flag,what,message", [
    (False, "lab only", "are simulated lab measurements (scenario kz-2021, written by `kzprobe lab run`); pass --lab"),
    (True, "real only", "no lab measurements (annotations.lab_scenario) among the 36 loaded"),
])
def test_report_with_nothing_of_the_kind_asked_exits_66(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        lab_flag: bool, what: str, message: str) -> None:
    src = lab_run(tmp_path / "in")
    if what == "lab only":
        as_lab(src)
    args = ["report", "--in", str(src), "--out", str(tmp_path / "out"), "--no-progress", "--ignore-period"]
    assert main(args + (["--lab"] if lab_flag else [])) == 66
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["pandas", "dask"])
def test_report_other_countries_are_counted_not_used(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     engine: str) -> None:
    as_lab(lab_run(tmp_path / "in" / "ru"), scenario="", cc="RU")
    lab_run(tmp_path / "in" / "kz", runs=1)
    out = tmp_path / "out"
    assert main(["report", "--in", str(tmp_path / "in"), "--out", str(out), "--no-progress", "--ignore-period",
                 "--engine", engine]) == 0
    stdout = capsys.readouterr().out
    assert "36 measurement(s) from other countries (RU 36) were not used against the claims about KZ" in stdout
    with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
        rows = {r["claim_id"]: r for r in csv.DictReader(fh)}
    assert int(rows["B1-meduza"]["n"]) == 1
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "other-countries" in parse(html).ids
    assert main(["report", "--in", str(tmp_path / "in"), "--out", str(out), "--no-progress", "--ignore-period",
                 "--engine", engine, "--country", "any"]) == 0
    assert "other countries" not in capsys.readouterr().out
    with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
        assert int({r["claim_id"]: r for r in csv.DictReader(fh)}["B1-meduza"]["n"]) == 4


@pytest.mark.parametrize("module", ["msgspec", "pandas", "pyarrow", "matplotlib", "jinja2"])
def test_report_without_an_analysis_module_exits_78(tmp_path: Path, module: str) -> None:
    src = lab_run(tmp_path / "in", runs=1)
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from probe.cli import main\n"
            f"raise SystemExit(main(['report', '--in', {str(src)!r}, '--out', {str(tmp_path / 'out')!r}, "
            "'--no-progress']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"needs {module}, which is not installed: {ANALYSIS_INSTALL_HINT}" in proc.stderr


#: Runs kzprobe report in a fresh interpreter, then prints whether pandas/pyarrow/matplotlib were imported.
_HEAVY_PROBE = ("import sys\n"
                "from probe.cli import main\n"
                "code = main(sys.argv[1:])\n"
                "print('heavy:', sorted(m for m in ('pandas', 'pyarrow', 'matplotlib') if m in sys.modules))\n"
                "raise SystemExit(code)")


def test_report_refuses_a_missing_in_before_the_heavy_imports(tmp_path: Path) -> None:
    """A mistyped --in is refused (66, the path named) before pandas & co. are imported: it took 14-22 s."""
    samples_as_jsonl(tmp_path / "in")
    missing = tmp_path / "no-such-dir"
    proc = subprocess.run([sys.executable, "-c", _HEAVY_PROBE, "report", "--in", str(tmp_path / "in"),
                           "--in", str(missing), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 66, proc.stderr
    assert proc.stderr.strip() == f"kzprobe report: --in {missing}: no such file or directory"
    assert "heavy: []" in proc.stdout
    assert not (tmp_path / "out").exists()  # nothing made before the inputs are known to exist


def test_report_refuses_an_unwritable_out_before_the_heavy_imports(tmp_path: Path) -> None:
    samples_as_jsonl(tmp_path / "in")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    out = tmp_path / "file" / "out"
    proc = subprocess.run([sys.executable, "-c", _HEAVY_PROBE, "report", "--in", str(tmp_path / "in"),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 73, proc.stderr
    assert proc.stderr.strip() == f"kzprobe report: cannot write to the output directory {out}: Not a directory"
    assert "heavy: []" in proc.stdout


def test_report_names_a_left_out_symlink_as_given_not_by_its_target(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The report's left-out table named an --in by its resolved path's name: a symlink 'my-capture' to /dev/zero
    was shown as 'zero', a name the user never gave (stderr and the summary said 'my-capture')."""
    good = tmp_path / "good"
    samples_as_jsonl(good)
    bad = tmp_path / "my-capture"
    bad.symlink_to("/dev/zero")
    out = tmp_path / "out"
    assert main(["report", "--in", str(good), "--in", str(bad), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    md = (out / "report.md").read_text(encoding="utf-8").replace("\\", "")
    (row,) = [ln for ln in md.splitlines() if "not opened" in ln and ln.endswith("| 0 | 0 | 0 | 0 | 0 |")]
    assert row.startswith("| my-capture (not a regular file (a character device, via a symlink to /dev/zero)"), row
    assert str(tmp_path) not in md
    # the data-quality list: relative_path took the symlink's target for the --in and wrote "a symlink to my-capture"
    (line,) = [ln for ln in md.splitlines() if ln.startswith("- my-capture: not a regular file")]
    assert "via a symlink to my-capture" not in line and line.endswith("via a symlink to zero), not opened"), line


def test_an_unassigned_country_code_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``report --country XX`` (no such ISO 3166-1 code) was accepted silently and judged no claim
    (break test 24, #10): 64 naming it, for ``ooni sync/coverage --cc`` too. The codes are the IANA tz
    database's iso3166.tab (analysis/countries.py); ZZ, OONI's unknown country, stays accepted."""
    import argparse

    from analysis.countries import country_code, iso3166_alpha2

    assert main(["report", "--in", str(tmp_path), "--out", str(tmp_path / "r"), "--country", "XX"]) == 64
    assert "'XX' is not an assigned ISO 3166-1 country code" in capsys.readouterr().err
    for argv, typed in ((["ooni", "sync", "--cc", "XX", "--since", "2021-05-30", "--until", "2021-05-31"], "'XX'"),
                        (["ooni", "coverage", "--cc", "xx", "--since", "2021-05-30", "--until", "2021-05-31"], "'xx'")):
        assert main(argv) == 64
        assert f"{typed} is not an assigned ISO 3166-1 country code" in capsys.readouterr().err
    assert len(iso3166_alpha2()) == 249 and {"KZ", "KG", "RU", "BV", "AQ"} <= iso3166_alpha2()
    # Kosovo's XK is no ISO 3166-1 code but OONI's probe_cc for Kosovo (GeoIP databases give it)
    assert "XK" not in iso3166_alpha2()
    assert [country_code(c) for c in ("kz", " KZ ", "ZZ", "xk")] == ["KZ", "KZ", "ZZ", "XK"]
    for bad in ("XX", "UK", "EU", "Kazakhstan", "K1"):
        with pytest.raises(Exception, match="ISO 3166-1"):
            country_code(bad)
    # review 24b: non-ASCII text that upper-cases to ASCII letters is no code ('kı' gave KI, Kiribati), and
    # the error names the text as typed ('ﬀ' was named "FF")
    for bad in ("kı", "ﬀ", "ſe"):  # upper-cased: KI, FF, SE
        with pytest.raises(argparse.ArgumentTypeError) as err:
            country_code(bad)
        assert str(err.value) == f"expected a two-letter country code (ISO 3166-1), got {bad!r}"
