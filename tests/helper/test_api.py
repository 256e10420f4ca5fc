"""The wire format: control_from_json is the inverse of control_to_json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from probe.control import ControlEndpoint, ControlHTTP, ControlResult, control_to_json
from probe.helper import API_VERSION, control_from_json, control_request

FULL = ControlResult(
    source="helper", failure=None, dns_failure=None, dns_addresses=("192.0.2.10", "2001:db8::10"),
    endpoints={
        "192.0.2.10:443": ControlEndpoint(ip="192.0.2.10", port=443, tcp_failure=None, tls_attempted=True,
                                          tls_failure=None, tls_verification_failure=None,
                                          tls_issuer="CN=Test CA,O=Example", tls_leaf_spki_sha256="ab" * 32),
        "[2001:db8::10]:443": ControlEndpoint(ip="2001:db8::10", port=443, tcp_failure=None, tls_attempted=True,
                                              tls_failure="connection_reset"),
        "198.51.100.7:443": ControlEndpoint(ip="198.51.100.7", port=443, tcp_failure="generic_timeout_error"),
        "192.0.2.11:443": ControlEndpoint(ip="192.0.2.11", port=443, tcp_failure=None, tls_attempted=True,
                                          tls_failure=None, tls_verification_failure="ssl_unknown_authority",
                                          tls_issuer="CN=Qaznet Trust Network", tls_leaf_spki_sha256="cd" * 32),
    },
    http=ControlHTTP(failure=None, final_url="https://example.org/", status_code=200,
                     headers=(("Content-Type", "text/html"), ("Server", "nginx")), title="Example",
                     body_length=1234, body_truncated=False, body_sha256="ef" * 32),
    refused=("127.0.0.1:443", "[::1]:443"),
)

CASES: dict[str, ControlResult] = {
    "full": FULL,
    "http_failed": ControlResult(source="helper", failure=None, dns_addresses=("192.0.2.10",),
                                 endpoints={"192.0.2.10:80": ControlEndpoint(ip="192.0.2.10", port=80,
                                                                              tcp_failure="connection_refused")},
                                 http=ControlHTTP(failure="connection_refused", final_url="http://example.org/")),
    "truncated_body": ControlResult(source="helper", failure=None, dns_addresses=("192.0.2.10",),
                                    http=ControlHTTP(failure=None, final_url="http://example.org/big", status_code=200,
                                                     body_length=1 << 20, body_truncated=True, body_sha256="00" * 32)),
    "nxdomain": ControlResult(source="helper", failure=None, dns_failure="dns_nxdomain_error",
                              http=ControlHTTP(failure="dns_nxdomain_error")),
    "control_failed": ControlResult(source="helper", failure="generic_timeout_error"),
    "doh": ControlResult(source="doh", failure=None, dns_addresses=("192.0.2.1",)),
    "local": ControlResult(source="local", failure=None, dns_failure="dns_no_answer"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_through_json_text(name: str) -> None:
    original = CASES[name]
    wire = json.loads(json.dumps({**control_to_json(original), "api_version": API_VERSION}))
    back = control_from_json(wire)
    assert back == original
    assert control_to_json(back) == control_to_json(original)


def test_endpoint_lookup_after_round_trip() -> None:
    back = control_from_json(control_to_json(FULL))
    assert back.endpoint("2001:db8::10", 443) == FULL.endpoints["[2001:db8::10]:443"]
    assert back.endpoint("192.0.2.11", 443).tls_ok  # type: ignore[union-attr]
    assert not back.endpoint("198.51.100.7", 443).tls_attempted  # type: ignore[union-attr]
    assert back.usable


def test_what_json_cannot_carry_gets_defaults() -> None:
    c = ControlResult(source="helper", failure=None, dns_addresses=("192.0.2.10",),
                      http=ControlHTTP(failure=None, final_url="http://x.example/", status_code=200,
                                       headers=(("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")), title=""))
    back = control_from_json(control_to_json(c))
    assert back.dns_queries == ()
    assert back.http is not None and back.http.title is None  # "" is OONI's "no title"
    assert back.http.headers == (("Set-Cookie", "b=2"),)  # a JSON object keeps one value per name


def test_tls_entry_without_tcp_entry_and_extra_keys() -> None:
    d = control_to_json(FULL)
    del d["tcp_connect"]["192.0.2.10:443"]
    d["x_future_key"] = {"anything": 1}
    back = control_from_json(d)
    ep = back.endpoints["192.0.2.10:443"]
    assert ep.tcp_failure is None and ep.tls_ok


def _broken(**change: Any) -> dict[str, Any]:
    d = control_to_json(FULL)
    for path, value in change.items():
        keys = path.split("__")
        target = d
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return d


@pytest.mark.parametrize("d, where", [
    ([], "control: expected an object"),
    (_broken(x_source="vps"), "x_source"),
    (_broken(failure=3), "control.failure"),
    (_broken(dns__addrs="192.0.2.1"), "dns.addrs"),
    (_broken(tcp_connect={"not-an-endpoint": {"failure": None}}), "not an endpoint"),
    (_broken(tcp_connect={"192.0.2.1:80": "ok"}), "tcp_connect"),
    (_broken(tls_handshake={"192.0.2.10:443": []}), "tls_handshake"),
    (_broken(http_request__status_code="200"), "status_code"),
    (_broken(http_request__status_code=True), "status_code"),
    (_broken(http_request__headers=[["a", "b"]]), "headers"),
    (_broken(http_request__x_body_truncated="no"), "x_body_truncated"),
    (_broken(http_request="nope"), "http_request"),
    (_broken(x_refused=[1]), "x_refused"),
])
def test_malformed_json_raises_value_error_naming_the_key(d: Any, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        control_from_json(d)


def test_control_request_body() -> None:
    assert control_request("https://example.org/", [("192.0.2.1", 443), ("2001:db8::1", 80)]) == {
        "url": "https://example.org/", "endpoints": ["192.0.2.1:443", "[2001:db8::1]:80"]}
