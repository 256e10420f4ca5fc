"""A measurement campaign as a library call: the consent gate, the run, the retention.

``kzprobe run`` is a thin shell over :func:`run_campaign` (it parses flags, loads the target list,
prints the summary and maps exceptions to exit codes); a library user gets the same guarantees:

1. **Consent** (:func:`check_consent`): ``[consent] accepted = false`` in the config refuses to
   measure (:class:`ConsentError`); nothing is contacted, no file is written. ``None`` (never
   asked: a manual run from a checkout) measures, as ``kzprobe run`` always did.
2. **Output directory** (:func:`prepare_output_dir`): created and tried with a write before any
   measurement (:class:`OutputDirError`), so a read-only directory fails at once, not after an
   hour of measuring.
3. **The run** (:func:`probe.runner.run`): every input measured and written as it finishes.
4. **Retention** (:func:`probe.retention.apply_retention`): this directory's run files older
   than ``run.retention_days`` deleted, never the run that just finished. Only after a run that
   ended (an interrupted run, a cancelled task, deletes nothing).

Signal handling (SIGTERM/SIGINT → cancel) stays with the caller: a library does not install
process-wide handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe import runner
from probe.config import ConfigError, Settings
from probe.control import Control
from probe.errors import KzprobeError
from probe.retention import RetentionResult, apply_retention
from probe.runner import RunSummary
from probe.targets import Target

__all__ = ["CampaignResult", "ConsentError", "OutputDirError", "check_consent", "prepare_output_dir",
           "run_campaign"]


class ConsentError(ConfigError):
    """The config says the risk notice was not accepted (``[consent] accepted = false``)."""

    def __init__(self, source: str) -> None:
        super().__init__("consent.accepted", f"consent not given: read the risk notice in {source} and set "
                                             "[consent] accepted = true there to allow measurements "
                                             "(README: Deploying)")
        self.source = source


class OutputDirError(KzprobeError, OSError):
    """The output directory cannot be created or written; ``path`` names it, ``strerror`` says why."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(exc.errno, f"cannot write to output directory {path}: {exc.strerror or exc}")
        self.path = path
        self.reason = exc.strerror or str(exc)


@dataclass(frozen=True, kw_only=True)
class CampaignResult:
    """What :func:`run_campaign` did.

    Attributes:
        run: the run's summary (:class:`probe.runner.RunSummary`: counts, paths, offline or not).
        retention: what the retention deleted afterwards (and what it could not).
    """

    run: RunSummary
    retention: RetentionResult


def check_consent(settings: Settings) -> None:
    """Raise :class:`ConsentError` when ``settings`` say the risk notice was refused.

    ``consent_accepted`` ``True`` (accepted) and ``None`` (no ``[consent]`` key: never asked)
    measure; ``False`` does not.
    """
    if settings.consent_accepted is False:
        raise ConsentError(settings.source)


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and check it is writable (a file is created and removed).

    Raises:
        OutputDirError: (an ``OSError``) naming the directory and why.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / ".write-test"
        probe_file.touch()
        probe_file.unlink()
    except OSError as exc:
        raise OutputDirError(out, exc) from exc
    return out


async def run_campaign(targets: Sequence[Target], settings: Settings, *, out_dir: str | Path,
                       control: Control | None = None,
                       on_record: Callable[[dict[str, Any]], None] | None = None,
                       on_progress: Callable[[int, int], None] | None = None) -> CampaignResult:
    """Measure ``targets`` with consent checked first and the retention applied after.

    Args:
        targets: the inputs (:func:`probe.targets.load_targets` / ``targets_from_urls``).
        settings: the run settings (:func:`probe.config.load_settings`).
        out_dir: the results directory; the run writes ``<report_id>.jsonl`` and
            ``<report_id>.summary.json`` there.
        control: a full control to use instead of the configured helper (tests, the lab).
        on_record: called with each record after it is written.
        on_progress: called with (done, total) after each measurement.

    Returns:
        A :class:`CampaignResult`.

    Raises:
        ConsentError: ``[consent] accepted = false`` (nothing measured, nothing written).
        OutputDirError: ``out_dir`` cannot be created or written (nothing measured).
        OSError: writing failed during the run (what was written is kept).
        ValueError: bad configuration found when the run starts (e.g. an extra-anchors file
            without a certificate).
        asyncio.CancelledError: the task was cancelled; measurements so far are kept and no
            retention is applied.
    """
    check_consent(settings)
    out = prepare_output_dir(out_dir)
    from probe.vantage import identify

    configured = settings
    settings, identity = await identify(configured)  # the network, where the config does not name it

    async def again() -> Any:
        return (await identify(configured))[1]

    summary = await runner.run(targets, settings, out_dir=out, control=control, on_record=on_record,
                               on_progress=on_progress, vantage_identity=identity,
                               identify_again=again if identity.source in ("helper", "doh_trace") else None)
    retention = apply_retention(out, days=settings.run_retention_days, keep=[summary.report_id])
    return CampaignResult(run=summary, retention=retention)
