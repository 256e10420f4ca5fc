"""probe.geoip and probe.vantage's merge rules, over a tiny MMDB built here (issue 15, 1)."""

from __future__ import annotations

from pathlib import Path

from probe.config import Settings
from probe.geoip import GeoIP, NetworkInfo
from probe.vantage import apply, configured
from tests.geoip_db import write_dbs

NETS = {"203.0.113.0/24": (9198, "JSC Kazakhtelecom", "KZ"), "2001:db8:1::/48": (21299, "Kar-Tel LLC", "KZ"),
        "198.51.100.0/24": (13335, "Cloudflare, Inc.", "US")}


def test_lookup_asn_name_country(tmp_path: Path) -> None:
    db = GeoIP(*write_dbs(tmp_path, NETS))
    assert db.available
    assert db.lookup("203.0.113.9") == NetworkInfo(asn="AS9198", network_name="JSC Kazakhtelecom", cc="KZ")
    assert db.lookup("2001:db8:1::5") == NetworkInfo(asn="AS21299", network_name="Kar-Tel LLC", cc="KZ")
    assert db.lookup("198.51.100.1").asn == "AS13335"
    assert db.lookup("192.0.2.1") == NetworkInfo(asn=None, network_name="", cc=None)  # not in it
    assert db.lookup("not an address") == NetworkInfo(asn=None, network_name="", cc=None)
    db.close()


def test_missing_or_garbage_database_is_no_lookup(tmp_path: Path) -> None:
    (tmp_path / "bad.mmdb").write_bytes(b"not a database" * 10)
    db = GeoIP(tmp_path / "none.mmdb", tmp_path / "bad.mmdb")
    assert not db.available
    assert db.lookup("203.0.113.9") == NetworkInfo(asn=None, network_name="", cc=None)


def test_config_overrides_the_database() -> None:
    info = NetworkInfo(asn="AS9198", network_name="JSC Kazakhtelecom", cc="KZ")
    s = apply(Settings(), info)
    assert (s.probe_asn, s.probe_cc, s.probe_network_name) == ("AS9198", "KZ", "JSC Kazakhtelecom")
    s = apply(Settings(probe_asn="AS21299", probe_network_name="Kar-Tel"), info)
    assert (s.probe_asn, s.probe_cc, s.probe_network_name) == ("AS21299", "KZ", "Kar-Tel")
    s = apply(Settings(), NetworkInfo(asn=None, network_name="", cc=None))
    assert (s.probe_asn, s.probe_cc) == ("AS0", "ZZ")
    assert configured(Settings(probe_asn="AS1", probe_cc="KZ", probe_network_name="x"))
    assert not configured(Settings(probe_asn="AS1", probe_cc="KZ"))


def test_trace_url_only_for_a_provider_with_one() -> None:
    from probe.vantage import trace_url

    assert trace_url(("https://1.1.1.1/dns-query", "https://8.8.8.8/dns-query")) == "https://1.1.1.1/cdn-cgi/trace"
    assert trace_url(("https://8.8.8.8/dns-query", "https://cloudflare-dns.com/dns-query")) == \
        "https://cloudflare-dns.com/cdn-cgi/trace"
    assert trace_url(("https://8.8.8.8/dns-query",)) is None
    assert trace_url(("https://127.0.0.1:8443/dns-query",)) is None  # the lab's and the tests' DoH: none


async def test_doh_trace_reads_the_ip_line_bounded() -> None:
    import aiohttp
    import pytest
    from aiohttp import web

    from probe.vantage import MAX_WHOAMI_BYTES, doh_trace

    bodies = {"/ok": "fl=1\nh=1.1.1.1\nip=203.0.113.77\nts=1\nloc=KZ\n", "/noip": "fl=1\n",
              "/big": "x" * (MAX_WHOAMI_BYTES + 10), "/bad": "ip=not-an-address\n"}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=bodies[request.path])

    app = web.Application()
    app.router.add_get("/{p}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            assert await doh_trace(s, f"{base}/ok") == "203.0.113.77"
            for path, msg in (("/noip", "no ip="), ("/big", "over"), ("/bad", "does not appear")):
                with pytest.raises(ValueError, match=msg):
                    await doh_trace(s, f"{base}{path}")
    finally:
        await runner.cleanup()


async def test_without_a_helper_the_doh_providers_trace_gives_the_address(tmp_path: Path, monkeypatch) -> None:
    """No helper: identify() asks the trace endpoint of the DoH provider in use (Cloudflare's), maps the address
    with the local database and keeps it (for the scrubber), never in the summary; ``[geoip] doh_trace = false``
    turns the request off (nothing asked, the network unknown); a config naming the network asks nothing.
    The trace request itself is replaced here (no traffic off the machine; its reader: the test above)."""
    import dataclasses

    import probe.vantage as vantage

    asked: list[str] = []

    async def fake_trace(session, url: str, **_: object) -> str:
        asked.append(url)
        return "203.0.113.77"

    monkeypatch.setattr(vantage, "doh_trace", fake_trace)
    asn_db, cc_db = write_dbs(tmp_path, NETS)
    s = Settings(dns_doh_urls=("https://1.1.1.1/dns-query",), geoip_asn_db=str(asn_db), geoip_country_db=str(cc_db))
    new, ident = await vantage.identify(s)
    assert asked == ["https://1.1.1.1/cdn-cgi/trace"]
    assert (ident.source, ident.database, ident.asn, ident.cc) == ("doh_trace", "local", "AS9198", "KZ")
    assert (new.probe_asn, new.probe_cc, new.probe_network_name) == ("AS9198", "KZ", "JSC Kazakhtelecom")
    assert ident.address == "203.0.113.77" and "address" not in ident.summary_json()

    _, off = await vantage.identify(dataclasses.replace(s, geoip_doh_trace=False))
    assert off.source == "unknown" and "no helper and no DoH trace endpoint" in (off.failure or "")
    _, cfg = await vantage.identify(dataclasses.replace(s, probe_asn="AS1", probe_cc="KZ", probe_network_name="x"))
    assert cfg.source == "config" and cfg.address is None
    assert asked == ["https://1.1.1.1/cdn-cgi/trace"]  # neither asked again
