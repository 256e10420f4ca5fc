"""Which network an address is in: ASN, network name and country from MaxMind-format databases.

Read with ``maxminddb`` (its C extension when built, else its pure-Python reader). The
databases are DB-IP's free "IP to ASN Lite" and "IP to Country Lite" (CC BY 4.0:
attribution "IP Geolocation by DB-IP", https://db-ip.com), or MaxMind's GeoLite2 ASN and
Country files: both use the field names read here (``autonomous_system_number``,
``autonomous_system_organization``; ``country.iso_code``).

A lookup never raises on what it finds: a missing or unreadable database, an address not
in it or a record of the wrong shape give ``None`` for that part (the configured
``probe.asn``/``probe.cc``, when set, win anyway: config overrides all of this).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

log = logging.getLogger(__name__)

#: File names under :func:`assets_dir` (``kzprobe assets update`` writes them).
ASN_DB_NAME = "dbip-asn-lite.mmdb"
COUNTRY_DB_NAME = "dbip-country-lite.mmdb"
#: The attribution DB-IP's licence (CC BY 4.0) asks for, shown wherever their data is used.
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"


def assets_dir() -> Path:
    """Where the databases live: the XDG data dir's ``kzprobe/assets`` (``~/.local/share/...``)."""
    return Path(platformdirs.user_data_dir("kzprobe")) / "assets"


@dataclass(frozen=True, kw_only=True)
class NetworkInfo:
    """What the databases say of one address.

    Attributes:
        asn: ``"AS9198"``, None when unknown. ``network_name``: the AS's organisation, "" when unknown.
        cc: ISO 3166 alpha-2 country code, None when unknown.
    """

    asn: str | None
    network_name: str
    cc: str | None


class GeoIP:
    """The ASN and country databases, opened once (either may be absent: its parts are None)."""

    def __init__(self, asn_db: str | Path | None = None, country_db: str | Path | None = None) -> None:
        self._asn = _open(asn_db if asn_db is not None else assets_dir() / ASN_DB_NAME)
        self._country = _open(country_db if country_db is not None else assets_dir() / COUNTRY_DB_NAME)

    @property
    def available(self) -> bool:
        """Whether any database could be opened."""
        return self._asn is not None or self._country is not None

    def lookup(self, address: str) -> NetworkInfo:
        """ASN, network name and country of ``address`` (parts unknown are None / "")."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return NetworkInfo(asn=None, network_name="", cc=None)
        asn, name, cc = None, "", None
        rec = _get(self._asn, ip)
        num = rec.get("autonomous_system_number")
        if isinstance(num, int) and not isinstance(num, bool) and 0 < num < 2**32:
            asn = f"AS{num}"
            org = rec.get("autonomous_system_organization")
            name = org if isinstance(org, str) and org.isprintable() else ""
        country = _get(self._country, ip).get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
            cc = code.upper()
        return NetworkInfo(asn=asn, network_name=name[:200], cc=cc)

    def close(self) -> None:
        for r in (self._asn, self._country):
            if r is not None:
                r.close()


def _open(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        return None  # before the import: no database, no dependency needed
    import maxminddb

    try:
        return maxminddb.open_database(str(p))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        log.warning("geoip: %s unreadable (%s): network not looked up from it", p, exc)
        return None


def _get(reader: Any, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, Any]:
    if reader is None:
        return {}
    try:
        rec = reader.get(ip)
    except (ValueError, TypeError) as exc:  # an IPv6 address in an IPv4-only database, a corrupt tree
        log.debug("geoip: %s: %s", ip, exc)
        return {}
    return rec if isinstance(rec, dict) else {}
