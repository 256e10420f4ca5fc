"""analysis.scale: the analysis on a local Dask cluster gives what pandas gives."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from analysis.claims import load_claims
from analysis.compare import compare
from analysis.load import COLUMNS, load
from analysis.scale import compare_dask, load_dask
from tests.conftest import shared_path

DOMAINS = ["medium.com", "www.meduza.io", "change.org", "avaaz.org", "facebook.com", "archive.org", "kloop.kg",
           "unrelated.example.net"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files of our records (claim targets and others, dates in and after the report's
    period, five vantages) plus the OONI samples."""
    from bench.analysis import VANTAGES, templates

    d = tmp_path_factory.mktemp("scale")
    rng = random.Random(7)
    tmpl = [t for t, _ in templates()]
    for k in range(3):
        lines = []
        for i in range(150):
            asn, cc, vid = VANTAGES[rng.randrange(len(VANTAGES))]
            when = f"{rng.choice([2020, 2021, 2022])}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 28):02d} 12:00:00"
            lines.append(rng.choice(tmpl).replace("tmpl.bench.example", rng.choice(DOMAINS))
                         .replace("2000-01-01 00:00:00", when).replace("@UID@", f"f{k}-{i}").replace("@RID@", f"r{k}")
                         .replace("@ASN@", asn).replace("@CC@", cc).replace("@VID@", vid))
        (d / f"run{k}.jsonl").write_text("\n".join(lines) + "\n")
    for p in shared_path("data", "ooni-samples").rglob("*.json"):
        (d / p.name).write_text(p.read_text())
    return d


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _norm(f: pd.DataFrame) -> pd.DataFrame:
    f = f.sort_values(["file", "line"]).reset_index(drop=True)
    return f.astype({c: "string" for c in ("file", "test_name", "probe_asn", "probe_cc")})


def test_load_dask_equals_load(client, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    ddf = load_dask([data_dir])
    assert tuple(ddf.columns) == COLUMNS and ddf.npartitions == 3 + 17
    got = ddf.compute()
    want = load([data_dir]).frame
    pd.testing.assert_frame_equal(_norm(got), _norm(want))


def test_compare_dask_equals_compare(client, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    claims = load_claims()
    want = compare(claims, load([data_dir]).frame)
    got = compare_dask(claims, load_dask([data_dir]))
    pd.testing.assert_frame_equal(got, want)
    assert (got["n"] > 0).any()  # the data does reach some claims


def test_compare_dask_with_row_reduction(client, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Without network-wide ("*") claims, partitions keep only the claims' targets: same result."""
    claims = [c for c in load_claims() if c.testable and "*" not in c.targets]
    frame = load([data_dir]).frame
    for kw in ({}, {"ignore_period": True}):
        want = compare(claims, frame, **kw)
        got = compare_dask(claims, load_dask([data_dir]), **kw)
        pd.testing.assert_frame_equal(got, want)
        assert (got["n"] > 0).sum() >= 3


def test_load_dask_needs_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no measurement files"):
        load_dask([tmp_path])


def test_records_are_json(data_dir: Path) -> None:
    for line in (data_dir / "run0.jsonl").read_text().splitlines()[:3]:
        assert json.loads(line)["test_name"] == "web_connectivity"


def test_compare_dask_of_our_records_and_a_synced_store_equals_compare(
        client, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Our JSONL beside a synced OONI store (the README's workflow): the open vocabularies' categories are
    text of one dtype from both (a JSONL file gave ``string``, a Parquet file ``str``, and Dask's concat
    refused to join them: "dtype of categories must be the same"), and the claims equal pandas'."""
    import datetime as dt

    import analysis.load as L
    from analysis.ooni_store import table_from_rows, write_part
    from tests.fixtures.ooni_bucket import as_kz, real_samples

    ms = real_samples(shared_path())[:6]
    for day in (1, 2):
        rows = [L.row(as_kz(m, f"2021-01-0{day} 00:00:{i:02d}", i, asn=("AS9198", "AS48716")[i % 2]),
                      f"raw/k{day}", i + 1) for i, m in enumerate(ms)]
        table, _ = table_from_rows(rows, list(range(len(rows))), ["0" * 64] * len(rows))
        write_part(tmp_path / "store", dt.date(2021, 1, day), "a", table)
    ours = [data_dir / f"run{k}.jsonl" for k in range(3)]
    inputs = [*ours, tmp_path / "store"]
    store_part = L.load_file(next((tmp_path / "store").rglob("*.parquet")))
    jsonl_part = L.load_file(ours[0])
    for c in ("file", "test_name", "probe_asn", "probe_cc"):
        assert store_part[c].cat.categories.dtype == jsonl_part[c].cat.categories.dtype == L.STRING, c
    claims = load_claims()
    want = compare(claims, load(inputs).frame)
    got = compare_dask(claims, load_dask(inputs))
    pd.testing.assert_frame_equal(got, want)
    assert (got["n"] > 0).any()
