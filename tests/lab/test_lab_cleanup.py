"""A killed test session leaves no lab behind (tests/lab/conftest.py): SIGTERM unwinds like Ctrl-C and
the labs are removed on the way out; a session's start removes labs whose owner died. No timing:
the child says when its lab is up, and the test waits for it to exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from probe.lab import cli as lab_cli
from probe.lab import topology
from probe.lab.run import Lab
from probe.lab.scenario import load_scenario
from probe.lab.topology import STATE_DIR
from tests.lab.conftest import namespaces_of, remove_dead_labs
from tests.lab.test_lab_e2e import _crashed_lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]

#: Builds a lab's namespaces inside the guard pytest's lab fixture uses (or outside it, with "bare"),
#: prints the lab id, then blocks on stdin until a signal comes.
_CHILD = textwrap.dedent("""
    import contextlib, sys
    from probe.lab.scenario import load_scenario
    from probe.lab.topology import Topology
    from tests.lab.conftest import labs_removed_on_signals
    guard = contextlib.nullcontext() if sys.argv[1] == "bare" else labs_removed_on_signals()
    with guard:
        topo = Topology()
        topo.build(load_scenario("protest-outage"))
        print(topo.lab_id, flush=True)
        sys.stdin.read()
""")


def _lab_then_signal(sig: signal.Signals, mode: str) -> tuple[str, int]:
    """Start the child, wait for its lab id, check the lab is up, send ``sig``; (lab id, exit code)."""
    p = subprocess.Popen([sys.executable, "-c", _CHILD, mode], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        lab_id = p.stdout.readline().strip()
        assert lab_id, p.stderr.read() if p.stderr else ""
        assert len(namespaces_of(lab_id)) == 3 and (STATE_DIR / f"{lab_id}.json").exists()
        p.send_signal(sig)
        p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return lab_id, p.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_session_removes_its_lab(require_lab: None, sig: signal.Signals) -> None:
    lab_id, code = _lab_then_signal(sig, "guarded")
    assert code != -signal.SIGTERM  # unwound (KeyboardInterrupt), not killed outright
    assert namespaces_of(lab_id) == []
    assert not (STATE_DIR / f"{lab_id}.json").exists()


def test_without_the_guard_sigterm_leaves_the_lab_and_the_next_session_removes_it(require_lab: None) -> None:
    """What a killed `make test` did before: SIGTERM ends Python at once, the namespaces stay; the
    next session's start (require_lab → remove_dead_labs) removes them, the owner being dead."""
    lab_id, code = _lab_then_signal(signal.SIGTERM, "bare")
    try:
        assert code == -signal.SIGTERM
        assert len(namespaces_of(lab_id)) == 3
        assert lab_id in remove_dead_labs().removed
        assert namespaces_of(lab_id) == [] and not (STATE_DIR / f"{lab_id}.json").exists()
    finally:
        remove_dead_labs()


def test_session_start_removes_a_crashed_lab_with_its_servers(require_lab: None) -> None:
    lab_id = _crashed_lab()
    assert len(namespaces_of(lab_id)) == 3
    assert lab_id in remove_dead_labs().removed
    assert namespaces_of(lab_id) == []


def test_cleanup_in_a_session_keeps_the_sessions_open_lab_until_its_end(require_lab: None) -> None:
    """remove_dead_labs() while this process holds a lab open (another module's fixture) keeps it;
    the session's end (own=True) removes it."""
    import os

    from probe.lab.scenario import load_scenario
    from probe.lab.topology import Topology

    topo = Topology()
    try:
        topo.build(load_scenario("protest-outage"))
        res = remove_dead_labs()
        assert res.kept.get(topo.lab_id) == os.getpid() and topo.lab_id not in res.removed
        assert len(namespaces_of(topo.lab_id)) == 3
        assert topo.lab_id in remove_dead_labs(own=True).removed
        assert namespaces_of(topo.lab_id) == []
    finally:
        topo.teardown()


def _built_lab() -> Lab:
    """A Lab whose namespaces and state file exist (no servers: close() is what is tested)."""
    lab = Lab(load_scenario("protest-outage"))
    lab.topology.build(lab.scenario, lab.site_addresses)
    assert len(namespaces_of(lab.topology.lab_id)) == 3
    assert (STATE_DIR / f"{lab.topology.lab_id}.json").exists()
    return lab


def test_a_sigterm_landing_in_the_teardown_does_not_cut_it(require_lab: None, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Break test: `kzprobe lab run` got SIGTERM after the probe's summary, during the teardown; the
    KeyboardInterrupt cut it and left the namespaces and /run/kzprobe-lab/<id>.json (2 of 6 tries).
    Here the signal is sent at the teardown's first step, under the CLI's handler: the teardown
    finishes, then the interrupt comes (exit 130 in the CLI)."""
    lab = _built_lab()
    lab_id = lab.topology.lab_id
    real = topology._ns_pids
    sent: list[str] = []

    def ns_pids_then_signal(ns: str) -> list[int]:
        if not sent:
            sent.append(ns)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(ns)

    monkeypatch.setattr(topology, "_ns_pids", ns_pids_then_signal)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    lab_cli._sigterm_to_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            lab.close()
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert sent
    assert namespaces_of(lab_id) == []
    assert not (STATE_DIR / f"{lab_id}.json").exists()
    assert lab_cli.teardown_note(lab_id) == "the lab is torn down"


def test_the_interrupt_message_says_when_the_lab_is_left(require_lab: None) -> None:
    """The message after an interrupt names what is left and `kzprobe lab down` instead of claiming
    a teardown that did not finish."""
    lab = _built_lab()
    lab_id = lab.topology.lab_id
    try:
        note = lab_cli.teardown_note(lab_id)
        assert "NOT fully torn down" in note and "`kzprobe lab down`" in note
        assert f"kzl-{lab_id}-client" in note and f"{lab_id}.json" in note
    finally:
        lab.close()
    assert lab_cli.teardown_note(lab_id) == "the lab is torn down"
