"""Bounded reading of what others send us: bytes before and after decompression, JSON depth.

One reader for every body the probe takes from the network: HTTP bodies of the web
test (:mod:`probe.measure.http`), DNS-over-HTTPS replies (:mod:`probe.measure.dns`)
and the helper's control replies (:class:`probe.control.HelperControl`). Each of them
reads through :func:`read_body` from a session that does **not** decompress
(``auto_decompress=False``): aiohttp's own decoder inflates whatever a chunk holds, so a
gzip bomb of a few kilobytes becomes gigabytes before any cap can apply (issue 11: a
hostile helper took the probe to 4,166 MB that way).

* **Encoded bytes** (what crossed the wire, after transfer decoding) are capped at
  ``raw_cap`` (default :func:`default_raw_cap`: twice the decoded cap plus 64 KiB, room
  for an incompressible body).
* **Decoded bytes** (after gzip/deflate, stacked codings undone last first, RFC 9110
  §8.4) are capped at ``cap``: at most ``cap + 1`` are ever produced, the extra byte
  telling a body of exactly the cap (complete) from a longer one (truncated,
  FIELD-CASES FC-15). Each intermediate layer of a stacked coding is capped the same
  way as the raw input.
* **JSON depth**: :func:`loads_json` refuses a document nested deeper than
  ``max_depth`` *before* parsing it (CPython's parser recurses: 100,000 ``[`` raise
  ``RecursionError``, not ``ValueError``).

Files given to us (target lists, the config) are read by :func:`read_regular_file`:
regular files only, size-capped (a FIFO or ``/dev/zero`` as a target list hung the
probe or grew it to 5 GB).

Codings we cannot decode (br, zstd, compress, unknown) leave the body as received,
still capped: :data:`ACCEPT_ENCODING` is what we offer.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import zlib
from collections.abc import Callable
from itertools import accumulate
from typing import Any, Final, Protocol

#: What we offer in ``Accept-Encoding``: the codings :func:`read_body` decodes.
ACCEPT_ENCODING: Final = "gzip, deflate"
#: Reads from the network are done in chunks of this size (bytes).
READ_CHUNK: Final = 65536
#: Default JSON nesting limit of :func:`loads_json` (the helper's replies nest 4 deep).
MAX_JSON_DEPTH: Final = 32

_SUPPORTED_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})


class _Content(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Response(Protocol):
    """What :func:`read_body` needs of an aiohttp ``ClientResponse``."""

    @property
    def headers(self) -> Any: ...

    @property
    def content(self) -> _Content: ...


def default_raw_cap(cap: int) -> int:
    """The encoded-byte cap that goes with a decoded cap: ``2 * cap + 64 KiB``."""
    return 2 * cap + READ_CHUNK


def content_codings(values: list[str]) -> list[str]:
    """The content codings of Content-Encoding header values, in the order applied.

    All header lines are combined (RFC 9110 §5.3), each a comma-separated list;
    names are lower-cased, "identity" and empty members dropped.
    """
    out: list[str] = []
    for value in values:
        for member in value.split(","):
            coding = member.strip().lower()
            if coding and coding != "identity":
                out.append(coding)
    return out


class _Layer:
    """Bounded decoding of one content coding (RFC 9110 §8.4.1): gzip, x-gzip or deflate."""

    def __init__(self, coding: str) -> None:
        self._z: Any = None
        if coding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending_deflate = coding == "deflate"
        self.produced = 0  # decoded bytes returned so far

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decode ``data``, returning at most ``limit`` bytes (the rest is dropped).

        Raises:
            zlib.error: the encoded data is corrupt.
        """
        if self._pending_deflate and data:
            # "deflate" is zlib-wrapped (RFC 1950), but some servers send raw RFC 1951.
            zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
            self._pending_deflate = False
        if self._z is None or limit <= 0:
            return b""
        out = bytearray()
        while len(out) < limit:
            out += self._z.decompress(data, limit - len(out))
            data = self._z.unconsumed_tail
            if not data or self._z.eof:
                break
        self.produced += len(out)
        return bytes(out)


class Decoder:
    """Bounded content decoding of a (possibly stacked) Content-Encoding.

    ``Content-Encoding: deflate, gzip`` means deflate was applied first, then gzip, so
    the layers are undone in reverse order (RFC 9110 §8.4). When any listed coding is
    one we do not decode (br, zstd, compress, unknown), the body is left as received.
    """

    def __init__(self, header_values: list[str]) -> None:
        self.codings = content_codings(header_values)
        supported = all(c in _SUPPORTED_CODINGS for c in self.codings)
        self._layers = [_Layer(c) for c in reversed(self.codings)] if supported else []

    @property
    def active(self) -> bool:
        """True when the body is being decoded (one or more gzip/deflate layers)."""
        return bool(self._layers)

    def feed(self, data: bytes, limit: int, layer_cap: int) -> tuple[bytes, bool]:
        """``(decoded, overflow)``: at most ``limit`` bytes of decoded output for ``data``.

        Each intermediate layer may produce at most ``layer_cap`` bytes in all; past
        that, ``overflow`` is True (the caller counts the body as truncated).

        Raises:
            zlib.error: the encoded data is corrupt.
        """
        if not self._layers:
            return data[:max(limit, 0)], False
        overflow = False
        for layer in self._layers[:-1]:
            data = layer.feed(data, layer_cap + 1 - layer.produced)
            overflow = overflow or layer.produced > layer_cap
        return self._layers[-1].feed(data, limit), overflow


async def read_body(resp: _Response, cap: int, *, raw_cap: int | None = None,
                    on_raw: Callable[[int], None] | None = None) -> tuple[bytes, bool]:
    """Read and decode a response body: ``(at most cap bytes, truncated)``.

    The response must come from a session with ``auto_decompress=False``; its
    ``Content-Encoding`` (gzip, x-gzip, deflate, stacked) is undone here, bounded.

    Args:
        resp: an aiohttp ``ClientResponse`` (anything with ``headers`` and ``content``).
        cap: decoded bytes kept; ``cap + 1`` produced at most.
        raw_cap: encoded bytes read at most (and output of each intermediate layer);
            None = :func:`default_raw_cap`.
        on_raw: called with the running count of encoded bytes after each chunk.

    Returns:
        ``truncated`` is True when the body did not end within the caps: more than
        ``cap`` decoded bytes, more than ``raw_cap`` encoded ones, or an intermediate
        layer past ``raw_cap``. A body of exactly ``cap`` bytes is complete.

    Raises:
        zlib.error: corrupt compressed data. Transport errors of ``resp.content.read``
        pass through (aiohttp.ClientError, OSError, TimeoutError).
    """
    raw_cap = default_raw_cap(cap) if raw_cap is None else raw_cap
    getall = getattr(resp.headers, "getall", None)
    if getall is not None:
        values = list(getall("Content-Encoding", []))
    else:
        values = [v for v in [resp.headers.get("Content-Encoding")] if v]
    decoder = Decoder(values)
    out = bytearray()
    raw_read = 0
    while True:
        chunk = await resp.content.read(min(READ_CHUNK, raw_cap + 1 - raw_read))
        if not chunk:
            return bytes(out), False
        raw_read += len(chunk)
        if on_raw is not None:
            on_raw(raw_read)
        piece, overflow = decoder.feed(chunk, cap + 1 - len(out), raw_cap)
        out += piece
        if len(out) > cap:
            return bytes(out[:cap]), True
        if overflow or raw_read > raw_cap:
            return bytes(out), True


# ------------------------------------------------------------------------------- JSON

#: A JSON string as the parser reads it: from a quote to the next quote not escaped by a backslash (the loop
#: unrolled and possessive: one attempt a string, no backtracking, no state kept per character).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
#: Up to 256 pieces that each end outside every string: a run of bytes other than the quote, or a string
#: that closes. It stops before a quote whose string does not close.
_CLOSED_RUN = re.compile(rb'(?:[^"]{1,65536}+|"[^"\\]*+(?:\\.[^"\\]*+)*+"){1,256}+', re.DOTALL)
#: ``bytes.translate`` arguments: the bytes that shape a JSON text's nesting (brackets, quotes, the
#: backslash) kept, every other deleted; the brackets alone; then brackets mapped to +1 (openers) and -1
#: (0xff as a signed byte: closers).
_NOT_SHAPE = bytes(b for b in range(256) if b not in b'[]{}"\\')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
#: Bytes handled at a time where a piece list or a copy would grow with the input (the quote-split pieces,
#: the text after a quote left open): memory beside the input stays within a few times this.
_BLOCK = 1 << 14


class _Depth:
    """The running depth of the brackets fed to it, a block at a time."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self._steps: memoryview | None = None  # the last block's steps, summed into depth when the next comes

    def exceeds_after(self, text: bytes | bytearray) -> bool:
        """Count the brackets of ``text`` (every other byte ignored): True once the depth passed the limit."""
        steps = text.translate(None, _NOT_BRACKET).translate(_BRACKET_STEP)
        if not steps:
            return False
        if self._steps is not None:
            self.depth += sum(self._steps)
        self._steps = memoryview(steps).cast("b")
        return (self.depth + len(steps) > self.max_depth
                and self.depth + max(accumulate(self._steps)) > self.max_depth)


def _depth_exceeds_by_scan(data: bytes | bytearray, max_depth: int) -> bool:
    """:func:`json_depth_exceeds` string by string, for a text with a backslash outside every string.

    Linear: the strings are read from the start, each once; at the first quote whose string does not
    close the scan stops, and every bracket after that quote counts: no later quote can start a string
    that closes (each later quote was read as escaped by that string's scan, so a string from it runs in
    step with that one, to the end). ~1.6 ms for a 78 KB record (C-speed regex, a Python step per 256
    strings); memory beside ``data`` at most one run of it (:data:`_CLOSED_RUN`) and its copy.
    """
    depth = _Depth(max_depth)
    pos, end = 0, len(data)
    while pos < end:
        run = _CLOSED_RUN.match(data, pos)
        if run is None:  # data[pos] is a quote whose string does not close: all that follows is outside
            return any(depth.exceeds_after(data[b:b + _BLOCK]) for b in range(pos + 1, end, _BLOCK))
        if depth.exceeds_after(_JSON_STRING.sub(b"", data[pos:run.end()])):
            return True
        pos = run.end()
    return False


def json_depth_exceeds(data: bytes | bytearray | memoryview, max_depth: int) -> bool:
    """True when ``data`` (JSON text) nests arrays/objects deeper than ``max_depth`` (0 or more).

    Strings are skipped (a ``[`` inside one does not count); does not validate the document (the
    parser does that afterwards). A string runs from a quote to the next quote not escaped by a
    backslash (a quote left without its closing one starts no string: every bracket after it counts).

    Linear in ``len(data)`` on any input, memory beside ``data`` at most ~3 times its size (the
    escape-blanked copies; the quote-split pieces are taken :data:`_BLOCK` bytes at a time): 12 MiB
    for the largest input, a 4 MiB helper reply (:data:`probe.control.MAX_CONTROL_REPLY_BYTES`) or
    run-file line (:data:`probe.runlines.MAX_LINE_BYTES`). Done with C-speed byte operations: ~30 µs
    for a 5 KB record, ~130 µs for a 78 KB one (the string-by-string scan: ~190 µs and ~1.6 ms; load
    2.5; a regex scan of every record was 90 % of ``kzprobe list RUN``'s time): escaped backslashes
    and quotes are blanked, all but brackets, quotes and backslashes deleted, the rest split at the
    quotes (every other piece is outside the strings), the brackets outside mapped to +1/-1 and their
    running sum's maximum taken. A backslash outside
    every string (not JSON) is left to :func:`_depth_exceeds_by_scan`, whose answer this is in every
    case (tests/test_bounded.py compares the two, and both with a plain regex reference, on random text).

    Raises:
        ValueError: ``max_depth`` is negative.
    """
    if max_depth < 0:
        raise ValueError(f"max_depth must be 0 or more, not {max_depth}")
    if isinstance(data, memoryview):
        data = data.tobytes()
    escaped = b"\\" in data
    text = data.replace(b"\\\\", b"\\\x01").replace(b'\\"', b"\\\x01") if escaped else data
    shape = text.translate(None, _NOT_SHAPE)
    del text
    tail: bytes | bytearray = b""
    if shape.count(b'"') % 2:  # an odd quote count: the last quote opens no string, what follows is outside
        last = shape.rindex(b'"')
        shape, tail = shape[:last], shape[last + 1:]
    depth = _Depth(max_depth)
    in_string = 0
    for start in range(0, len(shape), _BLOCK):
        # a byte is in a string when an odd number of quotes stands before it; two quotes side by side (an
        # empty string, or a string's end and the next one's start: most of a record's) change no byte's
        # parity and are dropped before the split
        pieces = shape[start:start + _BLOCK].replace(b'""', b"").split(b'"')
        outside = b"".join(pieces[in_string::2])
        in_string ^= (len(pieces) - 1) % 2
        if escaped and b"\\" in outside:
            return _depth_exceeds_by_scan(data, max_depth)
        if depth.exceeds_after(outside):
            return True
    if escaped and b"\\" in tail:
        return _depth_exceeds_by_scan(data, max_depth)
    return depth.exceeds_after(tail)


def loads_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses deep nesting first.

    Raises:
        ValueError: not JSON (``json.JSONDecodeError``, a ``ValueError``), not UTF-8, or
            nested deeper than ``max_depth`` (the message says so, with the limit).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if json_depth_exceeds(raw, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except RecursionError:  # unreachable after the check above; kept as a last guard
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None




# ------------------------------------------------------------------------------ files


def file_kind(mode: int) -> str:
    """What a non-regular file is ("a FIFO (named pipe)", "a character device" ...), from ``st_mode``."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``.

    The file is opened without blocking (a FIFO with no writer would hang ``open``)
    and checked with ``fstat`` on the open descriptor (no race with a swap); then at
    most ``max_bytes + 1`` bytes are read, so ``/dev/zero`` or a growing file cannot
    take the memory.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError: as ``open`` does.
        OSError: ``errno.EINVAL`` "not a regular file (a FIFO (named pipe))",
            ``errno.EFBIG`` "larger than N bytes"; ``filename`` is ``path``.
    """
    name = os.fspath(path)
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", name)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({file_kind(st.st_mode)})", name)
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes ({st.st_size} bytes)", name)
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes (it grew while read)", name)
        return b"".join(chunks)
    finally:
        os.close(fd)


__all__ = ["ACCEPT_ENCODING", "MAX_JSON_DEPTH", "READ_CHUNK", "Decoder", "content_codings", "default_raw_cap",
           "file_kind", "json_depth_exceeds", "loads_json", "read_body", "read_regular_file"]
