"""kzprobe assets update against a loopback server (never DB-IP itself): this month's file, else
last month's; bounded; a file that is not a database keeps the old one; the attribution shown."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from probe import assets
from probe.geoip import ASN_DB_NAME, COUNTRY_DB_NAME, GeoIP
from tests.geoip_db import write_dbs

ROOT = Path(__file__).resolve().parents[1]


async def _serve(files: dict[str, bytes]) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        body = files.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/dbip-{{kind}}-lite-{{month}}.mmdb.gz"


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[bytes, bytes]:
    a, c = write_dbs(tmp_path, {"203.0.113.0/24": (9198, "JSC Kazakhtelecom", "KZ")})
    return gzip.compress(a.read_bytes()), gzip.compress(c.read_bytes())


async def test_update_falls_back_to_last_month_and_installs(tmp_path: Path, dbs) -> None:
    asn, country = dbs
    runner, url = await _serve({"/dbip-asn-lite-2026-11.mmdb.gz": asn, "/dbip-country-lite-2026-12.mmdb.gz": country})
    try:
        dest = tmp_path / "assets"
        done = await assets.update(dest, url_template=url, today=dt.date(2026, 12, 3))
    finally:
        await runner.cleanup()
    assert [u.url.rsplit("/", 1)[1] for u in done] == ["dbip-asn-lite-2026-11.mmdb.gz",
                                                       "dbip-country-lite-2026-12.mmdb.gz"]
    db = GeoIP(dest / ASN_DB_NAME, dest / COUNTRY_DB_NAME)
    assert db.lookup("203.0.113.5").asn == "AS9198" and db.lookup("203.0.113.5").cc == "KZ"


async def test_garbage_keeps_the_old_database(tmp_path: Path, dbs) -> None:
    dest = tmp_path / "assets"
    dest.mkdir()
    (dest / ASN_DB_NAME).write_bytes(b"old")
    runner, url = await _serve({"/dbip-asn-lite-2026-12.mmdb.gz": gzip.compress(b"not a database" * 100)})
    try:
        with pytest.raises(assets.AssetsError, match="not a MaxMind-format database"):
            await assets.update(dest, url_template=url, today=dt.date(2026, 12, 3))
    finally:
        await runner.cleanup()
    assert (dest / ASN_DB_NAME).read_bytes() == b"old"
    assert [p.name for p in dest.iterdir()] == [ASN_DB_NAME]  # no temporary left


async def test_a_gzip_bomb_is_cut(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(assets, "MAX_DB_BYTES", 1 << 20)
    runner, url = await _serve({"/dbip-asn-lite-2026-12.mmdb.gz": gzip.compress(b"\0" * (8 << 20))})
    try:
        with pytest.raises(assets.AssetsError, match="decompressed"):
            await assets.update(tmp_path, url_template=url, today=dt.date(2026, 12, 3))
    finally:
        await runner.cleanup()


async def test_cli_prints_the_attribution(tmp_path: Path, dbs) -> None:
    asn, country = dbs
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    runner, url = await _serve({f"/dbip-asn-lite-{month}.mmdb.gz": asn, f"/dbip-country-lite-{month}.mmdb.gz": country})
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "probe", "assets", "update", "--dir", str(tmp_path), "--url", url, cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err.decode()
    assert "IP Geolocation by DB-IP" in out.decode() and "CC BY 4.0" in out.decode()
