"""The lab's copy of the Kazakh interception PKI, and the forger of leaf certificates.

What is copied, and from where (``../shared/data/KZ-MITM-FACTS.md``; Raman et al.,
"Investigating Large Scale HTTPS Interception in Kazakhstan", IMC 2020,
doi:10.1145/3419394.3423665; Mozilla bugs 1567114 and 1680927):

* Roots: the subject DN and the validity period are copied attribute by attribute, in the
  same RDN order, from the real roots shipped in ``probe/data/mitm-roots/`` (Chromium's
  blocklist): ``qaznet`` = ``C=KZ, CN=Qaznet Trust Network`` (2016-02-02 – 2046-02-02, the
  2019 root); ``isca`` = ``C=KZ, O=ISCA, CN=Information Security Certification Authority
  CA`` (2020-02-28 – 2040-02-28, the December 2020 "Cyber Security Nur-Sultan 2020" drill
  root). The *keys* are fresh: the lab root has the real root's name but not its key, so
  :func:`probe.mitm.inspect_chain` recognises it by name (``matched_by`` contains
  ``"name"``), never by SPKI. The real roots are RSA-4096; the lab's are RSA-2048 so that
  a test session starts quickly.
* Intermediate: ``C=KZ, CN=Security Certificate``, RSA-2048, e=65537, as observed in 2019.
  The 2020 drill's intermediate is not documented; the lab reuses the 2019 name under the
  ISCA root too.
* Forged leaf, as observed after 19 July 2019: the subject and the subjectAltName of the
  server's *real* certificate (not the SNI), a fresh RSA-2048 key with public exponent 3,
  every other extension dropped, the real validity shifted 6 hours earlier, and the real
  serial number with its low 32 bits replaced by random bits. Signed by the intermediate
  with SHA-256.

The forged chain sent to clients is leaf + intermediate (the root is what a user was told
to install; servers do not send roots).

Key generation takes ~0.1–0.5 s per key, so :class:`Forger` caches forged leaves (and
their server contexts) per (root name, SHA-256 of the real leaf DER). ``cryptography``
(≥ 42, checked on 50) still accepts ``public_exponent=3`` in
``rsa.generate_private_key``; no hand-made key is needed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from probe.errors import KzprobeError
from probe.mitm import known_roots

__all__ = [
    "INTERMEDIATE_SUBJECT",
    "LEAF_VALIDITY_SHIFT",
    "MITM_ROOT_NAMES",
    "ROOT_TAGS",
    "ForgeError",
    "Forger",
    "LabCA",
    "MitmRootName",
    "make_mitm_root",
    "make_roots",
    "make_security_intermediate",
]

MitmRootName = Literal["qaznet", "isca"]
#: The root names a scenario may use in ``tls = "mitm:<root>"``.
MITM_ROOT_NAMES: tuple[str, ...] = get_args(MitmRootName)

#: Lab root name → tag of the real root (``probe/data/mitm-roots/manifest.csv``) whose
#: subject DN and validity the lab root copies.
ROOT_TAGS: dict[str, str] = {"qaznet": "qaznet-2019", "isca": "isca-ca-dec2020"}

#: ``C=KZ, CN=Security Certificate``: the 2019 intermediate (KZ-MITM-FACTS.md).
INTERMEDIATE_SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"),
    x509.NameAttribute(NameOID.COMMON_NAME, "Security Certificate"),
])

#: The 2019 forger kept the real leaf's validity, shifted about 6 hours earlier.
LEAF_VALIDITY_SHIFT = dt.timedelta(hours=6)

#: RSA sizes: lab CAs 2048 (real roots 4096, shrunk for speed); forged leaves 2048 with
#: e=3 as after 19 July 2019 (1024-bit before).
CA_KEY_BITS = 2048
LEAF_KEY_BITS = 2048
LEAF_EXPONENT = 3


class ForgeError(KzprobeError, ValueError):
    """The real leaf cannot be forged (not a certificate) or a root name is unknown."""


@dataclass(frozen=True, kw_only=True)
class LabCA:
    """A lab certificate authority: its certificate and private key.

    Attributes:
        cert_pem: the certificate, PEM.
        key_pem: the private key, PEM (PKCS#8, unencrypted — lab only).
        cert: the parsed certificate.
    """

    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate
    _key: rsa.RSAPrivateKey = field(repr=False, compare=False)

    @property
    def key(self) -> rsa.RSAPrivateKey:
        """The private key object (for signing)."""
        return self._key

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Sign ``builder`` (subject, key, validity … already set) as this CA, SHA-256."""
        return builder.issuer_name(self.cert.subject).sign(self._key, hashes.SHA256())


def _new_key(bits: int, exponent: int = 65537) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=exponent, key_size=bits)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _lab_ca(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> LabCA:
    return LabCA(cert_pem=_pem(cert), key_pem=_key_pem(key), cert=cert, _key=key)


def _real_root(name: str) -> x509.Certificate:
    tag = ROOT_TAGS.get(name)
    if tag is None:
        raise ForgeError(f"unknown MITM root {name!r}: expected one of {', '.join(MITM_ROOT_NAMES)}")
    for root in known_roots():
        if root.tag == tag:
            pem = (resources.files("probe") / "data" / "mitm-roots" / root.file).read_bytes()
            return x509.load_pem_x509_certificate(pem)
    raise ForgeError(f"no real root with tag {tag!r} in probe/data/mitm-roots/manifest.csv")


def _ca_extensions(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey,
                   issuer_key: rsa.RSAPrivateKey, path_length: int | None
                   ) -> x509.CertificateBuilder:
    return (builder
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False))


def make_mitm_root(name: MitmRootName) -> LabCA:
    """A self-signed lab root with the subject DN and validity of the real Kazakh root.

    Args:
        name: ``"qaznet"`` (2019, ``C=KZ, CN=Qaznet Trust Network``) or ``"isca"`` (Dec
            2020 drill, ``C=KZ, O=ISCA, CN=Information Security Certification Authority
            CA``). The DN is copied from the shipped real root (:data:`ROOT_TAGS`).

    Returns:
        A :class:`LabCA` with a fresh RSA-2048 key (e=65537), basicConstraints CA
        (critical), keyUsage keyCertSign/cRLSign (critical), SKI and AKI, as the real roots.

    Raises:
        ForgeError: unknown ``name``.
    """
    real = _real_root(name)
    key = _new_key(CA_KEY_BITS)
    builder = (x509.CertificateBuilder()
               .subject_name(real.subject).issuer_name(real.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(real.not_valid_before_utc)
               .not_valid_after(real.not_valid_after_utc))
    cert = _ca_extensions(builder, key, key, None).sign(key, hashes.SHA256())
    return _lab_ca(cert, key)


def make_security_intermediate(root: LabCA) -> LabCA:
    """The ``C=KZ, CN=Security Certificate`` intermediate (RSA-2048, e=65537) under ``root``.

    Valid over the root's whole validity period; basicConstraints CA pathlen 0.
    """
    key = _new_key(CA_KEY_BITS)
    builder = (x509.CertificateBuilder()
               .subject_name(INTERMEDIATE_SUBJECT)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(root.cert.not_valid_before_utc)
               .not_valid_after(root.cert.not_valid_after_utc))
    cert = root.sign(_ca_extensions(builder, key, root.key, 0))
    return _lab_ca(cert, key)


def make_roots(names: tuple[MitmRootName, ...] = ("qaznet", "isca")
               ) -> dict[MitmRootName, tuple[LabCA, LabCA]]:
    """``{name: (root, intermediate)}`` for :class:`Forger`, freshly generated."""
    out: dict[MitmRootName, tuple[LabCA, LabCA]] = {}
    for n in names:
        root = make_mitm_root(n)
        out[n] = (root, make_security_intermediate(root))
    return out


def _forged_serial(real_serial: int) -> int:
    """The real serial with its low 32 bits replaced by random bits (kept positive, ≤ 159 bits)."""
    s = ((real_serial >> 32) << 32) | secrets.randbits(32)
    s &= (1 << 159) - 1
    return s or 1


@dataclass(frozen=True)
class _Forged:
    chain_pem: bytes
    key_pem: bytes
    context: ssl.SSLContext


class Forger:
    """Forges leaf certificates for intercepted connections, caching them.

    Args:
        roots: ``{root name: (root, intermediate)}``, e.g. from :func:`make_roots`. The
            root's certificate is what a lab vantage with ``trust_mitm_root`` installs.

    Thread-safe: :meth:`forge` may run in worker threads (``asyncio.to_thread``); one
    lock per cache key, so two connections for the same site generate one key.
    """

    def __init__(self, roots: Mapping[MitmRootName, tuple[LabCA, LabCA]]) -> None:
        self.roots: dict[MitmRootName, tuple[LabCA, LabCA]] = dict(roots)
        self._cache: dict[tuple[str, str], _Forged] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        #: Number of leaves actually generated (cache misses), for tests and stats.
        self.generated = 0

    def _forge(self, real_leaf_der: bytes, root: MitmRootName) -> _Forged:
        if root not in self.roots:
            raise ForgeError(f"unknown MITM root {root!r}: this Forger has "
                             f"{', '.join(sorted(self.roots)) or 'none'}")
        try:
            real = x509.load_der_x509_certificate(real_leaf_der)
            subject = real.subject
            subject.rfc4514_string()
        except ValueError as exc:
            raise ForgeError(f"real leaf is not a DER certificate: {exc}") from exc
        key_id = (root, hashlib.sha256(real_leaf_der).hexdigest())
        with self._guard:
            hit = self._cache.get(key_id)
            if hit is not None:
                return hit
            lock = self._locks.setdefault(key_id, threading.Lock())
        with lock:
            hit = self._cache.get(key_id)
            if hit is not None:
                return hit
            _, intermediate = self.roots[root]
            key = _new_key(LEAF_KEY_BITS, LEAF_EXPONENT)
            builder = (x509.CertificateBuilder()
                       .subject_name(subject)
                       .public_key(key.public_key())
                       .serial_number(_forged_serial(real.serial_number))
                       .not_valid_before(real.not_valid_before_utc - LEAF_VALIDITY_SHIFT)
                       .not_valid_after(real.not_valid_after_utc - LEAF_VALIDITY_SHIFT))
            try:
                san = real.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            except x509.ExtensionNotFound:
                san = None
            if san is not None:
                builder = builder.add_extension(san.value, critical=san.critical)
            leaf = intermediate.sign(builder)
            chain_pem = _pem(leaf) + intermediate.cert_pem
            key_pem = _key_pem(key)
            forged = _Forged(chain_pem, key_pem, _server_context(chain_pem, key_pem))
            with self._guard:
                self._cache[key_id] = forged
                self._locks.pop(key_id, None)
                self.generated += 1
            return forged

    def forge(self, real_leaf_der: bytes, root: MitmRootName) -> tuple[bytes, bytes]:
        """Forge (or fetch from cache) the leaf that impersonates ``real_leaf_der``.

        Args:
            real_leaf_der: the real server certificate, DER.
            root: which lab root signs (through its intermediate).

        Returns:
            ``(chain_pem, key_pem)``: leaf + ``Security Certificate`` intermediate (no
            root), and the leaf's private key (PKCS#8 PEM).

        Raises:
            ForgeError: ``real_leaf_der`` does not parse, or ``root`` is not configured.
        """
        f = self._forge(real_leaf_der, root)
        return f.chain_pem, f.key_pem

    def ssl_context(self, real_leaf_der: bytes, root: MitmRootName) -> ssl.SSLContext:
        """A TLS server context presenting the forged chain (cached with the leaf).

        ALPN: offers ``http/1.1`` only (the censor relays bytes to an HTTP/1.1 upstream).
        Raises :class:`ForgeError` as :meth:`forge`.
        """
        return self._forge(real_leaf_der, root).context


def _server_context(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(["http/1.1"])
    # load_cert_chain reads files only (Python 3.11); the files live for this call alone
    with tempfile.TemporaryDirectory(prefix="kzprobe-forge-") as d:
        cert_path, key_path = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(chain_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
