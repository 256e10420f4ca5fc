"""The helper's endpoint bound (``max_measured_endpoints``, 32) against a site behind a CDN: a name
with more addresses than the bound. Loopback helper lab (tests/helper/conftest.py)."""

from __future__ import annotations

import pytest

from probe.helper.api import MAX_CONTROL_ENDPOINTS, control_from_json
from tests.helper import conftest
from tests.helper.conftest import LabFactory

CDN = "cdn.example"
CDN_ADDRS = [f"192.0.2.{100 + i}" for i in range(40)]  # 40 A records: more than the 32 measured
PROBE_EPS = [(f"198.51.100.{1 + i}", 443) for i in range(16)]  # the probe's 16 (its own resolver's answers)


async def test_the_probes_endpoints_are_measured_first_and_the_rest_named(
        helper_lab: LabFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the helper's own 40 answers came first and filled its 32, so none of the probe's 16
    endpoints — the ones its verdict compares (did the address that failed at the probe connect from
    here?) — was measured, and the reply did not say so. Now the probe's 16 are measured, then 16 of
    the helper's own answers, and the 24 left over are named in ``x_skipped``."""
    monkeypatch.setitem(conftest.DOH_TABLE, CDN, CDN_ADDRS)
    lab = await helper_lab()
    ans = await lab.post({"url": f"https://{CDN}/", "endpoints": [f"{ip}:{p}" for ip, p in PROBE_EPS]})
    assert ans.status == 200, ans.text
    tcp = ans.json["tcp_connect"]
    assert len(tcp) == MAX_CONTROL_ENDPOINTS
    assert all(f"{ip}:{p}" in tcp for ip, p in PROBE_EPS), sorted(tcp)  # every one of the probe's
    own = [f"{a}:443" for a in CDN_ADDRS]
    assert [k for k in own if k in tcp] == own[:16]
    assert ans.json["x_skipped"] == own[16:]
    assert ans.json["dns"]["addrs"] == CDN_ADDRS
    ctl = control_from_json(ans.json, wanted=[f"{ip}:{p}" for ip, p in PROBE_EPS])
    assert ctl.usable and ctl.skipped == tuple(own[16:])
    assert all(ctl.endpoint(ip, p) is not None for ip, p in PROBE_EPS)


async def test_within_the_bound_nothing_is_skipped_and_the_reply_keeps_its_shape(helper_lab: LabFactory) -> None:
    lab = await helper_lab()
    ans = await lab.post({"url": "https://allowed.example/", "endpoints": ["192.0.2.10:443"]})
    assert ans.status == 200 and "x_skipped" not in ans.json and list(ans.json["tcp_connect"]) == ["192.0.2.10:443"]
