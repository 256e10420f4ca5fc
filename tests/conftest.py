"""Shared fixtures: a trustme CA, loopback servers (tests/fixtures/*), the bogon set for tests.

Every server here listens on loopback only; nothing leaves this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme

from probe.addresses import Bogons

pytest_plugins = [
    "tests.fixtures.dns_server",
    "tests.fixtures.servers",
    "tests.fixtures.world",
]


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


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A test root CA (trustme). Its PEM: ``ca.cert_pem.bytes()``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def test_bogons() -> Bogons:
    """OONI's bogon table with the documentation ranges declared public (as the lab does)."""
    return Bogons(public=("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
