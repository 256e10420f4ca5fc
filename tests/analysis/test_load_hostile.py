"""analysis.load on hostile input (issue 11 item 3): deep nesting, huge lines, blank floods, wrong
types are counted per file and skipped in bounded time; the same measurement given twice counts once.

The attacks are the ones measured in issue 11: one JSON line nested ≥ 1,000 levels (RecursionError,
exit 1 before), a 2 MB ``.jsonl.gz`` of newlines (> 10 min of loading before), ``--in A --in A``
(n 200 → 400 in every claim before).
"""

from __future__ import annotations

import csv
import gzip
import json
import time
from pathlib import Path

import pytest

import analysis.decompress_bound as db
import analysis.load as L
from analysis.load import load
from tests.analysis.test_cli_report import lab_run
from tests.analysis.test_load import ours, samples, write_jsonl  # noqa: F401 (fixtures)
from tests.conftest import shared_path


def _nest(depth: int, kind: str = "[") -> str:
    """An array nested ``depth`` deep, or a web_connectivity measurement nested ``depth`` deep.

    (An object without test_name nested less deep than the parser's recursion limit is "another
    test's measurement", ``skipped``: the fast path skips unknown keys without building them.)"""
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"test_name": "web_connectivity", "a":' + '{"a":' * (depth - 1) + "1" + "}" * depth


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize(("text", "deep"), [
    (_nest(64), False), (_nest(65), True), (_nest(64, "{"), False), (_nest(65, "{"), True),
    ('{"body": "' + "[" * 5000 + '"}', False),          # brackets inside a string do not nest
    ('{"body": "\\"' + "{" * 5000 + '"}', False),        # ... nor after an escaped quote
    ('["\\\\", ' + _nest(70) + "]", True),               # an escaped backslash ends no string
    ("[" * 100_000, True),                               # never closed
    ("[]" * 100_000, False),                             # wide, not deep
])
def test_too_deep(text: str, deep: bool) -> None:
    assert L.too_deep(text.encode()) is deep


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_a_deeply_nested_line_is_counted_and_skipped(tmp_path: Path, ours: dict[str, dict], kind: str,
                                                     depth: int) -> None:
    good = ours["https.verified"]
    p = write_jsonl(tmp_path / "run.jsonl", [good, _nest(depth, kind), {**good, "x_measurement_uid": "u2"}])
    r = load([p], workers=1)
    assert list(r.frame["line"]) == [1, 3]
    assert (r.stats.loaded, r.stats.invalid, r.stats.lines) == (2, 1, 3)
    assert r.stats.errors == [f"{p}:2: nested deeper than {L.MAX_DEPTH} levels, skipped"]
    assert r.stats.by_file[str(p)]["invalid"] == 1


@pytest.mark.parametrize("kind", ["[", "{"])
def test_a_deep_first_line_and_a_deep_document(tmp_path: Path, ours: dict[str, dict], kind: str) -> None:
    """The first line decides JSONL or one document (``_is_jsonl``): deep there too, nothing raises."""
    good = ours["https.verified"]
    first = write_jsonl(tmp_path / "first.jsonl", [_nest(5_000, kind), good])
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps([{**good, "x_measurement_uid": "w"}, {"test_name": "web_connectivity", "x": json.loads(_nest(200, kind))}]))
    pretty = tmp_path / "pretty.json"
    pretty.write_text(_nest(3_000, kind))
    r = load([first, whole, pretty], workers=1)
    assert list(r.frame["file"].astype(str)) == [str(first), str(whole)]
    assert r.stats.invalid == 3 and r.stats.loaded == 2
    assert f"{whole}:2: element nested deeper than {L.MAX_DEPTH} levels, skipped" in r.stats.errors
    assert f"{first}:1: nested deeper than {L.MAX_DEPTH} levels, skipped" in r.stats.errors


def test_a_deep_run_summary_is_ignored(tmp_path: Path, ours: dict[str, dict]) -> None:
    p = write_jsonl(tmp_path / "r1.jsonl", [ours["https.verified"]])
    (tmp_path / "r1.summary.json").write_text(_nest(100_000, "{"))
    r = load([p], workers=1)
    assert r.stats.loaded == 1 and not r.frame["control_intercepted"].any()


def test_report_survives_a_deeply_nested_line(tmp_path: Path, ours: dict[str, dict],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from probe.cli import main

    src = lab_run(tmp_path / "lab")
    (src / "deep.jsonl").write_text(_nest(1_000) + "\n" + _nest(50_000, "{") + "\n")
    assert main(["report", "--in", str(src), "--out", str(tmp_path / "out"), "--no-progress",
                 "--ignore-period"]) == 0
    assert "2 bad line(s) skipped" in capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "deep.jsonl:1: nested deeper than 64 levels" in md and "deep.jsonl:2: nested deeper" in md


# --------------------------------------------------------------------------- blank floods, huge lines, bombs


def _gzip_newlines(path: Path, n_bytes: int, *, head: bytes = b"", tail: bytes = b"") -> Path:
    """A .gz of ``n_bytes`` newlines (the attack's 2 MB gzip holds 2 GB), between ``head`` and ``tail``:
    gzip members one after the other (one file to gunzip), each 8 MiB compressed once."""
    piece = 8 << 20
    member = gzip.compress(b"\n" * piece, 9)
    out = [gzip.compress(head)] + [member] * (n_bytes // piece)
    if n_bytes % piece:
        out.append(gzip.compress(b"\n" * (n_bytes % piece), 9))
    out.append(gzip.compress(tail))
    path.write_bytes(b"".join(out))
    return path


def test_the_measured_attack_2mb_gzip_of_newlines_is_bounded(tmp_path: Path, ours: dict[str, dict]) -> None:
    """Issue 11: a 2 MB .jsonl.gz of newlines kept the loader busy > 10 min. Now at most
    decompressed_cap(2 MB) = 200 × 2 MB is decompressed (blank lines counted in bulk) and the file is named;
    the 60 s bound is ~10× what it takes on a busy 2-core machine."""
    bomb = _gzip_newlines(tmp_path / "blank.jsonl.gz", 2 << 30, head=(json.dumps(ours["https.verified"]) + "\n").encode())
    assert bomb.stat().st_size < 2_200_000
    t0 = time.monotonic()
    r = load([bomb], workers=1)
    took = time.monotonic() - t0
    limit = bomb.stat().st_size * db.MAX_RATIO
    assert limit == db.decompressed_cap(bomb.stat().st_size) > db.FLOOR_BYTES
    assert r.stats.loaded == 1 and r.stats.invalid == 1
    assert r.stats.errors == [f"{bomb}: decompresses to more than {limit:,} bytes ({db.MAX_RATIO}× its "
                              f"{bomb.stat().st_size:,} compressed bytes; a compression bomb?), the rest skipped"]
    assert 0 < r.stats.blank <= limit and r.stats.by_file[str(bomb)]["blank"] == r.stats.blank
    assert r.stats.by_file[str(bomb)]["invalid"] == 1
    assert took < 60, f"{took:.1f} s"


def test_near_identical_measurements_at_90x_are_read_whole(tmp_path: Path, ours: dict[str, dict]) -> None:  # noqa: F811 (the fixture)
    """Break test: ``kzprobe report`` stopped a .gz at 50× its size (at least 64 MiB) while ``kzprobe ooni
    sync`` reads an object to 200×: 10,000 near-identical records (90 MiB, 1 MB of gzip, ≈89×) lost
    their last ~29% as "a compression bomb?". One bound now (analysis.decompress_bound): read whole,
    at the real constants, and the sync's bound for the same size is the loader's."""
    import random

    from analysis.ooni_sync import _object_cap

    rnd = random.Random(0)  # 200 random bits an id: the entropy that makes the ratio ≈90×, not ≈120×
    template = json.dumps({**ours["https.verified"], "x_measurement_uid": "@UID@"})
    body = "".join(template.replace("@UID@", f"{rnd.getrandbits(200):x}") + "\n" for _ in range(10_000)).encode()
    p = tmp_path / "near-identical.jsonl.gz"
    p.write_bytes(gzip.compress(body, 6, mtime=0))
    size = p.stat().st_size
    assert 80 < len(body) / size < 100 and len(body) > 64 << 20  # past the old bound: max(64 MiB, 50×)
    r = load([p], workers=1)
    assert (r.stats.loaded, r.stats.invalid, r.stats.errors) == (10_000, 0, [])
    assert r.frame["measurement_uid"].nunique() == 10_000
    assert _object_cap(size)[0] == db.decompressed_cap(size) >= len(body)


@pytest.mark.parametrize("name", ["flood.jsonl", "flood.jsonl.gz"])
def test_blank_lines_are_counted_in_bulk_and_lines_keep_their_numbers(tmp_path: Path, ours: dict[str, dict],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      name: str) -> None:
    """Blank lines (whole blocks of them, and between records) never take a Python step each:
    ``_jsonl_lines`` is never handed a block that is all blank, and line numbers stay the file's."""
    monkeypatch.setattr(L, "BLOCK_BYTES", 1 << 16)
    good = json.dumps(ours["https.verified"])
    text = ("\n" * 300_000 + good + "\n" + " \t\r\n" * 5 + json.dumps({**ours["https.verified"],
                                                                         "x_measurement_uid": "u2"})
            + "\n" * 300_000 + "{not json\n" + "\n" * 10)
    p = tmp_path / name
    p.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    handed = []
    real = L._jsonl_lines

    def spy(block, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        handed.append(block)
        yield from real(block, *a, **kw)

    monkeypatch.setattr(L, "_jsonl_lines", spy)
    r = load([p], workers=1)
    assert list(r.frame["line"]) == [300_001, 300_007]
    assert len(r.stats.errors) == 1 and r.stats.errors[0].startswith(f"{p}:600007: invalid JSON")
    assert (r.stats.lines, r.stats.loaded, r.stats.invalid) == (3, 2, 1)
    assert r.stats.blank == 300_000 + 5 + 299_999 + 10
    assert not any(b.isspace() for b in handed)


def test_huge_lines_between_good_ones(tmp_path: Path, ours: dict[str, dict]) -> None:
    good = ours["https.verified"]
    p = write_jsonl(tmp_path / "run.jsonl", [good, '{"x": "' + "a" * 3_000_000 + '"}', "z" * 3_000_000,
                                             {**good, "x_measurement_uid": "u2"}])
    r = load([p], workers=1, max_line_bytes=1 << 20)
    assert list(r.frame["line"]) == [1, 4] and r.stats.invalid == 2
    assert all("line longer than 1048576 bytes" in e for e in r.stats.errors)


def test_a_small_bomb_names_the_floor_it_was_cut_at(tmp_path: Path, ours: dict[str, dict],  # noqa: F811 (the fixture)
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 24: a small bomb is cut at the floor (256 MiB; 1 MiB here), not at 200× its size, and the
    message named 200× its size beside the floor's figure ("more than 268,435,456 bytes (200× its 1,052
    compressed bytes"). The loader and the sync name the floor, in one message."""
    from analysis.ooni_sync import _object_cap

    monkeypatch.setattr(db, "FLOOR_BYTES", 1 << 20)
    p = _gzip_newlines(tmp_path / "x.jsonl.gz", 2 << 20, head=(json.dumps(ours["https.verified"]) + "\n").encode())
    size = p.stat().st_size
    assert size * db.MAX_RATIO < 1 << 20  # the floor is the cap
    r = load([p], workers=1)
    why = (f"decompresses to more than 1,048,576 bytes (the floor for any input, above 200× its {size:,} "
           "compressed bytes; a compression bomb?), the rest skipped")
    assert r.stats.loaded == 1 and r.stats.errors == [f"{p}: {why}"]
    assert _object_cap(size) == (1 << 20, why)


def test_gzip_ratio_bound_keeps_what_was_read(tmp_path: Path, ours: dict[str, dict],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "FLOOR_BYTES", 1 << 20)
    def rec(uid: str) -> bytes:
        return (json.dumps({**ours["https.verified"], "x_measurement_uid": uid}) + "\n").encode()

    p = _gzip_newlines(tmp_path / "x.jsonl.gz", 64 << 20, head=rec("first"), tail=rec("beyond"))  # ≈1,000×
    r = load([p], workers=1)
    assert list(r.frame["measurement_uid"]) == ["first"] and r.stats.invalid == 1
    limit = p.stat().st_size * db.MAX_RATIO
    assert 1 << 20 < limit < 64 << 20
    assert r.stats.errors == [f"{p}: decompresses to more than {limit:,} bytes ({db.MAX_RATIO}× its "
                              f"{p.stat().st_size:,} compressed bytes; a compression bomb?), the rest skipped"]
    # with the floor still 1 MiB, a file of 2,000 near-identical records (19 MB, ~120× smaller gzipped:
    # under the ratio, over the floor) is read whole
    ok = tmp_path / "ok.jsonl.gz"
    ok.write_bytes(gzip.compress(b"".join(rec(f"u{i}") for i in range(2000))))
    r = load([ok], workers=1)
    assert r.stats.loaded == 2000 and not r.stats.errors


# --------------------------------------------------------------------------- wrong types


WRONG = [
    ("measurement_start_time", [1, 2]), ("measurement_start_time", {"a": 1}), ("measurement_start_time", 7),
    ("test_keys", "nope"), ("test_keys", [1]), ("input", 5), ("input", ["http://x/"]), ("probe_asn", {"a": 1}),
    ("probe_cc", 12), ("annotations", "x"), ("report_id", [1]), ("x_measurement_uid", {"a": 1}),
]


@pytest.mark.parametrize("source", ["ours", "ooni"])
def test_wrong_types_never_stop_loading(tmp_path: Path, ours: dict[str, dict], samples: list[Path],
                                        source: str) -> None:
    base = ours["https.verified"] if source == "ours" else json.loads(samples[0].read_text())
    lines: list[str | dict] = [base]
    for k, v in WRONG:
        lines.append({**base, k: v, "x_measurement_uid": f"w{len(lines)}", "measurement_uid": f"w{len(lines)}"})
    tk = base.get("test_keys") or {}
    for k, v in [("blocking", [1]), ("accessible", "yes"), ("requests", {"a": 1}), ("requests", [1, "x"]),
                 ("tls_handshakes", "x"), ("tcp_connect", [None, 3]), ("queries", 5), ("control", [1]),
                 ("x_mitm", [1]), ("x_vantage", "x"), ("x_rule", 3)]:
        lines.append({**base, "test_keys": {**tk, k: v}, "x_measurement_uid": f"t{len(lines)}",
                      "measurement_uid": f"t{len(lines)}"})
    lines += ["1", '"text"', "null", "true", "[]", "[{}]"]
    p = write_jsonl(tmp_path / "wrong.jsonl", lines)
    r = load([p], workers=1)
    s = r.stats
    assert s.lines == len(lines) and s.loaded + s.invalid + s.skipped == len(lines)
    assert s.loaded == len(r.frame) >= 1 and s.invalid >= 6
    assert s.by_file[str(p)]["invalid"] == s.invalid


# --------------------------------------------------------------------------- duplicates


def test_the_same_input_twice_counts_once(tmp_path: Path) -> None:
    src = lab_run(tmp_path / "lab")
    once = load([src], workers=1)
    twice = load([src, src], workers=1)
    assert len(twice.frame) == len(once.frame) == 36 and twice.stats.duplicates == 36
    assert twice.stats.loaded == 36 and once.stats.duplicates == 0
    assert list(twice.frame["measurement_uid"]) == list(once.frame["measurement_uid"])


def test_overlapping_copies_count_once_and_per_file(tmp_path: Path) -> None:
    """An rsync copy overlapping the original: every measurement once, the copy's rows dropped."""
    src = lab_run(tmp_path / "a")
    lines = (src / "lab.jsonl").read_text().splitlines()
    copy = tmp_path / "b"
    copy.mkdir()
    (copy / "part.jsonl").write_text("\n".join(lines[10:20]) + "\n")
    r = load([src, copy], workers=1)
    assert len(r.frame) == 36 and r.stats.duplicates == 10
    assert r.stats.by_file[str(copy / "part.jsonl")]["duplicates"] == 10
    assert r.stats.by_file[str(copy / "part.jsonl")]["loaded"] == 0
    assert r.stats.by_file[str(src / "lab.jsonl")]["loaded"] == 36


def test_duplicates_without_an_id_by_report_input_and_time(tmp_path: Path, samples: list[Path]) -> None:
    """OONI measurements without measurement_uid are one measurement when report_id, input and
    measurement_start_time agree; any of them different: two."""
    m = json.loads(samples[0].read_text())
    m.pop("measurement_uid", None)
    other_time = {**m, "measurement_start_time": "2021-01-02 03:04:05"}
    other_input = {**m, "input": "https://another.example/"}
    p = write_jsonl(tmp_path / "a.jsonl", [m, other_time, other_input])
    q = write_jsonl(tmp_path / "b.jsonl", [m, other_input, other_time, m])
    r = load([p, q], workers=1)
    assert len(r.frame) == 3 and r.stats.duplicates == 4
    assert r.stats.by_file[str(q)]["duplicates"] == 4


def test_duplicates_in_parallel_mode(tmp_path: Path, ours: dict[str, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(L, "RANGE_BYTES", 20_000)
    recs = [json.dumps({**ours["https.verified"], "x_measurement_uid": f"u{i}"}) for i in range(60)]
    a = write_jsonl(tmp_path / "a.jsonl", recs)
    b = write_jsonl(tmp_path / "b.jsonl", recs[30:])
    r = load([a, b], workers=2)
    assert len(r.frame) == 60 and r.stats.duplicates == 30 and r.stats.loaded == 60


def test_report_says_how_many_duplicates_it_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11: `--in A --in A` made n 200 → 400 in every claim. Now n is the same as with one
    --in, and the summary line, the HTML, the Markdown (loading and methods) say how many were dropped."""
    from probe.cli import main

    src = lab_run(tmp_path / "lab")
    ns = []
    for ins in ([src], [src, src]):
        out = tmp_path / f"out{len(ins)}"
        args = ["report", "--out", str(out), "--no-progress", "--ignore-period"]
        for i in ins:
            args += ["--in", str(i)]
        assert main(args) == 0
        with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
            ns.append({r["claim_id"]: r["n"] for r in csv.DictReader(fh)})
    assert ns[0] == ns[1] and ns[0]["B1-meduza"] == "3"
    stdout = capsys.readouterr().out
    assert "36 duplicate measurement(s) dropped (counted once)" in stdout
    html = (tmp_path / "out2" / "index.html").read_text(encoding="utf-8")
    md = (tmp_path / "out2" / "report.md").read_text(encoding="utf-8")
    assert "later copies are dropped (36 in this report)" in md and "36 later copies dropped" in md
    assert "(36 in this report)" in " ".join(html.split()) and 'id="load-files"' in html
    one = (tmp_path / "out1" / "report.md").read_text(encoding="utf-8")
    assert "(0 in this report)" in one


def test_an_in_holding_only_duplicates_is_not_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second --in whose measurements all repeat the first's did hold measurements: no exit 66."""
    from probe.cli import main

    src = lab_run(tmp_path / "a")
    copy = tmp_path / "b"
    copy.mkdir()
    (copy / "lab.jsonl").write_bytes((src / "lab.jsonl").read_bytes())
    assert main(["report", "--in", str(src), "--in", str(copy), "--out", str(tmp_path / "out"), "--no-progress",
                 "--ignore-period"]) == 0
    assert "36 duplicate measurement(s) dropped" in capsys.readouterr().out


def test_ooni_samples_have_no_duplicates() -> None:
    r = load([shared_path("data", "ooni-samples")], workers=1)
    assert r.stats.duplicates == 0 and r.stats.loaded == len(r.frame)


def test_dask_engine_counts_duplicates_once_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--engine dask``: `--in A --in A` gives the claims the same n as one --in, and says how many it dropped."""
    pytest.importorskip("dask")
    from probe.cli import main

    src = lab_run(tmp_path / "lab")
    ns = []
    for engine, ins in (("pandas", [src]), ("dask", [src, src])):
        out = tmp_path / f"out-{engine}"
        args = ["report", "--out", str(out), "--no-progress", "--ignore-period", "--engine", engine]
        for i in ins:
            args += ["--in", str(i)]
        assert main(args) == 0
        with (out / "claims.csv").open(encoding="utf-8", newline="") as fh:
            ns.append({r["claim_id"]: r["n"] for r in csv.DictReader(fh)})
    assert ns[0] == ns[1]
    assert "36 duplicate measurement(s) dropped (counted once)" in capsys.readouterr().out
    md = (tmp_path / "out-dask" / "report.md").read_text(encoding="utf-8")
    assert "later copies are dropped (36 in this report)" in md
    # an --in holding only copies of another's measurements did hold measurements (no exit 66), as with pandas
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "lab.jsonl").write_bytes((src / "lab.jsonl").read_bytes())
    assert main(["report", "--out", str(tmp_path / "out-copy"), "--no-progress", "--ignore-period", "--engine", "dask",
                 "--in", str(src), "--in", str(copy)]) == 0


def test_dask_engine_gathers_the_loaders_counts_as_pandas_does(tmp_path: Path, ours: dict[str, dict]) -> None:  # noqa: F811
    """``--engine dask`` gives the report the same counts as the pandas engine: invalid, torn and blank
    lines, skipped measurements, per file, the errors named, the duplicates (break test: Dask's per-file
    loaders logged them and the report said "0 bad lines")."""
    pytest.importorskip("dask")
    from analysis.build import build_report

    good = ours["https.verified"]
    src = tmp_path / "in"
    src.mkdir()
    a = write_jsonl(src / "a.jsonl", [good, "not json", {**good, "x_measurement_uid": "u2"}])
    with a.open("a", encoding="utf-8") as fh:
        fh.write("\n\n" + json.dumps({**good, "test_name": "dns_check", "x_measurement_uid": "u3"}) + "\n")
        fh.write(json.dumps({**good, "x_measurement_uid": "u4"})[:200])  # torn last line
    write_jsonl(src / "b.jsonl", [good, {**good, "x_measurement_uid": "u5", "measurement_start_time": "yesterday"}])
    got = {}
    for engine in ("pandas", "dask"):
        built = build_report([src], tmp_path / f"out-{engine}", engine=engine, ignore_period=True, country=None)  # type: ignore[arg-type]
        st = built.stats
        got[engine] = ({k: getattr(st, k) for k in ("files", *L.PER_FILE)}, st.by_file, sorted(st.errors))
    assert got["dask"] == got["pandas"]
    counts, by_file, errors = got["dask"]
    assert (counts["files"], counts["loaded"], counts["invalid"], counts["torn"], counts["blank"], counts["skipped"],
            counts["duplicates"]) == (2, 2, 2, 1, 2, 1, 1)
    assert by_file[str(src / "a.jsonl")]["torn"] == 1 and by_file[str(src / "b.jsonl")]["duplicates"] == 1
    assert any("measurement_start_time 'yesterday' is not a date" in e for e in errors), errors


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_dask_engine_names_a_refused_in_as_pandas_does(tmp_path: Path, ours: dict[str, dict], kind: str,  # noqa: F811
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Break test: an --in that is a FIFO or a symlink to /dev/zero among good ones was named in the pandas
    engine's errors (the report's data quality, stderr) but not in --engine dask's. Now both name it."""
    import logging
    import os

    pytest.importorskip("dask")
    from analysis.build import build_report

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_jsonl(a / "a.jsonl", [ours["https.verified"]])
    write_jsonl(b / "b.jsonl", [{**ours["tls.control_ok"], "x_measurement_uid": "b1"}, "not json"])
    bad = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        bad.symlink_to("/dev/zero")
    says = ("not a regular file (a FIFO (named pipe)), not opened" if kind == "fifo"
            else "not a regular file (a character device, via a symlink to /dev/zero), not opened")
    got = {}
    for engine in ("pandas", "dask"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="analysis.load"):
            built = build_report([a, bad, b], tmp_path / f"out-{engine}", engine=engine,  # type: ignore[arg-type]
                                 ignore_period=True, country=None)
        got[engine] = (built.stats.errors, [r.getMessage() for r in caplog.records if "not opened" in r.getMessage()])
    assert got["dask"] == got["pandas"]
    errors, logged = got["dask"]
    assert errors[0] == f"{bad}: {says}" and errors[1].startswith(f"{b / 'b.jsonl'}:2: "), errors
    assert logged == [f"{bad}: {says}"]


def test_drop_duplicates_dask_keeps_partitions_and_first_copies(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    from analysis.scale import drop_duplicates_dask, load_dask

    src = lab_run(tmp_path / "a")
    part = tmp_path / "b"
    part.mkdir()
    (part / "x.jsonl").write_text("\n".join((src / "lab.jsonl").read_text().splitlines()[5:9]) + "\n")
    ddf = load_dask([src, part, src])
    out, stats = drop_duplicates_dask(ddf)
    frame = out.compute()
    assert stats.duplicates == 4 + 36 and len(frame) == 36 and out.npartitions == ddf.npartitions
    assert stats.by_file == {str(part / "x.jsonl"): {"duplicates": 4}, str(src / "lab.jsonl"): {"duplicates": 36}}
    assert set(frame["file"].astype(str)) == {str(src / "lab.jsonl")}


def test_ooni_sync_counts_a_deeply_nested_line(tmp_path: Path) -> None:
    """`kzprobe ooni sync` decodes OONI's lines itself: one nested 100,000 deep is invalid, the others kept
    (it raised RecursionError out of the sync)."""
    import datetime as dt

    from analysis.ooni_sync import sync
    from tests.analysis.test_ooni_sync import _cfg
    from tests.fixtures.ooni_bucket import FakeS3

    line = json.dumps({"test_name": "web_connectivity", "probe_cc": "KZ", "input": "http://a.example/",
                       "report_id": "r", "measurement_start_time": "2021-01-01 00:00:00"}).encode() + b"\n"
    body = gzip.compress(line + b"[" * 100_000 + b"]" * 100_000 + b"\n" + line.replace(b'"r"', b'"r2"'), mtime=0)
    key = "raw/20210101/00/KZ/webconnectivity/2021010100_KZ_webconnectivity.n0.0.jsonl.gz"
    with FakeS3({key: body}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
    assert res.fetched == 1 and res.kept == 2 and not res.corrupt


# --------------------------------------------------------------------------- probe_asn


def test_an_asn_as_a_number_is_the_same_vantage_and_a_name_is_invalid(
        tmp_path: Path, samples: list[Path], ours: dict[str, dict]) -> None:  # noqa: F811 (fixtures)
    """``"probe_asn": 9198`` (an integer) made a vantage ``KZ/9198`` apart from ``KZ/AS9198`` (break test F15):
    an integer or a digit string is that ASN ("AS9198"), in OONI's records and ours (the fast path hands such a
    record to the generic one); anything else is counted invalid, named file:line, not a vantage of its own."""
    ooni = json.loads(samples[0].read_text(encoding="utf-8"))
    mine = next(iter(ours.values()))
    mine = {**mine, "annotations": {k: v for k, v in mine["annotations"].items() if k != "vantage_id"}}
    good: list[str | dict] = []
    for i, v in enumerate(["AS9198", 9198, "9198", "as09198"]):
        good.append({**ooni, "probe_cc": "KZ", "probe_asn": v, "measurement_uid": f"o{i}"})
        good.append({**mine, "probe_asn": v, "x_measurement_uid": f"k{i}"})
    bad_values = ["Kazakhtelecom", 9198.5, True, -1, 2**32, "AS", ["AS9198"]]
    bad = [{**ooni, "probe_cc": "KZ", "probe_asn": v, "measurement_uid": f"b{i}"} for i, v in enumerate(bad_values)]
    bad.append({**mine, "probe_asn": "Kazakhtelecom", "x_measurement_uid": "kb"})
    f = write_jsonl(tmp_path / "asn.jsonl", [*good, *bad])
    r = load([f], workers=1)
    assert len(r.frame) == len(good) == 8
    assert set(r.frame["probe_asn"].astype(str)) == {"AS9198"}
    assert set(r.frame["vantage_id"].astype(str)) == {"KZ/AS9198"}
    assert r.stats.invalid == len(bad) == 8
    errors = [e for e in r.stats.errors if "not an ASN" in e]
    assert len(errors) == 8 and errors[0].startswith(f"{f}:9: "), errors
    assert "probe_asn 'Kazakhtelecom' is not an ASN (AS<number>)" in errors[0]
    assert errors[1].startswith(f"{f}:10: ") and "probe_asn is a number (9198.5), not an ASN" in errors[1]
    assert errors[-1].startswith(f"{f}:16: ") and "probe_asn 'Kazakhtelecom'" in errors[-1]  # ours, fast path
