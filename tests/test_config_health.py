"""``[health]`` values are checked when the config is loaded (break test F6): a bad canary used to
crash ``check_vantage`` mid-run (a traceback, exit 1, a crashed run listed as an ordinary one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return load_settings(config_path=p, env={})


@pytest.mark.parametrize(("text", "key", "says"), [
    ('canaries = ["not a host"]', "health.canaries", "'not a host' is not HOST:PORT"),
    ('canaries = ["example.com:99999"]', "health.canaries", "'example.com:99999' is not HOST:PORT"),
    ('canaries = ["example.com:0"]', "health.canaries", "is not HOST:PORT"),
    ('canaries = ["example.com"]', "health.canaries", "'example.com' is not HOST:PORT"),
    ('canaries = [":443"]', "health.canaries", "is not HOST:PORT"),
    ('canaries = ["☃.net:443"]', "health.canaries", "invalid host name '☃.net'"),
    ('canaries = ["bad_host!.org:443"]', "health.canaries", "invalid label"),
    ('canaries = ["2606:4700::1111:443"]', "health.canaries", "bad IPv6 literal"),
    ('canaries = ["[zz]:443"]', "health.canaries", "bad IPv6 literal"),
    ('ipv6_canaries = ["[zz]:443"]', "health.ipv6_canaries", "'[zz]:443' is not an endpoint"),
    ('ipv6_canaries = ["[2606:4700:4700::1111]:70000"]', "health.ipv6_canaries", "is not an endpoint"),
    ('ipv6_canaries = ["192.0.2.1:443"]', "health.ipv6_canaries", "is not an IPv6 endpoint"),
    ('ipv6_canaries = ["example.com:443"]', "health.ipv6_canaries", "is not an endpoint"),
    ('resolver_canary = "☃.net"', "health.resolver_canary", "invalid host name '☃.net'"),
    ('resolver_canary = "not a host"', "health.resolver_canary", "invalid label"),
])
def test_a_bad_health_value_is_a_config_error_naming_the_key(tmp_path: Path, text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[health]\n{text}\n")
    assert info.value.key == key
    assert says in str(info.value)


def test_good_health_values_load(tmp_path: Path) -> None:
    s = _load(tmp_path, '[health]\ncanaries = ["www.wikipedia.org:443", "192.0.2.1:8443", "[2001:db8::1]:443", '
                        '"сайт.қаз:443"]\nipv6_canaries = ["[2001:db8::1]:443"]\nresolver_canary = ""\n')
    assert s.health_canaries == ("www.wikipedia.org:443", "192.0.2.1:8443", "[2001:db8::1]:443", "сайт.қаз:443")
    assert s.health_ipv6_canaries == ("[2001:db8::1]:443",) and s.health_resolver_canary == ""
    assert _load(tmp_path, '[health]\nresolver_canary = "example.com"\nipv6_canaries = []\n').health_resolver_canary


@pytest.mark.parametrize("text", ['canaries = ["not a host"]', 'ipv6_canaries = ["[zz]:443"]',
                                  'resolver_canary = "☃.net"'])
def test_run_exits_78_naming_the_key_before_anything_is_written(tmp_path: Path, text: str) -> None:
    # consent is not given: without the check at load the run stops at consent (no traffic either
    # way), with it the run stops earlier, at the [health] key
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[consent]\naccepted = false\n[health]\n{text}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    res = subprocess.run([sys.executable, "-m", "probe", "run", "--config", str(cfg), "--input", "https://example.org/",
                          "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 78, res.stderr
    assert f"config: health.{text.split(' ')[0]}: " in res.stderr
    assert "Traceback" not in res.stderr and "consent" not in res.stderr
    assert not (tmp_path / "out").exists()
