#!/usr/bin/env python3
"""Static checks with a baseline that may only shrink: ruff and mypy (configured in pyproject.toml).

    .ci/static_checks.py            run both, compare with .ci/static-baseline.json; exit 1 on a new finding
    .ci/static_checks.py --update   rewrite the baseline from today's findings (refused if any is new)

A finding is keyed by (tool, file, rule code, message) — not by line, so moving code does not make
old findings "new"; numbers in messages are replaced by ``N`` (``Line too long (134 > 120)``,
``already defined on line 42``). The baseline holds the count of each key: a file may keep at most
as many findings of a kind as it had. When findings were fixed the check passes and says how much
``--update`` would shrink the baseline; it never grows (``--update`` with a new finding fails:
fix the finding, or silence it where it stands with a ``# noqa: CODE`` / ``# type: ignore[code]``
that says why).

Exit codes: 0 no new finding; 1 new findings (listed with file:line); 2 a tool could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "static-baseline.json"
_NUMBER = re.compile(r"\d+")

Finding = tuple[str, str, str, str]  # (tool, file, code, message)


def normalise(message: str) -> str:
    """The message without its numbers (line numbers, lengths, counts)."""
    return _NUMBER.sub("N", " ".join(message.split()))


def key(f: Finding) -> str:
    return " | ".join(f)


def _rel(path: str) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return p.as_posix()


def ruff_findings(python: str) -> list[tuple[Finding, str]]:
    """(finding, "file:line") of ``ruff check`` over the repository (pyproject.toml's settings)."""
    proc = subprocess.run([python, "-m", "ruff", "check", "--output-format", "json", "--no-cache", "."],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = []
    for item in json.loads(proc.stdout or "[]"):
        f = _rel(item["filename"])
        out.append((("ruff", f, item.get("code") or "syntax", normalise(item["message"])),
                    f"{f}:{item['location']['row']}"))
    return out


def mypy_findings(python: str) -> list[tuple[Finding, str]]:
    """(finding, "file:line") of ``mypy`` (files and options from pyproject.toml); notes left out."""
    proc = subprocess.run([python, "-m", "mypy", "--output", "json"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"mypy failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    out = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if item.get("severity") != "error":
            continue
        f = _rel(item["file"])
        out.append((("mypy", f, item.get("code") or "misc", normalise(item["message"])), f"{f}:{item['line']}"))
    return out


def compare(baseline: Counter[str], current: Iterable[tuple[Finding, str]]) -> tuple[list[str], int]:
    """(new findings as "file:line: tool code message", number of baseline findings now fixed).

    A key seen more often than the baseline allows is new for its extra occurrences (the last ones
    by line are reported).
    """
    seen: Counter[str] = Counter()
    by_key: dict[str, list[str]] = {}
    for finding, where in current:
        k = key(finding)
        seen[k] += 1
        by_key.setdefault(k, []).append(f"{where}: {finding[0]} {finding[2]} {finding[3]}")
    new: list[str] = []
    for k, n in seen.items():
        extra = n - baseline.get(k, 0)
        if extra > 0:
            new.extend(by_key[k][-extra:])
    fixed = sum(max(0, n - seen.get(k, 0)) for k, n in baseline.items())
    return sorted(new), fixed


def load_baseline(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    data = json.loads(path.read_text(encoding="utf-8"))
    return Counter({k: int(v) for k, v in data["findings"].items()})


def write_baseline(path: Path, current: Iterable[tuple[Finding, str]]) -> int:
    counts = Counter(key(f) for f, _ in current)
    data = {
        "about": "ruff + mypy findings of the day the static checks came in; may only shrink "
                 "(.ci/static_checks.py --update after fixing some). Key: tool | file | code | message.",
        "total": sum(counts.values()),
        "findings": dict(sorted(counts.items())),
    }
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return data["total"]  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--update", action="store_true", help="rewrite the baseline (only ever shrinks it)")
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("--python", default=os.environ.get("PYTHON", sys.executable),
                    help="the interpreter with ruff and mypy installed (default: this one)")
    args = ap.parse_args(argv)
    try:
        current = ruff_findings(args.python) + mypy_findings(args.python)
    except (RuntimeError, OSError, json.JSONDecodeError) as exc:
        print(f"static checks: {exc}", file=sys.stderr)
        return 2
    baseline = load_baseline(args.baseline)
    new, fixed = compare(baseline, current)
    if args.update:
        if new and args.baseline.exists():
            print(f"static checks: refusing to grow the baseline by {len(new)} finding(s):", file=sys.stderr)
            for line in new:
                print(f"  {line}", file=sys.stderr)
            return 1
        total = write_baseline(args.baseline, current)
        print(f"static checks: baseline {_rel(str(args.baseline))} now holds {total} finding(s)")
        return 0
    total = sum(baseline.values())
    if new:
        print(f"static checks: {len(new)} new finding(s) not in the baseline ({total}); fix them "
              "(`ruff check --fix` fixes many) or, if deliberate, silence each where it stands:", file=sys.stderr)
        for line in new:
            print(f"  {line}", file=sys.stderr)
        return 1
    msg = f"static checks: ruff + mypy, no new finding ({len(current)} today, baseline {total})"
    if fixed:
        msg += f"; {fixed} fixed: .ci/static_checks.py --update shrinks the baseline"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
