"""Configuration: precedence flags > environment > file > defaults; clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_from_an_empty_file(tmp_path: Path) -> None:
    s = load_settings(config_path=write(tmp_path, ""), env={})
    assert s.probe_asn == "AS0" and s.probe_cc == "ZZ" and s.run_concurrency == 8
    assert s.health_canaries and s.dns_doh_urls[0].startswith("https://")


def test_kzprobe_config_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="typo.toml"):
        load_settings(env={"KZPROBE_CONFIG": str(tmp_path / "typo.toml")})


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    p = write(tmp_path, '[probe]\nasn = "AS9198"\ncc = "KZ"\n[run]\nconcurrency = 4\n[timeouts]\ndns_s = 2\n')
    s = load_settings(config_path=p, env={})
    assert (s.probe_asn, s.probe_cc, s.run_concurrency, s.timeouts.dns_s) == ("AS9198", "KZ", 4, 2.0)
    s = load_settings(config_path=p, env={"KZPROBE_RUN_CONCURRENCY": "16", "KZPROBE_TIMEOUTS_DNS_S": "3"})
    assert (s.run_concurrency, s.timeouts.dns_s) == (16, 3.0)
    s = load_settings(config_path=p, env={"KZPROBE_RUN_CONCURRENCY": "16"}, overrides={"run_concurrency": 32})
    assert s.run_concurrency == 32 and s.probe_asn == "AS9198"


def test_connect_to_and_lists(tmp_path: Path) -> None:
    p = write(tmp_path, '[dns]\nudp_resolvers = ["192.0.2.53", "[2001:db8::53]:5353"]\n'
                        '[connect_to]\n"192.0.2.21:443" = "127.0.0.1:8443"\n')
    s = load_settings(config_path=p, env={})
    assert s.dns_udp_resolvers == ("192.0.2.53", "[2001:db8::53]:5353")
    assert dict(s.connect_to) == {"192.0.2.21:443": "127.0.0.1:8443"}


BAD = [
    ('[run]\nconcurrency = "many"\n', "run.concurrency"),
    ('[run]\nconcurrency = 0\n', "run.concurrency"),
    ('[run]\nconcurency = 3\n', "run.concurency"),
    ('[nosuch]\nx = 1\n', "nosuch"),
    ('[probe]\nasn = "9198"\n', "probe.asn"),
    ('[probe]\ncc = "kaz"\n', "probe.cc"),
    ('[dns]\ndoh_urls = ["http://1.1.1.1/dns-query"]\n', "dns.doh_urls"),
    ('[dns]\nudp_resolvers = ["not-an-ip"]\n', "dns.udp_resolvers"),
    ('[timeouts]\ndns_s = -1\n', "timeouts.dns_s"),
    ('[timeouts]\nfoo_s = 1\n', "timeouts.foo_s"),
    ('[timeouts]\ndns_s = nan\n', "timeouts.dns_s"),
    ('[timeouts]\nhttp_s = inf\n', "timeouts.http_s"),
    ('[run]\nconcurrency = 8.9\n', "run.concurrency"),
    ('[timeouts]\ndns_s = true\n', "timeouts.dns_s"),
    ('[dns]\nsystem = false\nudp_resolvers = []\n', "dns.system"),
    ('[bogons]\npublic = ["300.0.0.0/8"]\n', "bogons"),
    ('[tls]\nextra_anchors = ["/nonexistent.pem"]\n', "tls.extra_anchors"),
    ('[connect_to]\n"192.0.2.1" = "127.0.0.1:1"\n', "connect_to.192.0.2.1"),
    ('this is not toml', "config.toml"),
]


@pytest.mark.parametrize("text,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(config_path=write(tmp_path, text), env={})
    assert key in str(ei.value)


def test_bad_environment_names_the_variable(tmp_path: Path) -> None:
    empty = write(tmp_path, "")
    with pytest.raises(ConfigError, match="KZPROBE_RUN_CONCURRENCY"):
        load_settings(config_path=empty, env={"KZPROBE_RUN_CONCURRENCY": "x"})
    with pytest.raises(ConfigError, match="KZPROBE_NOPE"):
        load_settings(config_path=empty, env={"KZPROBE_NOPE": "1"})
    with pytest.raises(ConfigError, match="KZPROBE_TIMEOUTS_DNS_S"):
        load_settings(config_path=empty, env={"KZPROBE_TIMEOUTS_DNS_S": "nan"})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(config_path=tmp_path / "missing.toml", env={})


@pytest.mark.parametrize(("body", "expected"), [
    ('[probe]\nannotations = { lab_scenario = "kz-2021", campaign = "x" }\n',
     {"lab_scenario": "kz-2021", "campaign": "x"}),
    ("", {}),
])
def test_probe_annotations(body: str, expected: dict[str, str], tmp_path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(body)
    assert dict(load_settings(config_path=p, env={}).probe_annotations) == expected


@pytest.mark.parametrize("body", ['[probe]\nannotations = "x"\n', '[probe]\nannotations = { a = 1 }\n'])
def test_probe_annotations_must_be_strings(body: str, tmp_path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(body)
    with pytest.raises(ConfigError, match="probe.annotations"):
        load_settings(config_path=p, env={})
