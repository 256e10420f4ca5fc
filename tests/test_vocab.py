"""probe.vocab: the closed vocabularies, defined once, and their mapping to OONI's."""

from __future__ import annotations

import pytest

from probe import failures, vocab
from probe.vocab import Rule


def test_blocking_types_and_values() -> None:
    assert vocab.BLOCKING_TYPES == ("dns", "tcp_ip", "tls", "tls_mitm", "http-failure", "http-diff", "throttling")
    assert ("false", *vocab.BLOCKING_TYPES) == vocab.BLOCKING_VALUES
    assert set(vocab.BLOCKING_MEANINGS) == set(vocab.BLOCKING_TYPES)


def test_every_blocking_type_maps_into_oonis_vocabulary() -> None:
    # ooni/backend fastpath score_web_connectivity accepts only these four (else "Unsupported blocking type")
    assert set(vocab.OONI_BLOCKING_TYPES) == {"dns", "tcp_ip", "http-diff", "http-failure"}
    assert set(vocab.OONI_BLOCKING) == set(vocab.BLOCKING_TYPES)
    for ours in vocab.BLOCKING_TYPES:
        b, a = vocab.ooni_blocking(ours, ours == "throttling")
        assert b is False or b in vocab.OONI_BLOCKING_TYPES, ours
        assert isinstance(a, bool)


@pytest.mark.parametrize(("ours", "accessible", "theirs"), [
    ("tls", False, ("http-failure", False)),        # webconnectivityqa tlsBlockingConnectionReset
    ("tls_mitm", False, ("http-failure", False)),   # failed verification where the control's verifies
    ("throttling", True, (False, True)),            # web_connectivity has no throughput test
    ("dns", False, ("dns", False)),
    ("http-diff", False, ("http-diff", False)),
    (False, True, (False, True)),
    (False, False, (False, False)),
    (None, None, (None, None)),
])
def test_ooni_blocking(ours: object, accessible: bool | None, theirs: tuple[object, object]) -> None:
    assert vocab.ooni_blocking(ours, accessible) == theirs  # type: ignore[arg-type]


def test_throttled_fetch_cut_mid_body_is_ooni_http_failure() -> None:
    # webconnectivityqa throttlingWithHTTPS: generic_timeout_error → blocking "http-failure", accessible false
    assert vocab.ooni_blocking("throttling", True, http_failure="generic_timeout_error") == ("http-failure", False)
    assert vocab.ooni_blocking("throttling", True, http_failure=None) == (False, True)


def test_ooni_blocking_rejects_unknown_value() -> None:
    with pytest.raises(ValueError, match="'censored'"):
        vocab.ooni_blocking("censored", False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("blocking", "accessible", "want"), [
    (None, None, "inconclusive"), ("false", True, "accessible"), (False, True, "accessible"),
    (False, False, "down"), ("false", None, "inconclusive"), ("dns", False, "blocked"),
    ("throttling", True, "blocked"),
    ("some_future_type", False, "blocked"),  # a type this version does not know is never inconclusive
])
def test_outcome(blocking: object, accessible: bool | None, want: str) -> None:
    assert vocab.outcome(blocking, accessible) == want
    assert want in vocab.OUTCOMES


def test_every_blocking_type_is_blocked() -> None:
    for b in vocab.BLOCKING_TYPES:
        assert vocab.outcome(b, False) == "blocked"
        assert vocab.blocking_str(b) == b
        assert vocab.blocking_from_str(b) == b
    assert vocab.blocking_str(False) == "false" and vocab.blocking_from_str("false") is False
    assert vocab.blocking_str("censored") is None and vocab.blocking_from_str(None) is None


def test_verdict_words() -> None:
    assert vocab.verdict_word(None, None) == "inconclusive"
    assert vocab.verdict_word(False, True) == "false"
    assert vocab.verdict_word(False, False) == "down"
    assert vocab.verdict_word("tls", False) == "tls"
    assert ("false", *vocab.BLOCKING_TYPES, "down", "inconclusive") == vocab.VERDICT_WORDS


def test_control_failure_round_trip() -> None:
    s = vocab.control_failure(failures.GENERIC_TIMEOUT)
    assert s == "control_failure: generic_timeout_error"
    assert vocab.parse_control_failure(s) == "generic_timeout_error"
    assert vocab.is_control_failure(s)
    assert vocab.parse_control_failure("control_failure") == ""
    for not_one in (None, "", "connection_reset", "control_failures: x", "dns_nxdomain_error"):
        assert vocab.parse_control_failure(not_one) is None
        assert not vocab.is_control_failure(not_one)
    with pytest.raises(ValueError):
        vocab.control_failure("  ")


def test_failure_strings_are_reexported_not_copied() -> None:
    assert vocab.FAILURE_STRINGS is failures.KNOWN
    assert vocab.failures is failures


def test_rule_ids() -> None:
    ids = [r.value for r in Rule]
    assert len(ids) == len(set(ids))
    assert Rule.DEADLINE == "deadline" and Rule.INTERNAL_ERROR == "internal_error"
    assert set(vocab.RULES_OUTSIDE_JUDGE) == {Rule.DEADLINE, Rule.INTERNAL_ERROR, Rule.OONI, Rule.HTTP_PROBE_ERROR,
                                             Rule.HTTP_CANCELLED, Rule.HTTP_OONI_MATCH_KEYS, Rule.TLS_CERT_BOTH_FAIL,
                                             Rule.TLS_MITM_UNKNOWN_AUTHORITY_WINDOW}
    assert str(Rule.DNS_BOGON) == "dns.bogon"


def test_colour_and_glossary_maps_follow_the_vocabulary() -> None:
    from analysis import plots, report

    assert set(plots.BLOCKING_COLOURS) == set(vocab.BLOCKING_TYPES)
    assert set(plots.HEALTH_COLOURS) == {*vocab.OUTCOMES, "vantage offline"}
    assert dict(report.BLOCKING_MEANINGS) == vocab.BLOCKING_MEANINGS
    assert set(dict(report.OUTCOME_MEANINGS)) == set(vocab.OUTCOMES)


def test_restated_copies_are_the_vocabulary() -> None:
    from analysis import claims, load
    from probe.lab import scenario

    assert load.BLOCKING_VALUES is vocab.BLOCKING_VALUES and load.OUTCOMES is vocab.OUTCOMES
    assert list(load.BLOCKING_DTYPE.categories) == list(vocab.BLOCKING_VALUES)
    assert list(load.OUTCOME_DTYPE.categories) == list(vocab.OUTCOMES)
    assert claims.BLOCKING_TYPES is vocab.BLOCKING_TYPES
    assert scenario.EXPECTS is vocab.VERDICT_WORDS


def test_the_readme_and_the_lab_docs_list_every_blocking_value() -> None:
    """The copies that must exist in prose (README "What a verdict means", the lab scenario format)."""
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## What a verdict means"):]
    section = section[:section.index("\n## ", 3)]
    for b in vocab.BLOCKING_TYPES:
        assert f'"{b}"' in section, b
    expect_line = next(line for line in readme.splitlines() if line.startswith("expect = "))
    assert expect_line.split("#", 1)[1].split() == " | ".join(vocab.VERDICT_WORDS).split()
