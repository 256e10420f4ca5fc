"""Child processes that die with their parent (break test F3: a SIGKILL of ``kzprobe ooni sync`` — or
the kernel's OOM killer on a Pi — left its fork server and worker processes running, re-parented to
PID 1, 158–183 MB each, 25 minutes later).

:func:`die_with_parent` asks Linux for a signal when the parent dies (``prctl(PR_SET_PDEATHSIG)``,
prctl(2); through ctypes, no dependency); :func:`watch_parent` is the fallback everywhere: a daemon
thread that ends the process once its parent is gone (its parent pid changed, or the pid watched no
longer exists)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

#: prctl(2) option: the signal the calling process gets when its parent (thread) dies.
PR_SET_PDEATHSIG = 1
#: Seconds between two looks of :func:`watch_parent`.
WATCH_SECONDS = 1.0


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux); True if set. Exits at
    once if the parent died before the request took effect (the parent pid changed across the call: the
    signal would never come). A parent that is PID 1 (the sync as a container's first process) is a
    parent like any other, not a sign of re-parenting."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    before = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and os.getppid() != before:  # re-parented before prctl: the signal will never come
        os._exit(1)
    return ok


def watch_parent(pid: int | None = None, interval: float = WATCH_SECONDS) -> threading.Thread:
    """A daemon thread ending this process (``os._exit``) once its parent pid changes or ``pid`` (the
    process that owns this one, e.g. the sync's main process) no longer exists."""
    ppid = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            gone = os.getppid() != ppid
            if not gone and pid is not None:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    gone = True
                except PermissionError:
                    pass
            if gone:
                os._exit(1)

    t = threading.Thread(target=watch, name="watch-parent", daemon=True)
    t.start()
    return t
