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
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: The values ``KZPROBE_EVENT_LOOP`` takes ("" unset: uvloop when installed); any other is refused
#: by :mod:`probe.config` (78, naming it): ``bogus`` silently ran uvloop (re-check of break test 24).
EVENT_LOOP_VALUES = ("", "asyncio", "uvloop")

#: The signals that stop a command cleanly (its summary kept, exit 130): Ctrl-C, a service stop, and
#: the hang-up of a dropped SSH session (break test: SIGHUP killed a run without its summary).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def cancel_on_signals() -> None:
    """Make :data:`STOP_SIGNALS` cancel the running task (it then stops cleanly); once that task is
    done, a signal raises KeyboardInterrupt (exit 130 in the CLI).

    A Python-level handler, not ``loop.add_signal_handler``: closing the loop removes the loop's
    handlers and restores SIGTERM's *default action*, so a second SIGTERM landing while the run
    shut down (the loop's executor being joined) killed the process with a signal status
    (-15) instead of 130 (CI of stop 19: two SIGTERMs 5 ms apart). This handler outlives the loop.
    A KeyboardInterrupt raised inside a task instead (``ooni sync`` before) ended in asyncio's
    "Task exception was never retrieved" traceback (break test)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int, frame: Any) -> None:
        if task.done() or loop.is_closed():
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(task.cancel)  # wakes the loop's selector (its self-pipe)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """While inside, :data:`STOP_SIGNALS` are recorded, not acted on; on the way out the handlers
    come back and the first signal recorded is handed to its handler (KeyboardInterrupt from the
    CLI's, the default action for ``SIG_DFL``, nothing for ``SIG_IGN``). For cleanup that must
    finish once started: a SIGTERM landing in the lab's teardown cut it (a ``KeyboardInterrupt``
    between two ``ip netns del``) and left the namespaces and the state file of a lab the CLI
    called torn down (break test: 2 of 6 tries). Python-level handlers, not the signal mask: the
    ``ip`` commands the teardown starts would inherit a blocked mask. A no-op outside the main
    thread (signals are only handled there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def record(signum: int, frame: Any) -> None:
        got.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if got:
            handler = previous[signal.Signals(got[0])]
            if callable(handler):
                handler(got[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(got[0])


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


#: Allocations between two young-generation collections during a run (CPython's default: 700),
#: and young collections per middle one, middle ones per full one (default 10, 10): a full
#: collection every 60,000 allocations, as often as by default (70,000). With 10,000/10/10
#: (every 1,000,000) the garbage promoted to the old generation piled up: peak RSS of 1,000
#: bench inputs 117 MB instead of 80 MB.
RUN_GC_THRESHOLDS = (10_000, 2, 3)


@contextlib.contextmanager
def run_gc() -> Iterator[None]:
    """The garbage collector tuned for a run of measurements (issue 13): what start-up loaded
    (modules, the trust store, the fingerprint databases) is frozen out of the collections
    (``gc.freeze``), and the young generation is collected every 10,000 allocations instead of
    700, so the objects of the measurements in flight die by reference counting before a
    collection promotes them; full collections come as often as by default
    (:data:`RUN_GC_THRESHOLDS`). GC CPU of a 400-input bench pass 0.25 s -> ~0.06 s beyond
    start-up. Restored afterwards."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
