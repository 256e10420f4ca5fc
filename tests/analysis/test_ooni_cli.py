"""End to end: `kzprobe ooni sync` from a loopback bucket, then `kzprobe report --in` on the store;
`kzprobe ooni coverage` from a loopback API."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from probe.cli import main
from tests.conftest import shared_path
from tests.fixtures.ooni_api import FakeOoniApi, synthetic_metadata
from tests.fixtures.ooni_bucket import FakeS3, ooni_layout


def test_sync_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = ooni_layout(shared_path())
    store = tmp_path / "kz"
    with FakeS3(lay.objects) as s3:
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-22", "--out", str(store),
                   "--endpoint-url", s3.endpoint, "--margin-after", "4", "--workers", "0", "--no-progress"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "to fetch:" in out.err and "GB compressed" in out.err  # the size estimate comes first
        assert "damaged object: raw/20201022/01/KZ" in out.err
        assert "measurements kept" in out.out
        # a second run fetches nothing
        assert main(["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-22", "--out",
                     str(store), "--endpoint-url", s3.endpoint, "--margin-after", "4", "--workers", "0",
                     "--no-progress"]) == 0
        assert "0 objects fetched" in capsys.readouterr().out
    rc = main(["report", "--in", str(store), "--out", str(tmp_path / "report"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Agreement with OONI" in html and "Outages from measurement volume" in html
    claims = pd.read_csv(tmp_path / "report" / "claims.csv", keep_default_na=False)
    assert len(claims) > 10
    outage = claims[claims["expect"] == "outage"]
    assert len(outage) and set(outage["volume_evidence"]) <= {"strong", "moderate", "weak", "none"}
    assert (outage["volume_summary"].str.len() > 20).all()
    assert (claims[claims["expect"] != "outage"]["volume_evidence"] == "").all()
    md = (tmp_path / "report" / "report.md").read_text()
    assert "A3-nursultan-oct-2020" in md  # an outage claim inside the synced period, with its volume line


def test_sync_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ooni", "sync", "--cc", "Kazakhstan", "--since", "2020-06-01", "--until", "2021-05-31"]) == 64
    assert main(["ooni", "sync", "--cc", "KZ", "--since", "2021-06-01", "--until", "2021-05-31"]) == 64
    assert "after --until" in capsys.readouterr().err


def test_unreachable_bucket_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeS3({}) as s3:
        endpoint = s3.endpoint
    rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2021-05-30", "--until", "2021-05-31", "--out",
               str(tmp_path), "--endpoint-url", endpoint, "--margin-after", "0", "--margin-before", "0",
               "--workers", "0", "--no-progress"])
    assert rc == 69
    assert "failed" in capsys.readouterr().err


def test_coverage_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOoniApi(synthetic_metadata(days=60)) as api:
        rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-03-01",
                   "--api-url", api.base, "--out", str(tmp_path / "cov.csv")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "drop: AS9198 2021-01-20 … 2021-01-21" in out
    cov = pd.read_csv(tmp_path / "cov.csv")
    assert {"day", "probe_asn", "n", "anomaly_count"} <= set(cov.columns)
