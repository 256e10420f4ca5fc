"""analysis.claims: the shipped claims file validates; broken copies fail naming file, claim and key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from analysis.claims import (
    EXPECTATIONS,
    REPORT_PERIOD,
    ClaimsError,
    claim_domains,
    load_claims,
    packaged_claims_path,
    packaged_seed_path,
    seed_sections,
)

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "seeds"
CANONICAL = SEEDS / "claims.toml"
SEED = SEEDS / "000_53873136671c67ec.txt"
ALL_SECTIONS = ["Overview"] + [f"{p}{i}" for p, k in (("A", 5), ("B", 8), ("C", 8)) for i in range(1, k + 1)]

GOOD = '''
[[claim]]
id = "B1-meduza"
section = "B1"
quote = "Russian-language news site Meduza, remained inaccessible"
testable = true
expect = "blocked"
targets = ["meduza.io"]
period = "report"
'''


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "claims.toml"
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- the shipped file

def test_packaged_copies_are_identical() -> None:
    """analysis/data/ ships byte-identical copies of seeds/ (cp seeds/claims.toml analysis/data/)."""
    assert packaged_claims_path().read_bytes() == CANONICAL.read_bytes()
    assert packaged_seed_path().read_bytes() == SEED.read_bytes()


def test_seed_sections_found() -> None:
    sections = seed_sections(SEED.read_text(encoding="utf-8"))
    assert list(sections) == ALL_SECTIONS
    assert "Change.org remained inaccessible" in sections["B1"]
    assert "Change.org" not in sections["B2"]
    assert not sections["C8"].endswith("Footnotes")


def test_shipped_claims_validate() -> None:
    claims = load_claims(CANONICAL, seed_path=SEED)
    assert claims == load_claims()  # the packaged default is the same file
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids))
    testable = [c for c in claims if c.testable]
    assert len(testable) >= 30 and len(claims) - len(testable) >= 30
    for c in claims:
        assert c.section in ALL_SECTIONS and c.quote
        assert c.period_start <= c.period_end
        if c.testable:
            assert c.expect in EXPECTATIONS and claim_domains(c), c.id
            assert not c.untestable_reason
        else:
            assert c.untestable_reason, c.id
    # every section of the report is represented (nothing dropped silently)
    assert {c.section for c in claims} == set(ALL_SECTIONS)


@pytest.mark.parametrize(("cid", "expect", "targets", "period", "btypes"), [
    ("B1-medium-2020", "blocked", {"medium.com"}, (date(2020, 6, 1), date(2020, 12, 31)), ("tcp_ip",)),
    ("B1-medium-2021", "accessible", {"medium.com"}, (date(2021, 4, 1), date(2021, 5, 31)), ()),
    # periods start at the event where the report dates it (issue 14 part 6)
    ("B1-soundcloud-restored", "accessible", {"soundcloud.com"}, (date(2019, 10, 1), date(2021, 5, 31)), ()),
    ("B1-soundcloud-blocked", "blocked", {"soundcloud.com"}, (date(2018, 1, 1), date(2019, 9, 30)), ()),
    ("B1-pana-defenders", "blocked", {"pana-defenders.info"}, (date(2021, 2, 1), date(2021, 5, 31)), ()),
    ("B1-lalafo-collateral", "blocked", {"lalafo.kg"}, (date(2021, 3, 1), date(2021, 3, 31)), ("tcp_ip",)),
    ("B1-change-org", "blocked", {"change.org"}, REPORT_PERIOD, ()),
    ("B1-kloop", "blocked", {"kloop.kg"}, REPORT_PERIOD, ()),
    ("B1-meduza", "blocked", {"meduza.io"}, REPORT_PERIOD, ()),
    ("B1-dailymail", "blocked", {"dailymail.co.uk"}, REPORT_PERIOD, ()),
    ("B1-avaaz-unblocked", "accessible", {"avaaz.org"}, REPORT_PERIOD, ()),
    ("B1-archive-org", "intermittent", {"archive.org"}, REPORT_PERIOD, ()),
    ("B1-issuu", "intermittent", {"issuu.com"}, REPORT_PERIOD, ()),
    ("A3-cert-drill-2020", "mitm", {"facebook.com", "netflix.com", "twitter.com", "youtube.com"},
     (date(2020, 12, 1), date(2020, 12, 31)), ("tls_mitm",)),
    ("A3-social-throttling", "throttled", None, REPORT_PERIOD, ("throttling",)),
    ("A3-almaty-apr-2021", "outage", {"*"}, (date(2021, 4, 1), date(2021, 4, 30)), ()),
])
def test_dated_claims_read_as_the_issue_says(cid: str, expect: str, targets: set[str] | None,
                                             period: tuple[date, date], btypes: tuple[str, ...]) -> None:
    c = {c.id: c for c in load_claims()}[cid]
    assert c.testable and c.expect == expect and c.period == period and c.blocking_types == btypes
    if targets is not None:
        assert set(c.targets) == targets


def test_drill_and_qaznet_targets() -> None:
    by = {c.id: c for c in load_claims()}
    drill = set(by["B1-cert-drill-2020"].targets)
    assert drill == {"facebook.com", "netflix.com", "twitter.com", "youtube.com", "mail.google.com",
                     "instagram.com", "mail.ru", "ok.ru", "vk.com"}
    q = by["C5-qaznet-2019-list"]
    assert q.target_list == "kz-mitm-2019-domains.txt"
    doms = claim_domains(q)
    assert {"google.com", "facebook.com", "vk.com", "youtube.com"} <= doms
    assert "www.facebook.com" not in doms  # www. dropped: facebook.com covers it


def test_target_list_categories() -> None:
    c = {c.id: c for c in load_claims()}["B1-circumvention-148"]
    doms = claim_domains(c)
    assert "browsec.com" in doms and "anonymox.net" in doms  # kz list, ANON; www. dropped
    assert "meduza.io" not in doms


# --------------------------------------------------------------------------- broken copies

def test_good_minimal_file(tmp_path: Path) -> None:
    [c] = load_claims(write(tmp_path, GOOD), seed_path=SEED)
    assert (c.id, c.period, c.quantifier, c.episodic) == ("B1-meduza", REPORT_PERIOD, "pooled", False)


BROKEN = [
    ("unknown key", GOOD + 'colour = "red"\n', "B1-meduza", "colour", "unknown key"),
    ("missing section", GOOD.replace('section = "B1"\n', ""), "B1-meduza", "section", "missing"),
    ("section not in the seed", GOOD.replace('"B1"', '"B9"').replace("B1-meduza", "B9-meduza"),
     "B9-meduza", "section", "not a section"),
    ("id not matching section", GOOD.replace('id = "B1-meduza"', 'id = "B2-meduza"'), "B2-meduza", "id",
     "section B1"),
    ("quote from another section", GOOD.replace("Russian-language news site Meduza, remained inaccessible",
                                                "Tilda, a Russia-based platform"), "B1-meduza", "quote",
     "it is in B2"),
    ("quote not in the report", GOOD.replace("Russian-language news site Meduza", "Meduza was fine"),
     "B1-meduza", "quote", "not found anywhere"),
    ("missing expect", GOOD.replace('expect = "blocked"\n', ""), "B1-meduza", "expect", "missing"),
    ("bad expect", GOOD.replace('"blocked"', '"censored"'), "B1-meduza", "expect", "not one of"),
    ("no targets", GOOD.replace('targets = ["meduza.io"]\n', ""), "B1-meduza", "targets",
     "needs targets, target_list or ooni_tests"),
    ("URL target", GOOD.replace('["meduza.io"]', '["https://meduza.io/"]'), "B1-meduza", "targets", "not a URL"),
    ("U-label target", GOOD.replace('["meduza.io"]', '["сайт.қаз"]'), "B1-meduza", "targets", "xn--"),
    ("uppercase target", GOOD.replace('["meduza.io"]', '["Meduza.io"]'), "B1-meduza", "targets", "'meduza.io'"),
    ("star with others", GOOD.replace('["meduza.io"]', '["*", "meduza.io"]'), "B1-meduza", "targets",
     "stand alone"),
    ("unknown list", GOOD.replace('targets = ["meduza.io"]', 'target_list = "nope.csv"'), "B1-meduza",
     "target_list", "no shipped target list"),
    ("empty category", GOOD.replace('targets = ["meduza.io"]',
                                    'target_list = "kz-2021-05-31.csv"\ncategories = ["NOPE"]'),
     "B1-meduza", "categories", "no targets"),
    ("missing period", GOOD.replace('period = "report"\n', ""), "B1-meduza", "period", "missing"),
    ("reversed period", GOOD.replace('"report"', "[2021-05-31, 2020-06-01]"), "B1-meduza", "period",
     "after end"),
    ("period after publication", GOOD.replace('"report"', "[2021-06-01, 2022-01-01]"), "B1-meduza", "period",
     "outside"),
    ("period as strings", GOOD.replace('"report"', '["2020-06-01", "2021-05-31"]'), "B1-meduza", "period",
     "TOML dates"),
    ("testable as string", GOOD.replace("testable = true", 'testable = "yes"'), "B1-meduza", "testable",
     "true or false"),
    ("untestable without reason", GOOD.replace("testable = true", "testable = false"), "B1-meduza",
     "untestable_reason", "missing"),
    ("bad blocking type", GOOD + 'blocking_types = ["sni"]\n', "B1-meduza", "blocking_types", "not one of"),
    ("bad quantifier", GOOD + 'quantifier = "all"\n', "B1-meduza", "quantifier", "not one of"),
    ("duplicate id", GOOD + GOOD, "B1-meduza", "id", "duplicate id"),
    ("no id", GOOD.replace('id = "B1-meduza"\n', ""), "#1", "id", "missing"),
]


@pytest.mark.parametrize(("name", "text", "cid", "key", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_copies_fail(tmp_path: Path, name: str, text: str, cid: str, key: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ClaimsError, match=message) as info:
        load_claims(p, seed_path=SEED)
    err = info.value
    assert (err.path, err.claim_id, err.key) == (str(p), cid, key)
    assert str(err).startswith(f"{p}: claim {cid!r}: key {key!r}: ")


@pytest.mark.parametrize(("text", "message"), [
    ("[[claim]\nid=", "not valid TOML"),
    ('title = "x"\n' + GOOD, "unknown top-level key 'title'"),
    ('claim = "x"\n', "array of tables"),
])
def test_broken_files_fail(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ClaimsError, match=message) as info:
        load_claims(p, seed_path=SEED)
    assert str(info.value).startswith(str(p))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ClaimsError, match="cannot read"):
        load_claims(tmp_path / "missing.toml", seed_path=SEED)
    p = write(tmp_path, GOOD)
    bad_seed = tmp_path / "seed.txt"
    bad_seed.write_text("no headings here", encoding="utf-8")
    with pytest.raises(ClaimsError, match="no section headings"):
        load_claims(p, seed_path=bad_seed)
    (tmp_path / "latin1.toml").write_bytes(b'# \xe9\n')
    with pytest.raises(ClaimsError, match="not UTF-8"):
        load_claims(tmp_path / "latin1.toml", seed_path=SEED)


def test_shipped_file_broken_one_key_at_a_time(tmp_path: Path) -> None:
    """A copy of the real file with one claim's section changed fails on that claim."""
    text = CANONICAL.read_text(encoding="utf-8")
    broken = text.replace('id = "B1-kloop"\nsection = "B1"', 'id = "B1-kloop"\nsection = "C8"', 1)
    assert broken != text
    p = write(tmp_path, broken)
    with pytest.raises(ClaimsError) as info:
        load_claims(p, seed_path=SEED)
    assert info.value.claim_id == "B1-kloop" and info.value.key == "id"


# --------------------------------------------------------------------------- issue 14 part 6: the corrections


def test_qaznet_ended_expects_no_interception_not_accessibility() -> None:
    """C5-qaznet-2019-ended ran over October 2020, where two claims expect intermittent blocking of the
    same sites: it expects no interception now, and stops before the December 2020 drill."""
    by = {c.id: c for c in load_claims()}
    ended = by["C5-qaznet-2019-ended"]
    assert ended.expect == "no_mitm" and ended.hosts == "exact"
    assert ended.period == (date(2019, 8, 8), date(2020, 12, 5))
    for other in ("A3-sts-oct-2020", "B1-social-oct-2020"):
        o = by[other]
        overlap = o.period_start <= ended.period_end and ended.period_start <= o.period_end
        shared = set(o.targets) & set(ended.targets)
        assert overlap and shared and o.expect == "intermittent"  # compatible: blocking is not interception
    # no claim expects 'accessible' for a site another claim expects blocked in an overlapping period (claims
    # on every one of their sites: 'some'/'many'/'most' and episodes are compatible with accessible sites)
    whole = ("pooled", "each")
    for a in by.values():
        for b in by.values():
            if a.testable and b.testable and a.expect == "accessible" and b.expect in ("blocked", "intermittent") \
                    and not b.episodic and a.quantifier in whole and b.quantifier in whole \
                    and set(a.targets) & set(b.targets):
                assert a.period_end < b.period_start or b.period_end < a.period_start, (a.id, b.id)


def test_interception_claims_match_exact_hosts() -> None:
    from analysis.claims import domain_matches

    by = {c.id: c for c in load_claims()}
    for cid in ("A3-cert-drill-2020", "B1-cert-drill-2020", "C5-cert-drill-2020", "C5-qaznet-2019-named",
                "C5-qaznet-2019-list", "C5-qaznet-2019-ended"):
        assert by[cid].hosts == "exact", cid
    assert domain_matches("www.facebook.com", "facebook.com", "exact")
    assert not domain_matches("static.xx.fbcdn.facebook.com", "facebook.com", "exact")
    assert not domain_matches("m.facebook.com", "facebook.com", "exact")
    assert domain_matches("m.facebook.com", "facebook.com", "subdomains")
    assert not domain_matches("notfacebook.com", "facebook.com", "subdomains")


def test_quantifiers_of_the_corrected_claims() -> None:
    by = {c.id: c for c in load_claims()}
    assert by["B1-petitions-blocked-before"].quantifier == "each"  # "both sites", judged per site
    for cid in ("B1-circumvention-148", "B1-anonymizers-blocked", "C4-circumvention-148"):
        assert by[cid].quantifier == "many", cid  # "many"/"148": one blocked site is only "some"


def test_vlast_ddos_is_down_from_everywhere() -> None:
    c = {c.id: c for c in load_claims()}["C8-vlast-ddos"]
    assert c.testable and c.expect == "down" and c.targets == ("vlast.kz",)
    assert c.period == (date(2021, 1, 10), date(2021, 1, 10)) and c.episodic


def test_every_named_target_is_in_a_target_list() -> None:
    """tilda.ws was in no target list: every domain a claim names must be measured by some shipped list."""
    from analysis.claims import _list_all_hosts, domain_matches

    hosts = _list_all_hosts("fotn-2021-kz.csv") | _list_all_hosts("kz.csv") | _list_all_hosts("global.csv")
    for c in load_claims():
        for t in c.targets if c.testable and not c.any_target else ():
            assert any(domain_matches(h, t, c.hosts) for h in hosts), (c.id, t)


def test_targets_in_no_2021_test_list() -> None:
    """Six named targets were in no Citizen Lab list of 2021: OONI did not measure them (said in the report)."""
    from analysis.claims import untested_targets

    untested = {t for c in load_claims() if c.testable for t in untested_targets(c)}
    assert untested == {"lalafo.kg", "pana-defenders.info", "issuu.com", "mail.google.com", "tilda.cc", "tilda.ws"}
    by = {c.id: c for c in load_claims()}
    assert untested_targets(by["B1-lalafo-collateral"]) == ("lalafo.kg",)
    assert untested_targets(by["B1-change-org"]) == ()
    assert untested_targets(by["A3-almaty-apr-2021"]) == ()  # "*"


def test_overview_statements_are_claims() -> None:
    by = {c.id: c for c in load_claims()}
    social, ddos = by["Overview-jan-2021-social-blocks"], by["Overview-jan-2021-ddos"]
    assert social.section == ddos.section == "Overview"
    assert social.expect == "intermittent" and ddos.expect == "down"
    assert ddos.same_fact_as == "C8-vlast-ddos"
    assert "DDoS attacks and social media blocks" in seed_sections(SEED.read_text(encoding="utf-8"))["Overview"]


def test_one_fact_counts_once() -> None:
    from analysis.claims import distinct_facts

    claims = load_claims()
    by = {c.id: c for c in claims}
    repeats = {c.id: c.same_fact_as for c in claims if c.same_fact_as}
    assert repeats == {
        "Overview-jan-2021-ddos": "C8-vlast-ddos", "B1-cert-drill-2020": "A3-cert-drill-2020",
        "C5-cert-drill-2020": "A3-cert-drill-2020", "B1-social-oct-2020": "A3-sts-oct-2020",
        "B2-medium-full-block": "B1-medium-2020", "C4-circumvention-148": "B1-circumvention-148",
        "C5-qaznet-2019-list": "C5-qaznet-2019-named",
    }
    for first in repeats.values():
        assert by[first].same_fact_as is None
    assert len(distinct_facts(claims)) == len(claims) - len(repeats)


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('same_fact_as = "B1-nothing"\n', "same_fact_as", "no claim in the file"),
    ('same_fact_as = "B1-meduza"\n', "same_fact_as", "names the claim itself"),
    ('hosts = "prefix"\n', "hosts", "not one of"),
    ('ooni_tests = ["ndt"]\n', "ooni_tests", "not one of"),
])
def test_new_keys_are_validated(tmp_path: Path, extra: str, key: str, message: str) -> None:
    p = write(tmp_path, GOOD + extra)
    with pytest.raises(ClaimsError, match=message) as info:
        load_claims(p, seed_path=SEED)
    assert info.value.key == key


def test_same_fact_chain_is_refused(tmp_path: Path) -> None:
    second = GOOD.replace('id = "B1-meduza"', 'id = "B1-meduza-two"')
    third = GOOD.replace('id = "B1-meduza"', 'id = "B1-meduza-three"')
    text = GOOD + second + 'same_fact_as = "B1-meduza"\n' + third + 'same_fact_as = "B1-meduza-two"\n'
    with pytest.raises(ClaimsError, match="itself repeats") as info:
        load_claims(write(tmp_path, text), seed_path=SEED)
    assert info.value.claim_id == "B1-meduza-three"
