"""systemd/install.sh and uninstall.sh into a staged tree (``--root DIR`` / ``DESTDIR``).

``--no-venv`` skips the virtualenv (it needs PyPI); everything else is what a real
install writes, modes and owners included. Nothing outside the temporary tree is touched.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import SYSTEMD

REPO = SYSTEMD.parent

UID, GID = os.getuid(), os.getgid()

#: path → (file type, mode, owner uid, group gid) after a staged install by this user.
EXPECTED = {
    "etc/kzprobe": ("d", 0o750, UID, GID),
    "etc/kzprobe/config.toml": ("f", 0o640, UID, GID),
    "etc/kzprobe/tokens": ("d", 0o700, UID, GID),
    "etc/kzprobe/helper": ("d", 0o700, UID, GID),
    "etc/systemd/system/kzprobe.service": ("f", 0o644, UID, GID),
    "etc/systemd/system/kzprobe.timer": ("f", 0o644, UID, GID),
    "etc/systemd/system/kzprobe-helper.service": ("f", 0o644, UID, GID),
    "usr/lib/sysusers.d/kzprobe.conf": ("f", 0o644, UID, GID),
    "usr/lib/tmpfiles.d/kzprobe.conf": ("f", 0o644, UID, GID),
    "opt/kzprobe/share/README.md": ("f", 0o644, UID, GID),
    "opt/kzprobe/share/config.example.toml": ("f", 0o644, UID, GID),
    "opt/kzprobe/share/docs/helper-api.md": ("f", 0o644, UID, GID),
}


def install(*args: str, env: dict[str, str] | None = None, script: str = "install.sh") -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    return subprocess.run([str(SYSTEMD / script), *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**e, **(env or {})})


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    res = install("--root", str(root), "--no-venv")
    assert res.returncode == 0, res.stderr
    return root


@pytest.mark.parametrize(("path", "expected"), sorted(EXPECTED.items()))
def test_staged_install_writes_files_with_modes_and_owners(staged: Path, path: str,
                                                           expected: tuple[str, int, int, int]) -> None:
    kind, mode, uid, gid = expected
    st = (staged / path).lstat()
    assert (stat.S_ISDIR(st.st_mode) if kind == "d" else stat.S_ISREG(st.st_mode)), path
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), path


def test_staged_install_content(staged: Path) -> None:
    for unit in ("kzprobe.service", "kzprobe.timer", "kzprobe-helper.service"):
        assert (staged / "etc/systemd/system" / unit).read_bytes() == (SYSTEMD / unit).read_bytes()
    config = (staged / "etc/kzprobe/config.toml").read_text()
    assert config == (SYSTEMD / "config.example.toml").read_text()
    assert "[consent]\naccepted = false" in config and "RISK NOTICE" in config
    assert os.readlink(staged / "usr/local/bin/kzprobe") == "/opt/kzprobe/bin/kzprobe"
    assert not (staged / "opt/kzprobe/bin").exists()  # --no-venv
    assert "u kzprobe -" in (staged / "usr/lib/sysusers.d/kzprobe.conf").read_text()
    tmpfiles = (staged / "usr/lib/tmpfiles.d/kzprobe.conf").read_text()
    assert "z /etc/kzprobe/config.toml  0640 root    kzprobe -" in tmpfiles


def test_staged_install_creates_no_user_on_this_machine(tmp_path: Path) -> None:
    before = Path("/etc/passwd").read_bytes()
    res = install("--root", str(tmp_path / "r"), "--no-venv")
    assert res.returncode == 0 and "user kzprobe not created" in res.stdout
    assert Path("/etc/passwd").read_bytes() == before
    assert not (tmp_path / "r/etc/passwd").exists()


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_staged_install_enables_the_timer_offline(staged: Path) -> None:
    link = staged / "etc/systemd/system/timers.target.wants/kzprobe.timer"
    assert os.readlink(link) == "/etc/systemd/system/kzprobe.timer"
    assert not (staged / "etc/systemd/system/multi-user.target.wants/kzprobe-helper.service").exists()


def test_no_enable_leaves_the_timer_disabled(tmp_path: Path) -> None:
    res = install("--root", str(tmp_path), "--no-venv", "--no-enable")
    assert res.returncode == 0
    assert not (tmp_path / "etc/systemd/system/timers.target.wants").exists()


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers not installed")
def test_sysusers_record_creates_the_user(staged: Path) -> None:
    res = subprocess.run(["systemd-sysusers", f"--root={staged}", "--dry-run"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "Creating user 'kzprobe'" in res.stdout + res.stderr


def test_destdir_is_honoured(tmp_path: Path) -> None:
    res = install("--no-venv", env={"DESTDIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "etc/kzprobe/config.toml").is_file()
    assert (tmp_path / "etc/systemd/system/kzprobe.timer").is_file()


def test_make_install_passes_destdir(tmp_path: Path) -> None:
    repo = SYSTEMD.parent
    res = subprocess.run(["make", "-s", "install", f"DESTDIR={tmp_path}", "INSTALL_ARGS=--no-venv --no-enable"],
                         cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "etc/systemd/system/kzprobe.service").is_file()


def test_reinstall_never_overwrites_the_users_config_and_fixes_token_modes(staged: Path) -> None:
    cfg = staged / "etc/kzprobe/config.toml"
    cfg.write_text("[consent]\naccepted = true\n")
    token = staged / "etc/kzprobe/tokens/helper.token"
    token.write_text("x" * 43 + "\n")
    token.chmod(0o644)
    res = install("--root", str(staged), "--no-venv")
    assert res.returncode == 0, res.stderr
    assert cfg.read_text() == "[consent]\naccepted = true\n"
    assert "kept the existing" in res.stdout
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_unknown_argument_is_a_usage_error(tmp_path: Path) -> None:
    res = install("--root", str(tmp_path), "--frobnicate")
    assert res.returncode == 64 and "unknown argument: --frobnicate" in res.stderr
    assert not (tmp_path / "etc").exists()


def test_uninstall_keeps_data_and_config(staged: Path) -> None:
    data = staged / "var/lib/kzprobe/20260101T000000Z_webconnectivity_KZ_9198_0123456789abcdef.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("{}\n")
    (staged / "opt/kzprobe/bin").mkdir(parents=True)  # as if a venv were there
    res = install("--root", str(staged), script="uninstall.sh")
    assert res.returncode == 0, res.stderr
    assert not list((staged / "etc/systemd/system").glob("kzprobe*"))
    assert not (staged / "etc/systemd/system/timers.target.wants/kzprobe.timer").exists()
    assert not (staged / "opt/kzprobe").exists() and not (staged / "usr/local/bin/kzprobe").exists()
    assert data.read_text() == "{}\n" and (staged / "etc/kzprobe/config.toml").is_file()
    assert "--purge removes them" in res.stdout


def test_uninstall_purge_removes_data_and_config(staged: Path) -> None:
    (staged / "var/lib/kzprobe").mkdir(parents=True)
    res = install("--root", str(staged), "--purge", script="uninstall.sh")
    assert res.returncode == 0, res.stderr
    for gone in ("etc/kzprobe", "var/lib/kzprobe", "usr/lib/sysusers.d/kzprobe.conf", "opt/kzprobe"):
        assert not (staged / gone).exists(), gone
    assert f"purged {staged}/etc/kzprobe" in res.stdout and "user kzprobe" not in res.stdout


def test_uninstall_names_the_staged_paths(staged: Path) -> None:
    """Was: "removed /opt/kzprobe" for a staged tree, as if the running system's had gone."""
    res = install("--root", str(staged), script="uninstall.sh")
    assert res.returncode == 0, res.stderr
    assert f"removed {staged}/opt/kzprobe\n" in res.stdout
    assert f"removed the units from {staged}/etc/systemd/system" in res.stdout
    assert "removed /opt/kzprobe" not in res.stdout


#: pip's console-script trampoline for an interpreter path longer than a shebang allows.
TRAMPOLINE = "#!/bin/sh\n'''exec' '{python}' \"$0\" \"$@\"\n' '''\nimport sys\nprint(sys.prefix)\n"


def _fake_staged_venv(root: Path) -> Path:
    """A virtualenv at ROOT/opt/kzprobe as `python -m venv` + pip make it: console scripts whose
    shebang names the staged interpreter, and pip's /bin/sh trampoline for long paths."""
    venv = root / "opt/kzprobe"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv / "bin/kzprobe").write_text(f"#!{venv}/bin/python3\nimport sys\nprint(sys.prefix)\n")
    (venv / "bin/kzprobe-long").write_text(TRAMPOLINE.format(python=f"{venv}/bin/python3"))
    for name in ("kzprobe", "kzprobe-long"):
        (venv / "bin" / name).chmod(0o755)
    return venv


def test_staged_venv_points_at_the_final_path(tmp_path: Path) -> None:
    """Was: scripts with #!/tmp/stage/opt/kzprobe/bin/python3, dead once the tree is copied to /."""
    root = tmp_path / "stage"
    venv = _fake_staged_venv(root)
    res = install("--root", str(root), "--no-venv", "--no-enable")
    assert res.returncode == 0, res.stderr
    assert (venv / "bin/kzprobe").read_text().startswith("#!/opt/kzprobe/bin/python3\n")
    assert (venv / "bin/kzprobe-long").read_text() == TRAMPOLINE.format(python="/opt/kzprobe/bin/python3")
    assert 'VIRTUAL_ENV="/opt/kzprobe"' in (venv / "bin/activate").read_text()
    for f in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if f.is_file() and not f.is_symlink():
            assert str(root) not in f.read_text(errors="replace"), f
            assert os.access(f, os.X_OK) == f.name.startswith("kzprobe"), f  # modes kept
    assert "its scripts now run /opt/kzprobe/bin/python3, the final path" in res.stdout
    assert "same Python" in res.stdout


RUN_AT_FINAL_PATH = r"""
set -euo pipefail
mount -t tmpfs tmpfs /opt
mkdir /opt/kzprobe
mount --bind "$1/opt/kzprobe" /opt/kzprobe
/opt/kzprobe/bin/kzprobe
/opt/kzprobe/bin/kzprobe-long
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_relocated_staged_venv_runs_once_copied_to_its_final_path(tmp_path: Path) -> None:
    """The staged tree copied to / (here: bind-mounted at /opt/kzprobe in a private mount namespace) runs."""
    root = tmp_path / "stage"
    _fake_staged_venv(root)
    assert install("--root", str(root), "--no-venv", "--no-enable").returncode == 0
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", RUN_AT_FINAL_PATH, "run",
                          str(root)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["/opt/kzprobe", "/opt/kzprobe"]


def test_readme_says_kzprobe_comes_from_the_checkout() -> None:
    readme = (SYSTEMD.parent / "README.md").read_text()
    deploying = readme.split("## Deploying on a Raspberry Pi or VPS", 1)[1].split("\n## ", 1)[0]
    assert "from PyPI;" not in deploying
    assert "installed from this checkout" in deploying
    assert "the venv's scripts point at `/opt/kzprobe/bin/python3`" in deploying


def test_uninstall_leaves_a_foreign_kzprobe_command(staged: Path) -> None:
    link = staged / "usr/local/bin/kzprobe"
    link.unlink()
    link.write_text("#!/bin/sh\n")
    assert install("--root", str(staged), script="uninstall.sh").returncode == 0
    assert link.read_text() == "#!/bin/sh\n"


LIVE_SCRIPT = r"""
set -euo pipefail
T=$1
cp -a /etc "$T/etc"
mount --bind "$T/etc" /etc
for d in /opt /usr/local /usr/lib/sysusers.d /usr/lib/tmpfiles.d; do mount -t tmpfs tmpfs "$d"; done
"$2/systemd/install.sh" --no-venv
echo "--- state"
stat -c '%a %U:%G %n' /etc/kzprobe /etc/kzprobe/config.toml /etc/kzprobe/tokens /etc/kzprobe/helper \
    /etc/systemd/system/kzprobe.service
getent passwd kzprobe
readlink /etc/systemd/system/timers.target.wants/kzprobe.timer
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_live_install_in_a_private_mount_namespace(tmp_path: Path) -> None:
    """install.sh to / as root, inside a mount namespace whose /etc is a copy and whose /opt,
    /usr/local, sysusers.d, tmpfiles.d are tmpfs: the user is created, /etc/kzprobe gets group
    kzprobe, and without a running systemd the timer is enabled for the next boot (and said so).
    Nothing of it outlives the namespace."""
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd is running here: a live install would start the timer")
    host_before = (Path("/etc/passwd").read_bytes(), Path("/etc/kzprobe").exists(), sorted(os.listdir("/opt")))
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", LIVE_SCRIPT, "live",
                          str(tmp_path), str(SYSTEMD.parent)], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "created system user kzprobe" in out
    assert "systemd is not running here" in out and "enabled for the next boot but not started" in out
    state = out.split("--- state\n", 1)[1].splitlines()
    assert state[:5] == ["750 root:kzprobe /etc/kzprobe", "640 root:kzprobe /etc/kzprobe/config.toml",
                         "700 kzprobe:kzprobe /etc/kzprobe/tokens", "700 root:root /etc/kzprobe/helper",
                         "644 root:root /etc/systemd/system/kzprobe.service"]
    assert state[5].startswith("kzprobe:x:") and state[5].endswith(":/var/lib/kzprobe:/usr/sbin/nologin")
    assert state[6] == "/etc/systemd/system/kzprobe.timer"
    assert (Path("/etc/passwd").read_bytes(), Path("/etc/kzprobe").exists(), sorted(os.listdir("/opt"))) == host_before


#: A stand-in for python3 (no PyPI in tests): ``-m venv DIR`` makes DIR/bin/python3 as this same
#: script, whose ``-m pip`` logs its arguments and writes bin/kzprobe; everything else succeeds.
FAKE_PYTHON = """#!/bin/sh
log="$(dirname "$0")/../pip.log"
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python3" && : > "$3/pyvenv.cfg" ;;
  "-m pip") echo "$*" >> "$log"; : > "$(dirname "$0")/kzprobe"; chmod +x "$(dirname "$0")/kzprobe" ;;
esac
exit 0
"""


def test_the_venv_gets_the_packets_extra(tmp_path: Path) -> None:
    """install.sh installs kzprobe[packets] (scapy, for --pcap; issue 16 part 3), then the code again."""
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    root = tmp_path / "root"
    res = install("--root", str(root), "--no-enable", "--python", str(fake))
    assert res.returncode == 0, res.stderr
    calls = (root / "opt/kzprobe/pip.log").read_text().splitlines()
    assert calls[0].endswith(f"--upgrade {REPO}[packets]"), calls
    assert calls[1].endswith(f"--force-reinstall --no-deps {REPO}"), calls
