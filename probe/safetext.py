"""Text that others wrote, shown safely: site titles and bodies, inputs, paths, helper, DoH and
resolver answers, error messages, records from other vantages and downloads.

:func:`terminal_safe` shows every control character a terminal would act on as an escape;
:func:`plain_console` is a Rich console that prints strings as they are, never as markup. The
summary of ``kzprobe run``, ``kzprobe show``/``list``, the lab's table and the analysis report
(``report.md``, ``index.html``) all escape with :func:`terminal_safe`, so there is one rule for what
is escaped.
"""

from __future__ import annotations

import re
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: C0 controls but tab and newline (ESC starts CSI/OSC sequences: clear the screen, set the window
#: title, make a link), DEL and the C1 controls (U+0080-U+009F; U+009B is a one-character CSI), the
#: Unicode line and paragraph separators, and the bidi embeddings, overrides and isolates
#: (U+202A-U+202E, U+2066-U+2069: "Trojan Source", CVE-2021-42574), which reorder what is shown.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character that a terminal would act on (ESC/CSI/OSC sequences,
    C1 controls, bidi overrides) shown as its Python escape (``\\x1b``, ``\\u202e``) instead: a hostile
    site must not set the analyst's terminal title or clear the screen (break tests 18 and 24).
    Newlines and tabs of the layout are kept."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def plain_console(file: IO[str] | None = None, **options: Any) -> Console:
    """A Rich console that prints every string as it is: no markup (``[/bold]`` in a title raised
    MarkupError, ``[fd77::1]`` vanished, ``[link=...]`` made a link: break test 24), no ``:emoji:``
    codes, no highlighting. Styles are given as ``style=`` or as :class:`rich.text.Text` spans.
    ``options``: the other :class:`rich.console.Console` arguments."""
    from rich.console import Console

    return Console(file=file, markup=False, emoji=False, highlight=False, **options)
