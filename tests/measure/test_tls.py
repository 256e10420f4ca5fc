"""tls_handshake (chain capture, SNI, ALPN, failures) and TrustStore verification.

The servers are loopback aiohttp/asyncio servers (tests/fixtures/servers.py) with trustme
certificates. Verification uses the "relaxed" policy because trustme's certificates
break the strict CA/B-Forum profile (critical subjectAltName, critical EKU): see
``test_webpki_policy_rejects_trustme_certificates``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import sys
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from probe.measure import tls as tls_mod
from probe.measure.tls import SSL_READ_BUFFER_BYTES, TLSHandshake, TrustStore, peer_chain, tls_handshake
from probe.timing import Clock

LOGICAL_IP = "192.0.2.21"
NAME = "www.example.org"


@pytest.fixture
def trust(ca: trustme.CA) -> TrustStore:
    """certifi's roots plus the session test CA, relaxed extension policy."""
    return TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), policy="relaxed")


async def handshake(endpoint_map, trust: TrustStore, *, server_name: str | None = NAME,
                    tls_timeout_s: float = 3.0, connect_timeout_s: float = 3.0,
                    alpn: tuple[str, ...] = ("h2", "http/1.1")) -> TLSHandshake:
    return await tls_handshake(LOGICAL_IP, 443, server_name=server_name, clock=Clock(),
                               connect_timeout_s=connect_timeout_s, tls_timeout_s=tls_timeout_s,
                               trust=trust, alpn=alpn, connect_to=endpoint_map)


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


async def test_happy_path_captures_the_full_chain(web_server, trust: TrustStore) -> None:
    server = await web_server({}, http=False, https=True, issuer="intermediate", send_chain="chain")
    rec = await handshake(server.connect_to(LOGICAL_IP), trust)
    assert rec.failure is None and not rec.connect_failure
    assert (rec.ip, rec.port, rec.server_name) == (LOGICAL_IP, 443, NAME)
    assert rec.tls_version == "TLSv1.3"
    assert rec.cipher_suite and rec.cipher_suite.startswith("TLS_")
    assert rec.negotiated_protocol == "http/1.1"
    assert rec.alpn_offered == ("h2", "http/1.1")
    assert rec.chain_source == "full"
    assert len(rec.peer_certificates) == 2  # leaf + intermediate, as sent
    assert rec.peer_certificates == tuple(b64(d) for d in server.chain_der)
    leaf = x509.load_der_x509_certificate(base64.b64decode(rec.peer_certificates[0]))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [NAME]
    assert (rec.verification_failure, rec.verified_anchor) == (None, "extra")
    assert rec.verification_policy == "relaxed"
    assert rec.verified
    assert server.sni == [NAME]
    assert 0 <= rec.t0 <= rec.t


@pytest.mark.parametrize(
    ("server_kwargs", "n_certs", "verification_failure", "anchor"),
    [
        (dict(issuer="ca"), 1, None, "extra"),
        (dict(issuer="intermediate", send_chain="chain+root"), 3, None, "extra"),
        (dict(issuer="ca", names=("other.example.net",)), 1, "ssl_invalid_hostname", "extra"),
        (dict(issuer="other"), 1, "ssl_unknown_authority", None),
        (dict(issuer="intermediate", send_chain="leaf"), 1, "ssl_unknown_authority", None),
        (dict(issuer="ca", expired=True), 1, "ssl_invalid_certificate", None),
    ],
    ids=["root-issued", "chain-with-root", "wrong-name", "unknown-ca", "missing-intermediate",
         "expired"],
)
async def test_verification_outcomes_keep_the_handshake(web_server, trust: TrustStore, server_kwargs,
                                                        n_certs: int, verification_failure: str | None,
                                                        anchor: str | None) -> None:
    """Verification is separate: the handshake succeeds and the chain is captured anyway."""
    server = await web_server({}, http=False, https=True, **server_kwargs)
    rec = await handshake(server.connect_to(LOGICAL_IP), trust)
    assert rec.failure is None
    assert rec.chain_source == "full"
    assert len(rec.peer_certificates) == n_certs
    assert rec.verification_failure == verification_failure
    assert rec.verified_anchor == anchor
    assert rec.verified is (verification_failure is None)


async def test_alpn_h2_negotiated(web_server, trust: TrustStore) -> None:
    server = await web_server({}, http=False, https=True, alpn=("h2", "http/1.1"))
    rec = await handshake(server.connect_to(LOGICAL_IP), trust)
    assert rec.negotiated_protocol == "h2"
    rec = await handshake(server.connect_to(LOGICAL_IP), trust, alpn=())
    assert rec.failure is None and rec.negotiated_protocol is None and rec.alpn_offered == ()


async def test_no_sni_when_server_name_is_none(web_server, trust: TrustStore) -> None:
    server = await web_server({}, http=False, https=True)
    rec = await handshake(server.connect_to(LOGICAL_IP), trust, server_name=None)
    assert server.sni == [None]  # the server saw no server_name extension
    assert rec.failure is None and rec.server_name is None
    # no name to check: the chain alone is verified
    assert (rec.verification_failure, rec.verified_anchor) == (None, "extra")


async def test_ip_server_name_sends_no_sni_and_checks_the_ip_san(web_server, trust: TrustStore) -> None:
    server = await web_server({}, http=False, https=True, names=(LOGICAL_IP,))
    rec = await handshake(server.connect_to(LOGICAL_IP), trust, server_name=LOGICAL_IP)
    assert server.sni == [None]  # RFC 6066: no IP literals in SNI
    assert rec.verification_failure is None
    rec = await handshake(server.connect_to(LOGICAL_IP), trust, server_name="192.0.2.99")
    assert rec.verification_failure == "ssl_invalid_hostname"


async def test_unicode_server_name_is_sent_as_a_label(web_server, trust: TrustStore) -> None:
    server = await web_server({}, http=False, https=True, names=("xn--e1afmkfd.xn--80akhbyknj4f",))
    rec = await handshake(server.connect_to(LOGICAL_IP), trust, server_name="Пример.Испытание")
    assert rec.server_name == "xn--e1afmkfd.xn--80akhbyknj4f"
    assert server.sni == ["xn--e1afmkfd.xn--80akhbyknj4f"]
    assert rec.verification_failure is None


@pytest.fixture
def endpoint(request: pytest.FixtureRequest):
    """The listener fixture named by the (indirect) parameter."""
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    ("endpoint", "failure", "connect_failure", "min_duration"),
    [
        ("silent_listener", "generic_timeout_error", False, 0.3),
        ("reset_listener", "connection_reset", False, 0.0),  # RST after the ClientHello
        ("eof_listener", "eof_error", False, 0.0),  # FIN after the ClientHello
        ("closed_port", "connection_refused", True, 0.0),
        ("backlog_full_listener", "generic_timeout_error", True, 0.3),
    ],
    indirect=["endpoint"],
)
async def test_handshake_failures(endpoint, trust: TrustStore, failure: str, connect_failure: bool,
                                  min_duration: float) -> None:
    rec = await handshake(endpoint.connect_to(LOGICAL_IP, 443), trust, tls_timeout_s=0.3,
                          connect_timeout_s=0.3)
    assert rec.failure == failure
    assert rec.connect_failure is connect_failure
    assert (rec.ip, rec.port) == (LOGICAL_IP, 443)
    assert rec.peer_certificates == () and rec.chain_source == "none"
    assert rec.verification_failure is None and not rec.verified
    assert min_duration <= rec.t - rec.t0 < min_duration + 0.5


async def test_tls_alert_is_ssl_failed_handshake(tcp_listener, trust: TrustStore) -> None:
    """A fatal alert instead of a ServerHello (what some middleboxes send)."""
    listener = await tcp_listener("alert")
    rec = await handshake(listener.connect_to(LOGICAL_IP, 443), trust)
    assert rec.failure == "ssl_failed_handshake"
    assert not rec.connect_failure


async def test_plaintext_server_is_ssl_failed_handshake(web_server, trust: TrustStore) -> None:
    """Speaking TLS to a plain HTTP server: the reply is not TLS."""
    server = await web_server({"/": b"hello"}, http=True)
    rec = await tls_handshake(LOGICAL_IP, 80, server_name=NAME, clock=Clock(), connect_timeout_s=2,
                              tls_timeout_s=2, trust=trust, connect_to=server.connect_to(LOGICAL_IP))
    assert rec.failure == "ssl_failed_handshake"
    assert not rec.connect_failure


async def test_webpki_policy_rejects_trustme_certificates(web_server, ca: trustme.CA) -> None:
    """Why tests use "relaxed": trustme marks subjectAltName (and EKU) critical, which the
    CA/B-Forum profile forbids. The chain itself does reach the test CA."""
    server = await web_server({}, http=False, https=True)
    strict = TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), policy="webpki")
    rec = await handshake(server.connect_to(LOGICAL_IP), strict)
    assert rec.failure is None
    assert rec.verification_policy == "webpki"
    assert rec.verification_failure == "ssl_invalid_certificate"
    assert rec.verified_anchor == "extra"


# ----------------------------------------------------------------- TrustStore alone


def _chain(leaf: trustme.LeafCert) -> list[bytes]:
    return [ssl.PEM_cert_to_DER_cert(p.bytes().decode("ascii")) for p in leaf.cert_chain_pems]


def test_verify_table(ca: trustme.CA, other_ca: trustme.CA, intermediate_ca: trustme.CA) -> None:
    trust = TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), policy="relaxed")
    good = _chain(intermediate_ca.issue_cert(NAME, "192.0.2.21"))
    foreign = _chain(other_ca.issue_cert(NAME))
    cases = [
        (good, NAME, None, None, "extra"),
        (good, "WWW.Example.ORG.", None, None, "extra"),  # case and trailing dot
        (good, "192.0.2.21", None, None, "extra"),
        (good, "other.example.org", None, "ssl_invalid_hostname", "extra"),
        (good, None, None, None, "extra"),
        (good[:1], NAME, None, "ssl_unknown_authority", None),  # intermediate missing
        (good[:1] + [b"\x30\x03garbage"] + good[1:], NAME, None, None, "extra"),  # junk skipped
        (list(reversed(good)), NAME, None, "ssl_invalid_hostname", None),  # CA as "leaf": no SAN
        (list(reversed(good)), None, None, "ssl_invalid_certificate", None),
        ([b"not a certificate"] + good[1:], NAME, None, "ssl_invalid_certificate", None),
        ([], NAME, None, "ssl_invalid_certificate", None),
        (foreign, NAME, None, "ssl_unknown_authority", None),
        (good, NAME, dt.datetime(1990, 1, 1, tzinfo=dt.UTC), "ssl_invalid_certificate", None),
    ]
    for chain, name, at, failure, anchor in cases:
        assert trust.verify(chain, name, at=at) == (failure, anchor), (name, at)


def test_verify_reports_the_mozilla_anchor_set(ca: trustme.CA) -> None:
    """A test root that is also "extra" is reported as such; Mozilla roots load from certifi."""
    both = TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=True, policy="relaxed")
    chain = _chain(ca.issue_cert(NAME))
    assert both.verify(chain, NAME) == (None, "extra")
    only_mozilla = TrustStore(include_mozilla=True, policy="relaxed")
    assert only_mozilla.verify(chain, NAME) == ("ssl_unknown_authority", None)
    nothing = TrustStore(include_mozilla=False)
    assert nothing.verify(chain, NAME) == ("ssl_unknown_authority", None)


def test_extra_anchors_must_parse() -> None:
    with pytest.raises(ValueError, match="no parseable PEM"):
        TrustStore(extra_anchors_pem=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="policy"):
        TrustStore(policy="lenient")  # type: ignore[arg-type]


def test_ssl_context_trusts_certifi_and_extra(ca: trustme.CA) -> None:
    ctx = TrustStore(extra_anchors_pem=ca.cert_pem.bytes()).ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] > 100  # certifi's roots + the test CA
    der = ca.cert_pem.bytes()
    test_root = x509.load_pem_x509_certificate(der).public_bytes(serialization.Encoding.DER)
    assert test_root in ctx.get_ca_certs(binary_form=True)
    only_extra = TrustStore(extra_anchors_pem=ca.cert_pem.bytes(), include_mozilla=False).ssl_context()
    assert only_extra.get_ca_certs(binary_form=True) == [test_root]
    assert TrustStore().ssl_context() is not None


class _FakeSSLObject:
    def __init__(self, inner: object | None, leaf: bytes | None) -> None:
        self._sslobj = inner
        self._leaf = leaf

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        return self._leaf


class _Broken:
    def get_unverified_chain(self) -> list[object]:
        raise RuntimeError("private API changed")


class _DerChain:
    def get_unverified_chain(self) -> list[bytes]:  # the 3.13 public API returns DER bytes
        return [b"leaf", b"intermediate"]


@pytest.mark.parametrize(
    ("inner", "leaf", "expected"),
    [
        (None, b"leaf", ([b"leaf"], "leaf_only")),
        (_Broken(), b"leaf", ([b"leaf"], "leaf_only")),
        (_DerChain(), b"leaf", ([b"leaf", b"intermediate"], "full")),
        (None, None, ([], "none")),
    ],
)
def test_peer_chain_fallbacks(inner, leaf, expected) -> None:
    assert peer_chain(_FakeSSLObject(inner, leaf)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "operation", "failure"),
    [
        (ConnectionResetError(), "tls_handshake", "eof_error"),  # asyncio: FIN mid-handshake
        (ConnectionResetError(104, "Connection reset by peer"), "tls_handshake", "connection_reset"),
        (ConnectionResetError(), "connect", "connection_reset"),
    ],
)
def test_classify_reset_versus_eof(exc: BaseException, operation, failure: str) -> None:
    from probe.failures import classify

    assert classify(exc, operation) == failure


async def _tls_payload_server(ca: trustme.CA, payloads: dict[bytes, bytes]) -> asyncio.Server:
    """A loopback TLS server: reads an 8-byte key, sends ``payloads[key]`` in 4 KiB writes, closes."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(sctx)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = payloads[await reader.readexactly(8)]
        for i in range(0, len(data), 4096):
            writer.write(data[i:i + 4096])
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=sctx)


async def test_tls_connections_of_a_loop_share_one_receive_buffer_and_receive_intact(ca: trustme.CA) -> None:
    """issue 13 (lab RSS): asyncio's SSLProtocol receives into one buffer per loop thread, not 32 KiB
    per connection (~150 connections open at concurrency 64 in the lab). Many connections
    receiving at once, interleaved, each get exactly their own bytes."""
    import hashlib
    import random
    import threading
    from asyncio.sslproto import SSLProtocol

    if sys.platform == "win32":
        pytest.skip("the proactor loop keeps its own buffers")
    assert tls_mod.install_tls_read_buffers()  # what a probe run's set-up does (idempotent)
    rnd = random.Random(13)
    payloads = {f"{i:08d}".encode(): rnd.randbytes(300_000 + i) for i in range(12)}
    server = await _tls_payload_server(ca, payloads)
    port = server.sockets[0].getsockname()[1]
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)

    async def fetch(key: bytes) -> tuple[bytes, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cctx, server_hostname="localhost")
        proto = writer.transport._ssl_protocol  # type: ignore[attr-defined]
        writer.write(key)
        chunks = []
        while chunk := await reader.read(65536):
            chunks.append(chunk)
        writer.close()
        return b"".join(chunks), proto

    try:
        got = await asyncio.gather(*(fetch(k) for k in payloads))
    finally:
        server.close()
        await server.wait_closed()
    for (body, _), want in zip(got, payloads.values(), strict=True):
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(want).hexdigest()
    buffers = {id(proto._ssl_buffer) for _, proto in got}
    assert len(buffers) == 1
    shared = got[0][1]._ssl_buffer
    assert len(shared) == SSLProtocol.max_size == SSL_READ_BUFFER_BYTES

    # another thread (another loop) gets a buffer of its own
    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(tls_mod._shared_recv_buffer()[0]))
    t.start()
    t.join()
    assert other[0] is not shared and other[0] is not None


def test_importing_the_tls_module_leaves_asyncio_alone_until_a_run_installs_the_buffers() -> None:
    """The shared TLS receive buffer was installed at import, so the helper's server (and any process
    importing probe.*) had asyncio patched. Now only install_tls_read_buffers (a run's set-up) does it,
    once however often it is called. In a fresh interpreter: this process has had a run already."""
    import json
    import subprocess

    from tests.conftest import REPO

    code = """
import asyncio.sslproto, json, sys
cls = asyncio.sslproto.SSLProtocol
init, size = cls.__init__, cls.max_size
import probe.measure.tls as tls, probe.runner, probe.cli, probe.helper.server
after_import = [cls.__init__ is init, cls.max_size, hasattr(cls, "_kzprobe_shared_buffer")]
first = tls.install_tls_read_buffers()
patched = cls.__init__
second = tls.install_tls_read_buffers()
print(json.dumps({"size": size, "after_import": after_import, "calls": [first, second],
                  "patched": patched is not init, "once": cls.__init__ is patched, "max_size": cls.max_size}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["size"] == 256 * 1024  # asyncio's own
    assert got["after_import"] == [True, 256 * 1024, False]
    assert got["max_size"] == SSL_READ_BUFFER_BYTES
    supported = sys.platform != "win32" and sys.implementation.name == "cpython" \
        and (3, 11) <= sys.version_info[:2] <= (3, 13)
    assert got["calls"] == [supported, supported] and got["patched"] is supported and got["once"] is True
