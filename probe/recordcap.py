"""A total size cap on one measurement record, with the truncation marked (issue 11, 6).

Each piece of a record is bounded where it is measured (bodies, headers, titles, DNS
replies per query, chains), but together they could still reach 8-18 MB for one input
(many endpoints × full chains × retries, a flood of DNS replies, many redirect hops with
bodies). :func:`cap_record` keeps a record under :data:`MAX_RECORD_BYTES` (its compact
JSON encoding, as :class:`probe.store.JSONLWriter` writes it) by dropping the bulkiest
*evidence* first, in this order, until it fits:

1. stored HTTP bodies (``requests[].response.body``; the length and SHA-256 stay),
2. raw DNS replies (``x_replies[].raw`` of ``queries`` and ``x_doh_queries``),
3. certificate chains beyond the leaf (``tls_handshakes[].peer_certificates``),
4. response headers beyond the first 16 of each hop,
5. any remaining string longer than 1,024 characters, cut there.

The verdict, the failures, the addresses and every timing stay. What was dropped is
listed in ``test_keys.x_record_truncated``: ``{"bytes_before": N, "dropped": [...]}``
(absent when nothing was). A record already under the cap is returned unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Final

from probe.store import encode_line

#: Largest record written (bytes of its JSON line). The analysis reads lines up to 64 MiB.
MAX_RECORD_BYTES: Final = 4 << 20
#: Response headers kept per hop at step 4.
_KEPT_HEADERS = 16
#: Longest string kept at step 5 (characters).
_LONG_STRING = 1024


def record_size(rec: dict[str, Any]) -> int:
    """Bytes of ``rec`` as one compact JSON line (the writer's encoding, newline included)."""
    return len(encode_line(rec))


def _dicts(obj: Any, key: str) -> Iterator[dict[str, Any]]:
    """Every list entry under ``obj[key]`` that is a dict."""
    v = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(v, list):
        yield from (e for e in v if isinstance(e, dict))


def _drop_bodies(tk: dict[str, Any]) -> int:
    n = 0
    for r in _dicts(tk, "requests"):
        resp = r.get("response")
        if isinstance(resp, dict) and resp.get("body") is not None:
            resp["body"] = None
            resp["x_body_dropped"] = True
            n += 1
    return n


def _drop_replies(tk: dict[str, Any]) -> int:
    n = 0
    for key in ("queries", "x_doh_queries"):
        for q in _dicts(tk, key):
            for reply in _dicts(q, "x_replies"):
                if reply.get("raw"):
                    reply["raw"] = ""
                    reply["x_raw_dropped"] = True
                    n += 1
    return n


def _drop_chains(tk: dict[str, Any]) -> int:
    n = 0
    for h in _dicts(tk, "tls_handshakes"):
        certs = h.get("peer_certificates")
        if isinstance(certs, list) and len(certs) > 1:
            h["peer_certificates"] = certs[:1]
            h["x_chain_dropped"] = len(certs) - 1
            n += 1
    return n


def _drop_headers(tk: dict[str, Any]) -> int:
    n = 0
    for r in _dicts(tk, "requests"):
        resp = r.get("response")
        if not isinstance(resp, dict):
            continue
        hl = resp.get("headers_list")
        if isinstance(hl, list) and len(hl) > _KEPT_HEADERS:
            resp["headers_list"] = hl[:_KEPT_HEADERS]
            resp["headers"] = {str(h[0]): h[1] for h in hl[:_KEPT_HEADERS] if isinstance(h, list) and len(h) == 2}
            resp["x_headers_dropped"] = len(hl) - _KEPT_HEADERS
            n += 1
    return n


def _cut_long_strings(obj: Any) -> int:
    n = 0
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and len(v) > _LONG_STRING:
                obj[k] = v[:_LONG_STRING] + "\u2026"
                n += 1
            else:
                n += _cut_long_strings(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, str) and len(v) > _LONG_STRING:
                obj[i] = v[:_LONG_STRING] + "\u2026"
                n += 1
            else:
                n += _cut_long_strings(v)
    return n


_STEPS: Final[tuple[tuple[str, Callable[[dict[str, Any]], int]], ...]] = (
    ("http_bodies", _drop_bodies),
    ("dns_raw_replies", _drop_replies),
    ("tls_chains_beyond_leaf", _drop_chains),
    ("http_headers_beyond_16", _drop_headers),
    ("long_strings", _cut_long_strings),
)


def cap_record(rec: dict[str, Any], max_bytes: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """``rec`` itself when it fits ``max_bytes``, else a shrunk copy marked as truncated.

    Never raises for a record's shape (missing or odd keys are skipped). When even the
    last step does not make it fit, the record is written as small as it got (still marked).
    """
    return capped_line(rec, max_bytes)[0]


def capped_line(rec: dict[str, Any], max_bytes: int = MAX_RECORD_BYTES) -> tuple[dict[str, Any], bytes]:
    """:func:`cap_record` and the record's JSON line (:func:`probe.store.encode_line`), encoded
    once: the writer takes the line as it is (issue 13: a record was encoded twice, to measure
    its size and to write it)."""
    line = encode_line(rec)
    before = len(line)
    if before <= max_bytes:
        return rec, line
    out = _shrunk(line, before, max_bytes)
    return out, encode_line(out)


def _shrunk(line: bytes, before: int, max_bytes: int) -> dict[str, Any]:
    out = json.loads(line)  # a deep copy, as plain JSON types
    tk = out.setdefault("test_keys", {})
    if not isinstance(tk, dict):
        return out
    dropped: list[str] = []
    mark = {"bytes_before": before, "max_bytes": max_bytes, "dropped": dropped}
    tk["x_record_truncated"] = mark
    for name, step in _STEPS:
        if step(tk if step is not _cut_long_strings else out):
            dropped.append(name)
            if record_size(out) <= max_bytes:
                break
    return out


__all__ = ["MAX_RECORD_BYTES", "cap_record", "capped_line", "record_size"]
