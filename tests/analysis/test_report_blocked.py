"""analysis.report's blocked-targets table takes only the rows of a (target, network) with a blocked
measurement, by integer keys: the network's label stays the whole frame's (the name most often seen
with its ASN), and the table is the one the text merge gave."""

from __future__ import annotations

import pandas as pd

from analysis import report
from tests.analysis.test_report import T0, frame_of, measurement


def test_the_network_label_is_the_whole_frames() -> None:
    x, y = ("pi", "AS1", "Name X"), ("pi", "AS1", "Name Y")
    rows = [measurement(i, "a.example", t=T0 + pd.Timedelta(hours=i), vantage=x, blocking="dns", accessible=False)
            for i in range(2)]
    rows += [measurement(10 + i, "b.example", t=T0 + pd.Timedelta(hours=i), vantage=y) for i in range(5)]
    rows += [measurement(20, "a.example", t=T0 + pd.Timedelta(hours=9), vantage=y)]  # judged, accessible
    table, n = report._blocked_targets(frame_of(rows))
    assert n == 1
    (row,) = table
    # AS1 is named "Name Y" 6 times and "Name X" twice in the frame; among a.example's rows, "Name X" leads
    assert (row["domain"], row["network"]) == ("a.example", "AS1 (Name Y)")
    assert (row["n_blocked"], row["n_judged"], row["share"]) == (2, 3, "0.67")
    assert [t["name"] for t in row["types"]] == ["dns"]


def test_no_blocked_measurement_no_rows() -> None:
    rows = [measurement(i, "b.example", t=T0 + pd.Timedelta(hours=i)) for i in range(3)]
    assert report._blocked_targets(frame_of(rows)) == ([], 0)
