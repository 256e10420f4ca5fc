"""The helper's HTTP API on loopback: happy path, auth, limits, malformed requests, overload."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from probe.config import Timeouts
from probe.control import ControlResult
from probe.helper import control_from_json, token_id
from tests.helper.conftest import ALLOWED_IP, OTHER_IP, TOKEN, TOKEN2, LabFactory

#: Short HTTP timeout so that "/slow" (a hanging page) costs about a second.
QUICK = Timeouts(dns_s=1.0, dns_listen_s=0.2, connect_s=0.5, tls_s=0.6, http_s=1.0, measurement_s=10.0)


def assert_same_control(got: ControlResult, want: ControlResult) -> None:
    """Field by field, where a second run can be expected to agree (not Date headers)."""
    for name in ("source", "failure", "dns_failure", "dns_addresses", "endpoints", "refused"):
        assert getattr(got, name) == getattr(want, name), name
    assert (got.http is None) == (want.http is None)
    if got.http is not None and want.http is not None:
        for name in ("failure", "final_url", "status_code", "title", "body_length", "body_truncated", "body_sha256"):
            assert getattr(got.http, name) == getattr(want.http, name), f"http.{name}"
        assert [k for k, _ in got.http.headers] == [k for k, _ in want.http.headers]
        assert dict(got.http.headers).get("Content-Type") == dict(want.http.headers).get("Content-Type")


# --- happy path ---------------------------------------------------------------------------


async def test_https_control_matches_measure_control_in_process(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    endpoints = [(ALLOWED_IP, 443), (OTHER_IP, 443)]
    a = await lab.post({"url": "https://allowed.example/", "endpoints": [f"{ip}:{p}" for ip, p in endpoints]})
    assert a.status == 200, a.text
    assert a.json["api_version"] == 1 and a.json["x_source"] == "helper"
    got = control_from_json(a.json)
    assert got.usable and got.dns_addresses == (ALLOWED_IP,)
    own = got.endpoint(ALLOWED_IP, 443)
    assert own is not None and own.tcp_failure is None and own.tls_ok and own.tls_verification_failure is None
    assert own.tls_issuer and own.tls_leaf_spki_sha256 and len(own.tls_leaf_spki_sha256) == 64
    probe_ep = got.endpoint(OTHER_IP, 443)  # the probe's endpoint: another site's certificate
    assert probe_ep is not None and probe_ep.tls_attempted and probe_ep.tls_verification_failure == "ssl_invalid_hostname"
    assert got.http is not None and got.http.failure is None
    assert (got.http.status_code, got.http.title, got.http.final_url) == (200, "Allowed Example", "https://allowed.example/")
    assert got.http.body_length == 74 and got.http.body_sha256 and not got.http.body_truncated
    assert got.refused == ()
    want = await lab.in_process("https://allowed.example/", "allowed.example", 443, endpoints)
    assert_same_control(got, want)


async def test_http_control_and_a_followed_redirect(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    a = await lab.post({"url": "HTTP://Allowed.Example/redir-ok#frag"})
    assert a.status == 200, a.text
    got = control_from_json(a.json)
    assert list(got.endpoints) == [f"{ALLOWED_IP}:80"] and not got.endpoints[f"{ALLOWED_IP}:80"].tls_attempted
    assert got.http is not None and got.http.status_code == 200 and got.http.final_url == "https://other.example/"
    want = await lab.in_process("http://allowed.example/redir-ok", "allowed.example", 80, [])
    assert_same_control(got, want)


async def test_name_that_does_not_resolve(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    a = await lab.post({"url": "https://nowhere.example/"})
    assert a.status == 200
    assert a.json["dns"] == {"failure": "dns_nxdomain_error", "addrs": []}
    assert a.json["http_request"]["failure"] == "dns_nxdomain_error"


# --- health -------------------------------------------------------------------------------


async def test_health_needs_no_token_and_says_little(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
        a = await lab.get("/api/v1/health", headers=headers)
        assert a.status == 200
        assert a.json == {"status": "ok", "api_version": 1, "software_version": a.json["software_version"]}
        assert isinstance(a.json["software_version"], str)
        assert a.headers["Server"] == "kzprobe-helper" and "aiohttp" not in str(dict(a.headers))
        assert a.headers["Cache-Control"] == "no-store"


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer not-a-configured-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
    {"X-Token": TOKEN},
])
async def test_missing_or_wrong_token_is_401_without_detail(helper_lab: LabFactory, headers: dict[str, str]) -> None:
    lab = await helper_lab()
    a = await lab.post({"url": "https://allowed.example/"}, token=None, headers=headers)
    assert a.status == 401
    assert a.json == {"error": "unauthorized"}
    assert a.headers["WWW-Authenticate"] == 'Bearer realm="kzprobe-helper"'
    assert lab.doh.queries == [] and lab.site.requests == []


async def test_token_in_query_string_is_not_accepted(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    a = await lab.post({"url": "https://allowed.example/"}, token=None, path=f"/api/v1/control?access_token={TOKEN}")
    assert a.status == 401 and a.json == {"error": "unauthorized"}


async def test_every_configured_token_works_and_scheme_is_case_insensitive(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    for auth in (f"Bearer {TOKEN}", f"bearer {TOKEN2}", f"BEARER  {TOKEN}"):
        a = await lab.post({"url": "ftp://x.example/"}, token=None, headers={"Authorization": auth})
        assert a.status == 403, auth  # authenticated, then refused by the URL policy


async def test_tokens_never_reach_the_log(helper_lab: LabFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lab = await helper_lab(rate_per_token=2)
    await lab.post({"url": "https://allowed.example/"})
    await lab.post({"url": "https://allowed.example/"}, token=TOKEN2)
    await lab.post({"url": "https://allowed.example/"}, token="wrong-token-0123456789abcdef")
    await lab.post({"url": "ftp://x.example/"})
    await lab.post({"url": "ftp://x.example/"})  # rate limited
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in (TOKEN, TOKEN2, "wrong-token-0123456789abcdef"):
        assert secret not in text
    assert f"token={token_id(TOKEN)}" in caplog.text and "status=429" in caplog.text


# --- limits -------------------------------------------------------------------------------


async def test_rate_limit_per_token_is_429_with_retry_after(helper_lab: LabFactory) -> None:
    lab = await helper_lab(rate_per_token=2)  # burst 2, then one every 30 s
    refused = {"url": "ftp://x.example/"}  # cheap: 403 after the rate check
    assert [(await lab.post(refused)).status for _ in range(2)] == [403, 403]
    a = await lab.post(refused)
    assert a.status == 429 and a.json == {"error": "rate limited"}
    assert a.headers["Retry-After"] == "30"
    assert (await lab.post(refused, token=TOKEN2)).status == 403  # a bucket per token
    assert (await lab.post(refused, token=None)).status == 401  # auth comes first
    lab.clock[0] += 29.0
    assert (await lab.post(refused)).headers["Retry-After"] == "1"
    lab.clock[0] += 1.0
    assert (await lab.post(refused)).status == 403


def _padded(size: int) -> bytes:
    base = b'{"url": "ftp://x.example/", "pad": ""}'
    body = base[:-2] + b"x" * (size - len(base)) + base[-2:]
    assert len(body) == size and json.loads(body)
    return body


async def test_body_limit_is_413(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    ok = await lab.post(data=_padded(16 * 1024), headers={"Content-Type": "application/json"})
    assert ok.status == 403  # read and judged
    big = await lab.post(data=_padded(16 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert big.status == 413 and "16384" in big.json["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(40):
            yield b" " * 1024

    chunked = await lab.post(data=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status == 413
    assert (await lab.post(data=_padded(20000), token=None)).status == 401
    assert (await lab.get("/api/v1/health")).status == 200


async def test_endpoint_count_limit(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    many = [f"192.0.2.{100 + i}:443" for i in range(17)]
    a = await lab.post({"url": "https://allowed.example/", "endpoints": many})
    assert a.status == 400 and "too many" in a.json["error"] and "16" in a.json["error"]
    a = await lab.post({"url": "https://allowed.example/", "endpoints": many[:16]})
    assert a.status == 200, a.text
    assert len(a.json["tcp_connect"]) == 17  # its own answer + the probe's 16
    assert a.json["tcp_connect"]["192.0.2.100:443"]["failure"] == "connection_refused"


@pytest.mark.parametrize("data, needle", [
    (b"not json", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),
    (b'["https://allowed.example/"]', "JSON object"),
    (b"{}", "url"),
    (b'{"url": 42}', "url"),
    (b'{"url": "https://allowed.example/", "endpoints": "192.0.2.1:443"}', "endpoints"),
    (b'{"url": "https://allowed.example/", "endpoints": [443]}', "endpoints"),
    (b'{"url": "https://allowed.example/", "endpoints": ["192.0.2.1"]}', "'192.0.2.1'"),
    (b'{"url": "https://allowed.example/", "endpoints": ["example.org:443"]}', "'example.org:443'"),
    (b'{"url": "https://allowed.example/", "endpoints": ["192.0.2.1:0"]}', "'192.0.2.1:0'"),
    (b'{"url": "https://exa_mple..org/"}', "'https://exa_mple..org/'"),
    (b'{"url": "https://allowed example/"}', "allowed example"),
    (b'{"url": "allowed.example"}', "'allowed.example'"),
    (b'{"url": "http://1.2.3.4.5/"}', "1.2.3.4.5"),
    (b'{"url": ""}', "empty"),
])
async def test_malformed_requests_are_400_naming_the_problem(helper_lab: LabFactory, data: bytes, needle: str) -> None:
    lab = await helper_lab()
    a = await lab.post(data=data, headers={"Content-Type": "application/json"})
    assert a.status == 400, a.text
    assert needle in a.json["error"]
    assert lab.doh.queries == [] and lab.site.requests == []


async def test_unknown_path_and_wrong_method_are_json_errors(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    a = await lab.get("/api/v1/control")
    assert a.status == 405 and a.json == {"error": "method not allowed"} and "POST" in a.headers["Allow"]
    a = await lab.get("/admin")
    assert a.status == 404 and a.json == {"error": "not found"}


# --- overload -----------------------------------------------------------------------------


async def _wait_for(cond, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_full_server_sheds_load_at_once(helper_lab: LabFactory) -> None:
    lab = await helper_lab(max_concurrent=1, timeouts=QUICK)
    slow = asyncio.create_task(lab.post({"url": "http://allowed.example/slow"}))
    await _wait_for(lambda: any(r.path == "/slow" for r in lab.site.requests))
    t0 = time.monotonic()
    busy = await lab.post({"url": "https://allowed.example/"})
    assert busy.status == 429 and busy.json == {"error": "busy"} and busy.headers["Retry-After"] == "1"
    assert time.monotonic() - t0 < 0.5
    assert (await lab.get("/api/v1/health")).status == 200
    first = await slow
    assert first.status == 200 and first.json["http_request"]["failure"] == "generic_timeout_error"
    assert (await lab.post({"url": "https://allowed.example/"})).status == 200


async def test_overload_burst_stays_up(helper_lab: LabFactory) -> None:
    lab = await helper_lab(max_concurrent=2, rate_per_token=10_000, timeouts=QUICK)
    answers = await asyncio.gather(*(lab.post({"url": "http://allowed.example/slow"}) for _ in range(25)))
    statuses = sorted(a.status for a in answers)
    assert statuses.count(200) == 2 and statuses.count(429) == 23, statuses
    assert (await lab.get("/api/v1/health")).status == 200
    assert (await lab.post({"url": "https://allowed.example/"})).status == 200


async def test_deadline_is_504(helper_lab: LabFactory) -> None:
    lab = await helper_lab(request_deadline_s=0.3, max_concurrent=1)
    t0 = time.monotonic()
    a = await lab.post({"url": "http://allowed.example/slow"})
    assert a.status == 504 and "0.3 s" in a.json["error"]
    assert time.monotonic() - t0 < 2.0
    assert (await lab.post({"url": "https://allowed.example/"})).status == 200  # the slot was given back


async def test_a_client_that_goes_away_frees_its_slot(helper_lab: LabFactory) -> None:
    lab = await helper_lab(max_concurrent=1)
    with pytest.raises(asyncio.TimeoutError):
        await lab.session.post(lab.url + "/api/v1/control", json={"url": "http://allowed.example/slow"},
                               headers={"Authorization": f"Bearer {TOKEN}"},
                               timeout=aiohttp.ClientTimeout(total=0.3))
    await asyncio.sleep(0.1)
    a = await lab.post({"url": "https://allowed.example/"})
    assert a.status == 200, a.text
