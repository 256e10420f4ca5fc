"""The bound on a compressed input's decompressed size: the one figure of ``kzprobe report``'s loader
(a ``.gz`` file, :func:`analysis.load._open`) and of ``kzprobe ooni sync`` (an object,
:func:`analysis.ooni_sync._object_cap`), so a file the sync stores whole is read whole by the
report too, and a bomb stops at the same point in both.

:func:`decompressed_cap`: at most :data:`MAX_RATIO` × the compressed size, at least
:data:`FLOOR_BYTES`. Past it the rest of the input is skipped and named (the lines before are
kept). Lines are streamed by both readers (one line held, bounded on its own), so this bounds CPU,
not memory.

Why 200× and 256 MiB: measurement JSONL compresses 5–15× (OONI's samples 6×, our records ~14×), but
an input of many near-identical small measurements goes further: 100,000 of them were 0.8 MB of
gzip, ≈90× (break test; a 50× bound, at least 64 MiB, lost 6,404 of them). 200× keeps twice that;
deflate cannot pass ~1,032×, which a bomb comes near, so a bomb stops at a fifth of its size or at
the floor: a 1 GiB one-line bomb (1 MB gzip) and a 2 GiB newline bomb (2 MB) stop at 256 MiB and
417 MB. The floor lets a small input of ordinary lines through whatever its ratio, at a bounded
cost (2026-12-04, load ≈4.5, the sync's ``process_object``: the 1 GiB bomb 0.8 CPU-s, the 2 GiB one
2.2, the worst case, 256 MiB of lines of another test, each decoded, 6.6 CPU-s).
"""

from __future__ import annotations

#: Decompressed bytes read at most, per compressed byte (see the module's docstring).
MAX_RATIO = 200
#: Decompressed bytes always allowed, whatever the ratio (see the module's docstring).
FLOOR_BYTES = 256 << 20


def decompressed_cap(compressed: int) -> int:
    """Decompressed bytes read at most from an input of ``compressed`` bytes:
    :data:`MAX_RATIO` × it, at least :data:`FLOOR_BYTES`."""
    return max(FLOOR_BYTES, compressed * MAX_RATIO)


def past_cap(compressed: int) -> str:
    """Why an input of ``compressed`` bytes was cut, naming the bound :func:`decompressed_cap` applied:
    ``"decompresses to more than 210,400,000 bytes (200× its 1,052,000 compressed bytes; ...)"``, or for
    a small input ``"... (the floor for any input, above 200× its 1,052 compressed bytes; ...)"``. The
    one message of the report's loader and of the sync."""
    cap = decompressed_cap(compressed)
    ratio = f"{MAX_RATIO}× its {compressed:,} compressed bytes"
    basis = ratio if cap == compressed * MAX_RATIO else f"the floor for any input, above {ratio}"
    return f"decompresses to more than {cap:,} bytes ({basis}; a compression bomb?), the rest skipped"
