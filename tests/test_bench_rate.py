"""The loopback bench's rate figures (issue 13): the steady state leaves out the run's one
start-up and its one last listening window; end to end keeps them."""

from __future__ import annotations

import pytest

from bench.worker import steady_state


def test_the_steady_rate_is_the_pace_between_the_10th_and_90th_percentile_records() -> None:
    # 3 s of start-up (health check + the first window), then 100 records/s, then a 1.5 s tail
    done = [3.0 + i / 100 for i in range(1000)]
    wall = done[-1] + 1.5
    got = steady_state(done, wall)
    assert got["steady_rate"] == pytest.approx(100.0)
    assert got["first_record_s"] == 3.0 and got["tail_s"] == pytest.approx(1.5)
    assert 1000 / wall < 80  # end to end, the fixed costs weigh: the two figures differ


def test_too_few_records_give_no_steady_rate() -> None:
    assert steady_state([0.5, 0.6], 2.0) == {"first_record_s": 0.5, "steady_rate": None, "tail_s": 2.0 - 0.6}
    assert steady_state([], 1.0) == {"first_record_s": None, "steady_rate": None, "tail_s": None}


def test_the_bench_config_measures_every_input(tmp_path) -> None:
    """The service's 3 h time budget (issue 11) cut the bench's concurrency-1 pass to a
    fraction of its 500 inputs while its CPU was divided by 500: the bench's config has none."""
    import trustme

    from bench.worker import write_config
    from probe.config import load_settings

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    world = {"n_servers": 2, "dns_port": 5353, "doh_port": 8443, "ca_pem": str(ca), "web_ports": [4431, 4432]}
    path = write_config({"concurrency": 1, "out_dir": str(tmp_path / "out"), "world": world, "listen_s": None})
    s = load_settings(config_path=path, env={})
    assert s.run_time_budget_s is None and s.run_concurrency == 1
