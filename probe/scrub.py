"""The probe's public address out of every record (issue 15, 1): "The probe's address is never
written unless the user opts in."

Source: OONI's ``model.ScrubMeasurement`` (ooni/probe-cli ``internal/model/measurement.go``): the
probe's address anywhere in a measurement (test keys and top-level keys) becomes ``[scrubbed]``,
unless the user set ``include_ip``. kzprobe learns the address from the helper's whoami or the DoH
provider's trace (:mod:`probe.vantage`); a blockpage or a "your IP" page echoing it in its body, a
DNS answer or a connect to it, would otherwise carry it into the JSONL. ``[probe] include_ip = true``
writes it as ``probe_ip`` instead (ooniprobe's ``include_ip``). Where we depart: a loopback address
is never scrubbed (it identifies nobody and ``127.0.0.1`` is OONI's own redaction value), and an
address inside a longer number is left alone (``1.2.3.4`` in ``11.2.3.45``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from probe.config import Settings

#: What the probe's address becomes in a record (OONI's ``model.Scrubbed``).
SCRUBBED = "[scrubbed]"


class Scrubber:
    """Replaces the probe's public address(es) in a record, wherever they are (bodies, headers,
    reasons, keys), with :data:`SCRUBBED`. An address inside a longer number is left alone
    (``1.2.3.4`` in ``11.2.3.45``); over-scrubbing is harmless, under-scrubbing is not."""

    def __init__(self, addresses: Any) -> None:
        addrs = sorted({str(ipaddress.ip_address(a)) for a in addresses})
        self._needles = tuple({n for a in addrs for n in (a.encode(), a.upper().encode())})
        parts = [rf"(?<![0-9A-Fa-f:]){re.escape(a)}(?![0-9A-Fa-f:])" if ":" in a
                 else rf"(?<![0-9]){re.escape(a)}(?![0-9])" for a in addrs]
        self._re = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def found_in(self, line: bytes) -> bool:
        """A fast first look at an encoded record: could it hold an address?"""
        return self._re is not None and any(n in line for n in self._needles)

    def text(self, s: str) -> str:
        return self._re.sub(SCRUBBED, s) if self._re is not None else s

    def record(self, v: Any) -> Any:
        """A copy of ``v`` (a record, or any part of one) with every address scrubbed."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.text(k) if isinstance(k, str) else k: self.record(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.record(x) for x in v]
        return v


def scrubber_for(settings: Settings, identity: Any) -> Scrubber | None:
    """The run's scrubber: None when the address is unknown or the user opted in to publish it."""
    address = getattr(identity, "address", None)
    if not address or settings.probe_include_ip:
        return None
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_unspecified:  # identifies nobody; 127.0.0.1 is the redaction value itself
        return None
    return Scrubber([address])
