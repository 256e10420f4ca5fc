"""Country codes the analysis accepts (``report --country``, ``ooni sync/coverage --cc``): the assigned
ISO 3166-1 alpha-2 codes, OONI's ``ZZ`` (an unknown country: ``probe_cc`` when the probe could
not tell; kzprobe writes it too) and ``XK`` (Kosovo: a user-assigned code, not in ISO 3166-1, which
the GeoIP databases OONI's probes geolocate with give, so OONI has measurements under it).

The list is the IANA time zone database's ``iso3166.tab`` (249 codes, "current as of ISO/TC 46
N1108"), read from the ``tzdata`` package (a dependency of pandas; the analysis extra names it):
``--country XX`` was accepted silently and judged nothing (break test 24, #10)."""

from __future__ import annotations

import argparse
from functools import cache
from importlib.resources import files

#: OONI's country code for an unknown country (ooni/spec df-000 ``probe_cc``).
UNKNOWN_CC = "ZZ"
#: Codes outside ISO 3166-1 that OONI's ``probe_cc`` carries: ZZ, and Kosovo's user-assigned XK
#: (MaxMind's and IP-to-country databases' code for it; OONI Explorer lists its measurements).
NON_ISO_CODES = frozenset({UNKNOWN_CC, "XK"})


@cache
def iso3166_alpha2() -> frozenset[str]:
    """The assigned ISO 3166-1 alpha-2 codes (tzdata's ``iso3166.tab``: code, tab, name)."""
    text = files("tzdata.zoneinfo").joinpath("iso3166.tab").read_text(encoding="utf-8")
    return frozenset(line.split("\t", 1)[0] for line in text.splitlines() if line and not line.startswith("#"))


def country_code(text: str) -> str:
    """``text`` as an upper-case country code (an argparse type: argparse names the flag), or an
    :class:`argparse.ArgumentTypeError` naming the text: an assigned ISO 3166-1 alpha-2 code or one of
    :data:`NON_ISO_CODES`. The letters are checked before upper-casing: Unicode upper-casing turns
    non-ASCII text into ASCII letters (``'kı'`` → ``'KI'``, ``'ﬀ'`` → ``'FF'``)."""
    t = text.strip()
    if len(t) != 2 or not t.isascii() or not t.isalpha():
        raise argparse.ArgumentTypeError(f"expected a two-letter country code (ISO 3166-1), got {text!r}")
    t = t.upper()
    if t not in NON_ISO_CODES and t not in iso3166_alpha2():
        raise argparse.ArgumentTypeError(f"{text!r} is not an assigned ISO 3166-1 country code "
                                         f"(e.g. KZ; {UNKNOWN_CC} for OONI's unknown country)")
    return t
