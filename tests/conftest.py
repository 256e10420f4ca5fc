"""Shared fixtures: a trustme CA, loopback servers (tests/fixtures/*), the bogon set for tests.

Every server here listens on loopback only; nothing leaves this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from probe.addresses import Bogons
from probe.runlines import LineStats, iter_records

pytest_plugins = [
    "tests.fixtures.netguard",
    "tests.fixtures.dns_server",
    "tests.fixtures.servers",
    "tests.fixtures.world",
]


try:  # property tests run on a loaded 2-core CI machine: no per-example deadline, no too-slow check
    from hypothesis import HealthCheck, settings

    settings.register_profile("kzprobe", deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile("kzprobe")
except ImportError:  # hypothesis is in the test extras; without it those tests fail on import
    pass

#: The repository root.
REPO = Path(__file__).resolve().parents[1]
#: The project's shared data (``../shared`` beside the checkout, as in CI); override with
#: ``KZPROBE_SHARED``. Tests that need it fail (never skip) when it is missing.
SHARED = Path(os.environ.get("KZPROBE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under :data:`SHARED`; fails the test with a clear message if it is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"shared data not found: {p} (set KZPROBE_SHARED to the shared/ directory)")
    return p


def read_jsonl(path: str | Path, stats: LineStats | None = None) -> Iterator[dict[str, Any]]:
    """The records of a run's JSONL as the product reads them (:func:`probe.runlines.iter_records`: every
    line bounded; a line too long, not JSON or not an object is counted in ``stats`` and skipped)."""
    return (rec for _, rec in iter_records(Path(path), stats))


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A test root CA (trustme). Its PEM: ``ca.cert_pem.bytes()``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def test_bogons() -> Bogons:
    """OONI's bogon table with the documentation ranges declared public (as the lab does)."""
    return Bogons(public=("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))


def _runs_as(uid: int, python: str) -> bool:
    import subprocess

    try:
        return subprocess.run([python, "-c", "import probe, aiohttp, cryptography"], user=uid, group=uid,
                              extra_groups=[], cwd="/", capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="session")
def unprivileged_python(tmp_path_factory: pytest.TempPathFactory):
    """``python(uid) -> list[str]``: an interpreter argv that ``uid`` can run, with kzprobe importable.

    Tests that drop to an unprivileged uid (as root) need one. This venv's interpreter is
    used when that uid can run it; a pyenv Python under a private ``/root`` (this
    workplace's machines) cannot, so a small venv is built once from Debian's
    ``/usr/bin/python3`` of the same minor version, whose ``.pth`` points at this venv's
    site-packages and the checkout: the same code, runnable by that uid.
    """
    import shutil
    import site
    import subprocess
    import sys
    import tempfile

    built: dict[str, list[str]] = {}
    base = Path(tempfile.mkdtemp(prefix="kzprobe-unpriv-"))
    base.chmod(0o755)

    def python(uid: int) -> list[str]:
        if _runs_as(uid, sys.executable):
            return [sys.executable]
        if "venv" not in built:
            debian = Path("/usr/bin/python3")
            same = debian.exists() and subprocess.run(
                [str(debian), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                text=True).stdout.strip() == str(tuple(sys.version_info[:2]))
            if not same:
                pytest.fail(f"uid {uid} cannot run {sys.executable}, and there is no /usr/bin/python3 "
                            f"{sys.version_info[:2]} to build a runnable venv from")
            venv = base / "venv"
            subprocess.run([str(debian), "-m", "venv", "--without-pip", str(venv)], check=True)
            site_dir = next(venv.glob("lib/python3.*/site-packages"))
            repo = Path(__file__).resolve().parents[1]
            (site_dir / "kzprobe-under-test.pth").write_text("\n".join([str(repo), *site.getsitepackages()]) + "\n")
            for d in (venv, *venv.rglob("*")):
                if d.is_dir():
                    d.chmod(0o755)
            built["venv"] = [str(venv / "bin/python3")]
        if not _runs_as(uid, built["venv"][0]):
            pytest.fail(f"uid {uid} cannot import kzprobe from {Path(__file__).resolve().parents[1]} "
                        "(is the checkout private?)")
        return built["venv"]

    yield python
    shutil.rmtree(base, ignore_errors=True)
