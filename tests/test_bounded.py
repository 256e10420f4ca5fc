"""The one bounded reader (probe/bounded.py) and its users under attack (issue 11, 2).

A hostile or mistyped helper (a gzip bomb, an endless reply, deep JSON) and a hostile
DoH server, all on loopback: every read stays within its caps, and the result is a
failure string, not an exception or a probe at 4 GB.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.bounded import Decoder, json_depth_exceeds, loads_json
from probe.control import HelperControl
from probe.measure.dns import DOH_MAX_BODY, query_doh
from probe.measure.tls import TrustStore
from probe.timing import Clock

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@functools.lru_cache(maxsize=4)
def gzip_of_zeros(n_mib: int) -> bytes:
    """A gzip member inflating to ``n_mib`` MiB of zeros (about 1/1000 of that on the wire)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join(z.compress(block) for _ in range(n_mib)) + z.flush()


@pytest.fixture
def serve(app_server):  # tests/fixtures/servers.py
    return app_server


def helper_client(base: str, **kw) -> tuple[HelperControl, Callable[[], Awaitable[None]]]:
    from probe.context import new_doh_session

    session = new_doh_session(TrustStore(include_mozilla=False))
    return HelperControl(base_url=base, token="t0k3n", session=session, retries=0, **kw), session.close


async def measured(coro: Awaitable) -> tuple[object, int]:
    """(result, peak traced memory in bytes) of awaiting ``coro``."""
    tracemalloc.start()
    try:
        result = await coro
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_gzip_bomb_from_the_helper_is_bounded(serve) -> None:
    """The helper answers a 256 MiB gzip bomb: the client reads at most its caps (4 MiB decoded)."""
    bomb = gzip_of_zeros(256)
    assert len(bomb) < 1 << 20

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    ctl, close = helper_client(await serve(handler))
    try:
        res, peak = await measured(ctl.measure("https://example.org/", "example.org", 443, []))
    finally:
        await close()
    assert res.failure is not None and res.failure.startswith("control_failure: helper reply larger than")
    assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MiB"


async def test_a_stacked_gzip_bomb_is_bounded_per_layer(serve) -> None:
    inner = gzip_of_zeros(256)
    outer = gzip.compress(inner, 9)  # 256 MiB behind two layers

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=outer, headers={"Content-Encoding": "gzip, gzip"})

    ctl, close = helper_client(await serve(handler), max_reply_bytes=1 << 20)
    try:
        res, peak = await measured(ctl.measure("https://example.org/", "example.org", 443, []))
    finally:
        await close()
    assert res.failure == "control_failure: helper reply larger than 1048576 bytes (helper.url wrong, or the helper " \
                          "compromised?)"
    assert peak < 20 << 20


async def test_an_endless_helper_reply_is_cut_at_the_cap(serve) -> None:
    """An endless chunked reply (7,940 MB in 30 s before): read up to the raw cap, then stop."""
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b"[" + b"0," * 32767
        try:
            while True:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            return resp

    ctl, close = helper_client(await serve(handler), max_reply_bytes=1 << 20, timeout_s=10.0)
    try:
        res, peak = await measured(ctl.measure("https://example.org/", "example.org", 443, []))
    finally:
        await close()
    assert res.failure is not None and "larger than 1048576 bytes" in res.failure
    assert peak < 20 << 20


async def test_a_hanging_helper_fails_within_its_own_timeout(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="{}")

    ctl, close = helper_client(await serve(handler), timeout_s=0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        ctl = HelperControl(base_url=ctl.base_url, token="t", session=ctl.session, timeout_s=0.5, retries=3)
        res = await ctl.measure("https://example.org/", "example.org", 443, [])
    finally:
        await close()
    assert res.failure == "control_failure: generic_timeout_error"
    assert loop.time() - t0 < 2.0, "retries stay within the one control deadline"


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
async def test_deep_json_from_the_helper_is_a_control_failure(serve, body: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    ctl, close = helper_client(await serve(handler))
    try:
        res = await ctl.measure("https://example.org/", "example.org", 443, [])
    finally:
        await close()
    assert res.failure is not None and "nested deeper than 32 levels" in res.failure


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"not json", b"\xff\xfe"])
async def test_a_reply_that_is_not_an_object_is_a_control_failure(serve, body: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body)

    ctl, close = helper_client(await serve(handler))
    try:
        res = await ctl.measure("https://example.org/", "example.org", 443, [])
    finally:
        await close()
    assert res.failure is not None and res.failure.startswith("control_failure: ")


async def test_a_gzip_bomb_from_a_doh_server_is_bounded(serve) -> None:
    from probe.addresses import Bogons
    from probe.context import new_doh_session

    bomb = gzip_of_zeros(256)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/dns-message"})

    base = await serve(handler)
    session = new_doh_session(TrustStore(include_mozilla=False))
    try:
        q, peak = await measured(query_doh("example.org", "A", url=base + "/dns-query", session=session,
                                           clock=Clock(), timeout_s=5.0, bogons=Bogons()))
    finally:
        await session.close()
    assert q.failure == "dns_server_misbehaving"
    assert q.replies[0].parse_error == f"body larger than {DOH_MAX_BODY} bytes"
    assert peak < 10 << 20


async def test_a_gzipped_doh_answer_is_decoded(serve) -> None:
    """The DoH session no longer decompresses by itself: the bounded reader does it."""
    import dns.message

    from probe.addresses import Bogons
    from probe.context import new_doh_session

    async def handler(request: web.Request) -> web.Response:
        q = dns.message.from_wire(await request.read())
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text("example.org.", 60, "IN", "A", "192.0.2.7"))
        return web.Response(body=gzip.compress(r.to_wire()),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/dns-message"})

    base = await serve(handler)
    session = new_doh_session(TrustStore(include_mozilla=False))
    try:
        q = await query_doh("example.org", "A", url=base + "/dns-query", session=session, clock=Clock(),
                            timeout_s=5.0, bogons=Bogons())
    finally:
        await session.close()
    assert q.failure is None and q.addresses() == ("192.0.2.7",)


# ------------------------------------------------------------------------ unit level


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert not json_depth_exceeds(b'{"a": "[[[[[[[[[[[[["}', 2)
    assert not json_depth_exceeds(b'{"a": "\\"[[[["}', 1)
    assert json_depth_exceeds(b'"[[[', 2) and not json_depth_exceeds(b'"[[["', 0)  # a quote left open opens no string
    assert not json_depth_exceeds(b'{"a": [[1]]}', 3)
    assert loads_json(b'{"a": [1, {"b": null}]}', max_depth=3) == {"a": [1, {"b": None}]}
    with pytest.raises(ValueError, match="nested deeper than 3 levels"):
        loads_json(b'{"a": [1, {"b": [2]}]}', max_depth=3)
    with pytest.raises(ValueError):
        loads_json(b"\xff")
    assert loads_json(json.dumps({"k": ["]" * 10]}).encode()) == {"k": ["]" * 10]}


_SHAPE_BYTES = st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b'\\"', b"\\\\"])
_REGEX_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _regex_reference(text: bytes, max_depth: int) -> bool:
    """The plain definition (the scan json_depth_exceeds was before it was made fast): every JSON string,
    a regex's leftmost match, blanked, then one step a bracket. Quadratic when a string does not close
    (the regex retries at each later quote, each try to the end): small texts only."""
    depth = 0
    for byte in _REGEX_STRING.sub(b'""', text):
        if byte in b"[{":
            depth += 1
            if depth > max_depth:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


@settings(max_examples=3000)
@given(text=st.lists(_SHAPE_BYTES, max_size=60).map(b"".join), max_depth=st.integers(0, 5))
def test_json_depth_is_the_reference_scans_on_any_text(text: bytes, max_depth: int) -> None:
    """json_depth_exceeds (byte operations: escapes blanked, the text split at its quotes) and its
    string-by-string scan (for a backslash outside every string) answer as the plain regex definition
    does, on any text: escaped quotes and backslashes, a quote left open, a backslash outside every
    string, brackets past an odd quote, unbalanced closers."""
    from probe.bounded import _depth_exceeds_by_scan

    expected = _regex_reference(text, max_depth)
    assert json_depth_exceeds(text, max_depth) == expected
    assert _depth_exceeds_by_scan(text, max_depth) == expected


def test_json_depth_on_records_and_hand_made_cases() -> None:
    from probe.bounded import _depth_exceeds_by_scan

    records = Path(__file__).resolve().parents[1] / "tests" / "data" / "records-0.1.0.jsonl"
    cases = [ln.encode() for ln in records.read_text().splitlines()]
    cases += [b'{"a": "\\\\"}]]', b'{"a": "x\\\\\\"[[["}', b'"[[[', b'"a" "[[[', b'\\"[[[ "', b"]]][[[", b"",
              b'{"body": "<a href=\\"/x\\">[</a>\\n", "k": [[[1]]]}', b'\\"[["a"', b'"\\"[[', b'}', b'\\ "[" [[']
    for text in cases:
        for max_depth in (0, 1, 2, 3, 5, 8, 32):
            expected = _regex_reference(text, max_depth)
            assert json_depth_exceeds(text, max_depth) == expected, (text, max_depth)
            assert _depth_exceeds_by_scan(text, max_depth) == expected, (text, max_depth)
            assert json_depth_exceeds(bytearray(text), max_depth) == expected
            assert json_depth_exceeds(memoryview(text), max_depth) == expected
    assert not json_depth_exceeds(b'"[[["', 0)
    assert json_depth_exceeds(b'"[[[', 2)  # a quote left open starts no string: the brackets after it count
    assert json_depth_exceeds(b'"a" "[[[', 2)


def test_json_depth_refuses_a_negative_limit() -> None:
    """A negative limit has no meaning (no caller passes one); refused rather than answered (with -2 the
    byte-operation count said b"}" exceeded it, the regex definition not)."""
    for max_depth in (-1, -2):
        with pytest.raises(ValueError, match="0 or more"):
            json_depth_exceeds(b"}", max_depth)
        with pytest.raises(ValueError, match="0 or more"):
            loads_json(b"[]", max_depth=max_depth)


#: 4 MiB texts (a helper reply's cap, probe.control.MAX_CONTROL_REPLY_BYTES, and about a run-file line's)
#: that are not JSON, each with a backslash outside every string, and what the depth check (limit 32)
#: answers: a string left open full of escaped quotes (the regex definition retried a string at each quote,
#: each try to the end: 7.6 CPU-s for 32 KiB, x4 a doubling), the same with brackets after it, a backslash
#: before a million strings, escaped backslashes in strings.
_ADVERSARIAL = {
    "open string of \\\"": (b'"' + b'\\"' * (2 << 20), False),
    "\\\"[ (one open string, brackets after)": (b'\\"[' * ((4 << 20) // 3), True),
    "\\\"[] (one open string, brackets after)": (b'\\"[]' * (1 << 20), False),
    "\\ then \"\"[]": (b"\\" + b'""[]' * (1 << 20), False),
    "\\ then \"\\\\\"[]": (b"\\" + b'"\\\\"[]' * ((4 << 20) // 6), False),
}


def test_json_depth_on_4_mib_of_hostile_text_hands_each_byte_on_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work proportional to the size: the string-by-string scan reads each stretch of the text once
    (anchored, possessive matches; the text after a string left open in blocks), so the bytes it hands on
    to be counted add up to at most the text's size, in a number of steps linear in it."""
    from probe import bounded

    handed: list[int] = []
    real = bounded._Depth.exceeds_after
    monkeypatch.setattr(bounded._Depth, "exceeds_after",
                        lambda self, text: handed.append(len(text)) or real(self, text))
    runs: list[int] = []
    closed_run = bounded._CLOSED_RUN

    class CountingRun:
        def match(self, data: bytes, pos: int) -> re.Match[bytes] | None:
            runs.append(pos)
            return closed_run.match(data, pos)

    monkeypatch.setattr(bounded, "_CLOSED_RUN", CountingRun())
    for name, (text, expected) in _ADVERSARIAL.items():
        handed.clear()
        runs.clear()
        assert bounded._depth_exceeds_by_scan(text, 32) == expected, name
        assert sum(handed) <= len(text), name
        assert len(runs) <= len(text) // 256 + 2 and runs == sorted(set(runs)), name  # forward only
        assert len(handed) <= len(text) // 256 + len(text) // bounded._BLOCK + 2, name


def test_json_depth_on_4_mib_of_hostile_text_answers(tmp_path: Path) -> None:
    """loads_json and the run-file reader on each 4 MiB hostile text give their answer (not JSON; the
    records around a hostile run-file line read), in a child process given 60 s as a safety net only:
    the regex definition would take CPU-hours on each."""
    script = tmp_path / "hostile.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from probe.bounded import json_depth_exceeds, loads_json
        from probe.runlines import LineStats, iter_records
        from tests.test_bounded import _ADVERSARIAL
        for name, (text, deep) in _ADVERSARIAL.items():
            assert json_depth_exceeds(text, 32) == deep, name
            try:
                loads_json(text)
            except ValueError as exc:
                assert ("nested deeper than 32 levels" in str(exc)) == deep, (name, str(exc))
            else:
                raise AssertionError(name)
            run = Path({str(tmp_path)!r}) / "run.jsonl"
            run.write_bytes(b'{{"input": "a"}}\\n' + text + b'\\n{{"input": "b"}}\\n')
            stats = LineStats()
            assert [r["input"] for _, r in iter_records(run, stats)] == ["a", "b"], name
            assert sum(stats.by_reason.values()) == 1, (name, stats.by_reason)
        print("ok")
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_json_depth_memory_stays_within_a_few_times_the_text() -> None:
    """Memory beside the text: at most 3 times its size on texts whose quote-split makes a piece every
    two bytes (26 times when the pieces were all kept and joined) or that take the string-by-string scan."""
    cases = [b'"]"[' * (1 << 18), b'"[]"[]' * (1 << 17), b"\\" + b'""[]' * (1 << 18), b'\\"[]' * (1 << 18)]
    for text in cases:
        tracemalloc.start()
        try:
            json_depth_exceeds(text, 1 << 20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= 3 * len(text), (text[:8], peak / len(text))


def test_decoder_caps_each_layer() -> None:
    d = Decoder(["gzip"])
    out, overflow = d.feed(gzip_of_zeros(8), 1000, 10_000)
    assert len(out) == 1000 and not overflow
    d2 = Decoder(["gzip", "gzip"])  # the outer layer inflates to 50 kB: past the 10 kB layer cap
    out, overflow = d2.feed(gzip.compress(gzip.compress(os.urandom(50_000))), 1 << 30, 10_000)
    assert overflow and len(out) <= 10_001


async def test_a_stalled_helper_attempt_is_retried_on_a_fresh_connection(serve) -> None:
    """issue 12: the first exchange stalls (a frozen connection); the retry runs within the control's
    deadline, on another connection, and its answer is used."""
    from probe.control import API_VERSION

    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if len(peers) == 1:
            await asyncio.sleep(30)  # frozen
        return web.json_response({"api_version": API_VERSION, "x_source": "helper", "failure": None,
                                  "dns": {"addrs": [], "failure": None},
                                  "tcp_connect": {}, "tls_handshake": {}})

    ctl, close = helper_client(await serve(handler), timeout_s=2.0)
    try:
        ctl = HelperControl(base_url=ctl.base_url, token="t", session=ctl.session, timeout_s=2.0, retries=1)
        res = await ctl.measure("https://example.org/", "example.org", 443, [])
    finally:
        await close()
    assert len(peers) == 2 and peers[0] != peers[1], peers
    assert not (res.failure or "").startswith("control_failure"), res.failure
