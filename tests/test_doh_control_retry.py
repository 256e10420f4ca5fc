"""The DoH control retries a resolver once on a fresh connection after a transport failure
(issue 12: a vantage whose kept-alive DoH connections freeze after some bytes lost the DoH
answer for 3 of 12 inputs of the lab's controls-world). Loopback servers only."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rdatatype
import trustme
from aiohttp import web

from probe import failures
from probe.config import Timeouts
from probe.context import MeasureContext, new_doh_session
from probe.control import doh_control
from probe.measure.tls import TrustStore
from probe.timing import Clock
from tests.fixtures.dns_server import FakeDoHServer, Reply, table_for_hosts

NAME = "www.example.org"
DNS_S = 6.0  # the stalled attempt waits its half (3 s), the retry has the rest: ample on a loaded machine


class _StallingDoH(FakeDoHServer):
    """A DoH server that never answers on its first ``stall_connections`` connections (it reads
    the request and holds the connection open), and answers on every later one."""

    def __init__(self, table, *, cert: trustme.LeafCert, stall_connections: int) -> None:
        self.stall_connections = stall_connections
        self.connections: list[int] = []  # the client ports, in the order first seen
        super().__init__(table, cert=cert)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = peer[1] if peer else -1
        if port not in self.connections:
            self.connections.append(port)
        if self.connections.index(port) < self.stall_connections:
            await request.read()
            assert self._closing is not None
            await self._closing.wait()
            return web.Response(status=503)
        return await super()._handle(request)


def _trust(ca: trustme.CA) -> TrustStore:
    return TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=False, policy="relaxed")


async def _control(server: FakeDoHServer, ca: trustme.CA):
    trust = _trust(ca)
    async with new_doh_session(trust) as session:
        ctx = MeasureContext(trust=trust, timeouts=Timeouts(dns_s=DNS_S), doh_urls=(server.url,), doh_session=session)
        result = await doh_control(NAME, ctx=ctx, clock=Clock())
    await asyncio.sleep(0.05)  # let the cancelled TLS connections close (no ResourceWarning)
    return result


async def test_stalled_first_connections_retry_on_a_fresh_one(ca: trustme.CA) -> None:
    """A and AAAA both stall on their connections: the resolver is asked again on fresh
    connections, which answer; the record keeps both attempts' queries."""
    with _StallingDoH(table_for_hosts({NAME: ["192.0.2.71"]}), cert=ca.issue_cert("127.0.0.1"),
                      stall_connections=2) as server:
        r = await _control(server, ca)
        assert len(server.connections) == 4  # two stalled, two fresh
    assert r.failure is None and r.dns_addresses == ("192.0.2.71",)
    assert [(q.query_type, q.failure) for q in r.dns_queries] == [
        ("A", failures.GENERIC_TIMEOUT), ("AAAA", failures.GENERIC_TIMEOUT),
        ("A", None), ("AAAA", failures.DNS_NO_ANSWER)]
    assert r.dns_queries[2].t0 >= r.dns_queries[0].t  # the retry after the stalled attempt


async def test_kept_alive_connection_that_froze_is_not_reused(ca: trustme.CA) -> None:
    """Each connection answers once then freezes (the lab's 2,500 B budget): the second control
    on the same session gets the frozen kept-alive connections, the retry fresh ones."""

    class _OnceDoH(_StallingDoH):
        def __init__(self, *a, **kw) -> None:
            self.served: set[int] = set()
            super().__init__(*a, **kw)

        async def _handle(self, request: web.Request) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            port = peer[1] if peer else -1
            if port in self.served:  # a second request on this connection: frozen
                await request.read()
                assert self._closing is not None
                await self._closing.wait()
                return web.Response(status=503)
            self.served.add(port)
            return await FakeDoHServer._handle(self, request)

    trust = _trust(ca)
    with _OnceDoH(table_for_hosts({NAME: ["192.0.2.71"]}), cert=ca.issue_cert("127.0.0.1"),
                  stall_connections=0) as server:
        async with new_doh_session(trust) as session:
            ctx = MeasureContext(trust=trust, timeouts=Timeouts(dns_s=DNS_S), doh_urls=(server.url,),
                                 doh_session=session)
            first = await doh_control(NAME, ctx=ctx, clock=Clock())
            second = await doh_control(NAME, ctx=ctx, clock=Clock())
        await asyncio.sleep(0.05)
    assert first.failure is None and len(first.dns_queries) == 2
    assert second.failure is None and second.dns_addresses == ("192.0.2.71",)
    # the two idle kept-alive connections were reused and froze; the retry's fresh ones answered
    assert [q.failure for q in second.dns_queries] == [failures.GENERIC_TIMEOUT] * 2 + [None, failures.DNS_NO_ANSWER]


async def test_only_the_stalled_query_is_asked_again(ca: trustme.CA) -> None:
    """The lab's case (vdohfreeze, dns-blocked.example.kz): the A query froze on its kept-alive
    connection while the AAAA answered NOERROR without data. No address, so the A alone is
    asked again on a fresh connection, and its answer is the control's."""

    class _StallFirstA(FakeDoHServer):
        def __init__(self, *a, **kw) -> None:
            self.a_seen = 0
            super().__init__(*a, **kw)

        async def _handle(self, request: web.Request) -> web.StreamResponse:
            wire = await request.read()  # cached: the parent handler reads it again
            if dns.message.from_wire(wire).question[0].rdtype == dns.rdatatype.A:
                self.a_seen += 1
                if self.a_seen == 1:
                    assert self._closing is not None
                    await self._closing.wait()
                    return web.Response(status=503)
            return await super()._handle(request)

    with _StallFirstA(table_for_hosts({NAME: ["192.0.2.71"]}), cert=ca.issue_cert("127.0.0.1")) as server:
        r = await _control(server, ca)
    assert r.failure is None and r.dns_addresses == ("192.0.2.71",)
    assert [(q.query_type, q.failure) for q in r.dns_queries] == [
        ("A", failures.GENERIC_TIMEOUT), ("AAAA", failures.DNS_NO_ANSWER), ("A", None)]


async def test_a_resolver_that_never_answers_fails_after_both_attempts(ca: trustme.CA) -> None:
    """Every connection stalls: two attempts, each a timeout; the failure is the timeout."""
    with _StallingDoH(table_for_hosts({NAME: ["192.0.2.71"]}), cert=ca.issue_cert("127.0.0.1"),
                      stall_connections=100) as server:
        r = await _control(server, ca)
    assert r.failure == failures.GENERIC_TIMEOUT
    assert [q.failure for q in r.dns_queries] == [failures.GENERIC_TIMEOUT] * 4


async def test_answers_and_tls_failures_are_not_retried(ca: trustme.CA) -> None:
    """NXDOMAIN is an answer; an unknown authority is not a transport failure: one attempt each."""
    with FakeDoHServer({(NAME, "A"): [Reply(rcode="NXDOMAIN")], (NAME, "AAAA"): [Reply(rcode="NXDOMAIN")]},
                       cert=ca.issue_cert("127.0.0.1")) as server:
        r = await _control(server, ca)
    assert r.failure is None and r.dns_failure == failures.DNS_NXDOMAIN and len(r.dns_queries) == 2
    other = trustme.CA()
    with FakeDoHServer(table_for_hosts({NAME: ["192.0.2.71"]}), cert=other.issue_cert("127.0.0.1")) as server:
        r = await _control(server, ca)
    assert r.failure == failures.SSL_UNKNOWN_AUTHORITY and len(r.dns_queries) == 2
