"""Which measurements get packet tests, the once-per-target localisation, the vantage's own
network never probed, the record key through the schema, and the run without CAP_NET_RAW."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import struct
import subprocess
from typing import Any

import pytest

import probe.runner as runner_mod
from probe.config import load_settings
from probe.packets import evidence as ev
from probe.packets.privileges import Privileges, check
from probe.targets import targets_from_urls
from tests.conftest import read_jsonl

CAN = Privileges(capture=True, pcap=True)


def _rec(blocking: Any, *, ip: str = "198.18.1.1", ok: bool = True, url: str = "https://meduza.io/",
         rule: str = "", dns: str = "", failure: str | None = None) -> dict[str, Any]:
    status = {"success": ok, **({"failure": failure} if failure else {})}
    return {"input": url, "x_measurement_uid": "uid1",
            "test_keys": {"x_blocking": blocking, "tcp_connect": [{"ip": ip, "port": 443, "status": status}],
                          **({"x_rule": rule} if rule else {}), **({"x_dns_consistency": dns} if dns else {})}}


@pytest.mark.parametrize(("rec", "priv", "non_resolver", "want"), [
    (_rec(False), CAN, "198.18.0.80", False),                  # accessible: never
    (_rec(None), CAN, "198.18.0.80", False),                   # inconclusive: never
    (_rec("http-diff"), CAN, "198.18.0.80", False),            # a blockpage: nothing to locate by packets
    (_rec("dns"), CAN, "198.18.0.80", True),
    # inconclusive, its DNS in question: packet proof of an injector would make it dns (issue 16 part 1)
    (_rec(None, rule="control.dns_failed"), CAN, "198.18.0.80", True),
    (_rec(None, rule="dns.inconsistent_no_control"), CAN, "198.18.0.80", True),
    (_rec(None, rule="tcp_ip.no_control", dns="inconsistent"), CAN, "198.18.0.80", True),
    (_rec(None, rule="tcp_ip.no_control", dns="consistent"), CAN, "198.18.0.80", False),
    (_rec(None, rule="control.dns_failed"), CAN, "", False),
    (_rec("dns"), CAN, "", False),                             # no address without a resolver
    (_rec("tls"), CAN, "", True),
    (_rec("tcp_ip", ok=False), CAN, "", False),                # no handshake to compare with
    (_rec("tcp_ip", ok=False, failure="generic_timeout_error"), CAN, "", False),  # a dropped SYN: nothing
    (_rec("tcp_ip", ok=False, failure="connection_refused"), CAN, "", True),  # a RST to the SYN: its TTL
    (_rec("tcp_ip", ok=False, failure="connection_refused", ip="2001:db8::1"), CAN, "", False),
    (_rec("tls", ip="2001:db8::1"), CAN, "", False),           # IPv4 only
    (_rec("http-failure"), CAN, "", True),
    (_rec("tls"), Privileges(capture=False, pcap=True, reason="no"), "", False),
])
def test_wants(rec: dict[str, Any], priv: Privileges, non_resolver: str, want: bool) -> None:
    e = ev.PacketEvidence(settings=ev.PacketSettings(non_resolver=non_resolver), privileges=priv)
    assert e.wants(rec) is want


async def test_the_vantage_machine_is_never_probed() -> None:
    e = ev.PacketEvidence(settings=ev.PacketSettings(), privileges=CAN)
    x = await e.for_record(_rec("tls", ip="127.0.0.1"))
    assert x is not None and x["failure"].startswith("refused") and "reset_forensics" not in x


class _AllowAll:
    def allow(self, ip: str) -> bool:
        return True


async def test_forensics_then_one_localisation_per_target(need_capture: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(4096)
        s = w.get_extra_info("socket")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    srv = await asyncio.start_server(h, "127.0.0.40", 0)
    port = srv.sockets[0].getsockname()[1]
    e = ev.PacketEvidence(settings=ev.PacketSettings(localise=True, max_ttl=2, pps=50, pcap_dir=tmp_path),
                          privileges=CAN, policy=_AllowAll())  # type: ignore[arg-type]
    rec = _rec("http-failure", ip="127.0.0.40", url=f"http://meduza.io:{port}/")
    try:
        first = await e.for_record(rec)
        second = await e.for_record(rec)
    finally:
        srv.close()
    assert first is not None and second is not None
    assert first["reset_forensics"]["outcome"] == "rst" and first["reset_forensics"]["injected"] is False
    assert "localisation" in first and "localisation" not in second  # at most once per target per run
    assert first["pcap"] == "uid1.pcap" and (tmp_path / "uid1.pcap").stat().st_size > 24
    assert first["packets_sent"] >= 0 and first["packets_captured"] > 0


def test_findings_text() -> None:
    from probe.packets.forensics import ResetForensics, SegmentInfo

    seg = SegmentInfo(ttl=60, ip_id=0, window=1, flags="SA", hops_est=5, t=0.0)
    rst = ResetForensics(ip="x", port=443, trigger="tls", outcome="rst", synack=seg,
                         ender=dataclasses.replace(seg, ttl=63, hops_est=2, flags="RA"), injected=True,
                         ip_id_differs=False, packets_sent=3, t0=0.0, t=0.1)
    (f,) = ev.findings(None, rst, None)
    assert f.startswith("tcp.rst_injected: TTL 63 vs the SYN-ACK's 60")


def test_checked_refuses_a_key_the_schema_does_not_know() -> None:
    import msgspec

    assert ev.checked({"findings": ["a"], "t": 1.0}) == {"findings": ["a"], "t": 1.0, "packets_sent": 0,
                                                        "packets_captured": 0, "packets_dropped": 0}
    with pytest.raises(msgspec.ValidationError):
        ev.checked({"findings": "not a list"})


def test_privileges_of_an_unprivileged_user(unprivileged_python) -> None:  # type: ignore[no-untyped-def]
    py = unprivileged_python(65534)
    p = subprocess.run([*py, "-c", "from probe.packets.privileges import check; c = check(); "
                        "print(c.capture); print(c.notice())"], user=65534, group=65534, extra_groups=[],
                       cwd="/", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    cap, notice = p.stdout.splitlines()
    assert cap == "False" and "CAP_NET_RAW" in notice and "every other test runs unchanged" in notice
    if check().capture:  # and root here has it
        assert check().notice() is None


async def test_run_without_cap_net_raw_says_so_once(loopback_config, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runner_mod.packet_privileges, "check",
                        lambda: Privileges(capture=False, pcap=False, reason="no CAP_NET_RAW (test)"))
    s = load_settings(config_path=loopback_config["write"](), env={})
    urls = [f"https://site{i}.example.org/" for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="kzprobe.runner"):
        summary = await runner_mod.run(targets_from_urls(urls), s, out_dir=loopback_config["tmp"] / "o")
    notices = [r for r in caplog.records if "packet-level evidence is off" in r.getMessage()]
    assert len(notices) == 1 and "no CAP_NET_RAW (test)" in notices[0].getMessage()
    recs = list(read_jsonl(summary.path))
    assert len(recs) == 3 and summary.measured == 3
    assert all("x_packets" not in r["test_keys"] for r in recs)
    written = json.loads(summary.summary_path.read_text())
    assert written["packets"] == {"enabled": False, "off_reason": "no CAP_NET_RAW (test)"}


def test_packets_off_when_endpoints_are_remapped(loopback_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runner_mod.packet_privileges, "check", lambda: CAN)
    s = load_settings(config_path=loopback_config["write"](), env={})
    assert s.connect_to  # the loopback world dials 127.0.0.1 for documentation addresses
    assert runner_mod.packet_evidence(s, None, loopback_config["tmp"], "r") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("extra", "why"), [
    ("[packets]\nenabled = false\n", "[packets] enabled = false"),
    ("", "[connect_to] remaps the endpoints"),  # the loopback world remaps every endpoint
])
@pytest.mark.parametrize("pcap", [True, False])
def test_pcap_asked_for_with_packets_off_says_so_once(loopback_config, monkeypatch, caplog, extra, why,  # type: ignore[no-untyped-def]
                                                      pcap) -> None:
    """Fresh-user break test: ``--pcap`` under ``[packets] enabled = false`` kept no pcap and
    said nothing. One notice naming why; none when no pcap was asked for."""
    monkeypatch.setattr(runner_mod.packet_privileges, "check", lambda: CAN)
    s = load_settings(config_path=loopback_config["write"](extra=extra), env={},
                      overrides={"packets_pcap": pcap or None})
    status: dict[str, object] = {}
    with caplog.at_level(logging.WARNING, logger="kzprobe.runner"):
        assert runner_mod.packet_evidence(s, None, loopback_config["tmp"], "r", status=status) is None  # type: ignore[arg-type]
    notices = [r.getMessage() for r in caplog.records if "pcap" in r.getMessage()]
    assert notices == ([f"--pcap: no pcap is kept: the packet tests are off ({why})"] if pcap else [])
    assert status == {"enabled": False, "off_reason": why}


class _Ctx:
    udp_resolvers = ("10.76.0.53", "192.168.1.1:5353")
    benign_sni = "example.com"
    asn_of = None
    address_policy = _AllowAll()


@pytest.mark.parametrize(("localise", "env", "want"), [
    ("manual", {}, True),                          # from a terminal
    ("manual", {"INVOCATION_ID": "abc"}, False),   # on the systemd timer
    ("always", {"INVOCATION_ID": "abc"}, True),
    ("never", {}, False),
])
def test_localise_setting(monkeypatch, tmp_path, localise: str, env: dict[str, str], want: bool) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runner_mod.packet_privileges, "check", lambda: CAN)
    tok = tmp_path / "tok"
    tok.write_text("t\n")
    s = load_settings(env={"KZPROBE_PACKETS_LOCALISE": localise, "KZPROBE_HELPER_URL": "https://198.18.0.80:8443",
                           "KZPROBE_HELPER_TOKEN_FILE": str(tok),
                           "KZPROBE_PACKETS_PCAP": "true"},
                      config_path=_empty(tmp_path))
    e = runner_mod.packet_evidence(s, _Ctx(), tmp_path, "rid", env=env)  # type: ignore[arg-type]
    assert e is not None and e.settings.localise is want
    assert (e.settings.non_resolver, e.settings.resolver) == ("198.18.0.80", "10.76.0.53")
    assert e.settings.pcap_dir == tmp_path / "rid.pcap"


def _empty(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "c.toml"
    p.write_text("[packets]\nmax_ttl = 8\n")
    return p


@pytest.mark.parametrize(("text", "key"), [
    ('[packets]\nlocalise = "sometimes"\n', "packets.localise"),
    ("[packets]\nmax_ttl = 0\n", "packets.max_ttl"),
    ("[packets]\npps = 500\n", "packets.pps"),
    ("[packets]\npps = 0\n", "packets.pps"),        # 1/pps paces the TTL-limited copies
    ("[packets]\npps = -4\n", "packets.pps"),       # a negative rate would mean no pause at all
    ("[packets]\nbudget_s = 0\n", "packets.budget_s"),
    ('[packets]\ndns_probe_address = "helper.example"\n', "packets.dns_probe_address"),
    ("[packets]\nbogus = 1\n", "packets.bogus"),
])
def test_bad_packet_settings(tmp_path, text: str, key: str) -> None:  # type: ignore[no-untyped-def]
    from probe.config import ConfigError

    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(config_path=p, env={})
    assert exc.value.key == key


async def test_records_held_for_packet_tests_are_written_when_the_run_deadline_cuts_them(
        loopback_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class Hanging:
        jobs = packets_sent = 0
        localised: set[str] = set()
        settings = ev.PacketSettings(non_resolver="198.18.0.80")

        def wants(self, rec: dict[str, Any]) -> bool:
            return True

        async def for_record(self, rec: dict[str, Any]) -> None:
            await asyncio.sleep(3600)

    monkeypatch.setattr(runner_mod, "packet_evidence", lambda *a, **k: Hanging())
    s = load_settings(config_path=loopback_config["write"](), env={})
    s = dataclasses.replace(s, timeouts=dataclasses.replace(s.timeouts, run_s=4.0))
    urls = [f"https://site{i}.example.org/" for i in range(2)]
    summary = await runner_mod.run(targets_from_urls(urls), s, out_dir=loopback_config["tmp"] / "o")
    recs = list(read_jsonl(summary.path))
    assert summary.deadline_hit and summary.measured == 2
    assert sorted(r["input"] for r in recs) == urls and all("x_packets" not in r["test_keys"] for r in recs)


async def test_located_censor_gets_its_network_from_the_asn_database(need_capture: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from probe.packets.centrace import HopProbe, Localisation
    from probe.packets.forensics import ResetForensics

    async def forensics(ip: str, port: int, payload: bytes, **kw: Any) -> ResetForensics:
        return ResetForensics(ip=ip, port=port, trigger=kw["trigger"], outcome="silence", synack=None, ender=None,
                              injected=None, ip_id_differs=None, packets_sent=2, t0=0.0, t=0.1)

    async def loc(ip: str, trig: Any, **kw: Any) -> Localisation:
        hops = (HopProbe(ttl=1, target="expired", benign="expired", router="10.77.0.1"),
                HopProbe(ttl=2, target="expired", benign="expired", router="10.80.0.2"),
                HopProbe(ttl=3, target="silence", benign="expired", router="10.80.1.2"))
        return Localisation(ip=ip, port=trig.port, trigger=trig.kind, hops=hops, blocked_ttl=3, censor_hop=2,
                            censor_address="10.80.0.2", terminating=False, benign_blocked=False, endpoint_ttl=None,
                            packets_sent=6, t0=0.0, t=1.0)

    monkeypatch.setattr(ev, "reset_forensics", forensics)
    monkeypatch.setattr(ev, "localise", loc)
    e = ev.PacketEvidence(settings=ev.PacketSettings(localise=True), privileges=CAN, policy=_AllowAll(),  # type: ignore[arg-type]
                          asn_of=lambda a: "AS9198" if a == "10.80.0.2" else None)
    x = await e.for_record(_rec("tls", ip="198.18.1.1"))
    assert x is not None and x["localisation"]["censor_network"] == "AS9198"
    assert x["localisation"]["hops"][2] == {"ttl": 3, "target": "silence", "benign": "expired", "router": "10.80.1.2"}
    assert "censor.located: in path after hop 2 (10.80.0.2)" in x["findings"]


async def test_records_held_for_packet_tests_do_not_hold_back_the_other_measurements(
        loopback_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A judged record waiting for its packet tests gives its in-flight room to the next input
    (issue 16 part 4: no packet test delays the web test). With 2 rooms and 5 inputs whose packet
    tests all wait until the five are held, a held record that kept its room stalled the run to
    its deadline."""
    everyone = asyncio.Event()
    held: list[str] = []

    class WaitForAll:
        jobs = packets_sent = 0
        localised: set[str] = set()
        settings = ev.PacketSettings(non_resolver="198.18.0.80")

        def wants(self, rec: dict[str, Any]) -> bool:
            return True

        async def for_record(self, rec: dict[str, Any]) -> None:
            held.append(rec["input"])
            if len(held) == 5:
                everyone.set()
            await everyone.wait()

    monkeypatch.setattr(runner_mod, "packet_evidence", lambda *a, **k: WaitForAll())
    monkeypatch.setattr(runner_mod, "max_in_flight", lambda *a, **k: 2)
    s = load_settings(config_path=loopback_config["write"](), env={})
    s = dataclasses.replace(s, run_concurrency=1, timeouts=dataclasses.replace(s.timeouts, run_s=120.0))
    urls = [f"https://site{i}.example.org/" for i in range(5)]
    summary = await runner_mod.run(targets_from_urls(urls), s, out_dir=loopback_config["tmp"] / "o")
    assert not summary.deadline_hit and summary.measured == 5 and sorted(held) == urls


async def test_helper_named_by_a_host_name_gives_the_non_resolver() -> None:
    """The helper as deployed is a host name (https://vps.example.org:8443): its IPv4 address is the
    DNS injection test's non-resolver (before, only an IP literal was: the test never ran)."""
    from types import SimpleNamespace

    e = ev.PacketEvidence(settings=ev.PacketSettings(), privileges=CAN, policy=_AllowAll())  # type: ignore[arg-type]
    assert not e.wants(_rec("dns"))
    status: dict[str, Any] = {}
    # localhost: /etc/hosts answers, no query leaves the machine
    await runner_mod.find_non_resolver(e, SimpleNamespace(helper_url="https://localhost:8443"), status)  # type: ignore[arg-type]
    assert e.settings.non_resolver == "127.0.0.1" and status == {}
    assert e.wants(_rec("dns"))
    # configured (or an IP literal): kept as it is
    e = ev.PacketEvidence(settings=ev.PacketSettings(non_resolver="198.18.0.80"), privileges=CAN)
    await runner_mod.find_non_resolver(e, SimpleNamespace(helper_url="https://localhost:8443"), status)  # type: ignore[arg-type]
    assert e.settings.non_resolver == "198.18.0.80"


@pytest.mark.parametrize("helper", ["https://helper.example:8443", ""])
async def test_no_address_for_the_non_resolver_turns_the_dns_test_off_and_says_so(monkeypatch, helper: str) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    async def nothing(host: str, **kw: Any) -> str:
        return ""

    monkeypatch.setattr(ev, "ipv4_of", nothing)
    e = ev.PacketEvidence(settings=ev.PacketSettings(), privileges=CAN, policy=_AllowAll())  # type: ignore[arg-type]
    status: dict[str, Any] = {}
    await runner_mod.find_non_resolver(e, SimpleNamespace(helper_url=helper), status)  # type: ignore[arg-type]
    assert e.settings.non_resolver == "" and not e.wants(_rec("dns")) and e.wants(_rec("tls"))
    assert status["dns_injection_off"].endswith("the DNS injection test is off")
    assert ("helper.example" in status["dns_injection_off"]) is bool(helper)


async def test_ipv4_of_is_bounded_in_time(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()

    async def hang(*a: Any, **kw: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(loop, "getaddrinfo", hang)
    assert await ev.ipv4_of("helper.example", timeout_s=0.05) == ""


async def test_a_refused_connect_gets_forensics_and_no_localisation(need_capture: None) -> None:
    """``tcp_ip`` with a RST to the SYN (connection_refused): the RST's fields are recorded, compared
    with the other port's SYN-ACK when it answers (here nothing listens there: none); no
    localisation (no handshake for its TTL-limited copies), even with ``localise``."""
    s = socket.socket()
    s.bind(("127.0.0.41", 0))
    port = s.getsockname()[1]
    s.close()
    e = ev.PacketEvidence(settings=ev.PacketSettings(localise=True, max_ttl=2, pps=50), privileges=CAN,
                          policy=_AllowAll())  # type: ignore[arg-type]
    rec = _rec("tcp_ip", ip="127.0.0.41", ok=False, failure="connection_refused", url=f"https://meduza.io:{port}/")
    with socket.socket() as probe443:  # the other port (443): nothing of ours listens there; another's might
        other_open = probe443.connect_ex(("127.0.0.41", 443)) == 0
    x = await e.for_record(rec)
    assert x is not None and "localisation" not in x and not e.localised
    f = x["reset_forensics"]
    assert f["outcome"] == "syn_rst" and f["port"] == port and f["ender"]["flags"] == "RA"
    if other_open:  # one sender (this machine's kernel): the same TTL, not injected, no finding
        assert f["synack_port"] == 443 and f["injected"] is False and x["findings"] == []
    else:
        assert f["synack"] is None and f["synack_port"] is None and f["injected"] is None
        assert x["findings"] == ["tcp.syn_rst: the RST answering the SYN has TTL 64 (~1 hops away); "
                                 "no SYN-ACK of this server to compare it with"]
