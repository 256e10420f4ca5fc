"""The helper's health check needs the helper's own reply: a server answering 200 with anything
else (a captive portal, a parked page, a hostile server) made an offline vantage look online
(break test, stop 18: DoH and TLS canaries failed, the helper canary said ok, exit 0 not 75)."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest
from aiohttp import web

from probe.control import HEALTH_MAX_BYTES, HelperControl
from probe.helper.server import _health


async def _garbage(request: web.Request) -> web.Response:
    return web.Response(body=b"<html>Welcome to the hotel Wi-Fi</html>")


async def _wrong_json(request: web.Request) -> web.Response:
    return web.json_response({"status": "down"})


async def _huge(request: web.Request) -> web.Response:
    return web.Response(body=json.dumps({"status": "ok", "pad": "x" * (2 * HEALTH_MAX_BYTES)}).encode())


async def _error(request: web.Request) -> web.Response:
    return web.Response(status=503)


@pytest.mark.parametrize(("handler", "ok", "says"), [
    (_health, True, None),  # the real helper's handler
    (_garbage, False, "not a kzprobe helper's health reply"),
    (_wrong_json, False, "not a kzprobe helper's health reply"),
    (_huge, False, "not a kzprobe helper's health reply"),
    (_error, False, "HTTP 503"),
])
async def test_health_is_the_helpers_own_reply(app_server, handler, ok: bool, says: str | None) -> None:
    base = await app_server(handler)
    async with aiohttp.ClientSession() as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        failure = await ctl.health()
    assert (failure is None) == ok, failure
    if says:
        assert failure is not None and says in failure


async def _in_two_pieces(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b'{"status": ')
    await asyncio.sleep(0.3)  # the client usually reads the first piece alone (passes either way when right)
    await resp.write(b'"ok"}')
    await resp.write_eof()
    return resp


async def _gzipped(request: web.Request) -> web.Response:  # a reverse proxy compressing the helper's reply
    return web.Response(body=gzip.compress(b'{"status": "ok"}'), headers={"Content-Encoding": "gzip"})


async def _bad_gzip(request: web.Request) -> web.Response:
    return web.Response(body=b"not gzip at all", headers={"Content-Encoding": "gzip"})


@pytest.mark.parametrize(("handler", "ok"), [(_in_two_pieces, True), (_gzipped, True), (_bad_gzip, False)])
async def test_health_reads_the_whole_reply_decoded(app_server, handler, ok: bool) -> None:
    """One ``content.read()`` gave the first chunk only (a reply in two pieces read as garbage: a working
    helper looked down), and a proxy's gzip was never undone; now ``read_body`` (bounded, decoded) and
    ``loads_json``, on a session that does not decompress (as the probe's, probe.context)."""
    base = await app_server(handler)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        failure = await ctl.health()
    assert (failure is None) == ok, failure


async def test_a_server_failing_the_health_check_is_not_used_as_the_control(app_server) -> None:
    """Break test: a server answering the health check with junk but the control with a plausible
    reply decided verdicts ('accessible – the page matches the control's') while the summary said
    HELPER UNREACHABLE. Once the health check says it is not a helper, no control request is sent."""
    seen: list[str] = []

    async def impostor(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path.endswith("/health"):
            return web.Response(body=b"<html>parked</html>")
        return web.json_response({"api_version": "1", "http_request": {"status_code": 200}})

    base = await app_server(impostor)
    async with aiohttp.ClientSession() as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        assert "not a kzprobe helper" in (await ctl.health() or "")
        res = await ctl.measure("https://example.org/", "example.org", 443, [("198.51.100.7", 443)])
    assert res.failure is not None and "failed its health check" in res.failure
    assert seen == ["/api/v1/health"]


async def test_a_helper_down_at_the_health_check_is_still_asked(app_server) -> None:
    """A 503 (or a timeout) at the health check is transient: the control is still asked."""
    seen: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=503)

    base = await app_server(busy)
    async with aiohttp.ClientSession() as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        assert await ctl.health() == "HTTP 503"
        await ctl.measure("https://example.org/", "example.org", 443, [("198.51.100.7", 443)])
    assert seen == ["/api/v1/health", "/api/v1/control"]


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/control"])
async def test_the_helpers_redirects_are_never_followed(app_server, path: str) -> None:
    """Break test: a helper answering the control with 307 to an address of the vantage's LAN had
    the probe POST the input and its addresses there, twice. A redirect is the helper's failure."""
    followed: list[str] = []

    async def target(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response({"status": "ok"})

    elsewhere = await app_server(target)

    async def redirector(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": f"{elsewhere}/steal"})

    base = await app_server(redirector)
    async with aiohttp.ClientSession() as session:
        ctl = HelperControl(base_url=base, token="t", session=session, timeout_s=5, retries=0)
        if path.endswith("health"):
            assert await ctl.health() == "HTTP 307"
        else:
            res = await ctl.measure("https://example.org/", "example.org", 443, [("198.51.100.7", 443)])
            assert res.failure is not None and "helper answered HTTP 307" in res.failure
    assert followed == []
