"""Benchmark of ``kzprobe list RUN`` and ``kzprobe show RUN:N|UID`` on a big killed run.

``python -m bench.browse`` (``--mb 200``; ``--quick`` for 20 MB).

A run's measurements file of ``--mb`` MB is built in a temporary directory: the tests' records
(``tests/data/golden/df000-*.json``, ``tests/data/records-0.1.0.jsonl``, ~12 KB a line) repeated,
each with its own ``x_measurement_uid``, then a torn last line (the run was killed mid-write, no
summary). Each command runs in a fresh process, its output to ``/dev/null``; printed: CPU-s
(user + system, that child's own ``wait4`` usage), wall, peak RSS, and for ``list`` the records a
CPU-second with and without the start-up (``show`` of a one-record run: the imports), beside the
load average. No figure is asserted (docs/speed.md holds them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RID = "20261204T000000Z_webconnectivity_KZ_9198_00000000000000aa"


def build_run(directory: Path, size: int) -> int:
    """``<RID>.jsonl`` of about ``size`` bytes in ``directory`` (and a one-record run beside it in
    ``directory/one``); returns the number of complete records."""
    recs = [json.loads(p.read_text()) for p in sorted((DATA / "golden").glob("df000-*.json"))]
    recs += [json.loads(ln) for ln in (DATA / "records-0.1.0.jsonl").read_text().splitlines()]
    n = written = 0
    line = ""
    with open(directory / f"{RID}.jsonl", "w", encoding="utf-8") as fh:
        while written < size:
            rec = dict(recs[n % len(recs)], x_measurement_uid=f"{n:032x}")
            line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"
            fh.write(line)
            written += len(line.encode())
            n += 1
        fh.write(line[: len(line) // 2])
    (directory / "one").mkdir()
    (directory / "one" / f"{RID}.jsonl").write_text(line, encoding="utf-8")
    return n


def run(argv: list[str]) -> tuple[float, float, int]:
    """``kzprobe ARGV`` in a fresh process: (CPU-s, wall s, peak RSS KiB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    env.update({"KZPROBE_CONFIG": str(DATA / "empty.toml"), "NO_COLOR": "1"})
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "probe", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise SystemExit(f"kzprobe {' '.join(argv)}: exit {proc.returncode}: {err}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.browse", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=200.0, help="size of the run's file (MB, default 200)")
    ap.add_argument("--quick", action="store_true", help="--mb 20")
    args = ap.parse_args(argv)
    size = int((20.0 if args.quick else args.mb) * (1 << 20))
    with tempfile.TemporaryDirectory(prefix="bench-browse-") as tmp:
        d = Path(tmp)
        n = build_run(d, size)
        print(f"run of {(d / f'{RID}.jsonl').stat().st_size / (1 << 20):.0f} MB: {n:,} records + a torn line; "
              f"load average {os.getloadavg()[0]:.2f}")
        floor, _, floor_rss = run(["show", f"{RID}:1", "--dir", str(d / "one")])
        print(f"  start-up (show of a one-record run): {floor:.2f} CPU-s, peak RSS {floor_rss / 1024:.0f} MiB")
        for name, cmd in (("list RUN", ["list", RID]), ("list --json RUN", ["list", "--json", RID]),
                          (f"show RUN:{n}", ["show", f"{RID}:{n}"]), ("show UID", ["show", f"{n // 2:032x}"])):
            cpu, wall, rss = run([*cmd, "--dir", str(d)])
            rate = (f"; {n / cpu:,.0f} records a CPU-second, {n / max(cpu - floor, 1e-3):,.0f} without the start-up"
                    if name.startswith("list") else "")
            print(f"  {name:<16} {cpu:6.2f} CPU-s  {wall:6.2f} s wall  peak RSS {rss / 1024:.0f} MiB{rate}")
        print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
