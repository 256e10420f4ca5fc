"""The lab's expected probe exit code: 75 (EX_TEMPFAIL, vantage offline) for an outage scenario, else 0.

``expected_exit`` used EX_TEMPFAIL without importing it (NameError on every outage scenario; ruff F821).
"""

from __future__ import annotations

from types import SimpleNamespace

from probe.exitcodes import ExitCode
from probe.lab.cli import expected_exit


def test_outage_scenario_expects_tempfail_else_ok() -> None:
    assert expected_exit(SimpleNamespace(outage=True)) == ExitCode.TEMPFAIL == 75
    assert expected_exit(SimpleNamespace(outage=False)) == ExitCode.OK == 0
