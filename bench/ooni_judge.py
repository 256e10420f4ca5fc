"""Micro-benchmark of the OONI judge: µs of CPU a measurement per stage, on real samples.

``python -m bench.ooni_judge`` (``--all-sizes``: every real sample, the whole-page ones too;
``-n N`` measurements a pass, ``--repeat R`` passes, the best kept).

The measurements are the real web_connectivity samples of ``shared/data/ooni-samples*`` that
:mod:`bench.ooni_sync` uses as templates (under 24 KB unless ``--all-sizes``), each copy given
its own report_id, already decoded from JSON (decoding is the pipeline's stage, not the judge's).
Each copy is a fresh dict (``json.loads`` of its text), so nothing the judge caches on a dict's
identity can help; memoised pure functions of small strings (URL normalisation, certificate
chains) do help, as they would on OONI's real data where inputs and chains recur.

Stages (CPU time, ``time.process_time``; the machine's other load does not count):

* ``_observe``: OONI's keys → the probe's observation types (``analysis.ooni._observe``);
* ``judge``: the rule table (``probe.verdict.judge``) on those observations;
* ``recompute``: the whole re-judging (``analysis.ooni.recompute``: the two above and the
  version-quirk rules);
* ``row``: the frame row (``analysis.load.row``: recompute and OONI's own columns).

Target for the judge's part (issue 14 part 7, the lane ooni-judge): ``row`` ≤ 50 µs a measurement
on the bench's mix.

``--instructions``: instructions executed a ``row`` instead (valgrind's callgrind, collecting only
inside ``itertools.starmap(row, …)`` after a warm-up pass; ``-n`` rows, default 400), a figure the
machine's load does not move: CPU-time A/B runs drift ±15 % at load 8 on 2 cores, which hides a 5–10 %
change. Needs ``valgrind``; takes minutes (the interpreter runs ~50× slower under it).
``--instructions --stage judge``: instructions of ``probe.verdict.judge(obs, details=False)`` alone (the
rule table, as :func:`analysis.ooni.recompute` calls it), on the observations of the same rows, built
before collection starts (fresh ones: nothing a warm-up judge cached on them is reused); printed a
judged observation and a row (over every row, judgeable or not, to compare with the row's figure).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROW_TARGET_US = 50.0


def measurements(n: int, all_sizes: bool = False, tmpl: list[str] | None = None) -> list[dict[str, Any]]:
    """``n`` decoded copies of the templates (``tmpl``, default the real samples), each its own report_id."""
    from bench.ooni_sync import TEMPLATE_MAX_BYTES, templates

    tmpl = tmpl if tmpl is not None else templates(None if all_sizes else TEMPLATE_MAX_BYTES)
    return [json.loads(tmpl[i % len(tmpl)].replace("@ASN@", "AS9198").replace("@TIME@", "2021-01-01 00:00:00")
                       .replace("@RID@", f"r{i}")) for i in range(n)]


def best_us(f: Any, n: int, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.process_time()
        f()
        out.append(time.process_time() - t)
    return min(out) / n * 1e6


def split_judgeable(ms: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The measurements the web rules judge, and their observations (``analysis.ooni._observe``)."""
    from analysis.ooni import NotJudgeable, _observe

    judgeable, obs = [], []
    for m in ms:
        try:
            obs.append(_observe(m)[0])
            judgeable.append(m)
        except NotJudgeable:
            continue
    return judgeable, obs


def stages(n: int = 2000, repeat: int = 5, all_sizes: bool = False) -> dict[str, float]:
    """µs of CPU a measurement of each stage (the best of ``repeat`` passes over ``n`` measurements)."""
    from analysis.load import row
    from analysis.ooni import _BOGONS, _observe, recompute, warm
    from probe.verdict import judge

    warm()
    ms = measurements(n, all_sizes)
    judgeable, obs = split_judgeable(ms)
    for i, m in enumerate(ms):  # warm the memoised pure functions once
        row(m, "x", i)
    return {
        "_observe": best_us(lambda: [_observe(m) for m in judgeable], n, repeat),
        "judge": best_us(lambda: [judge(o, bogons=_BOGONS) for o in obs], n, repeat),
        "recompute": best_us(lambda: [recompute(m) for m in ms], n, repeat),
        "row": best_us(lambda: [row(m, "x", i) for i, m in enumerate(ms)], n, repeat),
    }


def loop(n: int) -> None:
    """What ``--instructions`` measures: ``row`` over ``n`` copies through ``itertools.starmap`` (the C
    function callgrind toggles collection on), after a warm-up pass over the same copies."""
    from analysis.load import row
    from analysis.ooni import warm

    warm()
    ms = measurements(n)
    args = [(m, "x", i) for i, m in enumerate(ms)]
    for a in args:
        row(*a)
    for _ in itertools.starmap(row, args):
        pass


def loop_judge(n: int) -> int:
    """What ``--instructions --stage judge`` measures: ``judge(obs, details=False)`` through
    ``itertools.starmap`` on the observations of ``n`` copies, after a warm-up pass on other observations
    of the same copies. Returns the number of observations judged."""
    from functools import partial

    from analysis.ooni import _BOGONS, warm
    from probe.verdict import judge

    warm()
    ms = measurements(n)
    f = partial(judge, bogons=_BOGONS, details=False)
    for o in split_judgeable(ms)[1]:
        f(o)
    args = [(o,) for o in split_judgeable(ms)[1]]
    for _ in itertools.starmap(f, args):
        pass
    return len(args)


_COLLECTED = re.compile(r"^==\d+== Collected : (\d+)\s*$", re.M)


def collected(stderr: str) -> int:
    """The instructions callgrind collected, from its report on stderr ("==PID== Collected : N")."""
    m = _COLLECTED.search(stderr)
    if m is None:
        raise ValueError("no 'Collected' line in valgrind's output")
    return int(m.group(1))


def instructions(n: int, stage: str = "row") -> tuple[float, int] | None:
    """(instructions executed a row, rows or observations run) under callgrind: :func:`loop` (``stage="row"``)
    or :func:`loop_judge` (``"judge"``: the judge alone, its figure still divided by the ``n`` rows);
    None without valgrind."""
    vg = shutil.which("valgrind")
    if vg is None:
        return None
    with tempfile.TemporaryDirectory(prefix="kzprobe-callgrind-") as tmp:
        p = subprocess.run([vg, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=starmap_next",
                            f"--callgrind-out-file={Path(tmp) / 'out'}", sys.executable, "-m", "bench.ooni_judge",
                            "--loop" if stage == "row" else "--loop-judge", str(n)], capture_output=True, text=True,
                           check=False, cwd=Path(__file__).resolve().parents[1], env=os.environ)
    if p.returncode != 0:
        raise SystemExit(f"valgrind failed (exit {p.returncode}): {p.stderr[-2000:]}")
    ran = int(p.stdout.split()[-1]) if stage == "judge" else n
    return collected(p.stderr) / n, ran


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ooni_judge", description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--all-sizes", action="store_true")
    ap.add_argument("--instructions", action="store_true",
                    help="instructions a row under valgrind's callgrind (-n rows, default 400)")
    ap.add_argument("--stage", choices=("row", "judge"), default="row",
                    help="with --instructions: the whole row (default) or probe.verdict.judge alone")
    ap.add_argument("--loop", type=int, help=argparse.SUPPRESS)  # what --instructions runs under valgrind
    ap.add_argument("--loop-judge", type=int, help=argparse.SUPPRESS)  # the same, --stage judge
    args = ap.parse_args(argv)
    if args.loop is not None:
        loop(args.loop)
        return 0
    if args.loop_judge is not None:
        print(f"judged {loop_judge(args.loop_judge)}")
        return 0
    if args.instructions:
        n = args.n if "-n" in (argv if argv is not None else sys.argv) else 400
        got = instructions(n, args.stage)
        if got is None:
            print("valgrind not found: --instructions needs it")
            return 1
        ir, ran = got
        if args.stage == "judge":
            if ran == 0:  # nothing judged: no figure a judged observation
                print(f"no judgeable row among the {n:,} copies")
                return 1
            print(f"OONI judge: {ir:,.0f} instructions of probe.verdict.judge a row, {ir * n / ran:,.0f} a judged "
                  f"observation (callgrind, {n:,} real-sample copies, {ran:,} judgeable, after a warm-up pass)")
            return 0
        print(f"OONI judge: {ir:,.0f} instructions a row (callgrind, {n:,} real-sample copies, after a warm-up pass)")
        return 0
    s = stages(args.n, args.repeat, args.all_sizes)
    print(f"OONI judge, µs of CPU a measurement ({args.n:,} real-sample copies, best of {args.repeat}; "
          "_observe and judge are per measurement of the whole pass):")
    for k, v in s.items():
        print(f"  {k:<10} {v:8,.1f} µs")
    ok = s["row"] <= ROW_TARGET_US
    print(f"  row ≤ {ROW_TARGET_US:.0f} µs: {'target met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
