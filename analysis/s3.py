"""Anonymous S3 over plain HTTPS: ListObjectsV2 and GET, path-style, with aiohttp.

Only what reading a public bucket needs (OONI's ``ooni-data-eu-fra``): no signing, no
credentials, no boto3. Requests are path-style (``{endpoint}/{bucket}/{key}``), as the AWS
CLI's ``--endpoint-url`` makes them, so a mirror or a loopback test server can stand in.

* :meth:`S3Client.list` — ``GET {endpoint}/{bucket}?list-type=2&prefix=P[&delimiter=/]``,
  following ``NextContinuationToken`` while ``IsTruncated`` (the AWS ListObjectsV2 API,
  response ``ListBucketResult``; each response body read up to :data:`MAX_LIST_BYTES`).
* :meth:`S3Client.download` — ``GET {endpoint}/{bucket}/{key}`` streamed to a file in
  pieces; never more than the size the listing gave (a longer body is an error, a shorter
  one is a truncated transfer and an error too; a single-part object's MD5 must equal its
  ETag): the file is complete or it is removed.

Retries: 5xx, 429, timeouts and dropped connections are retried with exponential backoff
and jitter (:class:`RetryPolicy`); 4xx other than 429 are not. A transfer that fails for
good raises :class:`S3Error` naming the key; a full disk raises :class:`DiskFullError`
(the partial file is removed; nothing written before is touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from probe.bounded import read_body
from probe.errors import KzprobeError

#: The AWS namespace of ListObjectsV2 answers (``ListBucketResult``).
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
#: Largest ListObjectsV2 response body read (bytes): 1000 keys are ~300 KiB.
MAX_LIST_BYTES = 16 << 20
#: Pages of one listing at most (1,000 keys each: 10M keys; an OONI day/hour prefix has a few).
MAX_LIST_PAGES = 10_000
#: Truncated pages without a key or prefix in a row before the listing is called endless.
MAX_EMPTY_PAGES = 10
#: Pieces in which objects are streamed to disk (bytes).
PIECE_BYTES = 1 << 20


#: A single-part upload's ETag is the MD5 of the object (hex); multipart ones have a "-N" suffix.
_MD5_ETAG = re.compile(r"^[0-9a-fA-F]{32}$")


class S3Error(KzprobeError):
    """A bucket request failed for good (after retries), or the answer is not S3's."""


class S3RetriesExhaustedError(S3Error):
    """A request failed every try with a failure worth retrying (5xx, 429, a timeout, a dropped or cut-short
    transfer): the bucket's trouble, not the object's (the sync stops after many in a row)."""


class DiskFullError(S3Error):
    """Writing a downloaded object failed: the disk (or quota) is full."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed requests are retried.

    Attributes:
        attempts: tries per request, the first included.
        base: first backoff (seconds); doubled each time, with ±50 % jitter.
        cap: longest backoff (seconds).
        connect_timeout: seconds to connect.
        read_timeout: seconds without a byte before a transfer counts as stalled.
        deadline_floor: seconds an object's download may take whatever its size (see :meth:`deadline`).
        min_rate: bytes a second an object's download must average past ``deadline_floor``.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    connect_timeout: float = 20.0
    read_timeout: float = 60.0
    deadline_floor: float = 60.0
    min_rate: float = 64 * 1024

    def deadline(self, size: int) -> float:
        """Seconds one attempt at an object of ``size`` bytes may take, connection included: a server
        trickling a byte every 2 s never trips ``read_timeout`` and stalled the sync forever (break
        test F2); past this the attempt fails as a timeout (retried, then the object not fetched).
        A listing page's attempt has ``deadline(MAX_LIST_BYTES)``."""
        return self.deadline_floor + size / self.min_rate

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based)."""
        d = min(self.cap, self.base * (2 ** (attempt - 1)))
        return d * (0.5 + random.random())


@dataclass(frozen=True, kw_only=True)
class S3Object:
    """One entry of a listing: ``Key``, ``Size`` (bytes), ``ETag`` (quotes removed)."""

    key: str
    size: int
    etag: str = ""


class _Retry(Exception):
    """A failure worth another try (5xx, 429, timeout, dropped connection)."""


def _retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


_SIZE = re.compile(r"[0-9]{1,13}")  # ListObjectsV2 <Size>: bytes, 13 digits at most (MAX_OBJECT_SIZE)
#: S3's largest object: 5 TiB (5,497,558,138,880 bytes). A listed Size past it is no S3 object.
MAX_OBJECT_SIZE = 5 * 2**40


def parse_list_response(body: bytes) -> tuple[list[S3Object], list[str], str | None]:
    """A ListObjectsV2 XML body → (objects, common prefixes, next continuation token or None).

    Raises:
        S3Error: the body is not a ``ListBucketResult``.
    """
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise S3Error(f"the bucket's listing is not XML ({exc})") from None
    tag = root.tag.replace(S3_NS, "")
    if tag != "ListBucketResult":
        raise S3Error(f"the bucket answered <{tag}>, not <ListBucketResult>")

    def text(el: ET.Element, name: str) -> str:
        child = el.find(S3_NS + name)
        if child is None:
            child = el.find(name)
        return (child.text or "") if child is not None else ""

    def children(name: str) -> list[ET.Element]:
        return root.findall(S3_NS + name) or root.findall(name)

    objs = []
    for c in children("Contents"):
        raw = text(c, "Size")
        # a byte count: digits only (int() would take "-5", " 5", "+5", "5_0"); a negative Size was
        # retried 5 times an object and ended "not complete within -1,525,878,846.2 s" (break test)
        if raw and (not _SIZE.fullmatch(raw) or int(raw) > MAX_OBJECT_SIZE):
            raise S3Error(f"listing: Size {raw[:40]!r} of {text(c, 'Key')[:200]!r} is not a byte count (a whole "
                          f"number from 0 to S3's largest object, {MAX_OBJECT_SIZE:,}): the listing is malformed")
        size = int(raw or 0)
        objs.append(S3Object(key=text(c, "Key"), size=size, etag=text(c, "ETag").strip('"')))
    prefixes = [text(p, "Prefix") for p in children("CommonPrefixes")]
    truncated = text(root, "IsTruncated").lower() == "true"
    token = text(root, "NextContinuationToken") or None
    if truncated and not token:
        raise S3Error("listing is truncated but has no NextContinuationToken")
    return objs, prefixes, token if truncated else None


class S3Client:
    """Anonymous, path-style S3 reads (see the module docstring).

    Args:
        endpoint: base URL, e.g. ``https://s3.eu-central-1.amazonaws.com`` (no bucket in it).
        bucket: the bucket's name.
        session: an aiohttp session (the caller owns it).
        retry: the retry policy.
    """

    def __init__(self, endpoint: str, bucket: str, session: aiohttp.ClientSession,
                 retry: RetryPolicy | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.session = session
        self.retry = retry or RetryPolicy()
        self.retries = 0  #: retries made (all requests)

    def url(self, key: str = "") -> str:
        """The path-style URL of ``key`` (of the bucket when empty)."""
        return f"{self.endpoint}/{quote(self.bucket)}" + (f"/{quote(key)}" if key else "")

    def _timeout(self) -> aiohttp.ClientTimeout:
        r = self.retry
        return aiohttp.ClientTimeout(total=None, sock_connect=r.connect_timeout, sock_read=r.read_timeout)

    async def list(self, prefix: str, *, delimiter: str | None = None) -> AsyncIterator[S3Object | str]:
        """Every object under ``prefix`` (and, with ``delimiter``, the common prefixes as str), page by page."""
        token: str | None = None
        seen: set[str] = set()
        pages = empty = 0
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["continuation-token"] = token
            body = await self._get_small(self.url(), params, f"listing {prefix!r}")
            objs, prefixes, token = parse_list_response(body)
            pages += 1
            empty = 0 if (objs or prefixes) else empty + 1
            if token is not None and (token in seen or pages >= MAX_LIST_PAGES or empty > MAX_EMPTY_PAGES):
                # an endless listing (a repeated token, pages without keys, or more pages than any
                # OONI prefix has) drew 65,000 requests in 500 s without a word (break test, stop 19)
                why = ("repeats a continuation token" if token in seen else
                       f"gave {empty} pages without a key in a row" if empty > MAX_EMPTY_PAGES else
                       f"goes on past {MAX_LIST_PAGES} pages")
                raise S3Error(f"listing {prefix!r} at {self.url()}: the server {why}")
            if token is not None:
                seen.add(token)
            for o in objs:
                yield o
            for p in prefixes:
                yield p
            if token is None:
                return

    async def _get_small(self, url: str, params: dict[str, str], what: str) -> bytes:
        last = ""
        # a listing page trickled a byte every 2 s never trips read_timeout either (break test F2, its
        # fix was the objects' only): each attempt has the deadline of a page of the longest size read
        deadline = self.retry.deadline(MAX_LIST_BYTES)
        for attempt in range(1, self.retry.attempts + 1):
            within = asyncio.timeout(None)
            try:
                async with asyncio.timeout(deadline) as within:
                    async with self.session.get(url, params=params, timeout=self._timeout()) as resp:
                        if _retryable_status(resp.status):
                            raise _Retry(f"HTTP {resp.status}")
                        if resp.status != 200:
                            raise S3Error(f"{what}: HTTP {resp.status} from {url}")
                        # to the end, bounded: one read() returned only what was buffered (~128 KiB of
                        # a 228 KB, 1,000-key listing: "not XML"; break test, stop 19)
                        body, too_long = await read_body(resp, MAX_LIST_BYTES)
                        if too_long:
                            raise S3Error(f"{what}: answer longer than {MAX_LIST_BYTES} bytes")
                        return body
            except (TimeoutError, _Retry, aiohttp.ClientError) as exc:
                last = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError) and within.expired():
                    last = f"not complete within {deadline:,.1f} s"
            if attempt < self.retry.attempts:
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt))
        raise S3Error(f"{what}: failed {self.retry.attempts} times (last: {last}) at {url}")

    async def download(self, obj: S3Object, dest: Path, *, on_bytes: object = None, durable: bool = True) -> int:
        """Stream ``obj`` to ``dest`` (created or truncated); returns the bytes written.

        The body must be exactly ``obj.size`` bytes: more is refused at once (never
        written), fewer (a transfer cut short) is retried and finally an error. On any
        error ``dest`` is removed.

        Args:
            on_bytes: called with each piece's length (a progress bar), or None.
            durable: fsync ``dest`` before returning. False for a file read once and removed (the
                sync's ``.partial/`` copies: a crash loses nothing the manifest counts; the fsync
                blocked the event loop ~5–12 ms an object on this machine's disk).

        Raises:
            S3Error: failed after retries, or the object is not what the listing said.
            DiskFullError: no space left writing ``dest``.
        """
        url = self.url(obj.key)
        last = ""
        deadline = self.retry.deadline(obj.size)
        for attempt in range(1, self.retry.attempts + 1):
            written = 0
            within = asyncio.timeout(None)
            md5 = hashlib.md5(usedforsecurity=False) if _MD5_ETAG.match(obj.etag or "") else None
            try:
                async with asyncio.timeout(deadline) as within:
                    async with self.session.get(url, timeout=self._timeout()) as resp:
                        if _retryable_status(resp.status):
                            raise _Retry(f"HTTP {resp.status}")
                        if resp.status != 200:
                            raise S3Error(f"{obj.key}: HTTP {resp.status} from {url}")
                        length = resp.headers.get("Content-Length")
                        if length is not None and length.isdigit() and int(length) > obj.size:
                            raise S3Error(f"{obj.key}: Content-Length {length} but the listing says {obj.size} bytes")
                        with _open_dest(dest) as fh:
                            while True:
                                piece = await resp.content.read(PIECE_BYTES)
                                if not piece:
                                    break
                                written += len(piece)
                                if written > obj.size:
                                    raise S3Error(f"{obj.key}: more than the listed {obj.size} bytes")
                                _write(fh, piece, dest)
                                if md5 is not None:
                                    md5.update(piece)
                                if callable(on_bytes):
                                    on_bytes(len(piece))
                            if written < obj.size:
                                raise _Retry(f"truncated transfer: {written} of {obj.size} bytes")
                            if md5 is not None and md5.hexdigest() != obj.etag.lower():
                                raise _Retry(f"MD5 {md5.hexdigest()} differs from the ETag {obj.etag}")
                            fh.flush()
                            if durable:
                                os.fsync(fh.fileno())
                        return written
            except (TimeoutError, _Retry, aiohttp.ClientError) as exc:
                last = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError) and within.expired():
                    r = self.retry
                    last = (f"not complete within {deadline:,.1f} s ({written:,} of {obj.size:,} bytes; the deadline "
                            f"is {r.deadline_floor:,.0f} s plus {r.min_rate:,.0f} bytes a second)")
                if callable(on_bytes) and written:
                    on_bytes(-written)
            except S3Error as exc:
                _unlink(dest)
                if isinstance(exc, DiskFullError) or str(exc).startswith(f"{obj.key}: "):
                    raise
                raise S3Error(f"{obj.key}: {exc}") from None
            except BaseException:
                _unlink(dest)
                raise
            _unlink(dest)
            if attempt < self.retry.attempts:
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt))
        raise S3RetriesExhaustedError(f"{obj.key}: download failed {self.retry.attempts} times (last: {last})")


def _open_dest(dest: Path):
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return open(dest, "wb")  # noqa: SIM115
    except OSError as exc:
        raise _write_error(exc, dest) from None


def _write(fh, piece: bytes, dest: Path) -> None:
    try:
        fh.write(piece)
    except OSError as exc:
        raise _write_error(exc, dest) from None


def is_disk_full(exc: OSError) -> bool:
    """True when ``exc`` says the disk (ENOSPC) or the quota (EDQUOT) is full: the sync stops
    (:class:`DiskFullError`); any other OSError fails the one file it was about."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_error(exc: OSError, dest: Path) -> S3Error:
    """A full disk stops the sync (:class:`DiskFullError`); any other error writing ``dest`` (a name
    the file system refuses, Errno 36: break test F4) fails this object only, not retried."""
    if is_disk_full(exc):
        return DiskFullError(disk_full_message(dest))
    return S3Error(f"cannot write {dest}: {exc.strerror or exc} (errno {exc.errno})")


def disk_full_message(path: Path) -> str:
    """The message for a full disk at ``path``: where, and how much is free."""
    try:
        st = os.statvfs(path.parent if not path.is_dir() else path)
        free = f"{st.f_bavail * st.f_frsize:,} bytes free"
    except OSError:
        free = "free space unknown"
    return (f"disk full writing {path} ({free}); everything synced before is kept: "
            "free some space and run the same command again to fetch the rest")


def _unlink(p: Path) -> None:
    with contextlib.suppress(OSError):  # never there (a name refused), or gone: the sync's start clears .partial/
        p.unlink(missing_ok=True)
