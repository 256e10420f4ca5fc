"""The risk notice: ``[consent] accepted`` gates ``kzprobe run``; the shipped example config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "systemd" / "config.example.toml"


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("", {}, None),
    ("[consent]\naccepted = false\n", {}, False),
    ("[consent]\naccepted = true\n", {}, True),
    ("[consent]\naccepted = false\n", {"KZPROBE_CONSENT_ACCEPTED": "true"}, True),
    ("[consent]\naccepted = true\n", {"KZPROBE_CONSENT_ACCEPTED": "false"}, False),
    ("[consent]\naccepted = \"maybe\"\n", {}, ConfigError),
    ("[consent]\nagreed = true\n", {}, ConfigError),
    # only a TOML boolean accepts: these were read as accepted (or refused) before
    ("[consent]\naccepted = \"yes\"\n", {}, ConfigError),
    ("[consent]\naccepted = \"true\"\n", {}, ConfigError),
    ("[consent]\naccepted = \"no\"\n", {}, ConfigError),
    ("[consent]\naccepted = 1\n", {}, ConfigError),
    ("[consent]\naccepted = 0\n", {}, ConfigError),
    ("[consent]\naccepted = [true]\n", {}, ConfigError),
    ("", {"KZPROBE_CONSENT_ACCEPTED": "yes"}, ConfigError),
    ("", {"KZPROBE_CONSENT_ACCEPTED": "1"}, ConfigError),
])
def test_consent_setting(tmp_path: Path, text: str, env: dict[str, str], expected: object) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=r"consent\.(accepted|agreed)|KZPROBE_CONSENT_ACCEPTED"):
            load_settings(config_path=cfg, env=env)
    else:
        assert load_settings(config_path=cfg, env=env).consent_accepted is expected


def kzprobe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_run_refuses_without_consent_and_measures_nothing(tmp_path: Path) -> None:
    res = kzprobe("run", "--config", str(EXAMPLE), "--input", "https://example.org/", "--out", str(tmp_path))
    assert res.returncode == 78
    assert f"consent not given: read the risk notice in {EXAMPLE}" in res.stderr
    assert "[consent] accepted = true" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_consent_that_is_not_a_boolean(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[consent]\naccepted = "yes"\n')
    res = kzprobe("run", "--config", str(cfg), "--input", "https://example.org/", "--out", str(tmp_path / "out"))
    assert res.returncode == 78
    assert "consent.accepted: must be a TOML boolean: true or false, without quotes, got 'yes'" in res.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_example_config_is_disabled_and_carries_the_notice() -> None:
    text = EXAMPLE.read_text()
    s = load_settings(config_path=EXAMPLE, env={})
    assert s.consent_accepted is False
    assert "RISK NOTICE" in text and "https://ooni.org/about/risks/" in text


def test_every_commented_key_of_the_example_is_a_real_setting(tmp_path: Path) -> None:
    """Uncomment every ``# key = value`` line (and ``# [section]``): the config must still load."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        m = re.match(r"#\s?(\[[a-z_]+\]|[a-z_]+\s*=\s*.+?)(\s+#.*)?$", line)
        lines.append(m.group(1) if m and not line.startswith("# ===") else line)
    cfg = tmp_path / "all.toml"
    token = tmp_path / "token"
    token.write_text("t" * 43)
    text = "\n".join(lines).replace("/etc/kzprobe/tokens/helper.token", str(token))
    cfg.write_text(text)
    s = load_settings(config_path=cfg, env={})
    assert s.run_retention_days == 90 and s.probe_asn == "AS9198" and s.helper_url == "https://vps.example.org:8443"
    assert s.timeouts.run_s == 7200.0
