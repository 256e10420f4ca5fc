"""A rule table without a catch-all is a bug that must name the input (mypy found the message
itself raising AttributeError: ``Target`` has no ``url``, the measured URL is ``input``)."""

from __future__ import annotations

import pytest

import probe.verdict as verdict
from tests.test_verdict import BOGONS, obs


def test_no_rule_deciding_names_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict, "_WALK", verdict._compile(()))  # the table decide walks, compiled from RULES
    with pytest.raises(AssertionError, match=r"no rule decided for https://www\.example\.org/"):
        verdict.decide(obs(), bogons=BOGONS)
