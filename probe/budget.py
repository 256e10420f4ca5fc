"""The run's time budget: its worst case computed before it starts, and a plan that fits.

systemd stops ``kzprobe.service`` after ``TimeoutStartSec=3h`` (systemd/kzprobe.service):
a run cut there loses its health check after the run and its summary's last word, and the
inputs at the end of the list are never measured, run after run. At the defaults
``kz.csv`` + ``global.csv`` would take about 7 hours at worst (issue 11, 4).

So before starting, :func:`plan` computes the run's worst-case duration from the number
of inputs, the concurrency and the timeouts — every input may use its whole measurement
deadline (``timeouts.measurement_s``), plus the two vantage health checks — and compares
it with the budget (``run.time_budget_s``: the unit's limit minus a margin, by default).
When it does not fit, the run says so and
measures the inputs that fit at worst, starting at an offset that rotates: the next run
starts where this one stopped (the offset is kept in the output directory, per input
list), so that over a few runs every input is measured, not always the first ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from probe.config import Timeouts

log = logging.getLogger("kzprobe.budget")

#: ``TimeoutStartSec`` of systemd/kzprobe.service (a test ties the two together).
UNIT_TIMEOUT_START_S: Final = 3 * 3600.0
#: Kept free of measurements within the unit's limit: start-up, writing, retention.
MARGIN_S: Final = 600.0
#: The default ``run.time_budget_s``.
DEFAULT_BUDGET_S: Final = UNIT_TIMEOUT_START_S - MARGIN_S
#: Where the rotation offsets are kept, in the output (state) directory.
ROTATION_FILE: Final = ".kzprobe-rotation.json"

T = TypeVar("T")


def health_check_worst_s(t: Timeouts) -> float:
    """One vantage health check at worst: DNS, then connect and TLS to the canaries, and
    the helper's health endpoint (at most 15 s), its steps run concurrently."""
    return t.dns_s + t.connect_s + t.tls_s + min(t.control_deadline_s, 15.0)


def worst_case_s(n_inputs: int, concurrency: int, t: Timeouts) -> float:
    """The run's worst-case duration (seconds): every input using its whole measurement
    deadline, ``concurrency`` at a time, plus the health checks before and after."""
    waves = math.ceil(n_inputs / max(concurrency, 1))
    return waves * t.measurement_s + 2 * health_check_worst_s(t)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a run will measure.

    Attributes:
        total: inputs given.
        selected: inputs this run measures (``total`` when everything fits).
        offset: index of the first selected input in the given order.
        worst_case_s: worst-case duration of measuring all ``total`` inputs.
        planned_worst_s: worst-case duration of the selected ones.
        budget_s: the budget planned against; None = no budget (everything is measured).
    """

    total: int
    selected: int
    offset: int
    worst_case_s: float
    planned_worst_s: float
    budget_s: float | None

    @property
    def fits(self) -> bool:
        return self.selected == self.total

    def message(self) -> str:
        """One sentence for the log and the summary."""
        if self.fits:
            return (f"{self.total} inputs, worst case {self.worst_case_s / 60:.0f} min"
                    + (f" within the budget of {self.budget_s / 60:.0f} min" if self.budget_s else ""))
        return (f"{self.total} inputs would take up to {self.worst_case_s / 3600:.1f} h at worst, more than the "
                f"budget of {self.budget_s / 3600 if self.budget_s else 0:.1f} h (run.time_budget_s; the service "
                f"stops after {UNIT_TIMEOUT_START_S / 3600:.0f} h): measuring {self.selected} of them, from input "
                f"{self.offset + 1}; the next run starts where this one stops")

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "selected": self.selected, "offset": self.offset, "fits": self.fits,
                "worst_case_s": round(self.worst_case_s, 1), "planned_worst_s": round(self.planned_worst_s, 1),
                "budget_s": self.budget_s}


def _list_key(inputs: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(inputs).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _read_offsets(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_bytes()[:65536])
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)} \
        if isinstance(data, dict) else {}


def _write_offsets(path: Path, offsets: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(dict(list(offsets.items())[-32:])), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # the rotation is a nicety: the run goes on from offset 0 next time
        log.warning("cannot keep the rotation offset in %s: %s", path, exc.strerror or exc)


def plan(items: Sequence[T], inputs: Sequence[str], *, concurrency: int, timeouts: Timeouts,
         budget_s: float | None, state_dir: Path | None) -> tuple[list[T], Plan]:
    """Choose what this run measures so that its worst case fits ``budget_s``.

    Args:
        items: the targets, in list order.
        inputs: their input URLs (the rotation is kept per distinct list of inputs).
        concurrency, timeouts: the run's.
        budget_s: seconds the run may take at worst; None = no limit.
        state_dir: where the rotation offset is kept (the output directory); None = no
            rotation (always from the first input).

    Returns:
        (the items to measure, in rotated order; the :class:`Plan`).
    """
    total = len(items)
    worst = worst_case_s(total, concurrency, timeouts)
    if budget_s is None or worst <= budget_s or total == 0:
        return list(items), Plan(total=total, selected=total, offset=0, worst_case_s=worst, planned_worst_s=worst,
                                 budget_s=budget_s)
    waves = max(1, math.floor((budget_s - 2 * health_check_worst_s(timeouts)) / timeouts.measurement_s))
    fit = min(total, waves * max(concurrency, 1))
    key = _list_key(inputs)
    path = state_dir / ROTATION_FILE if state_dir is not None else None
    offsets = _read_offsets(path) if path is not None else {}
    offset = offsets.get(key, 0) % total
    chosen = [items[(offset + i) % total] for i in range(fit)]
    if path is not None:
        offsets.pop(key, None)
        offsets[key] = (offset + fit) % total
        _write_offsets(path, offsets)
    p = Plan(total=total, selected=fit, offset=offset, worst_case_s=worst,
             planned_worst_s=worst_case_s(fit, concurrency, timeouts), budget_s=budget_s)
    return chosen, p


__all__ = ["DEFAULT_BUDGET_S", "MARGIN_S", "ROTATION_FILE", "UNIT_TIMEOUT_START_S", "Plan", "health_check_worst_s",
           "plan", "worst_case_s"]
