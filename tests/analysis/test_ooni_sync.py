"""kzprobe ooni sync against a loopback S3 bucket laid out as OONI's (tests/fixtures/ooni_bucket.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from analysis import decompress_bound as db
from analysis import ooni_bucket as ob
from analysis.load import COLUMNS, load
from analysis.ooni_store import iter_store_files, store_root
from analysis.ooni_sync import MANIFEST, SyncConfig, manifest_done, sync
from analysis.s3 import DiskFullError, RetryPolicy, S3Error, parse_list_response
from tests.conftest import shared_path
from tests.fixtures.ooni_bucket import FakeS3, ooni_layout

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05, connect_timeout=5, read_timeout=5)


@pytest.fixture()
def layout():  # type: ignore[no-untyped-def]
    return ooni_layout(shared_path())


@pytest.fixture()
def bucket(layout):  # type: ignore[no-untyped-def]
    s3 = FakeS3(layout.objects, max_keys=3)  # small pages: continuation tokens are exercised
    s3.faults[layout.flaky_key] = ["503", "500"]
    s3.faults[layout.slow_key] = ["slow"]
    s3.faults[layout.truncated_key] = ["truncate"]
    with s3:
        yield s3


def _cfg(out: Path, endpoint: str, **kw) -> SyncConfig:  # type: ignore[no-untyped-def]
    base = dict(cc="KZ", since=dt.date(2020, 6, 1), until=dt.date(2020, 10, 22), out=out, endpoint=endpoint,
                margin_before=1, margin_after=4, concurrency=3, workers=0, retry=FAST)
    base.update(kw)
    return SyncConfig(**base)  # type: ignore[arg-type]


def _stored(out: Path) -> pd.DataFrame:
    files = list(iter_store_files(store_root(out)))
    return pd.concat([pq.read_table(f).to_pandas() for f in files]) if files else pd.DataFrame()


def _keys(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    t = pd.to_datetime(frame["measurement_start_time"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    return set(zip(frame["report_id"], frame["input"], t, strict=True))


def test_keys_parse_as_oonis_layouts() -> None:
    r = ob.parse_key("raw/20201021/05/KZ/webconnectivity/2020102105_KZ_webconnectivity.n0.0.jsonl.gz", 10, "e")
    assert (r.layout, r.day, r.cc, r.testname) == ("raw", dt.date(2020, 10, 21), "KZ", "webconnectivity")
    assert ob.parse_key("raw/20201021/05/KZ/webconnectivity/2020102105_KZ_webconnectivity.n0.0.tar.gz") is None
    # a hostile listing cannot steer a download outside OUT/.partial or OUT/raw
    for bad in ("raw/20201021/05/KZ/../../../../etc/x.jsonl.gz", "raw/20201021/05/KZ/webconnectivity/../x.jsonl.gz",
                "jsonl/webconnectivity/KZ/20200601/00/../../x.jsonl.gz", "/raw/20201021/05/KZ/w/x.jsonl.gz",
                "autoclaved/jsonl.tar.lz4/2020-08-01/../web_connectivity.02.tar.lz4"):
        assert ob.parse_key(bad) is None, bad
    j = ob.parse_key("jsonl/whatsapp/IT/20200101/00/20200101_IT_whatsapp.x.411d9d2e15f1bd08.jsonl.gz")
    assert (j.layout, j.cc, j.testname) == ("jsonl", "IT", "whatsapp")
    c = ob.parse_key("autoclaved/jsonl.tar.lz4/2020-08-01/web_connectivity.02.tar.lz4")
    assert (c.layout, c.cc, c.day) == ("can", None, dt.date(2020, 8, 1))
    assert ob.member_country("2020-08-01/20200801T003343Z-BY-AS6697-web_connectivity-20200801T003344Z_AS6697_Jw"
                             "-0.2.0-probe.json") == ("BY", "web_connectivity")
    # the layout switch (ooni/data dataclient.get_v2_prefixes): both on 2020-10-20
    assert ob.day_prefixes(dt.date(2020, 10, 19), "KZ", ["web_connectivity"]) == [
        "jsonl/webconnectivity/KZ/20201019/"]
    both = ob.day_prefixes(dt.date(2020, 10, 20), "KZ", ["web_connectivity"])
    assert both[0] == "raw/20201020/00/KZ/webconnectivity/" and both[23] == "raw/20201020/23/KZ/webconnectivity/"
    assert both[24:] == ["jsonl/webconnectivity/KZ/20201020/"]
    assert len(ob.day_prefixes(dt.date(2021, 5, 31), "KZ", ["web_connectivity", "telegram"])) == 48
    assert ob.day_prefixes(dt.date(2021, 5, 31), None, ["web_connectivity"]) == ["raw/20210531/"]
    assert ob.day_prefixes(dt.date(2020, 8, 1), None, ["web_connectivity"], jsonl_ccs=["BY", "KZ"]) == [
        "jsonl/webconnectivity/BY/20200801/", "jsonl/webconnectivity/KZ/20200801/"]
    assert ob.upload_days(dt.date(2021, 5, 30), dt.date(2021, 5, 31), 1, 2)[0] == dt.date(2021, 5, 29)
    assert ob.upload_days(dt.date(2021, 5, 30), dt.date(2021, 5, 31), 1, 2)[-1] == dt.date(2021, 6, 2)


def test_l_and_x_families_deduplicated() -> None:
    refs = [ob.parse_key(k, 1, "") for k in (
        "jsonl/whatsapp/IT/20200101/00/20200101_IT_whatsapp.l.0.jsonl.gz",
        "jsonl/whatsapp/IT/20200101/00/20200101_IT_whatsapp.x.411d9d2e15f1bd08.jsonl.gz",
        "jsonl/whatsapp/IT/20200102/00/20200102_IT_whatsapp.x.aaaa.jsonl.gz")]
    kept, dropped = ob.drop_duplicate_families([r for r in refs if r])
    assert [r.key.rsplit("/", 1)[1] for r in dropped] == ["20200101_IT_whatsapp.x.411d9d2e15f1bd08.jsonl.gz"]
    assert len(kept) == 2  # an .x. file with no .l. beside it is the only copy: kept


def test_list_response_shapes() -> None:
    body = (b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<IsTruncated>true</IsTruncated><Contents><Key>raw/a</Key><Size>5</Size><ETag>&quot;ab&quot;</ETag>"
            b"</Contents><CommonPrefixes><Prefix>jsonl/x/KZ/</Prefix></CommonPrefixes>"
            b"<NextContinuationToken>tok</NextContinuationToken></ListBucketResult>")
    objs, prefixes, token = parse_list_response(body)
    assert [(o.key, o.size, o.etag) for o in objs] == [("raw/a", 5, "ab")]
    assert prefixes == ["jsonl/x/KZ/"] and token == "tok"
    with pytest.raises(Exception, match="not <ListBucketResult>"):
        parse_list_response(b"<Error><Code>AccessDenied</Code></Error>")


def test_a_listing_entry_whose_size_is_no_byte_count_is_refused() -> None:
    """Break test: <Size>-99999999999999</Size> was taken as listed, so the object was fetched 5
    times and the sync said "not complete within -1,525,878,846.2 s". A Size that is not a whole
    number ≥ 0 now makes the listing malformed, named with the key, before any fetch."""
    def body(size: str) -> bytes:
        return ('<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated>'
                f"<Contents><Key>raw/a</Key><Size>{size}</Size></Contents></ListBucketResult>").encode()

    five_tib = 5 * 2**40  # S3's largest object
    for bad in ("-99999999999999", "-1", "1.5", "1e3", " 5", "+5", "5_0", "abc", "1" * 21, "1" * 14,
                str(five_tib + 1), "9" * 13):
        with pytest.raises(S3Error, match=r"Size .* of 'raw/a' is not a byte count"):
            parse_list_response(body(bad))
    assert [o.size for o in parse_list_response(body("5368709120000"))[0]] == [5368709120000]  # 5 TB
    assert [o.size for o in parse_list_response(body(str(five_tib)))[0]] == [five_tib]
    assert [o.size for o in parse_list_response(body(""))[0]] == [0]


def test_sync_gets_every_measurement_once(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    res = sync(_cfg(tmp_path, bucket.endpoint))
    got = _keys(_stored(tmp_path))
    assert layout.expected <= got, f"missing: {layout.expected - got}"
    assert got <= layout.expected | layout.maybe, f"unexpected: {got - layout.expected - layout.maybe}"
    # the .x. copy, the postcan and the other country's file were never fetched
    assert bucket.gets(layout.x_key) == 0 and bucket.gets(layout.postcan_key) == 0
    assert not any("/RU/" in line for line in bucket.log if line.startswith("GET"))
    assert res.duplicate_family == 1
    assert res.can_days == ["2020-06-02"]
    assert res.duplicates >= 1 and res.out_of_period >= 1
    assert len(res.corrupt) == 1 and layout.corrupt_key in res.corrupt[0]
    assert res.retries >= 3  # two 5xx, one truncated transfer
    assert bucket.gets(layout.flaky_key) == 3 and bucket.gets(layout.truncated_key) == 2
    assert not res.failed
    # rows carry the raw object's path and line and the hashes
    st = _stored(tmp_path)
    assert st["mkey"].is_unique
    assert st["file"].str.startswith(("raw/", "jsonl/", "autoclaved/")).all() and (st["line"] >= 1).all()
    assert st["file"].str.contains("!2020-06-02/").any()  # can rows: key!member
    assert (st["line_sha256"].str.len() == 64).all()
    assert not (tmp_path / ".partial").exists()  # no empty .partial/raw/<day>/ directories left
    # coverage per day and network
    cov = pd.read_csv(tmp_path / "coverage.csv")
    assert set(cov.columns) == {"day", "probe_asn", "n"} and cov["n"].sum() == len(st)
    # one file a measurement month (issue 13), no day partition left
    files = list(iter_store_files(store_root(tmp_path)))
    months = {f.parent.name for f in files}
    assert len(files) == len(months) and all(m.startswith("month=") for m in months)
    assert months == {f"month={m}" for m in st["measurement_start_time"].dt.strftime("%Y-%m")}
    assert res.stored == len(st)


def test_line_sha_points_at_the_raw_line(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    import gzip
    import hashlib

    sync(_cfg(tmp_path, bucket.endpoint, keep_raw=True))
    st = _stored(tmp_path)
    r = st[st["file"].str.startswith("raw/20201021/05/KZ")].iloc[0]
    lines = gzip.decompress((tmp_path / "raw" / r["file"]).read_bytes()).split(b"\n")
    assert hashlib.sha256(lines[int(r["line"]) - 1]).hexdigest() == r["line_sha256"]


def test_rerun_fetches_only_what_is_missing(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    first = sync(_cfg(tmp_path, bucket.endpoint))
    n = len(_stored(tmp_path))
    gets = sum(1 for line in bucket.log if line.startswith("GET"))
    again = sync(_cfg(tmp_path, bucket.endpoint))
    assert again.fetched == 0 and again.already == first.planned
    assert sum(1 for line in bucket.log if line.startswith("GET")) == gets
    assert len(_stored(tmp_path)) == n
    # an object rewritten in the bucket (new ETag) is fetched again, and its rows are not doubled
    key = "raw/20201025/09/KZ/webconnectivity/2020102509_KZ_webconnectivity.n0.0.jsonl.gz"
    bucket.objects[key] = bucket.objects[key] + b""  # same bytes, same ETag: still not refetched
    assert sync(_cfg(tmp_path, bucket.endpoint)).fetched == 0


def test_interrupted_download_is_not_counted(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    # every attempt truncated: the object fails, is not in the manifest, and a later run gets it
    bucket.faults[layout.truncated_key] = ["truncate"] * 10
    res = sync(_cfg(tmp_path, bucket.endpoint))
    assert any(layout.truncated_key in f for f in res.failed)
    assert layout.truncated_key not in manifest_done(tmp_path)
    bucket.faults[layout.truncated_key] = []
    again = sync(_cfg(tmp_path, bucket.endpoint))
    assert again.fetched == 1 and layout.truncated_key in manifest_done(tmp_path)
    assert layout.expected <= _keys(_stored(tmp_path))


def test_corrupt_transfer_caught_by_md5(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    bucket.faults[layout.slow_key] = ["corrupt"]
    res = sync(_cfg(tmp_path, bucket.endpoint))
    assert bucket.gets(layout.slow_key) == 2 and not res.failed


def test_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path, bucket: FakeS3, layout,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import analysis.s3 as s3mod

    real = s3mod._write
    calls = {"n": 0}

    class Full:
        def write(self, piece: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def full(fh, piece, dest):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(Full() if calls["n"] > 4 else fh, piece, dest)

    monkeypatch.setattr(s3mod, "_write", full)
    with pytest.raises(DiskFullError, match="disk full writing .*free some space and run the same command again"):
        sync(_cfg(tmp_path, bucket.endpoint, concurrency=1))
    done = manifest_done(tmp_path)
    assert 1 <= len(done) <= 4
    monkeypatch.setattr(s3mod, "_write", real)
    sync(_cfg(tmp_path, bucket.endpoint))
    assert layout.expected <= _keys(_stored(tmp_path))


def test_manifest_torn_line_ignored(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"key": "a", "etag": "1"}) + "\n" + '{"key": "b", "et')
    assert manifest_done(tmp_path) == {"a": "1"}


def test_report_reads_the_store(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    sync(_cfg(tmp_path, bucket.endpoint))
    res = load([tmp_path])
    f = res.frame
    assert list(f.columns) == list(COLUMNS)
    assert layout.expected <= _keys(f)
    assert (f["source"] == "ooni").all() and (f["probe_cc"] == "KZ").all()
    assert set(f["verdict_source"].astype(str)) <= {"recomputed", "ooni"}


def test_worker_processes_give_the_same_store(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    sync(_cfg(tmp_path / "a", bucket.endpoint, workers=0))
    sync(_cfg(tmp_path / "b", bucket.endpoint, workers=2))
    a, b = _stored(tmp_path / "a"), _stored(tmp_path / "b")
    cols = ["mkey", "blocking", "rule", "file", "line"]
    norm = lambda f: f[cols].astype("string").sort_values("mkey").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(norm(a), norm(b))


def test_main_process_imports_no_analysis_stack(tmp_path: Path, bucket: FakeS3) -> None:
    """With worker processes the sync's main process only lists, downloads and keeps the manifest: the
    compaction and the coverage run in the workers, so pandas/pyarrow/numpy (~0.5–0.7 CPU-s and ~200 MiB
    of the main process before) are never imported there; the store is still compacted, coverage written."""
    import subprocess
    import sys

    code = ("import sys,datetime as dt;from pathlib import Path;from analysis.ooni_sync import SyncConfig,sync;"
            f"r=sync(SyncConfig(cc='KZ',since=dt.date(2020,10,20),until=dt.date(2020,10,22),out=Path({str(tmp_path)!r}),"
            f"endpoint={bucket.endpoint!r},margin_before=0,margin_after=0,workers=1,use_cans=False));"
            "print(r.stored, sorted(m for m in ('pandas','pyarrow','numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    stored, heavy = out.stdout.split(" ", 1)
    assert int(stored) > 0 and heavy.strip() == "[]", out.stdout
    files = list(iter_store_files(store_root(tmp_path)))
    assert files and all(f.parent.name.startswith("month=") for f in files)  # compacted (in the worker)
    assert pd.read_csv(tmp_path / "coverage.csv")["n"].sum() == int(stored)


def test_workers_start_with_the_judge_warmed() -> None:
    """The judge's databases are built once in the fork server (a preload), not in each worker: a
    worker forked from the sync's fork server, without the executor's initializer, finds them built.
    In a fresh interpreter, so that its fork server starts with the sync's preload list."""
    import subprocess
    import sys

    code = ("import multiprocessing as mp, concurrent.futures as cf, analysis.ooni_sync as s\n"
            "ctx = mp.get_context('forkserver'); ctx.set_forkserver_preload(list(s._PRELOAD))\n"
            "with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:\n"
            "    flag = \"__import__('analysis.ooni', fromlist=['_']).__dict__['_warmed']\"\n"
            "    print(ex.submit(eval, flag).result())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_partial_downloads_are_flat(tmp_path: Path, bucket: FakeS3, layout,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Each download goes to OUT/.partial/<digest>-<name>, not to the key's own directories (five
    mkdir an object, and as many rmdir after: ~1.5 ms of the main process's CPU an object)."""
    from analysis.ooni_sync import partial_name
    from analysis.s3 import S3Client

    dests: list[Path] = []
    real = S3Client.download

    async def download(self, obj, dest, **kw):  # type: ignore[no-untyped-def]
        dests.append(dest)
        return await real(self, obj, dest, **kw)

    monkeypatch.setattr(S3Client, "download", download)
    res = sync(_cfg(tmp_path, bucket.endpoint))
    assert res.fetched and len(dests) >= res.fetched
    assert {d.parent for d in dests} == {tmp_path / ".partial"}
    names = {partial_name(k) for k in layout.objects}
    assert {d.name for d in dests} <= names and len(names) == len(layout.objects)  # one name a key
    assert partial_name("raw/a/x.jsonl.gz") != partial_name("raw/b/x.jsonl.gz")


def test_dask_sync_gives_the_same_store(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    """One task per (upload day, prefix) on a local Dask cluster: the same rows as the local sync."""
    from distributed import Client, LocalCluster

    from analysis.ooni_sync import group_key, sync_dask

    local = sync(_cfg(tmp_path / "local", bucket.endpoint))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        res = sync_dask(_cfg(tmp_path / "dask", bucket.endpoint), client)
    a, b = _stored(tmp_path / "local"), _stored(tmp_path / "dask")
    assert layout.expected <= _keys(b) and len(a) == len(b)
    cols = ["mkey", "blocking", "rule", "file", "line", "line_sha256"]
    norm = lambda f: f[cols].astype("string").sort_values("mkey").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(norm(a), norm(b))
    assert res.duplicates >= 1 and len(res.corrupt) == 1
    # an empty store: what was read less the compaction's duplicates is what it holds, on either engine
    assert res.kept - res.compaction_dropped == res.stored == local.kept - local.compaction_dropped == local.stored
    assert manifest_done(tmp_path / "dask").keys() == manifest_done(tmp_path / "local").keys()
    # the unit of work: an hour's prefix of raw/, a day's of jsonl/, a can by itself
    r = ob.parse_key("raw/20201021/05/KZ/webconnectivity/2020102105_KZ_webconnectivity.n0.0.jsonl.gz")
    assert group_key(r) == ("2020-10-21", "raw/20201021/05/KZ/webconnectivity/")


def test_every_country(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    """--cc ALL: the other countries' objects and can members are kept too."""
    sync(_cfg(tmp_path, bucket.endpoint, cc=None))
    st = _stored(tmp_path)
    assert set(st["probe_cc"]) == {"KZ", "RU"}
    assert layout.expected <= _keys(st)
    assert st["file"].str.contains("-RU-AS12389-").any()  # the can's RU member


def _good(i: int) -> bytes:
    return json.dumps({"test_name": "web_connectivity", "probe_cc": "KZ", "input": f"http://a{i}.example/",
                       "report_id": f"r{i}", "measurement_start_time": "2021-01-01 00:00:00"}).encode() + b"\n"


# (name, body between two good lines, floor of the decompressed cap, line cap, good lines kept, reason or None)
_HOSTILE = [
    # 4 MB of newlines compress ~1000x: past max(floor 1 MB, 200x its ~4 kB), the floor named (review 24:
    # the message said "200x its 4,1xx compressed bytes" beside a cap of 1 MiB)
    ("ratio bomb", b"\n" * (4 << 20), 1 << 20, 1 << 16, 1,
     "decompresses to more than 1,048,576 bytes (the floor for any input, above 200× its "),
    ("many empty lines", b"\n" * (2 << 20) + b" \t\r\n" * 1000, 8 << 20, 1 << 16, 2, None),
    ("empty lines past the cap", b"\n" * (4 << 20), 1 << 20, 8 << 20, 1, "(the floor for any input, above 200× its "),
]


@pytest.mark.parametrize(("body", "floor", "max_line", "kept", "reason"), [c[1:] for c in _HOSTILE],
                         ids=[c[0] for c in _HOSTILE])
def test_hostile_objects_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes, floor: int,
                                     max_line: int, kept: int, reason: str | None) -> None:
    """An object over its cap (decompressed bytes: analysis.decompress_bound) keeps the lines
    before it, is named as damaged with the reason, and the sync goes on and
    stores the other objects; a flood of blank lines under the caps only costs its reading (skipped a
    buffer at a time), the line numbers after it stay right."""
    import gzip

    import analysis.ooni_sync as osync

    monkeypatch.setattr(db, "FLOOR_BYTES", floor)
    monkeypatch.setattr(osync, "MAX_LINE_BYTES", max_line)
    key = "raw/20210101/00/KZ/webconnectivity/2021010100_KZ_webconnectivity.n0.0.jsonl.gz"
    other = "raw/20210101/01/KZ/webconnectivity/2021010101_KZ_webconnectivity.n0.0.jsonl.gz"
    bad = gzip.compress(_good(0) + body + _good(1), mtime=0)
    with FakeS3({key: bad, other: gzip.compress(_good(2), mtime=0)}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
    assert res.fetched == 2 and res.kept == kept + 1
    st = _stored(tmp_path)
    assert set(st["input"]) == {"http://a0.example/", "http://a2.example/"} | (
        {"http://a1.example/"} if kept == 2 else set())
    if reason is None:
        assert not res.corrupt
        assert st.loc[st["input"] == "http://a1.example/", "line"].tolist() == [2 + body.count(b"\n")]
    else:
        assert len(res.corrupt) == 1 and res.corrupt[0].startswith(key) and reason in res.corrupt[0], res.corrupt
        entry = [json.loads(x) for x in (tmp_path / MANIFEST).read_text().splitlines() if key in x]
        assert len(entry) == 1 and reason in entry[0]["error"]
        assert "_TooMuch" not in res.corrupt[0] + entry[0]["error"]  # readable, no class name (break test F10)
    assert not (tmp_path / ".partial").exists()


def test_a_line_over_the_cap_is_skipped_and_the_object_read_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Break test: an object of 3 good lines, one valid measurement longer than the line cap, 3 more good
    lines stored only the first 3 and was marked done, so the last 3 were never stored. Now the long line
    is counted invalid and named (``key:4: longer than … bytes, skipped``), the 6 others are stored, the
    object is not damaged; the long line crosses many inflater steps (its bytes not held)."""
    import gzip

    import analysis.ooni_sync as osync

    monkeypatch.setattr(osync, "MAX_LINE_BYTES", 1 << 16)
    d = json.loads(_good(3))
    d["test_keys"] = {"pad": "x" * (3 << 20)}  # 3 MiB: several inflater steps (1 MiB each)
    body = b"".join(map(_good, range(3))) + json.dumps(d).encode() + b"\n" + b"".join(map(_good, range(4, 7)))
    key = "raw/20210101/00/KZ/webconnectivity/2021010100_KZ_webconnectivity.n0.0.jsonl.gz"
    with FakeS3({key: gzip.compress(body, mtime=0)}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
    assert res.fetched == 1 and res.kept == 6 and res.invalid == 1 and not res.corrupt
    assert res.invalid_examples == [f"{key}:4: longer than 65,536 bytes, skipped"]
    st = _stored(tmp_path)
    assert sorted(st["line"]) == [1, 2, 3, 5, 6, 7]
    assert set(st["input"]) == {f"http://a{i}.example/" for i in (0, 1, 2, 4, 5, 6)}
    entry = [json.loads(x) for x in (tmp_path / MANIFEST).read_text().splitlines() if key in x]
    assert len(entry) == 1 and entry[0]["error"] is None and entry[0]["invalid"] == 1


def test_near_identical_measurements_past_50x_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Break test: 100,000 near-identical small measurements (0.8 MB of gzip, ≈90×) lost 6,404 of them to
    the 50× cap ("a compression bomb?"). The same at a small scale (the floor set to 1 MiB, as it would be
    under 50×'s reach): 3,000 measurements, 2.3 MB at ≈107×, all kept, the object not damaged."""
    import gzip

    monkeypatch.setattr(db, "FLOOR_BYTES", 1 << 20)

    def m(i: int) -> bytes:
        d = json.loads(_good(i))
        d["test_keys"] = {"pad": "p" * 600}
        return json.dumps(d).encode() + b"\n"

    body = b"".join(map(m, range(3000)))
    blob = gzip.compress(body, mtime=0)
    assert 100 < len(body) / len(blob) < 120 and len(body) > 2 << 20
    key = "raw/20210101/00/KZ/webconnectivity/2021010100_KZ_webconnectivity.n0.0.jsonl.gz"
    with FakeS3({key: blob}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
    assert not res.corrupt and res.kept == 3000 and res.invalid == 0
    assert len(_stored(tmp_path)) == 3000


def test_doc_quotes_the_bounds() -> None:
    """Break test F10: docs/ooni-sync.md said objects are capped at 64x their compressed size while the code
    stopped past 50x. The doc's figures are the constants' (analysis.ooni_sync's bounds)."""
    import re

    import analysis.ooni_sync as osync
    from analysis.s3 import RetryPolicy

    doc = " ".join((Path(__file__).parents[2] / "docs" / "ooni-sync.md").read_text().split())
    m = re.search(r"every line bounded \((\d+) MiB: `analysis\.ooni_sync\.MAX_LINE_BYTES`;", doc)
    assert m and int(m[1]) << 20 == osync.MAX_LINE_BYTES
    m = re.search(r"the whole object bounded \((\d+) × its compressed size, at least (\d+) MiB", doc)
    assert m and (int(m[1]), int(m[2]) << 20) == (db.MAX_RATIO, db.FLOOR_BYTES)
    m = re.search(r"`KEY:7: longer than ([\d,]+) bytes, skipped`.* `decompresses to more than [\d,]+ bytes "
                  r"\((\d+)× its ", doc)
    assert m and (int(m[1].replace(",", "")), int(m[2])) == (osync.MAX_LINE_BYTES, db.MAX_RATIO)
    m = re.search(r"Each attempt has a deadline, (\d+) s plus the object's size at (\d+) KiB/s", doc)
    r = RetryPolicy()
    assert m and (int(m[1]), int(m[2]) << 10) == (r.deadline_floor, r.min_rate)


def test_junk_objects_are_given_up_and_reported(tmp_path: Path) -> None:
    """The invalid-line policy: an object whose lines are mostly junk (more than half invalid after
    JUNK_MIN_LINES) is not read to its end: it is a damaged object in the summary and the manifest,
    named with the lines read and the invalid count, and keeps the measurements read before; an
    object with junk under the share, and the good objects, are stored whole."""
    import gzip

    from analysis.ooni_sync import JUNK_MIN_LINES

    def key(h: int) -> str:
        return f"raw/20210101/{h:02d}/KZ/webconnectivity/20210101{h:02d}_KZ_webconnectivity.n0.0.jsonl.gz"

    flood = b"".join(_good(i) for i in range(3)) + b"x\n" * 200_000  # 3 measurements, then junk to the end
    mixed = b"".join(_good(i) + (b"{not json\n" if i % 10 else b"") for i in range(100, 100 + JUNK_MIN_LINES))
    exact = b"[1]\n" * JUNK_MIN_LINES  # junk read to its end: reported all the same
    objects = {key(0): flood, key(1): mixed, key(2): _good(50) + _good(51), key(3): exact}
    with FakeS3({k: gzip.compress(v, mtime=0) for k, v in objects.items()}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
    assert res.fetched == 4 and len(res.corrupt) == 2, res.corrupt
    flood_msg = next(c for c in res.corrupt if c.startswith(key(0)))
    assert f"{JUNK_MIN_LINES - 3:,} of the {JUNK_MIN_LINES:,} lines read" in flood_msg and "kept the 3" in flood_msg
    assert any(c.startswith(key(3)) and f"{JUNK_MIN_LINES:,} of the {JUNK_MIN_LINES:,}" in c for c in res.corrupt)
    entries = {e["key"]: e for e in map(json.loads, (tmp_path / MANIFEST).read_text().splitlines())}
    assert set(entries) == set(objects)  # recorded: a re-run does not fetch the junk again
    e = entries[key(0)]
    assert (e["lines"], e["invalid"], e["written"]) == (JUNK_MIN_LINES, JUNK_MIN_LINES - 3, 3)
    assert "junk" in e["error"]
    m = entries[key(1)]
    assert m["error"] is None
    assert (m["written"], m["invalid"]) == (JUNK_MIN_LINES, JUNK_MIN_LINES - JUNK_MIN_LINES // 10)
    assert entries[key(2)]["error"] is None and entries[key(2)]["written"] == 2
    st = _stored(tmp_path)
    assert len(st) == 3 + JUNK_MIN_LINES + 2 and st["mkey"].is_unique
    assert set(st.loc[st["file"] == key(0), "input"]) == {f"http://a{i}.example/" for i in range(3)}
    assert set(st.loc[st["file"] == key(2), "input"]) == {"http://a50.example/", "http://a51.example/"}
    assert res.invalid == (JUNK_MIN_LINES - 3) + (JUNK_MIN_LINES - JUNK_MIN_LINES // 10) + JUNK_MIN_LINES


def test_manifest_names_the_rows_written_not_the_new_ones(tmp_path: Path) -> None:
    """Break test: each object's manifest entry said ``kept`` for the rows written for it, so two objects
    holding the same measurement said "kept 2" each while the store gained 3 (the repeat dropped at
    compaction, counted per month). The entry names the count ``written``; the sync's
    compaction_dropped and stored say what the store did with them. An older manifest whose entries say
    ``kept`` still resumes: nothing is fetched again."""
    import gzip

    def key(h: int) -> str:
        return f"raw/20210101/{h:02d}/KZ/webconnectivity/20210101{h:02d}_KZ_webconnectivity.n0.0.jsonl.gz"

    objects = {key(0): _good(0) + _good(1), key(1): _good(1) + _good(2)}  # _good(1) in both
    cfg = _cfg(tmp_path, "", since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1), margin_before=0, margin_after=0)
    with FakeS3({k: gzip.compress(v, mtime=0) for k, v in objects.items()}) as s3:
        cfg = replace(cfg, endpoint=s3.endpoint)
        res = sync(cfg)
        entries = [json.loads(x) for x in (tmp_path / MANIFEST).read_text().splitlines()]
        assert sorted((e["key"], e["written"]) for e in entries) == [(key(0), 2), (key(1), 2)]
        assert not any("kept" in e for e in entries)
        assert (res.kept, res.compaction_dropped, res.stored) == (4, 1, 3) and len(_stored(tmp_path)) == 3
        # a manifest written by an older kzprobe: the same entries, the count named "kept"
        (tmp_path / MANIFEST).write_text("".join(
            json.dumps({("kept" if k == "written" else k): v for k, v in e.items()}) + "\n" for e in entries))
        again = sync(cfg)
    assert (again.already, again.fetched, again.kept) == (2, 0, 0)
    assert len(_stored(tmp_path)) == 3


def test_invalid_lines_are_named_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Break test: a sync said "N invalid" and never which lines, so a user could not find them. Now each
    object's manifest entry names its first MAX_INVALID_EXAMPLES invalid lines ("key:line: why", every
    reason the sync has), the sync keeps the first MAX_SYNC_INVALID_EXAMPLES and prints them in its
    summary, then how many more; the counts stay exact."""
    import gzip

    from analysis.ooni_sync import MAX_INVALID_EXAMPLES, MAX_SYNC_INVALID_EXAMPLES
    from probe.cli import main

    def key(h: int) -> str:
        return f"raw/20210101/{h:02d}/KZ/webconnectivity/20210101{h:02d}_KZ_webconnectivity.n0.0.jsonl.gz"

    def m(i: int, **kw: Any) -> bytes:
        d = json.loads(_good(i))
        d.update(kw)
        return json.dumps({k: v for k, v in d.items() if v is not None}).encode() + b"\n"

    every = (_good(0) + b"{not json\n" + b"[1, 2]\n" + _good(1) + m(2, measurement_start_time=None)
             + m(3, measurement_start_time=5) + m(4, test_keys=5))
    objects = {key(0): every, key(1): _good(10) + m(11, measurement_start_time="2021-01-01 25:61:00"),
               key(2): b"x\n" + _good(20)}
    # 8 more objects with 3 invalid lines each: more examples than a sync keeps
    objects |= {key(h): _good(100 + h) + b"junk\n" * 3 for h in range(3, 11)}
    store = tmp_path / "kz"
    with FakeS3({k: gzip.compress(v, mtime=0) for k, v in objects.items()}) as s3:
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-01", "--out", str(store),
                   "--endpoint-url", s3.endpoint, "--margin-before", "0", "--margin-after", "0", "--workers", "0",
                   "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    entries = {e["key"]: e for e in map(json.loads, (store / MANIFEST).read_text().splitlines())}
    e0 = entries[key(0)]
    assert e0["invalid"] == 5 and e0["written"] == 2
    assert len(e0["invalid_examples"]) == MAX_INVALID_EXAMPLES == 3
    assert e0["invalid_examples"][0].startswith(f"{key(0)}:2: not JSON (")
    assert e0["invalid_examples"][1] == f"{key(0)}:3: not a JSON object (list)"
    assert e0["invalid_examples"][2] == f"{key(0)}:5: measurement_start_time missing is not a date"
    assert entries[key(1)]["invalid_examples"] == [
        f'{key(1)}:2: measurement_start_time "2021-01-01 25:61:00" is not a date and time']
    assert entries[key(2)]["invalid_examples"] == [f"{key(2)}:1: not JSON (JSON is malformed: invalid character "
                                                   "(byte 0))"]
    h3 = entries[key(3)]
    assert h3["invalid"] == 3 and [x.split(": ")[0] for x in h3["invalid_examples"]] == [f"{key(3)}:{n}"
                                                                                          for n in (2, 3, 4)]
    # the reasons the first object's examples did not reach, one object each
    one = {"a": m(0, measurement_start_time="2021-02-30 00:00:00"), "b": m(0, test_keys=5)}
    with FakeS3({key(h): gzip.compress(v, mtime=0) for h, v in zip((20, 21), one.values(), strict=True)}) as s3:
        res = sync(_cfg(tmp_path / "two", s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 3, 31),
                        margin_before=0, margin_after=0))
    assert sorted(res.invalid_examples) == [
        f'{key(20)}:1: measurement_start_time "2021-02-30 00:00:00" is not a date',
        f"{key(21)}:1: not a measurement the analysis reads (TypeError: test_keys is a number, not an object)"]

    total = 5 + 1 + 1 + 8 * 3
    assert f"{total:,} invalid" in out.out
    shown = [ln for ln in out.err.splitlines() if ln.startswith("invalid line: ")]
    assert len(shown) == MAX_SYNC_INVALID_EXAMPLES == 20
    assert all(ln.split(": ", 1)[1].split(":")[0].startswith("raw/20210101/") for ln in shown)
    assert (f"… {total - 20} more invalid line(s) not shown (the first 3 of each object are in manifest.jsonl: "
            "invalid_examples)") in out.err


def test_impossible_start_times_are_invalid_whatever_their_text_order(tmp_path: Path) -> None:
    """Break test: the period filter compared the start time's first 10 characters with the period's
    as text before reading them, so an impossible or malformed start time that sorts outside the
    period was counted out of the period and dropped silently. Now it is invalid (counted, named
    'key:line: why'); good start times out of the period (also an ISO form the store reads) stay
    out of the period, and the period's lines are kept."""
    import gzip

    def key(h: int) -> str:
        return f"raw/20210110/{h:02d}/KZ/webconnectivity/20210110{h:02d}_KZ_webconnectivity.n0.0.jsonl.gz"

    def m(i: int, when: str) -> bytes:
        d = json.loads(_good(i))
        d["measurement_start_time"] = when
        return json.dumps(d).encode() + b"\n"

    bad = ["2021-13-45 00:00:00",  # after the period as text
           "9999-99-99",  # after
           "2021-1-5 00:00:00",  # after ("2021-1-5 0" > "2021-01-31")
           "2021-W01-1 00:00:00",  # after (an ISO week date Python reads, not a day)
           "2020-02-30 00:00:00",  # before
           "0000-01-01 00:00:00",  # before (no year 0)
           "2020-12-31 24:00:00",  # before, a day but no time
           "2021-02-01 12:61:00"]  # after, a day but no time
    good_out = ["2020-12-31 23:59:59", "2021-02-01T00:00:00Z", "2021-02-01 00:00:00.5"]
    lines = [m(i, w) for i, w in enumerate(bad + good_out)] + [m(90, "2021-01-10 00:00:00"),
                                                               m(91, "2021-01-31 23:59:59")]
    objects = {key(h): b"".join(lines[2 * h:2 * h + 2]) for h in range((len(lines) + 1) // 2)}
    with FakeS3({k: gzip.compress(v, mtime=0) for k, v in objects.items()}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 31),
                        margin_before=0, margin_after=0))
    assert (res.invalid, res.out_of_period, res.kept) == (len(bad), len(good_out), 2)
    why = ["is not a date"] * 6 + ["is not a date and time"] * 2
    assert sorted(res.invalid_examples) == sorted([f'{key(i // 2)}:{i % 2 + 1}: measurement_start_time "{w}" {y}'
                                    for i, (w, y) in enumerate(zip(bad, why, strict=True))])
    entries = {e["key"]: e for e in map(json.loads, (tmp_path / MANIFEST).read_text().splitlines())}
    assert [entries[key(h)]["invalid"] for h in range(len(objects))] == [2, 2, 2, 2, 0, 0, 0]
    assert set(_stored(tmp_path)["input"]) == {"http://a90.example/", "http://a91.example/"}


def test_lenient_start_times_are_invalid_in_and_out_of_the_period(tmp_path: Path) -> None:
    """Break test: start times in lenient forms were read (Arrow's strptime takes "2021-01-10 0:0:0"
    and rolls "00:00:60" over to 00:01:00; pandas' ISO8601 takes "2021-02-01 0:0:0"), so a line
    the report loader refuses was kept, or counted out of the period. Now both use
    analysis.start_time: each is an invalid line, named; OONI's form and padded ISO forms are read."""
    import gzip

    key = "raw/20210110/00/KZ/webconnectivity/2021011000_KZ_webconnectivity.n0.0.jsonl.gz"

    def m(i: int, when: str) -> bytes:
        d = json.loads(_good(i))
        d["measurement_start_time"] = when
        return json.dumps(d).encode() + b"\n"

    bad_in = ["2021-01-10 0:0:0", "2021-01-10 00:00:60", "2021-01-10 00:00:00 ", "2021-01-10 00:00"]
    bad_out = ["2021-02-01 0:0:0", "2021-02-01", "2021-02-01 00:00:61"]
    good_in = ["2021-01-10 00:00:00", "2021-01-10T01:00:00Z", "2021-01-10T02:00:00.5+00:00"]
    times = bad_in + bad_out + good_in
    body = b"".join(m(i, w) for i, w in enumerate(times))
    with FakeS3({key: gzip.compress(body, mtime=0)}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 31),
                        margin_before=0, margin_after=0))
    assert (res.invalid, res.out_of_period, res.kept) == (len(bad_in) + len(bad_out), 0, len(good_in))
    entry = json.loads((tmp_path / MANIFEST).read_text().splitlines()[0])
    assert entry["invalid"] == 7
    assert set(res.invalid_examples) <= {f'{key}:{i + 1}: measurement_start_time "{w}" is not a date and time'
                                         for i, w in enumerate(times)}
    assert set(_stored(tmp_path)["input"]) == {f"http://a{i}.example/" for i in range(7, 10)}


def test_mkey_values_are_stable() -> None:
    """The de-duplication key is compared with keys already in stores: its fast path for text values
    gives the same keys as the general one (and as the stores written before it)."""
    import hashlib

    from analysis.ooni_store import mkey

    def reference(*vals: Any) -> int:
        text = "\0".join("" if v is None else str(v) for v in vals)
        return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8], "big", signed=True)

    cases = [("20210101T000000Z_webconnectivity_KZ_9198_n1_x", "https://meduza.io/", "2021-01-01 00:00:00"),
             ("r", None, "2021-01-01 00:00:00"), ("r", "", "t"), ("r\udcff", "http://сайт.қаз/", "t"),
             (None, None, None), (5, "i", 1.5), ("r", 0, "t")]
    for c in cases:
        assert mkey(*c) == reference(*c), c
    assert mkey("r", None, "t") == mkey("r", "", "t") == -5358220478343682013


def test_capped_reader_returns_every_byte_up_to_the_cap() -> None:
    """The decompressed bytes up to the cap are read (the lines in them kept), then the error."""
    import analysis.ooni_sync as osync

    for data, cap, over in ((b"a\nb\nc", 4, True), (b"a\nb\n", 4, False)):
        fh = io.BufferedReader(osync._Capped(io.BytesIO(data), cap, "why"), buffer_size=3)
        assert fh.readline() == b"a\n" and fh.readline() == b"b\n"
        if over:
            with pytest.raises(osync._TooMuch, match="why"):
                fh.readline()
        else:
            assert fh.readline() == b""


def test_empty_partial_directories_removed(tmp_path: Path) -> None:
    from analysis.ooni_sync import _prune_empty_dirs

    top = tmp_path / ".partial"
    (top / "raw" / "20210101" / "00").mkdir(parents=True)
    (top / "raw" / "20210102").mkdir(parents=True)
    (top / "raw" / "20210102" / "x.gz").write_bytes(b"x")
    _prune_empty_dirs(top)
    assert sorted(p.relative_to(top).as_posix() for p in top.rglob("*")) == [
        "raw", "raw/20210102", "raw/20210102/x.gz"]
    (top / "raw" / "20210102" / "x.gz").unlink()
    _prune_empty_dirs(top)
    assert not top.exists()


def test_progress_bar_counts_bytes_and_objects(tmp_path: Path, bucket: FakeS3, layout) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from analysis.ooni_sync import sync_async

    bar = Progress(TextColumn("{task.completed} {task.fields[objects]} {task.fields[measurements]}"),
                   console=Console(file=io.StringIO(), force_terminal=True))
    seen: list[str] = []
    with bar:
        res = asyncio.run(sync_async(_cfg(tmp_path, bucket.endpoint), progress=bar, on_estimate=seen.append))
    task = bar.tasks[0]
    assert task.completed == task.total == res.fetched_bytes
    assert task.fields["objects"] == res.fetched and task.fields["measurements"] == res.kept
    assert seen and "to fetch: " in seen[0]


def test_two_syncs_into_one_directory_are_refused(tmp_path: Path, bucket: FakeS3) -> None:
    import fcntl
    import os

    from analysis.ooni_sync import SyncBusyError

    fd = os.open(tmp_path / ".lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(SyncBusyError, match="another kzprobe ooni sync is writing"):
            sync(_cfg(tmp_path, bucket.endpoint))
    finally:
        os.close(fd)
    assert not (tmp_path / MANIFEST).exists()


def test_store_part_schema_and_bad_times(tmp_path: Path) -> None:
    """Parts are built in Arrow with one schema; a start time whose day parses but whose time does
    not is dropped and counted (the loader would call it invalid too); reading back gives the
    analysis frame's dtypes."""
    from analysis.load import DTYPES, read_store_file, row
    from analysis.ooni_store import SCHEMA, frame_from_rows, table_from_rows, write_part
    from tests.fixtures.ooni_bucket import as_kz, real_samples

    ms = [as_kz(m, f"2021-01-01 00:00:{i:02d}", i) for i, m in enumerate(real_samples(shared_path())[:6])]
    ms[2]["measurement_start_time"] = "2021-01-01 99:00:00"
    rows = [row(m, "raw/k", i + 1) for i, m in enumerate(ms)]
    table, bad = table_from_rows(rows, list(range(6)), ["0" * 64] * 6)
    assert bad == 1 and table.num_rows == 5 and table.schema == SCHEMA
    new = read_store_file(write_part(tmp_path, dt.date(2021, 1, 1), "a", table))
    old = read_store_file(write_part(tmp_path, dt.date(2021, 1, 2), "b", frame_from_rows(rows, list(range(6)),
                                                                                          ["0" * 64] * 6)))
    old = old[old["measurement_start_time"].notna()].reset_index(drop=True)
    pd.testing.assert_frame_equal(new, old)
    assert {c: str(new[c].dtype) for c in ("line", "accessible", "body_length")} == {
        c: str(pd.Series(dtype=DTYPES[c]).dtype) for c in ("line", "accessible", "body_length")}


def _parts(tmp_path: Path, days: list[dt.date], n_parts: int = 5, seed: int = 7) -> list[Any]:
    """Parts written out of order, with measurements repeated across and within parts, on ``days``."""
    import random

    from analysis.load import row
    from analysis.ooni_store import table_from_rows, write_part
    from tests.fixtures.ooni_bucket import as_kz, real_samples

    rng = random.Random(seed)
    samples = real_samples(shared_path())[:8]
    parts = []
    for p in range(n_parts):
        day = days[p % len(days)]
        rows, keys = [], []
        for i in range(30):
            m = as_kz(samples[rng.randrange(len(samples))], f"{day.isoformat()} 00:{p:02d}:{i:02d}", i)
            rows.append(row(m, f"raw/obj-{rng.randrange(4)}", rng.randrange(1, 50)))
            keys.append(rng.randrange(40) + 1000 * days.index(day))  # repeats across and within a day's parts
        table, _ = table_from_rows(rows, keys, [f"{p:02d}{i:062d}" for i in range(30)])
        parts.append(table)
        write_part(tmp_path, day, f"p{p}", table)
    return parts


def _reference(parts: list[Any]) -> pd.DataFrame:
    """The pandas way: sorted by file and line (stable), the first row of each mkey, then by UTC day (stable)."""
    import pyarrow as pa

    ref = pa.concat_tables(parts).to_pandas()
    ref = ref.sort_values(["file", "line"], kind="stable").drop_duplicates("mkey", keep="first")
    day = ref["measurement_start_time"].dt.floor("D")
    return ref.assign(_d=day).sort_values("_d", kind="stable").drop(columns="_d").reset_index(drop=True)


def test_compaction_in_arrow_equals_the_pandas_reference(tmp_path: Path) -> None:
    """compact_month sorts and de-duplicates in Arrow (the speed work of issue 14 part 7): the month's
    file holds exactly what the pandas way (sort by file and line, stable; first row of each mkey; then
    by UTC day) gives, on parts of three days written out of order with repeated measurements; the days'
    partitions are gone, one file for the month is left (issue 13: a month a file)."""
    from analysis.ooni_store import SCHEMA, compact_month, iter_store_files, month_dir

    days = [dt.date(2021, 1, 3), dt.date(2021, 1, 1), dt.date(2021, 1, 2)]
    parts = _parts(tmp_path, days, n_parts=9)
    ref = _reference(parts)
    kept, dropped = compact_month(tmp_path, "2021-01")
    files = list(iter_store_files(tmp_path))
    assert files == list(month_dir(tmp_path, "2021-01").glob("*.parquet"))
    assert len(files) == 1 and files[0].name.startswith("data-")
    assert not list(tmp_path.glob("day=*"))  # the days' partitions removed
    got = pq.read_table(files[0])
    assert got.schema == SCHEMA
    assert (kept, dropped) == (len(ref), 270 - len(ref)) and 0 < dropped < 270
    pd.testing.assert_frame_equal(got.to_pandas(), ref)
    assert list(got.column("measurement_start_time").to_pandas().dt.day.unique()) == [1, 2, 3]
    assert compact_month(tmp_path, "2021-01") == (kept, 0)  # compacting again changes nothing
    assert list(iter_store_files(tmp_path)) == files


def test_day_layout_store_still_read_and_merged_into_its_month(tmp_path: Path) -> None:
    """A store compacted by day (before issue 13's month files) is read as it is — the same frame as the
    month layout, row for row — and a later compaction merges its day files with new parts into the
    month's file, each measurement once."""
    import pyarrow as pa

    from analysis.ooni_store import compact_month, day_dir, iter_store_files, write_atomic

    days = [dt.date(2021, 1, 1), dt.date(2021, 1, 2)]
    parts = _parts(tmp_path / "new", days, n_parts=4)
    ref = _reference(parts)
    for d in days:  # the older layout: day=…/data-*.parquet, each day sorted by (file, line), unique
        rows = ref[ref["measurement_start_time"].dt.date == d].reset_index(drop=True)
        write_atomic(pa.Table.from_pandas(rows, preserve_index=False), day_dir(tmp_path / "old", d) / "data-x.parquet")
    compact_month(tmp_path / "new", "2021-01")
    old, new = load([tmp_path / "old"]), load([tmp_path / "new"])
    assert len(old.frame) == len(ref) and not old.stats.errors
    pd.testing.assert_frame_equal(old.frame, new.frame)
    # a sync into the old store: a part repeating day 1's rows and adding day 3's
    extra = _parts(tmp_path / "old", [days[0], dt.date(2021, 1, 3)], n_parts=2, seed=7)
    kept, dropped = compact_month(tmp_path / "old", "2021-01")
    files = list(iter_store_files(tmp_path / "old"))
    assert len(files) == 1 and files[0].parent.name == "month=2021-01"
    want = _reference(parts + extra)
    assert (kept, dropped) == (len(want), len(ref) + 60 - len(want))
    pd.testing.assert_frame_equal(pq.read_table(files[0]).to_pandas(), want)


@pytest.mark.parametrize("when", [
    "2021-01-01 10:00:00", "2021-01-01T10:00:00Z", "2020-02-30 10:00:00", "2021-01-01 99:00:00", None, 20210101,
    "2021-01-01 10:00:00.5", "yesterday"])
def test_part_table_fast_path_equals_the_column_by_column_one(when: Any) -> None:
    """table_from_rows converts all rows at once (Table.from_pylist, the start time parsed in Arrow);
    the column-by-column build it replaced gives the same table for every form of start time
    (an impossible date and an unparseable time are dropped by both, ISO forms parsed by both) and
    for a value of the wrong type (a number in a text column: the slow path's str())."""
    from analysis.load import row
    from analysis.ooni_store import _slow_table, table_from_rows
    from tests.fixtures.ooni_bucket import as_kz, real_samples

    ms = [as_kz(m, f"2021-01-01 00:00:{i:02d}", i) for i, m in enumerate(real_samples(shared_path())[:10])]
    rows = [row(m, "raw/k", i + 1) for i, m in enumerate(ms)]
    rows[3]["measurement_start_time"] = when
    rows[5]["probe_network_name"] = 42 if when is None else rows[5]["probe_network_name"]
    keys, shas = list(range(10)), [f"{i:064d}" for i in range(10)]
    got, bad = table_from_rows(rows, keys, shas)
    ref = _slow_table(rows, keys, shas)
    ok = ref.column("measurement_start_time").is_valid()
    assert got.equals(ref.filter(ok))
    assert bad == 10 - ref.filter(ok).num_rows


@pytest.mark.parametrize("codec", ["installed", "stdlib"])
@pytest.mark.parametrize("damage", ["none", "truncated", "flipped", "crc"])
def test_gzip_readers_agree_on_damaged_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               codec: str, damage: str) -> None:
    """The fast gzip reader (ISA-L when installed) and the stdlib fallback keep the same rows of a
    damaged object and both report the damage: a truncated stream, a flipped deflate block, a bad CRC."""
    import gzip

    import analysis.ooni_sync as osync

    if codec == "stdlib":
        import zlib

        monkeypatch.setattr(osync, "_zlib", zlib)
        monkeypatch.setattr(osync, "_ZLIB_ERRORS", ())
    good = [json.dumps({"test_name": "web_connectivity", "probe_cc": "KZ", "input": f"http://a{i}.example/",
                        "report_id": f"r{i}", "measurement_start_time": "2021-01-01 00:00:00",
                        "test_keys": {"blocking": False, "accessible": True}}).encode() + b"\n"
            for i in range(2)]
    head = gzip.compress(b"".join(good), mtime=0)  # a whole member: read before any damage
    # incompressible-ish bytes, one line (as 4,096 lines they would be a junk object: the invalid-line policy)
    tail = gzip.compress(bytes(b for b in range(256) if b != 0x0A) * 4096 + b"\n", mtime=0)
    if damage == "truncated":
        tail = tail[: len(tail) // 2]
    elif damage == "flipped":
        tail = tail[:20] + bytes(b ^ 0xFF for b in tail[20:220]) + tail[220:]
    elif damage == "crc":
        tail = tail[:-8] + bytes(4) + tail[-4:]
    key = "raw/20210101/00/KZ/webconnectivity/2021010100_KZ_webconnectivity.n0.0.jsonl.gz"
    path = tmp_path / "obj.jsonl.gz"
    path.write_bytes(head + tail)
    ref = ob.parse_key(key, path.stat().st_size, "e")
    assert ref is not None
    cfg = _cfg(tmp_path / "out", "http://127.0.0.1:9", since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1))
    st = osync.process_object(path, ref, cfg, store_root(tmp_path / "out"))
    assert st.written == 2
    assert (st.error is None) == (damage == "none"), st.error


@pytest.mark.parametrize("codec", ["installed", "stdlib"])
def test_inflate_reads_what_gzip_reads(tmp_path: Path, codec: str) -> None:
    """analysis.ooni_sync._Inflate gives the bytes gzip.decompress gives (several members, zero padding,
    a file name in the header, more than one step of output, an empty file), and on damage every byte
    before it: the recovered prefix reaches the damaged block."""
    import gzip
    import random
    import zlib

    from analysis.ooni_sync import INFLATE_OUT, _Inflate

    zmod = zlib if codec == "stdlib" else None
    rng = random.Random(7)
    text = b"".join(b"%d %s\n" % (i, bytes(rng.choice(b"abcdefgh") for _ in range(rng.randrange(200))))
                    for i in range(30_000))
    assert len(text) > 2 * INFLATE_OUT
    buf = io.BytesIO()
    with gzip.GzipFile(filename="x.jsonl", mode="wb", fileobj=buf, mtime=0) as g:
        g.write(text[:1000])
    named = buf.getvalue()
    cases = {"one": gzip.compress(text, mtime=0), "members": named + gzip.compress(text, mtime=0) + named,
             "padded": named + bytes(10) + named + bytes(3), "empty": b""}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.gz"
        p.write_bytes(blob)
        with _Inflate(p, zmod) as f:
            assert f.read() == gzip.decompress(blob), name
    # damage half way through one member, detected there (not only by the CRC at the end): everything
    # zlib decodes before it comes out (the reference: zlib fed 256 bytes at a time), then the error
    blob = gzip.compress(text, compresslevel=1, mtime=0)

    def before_error(data: bytes) -> tuple[bytes, bool]:
        d, out = zlib.decompressobj(31), bytearray()
        try:
            for i in range(0, len(data), 256):
                out += d.decompress(data[i:i + 256])
        except zlib.error:
            return bytes(out), True
        return bytes(out), False

    cut = len(blob) // 2
    bad = blob[:cut] + b"\xff" * 64 + blob[cut + 64:]  # (zeros there pass as deflate: only the CRC fails)
    ref, failed = before_error(bad)
    assert failed and len(ref) < len(text) - INFLATE_OUT  # "invalid block type", half way
    p = tmp_path / "bad.gz"
    p.write_bytes(bad)
    got, err = bytearray(), None
    with _Inflate(p, zmod) as f:
        try:
            while chunk := f.read(1 << 16):
                got += chunk
        except Exception as exc:  # noqa: BLE001 - zlib.error, or ISA-L's own error type
            err = exc
    assert err is not None
    n = min(len(got), len(ref))
    assert bytes(got[:n]) == ref[:n] and n > 1 << 20
    assert len(got) >= len(ref) - 4096, (len(got), len(ref))  # at most one recovery step's bytes lost


def test_batches_cut_by_objects_and_bytes() -> None:
    from analysis.ooni_sync import batches

    refs = [ob.ObjectRef(key=f"k{i}", size=s, etag="", layout="raw", day=dt.date(2021, 1, 1), cc="KZ",
                         testname="webconnectivity") for i, s in enumerate([3, 3, 3, 10, 1, 1, 1, 1])]
    got = [[r.key for r in b] for b in batches(refs, max_bytes=6, max_objects=3)]
    assert got == [["k0", "k1"], ["k2"], ["k3"], ["k4", "k5", "k6"], ["k7"]]
    assert batches([], max_bytes=6) == []


def test_batched_objects_give_the_same_store_as_one_by_one(tmp_path: Path, bucket: FakeS3, layout,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A worker reading many objects at once (one part per day for the batch) stores the same rows and
    the same counts as one object at a time, and a batch writes one part per day, not one per object."""
    import analysis.ooni_sync as osync

    monkeypatch.setattr(osync, "BATCH_OBJECTS", 1)
    one = sync(_cfg(tmp_path / "one", bucket.endpoint))
    monkeypatch.setattr(osync, "BATCH_OBJECTS", 64)
    parts: list[int] = []
    real = osync.process_objects

    def spy(items, cfg, root):  # type: ignore[no-untyped-def]
        out = real(items, cfg, root)
        parts.append(len(list(Path(root).glob("day=*/part-*.parquet"))))
        return out

    monkeypatch.setattr(osync, "process_objects", spy)
    many = sync(_cfg(tmp_path / "many", bucket.endpoint))
    a, b = _stored(tmp_path / "one"), _stored(tmp_path / "many")
    cols = ["mkey", "blocking", "rule", "file", "line", "line_sha256"]
    norm = lambda f: f[cols].astype("string").sort_values("mkey").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(norm(a), norm(b))
    for k in ("fetched", "lines", "kept", "out_of_period", "invalid", "duplicates", "compaction_dropped", "stored"):
        assert getattr(one, k) == getattr(many, k), k
    assert len(one.corrupt) == len(many.corrupt) == 1
    assert len(parts) < one.fetched  # fewer worker calls than objects
    assert parts[0] <= len({d for d in b["measurement_start_time"].dt.strftime("%Y-%m-%d")})


def test_partial_copies_not_fsynced_manifest_once_a_batch(tmp_path: Path, bucket: FakeS3, layout,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A .partial/ download is read once and removed: no fsync (it blocked the event loop an object);
    the manifest gets one write and one fsync a batch, every line whole; --keep-raw copies are fsynced."""
    import os

    real = os.fsync
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    res = sync(_cfg(tmp_path / "a", bucket.endpoint))
    assert res.fetched > 3
    assert not [f for f in synced if "/.partial/" in f]
    manifest = [f for f in synced if f.endswith(MANIFEST)]
    assert 1 <= len(manifest) < res.fetched  # one a batch, not one an object
    lines = (tmp_path / "a" / MANIFEST).read_text().splitlines()
    assert len(lines) == res.fetched and all(json.loads(line)["key"] for line in lines)
    synced.clear()
    res = sync(_cfg(tmp_path / "b", bucket.endpoint, keep_raw=True))
    assert len([f for f in synced if "/.partial/" in f]) >= res.fetched  # kept: durable before it is moved


def test_line_without_test_name_is_invalid_not_other_test(tmp_path: Path) -> None:
    """Break test F14: ``{"measurement_start_time": 12}`` or ``{"input": "\\u202e"}`` (no test_name) was
    counted ``other_test``: a line with no test name is not a measurement of another test. Now it is
    invalid and named; a line of another test (a test name that is text) is still ``other_test``."""
    import gzip

    from analysis.ooni_sync import process_object

    def m(i: int, **kw: Any) -> bytes:
        d = json.loads(_good(i))
        d.update(kw)
        return json.dumps({k: v for k, v in d.items() if v is not None}).encode() + b"\n"

    body = (b'{"measurement_start_time": 12}\n' + b'{"input": "\\u202e"}\n' + m(1, test_name=7)
            + m(2, test_name="") + m(3, test_name="telegram") + _good(4))
    key = "raw/20210101/00/KZ/webconnectivity/2021010100_KZ_webconnectivity.n0.0.jsonl.gz"
    path = tmp_path / "o.jsonl.gz"
    path.write_bytes(gzip.compress(body, mtime=0))
    ref = ob.parse_key(key, path.stat().st_size, "e")
    assert ref is not None
    st = process_object(path, ref, _cfg(tmp_path, "http://127.0.0.1:1", since=dt.date(2021, 1, 1),
                                        until=dt.date(2021, 1, 1)), tmp_path / "store")
    assert (st.lines, st.written, st.other_test, st.invalid) == (6, 1, 1, 4)
    assert st.invalid_examples == [f"{key}:1: test_name missing is not a test name",
                                   f"{key}:2: test_name missing is not a test name",
                                   f"{key}:3: test_name 7 is not a test name"]


def _key(h: int, name: str = "") -> str:
    return f"raw/20210101/{h:02d}/KZ/webconnectivity/{name or f'20210101{h:02d}'}_KZ_webconnectivity.n0.0.jsonl.gz"


def test_a_key_too_long_for_a_file_name_is_synced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Break test F4: a key whose last part is 300 'A's + '_KZ_webconnectivity.n0.0.jsonl.gz' made the partial
    file's name (which held the key's name) too long for the file system: OSError Errno 36 in the download,
    again removing it, traceback, exit 1, no manifest. Now the partial name is bounded (a digest of the key)
    and the object is synced like any other; with --keep-raw, whose copy is named by the key, the object is
    stored and its raw copy named as not kept; the other objects are kept either way."""
    import gzip

    from analysis.ooni_sync import partial_name
    from probe.cli import main

    long_key = _key(1, "A" * 300)
    assert len(partial_name(long_key).encode()) <= 100 and partial_name(long_key) != partial_name(_key(1, "A" * 301))
    objects = {_key(0): _good(0), long_key: _good(1), _key(2): _good(2)}
    with FakeS3({k: gzip.compress(v, mtime=0) for k, v in objects.items()}) as s3:
        res = sync(_cfg(tmp_path / "a", s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
        assert res.fetched == 3 and not res.failed and not res.corrupt, (res.failed, res.corrupt)
        assert set(manifest_done(tmp_path / "a")) == set(objects)
        assert len(_stored(tmp_path / "a")) == 3
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-01",
                   "--margin-before", "0", "--margin-after", "0", "--out", str(tmp_path / "b"),
                   "--endpoint-url", s3.endpoint, "--workers", "0", "--keep-raw", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert set(manifest_done(tmp_path / "b")) == set(objects) and len(_stored(tmp_path / "b")) == 3
    assert f"{long_key}: stored, but its raw copy could not be kept" in err and "File name too long" in err
    assert (tmp_path / "b" / "raw" / _key(0)).is_file() and (tmp_path / "b" / "raw" / _key(2)).is_file()


def test_an_object_that_cannot_be_written_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Break test F4, the download's side: an OSError writing one object's partial file that is not a full
    disk (here a name the file system refuses) fails that object, named, not retried; the others are kept."""
    import gzip

    import analysis.ooni_sync as sy

    real = sy.partial_name
    monkeypatch.setattr(sy, "partial_name", lambda key: "B" * 300 if key == _key(1) else real(key))
    objects = {_key(h): _good(h) for h in range(3)}
    with FakeS3({k: gzip.compress(v, mtime=0) for k, v in objects.items()}) as s3:
        res = sync(_cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0))
        assert s3.gets(_key(1)) == 1
    assert res.fetched == 2 and len(res.failed) == 1, res.failed
    assert res.failed[0].startswith(f"{_key(1)}: cannot write ") and "File name too long (errno 36)" in res.failed[0]
    assert set(manifest_done(tmp_path)) == {_key(0), _key(2)} and len(_stored(tmp_path)) == 2


def test_a_trickling_server_is_given_up_within_a_deadline(tmp_path: Path) -> None:
    """Break test F2: a server sending one byte every 2 s never trips the 60 s read timeout: after 600 s the
    sync had fetched nothing. Now each attempt at an object has a deadline (RetryPolicy.deadline: a floor plus
    the size at a minimum rate): past it the attempt fails as a timeout, is retried, then the object is
    reported as not fetched (named), the others kept."""
    import gzip
    import time

    from analysis.ooni_sync import sync_async

    objects = {_key(h): gzip.compress(_good(h), mtime=0) for h in range(3)}
    policy = RetryPolicy(attempts=2, base=0.01, cap=0.05, connect_timeout=5, read_timeout=5, deadline_floor=0.5)
    assert policy.deadline(64 * 1024 * 10) == pytest.approx(10.5)
    with FakeS3(objects) as s3:
        s3.trickle_seconds = 0.5  # ~130 bytes: ~65 s an attempt without a deadline
        s3.faults[_key(1)] = ["trickle"] * 5
        cfg = _cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1), margin_before=0,
                   margin_after=0, retry=policy)
        t0 = time.monotonic()
        res = asyncio.run(asyncio.wait_for(sync_async(cfg), 20))
        elapsed = time.monotonic() - t0
        assert s3.gets(_key(1)) == 2
    assert elapsed < 10, elapsed
    assert res.fetched == 2 and len(res.failed) == 1, res.failed
    assert res.failed[0].startswith(f"{_key(1)}: download failed 2 times (last: not complete within 0.5 s (")
    assert set(manifest_done(tmp_path)) == {_key(0), _key(2)} and len(_stored(tmp_path)) == 2


class _TricklingList(FakeS3):
    """Its listings are sent a byte every ``trickle_seconds`` (the objects normally)."""

    async def _list(self, request: web.Request) -> web.StreamResponse:
        page = await super()._list(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await resp.prepare(request)
        for b in page.body:  # type: ignore[union-attr]
            await resp.write(bytes([b]))
            await asyncio.sleep(self.trickle_seconds)
        await resp.write_eof()
        return resp


def test_a_trickling_listing_is_given_up_within_a_deadline(tmp_path: Path) -> None:
    """F2's deadline was the downloads' only: a listing page sent a byte every 0.5 s (~1 KB: ~10 min an
    attempt, never a 5 s read timeout) held the sync in its plan past any limit. Now a listing attempt has
    RetryPolicy.deadline(MAX_LIST_BYTES): past it a timeout, retried, then an S3Error naming the listing."""
    import time

    from analysis.ooni_sync import sync_async
    from analysis.s3 import MAX_LIST_BYTES, S3Error

    policy = RetryPolicy(attempts=2, base=0.01, cap=0.05, connect_timeout=5, read_timeout=5, deadline_floor=0.5,
                         min_rate=MAX_LIST_BYTES / 0.5)
    assert policy.deadline(MAX_LIST_BYTES) == pytest.approx(1.0)
    with _TricklingList({_key(0): b""}) as s3:
        s3.trickle_seconds = 0.5
        cfg = _cfg(tmp_path, s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1), margin_before=0,
                   margin_after=0, retry=policy)
        t0 = time.monotonic()
        with pytest.raises(S3Error) as err:
            asyncio.run(asyncio.wait_for(sync_async(cfg), 30))
        elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed
    assert str(err.value).startswith("listing '") and "failed 2 times (last: not complete within 1.0 s)" in str(
        err.value), err.value


def test_a_5xx_storm_stops_the_sync_after_objects_failed_in_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Break test F16: under a constant 503 every object was retried on its own (24 objects took 54 s, growing
    with their number). Now after max_failed_in_a_row objects failed after every retry, none fetched between,
    the sync stops fetching: the rest not tried and counted, exit 75 saying so; a later run fetches them all."""
    import gzip

    from probe.cli import main

    objects = {_key(h): gzip.compress(_good(h), mtime=0) for h in range(24)}
    args = ["ooni", "sync", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-01", "--margin-before", "0",
            "--margin-after", "0", "--out", str(tmp_path / "c"), "--workers", "0", "--no-progress"]
    with FakeS3(objects) as s3:
        for k in objects:
            s3.faults[k] = ["503"] * 100
        res = sync(_cfg(tmp_path / "a", s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                        margin_before=0, margin_after=0, max_failed_in_a_row=4, concurrency=2))
        tried = {k for k in objects if s3.gets(k)}
        assert 4 <= len(tried) <= 5 and all(s3.gets(k) == FAST.attempts for k in tried)  # 2 at once: one more
        assert res.fetched == 0 and len(res.failed) == len(tried) and res.not_tried == 24 - len(tried)
        assert res.gave_up.startswith(f"the bucket failed 4 objects in a row, each after {FAST.attempts} tries "
                                      "(last: raw/20210101/")
        assert "HTTP 503" in res.gave_up
        monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 0.01)  # the CLI's policy, backoff short
        rc = main([*args, "--endpoint-url", s3.endpoint])
        err = capsys.readouterr().err
        assert rc == 75, err
        assert "the bucket failed 8 objects in a row" in err and "stopped: 24 object(s) not fetched (" in err
        s3.faults.clear()
        again = sync(_cfg(tmp_path / "a", s3.endpoint, since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 1),
                          margin_before=0, margin_after=0))
    assert again.fetched == 24 and not again.failed and not again.gave_up
    assert len(_stored(tmp_path / "a")) == 24


def test_a_full_disk_is_told_apart_from_other_write_errors() -> None:
    """One test of a full disk (analysis.s3.is_disk_full) for the downloads, the manifest, the store and the raw
    copies (it was written out four times): ENOSPC and EDQUOT stop the sync, a name too long or a refusal do not."""
    from analysis.s3 import is_disk_full

    assert [is_disk_full(OSError(e, "x")) for e in (errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EACCES)] \
        == [True, True, False, False]
    assert is_disk_full(OSError("no errno")) is False
