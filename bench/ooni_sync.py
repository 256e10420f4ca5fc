"""Benchmark of ``kzprobe ooni sync``: fetch + re-judge + store throughput from a loopback bucket.

``python -m bench.ooni_sync`` (``make bench``; ``--quick`` for 20,000 measurements, ``-n N``).

What is measured
----------------
A bucket laid out as OONI's ``raw/`` (``raw/<day>/<HH>/KZ/webconnectivity/*.jsonl.gz``, one
object per hour) holding N synthetic measurements shaped like OONI's: the real
web_connectivity measurements of ``shared/data/ooni-samples*`` under 24 KB (versions 0.0.1 …
0.5.x; the few bigger ones — up to 900 KB, bodies of whole pages — would make the bucket tens
of GB), re-labelled as Kazakhstan's (five networks), each with its own report_id and time,
spread over the period's days. It is served over loopback by the test suite's S3 server
(:class:`tests.fixtures.ooni_bucket.FakeS3`) in **another process**, from files on disk.

The sync runs as ``kzprobe ooni sync`` does (:func:`analysis.ooni_sync.sync`: listing,
downloads at concurrency 4, one worker process per CPU judging, Parquet parts, compaction) in
**a fresh process**; its peak RSS and each worker's are read from ``/proc/<pid>/status``
(``VmHWM``) while it runs (``ru_maxrss`` of a forked child starts at its parent's, see
DESIGN.md). Printed beside their targets:

* measurements/s of the whole sync (wall time): target ≥ 20,000 on this 2-core machine;
* peak RSS of the main process and of the largest worker, for the period and for one four
  times as long with the same measurements a day scaled down (the same N spread wider):
  target flat (the longer period within +25 % of the shorter);
* for the breakdown: the re-judging alone (:func:`analysis.load.row` on the same
  measurements, one process), measurements/s per core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RATE_TARGET = 20_000
#: CPU a measurement of everything but the judge, all processes, without the fixed start-up (issue 14 part 7:
#: the 100 µs of 20,000/s on 2 cores, half of it left to analysis.load.row).
NOROW_TARGET_US = 50
RSS_FLAT = 1.25
ASNS = ("AS9198", "AS48716", "AS21299", "AS206026", "AS35104")
TEMPLATE_MAX_BYTES = 24 << 10


def _shared() -> Path:
    return Path(os.environ.get("KZPROBE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def templates(max_bytes: int | None = TEMPLATE_MAX_BYTES) -> list[str]:
    """Real samples under ``max_bytes`` (None: all of them), as JSON text with placeholders."""
    from tests.fixtures.ooni_bucket import real_samples

    out = []
    for m in real_samples(_shared()):
        m = dict(m)
        m["probe_cc"], m["probe_asn"] = "KZ", "@ASN@"
        m["measurement_start_time"] = "@TIME@"
        m["report_id"] = "@RID@"
        m.pop("measurement_uid", None)
        text = json.dumps(m, separators=(",", ":"))
        if max_bytes is None or len(text) <= max_bytes:
            out.append(text)
    if not out:
        raise SystemExit(f"no OONI samples under {_shared()}/data (set KZPROBE_SHARED)")
    return out


def size_mix(tmpl: list[str]) -> str:
    """What the synthetic measurements are: line sizes and the largest response body."""
    sizes = sorted(len(t) for t in tmpl)
    body = 0
    for t in tmpl:
        for r in (json.loads(t).get("test_keys") or {}).get("requests") or ():
            b = (r.get("response") or {}).get("body") if isinstance(r, dict) else None
            n = len(b.get("data") or "") * 3 // 4 if isinstance(b, dict) else len(b or "")
            body = max(body, n)
    return (f"{len(tmpl)} real web_connectivity samples as templates, lines of {sizes[0] / 1024:,.1f}–"
            f"{sizes[-1] / 1024:,.1f} KiB (mean {sum(sizes) / len(sizes) / 1024:,.1f}, median "
            f"{sizes[len(sizes) // 2] / 1024:,.1f}), response bodies up to {body / 1024:,.1f} KiB. "
            "OONI keeps bodies up to 128 KiB (web_connectivity ≤ 0.4: body_is_truncated at 131,072 bytes in "
            "the real samples) and 512 KiB (0.5.x); the 32 real samples have a median line of 13 KiB and a "
            "mean of 125 KiB (their big ones were "
            "chosen for whole pages)")


def build_bucket(root: Path, n: int, start: dt.date, days: int, seed: int = 1,
                 tmpl: list[str] | None = None) -> dict[str, Path]:
    """N measurements in hourly raw/ objects over ``days`` days from ``start``; key → file."""
    rng = random.Random(seed)
    tmpl = tmpl if tmpl is not None else templates()
    objs: dict[str, Path] = {}
    hours = days * 24
    per_hour = [n // hours + (1 if h < n % hours else 0) for h in range(hours)]
    i = 0
    for h, k in enumerate(per_hour):
        if not k:
            continue
        day = start + dt.timedelta(days=h // 24)
        hh = h % 24
        key = f"raw/{day:%Y%m%d}/{hh:02d}/KZ/webconnectivity/{day:%Y%m%d}{hh:02d}_KZ_webconnectivity.n0.0.jsonl.gz"
        lines = []
        for _ in range(k):
            i += 1
            asn = ASNS[rng.randrange(len(ASNS))]
            when = f"{day.isoformat()} {hh:02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
            rid = f"{day:%Y%m%d}T{hh:02d}0000Z_webconnectivity_KZ_{asn[2:]}_n1_{i:016d}"
            lines.append(tmpl[i % len(tmpl)].replace("@ASN@", asn).replace("@TIME@", when).replace("@RID@", rid))
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=5, mtime=0))
        objs[key] = p
    return objs


def _serve(objs: dict[str, Path], port_q: Any, stop: Any) -> None:
    from tests.fixtures.ooni_bucket import FakeS3

    with FakeS3(objs) as s3:  # type: ignore[arg-type]
        port_q.put(s3.port)
        stop.wait()


def _tree(pid: int) -> list[int]:
    out = [pid]
    for p in out:  # grows while walked: children, grandchildren (the forkserver's workers) …
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    out.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sync(endpoint: str, out: Path, since: dt.date, until: dt.date,
             cpu: dict[int, float] | None = None, main_pid: list[int] | None = None,
             judge: bool = True) -> tuple[dict[str, Any], int, int]:
    """The sync in a fresh process; returns (its result, peak RSS of the main process, of the largest
    worker). ``cpu``: filled with each process' CPU seconds (the last reading before it ended).
    ``judge=False``: :mod:`bench.ooni_sync_norow`, the same sync with ``analysis.load.row`` replaced by
    a memo of real rows (what everything but the judge costs)."""
    if judge:
        code = ("import json,sys,datetime as dt,dataclasses;from pathlib import Path;"
                "from analysis.ooni_sync import SyncConfig,sync;"
                f"r=sync(SyncConfig(cc='KZ',since=dt.date.fromisoformat('{since}'),until=dt.date.fromisoformat('{until}'),"
                f"out=Path({str(out)!r}),endpoint={endpoint!r},margin_before=0,margin_after=0,use_cans=False));"
                "print(json.dumps(dataclasses.asdict(r)))")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, str(Path(__file__).with_name("ooni_sync_norow.py")), str(out), endpoint,
               since.isoformat(), until.isoformat()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    if main_pid is not None:
        main_pid.append(proc.pid)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        for p in _tree(proc.pid):
            v = _hwm(p)
            if v:
                peaks[p] = max(peaks.get(p, 0), v)
            c = _cpu(p)
            if c is not None and cpu is not None:
                cpu[p] = max(cpu.get(p, 0.0), c)
        time.sleep(0.2)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"the sync failed (exit {proc.returncode})")
    res = json.loads(stdout.strip().splitlines()[-1])
    main = peaks.get(proc.pid, 0)
    workers = max((v for p, v in peaks.items() if p != proc.pid), default=0)
    return res, main, workers


def fixed_cpu(tmp: Path, start: dt.date, tmpl: list[str], ctx: Any) -> tuple[float, int]:
    """CPU seconds of a sync of a tiny bucket (one measurement an hour for a day): the fixed cost
    every sync pays (interpreters, imports, the fork server and workers), and its measurements."""
    objs = build_bucket(tmp / "bucket-fixed", 24, start, 1, seed=2, tmpl=tmpl)
    q, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(objs, q, stop), daemon=True)
    server.start()
    cpu: dict[int, float] = {}
    try:
        res, _, _ = run_sync(f"http://127.0.0.1:{q.get(timeout=120)}", tmp / "out-fixed", start, start, cpu)
    finally:
        stop.set()
        server.join(10)
    shutil.rmtree(tmp / "bucket-fixed", ignore_errors=True)
    return sum(cpu.values()), int(res["kept"])


def judge_rate(n: int = 400, tmpl: list[str] | None = None) -> tuple[float, dict[str, float]]:
    """Re-judging alone (analysis.load.row on decoded measurements), measurements per CPU-second in
    one process, and where its CPU goes (µs a measurement, the best of three passes): OONI's keys
    parsed into the probe's observation types (``analysis.ooni._observe``), the rule table
    (``probe.verdict.judge``), the rest of the row (quirk rules, OONI's own columns)."""
    from analysis.load import row
    from analysis.ooni import _BOGONS, _observe, warm
    from bench.ooni_judge import best_us, measurements, split_judgeable
    from probe.verdict import judge

    warm()
    ms = measurements(n, tmpl=tmpl)
    judgeable, obs = split_judgeable(ms)

    def best(f: Any) -> float:  # CPU, not wall: the machine's other load does not count
        return best_us(f, n, 3)

    whole = best(lambda: [row(m, "x", i) for i, m in enumerate(ms)])
    parse = best(lambda: [_observe(m) for m in judgeable])
    rules = best(lambda: [judge(o, bogons=_BOGONS) for o in obs])
    parts = {"parse OONI's keys (analysis.ooni._observe)": parse, "rule table (probe.verdict.judge)": rules,
             "the rest of the row": max(whole - parse - rules, 0.0)}
    return 1e6 / max(whole, 1e-9), parts


def stages(objs: dict[str, Path], limit: int = 6000) -> list[tuple[str, float]]:
    """CPU seconds a measurement of each stage of the sync, in this process, on the bucket's first
    objects (up to ``limit`` measurements), the way a worker runs them
    (:func:`analysis.ooni_sync.process_objects`: objects in :func:`~analysis.ooni_sync.batches`,
    each line decompressed, decoded, judged, hashed and then dropped; one Parquet part a day and
    batch), then compaction: what the whole rate is made of. Each stage is timed line by line
    (``time.process_time``, ~1 µs a reading, spread over the stages)."""
    import hashlib

    import msgspec

    from analysis import ooni_bucket as ob
    from analysis.load import row
    from analysis.ooni import warm
    from analysis.ooni_store import compact_day, mkey, store_root, table_from_rows, write_part
    from analysis.ooni_sync import _Inflate, _lines, batches

    warm()
    dec = msgspec.json.Decoder()
    names = ("decompress + split lines", "JSON decode (msgspec)", "re-judge (analysis.load.row)",
             "keys + line SHA-256", "Arrow table + Parquet part", "compaction")
    t = dict.fromkeys(names, 0.0)
    clock = time.process_time
    n = 0
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-stages-"))
    root = store_root(tmp)
    refs = []
    for key, path in objs.items():
        ref = ob.parse_key(key, path.stat().st_size, "")
        if ref is not None:
            refs.append(ref)
    try:
        for b, group in enumerate(batches(refs)):
            if n >= limit:
                break
            by_day: dict[str, tuple[list[Any], list[int], list[str]]] = {}
            for ref in group:
                c = clock()
                with _Inflate(objs[ref.key]) as gz:
                    it = _lines(gz.chunks())
                    while True:
                        got = next(it, None)
                        c1 = clock()
                        t[names[0]] += c1 - c
                        if got is None:
                            break
                        lineno, line = got
                        m = dec.decode(line)
                        c2 = clock()
                        r = row(m, ref.key, lineno)
                        c3 = clock()
                        start = m.get("measurement_start_time")
                        rows, keys, shas = by_day.setdefault(start[:10], ([], [], []))
                        keys.append(mkey(m.get("report_id"), m.get("input"), start))
                        shas.append(hashlib.sha256(bytes(line).rstrip(b"\r\n")).hexdigest())
                        rows.append(r)
                        n += 1
                        c = clock()
                        t[names[1]] += c2 - c1
                        t[names[2]] += c3 - c2
                        t[names[3]] += c - c3
            c = clock()
            for day, (rows, keys, shas) in by_day.items():
                table, _ = table_from_rows(rows, keys, shas)
                write_part(root, dt.date.fromisoformat(day), f"b{b}", table)
            t[names[4]] += clock() - c
        c = clock()
        for d in sorted(root.glob("day=*")):
            compact_day(root, dt.date.fromisoformat(d.name[4:]))
        t[names[5]] += clock() - c
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [(k, v / max(n, 1)) for k, v in t.items()]


def library_floor(objs: dict[str, Path], limit: int = 6000, repeat: int = 5) -> list[tuple[str, float]]:
    """CPU seconds a measurement of the steps of the sync that are calls into compiled libraries only,
    on the bucket's first objects (up to ``limit`` measurements), each step over all of them at once
    (best of ``repeat``; no clock reading per line): inflating each object with the inflater the sync
    uses (ISA-L when installed, else zlib), splitting it in lines (``bytes.split``), decoding each line
    (msgspec) and hashing it (SHA-256). No code of ours runs in these loops: their sum is what any
    Python re-judging sync of these objects pays before its first line of parsing or judging, the floor
    under the throughput target's CPU budget."""
    import hashlib

    import msgspec

    from analysis.ooni_sync import _zlib

    blobs: list[bytes] = []
    texts: list[bytes] = []
    n = 0
    for path in objs.values():
        if n >= limit:
            break
        blobs.append(path.read_bytes())
        texts.append(_zlib.decompress(blobs[-1], 31))
        n += texts[-1].count(b"\n")
    dec = msgspec.json.Decoder()
    lines = [line for t in texts for line in t.split(b"\n") if line]
    steps = (
        (f"inflate ({getattr(_zlib, '__name__', 'zlib')})", lambda: [_zlib.decompress(b, 31) for b in blobs]),
        ("split lines (bytes.split)", lambda: [t.split(b"\n") for t in texts]),
        ("JSON decode (msgspec)", lambda: [dec.decode(line) for line in lines]),
        ("line SHA-256 (hashlib)", lambda: [hashlib.sha256(line).hexdigest() for line in lines]),
    )
    out = []
    for name, step in steps:
        best = float("inf")
        for _ in range(repeat):
            c = time.process_time()
            step()
            best = min(best, time.process_time() - c)
        out.append((name, best / max(len(lines), 1)))
    return out


def _mark(ok: bool) -> str:
    return "target met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ooni_sync", description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="measurements in the bucket (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="20,000 measurements")
    ap.add_argument("--days", type=int, default=10, help="days of the short period (the long one is 4×)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--all-sizes", action="store_true",
                    help="every real sample as a template, the big pages too (up to 930 KB a line; mind the disk)")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else args.n
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-ooni-"))
    ctx = multiprocessing.get_context("spawn")
    ok_all = True
    tmpl = templates(None if args.all_sizes else TEMPLATE_MAX_BYTES)
    cores = len(os.sched_getaffinity(0))
    print(f"synthetic measurements: {size_mix(tmpl)}", flush=True)
    try:
        start = dt.date(2021, 1, 1)
        figures = []
        stage_figures: list[tuple[str, float]] = []
        floor_figures: list[tuple[str, float]] = []
        cpu: dict[int, float] = {}
        norow_cpu: dict[int, float] = {}
        main_pid: list[int] = []
        server_cpu = 0.0
        fixed, fixed_n = fixed_cpu(tmp, start, tmpl, ctx)
        print(f"fixed cost of a sync (start-up, imports, the worker processes; {fixed_n} measurements): "
              f"{fixed:,.1f} s of CPU", flush=True)
        for days in (args.days, args.days * 4):
            t = time.perf_counter()
            objs = build_bucket(tmp / f"bucket-{days}", n, start, days, tmpl=tmpl)
            size = sum(p.stat().st_size for p in objs.values())
            print(f"bucket: {n:,} measurements in {len(objs):,} objects over {days} days, "
                  f"{size / 1e6:,.1f} MB gzipped (built in {time.perf_counter() - t:,.1f} s)", flush=True)
            q, stop = ctx.Queue(), ctx.Event()
            server = ctx.Process(target=_serve, args=(objs, q, stop), daemon=True)
            server.start()
            try:
                port = q.get(timeout=120)
                server_before = _cpu(server.pid or 0) or 0.0
                t = time.perf_counter()
                res, rss_main, rss_worker = run_sync(f"http://127.0.0.1:{port}", tmp / f"out-{days}", start,
                                                     start + dt.timedelta(days=days - 1), cpu if not figures else None,
                                                     main_pid)
                wall = time.perf_counter() - t
                if not figures:
                    server_cpu = (_cpu(server.pid or 0) or 0.0) - server_before
                    run_sync(f"http://127.0.0.1:{port}", tmp / "out-norow", start, start + dt.timedelta(days=days - 1),
                             norow_cpu, judge=False)
            finally:
                stop.set()
                server.join(10)
            figures.append((days, res, wall, rss_main, rss_worker))
            if not stage_figures:
                stage_figures = stages(objs)
                floor_figures = library_floor(objs)
            shutil.rmtree(tmp / f"bucket-{days}", ignore_errors=True)
        print()
        days, res, wall, rss_main, rss_worker = figures[0]
        rate = res["kept"] / wall if wall else 0.0
        ok = rate >= RATE_TARGET
        ok_all &= ok
        print(f"sync + re-judge + store: {res['kept']:,} measurements in {wall:,.1f} s = {rate:,.0f} measurements/s"
              f"   (target ≥ {RATE_TARGET:,}: {_mark(ok)})")
        used = sum(cpu.values())
        if used and res["kept"]:
            per = used / res["kept"]
            print(f"  CPU of the sync's processes: {used:,.1f} s = {per * 1e6:,.0f} µs a measurement; they got "
                  f"{used / wall / cores:.0%} of the {cores} cores (the rest went to other processes) → "
                  f"on {cores} idle cores ≈ {cores / per:,.0f} measurements/s (target ≥ {RATE_TARGET:,}: "
                  f"{_mark(cores / per >= RATE_TARGET)})")
            main_cpu = cpu.get(main_pid[0], 0.0) if main_pid else 0.0
            print(f"  of which the main process (listing, downloads, MD5, manifest, compaction, start-up) "
                  f"{main_cpu:,.1f} s, the workers {used - main_cpu:,.1f} s; the loopback bucket server (another "
                  f"process, not counted above) {server_cpu:,.1f} s = {server_cpu / wall / cores:.1%} of the "
                  f"{cores} cores, {server_cpu / res['kept'] * 1e6:,.0f} µs a measurement")
            if res["kept"] > fixed_n and used > fixed:
                steady = (used - fixed) / (res["kept"] - fixed_n)
                print(f"  without the fixed {fixed:,.1f} s (what a 1M-measurement sync pays per measurement): "
                      f"{steady * 1e6:,.0f} µs a measurement → on {cores} idle cores ≈ {cores / steady:,.0f} "
                      f"measurements/s (target ≥ {RATE_TARGET:,}: {_mark(cores / steady >= RATE_TARGET)})")
        norow = sum(norow_cpu.values())
        if norow and res["kept"] > fixed_n and norow > fixed:
            steady = (norow - fixed) / (res["kept"] - fixed_n)
            print(f"  everything except the judge (the same sync, analysis.load.row replaced by a memo of real rows, "
                  f"bench/ooni_sync_norow.py), all processes: {norow:,.1f} s = {norow / res['kept'] * 1e6:,.0f} µs a "
                  f"measurement; without the fixed {fixed:,.1f} s {steady * 1e6:,.0f} µs "
                  f"(target ≤ {NOROW_TARGET_US} µs: {_mark(steady * 1e6 <= NOROW_TARGET_US)})")
        total = sum(v for _, v in stage_figures)
        budget = cores / RATE_TARGET
        print(f"  where the CPU goes, a measurement (one process; the target needs ≤ {budget * 1e6:,.0f} µs in all "
              f"with {cores} cores):")
        for name, v in stage_figures:
            print(f"    {name:<32} {v * 1e6:8,.0f} µs  {v / total if total else 0:5.0%}")
        print(f"    {'all stages':<32} {total * 1e6:8,.0f} µs  → bound ≈ {cores / total if total else 0:,.0f} "
              f"measurements/s on {cores} idle cores")
        floor = sum(v for _, v in floor_figures)
        print(f"  the floor: the steps that only call compiled libraries, each over all the lines at once (one "
              f"process, best of 5): {floor * 1e6:,.0f} µs a measurement = {floor / budget if budget else 0:.0%} of "
              f"the {budget * 1e6:,.0f} µs budget, before any parsing, judging or storing:")
        for name, v in floor_figures:
            print(f"    {name:<32} {v * 1e6:8,.1f} µs")
        j, parts = judge_rate(tmpl=tmpl)
        print(f"  of which re-judging alone (analysis.load.row, one process, CPU time): {j:,.0f} measurements/s "
              f"per core (≈ {j * cores:,.0f}/s on {cores} cores):")
        for name, v in parts.items():
            print(f"    {name:<44} {v:8,.0f} µs")
        for d, r, w, m, wk in figures:
            print(f"peak RSS, {d} days: main process {m / 2**20:,.0f} MiB, largest worker {wk / 2**20:,.0f} MiB "
                  f"({r['kept']:,} kept, {w:,.1f} s)")
        (_, _, _, m1, w1), (_, _, _, m2, w2) = figures
        ok = m2 <= m1 * RSS_FLAT and w2 <= w1 * RSS_FLAT
        ok_all &= ok
        print(f"  RSS flat in the period's length ({args.days} → {args.days * 4} days; target ≤ +{RSS_FLAT - 1:.0%}): "
              f"{_mark(ok)}")
        print(f"\nall targets met: {'yes' if ok_all else 'no'}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 1 if args.check and not ok_all else 0


if __name__ == "__main__":
    sys.exit(main())
