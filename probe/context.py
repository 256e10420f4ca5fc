"""What a measurement needs besides its input: settings, trust, resolvers, control.

One :class:`MeasureContext` is built per run (by :mod:`probe.runner`) and shared by
every measurement of the run; it holds the one aiohttp session used for DoH.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from probe.addresses import Bogons, ConnectTo
from probe.bounded import ACCEPT_ENCODING
from probe.config import Timeouts
from probe.localnet import AddressPolicy
from probe.measure.http import DEFAULT_MAX_BODY_BYTES
from probe.measure.tls import TrustStore

if TYPE_CHECKING:
    from probe.control import Control


@dataclass(frozen=True, kw_only=True)
class MeasureContext:
    """Everything shared by the measurements of one run.

    Attributes:
        timeouts: per-phase timeouts (seconds).
        trust: trust anchors and verification policy for TLS.
        bogons: the bogon set (answers in it are flagged; see :mod:`probe.addresses`).
        connect_to: logical endpoint → socket address remap (empty in production).
        system_resolver: also resolve with getaddrinfo (what a browser sees).
        udp_resolvers: "ip[:port]" resolvers queried directly over UDP (the ISP's).
        udp_edns: send EDNS0 on those queries, as modern stub resolvers do (and as
            the Turkmen injector of FC-06 mishandles).
        doh_urls: DNS-over-HTTPS control resolvers (RFC 8484), tried in order.
        doh_session: the aiohttp session for DoH (verifies TLS with ``trust``);
            None = no DoH control (then DNS verdicts are inconclusive).
        http_session: the session of the web test's GETs (:func:`probe.measure.http.new_session`:
            one per run, no connection or cookie kept between fetches); None = each fetch
            makes its own.
        control: the full control (helper, or an in-process one in tests); None =
            none configured (then verdicts needing an HTTP control are inconclusive).
        benign_sni: SNI for the retry that tells SNI-keyed from address-keyed TLS blocking,
            and for the throughput baseline that tells SNI-keyed throttling (FC-19).
        resolver_canary: a well-known name asked of the probe's resolvers whenever they
            fail for an input, to tell a broken local resolver from DNS blocking; "" = never.
        max_body_bytes: HTTP body cap (bytes) — the same on probe and control (FC-15).
        store_body_bytes: how many body bytes the record keeps (base64); blockpage
            fingerprints are matched on this prefix (blockpages are small).
        max_redirects: redirect hops followed.
        max_endpoints: endpoints (IP:port) measured per input, probe's first.
        address_policy: where DNS answers and redirects may lead (:mod:`probe.localnet`):
            never the vantage's own network, private space only from private origins.
            The default knows no local network (tests); :func:`probe.runner.build_context`
            reads it from the OS.
        asn_of: an address → its ASN ("AS9198") or None (:mod:`probe.geoip`), for OONI's DNS
            consistency by ASN; None = no database (consistency by address and TLS only).
    """

    timeouts: Timeouts = field(default_factory=Timeouts)
    trust: TrustStore
    bogons: Bogons = field(default_factory=Bogons)
    connect_to: ConnectTo = field(default_factory=ConnectTo)
    system_resolver: bool = True
    udp_resolvers: tuple[str, ...] = ()
    udp_edns: bool = True
    doh_urls: tuple[str, ...] = ()
    doh_session: aiohttp.ClientSession | None = None
    http_session: aiohttp.ClientSession | None = None
    control: Control | None = None
    benign_sni: str = "example.com"
    resolver_canary: str = "example.com"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    store_body_bytes: int = 16384
    max_redirects: int = 10
    max_endpoints: int = 8
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    asn_of: Callable[[str], str | None] | None = None


def new_doh_session(trust: TrustStore, *, limit: int = 32, force_close: bool = False) -> aiohttp.ClientSession:
    """An aiohttp session for DoH (and the helper client) that verifies TLS against ``trust``
    (call inside a loop).

    It does not decompress (``auto_decompress=False``): every body read from it goes
    through :func:`probe.bounded.read_body`, which decodes gzip/deflate within its caps
    (aiohttp's own decoder would inflate a bomb before any cap applies).
    ``force_close``: no connection is kept alive (the DoH control's retry on a fresh
    connection, :func:`probe.control.doh_control`).
    """
    connector = aiohttp.TCPConnector(ssl=trust.ssl_context(), limit=limit, ttl_dns_cache=300,
                                     force_close=force_close)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 headers={"Accept-Encoding": ACCEPT_ENCODING})
