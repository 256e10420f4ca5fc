"""`kzprobe lab` without root: clear errors, list (no namespaces needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.cli import main


@pytest.mark.parametrize("argv", [["lab", "run", "kz-2021"], ["lab", "up", "kz-2021"], ["lab", "down"]])
def test_not_root_exits_77(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(argv) == 77
    assert "root" in capsys.readouterr().err


def test_list_shows_shipped_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("kz-2021", "kz-2020-12-drill", "kz-2020-12-drill-trusted", "protest-outage"):
        assert name in out


@pytest.mark.parametrize(("arg", "code", "needle"), [
    ("kz-1999", 66, "no such shipped scenario"),
    ("BROKEN", 78, "'colour'"),
    ("NO-SITES", 78, "at least one site"),
])
def test_bad_scenario_exit_codes(arg: str, code: int, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("probe.lab.topology.check_privileges", lambda: None)  # fail before building anything
    if arg == "BROKEN":
        p = tmp_path / "broken.toml"
        p.write_text('[scenario]\nname = "x"\ncolour = 1\n')
        arg = str(p)
    if arg == "NO-SITES":  # was accepted: a lab was built, "0/0 verdicts match", exit 65
        p = tmp_path / "empty.toml"
        p.write_text('[scenario]\nname = "empty"\n')
        arg = str(p)
    assert main(["lab", "run", arg]) == code
    err = capsys.readouterr().err
    assert needle in err
    if code == 78:
        assert arg in err  # the file is named


@pytest.mark.parametrize("out", ["/proc/kzprobe-x", "/proc", "FILE", "FILE/sub"])
def test_unwritable_out_exits_73_before_building_the_lab(out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Was: a traceback (FileNotFoundError, exit 1), or a whole lab built and 25 "missing ✗" rows, exit 65."""
    monkeypatch.setattr("probe.lab.topology.check_privileges", lambda: None)

    def no_lab(self: object) -> None:
        raise AssertionError("the lab was built although --out is unusable")

    monkeypatch.setattr("probe.lab.run.Lab.start", no_lab)
    (tmp_path / "FILE").write_text("x")
    out = out.replace("FILE", str(tmp_path / "FILE"))
    assert main(["lab", "run", "kz-2021", "--out", out]) == 73
    err = capsys.readouterr().err
    assert f"--out: cannot write measurements to {out}:" in err and "Traceback" not in err


@pytest.mark.parametrize(("code", "failure"), [
    (0, None), (75, None), (130, None),
    # break test 24, finding 6: kzprobe run's 65 is a refused list (nothing measured), not a run
    (65, "target list refused"),
    (64, "usage error"), (66, "no input"), (70, "internal software error"), (73, "cannot create output"),
    (74, "I/O error"), (78, "configuration error"), (1, "crashed (uncaught exception)"), (-9, "killed by SIGKILL"),
])
def test_probe_failure_words(code: int, failure: str | None) -> None:
    from probe.lab.run import probe_failure

    assert probe_failure(code) == failure


@pytest.mark.parametrize("n", ["0", "-5", "5000", "many"])
def test_bad_concurrency_is_a_usage_error_before_building(n: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Checked like `kzprobe run --concurrency`: 64 at once, not a silent 1 or a lab built for nothing."""
    from probe.lab import run as lab_run

    def no_build(*_a, **_k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("the lab was built")

    monkeypatch.setattr(lab_run.Lab, "build", no_build, raising=False)
    assert main(["lab", "run", "kz-2021", "--concurrency", n]) == 64
    assert "--concurrency" in capsys.readouterr().err


def test_the_labs_python_ignores_the_working_directory(tmp_path) -> None:
    """Break test: ``sudo kzprobe lab run`` from a directory holding a ``dns.py`` ran that file as root
    (``python -m`` puts the working directory first on the import path; the lab then failed with an
    empty reason). The lab's servers and probes start with ``python -P -m``."""
    import subprocess

    from probe.lab.run import python_m

    (tmp_path / "dns.py").write_text("open('PWNED', 'w').write('imported')\n", encoding="utf-8")
    proc = subprocess.run([*python_m("probe.lab.services"), "--help"], cwd=tmp_path, capture_output=True,
                          timeout=120, check=False)
    assert not (tmp_path / "PWNED").exists(), proc.stderr.decode()[-500:]
