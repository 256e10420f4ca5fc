"""The packets that trigger a censor: a TLS ClientHello with an SNI, an HTTP request with a Host.

The ClientHello is the one Python's ``ssl`` sends (a memory BIO handshake that is never
finished), so it looks like the probe's own TLS test's; the HTTP request is a minimal GET.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """What to send to ``port`` of the target's address: the target's (``payload``) and the
    benign twin (``benign``: the same request naming the benign host)."""

    kind: str  # "tls" | "http"
    port: int
    name: str
    payload: bytes
    benign_name: str
    benign: bytes


@functools.cache
def _hello_context() -> ssl.SSLContext:
    """One client context for every ClientHello of the process. Not ``ssl.create_default_context()``:
    its CA store (``load_default_certs``, ~0.1 s of CPU on the event loop, twice per trigger) is
    never used by a handshake that is never finished, and the hello is the same (same options,
    ciphers and extensions: tests/packets/test_trigger.py)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello(sni: str) -> bytes:
    """The first flight of a TLS handshake with server name ``sni`` (bytes on the wire)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = _hello_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def http_request(host: str, path: str = "/") -> bytes:
    """A minimal HTTP/1.1 GET of ``path`` from ``host``."""
    return (f"GET {path or '/'} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n").encode("ascii", "replace")


def make_trigger(scheme: str, name: str, *, benign_name: str, path: str = "/", port: int | None = None) -> Trigger:
    """The trigger for an ``https`` (ClientHello) or ``http`` (GET) input of host ``name``."""
    if scheme == "https":
        return Trigger(kind="tls", port=port or 443, name=name, payload=client_hello(name), benign_name=benign_name,
                       benign=client_hello(benign_name))
    return Trigger(kind="http", port=port or 80, name=name, payload=http_request(name, path), benign_name=benign_name,
                   benign=http_request(benign_name, path))
