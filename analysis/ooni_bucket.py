"""OONI's public bucket: where the measurements of a country and a day are (docs/ooni-sync.md).

Bucket ``ooni-data-eu-fra`` (region eu-central-1), read anonymously over HTTPS. Three layouts
hold the measurements of the report's period (sources in docs/ooni-sync.md):

* ``raw/<YYYYMMDD>/<HH>/<CC>/<testname>/<YYYYMMDDHH>_<CC>_<testname>.n<N>.<i>.jsonl.gz`` — from
  2020-10-20 on (ooni/data ``dataclient.get_v2_prefixes``). ``<testname>`` has no underscore
  (``webconnectivity``). The same prefixes hold ``*.tar.gz`` "postcans" that repeat the same
  measurements: they are never fetched (:data:`RAW_SUFFIX`).
* ``jsonl/<testname>/<CC>/<YYYYMMDD>/00/<YYYYMMDD>_<CC>_<testname>.l.<N>.jsonl.gz`` — before it.
  Some days hold the same measurements twice, once as ``.l.<N>`` and once as
  ``.x.<hash>`` (ooni/backend#613): where both families exist for a file stem, only the
  ``.l.`` family is fetched (:func:`drop_duplicate_families`); measurement-level
  de-duplication catches anything else.
* day-wide "cans", ``<tar.lz4 prefix>/<YYYY-MM-DD>/<test_name>.<NN>.tar.lz4`` — tar files
  compressed with lz4, one member per report, named
  ``<YYYY-MM-DD>/<start>-<CC>-<ASN>-<test_name>-<report_id>-<ver>-probe.json``: the only
  copy of some 2020 days whose JSONL files are missing (ooni/backend#538, which names
  ``autoclaved/jsonl.tar.lz4/2020-08-01/web_connectivity.02.tar.lz4``; ooni/data lists
  ``canned/<YYYY-MM-DD>/`` for 2020-06-02 … 2020-10-21). A can holds every country: the
  member name gives the country, so other countries' members are skipped undecompressed.

The date in a key is when the measurement was uploaded (processed), not when it was made:
:func:`upload_days` widens the period by a margin, and the caller filters on
``measurement_start_time``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: The bucket (OONI's "MC_BUCKET_NAME" in ooni/data's dataclient).
BUCKET = "ooni-data-eu-fra"
#: Its path-style endpoint (the bucket is in eu-central-1, Frankfurt).
DEFAULT_ENDPOINT = "https://s3.eu-central-1.amazonaws.com"
#: First upload day of the ``raw/`` layout.
RAW_START = dt.date(2020, 10, 20)
#: Last upload day of the ``jsonl/`` layout (ooni/data lists it for days before 2020-10-21).
JSONL_END = dt.date(2020, 10, 20)
#: Only these objects are read from ``raw/`` (never the ``.tar.gz`` postcans).
RAW_SUFFIX = ".jsonl.gz"
#: Where day-wide cans are looked for, in order (see the module docstring).
CAN_PREFIXES = ("autoclaved/jsonl.tar.lz4", "canned")
#: Last upload day a can may exist for (ooni/data: the new cans end 2020-10-21).
CAN_END = dt.date(2020, 10, 21)
#: No measurement in the bucket is older than this: OONI's data starts in December 2012 (ooni.org/data:
#: "OONI data … since 2012"; the oldest daily buckets of ``autoclaved/`` are of 2012-12). ``kzprobe ooni
#: sync`` refuses an earlier ``--since`` (a period from 1900 listed 45,000 empty days, break test F5).
DATA_START = dt.date(2012, 12, 1)
#: Keys one listing prefix may hold at most (:func:`max_keys`); more is an endless or hostile listing
#: (break test F1: a bucket that answers every page with 1,000 new keys and a new token grew the sync
#: ~20 MB/s to 2.5 GB). A one-country prefix (``raw/<day>/<HH>/<CC>/<test>/``, ``jsonl/<test>/<CC>/<day>/``,
#: a day's cans) holds a few files an hour: the fastpath writes one object an hour, country and test
#: (``…n0.0.jsonl.gz``, another one, ``n0.1``, when it is big) and even a measurement an object would be a
#: few thousand (the busiest countries send a few thousand web_connectivity measurements an hour):
#: 100,000 is ×10 over that.
MAX_KEYS_PER_PREFIX = 100_000
#: A whole upload day of every country (``raw/<day>/``, ``--cc ALL``): OONI collects about 1.5 M
#: measurements a day, at most as many objects: 2,000,000.
MAX_KEYS_PER_DAY_PREFIX = 2_000_000
#: Upload days whose listings run at once (their tasks created together, not one a day for the period).
LIST_DAY_BATCH = 8


def max_keys(prefix: str) -> int:
    """The most keys a listing of ``prefix`` may hold (:data:`MAX_KEYS_PER_PREFIX`, or
    :data:`MAX_KEYS_PER_DAY_PREFIX` for an every-country day ``raw/<day>/``)."""
    return MAX_KEYS_PER_DAY_PREFIX if re.fullmatch(r"raw/\d{8}/", prefix) else MAX_KEYS_PER_PREFIX

_RAW_RE = re.compile(r"^raw/(\d{8})/(\d{2})/([A-Z]{2})/([a-z0-9_]+)/[^/]+\.jsonl\.gz$")
_JSONL_RE = re.compile(r"^jsonl/([a-z0-9_]+)/([A-Z]{2})/(\d{8})/(\d{2})/([^/]+)\.jsonl\.gz$")
_FAMILY_RE = re.compile(r"^(?P<stem>.+?)\.(?P<family>[lx])\.(?P<rest>[^.]+)$")
_CAN_RE = re.compile(r"^(?:" + "|".join(map(re.escape, CAN_PREFIXES))
                     + r")/(\d{4}-\d{2}-\d{2})/([a-z_]+)\.\d+\.tar\.lz4$")
#: A can member's name: <day>/<YYYYMMDDThhmmssZ>-<CC>-<AS…>-<test_name>-<report_id>-<ver>-probe.json
_MEMBER_RE = re.compile(r"(?:^|/)\d{8}T\d{6}Z-([A-Z]{2})-AS\d+-([a-z_]+)-")


def bucket_testname(test_name: str) -> str:
    """``web_connectivity`` → ``webconnectivity`` (the bucket's spelling in keys)."""
    return test_name.replace("_", "").lower()


@dataclass(frozen=True, kw_only=True)
class ObjectRef:
    """A bucket object that may hold measurements of the country asked for.

    Attributes:
        key: the object's key.
        size: bytes, from the listing.
        etag: from the listing (changes when the object is rewritten).
        layout: ``raw``, ``jsonl`` or ``can``.
        day: the upload day in the key.
        cc: the country in the key (None for a can: it holds every country).
        testname: the bucket's test name (``webconnectivity``).
    """

    key: str
    size: int
    etag: str
    layout: str
    day: dt.date
    cc: str | None
    testname: str


def parse_key(key: str, size: int = 0, etag: str = "") -> ObjectRef | None:
    """What a key says (layout, upload day, country, test), or None for a key not read
    (a postcan, an index, anything else)."""
    m = _RAW_RE.match(key)
    if m:
        return ObjectRef(key=key, size=size, etag=etag, layout="raw", day=_day(m.group(1)), cc=m.group(3),
                         testname=bucket_testname(m.group(4)))
    m = _JSONL_RE.match(key)
    if m:
        return ObjectRef(key=key, size=size, etag=etag, layout="jsonl", day=_day(m.group(3)), cc=m.group(2),
                         testname=bucket_testname(m.group(1)))
    m = _CAN_RE.match(key)
    if m:
        return ObjectRef(key=key, size=size, etag=etag, layout="can", day=dt.date.fromisoformat(m.group(1)), cc=None,
                         testname=bucket_testname(m.group(2)))
    return None


def _day(s: str) -> dt.date:
    return dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def member_country(name: str) -> tuple[str, str] | None:
    """(country, test_name) from a can member's name, None when the name has no such parts."""
    m = _MEMBER_RE.search(name)
    return (m.group(1), m.group(2)) if m else None


def upload_days(since: dt.date, until: dt.date, margin_before: int, margin_after: int) -> list[dt.date]:
    """The upload days to list for measurements made ``since`` … ``until`` (both included):
    ``margin_before`` days earlier (probe clocks, time zones) to ``margin_after`` days
    later (late uploads)."""
    first = since - dt.timedelta(days=margin_before)
    last = until + dt.timedelta(days=margin_after)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def day_prefixes(day: dt.date, cc: str | None, testnames: Iterable[str],
                 jsonl_ccs: Iterable[str] = ()) -> list[str]:
    """The listing prefixes of one upload day for ``cc`` and the tests.

    ``raw/``: one prefix per hour and test (``raw/<day>/<HH>/<CC>/<test>/``: each listing holds
    only the country's files, 24 short requests a day instead of paging through every
    country's); for every country (``cc`` None) the whole day, ``raw/<day>/``.
    ``jsonl/``: ``jsonl/<test>/<CC>/<day>/`` for ``cc``, or for each of ``jsonl_ccs``.
    """
    tests = [bucket_testname(t) for t in testnames]
    out = []
    if day >= RAW_START:
        out += ([f"raw/{day:%Y%m%d}/{hh:02d}/{cc}/{t}/" for hh in range(24) for t in tests] if cc
                else [f"raw/{day:%Y%m%d}/"])
    if day <= JSONL_END:
        out += [f"jsonl/{t}/{c}/{day:%Y%m%d}/" for c in ([cc] if cc else jsonl_ccs) for t in tests]
    return out


def can_prefixes(day: dt.date) -> list[str]:
    """Where the cans of an upload day may be (empty after :data:`CAN_END`)."""
    if day > CAN_END:
        return []
    return [f"{p}/{day:%Y-%m-%d}/" for p in CAN_PREFIXES]


def wanted(ref: ObjectRef | None, cc: str, testnames: Iterable[str]) -> bool:
    """True for an object of ``cc`` (or a can) and one of the tests."""
    if ref is None:
        return False
    tns = {bucket_testname(t) for t in testnames}
    return ref.testname in tns and (ref.cc is None or ref.cc == cc)


def drop_duplicate_families(refs: list[ObjectRef]) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(kept, dropped): in the ``jsonl/`` layout, where a file stem has both ``.l.<N>`` and
    ``.x.<hash>`` files, the ``.x.`` ones repeat the ``.l.`` ones (ooni/backend#613) and are dropped."""
    fams: dict[tuple[str, str], set[str]] = {}
    for r in refs:
        if r.layout != "jsonl":
            continue
        d, _, name = r.key.rpartition("/")
        m = _FAMILY_RE.match(name[: -len(".jsonl.gz")])
        if m:
            fams.setdefault((d, m.group("stem")), set()).add(m.group("family"))
    kept, dropped = [], []
    for r in refs:
        if r.layout == "jsonl":
            d, _, name = r.key.rpartition("/")
            m = _FAMILY_RE.match(name[: -len(".jsonl.gz")])
            if m and m.group("family") == "x" and "l" in fams.get((d, m.group("stem")), set()):
                dropped.append(r)
                continue
        kept.append(r)
    return kept, dropped
