"""The analysis reads our records of every version: kzprobe 0.1.0's (kept as written, in
tests/data/records-0.1.0.jsonl) and today's, one per verdict kind (tests/record_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import COLUMNS, load
from tests import record_cases

LEGACY = Path(__file__).parent.parent / "data" / "records-0.1.0.jsonl"

#: What the analysis must read from each kind: the probe's own verdict (our vocabulary),
#: the failures and the evidence columns. These are the values kzprobe 0.1.0's records gave.
EXPECTED = {
    # kind: (blocking, accessible, outcome, rule, dns_failure, tcp_failure, tls_failure, http_failure, mitm_root)
    "accessible": ("false", True, "accessible", "https.verified", None, None, None, None, None),
    "down": ("false", False, "down", "tcp_ip.both_fail", None, "connection_refused", "connection_refused", None, None),
    "inconclusive": (None, None, "inconclusive", "vantage.offline", "dns_no_answer", None, None, None, None),
    "dns": ("dns", False, "blocked", "dns.probe_failure", "dns_nxdomain_error", None, None, None, None),
    "tcp_ip": ("tcp_ip", False, "blocked", "tcp_ip.control_ok", None, "generic_timeout_error",
               "generic_timeout_error", None, None),
    "tls": ("tls", False, "blocked", "tls.control_ok", None, None, "connection_reset", None, None),
    "tls_mitm": ("tls_mitm", False, "blocked", "tls_mitm.known_root", None, None, None, None,
                 "CN=Qaznet Trust Network,C=KZ"),
    "http-failure": ("http-failure", False, "blocked", "http.failure", None, None, None, "connection_reset", None),
    "http-diff": ("http-diff", False, "blocked", "http.blockpage", None, None, None, None, None),
    "throttling": ("throttling", True, "blocked", "throttling.sni_ratio", None, None, None, None, None),
}
_COLS = ("blocking", "accessible", "outcome", "rule", "dns_failure", "tcp_failure", "tls_failure", "http_failure",
         "mitm_root")


def _na(v: object) -> object:
    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def _rows(frame: pd.DataFrame) -> dict[str, tuple[object, ...]]:
    kinds = record_cases.KINDS
    assert len(frame) == len(kinds)
    return {k: tuple(_na(frame.iloc[i][c]) for c in _COLS) for i, k in enumerate(kinds)}


def test_legacy_fixture_is_kzprobe_010_output() -> None:
    lines = [json.loads(x) for x in LEGACY.read_text().splitlines()]
    assert [m["test_version"] for m in lines] == ["0.1.0"] * len(record_cases.KINDS)
    # written before the OONI vocabulary: our own blocking values in `blocking`
    assert [m["test_keys"]["blocking"] for m in lines][5:7] == ["tls", "tls_mitm"]


def test_legacy_records_load_with_their_meaning() -> None:
    r = load([LEGACY])
    assert (r.stats.loaded, r.stats.invalid, r.stats.errors) == (len(record_cases.KINDS), 0, [])
    assert _rows(r.frame) == EXPECTED
    assert set(r.frame["source"]) == {"kzprobe"}
    assert r.frame["body_length"].tolist()[0] == len(record_cases.PAGE)
    assert bool(r.frame["vantage_offline"].iloc[2]) and not r.frame["control_intercepted"].any()


def test_current_records_load_with_the_same_meaning(tmp_path: Path) -> None:
    path = tmp_path / "now.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for _, obs, vantage in record_cases.cases():
            fh.write(json.dumps(record_cases.record(obs, vantage), ensure_ascii=False) + "\n")
    now, old = load([path]).frame, load([LEGACY]).frame
    assert _rows(now) == EXPECTED
    same = [c for c in COLUMNS if c not in ("file", "measurement_uid", "data_format_version", "control_failure")]
    for c in same:
        assert [_na(v) for v in now[c]] == [_na(v) for v in old[c]], c


@pytest.mark.parametrize("workers", [1, 2])
def test_legacy_and_current_records_mixed_in_one_file(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "mixed.jsonl"
    cur = [json.dumps(record_cases.record(o, v), ensure_ascii=False) for _, o, v in record_cases.cases()]
    old = LEGACY.read_text().splitlines()
    path.write_text("\n".join(x for pair in zip(old, cur) for x in pair) + "\n")
    f = load([path], workers=workers).frame
    assert [_na(v) for v in f["blocking"]] == [EXPECTED[k][0] for k in record_cases.KINDS for _ in (0, 1)]
