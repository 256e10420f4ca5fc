"""http_get against loopback aiohttp servers: pinning, redirects, caps, decoding, failures, TLS."""

from __future__ import annotations

import base64
import gzip
import hashlib
import socket
import tracemalloc
import zlib

import pytest
import trustme
from yarl import URL

from probe.addresses import ConnectTo
from probe.measure.http import (
    BROWSER_HEADERS,
    HTTPFetch,
    extract_title,
    http_get,
    not_local_address,
    valid_host,
)
from probe.measure.tls import TrustStore
from probe.timing import Clock
from tests.fixtures.servers import Listener, Route, redirect

IP = "192.0.2.21"  # logical address of www.example.org (documentation range, never dialled)
OTHER_IP = "192.0.2.22"
GRANI = "Грани.Ру: Главное"


@pytest.fixture
def trust(ca: trustme.CA) -> TrustStore:
    return TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), policy="relaxed")


async def no_dns(host: str) -> list[str]:
    """A resolver that knows nothing: the first hop must not need it."""
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")


def dns(table: dict[str, list[str]]):
    async def resolve(host: str) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")
        return table[host]

    return resolve


async def get(url: str, connect_to: ConnectTo, trust: TrustStore, *, ip: str | None = IP,
              resolve=no_dns, timeout_s: float = 3.0, **kwargs) -> HTTPFetch:
    return await http_get(url, ip=ip, clock=Clock(), timeout_s=timeout_s, trust=trust,
                          resolve=resolve, connect_to=connect_to, **kwargs)


def html_page(title: str, extra: bytes = b"") -> bytes:
    return f"<html><head><title>{title}</title></head><body>hi</body></html>".encode() + extra


async def test_200_with_title_pinned_to_the_measured_ip(web_server, trust: TrustStore) -> None:
    """www.example.org does not resolve here: only the pin makes the request possible."""
    body = b"<html><head><title>\n  Example &amp; Co\t</title></head><body>hello</body></html>"
    server = await web_server({"/": Route(body=body, headers=(("Content-Type", "text/html; charset=utf-8"),
                                                              ("X-Test", "1")))})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure is None
    assert len(fetch.requests) == 1
    req = fetch.final
    assert req is not None and req.response is not None
    assert (req.url, req.ip, req.port, req.method, req.failure) == ("http://www.example.org/", IP, 80, "GET", None)
    assert req.request_headers[0] == ("Host", "www.example.org")
    assert req.request_headers[1:] == BROWSER_HEADERS
    resp = req.response
    assert resp.status_code == 200
    assert resp.header("x-test") == "1" and resp.header("Content-Type") == "text/html; charset=utf-8"
    assert ("X-Test", "1") in resp.headers
    assert resp.title == "Example & Co"
    assert (resp.body_length, resp.body_truncated) == (len(body), False)
    assert resp.body_sha256 == hashlib.sha256(body).hexdigest()
    assert base64.b64decode(resp.body_b64) == body
    assert 0 <= req.t0 <= req.t
    # what the server received: browser-like headers
    seen = dict(server.requests[0].headers)
    assert seen["Host"] == "www.example.org"
    assert seen["User-Agent"].startswith("Mozilla/5.0") and "Chrome/" in seen["User-Agent"]
    assert seen["Accept-Language"] == "en-US,en;q=0.9"
    assert seen["Accept-Encoding"] == "gzip, deflate"


async def test_name_resolved_when_no_pin(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": html_page("ok")})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust, ip=None,
                      resolve=dns({"www.example.org": [IP, "192.0.2.99"]}))
    assert fetch.failure is None and fetch.final.ip == IP  # first address used
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust, ip=None)
    assert fetch.failure == "dns_nxdomain_error"
    assert (fetch.final.ip, fetch.final.port, fetch.final.response) == (None, None, None)


async def test_ip_literal_url_is_remapped_too(web_server, trust: TrustStore) -> None:
    """aiohttp skips the resolver for IP literals; ConnectTo must still apply."""
    server = await web_server({"/x": html_page("literal")})
    fetch = await get(f"http://{IP}/x", server.connect_to(IP), trust, ip=None)
    assert fetch.failure is None
    assert (fetch.final.ip, fetch.final.port) == (IP, 80)
    assert fetch.final.response.title == "literal"
    assert dict(server.requests[0].headers)["Host"] == IP


async def test_redirect_chain_recorded_hop_by_hop(web_server, trust: TrustStore) -> None:
    server = await web_server({
        "/": redirect("/a", 301),                                   # relative, same host
        "/a": redirect("b?x=1#frag", 302),                          # relative path + fragment
        "/b?x=1": redirect("http://other.example.org/c", 303),      # another host: resolved
        "/c": redirect("https://www.example.org/d", 307),           # scheme change: port 443
        "/d": html_page("done"),
    }, https=True)
    connect_to = ConnectTo(mapping={**server.connect_to(IP).mapping, **server.connect_to(OTHER_IP).mapping})
    fetch = await get("http://www.example.org/", connect_to, trust,
                      resolve=dns({"other.example.org": [OTHER_IP]}))
    assert fetch.failure is None
    hops = [(r.url, r.ip, r.port, r.response.status_code) for r in fetch.requests]
    assert hops == [
        ("http://www.example.org/", IP, 80, 301),
        ("http://www.example.org/a", IP, 80, 302),
        ("http://www.example.org/b?x=1", IP, 80, 303),
        ("http://other.example.org/c", OTHER_IP, 80, 307),
        ("https://www.example.org/d", IP, 443, 200),
    ]
    assert fetch.final.response.title == "done"
    assert [r.request_headers[0] for r in fetch.requests][3] == ("Host", "other.example.org")
    assert all(r.t0 <= r.t for r in fetch.requests)
    assert all(a.t <= b.t0 for a, b in zip(fetch.requests, fetch.requests[1:]))
    assert server.sni == ["www.example.org"]


@pytest.mark.parametrize(("n_redirects", "failure", "n_requests"),
                         [(10, None, 11), (11, "http_too_many_redirects", 11)])
async def test_redirect_limit(web_server, trust: TrustStore, n_redirects: int, failure: str | None,
                              n_requests: int) -> None:
    routes = {f"/{i}": redirect(f"/{i + 1}") for i in range(n_redirects)}
    routes[f"/{n_redirects}"] = html_page("end")
    server = await web_server(routes)
    fetch = await get("http://www.example.org/0", server.connect_to(IP), trust, max_redirects=10)
    assert fetch.failure == failure
    assert len(fetch.requests) == n_requests
    assert fetch.final.failure is None  # the last hop itself got a response
    assert fetch.final.response.status_code == (200 if failure is None else 302)


@pytest.mark.parametrize("location", ["mailto:someone@example.org", "ftp://www.example.org/x",
                                      "http:///nohost", "https://:443/", "javascript:alert(1)"])
async def test_invalid_redirect_location(web_server, trust: TrustStore, location: str) -> None:
    server = await web_server({"/": redirect(location)})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure == "http_invalid_redirect_location_host"
    assert len(fetch.requests) == 1 and fetch.final.response.status_code == 302


async def test_3xx_without_location_is_final(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": Route(status=304)})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure is None and fetch.final.response.status_code == 304


async def test_redirect_target_that_does_not_resolve(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": redirect("http://gone.example.org/")})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure == "dns_nxdomain_error"
    assert [(r.url, r.ip, r.failure) for r in fetch.requests] == [
        ("http://www.example.org/", IP, None), ("http://gone.example.org/", None, "dns_nxdomain_error")]


CAP = 524_288


@pytest.mark.parametrize(
    ("size", "cap", "kept", "truncated"),
    [
        (CAP, CAP, CAP, False),          # FC-15: exactly the cap is complete
        (CAP + 1, CAP, CAP, True),       # one byte more is truncated
        (2_000_000, CAP, CAP, True),     # FC-15 recipe: big.example.org
        (0, CAP, 0, False),
        (1000, 999, 999, True),
    ],
)
async def test_body_cap(web_server, trust: TrustStore, size: int, cap: int, kept: int, truncated: bool) -> None:
    body = bytes(i % 251 for i in range(size))
    server = await web_server({"/": body})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust, max_body_bytes=cap,
                      store_body_bytes=100)
    resp = fetch.final.response
    assert fetch.failure is None
    assert (resp.body_length, resp.body_truncated) == (kept, truncated)
    assert resp.body_sha256 == hashlib.sha256(body[:kept]).hexdigest()
    assert base64.b64decode(resp.body_b64) == body[:min(100, kept)]


async def test_endless_body_is_capped(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": Route(action="endless")})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust, max_body_bytes=CAP)
    assert fetch.failure is None
    assert (fetch.final.response.body_length, fetch.final.response.body_truncated) == (CAP, True)


@pytest.mark.parametrize(("coding", "layers"), [("gzip", 1), ("gzip, gzip", 2)])
async def test_gzip_bomb_is_capped(web_server, trust: TrustStore, coding: str, layers: int) -> None:
    bomb = b"\0" * 64_000_000  # 64 MB of zeros: ~62 KB in one gzip layer, a few hundred bytes in two
    for _ in range(layers):
        bomb = gzip.compress(bomb, compresslevel=9)
    server = await web_server({"/": Route(body=bomb, headers=(("Content-Encoding", coding),))})
    tracemalloc.start()
    try:
        fetch = await get("http://www.example.org/", server.connect_to(IP), trust, max_body_bytes=CAP,
                          store_body_bytes=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    resp = fetch.final.response
    assert fetch.failure is None
    assert (resp.body_length, resp.body_truncated, resp.body_b64) == (CAP, True, "")
    assert resp.body_sha256 == hashlib.sha256(b"\0" * CAP).hexdigest()
    assert peak < 12 * CAP + len(bomb)  # nowhere near 64 MB


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),                                        # RFC 1950 (zlib)
        ("deflate", lambda b: zlib.compress(b)[2:-4]),                      # raw RFC 1951
        ("identity", lambda b: b),
        ("br", lambda b: b"not-really-brotli"),                             # not offered: kept as is
    ],
)
async def test_content_decoding(web_server, trust: TrustStore, coding: str, encode) -> None:
    page = html_page("decoded", b"x" * 5000)
    server = await web_server({"/": Route(body=encode(page), headers=(("Content-Encoding", coding),))})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    resp = fetch.final.response
    assert fetch.failure is None
    if coding == "br":
        assert base64.b64decode(resp.body_b64) == b"not-really-brotli"
    else:
        assert resp.body_length == len(page) and resp.title == "decoded"


async def test_corrupt_gzip_is_a_failure(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": Route(body=b"\x1f\x8b\x08garbage", headers=(("Content-Encoding", "gzip"),))})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure is not None and fetch.failure.startswith("unknown_failure: ")


FC16_UTF8 = f"<html><head><title>{GRANI}</title></head><body>новости</body></html>".encode()
FC16_META = (f'<html><head><meta charset="windows-1251"><title>{GRANI}</title></head>'
             "<body>новости</body></html>").encode("cp1251")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", FC16_UTF8),                                      # A
        ("text/html; charset=windows-1251", FC16_UTF8.decode().encode("cp1251")),     # B
        ("text/html", FC16_META),                                                      # C
    ],
    ids=["A-utf8", "B-header-cp1251", "C-meta-cp1251"],
)
async def test_fc16_titles_decode_the_same(web_server, trust: TrustStore, content_type: str, body: bytes) -> None:
    server = await web_server({"/": Route(body=body, headers=(("Content-Type", content_type),))})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.final.response.title == GRANI


@pytest.mark.parametrize(
    ("body", "content_type", "title"),
    [
        (b"<TITLE>Upper</TITLE>", None, "Upper"),
        (b"<title lang='en'>  a \n\t b  </title>", None, "a b"),
        (b"<title>&laquo;Q&raquo; &#1043;</title>", None, "«Q» Г"),
        (b"<title></title>", None, ""),
        (b"<html><body>no title</body></html>", None, None),
        (b"<title>cut off", None, None),
        ("<title>Привет</title>".encode("koi8-r"), "text/html; charset=KOI8-R", "Привет"),
        (b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251"><title>\xcf\xf0\xe8</title>',
         "text/html", "При"),
        ("<title>Привет</title>".encode("cp1251"), "text/html; charset=no-such-charset", "\ufffd" * 6),
        (b"\xef\xbb\xbf<title>bom</title>", "text/html; charset=windows-1251", "bom"),
        ("<title>Ünïcode</title>".encode("utf-16-le"), None, None),  # no BOM: not findable
        (b"\xff\xfe" + "<title>Ünïcode</title>".encode("utf-16-le"), None, "Ünïcode"),
        (b"<title>caf\xe9</title>", "text/html; charset=iso-8859-1", "café"),
    ],
)
def test_extract_title(body: bytes, content_type: str | None, title: str | None) -> None:
    assert extract_title(body, content_type) == title


@pytest.mark.parametrize(
    ("route", "failure"),
    [
        (Route(action="close"), "eof_error"),              # closed without a response
        (Route(action="reset"), "connection_reset"),
        (Route(action="hang"), "generic_timeout_error"),
        (Route(action="raw", raw=b"HTTP/1.1 abc OK\r\n\r\n"), "http_protocol_error"),
        (Route(action="raw", raw=b"SSH-2.0-OpenSSH_9.2\r\n"), "http_protocol_error"),
        (Route(action="raw", raw=b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"),
         "http_protocol_error"),                            # giant header
        (Route(action="raw", raw=b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(1000)) + b"\r\n"),
         "http_protocol_error"),                            # too many headers
        (Route(action="raw", raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"), "eof_error"),
    ],
    ids=["close", "reset", "hang", "bad-status", "not-http", "giant-header", "many-headers", "short-body"],
)
@pytest.mark.parametrize(("scheme", "port"), [("http", 80), ("https", 443)])
async def test_hostile_servers(web_server, trust: TrustStore, route: Route, failure: str, scheme: str,
                               port: int) -> None:
    server = await web_server({"/": route}, https=True)
    fetch = await get(f"{scheme}://www.example.org/", server.connect_to(IP), trust, timeout_s=0.5)
    assert fetch.failure == failure
    req = fetch.final
    assert (req.failure, req.response, req.ip, req.port) == (failure, None, IP, port)


async def test_connection_refused(closed_port, trust: TrustStore) -> None:
    fetch = await get("http://www.example.org/", closed_port.connect_to(IP, 80), trust)
    assert fetch.failure == "connection_refused"


@pytest.mark.parametrize(
    ("server_kwargs", "verify_tls", "failure"),
    [
        (dict(), True, None),
        (dict(issuer="intermediate"), True, None),
        (dict(issuer="other"), True, "ssl_unknown_authority"),
        (dict(names=("other.example.net",)), True, "ssl_invalid_hostname"),
        (dict(expired=True), True, "ssl_invalid_certificate"),
        (dict(issuer="other"), False, None),
    ],
    ids=["valid", "via-intermediate", "unknown-ca", "wrong-name", "expired", "unverified"],
)
async def test_https_verification(web_server, trust: TrustStore, server_kwargs, verify_tls: bool,
                                  failure: str | None) -> None:
    server = await web_server({"/": html_page("secure")}, http=False, https=True, **server_kwargs)
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, verify_tls=verify_tls)
    assert fetch.failure == failure
    assert (fetch.final.ip, fetch.final.port) == (IP, 443)
    assert server.sni == ["www.example.org"]  # SNI = the URL host
    if failure is None:
        assert fetch.final.response.title == "secure"


async def test_https_ip_literal_verifies_the_logical_ip(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": html_page("by ip")}, http=False, https=True, names=(IP,))
    fetch = await get(f"https://{IP}/", server.connect_to(IP), trust, ip=None)
    assert fetch.failure is None and fetch.final.response.title == "by ip"
    assert server.sni == [None]


async def test_tls_reset_after_client_hello(reset_listener, trust: TrustStore) -> None:
    fetch = await get("https://www.example.org/", reset_listener.connect_to(IP, 443), trust)
    assert fetch.failure == "connection_reset"


async def test_tls_eof_after_client_hello(eof_listener, trust: TrustStore) -> None:
    fetch = await get("https://www.example.org/", eof_listener.connect_to(IP, 443), trust)
    assert fetch.failure == "eof_error"


async def test_bad_url_raises(trust: TrustStore) -> None:
    for url in ("ftp://www.example.org/", "/relative", "http:///nohost"):
        with pytest.raises(ValueError):
            await get(url, ConnectTo(), trust)


async def test_ipv6_pin(web_server, trust: TrustStore) -> None:
    from tests.fixtures.servers import has_ipv6_loopback

    if not has_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    server = await web_server({"/": html_page("v6")}, host="::1")
    assert server.http == f"[::1]:{server.http_port}"
    fetch = await get("http://www.example.org/", server.connect_to("2001:db8::21"), trust, ip="2001:db8::21")
    assert fetch.failure is None and fetch.final.response.title == "v6"
    assert (fetch.final.ip, fetch.final.port) == ("2001:db8::21", 80)


async def test_ipv6_literal_url_is_remapped(web_server, trust: TrustStore) -> None:
    from tests.fixtures.servers import has_ipv6_loopback

    if not has_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    server = await web_server({"/": html_page("v6 literal")}, host="::1")
    fetch = await get("http://[2001:db8::21]/", server.connect_to("2001:db8::21"), trust, ip=None)
    assert fetch.failure is None and fetch.final.response.title == "v6 literal"
    assert fetch.final.url == "http://[2001:db8::21]/"
    assert dict(server.requests[0].headers)["Host"] == "[2001:db8::21]"


# ------------------------------------------------- redirects into the probe's own machine


def spy_dns(table: dict[str, list[str]]):
    """Like :func:`dns`, also recording every host asked (``resolve.calls``)."""
    calls: list[str] = []

    async def resolve(host: str) -> list[str]:
        calls.append(host)
        return table.get(host, [])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


LOCAL_LOCATIONS = [
    pytest.param("http://127.0.0.1:22/", "127.0.0.1:22", id="loopback-v4-ssh"),
    pytest.param("http://[::1]/", "[::1]:80", id="loopback-v6"),
    pytest.param("http://[fe80::1%eth0]/", "[fe80::1]:80", id="link-local-zone"),
    pytest.param("http://[fe80::1%25eth0]/", "[fe80::1]:80", id="link-local-zone-rfc6874"),
    pytest.param("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]:80", id="v4-mapped-loopback"),
    pytest.param("http://0.0.0.0:8080/", "0.0.0.0:8080", id="unspecified"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80", id="link-local-metadata"),
    # 6to4 (RFC 3056 §2) and Teredo (RFC 4380 §4) carry a global IPv4 address; these carry loopback and the
    # metadata address, where a host with a 6to4/Teredo interface would send them (break test 24, finding 10)
    pytest.param("http://[2002:7f00:1::]/", "[2002:7f00:1::]:80", id="6to4-loopback"),
    pytest.param("http://[2001:0:4136:e378:8000:63bf:5601:5601]/", "[2001:0:4136:e378:8000:63bf:5601:5601]:80",
                 id="teredo-client-link-local"),
]


async def _local_redirect(web_server, tcp_listener, trust: TrustStore, location: str, logical: str,
                          **kwargs) -> tuple[HTTPFetch, Listener]:
    """www.example.org redirects to ``location``; its logical endpoint is put on a loopback
    listener, so that following the redirect WOULD reach the listener."""
    listener = await tcp_listener("close")
    server = await web_server({"/": redirect(location)})
    connect_to = ConnectTo(mapping={**server.connect_to(IP).mapping, logical: listener.endpoint})
    fetch = await get("http://www.example.org/", connect_to, trust, timeout_s=1.0, **kwargs)
    return fetch, listener


@pytest.mark.parametrize(("location", "logical"), LOCAL_LOCATIONS)
async def test_redirect_to_local_address_is_refused(web_server, tcp_listener, trust: TrustStore, location: str,
                                                    logical: str) -> None:
    resolve = spy_dns({})
    fetch, listener = await _local_redirect(web_server, tcp_listener, trust, location, logical,
                                            allow_address=not_local_address, resolve=resolve)
    assert fetch.failure == "http_invalid_redirect_location_host"
    assert listener.accepted == 0  # no connection attempted
    assert resolve.calls == []
    first, refused = fetch.requests
    assert first.response.status_code == 302
    assert (refused.url, refused.ip, refused.port, refused.failure, refused.response) == (
        str(URL(location)), None, None, "http_invalid_redirect_location_host", None)
    assert refused.t0 <= refused.t


@pytest.mark.parametrize(("location", "logical"), LOCAL_LOCATIONS[:3])
async def test_redirect_to_local_address_without_predicate_is_followed(web_server, tcp_listener, trust: TrustStore,
                                                                       location: str, logical: str) -> None:
    """The control of the test above: its ConnectTo really does lead to the listener."""
    fetch, listener = await _local_redirect(web_server, tcp_listener, trust, location, logical)
    assert listener.accepted >= 1  # aiohttp retries a GET once on a closed connection
    assert fetch.failure == "eof_error" and fetch.final.ip == logical.rsplit(":", 1)[0].strip("[]")


async def test_redirect_to_name_resolving_to_local_addresses(web_server, tcp_listener, trust: TrustStore) -> None:
    """Names ``resolve`` maps to refused addresses only are refused the same way; with
    mixed answers the first allowed address is used; private addresses are allowed."""
    listener = await tcp_listener("close")
    server = await web_server({
        "/local": redirect("http://local.example.org:22/"),
        "/mixed": redirect("http://mixed.example.org/ok"),
        "/private": redirect("http://blockpage.example.org/ok"),
        "/ok": html_page("ok"),
    })
    connect_to = ConnectTo(mapping={**server.connect_to(IP).mapping, **server.connect_to(OTHER_IP).mapping,
                                    **server.connect_to("10.10.34.35").mapping,
                                    "127.0.0.1:22": listener.endpoint, "127.0.0.1:80": listener.endpoint})
    resolve = spy_dns({"local.example.org": ["127.0.0.1", "::1", "fe80::1%eth0", "not-an-ip"],
                       "mixed.example.org": ["127.0.0.1", OTHER_IP],
                       "blockpage.example.org": ["10.10.34.35"]})
    fetch = await get("http://www.example.org/local", connect_to, trust, resolve=resolve,
                      allow_address=not_local_address)
    assert fetch.failure == "http_invalid_redirect_location_host"
    assert [(r.url, r.ip, r.failure) for r in fetch.requests] == [
        ("http://www.example.org/local", IP, None),
        ("http://local.example.org:22/", None, "http_invalid_redirect_location_host")]
    fetch = await get("http://www.example.org/mixed", connect_to, trust, resolve=resolve,
                      allow_address=not_local_address)
    assert fetch.failure is None and [r.ip for r in fetch.requests] == [IP, OTHER_IP]
    fetch = await get("http://www.example.org/private", connect_to, trust, resolve=resolve,
                      allow_address=not_local_address)
    assert fetch.failure is None and [r.ip for r in fetch.requests] == [IP, "10.10.34.35"]
    # the first URL, not pinned: its resolved addresses are vetted too
    fetch = await get("http://local.example.org:22/", connect_to, trust, ip=None, resolve=resolve,
                      allow_address=not_local_address)
    assert fetch.failure == "http_invalid_redirect_location_host" and fetch.final.ip is None
    assert listener.accepted == 0
    assert resolve.calls == ["local.example.org", "mixed.example.org", "blockpage.example.org", "local.example.org"]


async def test_pinned_first_hop_is_not_vetted(web_server, trust: TrustStore) -> None:
    """The ``ip`` argument is the caller's choice: allow_address does not apply to it."""
    server = await web_server({"/": html_page("pinned")})
    fetch = await get("http://www.example.org/", server.connect_to("127.0.0.1"), trust, ip="127.0.0.1",
                      allow_address=not_local_address)
    assert fetch.failure is None and fetch.final.response.title == "pinned"


@pytest.mark.parametrize(("ip", "allowed"), [
    ("127.0.0.1", False), ("127.8.9.10", False), ("::1", False), ("0.0.0.0", False), ("0.1.2.3", False),
    ("::", False), ("169.254.169.254", False), ("fe80::1", False), ("fe80::1%eth0", False),
    ("224.0.0.251", False), ("ff02::fb", False), ("255.255.255.255", False), ("::ffff:127.0.0.1", False),
    ("::ffff:169.254.1.1", False), ("not-an-ip", False),
    ("10.10.34.35", True), ("192.168.1.1", True), ("172.16.0.1", True), ("fd00::1", True),
    ("93.184.216.34", True), ("2001:4860:4860::8888", True), ("192.0.2.21", True), ("::ffff:8.8.8.8", True),
])
def test_not_local_address(ip: str, allowed: bool) -> None:
    assert not_local_address(ip) is allowed


# ------------------------------------------------------------ invalid redirect hosts

INVALID_HOST_LOCATIONS = [
    pytest.param("http://a:0/", id="port-0"),
    pytest.param("http://1.2.3.4.5/", id="five-octets"),
    pytest.param("http://" + "a" * 60_000 + "/", id="60000-char-label"),
    pytest.param("http://%zz/", id="percent-garbage"),
    pytest.param("http://" + "a" * 64 + ".example.org/", id="label-64"),
    pytest.param("http://a..b/", id="empty-label"),
    pytest.param("http://.example.org/", id="leading-empty-label"),
    pytest.param("http://example.org../", id="two-trailing-dots"),
    pytest.param("http://" + ("a" * 62 + ".") * 4 + "org/", id="name-over-253"),
    pytest.param("http://127.1/", id="short-ipv4"),
    pytest.param("http://0x7f000001/", id="hex-ipv4"),
    pytest.param("http://2130706433/", id="decimal-ipv4"),
    pytest.param("http://www.example.org.1/", id="numeric-tld"),
    pytest.param("http://a b.example.org/", id="space"),
    pytest.param("http://a*b.example.org/", id="star"),
]


@pytest.mark.parametrize("location", INVALID_HOST_LOCATIONS)
async def test_invalid_redirect_host_is_not_looked_up(web_server, trust: TrustStore, location: str) -> None:
    server = await web_server({"/": redirect(location)})
    resolve = spy_dns({})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust, resolve=resolve)
    assert fetch.failure == "http_invalid_redirect_location_host"
    assert resolve.calls == []
    assert len(fetch.requests) == 1 and fetch.final.response.status_code == 302


@pytest.mark.parametrize(("location", "asked"), [
    ("http://_dmarc.example.org/", "_dmarc.example.org"),
    ("http://WWW.Example.NET.:8080/", "www.example.net"),
    ("http://" + "a" * 63 + ".example.org:65535/", "a" * 63 + ".example.org"),
    ("http://xn--e1afmkfd.xn--p1ai/", "xn--e1afmkfd.xn--p1ai"),
    ("http://" + ("a" * 62 + ".") * 3 + "a" * 63 + "/", ("a" * 62 + ".") * 3 + "a" * 63),  # 252 characters
    ("http://1.example.org-1/", "1.example.org-1"),
    ("http://cdn-01/", "cdn-01"),
])
async def test_valid_redirect_host_is_looked_up(web_server, trust: TrustStore, location: str, asked: str) -> None:
    """The validation is not stricter than DNS names: these reach ``resolve``."""
    server = await web_server({"/": redirect(location)})
    resolve = spy_dns({})
    fetch = await get("http://www.example.org/", server.connect_to("192.0.2.99"), trust, ip="192.0.2.99",
                      resolve=resolve)
    assert resolve.calls == [asked]
    assert fetch.failure == "dns_no_answer"


@pytest.mark.parametrize(("host", "ok"), [
    ("192.0.2.1", True), ("2001:db8::1", True), ("fe80::1%eth0", True), ("example.org", True),
    ("example.org.", True), ("a", True), ("_x._tcp.example.org", True),
    ("", False), (".", False), ("1.2.3.4.5", False), ("256.1.1.1", False), ("a..b", False),
    ("a" * 64, False), ("%zz", False), ("0x10", False), ("0X", False), ("123", False), ("ex%61mple.org", False),
])
def test_valid_host(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


# ------------------------------------------------------------ hostile record sizes


async def test_giant_title_is_capped(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": html_page("T" * 300_000)})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure is None
    assert fetch.final.response.title == "T" * 1024 + "\u2026"


@pytest.mark.parametrize(("title", "stored"), [
    ("x" * 1024, "x" * 1024),
    ("x" * 1025, "x" * 1024 + "\u2026"),
    ("a  " * 1000, ("a " * 512)[:1024] + "\u2026"),  # measured after whitespace collapsing
])
def test_extract_title_cap(title: str, stored: str) -> None:
    assert extract_title(f"<title>{title}</title>".encode(), None) == stored


async def test_giant_location_header_is_capped_and_invalid(web_server, trust: TrustStore) -> None:
    location = "http://" + "a" * 60_000 + ".example.org/"
    server = await web_server({"/": redirect(location)})
    resolve = spy_dns({})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust, resolve=resolve)
    assert fetch.failure == "http_invalid_redirect_location_host" and resolve.calls == []
    stored = fetch.final.response.header("Location")
    assert stored == location[:8192] + "\u2026"
    assert all(len(k) <= 8193 and len(v) <= 8193 for k, v in fetch.final.response.headers)


async def test_giant_valid_location_is_followed_in_full(web_server, trust: TrustStore) -> None:
    """The redirect uses the Location as received, not the capped copy in the record."""
    location = "http://www.example.org/" + "p" * 60_000
    server = await web_server({"/": redirect(location)})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.requests[0].response.header("Location") == location[:8192] + "\u2026"
    assert len(fetch.requests) == 2 and fetch.requests[1].url == location


async def test_stored_headers_are_capped_in_number(web_server, trust: TrustStore) -> None:
    """250 headers arrive (the parser allows 256): 200 are kept; the Location, header
    251, is still followed."""
    head = b"HTTP/1.1 302 Found\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(250))
    raw = head + b"Location: /done\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    server = await web_server({"/": Route(action="raw", raw=raw), "/done": html_page("done")})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    first = fetch.requests[0].response
    assert len(first.headers) == 200
    assert first.headers[:2] == (("X-0", "0"), ("X-1", "1")) and first.headers[-1] == ("X-199", "199")
    assert first.header("Location") is None
    assert fetch.failure is None and fetch.final.response.title == "done"


# ------------------------------------------------------------ stacked content codings


def _gzip_gzip(b: bytes) -> bytes:
    return gzip.compress(gzip.compress(b))


@pytest.mark.parametrize(("headers", "encode"), [
    pytest.param((("Content-Encoding", "gzip, gzip"),), _gzip_gzip, id="gzip,gzip"),
    pytest.param((("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")), _gzip_gzip, id="two-header-lines"),
    pytest.param((("Content-Encoding", "deflate, gzip"),), lambda b: gzip.compress(zlib.compress(b)),
                 id="deflate,gzip"),
    pytest.param((("Content-Encoding", "gzip ,X-GZIP"),), _gzip_gzip, id="case-and-spaces"),
    pytest.param((("Content-Encoding", "identity, gzip"),), gzip.compress, id="identity,gzip"),
    pytest.param((("Content-Encoding", "gzip, gzip, gzip"),), lambda b: gzip.compress(_gzip_gzip(b)),
                 id="three-layers"),
])
async def test_stacked_content_codings_are_decoded(web_server, trust: TrustStore, headers, encode) -> None:
    page = html_page("stacked", b"x" * 5000)
    server = await web_server({"/": Route(body=encode(page), headers=headers)})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    resp = fetch.final.response
    assert fetch.failure is None
    assert (resp.body_length, resp.body_truncated, resp.title) == (len(page), False, "stacked")
    assert base64.b64decode(resp.body_b64) == page


@pytest.mark.parametrize("coding", ["br, gzip, gzip", "gzip, br", "zstd", "gzip, compress"])
async def test_unsupported_coding_in_the_list_keeps_the_body_raw(web_server, trust: TrustStore,
                                                                 coding: str) -> None:
    """Documented behaviour: one coding we cannot decode (we never offer br/zstd) and the
    body is stored as received, its title read from the raw bytes (here: none)."""
    sent = _gzip_gzip(b"pretend-brotli<title>hidden</title>")
    server = await web_server({"/": Route(body=sent, headers=(("Content-Encoding", coding),))})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    resp = fetch.final.response
    assert fetch.failure is None
    assert base64.b64decode(resp.body_b64) == sent and resp.body_length == len(sent)
    assert resp.title is None


async def test_corrupt_inner_layer_is_a_failure(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": Route(body=gzip.compress(b"\x1f\x8b\x08garbage"),
                                          headers=(("Content-Encoding", "gzip, gzip"),))})
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure is not None and fetch.failure.startswith("unknown_failure: ")


# --- timed transfers (FC-19 throughput) and the SNI override -----------------------------


async def test_body_transfer_is_timed(web_server, trust: TrustStore) -> None:
    body = b"<title>t</title>" + b"x" * 50000
    server = await web_server({"/": body}, https=True)
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust)
    hop = fetch.final
    assert fetch.failure is None and hop.body_bytes_received == len(body)
    assert hop.body_duration_s is not None and 0 <= hop.body_duration_s <= hop.t - hop.t0
    assert hop.body_stall_s is None  # complete: nothing stalled


async def test_no_response_head_means_no_transfer(closed_port, trust: TrustStore) -> None:
    fetch = await get("https://www.example.org/", ConnectTo(fallback=closed_port.endpoint), trust)
    assert fetch.failure == "connection_refused"
    assert (fetch.final.body_bytes_received, fetch.final.body_duration_s) == (None, None)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_hop_cut_mid_body_by_its_deadline_keeps_the_bytes_received(web_server, trust: TrustStore,
                                                                         scheme: str) -> None:
    # FC-19's failures: "timeouts during data transfer" — the head and 48 KiB arrive, then nothing
    import asyncio

    from aiohttp import web

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(1 << 20), "Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"y" * 49152)
        await asyncio.sleep(30)
        return resp

    server = await web_server({"/": stall}, https=scheme == "https")
    fetch = await get(f"{scheme}://www.example.org/", server.connect_to(IP), trust, timeout_s=0.8)
    hop = fetch.final
    assert fetch.failure == "generic_timeout_error" and hop.response is None
    assert hop.body_bytes_received == 49152
    assert 0.2 < hop.body_duration_s <= hop.t - hop.t0
    # the body had stopped: its last byte came before the deadline, the stall is part of the duration
    assert hop.body_stall_s is not None and 0 < hop.body_stall_s <= hop.body_duration_s


def test_body_stall_tells_a_steady_transfer_from_a_freeze() -> None:
    """``body_stall_s``: last body byte → the failure. A trickle still flowing when cut has ~0, a
    freeze (bbs#490: 16 KiB, then nothing) the time since it stopped; a complete read has none."""
    from probe.measure.http import _BodyProgress

    class Tick:
        t = 0.0

        def now(self) -> float:
            return self.t

    def read(arrivals: list[tuple[float, int]], end: float, *, failed: bool) -> dict:
        clock = Tick()
        p = _BodyProgress(clock)  # type: ignore[arg-type]
        p.head()
        for t, n in arrivals:
            clock.t = t
            p.received(n)
        clock.t = end
        return p.fields(failed=failed)

    steady = read([(0.5 * i, 4096 * i) for i in range(1, 40)], 19.6, failed=True)
    assert steady == {"body_bytes_received": 4096 * 39, "body_duration_s": 19.6, "body_stall_s": 0.1}
    frozen = read([(0.01, 16384), (5.0, 16384)], 10.0, failed=True)  # a repeat count is no progress
    assert frozen["body_stall_s"] == 9.99
    assert read([], 10.0, failed=True)["body_stall_s"] == 10.0  # head, then nothing
    assert "body_stall_s" not in read([(0.2, 50000)], 0.2, failed=False)


async def test_server_name_overrides_the_sni_not_the_host(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": html_page("ok")}, https=True)
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, server_name="example.com",
                      verify_tls=False)
    assert fetch.failure is None
    assert server.sni[-1] == "example.com"
    assert dict(server.requests[-1].headers)["Host"] == "www.example.org"


# ------------------------------------------------- one TLS connection per endpoint (issue 13)


async def _open(server, trust: TrustStore, *, sni: str = "www.example.org", ip: str = IP):
    from probe.measure.tls import tls_handshake_open
    return await tls_handshake_open(ip, 443, server_name=sni, clock=Clock(), connect_timeout_s=3.0,
                                    tls_timeout_s=3.0, trust=trust, connect_to=server.connect_to(IP))


async def test_get_goes_over_the_recorded_handshakes_connection(web_server, trust: TrustStore) -> None:
    """OONI v0.5's single-use TLS dialer: the site sees one handshake, not two."""
    server = await web_server({"/": html_page("one")}, http=False, https=True)
    h, conn = await _open(server, trust)
    assert h.failure is None and h.verification_failure is None and conn is not None
    assert h.alpn_offered == ("h2", "http/1.1") and h.negotiated_protocol == "http/1.1"  # browser-like hello
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure is None and fetch.final.response.title == "one"
    assert server.sni == ["www.example.org"]  # one handshake: the GET took the open connection
    assert not conn.usable() and fetch.final.reused_tls_handshake


async def test_server_choosing_h2_gets_a_fresh_http11_connection(web_server, trust: TrustStore) -> None:
    """The open connection speaks h2 (ALPN, offered as browsers do): the GET, HTTP/1.1 only,
    dials a second connection (the trade-off in docs/speed.md), and the first is closed."""
    server = await web_server({"/": html_page("h2")}, http=False, https=True, alpn=("h2", "http/1.1"))
    h, conn = await _open(server, trust)
    assert h.negotiated_protocol == "h2" and conn is not None and not conn.http11
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure is None and fetch.final.response.title == "h2"
    assert server.sni == ["www.example.org", "www.example.org"]
    assert not conn.usable() and not conn.taken  # closed by http_get, unused
    assert not fetch.final.reused_tls_handshake


async def test_unverified_connection_is_not_used_for_the_get(web_server, trust: TrustStore) -> None:
    """A chain that failed verification: the GET dials its own verifying connection and fails
    as before (a browser would not send the request over it)."""
    server = await web_server({"/": html_page("x")}, http=False, https=True, issuer="other")
    h, conn = await _open(server, trust)
    assert h.failure is None and h.verification_failure == "ssl_unknown_authority" and conn is not None
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure == "ssl_unknown_authority"
    assert len(server.sni) == 2 and server.requests == []


async def test_connection_for_another_endpoint_or_sni_is_not_used(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": html_page("x")}, http=False, https=True, names=("www.example.org", "b.example"))
    h, conn = await _open(server, trust, sni="b.example")
    assert conn is not None and conn.verified
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure is None
    assert server.sni == ["b.example", "www.example.org"]


async def test_connection_closed_by_the_server_while_idle_is_replaced(web_server, trust: TrustStore) -> None:
    """A server that dropped the idle connection before the GET: a fresh one, not an eof_error
    the site never caused."""
    import asyncio

    server = await web_server({"/": html_page("again")}, http=False, https=True)
    h, conn = await _open(server, trust)
    assert conn is not None
    conn._writer.transport.get_extra_info("socket").shutdown(socket.SHUT_RD)  # as if a FIN had come
    conn._reader.feed_eof()
    await asyncio.sleep(0)
    assert not conn.usable()
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure is None and fetch.final.response.title == "again"
    assert len(server.sni) == 2


async def test_redirect_to_the_same_host_dials_a_fresh_connection(web_server, trust: TrustStore) -> None:
    """Each hop its own connection (OONI v0.5 measures every redirect as a new flow)."""
    server = await web_server({"/": redirect("/next"), "/next": html_page("next")}, http=False, https=True)
    h, conn = await _open(server, trust)
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure is None and [r.response.status_code for r in fetch.requests] == [302, 200]
    assert len(server.sni) == 2
    assert [r.reused_tls_handshake for r in fetch.requests] == [True, False]


async def test_shared_session_carries_cookies_within_a_fetch_only(web_server, trust: TrustStore) -> None:
    """One session per run: a cookie set on a redirect comes back on the next hop of the same
    fetch, never in another fetch."""
    from aiohttp import web as aioweb

    from probe.measure.http import new_session

    async def set_cookie(request: aioweb.Request) -> aioweb.StreamResponse:
        return aioweb.Response(status=302, headers={"Location": "/check", "Set-Cookie": "seen=1; Path=/"})

    async def check(request: aioweb.Request) -> aioweb.StreamResponse:
        return aioweb.Response(body=html_page(request.headers.get("Cookie", "none")), content_type="text/html")

    server = await web_server({"/": set_cookie, "/check": check}, http=True)
    session = new_session()
    try:
        first = await get("http://www.example.org/", server.connect_to(IP), trust, session=session)
        assert first.final.response.title == "seen=1"
        again = await get("http://www.example.org/check", server.connect_to(IP), trust, session=session)
        assert again.final.response.title == "none"
    finally:
        await session.close()


async def test_a_reset_after_the_get_on_the_reused_connection_is_marked_reused(web_server, trust: TrustStore) -> None:
    """A censor resetting the connection once the request is seen: the failed hop says it went
    over the handshake's connection (its t0..t holds no connect, no handshake), and it is not
    sent again on another connection (aiohttp retries a GET after a reset by default)."""
    server = await web_server({"/": Route(action="reset")}, http=False, https=True)
    h, conn = await _open(server, trust)
    fetch = await get("https://www.example.org/", server.connect_to(IP), trust, handoff=conn)
    assert fetch.failure in ("connection_reset", "eof_error")
    assert fetch.final.reused_tls_handshake and len(server.sni) == 1 and len(server.requests) == 1


async def test_a_reset_after_the_get_is_not_retried(web_server, trust: TrustStore) -> None:
    server = await web_server({"/": Route(action="reset")}, http=True)
    fetch = await get("http://www.example.org/", server.connect_to(IP), trust)
    assert fetch.failure == "connection_reset" and len(server.requests) == 1
