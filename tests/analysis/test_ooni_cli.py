"""End to end: `kzprobe ooni sync` from a loopback bucket, then `kzprobe report --in` on the store;
`kzprobe ooni coverage` from a loopback API."""

from __future__ import annotations

import datetime as dt
import re
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
        first = re.search(r"([\d,]+) measurements read from the objects \(.*\); ([\d,]+) duplicates dropped when "
                          r"the months written were compacted \(already in the store, in two objects, or left by an "
                          r"interrupted sync\); the months written hold ([\d,]+) in all", out.out)
        assert first is not None, out.out
        read, twice, held = (int(g.replace(",", "")) for g in first.groups())
        assert read - twice == held > 0  # an empty store: what was read, less its duplicates, is all it holds
        # a second run fetches nothing
        assert main(["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-22", "--out",
                     str(store), "--endpoint-url", s3.endpoint, "--margin-after", "4", "--workers", "0",
                     "--no-progress"]) == 0
        assert "0 objects fetched" in capsys.readouterr().out
        # break test: with the manifest gone every object is read again; the summary said "5,760 kept, 5,760
        # duplicates dropped". Now it says they were read and were all in the store already.
        (store / "manifest.jsonl").unlink()
        assert main(["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-22", "--out",
                     str(store), "--endpoint-url", s3.endpoint, "--margin-after", "4", "--workers", "0",
                     "--no-progress"]) == 0
        again = capsys.readouterr().out
        assert (f"{read:,} measurements read from the objects (0 repeated within an object and" in again
                and f"invalid); {read:,} duplicates dropped when the months written were compacted (already in the "
                    f"store, in two objects, or left by an interrupted sync); the months written hold {held:,} in all"
                in again)
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


def test_an_output_that_cannot_be_a_directory_is_named_exit_73(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Break test: ``ooni sync --out FILE`` (or /proc/self/x) and ``ooni coverage --store FILE`` died
    with a FileExistsError / FileNotFoundError traceback, exit 1. Now the path is named, exit 73
    (as ``report --out FILE``), before anything is fetched (the API sees no request)."""
    file = tmp_path / "odd.jsonl"
    file.write_text("x\n")
    for out in (file, Path("/proc/self/x")):
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2021-05-30", "--until", "2021-05-31", "--out", str(out),
                   "--endpoint-url", "http://127.0.0.1:9", "--workers", "0", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 73 and f"--out cannot write to the output directory {out}: " in err and "Traceback" not in err
    with FakeOoniApi(synthetic_metadata(days=5)) as api:
        for store in (file, Path("/proc/self")):
            rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-05",
                       "--api-url", api.base, "--store", str(store)])
            err = capsys.readouterr().err
            assert rc == 73 and f"--store cannot write to the output directory {store}: " in err
        rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-05",
                   "--api-url", api.base, "--out", str(tmp_path)])  # a directory as the CSV
        err = capsys.readouterr().err
        assert rc == 73 and f"--out cannot write {tmp_path}: it is a directory" in err
        rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-05",
                   "--api-url", api.base, "--out", str(file / "cov.csv")])  # under a file
        err = capsys.readouterr().err
        assert rc == 73 and f"--out cannot write to the output directory {file}: " in err
        assert api.log == []  # every output is checked before the API is asked (the --out ones asked it)
    assert file.read_text() == "x\n"


def test_a_listing_with_a_negative_size_stops_the_sync_unfetched(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Break test: a listed <Size>-99999999999999</Size> was fetched and retried 5 times an object,
    ending "not complete within -1,525,878,846.2 s". Now the listing is refused, named: exit 69,
    nothing fetched."""
    lay = ooni_layout(shared_path())
    with FakeS3(lay.objects) as s3:
        s3.listed_sizes = dict.fromkeys(lay.objects, "-99999999999999")
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-31", "--out",
                   str(tmp_path / "kz"), "--endpoint-url", s3.endpoint, "--margin-after", "4", "--workers", "0",
                   "--no-progress"])
        gets = [line for line in s3.log if line.startswith("GET ")]
    err = capsys.readouterr().err
    assert rc == 69, err
    assert "Size '-99999999999999' of '" in err and "is not a byte count" in err and "retr" not in err
    assert gets == []


def test_a_full_disk_writing_coverage_counts_is_exit_74_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Review: an OSError without a filename (ENOSPC) while ``coverage --store`` wrote left ``out``
    unassigned (UnboundLocalError traceback), and a full disk was 73, not 74 (EX_IOERR);
    ``sync --coverage`` had no OSError handling at all (traceback). Now each names the file, exit 74
    for a full disk or quota, 73 for any other error."""
    import argparse
    import errno

    import analysis.outages
    from analysis import ooni_cli

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() raises it: no filename

    monkeypatch.setattr(analysis.outages, "save_api_coverage", full)
    with FakeOoniApi(synthetic_metadata(days=5)) as api:
        rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-05",
                   "--api-url", api.base, "--store", str(tmp_path / "kz")])
        err = capsys.readouterr().err
        assert rc == 74 and f"cannot write {tmp_path / 'kz' / 'api-coverage.csv'}: No space left" in err, err
        monkeypatch.setattr(pd.DataFrame, "to_csv", full)
        rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-05",
                   "--api-url", api.base, "--out", str(tmp_path / "cov.csv")])
        err = capsys.readouterr().err
        assert rc == 74 and f"cannot write {tmp_path / 'cov.csv'}: No space left" in err, err
        args = argparse.Namespace(tests=None, cc="KZ", since=dt.date(2021, 1, 1), until=dt.date(2021, 1, 5),
                                  api_url=api.base)
        assert ooni_cli.sync_coverage(args, tmp_path / "kz") == 74
        assert f"cannot write {tmp_path / 'kz' / 'api-coverage.csv'}: No space left" in capsys.readouterr().err

        def denied(*_a: object, **_k: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "kz" / "x.tmp"))

        monkeypatch.setattr(analysis.outages, "save_api_coverage", denied)
        assert ooni_cli.sync_coverage(args, tmp_path / "kz") == 73
        assert f"cannot write {tmp_path / 'kz' / 'x.tmp'}: Permission denied" in capsys.readouterr().err


def test_the_sync_summary_says_what_the_compaction_dropped() -> None:
    """Review: the summary said "N new to the store, D already in it", D the duplicates the compaction of
    the months written dropped, taken as a part of what was read: with parts an interrupted sync left
    D exceeds it (max(0, …) showed "0 new"). Now D is named for what it is."""
    from analysis.ooni_cli import summary_text
    from analysis.ooni_sync import SyncResult

    text = summary_text(SyncResult(kept=3, duplicates=9, compaction_dropped=8, out_of_period=2, invalid=1, stored=40))
    assert text == ("3 measurements read from the objects (1 repeated within an object and 2 outside the period "
                    "dropped, 1 invalid); 8 duplicates dropped when the months written were compacted (already in "
                    "the store, in two objects, or left by an interrupted sync); the months written hold 40 in all")
    assert "new to the store" not in text


def test_coverage_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOoniApi(synthetic_metadata(days=60)) as api:
        rc = main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-03-01",
                   "--api-url", api.base, "--out", str(tmp_path / "cov.csv")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "drop: AS9198 2021-01-20 … 2021-01-21" in out
    cov = pd.read_csv(tmp_path / "cov.csv")
    assert {"day", "probe_asn", "n", "anomaly_count"} <= set(cov.columns)


def test_sync_with_api_coverage_then_report_judges_outages_on_the_api_counts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14 part 5 end to end: ``kzprobe ooni sync --coverage`` against the loopback bucket and
    API saves OONI's counts per day and network beside the store; ``kzprobe report --in STORE``
    shows them (per network, with how many the store holds) and uses them as the outage claims'
    evidence: AS9198 silent on 2020-10-12 … 13 where it usually has 120 a day, the other
    networks normal, is a strong drop inside A3-nursultan-oct-2020's period."""
    import json

    lay = ooni_layout(shared_path())
    store = tmp_path / "kz"
    meta = synthetic_metadata(days=61, start=dt.date(2020, 9, 1),
                              per_day=(("AS9198", 120), ("AS48716", 40), ("AS12389", 1)),
                              outage=(dt.date(2020, 10, 12), dt.date(2020, 10, 13)))
    with FakeS3(lay.objects) as s3, FakeOoniApi(meta) as api:
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-31", "--out", str(store),
                   "--endpoint-url", s3.endpoint, "--margin-after", "4", "--workers", "0", "--no-progress",
                   "--coverage", "--api-url", api.base])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert any(line.startswith("aggregation ") for line in api.log)
    cov = pd.read_csv(store / "api-coverage.csv")
    kz = [m for m in meta if m["probe_cc"] == "KZ"]
    assert int(cov["n"].sum()) == len(kz)  # the API's counts for KZ, every network, every day
    asked = json.loads((store / "api-coverage.json").read_text())
    assert (asked["cc"], asked["since"], asked["until"], asked["test"]) == ("KZ", "2020-06-01", "2020-10-31",
                                                                          "web_connectivity")
    rc = main(["report", "--in", str(store), "--out", str(tmp_path / "report"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    html = (tmp_path / "report" / "index.html").read_text()
    md = (tmp_path / "report" / "report.md").read_text().replace("\\", "")  # Markdown's escapes
    assert "Coverage per network" in html
    assert f"{len(kz)} OONI measurements over 61 day(s) from 2 network(s)" in md  # the API's total, not the store's
    assert "OONI's API (/api/v1/aggregation: KZ web_connectivity, 2020-06-01 – 2020-10-31" in md
    # per network: the API's total beside what the store holds (AS9198: 59 days, silent 2)
    n9198 = sum(1 for m in kz if m["probe_asn"] == "AS9198")
    row = next(line for line in md.splitlines() if line.startswith(f"| AS9198 | {n9198:,} | 59 |"))
    stored = pd.read_parquet(store / "store")
    held = int((stored["probe_asn"].astype(str) == "AS9198").sum())
    assert 0 < held < n9198 and row.rstrip(" |").endswith(f"| {held:,}")
    claims = pd.read_csv(tmp_path / "report" / "claims.csv", keep_default_na=False)
    oct2020 = claims[claims["claim_id"] == "A3-nursultan-oct-2020"].iloc[0]
    assert oct2020["volume_evidence"] == "strong"
    assert "no measurement at all for 2 day(s)" in oct2020["volume_summary"]
    jan2021 = claims[claims["claim_id"] == "A3-almaty-jan-2021"].iloc[0]
    assert jan2021["volume_evidence"] == "none"  # outside the counts: no support from volume
    # break test: a damaged api-coverage.csv killed the report (UnicodeDecodeError); now it is named, left out
    # and the store's own counts are used, the volume section saying so
    (store / "api-coverage.csv").write_bytes(bytes(range(256)) * 40)
    rc = main(["report", "--in", str(store), "--out", str(tmp_path / "report2"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    md = (tmp_path / "report2" / "report.md").read_text().replace("\\", "")
    assert "api-coverage.csv beside the store could not be read (" in md and "the measurements loaded" in md
    assert "could not be read" in (tmp_path / "report2" / "index.html").read_text()


def test_coverage_into_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``kzprobe ooni coverage --store DIR`` writes beside the store; with neither --out nor --store
    the command says where the counts could go."""
    with FakeOoniApi(synthetic_metadata(days=30)) as api:
        assert main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-30",
                     "--api-url", api.base]) == 64
        assert "--out FILE or --store DIR" in capsys.readouterr().err
        assert main(["ooni", "coverage", "--cc", "KZ", "--since", "2021-01-01", "--until", "2021-01-30",
                     "--api-url", api.base, "--store", str(tmp_path / "kz")]) == 0
    assert (tmp_path / "kz" / "api-coverage.csv").is_file() and (tmp_path / "kz" / "api-coverage.json").is_file()


def test_sigterm_during_sync_is_a_clean_interruption(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Break test: SIGTERM during the downloads exited 130 but 1 time in 3 printed asyncio's "Task
    exception was never retrieved ... KeyboardInterrupt" traceback (the signal raised inside a task).
    A signal now cancels the sync: exit 130, the message, no traceback; a re-run resumes."""
    import os
    import signal
    import threading

    lay = ooni_layout(shared_path())
    store = tmp_path / "kz"
    argv = ["ooni", "sync", "--cc", "KZ", "--since", "2020-06-01", "--until", "2020-10-22", "--out", str(store),
            "--margin-after", "4", "--workers", "0", "--no-progress"]
    with FakeS3(lay.objects) as s3:
        s3.slow_seconds = 4.0  # every object stalls (the first time): the signal lands mid-download
        for key in lay.objects:
            s3.faults[key] = ["slow"]
        timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            rc = main([*argv, "--endpoint-url", s3.endpoint])
        finally:
            timer.cancel()
        err = capsys.readouterr().err
        assert rc == 130, err
        assert "interrupted" in err
        assert "never retrieved" not in err + caplog.text and "Traceback" not in err, err
        s3.faults.clear()
        assert main([*argv, "--endpoint-url", s3.endpoint]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("verbose", [False, True])
def test_dask_sync_keeps_dask_quiet_without_v(tmp_path: Path, verbose: bool) -> None:
    """Break test: ``ooni sync --engine dask`` printed ~33 INFO lines of dask's ``distributed`` loggers
    (scheduler, workers, nanny, the dashboard's URL) without ``-v``. Now they say only warnings and worse,
    in this process and in the cluster's worker processes; ``-v`` lets their INFO through."""
    import subprocess
    import sys

    lay = ooni_layout(shared_path())
    with FakeS3(lay.objects) as s3:
        argv = [sys.executable, "-c", "import sys; from probe.cli import main; sys.exit(main(sys.argv[1:]))",
                "ooni", "sync", "--cc", "KZ", "--since", "2020-10-20", "--until", "2020-10-22", "--out",
                str(tmp_path / "kz"), "--endpoint-url", s3.endpoint, "--engine", "dask", "--no-progress",
                *(["-v"] if verbose else [])]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    dask_info = [line for line in done.stderr.splitlines() if "distributed." in line and "INFO" in line]
    if verbose:
        assert dask_info, done.stderr
    else:
        assert dask_info == [], done.stderr
        assert "dashboard" not in done.stderr.lower()


@pytest.mark.parametrize("name", ["store", "kz"])
def test_the_printed_store_is_what_report_in_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   name: str) -> None:
    """``ooni sync --out store`` printed ``store: …/store/store``, which does not exist (the store's
    partitions are in ``--out`` itself when it is named ``store``), and ``report --in`` on it was 66
    (break test 24, #5). The printed path is the sync's output, which ``report --in`` takes."""
    from analysis.store_layout import MONTH_PREFIX, store_root

    out = tmp_path / name
    with FakeS3(ooni_layout(shared_path()).objects) as s3:
        rc = main(["ooni", "sync", "--cc", "KZ", "--since", "2020-10-20", "--until", "2020-10-22", "--out", str(out),
                   "--endpoint-url", s3.endpoint, "--workers", "0", "--no-progress"])
    got = capsys.readouterr()
    assert rc == 0, got.err
    printed = Path(re.search(r"^store: (.*)$", got.out, re.M).group(1))  # type: ignore[union-attr]
    assert printed == out.resolve() and (printed / "manifest.jsonl").is_file()
    assert any(store_root(printed).glob(f"{MONTH_PREFIX}*"))
    rc = main(["report", "--in", str(printed), "--out", str(tmp_path / "report"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
