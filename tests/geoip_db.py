"""Tiny MaxMind-format databases for tests, written with mmdb-writer (never downloaded)."""

from __future__ import annotations

from pathlib import Path


def write_dbs(directory: Path, networks: dict[str, tuple[int, str, str]]) -> tuple[Path, Path]:
    """``{cidr: (asn, organisation, cc)}`` → (ASN database, country database), DB-IP Lite's layout."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    asn_w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="DBIP-ASN-Lite (compat=GeoLite2-ASN)")
    cc_w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="DBIP-Country-Lite")
    for cidr, (asn, org, cc) in networks.items():
        asn_w.insert_network(IPSet([cidr]), {"autonomous_system_number": asn, "autonomous_system_organization": org})
        cc_w.insert_network(IPSet([cidr]), {"country": {"iso_code": cc, "names": {"en": cc}}})
    asn_path, cc_path = directory / "asn.mmdb", directory / "country.mmdb"
    asn_w.to_db_file(str(asn_path))
    cc_w.to_db_file(str(cc_path))
    return asn_path, cc_path
