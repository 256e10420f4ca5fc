"""Serving: TLS, the loopback-only rule for plain HTTP, config validation, serve() lifecycle."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from probe.helper.auth import HelperConfigError
from probe.helper.server import (
    HelperConfig,
    check_listen,
    is_loopback_host,
    serve,
    start,
)
from tests.helper.conftest import TOKEN

BASE: dict[str, Any] = {"tokens": frozenset({TOKEN}), "doh_urls": ("https://127.0.0.1:1/dns-query",)}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)
    check_listen(HelperConfig(**BASE, listen_host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "10.0.0.1", "2001:db8::1", "helper.example.org", ""])
def test_plain_http_beyond_loopback_is_refused(host: str) -> None:
    assert not is_loopback_host(host)
    with pytest.raises(HelperConfigError, match="plain HTTP"):
        check_listen(HelperConfig(**BASE, listen_host=host))
    check_listen(HelperConfig(**BASE, listen_host=host, insecure_plain_http=True))
    check_listen(HelperConfig(**BASE, listen_host=host, tls_cert="c.pem", tls_key="k.pem"))


async def test_start_refuses_before_binding() -> None:
    # 192.0.2.1 is not on this machine: binding would fail with OSError, so a
    # HelperConfigError proves the check came first.
    with pytest.raises(HelperConfigError):
        await start(HelperConfig(**BASE, listen_host="192.0.2.1", listen_port=0))


@pytest.mark.parametrize("change, what", [
    ({"tokens": frozenset()}, "no token"),
    ({"tls_cert": "c.pem"}, "tls_cert and tls_key"),
    ({"tls_key": "k.pem"}, "tls_cert and tls_key"),
    ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"rate_per_token": 0}, "rate_per_token"),
    ({"request_deadline_s": 0}, "request_deadline_s"),
    ({"doh_urls": ()}, "doh_urls"),
    ({"listen_port": 70000}, "listen_port"),
])
def test_config_validation(change: dict[str, Any], what: str) -> None:
    with pytest.raises(HelperConfigError, match=what):
        HelperConfig(**{**BASE, **change})


def _tls_files(tmp_path: Path, ca: trustme.CA) -> tuple[str, str]:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)
    return str(cert), str(key)


async def test_tls_listener(tmp_path: Path, ca: trustme.CA) -> None:
    cert, key = _tls_files(tmp_path, ca)
    helper = await start(HelperConfig(**BASE, listen_port=0, tls_cert=cert, tls_key=key))
    try:
        assert helper.url.startswith("https://127.0.0.1:")
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        async with aiohttp.ClientSession() as s:
            async with s.get(helper.url + "/api/v1/health", ssl=client_ctx) as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with s.post(helper.url + "/api/v1/control", json={"url": "https://allowed.example/"},
                              ssl=client_ctx) as r:
                assert r.status == 401
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                async with s.get(helper.url.replace("https", "http") + "/api/v1/health") as r:
                    await r.read()
    finally:
        await helper.close()


async def test_bad_certificate_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(HelperConfigError, match="TLS certificate"):
        await start(HelperConfig(**BASE, listen_port=0, tls_cert=str(bad), tls_key=str(bad)))


async def test_serve_runs_until_cancelled() -> None:
    urls: list[str] = []
    task = asyncio.create_task(serve(HelperConfig(**BASE, listen_port=0), ready=urls.append))
    for _ in range(200):
        if urls:
            break
        await asyncio.sleep(0.01)
    assert urls and urls[0].startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as s:
        async with s.get(urls[0] + "/api/v1/health") as r:
            assert r.status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(urls[0] + "/api/v1/health") as r:
                await r.read()
