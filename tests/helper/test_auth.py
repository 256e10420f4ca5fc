"""Tokens: the token file (permissions, format), Bearer header parsing, constant-time matching."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from probe.helper.auth import (
    HelperConfigError,
    TokenSet,
    bearer_token,
    load_tokens,
    new_token,
    token_id,
)

GOOD = "Xq3v9LkPz0aB7cD2eF5gH8iJ"
OTHER = "probe-two-token-fedcba9876543210"


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "helper.token") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    os.chmod(p, mode)
    return p


def test_load_tokens_with_comments_and_labels(tmp_path: Path) -> None:
    p = write(tmp_path, f"# kzprobe helper tokens\n\n{GOOD}   # pi-almaty\n  {OTHER}\n#{'x' * 30}\n")
    assert load_tokens(p) == frozenset({GOOD, OTHER})
    assert load_tokens(str(p)) == frozenset({GOOD, OTHER})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o607])
def test_group_or_world_accessible_file_is_refused(tmp_path: Path, mode: int) -> None:
    p = write(tmp_path, GOOD + "\n", mode)
    with pytest.raises(HelperConfigError, match="chmod 600") as err:
        load_tokens(p)
    assert f"{mode:04o}" in str(err.value)
    assert GOOD not in str(err.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_file_is_accepted(tmp_path: Path, mode: int) -> None:
    assert load_tokens(write(tmp_path, GOOD + "\n", mode)) == {GOOD}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_empty_token_file_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(HelperConfigError, match="no token"):
        load_tokens(write(tmp_path, text))


@pytest.mark.parametrize("line, what", [
    ("short-token", "shorter than 16"),
    ("has\u00e9accent0123456789", "not a bearer token"),
    ("a" * 20 + "!" * 3, "not a bearer token"),
    (f"{GOOD} {OTHER}", "one token per line"),
    ("=" + "a" * 20, "not a bearer token"),
])
def test_malformed_lines_are_named_by_number_without_the_token(tmp_path: Path, line: str, what: str) -> None:
    p = write(tmp_path, f"# header\n{GOOD}\n{line}\n")
    with pytest.raises(HelperConfigError, match=what) as err:
        load_tokens(p)
    assert "line 3" in str(err.value)
    assert line.split()[0] not in str(err.value) and GOOD not in str(err.value)


def test_missing_file_directory_and_binary(tmp_path: Path) -> None:
    with pytest.raises(HelperConfigError, match="cannot open"):
        load_tokens(tmp_path / "nope")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(HelperConfigError, match="not a regular file"):
        load_tokens(d)
    p = tmp_path / "bin"
    p.write_bytes(b"\xff\xfe" + GOOD.encode())
    os.chmod(p, 0o600)
    with pytest.raises(HelperConfigError, match="UTF-8"):
        load_tokens(p)


def test_new_token_is_accepted_by_load_tokens(tmp_path: Path) -> None:
    t = new_token()
    assert len(t) >= 40 and new_token() != t
    assert load_tokens(write(tmp_path, t + "\n")) == {t}


@pytest.mark.parametrize("header, token", [
    (f"Bearer {GOOD}", GOOD),
    (f"bearer {GOOD}", GOOD),
    (f"BEARER   {GOOD}  ", GOOD),
    (None, None),
    ("", None),
    ("Bearer", None),
    ("Bearer ", None),
    (f"Basic {GOOD}", None),
    (f"Token {GOOD}", None),
    (f"Bearer {GOOD} extra", None),
    (GOOD, None),
])
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_set_matches_each_token_and_nothing_else() -> None:
    ts = TokenSet([GOOD, OTHER])
    assert ts.match(GOOD) == token_id(GOOD)
    assert ts.match(OTHER) == token_id(OTHER)
    for wrong in (None, "", GOOD[:-1], GOOD + "x", GOOD.upper(), "\u00e9" * 24):
        assert ts.match(wrong) is None
    assert GOOD not in repr(ts) and len(ts) == 2
    with pytest.raises(HelperConfigError):
        TokenSet([])


def test_token_id_is_a_short_stable_hash() -> None:
    assert token_id(GOOD) == token_id(GOOD)
    assert len(token_id(GOOD)) == 12 and token_id(GOOD) != token_id(OTHER)
    assert GOOD not in token_id(GOOD)
