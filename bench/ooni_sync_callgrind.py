"""Instructions a measurement of a sync worker's own work, the judge left out: a load-independent figure.

``python -m bench.ooni_sync_callgrind`` (``-n`` measurements, default 2,000: 24 hourly objects of ~83,
one batch, as :mod:`bench.ooni_sync` lays them out; ``--annotate`` prints callgrind's top functions).

Runs :func:`analysis.ooni_sync.process_objects` (decompress, split lines, JSON decode, filters, keys,
line SHA-256, Arrow table, Parquet parts) over a batch of objects already on disk under valgrind's
callgrind, collecting only inside it (``itertools.starmap``, the C function collection is toggled on),
after a warm-up pass over the same batch; :func:`analysis.load.row` is replaced by the memo of
:mod:`bench.ooni_sync_norow` (a real row a template, a dict copy a measurement), so the figure is the
pipeline's, not the judge's. CPU-time figures on this shared 2-core machine drift ±15 % with its load;
instruction counts do not. Caveat: valgrind does not emulate SHA-NI, so the SHA-256 work (the
line's, ``mkey``'s, the MD5 is not in a worker) runs in OpenSSL's software path under it, a larger
share than on the real CPU (~35 % of a worker's instructions, against 3.8 µs of a ~50 µs measurement
with SHA-NI). Needs ``valgrind``; takes a minute or two.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.ooni_judge import collected

if TYPE_CHECKING:
    from analysis.ooni_bucket import ObjectRef
    from analysis.ooni_sync import SyncConfig


def batch(tmp: Path, n: int) -> tuple[list[tuple[Path, ObjectRef]], SyncConfig]:
    """``n`` measurements in hourly objects of one day (as the sync bench builds them), their refs, a config."""
    from analysis import ooni_bucket as ob
    from analysis.ooni_sync import SyncConfig
    from bench.ooni_sync import build_bucket

    start = dt.date(2021, 1, 1)
    objs = build_bucket(tmp / "bucket", n, start, 1)
    items = []
    for key, path in objs.items():
        ref = ob.parse_key(key, path.stat().st_size, "")
        if ref is None:
            raise SystemExit(f"not a bucket key: {key}")
        items.append((path, ref))
    cfg = SyncConfig(cc="KZ", since=start, until=start, out=tmp / "out")
    return items, cfg


def loop(n: int) -> None:
    """What ``callgrind`` measures: a warm-up pass of ``process_objects`` over the batch, then the same
    batch again (into another store) inside ``itertools.starmap``."""
    import bench.ooni_sync_norow  # noqa: F401 - replaces analysis.load.row by its memo
    from analysis.ooni import warm
    from analysis.ooni_sync import process_objects

    warm()
    with tempfile.TemporaryDirectory(prefix="kzprobe-cg-sync-") as t:
        tmp = Path(t)
        items, cfg = batch(tmp, n)
        process_objects(items, cfg, tmp / "warm")
        for stats in itertools.starmap(process_objects, [(items, cfg, tmp / "store")]):
            if sum(s.written for s in stats) != n:
                raise SystemExit(f"wrote {sum(s.written for s in stats)} of {n} measurements: {stats}")


def instructions(n: int, annotate: bool = False, keep: Path | None = None) -> float | None:
    """Instructions a measurement of :func:`loop`'s measured pass; None without valgrind. ``keep``: where
    to copy callgrind's output file (for ``callgrind_annotate``)."""
    vg = shutil.which("valgrind")
    if vg is None:
        return None
    with tempfile.TemporaryDirectory(prefix="kzprobe-callgrind-") as tmp:
        out = Path(tmp) / "out"
        p = subprocess.run([vg, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=starmap_next",
                            f"--callgrind-out-file={out}", sys.executable, "-m", "bench.ooni_sync_callgrind",
                            "--loop", str(n)], capture_output=True, text=True, check=False,
                           cwd=Path(__file__).resolve().parents[1], env=os.environ)
        if p.returncode != 0:
            raise SystemExit(f"valgrind failed (exit {p.returncode}): {p.stderr[-2000:]}")
        if keep is not None:
            shutil.copyfile(out, keep)
        if annotate:
            a = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True, text=True,
                               check=False)
            lines = [ln for ln in a.stdout.splitlines() if re.match(r"^\s*[0-9,]+ \(", ln)]
            print("\n".join(lines[:60]))
    return collected(p.stderr) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ooni_sync_callgrind", description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="measurements in the batch (default 2,000)")
    ap.add_argument("--annotate", action="store_true", help="print callgrind's top functions (inclusive)")
    ap.add_argument("--keep", type=Path, help="copy callgrind's output file there")
    ap.add_argument("--loop", type=int, help=argparse.SUPPRESS)  # what runs under valgrind
    args = ap.parse_args(argv)
    if args.loop is not None:
        loop(args.loop)
        return 0
    ir = instructions(args.n, args.annotate, args.keep)
    if ir is None:
        print("valgrind not found: this benchmark needs it")
        return 1
    print(f"sync worker without the judge: {ir:,.0f} instructions a measurement (callgrind, process_objects over "
          f"{args.n:,} measurements in hourly objects, after a warm-up pass; no SHA-NI under valgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
