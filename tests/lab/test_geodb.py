"""The lab's ASN/country database (probe/lab/geodb.py; no root needed): each ISP's vantage and
resolver prefixes → its own documentation ASN, its network name and KZ; the lab's internet left out."""

from __future__ import annotations

from pathlib import Path

from probe.geoip import GeoIP
from probe.lab import geodb
from probe.lab.scenario import load_scenario


def test_two_isps_each_vantage_and_resolver_in_its_own_network(tmp_path: Path) -> None:
    db = GeoIP(*geodb.write(tmp_path, load_scenario("two-isps")))
    try:
        home, mobile = db.lookup("10.77.0.2"), db.lookup("10.77.1.2")
        assert (home.asn, home.cc, home.network_name) == ("AS64500", "KZ", "kzprobe lab (two-isps/kaztel)")
        assert (mobile.asn, mobile.cc, mobile.network_name) == ("AS64501", "KZ", "kzprobe lab (two-isps/beeline)")
        assert db.lookup("10.76.0.53").asn == "AS64500" and db.lookup("10.76.1.53").asn == "AS64501"
        assert db.lookup("fd00:77:0:1::2").asn == "AS64501" and db.lookup("fd00:76:0:1::53").asn == "AS64501"
        # the lab's internet (sites, DoH, helper): not in it — one ASN there would make an injected
        # lab address "consistent by ASN" with the genuine one
        for ip in ("198.18.1.1", "198.18.0.54", "198.18.0.80", "2001:db8:4b5a::80"):
            assert (db.lookup(ip).asn, db.lookup(ip).cc) == (None, None)
    finally:
        db.close()


def test_default_world_is_the_lab_asn_under_the_scenarios_name(tmp_path: Path) -> None:
    from probe.lab.run import LAB_ASN, lab_network_name

    db = GeoIP(*geodb.write(tmp_path, load_scenario("kz-2021")))
    try:
        got = db.lookup("10.77.0.2")
        assert (got.asn, got.cc, got.network_name) == (LAB_ASN, "KZ", lab_network_name("kz-2021"))
    finally:
        db.close()
    # every ASN the lab hands out is an RFC 5398 documentation ASN
    for name in ("two-isps", "kz-2021", "ipv6-dns64"):
        for asn, _, _ in geodb.networks(load_scenario(name)).values():
            assert 64496 <= asn <= 64511 or 65536 <= asn <= 65551
