"""A run killed mid-way (SIGKILL, power loss, the OOM killer) in ``kzprobe list``, ``show`` and ``status``.

Such a run leaves its JSONL (every line fsynced: none of the measurements written is lost) but no
``<report_id>.summary.json``. ``kzprobe list`` said "(no runs)" for it (break test): the
measurements were there and hidden. It is now listed as a killed run, its verdicts counted from its
measurements file, and ``kzprobe show <prefix>:LINE`` opens its measurements. The run is a real
``kzprobe run`` on loopback (the loopback world of tests/fixtures/world.py): nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from probe.browse import render_runs
from probe.cli import main
from probe.status import collect_runs, render
from probe.store import JSONLWriter, writer_alive

ROOT = Path(__file__).resolve().parents[1]


async def _killed_run(loopback_config, while_alive: Callable[[Path], None] | None = None) -> tuple[Path, int]:
    """Start ``kzprobe run`` on 5 working sites and 12 slow ones; SIGKILL it once a measurement is written
    (``while_alive(results dir)`` is called just before). Returns (the results dir, lines in its JSONL)."""
    tmp = loopback_config["tmp"]
    cfg = loopback_config["write"]()
    targets = tmp / "slow.txt"  # the working sites first; unknown names wait for the 1 s DNS timeout
    targets.write_text("".join(f"https://site{i}.example.org/\n" for i in range(5))
                       + "".join(f"https://slow{i}.example.org/\n" for i in range(12)), encoding="utf-8")
    out = tmp / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "run", "--config", str(cfg), "--targets", str(targets), "--out", str(out),
        "--concurrency", "2", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(3000):
            jsonl = list(out.glob("*.jsonl"))
            if jsonl and jsonl[0].read_bytes().count(b"\n") >= 2:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("no measurement written in 30 s")
        if while_alive is not None:
            while_alive(out)
            assert proc.returncode is None, "the run ended before it could be seen running"
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    (jsonl_path,) = out.glob("*.jsonl")
    assert not list(out.glob("*.summary.json")), "killed: no summary"
    return out, jsonl_path.read_bytes().count(b"\n")


def _seen_running(out: Path) -> None:
    """The live run, as ``status`` and ``list`` show it: RUNNING, not KILLED (break test: KILLED throughout
    a live run of 4+ minutes)."""
    (run,), bad, _ = collect_runs(out)
    assert run.running and not run.killed and not run.interrupted and not bad
    text = render_status_of(out)
    assert "RUNNING" in text and "KILLED" not in text
    assert "RUNNING" in render_runs([run], []) and "KILLED" not in render_runs([run], [])


async def test_a_killed_run_is_listed_as_killed_with_its_measurements(loopback_config,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, lines = await _killed_run(loopback_config, while_alive=_seen_running)
    assert 2 <= lines < 17
    (jsonl,) = out.glob("*.jsonl")
    rid = jsonl.name.removesuffix(".jsonl")

    assert main(["list", "--dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(no runs)" not in text
    (row,) = [ln for ln in text.splitlines() if rid in ln]
    assert f"{lines:>3}/?" in row and "KILLED" in row and "accessible: " in row

    assert main(["list", "--dir", str(out), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["report_id"] == rid and run["killed"] and run["interrupted"] and run["measured"] == lines
    assert sum(run["counts"].values()) == lines
    assert run["counts"].get("accessible", 0) >= 1  # the five working sites came first

    assert main(["list", "--dir", str(out), rid[:15]]) == 0
    assert f"{lines} measurements" in capsys.readouterr().out
    assert main(["show", "--dir", str(out), f"{rid[:15]}:1"]) == 0
    assert "site" in capsys.readouterr().out

    runs, bad, _ = collect_runs(out)
    assert [r.report_id for r in runs] == [rid] and not bad
    assert runs[0].killed and not runs[0].running
    assert "KILLED" in render_status_of(out) and "RUNNING" not in render_status_of(out)


def render_status_of(out: Path) -> str:
    from probe.status import UnitState, collect

    return render(collect(out, units=UnitState(available=False, reason="not asked in tests")))


def test_a_run_whose_writer_holds_its_file_is_running_and_killed_once_it_lets_go(tmp_path: Path) -> None:
    """A run's measurements file held open by a :class:`JSONLWriter` (its flock) is RUNNING; the same file
    once the writer is gone (closed, or its process dead: the kernel drops the lock) and no summary is KILLED."""
    rid = "20210301T060000Z_webconnectivity_KZ_9198_0000000000000001"
    golden = (ROOT / "tests" / "data" / "records-0.1.0.jsonl").read_text(encoding="utf-8").splitlines()
    writer = JSONLWriter(tmp_path / f"{rid}.jsonl", fsync=False)
    try:
        writer.write(golden[0].encode() + b"\n")
        assert writer_alive(tmp_path / f"{rid}.jsonl")
        (run,), bad, _ = collect_runs(tmp_path)
        assert run.running and not run.killed and run.measured == 1 and not bad
        assert "RUNNING" in render_status_of(tmp_path) and "KILLED" not in render_status_of(tmp_path)
    finally:
        writer.close()
    assert not writer_alive(tmp_path / f"{rid}.jsonl")
    (run,), _, _ = collect_runs(tmp_path)
    assert run.killed and not run.running and run.measured == 1
    assert "KILLED" in render_status_of(tmp_path) and "RUNNING" not in render_status_of(tmp_path)


def test_a_torn_last_line_of_a_killed_run_is_not_counted(tmp_path: Path) -> None:
    """A kill mid-write leaves a torn last line: the complete lines are counted, the torn one is not."""
    rid = "20210301T060000Z_webconnectivity_KZ_9198_0000000000000000"
    golden = (ROOT / "tests" / "data" / "records-0.1.0.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / f"{rid}.jsonl").write_text(golden[0] + "\n" + golden[1] + "\n" + golden[2][:50], encoding="utf-8")
    (run,), bad, _ = collect_runs(tmp_path)
    assert run.killed and run.interrupted and run.measured == 2 and sum(run.counts.values()) == 2 and not bad
    assert run.start is not None and run.start.startswith("2021-03-01T06:00")


async def test_a_killed_offline_run_is_listed_offline(loopback_config, capsys: pytest.CaptureFixture[str]) -> None:
    """Break test F8: a killed run whose every record was ``vantage.offline`` was listed "offline: no".
    A real offline run (its DoH control on a closed loopback port), then its summary removed: what a
    SIGKILL before the summary leaves (every measurement line is fsynced as it is written)."""
    cfg = loopback_config["write"](doh_url=f"https://{loopback_config['closed']}/dns-query")
    out = loopback_config["tmp"] / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "run", "--config", str(cfg), "--targets", str(loopback_config["targets"]),
        "--out", str(out), "-q", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 120) == 75
    (jsonl,) = out.glob("*.jsonl")
    recs = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(recs) == 5 and {r["test_keys"]["x_rule"] for r in recs} == {"vantage.offline"}
    jsonl.with_suffix(".summary.json").unlink()

    (run,) = collect_runs(out)[0]
    assert run.killed and run.vantage_offline and run.intercepted_by is None
    assert main(["list", "--dir", str(out)]) == 0
    (row,) = [ln for ln in capsys.readouterr().out.splitlines() if jsonl.stem in ln]
    assert "5/?" in row and "OFFLINE" in row and "inconclusive: 5" in row and "KILLED" in row
    assert main(["list", "--dir", str(out), "--json"]) == 0
    (j,) = json.loads(capsys.readouterr().out)["runs"]
    assert j["killed"] and j["vantage_offline"] is True

    # one record judged online: the run was not offline throughout, as its summary would say of it
    online = dict(recs[0], test_keys={**recs[0]["test_keys"], "x_rule": "dns.consistent",
                                      "x_vantage": {**recs[0]["test_keys"]["x_vantage"], "offline": False}})
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in [online, *recs[1:]]))
    (run,) = collect_runs(out)[0]
    assert run.killed and not run.vantage_offline

