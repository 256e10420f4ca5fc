"""Bounds on what one record holds (issue 11, 6): a total size cap with the truncation
marked, and DNS replies kept per query with a count cap."""

from __future__ import annotations

import base64
import copy
import json

from probe.addresses import Bogons
from probe.measure.dns import MAX_REPLIES_PER_QUERY, query_udp
from probe.recordcap import MAX_RECORD_BYTES, cap_record, capped_line, record_size
from probe.records import query_json
from probe.timing import Clock
from tests.fixtures.dns_server import Reply


def big_record(body_kib: int = 2048, replies: int = 40, certs: int = 6, headers: int = 200) -> dict:
    """A record shaped like the writer's, made huge the ways issue 11 measured (8-18 MB)."""
    body = base64.b64encode(b"x" * 1024 * body_kib).decode()
    hop = {"failure": None, "request": {"url": "http://example.org/"},
           "response": {"code": 200, "body": {"data": body, "format": "base64"}, "x_body_length": 1024 * body_kib,
                        "headers_list": [[f"X-H{i}", "v" * 4000] for i in range(headers)],
                        "headers": {f"X-H{i}": "v" * 4000 for i in range(headers)}}}
    reply = {"t": 0.1, "raw": base64.b64encode(b"r" * 60000).decode(), "source": "1.2.3.4:53"}
    cert = {"data": base64.b64encode(b"c" * 4000).decode(), "format": "base64"}
    return {"input": "http://example.org/", "report_id": "r", "test_keys": {
        "blocking": "http-diff", "accessible": False, "x_rule": "http.blockpage", "x_reason": "why",
        "requests": [copy.deepcopy(hop) for _ in range(4)],
        "queries": [{"hostname": "example.org", "failure": None, "answers": [{"ipv4": "192.0.2.1"}],
                     "x_replies": [dict(reply) for _ in range(replies)]}],
        "tls_handshakes": [{"address": "192.0.2.1:443", "failure": None,
                            "peer_certificates": [dict(cert) for _ in range(certs)]} for _ in range(8)],
    }}


def test_a_record_under_the_cap_is_unchanged() -> None:
    rec = {"input": "x", "test_keys": {"blocking": False, "requests": []}}
    assert cap_record(rec) is rec and "x_record_truncated" not in rec["test_keys"]


def test_an_18_mb_record_is_cut_under_the_cap_and_marked() -> None:
    rec = big_record()
    before = record_size(rec)
    assert before > 8 << 20
    out = cap_record(rec)
    assert record_size(out) <= MAX_RECORD_BYTES
    mark = out["test_keys"]["x_record_truncated"]
    assert mark["bytes_before"] == before and mark["max_bytes"] == MAX_RECORD_BYTES
    assert mark["dropped"][0] == "http_bodies"
    tk = out["test_keys"]
    # the verdict, failures and addresses stay; the bodies' length stays
    assert (tk["blocking"], tk["x_rule"]) == ("http-diff", "http.blockpage")
    assert tk["requests"][0]["response"]["x_body_length"] == 2 << 20
    assert tk["requests"][0]["response"]["body"] is None and tk["requests"][0]["response"]["x_body_dropped"]
    assert tk["queries"][0]["answers"] == [{"ipv4": "192.0.2.1"}]
    assert "x_record_truncated" not in rec["test_keys"], "the original is not modified"


def test_steps_stop_as_soon_as_the_record_fits() -> None:
    rec = big_record(body_kib=3000, replies=1, certs=1, headers=1)
    out = cap_record(rec)
    assert out["test_keys"]["x_record_truncated"]["dropped"] == ["http_bodies"]
    assert out["test_keys"]["queries"][0]["x_replies"][0]["raw"], "raw replies kept: not needed"


def test_every_step_when_needed_and_still_valid_json() -> None:
    out = cap_record(big_record(body_kib=64, replies=40, certs=6, headers=200), max_bytes=200_000)
    dropped = out["test_keys"]["x_record_truncated"]["dropped"]
    assert dropped[:4] == ["http_bodies", "dns_raw_replies", "tls_chains_beyond_leaf", "http_headers_beyond_16"]
    assert record_size(out) <= 200_000
    json.loads(json.dumps(out))


def test_odd_shapes_do_not_raise() -> None:
    for rec in ({"test_keys": None, "x": "y" * 5000}, {"test_keys": {"requests": "nope", "queries": [1, None]},
                                                      "blob": "z" * 5000}):
        cap_record(rec, max_bytes=100)


async def test_a_flood_of_dns_replies_keeps_a_count_cap(dns_server_factory) -> None:
    """300 replies to one query: the first MAX_REPLIES_PER_QUERY kept, the rest counted."""
    flood = [Reply(ips=[f"198.51.100.{i % 250 + 1}"]) for i in range(300)]
    server = dns_server_factory({("flood.example.org", "A"): flood})
    q = await query_udp("flood.example.org", "A", server=server.address, clock=Clock(), timeout_s=3.0,
                        listen_s=1.0, bogons=Bogons())
    assert len(q.replies) == MAX_REPLIES_PER_QUERY
    assert q.replies_dropped >= 200  # loopback UDP: nearly all arrive
    assert q.failure is None and q.addresses() == ("198.51.100.1",)  # the first reply decides
    j = query_json(q)
    assert len(j["x_replies"]) == MAX_REPLIES_PER_QUERY and j["x_replies_dropped"] == q.replies_dropped


def test_capped_line_is_the_writers_line_of_the_record_it_returns() -> None:
    """Issue 13: a record is encoded once; the line handed to the writer is exactly the
    record's line, whether it fitted or was shrunk."""
    from probe.store import encode_line

    small = {"input": "x", "test_keys": {"blocking": False, "t": 1.2e-05, "title": "Қазақстан"}}
    rec, line = capped_line(small)
    assert rec is small and line == encode_line(small) and line.endswith(b"\n") and line.count(b"\n") == 1
    big = big_record(body_kib=512, replies=2, certs=2, headers=2)
    out, line = capped_line(big, max_bytes=100_000)
    assert out is not big and out["test_keys"]["x_record_truncated"]["dropped"]
    assert line == encode_line(out) and len(line) <= 100_000 and json.loads(line) == out
