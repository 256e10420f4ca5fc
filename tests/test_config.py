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
    ('[dns]\nudp_resolvers = "1.2.3.4"\n', "dns.udp_resolvers"),  # a string, not a list (break test)
    ('[dns]\ndoh_urls = "https://1.1.1.1/dns-query"\n', "dns.doh_urls"),
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
    # a quoted number or boolean in the file is a mistake to name, not to guess (break test)
    ('[run]\nconcurrency = "8"\n', "run.concurrency"),
    ('[run]\nretention_days = "90"\n', "run.retention_days"),
    ('[dns]\nsystem = "false"\n', "dns.system"),
    ('[localnet]\nos = "yes"\n', "localnet.os"),
    ('[timeouts]\ndns_s = "5"\n', "timeouts.dns_s"),
    ('[http]\nextra_ports = [true]\n', "http.extra_ports"),
]


@pytest.mark.parametrize("text,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(config_path=write(tmp_path, text), env={})
    assert key in str(ei.value)


def test_numbers_and_booleans_are_words_in_the_environment_only(tmp_path: Path) -> None:
    """The environment is text: "8" and "false" are read there; the file takes TOML values."""
    s = load_settings(config_path=write(tmp_path, ""), env={"KZPROBE_RUN_CONCURRENCY": "8",
                                                           "KZPROBE_LOCALNET_OS": "false",
                                                           "KZPROBE_TIMEOUTS_DNS_S": "5"})
    assert (s.run_concurrency, s.localnet_os, s.timeouts.dns_s) == (8, False, 5.0)
    s = load_settings(config_path=write(tmp_path, '[run]\ntime_budget_s = "none"\n'), env={})
    assert s.run_time_budget_s is None  # the documented word for no limit


def test_extra_ports_take_numbers(tmp_path: Path) -> None:
    """``[http] extra_ports = [8080]`` was refused ("wants strings"): port numbers are numbers;
    strings still work (break test)."""
    s = load_settings(config_path=write(tmp_path, '[http]\nextra_ports = [8080, "8443"]\n'), env={})
    assert s.http_extra_ports == ("8080", "8443")
    from probe.runner import address_policy

    assert address_policy(s).extra_ports == frozenset({8080, 8443})
    with pytest.raises(ConfigError, match="http.extra_ports"):
        load_settings(config_path=write(tmp_path, "[http]\nextra_ports = [70000]\n"), env={})


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


# -------------------------------------------------- upper bounds and hostile files (issue 11, 6)


@pytest.mark.parametrize(("text", "key", "says"), [
    ("[http]\nmax_body_bytes = 1000000000000\n", "http.max_body_bytes", "between 0 and 67108864"),
    ("[http]\nstore_body_bytes = 1000000000000\n", "http.store_body_bytes", "between 0 and 1048576"),
    ("[http]\nstore_body_bytes = 1048577\n", "http.store_body_bytes", "between 0 and 1048576"),
    ("[http]\nmax_redirects = 100000\n", "http.max_redirects", "between 0 and 50"),
    ("[http]\nextra_ports = [\"22x\"]\n", "http.extra_ports", "1-65535"),
    ("[http]\nextra_ports = [\"70000\"]\n", "http.extra_ports", "1-65535"),
    ("[timeouts]\nhttp_s = 1e9\n", "timeouts.http_s", "at most 3600 s"),
    ("[timeouts]\nmeasurement_s = 86400\n", "timeouts.measurement_s", "at most 3600 s"),
    ("[timeouts]\nrun_s = 1e12\n", "timeouts.run_s", "at most 604800 s"),
    ("[timeouts]\ncontrol_s = 90\nmeasurement_s = 90\n", "timeouts.control_s", "smaller than timeouts.measurement_s"),
    # the deadline must cover the phases it contains (issue 12): keys and numbers named
    ("[timeouts]\nmeasurement_s = 30\n", "timeouts.measurement_s",
     "30 s cannot cover the phases one input goes through in sequence: dns_s 5 + dns_listen_s 1.5 + connect_s 10 "
     "+ tls_s 10 + 3 × http_s 60 = 86.5 s"),
    ("[timeouts]\ndns_s = 1\ndns_listen_s = 0.5\nconnect_s = 2\ntls_s = 2\nhttp_s = 4\nmeasurement_s = 18\n"
     "control_s = 17.5\n", "timeouts.control_s", "dns_s 1 + control 17.5 (control_s, or 3/4 of measurement_s"),
    ("[run]\nconcurrency = 100000\n", "run.concurrency", "between 1 and 1024"),
    ("[localnet]\nextra = [\"192.168.1.0/33\"]\n", "localnet.extra", "CIDR"),
])
def test_values_have_upper_bounds_naming_the_key(tmp_path: Path, text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=write(tmp_path, text), env={})
    assert info.value.key == key and says in str(info.value)


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    s = load_settings(config_path=write(tmp_path, "[http]\nmax_body_bytes = 67108864\nmax_redirects = 50\n"
                                                  "extra_ports = [\"8080\"]\n[timeouts]\nmeasurement_s = 3600\n"
                                                  "control_s = 3595\n[localnet]\nos = false\n"
                                                  "extra = [\"10.8.0.0/24\"]\n"), env={})
    assert (s.http_max_body_bytes, s.http_extra_ports, s.timeouts.control_s) == (64 << 20, ("8080",), 3595.0)
    assert (s.localnet_os, s.localnet_extra) == (False, ("10.8.0.0/24",))


def test_control_timeout_defaults_below_the_measurement_deadline(tmp_path: Path) -> None:
    s = load_settings(config_path=write(tmp_path, ""), env={})
    assert s.timeouts.control_s < s.timeouts.measurement_s


def test_a_5000_deep_toml_is_a_config_error(tmp_path: Path) -> None:
    """tomllib recurses per level: 5,000 nested arrays crashed the loader with RecursionError."""
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=write(tmp_path, "[run]\ntargets = " + "[" * 5000 + "]" * 5000 + "\n"), env={})
    assert "nested too deeply" in str(info.value)


def test_a_fifo_config_is_refused_without_hanging(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=fifo, env={})
    assert info.value.key == str(fifo) and "not a regular file (a FIFO (named pipe))" in str(info.value)


def test_dev_zero_as_config_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_path="/dev/zero", env={})
    assert "not a regular file (a character device)" in str(info.value)


def test_a_config_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    from probe.config import MAX_CONFIG_BYTES

    with pytest.raises(ConfigError) as info:
        load_settings(config_path=write(tmp_path, "#" * (MAX_CONFIG_BYTES + 1)), env={})
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in str(info.value)


def test_a_bad_value_in_the_file_names_the_file(tmp_path) -> None:
    """Break test (stop 18): `config: run.concurrency: expected an integer, got 'x'` did not say which file."""
    f = tmp_path / "probe.toml"
    f.write_text('[run]\nconcurrency = "x"\n')
    with pytest.raises(ConfigError, match=r"run\.concurrency: expected an integer.*, got 'x' \(in .*probe\.toml\)"):
        load_settings(config_path=f, env={})


def test_a_list_is_comma_separated_in_the_environment_only(tmp_path: Path) -> None:
    s = load_settings(config_path=write(tmp_path, ""), env={"KZPROBE_DNS_UDP_RESOLVERS": "192.0.2.1, 192.0.2.2"})
    assert s.dns_udp_resolvers == ("192.0.2.1", "192.0.2.2")
    with pytest.raises(ConfigError) as ei:  # in the file a string is no list, even with a comma
        load_settings(config_path=write(tmp_path, '[dns]\nudp_resolvers = "192.0.2.1, 192.0.2.2"\n'), env={})
    assert ei.value.key == "dns.udp_resolvers" and "a TOML array" in str(ei.value)


@pytest.mark.parametrize(("path", "says"), [("/dev/zero", "not a regular file (a character device)"),
                                            ("/nonexistent.pem", "no such file")])
def test_an_anchor_file_that_is_not_a_file_says_what_it_is(tmp_path: Path, path: str, says: str) -> None:
    """Break test: ``extra_anchors = ["/dev/zero"]`` said "no such file"."""
    with pytest.raises(ConfigError) as ei:
        load_settings(config_path=write(tmp_path, f'[tls]\nextra_anchors = ["{path}"]\n'), env={})
    assert f"{path}: {says}" in str(ei.value)


def test_the_probes_other_variables_are_accepted_and_a_typo_still_refused(tmp_path: Path) -> None:
    """``KZPROBE_EVENT_LOOP=asyncio`` (docs/speed.md) and ``KZPROBE_SHARED`` (README, ``make test``)
    made ``kzprobe run`` refuse to start: "unknown environment setting", 78 (break test 24, #3).
    The closed list ``OTHER_ENV_VARS`` is accepted; a misspelt setting is still refused, named."""
    from probe.config import OTHER_ENV_VARS

    empty = write(tmp_path, "")
    env = {v: "1" for v in OTHER_ENV_VARS if v != "KZPROBE_CONFIG"}
    env |= {"KZPROBE_EVENT_LOOP": "asyncio", "KZPROBE_SHARED": str(tmp_path), "KZPROBE_RUN_CONCURRENCY": "3"}
    assert load_settings(config_path=empty, env=env).run_concurrency == 3
    with pytest.raises(ConfigError, match="KZPROBE_RUN_CONCURENCY.*did you mean KZPROBE_RUN_CONCURRENCY"):
        load_settings(config_path=empty, env={**env, "KZPROBE_RUN_CONCURENCY": "3"})
    with pytest.raises(ConfigError, match="KZPROBE_REQUIRE_LABS"):  # no prefix is exempt, only the list
        load_settings(config_path=empty, env={"KZPROBE_REQUIRE_LABS": "1"})


def test_an_unknown_event_loop_is_refused_naming_it(tmp_path: Path) -> None:
    """``KZPROBE_EVENT_LOOP=bogus`` silently ran uvloop (re-check of break test 24): 78 naming the
    variable and the value; asyncio, uvloop (any case) and empty are accepted."""
    from probe.eventloop import loop_name

    empty = write(tmp_path, "")
    for ok in ("asyncio", "uvloop", "ASYNCIO", " uvloop ", ""):
        load_settings(config_path=empty, env={"KZPROBE_EVENT_LOOP": ok})
    for bad in ("bogus", "async", "1"):
        with pytest.raises(ConfigError, match=f"KZPROBE_EVENT_LOOP: expected asyncio or uvloop, got '{bad}'"):
            load_settings(config_path=empty, env={"KZPROBE_EVENT_LOOP": bad})
    assert loop_name() in ("asyncio", "uvloop")


def test_every_kzprobe_variable_the_repo_names_is_a_setting_or_listed() -> None:
    """Keeps ``OTHER_ENV_VARS`` closed: each ``KZPROBE_*`` name in the code, docs and tests is a
    ``KZPROBE_<SECTION>_<KEY>`` setting or in the list (else a user exporting it cannot run)."""
    import re

    from probe.config import OTHER_ENV_VARS

    root = Path(__file__).resolve().parents[1]
    kinds = ("", ".py", ".md", ".toml", ".sh", ".service")
    files = [p for d in ("probe", "analysis", "tests", "docs", "bench", "systemd", ".ci")
             for p in (root / d).rglob("*") if p.is_file() and p.suffix in kinds]
    files += [root / "README.md", root / "Makefile"]
    names = set()
    for p in files:
        names |= set(re.findall(r"\bKZPROBE_[A-Z0-9_]*[A-Z0-9]\b", p.read_text(encoding="utf-8", errors="replace")))
    names -= {"KZPROBE_NOPE", "KZPROBE_RUN_CONCURENCY", "KZPROBE_REQUIRE_LABS"}  # the typos tests refuse
    assert {"KZPROBE_SHARED", "KZPROBE_EVENT_LOOP", "KZPROBE_RUN_CONCURRENCY"} <= names
    unknown = []
    for n in sorted(names - set(OTHER_ENV_VARS)):
        try:
            load_settings(config_path=Path(__file__).parent / "data" / "empty.toml", env={n: "1"})
        except ConfigError as exc:
            if "unknown environment setting" in str(exc):
                unknown.append(n)
    assert not unknown, f"KZPROBE_ names neither a setting nor in OTHER_ENV_VARS: {unknown}"
