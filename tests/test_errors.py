"""probe.errors: one exception base (KzprobeError) and the exit codes, defined once."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from probe.errors import ExitCode, KzprobeError
from tests.conftest import REPO

#: Exceptions private to a module (control flow inside it, never raised to a caller).
PRIVATE_OK = {"_RowRunsOn", "_Reset", "_Reject", "_Retry", "_TooMuch", "_Junk"}


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class in probe/ and analysis/ whose name ends in Error or that
    subclasses an exception by name."""
    found = []
    for root in ("probe", "analysis"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                if not isinstance(node, ast.ClassDef) or node.name in PRIVATE_OK:
                    continue
                bases = {ast.unparse(b) for b in node.bases}
                if node.name.endswith("Error") or bases & {"Exception", "ValueError", "RuntimeError", "OSError"} \
                        or node.name == "NotJudgeable":
                    mod = ".".join(path.relative_to(REPO).with_suffix("").parts)
                    found.append((mod, node.name))
    return found


def test_every_exception_of_ours_is_a_kzprobe_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 13, classes
    not_ours = []
    for mod, name in classes:
        try:
            cls = getattr(importlib.import_module(mod), name)
        except ImportError:  # an optional extra not installed here
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, KzprobeError):
            not_ours.append(f"{mod}.{name}")
    assert not_ours == []


@pytest.mark.parametrize(("mod", "name", "mixin"), [
    ("probe.config", "ConfigError", ValueError), ("probe.targets", "TargetError", ValueError),
    ("probe.names", "HostError", ValueError), ("analysis.load", "LoadError", ValueError),
    ("probe.lab.topology", "LabError", RuntimeError), ("analysis.report", "ReportError", OSError),
])
def test_callers_that_catch_the_builtin_still_do(mod: str, name: str, mixin: type) -> None:
    assert issubclass(getattr(importlib.import_module(mod), name), mixin)


def test_exit_codes_are_sysexits() -> None:
    import os

    for code in ExitCode:
        sysexit = getattr(os, f"EX_{code.name}", None)
        if sysexit is not None:
            assert code == sysexit, code
    assert ExitCode.INTERRUPTED == 130


def test_the_clis_use_the_one_definition() -> None:
    import analysis.cli
    import probe.cli
    import probe.lab.cli

    for mod in (probe.cli, analysis.cli, probe.lab.cli):
        names = [n for n in dir(mod) if n.startswith("EX_")]
        assert names, mod
        for n in names:
            assert isinstance(getattr(mod, n), ExitCode), f"{mod.__name__}.{n}"
    src = "\n".join(Path(m.__file__).read_text() for m in (probe.cli, analysis.cli, probe.lab.cli))  # type: ignore[arg-type]
    for literal in ("= 78", "= 75", "= 130", " 64, 65", "return 75", "return 78"):
        assert literal not in src
    import probe.errors
    import probe.exitcodes

    assert probe.errors.ExitCode is probe.exitcodes.ExitCode


def test_a_bug_during_a_run_is_not_reported_as_bad_configuration(tmp_path: Path, monkeypatch) -> None:
    """Issue 10: ``except ValueError → exit 78`` called any bug "bad configuration".

    The run itself is replaced (nothing is measured, nothing leaves the machine): the coroutine
    ``kzprobe run`` hands to asyncio raises a plain ValueError, as a bug would."""
    import os

    from probe import cli

    calls = []

    def buggy_asyncio_run(coro, *a, **kw):
        coro.close()
        calls.append(1)
        raise ValueError("a bug, not a config problem")

    for k in [k for k in os.environ if k.startswith("KZPROBE_")]:  # only the config: no machine settings
        monkeypatch.delenv(k)
    monkeypatch.setenv("KZPROBE_CONFIG", str(REPO / "tests" / "data" / "empty.toml"))
    # kzprobe run starts its loop through probe.eventloop (uvloop when installed, issue 13); patching only
    # asyncio.run let this test run a real campaign against public resolvers (CI, stop 17): patch both
    monkeypatch.setattr(cli.asyncio, "run", buggy_asyncio_run)
    monkeypatch.setattr(cli.eventloop, "run", buggy_asyncio_run)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["run", "--input", "https://x.example/", "--out", str(tmp_path)])
    assert calls == [1]


def test_anchors_that_do_not_parse_are_a_config_error(tmp_path: Path) -> None:
    """A PEM marker around garbage passes the config check; TrustStore rejects it: ConfigError, exit 78."""
    from probe.config import ConfigError, Settings
    from probe.runner import build_trust

    pem = tmp_path / "bad.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="tls.extra_anchors") as exc:
        build_trust(Settings(tls_extra_anchors=(str(pem),)))
    assert str(pem) in str(exc.value)


def test_the_systemd_units_use_the_same_codes() -> None:
    """The copies that must exist outside Python: the timer's unit counts "vantage offline" as a
    success, the helper's does not restart on bad configuration."""
    units = {name: (REPO / "systemd" / name).read_text(encoding="utf-8")
             for name in ("kzprobe.service", "kzprobe-helper.service")}

    def values(unit: str, key: str) -> set[int]:
        return {int(v) for line in units[unit].splitlines() if line.startswith(f"{key}=")
                for v in line.split("=", 1)[1].split()}

    assert values("kzprobe.service", "SuccessExitStatus") == {ExitCode.TEMPFAIL}
    assert values("kzprobe-helper.service", "RestartPreventExitStatus") == {ExitCode.CONFIG}
