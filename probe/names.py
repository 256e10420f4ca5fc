"""Host names, once: the A-label of a domain and what counts as a valid host.

One contract for every part of kzprobe (target lists, DNS, TLS SNI, redirects, the lab's
censor and scenarios, the claims file, the analysis):

* :func:`to_alabel` — a domain name as it goes on the wire: UTS #46 mapping (non-transitional,
  without the STD3 rules, so ``_`` survives: ``_dmarc.example.org``), then per label either the
  DNS letter-digit-hyphen rule (ASCII labels; ``_`` allowed) or strict IDNA 2008 (RFC 5891, via the
  ``idna`` package: non-ASCII labels and ``xn--`` labels, which must decode to a valid U-label).
  Lowercase, no trailing dot. A name IDNA 2008 rejects is an error: ``'☃.net'`` raises
  :class:`HostError` (IDNA 2003, Python's ``"idna"`` codec, would have made it ``xn--n3h.net``;
  browsers following UTS #46 refuse it too).
* :func:`normalise_host` — a URL host: an IP literal (IPv4 dotted quad, IPv6 compressed) or
  :func:`to_alabel`'s result.
* :func:`valid_host` — whether a host as it appears in a URL (``yarl``'s ``raw_host``: already
  A-labels, no brackets) is an IP literal or a name :func:`to_alabel` keeps as is.

Why IDNA 2008 + UTS #46 and not IDNA 2003: browsers and registries use it (WHATWG URL "domain to
ASCII"); the Kazakh ``.қаз`` zone (``xn--80ao21a``) registers IDNA 2008 names. ASCII labels follow
the DNS rule, not IDNA's ban on ``--`` in positions 3–4: hosts such as
``r3---sn-abc.googlevideo.com`` exist and browsers reach them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final

import idna

from probe.errors import KzprobeError

__all__ = ["MAX_LABEL_OCTETS", "MAX_NAME_OCTETS", "HostError", "ends_in_number", "is_ip_literal",
           "normalise_host", "to_alabel", "to_ulabel", "uts46_map", "valid_host"]

#: RFC 1035 §2.3.4 limits (octets of the A-label form, without the trailing dot).
MAX_LABEL_OCTETS: Final = 63
MAX_NAME_OCTETS: Final = 253

#: DNS letter-digit-hyphen label (RFC 1035 §2.3.1), plus ``_`` which real names use; no leading
#: or trailing hyphen. Lowercase: applied after UTS #46 mapping.
_LDH_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?\Z")
#: WHATWG URL "ends in a number": a host whose last label is numeric (or ``0x…``) is parsed as
#: IPv4 by browsers (``127.1``, ``0x7f000001``), so it is never a domain name (RFC 3696 §2).
_NUMERIC_LABEL_RE: Final = re.compile(r"(?:[0-9]+|0[xX][0-9A-Fa-f]*)\Z")


class HostError(KzprobeError, ValueError):
    """A host name that is not valid; the message names the host and the reason.

    Attributes:
        host: the name as given.
        reason: why it is not valid (e.g. ``"label too long (64 > 63): 'aaa…'"``).
    """

    def __init__(self, host: str, reason: str) -> None:
        shown = host if len(host) <= 80 else host[:80] + "…"
        super().__init__(f"invalid host name {shown!r}: {reason}")
        self.host = host
        self.reason = reason


def uts46_map(name: str) -> str:
    """UTS #46 mapping of ``name`` (non-transitional, no STD3 rules): case folding, full-width forms,
    ideographic full stops (``ＡＢＣ。ＯＲＧ`` → ``abc.org``, ``１２７.０.０.１`` → ``127.0.0.1``). The
    first step of :func:`to_alabel`, on its own for callers that must tell an address from a name.

    Raises:
        HostError: a code point UTS #46 disallows.
    """
    try:
        return idna.uts46_remap(name, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise HostError(name, f"invalid host: {exc}") from None


def ends_in_number(name: str) -> bool:
    """Whether the last label of ``name`` is numeric (``123``, ``0x7f``): WHATWG URL's IPv4 test."""
    return bool(_NUMERIC_LABEL_RE.match(name.removesuffix(".").rsplit(".", 1)[-1]))


def to_alabel(name: str) -> str:
    """The IDNA 2008 A-label form of the domain ``name``: lowercase, without the trailing dot.

    Surrounding whitespace and one trailing dot (the root) are ignored. ``сайт.қаз``,
    ``САЙТ.ҚАЗ``, ``сайт。қаз`` and ``xn--80aswg.xn--80ao21a`` all give ``xn--80aswg.xn--80ao21a``;
    ``Example.ORG.`` gives ``example.org``.

    Raises:
        HostError: (a ``ValueError``) the name is empty, has an empty label, a label that is not
            LDH (ASCII) or not valid IDNA 2008 (non-ASCII or ``xn--``; e.g. ``'☃.net'``), a label
            over 63 or a name over 253 octets, or a numeric last label (``1.2.3.4`` is an address,
            not a name: see :func:`normalise_host`).
    """
    if not isinstance(name, str):
        raise HostError(repr(name), f"not a string ({type(name).__name__})")
    return _to_alabel(name)


@functools.lru_cache(maxsize=4096)
def _to_alabel(name: str) -> str:
    """:func:`to_alabel` of a string, memoised: the UTS #46 mapping and IDNA checks are pure
    Python and ran ~3 times per input (SNI, the verified name, the URL): ~3 % of the probe's CPU
    on the loopback bench (py-spy, issue 13). A name that raises is not cached."""
    try:
        mapped = uts46_map(name.strip()).removesuffix(".")
    except HostError as exc:
        raise HostError(name, exc.reason) from None
    if not mapped:
        raise HostError(name, "empty host")
    out: list[str] = []
    for label in mapped.split("."):
        if not label:
            raise HostError(name, "empty label")
        if label.isascii() and not label.startswith("xn--"):
            if len(label) > MAX_LABEL_OCTETS:
                raise HostError(name, f"label too long ({len(label)} > {MAX_LABEL_OCTETS}): {label!r}")
            if not _LDH_LABEL_RE.match(label):
                raise HostError(name, f"invalid label {label!r} (letters, digits, '-' and '_' only, "
                                      "no leading or trailing '-')")
            out.append(label)
            continue
        try:
            alabel = idna.encode(label).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError) as exc:
            raise HostError(name, f"invalid IDN label {label!r} (IDNA 2008): {exc}") from None
        out.append(alabel)
    if _NUMERIC_LABEL_RE.match(out[-1]):
        raise HostError(name, f"numeric top-level label {out[-1]!r} (an address, not a name)")
    result = ".".join(out)
    if len(result) > MAX_NAME_OCTETS:
        raise HostError(name, f"host too long ({len(result)} > {MAX_NAME_OCTETS} octets)")
    return result


def to_ulabel(name: str) -> str:
    """The Unicode form of an A-label name, for display (``xn--80aswg.xn--80ao21a`` → ``сайт.қаз``).

    Never raises: a name without ``xn--`` labels, or one that does not decode, comes back as given.
    """
    if not isinstance(name, str) or "xn--" not in name.lower():
        return name
    try:
        return idna.decode(name)
    except (idna.IDNAError, UnicodeError, ValueError):
        return name


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 dotted quad or an IPv6 address (no brackets; zone id allowed)."""
    try:
        if ":" in host:
            ipaddress.IPv6Address(host)
        else:
            ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def normalise_host(host: str) -> str:
    """A URL host in canonical form: an IP literal (IPv4 dotted quad; IPv6 compressed, brackets
    optional, no zone id) or the :func:`to_alabel` of a domain.

    Raises:
        HostError: not an IP literal and not a valid domain name.
    """
    text = host.strip()
    if text.startswith("[") or ":" in text:
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if "%" in inner:
            raise HostError(host, "IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise HostError(host, f"bad IPv6 literal {inner!r}") from None
    if text.isascii() and all(p.isdigit() for p in text.removesuffix(".").split(".") if p):
        try:
            return str(ipaddress.IPv4Address(text.removesuffix(".")))
        except ValueError:
            raise HostError(host, "bad IPv4 address") from None
    return to_alabel(text)


def valid_host(host: str) -> bool:
    """Whether ``host`` (a URL's raw host: A-labels, no brackets) is an IP literal or a valid name.

    IP literal: an IPv4 dotted quad, or an IPv6 address (zone id allowed, RFC 6874). Name: one
    :func:`to_alabel` accepts and leaves as it is apart from case and a trailing dot (so
    non-ASCII, ``%``-escapes, a bad ``xn--`` label, ``1.2.3.4.5``, ``127.1`` and ``0x7f000001``
    are not valid hosts).
    """
    if is_ip_literal(host):
        return True
    if not host.isascii():
        return False
    try:
        return to_alabel(host) == host.strip().removesuffix(".").lower() and host == host.strip()
    except HostError:
        return False
