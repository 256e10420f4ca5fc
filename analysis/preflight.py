"""The report's cheap checks, stdlib-only: run by ``kzprobe report`` before pandas, pyarrow and
matplotlib are imported (several seconds on a Pi or a loaded machine), so a mistyped ``--in`` or an
unwritable ``--out`` is refused at once; :func:`analysis.build.build_report` runs the same checks
for library callers and raises its typed errors with these texts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["missing_input", "missing_text", "output_dir_problem", "output_dir_text"]


def missing_text(path: str | Path) -> str:
    """What is said of an input path that does not exist."""
    return f"{path}: no such file or directory"


def output_dir_text(path: str | Path, reason: str) -> str:
    """What is said of an output directory that cannot be created or written."""
    return f"cannot write to the output directory {path}: {reason}"


def missing_input(inputs: Iterable[str | Path]) -> Path | None:
    """The first of ``inputs`` that does not exist, or None."""
    for p in inputs:
        path = Path(p)
        if not path.exists():
            return path
    return None


def output_dir_problem(out: str | Path) -> str | None:
    """Create ``out`` if missing and try a write there; the reason it failed (``strerror``), or None."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_file = path / ".kzprobe-write-test"
        probe_file.touch()
        probe_file.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
