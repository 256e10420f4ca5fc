"""GET /api/v1/whoami (issue 15, 1): the helper tells an authenticated probe its address, and
probe.vantage.identify maps it to ASN/country with a tiny MMDB; the address is never written."""

from __future__ import annotations

from pathlib import Path

from probe.config import Settings
from probe.geoip import GeoIP
from probe.vantage import identify
from tests.geoip_db import write_dbs
from tests.helper.conftest import TOKEN


async def test_whoami_needs_a_token_and_says_the_address(helper_lab) -> None:
    lab = await helper_lab()
    ans = await lab.get("/api/v1/whoami", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ans.status == 200 and ans.json == {"probe_ip": "127.0.0.1", "api_version": 1}
    assert (await lab.get("/api/v1/whoami")).status == 401
    assert (await lab.get("/api/v1/whoami", headers={"Authorization": "Bearer wrong"})).status == 401


async def test_identify_fills_asn_and_cc_from_whoami(helper_lab, tmp_path: Path) -> None:
    lab = await helper_lab()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    db = GeoIP(*write_dbs(tmp_path, {"127.0.0.0/8": (9198, "JSC Kazakhtelecom", "KZ")}))
    s, ident = await identify(Settings(helper_url=lab.url, helper_token_file=str(token)), geoip=db)
    assert (s.probe_asn, s.probe_cc, s.probe_network_name) == ("AS9198", "KZ", "JSC Kazakhtelecom")
    assert ident.source == "helper" and ident.failure is None
    assert "127.0.0.1" not in repr(ident)  # the address is not kept
    # config wins
    s, ident = await identify(Settings(helper_url=lab.url, helper_token_file=str(token), probe_cc="KG"), geoip=db)
    assert (s.probe_asn, s.probe_cc) == ("AS9198", "KG")
    # a wrong token: a failure said, the config's values kept
    token.write_text("wrong\n")
    s, ident = await identify(Settings(helper_url=lab.url, helper_token_file=str(token)), geoip=db)
    assert (s.probe_asn, s.probe_cc) == ("AS0", "ZZ") and "HTTP 401" in (ident.failure or "")
    # turned off in config
    s, ident = await identify(Settings(helper_url=lab.url, helper_token_file=str(token), geoip_lookup=False),
                              geoip=db)
    assert ident.source == "config" and s.probe_asn == "AS0"


NETS = {"127.0.0.0/8": (64500, "kzprobe test ISP", "KZ"), "192.0.2.0/24": (64501, "kzprobe test resolver", "KZ")}


async def test_whoami_with_the_helpers_database_says_the_network(helper_lab, tmp_path: Path) -> None:
    """The helper's own database (``--asn-db``/``--country-db``): whoami carries the probe's ASN,
    country and network name, and those of the resolvers asked about (those it knows)."""
    lab = await helper_lab(geoip=GeoIP(*write_dbs(tmp_path, NETS)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ans = await lab.get("/api/v1/whoami?resolver=192.0.2.53&resolver=203.0.113.1", headers=auth)
    assert ans.status == 200 and ans.json == {
        "probe_ip": "127.0.0.1", "api_version": 1, "probe_asn": "AS64500", "probe_cc": "KZ",
        "probe_network_name": "kzprobe test ISP",
        "resolvers": {"192.0.2.53": {"asn": "AS64501", "cc": "KZ", "network_name": "kzprobe test resolver"}}}
    assert (await lab.get("/api/v1/whoami?resolver=not-an-ip", headers=auth)).status == 400
    five = "&".join(f"resolver=192.0.2.{i}" for i in range(5))
    assert (await lab.get(f"/api/v1/whoami?{five}", headers=auth)).status == 400
    # a helper without a database: the address only (as before)
    plain = await helper_lab()
    assert (await plain.get("/api/v1/whoami?resolver=192.0.2.53", headers=auth)).json == {
        "probe_ip": "127.0.0.1", "api_version": 1}


async def test_identify_without_a_local_database_takes_the_helpers(helper_lab, tmp_path: Path) -> None:
    """A new user's probe (no database of its own, no [probe] asn/cc) learns its network and its
    resolver's from the helper's answer; the probe's own database, when installed, wins field by field."""
    lab = await helper_lab(geoip=GeoIP(*write_dbs(tmp_path, NETS)))
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    none = tmp_path / "absent.mmdb"
    base = Settings(helper_url=lab.url, helper_token_file=str(token), dns_udp_resolvers=("192.0.2.53:53",),
                    geoip_asn_db=str(none), geoip_country_db=str(none))
    s, ident = await identify(base)
    assert (s.probe_asn, s.probe_cc, s.probe_network_name) == ("AS64500", "KZ", "kzprobe test ISP")
    assert (ident.source, ident.database, ident.failure) == ("helper", "helper", None)
    assert (ident.resolver_asn, ident.resolver_network_name) == ("AS64501", "kzprobe test resolver")
    local = tmp_path / "local"
    local.mkdir()
    own = GeoIP(*write_dbs(local, {"127.0.0.0/8": (9198, "JSC Kazakhtelecom", "KG")}))
    s, ident = await identify(base, geoip=own)
    assert (s.probe_asn, s.probe_cc, s.probe_network_name) == ("AS9198", "KG", "JSC Kazakhtelecom")
    assert ident.database == "local"
    # neither has a database: said so, nothing invented
    plain = await helper_lab()
    s, ident = await identify(Settings(helper_url=plain.url, helper_token_file=str(token), geoip_asn_db=str(none),
                                       geoip_country_db=str(none)))
    assert (s.probe_asn, s.probe_cc) == ("AS0", "ZZ") and "no ASN/country database" in (ident.failure or "")
    assert ident.database == ""
