"""Connection limits of the helper's listening socket, applied at ``accept()`` (before TLS).

A slow-client flood (issue 11: 1,300 reconnecting slow clients pinned the helper's 1,024 file
descriptors, health checks succeeded 1 in 5, and every refused ``accept()`` logged a traceback)
is met here, before aiohttp or TLS see a byte:

* **per client** at most ``per_client`` connections (a client is an IPv4 address, or an IPv6 /64:
  one subscriber's prefix) — one more is closed at once (RST);
* **in all** at most ``max_connections`` (below the file-descriptor limit, see :func:`fd_budget`);
  when full, a newcomer evicts the oldest connection of the client holding the most, if that
  client holds more than the newcomer's own (fair share: a health check or a probe with one
  connection always gets in; a flood from one client only ever pushes out its own);
* refusals and evictions are **counted and logged once per** ``log_interval_s`` (one line), and
  asyncio's traceback for an ``accept()`` that fails for want of descriptors (EMFILE) becomes the
  same kind of one rate-limited line (:class:`AcceptErrorFilter`).

How long a connection may take to send its request head (and TLS handshake) is bounded by the
server (:mod:`probe.helper.server`, ``header_read_timeout_s``); this module only counts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kzprobe.helper")

#: File descriptors kept free of client connections: measurements (``max_concurrent`` × up to
#: ``max_measured_endpoints`` sockets, DNS, DoH), the log, the token/cert files.
FD_RESERVE = 512


def client_key(addr: Any) -> str:
    """The client a peer address belongs to: its IPv4 address (an IPv4-mapped IPv6 one too), or
    its IPv6 /64 (one subscriber's prefix: a flood from one /64 is one client)."""
    host = addr[0] if isinstance(addr, (tuple, list)) else str(addr)
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def fd_budget(max_connections: int, reserve: int = FD_RESERVE) -> tuple[int, int]:
    """(connections allowed, RLIMIT_NOFILE soft limit) for this process.

    The soft limit is raised towards ``max_connections + reserve`` when the hard limit allows
    (under systemd's ``SystemCallFilter=~@resources`` it cannot be: the unit's ``LimitNOFILE``
    sets it). The connections allowed are ``max_connections``, or fewer when the limit leaves
    less room (then the caller says so).
    """
    want = max_connections + reserve
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):  # seccomp (@resources) or a hard limit below
            pass
    room = want if soft == resource.RLIM_INFINITY else soft - reserve
    return max(0, min(max_connections, room)), soft


class RateLimitedLog:
    """Counts events and logs them as one line per ``interval_s`` at most (the first at once)."""

    def __init__(self, what: Callable[[dict[str, int], float], str], interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log) -> None:
        self._what = what
        self.interval_s = interval_s
        self._clock = clock
        self._log = logger
        self._since = clock()
        self._last: float | None = None
        self.pending: dict[str, int] = {}
        self.lines = 0

    def count(self, key: str, n: int = 1) -> None:
        """Count ``n`` events of kind ``key``; log when the interval has passed."""
        self.pending[key] = self.pending.get(key, 0) + n
        now = self._clock()
        if self._last is None or now - self._last >= self.interval_s:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Log what was counted since the last line (nothing when nothing was)."""
        if not self.pending:
            return
        now = self._clock() if now is None else now
        self._log.warning("%s", self._what(self.pending, now - self._since))
        self.lines += 1
        self.pending = {}
        self._since = self._last = now


@dataclass(eq=False)
class _Conn:
    key: str
    sock: socket.socket
    open: bool = True


@dataclass
class ConnectionLimiter:
    """Per-client and total connection caps with fair-share eviction (see the module docstring).

    Attributes:
        max_connections: connections held at once, all clients.
        per_client: connections held at once by one client (:func:`client_key`).
        refused: connections closed at accept, by reason (``per_client``, ``full``), and
            ``evicted``: connections closed to let a newcomer in.
    """

    max_connections: int
    per_client: int
    log_interval_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    by_client: dict[str, deque[_Conn]] = field(default_factory=dict)
    total: int = 0
    refused: dict[str, int] = field(default_factory=lambda: {"per_client": 0, "full": 0, "evicted": 0})

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.per_client < 1:
            raise ValueError(f"max_connections and max_connections_per_client must be >= 1, got "
                             f"{self.max_connections!r} and {self.per_client!r}")
        self.log = RateLimitedLog(self._line, self.log_interval_s, self.clock)
        self._top: dict[str, int] = {}

    def _line(self, counts: dict[str, int], seconds: float) -> str:
        top = ", ".join(f"{k} {n}" for k, n in sorted(self._top.items(), key=lambda kv: -kv[1])[:3])
        self._top = {}
        what = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in counts.items() if n)
        return (f"helper: connections refused in the last {seconds:.0f} s: {what} (per-client cap "
                f"{self.per_client}, total cap {self.max_connections}, open {self.total}"
                + (f"; most from {top}" if top else "") + ")")

    def _note(self, reason: str, key: str) -> None:
        self.refused[reason] += 1
        self._top[key] = self._top.get(key, 0) + 1
        self.log.count(reason)

    def admit(self, addr: Any, sock: socket.socket) -> _Conn | None:
        """Account a new connection from ``addr``; None (the caller closes it) when refused."""
        key = client_key(addr)
        mine = self.by_client.get(key)
        n_mine = len(mine) if mine else 0
        if n_mine >= self.per_client:
            self._note("per_client", key)
            return None
        if self.total >= self.max_connections:
            victim_key = max(self.by_client, key=lambda k: len(self.by_client[k]))
            if len(self.by_client[victim_key]) <= n_mine + 1:
                self._note("full", key)
                return None
            victim = self.by_client[victim_key][0]
            self.release(victim)
            self._note("evicted", victim_key)
            with contextlib.suppress(OSError):
                victim.sock.shutdown(socket.SHUT_RDWR)  # its transport sees EOF and closes it
        conn = _Conn(key, sock)
        self.by_client.setdefault(key, deque()).append(conn)
        self.total += 1
        return conn

    def release(self, conn: _Conn) -> None:
        """Forget ``conn`` (closed or evicted); idempotent."""
        if not conn.open:
            return
        conn.open = False
        self.total -= 1
        q = self.by_client.get(conn.key)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(conn)
            if not q:
                del self.by_client[conn.key]


class _TrackedSocket(socket.socket):
    """An accepted connection that gives its slot back when closed."""

    _limiter: ConnectionLimiter | None = None
    _conn: _Conn | None = None

    def close(self) -> None:
        if self._limiter is not None and self._conn is not None:
            self._limiter.release(self._conn)
            self._conn = None
        super().close()


class LimitedListener(socket.socket):
    """A listening socket whose ``accept()`` (called by asyncio's accept loop) applies a
    :class:`ConnectionLimiter`: refused connections are reset at once and the next pending one
    is taken, so asyncio only ever sees admitted connections."""

    limiter: ConnectionLimiter

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            fd, addr = self._accept()  # type: ignore[attr-defined]  # BlockingIOError: none pending
            conn = _TrackedSocket(self.family, self.type, self.proto, fileno=fd)
            slot = self.limiter.admit(addr, conn)
            if slot is not None:
                conn._limiter, conn._conn = self.limiter, slot
                return conn, addr
            with contextlib.suppress(OSError):  # RST, no TIME_WAIT kept for a connection we never wanted
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()


def listen(host: str, port: int, limiter: ConnectionLimiter, backlog: int = 512) -> LimitedListener:
    """A bound, listening :class:`LimitedListener` on ``host``:``port`` (its first address).

    Raises:
        OSError: the address cannot be resolved or bound.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, sockaddr = infos[0]
    sock = LimitedListener(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    sock.limiter = limiter
    return sock


class AcceptErrorFilter(logging.Filter):
    """asyncio logs a traceback each time ``accept()`` fails for want of descriptors (EMFILE)
    and retries a second later: one line per ``interval_s`` instead, with the count."""

    MARK = "socket.accept() out of system resource"

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MARK):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = ("helper: accept() failed: %s (out of file descriptors; %d more such failures since the last "
                      "line); asyncio retries in 1 s — LimitNOFILE or --max-connections need attention")
        record.args = (getattr(exc, "strerror", None) or type(exc).__name__ if exc else "resource", self.suppressed)
        record.exc_info = None
        record.exc_text = None
        self.suppressed = 0
        self._last = now
        return True


def install_accept_error_filter(interval_s: float = 10.0) -> AcceptErrorFilter:
    """Attach one :class:`AcceptErrorFilter` to the ``asyncio`` logger (idempotent); returns it."""
    logger = logging.getLogger("asyncio")
    for f in logger.filters:
        if isinstance(f, AcceptErrorFilter):
            return f
    f = AcceptErrorFilter(interval_s)
    logger.addFilter(f)
    return f


__all__ = ["FD_RESERVE", "AcceptErrorFilter", "ConnectionLimiter", "LimitedListener", "RateLimitedLog",
           "client_key", "fd_budget", "install_accept_error_filter", "listen"]
