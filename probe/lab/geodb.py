"""The lab's ASN and country databases (issue 15): what a new user's probe learns its network from.

When a lab is built (:class:`probe.lab.run.Lab`) it writes two tiny MaxMind-format databases
into its run directory, DB-IP Lite's layout (the fields :mod:`probe.geoip` reads), and gives
them to the lab's helper (``kzprobe helper serve --asn-db --country-db``). The helper's whoami
then answers each vantage with its ISP's ASN, network name and country, and the ISP resolver's
ASN: a probe configured with the helper's URL and token only records the right network, as a new
user's would (the helper's lookup, :mod:`probe.vantage`).

What they map, per ISP ``j`` of the scenario (:mod:`probe.lab.topology`'s address plan):

* the prefixes of its vantages (``10.77.i.0/24``, ``fd00:77:0:i::/64``) — the lab has no NAT: these
  are the addresses the lab's internet (and its helper) sees, the ISP's "public" prefixes here;
* its routers (``10.(80+j).0.0/16``, ``fd00:80:j::/48``) and its resolver (``10.76.j.0/24``,
  ``fd00:76:0:j::/64``), so that OONI's ``resolver_asn`` is the ISP's;

each to the ISP's ASN (the scenario's ``asn``, by default ``AS64500 + j``: RFC 5398 documentation
ASNs, never a real network's), network name ``kzprobe lab (<scenario>[/<isp>])`` and country KZ.

They deliberately leave the lab's "internet" (``198.18.0.0/15``, the sites, the DoH resolver, the
helper) out: one lab ASN for every site would make any address the censor injects inside that
range "consistent by ASN" with the genuine one (OONI's DNS consistency rule), which no real
censor's answers are. Lab data stays lab data: the ASNs are documentation ASNs, the network
names say "kzprobe lab", and the probe's config keeps ``annotations.lab_scenario``.

Writing needs ``mmdb-writer`` (the ``lab`` extra: ``pip install 'kzprobe[lab]'``; ``make demo``
installs it); reading needs only ``maxminddb`` (a main dependency).
"""

from __future__ import annotations

from pathlib import Path

from probe.lab.scenario import ISP, Scenario
from probe.lab.topology import resolver_ip, resolver_ip6

#: File names in the lab's run directory.
ASN_DB_NAME, COUNTRY_DB_NAME = "lab-asn.mmdb", "lab-country.mmdb"
#: The lab's country: it simulates Kazakh networks.
LAB_CC = "KZ"


def lab_network_name(scenario: str) -> str:
    """The lab's ``probe_network_name``: ``"kzprobe lab (<scenario>)"``."""
    return f"kzprobe lab ({scenario})"


def isp_network_name(scenario: Scenario, isp: ISP) -> str:
    """The network name the lab's database gives ``isp``: ``kzprobe lab (<scenario>)`` in the default
    world (one ISP), ``kzprobe lab (<scenario>/<isp>)`` otherwise."""
    return lab_network_name(scenario.name if scenario.default_world else f"{scenario.name}/{isp.name}")


def networks(scenario: Scenario) -> dict[str, tuple[int, str, str]]:
    """``{cidr: (asn, network name, country)}`` of every ISP of ``scenario`` (module doc)."""
    out: dict[str, tuple[int, str, str]] = {}
    for j, isp in enumerate(scenario.isps):
        value = (int(isp.asn.removeprefix("AS")), isp_network_name(scenario, isp), LAB_CC)
        for i, v in enumerate(scenario.vantages):
            if v.isp == isp.name:
                out[f"10.77.{i}.0/24"] = value
                out[f"fd00:77:0:{i:x}::/64"] = value
        out[f"10.{80 + j}.0.0/16"] = value
        out[f"fd00:80:{j:x}::/48"] = value
        out[f"{resolver_ip(j).rsplit('.', 1)[0]}.0/24"] = value
        out[f"{resolver_ip6(j).rsplit('::', 1)[0]}::/64"] = value
    return out


def write(directory: Path, scenario: Scenario) -> tuple[Path, Path]:
    """Write the lab's ASN and country databases into ``directory``; returns their paths.

    Raises:
        ModuleNotFoundError: ``mmdb-writer`` is not installed (the ``lab`` extra).
    """
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    asn_w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="DBIP-ASN-Lite (compat=GeoLite2-ASN)",
                       description={"en": f"kzprobe lab {scenario.name}: documentation ASNs, not real data"})
    cc_w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="DBIP-Country-Lite",
                      description={"en": f"kzprobe lab {scenario.name}: not real data"})
    for cidr, (asn, name, cc) in networks(scenario).items():
        asn_w.insert_network(IPSet([cidr]), {"autonomous_system_number": asn, "autonomous_system_organization": name})
        cc_w.insert_network(IPSet([cidr]), {"country": {"iso_code": cc, "names": {"en": cc}}})
    asn_path, cc_path = directory / ASN_DB_NAME, directory / COUNTRY_DB_NAME
    asn_w.to_db_file(str(asn_path))
    cc_w.to_db_file(str(cc_path))
    return asn_path, cc_path
