"""Vantage health canaries: online, offline, and a network that intercepts the control's TLS."""

from __future__ import annotations

import asyncio

from probe.addresses import ConnectTo
from probe.context import MeasureContext, new_doh_session
from probe.health import check_vantage
from probe.measure.tls import TrustStore
from tests.fixtures.dns_server import Reply
from tests.fixtures.world import WORLD_BOGONS, WORLD_TIMEOUTS

TABLE = {("example.com", "A"): [Reply(ips=["192.0.2.1"])]}


async def _check(ca, doh_url: str, *, connect_to: ConnectTo | None = None, tls_canaries=(), ipv6_canaries=()):
    trust = TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=False, policy="relaxed")
    async with new_doh_session(trust) as session:
        ctx = MeasureContext(timeouts=WORLD_TIMEOUTS, trust=trust, bogons=WORLD_BOGONS, doh_urls=(doh_url,),
                             doh_session=session, connect_to=connect_to or ConnectTo())
        # resolver_canary=None: its default asks the system resolver for example.com, which is a real
        # DNS query off this machine (found by tests/fixtures/netguard.py)
        report = await check_vantage(ctx, tls_canaries=tls_canaries, ipv6_canaries=ipv6_canaries,
                                     resolver_canary=None)
        await asyncio.sleep(0.05)
    return report


async def test_online_when_doh_answers_over_verified_tls(ca, doh_server_factory) -> None:
    doh = doh_server_factory(TABLE)
    h = await _check(ca, doh.url)
    assert h.online and h.control_intercepted_by is None and h.status().offline is False


async def test_offline_when_no_canary_reaches_anything(ca, closed_port) -> None:
    h = await _check(ca, f"https://{closed_port.endpoint}/dns-query")
    assert not h.online and h.status().offline
    assert h.canaries[0].failure == "connection_refused"


async def test_intercepted_control_channel_reports_the_issuer(ca, other_ca, doh_server_factory) -> None:
    """A middlebox answering the DoH resolver with its own CA (as corporate proxies do)."""
    doh = doh_server_factory(TABLE, ca=other_ca)
    h = await _check(ca, doh.url)
    assert not h.online
    assert h.canaries[0].failure == "ssl_unknown_authority"
    assert h.control_intercepted_by is not None and "Testing CA" in h.control_intercepted_by
    assert h.status().control_intercepted_by == h.control_intercepted_by


async def test_ipv6_canary(ca, doh_server_factory, backlog_full_listener, tcp_listener) -> None:
    doh = doh_server_factory(TABLE)
    silent = await tcp_listener("silent")
    cmap = ConnectTo(mapping={"[2001:db8::1]:443": backlog_full_listener.endpoint,
                              "[2001:db8::2]:443": silent.endpoint})
    bad = await _check(ca, doh.url, connect_to=cmap, ipv6_canaries=("[2001:db8::1]:443",))
    good = await _check(ca, doh.url, connect_to=cmap, ipv6_canaries=("[2001:db8::1]:443", "[2001:db8::2]:443"))
    assert (bad.ipv6_usable, good.ipv6_usable) == (False, True)


async def test_the_resolver_canaries_and_the_helper_health_run_at_once(monkeypatch) -> None:
    """Issue 13: the resolver canaries and the helper's health check waited for the other
    canaries in turn (start-up paid each round trip). Each fake here finishes only once the
    other has started: run one after the other, they would wait for ever."""
    import types

    from probe import health as health_mod

    resolver_started, helper_started = asyncio.Event(), asyncio.Event()

    async def fake_resolvers(name, ctx, clock):
        resolver_started.set()
        await helper_started.wait()
        return [health_mod.Canary(kind="resolver", target="192.0.2.53:53", ok=True, failure=None, t=0.0)]

    async def fake_health():
        helper_started.set()
        await resolver_started.wait()
        return None

    monkeypatch.setattr(health_mod, "_resolver_canaries", fake_resolvers)
    ctx = types.SimpleNamespace(doh_session=None, doh_urls=(), control=types.SimpleNamespace(
        health=fake_health, base_url="https://helper.example"))
    async with asyncio.timeout(10):
        report = await health_mod.check_vantage(ctx, resolver_canary="example.com")  # type: ignore[arg-type]
    assert [c.kind for c in report.canaries] == ["resolver", "helper"]
    assert report.online and report.helper_failure is None and report.resolver_failure is None
