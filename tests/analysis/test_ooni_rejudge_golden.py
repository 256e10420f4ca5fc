"""Re-judging OONI measurements gives the very same rows after the speed work (issue 14 part 7).

``tests/data/golden/ooni-rejudge.json`` holds :func:`analysis.load.row` of every real
web_connectivity measurement in ``shared/data/ooni-samples*`` (versions 0.0.1 … 0.5.x) and of
variants of each (re-labelled as Kazakhstan's on days inside and outside the known
interception windows, the input swapped for a known interception target over https and
http), as written by the code before the speed-ups (commit c78b060). Every row must stay
identical, value for value (verdict, rule, reason, failures, issuers …). Both the sync's path
(:func:`analysis.ooni_sync.process_object` decodes with msgspec, then ``row``) and the
benchmark's synthetic set (the same real samples re-labelled) go through ``row``.

A deliberate verdict change regenerates the file: ``KZPROBE_UPDATE_GOLDEN=1 pytest
tests/analysis/test_ooni_rejudge_golden.py``, then review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from analysis.load import row

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "ooni-rejudge.json"
SHARED = Path(os.environ.get("KZPROBE_SHARED", Path(__file__).resolve().parents[3] / "shared"))

#: (label, cc, measurement_start_time, host swap): the variants of each sample.
VARIANTS: tuple[tuple[str, str | None, str | None, str | None], ...] = (
    ("as-is", None, None, None),
    ("kz-2019-window", "KZ", "2019-07-20 10:00:00", None),
    ("kz-2020-drill", "KZ", "2020-12-08 10:00:00", None),
    ("kz-2021", "KZ", "2021-03-01 10:00:00", None),
    ("kz-outside", "KZ", "2020-06-15 10:00:00", None),
    ("kz-2019-target", "KZ", "2019-07-20 10:00:00", "https://www.facebook.com/"),
    ("kz-2021-target", "KZ", "2021-03-01 10:00:00", "https://compromat.ru/"),
    ("kz-http-target", "KZ", "2021-03-01 10:00:00", "http://compromat.ru/"),
)


def _samples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for p in sorted(SHARED.glob("data/ooni-samples*/**/*.json")):
        try:
            m = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(m, dict) and m.get("test_name") == "web_connectivity":
            out.append((str(p.relative_to(SHARED / "data")), m))
    return out


def variants() -> list[tuple[str, bytes]]:
    """(id, JSON line) of every sample × variant, as the sync reads them."""
    out = []
    for name, m in _samples():
        for label, cc, when, url in VARIANTS:
            v = json.loads(json.dumps(m))
            if cc is not None:
                v["probe_cc"], v["probe_asn"] = cc, "AS9198"
            if when is not None:
                v["measurement_start_time"] = when
            if url is not None:
                v["input"] = url
            out.append((f"{name}#{label}", json.dumps(v).encode()))
    return out


def _jsonable(r: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if v is None or isinstance(v, (str, int, float, bool)) else str(v)) for k, v in r.items()}


def current() -> dict[str, dict[str, Any]]:
    dec = msgspec.json.Decoder()
    return {vid: _jsonable(row(dec.decode(raw), "f", 1)) for vid, raw in variants()}


def test_rejudged_rows_are_unchanged() -> None:
    if not _samples():
        pytest.fail(f"OONI samples missing under {SHARED}/data (set KZPROBE_SHARED to the shared/ directory)")
    got = current()
    if os.environ.get("KZPROBE_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert set(got) == set(want)
    diffs = {vid: {k: (want[vid].get(k), v) for k, v in r.items() if want[vid].get(k) != v}
             for vid, r in got.items() if r != want[vid]}
    assert not diffs, f"{len(diffs)} of {len(got)} rows changed: {json.dumps(dict(list(diffs.items())[:5]), indent=1)}"


def test_the_golden_set_covers_every_verdict_path() -> None:
    """The golden rows are not a trivial set: many rules, recomputed and OONI-fallback rows, KZ
    interception-window verdicts among them."""
    want = json.loads(GOLDEN.read_text())
    rules = {r["rule"] for r in want.values()}
    assert len(want) >= 200
    assert len(rules) >= 10
    assert {r["verdict_source"] for r in want.values()} >= {"recomputed", "ooni"}
