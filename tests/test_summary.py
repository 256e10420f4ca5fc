"""probe.summary: plain text for the journal and pipes, colour only on a TTY without NO_COLOR."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: An SGR sequence that sets a foreground colour (30-38, 90-97), e.g. "\x1b[1;31m".
COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")
ESCAPE = re.compile(r"\x1b\[")

PRINT_OFFLINE_SUMMARY = """
from datetime import datetime, timezone
from pathlib import Path
from probe.health import HealthReport
from probe.runner import Row, RunSummary
from probe.summary import print_summary
h = HealthReport(checked_at=datetime.now(timezone.utc), canaries=(), online=False,
                 control_intercepted_by=None, ipv6_usable=None)
s = RunSummary(report_id="r1", path=Path("/tmp/r1.jsonl"), summary_path=Path("/tmp/r1.summary.json"), inputs=1,
               measured=1, health_before=h, rows=[Row(input="https://a.example/", blocking=None, accessible=None,
                                                      reason="vantage offline", rule="vantage.offline")])
print_summary(s)
"""


def run_summary(*, tty: bool, env: dict[str, str]) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM")}
    e.update({"TERM": "xterm-256color", **env})
    if not tty:
        res = subprocess.run([sys.executable, "-c", PRINT_OFFLINE_SUMMARY], cwd=ROOT, env=e, capture_output=True,
                             check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout.decode()
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", PRINT_OFFLINE_SUMMARY], cwd=ROOT, env=e, stdout=sub,
                            stderr=subprocess.PIPE)
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return b"".join(chunks).decode()


@pytest.mark.parametrize(("case", "tty", "env", "colour", "escapes"), [
    ("journal / pipe", False, {}, False, False),
    ("pipe even with FORCE_COLOR", False, {"FORCE_COLOR": "1"}, False, False),
    ("terminal", True, {}, True, True),
    ("terminal with NO_COLOR", True, {"NO_COLOR": "1"}, False, True),
    ("terminal with empty NO_COLOR", True, {"NO_COLOR": ""}, True, True),
])
def test_summary_colour(case: str, tty: bool, env: dict[str, str], colour: bool, escapes: bool) -> None:
    out = run_summary(tty=tty, env=env)
    assert "VANTAGE OFFLINE" in out
    assert bool(COLOUR.search(out)) is colour
    assert bool(ESCAPE.search(out)) is escapes


@pytest.mark.parametrize(("rows", "io_error", "says", "not_says"), [
    ([("control.dns_failed", None)] * 2 + [("https.verified", False)], None,
     "DNS CONTROL FAILED for 2 of 3 inputs", "OUTPUT ERROR"),
    ([("https.verified", False)], "OSError: [Errno 28] No space left on device",
     "OUTPUT ERROR — the run stopped: OSError: [Errno 28] No space left on device", "DNS CONTROL FAILED"),
    ([("https.verified", False)], None, "measurements:", "DNS CONTROL FAILED"),
])
def test_summary_banners(capsys, rows, io_error, says, not_says) -> None:
    """A failed DoH control or a full disk is said in the summary, not only per row (break test, 15 and 4)."""
    from datetime import datetime

    from probe.health import HealthReport
    from probe.runner import Row, RunSummary
    from probe.summary import print_summary

    h = HealthReport(checked_at=datetime.now(UTC), canaries=(), online=True, control_intercepted_by=None,
                     ipv6_usable=None)
    s = RunSummary(report_id="r1", path=Path("/tmp/r1.jsonl"), summary_path=Path("/tmp/r1.summary.json"),
                   inputs=len(rows), measured=len(rows), health_before=h, io_error=io_error,
                   rows=[Row(input=f"https://{i}.example/", blocking=b, accessible=None, reason="r", rule=rule)
                         for i, (rule, b) in enumerate(rows)])
    print_summary(s)
    out = capsys.readouterr().out
    assert says in out and not_says not in out
