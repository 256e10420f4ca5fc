"""probe.fingerprints: shipped blockpage databases, DNS/HTTP matching, CDN server-side blocks."""

from __future__ import annotations

import re
import time
from importlib import resources

import pytest

from probe import fingerprints as fpm
from probe.fingerprints import Fingerprint, all_fingerprints, cdn_server_block, load_database, match_dns, match_http

DATA = resources.files("probe") / "data" / "fingerprints"


def _get(source: str, name: str) -> Fingerprint:
    return next(f for f in all_fingerprints() if f.source == source and f.name == name)


def _names(fps: list[Fingerprint]) -> set[tuple[str, str]]:
    return {(f.source, f.name) for f in fps}


# --------------------------------------------------------------------------- loading


def test_every_shipped_file_loads_without_errors() -> None:
    db = load_database()
    assert db.errors == ()
    counts = db.counts()
    assert set(counts) == {"ooni-fastpath", "censoredplanet", "citizenlab"}
    assert all(n > 0 for n in counts.values()), counts
    # Every one of the six files contributed (kind / false-positive flag tell them apart).
    got = {(f.source, f.kind if f.source != "censoredplanet" else f.expected_false_positive)
           for f in db.fingerprints}
    assert {("ooni-fastpath", "dns"), ("ooni-fastpath", "http_body"), ("ooni-fastpath", "http_header"),
            ("censoredplanet", False), ("censoredplanet", True),
            ("citizenlab", "dns"), ("citizenlab", "http_body"), ("citizenlab", "http_header")} <= got
    # The unlicensed ooni/blocking-fingerprints database is not shipped.
    shipped = {p.name for p in DATA.iterdir()}
    assert shipped == {"ooni-backend-fastpath", "censoredplanet", "citizenlab-filtering-annotations",
                       "LICENSE-NOTE.md"}
    assert load_database() is db  # cached


def test_counts_match_the_raw_files() -> None:
    import csv
    import io
    import json

    c = load_database().counts()
    fast = sum(len(json.loads((DATA / "ooni-backend-fastpath" / n).read_text("utf-8")))
               for n in ("fingerprints_dns.json", "fingerprints_http.json"))
    cp = sum(1 for n in ("blockpage_signatures.json", "false_positive_signatures.json")
             for line in (DATA / "censoredplanet" / n).read_text("utf-8").splitlines() if line.strip())
    cl = sum(len(list(csv.DictReader(io.StringIO((DATA / "citizenlab-filtering-annotations" / n).read_text("utf-8")))))
             for n in ("dns.csv", "http.csv"))
    assert c == {"ooni-fastpath": fast, "censoredplanet": cp, "citizenlab": cl}


@pytest.mark.parametrize("source,name,expect", [
    ("ooni-fastpath", "ooni.ae_0", dict(kind="http_header", location="server", match="prefix", country="AE,SA")),
    ("ooni-fastpath", "ooni.kr_2", dict(kind="http_header", location="location", match="exact", country="KR")),
    ("ooni-fastpath", "ooni.cn_0", dict(kind="dns", location=None, match="exact", pattern="8.7.198.45")),
    ("ooni-fastpath", "cp.fp_x_on_this_server", dict(match="regex", expected_false_positive=True, scope="fp")),
    ("censoredplanet", "a_prod_barracuda_2",
     dict(kind="http_header", location="server", pattern="Barracuda/NGFirewall", match="regex")),
    ("censoredplanet", "x_on_this_server", dict(kind="http_body", match="regex", expected_false_positive=True)),
    ("citizenlab", "injb_ru_mts_paybill",
     dict(kind="http_header", location="location", match="contains", country="RU", expected_false_positive=True)),
    ("citizenlab", "prod_olfeo", dict(kind="http_header", location="server", pattern="Olfeo", match="prefix")),
])
def test_normalised_fields(source: str, name: str, expect: dict) -> None:
    fp = _get(source, name)
    for k, v in expect.items():
        assert getattr(fp, k) == v, (k, getattr(fp, k))


def test_countries_parsed_and_zz_dropped() -> None:
    for f in all_fingerprints():
        assert f.country is None or re.fullmatch(r"[A-Z]{2}(,[A-Z]{2})*", f.country), f
        assert "ZZ" not in f.countries


# --------------------------------------------------------------------------- DNS


@pytest.mark.parametrize("answers,expected", [
    (["8.7.198.45"], {("ooni-fastpath", "ooni.cn_0")}),  # OONI fastpath DNS file, China
    (["192.0.2.1", "8.7.198.45"], {("ooni-fastpath", "ooni.cn_0")}),
    # a CNAME target, compared case-insensitively without the trailing dot
    (["TrustPositif.Kominfo.go.id."], {("ooni-fastpath", "ooni.id_95"), ("citizenlab", "dns_nat_id_trustpositif")}),
    (["192.0.2.1", "2001:db8::1"], set()),
    ([], set()),
    (["not an address", ""], set()),
])
def test_match_dns(answers, expected) -> None:
    got = _names(match_dns(answers))
    assert expected <= got
    if not expected:
        assert got == set()
    assert all(f.kind == "dns" for f in match_dns(answers))


def test_match_dns_ipv6_canonical_form() -> None:
    v6 = [f for f in all_fingerprints() if f.kind == "dns" and ":" in f.pattern]
    if not v6:
        pytest.skip("no IPv6 DNS fingerprint shipped")
    exploded = __import__("ipaddress").ip_address(v6[0].pattern).exploded.upper()
    assert v6[0] in match_dns([exploded])


def test_every_dns_fingerprint_matches_itself() -> None:
    for f in all_fingerprints():
        if f.kind == "dns":
            assert f in match_dns([f.pattern]), f


# --------------------------------------------------------------------------- HTTP


def test_ooni_fastpath_body_fingerprint() -> None:
    body = b"<html><body>Contact it-security-operations@etisalat.ae for help</body></html>"
    got = match_http(200, [("Content-Type", "text/html")], body)
    assert ("ooni-fastpath", "ooni.ae_3") in _names(got)
    assert not any(f.expected_false_positive for f in got)


@pytest.mark.parametrize("headers,expected", [
    ([("LOCATION", "http://www.warning.or.kr")], ("ooni-fastpath", "ooni.kr_2")),  # exact, name case-insensitive
    ([("Server", "Protected by WireFilter 8.0")], ("ooni-fastpath", "ooni.ae_0")),  # prefix
    ([("Server", "Barracuda/NGFirewall")], ("censoredplanet", "a_prod_barracuda_2")),  # CP header regex
    ([("X-A", "b"), ("Location", "http://block.rt.ru/?u=x")], ("citizenlab", "isp_ru_rostelcom_block_forward")),
])
def test_header_fingerprints(headers, expected) -> None:
    if expected not in {(f.source, f.name) for f in all_fingerprints()}:
        pytest.fail(f"fixture refers to a missing fingerprint {expected}")
    assert expected in _names(match_http(302, headers, b""))


def test_exact_header_rule_needs_the_whole_value() -> None:
    assert ("ooni-fastpath", "ooni.kr_2") not in _names(
        match_http(302, [("Location", "http://www.warning.or.kr/extra")], b""))


@pytest.mark.parametrize("body,name", [
    ("<p>URL http://x.example/ blocked by SpIDer Gate</p>", "a_prod_drweb_3"),  # regex with .*
    ('<iframe src="http://10.10.34.35:80" style="width: 100%">', "b_nat_ir_national_1"),  # Iran
    ("<th>Barracuda NextGen Firewall:</th>", "a_prod_barracuda_1"),
])
def test_censoredplanet_blockpage_regex(body: str, name: str) -> None:
    got = match_http(200, [], body)
    assert ("censoredplanet", name) in _names(got)
    assert not _get("censoredplanet", name).expected_false_positive


AKAMAI_403 = (
    '<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n'
    'You don\'t have permission to access "http&#58;&#47;&#47;lgbt&#46;example&#46;org&#47;" on this server.<P>\n'
    'Reference&#32;&#35;18&#46;8f3b1402&#46;1700000000&#46;1a2b3c4\n</BODY>\n</HTML>\n')


def test_akamai_on_this_server_is_an_expected_false_positive() -> None:
    got = match_http(403, [("Server", "AkamaiGHost"), ("Content-Type", "text/html")], AKAMAI_403.encode())
    names = _names(got)
    assert ("censoredplanet", "x_on_this_server") in names
    assert ("ooni-fastpath", "cp.fp_x_on_this_server") in names
    assert all(f.expected_false_positive for f in got if f.name.endswith("x_on_this_server"))
    # Vague "Access Denied" blockpage signatures match too: the caller must let the false
    # positive win (as Censored Planet does) or use cdn_server_block.
    assert cdn_server_block(403, [("Server", "AkamaiGHost")], AKAMAI_403) == "akamai_access_denied"


def test_no_match_on_an_ordinary_page() -> None:
    body = "<html><head><title>Example Domain</title></head><body><p>Hello, world.</p></body></html>"
    assert match_http(200, [("Server", "ECS (dcb/7F83)"), ("Content-Type", "text/html")], body) == []
    assert match_http(200, [], b"") == []
    assert match_http(200, [], None) == []


def test_body_decoding() -> None:
    cyr = next(f for f in all_fingerprints()
               if f.kind == "http_body" and f.match == "contains" and re.search("[а-яА-Я]", f.pattern)
               and _encodable(f.pattern, "cp1251"))
    raw = ("<html>" + cyr.pattern + "</html>").encode("cp1251")
    assert cyr not in match_http(200, [], raw)  # not UTF-8 and no charset: no guess
    assert cyr in match_http(200, [("Content-Type", "text/html; charset=windows-1251")], raw)
    assert cyr in match_http(200, [], ("<html>" + cyr.pattern + "</html>").encode("utf-8"))
    # Invalid bytes never look like U+FFFD (a Censored Planet false positive matches "\ufffd.*\ufffd").
    junk = b"\xff\xfe<html>" + b"a" * 100 + b"\xff"
    assert not any("\ufffd" in f.pattern for f in match_http(200, [], junk))
    assert any("\ufffd" in f.pattern for f in match_http(200, [], "\ufffd x \ufffd"))


@pytest.mark.parametrize(("pattern", "runs"), [
    ("\ufffd.*\ufffd", ("\ufffd",)),  # one character: too short for a gate, a pre-filter all the same
    ("<span style=.*color:red;.*>\\(ab", ("<span style=", "color:red;", ">(ab")),
    ("ab(c|d)ef", ("ab", "ef")),
    ("a|b", ()),  # an alternation requires no one literal
    ("(?i)abc", ()),  # case-insensitive: its letters are not plain substrings
])
def test_the_literals_a_regex_requires(pattern: str, runs: tuple[str, ...]) -> None:
    assert fpm._required_runs(pattern) == runs


def test_a_regex_runs_only_on_a_body_with_the_literals_it_requires() -> None:
    """Each literal a regex rule requires is checked by ``in`` before the regex runs, with the regex's own
    answers: the U+FFFD rule (no gate: one character) and the red-span rule (gate ``<span style=``)."""
    fffd = [f for f in all_fingerprints() if f.kind == "http_body" and f.pattern == "\ufffd.*\ufffd"]
    assert fffd
    for body, hit in [("\ufffd x \ufffd", True), ("\ufffd\ufffd", True), ("a \ufffd b", False),
                      ("<html>" + "a" * 5000 + "</html>", False), (b"\xef\xbf\xbd..\xef\xbf\xbd", True)]:
        assert any(f in fffd for f in match_http(200, [], body)) is hit, body
    red = [r for rs in fpm._index().by_gate.values() for r in rs if r.fp.pattern.startswith("<span style=.*color:red")]
    assert red and all(r.needs for r in red)
    for r in red:
        tail = r.fp.pattern.split(".*")[-1].replace("\\(", "(")
        page = f"<p><span style='x; color:red; y'>{tail} ...</span></p>"
        assert r.fp in match_http(200, [], page), page
        assert r.fp not in match_http(200, [], page.replace("color:red;", "color:blue;"))
        assert r.fp not in match_http(200, [], page.replace(tail, tail[:-1]))


class _CountingRegex:
    """A rule's compiled regex that counts its ``search`` calls (the prefilter test's probe)."""

    def __init__(self, regex: re.Pattern[str]) -> None:
        self.regex = regex
        self.calls = 0

    def search(self, text: str) -> re.Match[str] | None:
        self.calls += 1
        return self.regex.search(text)


def test_the_prefilter_keeps_a_regex_from_running_without_its_literals(monkeypatch: pytest.MonkeyPatch) -> None:
    """The red-span rules' gate is ``<span style=``; ``color:red;`` and their tail are ``needs``, checked
    by ``in``: a page with the gate but without ``color:red;`` never runs their regex, the full page runs
    it once per rule."""
    red = [r for rs in fpm._index().by_gate.values() for r in rs if r.fp.pattern.startswith("<span style=.*color:red")]
    assert red and all("color:red;" in r.needs for r in red)
    stubs = {id(r): _CountingRegex(r.regex) for r in red if r.regex is not None}
    assert len(stubs) == len({id(r) for r in red})
    for r in red:
        monkeypatch.setattr(r, "regex", stubs[id(r)])
    tail = red[0].fp.pattern.split(".*")[-1].replace("\\(", "(")
    page = f"<p><span style='x; color:red; y'>{tail} ...</span></p>"
    blue = match_http(200, [], page.replace("color:red;", "color:blue;"))
    assert not any(r.fp in blue for r in red)
    assert [s.calls for s in stubs.values()] == [0] * len(stubs)
    hits = match_http(200, [], page)
    assert all(r.fp in hits for r in red)
    assert [s.calls for s in stubs.values()] == [1] * len(stubs)


def _encodable(s: str, enc: str) -> bool:
    try:
        s.encode(enc)
        return True
    except UnicodeEncodeError:
        return False


def _naive_body(text: str) -> set[int]:
    out = set()
    for i, f in enumerate(all_fingerprints()):
        if f.kind != "http_body":
            continue
        if (f.match == "contains" and f.pattern in text) or \
           (f.match == "regex" and re.search(f.pattern, text, re.DOTALL)) or \
           (f.match == "exact" and text.strip() == f.pattern):
            out.add(i)
    return out


@pytest.fixture(scope="module")
def dfa() -> object:
    """The body automaton built as a DFA (fpm.fast_body_matching's), once for the module."""
    return fpm._automaton(fpm._index().by_gate, dfa=True)


@pytest.fixture(params=["automaton", "dfa", "tokens"])
def body_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every body matcher: the Aho-Corasick gate pass (ahocorasick_rs installed), the same as a
    DFA (analysis.ooni.warm's, fpm.fast_body_matching) and the token index it falls back to (no
    package, or a body with lone surrogates)."""
    idx = fpm._index()
    if request.param in ("automaton", "dfa"):
        if idx.automaton is None:
            pytest.skip("ahocorasick_rs is not installed")
        if request.param == "dfa":
            monkeypatch.setattr(idx, "automaton", request.getfixturevalue("dfa"))
    else:
        monkeypatch.setattr(idx, "automaton", None)
    return str(request.param)


def test_fast_body_matching_switches_to_the_dfa_once(monkeypatch: pytest.MonkeyPatch) -> None:
    idx = fpm._index()
    if idx.automaton is None:
        pytest.skip("ahocorasick_rs is not installed")
    monkeypatch.setattr(idx, "automaton", idx.automaton)
    monkeypatch.setattr(idx, "dfa", False)
    page = "<html><title>Information Security Notice | x</title></html>"
    before = match_http(200, [], page)
    fpm.fast_body_matching()
    first = idx.automaton
    assert idx.dfa and first is not None
    fpm.fast_body_matching()
    assert idx.automaton is first  # built once
    assert match_http(200, [], page) == before and before


def test_index_agrees_with_naive_matching(body_path: str) -> None:
    """Every literal body fingerprint matches a page made of it, and the indexed matcher
    (both paths) finds exactly what a naive scan of all rules finds."""
    pos = {id(f): i for i, f in enumerate(all_fingerprints())}
    literals = [f for f in all_fingerprints() if f.kind == "http_body" and f.match == "contains"]
    for f in literals:
        assert f in match_http(200, [], f"<html><body>x {f.pattern} y</body></html>"), f
    for chunk in range(0, len(literals), 200):
        text = "\n<p>".join(f.pattern for f in literals[chunk:chunk + 200])
        got = {pos[id(f)] for f in match_http(200, [], text) if f.kind == "http_body"}
        assert got == _naive_body(text)


@pytest.mark.parametrize("text", [
    "<html><title>Information Security Notice | x</title></html>",  # the first branch only
    "<html><title>x | McMaster University</title></html>",  # the second branch only
    "<html><title>Information Security Notice | McMaster University</title></html>",
    "<html><title>Information Security Notice</title> McMaster University</html>",  # neither
])
def test_alternation_regex_gated_by_each_branch(body_path: str, text: str) -> None:
    """A shipped regex that is one top-level alternation (an unescaped "|" in a title) is tested
    only when one branch's literal occurs (it ran on every body: ~0.3-0.8 ms a page), and still
    matches exactly as the regex does, by either branch, on both paths."""
    fp = next(f for f in all_fingerprints() if f.kind == "http_body" and f.match == "regex"
              and "McMaster University" in f.pattern)
    assert fpm._branch_gates(fp.pattern) == ("<title>Information Security Notice ", " McMaster University</title>")
    assert fp not in [r.fp for r in fpm._index().always_ac]
    want = re.search(fp.pattern, text, re.DOTALL) is not None
    assert (fp in match_http(200, [], text)) is want
    pos = {id(f): i for i, f in enumerate(all_fingerprints())}
    assert {pos[id(f)] for f in match_http(200, [], text) if f.kind == "http_body"} == _naive_body(text)


@pytest.mark.parametrize(("pattern", "gates"), [
    ("abc|def", ("abc", "def")), ("ab|cdef", None), ("(abc|def)", None), ("abc|def.*ghij", ("abc", "ghij")),
    ("(?i)abc|def", None), ("abc", None),
])
def test_branch_gates(pattern: str, gates: tuple[str, ...] | None) -> None:
    assert fpm._branch_gates(pattern) == gates


def test_every_header_rule_matches_its_own_value() -> None:
    for f in all_fingerprints():
        if f.kind != "http_header" or f.match == "regex":
            continue
        assert f in match_http(302, [(f.location.title(), f.pattern)], b""), f


def test_header_prefilter_agrees_with_every_rule() -> None:
    """The per-header prefilter (one test per match kind) never hides a match: for values made of
    every header pattern, alone and with text around, the memoised hits are exactly the rules
    that match one by one."""
    idx = fpm._index()
    values = {f.pattern for f in all_fingerprints() if f.kind == "http_header"}
    values |= {f"x{v}x" for v in values} | {f"{v}/more" for v in values} | {" nginx ", "http://example.com/", ""}
    for key, rules in idx.headers.items():
        for v in values:
            want = {pos for pos, fp, rx in rules if fpm._match_header_value(fp, rx, v)}
            assert {pos for pos, _ in fpm._header_hits(key, v)} == want, (key, v)


def test_lone_surrogates_take_the_token_index() -> None:
    """A body not valid UTF-8 nor in its charset keeps lone surrogates, which the Rust automaton
    refuses: the token index matches it, with the same result as a valid body."""
    lit = next(f for f in all_fingerprints() if f.kind == "http_body" and f.match == "contains"
               and f.pattern.isascii() and len(f.pattern) > 8)
    bad = b"\xff\xfe <html> " + lit.pattern.encode() + b" </html>"
    assert lit in match_http(200, [], bad)


def test_one_mib_body_timing() -> None:
    """No assertion on time. Measured on the dev box (Python 3.11, x86-64): about 0.08 s for a
    1 MiB ASCII HTML body (one \\w-token pass + ~100 gated substring checks), vs ~0.35 s
    for a naive scan of every rule; prints the time with ``pytest -s``."""
    import random

    rnd = random.Random(7)
    words = ["lorem", "ipsum", "dolor", "<div class=\"c\">", "</div>", "href=\"/a/b.html\"", "the", "server",
             "page", "Access", "blocked", "content", "<p>", "</p>", "2024"]
    parts, n = [], 0
    while n < 1 << 20:
        w = rnd.choice(words)
        parts.append(w)
        n += len(w) + 1
    body = " ".join(parts)[: 1 << 20].encode()
    match_http(200, [], b"warm up the index")
    t = time.perf_counter()
    got = match_http(200, [("Server", "nginx")], body)
    dt = time.perf_counter() - t
    print(f"\nmatch_http on a 1 MiB body: {dt * 1000:.0f} ms, {len(got)} matches")
    assert isinstance(got, list)


# --------------------------------------------------------------------------- CDN blocks

CF_CHALLENGE = ("<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head>"
                "<body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>")


@pytest.mark.parametrize("status,headers,body,label", [
    # FC-13 A: Cloudflare challenge
    (403, [("Server", "cloudflare"), ("cf-mitigated", "challenge"), ("Content-Type", "text/html")],
     CF_CHALLENGE, "cloudflare_challenge"),
    (403, [("cf-mitigated", "challenge")], b"", "cloudflare_challenge"),  # the header alone says it
    (503, [("Server", "cloudflare")], CF_CHALLENGE.encode(), "cloudflare_challenge"),
    (403, [("server", "cloudflare")], "<title>Attention Required! | Cloudflare</title>", "cloudflare_challenge"),
    (403, [("Server", "cloudflare")],
     "<title>Access denied | lgbt.example.org used Cloudflare to restrict access</title>", "cloudflare_access_denied"),
    # FC-13 B: Akamai edge refusing this client
    (403, [("Server", "AkamaiGHost")], AKAMAI_403, "akamai_access_denied"),
    (403, [("Server", "GHost")], AKAMAI_403.encode(), "akamai_access_denied"),
    # not server-side blocks
    (200, [("Server", "nginx"), ("Content-Type", "text/html")], "<html><title>Welcome</title></html>", None),
    (200, [("Server", "cloudflare")], CF_CHALLENGE, None),  # a page *about* challenges, status 200
    (200, [("Server", "AkamaiGHost")], AKAMAI_403, None),
    (403, [("Server", "nginx")], AKAMAI_403, None),  # the text without Akamai's server
    (403, [("Server", "cloudflare")], "<title>Forbidden</title>", None),
    (403, [], b"", None),
    # names and values compared stripped and case-insensitively (bytes read as Latin-1)
    (403, [(b" SERVER ", b" CloudFlare ")], CF_CHALLENGE, "cloudflare_challenge"),
    (200, [("CF-Mitigated", " Challenge ")], "", "cloudflare_challenge"),
    (None, [("server", "ghost")], AKAMAI_403, "akamai_access_denied"),
    # the names' pre-check (one lower-case string) misses none of them: padded, upper-case, among others, bytes
    (200, [("Server", "nginx"), (" CF-MITIGATED ", "challenge"), ("Vary", "Accept")], "", "cloudflare_challenge"),
    (200, [("Server", "nginx"), (b"cf-mitigated", b"challenge")], "", "cloudflare_challenge"),
    (503, [("Date", "x"), ("  SERVER", "cloudflare")], CF_CHALLENGE, "cloudflare_challenge"),
    (404, [("X-Server-Timing", "1"), ("Server", "nginx")], AKAMAI_403, None),
])
def test_cdn_server_block(status, headers, body, label) -> None:
    assert cdn_server_block(status, headers, body) == label


def test_module_exports() -> None:
    assert set(fpm.__all__) >= {"Fingerprint", "match_dns", "match_http", "cdn_server_block", "load_database"}


def test_the_plain_pattern_shortcut_agrees_with_the_regex_parser() -> None:
    """Issue 13: a shipped regex without a metacharacter is taken as a plain literal without
    parsing or compiling it; for every shipped pattern (and a few edge ones) that shortcut
    must say what the stdlib parser says, and a plain literal must match as its regex does."""
    import re

    from probe import fingerprints as fpm

    patterns = [fp.pattern for fp in fpm.load_database().fingerprints if fp.match == "regex"]
    patterns += ["", "a b", "#x", "ü-ß", "a.b", "a\\.b", "(?i)x", "x{2}", "a|b"]
    plain = 0
    for p in patterns:
        if fpm._is_plain(p):
            plain += 1
            rx = re.compile(p, re.DOTALL)
            assert all(op is re._constants.LITERAL for op, _ in re._parser.parse(p, re.DOTALL).data), p
            for text in (p, f"xx{p}yy", p[:-1]):
                assert (rx.search(text) is not None) == (p in text), (p, text)
        else:
            assert re.search(r"[.^$*+?{}\[\]\\|()]", p), p
    assert plain > 100  # the shortcut is used by the shipped database
