"""The lab's "public" PKI: a root CA the probe trusts through ``tls.extra_anchors``,
and server certificates for lab sites and infrastructure — in the shapes sites really
serve them (a site's ``cert`` key, :data:`CERT_SHAPES`).

The hierarchy (every CA an ECDSA P-256 key, made once per lab by :meth:`LabPKI.create`)::

    lab root (trusted) ── issuing CA 1 ─────────── leaves of "intermediate", "leaf_only"
    root X1 (trusted) ── R3 ───────────────────── leaves of "cross_signed", "expired_root"
    root X1 cross-signed by the lab root (valid)   served by "cross_signed"
    root X1 cross-signed by root X3 (X3 EXPIRED,   served by "expired_root": Let's Encrypt's
      trusted: an old store still holds it)          chain after DST Root CA X3 expired
    untrusted root (in no store) ───────────────── leaves of "unknown_ca"

``expired_root`` is the 2021 Let's Encrypt case: from 30 September 2021 the default chain
was leaf ← R3 ← ISRG Root X1 cross-signed by DST Root CA X3 (expired that day); a client
that trusts ISRG Root X1 must build the shorter path leaf ← R3 ← ISRG Root X1 and
succeed (Let's Encrypt, "DST Root CA X3 Expiration (September 2021)",
https://letsencrypt.org/docs/dst-root-ca-x3-expiration-september-2021/; OpenSSL 1.0.2
failed exactly here because it did not try the alternate path).

Certificates follow the CA/Browser Forum profile that
``cryptography.x509.verification`` enforces (RFC 5280 + CA/B Baseline Requirements):
CA with critical basicConstraints and keyUsage, subject/authority key identifiers;
leaves with a non-critical subjectAltName, extendedKeyUsage serverAuth, a validity
under 398 days. So the probe's production ``webpki`` policy verifies them, the helper
too. Keys are ECDSA P-256 (fast); every leaf shares one key (a lab shortcut: 1,000
sites cost 1,000 signatures, not 1,000 key generations).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "kzprobe lab public root CA"

#: What a site's certificate looks like (scenario key ``cert``), and what a verifier must say:
#:
#: * ``ok``: leaf signed by the lab root, served with the root (the lab's default).
#: * ``intermediate``: leaf ← issuing CA 1 ← lab root; served leaf + intermediate (what
#:   nearly every real site serves). Verifies.
#: * ``cross_signed``: leaf ← R3 ← X1, served with R3 and X1 cross-signed by the lab root:
#:   two valid paths (to X1, to the lab root). Verifies.
#: * ``expired_root``: as ``cross_signed`` but the cross-sign is by root X3, expired; the
#:   path leaf ← R3 ← X1 is valid and must be found (Let's Encrypt, 2021). Verifies.
#: * ``leaf_only``: leaf ← issuing CA 1, served alone (the intermediate missing). Browsers
#:   may fetch it from the AIA URL (Chrome, Safari) or know it (Firefox preloads
#:   intermediates); kzprobe does not fetch (a fetch would leave the measured path and
#:   contact a third party), nor does OONI (Go's crypto/tls), nor the helper: the site's
#:   misconfiguration, seen by the control too (ssl_unknown_authority at both).
#: * ``expired``: leaf expired yesterday (webconnectivityqa badSSLWithExpiredCertificate).
#: * ``wrong_name``: leaf for another name (badSSLWithWrongServerName).
#: * ``unknown_ca``: leaf from a root no store holds (badSSLWithUnknownAuthorityWithConsistentDNS).
CERT_SHAPES = ("ok", "intermediate", "cross_signed", "expired_root", "leaf_only", "expired", "wrong_name",
               "unknown_ca")
#: Shapes that verify for the site's name in a store holding the lab's roots.
CERT_VALID = ("ok", "intermediate", "cross_signed", "expired_root")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kzprobe lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
        *, not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    """A CA certificate (self-signed when ``issuer_key`` is ``key``) in the CA/B profile."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
            .sign(issuer_key, hashes.SHA256()))


#: The lab's other CAs: name → (common name, issuer's name in this table or "" = self-signed,
#: key's name (a cross-sign shares its subject's key), expired, trusted by the probe and the helper).
_CAS: dict[str, tuple[str, str, str, bool, bool]] = {
    "inter1": ("kzprobe lab issuing CA 1", "root", "inter1", False, False),
    "x1": ("kzprobe lab root X1", "", "x1", False, True),
    "x3": ("kzprobe lab root X3 (expired)", "", "x3", True, True),
    "x1_by_root": ("kzprobe lab root X1", "root", "x1", False, False),
    "x1_by_x3": ("kzprobe lab root X1", "x3", "x1", False, False),
    "r3": ("kzprobe lab R3", "x1", "r3", False, False),
    "untrusted": ("kzprobe lab untrusted root", "", "untrusted", False, False),
}
#: Per shape: (the CA that signs the leaf, the CAs served after the leaf).
_SHAPE_CHAIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "ok": ("root", ("root",)), "expired": ("root", ("root",)), "wrong_name": ("root", ("root",)),
    "intermediate": ("inter1", ("inter1",)), "leaf_only": ("inter1", ()),
    "cross_signed": ("r3", ("r3", "x1_by_root")), "expired_root": ("r3", ("r3", "x1_by_x3")),
    "unknown_ca": ("untrusted", ("untrusted",)),
}


@dataclass
class LabPKI:
    """The lab CA, the other CAs of :data:`_CAS` and the shared leaf key.

    Attributes:
        ca_cert: the root certificate.
        ca_key: its key.
        leaf_key: the key of every issued leaf.
        cas: name → (certificate, key) of the other CAs (:data:`_CAS`).
    """

    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    leaf_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cas: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = field(default_factory=dict)

    @classmethod
    def create(cls) -> LabPKI:
        """A fresh CA (valid from yesterday for 10 years) and the other CAs of :data:`_CAS`
        (root X3 expired yesterday, after 10 years)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(CA_NAME)
        now = dt.datetime.now(dt.UTC)
        cert = _ca(name, key, name, key, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=3650))
        pki = cls(ca_cert=cert, ca_key=key)
        keys = {n: ec.generate_private_key(ec.SECP256R1()) for n, (_, _, k, _, _) in _CAS.items() if k == n}
        for n, (cn, issuer, keyname, expired, _trusted) in _CAS.items():  # issuers come first in the table
            ik, iname = (keys[keyname], _name(cn)) if not issuer else \
                ((key, name) if issuer == "root" else (pki.cas[issuer][1], pki.cas[issuer][0].subject))
            nb, na = ((now - dt.timedelta(days=3651), now - dt.timedelta(days=1)) if expired
                      else (now - dt.timedelta(days=1), now + dt.timedelta(days=3650)))
            pki.cas[n] = (_ca(_name(cn), keys[keyname], iname, ik, not_before=nb, not_after=na), keys[keyname])
        return pki

    @property
    def trusted_roots(self) -> list[x509.Certificate]:
        """The roots the probe and the helper trust: the lab root first, then X1 and the expired X3."""
        return [self.ca_cert] + [self.cas[n][0] for n, row in _CAS.items() if row[4] and n in self.cas]

    @classmethod
    def load(cls, directory: Path) -> LabPKI:
        """Read ``ca.pem``, ``ca-key.pem``, ``leaf-key.pem`` and the other CAs written by :meth:`save`."""
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
        leaf_key = serialization.load_pem_private_key((directory / "leaf-key.pem").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey) and isinstance(leaf_key, ec.EllipticCurvePrivateKey)
        cas = {}
        for n in _CAS:
            if (directory / f"ca-{n}.pem").is_file():
                k = serialization.load_pem_private_key((directory / f"ca-{n}-key.pem").read_bytes(), None)
                assert isinstance(k, ec.EllipticCurvePrivateKey)
                cas[n] = (x509.load_pem_x509_certificate((directory / f"ca-{n}.pem").read_bytes()), k)
        return cls(ca_cert=ca, ca_key=ca_key, leaf_key=leaf_key, cas=cas)

    def save(self, directory: Path) -> Path:
        """Write the CAs, their keys and the leaf key (keys mode 600); returns the path of
        ``ca.pem``, which holds every root of :attr:`trusted_roots` (the lab root first)."""
        directory.mkdir(parents=True, exist_ok=True)
        keys = [("ca-key.pem", self.ca_key), ("leaf-key.pem", self.leaf_key)] + \
            [(f"ca-{n}-key.pem", k) for n, (_c, k) in self.cas.items()]
        for fname, k in keys:
            p = directory / fname
            p.write_bytes(_pem_key(k))
            p.chmod(0o600)
        for n, (c, _k) in self.cas.items():
            (directory / f"ca-{n}.pem").write_bytes(_pem(c))
        (directory / "ca.pem").write_bytes(b"".join(_pem(c) for c in self.trusted_roots))
        return directory / "ca.pem"

    @property
    def leaf_key_pem(self) -> bytes:
        return _pem_key(self.leaf_key)

    def issue(self, names: list[str], shape: str = "ok") -> bytes:
        """A leaf for DNS names (A-labels) and/or IP addresses in the certificate shape
        ``shape`` (:data:`CERT_SHAPES`); returns the PEM chain the server sends (leaf first).

        Raises:
            ValueError: an unknown shape, or a shape whose CAs this PKI lacks (made by an old
                :meth:`create`).
        """
        if shape not in _SHAPE_CHAIN:
            raise ValueError(f"unknown certificate shape {shape!r} (known: {', '.join(CERT_SHAPES)})")
        signer, served = _SHAPE_CHAIN[shape]
        missing = [n for n in (signer, *served) if n != "root" and n not in self.cas]
        if missing:
            raise ValueError(f"certificate shape {shape!r} needs the lab CAs {missing}")

        def ca(n: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
            return (self.ca_cert, self.ca_key) if n == "root" else self.cas[n]

        issuer_cert, issuer_key = ca(signer)
        if shape == "wrong_name":  # the certificate of another name, as a misconfigured server sends
            names = ["wrong-name.invalid"]
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = dt.datetime.now(dt.UTC)
        nb, na = ((now - dt.timedelta(days=91), now - dt.timedelta(days=1)) if shape == "expired"
                  else (now - dt.timedelta(hours=1), now + dt.timedelta(days=90)))
        cn = names[0][:64]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(issuer_cert.subject).public_key(self.leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(nb).not_valid_after(na)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.leaf_key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                               critical=False)
                .sign(issuer_key, hashes.SHA256()))
        return _pem(cert) + b"".join(_pem(ca(n)[0]) for n in served)
