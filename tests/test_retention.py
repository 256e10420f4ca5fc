"""probe.retention: old run files go, everything else stays."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from probe.config import ConfigError, load_settings
from probe.retention import apply_retention, report_id_of, run_start

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OLD = "20260101T000000Z_webconnectivity_KZ_9198_0123456789abcdef"     # 332 days before NOW
NEW = "20261120T060000Z_webconnectivity_KZ_9198_fedcba9876543210"     # 9 days before NOW
BADDATE = "20261399T000000Z_webconnectivity_KZ_9198_00000000000000aa"  # no such date: mtime decides


def summary(start: str | None) -> str:
    return json.dumps({"report_id": "x", **({"test_start_time": start} if start is not None else {})})


# (case, files {name: (content, mtime days ago)}, days, expected to remain)
CASES = [
    ("old run by report id", {f"{OLD}.jsonl": ("{}\n", 0), f"{OLD}.summary.json": (summary(None), 0)}, 90, set()),
    ("recent run kept", {f"{NEW}.jsonl": ("{}\n", 400), f"{NEW}.summary.json": (summary(None), 400)}, 90,
     {f"{NEW}.jsonl", f"{NEW}.summary.json"}),
    ("summary start time wins over the id", {f"{NEW}.jsonl": ("", 0),
                                             f"{NEW}.summary.json": (summary("2025-01-01 00:00:00"), 0)}, 90, set()),
    ("garbage summary: the id decides", {f"{NEW}.summary.json": ("{torn", 400)}, 90, {f"{NEW}.summary.json"}),
    ("jsonl without summary (killed run)", {f"{OLD}.jsonl": ("{}", 0)}, 90, set()),
    ("leftover summary tmp", {f"{OLD}.summary.tmp": ("{", 0)}, 90, set()),
    ("bad date in id: old mtime", {f"{BADDATE}.jsonl": ("", 200)}, 90, set()),
    ("bad date in id: new mtime", {f"{BADDATE}.jsonl": ("", 10)}, 90, {f"{BADDATE}.jsonl"}),
    ("not run files are never touched", {"notes.txt": ("", 999), "old.jsonl": ("", 999), "x.summary.json": ("", 999),
                                         f"{OLD}.jsonl.bak": ("", 999), f"{OLD}.csv": ("", 999),
                                         f"prefix-{OLD}.jsonl": ("", 999)}, 90,
     {"notes.txt", "old.jsonl", "x.summary.json", f"{OLD}.jsonl.bak", f"{OLD}.csv", f"prefix-{OLD}.jsonl"}),
    ("0 days keeps forever", {f"{OLD}.jsonl": ("", 999)}, 0, {f"{OLD}.jsonl"}),
    ("within the period (9.25 days old)", {f"{NEW}.jsonl": ("", 0)}, 10, {f"{NEW}.jsonl"}),
    ("past the period (9.25 days old)", {f"{NEW}.jsonl": ("", 0)}, 9, set()),
]


@pytest.mark.parametrize(("case", "files", "days", "remain"), CASES, ids=[c[0] for c in CASES])
def test_retention(tmp_path: Path, case: str, files: dict[str, tuple[str, int]], days: int, remain: set[str]) -> None:
    for name, (content, age_days) in files.items():
        p = tmp_path / name
        p.write_text(content)
        t = NOW.timestamp() - age_days * 86400
        os.utime(p, (t, t))
    res = apply_retention(tmp_path, days=days, now=NOW)
    assert {p.name for p in tmp_path.iterdir()} == remain
    assert {p.name for p in res.deleted} == set(files) - remain
    assert res.errors == ()


def test_symlinks_and_directories_are_never_followed_or_removed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious.jsonl"
    target.write_text("keep me")
    results = tmp_path / "results"
    results.mkdir()
    (results / f"{OLD}.jsonl").symlink_to(target)
    (results / f"{OLD}.summary.json").mkdir()
    res = apply_retention(results, days=1, now=NOW)
    assert res.deleted == () and target.read_text() == "keep me"
    assert (results / f"{OLD}.jsonl").is_symlink() and (results / f"{OLD}.summary.json").is_dir()


def test_the_current_run_is_kept(tmp_path: Path) -> None:
    (tmp_path / f"{OLD}.jsonl").write_text("")
    res = apply_retention(tmp_path, days=1, now=NOW, keep=[OLD])
    assert res.deleted == () and res.kept_runs == 1


def test_a_file_that_cannot_be_deleted_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rid in (OLD, "20250101T000000Z_webconnectivity_KZ_9198_0123456789abcdee"):
        (tmp_path / f"{rid}.jsonl").write_text("")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith(OLD):
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    res = apply_retention(tmp_path, days=1, now=NOW)
    assert len(res.deleted) == 1 and len(res.errors) == 1
    assert f"{OLD}.jsonl: Permission denied" in res.errors[0]


def test_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert apply_retention(tmp_path / "nope", days=90, now=NOW).deleted == ()


def test_negative_days_is_a_bug() -> None:
    with pytest.raises(ValueError, match="-1"):
        apply_retention(".", days=-1)


@pytest.mark.parametrize(("name", "rid"), [
    (f"{OLD}.jsonl", OLD), (f"{OLD}.summary.json", OLD), (f"{OLD}.summary.tmp", OLD),
    (f"{OLD}.json", None), ("20260101T000000Z_webconnectivity_KZ_9198_0123.jsonl", None),
    (f"{OLD.replace('KZ', 'kz')}.jsonl", None), ("README.jsonl", None),
])
def test_report_id_of(name: str, rid: str | None) -> None:
    assert report_id_of(name) == rid


def test_run_start_reads_the_id_time() -> None:
    assert run_start(OLD, []) == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "env", "days", "error"), [
    ("", {}, 90, None),
    ("[run]\nretention_days = 0\n", {}, 0, None),
    ("[run]\nretention_days = 30\n", {"KZPROBE_RUN_RETENTION_DAYS": "7"}, 7, None),
    ("[run]\nretention_days = -1\n", {}, None, "run.retention_days"),
    ("[run]\nretention_days = \"ninety\"\n", {}, None, "run.retention_days"),
    ("[run]\nretention_days = 1.5\n", {}, None, "run.retention_days"),
])
def test_retention_days_setting(tmp_path: Path, text: str, env: dict[str, str], days: int | None,
                                error: str | None) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    if error:
        with pytest.raises(ConfigError) as exc:
            load_settings(config_path=cfg, env=env)
        assert exc.value.key == error
    else:
        assert load_settings(config_path=cfg, env=env).run_retention_days == days


def _pcaps(results: Path, rid: str, n: int = 2) -> Path:
    """``<rid>.pcap/`` with ``n`` captures, as ``kzprobe run --pcap`` leaves it."""
    d = results / f"{rid}.pcap"
    d.mkdir()
    for i in range(n):
        (d / f"uid{i}.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    return d


def test_packet_captures_go_with_their_run(tmp_path: Path) -> None:
    """``--pcap`` directories are covered by run.retention_days like the JSONL (issue 16 part 3)."""
    for rid in (OLD, NEW):
        (tmp_path / f"{rid}.jsonl").write_text("{}\n")
        _pcaps(tmp_path, rid)
    res = apply_retention(tmp_path, days=90, now=NOW)
    assert {p.name for p in tmp_path.iterdir()} == {f"{NEW}.jsonl", f"{NEW}.pcap"}
    assert {str(p.relative_to(tmp_path)) for p in res.deleted} == {
        f"{OLD}.jsonl", f"{OLD}.pcap", f"{OLD}.pcap/uid0.pcap", f"{OLD}.pcap/uid1.pcap"}
    assert len(list((tmp_path / f"{NEW}.pcap").iterdir())) == 2 and res.errors == ()
    # captures whose run files are gone: the report id's time decides; the current run is kept
    _pcaps(tmp_path, OLD, 1)
    assert apply_retention(tmp_path, days=90, now=NOW, keep=[OLD]).deleted == ()
    apply_retention(tmp_path, days=90, now=NOW)
    assert not (tmp_path / f"{OLD}.pcap").exists()


def test_packet_capture_directories_keep_what_is_not_theirs(tmp_path: Path) -> None:
    """Only ``*.pcap`` regular files in it go; anything else stays, with the directory; a symlinked
    capture directory is never followed."""
    d = _pcaps(tmp_path, OLD, 1)
    (d / "notes.txt").write_text("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.pcap").write_text("keep")
    (d / "link.pcap").symlink_to(outside / "precious.pcap")
    other = "20250101T000000Z_webconnectivity_KZ_9198_0123456789abcdee"
    (tmp_path / f"{other}.pcap").symlink_to(outside, target_is_directory=True)
    res = apply_retention(tmp_path, days=1, now=NOW)
    assert [p.name for p in res.deleted] == ["uid0.pcap"]
    assert (d / "notes.txt").read_text() == "mine" and (d / "link.pcap").is_symlink()
    assert (outside / "precious.pcap").read_text() == "keep" and len(res.errors) == 1
    assert "left in place" in res.errors[0]
