"""analysis.build.build_report: the whole report pipeline as a library call (issue 10 part 6).

Before, load → select → compare → render lived only in ``analysis.cli.cmd_report``; a library user
had to re-assemble it. The CLI now only parses flags and prints (tests/analysis/test_cli_report.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analysis import build
from analysis.claims import ClaimsError
from analysis.load import LoadError
from analysis.report import ReportError

RECORDS = Path(__file__).resolve().parents[1] / "data" / "records-0.1.0.jsonl"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(RECORDS, d / "run.jsonl")
    return d


def test_build_report_writes_the_report_and_returns_what_it_used(inputs: Path, tmp_path: Path) -> None:
    stages: list[str] = []

    class Stage:
        def __init__(self, text: str) -> None:
            stages.append(text)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    built = build.build_report([inputs], tmp_path / "out", title="T", country=None, ignore_period=True,
                               stage=Stage)
    assert built.paths.index_html.exists() and built.paths.index_html.parent == tmp_path / "out"
    assert "<title>T" in built.paths.index_html.read_text(encoding="utf-8")
    n = sum(1 for line in RECORDS.read_text(encoding="utf-8").splitlines() if line.strip())
    assert len(built.frame) == n and built.stats is not None and built.stats.loaded == n
    assert len(built.results) == built.n_claims > 0
    assert built.engine == "pandas" and built.agreement is None  # no OONI measurement in the input
    assert len(stages) == 1 and "comparing" in stages[0]


def test_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(build.InputMissingError) as info:
        build.build_report([tmp_path / "nope"], tmp_path / "out")
    assert isinstance(info.value, LoadError) and info.value.path == tmp_path / "nope"
    assert "nope: no such file or directory" in str(info.value)
    assert not (tmp_path / "out").exists(), "checked before anything is written"


def test_input_without_measurements_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.jsonl").write_text('{"test_name": "dnscheck"}\n')
    with pytest.raises(build.NoMeasurementsError) as info:
        build.build_report([empty], tmp_path / "out")
    assert info.value.path == empty and "no measurements found" in str(info.value)


@pytest.mark.parametrize("engine", ["pandas", "dask"])
def test_input_without_measurements_beside_others_is_left_out(inputs: Path, tmp_path: Path, engine: str) -> None:
    """One --in of garbage beside one with measurements: the report is built, the garbage counted in the scope."""
    garbage = tmp_path / "notes.jsonl"
    garbage.write_text("not a measurement\n{\"test_name\": \"dnscheck\"}\n")
    built = build.build_report([inputs, garbage], tmp_path / "out", country=None, engine=engine)  # type: ignore[arg-type]
    n = sum(1 for line in RECORDS.read_text(encoding="utf-8").splitlines() if line.strip())
    assert len(built.frame) == n
    (e,) = built.scope.empty_inputs
    assert (e.path, e.files, e.lines) == (garbage, 1, 2)
    assert e.invalid + e.skipped == 2
    assert "notes.jsonl" in built.paths.index_html.read_text(encoding="utf-8")


def test_unwritable_output_is_refused_before_loading(inputs: Path, tmp_path: Path, monkeypatch) -> None:
    def no_load(*a, **kw):
        raise AssertionError("loaded before checking the output directory")

    monkeypatch.setattr(build.load_mod, "load", no_load)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(build.OutputDirError) as info:
        build.build_report([inputs], blocker / "out")
    assert isinstance(info.value, ReportError) and info.value.path == blocker / "out"


def test_only_lab_measurements_without_lab_is_nothing_in_scope(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(build.NothingInScopeError) as info:
        build.build_report([inputs], tmp_path / "out", lab=True)
    assert info.value.lab and "no lab measurements" in str(info.value)


def test_bad_claims_file_is_a_claims_error(inputs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "claims.toml"
    bad.write_text("not = [toml")
    with pytest.raises(ClaimsError):
        build.build_report([inputs], tmp_path / "out", claims_path=bad)
    with pytest.raises(ClaimsError):
        build.build_report([inputs], tmp_path / "out2", claims_path=tmp_path / "missing.toml")


def test_cli_report_is_a_thin_shell(inputs: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from probe.cli import main

    calls: list[tuple] = []
    real = build.build_report

    def spy(paths, out, **kw):
        calls.append((tuple(paths), out))
        return real(paths, out, **kw)

    monkeypatch.setattr(build, "build_report", spy)
    assert main(["report", "--in", str(inputs), "--out", str(tmp_path / "out"), "--no-progress",
                 "--country", "any"]) == 0
    assert calls == [((str(inputs),), str(tmp_path / "out"))]
    assert capsys.readouterr().out.startswith("report: ")


def test_report_error_is_not_swallowed(inputs: Path, tmp_path: Path, monkeypatch) -> None:
    def fail(*a, **kw):
        raise ReportError("disk full while writing index.html")

    monkeypatch.setattr(build, "render", fail)
    with pytest.raises(ReportError, match="disk full"):
        build.build_report([inputs], tmp_path / "out", country=None)


def test_report_writes_no_absolute_path(tmp_path: Path) -> None:
    """Issue 15 part 4: the report is shared and published; it names files relative to --in and never says
    where the researcher keeps their data (an absolute path gives away the home directory, the user name)."""
    d = tmp_path / "secret-home" / "in"
    (d / "pi-1").mkdir(parents=True)
    text = RECORDS.read_text(encoding="utf-8")
    (d / "pi-1" / "run.jsonl").write_text(text + '{"torn": ', encoding="utf-8")  # a torn last line: named in errors
    built = build.build_report([d], tmp_path / "out", country=None, ignore_period=True)
    assert built.stats is not None and built.stats.torn == 1
    for p in (built.paths.index_html, built.paths.report_md, built.paths.claims_csv):
        out = p.read_text(encoding="utf-8")
        assert str(tmp_path) not in out and "secret-home" not in out, p.name
    html = built.paths.index_html.read_text(encoding="utf-8")
    assert "pi-1/run.jsonl" in html, "the file is named relative to --in"


@pytest.mark.parametrize("verbose", [False, True])
def test_dask_report_lets_dask_info_through_with_v_only(inputs: Path, tmp_path: Path, verbose: bool) -> None:
    """Break test: ``kzprobe report --engine dask -v`` set dask's ``distributed`` loggers to
    max(WARNING, the CLI's level), so ``-v`` never showed their INFO (scheduler, worker start). Now they
    follow the CLI's level, as ``ooni sync --engine dask`` does: INFO with ``-v``, quiet without."""
    pytest.importorskip("distributed")
    import subprocess
    import sys

    argv = [sys.executable, "-c", "import sys; from probe.cli import main; sys.exit(main(sys.argv[1:]))",
            "report", "--engine", "dask", "--in", str(inputs), "--out", str(tmp_path / "out"), "--no-progress",
            "--ignore-period", *(["-v"] if verbose else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    dask_info = [line for line in done.stderr.splitlines() if line.startswith("INFO distributed.")]
    if verbose:
        assert dask_info, done.stderr
    else:
        assert dask_info == [] and "distributed." not in done.stderr, done.stderr
