"""docs/lab-scenarios.md is generated from the shipped scenarios and cannot go stale (issue 12)."""

from __future__ import annotations

from pathlib import Path

from probe.lab.scenario import SCENARIO_DIR, load_scenario, shipped_scenarios
from probe.lab.scenario_doc import _head_comment, scenarios_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "lab-scenarios.md"


def test_doc_is_generated_from_the_scenarios() -> None:
    assert DOC.read_text(encoding="utf-8") == scenarios_markdown(), \
        "docs/lab-scenarios.md is stale: python -m probe.lab.scenario_doc > docs/lab-scenarios.md"


def test_every_scenario_and_site_is_in_the_doc_with_its_truth() -> None:
    doc = DOC.read_text(encoding="utf-8").splitlines()
    for name in shipped_scenarios():
        sc = load_scenario(name)
        section = doc[doc.index(f"## {name}"):]
        for s in sc.sites:
            row = next(line for line in section if line.startswith(f"| {s.display} |"))
            for v in sc.vantages:
                assert f"`{s.truth(v.name).expect}`" in row, (name, s.display, v.name)


def test_every_site_says_what_it_models() -> None:
    """Each site's note: what it models, its source, any departure from OONI (issue 12)."""
    for name in shipped_scenarios():
        for s in load_scenario(name).sites:
            assert s.note.strip() or s.truth().note.strip(), f"{name}: site {s.display} has no note"


def test_every_scenario_file_says_what_it_models_and_its_sources() -> None:
    """The header comment is where a scenario gives its sources and departures from OONI."""
    for name in shipped_scenarios():
        head = _head_comment(SCENARIO_DIR / f"{name}.toml")
        assert len(head) > 80, f"{name}.toml: no header comment (what it models, sources, departures from OONI)"
