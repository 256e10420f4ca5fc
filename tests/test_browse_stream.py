"""``kzprobe list RUN`` and ``show RUN:N`` on big and damaged run files: list streams and decodes the fields it
prints only, show finds its line by counting newlines and decodes that line only; what they print is what they
printed when every line was decoded whole (the reference below is that code)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import probe.runlines as runlines
from probe import browse
from probe.browse import BrowseError, find_measurement, iter_measurements, list_measurements, terminal_safe
from probe.runlines import MAX_LINE_BYTES, SKIP_NOT_JSON, SKIP_TOO_LONG, LineStats, iter_records, own_verdict
from probe.summary import display_input
from probe.targets import MAX_ROW_WARNINGS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RID = "20261204T000000Z_webconnectivity_KZ_9198_00000000000000a1"


def _records() -> list[dict[str, Any]]:
    """The tests' records: the golden ones of every verdict (x_blocking) and kzprobe 0.1.0's."""
    recs = [json.loads(p.read_text()) for p in sorted((DATA / "golden").glob("df000-*.json"))]
    return recs + [json.loads(ln) for ln in (DATA / "records-0.1.0.jsonl").read_text().splitlines()]


def _line(rec: dict[str, Any]) -> bytes:
    return (json.dumps(rec, ensure_ascii=False) + "\n").encode()


def _damaged() -> bytes:
    """A run file with every kind of line a results dir has held: records of both formats, blank and junk
    lines, odd but valid JSON (NaN, a byte order mark, escaped and repeated keys, test keys not an object),
    bad UTF-8 inside a record, nesting past the bound, an over-limit line, hostile terminal text and a torn
    last line."""
    recs = _records()
    good = b"".join(map(_line, recs))
    bad_utf8 = _line(recs[0]).replace(b'"input":', b'"x_pad": "\xff\xfe", "input":', 1)
    surrogate_bytes = _line(recs[1]).replace(b'"input":', b'"x_pad": "\xed\xa0\x80", "input":', 1)
    hostile = dict(recs[2], input="https://evil.example/\x1b]0;PWNED\x07")
    hostile["test_keys"] = dict(recs[2]["test_keys"], x_reason="reason \x1b[31mred\u202eevil")
    return b"".join([
        good, b"\n", b"  \t \r\n", b"{not json\n", b"[1]\n", b'"a string"\n',
        b'{"input": "https://a.example/", "test_keys": "not an object"}\n',
        b'{"input": "https://b.example/", "test_keys": null}\n',
        b'{"input": 12, "test_keys": {"x_blocking": NaN, "x_reason": Infinity}}\n',
        b"\xef\xbb\xbf" + _line(recs[3]), bad_utf8, surrogate_bytes,
        b'{"input": "https://deep.example/", "x": ' + b"[" * 40 + b"]" * 40 + b"}\n",
        b'{"inp\\u0075t": "https://c.example/", "test_keys": {"x_bl\\u006fcking": "dns",'
        b' "x_accessible": false}}\n',
        b'{"input": "one", "input": "two", "test_keys": {"x_rule": 1},'
        b' "test_keys": {"x_reason": "r", "blocking": false, "accessible": true}}\n',
        b'{"test_keys": {"blocking": ["a", {"b": 1}], "x_reason": {"why": [1.5, -0.0, 1e999]}}}\n',
        b'{"input": null}\n', b"{}\n", _line(hostile),
        b'{"a": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n',
        good, _line(recs[4])[:-100],  # torn: the record being written when the run was killed
    ])


# --- the reference: kzprobe list RUN as it was, every line decoded whole ------------------------------------

def _old_rows(path: Path, rid: str) -> tuple[list[dict[str, Any]], LineStats]:
    stats = LineStats()
    rows = []
    for lineno, rec in iter_records(path, stats):
        tk = rec.get("test_keys")
        tk = tk if isinstance(tk, dict) else {}
        blocking, accessible = own_verdict(tk)
        verdict = ("inconclusive" if blocking is None else ("accessible" if accessible else "down (not blocked)")
                   if blocking is False else f"BLOCKED: {blocking}")
        rows.append({"id": f"{rid}:{lineno}", "input": str(rec.get("input", "")), "verdict": verdict,
                     "blocking": own_verdict(tk)[0], "accessible": own_verdict(tk)[1],
                     "ooni_blocking": tk.get("blocking"), "rule": tk.get("x_rule"), "reason": tk.get("x_reason")})
    return rows, stats


def _old_text(rid: str, rows: list[dict[str, Any]], stats: LineStats) -> str:
    lines = [f"run {rid} ({browse.network_of(rid)}): {len(rows)} measurements"]
    for r in rows:
        lines.append(f"{r['id'].rsplit(':', 1)[1]:>5}  {r['verdict']:<24} {display_input(r['input'])}  — {r['reason']}")
    shown = stats.skipped[:MAX_ROW_WARNINGS]
    lines += [f"line {n} skipped: {why}" for n, why in shown]
    if stats.count > len(shown):
        why = ", ".join(f"{n:,} {kind}" for kind, n in stats.by_reason.most_common())
        lines.append(f"... and {stats.count - len(shown):,} more skipped line(s) not shown "
                     f"({stats.count:,} skipped in all: {why}; the first {len(shown)} are above)")
    lines.append(f"(kzprobe show {rid}:LINE for one of them)")
    return terminal_safe("\n".join(lines)) + "\n"


def _old_json(rid: str, rows: list[dict[str, Any]], stats: LineStats) -> str:
    return json.dumps({"report_id": rid, "measurements": rows,
                       "skipped_lines": [{"line": n, "reason": w} for n, w in stats.skipped],
                       "skipped_count": stats.count, "skipped_by_reason": dict(stats.by_reason)},
                      ensure_ascii=False, indent=1) + "\n"


def _old_find(path: Path, line: int) -> dict[str, Any] | None:
    return next((rec for lineno, rec in iter_records(path) if lineno == line), None)


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN is not equal to itself


# --- list RUN ----------------------------------------------------------------------------------------------

def test_list_rows_are_those_of_whole_records(tmp_path: Path) -> None:
    path = tmp_path / f"{RID}.jsonl"
    path.write_bytes(_damaged() + b'{"input": "https://s.example/\\ud800", "x": "\\udc00"}\n')
    rid, rows, stats = list_measurements(tmp_path, RID)
    old_rows, old_stats = _old_rows(path, rid)
    assert len(rows) == len(old_rows) > 40 and _same(rows, old_rows)
    assert (stats.skipped, stats.count, stats.by_reason) == (old_stats.skipped, old_stats.count, old_stats.by_reason)
    assert stats.by_reason[SKIP_TOO_LONG] == 1 and stats.by_reason[SKIP_NOT_JSON] == 4  # junk, bad UTF-8, deep, torn
    assert rows[-1]["reason"] is not None and rows[-1]["id"] != f"{RID}:{stats.skipped[-1][0]}"


def _kz(*args: str) -> subprocess.CompletedProcess[bytes]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    e.update({"KZPROBE_CONFIG": str(DATA / "empty.toml"), "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"})
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, env=e, capture_output=True,
                          check=False, timeout=120)


def test_list_prints_what_it_printed_when_every_line_was_decoded(tmp_path: Path) -> None:
    """Byte for byte, text and --json, on the tests' run file (kzprobe 0.1.0's records), the golden records as
    a run, and the damaged run."""
    runs = {"20210301T060000Z_webconnectivity_KZ_9198_0000000000000000": (DATA / "records-0.1.0.jsonl").read_bytes(),
            "20261204T000000Z_webconnectivity_KZ_9198_0000000000000001": b"".join(map(_line, _records()[:10])),
            RID: _damaged()}
    for rid, body in runs.items():
        (tmp_path / f"{rid}.jsonl").write_bytes(body)
    for rid in runs:
        old_rows, old_stats = _old_rows(tmp_path / f"{rid}.jsonl", rid)
        res = _kz("list", rid, "--dir", str(tmp_path))
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode() == _old_text(rid, old_rows, old_stats)
        res = _kz("list", rid, "--dir", str(tmp_path), "--json")
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode() == _old_json(rid, old_rows, old_stats)
    res = _kz("list", RID, "--dir", str(tmp_path))
    assert b"line 39 skipped: line over" in res.stdout and b"line 60 skipped: not JSON: Unterminated" in res.stdout
    assert b"\x1b" not in res.stdout and b"PWNED" in res.stdout


def test_list_of_no_measurements_and_rows_spilled_past_the_spool(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"{RID}.jsonl").write_bytes(b"{junk\n\n")
    for write, old in ((browse.write_measurements, _old_text), (browse.write_measurements_json, _old_json)):
        out = io.StringIO()
        write(out, *iter_measurements(tmp_path, RID))
        assert out.getvalue() == old(RID, *_old_rows(tmp_path / f"{RID}.jsonl", RID))
    (tmp_path / f"{RID}.jsonl").write_bytes(_damaged())
    rolled: list[int] = []  # the spool's moves to a temporary file (review 24: the test never checked one was made)
    rollover = tempfile.SpooledTemporaryFile.rollover
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", lambda self: (rolled.append(1), rollover(self))[1])
    out = io.StringIO()
    browse.write_measurements(out, *iter_measurements(tmp_path, RID))
    assert not rolled  # the whole list fits the spool's 1 MiB
    monkeypatch.setattr(browse, "SPOOL_BYTES", 300)  # the rows go to a temporary file after ~2 of them
    spilled = io.StringIO()
    browse.write_measurements(spilled, *iter_measurements(tmp_path, RID))
    assert rolled == [1]
    assert spilled.getvalue() == out.getvalue() == _old_text(RID, *_old_rows(tmp_path / f"{RID}.jsonl", RID))


def test_list_reads_the_run_as_it_goes(tmp_path: Path) -> None:
    """The rows are read one line at a time as they are taken (memory: one line's, whatever the file's size)."""
    rec = _records()[0]
    (tmp_path / f"{RID}.jsonl").write_bytes(_line(rec) + b"{junk\n" * 1000 + _line(rec))
    _, rows, stats = iter_measurements(tmp_path, RID)
    assert next(rows)["id"] == f"{RID}:1" and stats.count == 0
    assert next(rows)["id"] == f"{RID}:1002" and stats.count == 1000


_RECORD_LINES = [_line(r) for r in _records()]
_EDITS = st.sampled_from([b"\xff", b"\x00", b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"NaN", b"\xed\xa0\x80",
                          b"\\ud800", b"1e400", b"\xef\xbb\xbf", b"\n", b" ", b'"input":', b'"test_keys":'])


def _fields(rec: dict[str, Any]) -> dict[str, Any]:
    """Of a record, what the list's decoder keeps: the input and six test keys."""
    out = {k: rec[k] for k in ("input",) if k in rec}
    if "test_keys" in rec:
        tk = rec["test_keys"]
        out["test_keys"] = ({k: tk[k] for k in ("x_blocking", "x_accessible", "blocking", "accessible", "x_rule",
                                                 "x_reason") if k in tk} if isinstance(tk, dict) else tk)
    return out


@settings(max_examples=400)
@given(which=st.integers(0, len(_RECORD_LINES) - 1), edits=st.lists(st.tuples(st.floats(0, 1), _EDITS), max_size=3))
def test_decoding_some_fields_keeps_and_skips_what_whole_decoding_does(which: int, edits: list) -> None:
    """Bytes put anywhere in a record: the fields decoded alone (msgspec) are the whole record's
    (json.loads), and a line is skipped for the same reason; bad UTF-8 in a field not decoded was taken."""
    from probe.runlines import parse_fields, parse_record

    raw = _RECORD_LINES[which]
    for at, edit in edits:
        i = int(at * len(raw))
        raw = raw[:i] + edit + raw[i:]
    a, b = LineStats(), LineStats()
    fields, whole = parse_fields(1, raw, browse._LISTED, a), parse_record(1, raw, b)
    assert _same(None if fields is None else _fields(fields), None if whole is None else _fields(whole))
    assert (a.skipped, a.by_reason) == (b.skipped, b.by_reason)


# --- show RUN:N --------------------------------------------------------------------------------------------

@pytest.fixture
def killed(tmp_path: Path) -> Path:
    """A killed run: 300 records with distinct uids, then a torn last line."""
    recs = _records()
    with open(tmp_path / f"{RID}.jsonl", "wb") as fh:
        for n in range(300):
            fh.write(_line(dict(recs[n % len(recs)], x_measurement_uid=f"{n:032x}")))
        fh.write(_line(recs[0])[:500])
    return tmp_path


def test_show_of_the_last_record_of_a_killed_run_decodes_that_line_only(killed: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    real = runlines.loads_json
    monkeypatch.setattr(runlines, "loads_json", lambda raw: decoded.append(raw) or real(raw))
    mid, rec = find_measurement(killed, f"{RID}:300")
    assert mid == f"{RID}:300" and rec["x_measurement_uid"] == f"{299:032x}"
    assert len(decoded) == 1  # was 301: every line up to the one named
    for line in (301, 302, 10**9, 0):  # the torn line is no measurement, nor what is past the file's end
        with pytest.raises(BrowseError, match=f"no measurement on line {line}$"):
            find_measurement(killed, f"{RID}:{line}")
    decoded.clear()
    mid, rec = find_measurement(killed, f"{250:032x}")  # by uid: two fields a line, then the one found whole
    assert mid == f"{RID}:251" and rec["x_measurement_uid"] == f"{250:032x}"
    assert [json.loads(raw).get("x_measurement_uid") if raw.endswith(b"\n") else "torn" for raw in decoded] == \
        ["torn", f"{250:032x}"]  # the torn line, refused by msgspec, is judged by json.loads as before
    mid, rec = find_measurement(killed, rec["input"])  # by input: its last measurement
    want = max(n for n, r in iter_records(killed / f"{RID}.jsonl") if r["input"] == rec["input"])
    assert mid == f"{RID}:{want}"


@pytest.mark.parametrize("block", [1, 7, 4096, 1 << 20])
def test_show_finds_every_line_as_a_scan_of_the_file_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        block: int) -> None:
    """Lines counted by blocks of any size (a newline at a block's edge or not): an over-limit line is one
    line, a blank or junk line is no measurement, a carriage return ends no line, the torn last one is none."""
    monkeypatch.setattr(runlines, "COUNT_BLOCK_BYTES", block)
    recs = _records()
    path = tmp_path / f"{RID}.jsonl"
    path.write_bytes(_line(recs[0]) + b'{"a": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n\n\n  \n{junk\r\n'
                     + _line(recs[1]).replace(b"{", b"{\r", 1) + _line(recs[2]) + b"\n" + _line(recs[3])[:50])
    for line in range(0, 11):
        old = _old_find(path, line)
        if old is None:
            with pytest.raises(BrowseError, match="no measurement on line"):
                find_measurement(tmp_path, f"{RID}:{line}")
        else:
            assert find_measurement(tmp_path, f"{RID}:{line}") == (f"{RID}:{line}", old)
    assert [n for n in range(11) if _old_find(path, n)] == [1, 7, 8]


def test_show_of_a_line_in_other_digits_is_no_traceback(killed: Path) -> None:
    """``show RUN:²`` ended in a ValueError traceback (``'²'.isdigit()``, ``int('²')`` fails), as did a line
    number of 5,000 digits (int's limit); each is a name that is no measurement now."""
    for line in ("²", "1" * 5000):
        with pytest.raises(BrowseError, match="no measurement"):
            find_measurement(killed, f"{RID}:{line}")
    assert find_measurement(killed, f"{RID}:٣")[0] == f"{RID}:3"  # Arabic-Indic 3: int() reads it, as before
    res = _kz("show", f"{RID}:²", "--dir", str(killed))
    assert res.returncode == 66 and b"Traceback" not in res.stderr and b"no measurement" in res.stderr


def test_bench_browse_runs_and_prints_figures() -> None:
    """``python -m bench.browse`` builds its run, runs list/show on it and prints their figures (none asserted)."""
    res = subprocess.run([sys.executable, "-m", "bench.browse", "--mb", "1"], cwd=ROOT, capture_output=True,
                         text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "records + a torn line" in res.stdout and "records a CPU-second" in res.stdout
    assert sum("CPU-s" in ln for ln in res.stdout.splitlines()) == 5 and "show UID" in res.stdout
