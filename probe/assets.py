"""``kzprobe assets update``: download the free ASN and country databases probe/geoip.py reads.

DB-IP's "IP to ASN Lite" and "IP to Country Lite" (CC BY 4.0; attribution: "IP Geolocation by
DB-IP", https://db-ip.com/db/lite.php), monthly files ``dbip-<kind>-lite-YYYY-MM.mmdb.gz``; when
this month's is not published yet, last month's. Every download is bounded before and after
decompression, must open as a MaxMind-format database, and replaces the old file atomically (a
failed update keeps the previous database). Never run by the tests against the Internet: they
point ``url_template`` at a loopback server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from probe.errors import KzprobeError
from probe.geoip import ASN_DB_NAME, COUNTRY_DB_NAME, DBIP_ATTRIBUTION

#: Where DB-IP publishes the Lite files; {kind} is "asn" or "country", {month} "YYYY-MM".
DBIP_URL = "https://download.db-ip.com/free/dbip-{kind}-lite-{month}.mmdb.gz"
#: Compressed bytes read at most per file (the ASN Lite file is ~4 MB gzipped, Country ~5 MB).
MAX_GZ_BYTES = 64 << 20
#: Decompressed bytes kept at most per file (~9 MB and ~8 MB today).
MAX_DB_BYTES = 128 << 20
#: Seconds one file's download may take.
DOWNLOAD_TIMEOUT_S = 300.0

FILES = (("asn", ASN_DB_NAME), ("country", COUNTRY_DB_NAME))


class AssetsError(KzprobeError):
    """A download that failed or gave no usable database (the message names the URL and why)."""


@dataclass(frozen=True, kw_only=True)
class Updated:
    """One database written: where, from which URL, its size and build time (from its metadata)."""

    path: Path
    url: str
    size: int
    built: str


def _months(today: dt.date) -> list[str]:
    first = today.replace(day=1)
    prev = (first - dt.timedelta(days=1)).replace(day=1)
    return [first.strftime("%Y-%m"), prev.strftime("%Y-%m")]


async def _fetch_gz(session: aiohttp.ClientSession, url: str) -> bytes | None:
    """The decompressed body of ``url``; None on 404 (not published yet). Bounded both ways."""
    async with asyncio.timeout(DOWNLOAD_TIMEOUT_S), session.get(url) as resp:
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise AssetsError(f"{url}: HTTP {resp.status}")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
        out = bytearray()
        raw = 0
        async for chunk in resp.content.iter_chunked(65536):
            raw += len(chunk)
            if raw > MAX_GZ_BYTES:
                raise AssetsError(f"{url}: over {MAX_GZ_BYTES} compressed bytes")
            try:
                out += inflater.decompress(chunk, MAX_DB_BYTES + 1 - len(out))
            except zlib.error as exc:
                raise AssetsError(f"{url}: not gzip data ({exc})") from None
            if len(out) > MAX_DB_BYTES or inflater.unconsumed_tail:
                raise AssetsError(f"{url}: over {MAX_DB_BYTES} bytes decompressed")
        if not inflater.eof:
            raise AssetsError(f"{url}: the gzip stream is cut short")
        return bytes(out)


def _install(data: bytes, dest: Path, url: str) -> Updated:
    """Check ``data`` opens as an MMDB with a lookup, then replace ``dest`` atomically."""
    import maxminddb

    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    try:
        try:
            reader = maxminddb.open_database(str(tmp), maxminddb.MODE_MEMORY)
            meta = reader.metadata()
            reader.get("1.1.1.1")
            reader.close()
        except (ValueError, OSError, maxminddb.InvalidDatabaseError) as exc:
            raise AssetsError(f"{url}: not a MaxMind-format database ({exc})") from None
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    built = dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC).strftime("%Y-%m-%d")
    return Updated(path=dest, url=url, size=len(data), built=built)


async def update(dest_dir: Path, *, url_template: str = DBIP_URL, today: dt.date | None = None,
                 on_progress: Callable[[str], None] | None = None) -> list[Updated]:
    """Download both databases into ``dest_dir`` (created).

    Raises:
        AssetsError: a file could not be downloaded or is not a database (earlier files are kept).
        OSError, TimeoutError, aiohttp.ClientError: the transfer itself failed.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    done = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for kind, name in FILES:
            for month in _months(today or dt.datetime.now(dt.UTC).date()):
                url = url_template.format(kind=kind, month=month)
                if on_progress:
                    on_progress(url)
                data = await _fetch_gz(session, url)
                if data is not None:
                    done.append(_install(data, dest_dir / name, url))
                    break
            else:
                raise AssetsError(f"no {kind} database published at {url_template} this month or last")
    return done


ATTRIBUTION = DBIP_ATTRIBUTION
