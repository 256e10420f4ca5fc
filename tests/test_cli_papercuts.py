"""Issue 15 part 3, the CLI papercuts a new user hits: each one a test.

kzprobe on PATH (make link), quiet exit 0 on a broken pipe everywhere, global flags after the
subcommand, --quiet (and its default under systemd), help text for every argument, IDNs in
Unicode beside their A-label, the lab table's reason never cut.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.cli import _subparsers, build_parser, under_systemd

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("KZPROBE_") and k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    e.update({"KZPROBE_CONFIG": str(ROOT / "tests" / "data" / "empty.toml"), "NO_COLOR": "1", **extra})
    return e


def test_every_argument_of_every_subcommand_has_help() -> None:
    """`kzprobe targets --help` had no text (issue 15): walk every parser, every action."""
    missing = []
    for p in _subparsers(build_parser()):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                missing += [f"{p.prog} {c.dest}" for c in a._choices_actions if not c.help]
            elif not a.help or a.help == argparse.SUPPRESS:
                if a.dest == "quiet" and p.prog not in ("kzprobe", "kzprobe run"):
                    continue  # accepted everywhere, advertised only where it means something (below)
                missing.append(f"{p.prog} {'/'.join(a.option_strings) or a.dest}")
    assert missing == []


def test_quiet_is_advertised_only_where_it_means_something() -> None:
    """-q's help ("summary only, no per-input table") appeared on subcommands that print no table
    (break test, stop 17): it is shown on the top parser and `run`, accepted silently elsewhere."""
    shown = {}
    for p in _subparsers(build_parser()):
        for a in p._actions:
            if a.dest == "quiet":
                shown[p.prog] = a.help != argparse.SUPPRESS
    assert shown["kzprobe"] and shown["kzprobe run"]
    assert [prog for prog, s in shown.items() if s] == ["kzprobe", "kzprobe run"]
    assert build_parser().parse_args(["status", "-q"]).quiet is True


@pytest.mark.parametrize("argv,verbose,quiet", [
    (["-v", "status"], 1, None),
    (["status", "-v"], 1, None),
    (["status", "-vv", "--json"], 2, None),
    (["status"], 0, None),
    (["run", "--quiet"], 0, True),
    (["--quiet", "run"], 0, True),
    (["run", "--no-quiet"], 0, False),
    (["lab", "down", "-v"], 1, None),
    (["helper", "serve", "--token-file", "t", "-q"], 0, True),
])
def test_global_flags_before_or_after_the_subcommand(argv, verbose, quiet) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_quiet_is_the_default_under_systemd() -> None:
    assert under_systemd({"INVOCATION_ID": "0f1e"})
    assert under_systemd({"JOURNAL_STREAM": "8:12345"})
    assert not under_systemd({})
    from probe.cli import _quiet

    ns = argparse.Namespace
    os.environ.pop("INVOCATION_ID", None)
    os.environ.pop("JOURNAL_STREAM", None)
    assert _quiet(ns(quiet=None)) is False
    assert _quiet(ns(quiet=True)) is True
    os.environ["INVOCATION_ID"] = "x"
    try:
        assert _quiet(ns(quiet=None)) is True
        assert _quiet(ns(quiet=False)) is False  # --no-quiet: the table in the journal too
    finally:
        del os.environ["INVOCATION_ID"]


PRINT_SUMMARY = """
import sys
from pathlib import Path
from probe.runner import Row, RunSummary
from probe.summary import print_summary
rows = [Row(input=f"https://s{i}.example/", blocking=False, accessible=True, reason="ok", rule="accessible.ok")
        for i in range(50)]
rows.append(Row(input="http://xn--80aswg.xn--80ao21a/", blocking="dns", accessible=False, reason="nxdomain",
                rule="dns.nxdomain"))
s = RunSummary(report_id="r1", path=Path("/tmp/r1.jsonl"), summary_path=Path("/tmp/r1.summary.json"), inputs=51,
               measured=51, rows=rows)
print_summary(s, quiet=sys.argv[1] == "quiet")
"""


@pytest.mark.parametrize("mode", ["quiet", "table"])
def test_quiet_prints_the_summary_line_not_the_table(mode) -> None:
    res = subprocess.run([sys.executable, "-c", PRINT_SUMMARY, mode], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, check=True)
    assert "51 of 51 inputs measured" in res.stdout
    if mode == "quiet":
        assert "s7.example" not in res.stdout
        assert len(res.stdout.splitlines()) <= 3
    else:
        assert "https://s7.example/" in res.stdout
        # IDNs in Unicode, with the A-label (what was measured) beside
        assert "http://сайт.қаз/ (xn--80aswg.xn--80ao21a)" in res.stdout


def test_display_input() -> None:
    from probe.summary import display_input

    assert display_input("https://xn--e1afmkfd.xn--p1ai/path") == "https://пример.рф/path (xn--e1afmkfd.xn--p1ai)"
    assert display_input("https://meduza.io/") == "https://meduza.io/"
    assert display_input("https://xn--broken--.example/") == "https://xn--broken--.example/"


def _closed_pipe_run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``kzprobe ARGV`` with stdout a pipe whose reader has already gone (`| head` exited)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "probe", *argv], cwd=ROOT, env=_env(), stdout=w,
                              stderr=subprocess.PIPE, check=False, timeout=120)
    finally:
        os.close(w)


@pytest.mark.parametrize("argv", [
    ("targets", "fotn-2021-kz.csv"),
    ("claims",),
    ("status", "--json"),
    ("status",),
    ("--help",),
    ("lab", "list"),
])
def test_broken_pipe_is_a_quiet_exit_0(argv, tmp_path) -> None:
    if argv[0] == "status":
        argv = (*argv, "--dir", str(tmp_path))
    res = _closed_pipe_run(*argv)
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_make_link_puts_kzprobe_on_path(tmp_path) -> None:
    """README: `make run` (root) or `sudo make link` links LINK_DIR/kzprobe to this checkout's venv."""
    venv_cmd = ROOT / ".venv" / "bin" / "kzprobe"
    if not venv_cmd.exists():
        pytest.fail(f"{venv_cmd} missing: run make venv-test")
    link_dir = tmp_path / "bin"
    cmd = ["make", "-s", "-C", str(ROOT), "-o", ".venv/bin/kzprobe", "link", f"LINK_DIR={link_dir}"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert os.readlink(link_dir / "kzprobe") == str(venv_cmd)
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and again.stdout == ""  # already right: nothing said
    (link_dir / "kzprobe").unlink()
    (link_dir / "kzprobe").write_text("#!/bin/sh\n")  # someone else's kzprobe: left alone
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "left alone" in res.stderr
    assert (link_dir / "kzprobe").read_text() == "#!/bin/sh\n"


def test_make_run_leaves_a_link_to_another_kzprobe_alone(tmp_path) -> None:
    """Break test: `make run` as root re-pointed /usr/local/bin/kzprobe from another checkout to this one
    without a word. make run/demo (LINK_KEEP_OTHER=1) leave such a link alone and say so in one line;
    `make link` re-points it and says what it pointed to; a dangling link is re-pointed either way."""
    venv_cmd = ROOT / ".venv" / "bin" / "kzprobe"
    link_dir, other = tmp_path / "bin", tmp_path / "other-checkout-kzprobe"
    other.write_text("#!/bin/sh\n")
    link_dir.mkdir()
    (link_dir / "kzprobe").symlink_to(other)
    cmd = ["make", "-s", "-C", str(ROOT), "-o", ".venv/bin/kzprobe", "link", f"LINK_DIR={link_dir}"]
    res = subprocess.run([*cmd, "LINK_KEEP_OTHER=1"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "left alone" in res.stderr and str(other) in res.stderr
    assert os.readlink(link_dir / "kzprobe") == str(other)
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)  # make link: re-pointed, said
    assert res.returncode == 0 and os.readlink(link_dir / "kzprobe") == str(venv_cmd)
    assert f"(was -> {other})" in res.stdout
    (link_dir / "kzprobe").unlink()
    (link_dir / "kzprobe").symlink_to(tmp_path / "gone")
    res = subprocess.run([*cmd, "LINK_KEEP_OTHER=1"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and os.readlink(link_dir / "kzprobe") == str(venv_cmd)


def test_lab_table_never_cuts_the_reason() -> None:
    """The comparison table cut the reason at ~90 characters, hiding the benign-SNI evidence."""
    from probe.lab.cli import print_table
    from probe.lab.run import LabRun, Outcome
    from probe.lab.scenario import load_scenario

    sc = load_scenario("kz-2021")
    site = sc.sites[0]
    reason = ("TLS handshake with SNI " + "x" * 60 + " reset (connection_reset); the same address completes "
              "with a benign SNI (example.org): SNI-based blocking EVIDENCE-TAIL")
    run = LabRun(outcomes=[Outcome(site=site, input=f"https://{site.domain}/", expect="tls", got="tls",
                                   reason=reason)], exit_code=0, jsonl=None, out_dir=Path("/tmp"))
    buf = io.StringIO()
    print_table(run, sc, file=buf)
    assert "EVIDENCE-TAIL" in buf.getvalue()  # folded over lines at spaces, but all there
    assert "benign" in buf.getvalue()
    assert "…" not in buf.getvalue()
