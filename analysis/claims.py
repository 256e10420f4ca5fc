"""The report's checkable claims: ``claims.toml`` → validated :class:`Claim` records.

The claims file (canonical copy ``seeds/claims.toml``; a byte-identical copy ships as
package data ``analysis/data/claims.toml`` so an installed, non-editable kzprobe has
it, like ``probe/data/targets/``) lists every statement of Freedom House, *Freedom on
the Net 2021 — Kazakhstan* (the seed text ``seeds/000_53873136671c67ec.txt``, also
shipped as ``analysis/data/``) that a measurement can confirm or contradict, and the
main statements it cannot (laws, arrests …) marked ``testable = false`` with a reason.
The file's header comment documents every key.

Validation (:func:`load_claims`) is strict, because a wrong claim silently judges the
wrong thing: unknown keys, wrong types, duplicate ids, a section that is not a section
of the seed text (Overview, A1 … A5, B1 … B8, C1 … C8, found from its ``A1 0-6 pts`` headings), a
quote that does not occur in that section (whitespace-insensitive), a target that is
not a lowercase IDNA A-label, an unknown target list, an empty period or one outside
:data:`EARLIEST_DATE` … :data:`REPORT_PUBLISHED` are :class:`ClaimsError` naming the
file, the claim id and the key.
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from analysis.ooni_apps import APP_TESTS
from probe import vocab
from probe.errors import KzprobeError
from probe.names import HostError, to_alabel

__all__ = [
    "ANY_TARGET",
    "BLOCKING_TYPES",
    "EARLIEST_DATE",
    "EXPECTATIONS",
    "QUANTIFIERS",
    "REPORT_PERIOD",
    "REPORT_PUBLISHED",
    "SEED_NAME",
    "Claim",
    "ClaimsError",
    "HOST_MATCHING",
    "OVERVIEW",
    "TEST_LISTS_2021",
    "claim_domains",
    "distinct_facts",
    "domain_matches",
    "load_claims",
    "packaged_claims_path",
    "packaged_seed_path",
    "seed_sections",
    "testable_claims",
    "untested_targets",
]

Expect = Literal["blocked", "accessible", "intermittent", "mitm", "no_mitm", "throttled", "outage", "down"]
Quantifier = Literal["pooled", "some", "many", "most", "each"]
Hosts = Literal["subdomains", "exact"]

#: The expected observations a claim can name (see :mod:`analysis.compare` for what each means).
EXPECTATIONS: tuple[str, ...] = get_args(Expect)
#: How a claim over several targets is judged (see :mod:`analysis.compare`).
QUANTIFIERS: tuple[str, ...] = get_args(Quantifier)
#: How a claim's targets match measured domains: "subdomains" (a target and every name under
#: it) or "exact" (the target itself and its ``www.`` name only: the interception claims, whose
#: lists name hosts one by one).
HOST_MATCHING: tuple[str, ...] = get_args(Hosts)
#: The Citizen Lab test lists OONI Probe measured from during the report's period: a target in
#: neither was (almost) never measured by OONI then (:func:`untested_targets`).
TEST_LISTS_2021: tuple[str, ...] = ("kz-2021-05-31.csv", "global-2021-05-31.csv")
#: The section before A1: the report's Overview (its dated statements can be claims too).
OVERVIEW = "Overview"
#: Blocking values a claim may name in ``blocking_types``: OONI web_connectivity's
#: (df-000 / ts-017) plus kzprobe's ``tls_mitm`` and ``throttling``.
BLOCKING_TYPES: tuple[str, ...] = vocab.BLOCKING_TYPES

#: The report's coverage period, inclusive (Freedom on the Net 2021, "June 1, 2020 – May 31, 2021").
REPORT_PERIOD: tuple[date, date] = (date(2020, 6, 1), date(2021, 5, 31))
#: Publication date of the report: no claim can be about a later time.
REPORT_PUBLISHED = date(2021, 9, 21)
#: Earliest date a claim's period may start ("previous years" claims start here).
EARLIEST_DATE = date(2000, 1, 1)
#: File name of the report text (in ``seeds/`` and ``analysis/data/``).
SEED_NAME = "000_53873136671c67ec.txt"
#: ``targets = ["*"]``: every domain measured (network-wide claims such as outages).
ANY_TARGET = "*"

_DATA = importlib.resources.files("analysis").joinpath("data")
_SECTION_RE = re.compile(r"^([ABC][1-8]) \d+-\d+ pts\s*$", re.MULTILINE)
_OVERVIEW_RE = re.compile(r"^Overview\s*$", re.MULTILINE)
_PART_A_RE = re.compile(r"^A Obstacles to Access\s*$", re.MULTILINE)
_END_RE = re.compile(r"^Footnotes", re.MULTILINE)
_ID_RE = re.compile(r"^([ABC][1-8]|Overview)-[a-z0-9][a-z0-9-]*$")

_KEYS = {
    "id", "section", "quote", "testable", "untestable_reason", "expect", "targets",
    "target_list", "categories", "period", "blocking_types", "quantifier", "episodic", "notes",
    "hosts", "same_fact_as", "ooni_tests", "one_off",
}


class ClaimsError(KzprobeError, ValueError):
    """A claims file that cannot be used.

    Attributes:
        path: the file (``str``).
        claim_id: the claim's id, ``"#<n>"`` (1-based position) when it has none, or
            ``None`` for file-level problems (unreadable, not TOML).
        key: the offending key, or ``None``.

    ``str(err)`` reads ``seeds/claims.toml: claim 'B1-meduza': key 'period': start 2021-05-31 after end 2020-06-01``.
    """

    def __init__(self, path: str | Path, problem: str, *, claim_id: str | None = None,
                 key: str | None = None) -> None:
        self.path = str(path)
        self.claim_id = claim_id
        self.key = key
        where = self.path
        if claim_id is not None:
            where += f": claim {claim_id!r}"
        if key is not None:
            where += f": key {key!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, kw_only=True)
class Claim:
    """One statement of the report.

    Attributes:
        id: unique, ``"<section>-<slug>"``, e.g. ``"B1-meduza"``.
        section: the report section, ``"A1"`` … ``"C8"``.
        quote: a short verbatim quote from that section.
        targets: lowercase IDNA A-label domains (``"meduza.io"`` also matches
            ``"www.meduza.io"``), or ``("*",)`` for every domain; may be empty when
            ``target_lists`` names the targets or the claim is untestable.
        target_lists: names of shipped target lists (``probe/data/targets/``) whose hosts
            are targets too (see :func:`claim_domains`).
        categories: Citizen Lab category codes kept from ``target_lists`` (empty = all).
        expect: the observation that supports the claim, ``None`` only for untestable claims.
        period_start, period_end: the period the claim is about, inclusive (UTC days).
        testable: whether a measurement can confirm or contradict it.
        untestable_reason: why not (``""`` when testable).
        blocking_types: the blocking values the report names (empty = it names none).
        quantifier: ``"pooled"``, ``"some"``, ``"many"``, ``"most"`` or ``"each"`` (see :mod:`analysis.compare`).
        episodic: brief or local events: measurements that miss them cannot contradict.
        one_off: an event or a state that ended (a drill, an election day, a rally, a block later lifted):
            measurements made after the claim's period can neither support nor contradict it, so its
            "since the report" is not applicable (:mod:`analysis.compare`). Needs a dated period.
        notes: how the claim was read.
        hosts: "subdomains" (default) or "exact" (:data:`HOST_MATCHING`).
        same_fact_as: the id of a claim stating the same fact (judged again here, counted once
            in the report's tallies), or None.
        ooni_tests: OONI's messaging-app / circumvention tests whose measurements count for
            the claim, each as one target (:data:`analysis.ooni_apps.APP_TESTS`).
    """

    id: str
    section: str
    quote: str
    targets: tuple[str, ...] = ()
    target_lists: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    expect: Expect | None = None
    period_start: date = REPORT_PERIOD[0]
    period_end: date = REPORT_PERIOD[1]
    testable: bool = True
    untestable_reason: str = ""
    blocking_types: tuple[str, ...] = ()
    quantifier: Quantifier = "pooled"
    episodic: bool = False
    one_off: bool = False
    notes: str = ""
    hosts: Hosts = "subdomains"
    same_fact_as: str | None = None
    ooni_tests: tuple[str, ...] = ()

    @property
    def target_list(self) -> str | None:
        """The target list names joined by ``", "``, or ``None`` (the contract's single field)."""
        return ", ".join(self.target_lists) or None

    @property
    def any_target(self) -> bool:
        """True for network-wide claims (``targets = ["*"]``)."""
        return ANY_TARGET in self.targets

    @property
    def period(self) -> tuple[date, date]:
        """``(period_start, period_end)``, inclusive."""
        return (self.period_start, self.period_end)


def packaged_claims_path() -> Path:
    """Path of the shipped ``analysis/data/claims.toml``."""
    return Path(str(_DATA.joinpath("claims.toml")))


def packaged_seed_path() -> Path:
    """Path of the shipped report text ``analysis/data/000_53873136671c67ec.txt``."""
    return Path(str(_DATA.joinpath(SEED_NAME)))


def _norm(text: str) -> str:
    return " ".join(text.split())


def seed_sections(text: str) -> dict[str, str]:
    """Split the report text into its sections.

    A section starts at a heading line ``<id> <min>-<max> pts`` (e.g. ``B1 0-6 pts``)
    and runs to the next heading or the ``Footnotes`` line. The ``Overview`` (its line
    alone, before A1) runs to the "A Obstacles to Access" line: its dated statements
    (January 2021 social-media blocks and DDoS attacks) are claims too.

    Returns:
        section id → the section's text with whitespace runs collapsed to one space,
        in report order (``{"Overview": "...", "A1": "...", …, "C8": "..."}``); empty if
        there are no headings.
    """
    heads = list(_SECTION_RE.finditer(text))
    end_m = _END_RE.search(text)
    end = end_m.start() if end_m else len(text)
    out: dict[str, str] = {}
    ov = _OVERVIEW_RE.search(text)
    if ov and heads and ov.start() < heads[0].start():
        part_a = _PART_A_RE.search(text, ov.end())
        stop = part_a.start() if part_a and part_a.start() < heads[0].start() else heads[0].start()
        out[OVERVIEW] = _norm(text[ov.start():stop])
    for i, m in enumerate(heads):
        stop = heads[i + 1].start() if i + 1 < len(heads) else max(end, m.end())
        out[m.group(1)] = _norm(text[m.start():stop])
    return out


@lru_cache(maxsize=8)
def _sections_of(seed_path: str) -> dict[str, str]:
    return seed_sections(Path(seed_path).read_text(encoding="utf-8"))


@lru_cache(maxsize=64)
def _list_hosts(name: str, categories: tuple[str, ...]) -> frozenset[str]:
    """Hosts of a shipped target list (leading ``www.`` dropped), optionally by category."""
    from probe.targets import load_targets, shipped_list

    path = shipped_list(name)  # FileNotFoundError / ValueError for bad names
    hosts = set()
    for t in load_targets([path], on_error=lambda _e: None):
        if categories and (t.category_code or "") not in categories:
            continue
        host = t.domain.removeprefix("www.") if t.domain.count(".") > 1 else t.domain
        hosts.add(host)
    return frozenset(hosts)


def claim_domains(claim: Claim) -> frozenset[str]:
    """The domains a claim concerns: its ``targets`` plus the hosts of its target lists.

    List hosts come from ``probe.targets.shipped_list`` (``probe/data/targets/<name>``),
    filtered to ``claim.categories`` when given; a leading ``www.`` is dropped so that
    ``www.example.org`` in a list stands for the site ``example.org`` (a measured
    domain matches a target when equal to it or a subdomain of it). ``{"*"}`` for
    network-wide claims.

    Raises:
        FileNotFoundError: a target list is not shipped.
    """
    out = set(claim.targets)
    for name in claim.target_lists:
        out |= _list_hosts(name, tuple(sorted(claim.categories)))
    return frozenset(out)


# --------------------------------------------------------------------------- validation

class _Checker:
    def __init__(self, path: Path, index: int, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw
        cid = raw.get("id")
        self.cid = cid if isinstance(cid, str) and cid else f"#{index}"

    def fail(self, key: str | None, problem: str) -> ClaimsError:
        return ClaimsError(self.path, problem, claim_id=self.cid, key=key)

    def str_(self, key: str, *, required: bool, default: str = "") -> str:
        if key not in self.raw:
            if required:
                raise self.fail(key, "missing")
            return default
        v = self.raw[key]
        if not isinstance(v, str):
            raise self.fail(key, f"must be a string, not {type(v).__name__} {v!r}")
        if required and not v.strip():
            raise self.fail(key, "must not be empty")
        return v

    def bool_(self, key: str, *, default: bool | None = None) -> bool:
        if key not in self.raw:
            if default is None:
                raise self.fail(key, "missing (true or false)")
            return default
        v = self.raw[key]
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, not {v!r}")
        return v

    def strs(self, key: str, *, allow_str: bool = False) -> tuple[str, ...]:
        if key not in self.raw:
            return ()
        v = self.raw[key]
        if allow_str and isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(key, f"must be a list of non-empty strings, not {v!r}")
        if len(set(v)) != len(v):
            raise self.fail(key, f"has duplicates: {v!r}")
        return tuple(v)


def _check_domain(chk: _Checker, key: str, name: str) -> None:
    problem = None
    if name != name.strip() or name.endswith(".") or "." not in name:
        problem = "not a domain name (need e.g. 'meduza.io', no trailing dot)"
    elif "/" in name or ":" in name:
        problem = "a domain, not a URL"
    else:
        try:
            alabel = to_alabel(name)  # the one host-name contract (probe/names.py)
        except HostError as exc:
            problem = f"not a valid domain name ({exc.reason})"
        else:
            if alabel != name:
                problem = f"not a lowercase IDNA A-label; write {alabel!r}"
    if problem:
        raise chk.fail(key, f"{name!r}: {problem}")


def _period(chk: _Checker) -> tuple[date, date]:
    if "period" not in chk.raw:
        raise chk.fail("period", 'missing ("report" or [start, end] as TOML dates)')
    v = chk.raw["period"]
    if v == "report":
        return REPORT_PERIOD
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(d, date) and not hasattr(d, "hour") for d in v)):
        raise chk.fail("period", f'must be "report" or [start, end] as TOML dates (2020-06-01), not {v!r}')
    start, end = v
    if start > end:
        raise chk.fail("period", f"start {start} after end {end}")
    if start < EARLIEST_DATE or end > REPORT_PUBLISHED:
        raise chk.fail("period", f"{start} – {end} is outside {EARLIEST_DATE} – {REPORT_PUBLISHED} "
                                 "(the report was published on the latter)")
    return start, end


def _claim(chk: _Checker, sections: dict[str, str], seed: str) -> Claim:
    unknown = sorted(set(chk.raw) - _KEYS)
    if unknown:
        raise chk.fail(unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    cid = chk.str_("id", required=True)
    section = chk.str_("section", required=True)
    if section not in sections:
        raise chk.fail("section", f"{section!r} is not a section of {seed} "
                                  f"(sections: {', '.join(sections) or 'none found'})")
    m = _ID_RE.match(cid)
    if not m or m.group(1) != section:
        raise chk.fail("id", f"must read '<section>-<slug>' with section {section} "
                             "(lowercase letters, digits, hyphens)")
    quote = chk.str_("quote", required=True)
    if _norm(quote) not in sections[section]:
        where = [s for s, text in sections.items() if _norm(quote) in text]
        hint = f" (it is in {', '.join(where)})" if where else " (not found anywhere in the report)"
        raise chk.fail("quote", f"does not occur in section {section} of {seed}{hint}")
    testable = chk.bool_("testable")
    reason = chk.str_("untestable_reason", required=not testable)
    if testable and reason:
        raise chk.fail("untestable_reason", "given for a testable claim")
    expect = chk.str_("expect", required=testable, default="") or None
    if expect is not None and expect not in EXPECTATIONS:
        raise chk.fail("expect", f"{expect!r} is not one of {', '.join(EXPECTATIONS)}")
    targets = chk.strs("targets")
    if ANY_TARGET in targets and len(targets) > 1:
        raise chk.fail("targets", f'"*" (every domain) must stand alone, not with {targets!r}')
    for t in targets:
        if t != ANY_TARGET:
            _check_domain(chk, "targets", t)
    lists = chk.strs("target_list", allow_str=True)
    categories = chk.strs("categories")
    if categories and not lists:
        raise chk.fail("categories", "given without target_list")
    for name in lists:
        try:
            hosts = _list_hosts(name, tuple(sorted(categories)))
        except (FileNotFoundError, ValueError) as exc:
            raise chk.fail("target_list", str(exc)) from None
        if not hosts:
            raise chk.fail("categories" if categories else "target_list",
                           f"list {name!r} has no targets in categories {list(categories)}")
    tests = chk.strs("ooni_tests")
    for t in tests:
        if t not in APP_TESTS:
            raise chk.fail("ooni_tests", f"{t!r} is not one of {', '.join(APP_TESTS)}")
    if testable and not targets and not lists and not tests:
        raise chk.fail("targets", "a testable claim needs targets, target_list or ooni_tests")
    start, end = _period(chk)
    btypes = chk.strs("blocking_types")
    for b in btypes:
        if b not in BLOCKING_TYPES:
            raise chk.fail("blocking_types", f"{b!r} is not one of {', '.join(BLOCKING_TYPES)}")
    quantifier = chk.str_("quantifier", required=False, default="pooled")
    if quantifier not in QUANTIFIERS:
        raise chk.fail("quantifier", f"{quantifier!r} is not one of {', '.join(QUANTIFIERS)}")
    episodic = chk.bool_("episodic", default=False)
    if episodic and expect in ("accessible", "no_mitm"):
        raise chk.fail("episodic", f"an {expect!r} claim cannot be episodic (episodes are of blocking)")
    one_off = chk.bool_("one_off", default=False)
    if one_off and chk.raw.get("period") == "report":
        raise chk.fail("one_off", "a one-off event needs a dated period ([start, end]), not the whole report's")
    hosts = chk.str_("hosts", required=False, default="subdomains")
    if hosts not in HOST_MATCHING:
        raise chk.fail("hosts", f"{hosts!r} is not one of {', '.join(HOST_MATCHING)}")
    same = chk.str_("same_fact_as", required=False, default="") or None
    if same is not None and same == cid:
        raise chk.fail("same_fact_as", "names the claim itself")
    return Claim(
        id=cid, section=section, quote=quote, targets=targets, target_lists=lists,
        categories=categories, expect=expect,  # type: ignore[arg-type]
        period_start=start, period_end=end, testable=testable, untestable_reason=reason,
        blocking_types=btypes, quantifier=quantifier,  # type: ignore[arg-type]
        episodic=episodic, one_off=one_off, notes=chk.str_("notes", required=False),
        hosts=hosts, same_fact_as=same, ooni_tests=tests,  # type: ignore[arg-type]
    )


def load_claims(path: Path | str | None = None, *, seed_path: Path | str | None = None) -> list[Claim]:
    """Read and validate a claims file.

    Args:
        path: a ``claims.toml``; ``None`` = the shipped copy (:func:`packaged_claims_path`).
        seed_path: the report text whose sections and quotes the claims are checked
            against; ``None`` = the shipped copy (:func:`packaged_seed_path`).

    Returns:
        The claims in file order.

    Raises:
        ClaimsError: the file cannot be read or is not TOML, has keys other than
            ``[[claim]]`` tables, or a claim is invalid (message names file, claim id, key).
    """
    p = Path(path) if path is not None else packaged_claims_path()
    seed = Path(seed_path) if seed_path is not None else packaged_seed_path()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClaimsError(p, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ClaimsError(p, f"not UTF-8: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClaimsError(p, f"not valid TOML: {exc}") from None
    try:
        sections = _sections_of(str(seed.resolve()))
    except OSError as exc:
        raise ClaimsError(seed, f"cannot read the report text: {exc.strerror or exc}") from None
    if not sections:
        raise ClaimsError(seed, "no section headings ('A1 0-6 pts' …) in the report text")
    extra = sorted(set(data) - {"claim"})
    if extra:
        raise ClaimsError(p, f"unknown top-level key {extra[0]!r} (claims are [[claim]] tables)", key=extra[0])
    raw_claims = data.get("claim", [])
    if not isinstance(raw_claims, list) or not all(isinstance(c, dict) for c in raw_claims):
        raise ClaimsError(p, "'claim' must be an array of tables ([[claim]])", key="claim")
    claims: list[Claim] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_claims, start=1):
        claim = _claim(_Checker(p, i, raw), sections, seed.name)
        if claim.id in seen:
            raise ClaimsError(p, f"duplicate id (also claim #{seen[claim.id]})", claim_id=claim.id, key="id")
        seen[claim.id] = i
        claims.append(claim)
    by_id = {c.id: c for c in claims}
    for c in claims:
        if c.same_fact_as is None:
            continue
        first = by_id.get(c.same_fact_as)
        if first is None:
            raise ClaimsError(p, f"names {c.same_fact_as!r}, which is no claim in the file", claim_id=c.id,
                              key="same_fact_as")
        if first.same_fact_as is not None:
            raise ClaimsError(p, f"names {first.id!r}, which itself repeats {first.same_fact_as!r}: name the first",
                              claim_id=c.id, key="same_fact_as")
    return claims


def domain_matches(domain: str, target: str, hosts: str = "subdomains") -> bool:
    """Whether a measured ``domain`` counts for ``target`` under the claim's host matching."""
    d = domain.lower().rstrip(".")
    if d == target or d == "www." + target:
        return True
    return hosts == "subdomains" and d.endswith("." + target)


@lru_cache(maxsize=8)
def _list_all_hosts(name: str) -> frozenset[str]:
    from probe.targets import load_targets, shipped_list

    return frozenset(t.domain.lower() for t in load_targets([shipped_list(name)], on_error=lambda _e: None))


def untested_targets(claim: Claim, lists: Iterable[str] = TEST_LISTS_2021) -> tuple[str, ...]:
    """The claim's named ``targets`` that no URL of ``lists`` (default: the Citizen Lab lists as
    of 2021-05-31, :data:`TEST_LISTS_2021`) measures: OONI Probe did not test them in the
    report's period, so OONI's data cannot speak for them (a URL counts when its host matches
    the target as :func:`domain_matches` does for the claim). Empty for ``"*"`` claims."""
    if claim.any_target:
        return ()
    hosts: set[str] = set()
    for name in lists:
        hosts |= _list_all_hosts(name)
    return tuple(t for t in claim.targets if not any(domain_matches(h, t, claim.hosts) for h in hosts))


def distinct_facts(claims: Iterable[Claim]) -> list[Claim]:
    """The claims that state a fact first (``same_fact_as`` unset), in order: what tallies count."""
    return [c for c in claims if c.same_fact_as is None]


def testable_claims(claims: Iterable[Claim]) -> list[Claim]:
    """The testable claims, in order."""
    return [c for c in claims if c.testable]
