"""kzprobe.service's ExecStart line, run as systemd would run it, against loopback servers.

What the unit sets is read from systemd/kzprobe.service and reproduced: an unprivileged
uid and gid with no supplementary groups (when the test runs as root; else the current
user, already unprivileged), ``UMask=``, ``Environment=``, ``STATE_DIRECTORY`` and
``CACHE_DIRECTORY`` (``StateDirectoryMode=``), ``HOME`` = the user's home, the working
directory, and stdout/stderr that are not a TTY (the journal). Only the binary
(/opt/kzprobe/bin/kzprobe → this venv's kzprobe) and the config path are swapped.

The interpreter comes from conftest's ``unprivileged_python`` (runnable by that uid).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shlex
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import unit_environment

#: An ANSI escape sequence (colour, cursor movement of a progress bar).
ESCAPE = re.compile(r"\x1b\[")
OLD_RUN = "20200101T000000Z_webconnectivity_KZ_64500_0123456789abcdef"


def _free_id() -> int:
    for uid in range(64123, 65000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid")


@pytest.fixture
def unit_root() -> Iterator[Path]:
    """A world-traversable temporary tree (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="kzprobe-unit-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


async def run_as_unit(units: dict[str, Any], config: Path, root: Path, python: Any,
                      seed: Path | None = None) -> tuple[int, str, str, Path, int]:
    """Start kzprobe.service's ExecStart as the unit would; returns (status, stdout, stderr, state dir, uid).

    ``seed``: files copied into the state directory first (earlier runs).
    """
    svc = units["kzprobe.service"]["Service"]
    argv = shlex.split(svc["ExecStart"][0])
    assert argv[0] == "/opt/kzprobe/bin/kzprobe" and argv[-2:] == ["--config", "/etc/kzprobe/config.toml"]
    rest = [*argv[1:-1], str(config)]
    assert svc["WorkingDirectory"] == [f"/var/lib/{svc['StateDirectory'][0]}"]
    state = root / "var/lib" / svc["StateDirectory"][0]
    cache = root / "var/cache" / svc["CacheDirectory"][0]
    if os.geteuid() == 0:
        uid = gid = _free_id()
        creds: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []}
        argv = [*python(uid), "-m", "probe", *rest]
    else:
        uid, gid, creds = os.getuid(), os.getgid(), {}
        argv = [str(Path(sys.executable).parent / "kzprobe"), *rest]
    for d, mode in ((state, svc["StateDirectoryMode"][0]), (cache, svc["CacheDirectoryMode"][0])):
        d.mkdir(parents=True)
        d.chmod(int(mode, 8))
        if os.geteuid() == 0:
            os.chown(d, uid, gid)
    for f in seed.iterdir() if seed else ():
        shutil.copy2(f, state / f.name)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8", "HOME": str(state),
           "USER": svc["User"][0], "LOGNAME": svc["User"][0], "SHELL": "/usr/sbin/nologin",
           "INVOCATION_ID": uuid.uuid4().hex, "STATE_DIRECTORY": str(state), "CACHE_DIRECTORY": str(cache),
           **unit_environment(svc)}
    proc = await asyncio.create_subprocess_exec(*argv, cwd=state, env=env, umask=int(svc["UMask"][0], 8),
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, **creds)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode(), state, uid


def unit_config(loopback_config: dict[str, Any], root: Path, *, extra: str, offline: bool = False) -> Path:
    """loopback_config's file and its CA and target list, copied where the unit's user can read them,
    with ``[run] targets`` set (the unit passes no --targets)."""
    tmp = loopback_config["tmp"]
    kw = {"doh_url": f"https://{loopback_config['closed']}/dns-query"} if offline else {}
    text = loopback_config["write"](**kw).read_text()
    etc = root / "etc/kzprobe"
    etc.mkdir(parents=True)
    for name in ("ca.pem", "list.csv"):
        shutil.copy(tmp / name, etc / name)
    text = text.replace(str(tmp), str(etc)).replace("[probe]", f'[run]\ntargets = ["{etc / "list.csv"}"]\n[probe]', 1)
    cfg = etc / "config.toml"
    cfg.write_text(text + extra, encoding="utf-8")
    for p in (root / "etc", etc, *etc.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return cfg


CASES = [
    # (name, extra config, offline, exit status, text the journal must show)
    ("measures", "[consent]\naccepted = true\n", False, 0, "accessible: 5"),
    ("vantage offline", "[consent]\naccepted = true\n", True, 75, "VANTAGE OFFLINE — nothing can be judged"),
    ("no consent", "[consent]\naccepted = false\n", False, 78, "consent not given"),
]


@pytest.mark.parametrize(("name", "extra", "offline", "status", "says"), CASES, ids=[c[0] for c in CASES])
async def test_execstart_as_the_unit_runs_it(loopback_config, units, unit_root: Path, unprivileged_python, name: str, extra: str,
                                             offline: bool, status: int, says: str) -> None:
    cfg = unit_config(loopback_config, unit_root, extra=extra, offline=offline)
    rc, out, err, state, uid = await run_as_unit(units, cfg, unit_root, unprivileged_python)
    accepted = {0} | {int(s) for s in units["kzprobe.service"]["Service"]["SuccessExitStatus"][0].split()}
    assert rc == status, err
    assert (rc in accepted) is (status != 78)  # 75 keeps the unit green; 78 (no consent) marks it failed
    assert says in out + err
    assert not ESCAPE.search(out) and not ESCAPE.search(err)  # the journal gets plain text
    jsonl = list(state.glob("*.jsonl"))
    if status == 78:
        assert jsonl == []
        return
    assert len(jsonl) == 1 and jsonl[0].read_bytes().count(b"\n") == 5
    for f in (jsonl[0], jsonl[0].with_suffix(".summary.json")):
        st = f.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, uid), f  # group kzprobe reads, others not
    assert f"measurements: {jsonl[0]}" in out


async def test_the_unit_applies_retention_after_the_run(loopback_config, units, unit_root: Path,
                                                       unprivileged_python) -> None:
    cfg = unit_config(loopback_config, unit_root, extra="[consent]\naccepted = true\n")
    seed = unit_root / "seed"
    seed.mkdir()
    for suffix in (".jsonl", ".summary.json"):
        (seed / f"{OLD_RUN}{suffix}").write_text("{}\n")
    (seed / "notes.txt").write_text("mine")
    os.utime(seed / "notes.txt", (0, 0))  # old, but not a run file: kept
    rc, _, err, state, _ = await run_as_unit(units, cfg, unit_root, unprivileged_python, seed=seed)
    assert rc == 0, err
    assert "retention: deleted 2 files of 1 runs older than 90 days" in err
    names = sorted(p.name for p in state.iterdir())
    assert "notes.txt" in names and not any(n.startswith(OLD_RUN) for n in names)
    assert len([n for n in names if n.endswith(".jsonl")]) == 1
