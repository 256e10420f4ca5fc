"""Text that others wrote, shown safely: site titles and bodies, inputs, paths, helper, DoH and
resolver answers, error messages, records from other vantages and downloads.

:func:`terminal_safe` shows every control character a terminal would act on as an escape;
:func:`plain_console` is a Rich console that prints strings as they are, never as markup. The
summary of ``kzprobe run``, ``kzprobe show``/``list``, the lab's table and the analysis report
(``report.md``, ``index.html``) all escape with :func:`terminal_safe`, so there is one rule for what
is escaped.
"""

from __future__ import annotations

import json
import re
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: C0 controls but tab and newline (ESC starts CSI/OSC sequences: clear the screen, set the window
#: title, make a link), DEL and the C1 controls (U+0080-U+009F; U+009B is a one-character CSI), the
#: Unicode line and paragraph separators, and the bidi embeddings, overrides and isolates
#: (U+202A-U+202E, U+2066-U+2069: "Trojan Source", CVE-2021-42574), which reorder what is shown; and
#: the lone surrogates (U+D800-U+DFFF), which JSON's ``\ud800`` escape gives a string but no UTF-8
#: stream can write (a record's input with one made ``kzprobe list RUN`` exit 1, UnicodeEncodeError).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character that a terminal would act on (ESC/CSI/OSC sequences,
    C1 controls, bidi overrides) and every lone surrogate shown as its Python escape (``\\x1b``,
    ``\\u202e``, ``\\ud800``) instead: a hostile site must not set the analyst's terminal title or clear
    the screen (break tests 18 and 24), nor make the output fail to encode (review 24).
    Newlines and tabs of the layout are kept."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def json_text(obj: Any, **options: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **options)`` with each lone surrogate written as its JSON
    escape (``\\ud800``, RFC 8259 §7), which reads back as the same string: a lone surrogate (a record's
    ``"\\ud800"``) cannot be written to a UTF-8 stream (``kzprobe show --json`` exited 1,
    UnicodeEncodeError: review 24). Such a character only stands inside a JSON string, so the escape
    keeps the text JSON."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False, **options))


def plain_console(file: IO[str] | None = None, **options: Any) -> Console:
    """A Rich console that prints every string as it is: no markup (``[/bold]`` in a title raised
    MarkupError, ``[fd77::1]`` vanished, ``[link=...]`` made a link: break test 24), no ``:emoji:``
    codes, no highlighting. Styles are given as ``style=`` or as :class:`rich.text.Text` spans.
    ``options``: the other :class:`rich.console.Console` arguments."""
    from rich.console import Console

    return Console(file=file, markup=False, emoji=False, highlight=False, **options)
