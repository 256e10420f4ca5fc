"""The trigger's ClientHello: the same first flight as a default client context's, built from one
cached context (it loaded the CA store twice per trigger, on the event loop: issue 16 bench)."""

from __future__ import annotations

import contextlib
import ssl

from probe.packets import trigger


def _extensions(hello: bytes) -> list[tuple[int, int | None]]:
    """(type, length) of each ClientHello extension; lengths of the random ones (key share,
    pre-shared key, padding) left out."""
    assert hello[0] == 22 and hello[5] == 1  # a handshake record holding a ClientHello
    p = 5 + 4 + 2 + 32
    p += 1 + hello[p]                                   # session id
    p += 2 + int.from_bytes(hello[p:p + 2], "big")     # cipher suites
    p += 1 + hello[p]                                   # compression methods
    end = p + 2 + int.from_bytes(hello[p:p + 2], "big")
    p += 2
    out: list[tuple[int, int | None]] = []
    while p < end:
        t, n = int.from_bytes(hello[p:p + 2], "big"), int.from_bytes(hello[p + 2:p + 4], "big")
        out.append((t, None if t in (21, 41, 51) else n))
        p += 4 + n
    return out


def _default_hello(sni: str) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_the_hello_is_a_default_client_hello_with_the_sni() -> None:
    ours, theirs = trigger.client_hello("meduza.io"), _default_hello("meduza.io")
    assert b"meduza.io" in ours and len(ours) == len(theirs)
    assert _extensions(ours) == _extensions(theirs)


def test_one_context_for_every_hello() -> None:
    trigger.client_hello("a.example")
    trigger.client_hello("b.example")
    assert trigger._hello_context.cache_info().currsize == 1
    assert trigger._hello_context() is trigger._hello_context()
