"""Signals and summaries (issue 11, 6): the summary is written and fsynced on any number of
signals, its counts equal the lines of the file, and the process exits 130.

Measured before the fix: two SIGTERMs 0-30 ms apart lost the summary 3 times in 30 (the
second cancellation landed in ``await sess.close()`` before the summary was written); an
fsync failure left a line the summary did not count; a signal after the event loop had
closed killed the process with a signal status.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
from pathlib import Path

import pytest

import probe.runner as runner_mod
from probe.config import load_settings
from probe.targets import targets_from_urls
from tests.conftest import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


async def _start(cfg: Path, targets: Path, out: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    env["NO_COLOR"] = "1"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "run", "--config", str(cfg), "--targets", str(targets), "--out", str(out),
        "--concurrency", "4", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _wait_for(path_glob: tuple[Path, str], timeout: float = 30.0) -> Path:
    d, pattern = path_glob
    for _ in range(int(timeout * 100)):
        found = list(d.glob(pattern))
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {pattern} in {d}")


def _check_summary(out: Path) -> dict:
    (jsonl,) = out.glob("*.jsonl")
    summary_path = jsonl.with_suffix(".summary.json")
    assert summary_path.exists(), "the run summary was lost"
    summary = json.loads(summary_path.read_text())
    lines = jsonl.read_bytes().count(b"\n")
    assert summary["measured"] == lines, (summary["measured"], lines)
    assert summary["measured"] + summary["not_measured"] == summary["inputs"]
    assert not list(out.glob("*.tmp")), "a temporary summary was left behind"
    return summary


# the first signal lands at a varied point of the run; the second 0-30 ms after it. SIGHUP (a dropped
# SSH session) killed a run with 129 and no summary (break test): it stops the run as SIGTERM does.
TRIALS = [(first_ms, gap_ms, "SIGTERM") for first_ms in (0, 300) for gap_ms in (0, 2, 5, 10, 20, 30)] + [
    (300, 5, "SIGHUP")]


@pytest.mark.parametrize(("first_ms", "gap_ms", "sig"), TRIALS)
async def test_two_sigterms_keep_the_summary_and_exit_130(loopback_config, first_ms: int, gap_ms: int,
                                                         sig: str) -> None:
    tmp = loopback_config["tmp"]
    cfg = loopback_config["write"]()
    targets = tmp / "slow.txt"  # unknown names: the ISP resolver never answers (1 s DNS timeout)
    targets.write_text("".join(f"https://slow{i}.example.org/\n" for i in range(12))
                       + "".join(f"https://site{i}.example.org/\n" for i in range(5)), encoding="utf-8")
    out = tmp / f"out-{first_ms}-{gap_ms}-{sig}"
    proc = await _start(cfg, targets, out)
    try:
        await _wait_for((out, "*.jsonl"))
        await asyncio.sleep(first_ms / 1000)
        proc.send_signal(getattr(signal, sig))
        await asyncio.sleep(gap_ms / 1000)
        proc.send_signal(getattr(signal, sig))
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "Traceback" not in _without_wakeup_fd_noise(err.decode()), err.decode()[-2000:]
    summary = _check_summary(out)
    assert summary["interrupted"] is True or summary["not_measured"] == 0


def _without_wakeup_fd_noise(err: str) -> str:
    """stderr less CPython's "Exception ignored ... wakeup fd" block: a signal landing while asyncio
    closes its loop's self-pipe (asyncio/unix_events.py ``_sighandler_noop``) makes the interpreter print
    it; the run's outcome (exit 130, the summary) is unaffected. Seen 2 in ~8 runs under load (break
    test, stop 17); left as a known interpreter race, every other traceback still fails the test."""
    out, skip = [], False
    for line in err.splitlines():
        if line.startswith("Exception ignored") and ("wakeup fd" in line or "signal" in line):
            skip = True
            continue
        if skip and (line.startswith((" ", "Traceback")) or "Error" in line.split(":")[0]):
            continue
        skip = False
        out.append(line)
    return "\n".join(out)


async def test_a_signal_storm_keeps_the_summary(loopback_config) -> None:
    """Ten SIGTERMs and SIGINTs in a row, 3 ms apart: one summary, exit 130."""
    tmp = loopback_config["tmp"]
    targets = tmp / "slow.txt"
    targets.write_text("".join(f"https://slow{i}.example.org/\n" for i in range(12)), encoding="utf-8")
    out = tmp / "storm"
    proc = await _start(loopback_config["write"](), targets, out)
    await _wait_for((out, "*.jsonl"))
    await asyncio.sleep(0.2)
    for i in range(10):
        proc.send_signal(signal.SIGTERM if i % 2 == 0 else signal.SIGINT)
        await asyncio.sleep(0.003)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err.decode()[-2000:]
    _check_summary(out)


async def test_an_fsync_failure_leaves_no_uncounted_line(loopback_config, monkeypatch) -> None:
    """EIO from fsync after a line was written: the line is taken back, the summary counts
    exactly the lines in the file, and the run stops with that OSError (exit 74)."""
    real_fsync, failed = os.fsync, []
    durable = [0]  # lines on disk after each good fsync of the JSONL (a batch may hold several lines)

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.suffix == ".jsonl" and not failed and path.read_bytes().count(b"\n") >= 2:
            failed.append(fd)  # the first commit that would make a 2nd line durable fails
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
        if path.suffix == ".jsonl":
            durable.append(path.read_bytes().count(b"\n"))

    monkeypatch.setattr(os, "fsync", fsync)
    s = load_settings(config_path=loopback_config["write"](), env={})
    out = loopback_config["tmp"] / "o"
    with pytest.raises(OSError) as info:
        await runner_mod.run(targets_from_urls([f"https://site{i}.example.org/" for i in range(5)]),
                             s.__class__(**{**s.__dict__, "run_concurrency": 1}), out_dir=out)
    assert info.value.errno == errno.EIO
    summary = _check_summary(out)
    (jsonl,) = out.glob("*.jsonl")
    # what the good fsyncs made durable, and nothing of the failed batch (with the slot released
    # during each DNS window, measurements overlap: a batch can hold several lines)
    assert failed and summary["measured"] == durable[-1] == len(list(read_jsonl(jsonl))) < 5
    assert "Input/output error" in summary["io_error"]


async def test_the_summary_is_fsynced_with_its_directory(loopback_config, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    s = load_settings(config_path=loopback_config["write"](), env={})
    out = loopback_config["tmp"] / "f"
    summary = await runner_mod.run(targets_from_urls(["https://site0.example.org/"]), s, out_dir=out)
    assert any(p.endswith(".summary.tmp") for p in synced), synced
    assert str(summary.summary_path.parent.resolve()) in synced


def test_the_runs_signal_handler_outlives_its_loop() -> None:
    """Closing an asyncio loop restores SIGTERM's *default action* for handlers added with
    ``loop.add_signal_handler``: a second SIGTERM landing while the run shut down killed the
    process with -15 instead of exit 130 (CI of stop 19, the [300-5] trial above). The run's
    handler is a Python-level one: after the loop it raises KeyboardInterrupt (exit 130)."""
    from probe import eventloop

    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    old_hup = signal.getsignal(signal.SIGHUP)
    cancelled: list[bool] = []

    async def main() -> None:
        eventloop.cancel_on_signals()
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # while the task runs: it is cancelled, not killed
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)

    try:
        asyncio.run(main())
        assert cancelled == [True]
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # after the loop closed
            for _ in range(100):  # the handler runs at the next bytecode boundary
                pass
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
        signal.signal(signal.SIGHUP, old_hup)


async def test_a_sigterm_before_the_command_starts_exits_130(tmp_path: Path) -> None:
    """A SIGTERM before a command set up its own handlers (here: while logging is set up, before
    ``run`` reads its config) ends in exit 130 and a message, not a signal status (break test: 143;
    a signal in the same window of a run killed it with -15)."""
    code = ("import os, signal, sys, probe.cli as cli\n"
            "cli._setup_logging = lambda verbose: os.kill(os.getpid(), signal.SIGTERM)\n"
            f"sys.exit(cli.main(['run', '--config', {str(tmp_path / 'none.toml')!r}]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "interrupted" in err.decode()
    assert "Traceback" not in err.decode()


def test_main_called_as_a_function_gives_the_callers_signal_handlers_back(tmp_path: Path) -> None:
    """``main([...])`` in a test process set SIGTERM to raise KeyboardInterrupt and left it so;
    workers forked later inherited it and shrugged off terminate() (CI: the parallel-load Ctrl-C test)."""
    from probe import cli

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert cli.main(["status", "--dir", str(tmp_path)]) in (0, 66, 69, 75)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before



def test_signals_held_hands_the_signal_on_after_the_block() -> None:
    """:func:`probe.eventloop.signals_held` (the lab's teardown): a SIGTERM inside the block runs no
    handler there; the caller's handler gets it once the block is done; an ignored one stays ignored."""
    from probe.eventloop import signals_held

    seen: list[tuple[str, int]] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(("handler", signum))

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # Python handlers run between bytecodes: give it many chances
                pass
            seen.append(("block end", 0))
        assert seen == [("block end", 0), ("handler", signal.SIGTERM)]
        assert signal.getsignal(signal.SIGTERM) is handler
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert len(seen) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)
