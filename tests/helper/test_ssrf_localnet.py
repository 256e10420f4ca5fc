"""The SSRF table's LAN cases (issue 11): the helper never reaches its own network either
(a VPS's subnet neighbours, its provider's gateway), even inside ``--allow-private``; and the
home-router addresses a hostile probe request may name are refused before any DNS."""

from __future__ import annotations

import ipaddress

import pytest

from probe.helper.ssrf import AddressPolicy
from probe.localnet import LocalNetwork
from tests.helper.conftest import ALLOWED_IP, OTHER_IP, LabFactory

#: The helper's own network in these tests: OTHER_IP's /24 (allow-listed as "public") and a gateway.
OWN = LocalNetwork(subnets=(ipaddress.ip_network("198.51.100.0/24"),),
                   gateways=(ipaddress.ip_address("192.0.2.1"),))


def own_policy() -> AddressPolicy:
    return AddressPolicy(allow_private=("192.0.2.0/24", "198.51.100.0/24"), local=OWN)


#: Home-router URLs (the addresses routers ship with): 403 before any DNS or connection.
LAN_URLS = ["http://192.168.0.1/", "http://192.168.1.254:80/cgi-bin/reboot", "http://10.0.0.138/",
            "http://172.31.255.254/", "http://[fd12:3456:789a::1]/", "https://192.168.100.1/",
            "http://[::ffff:192.168.1.1]/", "http://3232235777/"]  # 3232235777 = 192.168.1.1


@pytest.mark.parametrize("url", LAN_URLS)
async def test_home_router_urls_are_403(helper_lab: LabFactory, url: str) -> None:
    lab = await helper_lab(fallback="trap")
    a = await lab.post({"url": url, "endpoints": []})
    assert a.status == 403, a.text
    assert lab.doh.queries == [] and lab.trap.accepted == 0


async def test_the_helpers_own_subnet_is_refused_even_when_allow_listed(helper_lab: LabFactory) -> None:
    lab = await helper_lab(fallback="trap", policy=own_policy())
    a = await lab.post({"url": "https://other.example/"})  # resolves to OTHER_IP, in the helper's own /24
    assert a.status == 200, a.text
    assert f"{OTHER_IP}:443" in a.json["x_refused"] and a.json["tcp_connect"] == {}
    assert lab.other.requests == [] and lab.other.sni == []


async def test_the_helpers_gateway_as_a_probe_endpoint_is_refused(helper_lab: LabFactory) -> None:
    lab = await helper_lab(fallback="trap", policy=own_policy())
    a = await lab.post({"url": "https://allowed.example/", "endpoints": ["192.0.2.1:443", f"{ALLOWED_IP}:443"]})
    assert a.status == 200, a.text
    assert "192.0.2.1:443" in a.json["x_refused"] and "192.0.2.1:443" not in a.json["tcp_connect"]
    assert a.json["tcp_connect"][f"{ALLOWED_IP}:443"]["status"] is True
    assert lab.trap.accepted == 0


async def test_a_redirect_into_the_helpers_own_subnet_is_not_followed(helper_lab: LabFactory) -> None:
    lab = await helper_lab(fallback="trap", policy=own_policy())
    a = await lab.post({"url": "http://allowed.example/redir-ok"})  # → https://other.example/
    assert a.status == 200, a.text
    assert a.json["http_request"]["status_code"] == -1 and a.json["http_request"]["failure"]
    assert lab.other.requests == []


async def test_control_the_same_redirect_is_followed_without_the_local_network(helper_lab: LabFactory) -> None:
    lab = await helper_lab(fallback="trap")
    a = await lab.post({"url": "http://allowed.example/redir-ok"})
    assert a.status == 200 and a.json["http_request"]["status_code"] == 200
    assert len(lab.other.requests) == 1


def test_the_reason_names_the_helpers_network() -> None:
    assert own_policy().refusal(OTHER_IP) == f"{OTHER_IP}: the helper's own network (interface subnet 198.51.100.0/24)"
    assert own_policy().refusal("192.0.2.1") == "192.0.2.1: the helper's own network (gateway 192.0.2.1)"
    assert own_policy().refusal(ALLOWED_IP) is None
