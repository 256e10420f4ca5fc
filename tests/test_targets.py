"""probe.targets: URL normalisation, Citizen Lab CSV / plain lists, the shipped lists."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from pathlib import Path

import pytest

from probe.targets import (
    DEFAULT_TARGETS_DIR,
    LOCALHOST_NAME,
    MAX_ROW_LINES,
    RowsNotKept,
    Target,
    TargetError,
    load_targets,
    normalise_url,
    shipped_list,
    targets_from_urls,
)

REPO = Path(__file__).resolve().parent.parent
TARGETS = REPO / "targets"
PACKAGED = REPO / "probe" / "data" / "targets"
HEADER = "url,category_code,category_description,date_added,source,notes\n"

KAZ = "xn--80aswg.xn--80ao21a"  # сайт.қаз


# --------------------------------------------------------------------------- normalisation

NORMALISE_CASES = [
    # (text, input, domain, scheme, port)
    ("https://сайт.қаз/", f"https://{KAZ}/", KAZ, "https", 443),
    ("https://САЙТ.ҚАЗ/", f"https://{KAZ}/", KAZ, "https", 443),
    ("https://Сайт.Қаз", f"https://{KAZ}/", KAZ, "https", 443),
    (f"https://{KAZ}/", f"https://{KAZ}/", KAZ, "https", 443),
    (f"https://{KAZ.upper()}/", f"https://{KAZ}/", KAZ, "https", 443),
    ("http://Пример.испытание/", "http://xn--e1afmkfd.xn--80akhbyknj4f/",
     "xn--e1afmkfd.xn--80akhbyknj4f", "http", 80),
    ("https://例子。测试/", "https://xn--fsqu00a.xn--0zwm56d/", "xn--fsqu00a.xn--0zwm56d", "https", 443),
    ("https://faß.de/", "https://xn--fa-hia.de/", "xn--fa-hia.de", "https", 443),  # IDNA 2008, not 2003
    ("HTTPS://WWW.Example.ORG/Path/To", "https://www.example.org/Path/To", "www.example.org", "https", 443),
    ("http://example.org", "http://example.org/", "example.org", "http", 80),
    ("http://example.org?q=1", "http://example.org/?q=1", "example.org", "http", 80),
    ("http://example.org:80/a", "http://example.org/a", "example.org", "http", 80),
    ("https://example.org:443/a", "https://example.org/a", "example.org", "https", 443),
    ("https://example.org:/a", "https://example.org/a", "example.org", "https", 443),
    ("http://example.org:443/", "http://example.org:443/", "example.org", "http", 443),
    ("https://example.org:8443/x?y=z", "https://example.org:8443/x?y=z", "example.org", "https", 8443),
    ("https://[2001:DB8::1]/", "https://[2001:db8::1]/", "2001:db8::1", "https", 443),
    ("http://[::1]:8080", "http://[::1]:8080/", "::1", "http", 8080),
    ("http://192.0.2.7/x", "http://192.0.2.7/x", "192.0.2.7", "http", 80),
    ("https://example.org./", "https://example.org/", "example.org", "https", 443),
    ("https://сайт.қаз./", f"https://{KAZ}/", KAZ, "https", 443),
    ("https://example.org/page#section", "https://example.org/page", "example.org", "https", 443),
    ("http://namba.kz/#!/", "http://namba.kz/", "namba.kz", "http", 80),
    ("https://example.org/a%20b?x=%41", "https://example.org/a%20b?x=%41", "example.org", "https", 443),
    ("https://ru.wikipedia.org/wiki/Казахстан",
     "https://ru.wikipedia.org/wiki/%D0%9A%D0%B0%D0%B7%D0%B0%D1%85%D1%81%D1%82%D0%B0%D0%BD",
     "ru.wikipedia.org", "https", 443),
    ("  https://example.org/  ", "https://example.org/", "example.org", "https", 443),
    # Real hostnames IDNA 2008 alone would refuse ('--' in positions 3-4, '_').
    ("https://r3---sn-abc.googlevideo.com/", "https://r3---sn-abc.googlevideo.com/",
     "r3---sn-abc.googlevideo.com", "https", 443),
    ("https://a_b.example.org/", "https://a_b.example.org/", "a_b.example.org", "https", 443),
]


@pytest.mark.parametrize(("text", "url", "domain", "scheme", "port"), NORMALISE_CASES)
def test_normalise(text: str, url: str, domain: str, scheme: str, port: int) -> None:
    assert normalise_url(text) == (url, domain, scheme, port)


def test_idn_forms_agree() -> None:
    forms = ["https://сайт.қаз/", "https://САЙТ.ҚАЗ/", f"https://{KAZ}/", "https://сайт.қаз./"]
    assert {normalise_url(f)[1] for f in forms} == {KAZ}


REJECT_CASES = [
    # (text, words the reason must contain)
    ("htp//x", "no scheme"),
    ("example.org", "no scheme"),
    ("ftp://example.org/", "not http or https"),
    ("javascript:alert(1)", "not http or https"),
    ("http:example.org", "'//'"),
    ("https:///path", "empty host"),
    ("https://", "empty host"),
    ("https://./", "empty host"),
    ("https://user:pw@example.org/", "userinfo"),
    ("https://user@example.org/", "userinfo"),
    ("https://example.org:0/", "out of range"),
    ("https://example.org:65536/", "out of range"),
    ("https://example.org:99999999/", "out of range"),
    ("https://example.org:http/", "bad port"),
    ("https://example.org:-1/", "bad port"),
    ("https://exa mple.org/", "whitespace"),
    ("https://example.org/a b", "whitespace"),
    ("https://example.org/\x00", "control"),
    ("https://example.org\t/", "whitespace"),
    ("https://example.org\u3000/", "whitespace"),
    ("https://-bad-.com/", "invalid label"),
    ("https://bad-.com/", "invalid label"),
    ("https://a..b.com/", "empty label"),
    ("https://example.org../", "empty label"),
    ("https://" + "a" * 64 + ".com/", "label too long"),
    ("https://" + ".".join(["a" * 60] * 5) + "/", "host too long"),
    ("https://xn--zz.com/", "invalid IDN"),
    ("https://x!.org/", "invalid label"),
    ("https://%65xample.org/", "invalid label"),
    ("https://[::1/", "unterminated"),
    ("https://[::g]/", "bad IPv6"),
    ("https://[fe80::1%25eth0]/", "zone"),
    ("https://[::1]x/", "junk after IPv6"),
    ("https://1.2.3/", "bad IPv4"),
    ("https://300.1.1.1/", "bad IPv4"),
    ("https://example.123/", "numeric top-level"),
    ("", "empty"),
]


@pytest.mark.parametrize(("text", "reason"), REJECT_CASES)
def test_reject(text: str, reason: str) -> None:
    with pytest.raises(TargetError) as info:
        normalise_url(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert reason in err.reason
    assert err.text == text
    if len(text) <= 200:  # longer texts are shortened in the message
        assert repr(text) in str(err), "the message names the input"
    else:
        assert repr(text[:20])[:-1] in str(err) and f"({len(text)} chars)" in str(err)
    assert err.path is None and err.line is None


def test_error_message_shape() -> None:
    err = TargetError("no scheme", text="htp//x", path="targets/kz.csv", line=17)
    assert str(err) == "targets/kz.csv:17: bad URL 'htp//x': no scheme"
    assert (err.path, err.line, err.text, err.reason) == ("targets/kz.csv", 17, "htp//x", "no scheme")


# --------------------------------------------------------------------------- reading lists


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    p.write_bytes(content)
    return p


def test_csv_rows_and_metadata(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", HEADER
               + "https://kloop.kg/,NEWS,News Media,2018-03-26,igorv,Kyrgyz media blocked in KZ\n"
               + 'https://САЙТ.ҚАЗ/,HUMR,Human Rights Issues,2021-09-21,me,"a, quoted note"\n'
               + "http://example.org/,CTRL,Control content,,,\n")
    got = load_targets([p])
    assert [t.input for t in got] == ["https://kloop.kg/", f"https://{KAZ}/", "http://example.org/"]
    first = got[0]
    assert first == Target(input="https://kloop.kg/", domain="kloop.kg", scheme="https", port=443,
                           original="https://kloop.kg/", category_code="NEWS",
                           category_description="News Media", date_added="2018-03-26",
                           source="igorv", notes="Kyrgyz media blocked in KZ", list_name="kz", line=2)
    assert got[1].original == "https://САЙТ.ҚАЗ/"
    assert got[1].notes == "a, quoted note"
    assert (got[2].date_added, got[2].source, got[2].notes) == (None, None, None)
    assert [t.line for t in got] == [2, 3, 4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.input = "x"  # type: ignore[misc]


NO_SCHEME_CSV = "no scheme (Citizen Lab rows need http:// or https://)"

MALFORMED = (HEADER
             + "https://kloop.kg/,NEWS,News Media,2018-03-26,igorv,\n"       # line 2
             + "https://meduza.io/,NEWS,News Media,2018-03-26,igorv,\n"      # line 3
             + "htp//x,NEWS,News Media,2018-03-26,igorv,\n"                  # line 4: bad URL
             + "https://vlast.kz/,NEWS,News Media\n"                         # line 5: 3 columns
             + "\n"                                                           # line 6: blank
             + "https://avaaz.org/,HUMR,Human Rights Issues,2019-11-12,x,\n")  # line 7


def test_malformed_rows_reported_with_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", MALFORMED)
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [t.domain for t in got] == ["kloop.kg", "meduza.io", "avaaz.org"]
    assert [t.line for t in got] == [2, 3, 7]
    assert [(e.path, e.line) for e in errors] == [(str(p), 4), (str(p), 5)]
    assert str(errors[0]) == f"{p}:4: bad URL 'htp//x': {NO_SCHEME_CSV}"
    assert "columns" in errors[1].reason and f"{p}:5:" in str(errors[1])


def test_malformed_rows_logged_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _write(tmp_path, "kz.csv", MALFORMED)
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        got = load_targets([p])
    assert len(got) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{p}:4: bad URL (not shown: no scheme and no dot): {NO_SCHEME_CSV}",
                        f"{p}:5: bad row 'https://vlast.kz/,NEWS,News Media': expected 6 columns, got 3"]


def test_strict_raises_with_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", MALFORMED)
    with pytest.raises(TargetError, match=re.escape(f"{p}:4: bad URL 'htp//x'")) as info:
        load_targets([p], strict=True)
    assert info.value.line == 4


def test_csv_row_line_counts_quoted_newlines(tmp_path: Path) -> None:
    p = _write(tmp_path, "x.csv", HEADER
               + 'https://a.example/,NEWS,News Media,2020-01-01,s,"two\nlines"\n'  # lines 2-3
               + "nope,NEWS,News Media,2020-01-01,s,\n")                           # line 4
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert got[0].notes == "two\nlines"
    assert [e.line for e in errors] == [4]


def test_duplicates_measured_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = _write(tmp_path, "a.csv", HEADER
               + "https://example.org/,NEWS,News Media,2020-01-01,first,\n"
               + "HTTPS://EXAMPLE.ORG:443/#frag,HUMR,Human Rights Issues,2020-01-01,second,\n")
    b = _write(tmp_path, "b.txt", "example.org\nhttps://example.org/other\n")
    with caplog.at_level(logging.DEBUG, logger="kzprobe.targets"):
        got = load_targets([a, b])
    assert [t.input for t in got] == ["https://example.org/", "https://example.org/other"]
    assert got[0].source == "first"
    assert sum("duplicate" in r.getMessage() for r in caplog.records) == 2


def test_plain_list(tmp_path: Path) -> None:
    p = _write(tmp_path, "mine.txt",
               "# my list\n"                          # 1
               "\n"                                   # 2
               "example.org\n"                        # 3: bare domain
               "  http://Example.NET/a  # why\n"      # 4: inline comment
               "   # indented comment\n"              # 5
               "САЙТ.ҚАЗ\n"                           # 6: bare IDN
               "https://example.com/#frag\n"          # 7: '#' in URL is a fragment
               "htp//x\n")                            # 8: bad
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [(t.input, t.line) for t in got] == [
        ("https://example.org/", 3), ("http://example.net/a", 4),
        (f"https://{KAZ}/", 6), ("https://example.com/", 7)]
    assert got[0].original == "example.org"
    assert got[1].original == "http://Example.NET/a"
    assert all(t.list_name == "mine" and t.category_code is None and t.notes is None for t in got)
    assert [(e.line, e.reason) for e in errors] == [(8, BARE_WORD)]


def test_crlf_and_bom(tmp_path: Path) -> None:
    p = _write(tmp_path, "w.csv", b"\xef\xbb\xbf" + HEADER.replace("\n", "\r\n").encode()
               + b"https://example.org/,NEWS,News Media,2020-01-01,s,n\r\n")
    got = load_targets([p], strict=True)
    assert [(t.input, t.notes, t.line) for t in got] == [("https://example.org/", "n", 2)]


def test_non_utf8_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", HEADER.encode()
               + b"https://example.org/,NEWS,News Media,2020-01-01,s,\n"       # 2
               + b"https://caf\xe9.example/,NEWS,News Media,2020-01-01,s,\n"   # 3: Latin-1
               + b"https://example.net/,NEWS,News Media,2020-01-01,s,\n")      # 4
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [(t.domain, t.line) for t in got] == [("example.org", 2), ("example.net", 4)]
    assert len(errors) == 1
    assert (errors[0].path, errors[0].line) == (str(p), 3)
    assert "UTF-8" in errors[0].reason
    assert f"{p}:3:" in str(errors[0])
    with pytest.raises(TargetError, match=":3: .*UTF-8"):
        load_targets([p], strict=True)


def test_non_utf8_line_in_plain_list(tmp_path: Path) -> None:
    p = _write(tmp_path, "p.txt", b"example.org\n\xff\xfe\nexample.net\n")
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [(t.domain, t.line) for t in got] == [("example.org", 1), ("example.net", 3)]
    assert [e.line for e in errors] == [2]


def test_csv_with_neither_header_nor_url_is_not_a_list(tmp_path: Path) -> None:
    """A .csv file whose first line is neither a header naming a ``url`` column nor a row holding an
    http(s) URL: not a list, its first line not quoted (it was, as a bad header: a config naming a
    secret .csv file put its first line in the log)."""
    from probe.targets import NotATargetList

    p = _write(tmp_path, "secret.csv", "user,password\nroot,hunter2\n")
    with pytest.raises(NotATargetList) as info:
        load_targets([p], on_error=lambda e: None)
    assert str(info.value) == (f"{p}: not a target list: its first line is neither a header naming a 'url' "
                               "column nor a row holding an http:// or https:// URL (its content is not shown)")


def test_a_csv_without_header_or_with_the_url_column_elsewhere_is_read(tmp_path: Path) -> None:
    """Break test 24 (#10): a Citizen Lab CSV with no header row, or with a ``category_code,url`` header,
    was refused whole (exit 65) although every row holds a URL. A header naming ``url`` in any position
    is read by its names; a headerless CSV reads the column where its first row holds an http(s) URL
    (the Citizen Lab order gives the metadata too), and a row without a URL there is a bad row."""
    rows = "https://a.example/,NEWS,News Media,2020-01-01,cl,\nhttps://b.example/,HUMR,Human Rights,,,\n"
    got = load_targets([_write(tmp_path, "nohdr.csv", rows)])
    assert [(t.input, t.category_code, t.line) for t in got] == [
        ("https://a.example/", "NEWS", 1), ("https://b.example/", "HUMR", 2)]
    assert got[0].date_added == "2020-01-01" and got[0].list_name == "nohdr"
    swapped = _write(tmp_path, "swapped.csv", "category_code,url\nNEWS,https://c.example/\nHUMR,https://d.example/\n")
    got = load_targets([swapped])
    assert [(t.input, t.category_code, t.line) for t in got] == [
        ("https://c.example/", "NEWS", 2), ("https://d.example/", "HUMR", 3)]
    errors: list[TargetError] = []
    second = _write(tmp_path, "second.csv", "NEWS,https://e.example/\nHUMR,f.example\nX,http://g.example/\n")
    got = load_targets([second], on_error=errors.append)
    assert [t.input for t in got] == ["https://e.example/", "http://g.example/"]
    assert [(e.line, e.reason) for e in errors] == [(2, NO_SCHEME_CSV)]  # its URL column, one column
    assert got[0].category_code is None  # not the Citizen Lab order: no metadata guessed


def test_empty_lists(tmp_path: Path) -> None:
    assert load_targets([]) == []
    assert load_targets([_write(tmp_path, "empty.txt", "")]) == []
    assert load_targets([_write(tmp_path, "comments.txt", "# nothing\n\n")]) == []
    assert load_targets([_write(tmp_path, "header.csv", HEADER)]) == []


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv") as info:
        load_targets([missing])
    assert info.value.filename == str(missing)


def test_directory_is_an_oserror_naming_the_path(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IsADirectoryError) as info:
        load_targets(["adir"])
    err = info.value
    assert isinstance(err, OSError) and not isinstance(err, FileNotFoundError)
    assert err.filename == "adir"
    assert err.strerror == "cannot read target list 'adir': Is a directory"
    assert "adir" in str(err)
    with pytest.raises(IsADirectoryError, match="cannot read target list"):
        load_targets([tmp_path / "adir"], on_error=lambda e: None)


def test_unreadable_file_is_an_oserror_naming_the_path(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, "locked.txt", "example.org\n")

    def denied(path: Path, max_bytes: int) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("probe.targets.read_regular_file", denied)  # works as root too, unlike chmod 000
    with pytest.raises(PermissionError) as info:
        load_targets([p])
    assert info.value.filename == str(p)
    assert info.value.strerror == f"cannot read target list {str(p)!r}: Permission denied"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads a chmod 000 file anyway")
def test_chmod_000_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "locked.txt", "example.org\n")
    p.chmod(0)
    try:
        with pytest.raises(PermissionError, match="cannot read target list") as info:
            load_targets([p])
        assert info.value.filename == str(p)
    finally:
        p.chmod(0o644)


ROW = "{},NEWS,News Media,2021-01-01,t,\n"


def test_unterminated_quote_costs_one_row(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", HEADER
               + ROW.format("https://a.example/")                        # 2
               + ROW.format("https://b.example/")                        # 3
               + '"unterminated,NEWS,News,2021-01-01,t,\n'               # 4
               + ROW.format("https://d.example/")                        # 5
               + ROW.format("https://e.example/"))                       # 6
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    # The broken row itself is not guessed at: 4 of the 5 rows are kept.
    assert [(t.domain, t.line) for t in got] == [
        ("a.example", 2), ("b.example", 3), ("d.example", 5), ("e.example", 6)]
    assert [(e.path, e.line, e.what) for e in errors] == [(str(p), 4, "row")]
    assert errors[0].text == '"unterminated,NEWS,News,2021-01-01,t,'
    assert "never closed" in errors[0].reason
    with pytest.raises(TargetError) as info:
        load_targets([p], strict=True)
    assert info.value.line == 4


def test_unterminated_quote_in_notes(tmp_path: Path) -> None:
    """Right column count, URL fine, but the note's quote runs to the end of the file."""
    p = _write(tmp_path, "kz.csv", HEADER
               + ROW.format("https://a.example/")                                  # 2
               + 'https://c.example/,NEWS,News Media,2021-01-01,t,"oops\n'          # 3
               + ROW.format("https://d.example/")                                  # 4
               + ROW.format("https://e.example/"))                                 # 5
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [(t.domain, t.line) for t in got] == [("a.example", 2), ("d.example", 4), ("e.example", 5)]
    assert [e.line for e in errors] == [3]


def test_stray_quote_closed_later_in_the_file(tmp_path: Path) -> None:
    """A later quoted note closes the stray quote: the row has the wrong column count."""
    p = _write(tmp_path, "kz.csv", HEADER
               + '"https://a.example/,NEWS,News Media,2021-01-01,t,\n'                    # 2
               + ROW.format("https://b.example/")                                         # 3
               + 'https://c.example/,NEWS,News Media,2021-01-01,t,"a note, quoted"\n'      # 4
               + ROW.format("https://d.example/"))                                        # 5
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [(t.domain, t.line) for t in got] == [
        ("b.example", 3), ("c.example", 4), ("d.example", 5)]
    assert got[1].notes == "a note, quoted"
    assert [e.line for e in errors] == [2]
    assert "columns" in errors[0].reason


def test_url_spanning_lines_is_reported_on_its_first_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", HEADER
               + '"https://a.example/\n'                        # 2
               + 'more",NEWS,News Media,2021-01-01,t,\n'        # 3: re-read alone: bad URL
               + ROW.format("https://b.example/"))              # 4
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert [(t.domain, t.line) for t in got] == [("b.example", 4)]
    assert [e.line for e in errors] == [2, 3]
    assert "URL runs on" in errors[0].reason


def test_unterminated_quote_before_more_than_the_csv_field_limit(tmp_path: Path) -> None:
    """The swallowed text passes csv's field size limit (128 KiB): rows after it still load."""
    rows = [ROW.format(f"https://h{i}.example/") for i in range(4000)]
    p = _write(tmp_path, "kz.csv", HEADER + '"https://x.example/,NEWS,\n' + "".join(rows))
    errors: list[TargetError] = []
    got = load_targets([p], on_error=errors.append)
    assert len(got) == 4000 and got[0].line == 3
    assert [e.line for e in errors] == [2]


def test_multiline_note_still_loads(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", HEADER
               + ROW.format("https://a.example/")                                # 2
               + 'https://b.example/,NEWS,News Media,2021-01-01,t,"first line,\n'  # 3
               + 'second line"\n'                                               # 4
               + ROW.format("https://c.example/"))                               # 5
    got = load_targets([p], strict=True)
    assert [(t.domain, t.line) for t in got] == [("a.example", 2), ("b.example", 3), ("c.example", 5)]
    assert got[1].notes == "first line,\nsecond line"


def test_row_may_span_at_most_max_row_lines(tmp_path: Path) -> None:
    def note(lines: int) -> str:
        return '"' + "\n".join(f"part {i}" for i in range(lines)) + '"'

    ok = _write(tmp_path, "ok.csv", HEADER + ROW.format("https://a.example/")[:-1] + note(MAX_ROW_LINES)
                + "\n" + ROW.format("https://b.example/"))
    assert [t.domain for t in load_targets([ok], strict=True)] == ["a.example", "b.example"]
    too_long = _write(tmp_path, "long.csv", HEADER + ROW.format("https://a.example/")[:-1]
                      + note(MAX_ROW_LINES + 1) + "\n" + ROW.format("https://b.example/"))
    errors: list[TargetError] = []
    got = load_targets([too_long], on_error=errors.append)
    assert errors[0].line == 2 and f"past {MAX_ROW_LINES} lines" in errors[0].reason
    assert [(t.domain, t.line) for t in got] == [("b.example", MAX_ROW_LINES + 3)]


def test_quotes_left_open_on_every_line_take_linear_time(tmp_path: Path) -> None:
    """'a",,,"' leaves a quote open on each line: every row would run to the end of the file."""
    n = 20_000
    p = _write(tmp_path, "open.csv", HEADER + 'a",,,"\n' * n + ROW.format("https://a.example/"))
    errors: list[TargetError] = []
    start = time.monotonic()
    got = load_targets([p], on_error=errors.append)
    assert time.monotonic() - start < 10  # ~0.2 s; quadratic re-reading took ~30 s
    rows = sum(e.rows if isinstance(e, RowsNotKept) else 1 for e in errors)  # the first 20 held, the rest counted
    assert rows == n and [e.line for e in errors[:3]] == [2, 3, 4]
    assert [t.line for t in got] == [n + 2]


def test_unbalanced_quote_in_header(tmp_path: Path) -> None:
    from probe.targets import NotATargetList

    p = _write(tmp_path, "kz.csv", 'url,"category_code\n' + ROW.format("https://a.example/"))
    with pytest.raises(NotATargetList) as info:
        load_targets([p], on_error=lambda e: None)
    assert "its header" in str(info.value) and "category_code" not in str(info.value)


HUGE = 10 * 1024 * 1024


def test_huge_text_is_shortened_in_messages() -> None:
    err = TargetError("no scheme", text="a" * HUGE, path="l.txt", line=1)
    msg = str(err)
    assert msg == f"l.txt:1: bad URL '{'a' * 199}…' ({HUGE} chars): no scheme"
    assert len(err.text) == HUGE, ".text is kept whole"
    assert str(TargetError("x", text="a" * 200)) == f"bad URL '{'a' * 200}': x"


def test_huge_line_gives_a_short_warning(tmp_path: Path) -> None:
    plain = _write(tmp_path, "huge.txt", "a" * HUGE + "\nexample.org\n")
    row = _write(tmp_path, "huge.csv", HEADER + "a" * HUGE + "\n" + ROW.format("https://a.example/"))
    cols = _write(tmp_path, "cols.csv", HEADER + "a," * (HUGE // 2) + "\n" + ROW.format("https://a.example/"))
    for p, domain in [(plain, "example.org"), (row, "a.example"), (cols, "a.example")]:
        errors: list[TargetError] = []
        got = load_targets([p], on_error=errors.append)
        assert [t.domain for t in got] == [domain], p
        assert len(errors) == 1 and errors[0].line == (1 if p is plain else 2)
        assert len(str(errors[0])) < 500, p.name
        assert "chars)" in str(errors[0])


def test_csv_bare_domain_needs_a_scheme(tmp_path: Path) -> None:
    p = _write(tmp_path, "kz.csv", HEADER + ROW.format("сайт.қаз") + ROW.format("https://a.example/"))
    errors: list[TargetError] = []
    assert [t.domain for t in load_targets([p], on_error=errors.append)] == ["a.example"]
    assert [(e.line, e.reason) for e in errors] == [(2, NO_SCHEME_CSV)]
    assert str(errors[0]) == f"{p}:2: bad URL 'сайт.қаз': {NO_SCHEME_CSV}"
    # The same bare host is fine in a plain list and on the command line.
    assert [t.input for t in load_targets([_write(tmp_path, "p.txt", "сайт.қаз\n")])] == [f"https://{KAZ}/"]
    assert [t.input for t in targets_from_urls(["сайт.қаз"])] == [f"https://{KAZ}/"]


BARE_WORD = "neither a URL nor a host name with a dot (write https://NAME/ to measure a single-label host)"
BARE_CASES = [
    # (--input / plain-list text, normalised input or None, reason when refused)
    ("javascript:alert(1)", None, "scheme 'javascript' is not http or https"),
    ("mailto:someone@example.org", None, "scheme 'mailto' is not http or https"),
    ("about:blank", None, "scheme 'about' is not http or https"),
    ("data:text/html,x", None, "scheme 'data' is not http or https"),
    ("example.org:8080", "https://example.org:8080/", None),
    # RFC 6761: localhost names are this machine; measured, they read as DNS blocking (break test)
    ("localhost:8443", None, LOCALHOST_NAME),
    ("http://localhost/", None, LOCALHOST_NAME),
    ("https://WWW.LocalHost./x", None, LOCALHOST_NAME),
    ("https://localhost.example.org/", "https://localhost.example.org/", None),
    ("example.org:", "https://example.org/", None),
    ("[::1]:8080", "https://[::1]:8080/", None),
    ("example.org:http", None, "bad port 'http'"),
    # a bare word is a typo, not https://notaurl/ (break test); a host name has a dot, or a port
    ("notaurl", None, BARE_WORD),
    ("localhost", None, LOCALHOST_NAME),
    ("пример", None, BARE_WORD),
    # fresh-user break test: a bare host keeps its path and query as a URL does (the query
    # was measured as https://foo.kz/?a=b/), and a ':' no longer makes any word a host
    ("foo.kz?a=b", "https://foo.kz/?a=b", None),
    ("foo.kz/a/b?c=d#frag", "https://foo.kz/a/b?c=d", None),
    ("foo.kz/", "https://foo.kz/", None),
    ("foo.kz#top", "https://foo.kz/", None),
    ("foo.kz:8443/x?y", "https://foo.kz:8443/x?y", None),
    ("10.0.0.1:8080?q", "https://10.0.0.1:8080/?q", None),
    ("[2001:db8::1]/p", "https://[2001:db8::1]/p", None),
    ("foo:8080", None, BARE_WORD),
    ("foo:", None, BARE_WORD),
    ("foo/bar.kz", None, BARE_WORD),
    ("foo?x=a.b", None, BARE_WORD),
    ("ǘr?:Q", None, BARE_WORD),
    ("htp//x.kz", None, BARE_WORD),
    ("foo.kz:99999", None, "port 99999 out of range 1-65535"),
    ("bad_!.kz?a", None, None),  # an invalid host: refused by normalise_url, its reason below
    ("10.0.0.1", "https://10.0.0.1/", None),
    ("[::1]", "https://[::1]/", None),
    ("例え。jp", "https://xn--r8jz45g.jp/", None),
    ("fqdn.", "https://fqdn/", None),
]


@pytest.mark.parametrize(("text", "url", "reason"), BARE_CASES)
def test_bare_forms(tmp_path: Path, text: str, url: str | None, reason: str | None) -> None:
    ok = "https://ok.example/"  # a list with no URL at all is refused whole (test_a_short_file_with_no_url_...)
    for load in (lambda on_error: targets_from_urls([text], on_error=on_error),
                 lambda on_error: [t for t in load_targets([_write(tmp_path, "p.txt", f"{text}\n{ok}\n")],
                                                           on_error=on_error) if t.input != ok]):
        errors: list[TargetError] = []
        got = load(errors.append)
        if url is None:
            assert got == [] and [e.text for e in errors] == [text]
            if reason is None:  # the reason normalise_url gives for the host
                with pytest.raises(TargetError) as exc:
                    normalise_url("https://" + text)
                reason = exc.value.reason
            assert [e.reason for e in errors] == [reason]
        else:
            assert [t.input for t in got] == [url] and errors == []


def test_targets_from_urls() -> None:
    errors: list[TargetError] = []
    got = targets_from_urls(["https://kloop.kg/", "htp//x", "сайт.қаз", "https://KLOOP.kg"],
                            on_error=errors.append)
    assert [(t.input, t.line, t.list_name) for t in got] == [
        ("https://kloop.kg/", 1, "cli"), (f"https://{KAZ}/", 3, "cli")]
    assert [(e.line, e.reason) for e in errors] == [(2, BARE_WORD)]
    assert ":2: bad URL 'htp//x'" in str(errors[0])
    with pytest.raises(TargetError):
        targets_from_urls(["htp//x"], strict=True)


# --------------------------------------------------------------------------- shipped lists

SHIPPED = sorted(p.name for p in TARGETS.iterdir() if p.suffix in {".csv", ".txt"})


def test_shipped_lists_present() -> None:
    assert set(SHIPPED) >= {
        "kz.csv", "global.csv", "kz-2021-05-31.csv", "global-2021-05-31.csv", "fotn-2021-kz.csv",
        "kz-mitm-2019-domains.txt", "kz-mitm-2021-2024-ooni-domains.txt"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_list_loads_cleanly(name: str) -> None:
    got = load_targets([TARGETS / name], strict=True)
    assert got, name


def test_package_copy_is_identical() -> None:
    """probe/data/targets/ is a byte-identical copy of targets/ (see targets/README.md)."""
    canonical = {p.name: p.read_bytes() for p in TARGETS.iterdir() if p.is_file()}
    packaged = {p.name: p.read_bytes() for p in PACKAGED.iterdir() if p.is_file()}
    assert sorted(packaged) == sorted(canonical), "run: cp targets/* probe/data/targets/"
    for name, data in canonical.items():
        assert packaged[name] == data, f"probe/data/targets/{name} differs; cp targets/* probe/data/targets/"


def test_shipped_list_lookup() -> None:
    p = shipped_list("fotn-2021-kz.csv")
    assert p.read_bytes() == (TARGETS / "fotn-2021-kz.csv").read_bytes()
    with pytest.raises(FileNotFoundError, match="kz.csv"):
        shipped_list("no-such-list.csv")
    with pytest.raises(ValueError):
        shipped_list("../targets.py")
    assert DEFAULT_TARGETS_DIR == TARGETS


FOTN_DOMAINS = {
    "change.org", "kloop.kg", "meduza.io", "dailymail.co.uk", "medium.com", "avaaz.org",
    "soundcloud.com", "archive.org", "issuu.com", "lalafo.kg", "pana-defenders.info", "tilda.cc", "tilda.ws",
    "telegram.org", "facebook.com", "twitter.com", "youtube.com", "instagram.com", "vk.com",
    "mail.ru", "ok.ru", "netflix.com",
}
SECTION_RE = re.compile(r"\b[ABC][1-8]\b")


def _report_sections() -> set[str]:
    """Section ids as the report's text (shipped in seeds/) marks them: a line 'B1 0-6 pts'."""
    text = (REPO / "seeds" / "000_53873136671c67ec.txt").read_text(encoding="utf-8")
    sections = set(re.findall(r"^([ABC][1-8]) \d+-\d+ pts$", text, flags=re.M))
    assert len(sections) >= 20, sections
    return sections


def test_fotn_list() -> None:
    got = load_targets([TARGETS / "fotn-2021-kz.csv"], strict=True)
    domains = {t.domain for t in got}
    assert domains >= FOTN_DOMAINS, FOTN_DOMAINS - domains
    assert domains & {"mail.google.com", "gmail.com"}
    sections = _report_sections()
    for t in got:
        assert t.source == "fotn-2021-kz"
        assert t.date_added == "2021-09-21"
        assert t.category_code and t.category_description
        cited = SECTION_RE.findall(t.notes or "")
        assert cited, f"{t.input}: notes cite no section id"
        assert set(cited) <= sections, f"{t.input}: {cited} not all report sections"


# ------------------------------------------- lists that are not regular files (issue 11, 6)


def test_a_fifo_is_refused_at_once_naming_it(tmp_path: Path) -> None:
    """A FIFO with no writer hung the probe in open(); now it is refused without blocking."""
    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as info:
        load_targets([fifo])
    assert info.value.filename == str(fifo)
    assert "not a regular file (a FIFO (named pipe))" in info.value.strerror


def test_dev_zero_is_refused_without_reading_it() -> None:
    """/dev/zero as a list grew the probe to 5 GB; a character device is refused."""
    with pytest.raises(OSError) as info:
        load_targets([Path("/dev/zero")])
    assert "not a regular file (a character device)" in info.value.strerror


def test_a_list_over_the_size_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import probe.targets as targets_mod

    monkeypatch.setattr(targets_mod, "MAX_LIST_BYTES", 100)
    p = _write(tmp_path, "big.txt", "example.org\n" * 20)
    with pytest.raises(OSError) as info:
        load_targets([p])
    assert info.value.filename == str(p) and "larger than 100 bytes (240 bytes)" in info.value.strerror
    small = _write(tmp_path, "small.txt", "example.org\n" * 5)
    assert [t.input for t in load_targets([small])] == ["https://example.org/"]


def test_the_cli_exits_66_on_a_fifo_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from probe.cli import main

    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    assert main(["targets", str(fifo)]) == 66
    assert str(fifo) in capsys.readouterr().err


def test_a_binary_list_warns_20_times_then_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A binary file given as a list printed a warning per line (~15,000 for a 1 MB file: break
    test): the first QUOTED_PER_LIST of the list (was MAX_ROW_WARNINGS, 20, in all: break test F13
    cut it to 3 a list), then one line with the count of the rest — in the library's default logging
    and in ``kzprobe run``'s report."""
    import argparse

    from probe.cli import _load_inputs
    from probe.config import Settings
    from probe.targets import QUOTED_PER_LIST as MAX_ROW_WARNINGS

    p = tmp_path / "list.txt"
    p.write_bytes(b"https://ok.example.kz/\n" + b"\xff\xfe binary \x00\x01\n" * 500)
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        got = load_targets([p])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [t.input for t in got] == ["https://ok.example.kz/"]
    assert len(warnings) == MAX_ROW_WARNINGS + 1 and f"{p}:4: bad line" in warnings[MAX_ROW_WARNINGS - 1]
    assert warnings[-1] == (f"... and {500 - MAX_ROW_WARNINGS} more malformed row(s) of {p} not shown "
                            "(the first 3 are above)")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        got = _load_inputs(argparse.Namespace(input=None, targets=[str(p)], strict=False, limit=None), Settings())
    assert len(got) == 1 and len(caplog.records) == MAX_ROW_WARNINGS  # the count: one line on stderr
    assert caplog.records[0].getMessage().endswith("(skipped)")
    assert "500 malformed target row(s) skipped (the first 3 of each list shown above)" in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        load_targets([_write(tmp_path, "kz.csv", MALFORMED)])
    assert len(caplog.records) == 2  # a few bad rows: each shown, no count line


@pytest.mark.parametrize(("name", "body", "says"), [
    ("secret", "".join(f"user{i}:$6$SECRETSALT$SECRETHASH{i}:20263:0:99999:7:::\n" for i in range(5)),
     "none of its 5 lines is a URL or host name"),
    # a key's shape refuses a file whatever else it holds (test_a_file_that_looks_like_a_secret_is_refused_...)
    ("pass.txt", "# a comment\n\nSECRET passphrase correct horse\n", "none of its 1 line is a URL or host name"),
    ("binary", "SECRET\udcff\udcfe\n" * 3, "none of its 3 lines is a URL or host name"),
    ("list.csv", HEADER + "SECRET-not-a-url,NEWS,News Media,2020-01-01,s,\nSECRET2,x\n",
     "none of its 2 rows is a URL or host name"),
])
def test_a_short_file_with_no_url_is_refused_unquoted(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch, name: str, body: str,
                                                       says: str) -> None:
    """Break test: a config's targets pointing at a 5-line secret file had up to 3 of its lines quoted
    (40 characters) in the log; only a file of 10+ lines with no URL in its first 10 was refused
    unquoted. Now a list with no URL row at all is refused whole (exit 65), naming the file and its
    count of rows; its rows are quoted only when it also has URL rows."""
    from probe.cli import main
    from probe.targets import NotATargetList

    for k in [k for k in os.environ if k.startswith("KZPROBE_")]:  # only the config file
        monkeypatch.delenv(k)
    p = tmp_path / name
    p.write_bytes(body.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.DEBUG, logger="kzprobe.targets"), pytest.raises(NotATargetList) as info:
        load_targets([p])
    assert str(info.value) == f"{p}: not a target list: {says} (its content is not shown)"
    assert "SECRET" not in caplog.text
    with pytest.raises(NotATargetList):
        load_targets([p], strict=True)
    assert main(["targets", str(p)]) == 65
    cfg = _write(tmp_path, "c.toml", f'[run]\ntargets = ["{p}"]\n')
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 65  # before any traffic
    err = capsys.readouterr().err
    assert f"{p}: not a target list: {says}" in err and "SECRET" not in err and not (tmp_path / "out").exists()
    # the same bad rows beside a URL row: a list with typos, its bad rows quoted (40 characters)
    extra = ROW.format("https://a.example/") if name.endswith(".csv") else "https://a.example/\n"
    p.write_bytes((body + extra).encode("utf-8", "surrogateescape"))
    errors: list[TargetError] = []
    assert [t.domain for t in load_targets([p], on_error=errors.append)] == ["a.example"]
    assert len(errors) == int(says.split()[3])
    # no scheme and no dot: named by its line only (review 24b item 2); a line that is not UTF-8 is not text
    assert all("SECRET" not in e.brief() for e in errors) and (name == "binary" or "(not shown: " in errors[0].brief())


def test_a_file_that_is_not_a_list_is_refused_unquoted(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Break test F13: ``[run] targets = ["../../../../etc/shadow"]`` as root put the file's lines in the
    journal (``bad URL 'systemd-network:!*:20263::::::'``). A plain file with no URL in its first
    NOT_A_LIST_LINES lines is not a target list: refused whole (exit 65), nothing of it quoted."""
    from probe.cli import main
    from probe.targets import NOT_A_LIST_LINES, NotATargetList

    for k in [k for k in os.environ if k.startswith("KZPROBE_")]:  # only the config file
        monkeypatch.delenv(k)
    secret = "".join(f"user{i}:$6$SECRETSALT$SECRETHASH{i}:20263:0:99999:7:::\n" for i in range(30))
    shadow = _write(tmp_path, "shadow", secret)
    with caplog.at_level(logging.DEBUG, logger="kzprobe.targets"), pytest.raises(NotATargetList) as info:
        load_targets([shadow])
    assert str(info.value) == (f"{shadow}: not a target list: none of its first {NOT_A_LIST_LINES} lines is a URL or "
                               "host name (its content is not shown)")
    assert "SECRET" not in caplog.text and caplog.records == []
    with pytest.raises(NotATargetList):
        load_targets([shadow], on_error=lambda e: None)  # whoever takes the errors: never called with them
    assert main(["targets", str(shadow)]) == 65
    cfg = _write(tmp_path, "c.toml", f'[run]\ntargets = ["{shadow}"]\n')
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 65  # before any traffic
    err = capsys.readouterr().err
    assert "not a target list" in err and "SECRET" not in err and not (tmp_path / "out").exists()
    # nine bad lines, then a URL: a list with typos, its first 3 bad lines quoted (40 characters), then a count
    typos = _write(tmp_path, "typos.txt", "".join(secret.splitlines(keepends=True)[:NOT_A_LIST_LINES - 1])
                   + "example.org\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        assert [t.domain for t in load_targets([typos])] == ["example.org"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 4
    assert said[-1] == f"... and 6 more malformed row(s) of {typos} not shown (the first 3 are above)"
    assert said[0].startswith(f"{typos}:1: bad URL (not shown: no scheme and no dot): ") and "SECRET" not in caplog.text
    assert all(len(m) < len(str(typos)) + 200 for m in said)


#: A secret past the first 40 characters of every quoted piece of the rows below.
_TAIL = "SECRETTAIL"


@pytest.mark.parametrize(("row", "reason_starts"), [
    (f"TOKEN_{'a' * 50}{_TAIL}.example", "label too long (66 > 63): 'token_"),
    (f"https://ex!ample{'b' * 32}{_TAIL}.org/", "invalid label 'ex!ample"),
    (f"https://ex\u2603ample{'c' * 32}{_TAIL}.org/", "invalid IDN label 'ex\u2603ample"),
    (f"https://[::1]x{'d' * 40}{_TAIL}/", "junk after IPv6 literal: 'x"),
    (f"https://a.example:1{'e' * 40}{_TAIL}/", "bad port '1"),
    (f"ftp{'f' * 40}{_TAIL}://a.example/", "scheme 'ftp"),
])
def test_every_quoted_piece_of_a_target_error_is_cut_to_the_quote_cap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, row: str, reason_starts: str) -> None:
    """Break test 9: a row was cut to 40 characters, but its reason repeated the whole label
    (``label too long (69 > 63): 'token_…secretpartthatshouldnotshow'``); IDNA errors quote it again.
    Every quoted piece of a warning is cut to QUOTE_CHARS, as the row is."""
    from probe.targets import QUOTE_CHARS

    p = _write(tmp_path, "long.txt", f"https://ok.example/\n{row}\n")
    errors: list[TargetError] = []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        assert [t.domain for t in load_targets([p], on_error=errors.append)] == ["ok.example"]
        assert [t.domain for t in load_targets([p])] == ["ok.example"]
    (err,) = errors
    assert err.reason.lower().count(_TAIL.lower()) >= 1  # the reason itself keeps the whole piece
    brief = err.brief()
    assert brief.split(": ", 2)[2].startswith(reason_starts)
    logged = caplog.text
    for shown in (brief, logged):
        assert "secret" not in shown.lower()
    pieces = re.findall(r"'(?:[^'\\\n]|\\.)*'", brief)
    assert len(pieces) >= 2 and all(len(q) - 2 <= QUOTE_CHARS for q in pieces)
    assert _TAIL in str(err) or _TAIL.lower() in str(err)  # str() quotes up to MAX_SHOWN (200) characters


def test_a_csv_list_holds_a_bounded_number_of_bad_rows_before_its_first_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A CSV list is read to its end before its first URL decides it: every bad row before it was held
    (review: header, 1M bad rows, one URL at the end peaked at 651 MB). At most MAX_ROW_WARNINGS are
    held, the rest counted; the first URL reports those and one RowsNotKept with the count, and the
    run's count is every bad row; a list with no URL is refused with the count of all its rows."""
    from probe import targets as tg
    from probe.targets import MAX_ROW_WARNINGS, NotATargetList, RowWarnings

    most = 0
    real_call = tg._FirstUrlGate.__call__

    def spy(self: tg._FirstUrlGate, err: TargetError) -> None:
        nonlocal most
        real_call(self, err)
        most = max(most, len(self.held or ()))

    monkeypatch.setattr(tg._FirstUrlGate, "__call__", spy)
    header = HEADER
    p = _write(tmp_path, "big.csv", header + "bad row\n" * 5000 + "https://ok.example.kz/,NEWS,News,,,\n")
    seen: list[TargetError] = []
    got = load_targets([p], on_error=seen.append)
    assert [t.input for t in got] == ["https://ok.example.kz/"]
    assert most == MAX_ROW_WARNINGS
    assert len(seen) == MAX_ROW_WARNINGS + 1 and seen[0].line == 2
    assert isinstance(seen[-1], RowsNotKept) and seen[-1].rows == 5000 - MAX_ROW_WARNINGS
    report = RowWarnings()
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        load_targets([p], on_error=report)
        report.finish()
    assert report.count == 5000 and report.hidden == 5000 - report.limit
    no_url = _write(tmp_path, "none.csv", header + "bad row\n" * 5000)
    with pytest.raises(NotATargetList) as info:
        load_targets([no_url], on_error=seen.append)
    assert info.value.lines == 5000 and most == MAX_ROW_WARNINGS


# --------------------------------------------------------------------------- files that look like secrets

#: Break test 24 (finding 4): one JWT, taken as the host ``eyjhbg….eyj….sfl…`` and measured (sent to the
#: resolvers, DoH and the helper, written in the JSONL).
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
#: ... and a .env with one dotted value: that value measured, the other lines quoted in warnings.
DOTENV = ("DB_HOST=db.internal.corp\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
          "secret.token.value\n")
_URLS = "https://a.example/\n# news sites\nb.example\n"


@pytest.mark.parametrize(("name", "body", "says"), [
    ("jwt.txt", JWT + "\n", "line 1 looks like a secret: a JSON Web Token"),
    (".env", DOTENV, "line 1 looks like a secret: a NAME=value or NAME: value line (an environment, config or "
                     "header file)"),
    ("mixed.txt", _URLS + JWT + "\nhttps://c.example/\n", "line 4 looks like a secret: a JSON Web Token"),
    ("query.txt", _URLS + f"https://c.example/cb?token={JWT}\n", "line 4 looks like a secret: a JSON Web Token"),
    ("export.txt", _URLS + "export API_TOKEN=abc.def\n", "line 4 looks like a secret: a NAME=value"),
    ("headers.txt", _URLS + "Authorization: Bearer abc.def\n", "line 4 looks like a secret: a NAME=value"),
    ("key.txt", _URLS + "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n",
     "line 4 looks like a secret: a PEM key or certificate boundary"),
    ("git-credentials", "https://alice:ghp_a1B2c3D4e5F6g7H8i9J0@github.com\n" + _URLS,
     "line 1 looks like a secret: a URL with a password (user:password@)"),
    ("token.txt", _URLS + "SECRET-API-KEY-0123456789abcdef\n", "line 4 looks like a secret: a long random-looking"),
    ("aws.txt", _URLS + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "line 4 looks like a secret: a long random"),
    ("hex.txt", _URLS + "d41d8cd98f00b204e9800998ecf8427e\n", "line 4 looks like a secret: a long random-looking"),
    ("list.csv", HEADER + ROW.format("https://a.example/") + ROW.format(f"https://{JWT}/"),
     "line 3 looks like a secret: a JSON Web Token"),
    # review 24b item 3: beside a URL narrowed to its host, the rest of a CSV line is still looked at whole
    ("notes.csv", "category_code,url,notes\nNEWS,https://a.example/x,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
     "line 2 looks like a secret: a long random-looking"),
    ("hex.csv", "category_code,url,notes\nNEWS,https://a.example/,d41d8cd98f00b204e9800998ecf8427e\n",
     "line 2 looks like a secret: a long random-looking"),
    # review 24b item 2: known services' tokens, alone (each was quoted as a bad URL) or in a URL (measured)
    *((f"known{i}.txt", _URLS + line + "\n", "line 4 looks like a secret: a token of a known service") for i, line in
      enumerate(["AKIAIOSFODNN7EXAMPLE", "ASIAQWERTYUIOPASDFGH", "glpat-xxxxxxxxxxxxxxxxxxxx",
                 "xoxp-1234-5678-9012-abcdef",
                 "npm_abcdefghijklmnopqrstuvwxyz0123456789", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                 "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
                 "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
                 "https://c.example/?token=ghp_1234567890abcdefghijABCDEFGHIJ123456",
                 "https://c.example/api?key=AKIAIOSFODNN7EXAMPLE",
                 "https://ghp_1234567890abcdefghijABCDEFGHIJ123456@github.com/o/r.git"])),
])
def test_a_file_that_looks_like_a_secret_is_refused_whole_unquoted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, name: str, body: str, says: str) -> None:
    """Break test 24, finding 4: a file holding a JWT, or a .env with one dotted value, was a target list: the
    dotted value measured, the other lines quoted (``AWS_SECRET_ACCESS_KEY=wJalrX…``) in warnings. A file with
    a line of a secret's shape (probe.secretlike) is refused whole (exit 65), before any row is read or
    reported, whatever URLs it also holds; the refusal names the file, the line number and the shape."""
    from probe.cli import main
    from probe.targets import NotATargetList

    for k in [k for k in os.environ if k.startswith("KZPROBE_")]:  # only the config file
        monkeypatch.delenv(k)
    p = _write(tmp_path, name, body)
    secrets = [w for w in re.split(r"[\s=:@/?]+", body) if len(w) >= 8 and w not in {
        "https", "a.example", "b.example", "c.example", "example", "github.com"} and "sites" not in w
        and not w.startswith(("url,", "NEWS,", "#"))]
    secrets += ["eyJ", "eyj", "AWS_", "BEGIN", "db.internal", "secret.token", "Bearer", "alice", "ghp_"]
    errors: list[TargetError] = []
    with caplog.at_level(logging.DEBUG, logger="kzprobe"), pytest.raises(NotATargetList) as info:
        load_targets([p], on_error=errors.append)
    assert str(info.value).startswith(f"{p}: not a target list: {says}")
    assert str(info.value).endswith(" (its content is not shown)")
    assert errors == [] and caplog.records == []  # no row reported, none quoted
    with pytest.raises(NotATargetList):
        load_targets([p], strict=True)
    assert main(["targets", str(p)]) == 65
    cfg = _write(tmp_path, "c.toml", f'[run]\ntargets = ["{p}"]\n')
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 65  # before any traffic
    assert main(["run", "--config", str(cfg), "--targets", str(p), "--out", str(tmp_path / "out")]) == 65
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert f"{p}: not a target list: {says}" in captured.err and not (tmp_path / "out").exists()
    assert [s for s in secrets if s in said.replace(str(p), "")] == []


@pytest.mark.parametrize("body", [
    "# from citizenlab/test-lists commit 7f01e430040e571f1315734ee36151a6897f71b5\nhttps://a.example/\n",
    "https://a.example/  # sha256 00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2\n",
    "https://docs.google.com/document/d/1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789/edit\n",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PLFgquLnL59alCl_2TQvOiD5Vgm1hCaGSI\n",
    "https://xn--80aswg.xn--80ao21a/\nhttp://vww5iagqbdhstyswrxgewpifmj7keahuqdohmwrbnrm4nvdyfw5ffhqd.onion/\n",
    "https://a.example/?q=a=b\nhttp://user@b.example/\n",
    # review 24b item 3: a URL in a later CSV column is narrowed to its host as one in the first is; a host
    # label of hex digits (a CDN's or bucket's id) is no secret
    "category_code,url\nNEWS,https://docs.google.com/document/d/1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789/edit\n",
    "category_code,url,notes\nNEWS,https://a.example/,\"see https://explorer.ooni.org/m/2024_KZ_AbCdEf0123456789\"\n",
    "https://pub-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d.r2.dev/leaked-report.pdf\n",
    "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6.ngrok.io\nhttps://e7b3f9a2c1d4e6f8a0b2c4d6e8f0a1b3c5d7e9f1.ipfs.dweb.link/\n",
    # re-check of break test 24 (N2): a host name's case carries nothing (RFC 4343): a CamelCase or mixed-case
    # label refused the whole list as a random word
    "AlmatyNewsDaily2024Online.kz\nhttps://sub-Domain1234567890Abc.example.org/\n",
    "https://a1B2c3D4e5F6g7H8i9J0.example.com/\nhttps://SflKxwRJSMeKKF2QT4fwpMeJf36POk6y.example/\n",
    "category_code,url\nNEWS,https://SflKxwRJSMeKKF2QT4fwpMeJf36POk6y.example/\n",
])
def test_lines_that_only_resemble_a_secret_still_load(tmp_path: Path, body: str) -> None:
    """The secret shapes spare what real lists hold: a commit hash or checksum in a comment (never read), long
    mixed-case path and query segments (a document id, a playlist), IDNs, onion names (lower case)."""
    p = _write(tmp_path, "list.csv" if body.startswith("category_code,") else "list.txt", body)
    errors: list[TargetError] = []
    assert load_targets([p], on_error=errors.append)


@pytest.mark.parametrize("row", ["hunter2", "p@ssw0rd!2024", "api_key abcd1234secret", "correct horse battery staple",
                                 "user0:$6$SALT$HASH:20263:0:99999:7:::"])
def test_a_bad_row_with_no_scheme_and_no_dot_is_named_by_its_line_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, row: str) -> None:
    """Review 24b item 2: a malformed row beside URLs was quoted in the warning (``bad URL 'hunter2': neither a
    URL nor a host name with a dot``), a password as much as a typo. A row with neither a scheme nor a dot is no
    mistyped URL: the log names its line, not its text (nor a quoted piece of it in the reason); a row with a
    dot or scheme is still quoted (40 characters), as a mistyped URL helps its list's author."""
    p = _write(tmp_path, "list.txt", f"https://a.example/\n{row}\nhtp//x.example\n")
    with caplog.at_level(logging.WARNING, logger="kzprobe.targets"):
        assert [t.domain for t in load_targets([p])] == ["a.example"]
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith(f"{p}:2: bad URL (not shown: no scheme and no dot): ") and said[1].startswith(
        f"{p}:3: bad URL 'htp//x.example': ")
    assert not [w for w in re.split(r"[\s:$]+", row) if len(w) >= 4 and w in caplog.text]


@pytest.mark.parametrize("first", ["# category,url", "#url,category_code", "  # fields: url, tag"])
def test_a_comment_naming_url_is_not_a_csv_header(tmp_path: Path, first: str) -> None:
    """Review 24b item 4: a plain list whose first line is ``# category,url`` was read as a CSV (two cells, one
    of them ``url``) and refused whole (none of its rows had a URL in the ``url`` column). A ``#`` line is a
    comment, not a header: the list loads as it did before CSV headers could name ``url`` in any column."""
    p = _write(tmp_path, "sites.txt", f"{first}\nexample.org\nhttps://example.net/a\n")
    assert [t.input for t in load_targets([p], strict=True)] == ["https://example.org/", "https://example.net/a"]


_LINEAR_CHILD = """
import base64, json, sys
from pathlib import Path
from probe.targets import NotATargetList, load_targets
from probe.secretlike import secret_shape
d = Path(sys.argv[1])
blob = base64.b64encode("".join(json.dumps({"id": i}) for i in range(150_000)).encode()).decode()
assert len(blob) > 2_000_000 and blob.count("eyJ") > 40_000 and "." not in blob
(d / "blob.txt").write_text("https://a.example/\\n" + blob + "\\n")
try:
    load_targets([d / "blob.txt"])
except NotATargetList as e:
    print("blob:", e.why)
print("shape:", secret_shape("x" + blob), secret_shape("eyJ" * 700_000), secret_shape("AKIA" * 500_000),
      secret_shape("ghp_" * 500_000), secret_shape("x,a:/" * 400_000 + "https://a.example/"))
(d / "spaces.txt").write_text("https://a.example/" + " " * 2_000_000 + "b\\nhttps://c.example/\\n")
print("spaces:", [t.input for t in load_targets([d / "spaces.txt"], on_error=lambda e: None)])
"""


def test_the_secret_check_is_linear_on_a_2_mb_line(tmp_path: Path) -> None:
    """Review 24b item 1: probe.secretlike's JWT pattern was tried at every ``eyJ`` inside a run of base64
    without ``.``, each try reading to the run's end (193 KB: 4.5 CPU-s; a list may be 32 MiB), and the
    plain list's inline-comment pattern at every space of a run of spaces (40,000: 2.8 s). A 2 MB line of
    each is answered (a child given 60 s as a safety net only; the old code took minutes): the base64 line
    refused as a random word (it holds no JWT: no ``.``), the spaces line a bad row beside a URL."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _LINEAR_CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.splitlines() == ["blob: line 2 looks like a secret: a long random-looking word (a key or token)",
                                        "shape: token_word None None None None", "spaces: ['https://c.example/']"]


SHARED_LISTS = ["test-lists/global.csv", "test-lists/global-2021-05-31.csv", "test-lists/kz.csv",
                "test-lists/kz-2021-05-31.csv", "test-lists/kg.csv", "kz-mitm-2019-domains.txt",
                "kz-mitm-2021-2024-ooni-domains.txt"]


@pytest.mark.parametrize("name", SHARED_LISTS)
def test_the_shared_citizen_lab_lists_load_whole(name: str) -> None:
    """Every target list in shared data loads, no row refused (the secret shapes find none of their lines), and
    every other list-like file there is one of these or not a list (legends, fingerprints, manifests)."""
    from tests.conftest import SHARED, shared_path

    got = load_targets([shared_path("data", *name.split("/"))], strict=True)
    lines = [ln for ln in shared_path("data", *name.split("/")).read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith(("url,", "#"))]
    assert len(got) == len({t.input for t in got}) and 0 < len(got) <= len(lines)
    listed = {str(p.relative_to(SHARED / "data")) for p in (SHARED / "data").rglob("*")
              if p.suffix in {".csv", ".txt"} and "fingerprints" not in p.parts and "mitm-roots" not in p.parts
              and not p.name.startswith("00-LEGEND") and p.name != "kz-ooni-2024-report-blocked-domains.csv"}
    assert listed == set(SHARED_LISTS)
