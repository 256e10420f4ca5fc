"""End-to-end web tests on loopback: the probe, unchanged, against a simulated network.

Each FIELD-CASES.md recipe (FC-19, throttling, is in test_throttling_e2e.py) is built in a
:class:`tests.fixtures.world.World` and must give the verdict the case names.
"""

from __future__ import annotations

import random

import pytest
import trustme

from tests.fixtures.dns_server import Reply, fc06_replies, fc07_replies
from tests.fixtures.servers import Route, redirect

PAGE = b"<html><head><title>Example Domain</title></head><body>" + b"<p>hello</p>" * 200 + b"</body></html>"


async def test_accessible_https_and_http(world) -> None:
    await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",))
    world.dns("www.example.org", probe=["192.0.2.10"], control=["192.0.2.10"])
    for url in ("https://www.example.org/", "http://www.example.org/"):
        obs, v = await world.measure(url)
        assert (v.blocking, v.accessible) == (False, True), v.reason
        assert v.dns_consistency == "consistent"
        assert obs.http is not None and obs.http.final.response.title == "Example Domain"


async def test_https_get_goes_over_the_recorded_handshakes_connection(world) -> None:
    """Issue 13: one TLS connection per endpoint; the record says which request reused it."""
    import msgspec

    from probe.records import request_recs

    await world.site("192.0.2.10", {"/": redirect("/home"), "/home": PAGE}, names=("www.example.org",))
    world.dns("www.example.org", probe=["192.0.2.10"], control=["192.0.2.10"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert obs.http is not None and [r.reused_tls_handshake for r in obs.http.requests] == [True, False]
    as_json = [msgspec.to_builtins(r) for r in request_recs(obs.http)]  # newest hop first
    assert "x_reused_tls_handshake" not in as_json[0] and as_json[1]["x_reused_tls_handshake"] is True
    # the handshake's chain is the one recorded, and the GET used no other handshake
    assert obs.endpoints[0].tls is not None and obs.endpoints[0].tls.verified


async def test_the_controls_get_goes_over_its_recorded_handshakes_connection(world) -> None:
    """Issue 13 on the control's side: the control's endpoint handshake and its GET are one TLS
    connection (the lab's servers did two handshakes per control); the probe's side the same."""
    probe_srv = await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",), control=False)
    control_srv = await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",), probe=False)
    world.dns("www.example.org", probe=["192.0.2.10"], control=["192.0.2.10"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert obs.control is not None and obs.control.http is not None and obs.control.http.status_code == 200
    assert control_srv.sni == ["www.example.org"] and len(control_srv.requests) == 1
    assert probe_srv.sni == ["www.example.org"]


async def test_a_control_server_choosing_h2_gets_a_fresh_connection_for_the_get(world) -> None:
    """The control's handshake offers h2 as the probe's does; a server picking it gets the GET on a
    second, HTTP/1.1 connection, and the control's answer is the same."""
    await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",), control=False)
    control_srv = await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",), probe=False,
                                   alpn=("h2", "http/1.1"))
    world.dns("www.example.org", probe=["192.0.2.10"], control=["192.0.2.10"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert obs.control is not None and obs.control.http is not None and obs.control.http.status_code == 200
    assert control_srv.sni == ["www.example.org", "www.example.org"] and len(control_srv.requests) == 1


# --- FC-01: loopback / private DNS answers -------------------------------------------

@pytest.mark.parametrize("url", ["http://vpn.example.org/", "https://vpn.example.org/"])
async def test_fc01a_loopback_answer_is_dns_and_never_followed(world, tcp_listener, url) -> None:
    await world.site("192.0.2.21", {"/": PAGE}, names=("vpn.example.org",))
    trap = await tcp_listener("silent")
    world.route("127.0.0.1:80", trap.endpoint)
    world.route("127.0.0.1:443", trap.endpoint)
    world.dns("vpn.example.org", probe=["127.0.0.1"], control=["192.0.2.21"])
    obs, v = await world.measure(url)
    assert (v.blocking, v.rule) == ("dns", "dns.bogon"), v.reason
    assert trap.accepted == 0, "the probe connected to a loopback DNS answer"
    assert ("127.0.0.1", obs.skipped[0][1]) == obs.skipped[0]
    assert all(e.ip != "127.0.0.1" for e in obs.endpoints)


async def test_fc01b_private_answer_and_dropped_real_ip_is_dns_with_tcp_finding(world, backlog_full_listener) -> None:
    await world.site("192.0.2.22", {"/dns-query": b"ok"}, names=("doh.example.org",), probe=False)
    for ep in ("10.10.34.35:443", "192.0.2.22:443"):
        world.route(ep, backlog_full_listener.endpoint)
    world.dns("doh.example.org", probe=["10.10.34.35"], control=["192.0.2.22"])
    obs, v = await world.measure("https://doh.example.org/dns-query")
    assert (v.blocking, v.rule) == ("dns", "dns.bogon"), v.reason
    assert any("192.0.2.22:443" in f and "generic_timeout_error" in f for f in v.findings), v.findings


# --- FC-02: CDN / GeoDNS --------------------------------------------------------------

@pytest.mark.parametrize("url", ["https://api.example.org/", "http://api.example.org/"])
async def test_fc02_geodns_edges_are_not_dns_tampering(world, url) -> None:
    for ip in ("192.0.2.31", "198.51.100.31"):
        await world.site(ip, {"/": PAGE}, names=("api.example.org",))
    world.dns("api.example.org", probe=["192.0.2.31"], control=["198.51.100.31"])
    obs, v = await world.measure(url)
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert v.dns_consistency == "consistent"


# --- FC-04: DNS hijacked to an ISP relay ---------------------------------------------

@pytest.mark.parametrize("url", ["http://www.example.org/", "https://www.example.org/"])
async def test_fc04_private_relay_serving_genuine_page_is_dns(world, url) -> None:
    srv = await world.site("192.0.2.51", {"/": PAGE}, names=("www.example.org",))
    world.route("10.0.0.80:80", srv.http)
    world.route("10.0.0.80:443", srv.https)
    world.dns("www.example.org", probe=["10.0.0.80"], control=["192.0.2.51"])
    obs, v = await world.measure(url)
    assert v.blocking == "dns", v.reason


# --- FC-06 / FC-07: injected replies --------------------------------------------------

async def test_fc06_malformed_injected_reply_is_dns_and_kept_raw(world) -> None:
    await world.site("192.0.2.61", {"/": PAGE}, names=("twitter.example.org",))
    world.dns("twitter.example.org", probe=fc06_replies(genuine_ip="192.0.2.61"), control=["192.0.2.61"])
    obs, v = await world.measure("https://twitter.example.org/")
    assert v.blocking == "dns", v.reason
    a = next(q for q in obs.queries if q.query_type == "A")
    assert len(a.replies) == 2 and a.replies[0].parse_error
    assert a.replies[0].raw_b64 and "127.0.0.1" in [x.address for x in a.replies[0].answers]


async def test_fc06b_wellformed_injected_loopback_reply_is_dns(world) -> None:
    await world.site("192.0.2.61", {"/": PAGE}, names=("twitter.example.org",))
    world.dns("twitter.example.org", probe=[Reply(ips=["127.0.0.1"]), Reply(delay=0.03, ips=["192.0.2.61"])],
              control=["192.0.2.61"])
    obs, v = await world.measure("https://twitter.example.org/")
    assert v.blocking == "dns", v.reason


@pytest.mark.parametrize("url", ["http://www.example.org/", "https://www.example.org/"])
async def test_fc07_racing_forged_replies_with_tcp_accepting_fake_ip_is_dns(world, tcp_listener,
                                                                            backlog_full_listener, url) -> None:
    await world.site("192.0.2.71", {"/": PAGE}, names=("www.example.org",))
    fake = await tcp_listener("silent")
    world.route("198.51.100.201:80", fake.endpoint)
    world.route("198.51.100.201:443", fake.endpoint)
    world.route("192.0.2.202:80", backlog_full_listener.endpoint)
    world.route("192.0.2.202:443", backlog_full_listener.endpoint)
    world.dns("www.example.org", probe=fc07_replies(genuine_ip="192.0.2.71"), control=["192.0.2.71"])
    obs, v = await world.measure(url)
    assert (v.blocking, v.rule) == ("dns", "dns.injection"), v.reason
    a = next(q for q in obs.queries if q.query_type == "A")
    assert [r.flags & 0xFFF0 for r in a.replies][:2] == [0x8400, 0x8180]
    assert set(a.all_reply_addresses()) == {"198.51.100.201", "192.0.2.202", "192.0.2.71"}


# --- FC-08: broken local IPv6 ---------------------------------------------------------

async def test_fc08_unreachable_ipv6_is_not_tcp_ip_blocking(world, backlog_full_listener) -> None:
    srv = await world.site("192.0.2.81", {"/": PAGE}, names=("www.example.org",))
    world.control_map["[2001:db8:80::81]:443"] = srv.https
    world.route("[2001:db8:80::81]:443", backlog_full_listener.endpoint)
    world.dns("www.example.org", probe=["192.0.2.81", "2001:db8:80::81"], control=["192.0.2.81", "2001:db8:80::81"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert any("2001:db8:80::81" in f for f in v.findings)


# --- FC-10: control's HTTP fails, TLS block is clear ----------------------------------

@pytest.mark.parametrize("action", ["timeout", "rst"])
async def test_fc10_sni_block_with_failing_control_http_is_tls(world, action) -> None:
    await world.site("192.0.2.101", {"/": Route(action="close")}, names=("signal.example.org",))
    censor = await world.sni_censor("192.0.2.101", ["signal.example.org"], action=action)
    world.dns("signal.example.org", probe=["192.0.2.101"], control=["192.0.2.101"])
    obs, v = await world.measure("https://signal.example.org/")
    assert (v.blocking, v.rule) == ("tls", "tls.control_ok"), v.reason
    ep = obs.endpoints[0]
    assert ep.tls.failure == ("generic_timeout_error" if action == "timeout" else "connection_reset")
    assert ep.tls_benign is not None and ep.tls_benign.failure is None
    assert "signal.example.org" in censor.seen and "example.com" in censor.seen


async def test_https_endpoint_times_the_tcp_connect_apart_from_the_tls_handshake(world) -> None:
    """Issue 10: tcp_connect[].t of an https endpoint was the end of the TLS handshake, so a
    loopback connect (well under a millisecond) followed by an SNI-triggered TLS timeout was
    recorded as a 0.606 s connect, the TLS timeout. The connect ends when the connect does."""
    await world.site("192.0.2.102", {"/": PAGE}, names=("slow.example.org",))
    await world.sni_censor("192.0.2.102", ["slow.example.org"], action="timeout")
    world.dns("slow.example.org", probe=["192.0.2.102"], control=["192.0.2.102"])
    obs, _ = await world.measure("https://slow.example.org/")
    ep = obs.endpoints[0]
    assert ep.tls is not None and ep.tls.failure == "generic_timeout_error" and ep.tcp is not None
    assert ep.tcp.failure is None and ep.tls.connect_t is not None
    assert ep.tcp.t == ep.tls.connect_t and ep.tcp.t0 == ep.tls.t0
    # the TLS phase alone lasted the TLS timeout; the connect phase did not include it
    assert ep.tls.t - ep.tls.connect_t >= world.timeouts.tls_s
    assert ep.tcp.t - ep.tcp.t0 < world.timeouts.tls_s / 2
    assert ep.tcp.t < ep.tls.t


async def test_sni_block_without_helper_uses_sni_differential(world) -> None:
    world.helper = False
    await world.site("192.0.2.102", {"/": PAGE}, names=("meduza.example.org",))
    await world.sni_censor("192.0.2.102", ["meduza.example.org"])
    world.dns("meduza.example.org", probe=["192.0.2.102"], control=["192.0.2.102"])
    obs, v = await world.measure("https://meduza.example.org/")
    assert (v.blocking, v.rule) == ("tls", "tls.sni_differential"), v.reason


# --- FC-12: site with a broken certificate --------------------------------------------

@pytest.mark.parametrize("variant", ["wrong_name", "expired"])
async def test_fc12_broken_certificate_is_down_not_blocked(world, variant) -> None:
    kw = {"names": ("other.example.net",)} if variant == "wrong_name" else {"names": ("www.misconf.example.org",),
                                                                             "expired": True}
    await world.site("192.0.2.91", {"/": PAGE}, **kw)
    world.dns("www.misconf.example.org", probe=["192.0.2.91"], control=["192.0.2.91"])
    obs, v = await world.measure("https://www.misconf.example.org/")
    assert (v.blocking, v.accessible, v.rule) == (False, False, "tls.both_invalid"), v.reason


# --- FC-13: CDN challenge pages -------------------------------------------------------

CF = Route(status=403, headers=(("Server", "cloudflare"), ("cf-mitigated", "challenge"),
                                ("Content-Type", "text/html")),
           body=b"<html><head><title>Just a moment...</title></head><body>checking</body></html>")
AKAMAI = Route(status=403, headers=(("Server", "AkamaiGHost"), ("Content-Type", "text/html")),
               body=b"<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY><H1>Access Denied</H1>You don't have "
                    b"permission to access \"http&#58;&#47;&#47;lgbt&#46;example&#46;org&#47;\" on this server.<P>"
                    b"Reference&#32;&#35;18&#46;1234</BODY></HTML>")


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("page", [CF, AKAMAI], ids=["cloudflare", "akamai"])
async def test_fc13_cdn_block_of_the_vantage_is_server_side(world, scheme, page) -> None:
    await world.site("192.0.2.141", {"/": page}, names=("lgbt.example.org",), control=False)
    await world.site("192.0.2.141", {"/": PAGE}, names=("lgbt.example.org",), probe=False)
    world.dns("lgbt.example.org", probe=["192.0.2.141"], control=["192.0.2.141"])
    obs, v = await world.measure(f"{scheme}://lgbt.example.org/")
    assert (v.blocking, v.accessible) == (False, False), v.reason
    assert v.server_side


# --- FC-14: DNS redirect to a warning page over HTTPS -----------------------------------

async def test_fc14_redirect_to_https_warning_page_is_dns(world) -> None:
    world.bogons = type(world.bogons)(public=world.bogons.public + ("198.18.0.0/15",))
    await world.site("198.18.0.240", {"/": redirect("https://warning.gov.example/komunikat")},
                     names=("casino.example.org",), https=False, control=False)
    await world.site("192.0.2.200", {"/komunikat": b"<title>Komunikat</title>warning"}, names=("warning.gov.example",))
    await world.site("192.0.2.121", {"/": b"<title>Casino</title>real"}, names=("casino.example.org",))
    world.dns("casino.example.org", probe=["198.18.0.240"], control=["192.0.2.121"])
    world.dns("warning.gov.example", probe=["192.0.2.200"], control=["192.0.2.200"])
    obs, v = await world.measure("http://casino.example.org/")
    assert v.blocking == "dns", v.reason
    assert [r.url for r in obs.http.requests] == ["http://casino.example.org/", "https://warning.gov.example/komunikat"]


# --- FC-15: bodies cut at the cap ------------------------------------------------------

@pytest.mark.parametrize("size", [2_000_000, 524_288, 524_289])
async def test_fc15_body_at_or_over_the_cap_is_not_a_diff(world, size) -> None:
    world.max_body_bytes = 524_288
    head = b"<html><head><title>Big</title></head><body>"
    await world.site("192.0.2.161", {"/": head + b"x" * (size - len(head))}, names=("big.example.org",),
                     https=False)
    world.dns("big.example.org", probe=["192.0.2.161"], control=["192.0.2.161"])
    obs, v = await world.measure("http://big.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    resp = obs.http.final.response
    assert resp.body_truncated == (size > 524_288) and resp.body_length == min(size, 524_288)


# --- FC-16: non-Latin titles -----------------------------------------------------------

def _grani(encoding: str, how: str):
    title = "Грани.Ру: Главное"

    async def handler(request):
        from aiohttp import web

        page = f"<html><head>{'<meta charset=windows-1251>' if how == 'meta' else ''}<title>{title}</title></head>" \
               f"<body>{'а' * random.randint(0, 4000)}</body></html>"
        ctype = "text/html" if how == "meta" else f"text/html; charset={encoding}"
        return web.Response(body=page.encode(encoding), headers={"Content-Type": ctype})

    return handler


@pytest.mark.parametrize("encoding,how", [("utf-8", "header"), ("windows-1251", "header"), ("windows-1251", "meta")])
async def test_fc16_non_latin_title_decoded_the_same_on_both_sides(world, encoding, how) -> None:
    await world.site("192.0.2.171", {"/": _grani(encoding, how)}, names=("grani.example.org",), https=False)
    world.dns("grani.example.org", probe=["192.0.2.171"], control=["192.0.2.171"])
    obs, v = await world.measure("http://grani.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert obs.http.final.response.title == "Грани.Ру: Главное"


# --- FC-17: IDN inputs -----------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("host", ["пример.испытание", "Пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"])
async def test_fc17_idn_inputs_are_measured_under_the_a_label(world, scheme, host) -> None:
    alabel = "xn--e1afmkfd.xn--80akhbyknj4f"
    srv = await world.site("192.0.2.131", {"/": PAGE}, names=(alabel,))
    world.dns(alabel, probe=["192.0.2.131"], control=["192.0.2.131"])
    obs, v = await world.measure(f"{scheme}://{host}/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert obs.target.domain == alabel and obs.target.input == f"{scheme}://{alabel}/"
    assert srv.requests and all(dict((k.lower(), v) for k, v in r.headers)["host"] == alabel for r in srv.requests)


# --- FC-18: helper blocked too -------------------------------------------------------------

async def test_fc18_target_and_helper_blocked_is_inconclusive(world, backlog_full_listener) -> None:
    world.helper_dead = True
    world.route("192.0.2.181:443", backlog_full_listener.endpoint)
    world.dns("cdn.example.org", probe=["192.0.2.181"], control=["192.0.2.181"])
    obs, v = await world.measure("https://cdn.example.org/script.js")
    assert (v.blocking, v.accessible) == (None, None), v.reason
    assert obs.control is not None and obs.control.failure


# --- TLS interception (KZ 2019 / 2020 style) ---------------------------------------------

@pytest.mark.parametrize("installed", [False, True], ids=["root-not-installed", "root-installed"])
async def test_interception_by_an_isca_named_root_is_tls_mitm_even_when_trusted(world, installed) -> None:
    isca = trustme.CA(organization_name="ISCA")
    if installed:
        world.extra_anchors.append(isca.cert_pem.bytes())
    await world.site("192.0.2.150", {"/": PAGE}, names=("www.facebook.example",), probe=False)
    await world.site("192.0.2.150", {"/": PAGE}, names=("www.facebook.example",), control=False, issuer=isca,
                     http=False)
    world.dns("www.facebook.example", probe=["192.0.2.150"], control=["192.0.2.150"])
    obs, v = await world.measure("https://www.facebook.example/")
    assert (v.blocking, v.rule) == ("tls_mitm", "tls_mitm.known_root"), v.reason
    assert v.mitm is not None and "name" in v.mitm.matched_by
    assert obs.endpoints[0].tls.verified is installed
    assert ("installed" in v.reason) is installed


async def test_interception_by_unknown_issuer_seen_only_here_is_tls_mitm(world, other_ca) -> None:
    await world.site("192.0.2.151", {"/": PAGE}, names=("www.example.org",), probe=False)
    await world.site("192.0.2.151", {"/": PAGE}, names=("www.example.org",), control=False, issuer="other")
    world.dns("www.example.org", probe=["192.0.2.151"], control=["192.0.2.151"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.rule) == ("tls_mitm", "tls.unknown_issuer"), v.reason


# --- plain blocking ----------------------------------------------------------------------

async def test_ip_blackhole_is_tcp_ip(world, backlog_full_listener) -> None:
    await world.site("192.0.2.160", {"/": PAGE}, names=("kloop.example.org",), probe=False)
    world.route("192.0.2.160:443", backlog_full_listener.endpoint)
    world.dns("kloop.example.org", probe=["192.0.2.160"], control=["192.0.2.160"])
    obs, v = await world.measure("https://kloop.example.org/")
    assert (v.blocking, v.rule) == ("tcp_ip", "tcp_ip.control_ok"), v.reason


async def test_nxdomain_at_isp_only_is_dns(world) -> None:
    await world.site("192.0.2.170", {"/": PAGE}, names=("medium.example.org",))
    world.dns("medium.example.org", probe=[Reply(rcode="NXDOMAIN")], control=["192.0.2.170"])
    obs, v = await world.measure("https://medium.example.org/")
    assert (v.blocking, v.rule) == ("dns", "dns.probe_failure"), v.reason


async def test_http_blockpage_is_http_diff(world) -> None:
    bp = Route(status=200, headers=(("Content-Type", "text/html"),),
               body=b"<html><title>Blocked</title><iframe src=\"http://10.10.34.34?type=Invalid Site\"></iframe></html>")
    await world.site("192.0.2.180", {"/": bp}, names=("change.example.org",), https=False, control=False)
    await world.site("192.0.2.180", {"/": PAGE}, names=("change.example.org",), https=False, probe=False)
    world.dns("change.example.org", probe=["192.0.2.180"], control=["192.0.2.180"])
    obs, v = await world.measure("http://change.example.org/")
    assert v.blocking == "http-diff", v.reason


@pytest.mark.parametrize("location", ["http://127.0.0.1:22/", "http://[::1]/", "http://169.254.169.254/latest/",
                                      "http://localhost.example.org/"])
async def test_redirects_into_this_machine_are_never_followed(world, tcp_listener, location) -> None:
    trap = await tcp_listener("silent")
    for ep in ("127.0.0.1:22", "[::1]:80", "169.254.169.254:80", "127.0.0.2:80"):
        world.route(ep, trap.endpoint, control=True)
    await world.site("192.0.2.190", {"/": redirect(location)}, names=("www.example.org",), https=False)
    world.dns("www.example.org", probe=["192.0.2.190"], control=["192.0.2.190"])
    world.dns("localhost.example.org", probe=["127.0.0.2"], control=["127.0.0.2"])
    obs, v = await world.measure("http://www.example.org/")
    assert trap.accepted == 0, f"followed a redirect to {location}"
    assert obs.http.requests[-1].ip is None and obs.http.failure == "http_invalid_redirect_location_host"


# --- found by hostile testing ---------------------------------------------------------------

async def test_resolver_failing_for_everything_mid_run_is_not_dns_blocking(world) -> None:
    """The ISP resolver starts SERVFAILing everything: the per-input canary check says so."""
    world.isp_table[("example.com", "A")] = [Reply(rcode="SERVFAIL")]
    await world.site("192.0.2.30", {"/": PAGE}, names=("www.example.org",))
    world.dns("www.example.org", probe=[Reply(rcode="SERVFAIL")], control=["192.0.2.30"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.rule) == (None, "vantage.resolver_broken"), v.reason
    assert obs.resolver_check and obs.resolver_check[0].hostname == "example.com"


@pytest.mark.parametrize("url", ["https://www.example.org/", "http://www.example.org/"])
async def test_dns64_synthesized_aaaa_is_not_a_bogon(world, url) -> None:
    srv = await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",))
    world.probe_map["[64:ff9b::c000:20a]:443"] = srv.https
    world.probe_map["[64:ff9b::c000:20a]:80"] = srv.http
    world.dns("www.example.org", probe=["192.0.2.10", "64:ff9b::c000:20a"], control=["192.0.2.10"])
    obs, v = await world.measure(url)
    assert v.blocking is False and v.dns_consistency == "consistent", v.reason


@pytest.mark.parametrize("text", ["Страница заблокирована", "Web Filter urlblock"])
async def test_page_quoting_blockpage_words_over_verified_tls_is_not_blocked(world, text) -> None:
    page = f"<html><head><title>News</title></head><body>{text}</body></html>".encode()
    await world.site("192.0.2.40", {"/": page}, names=("news.example.org",))
    world.dns("news.example.org", probe=["192.0.2.40"], control=["192.0.2.40"])
    obs, v = await world.measure("https://news.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert obs.http_blockpages == ()


async def test_truncated_answer_with_tcp_retry_is_one_answer_not_injection(world) -> None:
    srv = await world.site("198.51.100.1", {"/": PAGE}, names=("big.example.org",))
    for ip in ("198.51.100.2", "203.0.113.1"):
        world.probe_map.update(srv.connect_to(ip).mapping)
        world.control_map.update(srv.connect_to(ip).mapping)
    world.isp_table[("big.example.org", "A")] = [Reply(ips=["198.51.100.1"], flags=0x8380)]
    world.isp_table[("big.example.org", "AAAA")] = [Reply(ips=[])]
    world.isp_tcp_table = {("big.example.org", "A"): [Reply(ips=["198.51.100.1", "198.51.100.2"])]}
    world.dns("big.example.org", control=["203.0.113.1"])
    obs, v = await world.measure("https://big.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason


@pytest.mark.parametrize("url", ["http://www.example.org/", "https://www.example.org/"])
async def test_a_stalled_helper_never_hides_the_probes_own_fetch(world, monkeypatch, url) -> None:
    """issue 12: the probe does not wait for the control before fetching; a helper that stalls fails
    within the control's own deadline (timeouts.control_s), and the reason names it."""
    import asyncio
    import dataclasses

    from probe.control import LocalControl

    async def stall(self, *args, **kwargs):
        await asyncio.sleep(60)

    monkeypatch.setattr(LocalControl, "measure", stall)
    world.timeouts = dataclasses.replace(world.timeouts, control_s=1.0)
    await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",))
    world.dns("www.example.org", probe=["192.0.2.10"], control=["192.0.2.10"])
    obs, v = await world.measure(url)
    assert obs.http is not None and obs.http.final is not None and obs.http.final.response is not None
    assert obs.control is not None and obs.control.failure == "control_failure: generic_timeout_error"
    if url.startswith("http:"):
        assert v.blocking is None and "control helper failed (control_failure: generic_timeout_error)" in v.reason
    else:
        assert (v.blocking, v.accessible) == (False, True)  # verified TLS needs no helper
        assert any("helper control unusable" in f for f in v.findings)

# --- issue 13: the DNS listening window runs beside the measurement -----------------------

async def test_listen_window_is_off_the_critical_path(world) -> None:
    """The fetch starts before the window closes; the record still holds every reply of the
    window, and the verdict is the one a run waiting for the window would give."""
    from dataclasses import replace

    world.timeouts = replace(world.timeouts, dns_s=3.0, dns_listen_s=1.0, measurement_s=20.0)
    await world.site("192.0.2.10", {"/": PAGE}, names=("www.example.org",))
    world.dns("www.example.org", probe=[Reply(ips=["192.0.2.10"]), Reply(delay=0.5, ips=["192.0.2.10"])],
              control=["192.0.2.10"])
    obs, v = await world.measure("https://www.example.org/")
    assert (v.blocking, v.accessible) == (False, True), v.reason
    a = next(q for q in obs.queries if q.query_type == "A")
    first = a.replies[0].t
    assert len(a.replies) == 2  # the late duplicate is in the record: the window was kept
    # the query ends with the window (reply times are kept to the microsecond: 10 µs of rounding)
    assert a.t >= first + 1.0 - 1e-4
    assert obs.http is not None and obs.http.requests[0].t0 < a.t  # the fetch did not wait for it


async def test_a_late_reply_with_a_new_address_is_measured_as_if_waited_for(world, tcp_listener) -> None:
    """The first reply is forged and the genuine one comes inside the window, after the
    endpoints of the first were measured: the genuine address is measured too, labelled
    "both", and the helper control is asked again with every probe endpoint."""
    from dataclasses import replace

    world.timeouts = replace(world.timeouts, dns_listen_s=0.8)
    await world.site("192.0.2.71", {"/": PAGE}, names=("www.example.org",))
    fake = await tcp_listener("reset")
    world.route("198.51.100.201:443", fake.endpoint)
    world.dns("www.example.org", probe=[Reply(ips=["198.51.100.201"]), Reply(delay=0.4, ips=["192.0.2.71"])],
              control=["192.0.2.71"])
    obs, v = await world.measure("https://www.example.org/")
    assert [(e.ip, e.source) for e in obs.endpoints] == [("198.51.100.201", "probe"), ("192.0.2.71", "both")]
    assert v.blocking == "dns", v.reason


async def test_the_probe_and_the_helper_control_do_not_wait_for_the_doh_control(world, monkeypatch) -> None:
    """Issue 13: the helper control, the probe's endpoints and its fetch start from the probe's own
    addresses; the DoH control's (slow here) join the plan when it answers, and are measured."""
    import asyncio

    import probe.nettests.web as web
    from probe.control import LocalControl

    for ip in ("192.0.2.31", "198.51.100.31"):
        await world.site(ip, {"/": PAGE}, names=("api.example.org",))
    world.dns("api.example.org", probe=["192.0.2.31"], control=["198.51.100.31"])
    # slow, but within the first attempt's share (dns_s 1 s: 0.5 s, the retry on a fresh connection the rest)
    world.doh_table[("api.example.org", "A")] = [Reply(ips=["198.51.100.31"], delay=0.35)]
    events: list[str] = []
    real_measure, real_doh = LocalControl.measure, web.doh_control

    async def measure(self, *args, **kw):
        events.append("helper control started")
        return await real_measure(self, *args, **kw)

    async def doh_control(*args, **kw):
        r = await real_doh(*args, **kw)
        events.append("DoH control answered")
        return r

    monkeypatch.setattr(LocalControl, "measure", measure)
    monkeypatch.setattr(web, "doh_control", doh_control)
    obs, v = await world.measure("https://api.example.org/")
    await asyncio.sleep(0)
    assert events == ["helper control started", "DoH control answered"], events
    assert (v.blocking, v.accessible) == (False, True), v.reason
    assert [(e.ip, e.source) for e in obs.endpoints] == [("192.0.2.31", "probe"), ("198.51.100.31", "control")]
    assert obs.dns_control.dns_addresses == ("198.51.100.31",)
    assert obs.http is not None and obs.http.final.response is not None
