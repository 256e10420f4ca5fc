"""Which failed redirect targets the web test measures again (issue 12): only a hop that failed with a
reset, a timeout or an EOF before any response head — the failures that do not say their step. The
positive case runs end to end in the lab (tests/lab/test_lab_e2e.py, scenario http-redirects)."""

from __future__ import annotations

import asyncio

import pytest

from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse
from probe.nettests import web


def _hop(url: str, failure: str | None, *, ip: str | None = "198.51.100.9", head: bool = False) -> HTTPRequest:
    resp = HTTPResponse(status_code=302, headers=(("Location", url),), body_length=0, body_truncated=False,
                        body_sha256="0" * 64, body_b64="", title=None) if failure is None else None
    return HTTPRequest(url=url, ip=ip, port=443 if ip else None, method="GET", request_headers=(), t0=0.0, t=0.1,
                       failure=failure, response=resp, body_bytes_received=0 if head else None)


def _fetch(last: HTTPRequest) -> HTTPFetch:
    return HTTPFetch(requests=(_hop("https://a.example/", None), last), failure=last.failure)


@pytest.mark.parametrize("fetch", [
    HTTPFetch(requests=(_hop("https://a.example/", None),), failure=None),  # no failure
    HTTPFetch(requests=(_hop("https://a.example/", "connection_reset"),), failure="connection_reset"),  # no redirect
    _fetch(_hop("https://b.example/", "dns_nxdomain_error", ip=None)),  # its step is known: DNS
    _fetch(_hop("https://b.example/", "connection_refused")),  # known: TCP
    _fetch(_hop("https://b.example/", "ssl_unknown_authority")),  # known: TLS
    _fetch(_hop("https://b.example/", "generic_timeout_error", head=True)),  # the head arrived: HTTP
], ids=["ok", "no-redirect", "nxdomain", "refused", "tls", "mid-body"])
def test_unambiguous_or_no_redirect_failure_is_not_measured_again(fetch: HTTPFetch) -> None:
    async def no_ctx() -> web.EndpointObservation | None:
        return await web._redirect_target(fetch, None, None)  # type: ignore[arg-type]  # never dials

    assert asyncio.run(no_ctx()) is None


@pytest.mark.parametrize("failure", sorted(web.AMBIGUOUS_HOP_FAILURES))
def test_ambiguous_failure_measures_the_target_endpoint_again(failure: str, monkeypatch) -> None:
    calls = []

    async def fake_endpoint(ip, port, source, domain, use_tls, tls_check, ctx, clock, keep=None):
        calls.append((ip, port, source, domain, use_tls, tls_check))
        return "measured"

    monkeypatch.setattr(web, "_endpoint", fake_endpoint)
    got = asyncio.run(web._redirect_target(_fetch(_hop("https://b.example/x", failure)), None, None))  # type: ignore[arg-type]
    assert got == "measured" and calls == [("198.51.100.9", 443, "probe", "b.example", True, False)]
