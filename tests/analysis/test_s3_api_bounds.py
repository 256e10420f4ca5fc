"""Whole answers, bounded: the S3 listing and the OONI API answer are read to their end (up to
their caps), and an endless listing stops with a clear error (break test, stop 19)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from analysis import s3
from analysis.ooni_api import ApiError, OoniApi
from analysis.s3 import RetryPolicy, S3Client, S3Error

FAST = RetryPolicy(attempts=1)


def _listing(keys: list[str], token: str | None) -> bytes:
    items = "".join(f"<Contents><Key>{k}</Key><Size>10</Size><ETag>\"e\"</ETag></Contents>" for k in keys)
    more = (f"<IsTruncated>true</IsTruncated><NextContinuationToken>{token}</NextContinuationToken>"
            if token else "<IsTruncated>false</IsTruncated>")
    return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>{items}{more}'
            f"</ListBucketResult>").encode()


async def _listed(base: str) -> list[str]:
    async with aiohttp.ClientSession(auto_decompress=False) as sess:
        c = S3Client(base, "b", sess, retry=FAST)
        return [o.key async for o in c.list("raw/") if not isinstance(o, str)]


async def test_a_full_1000_key_listing_page_is_read_whole(app_server) -> None:
    keys = [f"raw/20210101/00/KZ/web_connectivity/{'x' * 150}-{i:04d}.jsonl.gz" for i in range(1000)]
    body = _listing(keys, None)
    assert len(body) > 200_000  # several of aiohttp's buffered reads

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await resp.prepare(request)
        for i in range(0, len(body), 8192):  # sent in pieces, as a real server does
            await resp.write(body[i:i + 8192])
        await resp.write_eof()
        return resp

    assert await _listed(await app_server(handler)) == keys


@pytest.mark.parametrize(("new_token", "keys", "why"), [
    (False, ["raw/a"], "repeats a continuation token"),
    (True, [], "pages without a key in a row"),
])
async def test_an_endless_listing_stops_with_a_clear_error(app_server, new_token, keys, why) -> None:
    n = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal n
        n += 1
        return web.Response(body=_listing(keys, f"t{n}" if new_token else "same"), content_type="application/xml")

    with pytest.raises(S3Error, match=why):
        await _listed(await app_server(handler))
    assert n <= s3.MAX_EMPTY_PAGES + 2


async def test_a_listing_past_the_page_cap_stops(app_server, monkeypatch) -> None:
    monkeypatch.setattr(s3, "MAX_LIST_PAGES", 5)
    n = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal n
        n += 1
        return web.Response(body=_listing([f"raw/{n}"], f"t{n}"), content_type="application/xml")

    with pytest.raises(S3Error, match="past 5 pages"):
        await _listed(await app_server(handler))
    assert n == 5


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_an_api_answer_is_read_whole_and_a_too_big_one_refused(app_server, monkeypatch, encoding: str) -> None:
    """A 400 KB answer, streamed in 8 KiB writes, is read to its end; under a 100 KB cap it is refused.
    Gzipped (as api.ooni.io answers), one bounded reader (probe.bounded.read_body) decodes it and the
    cap bounds the decoded size: the compressed answer is under the cap, a bomb stops at it."""
    import gzip

    doc = {"metadata": {"count": 5000}, "results": [{"measurement_uid": f"{i:040d}", "x": "y" * 60}
                                                    for i in range(5000)]}
    body = json.dumps(doc).encode()
    payload = gzip.compress(body) if encoding == "gzip" else body
    assert len(body) > 400_000 and (encoding == "identity" or len(payload) < 100_000)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"}
                                  | ({"Content-Encoding": "gzip"} if encoding == "gzip" else {}))
        await resp.prepare(request)
        for i in range(0, len(payload), 8192):
            await resp.write(payload[i:i + 8192])
        await resp.write_eof()
        return resp

    base = await app_server(handler)
    async with aiohttp.ClientSession(auto_decompress=False) as sess:
        api = OoniApi(sess, base, retry=FAST, min_interval=0.0)
        assert await api.get("/api/v1/measurements", {}) == doc
        monkeypatch.setattr("analysis.ooni_api.MAX_BODY_BYTES", 100_000)
        with pytest.raises(ApiError, match="longer than 100000 bytes"):
            await api.get("/api/v1/measurements", {})


async def test_a_corrupt_compressed_api_answer_is_an_error_and_a_decoding_session_refused(app_server) -> None:
    """Corrupt gzip is an ApiError; a session that would decode behind the bounded reader's back is refused."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b\x08\x00not gzip at all",
                            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    base = await app_server(handler)
    async with aiohttp.ClientSession(auto_decompress=False) as sess:
        with pytest.raises(ApiError, match="corrupt compressed answer"):
            await OoniApi(sess, base, retry=FAST, min_interval=0.0).get("/corrupt", {})
    async with aiohttp.ClientSession() as sess:
        with pytest.raises(ValueError, match="auto_decompress=False"):
            OoniApi(sess, base)
