"""The tests' shared data (``../shared``, ``KZPROBE_SHARED``) is said in README, and its absence fails.

Break test 13: a fresh clone failed every test that needs ``../shared`` ("shared data not found"), and
README did not say where that data comes from or what it holds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dirs_the_tests_read() -> set[str]:
    """The ``data/<dir>`` of the shared data that test files name (``shared_path("data", ...)``,
    ``SHARED / "data" / ...``, ``SHARED.glob("data/...")``)."""
    found: set[str] = set()
    for p in (REPO / "tests").rglob("*.py"):
        if p.resolve() == Path(__file__).resolve():
            continue
        text = p.read_text(encoding="utf-8")
        found.update(re.findall(r'shared_path\("data", "([^"*]+)"', text))
        found.update(re.findall(r'SHARED / "data" / "([^"*]+)"', text))
        found.update(g.rstrip("*") for g in re.findall(r'SHARED\.glob\("data/([^/"]+)', text))
    return found


def test_readme_says_where_the_shared_data_is_and_what_the_tests_read() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The tests' shared data", 1)[1].split("\n## ", 1)[0]
    assert "`../shared`" in section and "KZPROBE_SHARED" in section and "CI" in section
    dirs = _shared_dirs_the_tests_read()
    assert {"ooni-samples", "ooni-samples-more"} <= dirs
    assert not [d for d in sorted(dirs) if f"`data/{d}/`" not in section]


def test_the_golden_rejudge_fails_without_the_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It skipped: a clone without ``../shared`` passed it without checking a single verdict."""
    from tests.analysis import test_ooni_rejudge_golden as golden

    monkeypatch.setattr(golden, "SHARED", tmp_path)
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as info:  # a skip is caught, then refused
        golden.test_rejudged_rows_are_unchanged()
    assert info.type is pytest.fail.Exception and "OONI samples missing" in str(info.value)
