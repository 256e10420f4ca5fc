"""Blockpage fingerprints: DNS answers, HTTP bodies and headers that censors leave behind.

Three public databases ship as package data under ``probe/data/fingerprints/`` (origin,
commit and licence per file in ``LICENSE-NOTE.md`` there) and are loaded into one
normalised form, :class:`Fingerprint`:

``ooni-fastpath``
    OONI's fastpath fixtures ``fingerprints_dns.json`` / ``fingerprints_http.json``
    (ooni/backend, BSD-3-Clause). A JSON list of objects with ``name``, ``location_found``
    (``dns``, ``body`` or ``header.<name>``), ``pattern_type`` (``full``, ``prefix``,
    ``contains``, ``regexp``), ``pattern``, ``scope``, ``confidence_no_fp``,
    ``expected_countries`` ("AE,SA"). The file already merges copies of many Censored
    Planet (``cp.*``) and Citizen Lab (``cl.*``) fingerprints, so one blockpage often
    matches in two or three sources; each match says its source.
``censoredplanet``
    ``blockpage_signatures.json`` / ``false_positive_signatures.json``
    (censoredplanet/censoredplanet-analysis, Apache-2.0). JSON Lines, one
    ``{"fingerprint", "pattern"}`` per line; the pattern is a Python regex (Censored Planet
    compiles it with ``re.DOTALL`` and searches the whole reconstructed response: status
    line, ``Name: value`` header lines, blank line, body). Patterns of the form
    ``Server: …`` / ``Location: …`` / ``Set-Cookie: …`` / ``Blocked-By: …`` are header
    rules and become ``http_header`` fingerprints (regex matched at the start of that
    header's value); all others are body regexes. Every false-positive signature is kept
    with ``expected_false_positive=True``.
``citizenlab``
    ``dns.csv`` (columns name, response, confidence_no_fp, exp_url, source, scope,
    expected_countries, notes) and ``http.csv`` (name, common_name, pattern,
    location_found = ``body``/``header``, exp_url, confidence_no_fp, source, scope,
    expected_countries, notes) from citizenlab/filtering-annotations (BSD-3-Clause).
    Body patterns are substrings. A ``header`` row does not say which header: as OONI's
    fastpath does when it imports these rows, it becomes a ``contains`` rule on
    ``Location``, except a pattern written ``Name: value`` (e.g. ``Server: Olfeo``), which
    becomes a ``prefix`` rule on that header.

Matching semantics follow the documented ones of ooni/blocking-fingerprints (``full`` =
equality, ``prefix`` = startswith, ``contains`` = substring, ``regexp`` = regex search), all
case-sensitive as upstream. Two deliberate differences from OONI's fastpath code, whose
body matcher treats ``regexp`` patterns as plain substrings and whose header matcher
ignores ``contains`` rules: here regexes are regexes (``re.DOTALL``, as Censored Planet,
where most of them come from) and header ``contains`` rules are applied.

``expected_false_positive`` marks fingerprints that match pages which are *not*
censorship: Censored Planet's false-positive signatures (e.g. ``x_on_this_server``, the
Akamai "You don't have permission to access … on this server" 403, a server-side block;
FIELD-CASES.md FC-13), fastpath entries of scope ``fp`` (the same signatures as imported by
OONI) and scope ``injb`` ("injection, benign": a router-firmware or pay-your-bill notice).
:func:`match_http` returns them alongside blockpage matches; the caller decides (Censored
Planet's own matcher lets a false positive win over any blockpage match).

Public API: :func:`match_dns`, :func:`match_http`, :func:`cdn_server_block`,
:func:`load_database` / :func:`all_fingerprints`.
"""

from __future__ import annotations

import ast
import codecs
import csv
import io
import ipaddress
import json
import operator
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

__all__ = [
    "Fingerprint",
    "FingerprintDB",
    "Source",
    "Kind",
    "MatchType",
    "load_database",
    "all_fingerprints",
    "match_dns",
    "match_http",
    "cdn_server_block",
]

Source = Literal["ooni-fastpath", "censoredplanet", "citizenlab"]
Kind = Literal["dns", "http_body", "http_header"]
MatchType = Literal["exact", "contains", "prefix", "regex"]

SOURCES: tuple[str, ...] = ("ooni-fastpath", "censoredplanet", "citizenlab")

#: Scopes (Citizen Lab / OONI vocabulary) whose fingerprints are not censorship.
FALSE_POSITIVE_SCOPES = frozenset({"fp", "injb"})

#: Censored Planet signature prefixes that name a header rather than body text.
_CP_HEADER_NAMES = frozenset({"server", "location", "set-cookie", "blocked-by"})
_CP_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ ]?(.*)$", re.DOTALL)
_CL_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ ]+(\S.*)$", re.DOTALL)

_FASTPATH_MATCH: dict[str, MatchType] = {
    "full": "exact",
    "prefix": "prefix",
    "contains": "contains",
    "regexp": "regex",
}


@dataclass(frozen=True, kw_only=True)
class Fingerprint:
    """One fingerprint, normalised across databases.

    Attributes:
        name: the upstream identifier, verbatim (``ooni.ae_0``, ``cp.fp_x_on_this_server``,
            ``x_on_this_server``, ``isp_ru_akado`` …). Unique within a source except for
            upstream duplicates (ten Censored Planet names, e.g. ``c_isp_ru_taiget``, are
            used twice for different patterns).
        source: ``"ooni-fastpath"`` | ``"censoredplanet"`` | ``"citizenlab"``.
        kind: ``"dns"`` (an answer: IP address or CNAME host), ``"http_body"``,
            ``"http_header"``.
        location: for ``http_header`` the header name, lowercased (``"location"``,
            ``"server"``, ``"via"`` …); None for ``dns`` and ``http_body``.
        pattern: what to look for; a Python regex when ``match == "regex"``. For ``dns``
            it is normalised (IP addresses in canonical form, host names lowercased,
            no trailing dot).
        match: ``"exact"`` (whole value; for a body, the body stripped of surrounding
            whitespace), ``"contains"``, ``"prefix"`` (a header value's start; a body's
            start after leading whitespace) or ``"regex"`` (``re.search`` with
            ``re.DOTALL`` on a body; ``re.match`` at the start of a header value).
        country: expected country codes, comma-separated, uppercase (``"AE,SA"``); None
            when the database gives none (OONI's ``ZZ``, "unknown", is dropped).
        expected_false_positive: True when a match means "not censorship" (see the module
            docstring; FIELD-CASES.md FC-13).
        scope: upstream scope (``nat``, ``isp``, ``prod``, ``inst``, ``vbw`` = vague
            blocking word, ``fp``, ``injb``, ``br`` …); None for Censored Planet, whose
            files carry none.
        confidence_no_fp: upstream self-assessed confidence that the pattern causes no
            false positive (0–10, higher is safer); None when not given.
    """

    name: str
    source: Source
    kind: Kind
    location: str | None
    pattern: str
    match: MatchType
    country: str | None
    expected_false_positive: bool
    scope: str | None = None
    confidence_no_fp: int | None = None

    @property
    def countries(self) -> tuple[str, ...]:
        """``country`` split into a tuple (empty when None)."""
        return tuple(self.country.split(",")) if self.country else ()


@dataclass(frozen=True)
class FingerprintDB:
    """All shipped fingerprints, and what could not be loaded.

    Attributes:
        fingerprints: in load order (ooni-fastpath, censoredplanet, citizenlab; file order
            within each). Matching functions return results in this order.
        errors: one human-readable line per row or file that was skipped (bad JSON, an
            unknown ``location_found``, a regex that does not compile …). Loading never
            raises for a bad row; the shipped files load with no errors (tested).
    """

    fingerprints: tuple[Fingerprint, ...]
    errors: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """Number of fingerprints per source, e.g. ``{"ooni-fastpath": 1849, …}``."""
        out = dict.fromkeys(SOURCES, 0)
        for fp in self.fingerprints:
            out[fp.source] += 1
        return out


# --------------------------------------------------------------------------- loading


def _data_dir():
    return resources.files("probe") / "data" / "fingerprints"


def _read_text(*parts: str) -> str:
    node = _data_dir()
    for p in parts:
        node = node / p
    return node.read_text(encoding="utf-8")


def _countries(values: Iterable[str]) -> str | None:
    out: list[str] = []
    for v in values:
        v = v.strip().upper()
        if v and v != "ZZ" and v not in out:
            out.append(v)
    return ",".join(out) or None


def _int_or_none(v: object) -> int | None:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=16384)
def _norm_dns(value: str) -> str:
    """Canonical text of a DNS answer: an IP in compressed form, else a lowercased host (memoised)."""
    v = value.strip()
    try:
        return ipaddress.ip_address(v).compressed
    except ValueError:
        return v.lower().rstrip(".")


#: A regex metacharacter (with DOTALL, the only flag used): a pattern without one is a plain
#: literal, always valid, matched by ``in`` (issue 13: half the shipped regexes are plain words,
#: and parsing + compiling each at start-up cost ~0.1 s of CPU per run).
_META_RE = re.compile(r"[.^$*+?{}\[\]\\|()]")
#: Patterns compiled while loading the database, reused by the index.
_COMPILED: dict[str, re.Pattern[str]] = {}


def _is_plain(pattern: str) -> bool:
    return _META_RE.search(pattern) is None


def _compiled(pattern: str) -> re.Pattern[str]:
    """``re.compile(pattern, re.DOTALL)``, once per pattern."""
    rx = _COMPILED.get(pattern)
    if rx is None:
        rx = _COMPILED[pattern] = re.compile(pattern, re.DOTALL)
    return rx


def _check_regex(pattern: str) -> None:
    """Raises re.error for an invalid pattern (a plain literal is always valid)."""
    if not _is_plain(pattern):
        _compiled(pattern)


def _load_fastpath(out: list[Fingerprint], errors: list[str]) -> None:
    for fname in ("fingerprints_dns.json", "fingerprints_http.json"):
        where = f"ooni-backend-fastpath/{fname}"
        try:
            rows = json.loads(_read_text("ooni-backend-fastpath", fname))
        except (OSError, ValueError) as e:
            errors.append(f"{where}: {e}")
            continue
        for i, row in enumerate(rows):
            try:
                name = str(row["name"])
                loc = str(row["location_found"])
                match = _FASTPATH_MATCH[row["pattern_type"]]
                pattern = str(row["pattern"])
                if loc == "dns":
                    kind: Kind = "dns"
                    location = None
                    if match != "exact":
                        raise ValueError(f"dns pattern_type {row['pattern_type']!r}")
                    pattern = _norm_dns(pattern)
                elif loc == "body":
                    kind, location = "http_body", None
                elif loc.startswith("header.") and len(loc) > 7:
                    kind, location = "http_header", loc[7:].lower()
                else:
                    raise ValueError(f"unknown location_found {loc!r}")
                if match == "regex":
                    _check_regex(pattern)
                scope = str(row.get("scope") or "") or None
                out.append(Fingerprint(
                    name=name, source="ooni-fastpath", kind=kind, location=location,
                    pattern=pattern, match=match,
                    country=_countries(str(row.get("expected_countries") or "").split(",")),
                    expected_false_positive=scope in FALSE_POSITIVE_SCOPES,
                    scope=scope, confidence_no_fp=_int_or_none(row.get("confidence_no_fp")),
                ))
            except (KeyError, TypeError, ValueError, re.error) as e:
                errors.append(f"{where}[{i}]: {type(e).__name__}: {e}")


def _load_censoredplanet(out: list[Fingerprint], errors: list[str]) -> None:
    for fname, fp_flag in (("blockpage_signatures.json", False),
                           ("false_positive_signatures.json", True)):
        where = f"censoredplanet/{fname}"
        try:
            text = _read_text("censoredplanet", fname)
        except OSError as e:
            errors.append(f"{where}: {e}")
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name = str(row["fingerprint"])
                pattern = str(row["pattern"])
                _check_regex(pattern)
                kind: Kind = "http_body"
                location = None
                m = _CP_HEADER_RE.match(pattern)
                if m and m.group(1).lower() in _CP_HEADER_NAMES:
                    kind, location, pattern = "http_header", m.group(1).lower(), m.group(2)
                    _check_regex(pattern)
                out.append(Fingerprint(
                    name=name, source="censoredplanet", kind=kind, location=location,
                    pattern=pattern, match="regex", country=None,
                    expected_false_positive=fp_flag,
                ))
            except (KeyError, TypeError, ValueError, re.error) as e:
                errors.append(f"{where}:{lineno}: {type(e).__name__}: {e}")


def _py_list(cell: str) -> list[str]:
    """Citizen Lab stores lists as Python literals: ``['RU']``, ``['']``, ``[]``."""
    cell = (cell or "").strip()
    if not cell:
        return []
    try:
        v = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        return [cell]
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [str(v)]


def _load_citizenlab(out: list[Fingerprint], errors: list[str]) -> None:
    base = "citizenlab-filtering-annotations"
    for fname in ("dns.csv", "http.csv"):
        where = f"{base}/{fname}"
        try:
            text = _read_text(base, fname)
        except OSError as e:
            errors.append(f"{where}: {e}")
            continue
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for rowno, row in enumerate(reader, 2):
            try:
                if None in row or any(v is None for v in row.values()):
                    raise ValueError("wrong number of columns")
                name = row["name"].strip()
                if not name:
                    raise ValueError("empty name")
                scope = row["scope"].strip() or None
                common = dict(
                    name=name, source="citizenlab",
                    country=_countries(_py_list(row["expected_countries"])),
                    expected_false_positive=scope in FALSE_POSITIVE_SCOPES,
                    scope=scope, confidence_no_fp=_int_or_none(row["confidence_no_fp"]),
                )
                if fname == "dns.csv":
                    resp = row["response"].strip()
                    if not resp:
                        raise ValueError("empty response")
                    out.append(Fingerprint(kind="dns", location=None, pattern=_norm_dns(resp),
                                           match="exact", **common))
                    continue
                pattern = row["pattern"]
                if not pattern:
                    raise ValueError("empty pattern")
                loc = row["location_found"].strip().lower()
                if loc == "body":
                    out.append(Fingerprint(kind="http_body", location=None, pattern=pattern,
                                           match="contains", **common))
                elif loc == "header":
                    m = _CL_HEADER_RE.match(pattern)
                    if m:
                        out.append(Fingerprint(kind="http_header", location=m.group(1).lower(),
                                               pattern=m.group(2), match="prefix", **common))
                    else:
                        out.append(Fingerprint(kind="http_header", location="location",
                                               pattern=pattern, match="contains", **common))
                else:
                    raise ValueError(f"unknown location_found {loc!r}")
            except (KeyError, TypeError, ValueError) as e:
                errors.append(f"{where}:{rowno}: {type(e).__name__}: {e}")


@cache
def load_database() -> FingerprintDB:
    """Load every shipped fingerprint file (once; cached).

    Returns:
        A :class:`FingerprintDB`. Rows that cannot be converted are skipped and listed in
        ``errors``; a missing file is an error line too, never an exception.
    """
    out: list[Fingerprint] = []
    errors: list[str] = []
    _load_fastpath(out, errors)
    _load_censoredplanet(out, errors)
    _load_citizenlab(out, errors)
    return FingerprintDB(tuple(out), tuple(errors))


def all_fingerprints() -> tuple[Fingerprint, ...]:
    """Every loaded fingerprint, in load order (see :class:`FingerprintDB`)."""
    return load_database().fingerprints


# --------------------------------------------------------------------------- index

_WORD_RE = re.compile(r"\w+")
_TOKEN_MIN = 4
_TOKEN_RE = re.compile(r"\w{%d,}" % _TOKEN_MIN)


def _literal_parts(pattern: str) -> tuple[bool, str | None]:
    """(is the regex a plain literal?, its longest required literal run or None).

    Uses the stdlib regex parser (private ``re._parser``); on any surprise it answers
    (False, None), i.e. "run the regex, no pre-filter", which is always correct.
    """
    if _is_plain(pattern):
        return True, pattern
    tree = _regex_tree(pattern)
    if tree is None:
        return False, None
    sp, C = tree  # noqa: N806
    runs: list[str] = []
    cur: list[str] = []
    pure = True
    for op, av in sp.data:
        if op is C.LITERAL:
            cur.append(chr(av))
        else:
            pure = False
            if cur:
                runs.append("".join(cur))
                cur = []
    if cur:
        runs.append("".join(cur))
    if pure:
        return True, "".join(runs)
    best = max(runs, key=len, default="")
    return False, (best if len(best) >= 3 else None)


def _required_runs(pattern: str) -> tuple[str, ...]:
    """The literal runs of any length that ``pattern`` requires (its top-level literals), each once; () if
    none is known (an alternation at the top, a case-insensitive pattern, anything the parser surprises with).

    A pre-filter by ``in`` before the regex runs (:class:`_BodyRule` ``needs``): the gate finds a rule's
    longest run only; ``<span style=.*color:red;.*>\\(...`` (two greedy ``.*`` over the whole page)
    ran on every page with a ``<span style=``, ~200,000 instructions a 7 KB page, where ``color:red;``
    was not there; ``\\ufffd.*\\ufffd`` (no gate: one character) ran on every page (issue 14 part 7).
    """
    tree = _regex_tree(pattern)
    if tree is None:
        return ()
    sp, C = tree  # noqa: N806
    runs: dict[str, None] = {}
    cur: list[str] = []
    for op, av in sp.data:
        if op is C.LITERAL:
            cur.append(chr(av))
        elif cur:
            runs["".join(cur)] = None
            cur = []
    if cur:
        runs["".join(cur)] = None
    return tuple(runs)


def _regex_tree(pattern: str) -> tuple[Any, Any] | None:
    """(parsed ``pattern``, ``re._constants``) from the stdlib regex parser (private ``re._parser``),
    or None on any surprise and for case-insensitive, verbose or multi-line patterns (whose literal
    runs are not plain substrings): callers then run the regex with no pre-filter."""
    try:
        from re import _constants as C  # noqa: N812
        from re import _parser as P  # noqa: N812

        sp = P.parse(pattern, re.DOTALL)
    except Exception:  # pragma: no cover - depends on a private stdlib module
        return None
    if sp.state.flags & (re.IGNORECASE | re.VERBOSE | re.MULTILINE):
        return None
    return sp, C


def _branch_gates(pattern: str) -> tuple[str, ...] | None:
    """For a regex that is one top-level alternation (``a|b|c``, the shape of a title with an
    unescaped ``|``: ``<title>Information Security Notice | McMaster University</title>``), the
    longest required literal run of every branch: the regex can only match where one of them
    occurs. None when the pattern is not such an alternation or a branch has no run of at least 3
    characters (then the regex runs on every body, which is always correct).

    Such a regex has no single required literal (:func:`_literal_parts` gives None), so it ran on
    every body: ~0.3-0.8 ms on a 7-15 KiB page, more than the rest of the judge.
    """
    tree = _regex_tree(pattern)
    if tree is None:
        return None
    sp, C = tree  # noqa: N806
    if len(sp.data) != 1 or sp.data[0][0] is not C.BRANCH:
        return None
    gates = []
    for branch in sp.data[0][1][1]:
        runs: list[str] = []
        cur: list[str] = []
        for op, av in branch.data:
            if op is C.LITERAL:
                cur.append(chr(av))
            elif cur:
                runs.append("".join(cur))
                cur = []
        if cur:
            runs.append("".join(cur))
        best = max(runs, key=len, default="")
        if len(best) < 3:
            return None
        gates.append(best)
    return tuple(dict.fromkeys(gates)) or None


def _anchor(literal: str) -> tuple[str, str] | None:
    """Where ``literal`` must leave a trace in the word tokens of any text containing it.

    Tokens are maximal ``\\w`` runs of at least ``_TOKEN_MIN`` characters (``_TOKEN_RE``).
    Returns, best first:

    * ``("=", word)``: an *interior* word of the literal (a non-word character on both
      sides inside the literal) is bounded the same way in the text, so it is a token;
    * ``("<", word[:4])``: a word that ends the literal (and does not start it) is the
      start of a token of the text, so some token starts with these 4 characters;
    * ``(">", word[-4:])``: a word that starts the literal is the end of a token;
    * None: no usable word (a single word, or words shorter than ``_TOKEN_MIN``):
      the literal is searched for directly.
    """
    interior: str | None = None
    tail: str | None = None
    head: str | None = None
    for m in _WORD_RE.finditer(literal):
        w = m.group()
        if len(w) < _TOKEN_MIN:
            continue
        starts, ends = m.start() == 0, m.end() == len(literal)
        if not starts and not ends:
            if interior is None or len(w) > len(interior):
                interior = w
        elif ends and not starts:
            tail = w
        elif starts and not ends:
            head = w
    if interior is not None:
        return "=", interior
    if tail is not None:
        return "<", tail[:_TOKEN_MIN]
    if head is not None:
        return ">", head[-_TOKEN_MIN:]
    return None


@dataclass
class _BodyRule:
    pos: int
    fp: Fingerprint
    gate: str | None  # literal that must be present (None = no gate)
    regex: re.Pattern[str] | None  # final check; None = the gate is the whole rule
    needs: tuple[str, ...] = ()  # literals the regex requires (gate or not), checked by `in` before it runs


@dataclass
class _Index:
    dns: dict[str, list[tuple[int, Fingerprint]]]
    headers: dict[str, list[tuple[int, Fingerprint, re.Pattern[str] | None]]]
    by_anchor: dict[str, dict[str, list[_BodyRule]]]  # "=", "<", ">" -> key -> rules
    ungated_literal: list[_BodyRule]  # gate but no anchor: check the gate with `in`
    always: list[_BodyRule]  # regexes with no usable gate: always run
    exact_body: list[tuple[int, Fingerprint]]  # "exact" and "prefix" body rules
    by_gate: dict[str, list[_BodyRule]] = field(default_factory=dict)  # every gated rule by its gate
    automaton: Any = None  # ahocorasick_rs.AhoCorasick over by_gate's keys; None without the package
    header_filters: dict[str, _HeaderFilter] = field(default_factory=dict)
    #: ``always`` without the alternations filed in ``by_gate`` under each branch's literal
    #: (:func:`_branch_gates`): what still runs on every body when the automaton is used
    always_ac: list[_BodyRule] = field(default_factory=list)
    dfa: bool = False  # the automaton is the DFA of fast_body_matching()


@dataclass
class _HeaderFilter:
    """A necessary condition for any rule of one header name to match a value: one C-level
    test per match kind instead of a Python call per rule (``location`` has ~580 rules)."""

    exact: frozenset[str]          # value.strip() must be one of these
    prefixes: tuple[str, ...]      # value.startswith(prefixes)
    contains: Any                  # a compiled alternation of the literals (re.search), or None
    regex: Any                     # an alternation of the regexes (re.match), or None; "all" = no filter

    def may_match(self, v: str) -> bool:
        if self.regex == "all":
            return True
        return ((bool(self.exact) and v.strip() in self.exact) or (bool(self.prefixes) and v.startswith(self.prefixes))
                or (self.contains is not None and self.contains.search(v) is not None)
                or (self.regex is not None and self.regex.match(v) is not None))


def _header_filter(rules: list[tuple[int, Fingerprint, re.Pattern[str] | None]]) -> _HeaderFilter:
    exact = frozenset(fp.pattern for _, fp, _ in rules if fp.match == "exact")
    prefixes = tuple(fp.pattern for _, fp, _ in rules if fp.match == "prefix")
    lits = [fp.pattern for _, fp, _ in rules if fp.match == "contains"]
    rxs = [fp.pattern for _, fp, _ in rules if fp.match == "regex"]
    contains = re.compile("|".join(re.escape(x) for x in lits), re.DOTALL) if lits else None
    regex: Any = None
    if rxs:
        try:
            # (?:a)|(?:b): re.match of the alternation succeeds iff one alternative matches at the
            # start; numbered groups or backreferences would be renumbered, so then no filter
            if any(_compiled(x).groups for x in rxs):
                raise re.error("groups")
            regex = re.compile("|".join(f"(?:{x})" for x in rxs), re.DOTALL)
        except re.error:
            regex = "all"
    return _HeaderFilter(exact=exact, prefixes=prefixes, contains=contains, regex=regex)


def _automaton(gates: Iterable[str], *, dfa: bool = False) -> Any:
    """An Aho-Corasick automaton over the body rules' gates (``ahocorasick_rs``, optional: the
    ``fast``/``analysis`` extras); None when the package is missing. ``dfa``: built as a DFA
    (see :func:`fast_body_matching`)."""
    try:
        import ahocorasick_rs
    except ImportError:  # pragma: no cover - depends on the installed extras
        return None
    kw: dict[str, Any] = {"implementation": ahocorasick_rs.Implementation.DFA} if dfa else {}
    return ahocorasick_rs.AhoCorasick(list(gates), matchkind=ahocorasick_rs.MatchKind.Standard, **kw)


_fast_lock = threading.Lock()


def fast_body_matching() -> None:
    """From now on, scan bodies for the rules' gates with a DFA: the same gates found (every
    overlapping match, as before), in ~0.55x the time and ~1/3 of the instructions (1,312 gates;
    the real-sample bodies of bench.ooni_judge: 170 -> 95 µs a pass), for ~56 MB more memory and
    ~0.1 s to build, once a process. For the analysis, which matches millions of OONI bodies
    (:func:`analysis.ooni.warm`; issue 14 part 7), not for the probe (a Raspberry Pi's memory).
    Idempotent; a no-op without ``ahocorasick_rs``."""
    idx = _index()
    if idx.dfa or idx.automaton is None:
        return
    with _fast_lock:
        if not idx.dfa:
            idx.automaton = _automaton(idx.by_gate, dfa=True)
            idx.dfa = True


@cache
def _index() -> _Index:
    db = load_database()
    dns: dict[str, list[tuple[int, Fingerprint]]] = defaultdict(list)
    headers: dict[str, list[tuple[int, Fingerprint, re.Pattern[str] | None]]] = defaultdict(list)
    by_anchor: dict[str, dict[str, list[_BodyRule]]] = {k: defaultdict(list) for k in "=<>"}
    ungated: list[_BodyRule] = []
    always: list[_BodyRule] = []
    exact_body: list[tuple[int, Fingerprint]] = []
    compiled = _compiled
    for pos, fp in enumerate(db.fingerprints):
        if fp.kind == "dns":
            dns[fp.pattern].append((pos, fp))
        elif fp.kind == "http_header":
            assert fp.location is not None
            headers[fp.location].append(
                (pos, fp, compiled(fp.pattern) if fp.match == "regex" else None))
        elif fp.match in ("exact", "prefix"):  # whole-body rules (no body prefix is shipped)
            exact_body.append((pos, fp))
        else:
            if fp.match == "contains":
                rule = _BodyRule(pos, fp, fp.pattern, None)
            else:
                pure, gate = _literal_parts(fp.pattern)
                rule = _BodyRule(pos, fp, gate, None if pure else compiled(fp.pattern))
                if pure and not gate:
                    rule = _BodyRule(pos, fp, None, compiled(fp.pattern))
                if rule.regex is not None:
                    rule.needs = tuple(n for n in _required_runs(fp.pattern) if n != rule.gate)
            if rule.gate is None:
                always.append(rule)
                continue
            anchor = _anchor(rule.gate)
            if anchor is None:
                ungated.append(rule)
            else:
                by_anchor[anchor[0]][anchor[1]].append(rule)
    by_gate: dict[str, list[_BodyRule]] = defaultdict(list)
    for rule in ungated + [r for t in by_anchor.values() for rs in t.values() for r in rs]:
        assert rule.gate is not None
        by_gate[rule.gate].append(rule)
    always_ac: list[_BodyRule] = []
    for rule in always:  # an alternation: tested only when one branch's literal is in the body
        gates = _branch_gates(rule.fp.pattern) if rule.fp.match == "regex" and rule.regex is not None else None
        if gates is None:
            always_ac.append(rule)
            continue
        for g in gates:  # the rule's own gate stays None: the regex decides
            by_gate[g].append(rule)
    return _Index(dict(dns), dict(headers), {k: dict(v) for k, v in by_anchor.items()},
                  ungated, always, exact_body, dict(by_gate), _automaton(by_gate),
                  {name: _header_filter(rules) for name, rules in headers.items()}, always_ac)


# --------------------------------------------------------------------------- matching


def match_dns(addresses: Iterable[str]) -> list[Fingerprint]:
    """Fingerprints of known blockpage/sinkhole answers among ``addresses``.

    Args:
        addresses: DNS answers as text: IPv4/IPv6 addresses and, if you have them, CNAME
            targets (some fingerprints are host names, e.g. Indonesian
            ``internetpositif`` resolvers). Compared after normalisation (canonical IP
            form; host names lowercased without trailing dot); junk is compared as text.

    Returns:
        Matching fingerprints (``kind == "dns"``), each once, in database order; ``[]``
        when none match. Note that generic bogus answers (``127.0.0.1``, ``0.0.0.0``,
        ``1.2.3.4``) are fingerprints too (Citizen Lab scope ``br``).
    """
    idx = _index()
    hits: dict[int, Fingerprint] = {}
    for a in addresses:
        if not isinstance(a, str) or not a.strip():
            continue
        for pos, fp in idx.dns.get(_norm_dns(a), ()):
            hits[pos] = fp
    return [hits[p] for p in sorted(hits)]


_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)


def _header_value(v: str | bytes) -> str:
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v)


def _decode_body(body: bytes | str | None, headers: Sequence[tuple[str, str]]) -> str:
    """Body text for matching.

    UTF-8 when the bytes are valid UTF-8. Otherwise the charset of ``Content-Type`` if it
    names a codec Python knows, else UTF-8 with ``surrogateescape``: invalid bytes become
    lone surrogates that match no pattern (``errors="replace"`` would turn them into
    U+FFFD, which a Censored Planet false-positive signature matches).
    """
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    raw = bytes(body)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for name, value in headers:
        if _header_value(name).strip().lower() == "content-type":
            m = _CHARSET_RE.search(_header_value(value))
            if m:
                try:
                    codec = codecs.lookup(m.group(1))
                except LookupError:
                    break
                if codec.name != "utf-8":
                    return raw.decode(codec.name, errors="surrogateescape")
            break
    return raw.decode("utf-8", errors="surrogateescape")


def _match_header_value(fp: Fingerprint, rx: re.Pattern[str] | None, value: str) -> bool:
    if fp.match == "exact":
        return value.strip() == fp.pattern
    if fp.match == "prefix":
        return value.startswith(fp.pattern)
    if fp.match == "contains":
        return fp.pattern in value
    return rx is not None and rx.match(value) is not None


@lru_cache(maxsize=16384)
def _header_hits(key: str, v: str) -> tuple[tuple[int, Fingerprint], ...]:
    """The header rules of header ``key`` (lowercased) that match the value ``v``; memoised (the
    same Server/Location values recur across measurements), filtered first (:class:`_HeaderFilter`)."""
    idx = _index()
    if not idx.header_filters[key].may_match(v):
        return ()
    return tuple((pos, fp) for pos, fp, rx in idx.headers[key] if _match_header_value(fp, rx, v))


def match_http(status: int | None, headers: Sequence[tuple[str, str]],
               body: bytes | str | None) -> list[Fingerprint]:
    """Fingerprints matching one HTTP response.

    Args:
        status: the status code; not used by the databases' rules (kept for the
            signature shared with :func:`cdn_server_block`); None if unknown.
        headers: ``(name, value)`` pairs as received, repeated names allowed; names are
            compared case-insensitively, values as sent (bytes are read as Latin-1).
        body: the body as bytes (UTF-8; else the ``Content-Type`` charset; else UTF-8
            with invalid bytes kept as unmatchable surrogates) or str;
            None or empty = no body rules can match except an exact empty one.

    Returns:
        Every matching fingerprint (body and header rules, blockpages and expected false
        positives alike: check ``expected_false_positive``), each once, in database order.

    Body matching is indexed: each literal (a ``contains`` pattern, or the longest literal
    run a regex requires) is filed under one of its words, or the first/last 4 characters
    of a word at its edge (:func:`_anchor`); the body's words are collected in one regex
    pass and only rules whose key occurs are tested (substring check, then the regex), so
    a 1 MiB body costs one tokenisation plus ~100 substring searches instead of ~2,000:
    about 0.08 s instead of 0.35 s (tests/test_fingerprints.py).
    """
    idx = _index()
    hits: dict[int, Fingerprint] = {}

    for name, value in headers:  # text as it mostly is, without a call per name
        key = (name if type(name) is str else _header_value(name)).strip().lower()
        if key in idx.headers:
            for pos, fp in _header_hits(key, value if type(value) is str else _header_value(value)):
                hits[pos] = fp

    text = _decode_body(body, headers)
    stripped = text.strip()
    for pos, fp in idx.exact_body:
        if (stripped == fp.pattern) if fp.match == "exact" else stripped.startswith(fp.pattern):
            hits[pos] = fp
    if text:
        def check(rule: _BodyRule) -> None:
            if rule.pos in hits:
                return
            if rule.gate is not None and rule.gate not in text:
                return
            for need in rule.needs:
                if need not in text:
                    return
            if rule.regex is not None and rule.regex.search(text) is None:
                return
            hits[rule.pos] = rule.fp

        gates = _gates_in(idx.automaton, text)
        if gates is not None:  # every gate present, found in one pass: only their rules are tested
            for gate in gates:
                for rule in idx.by_gate[gate]:
                    check(rule)
            for rule in idx.always_ac:
                check(rule)
            return [hits[p] for p in sorted(hits)]
        tokens = set(_TOKEN_RE.findall(text))
        keys = {
            "=": tokens,
            "<": {t[:_TOKEN_MIN] for t in tokens},
            ">": {t[-_TOKEN_MIN:] for t in tokens},
        }
        for kind, table in idx.by_anchor.items():
            for key in keys[kind].intersection(table):
                for rule in table[key]:
                    check(rule)
        for rule in idx.ungated_literal:
            check(rule)
        for rule in idx.always:
            check(rule)
    return [hits[p] for p in sorted(hits)]


def _gates_in(automaton: Any, text: str) -> set[str] | None:
    """The gates occurring in ``text`` (overlapping matches: every gate present is reported), or
    None when there is no automaton or the text holds lone surrogates (a body that is not valid
    UTF-8 nor in its declared charset), which the Rust automaton cannot take: the token index then."""
    if automaton is None:
        return None
    try:
        return set(automaton.find_matches_as_strings(text, overlapping=True))
    except UnicodeEncodeError:
        return None


# --------------------------------------------------------------------------- CDN blocks

_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_first = operator.itemgetter(0)
_AKAMAI_DENIED_RE = re.compile(r"You don.t have permission to access.{0,2048}?on this server",
                               re.I | re.S)


def cdn_server_block(status: int | None, headers: Sequence[tuple[str, str]],
                     body: bytes | str | None) -> str | None:
    """Recognise a CDN/WAF refusing *this client*: a server-side block, not censorship.

    A CDN may show its challenge or "access denied" page to the probe's network and the
    real page to the control (FIELD-CASES.md FC-13: ooni/probe#1734, lgbt.foundation behind
    Cloudflare browser checks; censoredplanet/censoredplanet-analysis#72, commit
    ``6e3a5f0``, which made an Akamai "on this server" page with ``Server: AkamaiGHost``
    an expected mismatch). Such a response is evidence that the *site* refused us; the
    verdict should be "not censorship, not accessible", never ``http-diff``.

    Args:
        status: HTTP status code (None if unknown).
        headers: ``(name, value)`` pairs; names case-insensitive.
        body: body bytes or str (only the first 256 KiB are looked at).

    Returns:
        ``"cloudflare_challenge"`` — ``cf-mitigated: challenge`` (any status), or
        ``Server: cloudflare`` with 403/503 and a page titled "Just a moment..." or
        "Attention Required! | Cloudflare";
        ``"cloudflare_access_denied"`` — ``Server: cloudflare``, 403, the error-1020 page
        ("… used Cloudflare to restrict access");
        ``"akamai_access_denied"`` — ``Server: AkamaiGHost`` or ``GHost`` with a 4xx/5xx
        (or unknown) status and "You don't have permission to access … on this server";
        None otherwise (including every 2xx/3xx response without ``cf-mitigated``).
    """
    try:  # the names in one lower-case string, without a loop in Python (names given as bytes: the loop below)
        names: str | None = "\n".join(map(_first, headers)).lower()
    except TypeError:
        names = None
    if names is not None and "cf-mitigated" not in names and (
            "server" not in names or (status is not None and status < 400)):
        return None  # neither header read below, or a 1xx-3xx status without cf-mitigated (~2,000 instructions)
    mitigated: list[str] = []
    servers: list[str] = []
    for name, value in headers:  # only the two headers read below (a response has ~10-25)
        key = (name if type(name) is str else _header_value(name)).strip().lower()
        if key == "server":
            servers.append(_header_value(value).strip().lower())
        elif key == "cf-mitigated":
            mitigated.append(_header_value(value).strip())

    if any(v.lower() == "challenge" for v in mitigated):
        return "cloudflare_challenge"

    cloudflare = "cloudflare" in servers and status in (403, 503)
    akamai = any(s in ("akamaighost", "ghost") for s in servers) and (status is None or status >= 400)
    if not cloudflare and not akamai:  # the body is read only for these: no decode, no title search
        return None
    if isinstance(body, (bytes, bytearray)):
        text = bytes(body[: 256 * 1024]).decode("utf-8", errors="replace")
    else:
        text = (body or "")[: 256 * 1024]
    m = _TITLE_RE.search(text)
    title = " ".join(m.group(1).split()).lower() if m else ""

    if cloudflare:
        if title.startswith("just a moment") or title.startswith("attention required"):
            return "cloudflare_challenge"
        if status == 403 and "used cloudflare to restrict access" in text.lower():
            return "cloudflare_access_denied"

    if akamai:
        if _AKAMAI_DENIED_RE.search(text):
            return "akamai_access_denied"
    return None
