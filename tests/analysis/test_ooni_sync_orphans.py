"""A SIGKILL of ``kzprobe ooni sync`` takes its fork server and worker processes with it (break test F3:
they were re-parented to PID 1 and ran on, 158–183 MB each, 25 minutes later)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from tests.fixtures.ooni_bucket import FakeS3


class HangingS3(FakeS3):
    """A GET of a key in ``hang`` waits until ``release`` is set, then answers 503: the sync waits in its
    fetch phase as long as the test needs."""

    hang: set[str] = set()
    release = False

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["key"] in self.hang:
            while not self.release:
                await asyncio.sleep(0.1)
            return web.Response(status=503, text="SlowDown")
        return await super()._get(request)


def _descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (through /proc's parent links)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _good(i: int) -> bytes:
    return json.dumps({"test_name": "web_connectivity", "probe_cc": "KZ", "input": f"http://a{i}.example/",
                       "report_id": f"r{i}", "measurement_start_time": "2021-01-01 00:00:00"}).encode() + b"\n"


def test_sigkill_of_the_sync_takes_its_processes_with_it(tmp_path: Path) -> None:
    def key(h: int, n: int) -> str:
        return f"raw/20210101/{h:02d}/KZ/webconnectivity/20210101{h:02d}_KZ_webconnectivity.n0.{n}.jsonl.gz"

    # 64 objects (a batch: a worker judges them, the manifest records them), then one that hangs
    objects = {key(0, n): gzip.compress(_good(n), mtime=0) for n in range(64)} | {key(1, 0): b"x"}
    with HangingS3(objects) as s3:
        s3.hang = {key(1, 0)}
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe.cli", "ooni", "sync", "--cc", "KZ", "--since", "2021-01-01",
             "--until", "2021-01-01", "--out", str(tmp_path / "o"), "--endpoint-url", s3.endpoint,
             "--margin-before", "0", "--margin-after", "0", "--workers", "2", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            kids: set[int] = set()
            deadline = time.monotonic() + 90
            # the fork server and a worker (the manifest holds the first batch once a worker judged it)
            while time.monotonic() < deadline and proc.poll() is None:
                kids = _descendants(proc.pid)
                if len(kids) >= 2 and (tmp_path / "o" / "manifest.jsonl").exists():
                    break
                time.sleep(0.2)
            assert proc.poll() is None, "the sync ended before the test could kill it"
            assert len(kids) >= 2, kids
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_alive(k) for k in kids):
                time.sleep(0.1)
            left = [k for k in kids if _alive(k)]
        finally:
            s3.release = True
            if proc.poll() is None:
                proc.kill()
            for k in _descendants(proc.pid) | kids:  # only this test's own processes
                if _alive(k):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(k, signal.SIGKILL)
    assert left == [], f"still running 5 s after the sync's SIGKILL: {left}"


class SlowListS3(FakeS3):
    """Every listing answers after 0.2 s (empty): a long period takes minutes to list."""

    async def _list(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return await super()._list(request)


def test_sigterm_during_the_listing_of_a_long_period_stops_the_sync(tmp_path: Path) -> None:
    """F5: a sync of a very wide period listed every day and prefix at once and ignored SIGTERM/SIGINT. Now
    a SIGTERM during the listing of 2013–2020 (about 3,000 upload days) stops it within a few seconds, exit
    130, saying so."""
    with SlowListS3({}) as s3:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe.cli", "ooni", "sync", "--cc", "KZ", "--since", "2013-01-01",
             "--until", "2020-12-31", "--out", str(tmp_path / "o"), "--endpoint-url", s3.endpoint,
             "--workers", "0", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and sum(1 for x in s3.log if x.startswith("LIST")) < 20:
                time.sleep(0.1)
            assert proc.poll() is None
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert took < 5, took
    assert b"interrupted" in err
