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
