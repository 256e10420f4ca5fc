"""OONI's public API, for small queries and coverage counts (docs/ooni-sync.md has the sources).

* ``GET /api/v1/measurements`` — a list of measurement metadata, ``{"metadata": {"offset",
  "limit", "count", "pages", "current_page", "next_url", "query_time"}, "results": [{
  "measurement_uid", "measurement_url", "report_id", "probe_cc", "probe_asn": "AS…",
  "test_name", "measurement_start_time", "input", "anomaly", "confirmed", "failure",
  "scores"}]}`` (ooni/backend ``api/ooniapi/measurements.py``). Paged by ``offset``/``limit``;
  the last page is the one with fewer than ``limit`` results (``next_url`` null).
  :func:`measurements` pages through it, up to ``max_results``.
* ``GET /api/v1/aggregation`` — counts ``anomaly_count``, ``confirmed_count``,
  ``failure_count``, ``ok_count``, ``measurement_count`` grouped by ``axis_x``/``axis_y``
  (``measurement_start_day``, ``probe_asn`` …): ``{"v": 0, "dimension_count": 2, "result":
  [{…counts, "measurement_start_day": "2021-01-10", "probe_asn": 9198}], "db_stats": {…}}``
  (ooni/backend ``api/ooniapi/aggregation.py``). An error is ``{"error": "…", "v": 0}``, with
  HTTP 200 for bad parameters. :func:`coverage` asks for ``axis_x=measurement_start_day``,
  ``axis_y=probe_asn``, ``time_grain=day`` in windows of at most :data:`WINDOW_DAYS` days.
* Rate limit: OONI meters each client's time spent in the API (per day, week, month) and
  answers ``429`` when the quota is used up; each answer carries ``X-RateLimit-Remaining``
  (seconds of quota left; ooni/backend ``api/ooniapi/rate_limit_quotas.py``). The client waits
  :data:`MIN_INTERVAL` between requests, backs off on 429/5xx (``Retry-After`` honoured),
  and stops with :class:`ApiError` when the remaining quota falls under :data:`MIN_REMAINING`.

Every answer is read up to :data:`MAX_BODY_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pandas as pd

from analysis.outages import COUNT_MAX, coverage_asn, coverage_count
from analysis.s3 import RetryPolicy
from probe.bounded import read_body
from probe.errors import KzprobeError

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.ooni.io"
#: Longest span asked in one aggregation query (days); longer periods are split.
WINDOW_DAYS = 180
#: Seconds between two requests.
MIN_INTERVAL = 1.0
#: Stop when X-RateLimit-Remaining (seconds of quota) falls below this.
MIN_REMAINING = 5.0
#: Largest answer read (bytes).
MAX_BODY_BYTES = 64 << 20
#: Results per page of /api/v1/measurements.
PAGE_LIMIT = 1000

AGG_COUNTS = ("measurement_count", "anomaly_count", "confirmed_count", "failure_count", "ok_count")


class ApiError(KzprobeError):
    """The API refused or failed (after retries), or answered with an ``error``."""


class OoniApi:
    """A polite client of OONI's API (see the module docstring).

    Args:
        session: an aiohttp session with ``auto_decompress=False`` (the caller owns it): the
            answer's Content-Encoding is undone by :func:`probe.bounded.read_body`, bounded.
        base: the API's base URL (``--api-url``; a loopback server in tests).
        retry: the retry policy (attempts, backoff).
        min_interval: seconds between two requests.
    """

    def __init__(self, session: Any, base: str = DEFAULT_API, retry: RetryPolicy | None = None,
                 min_interval: float = MIN_INTERVAL) -> None:
        if getattr(session, "auto_decompress", False):
            raise ValueError("OoniApi: the session must have auto_decompress=False (read_body decodes, bounded)")
        self.session = session
        self.base = base.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.min_interval = min_interval
        self._last = 0.0
        self.requests = 0
        self.remaining: float | None = None

    async def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON answer (a dict), with pacing, retries and the rate limit respected."""
        import aiohttp

        url = f"{self.base}{path}"
        q = {k: str(v) for k, v in params.items() if v is not None}
        last = ""
        for attempt in range(1, self.retry.attempts + 1):
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = time.monotonic()
            self.requests += 1
            retry_after: float | None = None
            try:
                async with self.session.get(url, params=q, timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=self.retry.connect_timeout, sock_read=self.retry.read_timeout)) as r:
                    rem = r.headers.get("X-RateLimit-Remaining")
                    if rem is not None:
                        with contextlib.suppress(ValueError):
                            self.remaining = float(rem)
                    if r.status == 429 or r.status >= 500:
                        ra = r.headers.get("Retry-After", "")
                        retry_after = float(ra) if ra.replace(".", "", 1).isdigit() else None
                        last = f"HTTP {r.status}"
                    elif r.status != 200:
                        raise ApiError(f"{url}: HTTP {r.status}")
                    else:
                        try:
                            body, too_long = await read_body(r, MAX_BODY_BYTES)
                        except zlib.error:
                            raise ApiError(f"{url}: corrupt compressed answer "
                                           f"(Content-Encoding: {r.headers.get('Content-Encoding')})") from None
                        if too_long:
                            raise ApiError(f"{url}: answer longer than {MAX_BODY_BYTES} bytes")
                        try:
                            doc = json.loads(body)
                        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                            raise ApiError(f"{url}: the answer is not JSON") from None
                        if not isinstance(doc, dict):
                            raise ApiError(f"{url}: the answer is not a JSON object")
                        if doc.get("error"):
                            raise ApiError(f"{url}: {doc['error']}")
                        if self.remaining is not None and self.remaining < MIN_REMAINING:
                            raise ApiError(f"OONI's rate limit: {self.remaining:.0f} s of quota left "
                                           f"(X-RateLimit-Remaining); try again later")
                        return doc
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = str(exc) or type(exc).__name__
            if attempt < self.retry.attempts:
                await asyncio.sleep(retry_after if retry_after is not None else self.retry.delay(attempt))
        raise ApiError(f"{url}: failed {self.retry.attempts} times (last: {last})")

    async def measurements(self, *, max_results: int = 10_000, limit: int = PAGE_LIMIT,
                           **params: Any) -> AsyncIterator[dict[str, Any]]:
        """The results of ``/api/v1/measurements`` with ``params`` (probe_cc, test_name,
        since, until, input, domain …), page after page by ``offset``, at most ``max_results``."""
        offset = 0
        got = 0
        while got < max_results:
            doc = await self.get("/api/v1/measurements", {**params, "limit": limit, "offset": offset})
            results = doc.get("results")
            if not isinstance(results, list):
                raise ApiError("/api/v1/measurements: no 'results' list in the answer")
            for r in results:
                if isinstance(r, dict):
                    yield r
                    got += 1
                    if got >= max_results:
                        return
            meta = doc.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            if len(results) < limit or not meta.get("next_url"):
                return
            offset += limit

    async def aggregation(self, **params: Any) -> list[Any]:
        """``/api/v1/aggregation``'s ``result`` rows (a one-row list when no axis is given), as the API
        sent them: a row that is not an object is the caller's to count."""
        doc = await self.get("/api/v1/aggregation", params)
        res = doc.get("result")
        if isinstance(res, dict):
            return [res]
        if not isinstance(res, list):
            raise ApiError("/api/v1/aggregation: no 'result' in the answer")
        return res


def windows(since: dt.date, until: dt.date, days: int = WINDOW_DAYS) -> list[tuple[dt.date, dt.date]]:
    """[since, until] (both included) cut into spans of at most ``days`` days."""
    out = []
    a = since
    while a <= until:
        b = min(until, a + dt.timedelta(days=days - 1))
        out.append((a, b))
        a = b + dt.timedelta(days=1)
    return out


def _day_in(day: str, a: dt.date, b: dt.date) -> bool:
    """``day`` is a YYYY-MM-DD date in [a, b] (read, not compared as text)."""
    if not (len(day) == 10 and day[4] == "-" == day[7]):
        return False
    try:
        return a <= dt.date.fromisoformat(day) <= b
    except ValueError:
        return False


async def coverage(api: OoniApi, cc: str, since: dt.date, until: dt.date,
                   test_name: str | None = "web_connectivity") -> pd.DataFrame:
    """Measurements per day and network from the API: columns ``day``, ``probe_asn`` ("AS9198"),
    ``n`` (measurement_count) and the other counts of :data:`AGG_COUNTS`; one query per window
    of :data:`WINDOW_DAYS` days (``until`` is exclusive in the API: the day after is sent)."""
    rows = []
    skipped = bad = 0
    for a, b in windows(since, until):
        res = await api.aggregation(probe_cc=cc, test_name=test_name, since=a.isoformat(),
                                    until=(b + dt.timedelta(days=1)).isoformat(),
                                    axis_x="measurement_start_day", axis_y="probe_asn", time_grain="day")
        for r in res:
            if not isinstance(r, dict):
                bad += 1
                if bad <= 3:
                    log.warning("/api/v1/aggregation (%s … %s): a row is %s, not an object, row skipped",
                                a, b, type(r).__name__)
                continue
            day = str(r.get("measurement_start_day", ""))[:10]
            if not day or r.get("probe_asn") is None:
                continue
            if not _day_in(day, a, b):  # "2021-02-30", "2021-1-5": a day no date or out of the window asked
                skipped += 1
                if skipped <= 3:
                    log.warning("/api/v1/aggregation (%s … %s): measurement_start_day %r is not a day of the "
                                "window, row skipped", a, b, r.get("measurement_start_day"))
                continue
            try:  # -5, 1e308, true, "many", "Kazakhtelecom", 2**40: not evidence of anything
                row = {"day": day, "probe_asn": coverage_asn(r["probe_asn"]),
                       **{k: coverage_count(r.get(k)) for k in AGG_COUNTS}}
            except ValueError as e:
                bad += 1
                if bad <= 3:
                    log.warning("/api/v1/aggregation (%s … %s): %s on %s, row skipped", a, b, e, day)
                continue
            rows.append(row)
    if skipped:
        log.warning("/api/v1/aggregation: %d row(s) skipped, their measurement_start_day not a day of the window",
                    skipped)
    if bad:
        log.warning("/api/v1/aggregation: %d row(s) skipped, not an object or a network not an ASN (AS<n>, n < "
                    "2**32) or a count not a whole number 0 … %s", bad, f"{COUNT_MAX:,}")
    cols = ["day", "probe_asn", "n", *AGG_COUNTS[1:]]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c not in ("day", "probe_asn") else "string") for c in cols})
    f = pd.DataFrame(rows).rename(columns={"measurement_count": "n"})
    return f.groupby(["day", "probe_asn"], as_index=False)[cols[2:]].sum().sort_values(["day", "probe_asn"],
                                                                                       ignore_index=True)
