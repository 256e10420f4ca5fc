"""The lab PKI's certificate shapes (probe/lab/pki.py): what the probe's verifier and OpenSSL (the
helper's and a browser-like client's) say of each. No namespaces needed."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from probe.lab.pki import CERT_SHAPES, CERT_VALID, LabPKI
from probe.lab.scenario import ScenarioError, parse_scenario
from probe.measure.tls import TrustStore

NAME = "site.example.kz"
#: The verifier's failure per invalid shape, OONI's strings (webconnectivityqa badSSL* cases).
WANT = {"leaf_only": "ssl_unknown_authority", "expired": "ssl_invalid_certificate",
        "wrong_name": "ssl_invalid_hostname", "unknown_ca": "ssl_unknown_authority"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabPKI, Path]:
    d = tmp_path_factory.mktemp("pki")
    LabPKI.create().save(d)
    return LabPKI.load(d), d  # through the files, as the lab's servers read it


def _ders(pem: bytes) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


@pytest.mark.parametrize("shape", CERT_SHAPES)
def test_each_shape_verifies_or_fails_as_sites_do(pki, shape: str) -> None:
    p, d = pki
    trust = TrustStore(extra_anchors_pem=(d / "ca.pem").read_bytes(), include_mozilla=False)  # production policy
    failure, _anchor = trust.verify(_ders(p.issue([NAME], shape)), NAME)
    assert failure == (None if shape in CERT_VALID else WANT[shape])


def test_served_chains_have_the_shape_named(pki) -> None:
    p, _ = pki
    n = {s: len(_ders(p.issue([NAME], s))) for s in CERT_SHAPES}
    assert n["leaf_only"] == 1 and n["intermediate"] == 2 and n["cross_signed"] == 3 and n["expired_root"] == 3
    chain = x509.load_pem_x509_certificates(p.issue([NAME], "expired_root"))
    cross = chain[-1]  # X1 cross-signed by X3, which has expired
    x3 = next(c for c in x509.load_pem_x509_certificates((pki[1] / "ca.pem").read_bytes()) if c.subject == cross.issuer)
    assert x3.not_valid_after_utc < chain[0].not_valid_before_utc  # the served path's root expired


def test_expired_root_path_fails_without_the_valid_root(pki) -> None:
    """The expired_root chain verifies only through X1: a store with the lab root and the expired X3
    alone (an old device's store, 2021) fails — the shape really puts an expired root on one path."""
    p, d = pki
    old = [c for c in x509.load_pem_x509_certificates((d / "ca.pem").read_bytes())
           if "X1" not in c.subject.rfc4514_string()]
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in old)
    trust = TrustStore(extra_anchors_pem=pem, include_mozilla=False)
    failure, _ = trust.verify(_ders(p.issue([NAME], "expired_root")), NAME)
    assert failure is not None


@pytest.mark.parametrize("shape", CERT_SHAPES)
def test_openssl_agrees(pki, tmp_path: Path, shape: str) -> None:
    """OpenSSL (the helper's and the MITM pre-forger's TLS) says the same: the valid shapes verify
    (OpenSSL >= 1.1 tries the trusted store first, so the expired cross-sign is never needed)."""
    p, d = pki
    f = tmp_path / "chain.pem"
    f.write_bytes(p.issue([NAME], shape))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(f, d / "leaf-key.pem")
    client = ssl.create_default_context(cafile=str(d / "ca.pem"))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname=NAME)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    ok, err = False, None
    for _ in range(10):
        try:
            cli.do_handshake()
            ok = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            err = exc
            break
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            srv.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if ok:
            break
    assert ok == (shape in CERT_VALID), err


def _scenario(**site: object) -> dict:
    return {"scenario": {"name": "t"}, "site": [{"domain": "a.example.kz", "expect": False, **site}]}


def test_scenario_keys_cert_sniproxy_and_controls() -> None:
    sc = parse_scenario(_scenario(cert="expired_root", dns="sniproxy"))
    assert sc.sites[0].cert == "expired_root" and sc.sites[0].dns == "sniproxy"
    assert sc.helper == "ok" and sc.doh == "ok"
    data = _scenario()
    data["scenario"] |= {"helper": "down", "doh": "down"}
    sc = parse_scenario(data)
    assert (sc.helper, sc.doh) == ("down", "down")
    with pytest.raises(ScenarioError, match=r"site #1 \(a.example.kz\): key 'cert'.*expired_root"):
        parse_scenario(_scenario(cert="selfsigned"), file="x.toml")
    bad = _scenario()
    bad["scenario"]["helper"] = "stalled"
    with pytest.raises(ScenarioError, match=r"\[scenario\]: key 'helper'"):
        parse_scenario(bad, file="x.toml")
