"""One measured pass, run in a fresh process: ``python -m bench.worker SPEC_JSON``.

SPEC (a JSON string): ``{"kind": "kzprobe" | "aiohttp", "inputs": N, "concurrency": C,
"listen_s": seconds or null (kzprobe's default), "out_dir": path, "world": {...}}``
where ``world`` is what :mod:`bench.__main__` learnt from the server process
(``web_ports``, ``dns_port``, ``doh_port``, ``n_servers``, ``ca_pem``).

* ``kzprobe``: writes a TOML config into ``out_dir``, loads it with
  :func:`probe.config.load_settings` (``env={}``), and calls :func:`probe.runner.run` on
  the N inputs — the same code path as ``kzprobe run``, minus the CLI's table printing.
* ``aiohttp``: the baseline: C workers drain the same N URLs through ONE
  :class:`aiohttp.ClientSession` (TLS verified against the same test CA; a static
  resolver maps each name to its loopback listener, as ``connect_to`` does for the
  probe), reading each body in full.

CPU is ``getrusage(RUSAGE_SELF)`` user+sys around the pass only (imports, target
parsing and the TOML are outside it; the probe's own start-up — trust store, DoH
session, health checks — is inside, as in a real run). The result is one JSON line on
stdout; ``maxrss_kb`` is the process's own peak RSS: ``VmHWM`` of /proc/self/status
(KiB), which starts afresh at exec. ``ru_maxrss`` does not: Linux carries it over
fork/exec, so a worker started by a big parent would report the parent's peak.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.world import PUBLIC_RANGES, logical_ip, site_index, site_url


def _rusage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def peak_rss_kb() -> int:
    """This process's own peak RSS in KiB (VmHWM; ru_maxrss only where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid TOML basic string


def write_config(spec: dict[str, Any]) -> Path:
    """The kzprobe TOML for this pass (kept in out_dir for inspection)."""
    w = spec["world"]
    n = w["n_servers"]
    dns_server, doh_url = f"127.0.0.1:{w['dns_port']}", f"https://127.0.0.1:{w['doh_port']}/dns-query"
    lines = [
        "[run]", f"concurrency = {spec['concurrency']}", "fsync = true",
        'time_budget_s = "none"',  # every input measured (the service's 3 h budget would cut a c=1 pass)
        "",
        "[dns]", "system = false", f"udp_resolvers = [{_toml_str(dns_server)}]",
        f"doh_urls = [{_toml_str(doh_url)}]", "",
        "[tls]", f"extra_anchors = [{_toml_str(w['ca_pem'])}]", "include_mozilla = false", 'policy = "relaxed"', "",
        "[bogons]", f"public = [{', '.join(_toml_str(r) for r in PUBLIC_RANGES)}]", "",
        "[health]", "canaries = []", "ipv6_canaries = []", "",
        # the logical addresses are documentation ranges this machine's own LAN may use (here eth0
        # is 192.0.2.0/24): the probe would rightly refuse them as the vantage's network
        "[localnet]", "os = false", "",
    ]
    if spec.get("listen_s") is not None:
        lines += ["[timeouts]", f"dns_listen_s = {float(spec['listen_s'])!r}", ""]
    lines.append("[connect_to]")
    for k, port in enumerate(w["web_ports"][:n]):
        lines.append(f"{_toml_str(logical_ip(k) + ':443')} = {_toml_str(f'127.0.0.1:{port}')}")
    path = Path(spec["out_dir"]) / "kzprobe.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _complete(rec: dict[str, Any]) -> bool:
    """The measurement did every step and each one worked (a sanity check on the world)."""
    tk = rec["test_keys"]
    reqs = tk.get("requests") or []
    resp = reqs[0].get("response") if reqs else None
    tls = tk.get("tls_handshakes") or []
    return (resp is not None and resp.get("code") == 200 and bool(resp.get("x_title"))
            and bool(tls) and tls[0].get("failure") is None and tls[0].get("x_verification_failure") is None
            and any(q.get("failure") is None for q in tk.get("queries") or [])
            and any(q.get("failure") is None for q in tk.get("x_doh_queries") or []))


async def run_kzprobe(spec: dict[str, Any]) -> dict[str, Any]:
    from probe.config import load_settings
    from probe.runner import run
    from probe.targets import targets_from_urls

    settings = load_settings(config_path=write_config(spec), env={})
    targets = targets_from_urls([site_url(i) for i in range(spec["inputs"])], strict=True)
    complete = 0
    example: dict[str, Any] | None = None
    done_at: list[float] = []  # seconds from the run's start to each record's on_record (written)

    def on_record(rec: dict[str, Any]) -> None:
        nonlocal complete, example
        done_at.append(time.perf_counter() - t0)
        if _complete(rec):
            complete += 1
        elif example is None:
            example = {"input": rec["input"], "x_rule": rec["test_keys"].get("x_rule"),
                       "x_reason": rec["test_keys"].get("x_reason")}

    u0, s0 = _rusage()
    t0 = time.perf_counter()
    summary = await run(targets, settings, out_dir=Path(spec["out_dir"]), on_record=on_record)
    wall = time.perf_counter() - t0
    u1, s1 = _rusage()
    return {"measured": summary.measured, "complete": complete, "wall_s": wall, "cpu_user_s": u1 - u0,
            "cpu_sys_s": s1 - s0, "counts": dict(summary.counts()), "vantage_offline": summary.vantage_offline,
            "listen_s": settings.timeouts.dns_listen_s, "first_incomplete": example,
            "jsonl_bytes": summary.path.stat().st_size if summary.path.exists() else 0,
            **steady_state(done_at, wall)}


def steady_state(done_at: list[float], wall: float) -> dict[str, Any]:
    """The run's phases, from the moments its records were written (``done_at``, seconds from
    the start of :func:`probe.runner.run`):

    * ``first_record_s``: start-up (trust store, health check before, DoH session) + the first
      measurement, its DNS listening window included;
    * ``steady_rate``: records per second between the 10th and the 90th percentile record —
      the pace the run keeps once it is going, the start-up and the last window left out
      (in steady state a record is written each time an input starts, one window later);
    * ``tail_s``: from the last record written to :func:`run`'s return (health check after,
      the summary, closing the sessions).
    """
    n = len(done_at)
    if n < 20:
        return {"first_record_s": done_at[0] if done_at else None, "steady_rate": None,
                "tail_s": wall - done_at[-1] if done_at else None}
    lo, hi = n // 10, (9 * n) // 10
    span = done_at[hi] - done_at[lo]
    return {"first_record_s": done_at[0], "steady_rate": (hi - lo) / span if span > 0 else None,
            "tail_s": wall - done_at[-1]}


async def _udp_query(wire: bytes, addr: tuple[str, int]) -> bytes:
    """One UDP DNS exchange on its own socket (what a stub resolver does)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, _addr: Any) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=addr)
    try:
        transport.sendto(wire)
        return await got
    finally:
        transport.close()


async def _baseline_dns(url: str, session: Any, dns_addr: tuple[str, int], doh_url: str) -> None:
    """The DNS a measurement needs, done plainly: A and AAAA over UDP and over DoH (RFC 8484
    POST on the shared session), each reply parsed with dnspython — the same queries as the probe's."""
    import dns.message

    host = url.split("/")[2]
    wires = [dns.message.make_query(host, qt).to_wire() for qt in ("A", "AAAA")]
    replies = await asyncio.gather(*(_udp_query(w, dns_addr) for w in wires),
                                   *(_doh_post(session, doh_url, w, "application/dns-message") for w in wires))
    for r in replies:
        dns.message.from_wire(r)


async def _doh_post(session: Any, url: str, wire: bytes, ctype: str) -> bytes:
    async with session.post(url, data=wire, headers={"Content-Type": ctype, "Accept": ctype}) as resp:
        return bytes(await resp.read())


async def run_aiohttp(spec: dict[str, Any]) -> dict[str, Any]:
    import ssl

    import aiohttp
    from aiohttp.abc import AbstractResolver, ResolveResult

    w = spec["world"]
    ports, n = w["web_ports"], w["n_servers"]
    with_dns = bool(spec.get("dns"))
    dns_addr = ("127.0.0.1", int(w["dns_port"]))
    doh_url = f"https://127.0.0.1:{w['doh_port']}/dns-query"

    class StaticResolver(AbstractResolver):
        """site{i}.bench.example → its loopback listener (what connect_to does for the probe)."""

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
            i = site_index(host)
            if i is None:
                raise OSError(f"unknown host {host!r}")
            return [{"hostname": host, "host": "127.0.0.1", "port": ports[i % n], "family": socket.AF_INET,
                     "proto": 0, "flags": socket.AI_NUMERICHOST}]

        async def close(self) -> None:
            return None

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=w["ca_pem"])
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(spec["inputs"]):
        queue.put_nowait(site_url(i))
    status: Counter[str] = Counter()

    u0, s0 = _rusage()
    t0 = time.perf_counter()
    connector = aiohttp.TCPConnector(ssl=ctx, resolver=StaticResolver(), limit=max(100, spec["concurrency"]))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while True:
                try:
                    url = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    async with asyncio.timeout(30):
                        if with_dns:
                            await _baseline_dns(url, session, dns_addr, doh_url)
                        async with session.get(url) as resp:
                            body = await resp.read()
                            status[str(resp.status) if body else f"{resp.status}-empty"] += 1
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    status[type(exc).__name__] += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(spec["concurrency"], spec["inputs"])):
                tg.create_task(worker())
    wall = time.perf_counter() - t0
    u1, s1 = _rusage()
    return {"measured": sum(status.values()), "complete": status.get("200", 0), "wall_s": wall,
            "cpu_user_s": u1 - u0, "cpu_sys_s": s1 - s0, "counts": dict(status)}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.worker SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    runner = run_kzprobe if spec["kind"] == "kzprobe" else run_aiohttp
    from probe.eventloop import run as run_loop

    result = run_loop(runner(spec))  # the loop kzprobe run uses (uvloop when installed), for both kinds
    result.update(kind=spec["kind"], inputs=spec["inputs"], concurrency=spec["concurrency"],
                  maxrss_kb=peak_rss_kb())
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
