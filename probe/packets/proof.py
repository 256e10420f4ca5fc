"""The packet proof the verdict table reads (issue 16 part 1): a DNS reply from an address
where no resolver listens.

Kept apart from :mod:`probe.packets.dnsinject` (which captures): :mod:`probe.nettests.web`
carries it in :class:`~probe.nettests.web.WebObservations` and :mod:`probe.verdict` judges it
without importing any capture code. Read back from the record's ``x_packets`` by
:func:`proof_from_packets` (the runner judges again with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: DNS rcode NXDOMAIN (RFC 1035 §4.1.1).
RCODE_NXDOMAIN = 3


@dataclass(frozen=True, kw_only=True)
class InjectorProof:
    """An on-path DNS injector caught answering for the target name.

    Attributes:
        non_resolver: the address:53 the query went to, where no resolver listens.
        answers: the A/AAAA addresses of the injected reply (the first one captured).
        rcode: its DNS rcode (3 = a forged NXDOMAIN).
        ip_ttl: its IP TTL as received.
        hops_est: the injector's distance estimated from ``ip_ttl``.
        hop: the first IP TTL whose query drew the injected reply (None: not located).
        replies: how many DNS replies the non-resolver drew.
    """

    non_resolver: str
    answers: tuple[str, ...]
    rcode: int
    ip_ttl: int
    hops_est: int
    hop: int | None
    replies: int = 1

    @property
    def nxdomain(self) -> bool:
        return self.rcode == RCODE_NXDOMAIN

    def distance(self) -> str:
        """The injector's hop, in words, with the IP TTL it was estimated from."""
        est = f"its reply's IP TTL {self.ip_ttl} says ~{self.hops_est} hops away"
        if self.hop is not None:
            return f"at hop {self.hop} (the first TTL-limited query it answered; {est})"
        return f"~{self.hops_est} hops away ({est})"


def proof_from_packets(x: dict[str, Any] | None) -> InjectorProof | None:
    """The :class:`InjectorProof` in a record's ``x_packets`` value (:mod:`probe.packets.evidence`),
    None when its DNS injection test found no reply from the non-resolver."""
    d = (x or {}).get("dns_injection") or {}
    replies = d.get("nonresolver_replies") or []
    if not d.get("injected") or not replies:
        return None
    r = replies[0]
    return InjectorProof(non_resolver=str(d.get("non_resolver") or ""),
                         answers=tuple(str(a) for a in r.get("answers") or ()), rcode=int(r.get("rcode") or 0),
                         ip_ttl=int(r.get("ttl") or 0), hops_est=int(r.get("hops_est") or 0),
                         hop=d.get("injector_hop"), replies=len(replies))
