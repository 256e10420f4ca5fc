"""The lab's Kazakh interception PKI and forger, checked against the facts and the probe's detector.

Facts: ../shared/data/KZ-MITM-FACTS.md (IMC 2020, Raman et al.). Table-driven over both
lab roots. The detector is the project's own :func:`probe.mitm.inspect_chain`.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from importlib import resources

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from probe.lab.forge import (
    INTERMEDIATE_SUBJECT,
    LEAF_VALIDITY_SHIFT,
    ForgeError,
    Forger,
    make_mitm_root,
    make_roots,
    make_security_intermediate,
)
from probe.measure.tls import TrustStore
from probe.mitm import inspect_chain, known_roots, spki_sha256

# (lab root, real root file in probe/data/mitm-roots, the DN as RFC 4514, the detector's label)
ROOTS = [
    pytest.param("qaznet", "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2.pem",
                 "CN=Qaznet Trust Network,C=KZ", id="qaznet"),
    pytest.param("isca", "61c0fc2e38b5b6f9071b42cee54a9013d858b6697c68b460948551b3249576a1.pem",
                 "C=KZ,O=ISCA,CN=Information Security Certification Authority CA", id="isca"),
]

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def roots():
    return make_roots()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def real_root(file: str) -> x509.Certificate:
    pem = (resources.files("probe") / "data" / "mitm-roots" / file).read_bytes()
    return x509.load_pem_x509_certificate(pem)


def real_leaf(names=("www.facebook.com", "facebook.com"), *, san_critical: bool = False,
              serial: int = 0x0BADC0FFEE0DDF00D123456789, with_san: bool = True,
              exts: bool = True) -> x509.Certificate:
    """A CA/B-Forum-like 'real' server certificate from an unrelated issuer."""
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DigiCert Inc"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "DigiCert SHA2 High Assurance")])
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Facebook, Inc."),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"*.{names[-1]}")])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(NOW - dt.timedelta(days=10)).not_valid_after(NOW + dt.timedelta(days=80)))
    if with_san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                            critical=san_critical)
    if exts:
        b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 issuer_key.public_key()), critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False))
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def facebook() -> x509.Certificate:
    return real_leaf()


@pytest.mark.parametrize(("name", "file", "dn"), ROOTS)
def test_root_copies_the_real_roots_dn_and_validity_not_its_key(roots, name, file, dn) -> None:
    root, _ = roots[name]
    real = real_root(file)
    assert root.cert.subject == real.subject  # same attributes, same RDN order
    assert root.cert.subject.rfc4514_string() == dn
    assert root.cert.issuer == root.cert.subject
    assert (root.cert.not_valid_before_utc, root.cert.not_valid_after_utc) == \
        (real.not_valid_before_utc, real.not_valid_after_utc)
    root.cert.verify_directly_issued_by(root.cert)
    bc = root.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    assert spki_sha256(root.cert) not in {r.sha256_spki for r in known_roots()}
    assert serialization.load_pem_private_key(root.key_pem, None).public_key().public_numbers() \
        == root.cert.public_key().public_numbers()


@pytest.mark.parametrize(("name", "file", "dn"), ROOTS)
def test_intermediate_is_security_certificate_under_the_root(roots, name, file, dn) -> None:
    root, inter = roots[name]
    assert inter.cert.subject == INTERMEDIATE_SUBJECT
    assert inter.cert.subject.rfc4514_string() == "CN=Security Certificate,C=KZ"
    assert inter.cert.issuer == root.cert.subject
    inter.cert.verify_directly_issued_by(root.cert)
    key = inter.cert.public_key()
    assert (key.key_size, key.public_numbers().e) == (2048, 65537)
    assert inter.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(("name", "file", "dn"), ROOTS)
def test_forged_leaf_has_the_2019_traits(roots, facebook, name, file, dn) -> None:
    forger = Forger(roots)
    chain_pem, key_pem = forger.forge(der(facebook), name)
    chain = x509.load_pem_x509_certificates(chain_pem)
    assert len(chain) == 2  # leaf + intermediate; the root is not sent
    leaf, inter = chain
    assert inter == roots[name][1].cert
    assert leaf.subject == facebook.subject
    assert leaf.issuer == INTERMEDIATE_SUBJECT
    leaf.verify_directly_issued_by(inter)
    # copies the SAN, drops every other extension
    assert [e.oid for e in leaf.extensions] == [x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME]
    assert leaf.extensions[0].value == facebook.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    # fresh RSA-2048 key, public exponent 3, matching the private key handed out
    key = leaf.public_key()
    assert (key.key_size, key.public_numbers().e) == (2048, 3)
    assert key.public_numbers() != facebook.public_key().public_numbers()
    assert serialization.load_pem_private_key(key_pem, None).public_key().public_numbers() == \
        key.public_numbers()
    # validity shifted ~6 hours earlier; serial keeps its high bits, low 32 random
    assert leaf.not_valid_before_utc == facebook.not_valid_before_utc - LEAF_VALIDITY_SHIFT
    assert leaf.not_valid_after_utc == facebook.not_valid_after_utc - LEAF_VALIDITY_SHIFT
    assert leaf.serial_number >> 32 == facebook.serial_number >> 32


@pytest.mark.parametrize(("name", "file", "dn"), ROOTS)
def test_the_probes_detector_recognises_the_forged_chain(roots, facebook, name, file, dn) -> None:
    chain_pem, _ = Forger(roots).forge(der(facebook), name)
    chain = [der(c) for c in x509.load_pem_x509_certificates(chain_pem)]
    finding = inspect_chain(chain)
    assert finding.mitm
    assert finding.matched_by == ("name", "leaf_traits")
    assert finding.leaf_traits == ("rsa_exponent_3", "extensions_stripped")
    assert finding.issuer == "CN=Security Certificate,C=KZ"
    assert finding.root_tag is None  # lab keys are not the real keys: a name match only
    # the root alone (what a user was told to install) is recognised by its own name
    root = roots[name][0]
    f = inspect_chain([der(root.cert)])
    assert f.mitm and f.matched_subject == dn and f.matched_by == ("name",)
    # the chain with the root appended still matches first at the leaf's issuer
    f = inspect_chain([*chain, der(root.cert)])
    assert f.mitm and f.position == 0
    # the intermediate alone: a KZ CA name, issued by the root's name
    f = inspect_chain(chain[1:])
    assert f.mitm and f.issuer == dn


@pytest.mark.parametrize(("name", "file", "dn"), ROOTS)
def test_ssl_context_serves_the_forged_chain(roots, facebook, name, file, dn) -> None:
    forger = Forger(roots)
    server = forger.ssl_context(der(facebook), name)
    client = ssl.create_default_context(cadata=roots[name][0].cert_pem.decode())
    client.check_hostname = False  # a stock client rejects an extension-less leaf anyway
    client.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="facebook.com")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (c, s):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    c.do_handshake()
    got = x509.load_der_x509_certificate(c.getpeercert(binary_form=True))
    assert got.subject == facebook.subject and got.public_key().public_numbers().e == 3


def test_cache_per_root_and_real_certificate(roots, facebook) -> None:
    forger = Forger(roots)
    a = forger.forge(der(facebook), "qaznet")
    assert forger.forge(der(facebook), "qaznet") == a
    assert forger.ssl_context(der(facebook), "qaznet") is forger.ssl_context(der(facebook), "qaznet")
    assert forger.generated == 1
    b = forger.forge(der(facebook), "isca")
    c = forger.forge(der(real_leaf(("vk.com",))), "qaznet")
    assert len({a[1], b[1], c[1]}) == 3 and forger.generated == 3


def test_concurrent_forges_of_one_leaf_generate_one_key(roots, facebook) -> None:
    forger = Forger(roots)
    out: list[tuple[bytes, bytes]] = []
    threads = [threading.Thread(target=lambda: out.append(forger.forge(der(facebook), "isca")))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 1 and forger.generated == 1


@pytest.mark.parametrize(("kwargs", "exts"), [
    ({"with_san": False}, []),
    ({"san_critical": True, "exts": False}, [x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME]),
])
def test_leaf_edge_cases(roots, kwargs, exts) -> None:
    real = real_leaf(**kwargs)
    chain_pem, _ = Forger(roots).forge(der(real), "qaznet")
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    assert [e.oid for e in leaf.extensions] == exts
    if exts:
        assert leaf.extensions[0].critical  # criticality copied as sent
    assert inspect_chain([der(leaf)]).leaf_traits == ("rsa_exponent_3", "extensions_stripped")


def test_forged_chain_verifies_only_under_the_relaxed_profile(roots, facebook) -> None:
    """A user with the lab root installed: the chain builds to it (anchor 'extra'), but a
    2019-style leaf without AKI/EKU fails today's CA/B-Forum profile (webpki policy)."""
    chain_pem, _ = Forger(roots).forge(der(facebook), "qaznet")
    chain = [der(c) for c in x509.load_pem_x509_certificates(chain_pem)]
    anchors = roots["qaznet"][0].cert_pem
    relaxed = TrustStore(extra_anchors_pem=anchors, include_mozilla=False, policy="relaxed")
    strict = TrustStore(extra_anchors_pem=anchors, include_mozilla=False, policy="webpki")
    assert relaxed.verify(chain, "facebook.com") == (None, "extra")
    assert strict.verify(chain, "facebook.com") == ("ssl_invalid_certificate", "extra")
    assert relaxed.verify(chain, "vk.com")[0] == "ssl_invalid_hostname"


@pytest.mark.parametrize(("leaf", "root", "message"), [
    (b"not a certificate", "qaznet", "not a DER certificate"),
    (None, "gost", "unknown MITM root 'gost'"),
])
def test_forge_errors_name_the_problem(roots, facebook, leaf, root, message) -> None:
    with pytest.raises(ForgeError, match=message):
        Forger(roots).forge(leaf if leaf is not None else der(facebook), root)


def test_unknown_root_name() -> None:
    with pytest.raises(ForgeError, match="unknown MITM root 'kz'"):
        make_mitm_root("kz")  # type: ignore[arg-type]


def test_intermediate_for_a_fresh_root() -> None:
    root = make_mitm_root("qaznet")
    inter = make_security_intermediate(root)
    inter.cert.verify_directly_issued_by(root.cert)
