"""The event loop a run uses: uvloop when installed (the optional ``kzprobe[fast]`` extra), else asyncio's.

uvloop measured −8 % probe CPU and −18 to −26 MB peak RSS on the loopback benchmark
(issue 13); it has ARM64 wheels (Raspberry Pi). ``KZPROBE_EVENT_LOOP=asyncio`` forces the
standard loop (to compare, or to rule uvloop out when something misbehaves).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when uvloop is importable and not disabled, else None (asyncio's)."""
    if os.environ.get("KZPROBE_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """"uvloop" or "asyncio": what :func:`run` will use."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """:func:`asyncio.run` on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


#: Allocations between two young-generation collections during a run (CPython's default: 700).
RUN_GC_GEN0_THRESHOLD = 10_000


@contextlib.contextmanager
def run_gc() -> Iterator[None]:
    """The garbage collector tuned for a run of measurements (issue 13): what start-up loaded
    (modules, the trust store, the fingerprint databases once loaded) is frozen out of the
    collections (``gc.freeze``), and the young generation is collected every
    :data:`RUN_GC_GEN0_THRESHOLD` allocations instead of 700, so the objects of the 64
    measurements in flight die by reference counting before a collection promotes them.
    Restored afterwards. Cycles are still collected; memory stays bounded by the thresholds."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(old[0], RUN_GC_GEN0_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
