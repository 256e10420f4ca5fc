"""The helper under abuse (issue 11 item 5): a slow-client flood on loopback.

Measured before: 1,300 reconnecting slow clients pinned the helper's 1,024 file descriptors,
health checks succeeded 1 in 5, and every refused ``accept()`` logged a traceback (52 MB in
~4 min). Here the real ``kzprobe helper serve`` runs as a process with RLIMIT_NOFILE 1,024 and
1,300 reconnecting slow clients from 11 loopback addresses (one of them far over the per-client
cap) hold half-sent request heads for 20 s, while a health check runs every 0.2 s from 127.0.0.1.
Bounded: 1,300 sockets, 20 s. Nothing leaves the machine. Measured with this very flood against
the helper before these limits: 9 of 13 health checks answered (the others timed out after 3 s),
7,834 tracebacks (3.3 MB of log) in 20 s; with them: 61 of 61, 705 bytes of log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.helper.conns import (
    FD_RESERVE,
    AcceptErrorFilter,
    ConnectionLimiter,
    RateLimitedLog,
    client_key,
)
from probe.helper.server import HelperConfig

HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: helper\r\n"


# --------------------------------------------------------------------------- the accounting


@pytest.mark.parametrize(("addr", "key"), [
    (("192.0.2.7", 5), "192.0.2.7"),
    (("::ffff:192.0.2.7", 5, 0, 0), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 5, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 5, 0, 0), "2001:db8:1:2::/64"),   # the same subscriber's /64: one client
    (("2001:db8:1:3::1", 5, 0, 0), "2001:db8:1:3::/64"),
])
def test_client_key(addr: tuple, key: str) -> None:
    assert client_key(addr) == key


class _Sock:
    def __init__(self) -> None:
        self.shut = False

    def shutdown(self, how: int) -> None:
        self.shut = True


def test_per_client_cap_total_cap_and_fair_share_eviction() -> None:
    lim = ConnectionLimiter(max_connections=6, per_client=4, clock=lambda: 0.0)
    flood = [lim.admit(("10.9.9.9", 1), _Sock()) for _ in range(6)]  # type: ignore[arg-type]
    assert [c is not None for c in flood] == [True] * 4 + [False] * 2 and lim.refused["per_client"] == 2
    b = [lim.admit(("10.8.8.8", 1), _Sock()) for _ in range(2)]  # type: ignore[arg-type]
    assert all(b) and lim.total == 6
    # full: a newcomer evicts the oldest connection of the client holding the most
    health = lim.admit(("10.7.7.7", 1), _Sock())  # type: ignore[arg-type]
    assert health is not None and lim.refused["evicted"] == 1 and flood[0].sock.shut  # type: ignore[union-attr]
    assert lim.total == 6 and len(lim.by_client["10.9.9.9"]) == 3
    # the flooder cannot push anyone out but itself: at 3 vs 2 it may evict its own oldest? no - it is the top
    assert lim.admit(("10.9.9.9", 1), _Sock()) is None and lim.refused["full"] == 1  # type: ignore[arg-type]
    # a closed connection gives its slot back, once
    lim.release(health)
    lim.release(health)
    assert lim.total == 5 and "10.7.7.7" not in lim.by_client


def test_refusals_are_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    lim = ConnectionLimiter(max_connections=2, per_client=1, log_interval_s=10.0, clock=lambda: now[0])
    lim.admit(("10.0.0.1", 1), _Sock())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="kzprobe.helper"):
        for i in range(10_000):
            now[0] = i * 0.001  # 10,000 refusals in 10 s
            lim.admit(("10.0.0.1", 1), _Sock())  # type: ignore[arg-type]
        now[0] = 10.5
        lim.admit(("10.0.0.1", 1), _Sock())  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in x and len(x) < 300 for x in lines), lines
    assert "per client 10000" in lines[1] and "most from 10.0.0.1" in lines[1]


def test_emfile_traceback_becomes_one_rate_limited_line() -> None:
    f = AcceptErrorFilter(interval_s=10.0)
    err = OSError(24, "Too many open files")
    kept = []
    for _ in range(500):
        rec = logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                "socket.accept() out of system resource\nsocket: <...>", None, (OSError, err, None))
        if f.filter(rec):
            kept.append(rec)
    assert len(kept) == 1 and kept[0].exc_info is None and "Too many open files" in kept[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert f.filter(other)


def test_config_limits_are_checked() -> None:
    from probe.helper.auth import HelperConfigError

    for k in ("max_connections", "max_connections_per_client", "header_read_timeout_s"):
        with pytest.raises(HelperConfigError, match=k):
            HelperConfig(tokens=frozenset({"t" * 32}), **{k: 0})


def test_unit_limit_nofile_matches_the_servers_own_limits() -> None:
    """systemd/kzprobe-helper.service's LimitNOFILE is what the default max_connections needs
    (it + FD_RESERVE): the process cannot raise it itself (SystemCallFilter=~@resources)."""
    unit = (Path(__file__).parents[2] / "systemd" / "kzprobe-helper.service").read_text()
    found = re.findall(r"^LimitNOFILE=(\d+)$", unit, re.M)
    assert found == [str(HelperConfig(tokens=frozenset({"t" * 32})).max_connections + FD_RESERVE)]
    assert "~@privileged @resources" in unit


def test_rate_limited_log_flushes_the_rest() -> None:
    now = [0.0]
    lines: list[str] = []

    class L:
        def warning(self, fmt: str, text: str) -> None:
            lines.append(text)

    rl = RateLimitedLog(lambda c, s: f"{c} in {s:.0f} s", 10.0, clock=lambda: now[0], logger=L())  # type: ignore[arg-type]
    rl.count("x")
    now[0] = 1.0
    rl.count("x", 5)
    rl.flush()
    assert lines == ["{'x': 1} in 0 s", "{'x': 5} in 1 s"]


# --------------------------------------------------------------------------- the flood


def _raise_own_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def _start_helper(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    tokens = tmp_path / "tokens"
    tokens.write_text("abuse-test-token-0123456789abcdef\n")
    tokens.chmod(0o600)
    err = tmp_path / "helper.stderr"

    def limit() -> None:  # the issue's setting: 1,024 descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "probe.cli", "helper", "serve", "--listen", "127.0.0.1:0", "--token-file", str(tokens),
         *args],
        stdout=subprocess.PIPE, stderr=err.open("wb"), preexec_fn=limit, env={**os.environ, "NO_COLOR": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if m is None:
        proc.kill()
        pytest.fail(f"helper did not start: {line!r} {err.read_text()[-2000:]}")
    return proc, int(m.group(1)), err


async def _slow_client(port: int, src: str, stop: float, stats: dict[str, list[float]]) -> None:
    """Reconnects for ever; each connection sends half a request head, then a header line a second."""
    while time.monotonic() < stop:
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 3)
        except (TimeoutError, OSError):
            stats["refused"].append(0.0)
            await asyncio.sleep(0.5)
            continue
        t0 = time.monotonic()  # connected: the header timeout runs from here (the helper's accept)
        try:
            writer.write(HEAD)
            while time.monotonic() < stop:
                try:
                    data = await asyncio.wait_for(reader.read(1024), 1.0)
                except TimeoutError:
                    writer.write(b"X-Slow: 1\r\n")  # never the blank line that ends the head
                    continue
                if not data:
                    break
            else:
                continue
            stats["cut"].append(time.monotonic() - t0)
        except OSError:
            stats["cut"].append(time.monotonic() - t0)
        finally:
            writer.close()
        await asyncio.sleep(0.05)


def _health(port: int, stop: float, out: dict[str, list[str]]) -> None:
    """A monitoring check every 0.2 s, from 127.0.0.1, in its own thread with blocking sockets (so
    its latency is the helper's, not the attacking event loop's)."""
    while time.monotonic() < stop:
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: helper\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200") and b'"status": "ok"' in data:
                out["ok"].append(f"{time.monotonic() - t0:.2f}")
            else:
                out["bad"].append(repr(data[:80]))
        except OSError as exc:
            out["bad"].append(f"{type(exc).__name__} after {time.monotonic() - t0:.1f} s")
        time.sleep(0.2)


def test_slow_client_flood_health_keeps_answering_and_the_log_stays_small(tmp_path: Path) -> None:
    header_timeout = 4.0
    _raise_own_fd_limit(4096)
    proc, port, err = _start_helper(tmp_path, "--header-timeout", str(header_timeout))
    try:
        stats: dict[str, list[float]] = {"refused": [], "cut": []}

        checks: dict[str, list[str]] = {"ok": [], "bad": []}

        async def attack() -> None:
            stop = time.monotonic() + 20.0
            # 300 from one address (over its cap of 64), 10 addresses x 100: more than the 1,024 descriptors
            # (the issue's attack), more than the 512 connections RLIMIT_NOFILE 1024 leaves after the reserve,
            # so the total cap and eviction are exercised too
            srcs = ["127.0.0.2"] * 300 + [f"127.0.0.{3 + i % 10}" for i in range(1000)]
            flood = [asyncio.create_task(_slow_client(port, s, stop, stats)) for s in srcs]
            await asyncio.sleep(2.0)  # the flood is in place
            await asyncio.to_thread(_health, port, stop, checks)
            await asyncio.gather(*flood)

        asyncio.run(attack())
        ok, bad, why = len(checks["ok"]), len(checks["bad"]), checks["bad"]
        assert proc.poll() is None, "the helper died"
        # after the flood: still answering
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        proc.wait(10)
    log = err.read_text(errors="replace")
    assert ok >= 30 and bad == 0, (ok, bad, why[:5], checks["ok"], log[-2000:])
    # admitted slow clients are cut at the header timeout (or sooner, when evicted); refused at once
    # (timed by this loaded event loop, which lags: the exact bound is the in-process test's below)
    cuts = sorted(stats["cut"])
    # (a loaded CI machine lagged this loop past 6.3 s for the 95th percentile: the bound here only
    # tells "cut" from "held for the flood's 20 s"; the in-process test below times the cut itself)
    assert cuts and cuts[len(cuts) * 95 // 100] < 3 * header_timeout and cuts[-1] < 4 * header_timeout, cuts[-20:]
    assert len(err.read_bytes()) < 20_000 and "Traceback" not in log, log[-3000:]
    assert "connections refused in the last" in log
    assert "allows 512 connections, not max_connections=3584" in log  # told why fewer than configured


async def test_in_process_helper_cuts_a_slow_head_and_a_slow_tls_handshake(tmp_path: Path) -> None:
    """header_read_timeout_s covers the request head, and the TLS handshake on an HTTPS listener."""
    import trustme

    from probe.helper.server import start

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    helper = await start(HelperConfig(tokens=frozenset({"t" * 32}), listen_port=0, header_read_timeout_s=1.0,
                                      tls_cert=str(tmp_path / "both.pem"), tls_key=str(tmp_path / "both.pem")))
    try:
        port = int(helper.url.rsplit(":", 1)[1])
        for payload in (b"", b"\x16\x03\x01\x00\x05"):  # nothing at all; half a TLS record
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            t0 = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
            assert time.monotonic() - t0 < 3.0
            writer.close()
        assert helper.limiter is not None and helper.limiter.total == 0
    finally:
        await helper.close()
