"""tcp_connect against loopback listeners: success, refused, timeout, IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import socket

import pytest

from probe.addresses import ConnectTo
from probe.measure.tcp import TCPConnect, tcp_connect
from probe.timing import Clock
from tests.fixtures.servers import has_ipv6_loopback

LOGICAL_IP = "192.0.2.21"


@pytest.fixture
def listener(request: pytest.FixtureRequest):
    """The server fixture named by the (indirect) parameter, set up before the test runs."""
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    ("listener", "timeout_s", "failure"),
    [
        ("silent_listener", 2.0, None),
        ("closed_port", 2.0, "connection_refused"),
        ("backlog_full_listener", 0.3, "generic_timeout_error"),
    ],
    indirect=["listener"],
)
async def test_tcp_connect_outcomes(listener, timeout_s: float, failure: str | None) -> None:
    clock = Clock()
    rec = await tcp_connect(LOGICAL_IP, 443, clock=clock, timeout_s=timeout_s,
                            connect_to=listener.connect_to(LOGICAL_IP, 443))
    assert isinstance(rec, TCPConnect)
    assert rec.failure == failure
    assert rec.success is (failure is None)
    # the record carries the logical endpoint, not the loopback one
    assert (rec.ip, rec.port) == (LOGICAL_IP, 443)
    assert 0 <= rec.t0 <= rec.t
    if failure == "generic_timeout_error":
        assert rec.t - rec.t0 == pytest.approx(timeout_s, abs=0.25)
    else:
        assert rec.t - rec.t0 < 1.0


async def test_tcp_connect_without_connect_to_dials_the_ip(silent_listener) -> None:
    rec = await tcp_connect("127.0.0.1", silent_listener.port, clock=Clock(), timeout_s=2.0)
    assert rec.failure is None
    assert (rec.ip, rec.port) == ("127.0.0.1", silent_listener.port)


async def test_tcp_connect_ipv6(tcp_listener) -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    listener = await tcp_listener("silent", host="::1")
    assert listener.endpoint == f"[::1]:{listener.port}"
    direct = await tcp_connect("::1", listener.port, clock=Clock(), timeout_s=2.0)
    assert direct.failure is None
    mapped = await tcp_connect("2001:db8::21", 443, clock=Clock(), timeout_s=2.0,
                               connect_to=ConnectTo(mapping={"[2001:db8::21]:443": listener.endpoint}))
    assert mapped.failure is None
    assert (mapped.ip, mapped.port) == ("2001:db8::21", 443)


async def test_tcp_connect_ipv6_refused() -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))  # bound, not listening: refused
        rec = await tcp_connect("::1", s.getsockname()[1], clock=Clock(), timeout_s=2.0)
    assert rec.failure == "connection_refused"


async def test_tcp_connect_closes_the_socket(tcp_listener) -> None:
    """The listener sees the connection end right after the measurement."""
    listener = await tcp_listener("silent")
    rec = await tcp_connect("127.0.0.1", listener.port, clock=Clock(), timeout_s=2.0)
    assert rec.failure is None
    for _ in range(100):
        if listener.accepted == 1 and listener.open_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert (listener.accepted, listener.open_connections) == (1, 0)


async def test_tcp_connect_rejects_a_name() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        await tcp_connect("www.example.org", 443, clock=Clock(), timeout_s=1.0)
