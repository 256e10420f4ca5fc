"""The SSRF table: the real helper, on loopback, asked to reach places it must not.

Every refused address is mapped (ConnectTo) to a trap listener, and so is every
unmapped endpoint (``fallback="trap"``): a connection that got past the policy would
reach the trap and be counted. Each attempt must be refused — 403 before any DNS or
connection, or a per-endpoint / per-redirect refusal in a 200 — with the trap at zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from probe.failures import HTTP_INVALID_REDIRECT
from tests.helper.conftest import ALLOWED_IP, LabFactory

#: URLs refused before anything is resolved or dialled: 403.
REFUSED_URLS = [
    "http://127.0.0.1/",
    "https://127.0.0.1:443/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://0x7f000001/",
    "http://%31%32%37.0.0.1/",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
    "https://[64:ff9b::7f00:1]/",
    "http://localhost/",
    "http://allowed.example:8080/",
    "https://allowed.example:22/",
    "http://user@allowed.example/",
    "http://user:secret@allowed.example/",
    "ftp://allowed.example/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_refused_url_is_403_without_dns_or_connection(helper_lab: LabFactory, url: str) -> None:
    lab = await helper_lab(fallback="trap")
    a = await lab.post({"url": url, "endpoints": []})
    assert a.status == 403, a.text
    assert a.json["error"].startswith("refused: ")
    assert lab.doh.queries == [], "the helper resolved a refused URL"
    assert lab.site.requests == [] and lab.trap.accepted == 0


def refused_only(*endpoints: str) -> Callable[[dict[str, Any]], None]:
    """The name resolved only to refused addresses: all in x_refused, nothing measured, no fetch."""
    def check(j: dict[str, Any]) -> None:
        assert set(endpoints) <= set(j["x_refused"]), j["x_refused"]
        assert j["tcp_connect"] == {} and j["tls_handshake"] == {}
        assert j["http_request"]["failure"] is not None and j["http_request"]["status_code"] == -1
    return check


def redirect_refused(*also_refused: str) -> Callable[[dict[str, Any]], None]:
    """The allowed site answered; its redirect into a refused place was not followed."""
    def check(j: dict[str, Any]) -> None:
        assert j["tcp_connect"][f"{ALLOWED_IP}:80"]["status"] is True
        assert j["http_request"]["failure"] == HTTP_INVALID_REDIRECT, j["http_request"]
        assert set(also_refused) <= set(j["x_refused"]), j["x_refused"]
    return check


def endpoints_refused(*endpoints: str) -> Callable[[dict[str, Any]], None]:
    """The probe's endpoints were refused; the allowed site itself was measured normally."""
    def check(j: dict[str, Any]) -> None:
        assert set(endpoints) <= set(j["x_refused"]), j["x_refused"]
        assert not set(endpoints) & set(j["tcp_connect"])
        assert j["tcp_connect"][f"{ALLOWED_IP}:443"]["status"] is True
        assert j["http_request"]["status_code"] == 200
    return check


#: (url, probe endpoints, check of the 200 body)
IN_MEASUREMENT = {
    "name->127.0.0.1": ("http://loopback.example/", [], refused_only("127.0.0.1:80")),
    "name->10.0.0.5": ("https://private.example/", [], refused_only("10.0.0.5:443")),
    "name->169.254.169.254": ("http://metadata.example/latest/meta-data/", [], refused_only("169.254.169.254:80")),
    "name->::1": ("http://v6loop.example/", [], refused_only("[::1]:80")),
    "name->::ffff:127.0.0.1": ("http://mapped.example/", [], refused_only()),
    "name->fc00::1": ("https://ula.example/", [], refused_only("[fc00::1]:443")),
    "redirect->127.0.0.1": ("http://allowed.example/redir-loopback", [], redirect_refused()),
    "redirect->https://127.0.0.1": ("http://allowed.example/redir-loopback-https", [], redirect_refused()),
    "redirect->name->169.254.169.254": ("http://allowed.example/redir-metadata", [], redirect_refused()),
    "redirect->name->10.0.0.5": ("http://allowed.example/redir-private-name", [], redirect_refused()),
    "redirect->[::ffff:127.0.0.1]": ("http://allowed.example/redir-mapped", [], redirect_refused()),
    "redirect->[::1]": ("http://allowed.example/redir-v6-loopback", [], redirect_refused()),
    "redirect->2130706433": ("http://allowed.example/redir-decimal", [], redirect_refused()),
    "redirect->allowed:8080": ("http://allowed.example/redir-port", [], redirect_refused(f"{ALLOWED_IP}:8080")),
    "redirect->allowed-ip:22": ("http://allowed.example/redir-literal-port", [], redirect_refused(f"{ALLOWED_IP}:22")),
    "endpoint 127.0.0.1:443": ("https://allowed.example/", ["127.0.0.1:443"], endpoints_refused("127.0.0.1:443")),
    "endpoints private/link-local/v6/ports": (
        "https://allowed.example/",
        ["10.0.0.1:443", "[::1]:443", "[::ffff:127.0.0.1]:443", "169.254.169.254:80", "0.0.0.0:443",
         "[fe80::1]:443", "255.255.255.255:443", f"{ALLOWED_IP}:22", f"{ALLOWED_IP}:8080", f"{ALLOWED_IP}:443"],
        endpoints_refused("10.0.0.1:443", "[::1]:443", "[::ffff:7f00:1]:443", "169.254.169.254:80",
                          "0.0.0.0:443", "[fe80::1]:443", "255.255.255.255:443", f"{ALLOWED_IP}:22",
                          f"{ALLOWED_IP}:8080"),
    ),
}


@pytest.mark.parametrize("case", list(IN_MEASUREMENT))
async def test_refused_inside_the_measurement_without_connection(helper_lab: LabFactory, case: str) -> None:
    url, endpoints, check = IN_MEASUREMENT[case]
    lab = await helper_lab(fallback="trap")
    a = await lab.post({"url": url, "endpoints": endpoints})
    assert a.status == 200, a.text
    check(a.json)
    assert lab.trap.accepted == 0, f"{case}: a refused address was connected to"


async def test_mixed_answer_measures_only_the_allowed_address(helper_lab: LabFactory) -> None:
    lab = await helper_lab(fallback="trap")
    a = await lab.post({"url": "https://mixed.example/"})
    assert a.status == 200, a.text
    j = a.json
    assert j["dns"]["addrs"] == ["127.0.0.1", ALLOWED_IP]
    assert j["x_refused"] == ["127.0.0.1:443"]
    assert list(j["tcp_connect"]) == [f"{ALLOWED_IP}:443"]
    assert j["tls_handshake"][f"{ALLOWED_IP}:443"]["status"] is True
    assert j["http_request"]["status_code"] == 200
    assert lab.trap.accepted == 0


def test_the_table_is_large_enough() -> None:
    assert len(REFUSED_URLS) + len(IN_MEASUREMENT) >= 40


# --- controls of the experiment ----------------------------------------------------------


async def test_the_trap_counts_what_a_permissive_policy_lets_through(helper_lab: LabFactory) -> None:
    """Negative control: with everything allow-listed the same requests do reach the trap,
    so a zero above means "refused", not "mapped nowhere"."""
    from probe.helper.ssrf import AddressPolicy

    lab = await helper_lab(fallback="trap", policy=AddressPolicy(allow_private=("0.0.0.0/0", "::/0")))
    for body in ({"url": "http://loopback.example/"}, {"url": "http://metadata.example/"},
                 {"url": "https://allowed.example/", "endpoints": ["10.0.0.1:443"]},
                 {"url": "http://allowed.example/redir-mapped"}):
        before = lab.trap.accepted
        a = await lab.post(body)
        assert a.status == 200, a.text
        assert lab.trap.accepted > before, body


async def test_socket_guard_alone_holds(helper_lab: LabFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: even if measure_control's own address and port checks let
    everything through, the guard at the socket refuses every dial the policy forbids."""
    from probe.helper import server

    real = server.measure_control

    async def careless(*args: Any, **kw: Any) -> Any:
        kw["allow_address"] = lambda ip: True
        kw["allowed_ports"] = None
        return await real(*args, **kw)

    monkeypatch.setattr(server, "measure_control", careless)
    lab = await helper_lab(fallback="trap")
    for body in ({"url": "http://loopback.example/"}, {"url": "https://mixed.example/"},
                 {"url": "https://allowed.example/", "endpoints": ["10.0.0.1:443", "[::1]:443", f"{ALLOWED_IP}:22"]},
                 {"url": "http://allowed.example/redir-metadata"}, {"url": "http://allowed.example/redir-mapped"},
                 {"url": "http://allowed.example/redir-port"}):
        a = await lab.post(body)
        assert a.status == 200, a.text
        assert a.json["x_refused"], body
    assert lab.trap.accepted == 0
