"""Issue 15's Done-when in the lab: a new user's probe — configured with the helper's URL and token
only, no ``[probe] asn/cc/network_name``, no database of its own — records the right ASN and
country at each vantage, learned from the helper's whoami and the lab's ASN database
(probe/lab/geodb.py), and ``kzprobe report`` counts the measurements as KZ on two networks.

Source of the design: OONI's geolocation (ooni/probe-cli internal/geolocate: the probe's address
from a lookup service, then ASN/CC from a MaxMind database; the resolver's ASN beside it), with the
helper's database standing in for the one ooniprobe carries (probe/vantage.py says why)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from probe.lab.geodb import isp_network_name
from probe.lab.run import Lab
from probe.lab.scenario import load_scenario

pytestmark = pytest.mark.lab


def test_new_users_probe_learns_its_network_from_the_helper(require_lab, tmp_path: Path) -> None:
    from analysis.build import build_report

    scenario = load_scenario("two-isps")
    want = {v.name: next(i for i in scenario.isps if i.name == v.isp) for v in scenario.vantages}
    with Lab(scenario, identity="helper") as lab:
        for v in scenario.vantages:
            cfg = tomllib.loads(lab.config_path_of(v.name).read_text())
            assert not {"asn", "cc", "network_name"} & set(cfg["probe"]), cfg["probe"]  # nothing beyond the helper
            assert "geoip" not in cfg  # no database path either
            assert cfg["probe"]["annotations"]["lab_scenario"] == "two-isps"  # lab data stays marked as lab data
            assert set(cfg["helper"]) == {"url", "token_file"}
        run = lab.run_probe(out_dir=tmp_path / "out", concurrency=8, timeout_s=300)
    assert set(run.exit_codes.values()) == {0}, run.stderr[-2000:]
    assert run.all_match_or_known, [(o.vantage, o.input, o.got, o.expect) for o in run.outcomes if not o.match]
    assert len(run.records) == sum(len(s.inputs) for s in scenario.sites) * len(scenario.vantages)
    for r in run.records:
        isp = want[r["annotations"]["lab_vantage"]]
        assert (r["probe_asn"], r["probe_cc"], r["probe_network_name"]) == (isp.asn, "KZ",
                                                                            isp_network_name(scenario, isp))
        assert (r["resolver_asn"], r["resolver_network_name"]) == (isp.asn, isp_network_name(scenario, isp))
        assert r["annotations"]["lab_scenario"] == "two-isps"
        assert not any(a in json.dumps(r) for a in ("10.77.0.2", "10.77.1.2"))  # the address learned: not written
    for v in scenario.vantages:
        summary = json.loads(run.jsonls[v.name].with_suffix(".summary.json").read_text())  # type: ignore[union-attr]
        assert (summary["vantage"]["source"], summary["vantage"]["database"]) == ("helper", "helper")
        assert summary["vantage"]["changed"] is False
        assert f"_KZ_{want[v.name].asn.removeprefix('AS')}_" in summary["report_id"]

    built = build_report([tmp_path / "out" / v.name for v in scenario.vantages], tmp_path / "report", lab=True)
    assert len(built.frame) == len(run.records)
    assert set(built.frame["probe_cc"].astype(str)) == {"KZ"}
    assert set(built.frame["probe_asn"].astype(str)) == {"AS64500", "AS64501"}  # two networks
    assert built.scope.n_other_country == 0
    html = built.paths.index_html.read_text(encoding="utf-8")
    for isp in scenario.isps:
        assert f"{isp.asn} ({isp_network_name(scenario, isp)})" in html


def test_lab_run_identity_helper_from_the_command_line(require_lab, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``sudo kzprobe lab run two-isps --identity helper`` as README says: the records carry each ISP's
    network, learned (the config names none); a wrong value is a usage error."""
    from probe.cli import main
    from tests.conftest import read_jsonl

    assert main(["lab", "run", "two-isps", "--identity", "nobody"]) == 64
    assert main(["lab", "run", "two-isps", "--identity", "helper", "--json", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    got = {(r["annotations"]["lab_vantage"], r["probe_asn"], r["probe_cc"])
           for f in tmp_path.glob("*/*.jsonl") for r in read_jsonl(f)}
    assert got == {("home", "AS64500", "KZ"), ("mobile", "AS64501", "KZ")}
