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
