"""The lab's web server builds its TLS contexts once (issue 13: a new SSLContext +
load_cert_chain per accepted connection was about half the lab's CPU), and still serves
each site's own certificate by SNI at its own addresses only. No namespaces needed."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from cryptography import x509

from probe.lab.pki import LabPKI
from probe.lab.services import InternetServices


def _services(tmp_path: Path) -> InternetServices:
    LabPKI.create().save(tmp_path)
    spec = {"latency_s": 0.0, "rundir": str(tmp_path),
            "sites": [{"domain": "a.example.kz", "display": "a.example.kz", "ip": "198.18.0.10"},
                      {"domain": "b.example.kz", "display": "b.example.kz", "ip": "198.18.0.11"}]}
    return InternetServices(spec)


def test_server_contexts_are_built_once_per_address(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    a1, a2, b = svc._tls_context("198.18.0.10"), svc._tls_context("198.18.0.10"), svc._tls_context("198.18.0.11")
    assert a1 is a2 and a1 is not b


async def _served_name(svc: InternetServices, local_ip: str, sni: str) -> str:
    """The subject alternative name of the certificate served at ``local_ip`` for ``sni``."""
    server_ctx = svc._tls_context(local_ip)
    client = ssl.create_default_context(cafile=str(Path(svc._key_file).parent / "ca.pem"))
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname=sni)
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = cli.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)[0]


def test_cached_contexts_still_pick_the_certificate_by_sni(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    for _ in range(2):  # the second time from the cache
        assert asyncio.run(_served_name(svc, "198.18.0.10", "a.example.kz")) == "a.example.kz"
        # b's name at a's address: a's certificate (a site's certificate only at its own addresses)
        assert asyncio.run(_served_name(svc, "198.18.0.10", "b.example.kz")) == "a.example.kz"
        assert asyncio.run(_served_name(svc, "198.18.0.11", "b.example.kz")) == "b.example.kz"


def test_an_address_serving_one_site_uses_the_sites_own_context(tmp_path: Path) -> None:
    """One context per site, not two: the SNI callback of an address serving only its own site
    would always pick that site's certificate (the lab bench's 1,000 sites built 2,000)."""
    svc = _services(tmp_path)
    assert svc._tls_context("198.18.0.10") is svc._context_for("a.example.kz")
    assert svc._tls_context("198.18.0.10").sni_callback is None


def test_an_address_shared_by_two_sites_picks_each_ones_certificate(tmp_path: Path) -> None:
    LabPKI.create().save(tmp_path)
    spec = {"latency_s": 0.0, "rundir": str(tmp_path),
            "sites": [{"domain": "a.example.kz", "display": "a.example.kz", "ip": "198.18.0.10"},
                      {"domain": "c.example.kz", "display": "c.example.kz", "ip": "198.18.0.10"},
                      {"domain": "b.example.kz", "display": "b.example.kz", "ip": "198.18.0.11"}]}
    svc = InternetServices(spec)
    assert svc._tls_context("198.18.0.10").sni_callback is not None
    assert asyncio.run(_served_name(svc, "198.18.0.10", "c.example.kz")) == "c.example.kz"
    assert asyncio.run(_served_name(svc, "198.18.0.10", "a.example.kz")) == "a.example.kz"
    assert asyncio.run(_served_name(svc, "198.18.0.10", "b.example.kz")) == "a.example.kz"
    assert asyncio.run(_served_name(svc, "198.18.0.11", "c.example.kz")) == "b.example.kz"
