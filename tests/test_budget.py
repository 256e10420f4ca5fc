"""The run's time budget (issue 11, 4): worst case computed before starting; when it does
not fit the unit's TimeoutStartSec the run says so and measures what fits, rotating."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import probe.runner as runner_mod
from probe.budget import (
    DEFAULT_BUDGET_S,
    ROTATION_FILE,
    UNIT_TIMEOUT_START_S,
    health_check_worst_s,
    plan,
    worst_case_s,
)
from probe.config import Settings, Timeouts, load_settings
from probe.targets import load_targets, shipped_list, targets_from_urls
from tests.conftest import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_the_unit_limit_is_the_service_files() -> None:
    unit = (ROOT / "systemd" / "kzprobe.service").read_text()
    m = re.search(r"^TimeoutStartSec=(\d+)h\s*$", unit, re.M)
    assert m is not None and float(m.group(1)) * 3600 == UNIT_TIMEOUT_START_S
    assert Settings().run_time_budget_s == DEFAULT_BUDGET_S < UNIT_TIMEOUT_START_S


def test_kz_and_global_at_the_defaults_do_not_fit_three_hours() -> None:
    """The issue's figure: kz.csv + global.csv at the defaults take ~7 h at worst."""
    targets = load_targets([shipped_list("kz.csv"), shipped_list("global.csv")])
    s = Settings()
    worst = worst_case_s(len(targets), s.run_concurrency, s.timeouts)
    assert 6 * 3600 < worst < 8 * 3600, worst / 3600
    chosen, p = plan(targets, [t.input for t in targets], concurrency=s.run_concurrency, timeouts=s.timeouts,
                     budget_s=s.run_time_budget_s, state_dir=None)
    assert not p.fits and p.planned_worst_s <= DEFAULT_BUDGET_S and len(chosen) == p.selected
    assert "more than the budget" in p.message() and "the next run starts where this one stops" in p.message()
    fotn = load_targets([shipped_list("fotn-2021-kz.csv")])
    assert plan(fotn, [t.input for t in fotn], concurrency=8, timeouts=s.timeouts, budget_s=s.run_time_budget_s,
                state_dir=None)[1].fits


def test_worst_case_formula() -> None:
    t = Timeouts(dns_s=5, connect_s=10, tls_s=10, measurement_s=90, control_s=45)
    assert health_check_worst_s(t) == 5 + 10 + 10 + 15
    assert worst_case_s(17, 8, t) == 3 * 90 + 2 * 40


def test_rotation_covers_every_input_over_runs(tmp_path: Path) -> None:
    items = [f"u{i}" for i in range(10)]
    t = Timeouts(dns_s=1, connect_s=1, tls_s=1, measurement_s=10, control_s=5)
    budget = 2 * health_check_worst_s(t) + 3 * 10  # three waves of 1
    seen: list[str] = []
    offsets = []
    for _ in range(4):
        chosen, p = plan(items, items, concurrency=1, timeouts=t, budget_s=budget, state_dir=tmp_path)
        assert p.selected == 3 and not p.fits and p.planned_worst_s <= budget
        offsets.append(p.offset)
        seen += chosen
    assert offsets == [0, 3, 6, 9]
    assert set(seen) == set(items) and seen[9:12] == ["u9", "u0", "u1"]
    # another list has its own offset; a corrupt state file starts again from 0
    other = [f"v{i}" for i in range(10)]
    assert plan(other, other, concurrency=1, timeouts=t, budget_s=budget, state_dir=tmp_path)[1].offset == 0
    (tmp_path / ROTATION_FILE).write_text("{not json")
    assert plan(items, items, concurrency=1, timeouts=t, budget_s=budget, state_dir=tmp_path)[1].offset == 0


def test_no_budget_measures_everything(tmp_path: Path) -> None:
    items = list(range(1000))
    chosen, p = plan(items, [str(i) for i in items], concurrency=1, timeouts=Timeouts(), budget_s=None,
                     state_dir=tmp_path)
    assert chosen == items and p.fits and not (tmp_path / ROTATION_FILE).exists()


async def test_a_run_over_budget_says_so_and_measures_what_fits(loopback_config) -> None:
    s = load_settings(config_path=loopback_config["write"](), env={})
    t = s.timeouts
    s = dataclasses.replace(s, run_concurrency=1,
                            run_time_budget_s=2 * health_check_worst_s(t) + 2 * t.measurement_s + 1)
    urls = [f"https://site{i}.example.org/" for i in range(5)]
    out = loopback_config["tmp"] / "o"
    measured: list[str] = []
    for expected in (urls[0:2], urls[2:4], [urls[4], urls[0]]):
        summary = await runner_mod.run(targets_from_urls(urls), s, out_dir=out)
        assert summary.inputs == 2 and summary.measured == 2 and summary.not_measured == 0
        assert [r["input"] for r in read_jsonl(summary.path)] == expected or \
            sorted(r["input"] for r in read_jsonl(summary.path)) == sorted(expected)
        j = json.loads(summary.summary_path.read_text())
        assert j["plan"]["total"] == 5 and j["plan"]["selected"] == 2 and j["plan"]["fits"] is False
        measured += expected
    assert set(measured) == set(urls)
    from probe.status import collect, render

    st = collect(out, last=3)
    assert [r.budget_total for r in st.runs] == [5, 5, 5]
    assert "time budget: 2 of 5 inputs, rotating" in render(st)


async def test_a_run_within_budget_has_a_fitting_plan(loopback_config) -> None:
    s = load_settings(config_path=loopback_config["write"](), env={})
    summary = await runner_mod.run(targets_from_urls(["https://site0.example.org/"]), s,
                                   out_dir=loopback_config["tmp"] / "p")
    j = json.loads(summary.summary_path.read_text())
    assert j["plan"]["fits"] is True and j["plan"]["budget_s"] == DEFAULT_BUDGET_S


async def test_a_hanging_helper_does_not_make_every_verdict_deadline(loopback_config) -> None:
    """The control has its own deadline: a helper that never answers fails the control
    (verdicts that need it are inconclusive, the others stand), never the measurement."""
    import asyncio

    from probe.control import ControlResult

    class Hanging:
        async def measure(self, *a, **k) -> ControlResult:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    s = load_settings(config_path=loopback_config["write"](), env={})
    s = dataclasses.replace(s, timeouts=dataclasses.replace(s.timeouts, control_s=1.0, measurement_s=8.0))
    summary = await runner_mod.run(targets_from_urls([f"https://site{i}.example.org/" for i in range(3)]), s,
                                   out_dir=loopback_config["tmp"] / "h", control=Hanging())
    recs = list(read_jsonl(summary.path))
    assert len(recs) == 3
    for r in recs:
        tk = r["test_keys"]
        assert tk["x_rule"] != "deadline", tk["x_reason"]
        assert tk["control"]["failure"] == "control_failure: generic_timeout_error"
        assert tk["blocking"] is False, tk["x_reason"]  # verified HTTPS stands without the helper


async def test_status_reports_a_hostile_plan_as_unreadable(loopback_config) -> None:
    from probe.status import collect

    s = load_settings(config_path=loopback_config["write"](), env={})
    out = loopback_config["tmp"] / "x"
    summary = await runner_mod.run(targets_from_urls(["https://site0.example.org/"]), s, out_dir=out)
    j = json.loads(summary.summary_path.read_text())
    j["plan"] = {"fits": False, "total": -3}
    summary.summary_path.write_text(json.dumps(j))
    st = collect(out)
    assert st.runs == [] and any("plan.total" in why for _, why in st.bad)
