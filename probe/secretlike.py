"""Lines that look like a secret: a file given as a target list that holds one is refused whole.

A target list's URLs are sent to resolvers, the DoH servers and the helper and written in the
measurements; its malformed rows are quoted in the log (40 characters). A token, a key or a
``.env`` given as a list by mistake (a wrong path in ``[run] targets``, ``--targets``) must do
neither: :func:`first_secret_line` finds the first line of such a shape, and the list reader
(:mod:`probe.targets`) refuses the file naming the line's number and shape, never its text.

The shapes (:data:`SHAPES`, the closed vocabulary of :func:`secret_shape`):

* ``jwt``: a JSON Web Token, ``eyJ…`` (base64url of ``{"``) at the start of a word, then ``.`` and a
  second part (RFC 7519 §3, RFC 7515 §7.1), anywhere in the line: a bare JWT reads as a dotted host name,
  one in a URL's query is a credential too.
* ``pem``: a PEM boundary ``-----BEGIN …-----`` / ``-----END …-----`` (RFC 7468 §2).
* ``assignment``: a ``NAME=value`` or ``NAME: value`` line (``export NAME=…`` too): a ``.env``, a
  shell or INI file, YAML, HTTP headers. No URL or host name starts so.
* ``password_url``: a URL with a password in it (``scheme://user:password@``, RFC 3986 §3.2.1:
  deprecated), as ``~/.git-credentials`` holds them.
* ``known_token``: a token with a service's documented prefix (``ghp_…``, ``github_pat_…``, ``AKIA…``,
  ``xoxb-…``, ``glpat-…``, ``npm_…``, ``sk_live_…``) or a Slack webhook URL, anywhere in the line, a URL's
  query included (:data:`_KNOWN_TOKEN`).
* ``token_word``: a word of 20 or more base64 characters (``A-Z a-z 0-9 + / _ -``, ``=`` padding)
  holding an upper-case letter, a lower-case letter and a digit, or of 32 or more hex digits holding
  a digit and a letter: random keys and tokens (20 random base64 characters lack one of the three
  3 % of the time; 32 random hex digits lack a digit or a letter once in 3 million) and at least
  12 distinct characters (10 for hex): random, not a label of one repeated letter.
  A URL (``scheme://…``, the whole line or a CSV's later column) and a dotted host are not looked
  at for it: a long mixed-case path segment (``/document/d/1AbC…``) is part of many listed URLs (a
  path or query trips only ``known_token``), a label of hex digits is a CDN's or bucket's id
  (``pub-<32 hex>.r2.dev``), and a host name's case carries nothing (RFC 4343), so a CamelCase
  name (``AlmatyNewsDaily2024Online.kz``) is not told from a random one by it (re-check of break
  test 24: such a host refused the whole list). A secret with a dot in it is caught by its own
  shape (``jwt``, ``known_token``), a ``.env``'s by ``assignment``.

``kzprobe`` checks every line of the file, a ``#`` comment included (nothing of it is read
for the check's sake only: the list is refused, not the line). The Citizen Lab test lists in
shared data and ``targets/`` have no line of these shapes (``tests/test_targets.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["SHAPES", "first_secret_line", "secret_shape"]

#: Shape id → what it is, as a refusal names it (the closed vocabulary of :func:`secret_shape`).
SHAPES: Final[dict[str, str]] = {
    "jwt": "a JSON Web Token",
    "pem": "a PEM key or certificate boundary",
    "assignment": "a NAME=value or NAME: value line (an environment, config or header file)",
    "password_url": "a URL with a password (user:password@)",
    "token_word": "a long random-looking word (a key or token)",
    "known_token": "a token of a known service (GitHub, AWS, Slack, GitLab, npm, Stripe)",
}

# Every pattern is linear in the line (lists are up to 32 MiB): a try that reads far either succeeds or
# starts only where the run it reads starts. The JWT is tried at a word start only: at each ``eyJ`` inside
# a run of base64 without ``.`` a try read to the run's end (193 KB: 4.5 s; 2 MB: minutes).
_JWT: Final = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# The documented prefixes of service tokens, anywhere in a line (a URL's query included), at a word start;
# each long read either matches or ends at the run's end once: GitHub (ghp_ gho_ ghs_ ghu_ ghr_, github_pat_:
# "Behind GitHub's new authentication token formats", 2021), AWS access key ids (AKIA/ASIA + 16 upper-case
# letters or digits: IAM "Unique identifiers"), Slack (xoxa- xoxb- xoxp- xoxr- xoxs-, and incoming-webhook
# URLs hooks.slack.com/services/), GitLab personal access tokens (glpat-), npm (npm_), Stripe secret and
# restricted live keys (sk_live_, rk_live_).
_KNOWN_TOKEN: Final = re.compile(
    r"(?<![A-Za-z0-9])(?:gh[opsur]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|xox[abprs]-[A-Za-z0-9-]{6,}|glpat-[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{36,}|[rs]k_live_[A-Za-z0-9]{10,})"
    r"|hooks\.slack\.com/services/")
_PEM: Final = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]+-----")
# Names, schemes and userinfo are bounded (a name of 128 characters, a scheme of 32, userinfo of 1,024):
# unbounded, each fails on a 10 MB line of letters in ~0.5 s of backtracking.
_ASSIGNMENT: Final = re.compile(r"^(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]{0,127}\s{0,8}(?:=|:\s)")
_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}://")
_PASSWORD_URL: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}://[^/?#@\s]{0,512}:[^/?#@\s]{0,512}@")
_WORD: Final = re.compile(r"[A-Za-z0-9+/_-]{20,}=*")
_HEX: Final = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")
# A URL anywhere in a line, from the start of its scheme (a word start: one try a word, the scheme read at
# most 32 characters) to white space, a comma or a quote; group 1 its authority.
_URL_IN_LINE: Final = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://([^/?#\s,\"']*)[^\s,\"']*")
_UPPER: Final = re.compile(r"[A-Z]")
_LOWER: Final = re.compile(r"[a-z]")
_DIGIT: Final = re.compile(r"[0-9]")
_HEX_LETTER: Final = re.compile(r"[A-Fa-f]")
#: Distinct characters a token word holds at least: 20 random base64 characters hold ~17, 32 random hex
#: digits ~14; ``1eeee…e`` or ``aaaa…`` (a test's filler) is not random.
_MIN_DISTINCT: Final = 12
_MIN_DISTINCT_HEX: Final = 10


def _host_part(line: str) -> str | None:
    """The authority of a line that reads as a URL (``scheme://``) or a dotted host (``a.b/…``),
    up to the first ``/``, ``?`` or ``#``; None for any other line."""
    m = _SCHEME.match(line)
    rest = line[m.end():] if m else line
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    authority = rest[:end]
    if m is None and "." not in authority:
        return None
    return authority


def _has_token_word(text: str) -> bool:
    """A random-looking word in ``text`` (base64 or hex)."""
    for m in _WORD.finditer(text):
        w = m.group()
        if _UPPER.search(w) and _LOWER.search(w) and _DIGIT.search(w) and len(set(w)) >= _MIN_DISTINCT:
            return True
    return any(_DIGIT.search(h := m.group()) and _HEX_LETTER.search(h) and len(set(h.lower())) >= _MIN_DISTINCT_HEX
               for m in _HEX.finditer(text))


def _without_urls(text: str) -> str:
    """``text`` without its URLs (``scheme://…`` up to white space, a comma or a quote: a CSV cell): a URL in
    a later CSV column is left out of the random-word check as a line that is one is."""
    return _URL_IN_LINE.sub(" ", text)


def secret_shape(line: str) -> str | None:
    """The id (a key of :data:`SHAPES`) of the first secret shape ``line`` has, else None."""
    text = line.strip()
    if not text:
        return None
    if _JWT.search(text):
        return "jwt"
    if _PEM.search(text):
        return "pem"
    if _ASSIGNMENT.match(text):
        return "assignment"
    if _PASSWORD_URL.match(text):
        return "password_url"
    if _KNOWN_TOKEN.search(text):
        return "known_token"
    if _host_part(text) is None and _has_token_word(_without_urls(text)):
        return "token_word"
    return None


def first_secret_line(lines: Iterable[str]) -> tuple[int, str] | None:
    """``(line number, shape id)`` of the first line (1-based) with a secret shape, else None."""
    for number, line in enumerate(lines, start=1):
        shape = secret_shape(line)
        if shape is not None:
            return number, shape
    return None
