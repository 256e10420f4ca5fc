"""The loader's column helpers (analysis.load: value_mask, isin_mask, as_text, codes_and_labels, sorted_codes):
what ``astype(str)`` comparisons and groupings said, without a Python string per row — on categoricals (with
unused categories and NA), Arrow strings and object columns alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.load import as_text, codes_and_labels, isin_mask, sorted_codes, value_mask

VALUES = ["ooni", None, "kzprobe", "ooni", "b", None, "a"]


def _kinds() -> list[pd.Series]:
    cat = pd.Series(VALUES, dtype=pd.CategoricalDtype(["kzprobe", "ooni", "unused", "b", "a"]))
    return [cat, pd.Series(VALUES, dtype="string[pyarrow]"), pd.Series(VALUES, dtype=object)]


@pytest.mark.parametrize("series", _kinds(), ids=["category", "arrow", "object"])
def test_value_mask_is_what_astype_str_said_and_writable(series: pd.Series) -> None:
    for value in ("ooni", "a", "unused", "nope"):
        got = value_mask(series, value)
        want = np.array([v == value for v in VALUES])
        assert got.dtype == bool and np.array_equal(got, want), value
    got = value_mask(series, "ooni")
    got &= value_mask(series, "ooni")  # the callers narrow masks in place: a read-only array failed here
    assert got.flags.writeable


@pytest.mark.parametrize("series", _kinds(), ids=["category", "arrow", "object"])
def test_isin_mask(series: pd.Series) -> None:
    assert np.array_equal(isin_mask(series, ("a", "b", "unused")), [v in ("a", "b") for v in VALUES])


@pytest.mark.parametrize("series", _kinds(), ids=["category", "arrow", "object"])
def test_as_text_keeps_na_and_text(series: pd.Series) -> None:
    got = as_text(series)
    assert got.dtype == pd.StringDtype("pyarrow") or str(got.dtype) == "string"
    assert [None if pd.isna(v) else v for v in got] == VALUES
    assert got.index.equals(series.index)


def test_codes_and_labels_and_sorted_codes_group_as_strings_do() -> None:
    """NA stays NA (pandas 3's astype(str) keeps it, and grouping drops it); unused categories are dropped."""
    s = pd.Series(VALUES, dtype=pd.CategoricalDtype(["ooni", "nan", "unused", "b", "a", "kzprobe"]))
    codes, labels = codes_and_labels(s)
    assert [labels[c] if c >= 0 else None for c in codes] == VALUES
    cat = sorted_codes(s)
    assert list(cat.categories) == sorted({v for v in VALUES if v is not None})
    by_text = pd.Series(1, index=range(len(VALUES))).groupby(s.astype(str).to_numpy()).sum()
    by_cat = pd.Series(1, index=range(len(VALUES))).groupby(cat, observed=True).sum()
    assert [str(k) for k in by_cat.index] == list(by_text.index) and list(by_cat) == list(by_text)


def test_frame_coverage_counts_as_strings_did_without_na_asns() -> None:
    from analysis.outages import frame_coverage

    t = pd.to_datetime(["2021-01-01 10:00", "2021-01-01 11:00", "2021-01-02 00:00", "2021-01-02 01:00",
                        "2021-01-02 02:00"], utc=True)
    f = pd.DataFrame({"source": pd.Categorical(["ooni", "ooni", "ooni", "kzprobe", "ooni"]),
                      "probe_cc": pd.Categorical(["KZ", "KZ", "KZ", "KZ", "KZ"]),
                      "probe_asn": pd.Categorical(["AS2", "AS1", None, "AS1", "AS1"], categories=["AS2", "AS1", "AS9"]),
                      "measurement_start_time": t})
    got = frame_coverage(f, "KZ")
    assert got.to_dict("records") == [{"day": "2021-01-01", "probe_asn": "AS1", "n": 1},
                                      {"day": "2021-01-01", "probe_asn": "AS2", "n": 1},
                                      {"day": "2021-01-02", "probe_asn": "AS1", "n": 1}]


def test_duplicate_mask_by_uid_first_copy_kept() -> None:
    """Rows all with an id are told apart by their id's first appearance (the factorized path)."""
    from analysis.load import duplicate_mask

    vals = ["a", "b", "a", "c", "b", "d", "a"]
    f = pd.DataFrame({"measurement_uid": pd.Series(vals, dtype="string[pyarrow]")})
    assert duplicate_mask(f).tolist() == [False, False, True, False, True, False, True]
