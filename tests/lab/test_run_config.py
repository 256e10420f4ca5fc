"""The probe config the lab writes (no namespaces needed): lab data must never pass for real Kazakh data."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.config import load_settings
from probe.lab.run import Lab
from probe.lab.scenario import load_scenario


@pytest.mark.parametrize("name", ["kz-2021", "protest-outage"])
def test_lab_config_uses_a_documentation_asn_and_says_lab(name: str, tmp_path: Path, ca) -> None:
    lab = Lab(load_scenario(name))
    lab.rundir, lab.config_path = tmp_path, tmp_path / "lab.toml"
    (tmp_path / "helper.token").write_text("t" * 32)
    pem = ca.cert_pem.bytes()  # the config check wants a certificate in every anchor file
    (tmp_path / "ca.pem").write_bytes(pem)
    for root in lab.scenario.mitm_roots:
        (tmp_path / f"mitm-{root}.pem").write_bytes(pem)
    s = load_settings(config_path=lab.write_probe_config(), env={})
    assert s.probe_asn == "AS64500"  # RFC 5398 documentation ASN; AS9198 is Kazakhtelecom
    assert s.probe_network_name == f"kzprobe lab ({name})"
    assert s.probe_cc == "KZ" and s.probe_annotations == {"lab_scenario": name}
    assert "9198" not in lab.config_path.read_text()


def test_each_vantage_gets_its_own_config(tmp_path: Path, ca) -> None:
    """A vantage without IPv4 is given the IPv6 resolver, DoH, canary and helper; each its ISP's ASN."""
    from probe.lab.topology import CANARY_IP6, DOH_IP6, HELPER_IP6, resolver_ip, resolver_ip6

    lab = Lab(load_scenario("ipv6-dns64"))
    lab.rundir, lab.config_path = tmp_path, tmp_path / "lab.toml"
    (tmp_path / "helper.token").write_text("t" * 32)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    dual = load_settings(config_path=lab.write_probe_config(), env={})
    v6 = load_settings(config_path=lab.write_probe_config("v6local"), env={})
    assert lab.config_path_of("v6local") == tmp_path / "lab-v6local.toml"
    assert dual.dns_udp_resolvers == (resolver_ip(0),) and v6.dns_udp_resolvers == (resolver_ip6(1),)
    assert v6.dns_doh_urls == (f"https://[{DOH_IP6}]/dns-query",) and HELPER_IP6 in (v6.helper_url or "")
    assert v6.health_canaries == (f"[{CANARY_IP6}]:443",) and dual.health_ipv6_canaries == (f"[{CANARY_IP6}]:443",)
    assert (dual.probe_asn, v6.probe_asn) == ("AS64500", "AS64501")
    assert v6.probe_network_name == "kzprobe lab (ipv6-dns64/v6local)"
    assert v6.probe_annotations == {"lab_scenario": "ipv6-dns64", "lab_vantage": "v6local"}
    assert "2001:db8:4b5a::/48" in v6.bogons_public


def test_lab_timeouts_let_every_test_finish() -> None:
    """The lab's deadline covers every phase an input can go through, so no lab verdict is a
    deadline (issue 12: at 8 s the HTTPS-throttling site ended null; 20 s gave throttling)."""
    from probe.config import Timeouts
    from probe.lab.run import LAB_TIMEOUTS

    t = Timeouts(**LAB_TIMEOUTS)
    assert t.check_deadline() is None
    assert t.control_deadline_s == LAB_TIMEOUTS["control_s"] < t.measurement_s
    old = Timeouts(**{**LAB_TIMEOUTS, "measurement_s": 8.0})  # the lab's deadline before issue 12
    key, msg = old.check_deadline() or ("", "")
    assert key == "timeouts.measurement_s" and "8 s cannot cover" in msg
