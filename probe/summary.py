"""Terminal output of a run: a progress bar (rich, only on a TTY) and the summary table."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from probe.names import to_ulabel
from probe.runner import RunSummary
from probe.safetext import plain_console, terminal_safe
from probe.vocab import Rule

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

# rich (~4 MB of modules) is imported when a bar or a table is drawn, not at start-up: a run
# without a progress bar (the service, --no-progress, a pipe) holds it only once its measurements
# are done, so their peak RSS does not include it (issue 13, lab RSS).


def no_color_requested() -> bool:
    """True when ``$NO_COLOR`` is set and not empty (https://no-color.org)."""
    return bool(os.environ.get("NO_COLOR"))


class Progress:
    """A progress bar on stderr when ``enabled``; a no-op otherwise (journal, pipes)."""

    def __init__(self, *, enabled: bool, total: int) -> None:
        self._bar: RichProgress | None = None
        self._task = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True, no_color=no_color_requested() or None),
                                     transient=True)
            self._task = self._bar.add_task("measuring", total=total)

    def update(self, done: int, total: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _label(blocking: object, accessible: bool | None) -> str:
    if blocking is None:
        return "inconclusive"
    if blocking is False:
        return "accessible" if accessible else "down (not blocked)"
    return f"BLOCKED: {blocking}"


def display_input(url: str) -> str:
    """An input for people: an IDN host in Unicode with the A-label (what was measured) beside,
    ``http://сайт.қаз/ (xn--80aswg.xn--80ao21a)``; any other input as it is."""
    host = urlsplit(url).hostname or ""
    uhost = to_ulabel(host)
    if uhost == host:
        return url
    return f"{url.replace(host, uhost, 1)} ({host})"


def print_summary(s: RunSummary, *, to_stdout: bool = True, quiet: bool = False) -> None:
    """Print the per-input table and the totals; says loudly when nothing can be judged.

    ``quiet`` (``kzprobe run --quiet``, the default under systemd): no per-input table, the
    totals and the warnings only, so a timer run does not write thousands of lines to the journal."""
    from rich.table import Table

    stream = sys.stdout if to_stdout else sys.stderr
    tty = stream.isatty()
    # Not a TTY (the journal, a pipe): plain text, no escape codes at all; NO_COLOR is
    # honoured on a TTY too (https://no-color.org: set and not empty). Inputs, reasons (a site's
    # title), paths, issuers and error messages are others' text: printed as they are, never as Rich
    # markup, their terminal controls escaped (probe.safetext).
    console = plain_console(stream, force_terminal=tty, no_color=not tty or no_color_requested(),
                            width=None if tty else 160)

    def say(text: str, style: str | None = None, *, soft_wrap: bool = False) -> None:
        console.print(terminal_safe(text), style=style, soft_wrap=soft_wrap)

    table = Table(title=terminal_safe(f"kzprobe run {s.report_id}"), show_lines=False)
    table.add_column("input", overflow="fold")
    table.add_column("verdict")
    table.add_column("reason", overflow="fold")
    for r in sorted(s.rows, key=lambda r: r.input):
        table.add_row(*(terminal_safe(x) for x in (display_input(r.input), _label(r.blocking, r.accessible),
                                                   r.reason)))
    if not quiet:
        console.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(s.counts().items())) or "none"
    say(f"{s.measured} of {s.inputs} inputs measured in {s.runtime_s:.1f} s ({counts}).")
    if s.plan is not None and not s.plan.fits:
        say(f"TIME BUDGET: {s.plan.message()}.", style="bold yellow")
    if s.not_measured:
        say(f"{s.not_measured} inputs not measured ({'run deadline' if s.deadline_hit else 'interrupted'}).")
    before = s.health_before is not None and not s.health_before.online
    if before:
        say("VANTAGE OFFLINE — nothing can be judged: no canary (DoH control, well-known TLS hosts) "
            "reached its genuine server, so every verdict of this run is inconclusive.", style="bold red")
    elif s.vantage_offline:
        say("VANTAGE WENT OFFLINE during the run — the canaries failed afterwards: measurements made "
            "after the outage are inconclusive (their own DoH control failed).", style="bold red")
    if s.intercepted_by:
        say(f"THIS NETWORK INTERCEPTS TLS (issuer {s.intercepted_by}): the control is unusable and no "
            "blocking verdict was given.", style="bold red")
    hf = next((h.helper_failure for h in (s.health_before, s.health_after) if h is not None and h.helper_failure), None)
    if hf and not before:
        say(f"HELPER UNREACHABLE ({hf}): verdicts that need the control helper are inconclusive.",
            style="bold red")
    no_dns_control = sum(1 for r in s.rows if r.rule == Rule.CONTROL_DNS_FAILED)
    if no_dns_control and not before:
        say(f"DNS CONTROL FAILED for {no_dns_control} of {s.measured} inputs (the DoH resolvers did not "
            "answer): those verdicts are inconclusive; check dns.doh_urls.", style="bold red")
    if s.network_changed:
        b, a = s.vantage_before, s.vantage_after
        say(f"NETWORK CHANGED during the run: {b.asn} {b.cc} before, {a.asn} {a.cc} after — the records "
            f"say {b.asn} {b.cc}; some were measured from the other network.", style="bold yellow")
    if s.io_error:
        say(f"OUTPUT ERROR — the run stopped: {s.io_error}; the lines written before it are kept.",
            style="bold red")
    say(f"measurements: {s.path}", soft_wrap=True)  # one line: a path to copy, never folded
