"""Hostile input to ``kzprobe run`` (issue 11, 6): a clear error naming the input, the
sysexits code, never a traceback, never a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.targets import targets_from_urls

ROOT = Path(__file__).resolve().parents[1]


def run_kzprobe(*args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    env.update({"NO_COLOR": "1", "LC_ALL": "C.UTF-8"})
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, env=env, capture_output=True,
                          timeout=timeout, check=False)


@pytest.mark.parametrize(("raw", "says"), [
    (b"https://example.org/\xff", b"byte 0xFF at character 21"),
    (b"https://ex\xe9mple.org/", b"byte 0xE9 at character 11"),
    (b"https://example.org/?q=\xc3", b"byte 0xC3 at character 24"),
])
def test_a_non_utf8_byte_in_input_is_exit_64_naming_it(loopback_config_path: Path, tmp_path: Path, raw: bytes,
                                                        says: bytes) -> None:
    """UnicodeEncodeError, exit 1 and a traceback before; now a usage error naming the byte."""
    p = run_kzprobe("run", "--config", str(loopback_config_path), "--out", str(tmp_path / "o"), "--input", raw)
    assert p.returncode == 64, p.stderr.decode(errors="replace")
    assert b"not valid UTF-8: " + says in p.stderr and b"Traceback" not in p.stderr
    assert b"<command line>:1" in p.stderr


def test_a_non_utf8_input_beside_a_good_one_is_skipped_naming_it() -> None:
    errors: list[str] = []
    got = targets_from_urls([os.fsdecode(b"https://bad.example/\xff"), "https://good.example/"],
                            on_error=lambda e: errors.append(str(e)))
    assert [t.input for t in got] == ["https://good.example/"]
    assert errors == ["<command line>:1: bad URL 'https://bad.example/\\udcff': not valid UTF-8: byte 0xFF at "
                      "character 21"]


def test_a_fifo_as_config_is_exit_78_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    p = run_kzprobe("run", "--config", str(fifo), "--input", "https://example.org/", timeout=30)
    assert p.returncode == 78 and b"not a regular file (a FIFO (named pipe))" in p.stderr


def test_dev_zero_as_a_target_list_is_exit_66(loopback_config_path: Path, tmp_path: Path) -> None:
    p = run_kzprobe("run", "--config", str(loopback_config_path), "--out", str(tmp_path / "o"),
                    "--targets", "/dev/zero", timeout=30)
    assert p.returncode == 66 and b"/dev/zero" in p.stderr and b"not a regular file" in p.stderr


@pytest.fixture
async def loopback_config_path(loopback_config) -> Path:
    return loopback_config["write"]()
