"""The lab's "public" PKI: a root CA the probe trusts through ``tls.extra_anchors``,
and server certificates for lab sites and infrastructure.

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


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class LabPKI:
    """The lab CA and the shared leaf key.

    Attributes:
        ca_cert: the root certificate.
        ca_key: its key.
        leaf_key: the key of every issued leaf.
    """

    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    leaf_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def create(cls) -> LabPKI:
        """A fresh CA (valid from yesterday for 10 years)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kzprobe lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(ca_cert=cert, ca_key=key)

    @classmethod
    def load(cls, directory: Path) -> LabPKI:
        """Read ``ca.pem``, ``ca-key.pem``, ``leaf-key.pem`` written by :meth:`save`."""
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
        leaf_key = serialization.load_pem_private_key((directory / "leaf-key.pem").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey) and isinstance(leaf_key, ec.EllipticCurvePrivateKey)
        return cls(ca_cert=ca, ca_key=ca_key, leaf_key=leaf_key)

    def save(self, directory: Path) -> Path:
        """Write the CA, its key and the leaf key (mode 600); returns the CA PEM path."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in (("ca-key.pem", _pem_key(self.ca_key)), ("leaf-key.pem", _pem_key(self.leaf_key))):
            p = directory / name
            p.write_bytes(data)
            p.chmod(0o600)
        (directory / "ca.pem").write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        return directory / "ca.pem"

    @property
    def leaf_key_pem(self) -> bytes:
        return _pem_key(self.leaf_key)

    def issue(self, names: list[str]) -> bytes:
        """A leaf for DNS names (A-labels) and/or IP addresses; returns the PEM chain (leaf + CA)."""
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = dt.datetime.now(dt.UTC)
        cn = names[0][:64]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.ca_cert.subject).public_key(self.leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=90))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.leaf_key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                               critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)
