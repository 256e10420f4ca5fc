"""``python -m bench``: run the loopback benchmark and print the figures (see :mod:`bench`)."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: Targets: issue 13's table (see the package docstring).
CPU_RATIO_MAX = 2.0   # probe CPU per input ≤ 2× a baseline doing the same GET and the same DNS queries
CPU_MS_MAX = 5.0      # … and ≤ 5 ms per input, concurrency 64
RATE_MIN_C64 = 150.0  # ≥ 150 measurements/s on loopback at concurrency 64 with the SHIPPED defaults
RSS_MAX_MB = 90.0     # peak RSS (the process's own, VmHWM) for 1,000 inputs


@dataclass
class Run:
    """One worker process's result."""

    result: dict[str, Any]
    server_cpu_s: float | None
    load1: float = 0.0  # the machine's 1-minute load average when the run started

    @property
    def cpu_s(self) -> float:
        return self.result["cpu_user_s"] + self.result["cpu_sys_s"]


@dataclass
class Pass:
    """One planned pass, run ``len(runs)`` times; figures are medians over the runs."""

    label: str
    spec: dict[str, Any]
    repeats: int = 1
    runs: list[Run] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.spec["inputs"])

    def _median_run(self) -> Run:
        """The run with the median CPU (the table's row comes from one coherent run)."""
        ordered = sorted(self.runs, key=lambda r: r.cpu_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def result(self) -> dict[str, Any]:
        return self._median_run().result

    @property
    def server_cpu_s(self) -> float | None:
        return self._median_run().server_cpu_s

    @property
    def rate(self) -> float:
        """Measurements per second (median over the runs)."""
        return statistics.median(r.result["measured"] / r.result["wall_s"] for r in self.runs)

    def _median_of(self, key: str) -> float | None:
        vals = [r.result[key] for r in self.runs if r.result.get(key) is not None]
        return statistics.median(vals) if vals else None

    @property
    def steady_rate(self) -> float | None:
        """Records per second between the 10th and 90th percentile record (median over the runs):
        the run's pace once going, start-up and the last listening window left out."""
        return self._median_of("steady_rate")

    @property
    def first_record_s(self) -> float | None:
        return self._median_of("first_record_s")

    @property
    def tail_s(self) -> float | None:
        return self._median_of("tail_s")

    @property
    def load(self) -> str:
        """The 1-minute load average when each run started (min–max)."""
        la = [r.load1 for r in self.runs]
        return f"{min(la):.1f}" if min(la) == max(la) else f"{min(la):.1f}–{max(la):.1f}"

    @property
    def cpu_per(self) -> float:
        """CPU seconds per input, user + sys (median over the runs)."""
        return statistics.median(r.cpu_s for r in self.runs) / max(self.n, 1)

    @property
    def cpu_range_ms(self) -> str:
        if len(self.runs) < 2:
            return ""
        per = [1000 * r.cpu_s / max(self.n, 1) for r in self.runs]
        return f"{min(per):.2f}–{max(per):.2f}"

    @property
    def rss_mb(self) -> float:
        return max(r.result["maxrss_kb"] for r in self.runs) / 1024


# ----------------------------------------------------------------------------- the world


def make_certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """(CA PEM, leaf chain PEM, leaf key PEM) from a fresh trustme CA."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("*.bench.example", "127.0.0.1", "localhost")
    ca_pem, chain, key = tmp / "ca.pem", tmp / "leaf-chain.pem", tmp / "leaf-key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    chain.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return ca_pem, chain, key


class ServerProcess:
    """``python -m bench.servers`` as a child; stops when we close its stdin."""

    def __init__(self, config_path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.servers", str(config_path)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=30):
                self.stop()
                raise RuntimeError("the server process did not start within 30 s")
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the server process exited (status {self.proc.poll()})")
        self.ready: dict[str, Any] = json.loads(line)

    def cpu_s(self) -> float | None:
        """User+sys CPU seconds of the server process so far (Linux /proc), None elsewhere."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # EOF: the servers shut down cleanly
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def run_once(label: str, spec: dict[str, Any], server: ServerProcess, timeout_s: float, quiet: bool = False) -> Run:
    """Run one worker in a fresh process and collect its JSON result."""
    if not quiet:
        print(f"  … {label}: {spec['inputs']} inputs, concurrency {spec['concurrency']}", flush=True)
    c0 = server.cpu_s()
    load1 = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(spec)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    c1 = server.cpu_s()
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"{label}: worker exited with status {done.returncode}")
    if done.stderr.strip():
        lines = done.stderr.strip().splitlines()
        print(f"    worker stderr ({len(lines)} lines), first: {lines[0][:160]}", flush=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(result, None if c0 is None or c1 is None else c1 - c0, load1)


# ----------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "target met" if ok else "NOT met"


def report(passes: list[Pass], args: argparse.Namespace, world: dict[str, Any]) -> bool:
    """Print the table and the targets; True when every target is met."""
    print()
    print(f"kzprobe loopback benchmark — {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"{world['n_servers']} HTTPS servers + UDP DNS + DoH in a separate process;")
    print(f"page {args.page_bytes} B with a <title>, ECDSA P-256 certificates, server ALPN {args.server_alpn}; "
          f"kzprobe's JSONL fsynced under {args.tmp.parent}")
    print(f"kzprobe's main passes run with timeouts.dns_listen_s = {args.listen_s:g} s instead of the default 1.5 s"
          " (see the notes).")
    print()
    head = (f"{'pass':<38} {'inputs':>6} {'conc':>4} {'runs':>4} {'ok':>9} {'wall s':>7} {'per s':>7} "
            f"{'CPU ms/each':>11} {'(range)':>13} {'user/sys ms':>12} {'RSS MB':>7} {'srv CPU ms':>10} {'load':>9}")
    print(head)
    print("-" * len(head))
    for p in passes:
        r = p.result
        srv = "" if p.server_cpu_s is None else f"{1000 * p.server_cpu_s / max(p.n, 1):.2f}"
        print(f"{p.label:<38} {p.n:>6} {p.spec['concurrency']:>4} {len(p.runs):>4} "
              f"{r['complete']:>4}/{r['measured']:<4} {r['wall_s']:>7.2f} {p.rate:>7.1f} {1000 * p.cpu_per:>11.2f} "
              f"{p.cpu_range_ms:>13} {1000 * r['cpu_user_s'] / p.n:>5.2f}/{1000 * r['cpu_sys_s'] / p.n:<6.2f} "
              f"{p.rss_mb:>7.1f} {srv:>10} {p.load:>9}")
    print("  ok = inputs where every step worked (UDP DNS, DoH, TLS verified, HTTP 200 with a title) / inputs done.")
    print("  CPU ms/each = user+sys CPU of the measuring process per input (median of the runs; range = min–max);")
    print("  wall s and user/sys come from the median-CPU run; RSS = the worker's own VmHWM (largest run); srv CPU = the server")
    print("  process's CPU per input, from /proc (10 ms ticks); load = the machine's 1-min load average as each run")
    print("  started.")
    for p in passes:
        for run in p.runs:
            r = run.result
            if r["complete"] != r["measured"] or r["measured"] != p.n:
                extra = r.get("first_incomplete")
                print(f"  WARNING {p.label}: {r['complete']}/{p.n} complete; counts {r['counts']}"
                      + (f"; first incomplete: {extra}" if extra else ""))

    by = {(p.spec["kind"], p.spec["concurrency"], p.spec.get("listen_s"), p.n): p for p in passes}
    hi = max(args.concurrency)
    ok_all = True
    print()
    print("Targets (issue 13; medians of interleaved runs)")

    def line(text: str, ok: bool) -> None:
        nonlocal ok_all
        ok_all &= ok
        print(f"  {text:<100} → {_verdict(ok)}")

    for c in args.concurrency:
        k = by.get(("kzprobe", c, args.listen_s, args.inputs))
        b = by.get(("aiohttp", c, None, args.inputs))
        if k and b and b.cpu_per > 0:
            ratio = k.cpu_per / b.cpu_per
            line(f"CPU per input ≤ {CPU_RATIO_MAX:g}× GET+same DNS baseline, concurrency {c:>2}: "
                 f"{1000 * k.cpu_per:.2f} ms / {1000 * b.cpu_per:.2f} ms = {ratio:.2f}×", ratio <= CPU_RATIO_MAX)
    k = by.get(("kzprobe", hi, args.listen_s, args.inputs))
    if k:
        line(f"CPU per input ≤ {CPU_MS_MAX:g} ms, concurrency {hi}: {1000 * k.cpu_per:.2f} ms",
             1000 * k.cpu_per <= CPU_MS_MAX)
    d = by.get(("kzprobe", hi, None, args.rate_inputs))
    if d:
        listen = d.result.get("listen_s", 1.5)
        steady = d.steady_rate or 0.0
        line(f"≥ {RATE_MIN_C64:g} measurements/s steady state, concurrency {hi}, shipped defaults (dns_listen_s "
             f"{listen:g} s), {d.n} inputs: {steady:.1f}/s", steady >= RATE_MIN_C64)
        line(f"≥ {RATE_MIN_C64:g} measurements/s end to end (inputs ÷ wall of run(), start-up and the last window "
             f"in), same pass: {d.rate:.1f}/s", d.rate >= RATE_MIN_C64)
        busy = statistics.median(r.cpu_s / r.result["wall_s"] for r in d.runs)
        print(f"    (that pass: first record {d.first_record_s or 0:.2f} s after the start — start-up + one measurement"
              f" + its {listen:g} s window —; last record → run() returned {d.tail_s or 0:.2f} s;")
        print(f"     the probe was on a CPU {100 * busy:.0f} % of its wall time, {1000 * d.cpu_per:.2f} ms CPU per "
              f"input: {1 / d.cpu_per:.0f}/s if it had one core to itself; load average {d.load} at its runs' start)")
    else:
        print(f"  ≥ {RATE_MIN_C64:g} measurements/s with shipped defaults: NOT measured (--no-default-listen)")
        ok_all = False
    rss = by.get(("kzprobe", hi, args.listen_s, args.rss_inputs))
    if rss:
        line(f"peak RSS ≤ {RSS_MAX_MB:g} MB for {args.rss_inputs} inputs (concurrency {hi}, own VmHWM): "
             f"{rss.rss_mb:.1f} MB", rss.rss_mb <= RSS_MAX_MB)
    print("  (critical path ÷ dig+curl loop, lab wall ÷ RTT bound and lab RSS: python -m bench.lab;"
          " analysis load: python -m bench.analysis)")

    print()
    print("Notes")
    print(f"  * dns_listen_s was lowered to {args.listen_s:g} s in every kzprobe pass but the \"1.5 s (dflt)\" one: a"
          " run waits once for its")
    print(f"    last window, and at {args.inputs} inputs a 1.5 s tail would weigh on the wall time; CPU per measurement"
          " hardly depends on it (dflt row).")
    print("  * The rate with the shipped defaults (dns_listen_s 1.5 s): the listening window runs beside the")
    print("    measurement and off its concurrency slot (docs/speed.md), so it adds no wall time to an input; a run")
    print("    still waits once, at its end, for its last inputs' windows, and once at its start (health check, the")
    print("    first window). Steady state = records per second between the 10th and the 90th percentile record of")
    print("    the", end="")
    print(f" {args.rate_inputs}-input pass (the pace once going); end to end = inputs ÷ the wall time of run().")
    print("    Both are wall-clock figures: on a machine shared with other work they measure the probe's share of")
    print("    the CPU (load average shown) as much as the probe.")
    st = by.get(("kzprobe", 1, args.listen_s, 1))
    if st:
        print(f"  * One-time cost of a run (process start excluded): the 1-input pass took {1000 * st.cpu_per:.0f} ms"
              f" CPU (fingerprint databases,")
        print(f"    trust store, DoH session, health check, one measurement); spread over {args.inputs} inputs "
              f"that is ~{1000 * st.cpu_per / args.inputs:.2f} ms each.")
    print("  * The baseline does the same DNS (A+AAAA over UDP and DoH, replies parsed) and the GET, writes nothing;"
          " per input kzprobe does 2 UDP + 2 DoH")
    print("    queries, 1 TLS handshake (chain captured, then the GET over that connection; 2 when the server")
    print("    picks h2: --server-alpn), chain verification, MITM and")
    print("    blockpage checks, a verdict, and one fsynced JSONL line.")
    print("  * The baseline's RSS is its pool of idle keep-alive connections (one per host name, each with asyncio's")
    print("    256 KiB TLS read buffer); kzprobe closes its connections after each measurement (32 KiB buffers).")
    print(f"  * Temporary directory {'kept: ' + str(args.tmp) if args.keep else 'removed at exit'}.")
    return ok_all


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--inputs", type=int, default=500, help="inputs per pass (default 500)")
    ap.add_argument("--rate-inputs", type=int, default=3000,
                    help="inputs of the rate pass with the shipped defaults (default 3000: long enough that the "
                         "run's one start-up and one last listening window weigh little end to end)")
    ap.add_argument("--rss-inputs", type=int, default=1000,
                    help="inputs of the peak-RSS pass (default 1000; 0 skips it)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64],
                    help="concurrency levels (default 1 64); the highest is used for the rate and RSS targets")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each short pass (the baselines and kzprobe above concurrency 1); medians are "
                         "reported (default 3)")
    ap.add_argument("--listen-s", type=float, default=0.05,
                    help="timeouts.dns_listen_s for the main kzprobe passes (default 0.05; kzprobe's default is 1.5)")
    ap.add_argument("--no-default-listen", action="store_true",
                    help="skip the extra pass with kzprobe's default dns_listen_s at the highest concurrency")
    ap.add_argument("--servers", type=int, default=32, help="HTTPS listeners / logical addresses (default 32)")
    ap.add_argument("--page-bytes", type=int, default=10 * 1024, help="size of the served page (default 10240)")
    ap.add_argument("--server-alpn", default="http/1.1", choices=("http/1.1", "h2,http/1.1"),
                    help="ALPN the servers select from (default http/1.1). 'h2,http/1.1': they pick h2 when "
                         "offered, as most real sites do, so kzprobe's GET cannot reuse the handshake's "
                         "connection and dials a second one (docs/speed.md, the h2 trade-off)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (JSONL, configs, certs)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results of every run to FILE")
    ap.add_argument("--check", action="store_true", default=True, help="exit 1 when a target is missed (default)")
    ap.add_argument("--no-check", dest="check", action="store_false", help="exit 0 even when a target is missed")
    args = ap.parse_args(argv)
    if (args.inputs < 1 or args.rate_inputs < 1 or args.rss_inputs < 0 or not 1 <= args.servers <= 500
            or min(args.concurrency) < 1
            or args.repeat < 1 or args.listen_s <= 0 or args.page_bytes < 512):
        ap.error("bad --inputs/--rate-inputs/--rss-inputs/--servers/--concurrency/--repeat/--listen-s/--page-bytes")
    args.concurrency = sorted(set(args.concurrency))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    tmpdir = tempfile.mkdtemp(prefix="kzprobe-bench-")
    tmp = args.tmp = Path(tmpdir)
    server: ServerProcess | None = None
    try:
        ca_pem, chain, key = make_certificates(tmp)
        cfg = tmp / "servers.json"
        cfg.write_text(json.dumps({"cert_chain": str(chain), "key": str(key), "n_servers": args.servers,
                                   "page_bytes": args.page_bytes, "alpn": args.server_alpn.split(",")}))
        print(f"kzprobe bench: starting {args.servers} HTTPS servers + DNS + DoH on 127.0.0.1 (separate process)",
              flush=True)
        server = ServerProcess(cfg)
        world = {**server.ready, "n_servers": args.servers, "ca_pem": str(ca_pem)}
        seq = iter(range(1_000_000))

        def spec(kind: str, n: int, c: int, listen: float | None) -> dict[str, Any]:
            return {"kind": kind, "inputs": n, "concurrency": c, "listen_s": listen,
                    "out_dir": str(tmp / f"out-{next(seq):03d}-{kind}-c{c}"), "world": world}

        hi = max(args.concurrency)
        passes: list[Pass] = []
        for c in args.concurrency:
            base = {**spec("aiohttp", args.inputs, c, None), "dns": True}
            passes.append(Pass("baseline: aiohttp GET + same DNS", base, args.repeat))
            passes.append(Pass(f"kzprobe web test, listen {args.listen_s:g} s",
                               spec("kzprobe", args.inputs, c, args.listen_s), args.repeat if c > 1 else 1))
        passes.append(Pass("kzprobe start-up + 1 input", spec("kzprobe", 1, 1, args.listen_s), args.repeat))
        if args.rss_inputs:
            passes.append(Pass(f"kzprobe RSS pass, listen {args.listen_s:g} s",
                               spec("kzprobe", args.rss_inputs, hi, args.listen_s)))
        if not args.no_default_listen:
            passes.append(Pass("kzprobe web test, listen 1.5 s (dflt)", spec("kzprobe", args.rate_inputs, hi, None),
                               args.repeat))

        print("warming up the servers (not measured)", flush=True)
        run_once("warm-up", spec("aiohttp", 200, 8, None), server, timeout_s=300, quiet=True)
        run_once("warm-up", spec("kzprobe", 50, 8, args.listen_s), server, timeout_s=300, quiet=True)
        print(f"running {sum(p.repeats for p in passes)} passes, each in a fresh process:", flush=True)
        # Interleaved rounds, so that drift (CPU frequency, page cache) spreads over every pass.
        for rnd in range(max(p.repeats for p in passes)):
            for p in passes:
                if rnd < p.repeats:
                    s = {**p.spec, "out_dir": f"{p.spec['out_dir']}-run{rnd}"}
                    label = p.label + (f" [run {rnd + 1}/{p.repeats}]" if p.repeats > 1 else "")
                    p.runs.append(run_once(label, s, server, timeout_s=900))
        ok = report(passes, args, world)
        if args.json:
            Path(args.json).write_text(json.dumps(
                [{"label": p.label, "spec": {k: v for k, v in p.spec.items() if k != "world"},
                  "runs": [{"result": r.result, "server_cpu_s": r.server_cpu_s} for r in p.runs]} for p in passes],
                indent=1))
        print(f"\nbench took {time.monotonic() - t_start:.0f} s")
        return 1 if (args.check and not ok) else 0
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
