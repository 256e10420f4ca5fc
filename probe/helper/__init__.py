"""The control helper: a server on a VPS outside the censored network (issue 3).

Public API:

* :mod:`probe.helper.server` — :class:`HelperConfig`, :func:`make_app`, :func:`start`,
  :func:`serve`, :func:`check_listen`;
* :mod:`probe.helper.ssrf` — :class:`AddressPolicy` (addresses, ports, URLs the helper
  may touch), :class:`PolicyConnectTo` (the guard at the socket);
* :mod:`probe.helper.auth` — :func:`load_tokens`, :func:`new_token`, :func:`token_id`,
  :class:`HelperConfigError`;
* :mod:`probe.helper.api` — the wire format: :data:`API_VERSION`, :data:`CONTROL_PATH`,
  :data:`HEALTH_PATH`, :func:`control_request`, :func:`control_from_json`.

The server names are imported on first use (PEP 562), so the probe side can import
``probe.helper.api`` (e.g. from :mod:`probe.control`) without pulling in the server
and without an import cycle. The API is documented in ``docs/helper-api.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probe.helper.api import (
    API_VERSION,
    CONTROL_PATH,
    HEALTH_PATH,
    control_from_json,
    control_request,
)
from probe.helper.auth import HelperConfigError, load_tokens, new_token, token_id
from probe.helper.ssrf import AddressPolicy, PolicyConnectTo

if TYPE_CHECKING:
    from probe.helper.server import (
        HelperConfig,
        RunningHelper,
        check_listen,
        make_app,
        serve,
        start,
    )

_SERVER_NAMES = frozenset({"HelperConfig", "RunningHelper", "check_listen", "make_app", "serve", "start"})


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from probe.helper import server

        return getattr(server, name)
    raise AttributeError(f"module 'probe.helper' has no attribute {name!r}")


__all__ = ["API_VERSION", "CONTROL_PATH", "HEALTH_PATH", "AddressPolicy", "HelperConfig", "HelperConfigError",
           "PolicyConnectTo", "RunningHelper", "check_listen", "control_from_json", "control_request",
           "load_tokens", "make_app", "new_token", "serve", "start", "token_id"]
