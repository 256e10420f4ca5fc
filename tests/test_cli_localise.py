"""``kzprobe run --localise`` when censor localisation cannot happen (break test: it was silently ignored).

Localisation is one of the packet tests (probe/packets/centrace.py): it needs them on (``[packets] enabled``),
``CAP_NET_RAW`` (an ``AF_PACKET`` socket) and endpoints dialled where DNS said (no ``[connect_to]``). Asked for
on the command line without one of them, the run pretended: it measured, wrote no localisation and said nothing
(with ``[packets] enabled = false``) or only that "packet-level evidence is off". Now it refuses before
measuring: exit 64 (EX_USAGE, contradictory options), one line naming the flag, what is missing and the remedy.
"""

from __future__ import annotations

import argparse
import os

import pytest

import probe.runner as runner_mod
from probe import cli
from probe.packets.privileges import Privileges

CAN = Privileges(capture=True, pcap=True)
CANNOT = Privileges(capture=False, pcap=False, reason="no CAP_NET_RAW (raw sockets are refused to this process)")


@pytest.fixture
def clean_env(monkeypatch):  # type: ignore[no-untyped-def]
    for k in [k for k in os.environ if k.startswith("KZPROBE_") or k == "INVOCATION_ID"]:  # only the config file
        monkeypatch.delenv(k)


@pytest.mark.parametrize(("extra", "priv", "missing", "remedy"), [
    ("[packets]\nenabled = false\n", CAN, "[packets] enabled = false", "set [packets] enabled = true"),
    ("", CANNOT, "no CAP_NET_RAW", "run as root, or grant CAP_NET_RAW"),
    ("", CAN, "[connect_to] remaps the endpoints", "remove it"),  # the loopback world remaps every endpoint
])
@pytest.mark.parametrize("localise", ["always", "manual"])
def test_localise_that_cannot_happen_is_refused_before_measuring(loopback_config, monkeypatch, capsys, clean_env,  # type: ignore[no-untyped-def]
                                                                 extra, priv, missing, remedy, localise) -> None:
    monkeypatch.setattr(runner_mod.packet_privileges, "check", lambda: priv)
    out = loopback_config["tmp"] / "out"
    code = cli.main(["run", "--config", str(loopback_config["write"](extra=extra)), "--out", str(out),
                     "--no-progress", "--localise", localise, "--input", "https://site0.example.org/"])
    err = capsys.readouterr().err
    assert code == cli.EX_USAGE, err
    (line,) = [ln for ln in err.splitlines() if "--localise" in ln]
    assert line.startswith(f"kzprobe: --localise {localise}: censor localisation needs the packet tests")
    assert missing in line and remedy in line and "--localise never" in line
    assert not out.exists() or not any(out.iterdir()), "nothing measured"


@pytest.mark.parametrize(("flag", "env"), [("never", {}), ("manual", {"INVOCATION_ID": "x"})])
def test_localise_not_asked_for_here_runs(loopback_config, monkeypatch, capsys, clean_env, flag, env) -> None:  # type: ignore[no-untyped-def]
    """``--localise never``, and ``manual`` on the systemd timer (no localisation asked for this run), measure as
    before."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(runner_mod.packet_privileges, "check", lambda: CANNOT)
    out = loopback_config["tmp"] / "out"
    code = cli.main(["run", "--config", str(loopback_config["write"](extra="[packets]\nenabled = false\n")),
                     "--out", str(out), "--no-progress", "--localise", flag, "--input", "https://site0.example.org/"])
    assert code == cli.EX_OK, capsys.readouterr().err
    assert len(list(out.glob("*.jsonl"))) == 1


def _readme_commands() -> list[str]:
    """The kzprobe commands README shows: every line of its plain code blocks that runs a subcommand, and every
    inline `kzprobe run …` (the run's options shown in prose)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    subcommands = {name for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
                   for name in a.choices}
    cmds = re.findall(r"`(kzprobe run [^`\n]+)`", text)
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = line.split("  #")[0].strip().removeprefix("sudo ").split()
            if words[:1] == ["kzprobe"] and len(words) > 1 and words[1] in subcommands:
                cmds.append(" ".join(words))
    return cmds


def test_readme_commands_parse(capsys) -> None:  # type: ignore[no-untyped-def]
    """Break test F9: README showed a bare `kzprobe run --localise`, which the CLI refuses (it takes
    manual/always/never). Every command README shows must be one the parser takes."""
    import shlex

    cmds = _readme_commands()
    assert any("--localise" in c for c in cmds) and len(cmds) > 15
    parser = cli.build_parser()
    bad = []
    for c in cmds:
        try:
            parser.parse_args(shlex.split(c)[1:])
        except SystemExit as exc:
            if exc.code:
                bad.append((c, capsys.readouterr().err.strip().splitlines()[-1]))
    assert bad == []
