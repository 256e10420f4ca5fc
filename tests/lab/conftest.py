"""Lab fixtures: build a scenario's namespaces once per session and run the real probe in them.

Lab tests (marker ``lab``) need root, ``ip netns`` and ``nft``. Without them they skip,
unless ``KZPROBE_REQUIRE_LAB=1`` (CI sets it): then the skip is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.lab.run import Lab, LabRun
from probe.lab.scenario import load_scenario
from probe.lab.topology import check_privileges, lab_namespaces


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    why = check_privileges()
    if why:
        return why
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return f"'ip netns list' failed: {p.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def require_lab() -> None:
    """Skip (or fail, with KZPROBE_REQUIRE_LAB=1) when the lab cannot run here."""
    why = lab_unavailable()
    if why:
        if os.environ.get("KZPROBE_REQUIRE_LAB") == "1":
            pytest.fail(f"KZPROBE_REQUIRE_LAB=1 but the lab cannot run: {why}")
        pytest.skip(why)


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
