"""The runner in-process: one bad input never ends the run; deadlines keep evidence;
a broken local resolver is not reported as DNS blocking."""

from __future__ import annotations

import dataclasses
from datetime import UTC

import probe.runner as runner_mod
from probe.config import load_settings
from probe.targets import targets_from_urls
from tests.conftest import read_jsonl

URLS = [f"https://site{i}.example.org/" for i in range(5)]


def _settings(loopback_config, **changes):
    s = load_settings(config_path=loopback_config["write"](), env={})
    return dataclasses.replace(s, **changes)


async def test_an_internal_error_in_one_input_gives_one_inconclusive_record(loopback_config, monkeypatch) -> None:
    real_judge = runner_mod.judge

    def judge(obs, **kw):
        if obs.target.domain == "site2.example.org":
            raise RuntimeError("boom")
        return real_judge(obs, **kw)

    monkeypatch.setattr(runner_mod, "judge", judge)
    out = loopback_config["tmp"] / "out"
    summary = await runner_mod.run(targets_from_urls(URLS), _settings(loopback_config), out_dir=out)
    recs = {r["input"]: r["test_keys"] for r in read_jsonl(summary.path)}
    assert len(recs) == 5 and summary.measured == 5
    bad = recs["https://site2.example.org/"]
    assert (bad["blocking"], bad["x_rule"]) == (None, "internal_error") and "boom" in bad["x_reason"]
    assert bad["queries"], "what was observed before the error is kept"
    assert all(recs[u]["blocking"] is False for u in URLS if "site2" not in u)


async def _past_its_deadline(loopback_config, tcp_listener) -> dict:
    """The one record of a run whose site never answers the TLS handshake (measurement deadline 1 s)."""
    silent = await tcp_listener("silent")
    s = _settings(loopback_config)
    s = dataclasses.replace(s, connect_to={**s.connect_to, "192.0.2.10:443": silent.endpoint},
                            timeouts=dataclasses.replace(s.timeouts, tls_s=5.0, measurement_s=1.0))
    summary = await runner_mod.run(targets_from_urls(URLS[:1]), s, out_dir=loopback_config["tmp"] / "o")
    (rec,) = list(read_jsonl(summary.path))
    return rec


async def test_measurement_deadline_keeps_the_steps_observed_before_it(loopback_config, tcp_listener) -> None:
    rec = await _past_its_deadline(loopback_config, tcp_listener)
    tk = rec["test_keys"]
    assert (tk["blocking"], tk["x_rule"]) == (None, "deadline")
    assert "endpoints step" in tk["x_reason"]
    assert tk["queries"] and tk["x_doh_queries"], "DNS observed before the deadline is kept"
    assert {"dns_consistency", "x_measurement_uid", "control_failure"} <= tk.keys() | rec.keys()


async def test_deadline_on_an_offline_vantage_says_offline_first(loopback_config, tcp_listener, monkeypatch) -> None:
    """Past its deadline on an offline vantage, the reason is the vantage, not the deadline (break test, 14)."""
    from datetime import datetime

    from probe.health import HealthReport

    async def offline(*_a, **_k) -> HealthReport:
        return HealthReport(checked_at=datetime.now(UTC), canaries=(), online=False,
                            control_intercepted_by=None, ipv6_usable=None)

    monkeypatch.setattr(runner_mod, "check_vantage", offline)
    tk = (await _past_its_deadline(loopback_config, tcp_listener))["test_keys"]
    assert (tk["blocking"], tk["x_rule"]) == (None, "vantage.offline")
    assert tk["x_reason"].startswith("vantage offline") and "deadline (1 s) exceeded" in tk["x_reason"]
    assert tk["queries"], "what was observed before the deadline is kept"


def _disk_full_after_two_lines(monkeypatch, fill=None) -> None:
    """The run's writer fails with ENOSPC once two lines are on disk: raised here, or, with ``fill``,
    by the real write after ``fill()`` has filled the filesystem.

    Counted in lines, whatever the writer thread's batches hold: a batch may carry several lines even at
    concurrency 1 (the slot is freed before the record is written). Counting lines per batch made a test
    fail under load (CI, stop 18: the batch [site1, site2] failed whole, so only site0 was on disk)."""
    import errno

    from probe.store import JSONLWriter

    real_write = JSONLWriter._write_lines

    def write(self, lines):
        room = max(0, 2 - self.lines_written)
        if room:
            real_write(self, lines[:room])
        if len(lines) > room:
            if fill is None:
                raise OSError(errno.ENOSPC, "No space left on device")
            fill()
            real_write(self, lines[room:])

    monkeypatch.setattr(JSONLWriter, "_write_lines", write)


async def test_a_full_disk_mid_run_stops_with_the_oserror_and_keeps_what_was_written(loopback_config,
                                                                                       monkeypatch) -> None:
    """ENOSPC while writing: the run stops with that OSError (the CLI exits 74), not an
    ExceptionGroup traceback; lines already written stay whole (break test, finding 4)."""
    import errno
    import json

    import pytest

    _disk_full_after_two_lines(monkeypatch)
    out = loopback_config["tmp"] / "o"
    with pytest.raises(OSError) as err:
        await runner_mod.run(targets_from_urls(URLS), _settings(loopback_config, run_concurrency=1), out_dir=out)
    assert err.value.errno == errno.ENOSPC
    (jsonl,) = out.glob("*.jsonl")
    assert [r["input"] for r in read_jsonl(jsonl)] == URLS[:2]
    summary = json.loads(jsonl.with_suffix(".summary.json").read_text())
    assert summary["measured"] == 2 and "No space left" in summary["io_error"]


async def test_broken_local_resolver_is_not_dns_blocking(loopback_config) -> None:
    s = _settings(loopback_config, dns_udp_resolvers=(loopback_config["closed"],))
    summary = await runner_mod.run(targets_from_urls(URLS[:2]), s, out_dir=loopback_config["tmp"] / "o")
    assert summary.health_before is not None and summary.health_before.resolver_failure
    recs = list(read_jsonl(summary.path))
    assert [r["test_keys"]["x_rule"] for r in recs] == ["vantage.resolver_broken"] * 2
    assert all(r["test_keys"]["blocking"] is None for r in recs)


async def test_resolver_that_works_for_the_canary_keeps_dns_verdicts(loopback_config) -> None:
    s = _settings(loopback_config)
    summary = await runner_mod.run(targets_from_urls(["https://nxdomain-here.example.org/"]), s,
                                   out_dir=loopback_config["tmp"] / "o")
    assert summary.health_before.resolver_failure is None
    (rec,) = list(read_jsonl(summary.path))
    # unknown to the ISP resolver (no reply: timeout), NXDOMAIN at the control: down, not blocked
    assert (rec["test_keys"]["blocking"], rec["test_keys"]["x_rule"]) == (False, "dns.both_fail")



def _traced_observe(monkeypatch, events: list[tuple[str, str]]):
    """Wrap the runner's observe: log (start|released|end, domain) in order."""
    real = runner_mod.observe

    async def observe(target, ctx, clock, partial=None, release=None):
        events.append(("start", target.domain))

        def rel() -> None:
            events.append(("released", target.domain))
            assert release is not None
            release()

        obs = await real(target, ctx, clock, partial, release=rel if release is not None else None)
        events.append(("end", target.domain))
        return obs

    monkeypatch.setattr(runner_mod, "observe", observe)


def _slow_window(loopback_config, listen_s: float, **changes):
    s = _settings(loopback_config, **changes)
    return dataclasses.replace(s, timeouts=dataclasses.replace(s.timeouts, dns_listen_s=listen_s, dns_s=listen_s))


async def test_the_listening_window_does_not_hold_the_concurrency_slot(loopback_config, monkeypatch) -> None:
    """Issue 13: at concurrency 1, the next input starts while the previous one only waits for its
    DNS listening window; each record still waits for its window (the replies' listen time)."""
    events: list[tuple[str, str]] = []
    _traced_observe(monkeypatch, events)
    s = _slow_window(loopback_config, 1.0, run_concurrency=1)
    summary = await runner_mod.run(targets_from_urls(URLS[:3]), s, out_dir=loopback_config["tmp"] / "w")
    recs = list(read_jsonl(summary.path))
    assert summary.measured == 3 and all(r["test_keys"]["blocking"] is False for r in recs)
    order = [e for e in events if e[0] != "released"]
    # with the slot held until the verdict this was start0 end0 start1 end1 start2 end2
    assert order.index(("start", "site1.example.org")) < order.index(("end", "site0.example.org")), events
    assert order.index(("start", "site2.example.org")) < order.index(("end", "site1.example.org")), events
    assert all(r["test_keys"]["queries"] for r in recs)


async def test_measurements_in_flight_stay_bounded(loopback_config, monkeypatch) -> None:
    events: list[tuple[str, str]] = []
    _traced_observe(monkeypatch, events)
    monkeypatch.setattr(runner_mod, "max_in_flight", lambda concurrency, udp: 2)
    s = _slow_window(loopback_config, 0.5, run_concurrency=1)
    summary = await runner_mod.run(targets_from_urls(URLS), s, out_dir=loopback_config["tmp"] / "b")
    assert summary.measured == 5
    live = peak = 0
    for kind, _ in events:
        live += {"start": 1, "end": -1}.get(kind, 0)
        peak = max(peak, live)
    assert peak == 2, events


def test_max_in_flight_fits_the_file_descriptor_limit(monkeypatch) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda which, v: (_ for _ in ()).throw(ValueError("no")))
    n = runner_mod.max_in_flight(64, 1)
    assert 64 <= n < 8 * 64 and 256 + 16 * 64 + 2 * n <= 1024 or n == 64
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1 << 20, 1 << 20))
    assert runner_mod.max_in_flight(64, 1) == 8 * 64


async def test_an_interrupted_run_keeps_the_measurements_waiting_for_their_window(loopback_config,
                                                                                  monkeypatch) -> None:
    """A measurement whose own steps are done but whose window is still open when the run is
    cancelled (SIGTERM) is written, judged on what it had, the reason saying so."""
    import asyncio

    events: list[tuple[str, str]] = []
    _traced_observe(monkeypatch, events)
    s = _slow_window(loopback_config, 5.0, run_concurrency=2)
    out = loopback_config["tmp"] / "i"
    task = asyncio.create_task(runner_mod.run(targets_from_urls(URLS[:2]), s, out_dir=out))
    for _ in range(2000):
        if sum(e[0] == "released" for e in events) == 2:
            break
        await asyncio.sleep(0.005)
    assert sum(e[0] == "released" for e in events) == 2, events
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    (jsonl,) = out.glob("*.jsonl")
    recs = list(read_jsonl(jsonl))
    assert len(recs) == 2
    for r in recs:
        tk = r["test_keys"]
        assert "run interrupted" in tk["x_reason"] and "DNS listening window" in tk["x_reason"]
        assert tk["blocking"] is False and tk["queries"]
    import json

    summary = json.loads(jsonl.with_suffix(".summary.json").read_text())
    assert summary["measured"] == 2 and summary["interrupted"]


async def test_a_run_installs_the_small_tls_read_buffers_at_its_start(loopback_config, monkeypatch) -> None:
    """probe.measure.tls no longer patches asyncio at import: the run's set-up asks for it, once per run."""
    calls: list[int] = []
    monkeypatch.setattr(runner_mod, "install_tls_read_buffers", lambda: calls.append(1) or True)
    summary = await runner_mod.run(targets_from_urls(URLS[:1]), _settings(loopback_config),
                                   out_dir=loopback_config["tmp"] / "out")
    assert summary.measured == 1 and calls == [1]


def _list_and_status(out):
    from probe.browse import render_runs
    from probe.status import UnitState, collect, collect_runs, render

    runs, bad, _ = collect_runs(out)
    return runs, render_runs(runs, bad), render(collect(out, units=UnitState(available=False, reason="tests")))


async def test_list_and_status_say_a_run_stopped_by_a_full_disk(loopback_config, monkeypatch) -> None:
    """A run stopped by ENOSPC (exit 74) was listed as "KILLED: no summary", or as a plain run when its
    summary was written (break test 24, #7): ``list`` and ``status`` say why it stopped, from the
    summary's ``io_error``."""
    import pytest

    _disk_full_after_two_lines(monkeypatch)
    out = loopback_config["tmp"] / "o"
    with pytest.raises(OSError):
        await runner_mod.run(targets_from_urls(URLS), _settings(loopback_config, run_concurrency=1), out_dir=out)
    runs, listed, status = _list_and_status(out)
    assert len(runs) == 1 and runs[0].measured == 2 and "No space left" in (runs[0].io_error or "")
    for text in (listed, status):
        assert "stopped: disk full (ENOSPC, errno 28)" in text and "KILLED" not in text, text


def test_stop_text_names_the_error() -> None:
    from probe.status import stop_text

    assert stop_text("OSError: [Errno 28] No space left on device") == "stopped: disk full (ENOSPC, errno 28)"
    assert stop_text("OSError: [Errno 122] Disk quota exceeded") == "stopped: disk full (EDQUOT, errno 122)"
    assert stop_text("OSError: [Errno 5] Input/output error") == "stopped: I/O error (EIO, errno 5)"
    assert stop_text("OSError: odd") == "stopped: I/O error: OSError: odd"


async def test_a_run_that_fills_a_real_disk_still_writes_its_summary(loopback_config, monkeypatch) -> None:
    """On a real full filesystem (a 256 KiB tmpfs, filled to the last byte after two lines) the summary
    is still written, into the room reserved when the run began (probe.runner._reserve_summary), and
    ``list`` says the run stopped on a full disk. Before, the summary could not be written and the run
    was listed as KILLED (break test 24, #7: a 64 KiB tmpfs). Needs root (mount); CI runs as root."""
    import errno
    import os
    import shutil
    import subprocess

    import pytest

    mnt = loopback_config["tmp"] / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        if os.environ.get("KZPROBE_REQUIRE_LAB") == "1":
            pytest.fail("KZPROBE_REQUIRE_LAB=1 but a tmpfs cannot be mounted (needs root)")
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "kzprobe-test", str(mnt)], check=True)
    try:
        def fill() -> None:
            with open(mnt / "filler", "ab", buffering=0) as fh:
                try:
                    while True:
                        fh.write(b"x" * 512)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

        _disk_full_after_two_lines(monkeypatch, fill)
        with pytest.raises(OSError) as err:
            await runner_mod.run(targets_from_urls(URLS), _settings(loopback_config, run_concurrency=1),
                                 out_dir=mnt / "run")
        assert err.value.errno == errno.ENOSPC
        (summary,) = (mnt / "run").glob("*.summary.json")
        assert "No space left" in summary.read_text() and not list((mnt / "run").glob("*.tmp"))
        runs, listed, status = _list_and_status(mnt / "run")
        assert runs[0].measured == 2 and not runs[0].killed
        assert "stopped: disk full (ENOSPC, errno 28)" in listed and "KILLED" not in listed, listed
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


async def test_the_summary_counts_a_verdict_for_every_line_a_full_disk_left(loopback_config, monkeypatch) -> None:
    """Re-check 24 N4: after a full disk the summary said ``measured 4`` but counted 3 verdicts, all 4 lines
    complete. Cause: a batch failing with ENOSPC fails its measurement, the run's task group cancels the
    others, but the lines they had queued are still written (by the writer thread, then close()): on disk
    and in ``measured`` (lines_written), never counted (their tasks were cancelled before account()).
    Here the first batch that has lines queued behind it fails (the stub waits for them, up to 5 s), so
    every line on disk is one queued by a measurement the failure cancelled."""
    import errno
    import json
    import time

    import pytest

    from probe.store import JSONLWriter

    real_write = JSONLWriter._write_lines
    failed: list[int] = []

    def write(self, lines):
        if not failed:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with self._cond:
                    if self._pending:
                        break
                time.sleep(0.01)
            with self._cond:
                behind = bool(self._pending)
            if behind:
                failed.append(len(lines))
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, lines)

    monkeypatch.setattr(JSONLWriter, "_write_lines", write)
    out = loopback_config["tmp"] / "o"
    urls = [f"https://site{i}.example.org/" for i in range(12)]
    with pytest.raises(OSError):
        await runner_mod.run(targets_from_urls(urls), _settings(loopback_config, run_concurrency=len(urls)),
                             out_dir=out)
    (jsonl,) = out.glob("*.jsonl")
    on_disk = len(list(read_jsonl(jsonl)))
    summary = json.loads(jsonl.with_suffix(".summary.json").read_text())
    assert failed and on_disk >= 1 and summary["measured"] == on_disk  # lines written after the failure
    assert sum(summary["counts"].values()) == on_disk, (summary["counts"], on_disk)  # was {} for 1-11 lines
