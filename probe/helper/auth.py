"""Bearer-token authentication for the control helper (RFC 6750).

Every control request carries ``Authorization: Bearer <token>`` (RFC 6750 §2.1). The
helper holds a set of tokens, one per probe, in a file only its owner can read;
revoking a probe is deleting its line and restarting the helper.

Tokens are secrets: they are compared in constant time (:func:`hmac.compare_digest`,
against *every* configured token, so timing says nothing about which one nearly
matched), never logged, and never put in an error message. Logs name a token by
:func:`token_id`, a short SHA-256 prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from probe.errors import KzprobeError

#: RFC 6750 §2.1 ``b64token``: the characters a bearer token may contain.
_B64TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: Shortest token accepted (characters): 16 random b64token characters are ~96 bits.
MIN_TOKEN_CHARS: Final = 16


class HelperConfigError(KzprobeError, ValueError):
    """The helper cannot start with this configuration (token file, listen address, limits).

    The message says what is wrong and how to fix it; it never contains a token.
    """


def new_token() -> str:
    """A fresh random token: 32 bytes from :mod:`secrets`, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def token_id(token: str) -> str:
    """A name for ``token`` that is safe to log: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def load_tokens(path: str | os.PathLike[str]) -> frozenset[str]:
    """Read the helper's tokens from ``path``.

    Format: one token per line; blank lines and lines starting with ``#`` are ignored;
    a token may be followed by whitespace and a ``#`` comment naming its probe
    (``Xq3...  # pi-almaty``). Tokens are RFC 6750 ``b64token`` strings of at least
    :data:`MIN_TOKEN_CHARS` characters (make one with :func:`new_token`, or
    ``python3 -c 'import secrets; print(secrets.token_urlsafe(32))'``).

    The file must not be accessible by group or others (``mode & 0o077 == 0``,
    i.e. ``chmod 600``); its mode is checked on the open file descriptor.

    Returns:
        The set of tokens (at least one).

    Raises:
        HelperConfigError: the file cannot be read, is not a regular file, is
            group/world accessible, has a malformed line (named by line number, the
            token is not shown), or holds no token.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        raise HelperConfigError(f"token file {p}: cannot open it ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HelperConfigError(f"token file {p}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise HelperConfigError(
                f"token file {p}: group or others can access it (mode {mode:04o}); "
                f"run: chmod 600 {p}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(1 << 20)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is not part of a token
    except UnicodeDecodeError:
        raise HelperConfigError(f"token file {p}: not UTF-8 text") from None
    tokens: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(maxsplit=1)
        token, comment = fields[0], (fields[1] if len(fields) > 1 else "")
        if comment and not comment.startswith("#"):
            raise HelperConfigError(f"token file {p}, line {n}: one token per line "
                                    "(anything after it must be a '# comment')")
        if not _B64TOKEN_RE.fullmatch(token):
            raise HelperConfigError(f"token file {p}, line {n}: not a bearer token "
                                    "(RFC 6750: letters, digits and -._~+/ then optional '=')")
        if len(token) < MIN_TOKEN_CHARS:
            raise HelperConfigError(f"token file {p}, line {n}: token shorter than {MIN_TOKEN_CHARS} "
                                    "characters (make one with secrets.token_urlsafe(32))")
        tokens.add(token)
    if not tokens:
        raise HelperConfigError(f"token file {p}: no token in it (one per line; '#' starts a comment)")
    return frozenset(tokens)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None.

    The scheme is case-insensitive (RFC 9110 §11.1); one or more spaces separate it
    from the token (RFC 6750 §2.1). Any other scheme, or no token, gives None.
    """
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    token = rest.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class TokenSet:
    """The configured tokens, matched in constant time.

    Args:
        tokens: the accepted tokens (non-empty).

    Raises:
        HelperConfigError: no token.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple((t.encode("utf-8"), token_id(t)) for t in sorted(set(tokens)))
        if not self._tokens:
            raise HelperConfigError("no token configured: the helper serves nobody without one")

    def match(self, candidate: str | None) -> str | None:
        """The :func:`token_id` of the configured token equal to ``candidate``, or None.

        Every configured token is compared (no early exit), each with
        :func:`hmac.compare_digest`.
        """
        if candidate is None:
            return None
        cand = candidate.encode("utf-8", "replace")
        found: str | None = None
        for secret, tid in self._tokens:
            if hmac.compare_digest(cand, secret):
                found = tid
        return found

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"TokenSet(<{len(self._tokens)} tokens>)"


__all__ = ["MIN_TOKEN_CHARS", "HelperConfigError", "TokenSet", "bearer_token", "load_tokens", "new_token",
           "token_id"]
