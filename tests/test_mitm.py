"""probe.mitm: known Kazakh interception roots, names, forged-leaf traits.

Chains are built here with cryptography (fresh keys, never the real CAs' keys, which
nobody outside the state CA has); the real roots' certificates come from the package data.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from probe import mitm
from probe.mitm import MITMFinding, inspect_chain, known_roots, spki_sha256

ROOTS_DIR = resources.files("probe") / "data" / "mitm-roots"
ROOT_PEMS = sorted(p.name for p in ROOTS_DIR.iterdir() if re.fullmatch(r"[0-9a-f]{64}\.pem", p.name))
NOW = datetime.now(UTC)

# --------------------------------------------------------------------------- builders



def _key(bits: int = 2048, e: int = 65537) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=e, key_size=bits)


def _name(**attrs: str) -> x509.Name:
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME,
            "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def _cert(subject: x509.Name, key: rsa.RSAPrivateKey, *, issuer: x509.Name | None = None,
          signer: rsa.RSAPrivateKey | None = None, ca: bool = False, san: list[str] | None = None,
          full_extensions: bool = True, days: int = 365) -> x509.Certificate:
    """A certificate; ``issuer``/``signer`` default to self-signed."""
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer or subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=1))
         .not_valid_after(NOW + timedelta(days=days)))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    if full_extensions:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(signer or key, hashes.SHA256())


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def qaznet_lookalike() -> dict[str, x509.Certificate]:
    """The 2019 shape: root ``C=KZ, CN=Qaznet Trust Network`` (same DN, fresh key) →
    intermediate ``C=KZ, CN=Security Certificate`` → leaf with e=3 and only a SAN."""
    root_key, int_key = _key(), _key()
    root_name = _name(C="KZ", CN="Qaznet Trust Network")
    int_name = _name(C="KZ", CN="Security Certificate")
    root = _cert(root_name, root_key, ca=True)
    inter = _cert(int_name, int_key, issuer=root_name, signer=root_key, ca=True)
    leaf_key = _key(2048, 3)
    leaf = _cert(_name(CN="www.facebook.com"), leaf_key, issuer=int_name, signer=int_key,
                 san=["www.facebook.com", "facebook.com"], full_extensions=False)
    return {"root": root, "intermediate": inter, "leaf": leaf}


@pytest.fixture(scope="module")
def some_leaf() -> bytes:
    ca = trustme.CA()
    pem = ca.issue_cert("example.org").cert_chain_pems[0].bytes()
    return _der(x509.load_pem_x509_certificate(pem))


@pytest.fixture(scope="module")
def normal_chain() -> list[bytes]:
    ca = trustme.CA()
    inter = ca.create_child_ca()
    sc = inter.issue_cert("example.org")
    return [_der(x509.load_pem_x509_certificate(p.bytes())) for p in sc.cert_chain_pems] + [
        _der(x509.load_pem_x509_certificate(ca.cert_pem.bytes()))]


# --------------------------------------------------------------------------- known roots


def test_known_roots_match_manifest_and_pems() -> None:
    rows = list(csv.DictReader(io.StringIO((ROOTS_DIR / "manifest.csv").read_text("utf-8"))))
    roots = known_roots()
    assert len(roots) == len(rows) == len(ROOT_PEMS) == 10
    assert known_roots() is roots  # cached
    for r, row in zip(roots, rows):
        cert = x509.load_pem_x509_certificate((ROOTS_DIR / r.file).read_bytes())
        assert r.sha256_spki == row["sha256_spki"] == spki_sha256(cert)
        assert r.sha256_der == row["sha256_der"] == hashlib.sha256(_der(cert)).hexdigest()
        assert r.tag == row["tag"] and r.subject == cert.subject.rfc4514_string()
    assert {r.tag for r in roots} == {"qaznet-2019", "isca-ca-dec2020", "isca-nursultan-2021", "isca-variant"}
    # The shipped bundle holds exactly the same ten certificates.
    bundle = x509.load_pem_x509_certificates((ROOTS_DIR / "kz-mitm-roots-bundle.pem").read_bytes())
    assert {hashlib.sha256(_der(c)).hexdigest() for c in bundle} == {r.sha256_der for r in roots}


def test_spki_sha256_matches_chromium_pin() -> None:
    qaznet = next(r for r in known_roots() if r.tag == "qaznet-2019")
    cert = x509.load_pem_x509_certificate((ROOTS_DIR / qaznet.file).read_bytes())
    h = spki_sha256(cert)
    assert h == "b5ba8dd7f89564c2889d3d6453c84998c77824919b64ea0835aa62986591be50"
    assert base64.b64encode(bytes.fromhex(h)).decode() == "tbqN1/iVZMKInT1kU8hJmMd4JJGbZOoINapimGWRvlA="


@pytest.mark.parametrize("tamper", ["spki", "der", "subject"])
def test_bad_root_file_is_caught_at_load(tmp_path, monkeypatch, tamper: str) -> None:
    for p in ROOTS_DIR.iterdir():
        if p.name.endswith((".pem", ".csv")):
            (tmp_path / p.name).write_bytes(p.read_bytes())
    manifest = (tmp_path / "manifest.csv").read_text("utf-8")
    first = ROOT_PEMS[0]
    if tamper == "spki":  # the manifest's pin no longer matches the PEM
        row = next(r for r in csv.DictReader(io.StringIO(manifest)) if r["file"] == first)
        manifest = manifest.replace(row["sha256_spki"], "0" * 64)
        (tmp_path / "manifest.csv").write_text(manifest, "utf-8")
    elif tamper == "der":  # another certificate stored under this name
        shutil.copy(tmp_path / ROOT_PEMS[1], tmp_path / first)
    else:
        manifest = manifest.replace('"C=KZ,CN=Qaznet Trust Network"', '"C=KZ,CN=Qaznet Trust Netw0rk"', 1)
        (tmp_path / "manifest.csv").write_text(manifest, "utf-8")
    monkeypatch.setattr(mitm, "_roots_dir", lambda: tmp_path)
    mitm._clear_caches()
    try:
        with pytest.raises(mitm.RootDataError):
            known_roots()
    finally:
        monkeypatch.undo()
        mitm._clear_caches()
    assert len(known_roots()) == 10


# --------------------------------------------------------------------------- chains


@pytest.mark.parametrize("with_root", [True, False], ids=["root-sent", "root-not-sent"])
@pytest.mark.parametrize("form", ["der", "base64"])
def test_qaznet_lookalike_flagged_by_name(qaznet_lookalike, with_root: bool, form: str) -> None:
    c = qaznet_lookalike
    chain = [_der(c["leaf"]), _der(c["intermediate"])] + ([_der(c["root"])] if with_root else [])
    if form == "base64":
        chain = [base64.b64encode(d).decode() for d in chain]
    f = inspect_chain(chain)
    assert f.mitm is True
    assert "name" in f.matched_by and "spki" not in f.matched_by
    assert f.matched_by == ("name", "leaf_traits")
    assert "rsa_exponent_3" in f.leaf_traits and "extensions_stripped" in f.leaf_traits
    assert "rsa_1024" not in f.leaf_traits
    assert f.root_tag is None  # a look-alike: no known root *key* is involved
    # The leaf's issuer is the first name hit (position 0, the certificate it issued).
    assert f.position == 0 and f.matched_subject == "CN=Security Certificate,C=KZ"
    assert f.issuer == "CN=Security Certificate,C=KZ"
    assert f.unparseable == ()
    assert "Security Certificate" in f.reason


def test_forged_leaf_1024_before_19_july_2019() -> None:
    int_key = _key()
    int_name = _name(C="KZ", CN="Security Certificate")
    leaf = _cert(_name(CN="mail.ru"), _key(1024, 3), issuer=int_name, signer=int_key,
                 san=["mail.ru"], full_extensions=False)
    f = inspect_chain([_der(leaf)])
    assert f.mitm and set(f.leaf_traits) == {"rsa_exponent_3", "rsa_1024", "extensions_stripped"}


def test_leaf_traits_alone_do_not_set_mitm() -> None:
    """An exponent-3, extension-less leaf from an unrelated CA is reported, not flagged."""
    ca_key = _key()
    ca_name = _name(CN="Router Local CA", O="Home router")
    leaf = _cert(_name(CN="192.168.1.1"), _key(2048, 3), issuer=ca_name, signer=ca_key,
                 san=["router.lan"], full_extensions=False)
    f = inspect_chain([_der(leaf), _der(_cert(ca_name, ca_key, ca=True))])
    assert f.mitm is False
    assert f.matched_by == ("leaf_traits",)
    assert f.leaf_traits == ("rsa_exponent_3", "extensions_stripped")
    assert f.root_tag is None and f.position is None and f.matched_subject is None
    assert "not conclusive" in f.reason


@pytest.mark.parametrize("pem_name", ROOT_PEMS)
def test_each_real_root_flagged_by_spki(some_leaf: bytes, pem_name: str) -> None:
    root_cert = x509.load_pem_x509_certificate((ROOTS_DIR / pem_name).read_bytes())
    expected = next(r for r in known_roots() if r.file == pem_name)
    f = inspect_chain([some_leaf, _der(root_cert)])
    assert f.mitm is True
    assert f.matched_by[0] == "spki"
    assert f.root_tag == expected.tag
    assert f.position == 1
    assert f.matched_subject == root_cert.subject.rfc4514_string()
    assert expected.sha256_spki[:12] in f.reason
    assert f.leaf_traits == ()  # trustme's leaf is an ordinary one


ISCA = dict(C="KZ", O="ISCA", CN="Information Security Certification Authority")


@pytest.mark.parametrize("subject,issuer", [
    # a 75-day intermediate issued by the ISCA root (root not sent), subject unrelated
    (dict(CN="Intermediate 2024-08"), ISCA),
    # an intermediate named like the CA itself, fresh key
    (ISCA, ISCA),
    # the Nur-Sultan root's DN, with ST/L: attribute order and extras do not matter
    (dict(CN="Sub CA", O="ISCA"), dict(C="KZ", ST="Nur-Sultan", L="Nur-Sultan", O="ISCA",
                                       CN="Information Security Certification Authority")),
    # the December 2020 root's name
    (dict(CN="Sub CA"), dict(C="KZ", O="ISCA", CN="Information Security Certification Authority CA")),
], ids=["issuer-only", "isca-named", "nur-sultan-dn", "dec-2020-ca"])
def test_isca_intermediate_fresh_key_flagged_by_name(some_leaf: bytes, subject, issuer) -> None:
    fake_root_key = _key()
    inter = _cert(_name(**subject), _key(), issuer=_name(**issuer), signer=fake_root_key, ca=True, days=75)
    f = inspect_chain([some_leaf, _der(inter)])
    assert f.mitm is True
    assert f.matched_by == ("name",)
    assert f.position == 1
    assert f.root_tag is None


@pytest.mark.parametrize("attrs,flagged", [
    (dict(C="US", CN="Qaznet Trust Network"), False),  # wrong country: not the state CA's DN
    (dict(CN="Qaznet Trust Network"), False),  # no country at all
    (dict(CN="Security Certificate"), False),  # a generic phrase without C=KZ
    (dict(C="US", CN="Security Certificate"), False),
    (dict(C="KZ", CN="Security Certificate Authority"), False),  # CN must be equal, not a prefix
    (dict(C="KZ", CN="Qaznet Trust Network"), True),
    (dict(C="kz", CN="QAZNET trust network"), True),  # case-insensitive
    (dict(C="KZ", CN="Qaznet   Trust  Network "), True),  # whitespace collapsed
    (dict(C="KZ", O="Extra Org", CN="Qaznet Trust Network"), True),  # extra attributes
    (dict(C="KZ", CN="Security Certificate"), True),
    (dict(CN="Information Security Certification Authority CA"), True),  # CN prefix, any C
    (dict(C="US", O="isca", CN="Whatever"), True),  # O=ISCA, any country
    (dict(CN="Information Security"), False),
])
def test_name_rules(attrs, flagged: bool) -> None:
    """Decision: the Qaznet and Security Certificate names count only with C=KZ (the DN the
    state CA used); the ISCA organisation and the "Information Security Certification
    Authority" CN prefix count in any country (distinctive on their own)."""
    cert = _cert(_name(**attrs), _key(), ca=True)
    f = inspect_chain([_der(cert)])
    assert f.mitm is flagged
    assert f.matched_by == (("name",) if flagged else ())


def test_normal_chain_not_flagged(normal_chain: list[bytes]) -> None:
    f = inspect_chain(normal_chain)
    assert f == MITMFinding(mitm=False, matched_by=(), root_tag=None, matched_subject=None, position=None,
                            leaf_traits=(), issuer=f.issuer, unparseable=(),
                            reason="no known interception root or CA name in the chain")
    assert f.issuer is not None and "trustme" in f.issuer


@pytest.mark.parametrize("garbage", [b"\x00garbage", b"", "!!not base64!!", base64.b64encode(b"junk").decode(),
                                     None, 42])
def test_garbage_in_position_1_is_recorded_not_fatal(normal_chain, qaznet_lookalike, garbage) -> None:
    f = inspect_chain([normal_chain[0], garbage, *normal_chain[1:]])  # type: ignore[list-item]
    assert f.unparseable == (1,) and f.mitm is False and f.leaf_traits == ()
    assert "unparseable entries at 1" in f.reason
    c = qaznet_lookalike
    f = inspect_chain([_der(c["leaf"]), garbage, _der(c["intermediate"])])  # type: ignore[list-item]
    assert f.unparseable == (1,) and f.mitm is True


def test_unparseable_leaf() -> None:
    f = inspect_chain([b"\x30\x03\x02\x01\x00"])
    assert f.unparseable == (0,) and f.issuer is None and f.leaf_traits == () and not f.mitm


def test_empty_chain() -> None:
    f = inspect_chain([])
    assert f.mitm is False and f.matched_by == () and f.issuer is None and f.unparseable == ()
    assert f.reason == "empty chain: nothing to inspect"


def test_pem_string_accepted(qaznet_lookalike) -> None:
    pem = qaznet_lookalike["intermediate"].public_bytes(serialization.Encoding.PEM).decode()
    assert inspect_chain([pem]).mitm


def test_extra_spki_and_names(normal_chain: list[bytes]) -> None:
    root = x509.load_der_x509_certificate(normal_chain[-1])
    h = spki_sha256(root)
    for spec in (h, h.upper(), "sha256/" + base64.b64encode(bytes.fromhex(h)).decode()):
        f = inspect_chain(normal_chain, extra_spki=[spec])
        assert f.mitm and f.matched_by == ("spki",) and f.root_tag == "extra"
        assert f.position == len(normal_chain) - 1
    leaf = x509.load_der_x509_certificate(normal_chain[0])
    org = leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    f = inspect_chain(normal_chain, extra_names=[f"O={org.upper()}"])
    assert f.mitm and f.matched_by == ("name",) and f.position == 0 and "configured" in f.reason
    assert not inspect_chain(normal_chain, extra_names=["O=someone else"]).mitm
    with pytest.raises(ValueError):
        inspect_chain(normal_chain, extra_spki=["abc"])
    with pytest.raises(ValueError):
        inspect_chain(normal_chain, extra_names=["not a dn"])


def test_verification_does_not_matter(some_leaf: bytes) -> None:
    """Same input, same answer: inspect_chain has no notion of 'verified'. A user who
    installed the state root gets a verifying chain that is still flagged."""
    qaznet = next(r for r in known_roots() if r.tag == "qaznet-2019")
    root = (ROOTS_DIR / qaznet.file).read_bytes()
    a = inspect_chain([some_leaf, root.decode()])
    b = inspect_chain([some_leaf, root.decode()])
    assert a == b and a.mitm


def test_as_dict_is_json_ready(qaznet_lookalike) -> None:
    f = inspect_chain([_der(qaznet_lookalike["leaf"]), b"junk"])
    d = json.loads(json.dumps(f.as_dict()))
    assert d["mitm"] is True and d["unparseable"] == [1] and "rsa_exponent_3" in d["leaf_traits"]


def test_a_sites_own_certificate_naming_isca_is_not_interception() -> None:
    """Hostile-test finding: only issuers and CA certificates' names are evidence."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("isca.example.org", organization_name="ISCA")
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(serialization.Encoding.DER)
    assert not inspect_chain([der]).mitm
    isca = trustme.CA(organization_name="ISCA")  # the same name on the *issuer* is evidence
    leaf2 = isca.issue_cert("www.example.org")
    der2 = x509.load_pem_x509_certificate(leaf2.cert_chain_pems[0].bytes()).public_bytes(serialization.Encoding.DER)
    f = inspect_chain([der2])
    assert f.mitm and "name" in f.matched_by
