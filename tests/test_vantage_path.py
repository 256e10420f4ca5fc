"""The whole path of issue 15 part 1 on loopback: the helper's whoami → a tiny MMDB → the
records' probe_asn/probe_cc and the run summary; a network change between the before- and
after-run checks is recorded; the address itself is written nowhere."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from aiohttp import web

import probe.campaign as campaign
from probe.config import load_settings
from probe.targets import targets_from_urls
from tests.conftest import read_jsonl
from tests.geoip_db import write_dbs

TOKEN = "vantage-test-token-0123456789"
URLS = ["https://site0.example.org/"]
NETS = {"203.0.113.0/24": (9198, "JSC Kazakhtelecom", "KZ"), "198.51.100.0/24": (21299, "Kar-Tel LLC", "KZ")}


async def _whoami_server(addresses: list[str], lookup: dict[str, str] | None = None) -> tuple[web.AppRunner, str]:
    """A helper stand-in: whoami answers the next of ``addresses`` (the last one repeated), with
    ``lookup`` (the helper's database's ``probe_asn``/``probe_cc``/``probe_network_name``) when given."""
    async def whoami(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        ip = addresses.pop(0) if len(addresses) > 1 else addresses[0]
        return web.json_response({"probe_ip": ip, "api_version": 1, **(lookup or {})})

    app = web.Application()
    app.router.add_get("/api/v1/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


async def _run(loopback_config, tmp_path: Path, addresses: list[str], *, databases: bool = True,
               include_ip: bool = False, lookup: dict[str, str] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    runner, url = await _whoami_server(addresses, lookup)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    asn_db, cc_db = write_dbs(tmp_path, NETS) if databases else (tmp_path / "none.mmdb", tmp_path / "none.mmdb")
    s = load_settings(config_path=loopback_config["write"](), env={})
    s = dataclasses.replace(s, consent_accepted=None, run_retention_days=0, helper_url=url, probe_asn="AS0",
                            probe_cc="ZZ", probe_network_name="",  # nothing configured: learned
                            helper_token_file=str(token), geoip_asn_db=str(asn_db), geoip_country_db=str(cc_db),
                            probe_include_ip=include_ip)
    try:
        return await campaign.run_campaign(targets_from_urls(URLS), s, out_dir=tmp_path / "out")
    finally:
        await runner.cleanup()


async def test_whoami_to_records_say_kz(loopback_config, tmp_path: Path) -> None:
    result = await _run(loopback_config, tmp_path, ["203.0.113.77"])
    recs = list(read_jsonl(result.run.path))
    assert [(r["probe_asn"], r["probe_cc"], r["probe_network_name"]) for r in recs] == [
        ("AS9198", "KZ", "JSC Kazakhtelecom")]
    assert "_KZ_9198_" in result.run.report_id
    summary = json.loads(result.run.summary_path.read_text())
    assert summary["probe_asn"] == "AS9198" and summary["vantage"]["source"] == "helper"
    assert summary["vantage"]["changed"] is False
    for f in (result.run.path, result.run.summary_path):
        assert "203.0.113.77" not in f.read_text()  # the address is never written
    assert all(r["probe_ip"] == "127.0.0.1" for r in recs)


async def test_the_files_are_named_after_the_network_the_records_carry(loopback_config, tmp_path: Path) -> None:
    """Break test 24 (#9) saw files named ``…_webconnectivity_ZZ_0_…`` while the records said AS9198/KZ, with
    ``[probe]`` unset and the helper's whoami answering from its own database (no database here). Not
    reproduced: the report id is made after whoami, from the same settings as the records (the break
    test's own run of that set-up is named ``…_KZ_9198_…``; its ``ZZ_0`` files are runs whose whoami
    failed, and their records say AS0/ZZ). This keeps that path checked: file names, report id, records
    and summary agree."""
    lookup = {"probe_asn": "AS9198", "probe_cc": "KZ", "probe_network_name": "JSC Kazakhtelecom"}
    result = await _run(loopback_config, tmp_path, ["203.0.113.77"], databases=False, lookup=lookup)
    rid = result.run.report_id
    assert "_webconnectivity_KZ_9198_" in rid and result.run.path.name == f"{rid}.jsonl"
    assert result.run.summary_path.name == f"{rid}.summary.json"
    recs = list(read_jsonl(result.run.path))
    assert recs and {(r["probe_asn"], r["probe_cc"], r["report_id"]) for r in recs} == {("AS9198", "KZ", rid)}
    summary = json.loads(result.run.summary_path.read_text())
    assert (summary["report_id"], summary["probe_asn"], summary["probe_cc"]) == (rid, "AS9198", "KZ")


async def test_a_network_change_during_the_run_is_recorded(loopback_config, tmp_path: Path) -> None:
    result = await _run(loopback_config, tmp_path, ["203.0.113.77", "198.51.100.9"])
    summary = json.loads(result.run.summary_path.read_text())
    assert summary["vantage"]["changed"] is True
    assert (summary["vantage"]["asn"], summary["vantage"]["after"]["asn"]) == ("AS9198", "AS21299")
    assert result.run.network_changed


async def test_resolver_asn_of_the_isp_resolver(loopback_config, tmp_path: Path) -> None:
    """OONI's resolver_asn/resolver_network_name: of dns.udp_resolvers' first address (absent when unknown)."""
    from probe.runner import resolver_network

    asn_db, cc_db = write_dbs(tmp_path, NETS)
    s = load_settings(config_path=loopback_config["write"](), env={})
    s = dataclasses.replace(s, geoip_asn_db=str(asn_db), geoip_country_db=str(cc_db))
    assert resolver_network(dataclasses.replace(s, dns_udp_resolvers=("203.0.113.53",))) == {
        "resolver_asn": "AS9198", "resolver_network_name": "JSC Kazakhtelecom"}
    assert resolver_network(dataclasses.replace(s, dns_udp_resolvers=("198.51.100.53:5353",)))["resolver_asn"] == \
        "AS21299"
    assert resolver_network(dataclasses.replace(s, dns_udp_resolvers=("192.0.2.1",))) == {}  # not in the database
    assert resolver_network(dataclasses.replace(s, dns_udp_resolvers=())) == {}
    result = await _run(loopback_config, tmp_path, ["203.0.113.77"])
    rec = next(iter(read_jsonl(result.run.path)))
    assert "resolver_asn" not in rec  # the loopback config's resolver is not in the database: left out



async def test_whoami_to_report_counts_them_as_kz(loopback_config, tmp_path: Path) -> None:
    """Issue 15's whole path: address (whoami) → tiny MMDB → AS9198/KZ in the records → ``kzprobe report``
    judges them as Kazakhstan's (none left out as another country's), under the network's name. Without the
    database the same run says ZZ/AS0 and the report leaves every measurement out as another country's —
    the first-data-cannot-count bug of the issue."""
    from analysis.build import build_report

    result = await _run(loopback_config, tmp_path / "with-db", ["203.0.113.77"])
    built = build_report([result.run.path.parent], tmp_path / "report")
    assert len(built.frame) == len(URLS)
    assert set(built.frame["probe_cc"].astype(str)) == {"KZ"}
    assert set(built.frame["probe_asn"].astype(str)) == {"AS9198"}
    assert built.scope.n_other_country == 0 and built.results.attrs["n_other_country"] == 0
    html = built.paths.index_html.read_text(encoding="utf-8")
    assert "from other countries were not used" not in html
    assert "AS9198 (JSC Kazakhtelecom)" in html
    assert "203.0.113.77" not in html  # the address is written nowhere, the report included

    # the same run without a database: ZZ / AS0, every measurement left out of the claims about KZ
    no_db = await _run(loopback_config, tmp_path / "no-db", ["203.0.113.77"], databases=False)
    recs = list(read_jsonl(no_db.run.path))
    assert {(r["probe_asn"], r["probe_cc"]) for r in recs} == {("AS0", "ZZ")}
    built2 = build_report([no_db.run.path.parent], tmp_path / "report2")
    assert built2.scope.n_other_country == len(recs)


async def test_a_helpers_malformed_network_keys_are_unknown_not_written(app_server) -> None:
    """A helper's whoami answer is input like any other: an ASN that is not AS<number>, a country
    that is not two letters, a name with control characters are taken as unknown."""
    import aiohttp

    from probe.vantage import helper_whoami

    answers = [{"probe_ip": "203.0.113.7", "probe_asn": "AS-1", "probe_cc": "KZZ", "probe_network_name": "x",
                "resolvers": {"198.51.100.53": {"asn": "AS99999999999", "cc": 7, "network_name": "\x1b]0;pwn\x07"}}},
               {"probe_ip": "203.0.113.7", "probe_asn": "AS9198", "probe_cc": "kz",
                "probe_network_name": "JSC\x1b[31m", "resolvers": ["not", "a", "dict"]}]

    async def whoami(request: web.Request) -> web.Response:
        assert request.query.getall("resolver") == ["198.51.100.53"]
        return web.json_response(answers.pop(0))

    url = await app_server(whoami)
    async with aiohttp.ClientSession() as session:
        who = await helper_whoami(session, url, TOKEN, resolvers=("198.51.100.53",))
        assert (who.info.asn, who.info.cc, who.info.network_name) == (None, None, "")
        r = who.resolvers["198.51.100.53"]
        assert (r.asn, r.cc, r.network_name) == (None, None, "")
        who = await helper_whoami(session, url, TOKEN, resolvers=("198.51.100.53",))
        assert (who.info.asn, who.info.cc, who.info.network_name) == ("AS9198", "KZ", "")
        assert who.resolvers == {}


async def test_the_learned_address_is_scrubbed_from_every_record(loopback_config, tmp_path: Path) -> None:
    """The address is never written unless the user opts in (issue 15, 1): wherever the learned address
    shows in a record — here the whoami says the probe is 192.0.2.10, the address site0's DNS answers and
    connects carry, as a page echoing the client's address would — it becomes "[scrubbed]" (OONI's
    model.ScrubMeasurement). With ``[probe] include_ip = true`` it is written as probe_ip, nothing scrubbed."""
    from probe.scrub import SCRUBBED

    result = await _run(loopback_config, tmp_path / "default", ["192.0.2.10"])
    text = result.run.path.read_text(encoding="utf-8")
    assert "192.0.2.10" not in text and SCRUBBED in text
    rec = next(iter(read_jsonl(result.run.path)))
    assert rec["probe_ip"] == "127.0.0.1" and rec["probe_cc"] == "ZZ"  # 192.0.2.10 is in no NETS range
    assert rec["test_keys"]["x_rule"] == "https.verified"  # judged before scrubbing
    assert "192.0.2.10" not in result.run.summary_path.read_text(encoding="utf-8")

    opted = await _run(loopback_config, tmp_path / "opted-in", ["192.0.2.10"], include_ip=True)
    rec = next(iter(read_jsonl(opted.run.path)))
    assert rec["probe_ip"] == "192.0.2.10" and SCRUBBED not in opted.run.path.read_text(encoding="utf-8")
    assert "192.0.2.10" in json.dumps(rec["test_keys"]["queries"])


def test_scrubber_takes_the_address_not_a_longer_number() -> None:
    from probe.scrub import Scrubber

    s = Scrubber(["1.2.3.4", "2001:db8::7"])
    rec = {"a": "ip 1.2.3.4, not 11.2.3.45 or 1.2.3.40", "b": ["2001:DB8::7", "2001:db8::77"],
           "1.2.3.4": 1, "n": None}
    assert s.found_in(json.dumps(rec).encode())
    assert s.record(rec) == {"a": "ip [scrubbed], not 11.2.3.45 or 1.2.3.40", "b": ["[scrubbed]", "2001:db8::77"],
                             "[scrubbed]": 1, "n": None}
    assert not s.found_in(b'{"a": "11.2.3.45"}') or s.record({"a": "11.2.3.45"}) == {"a": "11.2.3.45"}
