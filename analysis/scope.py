"""Which measurements a report is about: real ones or the lab's, and which country's.

``kzprobe lab run`` writes its simulated measurements into the state dir
(``<state dir>/lab/<scenario>``), where ``kzprobe report`` looks by default, so a report
must tell them apart: the lab's records carry ``annotations.lab_scenario`` (the frame's
``lab_scenario`` column, :mod:`analysis.load`). :func:`select` keeps the real
measurements (the default) or, for ``--lab``, only the lab's — never a mix — and says
what it left out. The probe's ASN is not used to tell them apart (the lab may record any).

The report's country (:data:`analysis.compare.DEFAULT_COUNTRY`, ``"KZ"``) is applied by
:func:`analysis.compare.compare`; :class:`Scope` carries the count of measurements from
other countries so the report can say that they were not used against the claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["EmptyInput", "Scope", "lab_mask", "select"]


@dataclass(frozen=True, kw_only=True)
class EmptyInput:
    """An ``--in`` that gave no measurement (random bytes, a text file, a directory of other files),
    left out of a report built from the other inputs, with what the loader read in it.

    Attributes:
        path: the ``--in`` path as given.
        files: measurement files found in it (``*.jsonl``, ``*.json``, ... or the file itself).
        lines: lines (or JSON elements) read.
        invalid: lines that are not a measurement (not JSON, not text, no keys a row needs).
        torn: torn last lines.
        skipped: measurements of other tests than web connectivity.
        why: why it was left out unopened (a FIFO, a device, a socket:
            :func:`analysis.load.refused_input`), or "" (it was read).
    """

    path: Path
    files: int = 0
    lines: int = 0
    invalid: int = 0
    torn: int = 0
    skipped: int = 0
    why: str = ""

    @property
    def counts_text(self) -> str:
        """The counts as the user reads them: "2 file(s), 18 line(s) read, 18 invalid, 0 torn" (or why it was
        not opened: "not a regular file (a FIFO (named pipe)), not opened")."""
        if self.why:
            return self.why
        return (f"{self.files} file(s), {self.lines} line(s) read, {self.invalid} invalid, {self.torn} torn"
                + (f", {self.skipped} of other tests" if self.skipped else ""))


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What the report is about and what was left out of it.

    Attributes:
        lab: True for a report on lab measurements (``--lab``): everything in it is simulated.
        scenarios: the lab scenarios of the measurements kept (``--lab``), sorted; empty otherwise.
        n_lab_left_out: lab measurements left out (real report), by scenario in ``lab_left_out``.
        lab_left_out: (scenario, measurements) left out, most first.
        n_real_left_out: real measurements left out of a lab report.
        country: the country whose claims are judged (ISO 3166-1 alpha-2), None = any.
        other_countries: (probe_cc, measurements) not used against the claims, most first.
        empty_inputs: the ``--in`` paths that gave no measurement, left out (the others did give some).
    """

    lab: bool = False
    scenarios: tuple[str, ...] = ()
    n_lab_left_out: int = 0
    lab_left_out: tuple[tuple[str, int], ...] = ()
    n_real_left_out: int = 0
    country: str | None = "KZ"
    other_countries: tuple[tuple[str, int], ...] = ()
    empty_inputs: tuple[EmptyInput, ...] = ()

    @property
    def n_other_country(self) -> int:
        """Measurements from other countries (not used against the claims)."""
        return sum(n for _, n in self.other_countries)

    @property
    def scenario_text(self) -> str:
        """The kept lab scenarios as text ("kz-2021", "kz-2021, kz-mitm"); "" for a real report."""
        return ", ".join(self.scenarios)


def lab_mask(frame: pd.DataFrame) -> pd.Series:
    """True for rows of lab measurements (a non-empty ``lab_scenario``); bool Series on ``frame``'s index."""
    if "lab_scenario" not in frame.columns:
        return pd.Series(False, index=frame.index)
    s = frame["lab_scenario"].astype("string")
    return (s.notna() & (s.str.strip() != "")).fillna(False).astype(bool)


def _counts(values: pd.Series) -> tuple[tuple[str, int], ...]:
    vc = values.astype("string").fillna("??").value_counts()
    return tuple(sorted(((str(k), int(v)) for k, v in vc.items()), key=lambda kv: (-kv[1], kv[0])))


def select(frame: pd.DataFrame, *, lab: bool = False) -> tuple[pd.DataFrame, Scope]:
    """The measurements a report uses, and what was left out.

    Args:
        frame: loaded measurements (:data:`analysis.load.COLUMNS`; ``lab_scenario`` used).
        lab: False (default): the real measurements only, the lab's left out and counted.
            True: the lab's only (a report on a simulated scenario), real ones left out.

    Returns:
        ``(kept rows with a fresh index, Scope)``; ``country`` and ``other_countries`` of
        the Scope are left at their defaults (see :func:`analysis.compare.other_countries`).
        An empty kept frame is for the caller to report (e.g. "everything is lab data:
        pass --lab").
    """
    is_lab = lab_mask(frame).to_numpy()
    if lab:
        kept = frame.loc[is_lab].reset_index(drop=True)
        scenarios = tuple(sorted(str(s).strip() for s in kept["lab_scenario"].dropna().unique()))
        return kept, Scope(lab=True, scenarios=scenarios, n_real_left_out=int((~is_lab).sum()))
    kept = frame.loc[~is_lab].reset_index(drop=True)
    left = frame.loc[is_lab, "lab_scenario"] if is_lab.any() else pd.Series([], dtype="string")
    return kept, Scope(lab=False, n_lab_left_out=int(is_lab.sum()), lab_left_out=_counts(left))
