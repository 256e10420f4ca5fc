"""Retention: delete a results directory's old run files, and nothing else.

A run writes ``<report_id>.jsonl`` and ``<report_id>.summary.json`` (:mod:`probe.runner`).
After each run, :func:`apply_retention` deletes the files of the runs that started more
than ``run.retention_days`` days ago (default 90; 0 keeps everything). A run's start
time is the summary's ``test_start_time``, else the time in its report id
(``YYYYMMDDThhmmssZ_...``, :func:`probe.records.new_report_id`), else the file's mtime.

Only regular files directly in the directory whose names are a report id plus one of
:data:`RUN_SUFFIXES` are ever deleted: no symlinks, no other files. The one directory a run
may leave, its packet captures ``<report_id>.pcap/`` (``kzprobe run --pcap``, issue 16), goes
with its run: the regular ``*.pcap`` files directly in it, then the directory when that left
it empty (anything else in it stays, and so does the directory).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger("kzprobe.retention")

#: A report id as :func:`probe.records.new_report_id` makes it:
#: ``20261129T101500Z_webconnectivity_KZ_9198_0123456789abcdef``.
REPORT_ID_RE = re.compile(r"(?P<start>\d{8}T\d{6}Z)_[a-z0-9]+_[A-Z]{2}_\d+_[0-9a-f]{16}")

#: The files one run leaves: its measurements, its summary, a summary interrupted mid-write.
RUN_SUFFIXES = (".jsonl", ".summary.json", ".summary.tmp")
#: The directory of a run's packet captures (probe.runner, ``--pcap``): ``<report_id>.pcap/<uid>.pcap``.
PCAP_DIR_SUFFIX = ".pcap"


@dataclass(frozen=True, kw_only=True)
class RetentionResult:
    """What :func:`apply_retention` did.

    Attributes:
        deleted: the files removed, sorted.
        kept_runs: number of runs (report ids) left in place.
        errors: one message per file that could not be removed (permission, ...).
    """

    deleted: tuple[Path, ...] = ()
    kept_runs: int = 0
    errors: tuple[str, ...] = ()


def run_files(directory: str | Path) -> dict[str, list[Path]]:
    """The run files directly in ``directory``, grouped by report id.

    Returns:
        ``{report_id: [paths]}``; empty when the directory does not exist. Symlinks,
        directories and every name that is not ``<report_id><suffix>`` are left out.
    """
    runs: dict[str, list[Path]] = {}
    try:
        entries = list(Path(directory).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return runs
    for p in entries:
        rid = report_id_of(p.name)
        if rid is None or p.is_symlink() or not p.is_file():
            continue
        runs.setdefault(rid, []).append(p)
    return runs


def pcap_dirs(directory: str | Path) -> dict[str, Path]:
    """The runs' packet-capture directories directly in ``directory`` (no symlinks), by report id."""
    out: dict[str, Path] = {}
    try:
        entries = list(Path(directory).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return out
    for p in entries:
        stem = p.name[: -len(PCAP_DIR_SUFFIX)] if p.name.endswith(PCAP_DIR_SUFFIX) else ""
        if stem and REPORT_ID_RE.fullmatch(stem) and not p.is_symlink() and p.is_dir():
            out[stem] = p
    return out


def _delete_pcap_dir(d: Path, errors: list[str]) -> list[Path]:
    """The ``*.pcap`` regular files directly in ``d``, then ``d`` if empty; the paths deleted."""
    done: list[Path] = []
    try:
        entries = sorted(d.iterdir())
    except OSError as exc:
        errors.append(f"{d}: {exc.strerror or exc}")
        return done
    for p in entries:
        if not p.name.endswith(".pcap") or p.is_symlink() or not p.is_file():
            continue
        try:
            p.unlink()
            done.append(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"{p}: {exc.strerror or exc}")
    try:
        d.rmdir()
        done.append(d)
    except OSError as exc:  # not empty: something that is not ours stays, and so does the directory
        errors.append(f"{d}: {exc.strerror or exc} (left in place)")
        log.warning("retention: %s left in place: %s", d, exc.strerror or exc)
    return done


def report_id_of(name: str) -> str | None:
    """The report id of a run file name, None when ``name`` is not a kzprobe run file."""
    for suffix in RUN_SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            if REPORT_ID_RE.fullmatch(stem):
                return stem
    return None


def run_start(report_id: str, files: Iterable[Path]) -> datetime | None:
    """When the run ``report_id`` started (UTC): the summary's ``test_start_time``, else
    the report id's timestamp, else the newest mtime of ``files``; None if none is known."""
    files = list(files)
    for p in files:
        if p.name.endswith(".summary.json"):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
                t = datetime.fromisoformat(str(data["test_start_time"]).replace(" ", "T"))
                return t if t.tzinfo else t.replace(tzinfo=UTC)
            except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
                pass
    m = REPORT_ID_RE.fullmatch(report_id)
    if m:
        try:
            return datetime.strptime(m["start"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            pass
    mtimes = []
    for p in files:
        try:
            mtimes.append(p.stat().st_mtime)
        except OSError:
            pass
    return datetime.fromtimestamp(max(mtimes), UTC) if mtimes else None


def apply_retention(directory: str | Path, *, days: int, now: datetime | None = None,
                    keep: Iterable[str] = ()) -> RetentionResult:
    """Delete the run files in ``directory`` of runs that started more than ``days`` days before ``now``.

    Args:
        directory: a results directory (the state directory, ``--out``).
        days: the retention period in days; 0 keeps everything.
        now: the reference time (UTC, default: now).
        keep: report ids never to delete (the run that just finished).

    Returns:
        A :class:`RetentionResult`. Files that cannot be deleted are listed in
        ``errors`` and logged; they are not fatal.

    Raises:
        ValueError: ``days`` is negative.
    """
    if days < 0:
        raise ValueError(f"retention days must be >= 0, got {days}")
    runs = run_files(directory)
    pcaps = pcap_dirs(directory)
    for rid in pcaps:
        runs.setdefault(rid, [])  # captures whose run files are gone: judged by the report id's time
    if days == 0:
        return RetentionResult(kept_runs=len(runs))
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    keep = set(keep)
    deleted: list[Path] = []
    errors: list[str] = []
    kept = 0
    for rid, files in sorted(runs.items()):
        start = run_start(rid, files or [pcaps[rid]])
        if rid in keep or start is None or start >= cutoff:
            kept += 1
            continue
        for p in sorted(files):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors.append(f"{p}: {exc.strerror or exc}")
                log.warning("retention: cannot delete %s: %s", p, exc.strerror or exc)
                continue
            deleted.append(p)
            log.info("retention: deleted %s (run started %s, more than %d days ago)", p, start.isoformat(), days)
        if rid in pcaps:
            gone = _delete_pcap_dir(pcaps[rid], errors)
            deleted.extend(gone)
            if gone:
                log.info("retention: deleted %d packet captures of %s (run started %s, more than %d days ago)",
                         len(gone), rid, start.isoformat(), days)
    return RetentionResult(deleted=tuple(sorted(deleted)), kept_runs=kept, errors=tuple(errors))
