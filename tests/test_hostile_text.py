"""Text that others wrote (a site's title, an input, ``--out``, a scenario's names) is shown as it is
on the terminal: never read as Rich markup (``[/bold]`` crashed ``kzprobe run`` with MarkupError and
exit 1, ``[fd77::1]`` vanished, ``[link=...]`` became a link: break test 24, finding 1), and its
terminal controls are shown escaped, as ``kzprobe show`` shows them (:func:`probe.safetext.terminal_safe`)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.test_cli import kzprobe

MARKUP_TITLE = "[/bold] [link=https://evil.example/]CLICK[/link]"
PAGE = f"<html><head><title>{MARKUP_TITLE}</title></head><body>hi</body></html>".encode()
#: A directory name with Rich markup, an OSC that sets the terminal's title (ESC ] 0 ; ... BEL), a CSI that
#: clears the screen and a right-to-left override.
OUT_NAME = "o[/x]\x1b]0;PWNED\x07\x1b[2J\u202e"
OUT_SHOWN = "o[/x]\\x1b]0;PWNED\\x07\\x1b[2J\\u202e"
INPUTS = ("http://site0.example.org/", "http://site1.example.org/[/x]", "http://[fd77::1]/")


@pytest.mark.parametrize("mode", ["table", "--quiet", "--json"])
async def test_run_shows_others_text_literally(loopback_config_serving, mode: str) -> None:
    """A title ``[/bold] [link=…]CLICK[/link]``, inputs with ``[/x]`` and ``[fd77::1]`` and an ``--out``
    with markup and terminal controls: the usual exit code (0: no verdict is an error), the summary
    shows each of them literally, the controls escaped; no traceback. The old code exited 1 with
    rich.errors.MarkupError in every mode (checked)."""
    world = await loopback_config_serving({"/": PAGE})
    out = Path(world["tmp"]) / OUT_NAME
    args = ["run", "--config", str(world["write"]()), "--out", str(out)]
    for url in INPUTS:
        args += ["--input", url]
    if mode != "table":
        args.append(mode)
    rc, stdout, stderr = await kzprobe(*args)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    shown = stderr if mode == "--json" else stdout  # --json: the records on stdout, the summary on stderr
    assert f"measurements: {Path(world['tmp']) / OUT_SHOWN}/" in shown
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert len(list(out.glob("*.jsonl"))) == 1
    if mode == "--quiet":
        return
    flat = "".join(line.strip("│┃ ") for line in shown.splitlines())  # the table folds long cells
    assert MARKUP_TITLE in flat
    for url in INPUTS:
        assert url in shown


def test_lab_table_shows_others_text_literally() -> None:
    """The lab's table: a scenario's name and description, an input and the probe's reason as they
    are, the reason's controls escaped; the match marks still drawn (styled text, not markup). The old
    code: MarkupError (checked)."""
    import dataclasses

    from probe.lab.cli import print_table
    from probe.lab.run import LabRun, Outcome
    from probe.lab.scenario import load_scenario

    sc = load_scenario("kz-2021")
    sc = dataclasses.replace(sc, name="[bold]s[/x]", description="d [link=https://evil.example/]x[/link]")
    site = sc.sites[0]
    reason = f"title {MARKUP_TITLE!r} \x1b[2J"
    run = LabRun(outcomes=[Outcome(site=site, input=f"http://{site.domain}/[/x]", expect="accessible",
                                   got="inconclusive", reason=reason)],
                 exit_code=0, jsonl=Path("/tmp/r[/x].jsonl"), out_dir=Path("/tmp"))
    buf = io.StringIO()
    print_table(run, sc, file=buf)
    text = buf.getvalue()
    flat = "".join(line.strip("│┃ ") for line in text.splitlines())  # the table folds long cells
    assert "[bold]s[/x]" in text and "d [link=https://evil.example/]x[/link]" in text
    assert MARKUP_TITLE in flat and "\\x1b[2J" in flat and "\x1b" not in text
    assert "✗" in text and "measurements: /tmp/r[/x].jsonl" in text
