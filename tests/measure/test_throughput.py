"""Throughput records and the benign-SNI baseline (FC-19): rules on hand-made hops, the
baseline against loopback servers (the throttled end-to-end case is in
tests/nettests/test_throttling_e2e.py)."""

from __future__ import annotations

import pytest
import trustme

from probe.addresses import ConnectTo
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse
from probe.measure.throughput import (
    MIN_BYTES,
    MIN_DURATION_S,
    SUSPECT_BELOW_BPS,
    THROTTLING_RATIO,
    ThroughputCheck,
    Transfer,
    fmt_rate,
    measure_throughput,
    transfer_of,
)
from probe.measure.tls import TrustStore
from probe.timing import Clock
from tests.fixtures.servers import Route

IP = "192.0.2.111"
BIG = MIN_BYTES * 2


@pytest.fixture
def trust(ca: trustme.CA) -> TrustStore:
    return TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), policy="relaxed")


def hop(url: str = "https://video.example.org/page", *, received: int | None = BIG, duration_s: float | None = 4.0,
        failure: str | None = None, ip: str | None = IP) -> HTTPRequest:
    resp = None if failure else HTTPResponse(status_code=200, headers=(), body_length=received or 0,
                                             body_truncated=False, body_sha256="0" * 64, body_b64="", title=None)
    return HTTPRequest(url=url, ip=ip, port=443 if ip else None, method="GET", request_headers=(), t0=0.0, t=5.0,
                       failure=failure, response=resp, body_bytes_received=received, body_duration_s=duration_s)


def check(target: Transfer, baseline: Transfer | None, retest: Transfer | None = None) -> ThroughputCheck:
    """A check whose re-test (by default) was as slow as the target."""
    return ThroughputCheck(url="https://video.example.org/page", ip=IP, port=443, target=target,
                           baseline_sni="example.com" if baseline else None, baseline=baseline,
                           retest=target if retest is None else retest)


@pytest.mark.parametrize(("retest", "throttled"), [
    (Transfer(bytes=4 * MIN_BYTES, duration_s=4.0, failure=None), True),  # slow again: throttling
    (Transfer(bytes=4 * MIN_BYTES, duration_s=4.0, failure="generic_timeout_error"), True),  # cut again
    (Transfer(bytes=4 * MIN_BYTES, duration_s=0.05, failure=None), False),  # fast now: the first was a stall
    (Transfer(bytes=100, duration_s=0.05, failure=None), False),  # too small to tell
    (Transfer(bytes=4 * MIN_BYTES, duration_s=4.0, failure="connection_reset"), False),  # unusable
])
def test_one_slow_fetch_is_not_enough(retest: Transfer, throttled: bool) -> None:
    """Throttling needs the target slow twice (fetch and re-test) against the baseline."""
    slow = Transfer(bytes=4 * MIN_BYTES, duration_s=4.0, failure=None)
    fast = Transfer(bytes=4 * MIN_BYTES, duration_s=0.05, failure=None)
    assert check(slow, fast, retest).throttled is throttled
    assert not ThroughputCheck(url="https://x/", ip=IP, port=443, target=slow, baseline=fast).throttled  # no re-test


def test_transfer_rate_and_floor() -> None:
    assert Transfer(bytes=64000, duration_s=2.0, failure=None).bps == 32000.0
    assert Transfer(bytes=1000, duration_s=0.0, failure=None).bps == 1000 / MIN_DURATION_S
    assert Transfer(bytes=MIN_BYTES, duration_s=1.0, failure=None).enough
    assert not Transfer(bytes=MIN_BYTES - 1, duration_s=1.0, failure=None).enough


def test_transfer_of_needs_a_response_head() -> None:
    assert transfer_of(hop(received=None, duration_s=None, failure="connection_refused")) is None
    t = transfer_of(hop(received=40000, duration_s=2.0, failure="generic_timeout_error"))
    assert t == Transfer(bytes=40000, duration_s=2.0, failure="generic_timeout_error", status_code=None)
    assert transfer_of(hop()).status_code == 200


SLOW = Transfer(bytes=BIG, duration_s=4.0, failure=None)  # 16 kB/s
FAST = Transfer(bytes=BIG, duration_s=0.01, failure=None)  # 6.5 MB/s


@pytest.mark.parametrize(("target", "baseline", "ratio", "throttled"), [
    pytest.param(SLOW, FAST, 400.0, True, id="sni-throttled"),
    pytest.param(SLOW, Transfer(bytes=BIG, duration_s=0.4, failure=None), 10.0, True, id="exactly-10x"),
    pytest.param(SLOW, Transfer(bytes=BIG, duration_s=0.41, failure=None), 4.0 / 0.41, False, id="just-under-10x"),
    pytest.param(SLOW, SLOW, 1.0, False, id="slow-path-for-every-sni"),
    pytest.param(SLOW, None, None, False, id="no-baseline"),
    pytest.param(SLOW, Transfer(bytes=BIG, duration_s=0.01, failure="connection_reset"), None, False,
                 id="baseline-failed-mid-body"),
    pytest.param(SLOW, Transfer(bytes=MIN_BYTES - 1, duration_s=0.001, failure=None), None, False,
                 id="baseline-too-small"),
    pytest.param(Transfer(bytes=MIN_BYTES - 1, duration_s=4.0, failure=None), FAST, None, False,
                 id="target-too-small"),
    pytest.param(Transfer(bytes=BIG, duration_s=4.0, failure="generic_timeout_error"), FAST, 400.0, True,
                 id="target-cut-mid-body"),
])
def test_ratio_and_throttled(target: Transfer, baseline: Transfer | None, ratio: float | None,
                             throttled: bool) -> None:
    c = check(target, baseline)
    assert c.ratio == (pytest.approx(ratio) if ratio is not None else None)
    assert c.throttled is throttled
    assert THROTTLING_RATIO == 10.0


def test_suspect() -> None:
    assert check(SLOW, None).suspect
    assert not check(FAST, None).suspect  # fast enough: no second GET
    assert not check(Transfer(bytes=MIN_BYTES - 1, duration_s=9.0, failure=None), None).suspect
    assert check(Transfer(bytes=BIG, duration_s=0.001, failure="generic_timeout_error"), None).suspect
    assert FAST.bps >= SUSPECT_BELOW_BPS > SLOW.bps


@pytest.mark.parametrize(("bps", "text"), [(12.4, "12 B/s"), (31900.0, "31.9 kB/s"), (2.5e6, "2.5 MB/s")])
def test_fmt_rate(bps: float, text: str) -> None:
    assert fmt_rate(bps) == text


@pytest.mark.parametrize("h", [
    pytest.param(hop(received=None, duration_s=None, failure="connection_reset"), id="no-head"),
    pytest.param(hop(failure="connection_reset"), id="reset-mid-body"),
    pytest.param(hop(ip=None), id="no-address"),
])
async def test_nothing_to_time(h: HTTPRequest, trust: TrustStore) -> None:
    fetch = HTTPFetch(requests=(h,), failure=h.failure)
    assert await measure_throughput(fetch, benign_sni="example.com", clock=Clock(), timeout_s=1.0, trust=trust,
                                    connect_to=ConnectTo(fallback="127.0.0.1:1"), max_body_bytes=1 << 20) is None
    assert await measure_throughput(HTTPFetch(requests=(), failure=None), benign_sni="example.com", clock=Clock(),
                                    timeout_s=1.0, trust=trust, connect_to=None, max_body_bytes=1 << 20) is None


@pytest.mark.parametrize(("h", "note"), [
    pytest.param(hop(received=MIN_BYTES - 1), "too few", id="small-page"),
    pytest.param(hop(duration_s=0.001), "not slow", id="fast"),
    # plain HTTP is timed too (issue 12): a fast page needs no baseline
    pytest.param(hop("http://video.example.org/page", duration_s=0.001), "not slow", id="plain-http-fast"),
])
async def test_no_baseline_needed(h: HTTPRequest, note: str, trust: TrustStore) -> None:
    # the fallback endpoint would refuse: a baseline attempt would show as a failure
    c = await measure_throughput(HTTPFetch(requests=(h,), failure=None), benign_sni="example.com", clock=Clock(),
                                 timeout_s=1.0, trust=trust, connect_to=ConnectTo(fallback="127.0.0.1:1"),
                                 max_body_bytes=1 << 20)
    assert c is not None and c.baseline_sni is None and c.baseline is None and c.ratio is None
    assert note in c.note


async def test_baseline_same_url_same_address_benign_sni_no_verification(web_server, trust) -> None:
    # the certificate is not trusted (other CA): the baseline is about speed, not content
    page = b"<title>v</title>" + b"z" * BIG
    server = await web_server({"/page": page}, https=True, names=("video.example.org",), issuer="other")
    c = await measure_throughput(HTTPFetch(requests=(hop(),), failure=None), benign_sni="example.com", clock=Clock(),
                                 timeout_s=2.0, trust=trust, connect_to=server.connect_to(IP), max_body_bytes=1 << 20)
    assert c is not None and c.baseline is not None and c.baseline_failure is None
    assert c.baseline.bytes == len(page) and c.baseline.status_code == 200
    assert server.sni == ["example.com", "video.example.org"]  # the baseline, then the re-test
    seen = server.requests[-2]
    assert (seen.path, dict(seen.headers)["Host"]) == ("/page", "video.example.org")
    # the first fetch was slow (16 kB/s), but the re-test with the target's own SNI is as fast
    # as the baseline: one stall is not throttling (break test: false "throttling" under load)
    assert c.retest is not None and c.retest_usable and c.ratio is not None and not c.throttled


async def test_baseline_body_is_capped_like_the_fetch(web_server, trust) -> None:
    server = await web_server({"/page": Route(action="endless")}, https=True, names=("video.example.org",))
    c = await measure_throughput(HTTPFetch(requests=(hop(),), failure=None), benign_sni="example.com", clock=Clock(),
                                 timeout_s=2.0, trust=trust, connect_to=server.connect_to(IP), max_body_bytes=BIG)
    assert c is not None and c.baseline is not None and c.baseline_failure is None
    assert BIG <= c.baseline.bytes <= 2 * BIG + 65536


@pytest.mark.parametrize(("route", "failure"), [
    pytest.param(Route(action="reset"), "connection_reset", id="reset"),
    pytest.param(Route(status=301, headers=(("Location", "https://elsewhere.example.org/"),)),
                 "http_too_many_redirects", id="redirect-not-followed"),
])
async def test_failed_baseline_gives_no_ratio(web_server, trust, route: Route, failure: str) -> None:
    server = await web_server({"/page": route}, https=True, names=("video.example.org",))
    c = await measure_throughput(HTTPFetch(requests=(hop(),), failure=None), benign_sni="example.com", clock=Clock(),
                                 timeout_s=2.0, trust=trust, connect_to=server.connect_to(IP), max_body_bytes=1 << 20)
    assert c is not None and c.baseline_sni == "example.com"
    assert c.baseline_failure == failure and c.ratio is None and not c.throttled
    assert failure in c.note and "no comparison" in c.note


async def test_baseline_refused_connection(closed_port, trust) -> None:
    c = await measure_throughput(HTTPFetch(requests=(hop(),), failure=None), benign_sni="example.com", clock=Clock(),
                                 timeout_s=1.0, trust=trust, connect_to=ConnectTo(fallback=closed_port.endpoint),
                                 max_body_bytes=1 << 20)
    assert c is not None and c.baseline is None and c.baseline_failure == "connection_refused"
    assert c.ratio is None and "connection_refused" in c.note


def test_plain_http_baseline_is_the_same_page_over_https() -> None:
    """issue 12: a plain-HTTP fetch's baseline hides its Host inside TLS under the benign SNI."""
    from probe.measure.throughput import baseline_url

    assert baseline_url("http://www.example.org/a?b=1") == "https://www.example.org/a?b=1"
    assert baseline_url("http://www.example.org:8080/x") == "https://www.example.org/x"
    assert baseline_url("https://www.example.org/x") == "https://www.example.org/x"
