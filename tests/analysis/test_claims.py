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
ALL_SECTIONS = [f"{p}{i}" for p, k in (("A", 5), ("B", 8), ("C", 8)) for i in range(1, k + 1)]

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
    ("B1-soundcloud-restored", "accessible", {"soundcloud.com"}, (date(2019, 11, 1), date(2021, 5, 31)), ()),
    ("B1-pana-defenders", "blocked", {"pana-defenders.info"}, (date(2021, 3, 1), date(2021, 5, 31)), ()),
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
     "needs targets or target_list"),
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
