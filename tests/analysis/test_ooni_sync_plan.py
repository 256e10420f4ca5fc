"""``kzprobe ooni sync`` planning against hostile or huge listings (break test F1, F5): bounded keys per
prefix, bounded listing tasks, dates OONI has no data for refused."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from analysis import ooni_bucket as ob
from analysis.ooni_sync import SyncConfig, SyncResult, plan
from analysis.s3 import RetryPolicy, S3Object
from tests.fixtures.ooni_bucket import FakeS3

FAST = RetryPolicy(attempts=2, base=0.01, cap=0.05, connect_timeout=5, read_timeout=5)
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: Pages the endless bucket serves in all before it answers 403: past this the sync fails another way
#: (a test run without the key bound ends, and says why it failed).
PAGE_BUDGET = 600


class EndlessS3(FakeS3):
    """Every listing page: 1,000 new keys of the prefix and a new continuation token (hs3.py loop2)."""

    pages = 0

    async def _list(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        EndlessS3.pages += 1
        if EndlessS3.pages > PAGE_BUDGET:
            return web.Response(status=403, text="page budget spent")  # not retried: the sync ends
        tok = int(q.get("continuation-token", "0") or 0)
        pre = escape(q.get("prefix", ""))
        items = "".join(f"<Contents><Key>{pre}{tok:08d}{i:04d}_KZ_webconnectivity.n0.0.jsonl.gz</Key>"
                        "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>100</Size></Contents>"
                        for i in range(1000))
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}"><Name>{self.bucket}</Name>'
                f"<Prefix>{pre}</Prefix><KeyCount>1000</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>"
                f"{items}<NextContinuationToken>{tok + 1}</NextContinuationToken></ListBucketResult>")
        return web.Response(body=body.encode(), content_type="application/xml")


def test_endless_listing_stops_at_the_key_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """F1: a listing that never ends (new keys, a new token each page) grew the sync ~20 MB/s, silent, bounded
    only by 10,000 pages a prefix. Now: progress lines while listing, and past MAX_KEYS_PER_PREFIX keys under
    one prefix an error naming it, exit 69 (as a repeated token), after about that many keys listed."""
    from probe.cli import main

    EndlessS3.pages = 0
    with EndlessS3({}) as s3:
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-01",
                   "--out", str(tmp_path / "o"), "--endpoint-url", s3.endpoint, "--margin-before", "0",
                   "--margin-after", "0", "--workers", "0", "--concurrency", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 69, err
    limit = ob.MAX_KEYS_PER_PREFIX
    assert f"more than {limit:,} keys under one prefix" in err, err[-2000:]
    assert "listing 'raw/20210101/" in err and "KZ/webconnectivity/'" in err
    assert "keys so far" in err  # it said what it was doing
    # at most the bound's pages for each of the 2 listings at once (and a page or two in flight each)
    assert EndlessS3.pages <= 2 * (limit // 1000 + 3), EndlessS3.pages


class CountingClient:
    """An S3Client stand-in: every prefix is empty; records the most tasks alive during the listing."""

    def __init__(self) -> None:
        self.most_tasks = 0
        self.prefixes = 0

    def url(self, key: str = "") -> str:
        return "http://127.0.0.1:1/b"

    async def list(self, prefix: str, *, delimiter: str | None = None) -> AsyncIterator[S3Object | str]:
        self.prefixes += 1
        self.most_tasks = max(self.most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return
        yield  # an async generator with nothing in it


def test_a_long_period_is_listed_in_bounded_batches(tmp_path: Path) -> None:
    """F5: a period of 200 years created a listing task per day and prefix at once (1.5 GB, deaf to SIGTERM).
    Now days are listed LIST_DAY_BATCH at a time: the tasks alive stay bounded whatever the period."""
    cfg = SyncConfig(cc="KZ", since=dt.date(2013, 1, 1), until=dt.date(2020, 12, 31), out=tmp_path,
                     margin_before=0, margin_after=0, concurrency=4, workers=0, retry=FAST)
    client = CountingClient()
    refs = asyncio.run(plan(client, cfg, SyncResult()))  # type: ignore[arg-type]
    assert refs == []
    days = (cfg.until - cfg.since).days + 1
    assert client.prefixes >= days  # every day listed
    # a batch of days: each day's one_day task and its prefixes' listings (24 hours + a jsonl day + a can)
    assert client.most_tasks <= ob.LIST_DAY_BATCH * (1 + 24 + 2) + 2, client.most_tasks


@pytest.mark.parametrize("command", ["sync", "coverage"])
@pytest.mark.parametrize(("since", "until", "says"), [
    ("1900-01-01", "2021-01-01", "--since 1900-01-01 is before OONI's first measurements (2012-12-01)"),
    ("2012-11-30", "2012-12-31", "--since 2012-11-30 is before OONI's first measurements"),
    ("2021-01-01", "2100-12-31", "--until 2100-12-31 is after today"),
    ("2021-02-01", "2021-01-01", "--since 2021-02-01 is after --until 2021-01-01"),
])
def test_dates_outside_oonis_data_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str,
                                             until: str, says: str, command: str) -> None:
    """F5: --since 1900-01-01 --until 2100-12-31 listed 73,000 days for nothing. Dates before OONI's data
    (2012-12) or after today are refused, exit 64, naming the option; nothing is listed or asked. Break
    test: ``ooni coverage`` took any dates (and asked the API for them), only ``ooni sync`` refused them."""
    from probe.cli import main

    where = ["--endpoint-url", "http://127.0.0.1:9/", "--workers", "0", "--no-progress"] if command == "sync" else [
        "--api-url", "http://127.0.0.1:9/"]
    rc = main(["ooni", command, "--cc", "KZ", "--since", since, "--until", until, "--out", str(tmp_path / "o"),
               *where])
    err = capsys.readouterr().err
    assert rc == 64 and f"kzprobe ooni {command}: {says}" in err, err
    assert not (tmp_path / "o").exists()


def test_the_key_bound_depends_on_the_prefix() -> None:
    """A one-country prefix gets the tight bound; an every-country day (``--cc ALL``) the day's."""
    assert ob.max_keys("raw/20210101/") == ob.MAX_KEYS_PER_DAY_PREFIX
    assert ob.max_keys("raw/20210101/00/KZ/webconnectivity/") == ob.MAX_KEYS_PER_PREFIX
    assert ob.max_keys("jsonl/webconnectivity/KZ/20200101/") == ob.MAX_KEYS_PER_PREFIX
    assert ob.MAX_KEYS_PER_PREFIX < ob.MAX_KEYS_PER_DAY_PREFIX
