"""`kzprobe run` with a real helper on loopback: verdicts use the control (issue 3, "done when")."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from probe.addresses import ConnectTo
from probe.helper import AddressPolicy
from probe.helper.server import HelperConfig, start
from probe.measure.tls import TrustStore
from tests.conftest import read_jsonl
from tests.fixtures.world import WORLD_BOGONS, WORLD_TIMEOUTS, sites_world
from tests.test_cli import ROOT, kzprobe

TOKEN = "test-probe-token-0123456789abcdef"


@pytest.fixture
async def helper_url(loopback_config, ca, doh_server_factory, web_server, closed_port):
    """A helper on loopback that sees site0..9 working (the probe's own view may differ)."""
    srv = await web_server({"/": b"<title>Example</title>"}, https=True,
                           names=[f"site{i}.example.org" for i in range(10)])
    table, mapping = sites_world(srv, 10)
    doh = doh_server_factory(table)
    config = HelperConfig(tokens=frozenset({TOKEN}), policy=AddressPolicy(allow_private=("192.0.2.0/24",)),
                          trust=TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=False,
                                           policy="relaxed"),
                          bogons=WORLD_BOGONS, doh_urls=(doh.url,), timeouts=WORLD_TIMEOUTS,
                          connect_to=ConnectTo(mapping=mapping, fallback=closed_port.endpoint), listen_port=0)
    helper = await start(config)
    yield helper.url
    await helper.close()


def _config_with_helper(loopback_config, url: str, token: str, extra_map: str = "") -> Path:
    tok = loopback_config["tmp"] / "helper.token"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    return loopback_config["write"](extra=f'{extra_map}\n[helper]\nurl = "{url}"\ntoken_file = "{tok}"\n')


async def test_run_with_helper_judges_with_the_control(loopback_config, helper_url, backlog_full_listener) -> None:
    # site4's address is blackholed on the probe's side only: the helper proves it works
    cfg = _config_with_helper(loopback_config, helper_url, TOKEN)
    text = re.sub(r'^"192\.0\.2\.14:443" = .*$', f'"192.0.2.14:443" = "{backlog_full_listener.endpoint}"',
                  cfg.read_text(), flags=re.M)
    cfg.write_text(text)
    isp_extra = loopback_config["tmp"] / "in.txt"
    isp_extra.write_text("https://site0.example.org/\nhttp://site1.example.org/\nhttps://site4.example.org/\n")
    out = loopback_config["tmp"] / "out"
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--targets", str(isp_extra), "--out", str(out))
    assert rc == 0, stderr
    recs = {r["input"]: r["test_keys"] for r in read_jsonl(next(out.glob("*.jsonl")))}
    assert recs["https://site0.example.org/"]["control"]["x_source"] == "helper"
    assert recs["https://site0.example.org/"]["blocking"] is False
    http1 = recs["http://site1.example.org/"]
    assert (http1["blocking"], http1["accessible"], http1["x_rule"]) == (False, True, "http.match"), http1["x_reason"]
    assert http1["control"]["http_request"]["status_code"] == 200
    site4 = recs["https://site4.example.org/"]
    assert (site4["blocking"], site4["x_rule"]) == ("tcp_ip", "tcp_ip.control_ok"), site4["x_reason"]


async def test_wrong_token_makes_helper_verdicts_inconclusive(loopback_config, helper_url) -> None:
    cfg = _config_with_helper(loopback_config, helper_url, "wrong-token-0123456789abcdef")
    out = loopback_config["tmp"] / "out"
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--input", "http://site1.example.org/",
                                       "--out", str(out))
    assert rc == 0, stderr
    (rec,) = list(read_jsonl(next(out.glob("*.jsonl"))))
    tk = rec["test_keys"]
    assert tk["blocking"] is None and "unauthorized" in (tk["control_failure"] or "")
    assert "wrong-token" not in stdout + stderr + next(out.glob("*.jsonl")).read_text()


async def test_unreachable_helper_is_said_and_never_blocked(loopback_config) -> None:
    cfg = _config_with_helper(loopback_config, f"http://{loopback_config['closed']}", TOKEN)
    out = loopback_config["tmp"] / "out"
    rc, stdout, stderr = await kzprobe("run", "--config", str(cfg), "--input", "http://site1.example.org/",
                                       "--out", str(out))
    assert rc == 0, stderr
    assert "HELPER UNREACHABLE" in stdout and "BLOCKED" not in stdout


async def test_helper_serve_command_starts_and_stops(tmp_path) -> None:
    tok = tmp_path / "tokens"
    tok.write_text(TOKEN + "  # probe-1\n")
    tok.chmod(0o600)
    e = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "helper", "serve", "--listen", "127.0.0.1:0", "--token-file", str(tok),
        cwd=ROOT, env=e, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"listening on http://127.0.0.1:" in line
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


async def test_helper_serve_refuses_plain_http_off_loopback_and_loose_token_files(tmp_path) -> None:
    tok = tmp_path / "tokens"
    tok.write_text(TOKEN + "\n")
    tok.chmod(0o600)
    rc, _, stderr = await kzprobe("helper", "serve", "--listen", "0.0.0.0:8443", "--token-file", str(tok))
    assert rc == 78 and "tls" in stderr.lower()
    tok.chmod(0o644)
    rc, _, stderr = await kzprobe("helper", "serve", "--listen", "127.0.0.1:0", "--token-file", str(tok))
    assert rc == 78 and str(tok) in stderr


async def test_token_in_a_malformed_header_never_reaches_the_helper_log(tmp_path) -> None:
    """An over-long Authorization header makes aiohttp's parser fail; its error log must not carry it."""
    tok = tmp_path / "tokens"
    tok.write_text(TOKEN + "\n")
    tok.chmod(0o600)
    e = {k: v for k, v in os.environ.items() if not k.startswith("KZPROBE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "-v", "helper", "serve", "--listen", "127.0.0.1:0", "--token-file", str(tok),
        cwd=ROOT, env=e, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
    secret = TOKEN + "A" * 9000
    for header in (f"Authorization: Bearer {secret}", f"Authorization: Bearer {TOKEN}\x01x"):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"POST /api/v1/control HTTP/1.1\r\nHost: x\r\n{header}\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        await w.drain()
        await asyncio.wait_for(r.read(), 10)
        w.close()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert TOKEN not in err.decode(errors="replace")


def test_probe_token_file_comment_is_not_sent(tmp_path) -> None:
    from probe.runner import read_token

    f = tmp_path / "t"
    f.write_text("# my token\n" + TOKEN + "   # probe-1\n")
    assert read_token(str(f)) == TOKEN


@pytest.mark.parametrize("url,ok", [("https://vps.example.org:8443", True), ("http://127.0.0.1:8443", True),
                                    ("http://localhost:8443", True), ("http://[::1]:8443", True),
                                    ("http://127.evil.example", False), ("http://localhost.evil.example", False),
                                    ("http://10.0.0.5:8080", False), ("ftp://x", False)])
def test_helper_url_plain_http_only_on_loopback(tmp_path, url, ok) -> None:
    from probe.config import ConfigError, load_settings

    tok = tmp_path / "t"
    tok.write_text(TOKEN)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[helper]\nurl = "{url}"\ntoken_file = "{tok}"\n')
    if ok:
        assert load_settings(config_path=cfg, env={}).helper_url == url
    else:
        with pytest.raises(ConfigError, match="helper.url"):
            load_settings(config_path=cfg, env={})
