"""Throughput of the fetch, against a baseline on the same path with a benign SNI.

A plain-HTTP fetch is compared with the same page fetched over HTTPS from the same address
with the benign SNI (:func:`baseline_url`): throttling keyed on the plain-HTTP Host is found
too (issue 12); a site without HTTPS gets no baseline, so no throttling verdict.

SNI-triggered throttling (FIELD-CASES FC-19; net4people/bbs#382, YouTube in Russia 2024;
Censored Planet's 2021 study of Twitter throttling in Russia, net4people/bbs#65) lets
the handshake and the page through, slowly: a fixed timeout then decides between
"accessible" and a failure, and the verdict flip-flops between runs. The stable
signal is a *ratio*: the same page, from the same address, over the same path, with
only the ClientHello's SNI changed to a benign name, arrives ten times faster or more.
A slow vantage point (a congested uplink, a far server) slows both fetches alike, so
the ratio stays near 1 there.

:func:`measure_throughput` takes the final hop of the probe's HTTPS fetch (it carries
``body_bytes_received``/``body_duration_s``, :mod:`probe.measure.http`), and when that
transfer is big enough to tell (:data:`MIN_BYTES`) and slow enough to matter
(:data:`SUSPECT_BELOW_BPS`), or timed out mid-body, fetches the baseline: the same
URL, the same IP and port, TLS with the benign SNI and verification off (a baseline
for speed only, never a verdict on content), Host header = the target host, within
the same per-hop timeout and body cap as the fetch. The verdict rule
``throttling.sni_ratio`` (:mod:`probe.verdict`) reads :attr:`ThroughputCheck.ratio`.

Throughput is measured from the response head to the end of the body (connect, TLS
and server think time excluded), in body bytes as they crossed the wire (transfer
decoding undone, content coding not), per second. Body bytes that arrived together
with the head (over TLS, at most the rest of the head's record: 16 KiB, RFC 8446
§5.1) are counted but were not timed, so a paced transfer looks up to
16 KiB/duration faster than it is (the lab's 256 kbit/s = 32 kB/s pacing of a 64 KiB
page measures ~43 kB/s). A fast body that is whole when the head is parsed has a
duration near 0, floored at :data:`MIN_DURATION_S`, so a fast baseline's rate is a lower
bound. One slow fetch is never enough: a stall during it (a loaded CPU, a burst of loss)
looks like throttling against a baseline fetched a moment later, so a suspect target is
fetched once more after the baseline and its better rate is the one compared
(:attr:`ThroughputCheck.retest`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from probe.addresses import ConnectTo, format_endpoint
from probe.failures import GENERIC_TIMEOUT
from probe.measure.http import HTTPFetch, HTTPRequest, http_get
from probe.measure.tls import TrustStore
from probe.timing import Clock

#: Body bytes a transfer needs before its rate means anything (32 KiB). A body that fits
#: in the first one or two TCP congestion windows (RFC 6928: 10 segments, ~14.6 KB)
#: arrives in about one round trip whatever the bandwidth, so its "rate" measures
#: latency; 32 KiB needs several windows, and at a throttled 8 KB/s (FC-19's recipe)
#: takes ~4 s.
MIN_BYTES = 32 * 1024

#: Bytes/s below which a transfer is slow enough to fetch the baseline (1 MB/s = 8 Mbit/s).
#: Throttling seen in the field is to tens or hundreds of kbit/s (FC-19's recipe: 8 KB/s;
#: the lab's: 256 kbit/s); this bound is generous, and still spares a second GET for
#: pages that arrive fast.
SUSPECT_BELOW_BPS = 1_000_000.0

#: Baseline/target throughput ratio from which the target counts as throttled (FC-19:
#: "a target/baseline throughput ratio of 10x or more, measured against the same IP with
#: a benign SNI").
THROTTLING_RATIO = 10.0

#: Longest gap (seconds) between a cut body's last byte and the timeout for the transfer to count
#: as still flowing (``HTTPRequest.body_stall_s``): a slow, steady page (even 1 kB/s) has gaps of
#: milliseconds; a freeze (net4people/bbs#490: 16 KiB, then nothing) stops seconds before the
#: deadline (the per-hop timeout is 10 s or more).
STEADY_STALL_S = 2.0

#: Shortest duration a rate is computed over (seconds): a fast body is often whole when the
#: head is parsed (duration ~0), so its rate is a lower bound bytes/10 ms — finite, and
#: conservative for a baseline (it can only lower the ratio).
MIN_DURATION_S = 0.01


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """One body transfer.

    Attributes:
        bytes: body bytes received (wire bytes, see the module doc).
        duration_s: seconds from the response head to the end of the body read.
        failure: the hop's failure (e.g. generic_timeout_error mid-body), None = complete.
        status_code: the response's status, None when the hop failed.
    """

    bytes: int
    duration_s: float
    failure: str | None
    status_code: int | None = None

    @property
    def bps(self) -> float:
        """Bytes per second (the duration floored at :data:`MIN_DURATION_S`)."""
        return self.bytes / max(self.duration_s, MIN_DURATION_S)

    @property
    def enough(self) -> bool:
        """At least :data:`MIN_BYTES` arrived: the rate can be compared."""
        return self.bytes >= MIN_BYTES


def transfer_of(req: HTTPRequest) -> Transfer | None:
    """The :class:`Transfer` of a hop; None when no response head arrived."""
    if req.body_bytes_received is None or req.body_duration_s is None:
        return None
    return Transfer(bytes=req.body_bytes_received, duration_s=req.body_duration_s, failure=req.failure,
                    status_code=req.response.status_code if req.response is not None else None)


@dataclass(frozen=True, kw_only=True)
class ThroughputCheck:
    """The target transfer, and the baseline when one was fetched.

    Attributes:
        url: the URL of the hop measured (the fetch's final hop).
        ip, port: its logical endpoint (the baseline uses the same).
        target: the probe's transfer of that hop.
        baseline_sni: the benign SNI of the baseline; None = no baseline attempted.
        baseline: the baseline's transfer; None when it was not attempted or got no
            response head (then ``baseline_failure`` says why).
        baseline_failure: the baseline fetch's failure, None when it completed or was
            not attempted.
        retest: a second fetch of the target (its own SNI, right after the baseline) made
            when the first comparison says throttled; None when not made or it got no
            response head. The target's rate is the *better* of the two, so one stall
            (a busy CPU, a burst of loss) during the first fetch is not a verdict: SNI
            throttling slows every fetch with that SNI, a stall does not (break test:
            false "throttling" under load).
        note: why there is no comparison ("" when there is one).
    """

    url: str
    ip: str
    port: int
    target: Transfer
    baseline_sni: str | None = None
    baseline: Transfer | None = None
    baseline_failure: str | None = None
    retest: Transfer | None = None
    note: str = ""

    @property
    def address(self) -> str:
        return format_endpoint(self.ip, self.port)

    @property
    def suspect(self) -> bool:
        """The target is slow enough (or failed mid-body) and big enough to be judged."""
        return self.target.enough and (self.target.failure is not None or self.target.bps < SUSPECT_BELOW_BPS)

    @property
    def retest_usable(self) -> bool:
        """The retest got a big-enough body, complete or cut by a timeout (as throttling does)."""
        r = self.retest
        return r is not None and r.enough and r.failure in (None, GENERIC_TIMEOUT)

    @property
    def target_bps(self) -> float:
        """The target's rate: the better of the fetch and a usable retest (bytes/s)."""
        return max(self.target.bps, self.retest.bps) if self.retest_usable else self.target.bps  # type: ignore[union-attr]

    @property
    def ratio(self) -> float | None:
        """Baseline bytes/s over :attr:`target_bps`; None without a complete, big-enough baseline
        or target (never a ratio without the baseline)."""
        b = self.baseline
        if b is None or b.failure is not None or not b.enough or not self.target.enough:
            return None
        return b.bps / max(self.target_bps, 1e-9)

    @property
    def throttled(self) -> bool:
        """ratio ≥ :data:`THROTTLING_RATIO` with both target fetches slow (a usable retest)."""
        r = self.ratio
        return r is not None and r >= THROTTLING_RATIO and self.retest_usable


def fmt_rate(bps: float) -> str:
    """A human rate: ``"31.9 kB/s"`` (1 kB = 1000 bytes)."""
    for unit, div in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bps >= div:
            return f"{bps / div:.1f} {unit}"
    return f"{bps:.0f} B/s"


def baseline_url(url: str) -> str:
    """The baseline's URL: the same for https; for plain http the same host and path over
    HTTPS (port 443): the page's Host then travels inside TLS under the benign SNI, where a
    censor keyed on the plain-HTTP Host (or the SNI) does not see it (issue 12: throttling
    over plain HTTP)."""
    if not url.startswith("http://"):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(("https", host, parts.path or "/", parts.query, ""))


async def measure_throughput(fetch: HTTPFetch, *, benign_sni: str, clock: Clock, timeout_s: float,
                             trust: TrustStore, connect_to: ConnectTo | None, max_body_bytes: int
                             ) -> ThroughputCheck | None:
    """Judge the final hop's rate; fetch the benign-SNI baseline when it is suspect.

    Args:
        fetch: the probe's fetch of the input.
        benign_sni: the SNI of the baseline (setting ``tls.benign_sni``).
        clock: the measurement's clock.
        timeout_s: the baseline's deadline (the fetch's per-hop ``timeouts.http_s``).
        trust: passed to :func:`probe.measure.http.http_get` (verification is off).
        connect_to: the run's endpoint remap (tests, lab).
        max_body_bytes: the baseline's body cap (the fetch's).

    Returns:
        None when there is nothing to measure: no final hop, not https, no address, no
        response head, or a failure other than a timeout (a reset, a TLS error: other
        rules judge those). Else a :class:`ThroughputCheck`; ``baseline_sni`` is None
        when no baseline was needed (``note`` says why). Never raises for network
        failures.
    """
    hop = fetch.final
    if hop is None or not hop.url.startswith(("https://", "http://")) or hop.ip is None or hop.port is None:
        return None
    target = transfer_of(hop)
    if target is None or target.failure not in (None, GENERIC_TIMEOUT):
        return None
    base = ThroughputCheck(url=hop.url, ip=hop.ip, port=hop.port, target=target)
    if not target.enough:
        return replace(base, note=f"only {target.bytes} body bytes (< {MIN_BYTES}): too few to tell a rate "
                                   "from latency; no baseline fetched")
    if not base.suspect:
        return replace(base, note=f"{fmt_rate(target.bps)} is not slow (>= {fmt_rate(SUSPECT_BELOW_BPS)}); "
                                   "no baseline fetched")

    async def no_resolve(host: str) -> list[str]:  # max_redirects=0: never asked
        return []

    b = await http_get(baseline_url(hop.url), ip=hop.ip, clock=clock, timeout_s=timeout_s, trust=trust,
                       resolve=no_resolve, connect_to=connect_to, max_body_bytes=max_body_bytes, store_body_bytes=0,
                       max_redirects=0, verify_tls=False, server_name=benign_sni)
    bhop = b.final
    btransfer = transfer_of(bhop) if bhop is not None else None
    bfail = b.failure
    check = replace(base, baseline_sni=benign_sni, baseline=btransfer, baseline_failure=bfail)
    if check.ratio is None:
        why = (f"the baseline failed ({bfail})" if bfail is not None and (btransfer is None or not btransfer.enough)
               else f"the baseline failed mid-body ({bfail})" if bfail is not None
               else f"the baseline got only {btransfer.bytes if btransfer else 0} body bytes")
        return replace(check, note=f"{why}: no comparison")
    if check.ratio < THROTTLING_RATIO:
        return check
    # Slow against the baseline: fetch the target once more, now, so a stall during the
    # first fetch cannot make the verdict (ThroughputCheck.retest).
    r = await http_get(hop.url, ip=hop.ip, clock=clock, timeout_s=timeout_s, trust=trust, resolve=no_resolve,
                       connect_to=connect_to, max_body_bytes=max_body_bytes, store_body_bytes=0, max_redirects=0,
                       verify_tls=False)
    rtransfer = transfer_of(r.final) if r.final is not None else None
    check = replace(check, retest=rtransfer)
    if not check.retest_usable:
        return replace(check, note=f"the re-test of the target failed ({r.failure or 'too few bytes'}): "
                                   "one slow fetch is not enough for a verdict")
    return check
