"""``python -m bench``: run the loopback benchmark and print the figures (see :mod:`bench`)."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: Targets (see the package docstring).
CPU_RATIO_MAX = 2.0
RATE_MIN_C64 = 50.0
RSS_MAX_MB = 120.0


@dataclass
class Pass:
    """One worker pass and its result."""

    label: str
    spec: dict[str, Any]
    result: dict[str, Any]
    server_cpu_s: float | None

    @property
    def n(self) -> int:
        return int(self.spec["inputs"])

    @property
    def rate(self) -> float:
        return self.result["measured"] / self.result["wall_s"] if self.result["wall_s"] > 0 else 0.0

    @property
    def cpu_per(self) -> float:
        """CPU seconds per input (user + sys)."""
        return (self.result["cpu_user_s"] + self.result["cpu_sys_s"]) / max(self.n, 1)

    @property
    def rss_mb(self) -> float:
        return self.result["maxrss_kb"] / 1024


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


def run_pass(label: str, spec: dict[str, Any], server: ServerProcess, timeout_s: float) -> Pass:
    """Run one worker in a fresh process and collect its JSON result."""
    print(f"  … {label}: {spec['inputs']} inputs, concurrency {spec['concurrency']}", flush=True)
    c0 = server.cpu_s()
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
    return Pass(label, spec, result, None if c0 is None or c1 is None else c1 - c0)


# ----------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "target met" if ok else "NOT met"


def report(passes: list[Pass], args: argparse.Namespace, world: dict[str, Any]) -> bool:
    """Print the table and the targets; True when every target is met."""
    print()
    print(f"kzprobe loopback benchmark — {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{world['n_servers']} HTTPS servers (+ UDP DNS, DoH) in a separate process, "
          f"page {args.page_bytes} B, ECDSA P-256 certificates")
    print(f"kzprobe main passes use timeouts.dns_listen_s = {args.listen_s:g} s (default 1.5 s): see the notes.")
    print()
    head = (f"{'pass':<38} {'inputs':>6} {'conc':>4} {'ok':>9} {'wall s':>7} {'per s':>7} "
            f"{'CPU ms/each':>11} {'user/sys ms':>12} {'RSS MB':>7} {'srv CPU ms':>10}")
    print(head)
    print("-" * len(head))
    for p in passes:
        r = p.result
        srv = "" if p.server_cpu_s is None else f"{1000 * p.server_cpu_s / max(p.n, 1):.2f}"
        print(f"{p.label:<38} {p.n:>6} {p.spec['concurrency']:>4} {r['complete']:>4}/{r['measured']:<4} "
              f"{r['wall_s']:>7.2f} {p.rate:>7.1f} {1000 * p.cpu_per:>11.2f} "
              f"{1000 * r['cpu_user_s'] / p.n:>5.2f}/{1000 * r['cpu_sys_s'] / p.n:<6.2f} "
              f"{p.rss_mb:>7.1f} {srv:>10}")
    print("  ok = measurements where every step worked (DNS, DoH, TLS verified, HTTP 200 with a title) / done;")
    print("  CPU ms/each = user+sys CPU of the measuring process per input; srv CPU = the server process's.")
    bad = [p for p in passes if p.result["complete"] != p.result["measured"] or p.result["measured"] != p.n]
    for p in bad:
        extra = p.result.get("first_incomplete")
        print(f"  WARNING {p.label}: {p.result['complete']}/{p.n} complete; counts {p.result['counts']}"
              + (f"; first incomplete: {extra}" if extra else ""))

    by = {(p.spec["kind"], p.spec["concurrency"], p.spec.get("listen_s"), p.n): p for p in passes}
    ok_all = True
    print()
    print("Targets")
    for c in args.concurrency:
        k = by.get(("kzprobe", c, args.listen_s, args.inputs))
        b = by.get(("aiohttp", c, None, args.inputs))
        if k and b and b.cpu_per > 0:
            ratio = k.cpu_per / b.cpu_per
            ok = ratio <= CPU_RATIO_MAX
            ok_all &= ok
            print(f"  CPU per measurement ≤ {CPU_RATIO_MAX:g}× bare GET, concurrency {c:>2}: "
                  f"{1000 * k.cpu_per:.2f} ms / {1000 * b.cpu_per:.2f} ms = {ratio:.2f}×   → {_verdict(ok)}")
    hi = max(args.concurrency)
    k = by.get(("kzprobe", hi, args.listen_s, args.inputs))
    if k:
        ok = k.rate >= RATE_MIN_C64
        ok_all &= ok
        print(f"  ≥ {RATE_MIN_C64:g} measurements/s at concurrency {hi}: {k.rate:.1f}/s   → {_verdict(ok)}")
    rss = by.get(("kzprobe", hi, args.listen_s, args.rss_inputs))
    if rss:
        ok = rss.rss_mb <= RSS_MAX_MB
        ok_all &= ok
        print(f"  peak RSS ≤ {RSS_MAX_MB:g} MB for {args.rss_inputs} inputs (concurrency {hi}, fresh process): "
              f"{rss.rss_mb:.1f} MB   → {_verdict(ok)}")

    print()
    print("Notes")
    print(f"  * dns_listen_s was lowered to {args.listen_s:g} s for the passes above the default-listen one: the")
    print("    real probe keeps listening 1.5 s after the first UDP DNS reply to catch injected replies (FC-07),")
    print("    so each measurement lasts >= 1.5 s of wall time spent waiting, not computing; at concurrency 1 the")
    print("    rate would only measure that timer (500 inputs = 12.5 min).")
    d = by.get(("kzprobe", hi, None, args.inputs))
    if d:
        bound = hi / 1.5
        print(f"  * With the default 1.5 s at concurrency {hi}: {d.rate:.1f} measurements/s "
              f"(upper bound {hi} / 1.5 s = {bound:.1f}/s), {1000 * d.cpu_per:.2f} ms CPU each."
              f" {'Meets' if d.rate >= RATE_MIN_C64 else 'Cannot meet'} the {RATE_MIN_C64:g}/s target at this concurrency;")
        print(f"    {RATE_MIN_C64:g}/s with the default listen window needs concurrency >= {int(RATE_MIN_C64 * 1.5) + 1}"
              " (and the CPU for it).")
    print("  * The baseline does no DNS at all (static resolver) and writes nothing; kzprobe per input does")
    print("    2 UDP + 2 DoH queries, 2 TLS handshakes (raw + HTTP), chain verification, and an fsynced JSONL line.")
    print(f"  * Output JSONL and certificates in a temporary directory{' (kept: ' + str(args.tmp) + ')' if args.keep else ' (removed)'}.")
    return ok_all


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--inputs", type=int, default=500, help="inputs per pass (default 500)")
    ap.add_argument("--rss-inputs", type=int, default=1000,
                    help="inputs of the peak-RSS pass (default 1000; 0 skips it)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64],
                    help="concurrency levels (default 1 64); the highest is used for the rate and RSS targets")
    ap.add_argument("--listen-s", type=float, default=0.05,
                    help="timeouts.dns_listen_s for the main kzprobe passes (default 0.05; kzprobe's default is 1.5)")
    ap.add_argument("--no-default-listen", action="store_true",
                    help="skip the extra pass with kzprobe's default dns_listen_s at the highest concurrency")
    ap.add_argument("--servers", type=int, default=32, help="HTTPS listeners / logical addresses (default 32)")
    ap.add_argument("--page-bytes", type=int, default=10 * 1024, help="size of the served page (default 10240)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (JSONL, configs, certs)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw pass results to FILE")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.inputs < 1 or args.rss_inputs < 0 or not 1 <= args.servers <= 500 or min(args.concurrency) < 1:
        ap.error("bad --inputs/--rss-inputs/--servers/--concurrency")
    args.concurrency = sorted(set(args.concurrency))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    tmpdir = tempfile.mkdtemp(prefix="kzprobe-bench-")
    tmp = args.tmp = Path(tmpdir)
    server: ServerProcess | None = None
    passes: list[Pass] = []
    try:
        ca_pem, chain, key = make_certificates(tmp)
        cfg = tmp / "servers.json"
        cfg.write_text(json.dumps({"cert_chain": str(chain), "key": str(key), "n_servers": args.servers,
                                   "page_bytes": args.page_bytes}))
        print(f"kzprobe bench: starting {args.servers} HTTPS servers + DNS + DoH on 127.0.0.1 (separate process)",
              flush=True)
        server = ServerProcess(cfg)
        world = {**server.ready, "n_servers": args.servers, "ca_pem": str(ca_pem)}

        def spec(kind: str, n: int, c: int, listen: float | None, tag: str) -> dict[str, Any]:
            return {"kind": kind, "inputs": n, "concurrency": c, "listen_s": listen,
                    "out_dir": str(tmp / f"out-{tag}"), "world": world}

        plan: list[tuple[str, dict[str, Any]]] = []
        for c in args.concurrency:
            plan.append(("bare aiohttp GET (baseline)", spec("aiohttp", args.inputs, c, None, f"get-c{c}")))
            plan.append((f"kzprobe web test, listen {args.listen_s:g} s",
                         spec("kzprobe", args.inputs, c, args.listen_s, f"kz-c{c}")))
        hi = max(args.concurrency)
        if args.rss_inputs:
            plan.append((f"kzprobe RSS pass, listen {args.listen_s:g} s",
                         spec("kzprobe", args.rss_inputs, hi, args.listen_s, "kz-rss")))
        if not args.no_default_listen:
            plan.append(("kzprobe web test, listen 1.5 s (dflt)", spec("kzprobe", args.inputs, hi, None, "kz-default")))
        print(f"running {len(plan)} passes, each in a fresh process:", flush=True)
        for label, s in plan:
            passes.append(run_pass(label, s, server, timeout_s=900))
        ok = report(passes, args, world)
        if args.json:
            Path(args.json).write_text(json.dumps([{"label": p.label, "spec": {k: v for k, v in p.spec.items()
                                                                             if k != "world"},
                                                    "result": p.result, "server_cpu_s": p.server_cpu_s}
                                                   for p in passes], indent=1))
        print(f"\nbench took {time.monotonic() - t_start:.0f} s")
        return 1 if (args.check and not ok) else 0
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
