"""Which network the probe measures from (issue 15, 1): its public address, then ASN, network
name and country from the MMDB databases (:mod:`probe.geoip`).

Source: OONI's geolocation (ooni/probe-cli ``internal/geolocate/geolocate.go``, ``Task.Run``): the
probe's address from an IP-lookup service (Cloudflare's trace, Ubuntu's geoip, STUN), then ASN,
network name and country from a MaxMind database the probe carries (``mmdbLookupper``); then the
resolver's address and its ASN, a failure there never failing the whole lookup. Where we depart:
no PyPI package ships current ASN data for the probe to carry, so a probe with no database of its
own (a new user's, before ``kzprobe assets update``) takes the network from the helper's whoami
answer, which carries the helper's lookup of the same address (``probe_asn``/``probe_cc``/
``probe_network_name``, and the resolvers' in ``resolvers``) — the helper is the one service the
user configured anyway, like OONI's probe services. The probe's own database, when installed,
overrides the helper's answer field by field (:attr:`VantageIdentity.database` says which one
was used).

The address comes from the control helper's authenticated ``GET /api/v1/whoami``
(docs/helper-api.md), or, without a helper, from the trace endpoint of the DoH provider the
probe already uses (Cloudflare's ``https://1.1.1.1/cdn-cgi/trace``, ``ip=`` line; only for
Cloudflare's DoH addresses and names, :data:`TRACE_HOSTS`; ``[geoip] doh_trace = false`` turns
it off). Config overrides all of it: ``probe.asn``, ``probe.cc`` and
``probe.network_name`` when set are kept as they are, and ``[geoip] lookup = false`` turns
the whole step off. The address itself is used for the lookup only and never written (the
records' ``probe_ip`` stays OONI's redaction value, the run summary leaves it out) unless the user
opts in with ``[probe] include_ip = true`` (ooniprobe's ``include_ip`` sharing setting): every
record is scrubbed of it, as OONI's ``model.ScrubMeasurement`` does (ooni/probe-cli
``internal/model/measurement.go``: the probe's address anywhere in the measurement becomes
``[scrubbed]``) — a blockpage or a "your IP" page echoing it in its body would otherwise carry it
into the JSONL (:mod:`probe.scrub`). Only an address the probe learned is scrubbed: with
``[probe] asn``/``cc`` set the probe never asks for it. A failure is data: the identity says
why it is unknown, the run goes on with what the config says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from probe.bounded import loads_json, read_body
from probe.config import Settings
from probe.geoip import GeoIP, NetworkInfo

log = logging.getLogger(__name__)

#: A whoami reply is a few dozen bytes; more is not a helper's reply.
MAX_WHOAMI_BYTES = 4096
#: Seconds the whoami exchange may take.
WHOAMI_TIMEOUT_S = 10.0
#: DoH hosts whose provider has a trace endpoint (Cloudflare: /cdn-cgi/trace answers ``ip=<client>``).
TRACE_HOSTS = frozenset({"1.1.1.1", "1.0.0.1", "cloudflare-dns.com", "one.one.one.one", "[2606:4700:4700::1111]",
                         "[2606:4700:4700::1001]"})


def trace_url(doh_urls: tuple[str, ...]) -> str | None:
    """The trace URL of the first DoH resolver whose provider has one (Cloudflare), else None."""
    from urllib.parse import urlsplit

    for u in doh_urls:
        parts = urlsplit(u)
        if parts.scheme == "https" and parts.netloc.lower() in TRACE_HOSTS:
            return f"https://{parts.netloc}/cdn-cgi/trace"
    return None


async def doh_trace(session: Any, url: str, *, timeout_s: float = WHOAMI_TIMEOUT_S) -> str:
    """The ``ip=`` of a Cloudflare trace reply (``key=value`` lines).

    Raises:
        ValueError: not 200, over :data:`MAX_WHOAMI_BYTES`, or no valid ``ip=`` line.
        OSError, TimeoutError, aiohttp.ClientError: the exchange failed.
    """
    async with asyncio.timeout(timeout_s), session.get(url, headers={"Connection": "close"},
                                                         allow_redirects=False) as resp:
        body, truncated = await read_body(resp, MAX_WHOAMI_BYTES)
        if resp.status != 200:
            raise ValueError(f"trace: HTTP {resp.status}")
    if truncated:
        raise ValueError(f"trace: reply over {MAX_WHOAMI_BYTES} bytes")
    for line in body.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ip":
            return str(ipaddress.ip_address(value.strip()))
    raise ValueError("trace: no ip= line in the reply")


@dataclass(frozen=True, kw_only=True)
class VantageIdentity:
    """What was learned, for the run summary (never the address).

    Attributes:
        source: "config" (all set there), "helper" (whoami + database), "doh_trace" (the DoH
            provider's trace + database), or "unknown".
        asn / cc / network_name: what the database said (None/"" when unknown).
        database: whose database mapped the address: "local" (the probe's), "helper" (the
            helper's, in its whoami answer), "" when none did.
        resolver_asn / resolver_network_name: OONI's, of ``dns.udp_resolvers``' first address, as
            the helper's database knows it (the probe's own database is asked by the runner first).
        failure: why the address or its network is unknown, else None.
    """

    source: str
    asn: str | None = None
    cc: str | None = None
    network_name: str = ""
    database: str = ""
    resolver_asn: str | None = None
    resolver_network_name: str = ""
    failure: str | None = None
    #: the public address learned, kept in memory to scrub it from the records (or to write it as
    #: ``probe_ip`` when the user opted in); never in the summary (:meth:`summary_json`)
    address: str | None = field(default=None, repr=False)

    def summary_json(self) -> dict[str, Any]:
        """The identity for the run summary: every field but the address."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "address"}


@dataclass(frozen=True, kw_only=True)
class Whoami:
    """The helper's whoami answer: the address, and what the helper's database says of it and
    of the resolvers asked about (empty when the helper has no database)."""

    address: str
    info: NetworkInfo
    resolvers: dict[str, NetworkInfo]


def _info(data: Any, prefix: str = "") -> NetworkInfo:
    """A whoami answer's network keys as :class:`NetworkInfo`; anything malformed is unknown."""
    if not isinstance(data, dict):
        return NetworkInfo(asn=None, network_name="", cc=None)
    asn, cc, name = (data.get(f"{prefix}{k}") for k in ("asn", "cc", "network_name"))
    ok_asn = isinstance(asn, str) and asn.startswith("AS") and asn[2:].isdigit() and 0 < int(asn[2:]) < 2**32
    ok_cc = isinstance(cc, str) and len(cc) == 2 and cc.isascii() and cc.isalpha()
    return NetworkInfo(asn=asn if ok_asn and isinstance(asn, str) else None,
                       network_name=name[:200] if ok_asn and isinstance(name, str) and name.isprintable() else "",
                       cc=cc.upper() if ok_cc and isinstance(cc, str) else None)


async def helper_whoami(session: Any, base_url: str, token: str, *, resolvers: tuple[str, ...] = (),
                        timeout_s: float = WHOAMI_TIMEOUT_S) -> Whoami:
    """The probe's public address as the helper sees it, with the helper's lookup of it and of
    ``resolvers`` (addresses) when the helper has a database.

    Raises:
        ValueError: a reply that is not ``{"probe_ip": "<address>", ...}`` or not 200 (the message says which).
        OSError, TimeoutError, aiohttp.ClientError: the exchange failed.
    """
    from probe.helper.api import WHOAMI_PATH

    async with asyncio.timeout(timeout_s):
        async with session.get(f"{base_url.rstrip('/')}{WHOAMI_PATH}", params=[("resolver", r) for r in resolvers],
                               headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                               allow_redirects=False) as resp:  # a redirect could point into the LAN
            body, truncated = await read_body(resp, MAX_WHOAMI_BYTES)
            if resp.status != 200:
                raise ValueError(f"whoami: HTTP {resp.status}")
    if truncated:
        raise ValueError(f"whoami: reply over {MAX_WHOAMI_BYTES} bytes")
    data = loads_json(body)
    ip = data.get("probe_ip") if isinstance(data, dict) else None
    if not isinstance(ip, str):
        raise ValueError("whoami: no probe_ip in the reply")
    assert isinstance(data, dict)
    looked = data.get("resolvers")
    return Whoami(address=str(ipaddress.ip_address(ip)), info=_info(data, "probe_"),
                  resolvers={r: _info(looked.get(r)) for r in resolvers} if isinstance(looked, dict) else {})


def _resolver_address(settings: Settings) -> str | None:
    """The first ``dns.udp_resolvers`` address (without its port), None when there is none."""
    from probe.addresses import parse_endpoint

    if not settings.dns_udp_resolvers:
        return None
    first = settings.dns_udp_resolvers[0]
    try:
        ip = parse_endpoint(first)[0]
    except ValueError:  # no port: the address alone
        ip = first.strip("[]")
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


def merge(local: NetworkInfo, helper: NetworkInfo) -> tuple[NetworkInfo, str]:
    """The probe's database's answer, the helper's where the local one knows nothing (field by
    field: ASN and name go together); and which database gave the ASN (or the country)."""
    asn, name = (local.asn, local.network_name) if local.asn else (helper.asn, helper.network_name)
    cc = local.cc or helper.cc
    by = "local" if local.asn or (local.cc and not helper.asn) else "helper" if helper.asn or helper.cc else ""
    return NetworkInfo(asn=asn, network_name=name, cc=cc), by


def configured(settings: Settings) -> bool:
    """Whether the config names the network entirely (then nothing is looked up)."""
    return settings.probe_asn != "AS0" and settings.probe_cc != "ZZ" and bool(settings.probe_network_name)


def apply(settings: Settings, info: NetworkInfo) -> Settings:
    """``settings`` with what the database knows filled in where the config left it unset."""
    return dataclasses.replace(
        settings,
        probe_asn=settings.probe_asn if settings.probe_asn != "AS0" or not info.asn else info.asn,
        probe_cc=settings.probe_cc if settings.probe_cc != "ZZ" or not info.cc else info.cc,
        probe_network_name=settings.probe_network_name or (info.network_name if info.asn else ""))


async def identify(settings: Settings, *, geoip: GeoIP | None = None) -> tuple[Settings, VantageIdentity]:
    """Learn the vantage's network (helper whoami → MMDB) where the config does not name it."""
    if configured(settings) or not settings.geoip_lookup:
        return settings, VantageIdentity(source="config")
    trace = trace_url(settings.dns_doh_urls) if settings.geoip_doh_trace else None
    if not settings.helper_url and trace is None:
        return settings, VantageIdentity(source="unknown", failure="no helper and no DoH trace endpoint (set "
                                                                    "probe.asn and probe.cc, or helper.url)")
    db = geoip or GeoIP(settings.geoip_asn_db or None, settings.geoip_country_db or None)
    if not db.available and not settings.helper_url:  # the helper's answer may carry its own lookup
        return settings, VantageIdentity(source="unknown", failure="no ASN/country database (kzprobe assets update)")
    from probe.context import new_doh_session
    from probe.runner import build_trust, read_token

    source = "helper" if settings.helper_url else "doh_trace"
    resolver = _resolver_address(settings)
    session = new_doh_session(build_trust(settings), limit=2)
    try:
        if settings.helper_url:
            who = await helper_whoami(session, settings.helper_url, read_token(settings.helper_token_file),
                                      resolvers=(resolver,) if resolver else ())
        else:
            assert trace is not None
            who = Whoami(address=await doh_trace(session, trace), info=NetworkInfo(asn=None, network_name="", cc=None),
                         resolvers={})
    except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:  # a failure is data, not a crash
        log.warning("vantage: the %s failed (%s): probe_asn/probe_cc from the config",
                    "helper's whoami" if source == "helper" else "DoH provider's trace", exc)
        if geoip is None:
            db.close()
        return settings, VantageIdentity(source="unknown", failure=f"{source}: {type(exc).__name__}: {exc}"[:300])
    finally:
        await session.close()
    local = db.lookup(who.address)
    if geoip is None:
        db.close()
    info, by = merge(local, who.info)
    res = who.resolvers.get(resolver) if resolver else None
    new = apply(settings, info)
    log.info("vantage: %s %s %s (%s + %s database)", new.probe_asn, new.probe_cc, new.probe_network_name, source,
             by or "no")
    failure = None if info.asn or info.cc else (
        "address not in the database" if db.available or who.info.asn or who.info.cc
        else "no ASN/country database here or at the helper (kzprobe assets update)")
    return new, VantageIdentity(source=source, asn=info.asn, cc=info.cc, network_name=info.network_name, database=by,
                                resolver_asn=res.asn if res else None,
                                resolver_network_name=res.network_name if res and res.asn else "", failure=failure,
                                address=who.address)
