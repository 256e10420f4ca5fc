"""Target lists → inputs: Citizen Lab test-list CSV files and plain URL lists.

Two file formats are read:

* **Citizen Lab test-list CSV** (https://github.com/citizenlab/test-lists, the
  format of ``lists/<cc>.csv``): a header row
  ``url,category_code,category_description,date_added,source,notes`` and one row
  per URL. A file is taken as CSV when its first non-blank line is a CSV header naming a
  ``url`` column (in any position: ``category_code,url`` too); a ``.csv`` file without a
  header is read by the column where its first row holds an ``http(s)://`` URL (the
  Citizen Lab columns' metadata too when the rows have their six cells, URL first).
* **Plain lists**: one URL a line; blank lines and ``#`` comments (whole-line, or
  after whitespace at the end of a line) are ignored; a bare host such as
  ``example.org`` becomes ``https://example.org/`` (``example.org:8443/a?b`` keeps
  port, path and query; a host without a dot is refused).

Every URL is normalised (:func:`normalise_url`) so that the same site written two
ways is measured once: scheme lowercased, host as an IDNA 2008 A-label
(RFC 5890/5891, with the UTS #46 mapping applied first) in lowercase, default port
dropped, fragment dropped, ``/`` when the path is empty.

A malformed row is data about the list, not a reason to stop: it is reported
through ``on_error`` (a :class:`TargetError` carrying file and line) and skipped,
unless ``strict=True``.

The shipped lists live in the repository's ``targets/`` directory
(:data:`DEFAULT_TARGETS_DIR`) and, byte-identical, as package data in
``probe/data/targets/`` (:func:`shipped_list`), so an installed (non-editable)
probe has them too.
"""

from __future__ import annotations

import csv
import errno
import importlib.resources
import ipaddress
import logging
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from probe.bounded import read_regular_file
from probe.errors import KzprobeError
from probe.names import HostError, to_alabel, uts46_map
from probe.secretlike import SHAPES, first_secret_line

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_TARGETS_DIR",
    "LOCALHOST_NAME",
    "MAX_ROW_LINES",
    "NOT_A_LIST_LINES",
    "NotATargetList",
    "RowsNotKept",
    "Target",
    "TargetError",
    "load_targets",
    "normalise_url",
    "shipped_list",
    "targets_from_urls",
]

log = logging.getLogger("kzprobe.targets")

#: The Citizen Lab test-list columns, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "url",
    "category_code",
    "category_description",
    "date_added",
    "source",
    "notes",
)

_DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}

#: Largest target list read (bytes): the shipped global list is 170 KB. A FIFO, a
#: device or a larger file is refused with an OSError naming it (exit 66).
MAX_LIST_BYTES = 32 << 20

#: ``path`` shown in errors for URLs given on the command line.
CLI_PATH = "<command line>"


# --------------------------------------------------------------------------- errors


class TargetError(KzprobeError, ValueError):
    """A URL or a row of a target list that cannot be used.

    Attributes:
        path: the list file as given (``str``), :data:`CLI_PATH` for ``--input``
            URLs, or ``None`` when the text did not come from a list
            (a direct :func:`normalise_url` call).
        line: 1-based line number in the file (the row's first line for a CSV
            row), the position for ``--input`` URLs, or ``None``.
        text: the offending text as written (the URL, or the raw row/line),
            in full. Only the message (``str(err)``) shortens it: past
            :data:`MAX_SHOWN` characters it shows the first ones, ``…`` and the
            length, e.g. ``'aaaa…' (10485760 chars)``, so that a 10 MB line does
            not become a 10 MB warning.
        reason: what is wrong, short, without the location.
        what: what ``text`` is: ``"URL"``, ``"row"`` (wrong column count),
            ``"line"`` (not UTF-8) or ``"header"``.

    ``str(err)`` reads like ``targets/kz.csv:17: bad URL 'htp//x': no scheme``.
    """

    #: At most this many characters of ``text`` are quoted in the message.
    MAX_SHOWN = 200

    def __init__(
        self,
        reason: str,
        *,
        text: str,
        path: str | None = None,
        line: int | None = None,
        what: str = "URL",
    ) -> None:
        self.reason = reason
        self.text = text
        self.path = path
        self.line = line
        self.what = what
        super().__init__(str(self))

    def located(self, path: str | None, line: int | None) -> TargetError:
        """A copy of this error with file and line filled in."""
        return TargetError(self.reason, text=self.text, path=path, line=line, what=self.what)

    def _where(self) -> str:
        if self.path is not None and self.line is not None:
            return f"{self.path}:{self.line}: "
        if self.path is not None:
            return f"{self.path}: "
        if self.line is not None:
            return f"line {self.line}: "
        return ""

    def _quotable(self) -> bool:
        """Whether the text may be quoted: it holds a scheme (``://``) or a dot, as a URL or host name does. A
        row with neither (``hunter2``, ``AKIAIOSFODNN7EXAMPLE``, ``p@ssw0rd!2024``) is no mistyped URL but
        may be a password or key: a log line names it by its line only (review 24b item 2), its reason's
        quoted pieces dropped too. A ``--input`` word is the user's own command line: quoted back. ``str(err)``
        (a caller's own handling: ``strict=True``) keeps the text."""
        return not self.text or "://" in self.text or "." in self.text or self.path == CLI_PATH

    def _shown(self, limit: int) -> tuple[str, str]:
        """The text as quoted (or the note that it is not) and the reason with its quoted pieces cut to ``limit``."""
        if self._quotable():
            return _shorten(self.text, limit), _shorten_quoted(self.reason, limit)
        return "(not shown: no scheme and no dot)", _QUOTED.sub("'…'", self.reason)

    def __str__(self) -> str:
        return (f"{self._where()}bad {self.what} {_shorten(self.text, self.MAX_SHOWN)}: "
                f"{_shorten_quoted(self.reason, self.MAX_SHOWN)}")


    def brief(self) -> str:
        """The message as a log line quotes it: the text cut to :data:`QUOTE_CHARS`, the reason to
        :data:`REASON_CHARS` (break test F13: a config naming /etc/shadow as a list put its lines in the
        journal). Every quoted piece of the reason (a label, a port, the name in an IDNA error) is cut to
        :data:`QUOTE_CHARS` too: ``label too long (69 > 63): 'token_…'`` repeated the whole label."""
        text, reason = self._shown(QUOTE_CHARS)
        reason = reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 1] + "…"
        return f"{self._where()}bad {self.what} {text}: {reason}"


#: A line of a list file quoted in a warning is cut to this many characters, its reason to REASON_CHARS.
QUOTE_CHARS = 40
REASON_CHARS = 100
#: A plain list with no URL (or host name) in its first this many lines (not blank, not comments) is
#: not a target list: refused whole, nothing of it quoted (break test F13: /etc/shadow as a list).
NOT_A_LIST_LINES = 10


class NotATargetList(TargetError):
    """A file given as a target list that holds no URL where a list would: none of its first
    :data:`NOT_A_LIST_LINES` rows (not blank, not a comment) is a URL or host name, or none of its
    rows at all (a shorter file), or a ``.csv`` file whose first line is neither a header nor a row
    with a URL. Nothing of its content is in the message: it may be any file (a key, a password file)."""

    def __init__(self, path: str, lines: int, *, first: bool = True, why: str | None = None,
                 unit: str = "line") -> None:
        self.lines = lines
        if why is None:
            which = f"first {lines} {unit}s" if first else f"{lines} {unit}" + ("" if lines == 1 else "s")
            why = f"none of its {which} is a URL or host name"
        self.why = why
        super().__init__("not a target list", text="", path=path, what="list")

    def __str__(self) -> str:
        return f"{self.path}: not a target list: {self.why} (its content is not shown)"

    def brief(self) -> str:
        return str(self)


class RowsNotKept(TargetError):
    """The bad rows of a list before its first URL past the :data:`MAX_ROW_WARNINGS` held: counted, not kept
    (``rows``), reported once when the first URL opens the list. A CSV list is read to its end before
    it is refused, so holding every bad row held them all: 1M bad rows then one URL peaked at 651 MB."""

    def __init__(self, path: str, rows: int) -> None:
        self.rows = rows
        super().__init__(f"{rows} more bad row(s) before the first URL, not kept", text="", path=path, what="rows")


class _FirstUrlGate:
    """Holds a list's errors until its first URL: then they are reported (a list with typos). A file
    that ends before any URL with bad rows is :class:`NotATargetList`, and so is a plain file whose
    first :data:`NOT_A_LIST_LINES` lines are all bad (``limit``; a CSV list, which has the list's
    header, is read to its end): none of its rows is quoted anywhere. At most :data:`MAX_ROW_WARNINGS`
    errors are held, the rest counted (``more``) and reported as one :class:`RowsNotKept`."""

    def __init__(self, report: Callable[[TargetError], None], path: str) -> None:
        self.report = report
        self.path = path
        self.limit: int | None = NOT_A_LIST_LINES
        self.unit = "line"
        self.held: list[TargetError] | None = []  # None: open (a URL was seen)
        self.more = 0  # errors seen while held was full

    def __call__(self, err: TargetError) -> None:
        if self.held is None:
            self.report(err)
            return
        if len(self.held) < MAX_ROW_WARNINGS:
            self.held.append(err)
        else:
            self.more += 1
        if self.limit is not None and self.seen >= self.limit:
            raise NotATargetList(self.path, self.seen, unit=self.unit)

    @property
    def seen(self) -> int:
        """Errors seen before the first URL."""
        return len(self.held or ()) + self.more

    def open(self) -> None:
        held, self.held = self.held, None
        for err in held or ():
            self.report(err)
        if self.more:
            self.report(RowsNotKept(self.path, self.more))
            self.more = 0

    def gate(self, targets: Iterator[Target]) -> Iterator[Target]:
        for t in targets:
            if self.held is not None:
                self.open()
            yield t
        if self.held:  # bad rows and no URL: a short secret file as much as a list of typos
            raise NotATargetList(self.path, self.seen, first=False, unit=self.unit)


def _shorten(text: str, limit: int) -> str:
    """``repr(text)``, or for a long text its first characters, ``…`` and the length."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 1] + '…'!r} ({len(text)} chars)"


#: A quoted piece of an error's reason: Python's ``repr`` of a string (``'…'``, or ``"…"`` when it holds a ``'``),
#: as our reasons and the ``idna`` errors quote the input.
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def _shorten_quoted(reason: str, limit: int) -> str:
    """``reason`` with every quoted piece of it over ``limit`` characters cut to its first ones and ``…``,
    as :func:`_shorten` cuts the text itself: a reason must not quote more of the input than the text."""

    def cut(m: re.Match[str]) -> str:
        piece = m.group()
        if len(piece) - 2 <= limit:
            return piece
        return f"{piece[:limit]}…{piece[0]}"

    return _QUOTED.sub(cut, reason)


# --------------------------------------------------------------------------- the target


@dataclass(frozen=True, kw_only=True)
class Target:
    """One input to measure, with its list metadata.

    Attributes:
        input: the normalised URL that is measured (see :func:`normalise_url`),
            e.g. ``https://xn--80aswg.xn--80ao21a/``.
        domain: the host: an IDNA 2008 A-label in lowercase without trailing dot,
            or an IP address (IPv6 without brackets, in compressed form).
        scheme: ``"http"`` or ``"https"``.
        port: the explicit port, or the scheme's default (80, 443).
        original: the URL exactly as written in the list (surrounding
            whitespace removed).
        category_code: Citizen Lab category code (``NEWS``, ``HUMR`` …).
        category_description, date_added, source, notes: the other Citizen Lab
            columns, verbatim. For all five metadata fields ``None`` means the list
            did not say: a plain list, a ``--input`` URL, or an empty CSV cell.
        list_name: the list's file stem (``"kz"`` for ``kz.csv``), ``"cli"`` for
            ``--input`` URLs.
        line: 1-based line of the row in its file (position for ``--input``).
    """

    input: str
    domain: str
    scheme: Literal["http", "https"]
    port: int
    original: str
    category_code: str | None = None
    category_description: str | None = None
    date_added: str | None = None
    source: str | None = None
    notes: str | None = None
    list_name: str
    line: int


# --------------------------------------------------------------------------- URL normalisation

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_BAD_CHAR_RE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
_PORT_RE = re.compile(r"^[0-9]+$")


#: Lone surrogates: what Python makes of non-UTF-8 bytes in argv (PEP 383), or a JSON "\udcff".
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _percent_encode_non_ascii(s: str) -> str:
    """Percent-encode non-ASCII characters as UTF-8 (as browsers do); ASCII untouched."""
    return _NON_ASCII_RE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), s)


def _normalise_host(host: str, text: str) -> str:
    """Return the canonical host (A-label, or IP address) or raise TargetError."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise TargetError("unterminated IPv6 literal", text=text)
        inner = host[1:-1]
        if "%" in inner:
            raise TargetError("IPv6 zone identifiers are not allowed", text=text)
        try:
            return ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise TargetError(f"bad IPv6 literal {inner!r}", text=text) from None
    if "[" in host or "]" in host:
        raise TargetError("'[' or ']' outside an IPv6 literal", text=text)
    if not host:
        raise TargetError("empty host", text=text)
    # UTS #46 mapping first (case folding, full-width forms, ideographic full stops …),
    # so that 'САЙТ.ҚАЗ' and 'Пример.испытание' are accepted; then split into labels.
    try:
        mapped = uts46_map(host)
    except HostError as exc:
        raise TargetError(exc.reason, text=text) from None
    if mapped.endswith("."):  # the root label: 'example.org.' is 'example.org'
        mapped = mapped[:-1]
    if not mapped:
        raise TargetError("empty host", text=text)
    labels = mapped.split(".")
    if mapped.isascii() and all(lbl.isdigit() for lbl in labels if lbl):
        try:
            return str(ipaddress.IPv4Address(mapped))
        except ValueError:
            raise TargetError(f"bad IPv4 address {host!r}", text=text) from None
    try:
        return to_alabel(host)  # the one host-name contract (probe/names.py)
    except HostError as exc:
        raise TargetError(exc.reason, text=text) from None


def normalise_url(text: str) -> tuple[str, str, str, int]:
    """Normalise an http(s) URL for measurement.

    Args:
        text: an absolute ``http://`` or ``https://`` URL (surrounding whitespace
            is ignored).

    Returns:
        ``(input_url, domain, scheme, port)``: ``input_url`` has the scheme
        lowercased, the host as a lowercase IDNA 2008 A-label (UTS #46 mapping,
        then RFC 5891 validation: ``сайт.қаз``, ``САЙТ.ҚАЗ`` and
        ``xn--80aswg.xn--80ao21a`` all give ``xn--80aswg.xn--80ao21a``), a
        trailing dot on the host removed, the default port dropped, the path
        kept (``/`` when empty; non-ASCII characters in path and query
        percent-encoded as UTF-8, existing escapes left alone), the query kept
        and the fragment dropped. IP-literal hosts are allowed (IPv6 in
        brackets). ``domain`` is the host without brackets; ``port`` is the
        explicit port or the scheme's default.

    Raises:
        TargetError: (a ``ValueError``; ``path`` and ``line`` are ``None``) whose
            message names ``text``: no scheme, a scheme other than http/https,
            no ``//`` authority, userinfo (``user@``), an empty host, an invalid
            label or IDN, a bad IP literal, a port out of 1–65535, whitespace or
            control characters anywhere, a character that is not valid UTF-8 (a
            non-UTF-8 byte of the command line, a lone surrogate).

    ASCII labels follow the DNS letter-digit-hyphen rule (``_`` allowed, no
    leading or trailing hyphen, at most 63 octets); IDNA's ban on ``--`` in
    positions 3–4 is applied to non-ASCII and ``xn--`` labels only, since
    hostnames such as ``r3---sn-abc.googlevideo.com`` exist.
    """
    original = text
    text = text.strip()
    if not text:
        raise TargetError("empty", text=original)
    bad = _SURROGATE_RE.search(text)
    if bad is not None:  # a non-UTF-8 byte of argv (surrogateescape), or a lone surrogate from JSON
        code = ord(bad.group())
        what = f"byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise TargetError(f"not valid UTF-8: {what} at character {bad.start() + 1}", text=original)
    if _BAD_CHAR_RE.search(text) or any(c.isspace() for c in text):
        raise TargetError("contains whitespace or control characters", text=original)
    m = _SCHEME_RE.match(text)
    if m is None:
        raise TargetError("no scheme", text=original)
    scheme = m.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetError(f"scheme {m.group(1)!r} is not http or https", text=original)
    rest = text[m.end():]
    if not rest.startswith("//"):
        raise TargetError("no '//' after the scheme", text=original)
    rest = rest[2:]
    # Authority ends at the first '/', '?' or '#' (RFC 3986 §3.2).
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1 and i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        raise TargetError("userinfo (user@) is not allowed", text=original)
    # Split host and port; an IPv6 literal contains ':' itself.
    port_text: str | None = None
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise TargetError("unterminated IPv6 literal", text=original)
        host, after = authority[: close + 1], authority[close + 1:]
        if after:
            if not after.startswith(":"):
                raise TargetError(f"junk after IPv6 literal: {after!r}", text=original)
            port_text = after[1:]
    elif ":" in authority:
        host, port_text = authority.rsplit(":", 1)
    else:
        host = authority
    default_port = _DEFAULT_PORTS[scheme]
    if port_text is None or port_text == "":  # RFC 3986: an empty port means the default
        port = default_port
    elif not _PORT_RE.match(port_text):
        raise TargetError(f"bad port {port_text!r}", text=original)
    else:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise TargetError(f"port {port} out of range 1-65535", text=original)
    domain = _normalise_host(host, original)
    if domain == "localhost" or domain.endswith(".localhost"):
        # RFC 6761 §6.3: localhost names are this machine, never an Internet name; measured, the
        # system resolver's 127.0.0.1 against the control's NXDOMAIN read as DNS blocking
        # (break test, stop 19)
        raise TargetError(LOCALHOST_NAME, text=original)
    # Path and query; the fragment is never sent to the server.
    tail = tail.split("#", 1)[0]
    if tail.startswith("?") or not tail:
        tail = "/" + tail
    tail = _percent_encode_non_ascii(tail)
    netloc = f"[{domain}]" if ":" in domain else domain
    if port != default_port:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{tail}", domain, scheme, port


_PORT_OR_EMPTY_RE = re.compile(r"^[0-9]*$")


def _split_bare(text: str) -> tuple[str, str]:
    """``host[:port]`` and the rest (path, query, fragment) of a scheme-less entry.

    The authority ends at the first ``/``, ``?`` or ``#``, as in a URL (RFC 3986 §3.2).
    """
    end = min((i for i in (text.find(c) for c in "/?#") if i != -1), default=len(text))
    return text[:end], text[end:]


def _bare_to_url(text: str) -> str:
    """``example.org`` (no scheme) → ``https://example.org/``; else unchanged.

    What follows the host is kept as a URL keeps it: ``foo.kz?a=b`` →
    ``https://foo.kz?a=b`` (made ``https://foo.kz/?a=b`` by :func:`normalise_url`),
    ``foo.kz/a`` → ``https://foo.kz/a`` (break test: the query got a ``/`` appended).
    ``example.org:8080`` is a bare host with a port; ``javascript:alert(1)`` or
    ``mailto:x`` has a scheme (a dot-free scheme-like prefix not followed by a
    port) and is left for :func:`normalise_url` to refuse by its scheme.
    """
    if "://" in text or not text or text.startswith(("#", "/", "?")):
        return text
    authority, tail = _split_bare(text)
    m = _SCHEME_RE.match(text)
    if m is not None and "." not in m.group(1) and (
            m.end() > len(authority) or not _PORT_OR_EMPTY_RE.match(authority[m.end():])):
        return text
    return f"https://{authority}{tail or '/'}"


#: Why a bare word (``notaurl``) is refused rather than measured as ``https://notaurl/``.
#: Why a localhost name is not an input.
LOCALHOST_NAME = "a localhost name is this machine (RFC 6761), not a site: never measured"
_BARE_WORD = "neither a URL nor a host name with a dot (write https://NAME/ to measure a single-label host)"
#: Label separators: the ASCII dot and those UTS #46 maps to it (``例え。jp`` is a host name).
_LABEL_DOTS = frozenset(".\u3002\uff0e\uff61")


def _looks_like_host(bare: str) -> bool:
    """Whether a scheme-less entry's host reads as a host: a dotted name or address (an
    IDN's ideographic full stop counts) or a bracketed IPv6 literal; a ``:port``, path
    or query after it does not count.

    A bare word such as ``notaurl`` is a typo far more often than a single-label host
    (break test: ``--input notaurl`` was measured as ``https://notaurl/``; then
    ``foo:8080`` and ``ǘr?:Q`` passed as hosts because they hold a ``:``); such a host
    can still be given as a full URL.
    """
    authority, _ = _split_bare(bare)
    if authority.startswith("["):
        return True
    host = authority.rsplit(":", 1)[0]
    return any(c in _LABEL_DOTS for c in host)


def _make_target(
    text: str,
    *,
    list_name: str,
    line: int,
    bare_ok: bool,
    meta: dict[str, str | None] | None = None,
) -> Target:
    """Build a Target from one URL; raises TargetError without location."""
    stripped = text.strip()
    url = _bare_to_url(stripped) if bare_ok else stripped
    try:
        input_url, domain, scheme, port = normalise_url(url)
    except TargetError as exc:
        # Name the text as written in the list, not the https:// form made from it.
        raise TargetError(exc.reason, text=stripped) from None
    # A host that is valid but has no dot: refused after normalise_url, so an invalid
    # host is named as such and a localhost name gets its own reason.
    if url != stripped and not _looks_like_host(stripped):
        raise TargetError(_BARE_WORD, text=stripped)
    return Target(
        input=input_url,
        domain=domain,
        scheme=scheme,  # type: ignore[arg-type]  # normalise_url returns only http/https
        port=port,
        original=stripped,
        list_name=list_name,
        line=line,
        **(meta or {}),
    )


# --------------------------------------------------------------------------- reading files


class _Lines:
    """Decode a file line by line, reporting lines that are not UTF-8.

    Iterating yields ``(number, line)``: the 1-based physical line number and the
    decoded line with its line ending (as ``csv`` wants). Lines that are not UTF-8
    are reported and skipped.
    """

    def __init__(self, raw: bytes, path: str, report: Callable[[TargetError], None]) -> None:
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        self._lines = raw.splitlines(keepends=True)
        self._path = path
        self._report = report

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for number, chunk in enumerate(self._lines, start=1):
            try:
                line = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = chunk.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
                self._report(
                    TargetError(
                        f"not UTF-8 ({exc.reason} at byte {exc.start})",
                        text=shown,
                        path=self._path,
                        line=number,
                        what="line",
                    )
                )
                continue
            yield number, line


def _first_cells(first_line: str) -> list[str]:
    """The cells of a list's first line read as CSV (none when it cannot be read so)."""
    try:
        return next(csv.reader([first_line]), [])
    except csv.Error:
        return []


def _is_csv_header(first_line: str) -> bool:
    """A CSV header: two or more cells, one of them ``url`` (any position, any case), on a line that is not
    a ``#`` comment (a plain list's ``# category,url`` is a comment, as the plain reader skips it)."""
    if first_line.lstrip().startswith("#"):
        return False
    cells = _first_cells(first_line)
    return len(cells) > 1 and "url" in (c.strip().lower() for c in cells)


def _headerless_url_column(first_line: str) -> int | None:
    """The column of a headerless CSV's first row that holds an ``http://`` or ``https://`` URL (the
    first such), or None: then the file is no list (a secret .csv is refused, nothing quoted)."""
    return next((i for i, c in enumerate(_first_cells(first_line))
                 if c.strip().lower().startswith(("http://", "https://"))), None)


#: A CSV row (a quoted field) may span at most this many physical lines. Without a
#: bound, lines that each leave a quote open (``a",,,"``) would have every row run
#: to the end of the file and be read again from its second line: quadratic time.
MAX_ROW_LINES = 32


class _RowRunsOn(Exception):
    """Raised through ``csv.reader`` when a row passes :data:`MAX_ROW_LINES`."""


class _CsvFeed:
    """The lines handed to ``csv.reader``, with the row being read and a push-back.

    ``csv.reader`` asks for a further line only while it is inside a quoted field;
    ``row_lines`` holds the ``(number, line)`` pairs of the current row (cleared by
    the caller before each row), ``hit_eof`` says the end of the file came while a
    row was still open, i.e. a quote was never closed. ``push_back`` re-queues
    lines so that they are parsed again, on their own. A row wanting more than
    :data:`MAX_ROW_LINES` lines raises :class:`_RowRunsOn`.
    """

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self._again: deque[tuple[int, str]] = deque()
        self.row_lines: list[tuple[int, str]] = []
        self.hit_eof = False

    def start_row(self) -> None:
        self.row_lines = []
        self.hit_eof = False

    def push_back(self, lines: list[tuple[int, str]]) -> None:
        self._again.extendleft(reversed(lines))

    def __iter__(self) -> _CsvFeed:
        return self

    def __next__(self) -> str:
        if len(self.row_lines) >= MAX_ROW_LINES:
            raise _RowRunsOn
        if self._again:
            item = self._again.popleft()
        else:
            try:
                item = next(self._lines)
            except StopIteration:
                if self.row_lines:
                    self.hit_eof = True
                raise
        self.row_lines.append(item)
        return item[1]


_NO_SCHEME = "no scheme"
_NO_SCHEME_CSV = "no scheme (Citizen Lab rows need http:// or https://)"


def _read_csv(lines: Iterator[tuple[int, str]], path: str, list_name: str,
              report: Callable[[TargetError], None], *,
              headerless: tuple[int, int] | None = None) -> Iterator[Target]:
    """The rows of a CSV list, by its header's names; or, ``headerless`` = (the URL's column, cells a
    row), a CSV with no header whose rows hold as many cells as its first and a URL in that column
    (the Citizen Lab columns' metadata too when its rows have their number of cells, URL first)."""
    feed = _CsvFeed(lines)
    reader = csv.reader(feed)
    if headerless is None:
        feed.start_row()
        try:
            header = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RowRunsOn) as exc:  # no row can be read: not a list (its header not quoted)
            problem = f"CSV syntax: {exc}" if isinstance(exc, csv.Error) else "unbalanced '\"'"
            raise NotATargetList(path, 0, why=f"its header cannot be read ({problem})") from None
        if len(feed.row_lines) > 1:
            raise NotATargetList(path, 0, why="its header runs on over several lines (unbalanced '\"')")
        columns = [c.strip().lower() for c in header]
        if "url" not in columns:
            raise NotATargetList(path, 0, why="its header has no 'url' column")
        url_at = columns.index("url")
    else:
        url_at, width = headerless
        columns = list(CSV_COLUMNS) if headerless == (0, len(CSV_COLUMNS)) else [""] * width
    meta_at = {name: columns.index(name) for name in CSV_COLUMNS[1:] if name in columns}

    def run_on(problem: str) -> None:
        """A row over several lines that is broken, most likely by a stray '"'.

        The row's first line is reported (its number, its text); the lines after
        it go back to be read as rows of their own, so that one stray quote costs
        one row, not the rest of the file.
        """
        (first_at, first_text), rest = feed.row_lines[0], feed.row_lines[1:]
        report(TargetError(f"unbalanced '\"': {problem}", text=first_text.rstrip("\r\n"),
                           path=path, line=first_at, what="row"))
        feed.push_back(rest)

    while True:
        feed.start_row()
        try:
            row = next(reader)
        except StopIteration:
            return
        except _RowRunsOn:
            run_on(f"the quoted field runs on past {MAX_ROW_LINES} lines")
            continue
        except csv.Error as exc:
            if len(feed.row_lines) > 1:
                last_at = feed.row_lines[-1][0]
                run_on(f"the row runs on to line {last_at}, where the CSV reader gave up ({exc})")
                continue
            number, text = feed.row_lines[0] if feed.row_lines else (0, "")
            report(TargetError(f"CSV syntax: {exc}", text=text.rstrip("\r\n"), path=path, line=number,
                               what="row"))
            continue
        number = feed.row_lines[0][0] if feed.row_lines else 0
        if len(feed.row_lines) > 1:
            last_at = feed.row_lines[-1][0]
            if feed.hit_eof:
                run_on("the quoted field is never closed (it runs on to the end of the file)")
                continue
            if len(row) != len(columns):
                run_on(f"the row runs on to line {last_at} and then has {len(row)} columns, "
                       f"not {len(columns)}")
                continue
            if "\n" in row[url_at] or "\r" in row[url_at]:
                run_on(f"the URL runs on to line {last_at}")
                continue
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            report(TargetError(f"expected {len(columns)} columns, got {len(row)}",
                               text=",".join(row), path=path, line=number, what="row"))
            continue
        meta = {name: (row[i].strip() or None) for name, i in meta_at.items()}
        try:
            yield _make_target(row[url_at], list_name=list_name, line=number, bare_ok=False,
                               meta=meta)
        except TargetError as exc:
            if exc.reason == _NO_SCHEME:
                exc = TargetError(_NO_SCHEME_CSV, text=exc.text, what=exc.what)
            report(exc.located(path, number))


#: Tried at the start of a run of white space only: at each space of a long run without ``#`` a try read
#: to the run's end (40,000 spaces: 2.8 s).
_INLINE_COMMENT_RE = re.compile(r"(?<!\s)\s+#.*$")


def _read_plain(lines: Iterator[tuple[int, str]], path: str, list_name: str,
                report: Callable[[TargetError], None]) -> Iterator[Target]:
    for number, line in lines:
        text = _INLINE_COMMENT_RE.sub("", line.strip())
        if not text or text.startswith("#"):
            continue
        try:
            yield _make_target(text, list_name=list_name, line=number, bare_ok=True)
        except TargetError as exc:
            report(exc.located(path, number))


def _read_file(path: Path, report: Callable[[TargetError], None]) -> Iterator[Target]:
    shown = str(path)
    try:
        raw = read_regular_file(path, MAX_LIST_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"target list not found: {shown}", shown) from None
    except OSError as exc:
        # A directory, no permission …: OSError(errno, …) is the matching subclass
        # (IsADirectoryError, PermissionError), with the path as ``filename``.
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot read target list {shown!r}: {reason}", shown) from None
    _refuse_secret_lines(raw, shown)
    gate = _FirstUrlGate(report, shown)
    it = iter(_Lines(raw, shown, gate))
    # The first non-blank line decides the format.
    first = next(((n, line) for n, line in it if line.strip()), None)
    if first is None:
        yield from gate.gate(iter(()))  # empty, only blank lines, or lines that are not text (refused)
        return
    first_line = first[1]

    def from_first() -> Iterator[tuple[int, str]]:
        yield first
        yield from it

    if _is_csv_header(first_line):
        gate.limit, gate.unit = None, "row"
        yield from gate.gate(_read_csv(from_first(), shown, path.stem, gate))
    elif path.suffix.lower() == ".csv":
        url_at = _headerless_url_column(first_line)
        if url_at is None:
            raise NotATargetList(shown, 0, why="its first line is neither a header naming a 'url' column nor a row "
                                               "holding an http:// or https:// URL")
        gate.unit = "row"
        yield from gate.gate(_read_csv(from_first(), shown, path.stem, gate,
                                       headerless=(url_at, len(_first_cells(first_line)))))
    else:
        yield from gate.gate(_read_plain(from_first(), shown, path.stem, gate))


def _refuse_secret_lines(raw: bytes, shown: str) -> None:
    """Raise :class:`NotATargetList` naming the first line that looks like a secret
    (:func:`probe.secretlike.secret_shape`: a JWT, a PEM boundary, a ``NAME=value`` line …), before any
    row is read: a token or ``.env`` given as a list had its dotted value measured (sent to the
    resolvers and the helper, written in the JSONL) and its other lines quoted in warnings (break test
    24, finding 4). The line is named by number and shape, never quoted. In a plain list the part of
    a line a comment takes (``# …``) is left out, as the reader leaves it (a commit hash cited there);
    a CSV list has no comments, every line counts."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = [chunk.decode("utf-8", "replace") for chunk in raw.splitlines()]
    first = next((line for line in lines if line.strip()), "")
    if not _is_csv_header(first):
        lines = ["" if (t := _INLINE_COMMENT_RE.sub("", line.strip())).startswith("#") else t for line in lines]
    hit = first_secret_line(lines)
    if hit is not None:
        number, shape = hit
        raise NotATargetList(shown, 0, why=f"line {number} looks like a secret: {SHAPES[shape]}")


#: Skipped lines shown one by one, at most (``kzprobe list RUN``: :data:`probe.runlines.MAX_SKIPPED_EXAMPLES`):
#: 100 KB of junk printed 400+ lines (break test); the rest are counted. Target rows: :data:`QUOTED_PER_LIST`.
MAX_ROW_WARNINGS = 20
#: Malformed rows of one list quoted in the log (:meth:`TargetError.brief`); the rest of that list's are
#: counted (break test F13: a config naming /etc/shadow as a list put its lines in the journal).
QUOTED_PER_LIST = 3


class RowWarnings:
    """An ``on_error`` for :func:`load_targets`: logs the first ``limit`` errors of each list as warnings
    (``kzprobe.targets``; each :meth:`TargetError.brief`), counts them all; :meth:`finish` says, per list,
    how many were not shown."""

    def __init__(self, limit: int = QUOTED_PER_LIST, suffix: str = "") -> None:
        self.limit = limit
        self.suffix = suffix
        self.count = 0
        self.per_list: Counter[str] = Counter()

    def __call__(self, err: TargetError) -> None:
        rows = err.rows if isinstance(err, RowsNotKept) else 1  # a count of rows not kept
        self.count += rows
        where = err.path or CLI_PATH
        self.per_list[where] += rows
        if self.per_list[where] <= self.limit:
            log.warning("%s%s", err.brief(), self.suffix)

    @property
    def hidden(self) -> int:
        """Errors counted but not logged."""
        return sum(max(0, n - self.limit) for n in self.per_list.values())

    def finish(self) -> None:
        """One warning per list for its errors not shown (none when all were)."""
        for where, n in self.per_list.items():
            if n > self.limit:
                log.warning("... and %d more malformed row(s) of %s not shown (the first %d are above)",
                            n - self.limit, where, self.limit)


def _reporter(strict: bool,
              on_error: Callable[[TargetError], None] | None) -> Callable[[TargetError], None]:
    def report(err: TargetError) -> None:
        if strict:
            raise err
        assert on_error is not None
        on_error(err)

    return report


def _dedupe(targets: Iterable[Target]) -> list[Target]:
    seen: dict[str, Target] = {}
    for t in targets:
        first = seen.get(t.input)
        if first is not None:
            log.debug("duplicate input %s (%s:%d) skipped; first seen in %s:%d",
                      t.input, t.list_name, t.line, first.list_name, first.line)
            continue
        seen[t.input] = t
    return list(seen.values())


def load_targets(
    paths: Iterable[str | Path],
    *,
    strict: bool = False,
    on_error: Callable[[TargetError], None] | None = None,
) -> list[Target]:
    """Read target lists and return their inputs, in file order.

    Args:
        paths: list files. A file whose first non-blank line is a CSV header naming a
            ``url`` column is a Citizen Lab test-list CSV
            (``url,category_code,category_description,date_added,source,notes``, in
            any order); a ``.csv`` file without a header is read by the column where its
            first row holds an ``http(s)://`` URL, and is an error when none does; any
            other file is a plain list, one URL a line (blank lines and ``#``
            comments ignored, a bare host ``example.org`` read as
            ``https://example.org/``). A UTF-8 byte-order mark is skipped; CRLF line ends are fine.
        strict: raise the first :class:`TargetError` instead of reporting it.
        on_error: called with each :class:`TargetError` (a bad URL, a row with the
            wrong number of columns, a line that is not UTF-8), after which the
            row is skipped. ``None``: log it as a warning on the
            ``kzprobe.targets`` logger, the first :data:`QUOTED_PER_LIST` of each list
            (then one line per list with the count of the rest: :class:`RowWarnings`).

    A CSV row must have a scheme (``http://`` or ``https://``), unlike a plain
    list line. A quoted CSV field may span lines (a note over two lines is
    fine, up to :data:`MAX_ROW_LINES` lines a row), but when a row that spans
    lines is broken (its quote is never closed, it has the wrong number of
    columns, its URL spans lines, or it runs past :data:`MAX_ROW_LINES`) only
    its first line is reported, with that line's number, and the lines after it
    are read again as rows of their own: a stray ``"`` costs one row, not the
    rest of the file.

    Returns:
        One :class:`Target` per distinct normalised ``input``, across all files:
        the first occurrence wins, later duplicates are logged at debug level.
        An empty list when the files hold no URLs.

    Raises:
        OSError: (FileNotFoundError, IsADirectoryError, PermissionError) naming
            the path: a path does not exist (``target list not found: <path>``)
            or cannot be read (``cannot read target list '<path>': Is a
            directory``); ``filename`` is the path as given.
        TargetError: with ``strict=True``, on the first malformed row.
    """
    warned = RowWarnings() if on_error is None else None
    report = _reporter(strict, warned or on_error)

    def all_targets() -> Iterator[Target]:
        for p in paths:
            yield from _read_file(Path(p), report)

    out = _dedupe(all_targets())
    if warned is not None:
        warned.finish()
    return out


def targets_from_urls(
    urls: Iterable[str],
    *,
    strict: bool = False,
    on_error: Callable[[TargetError], None] | None = None,
) -> list[Target]:
    """Targets from URLs given on the command line (``--input URL``).

    Each URL is normalised like a plain-list line (a bare host becomes
    ``https://<host>/``); ``list_name`` is ``"cli"``, ``line`` the 1-based position,
    and the metadata fields are ``None``. Errors carry ``path`` :data:`CLI_PATH`
    and the position as ``line``; ``strict`` and ``on_error`` work as in
    :func:`load_targets`. Duplicates are kept once (first wins).

    Raises:
        TargetError: with ``strict=True``, on the first bad URL.
    """
    warned = RowWarnings() if on_error is None else None
    report = _reporter(strict, warned or on_error)

    def all_targets() -> Iterator[Target]:
        for position, url in enumerate(urls, start=1):
            try:
                yield _make_target(url, list_name="cli", line=position, bare_ok=True)
            except TargetError as exc:
                report(exc.located(CLI_PATH, position))

    out = _dedupe(all_targets())
    if warned is not None:
        warned.finish()
    return out


# --------------------------------------------------------------------------- shipped lists

_PACKAGE_TARGETS = importlib.resources.files("probe").joinpath("data", "targets")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _repo_targets_dir() -> Path | None:
    """The checkout's ``targets/``, only when this module runs from a source checkout."""
    candidate = _REPO_ROOT / "targets"
    if (_REPO_ROOT / "pyproject.toml").is_file() and candidate.is_dir():
        return candidate
    return None


def shipped_list(name: str) -> Path:
    """Path of a target list shipped as package data (``probe/data/targets/<name>``).

    Works for an installed (non-editable) probe as for a checkout; the files are
    byte-identical copies of the repository's ``targets/``.

    Args:
        name: a file name such as ``"kz.csv"`` or ``"fotn-2021-kz.csv"``; no
            directory parts.

    Raises:
        ValueError: ``name`` contains a path separator or is ``.``/``..``.
        FileNotFoundError: no such shipped list (the message lists those there are).
    """
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"shipped list name must be a bare file name, not {name!r}")
    resource = _PACKAGE_TARGETS.joinpath(name)
    if not resource.is_file():
        available = sorted(
            r.name for r in _PACKAGE_TARGETS.iterdir() if r.is_file() and r.name != "README.md"
        ) if _PACKAGE_TARGETS.is_dir() else []
        raise FileNotFoundError(
            errno.ENOENT,
            f"no shipped target list {name!r}; available: {', '.join(available) or 'none'}",
            name,
        )
    return Path(str(resource))


#: Where the target lists are: the repository's ``targets/`` in a source checkout,
#: else the package-data copy ``probe/data/targets/`` (installed, non-editable).
DEFAULT_TARGETS_DIR: Path = _repo_targets_dir() or Path(str(_PACKAGE_TARGETS))
