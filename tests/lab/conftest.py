"""Lab fixtures: build a scenario's namespaces once per session and run the real probe in them.

Lab tests (marker ``lab``) need root, ``ip netns`` and ``nft``. Without them they skip,
unless ``KZPROBE_REQUIRE_LAB=1`` (CI sets it): then the skip is a failure.

No lab outlives the session, however it ends: :func:`require_lab` first removes the labs of
earlier sessions that were killed (their owner process is dead: what ``kzprobe lab down``
removes; a live lab of another run is kept), and while lab tests run, SIGTERM (``kill``, a
killed ``make test``) ends pytest like Ctrl-C does, so every ``with Lab(...)`` closes its lab,
and the session's end removes whatever this process (or a child it started) left
(:func:`labs_removed_on_signals`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from probe.lab.run import Lab, LabRun
from probe.lab.scenario import load_scenario
from probe.lab.topology import DownResult, check_privileges, down, lab_namespaces


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    why = check_privileges()
    if why:
        return why
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return f"'ip netns list' failed: {p.stderr.strip()}"
    return None


def remove_dead_labs(*, own: bool = False) -> DownResult:
    """Remove the labs left by processes that are gone (``kzprobe lab down`` without ``--force``):
    a killed earlier session's, or this one's children's. A lab whose owner is alive is kept
    (another run's); this process's own are removed only with ``own`` (the session is ending)."""
    return down(keep_own=not own)


@contextlib.contextmanager
def labs_removed_on_signals() -> Iterator[None]:
    """While inside: SIGTERM raises KeyboardInterrupt in the main thread, as SIGINT does, so the
    ``with Lab(...)`` blocks and fixtures unwind and close their labs (the default SIGTERM ends
    Python at once, no ``finally`` run). A second SIGTERM is ignored: it must not break into the
    teardown the first started. On the way out, however it is left, the labs of dead owners and
    this process's own are removed, with SIGINT and SIGTERM held until that is done."""
    def on_term(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            remove_dead_labs(own=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.fixture(scope="session")
def require_lab() -> Iterator[None]:
    """Skip (or fail, with KZPROBE_REQUIRE_LAB=1) when the lab cannot run here; else remove the labs
    killed sessions left, and remove this session's on SIGTERM/SIGINT and at its end."""
    why = lab_unavailable()
    if why:
        if os.environ.get("KZPROBE_REQUIRE_LAB") == "1":
            pytest.fail(f"KZPROBE_REQUIRE_LAB=1 but the lab cannot run: {why}")
        pytest.skip(why)
    remove_dead_labs()
    with labs_removed_on_signals():
        yield


def _run(name: str, out: Path) -> LabRun:
    scenario = load_scenario(name)
    with Lab(scenario) as lab:
        return lab.run_probe(out_dir=out, concurrency=16, timeout_s=300)


@pytest.fixture(scope="session")
def lab_run(require_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``lab_run(name) -> LabRun``: the scenario built and measured once per session."""
    cache: dict[str, LabRun] = {}

    def get(name: str) -> LabRun:
        if name not in cache:
            cache[name] = _run(name, tmp_path_factory.mktemp(f"lab-{name}"))
        return cache[name]

    yield get


def namespaces_of(lab_id: str) -> list[str]:
    """The lab namespaces of one lab id still present."""
    return [n for n in lab_namespaces() if n.startswith(f"kzl-{lab_id}-")]
