"""probe.campaign.run_campaign: the library call behind ``kzprobe run`` applies consent and retention.

Before issue 10, the consent gate and the retention lived only in ``probe.cli.cmd_run``; a
library user calling :func:`probe.runner.run` measured without consent and never pruned.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import probe.campaign as campaign
from probe.config import ConfigError, load_settings
from probe.targets import targets_from_urls
from tests.conftest import read_jsonl

URLS = ["https://site0.example.org/", "https://site1.example.org/"]
OLD = "20200101T000000Z_webconnectivity_KZ_9198_0123456789abcdef"  # years before any test run


def _settings(loopback_config, **changes):
    s = load_settings(config_path=loopback_config["write"](), env={})
    return dataclasses.replace(s, **changes)


async def test_refused_consent_measures_nothing_and_writes_nothing(loopback_config, monkeypatch) -> None:
    async def no_run(*a, **kw):
        raise AssertionError("measured without consent")

    monkeypatch.setattr(campaign.runner, "run", no_run)
    out = loopback_config["tmp"] / "refused"
    s = _settings(loopback_config, consent_accepted=False)
    with pytest.raises(campaign.ConsentError) as info:
        await campaign.run_campaign(targets_from_urls(URLS), s, out_dir=out)
    assert isinstance(info.value, ConfigError) and info.value.key == "consent.accepted"
    assert "consent not given" in str(info.value) and str(s.source) in str(info.value)
    assert not out.exists(), "nothing is written either"


async def test_unwritable_output_directory_fails_before_measuring(loopback_config, monkeypatch, tmp_path) -> None:
    async def no_run(*a, **kw):
        raise AssertionError("measured into an unwritable directory")

    monkeypatch.setattr(campaign.runner, "run", no_run)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(campaign.OutputDirError) as info:
        await campaign.run_campaign(targets_from_urls(URLS), _settings(loopback_config), out_dir=blocker / "out")
    assert isinstance(info.value, OSError) and info.value.path == blocker / "out" and info.value.reason


async def test_campaign_measures_then_applies_retention_keeping_this_run(loopback_config) -> None:
    """A real loopback run: both inputs measured; an old run's files deleted; this run's kept."""
    out = loopback_config["tmp"] / "out"
    out.mkdir()
    for suffix in (".jsonl", ".summary.json"):
        (out / f"{OLD}{suffix}").write_text("{}\n")
    notes = out / "notes.txt"
    notes.write_text("not a run file")
    os.utime(notes, (0, 0))
    s = _settings(loopback_config, consent_accepted=True, run_retention_days=30)
    result = await campaign.run_campaign(targets_from_urls(URLS), s, out_dir=out)
    assert result.run.measured == 2
    assert {r["input"] for r in read_jsonl(result.run.path)} == set(URLS)
    assert {p.name for p in result.retention.deleted} == {f"{OLD}.jsonl", f"{OLD}.summary.json"}
    assert result.run.path.exists() and result.run.summary_path.exists() and notes.exists()


async def test_never_asked_consent_measures(loopback_config) -> None:
    """No [consent] key (a manual run from a checkout): measured, as kzprobe run always did."""
    s = _settings(loopback_config, consent_accepted=None, run_retention_days=0)
    result = await campaign.run_campaign(targets_from_urls(URLS[:1]), s, out_dir=loopback_config["tmp"] / "o")
    assert result.run.measured == 1 and result.retention.deleted == ()


def test_cli_run_goes_through_the_campaign(loopback_config, monkeypatch, capsys) -> None:
    """``kzprobe run`` parses and prints; consent, run and retention come from run_campaign."""
    from probe import cli

    calls: list[Path] = []
    real = campaign.run_campaign

    async def spy(targets, settings, *, out_dir, **kw):
        calls.append(Path(out_dir))
        return await real(targets, settings, out_dir=out_dir, **kw)

    monkeypatch.setattr(campaign, "run_campaign", spy)
    for k in [k for k in os.environ if k.startswith("KZPROBE_")]:  # only the config file: no machine settings
        monkeypatch.delenv(k)
    out = loopback_config["tmp"] / "cli-out"
    code = cli.main(["run", "--config", str(loopback_config["write"]()), "--out", str(out), "--no-progress",
                     "--input", URLS[0]])
    assert code == cli.EX_OK and calls == [out]
