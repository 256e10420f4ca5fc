"""The test suite's own guard against traffic off this machine (tests/fixtures/netguard.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.fixtures import netguard


def _take_violations(n: int) -> list[str]:
    taken = netguard._violations[-n:]
    del netguard._violations[-n:]
    return taken


@pytest.mark.parametrize("address", [("192.0.2.1", 53), ("8.8.8.8", 443), ("2606:4700::1111", 443, 0, 0)])
def test_a_connect_outside_loopback_and_the_lab_is_refused(address: tuple) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s, pytest.raises(PermissionError, match="refused"):
        s.connect(address)
    assert address[0] in _take_violations(1)[0]


def test_a_datagram_to_a_public_resolver_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(PermissionError):
        s.sendto(b"\x00" * 12, ("1.1.1.1", 53))
    assert "1.1.1.1" in _take_violations(1)[0]


def test_a_connected_udp_socket_may_route_but_not_send() -> None:
    """connect() on UDP sends nothing (the vantage's route check does it): allowed; send() is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:  # no route on this machine: still not a guard matter
            return
        assert not netguard._violations or "192.0.2.1" not in netguard._violations[-1]
        with pytest.raises(PermissionError):
            s.send(b"x")
    assert "192.0.2.1" in _take_violations(1)[0]


def test_asyncio_connections_go_through_the_guard() -> None:
    async def go() -> None:
        await asyncio.open_connection("9.9.9.9", 443)

    with pytest.raises(PermissionError):
        asyncio.run(go())
    assert "9.9.9.9" in _take_violations(1)[0]


def test_a_name_lookup_through_the_system_resolver_is_refused() -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.org", 443)
    assert "example.org" in _take_violations(1)[0]


def test_loopback_and_the_lab_ranges_pass() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert socket.getaddrinfo("localhost", 80)
    for host in ("198.18.0.80", "10.77.0.1", "64:ff9b::c612:50", "::1"):
        assert netguard._allowed_ip(host) is True
    assert netguard._allowed_ip("192.168.1.1") is False
