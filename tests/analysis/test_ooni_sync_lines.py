"""The sync's line splitter over the inflater's chunks (:func:`analysis.ooni_sync._lines`) against the
reader it replaced (``io.BufferedReader.readline`` over the inflater, blank runs skipped by ``peek``):
the same (line number, line) pairs and the same error after them, on streams cut anywhere, with blank
and whitespace lines, CRLF, no final newline, lines at and over the cap, and damaged or truncated
gzip."""

from __future__ import annotations

import gzip
import io
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import analysis.ooni_sync as osync

_BLANKS = re.compile(rb"[ \t\r\n]*\n")


def old_lines(fh: Any) -> Iterator[tuple[int, bytes | None]]:
    """The splitter before the chunked one (the reference of this differential test), a line over the
    cap given as None and read past up to its newline in pieces of the cap."""
    n = 0
    while True:
        line = fh.readline(osync.MAX_LINE_BYTES + 1)
        if not line:
            return
        n += 1
        if len(line) > osync.MAX_LINE_BYTES and not line.endswith(b"\n"):
            yield n, None
            while line and not line.endswith(b"\n"):
                line = fh.readline(osync.MAX_LINE_BYTES + 1)
            continue
        if line.isspace():
            while True:
                buf = fh.peek(osync.READ_BUFFER)
                m = _BLANKS.match(buf)
                if m is None:
                    break
                cut = m.end()
                n += buf.count(b"\n", 0, cut)
                fh.read(cut)
                if cut < len(buf):
                    break
            continue
        yield n, line


class _Chunks(io.RawIOBase):
    """A raw stream serving ``chunks`` one read at a time, then raising ``error`` (if any)."""

    def __init__(self, chunks: list[bytes], error: BaseException | None) -> None:
        self.chunks, self.error = list(chunks), error

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self.chunks and not self.chunks[0]:
            self.chunks.pop(0)
        if not self.chunks:
            if self.error is not None:
                raise self.error
            return 0
        c = self.chunks[0]
        n = min(len(b), len(c))
        b[:n] = c[:n]
        self.chunks[0] = c[n:]
        return n


def _gen(chunks: list[bytes], error: BaseException | None) -> Iterator[bytes]:
    yield from chunks
    if error is not None:
        raise error


def _run(it: Iterator[tuple[int, Any]]) -> tuple[list[tuple[int, bytes | None]], str | None]:
    got: list[tuple[int, bytes | None]] = []
    try:
        for n, line in it:
            got.append((n, None if line is None else bytes(line)))
    except Exception as exc:  # noqa: BLE001 - compared by type and message
        return got, f"{type(exc).__name__}: {exc}"
    return got, None


def _stream(rng: random.Random, cap: int) -> bytes:
    pieces = [b"\n", b"\n\n\n", b" \t\r\n", b"\r\n", b"\x0b\n", b" \x0c \n", b"  {\"a\": 1}\n", b"{\"b\": 2}\r\n",
              b"\t\n  x\n", b"{}", b" "]
    out = []
    for _ in range(rng.randrange(1, 40)):
        r = rng.random()
        if r < 0.4:
            out.append(rng.choice(pieces))
        elif r < 0.5:  # at the cap, one over it, or far over it (with or without its newline)
            size = rng.choice([cap - 1, cap, cap + 1, 3 * cap])
            out.append(b"y" * size + (b"\n" if rng.random() < 0.8 else b""))
        else:
            out.append(b"{\"m\": %d, \"s\": \"%s\"}\n" % (rng.randrange(1000), b"z" * rng.randrange(cap // 2)))
    return b"".join(out)


def _cut(rng: random.Random, data: bytes) -> list[bytes]:
    chunks, i = [], 0
    while i < len(data):
        k = rng.choice([1, 2, 7, 31, 64, 200, 1000])
        chunks.append(data[i:i + k])
        i += k
    return chunks


def test_chunked_splitter_gives_what_the_buffered_reader_gave(monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 random streams, each cut at random places and ended cleanly or by an error: the same
    (number, line) pairs (a line over the cap: (number, None), the lines after it given), then the same
    error (the source's own), as the old reader over the same bytes with any buffer size."""
    cap = 64
    monkeypatch.setattr(osync, "MAX_LINE_BYTES", cap)
    rng = random.Random(14)
    seen_errors: set[str] = set()
    too_long = 0
    for i in range(3000):
        data = _stream(rng, cap)
        chunks = _cut(rng, data)
        error = rng.choice([None, None, EOFError("Compressed file ended"), osync._TooMuch("cap")])
        new = _run(osync._lines(_gen(chunks, error)))
        old = _run(old_lines(io.BufferedReader(_Chunks(chunks, error), buffer_size=rng.choice([8, 100, 4096]))))
        assert new == old, (i, data, [len(c) for c in chunks], error)
        if new[1]:
            seen_errors.add(new[1].split(":")[0])
        too_long += sum(line is None for _, line in new[0])
    assert seen_errors == {"_TooMuch", "EOFError"}  # the cases ran: the source's errors
    assert too_long > 100  # and lines over the cap


@pytest.mark.parametrize("data, want", [
    (b"a\r\nb", [(1, b"a\r\n"), (2, b"b")]),  # CRLF kept (the line hash strips it), no final newline
    (b"\n\n \t\n{x}\n\x0b\n\n{y}", [(4, b"{x}\n"), (7, b"{y}")]),  # blank lines counted, not given
    (b"  {x}\n   ", [(1, b"  {x}\n")]),  # a line starting with whitespace is a line; a last blank one is not
])
def test_chunked_splitter_cases(data: bytes, want: list[tuple[int, bytes]]) -> None:
    for size in (1, 2, 3, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert _run(osync._lines(iter(chunks))) == (want, None), size


def test_line_over_the_cap_is_skipped_without_holding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line past the cap is given as (its number, None) as soon as the cap is passed, before the
    source gives its end, and its bytes are not held (a 16 MiB cap, not the line's size, bounds the
    memory); the lines after its newline come out with their numbers (break test: the rest of the object
    was lost)."""
    monkeypatch.setattr(osync, "MAX_LINE_BYTES", 10)
    pulled = []
    held = []  # the splitter's held bytes each time it asks for a chunk

    def source() -> Iterator[bytes]:
        yield b"ok\n" + b"y" * 6
        for _ in range(1000):
            pulled.append(1)
            yield b"y" * 6
            held.append(sum(map(len, it.gi_frame.f_locals["head"])))
        yield b"y\nnext\n\n" + b"z" * 11 + b"\nlast"

    it = osync._lines(source())
    assert next(it) == (1, b"ok\n")
    assert next(it) == (2, None) and len(pulled) == 1
    got, err = _run(it)
    assert got == [(3, b"next\n"), (5, None), (6, b"last")] and err is None
    assert len(pulled) == 1000 and len(held) == 1000 and max(held) == 0


def test_capped_chunks_give_every_byte_up_to_the_cap() -> None:
    """The decompression bomb guard over chunks: the bytes up to the cap come out, then the error;
    a stream of exactly the cap is whole."""
    assert b"".join(osync._capped(iter([b"ab", b"cd"]), 4, "why")) == b"abcd"
    got = []
    with pytest.raises(osync._TooMuch, match="why"):
        for c in osync._capped(iter([b"ab", b"cdef", b"g"]), 3, "why"):
            got.append(c)
    assert b"".join(got) == b"abc"


@pytest.mark.parametrize("damage", ["none", "truncated", "garbage", "over the cap"])
def test_chunked_splitter_over_gzip_as_the_old_reader(tmp_path: Path, damage: str) -> None:
    """Through the real inflater, on a gzip file whole, cut short, damaged in its middle, or expanding past
    its cap: the same lines and error as the old reader over the same inflater (lines of ~1 KiB, several
    inflater steps)."""
    rng = random.Random(3)
    def pad() -> bytes:
        return bytes(rng.choice(b"abcdef") for _ in range(rng.randrange(2000)))

    text = b"".join(b"{\"i\": %d, \"p\": \"%s\"}\n" % (i, pad()) + (b"\n" if i % 17 == 0 else b"") for i in range(3000))
    blob = gzip.compress(text, compresslevel=1, mtime=0)
    if damage == "truncated":
        blob = blob[: len(blob) * 2 // 3]
    elif damage == "garbage":
        blob = blob[: len(blob) // 2] + b"\xff" * 64 + blob[len(blob) // 2 + 64:]
    p = tmp_path / "o.jsonl.gz"
    p.write_bytes(blob)
    cap = len(text) // 2 if damage == "over the cap" else len(text) * 2
    with osync._Inflate(p) as gz:
        new = _run(osync._lines(osync._capped(gz.chunks(), cap, "past the cap")))
    with osync._Inflate(p) as gz:
        old = _run(old_lines(io.BufferedReader(osync._Capped(gz, cap, "past the cap"), buffer_size=256 << 10)))
    assert new == old
    assert (new[1] is None) == (damage == "none") and len(new[0]) > 100
