"""The systemd units: the settings issue 6 asks for, and systemd's own checks.

``systemd-analyze verify`` and ``security --offline`` need no running systemd (this runs
as root in a container without one); they are also run by ``.ci/run`` through
``systemd/check-units.sh``.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import SYSTEMD

HARDENING = {  # both services
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize("unit", ["kzprobe.service", "kzprobe-helper.service"])
@pytest.mark.parametrize(("key", "value"), sorted(HARDENING.items()))
def test_both_services_are_hardened(units, unit: str, key: str, value: str) -> None:
    assert units[unit]["Service"].get(key) == [value]


@pytest.mark.parametrize("unit", ["kzprobe.service", "kzprobe-helper.service"])
def test_system_calls_are_filtered(units, unit: str) -> None:
    assert units[unit]["Service"]["SystemCallFilter"][0] == "@system-service"


@pytest.mark.parametrize(("key", "value"), [
    ("Type", ["oneshot"]),
    ("ExecStart", ["/opt/kzprobe/bin/kzprobe run --config /etc/kzprobe/config.toml"]),
    ("SuccessExitStatus", ["75"]),
    ("StateDirectory", ["kzprobe"]),
    ("StateDirectoryMode", ["0750"]),          # group kzprobe (analysts) reads the results
    ("CacheDirectory", ["kzprobe"]),
    ("User", ["kzprobe"]),
    ("Group", ["kzprobe"]),
    ("UMask", ["0027"]),
    ("CapabilityBoundingSet", ["CAP_NET_RAW"]),
    ("AmbientCapabilities", ["CAP_NET_RAW"]),
    ("RestrictAddressFamilies", ["AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET"]),
])
def test_probe_service(units, key: str, value: list[str]) -> None:
    assert units["kzprobe.service"]["Service"][key] == value


def test_probe_service_keeps_raw_sockets_and_a_static_user(units) -> None:
    svc = units["kzprobe.service"]["Service"]
    assert "PrivateUsers" not in svc  # it would drop CAP_NET_RAW
    assert "DynamicUser" not in svc   # results must stay readable by group kzprobe (README)
    timeout = svc["TimeoutStartSec"][0]
    assert re.fullmatch(r"\d+(h|min|s)?", timeout) and timeout not in ("0", "infinity")


def test_probe_service_tells_the_journal_no_colour(units) -> None:
    from tests.deploy.conftest import unit_environment

    assert unit_environment(units["kzprobe.service"]["Service"])["NO_COLOR"] == "1"


@pytest.mark.parametrize(("key", "value"), [
    ("OnCalendar", ["00/6:00"]),
    ("RandomizedDelaySec", ["1h"]),
    ("FixedRandomDelay", ["true"]),
    ("Persistent", ["true"]),
])
def test_timer(units, key: str, value: list[str]) -> None:
    assert units["kzprobe.timer"]["Timer"][key] == value


def test_timer_does_not_require_the_service(units) -> None:
    assert "Requires" not in units["kzprobe.timer"].get("Unit", {})
    assert units["kzprobe.timer"]["Install"]["WantedBy"] == ["timers.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_timer_fires_every_six_hours() -> None:
    out = subprocess.run(["systemd-analyze", "calendar", "--iterations=5", "00/6:00"], capture_output=True,
                         text=True, check=True).stdout
    hours = [int(h) for h in re.findall(r"(\d\d):00:00", out)]
    assert len(hours) == 5 and set(hours) == {0, 6, 12, 18}
    assert all((b - a) % 24 == 6 for a, b in itertools.pairwise(hours))


def test_helper_service(units) -> None:
    svc = units["kzprobe-helper.service"]["Service"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["CapabilityBoundingSet"] == [""] and svc["AmbientCapabilities"] == [""]  # no raw sockets
    assert "AF_PACKET" not in svc["RestrictAddressFamilies"][0]
    # the token file reaches the service as a credential: readable by this service only
    assert "tokens:/etc/kzprobe/helper/tokens" in svc["LoadCredential"]
    assert "--token-file ${CREDENTIALS_DIRECTORY}/tokens" in svc["ExecStart"][0]
    assert units["kzprobe-helper.service"]["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_check_units_script_passes() -> None:
    """verify on every unit + security threshold on both services (what .ci/run runs)."""
    res = subprocess.run([str(SYSTEMD / "check-units.sh")], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verify: kzprobe.service kzprobe.timer kzprobe-helper.service: ok" in res.stdout
    assert res.stdout.count("threshold") == 2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize(("edit", "found"), [
    (("ProtectSystem=strict", "ProtectSystm=strict"), "Unknown key"),
    (("Type=oneshot", "Type=oneshoot"), "Failed to parse"),
])
def test_verify_catches_a_broken_unit(tmp_path: Path, edit: tuple[str, str], found: str) -> None:
    """The check reads verify's output, not only its exit status (unknown keys exit 0)."""
    text = (SYSTEMD / "kzprobe.service").read_text().replace("/opt/kzprobe/bin/kzprobe", shutil.which("true") or "/bin/true")
    (tmp_path / "kzprobe.service").write_text(text.replace(*edit))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", "./kzprobe.service"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert found in res.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_security_threshold_catches_weakened_hardening(tmp_path: Path) -> None:
    text = (SYSTEMD / "kzprobe.service").read_text()
    weak = "\n".join(line for line in text.splitlines() if not line.startswith(("Protect", "Private", "SystemCall")))
    (tmp_path / "kzprobe.service").write_text(weak)
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=16",
                          str(tmp_path / "kzprobe.service")], capture_output=True, text=True, check=False)
    assert res.returncode != 0
