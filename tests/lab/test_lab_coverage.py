"""Every shipped scenario is run by the lab suite in CI, and a skip there is a failure (issue 12).

No root needed: these tests read the files and pytest's own collection of tests/lab/test_lab_e2e.py,
so they also run (and fail) where the lab itself cannot.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

from probe.lab.scenario import SCENARIO_DIR, load_scenario

ROOT = Path(__file__).resolve().parents[2]


def _collected(test_file: str) -> list[str]:
    """The node ids pytest collects from ``test_file`` (collection only: nothing runs)."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", test_file],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [line.strip() for line in p.stdout.splitlines() if "::" in line]


def test_every_scenario_file_is_run_by_the_lab_suite_with_every_verdict() -> None:
    """Lists the scenario directory itself (not through the loader the e2e suite uses) and checks
    that the collected e2e tests build and judge each scenario: one run test per scenario and
    one verdict test per input × vantage. A scenario dropped from the parametrisation, a file
    the loader does not see, or a site whose inputs are not judged fails here."""
    files = sorted(p for p in SCENARIO_DIR.iterdir() if p.is_file() and p.name != "__init__.py")
    assert files and all(p.suffix == ".toml" for p in files), [p.name for p in files if p.suffix != ".toml"]
    ids = _collected("tests/lab/test_lab_e2e.py")
    runs = {m.group(1) for i in ids if (m := re.search(r"::test_run_exits_ok_and_leaves_nothing\[(.+)\]$", i))}
    verdict_ids = [i.split("::test_verdict_equals_truth[", 1)[1] for i in ids if "::test_verdict_equals_truth[" in i]
    for f in files:
        name = tomllib.loads(f.read_text(encoding="utf-8"))["scenario"]["name"]
        assert name == f.stem, f"{f.name}: [scenario] name {name!r} differs from the file's name"
        sc = load_scenario(name)
        assert name in runs, f"{f.name} is not run by tests/lab/test_lab_e2e.py"
        for v in sc.vantages:  # ids are scenario-vantage-url
            got = Counter(i for i in verdict_ids if i.startswith(f"{name}-{v.name}-http"))
            want = [u.encode("unicode_escape").decode("ascii") for s in sc.sites for u in s.inputs]  # as pytest ids
            assert sum(got.values()) == len(want), (f"{f.name}, vantage {v.name}: {sum(got.values())} verdict tests "
                                                    f"collected for {len(want)} inputs")
            assert all(any(i.endswith(u + "]") for i in got) for u in want), f"{f.name}, vantage {v.name}"


def test_no_shipped_scenario_is_excused_from_its_truth() -> None:
    """A lab test that xfails is not a verdict matching truth: no shipped site declares one (issue 12,
    "every verdict matches truth in CI")."""
    for f in sorted(SCENARIO_DIR.glob("*.toml")):
        sc = load_scenario(f.stem)
        excused = [(s.display, v.name) for s in sc.sites for v in sc.vantages if s.truth(v.name).xfail_reason]
        assert not excused, f"{f.name}: known-wrong verdicts {excused}"


def test_ci_runs_the_lab_and_a_skip_fails() -> None:
    """CI (.ci/run) exports KZPROBE_REQUIRE_LAB=1 and runs the whole suite (make test), with no marker
    deselecting the lab; with that variable set, the lab fixture fails instead of skipping."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^export KZPROBE_REQUIRE_LAB=1$", ci, re.M)
    make_test = re.search(r"^make test\b(.*)$", ci, re.M)
    assert make_test and not re.search(r"(^|[\s\"'])(-m|-k|--deselect|--ignore)\b", make_test.group(1))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    opts = pyproject["tool"]["pytest"]["ini_options"]
    assert "-m" not in str(opts.get("addopts", "")).split() and "tests" in opts["testpaths"]
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    test_recipe = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    after_pytest = test_recipe.split("-m pytest", 1)[1]
    assert not re.search(r"\s(-m|-k|--deselect|--ignore)\b", after_pytest), test_recipe


def test_require_lab_fails_instead_of_skipping_when_ci_requires_it(monkeypatch) -> None:
    """The lab fixture, where the lab cannot run: a skip without KZPROBE_REQUIRE_LAB, a failure with it."""
    import pytest

    from tests.lab import conftest

    fixture = conftest.require_lab.__wrapped__  # the fixture's own function (a generator: set-up, yield)

    def body() -> None:
        next(fixture())  # its set-up: skip, fail, or reach the yield
    # patched where the function looks it up (pytest may have imported the conftest under another name)
    monkeypatch.setitem(fixture.__globals__, "lab_unavailable", lambda: "no network namespaces here")
    monkeypatch.delenv("KZPROBE_REQUIRE_LAB", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no network namespaces here"):
        body()
    monkeypatch.setenv("KZPROBE_REQUIRE_LAB", "1")
    with pytest.raises(pytest.fail.Exception, match="KZPROBE_REQUIRE_LAB=1 but the lab cannot run"):
        body()
