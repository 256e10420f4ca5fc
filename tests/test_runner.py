"""The runner in-process: one bad input never ends the run; deadlines keep evidence;
a broken local resolver is not reported as DNS blocking."""

from __future__ import annotations

import dataclasses

import probe.runner as runner_mod
from probe.config import load_settings
from probe.store import read_jsonl
from probe.targets import targets_from_urls

URLS = [f"https://site{i}.example.org/" for i in range(5)]


def _settings(loopback_config, **changes):
    s = load_settings(config_path=loopback_config["write"](), env={})
    return dataclasses.replace(s, **changes)


async def test_an_internal_error_in_one_input_gives_one_inconclusive_record(loopback_config, monkeypatch) -> None:
    real_judge = runner_mod.judge

    def judge(obs, **kw):
        if obs.target.domain == "site2.example.org":
            raise RuntimeError("boom")
        return real_judge(obs, **kw)

    monkeypatch.setattr(runner_mod, "judge", judge)
    out = loopback_config["tmp"] / "out"
    summary = await runner_mod.run(targets_from_urls(URLS), _settings(loopback_config), out_dir=out)
    recs = {r["input"]: r["test_keys"] for r in read_jsonl(summary.path)}
    assert len(recs) == 5 and summary.measured == 5
    bad = recs["https://site2.example.org/"]
    assert (bad["blocking"], bad["x_rule"]) == (None, "internal_error") and "boom" in bad["x_reason"]
    assert bad["queries"], "what was observed before the error is kept"
    assert all(recs[u]["blocking"] is False for u in URLS if "site2" not in u)


async def test_measurement_deadline_keeps_the_steps_observed_before_it(loopback_config, tcp_listener) -> None:
    silent = await tcp_listener("silent")
    s = _settings(loopback_config)
    s = dataclasses.replace(s, connect_to={**s.connect_to, "192.0.2.10:443": silent.endpoint},
                            timeouts=dataclasses.replace(s.timeouts, tls_s=5.0, measurement_s=1.0))
    summary = await runner_mod.run(targets_from_urls(URLS[:1]), s, out_dir=loopback_config["tmp"] / "o")
    (rec,) = list(read_jsonl(summary.path))
    tk = rec["test_keys"]
    assert (tk["blocking"], tk["x_rule"]) == (None, "deadline")
    assert "endpoints step" in tk["x_reason"]
    assert tk["queries"] and tk["x_doh_queries"], "DNS observed before the deadline is kept"
    assert {"dns_consistency", "x_measurement_uid", "control_failure"} <= tk.keys() | rec.keys()


async def test_broken_local_resolver_is_not_dns_blocking(loopback_config) -> None:
    s = _settings(loopback_config, dns_udp_resolvers=(loopback_config["closed"],))
    summary = await runner_mod.run(targets_from_urls(URLS[:2]), s, out_dir=loopback_config["tmp"] / "o")
    assert summary.health_before is not None and summary.health_before.resolver_failure
    recs = list(read_jsonl(summary.path))
    assert [r["test_keys"]["x_rule"] for r in recs] == ["vantage.resolver_broken"] * 2
    assert all(r["test_keys"]["blocking"] is None for r in recs)


async def test_resolver_that_works_for_the_canary_keeps_dns_verdicts(loopback_config) -> None:
    s = _settings(loopback_config)
    summary = await runner_mod.run(targets_from_urls(["https://nxdomain-here.example.org/"]), s,
                                   out_dir=loopback_config["tmp"] / "o")
    assert summary.health_before.resolver_failure is None
    (rec,) = list(read_jsonl(summary.path))
    # unknown to the ISP resolver (no reply: timeout), NXDOMAIN at the control: down, not blocked
    assert (rec["test_keys"]["blocking"], rec["test_keys"]["x_rule"]) == (False, "dns.both_fail")

