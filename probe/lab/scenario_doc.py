"""``docs/lab-scenarios.md``, generated from the shipped scenario files.

``python -m probe.lab.scenario_doc > docs/lab-scenarios.md``. For every scenario of
``probe/lab/scenarios/``: its description, the comment at the top of its file (what it models,
its sources, where it departs from OONI), its ISPs and vantages when it has more than the
default one, and for each site what the lab does to it, the verdict the probe must give (per
vantage where the truth differs) and the site's note (its source, any departure from OONI).
tests/lab/test_scenario_doc.py fails when the file and the scenarios disagree, so the page
cannot go stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from probe.lab.scenario import SCENARIO_DIR, Scenario, Site, load_scenario, shipped_scenarios

HEADER = """# Lab scenarios

Generated from `probe/lab/scenarios/*.toml` by `python -m probe.lab.scenario_doc > docs/lab-scenarios.md`;
tests/lab/test_scenario_doc.py fails when this page and the scenario files disagree. Every scenario runs
in CI (tests/lab/test_lab_e2e.py: each input's verdict against its `expect`, root, a skip is a failure).
The scenario format: `probe/lab/scenario.py` (module doc). `expect` words: `false` = accessible,
`down` = the site fails from the control too, `inconclusive` = no verdict, else the blocking type.
Sources and departures from OONI are the scenario files' own words: their header comment, and each
site's `note`.
"""


def _cell(text: str) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|") or "—"


def _head_comment(path: Path) -> str:
    """The comment lines at the top of a scenario file, before its first table, without the ``#``."""
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            out.append(line[1:].removeprefix(" "))
        elif line.strip():
            break
        elif out:
            out.append("")
    return "\n".join(out).strip()


def _does(site: Site, sc: Scenario) -> str:
    from probe.lab.run import actions  # run imports the scenario module: import late

    text = actions(site)
    others = [(n, a) for n, a in site.isp_actions if a != site.default_actions]
    for name, _a in others:
        text += f"; at ISP {name}: {actions(site, name)}"
    return text


def _expect(site: Site, sc: Scenario) -> str:
    words = {}
    for v in sc.vantages:
        t = site.truth(v.name)
        words[v.name] = t.expect + (f" (known wrong today: {t.xfail_got or 'another verdict'})" if t.xfail_reason
                                    else "")
    if len(set(words.values())) == 1:
        return f"`{next(iter(words.values()))}`"
    return "; ".join(f"{v}: `{w}`" for v, w in words.items())


def scenario_markdown(name: str) -> str:
    """The section of one scenario."""
    sc = load_scenario(name)
    lines = [f"## {sc.name}", "", f"`probe/lab/scenarios/{name}.toml` — {sc.description or 'no description'}", ""]
    head = _head_comment(SCENARIO_DIR / f"{name}.toml")
    if head:
        lines += ["```text", head, "```", ""]
    facts = [f"latency {sc.latency_ms:g} ms one way"]
    if sc.trust_mitm_root:
        facts.append("the vantage trusts the interception root")
    if sc.outage:
        facts.append("outage: everything beyond the ISP drops")
    if sc.helper != "ok":
        facts.append(f"helper {sc.helper}")
    if sc.doh != "ok":
        facts.append(f"DoH control {sc.doh}")
    lines += ["World: " + "; ".join(facts) + ".", ""]
    if not sc.default_world:
        for isp in sc.isps:
            rules = ", ".join(r.describe() for r in isp.tcp)
            lines.append(f"* ISP `{isp.name}` ({isp.asn}): {isp.hops} hop(s), censor at hop {isp.censor_hop}"
                         + (f", DNS64 {isp.dns64}" if isp.dns64 else "") + (f"; censor rules {rules}" if rules else ""))
        for v in sc.vantages:
            lines.append(f"* vantage {v.describe()}")
        lines.append("")
    lines += ["| site | input(s) | what the lab does | expected verdict "
              "| what it models, source, departure from OONI |", "|---|---|---|---|---|"]
    for s in sc.sites:
        note = s.note
        if s.xfail_reason:
            note += f" Known wrong today: {s.xfail_reason}"
        lines.append(f"| {_cell(s.display)} | {_cell(', '.join(s.inputs))} | {_cell(_does(s, sc))} | "
                     f"{_cell(_expect(s, sc))} | {_cell(note)} |")
    n_inputs = sum(len(s.inputs) for s in sc.sites) * len(sc.vantages)
    lines += ["", f"{len(sc.sites)} site(s), {n_inputs} verdict(s) checked per run.", ""]
    return "\n".join(lines)


def scenarios_markdown() -> str:
    """The whole page."""
    names = shipped_scenarios()
    index = ["| scenario | sites | vantages | description |", "|---|---|---|---|"]
    for n in names:
        sc = load_scenario(n)
        index.append(f"| [{n}](#{n}) | {len(sc.sites)} | {len(sc.vantages)} | {_cell(sc.description)} |")
    return HEADER + "\n" + "\n".join(index) + "\n\n" + "\n".join(scenario_markdown(n) for n in names)


def main() -> int:
    sys.stdout.write(scenarios_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

