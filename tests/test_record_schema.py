"""probe.schema: the one schema of records and run summaries, tied to its writers and readers."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import msgspec

from analysis import load as L
from probe import schema, verdict, vocab
from probe.config import Settings
from probe.runner import RunSummary, summary_record


def test_frame_rows_are_built_by_column_name() -> None:
    """Both row builders name every column of the frame's contract, and nothing else."""
    from tests import record_cases

    rec = record_cases.record(*record_cases.cases()[0][1:])
    fast = L._FAST_DECODER.decode(json.dumps(rec).encode())
    for r in (L.row(rec, "f", 1), L._fast_row(fast, "f", 1)):
        assert tuple(r) == L.COLUMNS == tuple(L.DTYPES)
    assert L.row(rec, "f", 1) == L._fast_row(fast, "f", 1)


def test_dns_consistency_vocabulary_is_the_verdicts() -> None:
    assert typing.get_args(vocab.DNSConsistency) == typing.get_args(verdict.DNSConsistency)
    assert set(vocab.OONI_DNS_CONSISTENCY) == set(typing.get_args(vocab.DNSConsistency))
    assert set(vocab.OONI_DNS_CONSISTENCY.values()) <= {None, *typing.get_args(vocab.OONIDNSConsistency)}


def test_run_summary_written_is_the_schema_the_readers_decode(tmp_path: Path) -> None:
    s = RunSummary(report_id="20210301T060000Z_webconnectivity_KZ_9198_0123456789abcdef",
                   path=tmp_path / "r.jsonl", summary_path=tmp_path / "r.summary.json", inputs=3, measured=2,
                   not_measured=1, deadline_hit=True, runtime_s=1.5, test_start_time="2021-03-01 06:00:00")
    data = schema.to_json(summary_record(s, Settings()))
    text = json.dumps(data)
    back = schema.SUMMARY_DECODER.decode(text.encode())
    assert schema.to_json(back) == data
    assert set(data) == set(schema.RunSummaryRecord.__struct_fields__)
    assert (back.inputs, back.measured, back.deadline_hit, back.measurements_file) == (3, 2, True, "r.jsonl")


def test_summary_of_the_wrong_shape_is_a_decode_error() -> None:
    for bad in (b'{"counts": {"dns": "many"}}', b'{"inputs": true}', b'[1]', b'{"vantage_offline": "yes"}'):
        try:
            schema.SUMMARY_DECODER.decode(bad)
        except msgspec.ValidationError:
            continue
        raise AssertionError(bad)


def test_our_verdict_reads_both_versions() -> None:
    assert schema.our_verdict({"blocking": "tls", "accessible": False}) == ("tls", False)
    assert schema.our_verdict({"blocking": "http-failure", "accessible": False, "x_blocking": "tls",
                               "x_accessible": False}) == ("tls", False)
    assert schema.our_verdict({"blocking": None, "x_blocking": None, "x_accessible": None}) == (None, None)
