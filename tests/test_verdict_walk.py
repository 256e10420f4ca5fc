"""The judge's compiled walk (``probe.verdict._WALK``: runs of rules gated by their ``needs``) decides
as the plain ordered walk of ``RULES`` does, on every test case and every golden OONI measurement.

The plain walk is the definition: the first rule of :data:`probe.verdict.RULES` whose function gives a
verdict decides. :func:`probe.verdict.decide` skips a run of rules whose precondition (``RuleDef.needs``,
a fact of :class:`probe.verdict_facts.Facts`) is false; that is sound only if no such rule can give a
verdict then, which the second test checks rule by rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from analysis.ooni import _BOGONS, NotJudgeable, _observe
from probe.addresses import Bogons
from probe.nettests.web import WebObservations
from probe.verdict import _ONLINE, _WALK, RULES, RuleDef, VantageStatus, decide
from probe.verdict_facts import GATES, Facts
from tests.analysis.test_ooni_rejudge_golden import variants
from tests.test_verdict import ASNS, BOGONS, CASES


def _inputs() -> Iterator[tuple[str, WebObservations, Bogons, VantageStatus | None, Any]]:
    """(id, observations, bogons, vantage, asn_of) of every CASES row and every judgeable golden variant."""
    for case_id, observations, vantage, _ in CASES:
        yield case_id, observations, BOGONS, vantage, ASNS.get
    for vid, raw in variants():
        try:
            obs = _observe(json.loads(raw))[0]
        except NotJudgeable:
            continue
        yield vid, obs, _BOGONS, None, None


INPUTS = list(_inputs())


def _plain(c: Facts) -> RuleDef:
    return next(r for r in RULES if r.fn(c) is not None)


def test_the_inputs_cover_the_table_and_the_golden_file() -> None:
    """Every rule decides some input here (CASES: test_verdict.py checks it), and most golden variants
    are judgeable (the others are NotJudgeable, as recompute finds them)."""
    golden = [i for i in INPUTS if "#" in i[0]]
    assert len(golden) > 150 and len(INPUTS) - len(golden) == len(CASES)


@pytest.mark.parametrize("details", [True, False])
def test_the_compiled_walk_picks_the_rule_the_plain_walk_picks(details: bool) -> None:
    picked: set[str] = set()
    for iid, obs, bogons, vantage, asn_of in INPUTS:
        plain = _plain(Facts(obs, bogons, vantage or _ONLINE, asn_of))
        r, v = decide(obs, bogons=bogons, vantage=vantage, asn_of=asn_of, details=details)
        assert r is plain, (iid, r.name, plain.name)
        assert v.rule == plain.id.value
        picked.add(r.name)
    assert picked == {r.name for r in RULES}


def test_a_rule_gives_no_verdict_when_its_precondition_is_false() -> None:
    """``needs`` is a claim about the rule's function: on every input where the named fact is false, the
    function returns None (every gated rule is called on every input, not only where the walk reaches)."""
    gated = [r for r in RULES if r.needs is not None]
    assert {r.needs for r in gated} == set(GATES) and len(gated) > len(RULES) / 2
    skipped: dict[str, int] = {}
    for iid, obs, bogons, vantage, asn_of in INPUTS:
        c = Facts(obs, bogons, vantage or _ONLINE, asn_of)
        for r in gated:
            if not getattr(c, r.needs or ""):
                assert r.fn(c) is None, (iid, r.name, r.needs)
                skipped[r.name] = skipped.get(r.name, 0) + 1
    assert set(skipped) == {r.name for r in gated}  # each claim was tested on some input


def test_the_walk_is_the_table_in_order() -> None:
    """The compiled runs hold every row of RULES once, in the table's order, each run one precondition."""
    steps = [step for _, run in _WALK for step in run]
    assert [s[1] for s in steps] == list(RULES)
    for gate, run in _WALK:
        needs = {s[1].needs for s in run}
        assert len(needs) == 1
        assert (gate is None) == (needs == {None})
