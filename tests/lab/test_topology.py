"""Topology pieces that need no root: address plan and the ISP's nftables ruleset."""

from __future__ import annotations

import tomllib

import pytest

from probe.lab.scenario import parse_scenario
from probe.lab.topology import CENSOR_HTTP_PORT, CENSOR_TLS_PORT, isp_ruleset, site_addresses

SC = parse_scenario(tomllib.loads('''
[scenario]
name = "t"
[[site]]
domain = "blocked.kz"
ip = "blackhole"
expect = "tcp_ip"
[[site]]
domain = "neighbour.kz"
share_ip_with = "blocked.kz"
expect = "tcp_ip"
[[site]]
domain = "sni.kz"
tls = "sni_timeout"
expect = "tls"
[[site]]
domain = "rst.kz"
ip = "rst"
tls = "sni_rst"
expect = "tcp_ip"
[[site]]
domain = "unr.kz"
ip = "unreachable"
expect = "tcp_ip"
[[site]]
domain = "ok.kz"
expect = false
'''))


def test_addresses_shared_and_distinct() -> None:
    a = site_addresses(SC.sites)
    assert a["neighbour.kz"] == a["blocked.kz"]
    assert len(set(a.values())) == len(SC.sites) - 1
    assert all(ip.startswith("198.18.") for ip in a.values())


@pytest.mark.parametrize(("outage", "present", "absent"), [
    (False, ["@blackhole drop", "reject with tcp reset", "host-unreachable",
             f"redirect to :{CENSOR_TLS_PORT}", f"redirect to :{CENSOR_HTTP_PORT}"], ['oifname "up" drop']),
    (True, ['iifname "down" oifname "up" drop', 'iifname "up" oifname "down" drop', 'oifname "up" drop'], []),
])
def test_isp_ruleset(outage: bool, present: list[str], absent: list[str]) -> None:
    import dataclasses

    sc = dataclasses.replace(SC, outage=outage)
    a = site_addresses(sc.sites)
    rules = isp_ruleset(sc, a, client_if="down", uplink_if="up")
    for text in present:
        assert text in rules
    for text in absent:
        assert text not in rules
    sets = {line.split()[1]: line for line in rules.splitlines() if line.strip().startswith("set ")}
    assert a["blocked.kz"] in sets["blackhole"]
    assert a["unr.kz"] in sets["unreach"]
    assert a["sni.kz"] in sets["censor"]
    # an address with an IP action is not redirected to the censor: the IP action wins
    assert a["rst.kz"] in sets["rst"] and a["rst.kz"] not in sets["censor"]
    assert a["ok.kz"] not in rules
