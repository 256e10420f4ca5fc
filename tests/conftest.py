"""Shared fixtures: a trustme CA, loopback servers (tests/fixtures/*), the bogon set for tests.

Every server here listens on loopback only; nothing leaves this machine.
"""

from __future__ import annotations

import pytest
import trustme

from probe.addresses import Bogons

pytest_plugins = [
    "tests.fixtures.dns_server",
    "tests.fixtures.servers",
    "tests.fixtures.world",
]


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A test root CA (trustme). Its PEM: ``ca.cert_pem.bytes()``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def test_bogons() -> Bogons:
    """OONI's bogon table with the documentation ranges declared public (as the lab does)."""
    return Bogons(public=("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
