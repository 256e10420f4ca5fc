"""The ``kzprobe`` command end to end, as a subprocess, against loopback servers only.

Every config here maps all endpoints to loopback (``"*"`` fallback to a closed port)
and disables the default canaries, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from probe.runlines import LineStats
from tests.conftest import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


async def kzprobe(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0,
                  interrupt_after_lines: tuple[Path, int] | None = None) -> tuple[int, str, str]:
    """Run ``python -m probe`` asynchronously (the loopback servers live in this loop)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    e.update({"KZPROBE_CONFIG": str(ROOT / "tests" / "data" / "empty.toml"), "NO_COLOR": "1", **(env or {})})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "probe", *args, cwd=ROOT, env=e,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if interrupt_after_lines is not None:
        out_dir, n = interrupt_after_lines
        for _ in range(int(timeout * 20)):
            files = list(out_dir.glob("*.jsonl"))
            if files and files[0].read_bytes().count(b"\n") >= n:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_run_writes_ooni_records_and_summary(loopback_config) -> None:
    cfg, out = loopback_config["write"](), loopback_config["tmp"] / "out"
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--targets", str(loopback_config["targets"]),
                                       "--out", str(out))
    assert rc == 0, stderr
    assert "list.csv:7" in stderr and "skipped" in stderr  # the malformed row, named by file and line
    files = list(out.glob("*.jsonl"))
    assert len(files) == 1
    recs = list(read_jsonl(files[0]))
    assert sorted(r["input"] for r in recs) == [f"https://site{i}.example.org/" for i in range(5)]
    for r in recs:
        assert r["probe_asn"] == "AS64500" and r["probe_cc"] == "KZ" and r["probe_ip"] == "127.0.0.1"
        assert r["test_name"] == "web_connectivity" and r["test_keys"]["blocking"] is False
        assert r["test_keys"]["accessible"] is True
        assert r["test_keys"]["tls_handshakes"][0]["peer_certificates"]
        assert {"measurement_start_time", "test_start_time", "report_id", "test_runtime"} <= r.keys()
    summary = json.loads(files[0].with_suffix(".summary.json").read_text())
    assert summary["measured"] == 5 and summary["vantage_offline"] is False
    assert "accessible: 5" in stdout


async def test_offline_vantage_exits_75_and_never_says_blocked(loopback_config) -> None:
    cfg = loopback_config["write"](doh_url=f"https://{loopback_config['closed']}/dns-query")
    out = loopback_config["tmp"] / "out"
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--targets", str(loopback_config["targets"]),
                                       "--out", str(out))
    assert rc == 75, stderr
    assert "VANTAGE OFFLINE" in stdout and "nothing can be judged" in stdout
    assert "BLOCKED" not in stdout
    recs = list(read_jsonl(next(out.glob("*.jsonl"))))
    assert len(recs) == 5 and all(r["test_keys"]["blocking"] is None for r in recs)


async def test_json_flag_prints_records_on_stdout(loopback_config) -> None:
    cfg = loopback_config["write"]()
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://site1.example.org/",
                                       "--out", str(loopback_config["tmp"] / "o"), "--json")
    assert rc == 0, stderr
    lines = [json.loads(x) for x in stdout.splitlines() if x.strip()]
    assert [r["input"] for r in lines] == ["https://site1.example.org/"]


async def test_interrupt_keeps_what_was_measured(loopback_config) -> None:
    cfg = loopback_config["write"]()
    out = loopback_config["tmp"] / "out"
    many = loopback_config["tmp"] / "many.txt"
    # slow inputs: names the ISP resolver does not answer (each waits dns_s)
    many.write_text("".join(f"https://site{i % 5}.example.org/p{i}\n" for i in range(3))
                    + "".join(f"https://slow{i}.example.org/\n" for i in range(200)), encoding="utf-8")
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--targets", str(many), "--out", str(out),
                                       "--concurrency", "2", interrupt_after_lines=(out, 2))
    assert rc == 130, stderr
    assert "interrupted" in stderr
    stats = LineStats()
    recs = list(read_jsonl(next(out.glob("*.jsonl")), stats))
    assert len(recs) >= 2 and len(recs) < 203 and not stats.count
    assert json.loads(next(out.glob("*.summary.json")).read_text())["interrupted"] is True


CONFIG_ERRORS = [
    ('[run]\nconcurrency = "lots"\n', "run.concurrency"),
    ('[probe]\nasn = "Kazakhtelecom"\n', "probe.asn"),
    ('[dns]\ndoh_urls = ["ftp://x"]\n', "dns.doh_urls"),
]


@pytest.mark.parametrize("text,key", CONFIG_ERRORS, ids=[k for _, k in CONFIG_ERRORS])
async def test_bad_config_exits_78_naming_the_key(tmp_path, text, key) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    rc, _, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://x.example/")
    assert rc == 78 and key in stderr


async def test_missing_target_list_exits_66(tmp_path) -> None:
    rc, _, stderr = await kzprobe("run", "--targets", str(tmp_path / "nope.csv"), "--out", str(tmp_path))
    assert rc == 66 and "nope.csv" in stderr


async def test_strict_malformed_row_exits_65_with_file_and_line(tmp_path) -> None:
    f = tmp_path / "l.txt"
    f.write_text("https://ok.example/\nhttp//broken\n")
    rc, _, stderr = await kzprobe("run", "--targets", str(f), "--strict", "--out", str(tmp_path))
    assert rc == 65 and "l.txt:2" in stderr


async def test_unwritable_output_exits_73(tmp_path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, stderr = await kzprobe("run", "--input", "https://ok.example/", "--out", str(f / "sub"))
    assert rc == 73 and str(f) in stderr


async def test_run_help_explains_every_option() -> None:
    rc, stdout, _ = await kzprobe("run", "--help")
    assert rc == 0
    for opt in ("--targets", "--input", "--out", "--concurrency", "--strict", "--json", "--config", "--resolver",
                "--doh", "--extra-anchors", "--measurement-timeout", "--run-deadline"):
        assert opt in stdout


async def test_run_deadline_stops_the_run_and_says_so(loopback_config) -> None:
    cfg = loopback_config["write"]()
    out = loopback_config["tmp"] / "out"
    slow = loopback_config["tmp"] / "slow.txt"
    slow.write_text("".join(f"https://slow{i}.example.org/\n" for i in range(40)), encoding="utf-8")
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--targets", str(slow), "--out", str(out),
                                       "--concurrency", "2", "--run-deadline", "1.5")
    assert rc == 0, stderr
    summary = json.loads(next(out.glob("*.summary.json")).read_text())
    assert summary["deadline_hit"] is True and 0 < summary["not_measured"] <= 40
    assert summary["measured"] + summary["not_measured"] == 40
    assert "not measured (run deadline)" in stdout


async def test_a_deadline_shorter_than_its_phases_is_refused_naming_them(loopback_config) -> None:
    """``--measurement-timeout 0.3`` under phases of 1 + 0.1 + 1 + 1 + 3 × 3 s: the deadline could
    never let a fetch finish (issue 12: the lab's 8 s ended its throttling test null). A usage
    error naming the flag, the keys and the numbers; nothing measured."""
    cfg = loopback_config["write"]()
    out = loopback_config["tmp"] / "out"
    rc, _stdout, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://slow.example.org/",
                                        "--out", str(out), "--measurement-timeout", "0.3")
    assert rc == 64, stderr
    assert "--measurement-timeout: 0.3 s cannot cover" in stderr
    assert "dns_s 1 + dns_listen_s 0.1 + connect_s 1 + tls_s 1 + 3 × http_s 9 = 12.1 s" in stderr
    assert not list(out.glob("*.jsonl"))


_SHORT_PHASES = "dns_s = 1.0\ndns_listen_s = 0.1\nconnect_s = 1.0\ntls_s = 1.0\nhttp_s = 1.0\ncontrol_s = 8.0\n"


@pytest.mark.parametrize(("flag", "key", "needle"), [
    # the lab's config sets control_s: 0.3 left it no room and the run exited 78 naming the key
    # (fresh-user break test), although README calls a bad flag value a usage error naming the flag
    ("0.3", "timeouts.control_s", "must be smaller than timeouts.measurement_s (0.3 s), got 8"),
    # phases 6.1 s fit in 8.5 s; the control after DNS (1 + 8 s) does not
    ("8.5", "timeouts.control_s", "dns_s 1 + control 8 (control_s"),
])
async def test_a_flag_conflicting_with_the_config_is_a_usage_error_naming_it(tmp_path, flag, key, needle) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[timeouts]\n" + _SHORT_PHASES)
    rc, _, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://x.example/",
                                  "--out", str(tmp_path / "out"), "--measurement-timeout", flag)
    assert rc == 64, stderr
    assert f"kzprobe: --measurement-timeout {flag}: conflicts with {key} of the config: " in stderr
    assert needle in stderr and not (tmp_path / "out").exists()
    # the same value from the config file is a config error (78) naming the key
    cfg.write_text(f"[timeouts]\nmeasurement_s = {flag}\n" + _SHORT_PHASES)
    rc, _, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://x.example/",
                                  "--out", str(tmp_path / "out"))
    assert rc == 78 and f"config: {key}: " in stderr and "--measurement-timeout" not in stderr, stderr


async def test_pcap_with_packets_disabled_prints_one_notice(loopback_config) -> None:
    """Fresh-user break test: ``--pcap`` under ``[packets] enabled = false`` produced no pcap and
    no message."""
    cfg = loopback_config["write"](extra="[packets]\nenabled = false\n")
    out = loopback_config["tmp"] / "out"
    rc, _stdout, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://site.example.org/",
                                        "--out", str(out), "--pcap")
    assert rc == 0, stderr
    assert stderr.count("--pcap: no pcap is kept: the packet tests are off ([packets] enabled = false)") == 1
    assert len(list(out.glob("*.jsonl"))) == 1 and not list(out.glob("*.pcap"))


async def test_measurement_deadline_gives_an_inconclusive_record(loopback_config, web_server) -> None:
    """A deadline that covers every phase can still be met by a chain of slow redirect hops (each
    hop has its own http_s): the record is inconclusive and says so."""
    async def hop(request):  # /0 -> /1 -> ... each after 0.25 s
        from aiohttp import web

        await asyncio.sleep(0.25)
        n = int(request.path.strip("/") or 0)
        raise web.HTTPFound(f"http://192.0.2.200/{n + 1}")

    srv = await web_server({f"/{i}": hop for i in range(12)} | {"/": hop})
    cfg = loopback_config["write"](extra=f'"192.0.2.200:80" = "{srv.http}"')
    out = loopback_config["tmp"] / "out"
    # phases 0.2 + 0.05 + 0.2 + 0.2 + 3 × 0.5 = 2.15 s: a 2.2 s deadline covers them; ten 0.25 s hops do not fit
    env = {f"KZPROBE_TIMEOUTS_{k}": v for k, v in (("DNS_S", "0.2"), ("DNS_LISTEN_S", "0.05"), ("CONNECT_S", "0.2"),
                                                     ("TLS_S", "0.2"), ("HTTP_S", "0.5"), ("CONTROL_S", "1.0"))}
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--input", "http://192.0.2.200/0",
                                       "--out", str(out), "--measurement-timeout", "2.2", env=env)
    assert rc == 0, stderr
    (rec,) = list(read_jsonl(next(out.glob("*.jsonl"))))
    assert rec["test_keys"]["blocking"] is None and rec["test_keys"]["x_rule"] == "deadline"
    assert "2.2 s" in rec["test_keys"]["x_reason"] and "http" in rec["test_keys"]["x_reason"]


async def test_broken_stdout_pipe_does_not_stop_the_run(loopback_config) -> None:
    """`kzprobe run --json | head -c 10`: the reader goes away, the run goes on into the JSONL file."""
    cfg = loopback_config["write"]()
    out = loopback_config["tmp"] / "out"
    e = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    e["KZPROBE_CONFIG"] = str(ROOT / "tests" / "data" / "empty.toml")
    r_fd, w_fd = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "run", "--config", str(cfg), "--targets", str(loopback_config["targets"]),
        "--out", str(out), "--json", "--concurrency", "1", cwd=ROOT, env=e, stdout=w_fd,
        stderr=asyncio.subprocess.PIPE)
    os.close(w_fd)
    os.read(r_fd, 10)
    os.close(r_fd)  # like `head -c 10` exiting
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert len(list(read_jsonl(next(out.glob("*.jsonl"))))) == 5


@pytest.mark.parametrize("args,needle", [
    (["--concurrency", "-1"], "--concurrency"),
    (["--measurement-timeout", "-1"], "--measurement-timeout"),
    (["--run-deadline", "nan"], "--run-deadline"),
    (["--limit", "0"], "--limit"),
    # values checked by the config layer: still a usage error naming the flag (break test, 11)
    (["--asn", "banana"], "--asn: expected the form AS1234"),
    (["--cc", "zzz"], "--cc: expected an ISO 3166"),
    (["--resolver", "not-an-ip"], "--resolver: 'not-an-ip'"),
    (["--doh", "http://x.example/dns-query"], "--doh: a DoH URL must be https://"),
    (["--extra-anchors", "/etc/hostname"], "--extra-anchors: /etc/hostname: holds no PEM certificate"),
])
async def test_bad_flag_values_name_the_flag(tmp_path, args, needle) -> None:
    rc, _, stderr = await kzprobe("run", "--input", "https://x.example/", "--out", str(tmp_path), *args)
    assert rc == 64 and needle in stderr


async def test_only_bad_inputs_is_a_usage_error(tmp_path) -> None:
    rc, _, stderr = await kzprobe("run", "--input", "not a url", "--out", str(tmp_path))
    assert rc == 64 and "bad URL 'not a url'" in stderr and "no inputs to measure" in stderr


@pytest.mark.parametrize("word", [
    "notaurl",  # break test: `--input notaurl` was measured as https://notaurl/
    "foo:8080",  # fresh-user break test: a ':' made any word a host (foo:8080, ǘr?:Q → xn--r-xta)
    "ǘr?:Q",
])
async def test_a_bare_word_input_is_a_usage_error_naming_it(tmp_path, word) -> None:
    rc, _, stderr = await kzprobe("run", "--input", word, "--out", str(tmp_path))
    assert rc == 64 and f"bad URL {word!r}: neither a URL nor a host name" in stderr
    assert "https://" not in stderr.split("neither", 1)[0] and not list(tmp_path.glob("*.jsonl"))


async def test_an_extra_anchor_file_without_a_certificate_is_a_config_error(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tls]\nextra_anchors = ["/etc/hostname"]\n')
    rc, _, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://x.example/", "--out", str(tmp_path))
    assert rc == 78 and "tls.extra_anchors: /etc/hostname: holds no PEM certificate" in stderr


async def test_a_string_where_the_config_wants_a_list_exits_78_naming_the_key(tmp_path) -> None:
    # break test: udp_resolvers = "1.2.3.4" was accepted
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dns]\nudp_resolvers = "1.2.3.4"\n')
    rc, _, stderr = await kzprobe("run", "--config", str(cfg), "--input", "https://x.example/", "--out", str(tmp_path))
    assert rc == 78 and "dns.udp_resolvers" in stderr and "got the string '1.2.3.4'" in stderr


async def test_a_directory_as_target_list_exits_66(tmp_path) -> None:
    rc, _, stderr = await kzprobe("run", "--targets", str(tmp_path), "--out", str(tmp_path))
    assert rc == 66 and str(tmp_path) in stderr and "Traceback" not in stderr


async def test_missing_config_named_by_environment_exits_78(tmp_path) -> None:
    rc, _, stderr = await kzprobe("run", "--input", "https://x.example/", "--out", str(tmp_path),
                                  env={"KZPROBE_CONFIG": str(tmp_path / "typo.toml")})
    assert rc == 78 and "typo.toml" in stderr


async def test_the_probes_own_variables_do_not_stop_a_run(tmp_path) -> None:
    """``KZPROBE_EVENT_LOOP=asyncio`` (docs/speed.md) and ``KZPROBE_SHARED`` (README) gave 78,
    "unknown environment setting" (break test 24, #3): the run gets past its config (66: the
    target list is a directory); a misspelt setting is still 78 naming it."""
    own = {"KZPROBE_EVENT_LOOP": "asyncio", "KZPROBE_SHARED": str(tmp_path), "KZPROBE_REQUIRE_LAB": "1"}
    rc, _, stderr = await kzprobe("run", "--targets", str(tmp_path), "--out", str(tmp_path), env=own)
    assert rc == 66 and "unknown environment setting" not in stderr, stderr
    rc, _, stderr = await kzprobe("run", "--targets", str(tmp_path), "--out", str(tmp_path),
                                  env={**own, "KZPROBE_RUN_CONCURENCY": "2"})
    assert rc == 78 and "KZPROBE_RUN_CONCURENCY: unknown environment setting" in stderr, stderr
