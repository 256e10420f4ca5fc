"""A helper's reply with values no kzprobe helper sends is not a control (break test, 2026-12-04).

A hostile helper answered ``status_code`` 99999, ``body_length`` -5, a title of NUL characters and
256 ``tcp_connect`` entries (the API documents at most 32): the reply was taken and the verdict read
"BLOCKED: http-diff", reason "status 200/99999". Each out-of-range field now makes the reply
unusable, as garbage JSON does: ``control_failure`` naming the helper and the field, verdicts that
need the control inconclusive. Limits: docs/helper-api.md, "Limits of a reply". The count of
endpoints is not such a field (OONI's helper measures every address, no count bound): more than 32 are
taken, up to 144 with the probe's own first, the rest named as skipped, never the reply refused.

And a helper's HTTP 500/429 followed by a stalled retry read ``generic_timeout_error``: the backstop
deadline in ``_safe_control`` equalled the client's own and fired first, and the retry's timeout
replaced the helper's answer. The reason now names the status.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probe.config import Timeouts
from probe.control import ControlHTTP, HelperControl, control_to_json
from probe.helper.api import (
    MAX_CONTROL_ENDPOINTS,
    MAX_REPLY_ENDPOINTS,
    MAX_REQUEST_ENDPOINTS,
    MAX_SKIPPED,
    control_from_json,
)
from probe.helper.auth import HelperConfigError
from probe.helper.server import HelperConfig
from probe.measure.http import extract_title
from probe.nettests.web import _safe_control
from probe.targets import targets_from_urls
from tests.test_verdict import BOGONS, ep, fetch, helper, obs, q

URL = "http://www.example.org/"


def good_reply() -> dict[str, Any]:
    """The helper's reply for the http-diff case of tests/test_verdict.py (status 200, "Example")."""
    ctl = helper(port=80, http=ControlHTTP(failure=None, final_url=URL, status_code=200, title="Example",
                                           body_length=1000))
    return {**control_to_json(ctl), "x_source": "helper", "api_version": 1}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value
    return mutate


def _many_endpoints(key: str, n: int) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d[key] = {f"192.0.2.{i % 250 + 1}:{1000 + i}": {"status": True, "failure": None} for i in range(n)}
        d["tls_handshake" if key == "tcp_connect" else "tcp_connect"] = {}
    return mutate


BAD_FIELDS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("status-99999", _set("http_request.status_code", 99999), "http_request.status_code"),
    ("status-0", _set("http_request.status_code", 0), "http_request.status_code"),
    ("status-99", _set("http_request.status_code", 99), "http_request.status_code"),
    ("status-1000", _set("http_request.status_code", 1000), "http_request.status_code"),
    ("status-nan", _set("http_request.status_code", float("nan")), "http_request.status_code"),
    ("status-float", _set("http_request.status_code", 200.0), "http_request.status_code"),
    ("status-huge", _set("http_request.status_code", 10 ** 400), "http_request.status_code"),
    ("body-length-minus-5", _set("http_request.body_length", -5), "http_request.body_length"),
    ("body-length-huge", _set("http_request.body_length", 1 << 62), "http_request.body_length"),
    ("body-length-inf", _set("http_request.body_length", float("inf")), "http_request.body_length"),
    ("title-nul", _set("http_request.title", "\x00" * 64), "http_request.title"),
    ("title-too-long", _set("http_request.title", "x" * 5000), "http_request.title"),
    ("failure-nul", _set("http_request.failure", "eof_error\x00"), "http_request.failure"),
    ("headers-too-many", _set("http_request.headers", {f"X-{i}": "v" for i in range(300)}), "http_request.headers"),
    ("header-too-long", _set("http_request.headers", {"X-A": "v" * 20000}), "http_request.headers"),
    # (the count of tcp_connect/tls_handshake entries is no longer one: test_a_reply_about_more_endpoints...)
    ("tcp-connect-not-endpoint", _set("tcp_connect", {"nowhere": {"status": True, "failure": None}}),
     "control.tcp_connect"),
    ("skipped-not-endpoint", _set("x_skipped", ["nowhere"]), "control.x_skipped"),
    ("dns-addrs-not-ip", _set("dns.addrs", ["not-an-address"]), "control.dns.addrs"),
    ("dns-addrs-too-many", _set("dns.addrs", [f"192.0.2.{i % 250}" for i in range(1000)]), "control.dns.addrs"),
    ("refused-not-endpoint", _set("x_refused", ["nowhere"]), "control.x_refused"),
    ("refused-too-many", _set("x_refused", [f"192.0.2.1:{i + 1}" for i in range(1000)]), "control.x_refused"),
    ("failure-too-long", _set("failure", "x" * 100_000), "control.failure"),
]


async def _control_from(app_server, reply: dict[str, Any]):
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(reply, dumps=lambda o: __import__("json").dumps(o))  # NaN/Infinity as Python writes

    base = await app_server(handler)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        return await ctl.measure(URL, "www.example.org", 80, [("192.0.2.1", 80)])


async def test_the_client_sends_the_helper_at_most_its_request_bound(app_server) -> None:
    """A probe with 20 endpoints sends the first MAX_REQUEST_ENDPOINTS (16) of them, in order: the helper
    answers 400 beyond (probe.helper.api, defined once there); the reply is then used."""
    got: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        got.append((await request.json())["endpoints"])
        return web.json_response(good_reply())

    base = await app_server(handler)
    mine = [(f"192.0.2.{i + 1}", 80) for i in range(20)]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        res = await ctl.measure(URL, "www.example.org", 80, mine)
    assert MAX_REQUEST_ENDPOINTS == 16
    assert got == [[f"192.0.2.{i + 1}:80" for i in range(16)]]
    assert res.failure is None and res.usable


def _judge(control):
    from probe.verdict import judge

    o = obs(URL, queries=[q("192.0.2.1")], control=control, endpoints=[ep("192.0.2.1", port=80)],
            http=fetch(403, title="Доступ ограничен", length=200, url=URL))
    return judge(o, bogons=BOGONS)


async def test_the_good_reply_is_used_and_decides(app_server) -> None:
    """The baseline of the table: the same reply with sane values is the control (http-diff)."""
    res = await _control_from(app_server, good_reply())
    assert res.failure is None and res.http is not None and res.http.status_code == 200
    v = _judge(res)
    assert v.blocking == "http-diff", v.reason


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
async def test_an_out_of_range_value_makes_the_control_unusable(app_server, case: str, mutate, field: str) -> None:
    reply = copy.deepcopy(good_reply())
    mutate(reply)
    res = await _control_from(app_server, reply)
    assert not res.usable
    assert res.failure is not None and res.failure.startswith("control_failure: helper reply unusable: "), res.failure
    assert field in res.failure, res.failure
    v = _judge(res)
    assert v.blocking is None and v.accessible is None, v.reason
    assert "control helper" in v.reason and "helper reply unusable" in v.reason, v.reason


def test_the_limits_admit_what_a_helper_sends() -> None:
    """No false rejection at the limits: 32 endpoints, -1 placeholders, status 100 and 999 (LinkedIn's
    answer to bots), a cut title."""
    d = good_reply()
    _many_endpoints("tcp_connect", MAX_CONTROL_ENDPOINTS)(d)
    d["http_request"].update(status_code=999, body_length=0, title="x" * 1024 + "\u2026")
    assert len(control_from_json(d).endpoints) == MAX_CONTROL_ENDPOINTS
    d["http_request"].update(status_code=100)
    assert control_from_json(d).http.status_code == 100  # type: ignore[union-attr]
    d["http_request"].update(failure="eof_error", status_code=-1, body_length=-1, title="")
    h = control_from_json(d).http
    assert h is not None and h.status_code is None and h.body_length is None and h.title is None


def test_a_title_never_holds_a_nul() -> None:
    """An HTML parser turns NUL into U+FFFD (WHATWG HTML, RCDATA state); so does ours, so a NUL in a
    helper's title is never the page's and the reply can be refused for it."""
    assert extract_title(b"<title>a\x00b</title>", "text/html") == "a\ufffdb"


def test_a_helper_cannot_be_configured_past_the_apis_endpoint_limit() -> None:
    with pytest.raises(HelperConfigError, match="max_measured_endpoints"):
        HelperConfig(tokens=frozenset({"x" * 20}), max_measured_endpoints=MAX_CONTROL_ENDPOINTS + 1)


@pytest.mark.parametrize("status", [500, 429])
async def test_a_helper_status_then_a_stalled_retry_names_the_status(app_server, status: int) -> None:
    """First answer HTTP 500 (or 429), the retry never answers: the reason is the helper's status, also
    through the runner's backstop (``_safe_control``), whose deadline used to fire first."""
    calls: list[int] = []
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) % 2 == 0:
            await release.wait()  # the retry stalls until the test ends
        return web.json_response({"error": "x"}, status=status, headers={"Retry-After": "0"})

    base = await app_server(handler)
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=1.0, retries=1)
            res = await ctl.measure(URL, "www.example.org", 80, [])
            assert res.failure == f"control_failure: helper answered HTTP {status}; retry: generic_timeout_error"
            timeouts = Timeouts(control_s=1.0, measurement_s=10.0)
            assert timeouts.control_deadline_s == ctl.timeout_s
            ctx = SimpleNamespace(control=ctl, timeouts=timeouts)
            res = await _safe_control(ctx, targets_from_urls([URL])[0], [])  # type: ignore[arg-type]
            assert res.failure is not None and f"helper answered HTTP {status}" in res.failure, res.failure
    finally:
        release.set()  # else the server's clean-up waits a minute for the stalled handler
    assert len(calls) == 4


def test_the_helpers_own_reply_stays_within_the_limits() -> None:
    """A name with 300 addresses (and as many refused) is an honest helper's observation: its reply keeps
    the first 128 (144 refused), so the probe does not refuse it."""
    from probe.control import ControlResult
    from probe.helper.api import MAX_DNS_ADDRS, MAX_REFUSED
    from probe.helper.server import reply_body

    addrs = tuple(f"2001:db8::{i:x}" for i in range(300))
    body = reply_body(ControlResult(source="helper", failure=None, dns_addresses=addrs,
                                    refused=tuple(f"[{a}]:443" for a in addrs)))
    assert body["api_version"] == 1
    res = control_from_json(body)
    assert res.dns_addresses == addrs[:MAX_DNS_ADDRS] and len(res.refused) == MAX_REFUSED


def _with_probe_endpoint(n: int, key: str = "tcp_connect") -> Callable[[dict[str, Any]], None]:
    """``n`` entries, the probe's own endpoint (192.0.2.1:80, as :func:`_control_from` sends) the last."""
    def mutate(d: dict[str, Any]) -> None:
        _many_endpoints(key, n - 1)(d)
        d[key]["192.0.2.1:80"] = {"status": False, "failure": "connection_refused"}
    return mutate


@pytest.mark.parametrize(("n", "key"), [(MAX_CONTROL_ENDPOINTS + 1, "tcp_connect"), (40, "tcp_connect"),
                                        (MAX_REPLY_ENDPOINTS, "tcp_connect"), (256, "tcp_connect"),
                                        (256, "tls_handshake")])
async def test_a_reply_about_more_endpoints_than_our_helper_measures_is_taken(app_server, n: int, key: str) -> None:
    """A site behind a CDN (many A and AAAA records: the control's and the probe's addresses) can make
    a helper's reply hold more than our helper's 32 endpoints; OONI's helper measures every address
    (ooni/probe-cli internal/oohelperd ipinfo.go, no count bound). Before: "control.tcp_connect: 33
    entries, at most 32" and the whole control lost (inconclusive for a bound). Now the reply is the
    control; up to 144 endpoints are taken, the probe's own first, the rest named in ``skipped``."""
    reply = copy.deepcopy(good_reply())
    _with_probe_endpoint(n, key)(reply)
    res = await _control_from(app_server, reply)
    assert res.usable, res.failure
    assert len(res.endpoints) == min(n, MAX_REPLY_ENDPOINTS)
    probe_ep = res.endpoint("192.0.2.1", 80)  # the probe's own endpoint, last in the reply: kept
    assert probe_ep is not None and probe_ep.tcp_failure == ("connection_refused" if key == "tcp_connect" else None)
    assert len(res.skipped) == max(0, n - MAX_REPLY_ENDPOINTS) and "192.0.2.1:80" not in res.skipped
    assert not set(res.skipped) & set(res.endpoints)


def test_the_helpers_skipped_endpoints_are_read_and_a_long_list_cut() -> None:
    d = good_reply()
    d["x_skipped"] = ["192.0.2.77:443", "[2001:db8::1]:443"]
    assert control_from_json(d).skipped == ("192.0.2.77:443", "[2001:db8::1]:443")
    d["x_skipped"] = [f"192.0.2.1:{i + 1}" for i in range(1000)]
    assert len(control_from_json(d).skipped) == MAX_SKIPPED  # cut, not refused
