"""Shared pieces of the deployment tests: the repo's systemd/ directory and a unit-file parser."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as ``{section: {key: [values in order]}}`` (keys may repeat;
    comments and blank lines skipped; no line continuations are used in our units)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"{path.name}:{lineno}: line continuation"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}:{lineno}: not key=value: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    """The ``Environment=`` assignments of a [Service] section (later ones win)."""
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for word in shlex.split(value):
            k, _, v = word.partition("=")
            env[k] = v
    return env


@pytest.fixture(scope="session")
def units() -> dict[str, dict[str, dict[str, list[str]]]]:
    """Every unit of systemd/, parsed: ``{"kzprobe.service": {...}, ...}``."""
    return {p.name: parse_unit(p) for p in sorted(SYSTEMD.glob("kzprobe*.*")) if p.suffix in (".service", ".timer")}
