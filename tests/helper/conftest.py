"""A helper lab on loopback: the real helper app listening on 127.0.0.1, its own fake DoH
resolver, an allowed web site, and a trap listener that counts every connection.

Logical "public" addresses (192.0.2.x, 198.51.100.x, allow-listed by the test policy)
are mapped with :class:`~probe.addresses.ConnectTo` to loopback servers; every address
the policy must refuse (127.0.0.1, 10.x, 169.254.169.254, ::1, ...) is mapped to the
trap, so that a connection that slipped through *would* be counted; anything unmapped
goes to ``fallback`` (a closed loopback port, or the trap for the SSRF table). Nothing
leaves this machine.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import trustme

from probe.addresses import ConnectTo, format_endpoint
from probe.context import MeasureContext, new_doh_session
from probe.control import ControlResult, measure_control
from probe.helper.server import HelperConfig, RunningHelper, start
from probe.helper.ssrf import AddressPolicy
from probe.measure.tls import TrustStore
from tests.fixtures.dns_server import FakeDoHServer, Reply
from tests.fixtures.servers import Listener, Route, WebServer, redirect
from tests.fixtures.world import WORLD_BOGONS, WORLD_TIMEOUTS

TOKEN = "probe-one-token-0123456789abcdef"
TOKEN2 = "probe-two-token-fedcba9876543210"

ALLOWED_IP = "192.0.2.10"
OTHER_IP = "198.51.100.20"
PAGE = b"<html><head><title>Allowed Example</title></head><body>hello</body></html>"

#: Addresses the policy refuses; each is mapped (ports 80, 443, 8080, 22) to the trap.
TRAP_IPS = (
    "127.0.0.1", "127.0.0.2", "10.0.0.1", "10.0.0.5", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1",
    "fe80::1", "fc00::1", "64:ff9b::7f00:1", "2002:7f00:1::", "::", "192.0.0.8", "198.18.0.1",
)
TRAP_PORTS = (80, 443, 8080, 22)

#: The helper's DoH answers.
DOH_TABLE: dict[str, list[str]] = {
    "allowed.example": [ALLOWED_IP],
    "www.allowed.example": [ALLOWED_IP],
    "other.example": [OTHER_IP],
    "loopback.example": ["127.0.0.1"],
    "private.example": ["10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["127.0.0.1", ALLOWED_IP],
    "v6loop.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "ula.example": ["fc00::1"],
}

#: The allowed site's routes: a page, redirects into refused places, a hanging page.
ROUTES: dict[str, Any] = {
    "/": PAGE,
    "/redir-loopback": redirect("http://127.0.0.1/"),
    "/redir-loopback-https": redirect("https://127.0.0.1/"),
    "/redir-metadata": redirect("http://metadata.example/latest/meta-data/"),
    "/redir-private-name": redirect("http://private.example/"),
    "/redir-mapped": redirect("http://[::ffff:127.0.0.1]/"),
    "/redir-v6-loopback": redirect("http://[::1]/"),
    "/redir-decimal": redirect("http://2130706433/"),
    "/redir-port": redirect("http://allowed.example:8080/"),
    "/redir-literal-port": redirect(f"http://{ALLOWED_IP}:22/"),
    "/redir-ok": redirect("https://other.example/"),
    "/slow": Route(action="hang"),
}


def doh_table() -> dict[tuple[str, str], list[Reply]]:
    table: dict[tuple[str, str], list[Reply]] = {}
    for name, ips in DOH_TABLE.items():
        table[(name, "A")] = [Reply(ips=[i for i in ips if ":" not in i])]
        table[(name, "AAAA")] = [Reply(ips=[i for i in ips if ":" in i])]
    return table


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of the helper: status, headers, decoded JSON body (None if not JSON)."""

    status: int
    headers: Any
    json: Any
    text: str


@dataclass(kw_only=True)
class Lab:
    """One running helper and its little Internet (see the module docstring)."""

    helper: RunningHelper
    config: HelperConfig
    site: WebServer
    other: WebServer
    trap: Listener
    doh: FakeDoHServer
    trust: TrustStore
    mapping: dict[str, str]
    fallback: str
    session: aiohttp.ClientSession
    clock: list[float] = field(default_factory=lambda: [1000.0])

    @property
    def url(self) -> str:
        return self.helper.url

    async def post(self, body: Any = None, *, data: Any = None, token: str | None = TOKEN,
                   headers: dict[str, str] | None = None, path: str = "/api/v1/control") -> Answer:
        """POST to the helper: ``body`` as JSON, or raw ``data``; ``token`` as a bearer token."""
        h = dict(headers or {})
        if token is not None:
            h.setdefault("Authorization", f"Bearer {token}")
        kw: dict[str, Any] = {"json": body} if data is None else {"data": data}
        async with self.session.post(self.url + path, headers=h, **kw) as resp:
            return await _answer(resp)

    async def get(self, path: str, **kw: Any) -> Answer:
        async with self.session.get(self.url + path, **kw) as resp:
            return await _answer(resp)

    async def in_process(self, url: str, domain: str, port: int, endpoints: list[tuple[str, int]]) -> ControlResult:
        """:func:`measure_control` run here, with the helper's settings (no HTTP in between)."""
        async with new_doh_session(self.trust) as session:
            ctx = MeasureContext(timeouts=self.config.timeouts, trust=self.trust, bogons=self.config.bogons,
                                 connect_to=ConnectTo(mapping=self.mapping, fallback=self.fallback),
                                 system_resolver=False, doh_urls=self.config.doh_urls, doh_session=session,
                                 max_body_bytes=self.config.fetch_body_cap, store_body_bytes=0,
                                 max_redirects=self.config.max_redirects,
                                 max_endpoints=self.config.max_measured_endpoints)
            result = await measure_control(url, domain, port, endpoints, ctx=ctx, source="helper",
                                           allow_address=self.config.policy.allows,
                                           allowed_ports=self.config.policy.ports)
        await asyncio.sleep(0.05)
        return result


async def _answer(resp: aiohttp.ClientResponse) -> Answer:
    text = await resp.text()
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        body = None
    return Answer(status=resp.status, headers=resp.headers, json=body, text=text)


LabFactory = Callable[..., Awaitable[Lab]]


@pytest.fixture
async def helper_lab(ca: trustme.CA, web_server: Any, doh_server_factory: Any, tcp_listener: Any,
                     closed_port: Listener) -> AsyncIterator[LabFactory]:
    """Factory: ``await helper_lab(fallback="closed" | "trap", **HelperConfig overrides)`` → :class:`Lab`.

    The policy allow-lists only the test's public ranges (192.0.2.0/24, 198.51.100.0/24).
    Everything started is stopped at teardown.
    """
    labs: list[Lab] = []

    async def make(*, fallback: str = "closed", **overrides: Any) -> Lab:
        site = await web_server(ROUTES, http=True, https=True,
                                names=("allowed.example", "www.allowed.example", "mixed.example"))
        other = await web_server({"/": PAGE}, http=True, https=True, names=("other.example",))
        trap = await tcp_listener("close")
        doh = doh_server_factory(doh_table(), default=[Reply(rcode="NXDOMAIN")])
        mapping = {**site.connect_to(ALLOWED_IP).mapping, **other.connect_to(OTHER_IP).mapping}
        for ip, port in itertools.product(TRAP_IPS, TRAP_PORTS):
            mapping[format_endpoint(ip, port)] = trap.endpoint
        for port in (8080, 22):
            mapping[format_endpoint(ALLOWED_IP, port)] = trap.endpoint
        fb = trap.endpoint if fallback == "trap" else closed_port.endpoint
        trust = TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=False, policy="relaxed")
        clock = [1000.0]
        settings: dict[str, Any] = {
            "tokens": frozenset({TOKEN, TOKEN2}),
            "policy": AddressPolicy(allow_private=("192.0.2.0/24", "198.51.100.0/24")),
            "timeouts": WORLD_TIMEOUTS, "trust": trust, "bogons": WORLD_BOGONS, "doh_urls": (doh.url,),
            "connect_to": ConnectTo(mapping=mapping, fallback=fb), "listen_host": "127.0.0.1", "listen_port": 0,
            "clock": lambda: clock[0],
        }
        settings.update(overrides)
        config = HelperConfig(**settings)
        helper = await start(config)
        session = aiohttp.ClientSession()
        lab = Lab(helper=helper, config=config, site=site, other=other, trap=trap, doh=doh, trust=trust,
                  mapping=mapping, fallback=fb, session=session, clock=clock)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        await lab.session.close()
        await lab.helper.close()
    await asyncio.sleep(0.05)  # let cancelled TLS closes finish before the loop ends
