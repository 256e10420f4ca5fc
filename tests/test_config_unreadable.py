"""A config path the user may not read (break test F7): as nobody with ``HOME=/root``, the default
``~/.config/kzprobe/config.toml`` under an unreadable home was a PermissionError traceback. Now a
default path that cannot be looked at is absent (said at info level); an explicit one is exit 78."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from probe import config

NOBODY = 65534


def _as_nobody(job: Any) -> dict[str, Any]:
    """``job()`` in a forked child running as uid/gid 65534 (the permission checks root skips)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        out: dict[str, Any]
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = job()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"raised": type(exc).__name__, "message": str(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def locked_home(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as nobody")
    home = tmp_path / "home"
    (home / ".config" / "kzprobe").mkdir(parents=True)
    (home / ".config" / "kzprobe" / "config.toml").write_text('[run]\nconcurrency = 3\n')
    home.chmod(0o700)  # root's, as /root: nobody may not look inside
    return home


def test_a_default_path_under_an_unreadable_home_is_absent(locked_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(locked_home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    mine = locked_home / ".config" / "kzprobe" / "config.toml"
    assert config.default_config_paths()[-1] == mine
    monkeypatch.setattr(config, "default_config_paths", lambda: [mine])  # not a real /etc/kzprobe/config.toml

    def job() -> dict[str, Any]:
        said: list[str] = []
        handler = logging.Handler(logging.INFO)
        handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("kzprobe.config").addHandler(handler)
        logging.getLogger("kzprobe.config").setLevel(logging.INFO)
        s = config.load_settings(env={})
        return {"source": s.source, "concurrency": s.run_concurrency, "said": said}

    got = _as_nobody(job)
    assert got.get("raised") is None, got
    assert got["source"] == "defaults" and got["concurrency"] == 8
    assert got["said"] == [f"config: {mine} cannot be looked at (Permission denied): taken as absent"]
    assert config.load_settings(env={}).run_concurrency == 3  # root may read it: it is used


def test_an_explicit_unreadable_config_is_a_config_error_naming_it(locked_home: Path) -> None:
    mine = locked_home / ".config" / "kzprobe" / "config.toml"

    def job() -> dict[str, Any]:
        try:
            config.load_settings(config_path=mine, env={})
        except config.ConfigError as exc:
            return {"error": str(exc), "key": exc.key}
        return {}

    got = _as_nobody(job)
    assert got == {"error": f"config: {mine}: cannot read: Permission denied", "key": str(mine)}, got
    got = _as_nobody(lambda: _explicit_env(mine))
    assert got["key"] == str(mine) and "Permission denied" in got["error"]


def _explicit_env(path: Path) -> dict[str, Any]:
    try:
        config.load_settings(env={"KZPROBE_CONFIG": str(path)})
    except config.ConfigError as exc:
        return {"error": str(exc), "key": exc.key}
    return {}
