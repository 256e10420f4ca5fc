"""analysis.parent_death: the re-parenting check of die_with_parent (review of break test F3's fix)."""

from __future__ import annotations

import os
import sys

import pytest

from analysis import parent_death


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_parent_that_is_pid_1_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync as a container's PID 1: its fork server's parent pid is 1 all along. The old check
    (``getppid() == 1`` → exit) killed the fork server at once; the parent did not change, so it lives."""
    exits: list[int] = []
    monkeypatch.setattr(os, "getppid", lambda: 1)
    monkeypatch.setattr(os, "_exit", exits.append)
    try:
        assert parent_death.die_with_parent(0) is True  # signal 0: clears the setting again
    finally:
        parent_death.die_with_parent(0)
    assert exits == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_parent_gone_during_the_call_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-parented between reading the parent and asking for the signal: the signal would never come."""
    exits: list[int] = []
    ppids = iter([4242, 1])
    monkeypatch.setattr(os, "getppid", lambda: next(ppids))
    monkeypatch.setattr(os, "_exit", exits.append)
    try:
        parent_death.die_with_parent(0)
    finally:
        monkeypatch.undo()
    assert exits == [1]
