"""probe.status (``kzprobe status``): synthetic results directories and a fake systemctl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from probe.retention import report_id_of
from probe.status import (
    UnitState,
    collect,
    main_status,
    render,
    results_dir,
    unit_state,
)

A = "20261129T000000Z_webconnectivity_KZ_9198_0000000000000001"
B = "20261129T060000Z_webconnectivity_KZ_9198_0000000000000002"
C = "20261129T120000Z_webconnectivity_KZ_9198_0000000000000003"
NO_UNITS = UnitState(available=False, reason="systemd not available: test")


def summary(rid: str, **kw: object) -> str:
    data = {"report_id": rid, "inputs": 10, "measured": 10, "vantage_offline": False,
            "control_intercepted_by": None, "counts": {"accessible": 8, "dns": 2}, "interrupted": False,
            "deadline_hit": False, **kw}
    return json.dumps(data)


# (case, files {name: content}, expected run ids newest first, expected bad file names)
CASES = [
    ("empty", {}, [], []),
    ("three runs, newest first", {f"{r}.summary.json": summary(r) for r in (A, B, C)}, [C, B, A], []),
    ("torn summary", {f"{A}.summary.json": summary(A), f"{B}.summary.json": summary(B)[:20]}, [A],
     [f"{B}.summary.json"]),
    ("garbage summary", {f"{A}.summary.json": "\x00\xff not json"}, [], [f"{A}.summary.json"]),
    ("json but not an object", {f"{A}.summary.json": "[1, 2]"}, [], [f"{A}.summary.json"]),
    ("counts not integers", {f"{A}.summary.json": summary(A, counts={"dns": "many"})}, [], [f"{A}.summary.json"]),
    # a run killed before its summary: listed (counted from its measurements), not "unreadable" (break test)
    ("measurements without a summary", {f"{A}.jsonl": "{}\n", f"{B}.summary.json": summary(B)}, [B, A], []),
    ("other files ignored", {"notes.txt": "x", "a.jsonl": "{", f"{A}.summary.json": summary(A)}, [A], []),
    # summary files that are no run's (no report id, so no matching .jsonl) were silently ignored
    ("stray garbage summary", {"a.summary.json": "{", f"{A}.summary.json": summary(A)}, [A], ["a.summary.json"]),
    ("stray torn summary", {"run1.summary.json": summary(A)[:20], "x.summary.json": "\x00\xff"}, [],
     ["run1.summary.json", "x.summary.json"]),
    ("summary tmp without measurements", {f"{A}.summary.tmp": "{tor"}, [], [f"{A}.summary.tmp"]),
    # well-formed but hostile values (second break test): reported, never printed as a run
    ("negative inputs", {f"{A}.summary.json": summary(A, inputs=-5)}, [], [f"{A}.summary.json"]),
    ("huge measured", {f"{A}.summary.json": summary(A, measured=1e308)}, [], [f"{A}.summary.json"]),
    ("negative count", {f"{A}.summary.json": summary(A, counts={"tls": -3})}, [], [f"{A}.summary.json"]),
    ("string offline flag", {f"{A}.summary.json": summary(A, vantage_offline="no")}, [], [f"{A}.summary.json"]),
    ("escape in a count name", {f"{A}.summary.json": summary(A, counts={"\x1b[31m": 1})}, [],
     [f"{A}.summary.json"]),
    ("escape in the issuer", {f"{A}.summary.json": summary(A, control_intercepted_by="CN=x\x1b[2J")}, [],
     [f"{A}.summary.json"]),
]


def test_a_killed_runs_file_is_read_within_a_bound_and_counted_whole(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Break test: ``kzprobe status`` decoded every line of a killed run's JSONL to count it (a multi-GB
    file: minutes of parsing). Now the records of its first KILLED_READ_BYTES are read for their
    verdicts and the lines past them only counted, by blocks: the count stays exact (a torn last line
    not counted), the verdicts past the bound are named as not read."""
    import probe.runlines as runlines
    import probe.status as status

    verdicts = ["dns", "accessible", "tls"]
    lines = [json.dumps({"test_keys": {"x_blocking": False if v == "accessible" else v,
                                       "x_accessible": v == "accessible", "pad": "x" * 200}}) + "\n"
             for v in verdicts * 100]
    body = "".join(lines)
    (tmp_path / f"{A}.jsonl").write_text(body + '{"test_keys": {"x_bl', encoding="utf-8")  # torn last line
    decoded = []
    real = runlines.loads_json
    monkeypatch.setattr(runlines, "loads_json", lambda raw: decoded.append(1) or real(raw))
    (run,) = collect(tmp_path, units=NO_UNITS).runs
    assert (run.measured, dict(run.counts)) == (300, {"dns": 100, "accessible": 100, "tls": 100})
    decoded.clear()
    monkeypatch.setattr(status, "KILLED_READ_BYTES", len(body) // 3, raising=False)
    (run,) = collect(tmp_path, units=NO_UNITS).runs
    assert run.measured == 300 and run.killed
    read = -(-len(body) // 3 // len(lines[0]))  # the lines starting in the first third
    assert len(decoded) == read and sum(run.counts.values()) == read, len(decoded)  # was 300
    assert run.unread == 300 - read
    assert run.counts == {"dns": 34, "accessible": 33, "tls": 33}
    text = render(collect(tmp_path, units=NO_UNITS))
    assert f"the last {300 - read} counted, their verdicts not read" in text


def test_lines_past_the_bound_are_counted_without_the_blank_ones(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: past KILLED_READ_BYTES every newline was counted, blank lines too, while the verdicts
    skip them. count_lines counts the complete non-blank lines (white space only is blank) from a
    byte, whatever the block edges: against a line-by-line count over random files, blocks of 1-9 bytes."""
    import random

    import probe.runlines as runlines

    rnd = random.Random(7)
    path = tmp_path / "x.jsonl"
    for _ in range(400):
        data = bytes(rnd.choice(b"\n\n \t\r\x0b\x0cab{}") for _ in range(rnd.randrange(40)))
        start = rnd.randrange(len(data) + 1)
        path.write_bytes(data)
        want = sum(1 for line in data[start:].split(b"\n")[:-1] if line.strip())
        monkeypatch.setattr(runlines, "COUNT_BLOCK_BYTES", rnd.randrange(1, 10))
        assert runlines.count_lines(path, start) == want, (data, start)
    monkeypatch.setattr(runlines, "COUNT_BLOCK_BYTES", 1 << 20)
    path.write_bytes(b'{"a": 1}\n\n  \r\n{"b": 2}\n{"torn')
    assert runlines.count_lines(path) == 2  # was 4


@pytest.mark.parametrize(("case", "files", "runs", "bad"), CASES, ids=[c[0] for c in CASES])
def test_collect(tmp_path: Path, case: str, files: dict[str, str], runs: list[str], bad: list[str]) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8", errors="surrogateescape")
    st = collect(tmp_path, units=NO_UNITS)
    assert [r.report_id for r in st.runs] == runs
    assert [Path(f).name for f, _ in st.bad] == bad
    assert st.total_runs == len(runs)
    assert st.disk_bytes == sum((tmp_path / n).stat().st_size for n in files if report_id_of(n))
    text = render(st)  # never raises, names every bad file
    for name in bad:
        assert f"warning: {tmp_path / name}:" in text


def test_disk_use_counts_the_packet_captures(tmp_path: Path) -> None:
    """``<report_id>.pcap/*.pcap`` (``kzprobe run --pcap``) were left out of the disk use (break test):
    counted now, as retention deletes them — regular ``*.pcap`` files directly in a run's directory;
    a symlink, another name or a directory that is no run's is not."""
    (tmp_path / f"{A}.summary.json").write_text(summary(A), encoding="utf-8")
    run = sum(p.stat().st_size for p in tmp_path.iterdir())
    caps = tmp_path / f"{A}.pcap"
    caps.mkdir()
    (caps / "0123.pcap").write_bytes(b"\0" * 5000)
    (caps / "4567.pcap").write_bytes(b"\0" * 3000)
    (caps / "notes.txt").write_bytes(b"x" * 100)
    (caps / "link.pcap").symlink_to(caps / "0123.pcap")
    (tmp_path / "other.pcap").mkdir()
    (tmp_path / "other.pcap" / "x.pcap").write_bytes(b"\0" * 700)
    st = collect(tmp_path, units=NO_UNITS)
    assert st.disk_bytes == run + 8000
    assert st.to_json()["disk_bytes"] == run + 8000  # kzprobe status --json says the same


def test_run_fields_and_flags(tmp_path: Path) -> None:
    (tmp_path / f"{A}.summary.json").write_text(summary(A, vantage_offline=True, counts={"inconclusive": 10},
                                                        test_start_time="2026-11-29 00:00:07"))
    (tmp_path / f"{B}.summary.json").write_text(summary(B, control_intercepted_by="CN=Qaznet Trust Network",
                                                        interrupted=True, measured=4))
    (tmp_path / f"{B}.jsonl").write_bytes(b"x" * 1000)
    st = collect(tmp_path, units=NO_UNITS, last=5)
    b, a = st.runs
    assert a.start == "2026-11-29T00:00:07+00:00" and a.vantage_offline and a.counts == {"inconclusive": 10}
    assert b.intercepted_by == "CN=Qaznet Trust Network" and b.interrupted and b.measured == 4
    assert b.jsonl_bytes == 1000
    text = render(st)
    assert "2026-11-29 00:00:07      10       10  inconclusive 10  [VANTAGE OFFLINE]" in text
    assert "[TLS INTERCEPTED by CN=Qaznet Trust Network; interrupted]" in text
    assert "timer:    systemd not available: test" in text


def test_last_n(tmp_path: Path) -> None:
    for r in (A, B, C):
        (tmp_path / f"{r}.summary.json").write_text(summary(r))
    st = collect(tmp_path, units=NO_UNITS, last=2)
    assert [r.report_id for r in st.runs] == [C, B] and st.total_runs == 3


def test_missing_directory(tmp_path: Path) -> None:
    st = collect(tmp_path / "nope", units=NO_UNITS)
    assert not st.exists and st.runs == [] and "(does not exist yet)" in render(st)


@pytest.mark.parametrize(("case", "parent_mode", "dir_mode"), [
    ("directory unreadable", 0o755, 0o000),
    ("parent not traversable", 0o700, 0o755),
])
def test_unreadable_directory_is_reported(case: str, parent_mode: int, dir_mode: int, unprivileged_python) -> None:
    """An analyst not in group kzprobe: told what to do, no crash (run as an unprivileged uid)."""
    base = Path(tempfile.mkdtemp(prefix="kzprobe-status-"))
    try:
        base.chmod(0o755)
        parent = base / "parent"
        d = parent / "results"
        d.mkdir(parents=True)
        d.chmod(dir_mode)
        parent.chmod(parent_mode)
        code = ("import sys; from pathlib import Path; from probe.status import collect, render, UnitState;"
                "st = collect(Path(sys.argv[1]), units=UnitState(available=False)); print(render(st))")
        creds = {"user": 64123, "group": 64123, "extra_groups": []} if os.geteuid() == 0 else {}
        python = unprivileged_python(64123) if creds else [sys.executable]
        res = subprocess.run([*python, "-c", code, str(d)], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).resolve().parents[1], **creds)
    finally:
        parent.chmod(0o755)
        d.chmod(0o755)
        shutil.rmtree(base)
    assert res.returncode == 0, res.stderr
    assert f"warning: {d}: cannot list: Permission denied (add yourself to group kzprobe)" in res.stdout
    assert "does not exist" not in res.stdout


def fake_systemctl(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "systemctl"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


TIMER_OUT = ("ActiveState=active\nSubState=waiting\nUnitFileState=enabled\n"
             "NextElapseUSecRealtime=Sun 2026-11-29 18:23:00 UTC\nLastTriggerUSec=Sun 2026-11-29 12:23:00 UTC")


@pytest.mark.parametrize(("case", "body", "booted", "available", "reason"), [
    ("running", (f"case \"$2\" in kzprobe.timer) echo '{TIMER_OUT}';; *) echo 'ActiveState=inactive'; "
                 "echo 'Result=success'; echo 'ExecMainStatus=75';; esac"), True, True, ""),
    ("not booted with systemd", "exit 0", False, False, "not running"),
    ("systemctl fails", "echo 'System has not been booted with systemd as init system (PID 1).' >&2; exit 1",
     True, False, "System has not been booted"),
    ("garbage output", "echo 'no equals sign here'", True, True, ""),
])
def test_unit_state(tmp_path: Path, case: str, body: str, booted: bool, available: bool, reason: str) -> None:
    marker = tmp_path / "run-systemd-system"
    if booted:
        marker.mkdir()
    u = unit_state(systemctl=fake_systemctl(tmp_path, body), booted_marker=marker)
    assert u.available is available
    assert reason in u.reason
    if case == "running":
        assert u.timer["UnitFileState"] == "enabled" and u.service["ExecMainStatus"] == "75"
        text = render(collect(tmp_path / "none", units=u))
        assert "kzprobe.timer active (waiting), enabled; next Sun 2026-11-29 18:23:00 UTC" in text
        assert "last exit status 75 (75 = vantage offline)" in text


def test_unit_state_without_systemctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    u = unit_state()
    assert not u.available and u.reason == "systemd not available: no systemctl"


@pytest.mark.parametrize(("explicit", "run_out", "env", "expected"), [
    ("/x", "/y", {"STATE_DIRECTORY": "/z"}, "/x"),
    (None, "/y", {"STATE_DIRECTORY": "/z"}, "/y"),
    (None, "", {"STATE_DIRECTORY": "/z:/w"}, "/z"),
])
def test_results_dir_order(explicit: str | None, run_out: str, env: dict[str, str], expected: str) -> None:
    assert results_dir(explicit, run_out, env) == Path(expected)


@pytest.mark.parametrize(("config", "consent_text"), [
    ("[consent]\naccepted = false\n", "NOT ACCEPTED"),
    ("[consent]\naccepted = true\n", "risk notice accepted"),
    ("", "not asked"),
    ("[run]\nconcurrency = 0\n", "risk notice unknown (the config is unusable"),  # named, not fatal
    # an invalid consent value was reported as "not asked (no [consent] in the config)"
    ("[consent]\naccepted = 0\n", "risk notice INVALID — the config's consent.accepted is invalid: must be a TOML "
                                   "boolean: true or false, without quotes, got 0; runs refuse to start"),
    ("[consent]\naccepted = \"yes\"\n", "risk notice INVALID — the config's consent.accepted is invalid"),
])
def test_main_status_consent_and_broken_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str,
                                               consent_text: str) -> None:
    for k in [k for k in os.environ if k.startswith("KZPROBE_")]:
        monkeypatch.delenv(k)
    cfg = tmp_path / "c.toml"
    cfg.write_text(config)
    text, rc = main_status(directory=str(tmp_path), config_path=str(cfg), last=3, as_json=False)
    assert rc == 0 and consent_text in text, text
    assert ("not asked" in text) == (config == "")
    if "concurrency" in config:
        assert "config:   unusable (config: run.concurrency: must be between 1 and 1024" in text


def test_cli_status_json(tmp_path: Path) -> None:
    (tmp_path / f"{A}.summary.json").write_text(summary(A))
    (tmp_path / f"{B}.summary.json").write_text("{torn")
    empty = Path(__file__).parent / "data" / "empty.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    res = subprocess.run([sys.executable, "-m", "probe", "status", "--in", str(tmp_path), "--json",
                          "--config", str(empty)], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["results_dir"] == str(tmp_path) and [r["report_id"] for r in data["runs"]] == [A]
    assert data["runs"][0]["counts"] == {"accessible": 8, "dns": 2}
    assert data["bad"][0]["file"].endswith(f"{B}.summary.json") and "unreadable summary" in data["bad"][0]["reason"]
    assert isinstance(data["units"]["available"], bool) and data["retention_days"] == 90


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_runs_measurements_file_that_is_a_fifo_or_symlink_is_named_not_dropped(tmp_path: Path, kind: str) -> None:
    """Re-check 24 N7: a run whose ``.jsonl`` was a FIFO or a symlink vanished from ``list`` and ``status``
    unsaid (run_files leaves both out, rightly: they are never opened). Now the file is named unreadable,
    and still not opened (a FIFO opened for reading would block the listing)."""
    jsonl = tmp_path / f"{A}.jsonl"
    if kind == "fifo":
        os.mkfifo(jsonl)
    else:
        (tmp_path / "elsewhere.jsonl").write_text("{}\n")
        jsonl.symlink_to(tmp_path / "elsewhere.jsonl")
    st = collect(tmp_path, units=NO_UNITS)
    assert st.runs == []
    assert [(Path(f).name, "not read" in why) for f, why in st.bad] == [(jsonl.name, True)]
    assert ("a symlink" if kind == "symlink" else "not a regular file") in st.bad[0][1]


def test_a_junk_summary_over_the_bound_is_named_not_listed_as_an_empty_run(tmp_path: Path) -> None:
    """Re-check 24 N7: a 300 MB ``{"a": "BBB..."}`` summary was read whole and listed as a valid 0/0 run
    (every field of the schema has a default). A summary over MAX_SUMMARY_BYTES (1 MiB; the runner writes
    ~3 KB) is now named an unreadable summary, read no further than the bound."""
    from probe.status import MAX_SUMMARY_BYTES

    (tmp_path / f"{A}.summary.json").write_text('{"a": "' + "B" * (MAX_SUMMARY_BYTES + 10) + '"}')
    st = collect(tmp_path, units=NO_UNITS)
    assert st.runs == []
    ((f, why),) = st.bad
    assert Path(f).name == f"{A}.summary.json" and why.startswith("unreadable summary: over 1048576 bytes")
