""".ci/static_checks.py: ruff + mypy findings compared with a baseline that may only shrink (issue 10 part 7).

The comparison itself is tested here on made-up findings (fast); CI runs the tools (`make lint`).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("static_checks", REPO / ".ci" / "static_checks.py")
assert spec is not None and spec.loader is not None
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)

E501 = ("ruff", "probe/x.py", "E501", sc.normalise("Line too long (134 > 120)"))
ARG = ("mypy", "probe/y.py", "arg-type", sc.normalise('Argument 1 to "f" has incompatible type "int"; expected "str"'))


def test_numbers_and_lines_do_not_make_a_finding_new() -> None:
    assert sc.normalise("Line too long (134 > 120)") == sc.normalise("Line too long (151 > 120)")
    assert sc.normalise('Name "x" already defined on line 42') == 'Name "x" already defined on line N'
    baseline = Counter({sc.key(E501): 1})
    new, fixed = sc.compare(baseline, [(E501, "probe/x.py:99")])  # moved from another line: not new
    assert (new, fixed) == ([], 0)


def test_a_new_kind_or_one_more_of_a_kind_is_new() -> None:
    baseline = Counter({sc.key(E501): 1})
    new, _ = sc.compare(baseline, [(E501, "probe/x.py:3"), (E501, "probe/x.py:7"), (ARG, "probe/y.py:5")])
    assert new == ["probe/x.py:7: ruff E501 Line too long (N > N)",
                   'probe/y.py:5: mypy arg-type Argument N to "f" has incompatible type "int"; expected "str"']


def test_fixed_findings_pass_and_are_counted() -> None:
    baseline = Counter({sc.key(E501): 2, sc.key(ARG): 1})
    assert sc.compare(baseline, [(E501, "probe/x.py:3")]) == ([], 2)


def test_the_same_finding_in_another_file_is_new() -> None:
    baseline = Counter({sc.key(E501): 1})
    other = ("ruff", "probe/z.py", "E501", E501[3])
    assert sc.compare(baseline, [(other, "probe/z.py:1")])[0] == ["probe/z.py:1: ruff E501 Line too long (N > N)"]


def test_update_never_grows_the_baseline(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "baseline.json"
    sc.write_baseline(path, [(E501, "probe/x.py:1")])
    monkeypatch.setattr(sc, "ruff_findings", lambda py: [(E501, "probe/x.py:1"), (ARG, "probe/y.py:2")])
    monkeypatch.setattr(sc, "mypy_findings", lambda py: [])
    assert sc.main(["--baseline", str(path)]) == 1  # a new finding fails the check
    assert sc.main(["--baseline", str(path), "--update"]) == 1  # and cannot be written into the baseline
    assert json.loads(path.read_text())["total"] == 1
    monkeypatch.setattr(sc, "ruff_findings", lambda py: [])
    assert sc.main(["--baseline", str(path)]) == 0  # everything fixed: passes
    assert sc.main(["--baseline", str(path), "--update"]) == 0  # and the baseline shrinks
    assert json.loads(path.read_text())["total"] == 0


def test_the_committed_baseline_is_well_formed() -> None:
    data = json.loads((REPO / ".ci" / "static-baseline.json").read_text(encoding="utf-8"))
    assert data["total"] == sum(data["findings"].values()) > 0
    for k, n in data["findings"].items():
        tool, file, code, message = k.split(" | ", 3)
        assert tool in ("ruff", "mypy") and (REPO / file).exists(), k
        assert code and message and isinstance(n, int) and n > 0
