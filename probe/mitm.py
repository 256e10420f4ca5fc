"""TLS interception: is this certificate chain the Kazakh state's?

Kazakhstan intercepted HTTPS three times with a state root that users were told to install
(KZ-MITM-FACTS.md):

* 2019 (17 July – 7 August): root ``C=KZ, CN=Qaznet Trust Network`` → intermediate
  ``C=KZ, CN=Security Certificate`` → forged leaf copying the real certificate's subject
  and SAN, with a fresh RSA key of public exponent 3 (1024-bit before 19 July, 2048-bit
  after) and every other extension dropped. Raman et al., "Investigating Large Scale
  HTTPS Interception in Kazakhstan", IMC 2020, doi:10.1145/3419394.3423665; Mozilla
  bug 1567114.
* December 2020 ("Cyber Security Nur-Sultan 2020"): root ``CN=Information Security
  Certification Authority CA, O=ISCA, C=KZ``. Mozilla bug 1680927.
* 2021–2024: intermediates issued by ``CN=Information Security Certification Authority,
  O=ISCA, C=KZ``, each valid ~75 days, so a list of hashes misses them; names catch them.
  OONI, "Kazakhstan" report, 2024-09-19.

The known roots are Chromium's certificate blocklist entries for these CAs
(``net/data/ssl/blocklist``, BSD-3-Clause), shipped in ``probe/data/mitm-roots/`` with a
manifest (tag, SPKI SHA-256, note); see ``LICENSE-NOTE.md`` there.

:func:`inspect_chain` looks at the chain *as the server sent it*. Its answer does not
depend on whether verification passed: a user who installed the state root gets a chain
that verifies, and is still told it was intercepted (DESIGN.md, "Rules that keep it
honest"). That is the point of this module.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from probe.errors import KzprobeError

__all__ = [
    "KnownRoot",
    "MITMFinding",
    "RootDataError",
    "known_roots",
    "inspect_chain",
    "spki_sha256",
    "KNOWN_NAME_RULES",
]


class RootDataError(KzprobeError, ValueError):
    """The shipped mitm-roots data is inconsistent (a PEM does not match its manifest row)."""


@dataclass(frozen=True, kw_only=True)
class KnownRoot:
    """One known interception root CA.

    Attributes:
        tag: short family tag from the manifest: ``qaznet-2019``, ``isca-ca-dec2020``,
            ``isca-nursultan-2021``, ``isca-variant``. Several roots share a tag.
        subject: the root's subject DN, RFC 4514 (``CN=Qaznet Trust Network,C=KZ``).
        sha256_der: SHA-256 of the certificate DER, lowercase hex (also the file name).
        sha256_spki: SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex (the HPKP /
            Chromium pin). Recomputed from the PEM at load and checked against the manifest.
        note: the manifest's note (sources, when it was seen).
        file: the PEM's file name under ``probe/data/mitm-roots/``.
    """

    tag: str
    subject: str
    sha256_der: str
    sha256_spki: str
    note: str
    file: str


@dataclass(frozen=True, kw_only=True)
class MITMFinding:
    """What :func:`inspect_chain` found.

    Attributes:
        mitm: True when a certificate of the chain matches a known interception root by
            SPKI, or a subject/issuer DN matches a known interception CA name (or one of
            the caller's extras). Forged-leaf traits alone never set it (see
            :func:`inspect_chain`).
        matched_by: which kinds of evidence were found, in this order, each once:
            ``"spki"``, ``"name"``, ``"leaf_traits"``. ``"leaf_traits"`` is listed whenever
            ``leaf_traits`` is non-empty, even when ``mitm`` is False.
        root_tag: tag of the known root involved (``"qaznet-2019"`` …): the root matched by
            SPKI, or, for a name match, the known root whose key verifiably signed a
            certificate of the chain; ``"extra"`` for a match on a caller-supplied SPKI.
            None when no known root key is involved (a name match by a re-keyed CA, as
            the 2021-24 intermediates whose roots were not sent, or a look-alike).
        matched_subject: RFC 4514 DN that matched: the subject of the SPKI-matched
            certificate, or the subject/issuer DN that matched by name. None if no match.
        position: index in the chain of the certificate carrying that match (for an issuer
            match, the certificate *issued by* that name). None if no match.
        leaf_traits: forged-leaf traits of the certificate at position 0:
            ``"rsa_exponent_3"``, ``"rsa_1024"`` (RSA modulus of 1024 bits or less),
            ``"extensions_stripped"`` (none of keyUsage, extendedKeyUsage,
            basicConstraints, authorityInfoAccess, subjectKeyIdentifier,
            authorityKeyIdentifier — every CA/B-Forum leaf has at least EKU, AKI and AIA;
            a SAN alone is allowed, as the 2019 forger kept the SAN). Empty when the leaf
            is missing or unparseable.
        issuer: RFC 4514 issuer DN of the leaf; None when the chain is empty or the leaf
            does not parse.
        unparseable: indexes of chain entries that are not certificates (bad base64, bad
            DER, a name that does not decode). They are skipped, never fatal.
        reason: one human sentence saying why (or why not).
    """

    mitm: bool
    matched_by: tuple[str, ...]
    root_tag: str | None
    matched_subject: str | None
    position: int | None
    leaf_traits: tuple[str, ...]
    issuer: str | None
    unparseable: tuple[int, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists) for measurement records."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


# --------------------------------------------------------------------------- known roots


def spki_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo, as lowercase hex.

    The same value as Chromium's blocklist SPKI hashes and HPKP ``pin-sha256`` (which is
    its base64 form). Raises whatever cryptography raises for an unsupported key type.
    """
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _roots_dir():
    return resources.files("probe") / "data" / "mitm-roots"


@cache
def _root_certs() -> tuple[tuple[KnownRoot, x509.Certificate], ...]:
    base = _roots_dir()
    text = (base / "manifest.csv").read_text(encoding="utf-8")
    out: list[tuple[KnownRoot, x509.Certificate]] = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        fname = row["file"]
        pem = (base / fname).read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        der = cert.public_bytes(serialization.Encoding.DER)
        got_der = hashlib.sha256(der).hexdigest()
        got_spki = spki_sha256(cert)
        want_der = row["sha256_der"].strip().lower()
        want_spki = row["sha256_spki"].strip().lower()
        if got_der != want_der or fname != f"{want_der}.pem":
            raise RootDataError(f"mitm-roots/{fname}: DER SHA-256 {got_der} does not match "
                                f"manifest {want_der}")
        if got_spki != want_spki:
            raise RootDataError(f"mitm-roots/{fname}: SPKI SHA-256 {got_spki} does not match "
                                f"manifest {want_spki}")
        want_subject = {p.strip() for p in row["subject"].split(",")}
        got_subject = {f"{a.rfc4514_attribute_name}={a.value}" for a in cert.subject}
        if want_subject != got_subject:
            raise RootDataError(f"mitm-roots/{fname}: subject {cert.subject.rfc4514_string()}"
                                f" does not match manifest {row['subject']!r}")
        out.append((KnownRoot(
            tag=row["tag"].strip(), subject=cert.subject.rfc4514_string(),
            sha256_der=got_der, sha256_spki=got_spki, note=row["note"].strip(), file=fname,
        ), cert))
    if not out:
        raise RootDataError("mitm-roots/manifest.csv lists no roots")
    return tuple(out)


@cache
def known_roots() -> tuple[KnownRoot, ...]:
    """The known interception roots, in manifest order (loaded once, cached).

    Raises:
        RootDataError: a PEM's DER or SPKI SHA-256, file name or subject disagrees with
            ``manifest.csv`` (a corrupted or substituted file is caught at load).
        OSError / ValueError: a file is missing or not PEM.
    """
    return tuple(r for r, _ in _root_certs())


@cache
def _spki_index() -> dict[str, KnownRoot]:
    return {r.sha256_spki: r for r in known_roots()}


def _clear_caches() -> None:
    """Forget the loaded roots (tests that swap the data directory)."""
    for f in (_root_certs, known_roots, _spki_index):
        f.cache_clear()


# --------------------------------------------------------------------------- names


def _norm(s: str) -> str:
    return " ".join(str(s).split()).casefold()


@dataclass(frozen=True)
class _NameRule:
    label: str
    era: str
    country: str | None = None  # required C (normalised), or None
    cn_equals: str | None = None
    cn_prefix: str | None = None
    org_equals: str | None = None

    def matches(self, attrs: dict[str, list[str]]) -> bool:
        if self.country is not None and self.country not in attrs.get("c", ()):
            return False
        cns = attrs.get("cn", ())
        if self.cn_equals is not None and self.cn_equals not in cns:
            return False
        if self.cn_prefix is not None and not any(cn.startswith(self.cn_prefix) for cn in cns):
            return False
        if self.org_equals is not None and self.org_equals not in attrs.get("o", ()):
            return False
        return True


#: The CA names used for interception in Kazakhstan. Matched on parsed attributes,
#: case-insensitively, whitespace collapsed — not on a DN string, so attribute order and
#: extra attributes (ST/L=Nur-Sultan on one root) do not matter.
#: ``C=US, CN=Qaznet Trust Network`` is *not* a match, nor is ``CN=Security Certificate``
#: without ``C=KZ`` (a generic phrase that appliance vendors use); ``O=ISCA`` and the
#: "Information Security Certification Authority" CN prefix match in any country, as the
#: state CA has used both with and without extra attributes.
KNOWN_NAME_RULES: tuple[_NameRule, ...] = (
    _NameRule("Qaznet Trust Network", "2019 root", country="kz",
              cn_equals=_norm("Qaznet Trust Network")),
    _NameRule("Security Certificate", "2019 intermediate", country="kz",
              cn_equals=_norm("Security Certificate")),
    _NameRule("Information Security Certification Authority", "2020-2024",
              cn_prefix=_norm("Information Security Certification Authority")),
    _NameRule("ISCA", "2020-2024", org_equals=_norm("ISCA")),
)

_ATTR_KEYS = {NameOID.COUNTRY_NAME: "c", NameOID.COMMON_NAME: "cn",
              NameOID.ORGANIZATION_NAME: "o"}


def _attrs(name: x509.Name) -> dict[str, list[str]]:
    """Normalised attributes of a Name: {"c": [...], "cn": [...], "o": [...], oid: [...]}."""
    out: dict[str, list[str]] = {}
    for a in name:
        if not isinstance(a.value, str):
            continue
        key = _ATTR_KEYS.get(a.oid, a.oid.dotted_string)
        out.setdefault(key, []).append(_norm(a.value))
    return out


def _extra_name_rule(n: str | x509.Name) -> list[tuple[str, str]]:
    name = n if isinstance(n, x509.Name) else x509.Name.from_rfc4514_string(n)
    rule = []
    for a in name:
        if not isinstance(a.value, str):
            raise ValueError(f"extra name attribute {a.oid.dotted_string} is not a string")
        rule.append((_ATTR_KEYS.get(a.oid, a.oid.dotted_string), _norm(a.value)))
    if not rule:
        raise ValueError("empty extra name")
    return rule


_PIN_RE = re.compile(r"^sha256/(.+)$")


def _norm_spki(s: str) -> str:
    """Hex SPKI SHA-256 from hex (any case, ':' allowed) or an HPKP pin ``sha256/<b64>``."""
    s = s.strip()
    m = _PIN_RE.match(s)
    if m:
        return base64.b64decode(m.group(1), validate=True).hex()
    h = s.replace(":", "").lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ValueError(f"not a SHA-256 SPKI hash: {s!r}")
    return h


# --------------------------------------------------------------------------- inspection


def _load_one(item: bytes | str) -> x509.Certificate:
    if isinstance(item, str):
        s = item.strip()
        if s.startswith("-----BEGIN"):
            return x509.load_pem_x509_certificate(s.encode("ascii"))
        der = base64.b64decode("".join(s.split()), validate=True)
    else:
        der = bytes(item)
    return x509.load_der_x509_certificate(der)


def _leaf_traits(cert: x509.Certificate) -> tuple[str, ...]:
    traits: list[str] = []
    try:
        key = cert.public_key()
    except Exception:
        key = None
    if isinstance(key, rsa.RSAPublicKey):
        if key.public_numbers().e == 3:
            traits.append("rsa_exponent_3")
        if key.key_size <= 1024:
            traits.append("rsa_1024")
    try:
        present = {e.oid for e in cert.extensions}
    except Exception:  # duplicate or malformed extensions: cannot judge
        present = None
    if present is not None and not present & _LEAF_REQUIRED_EXTS:
        traits.append("extensions_stripped")
    return tuple(traits)


_LEAF_REQUIRED_EXTS = frozenset({
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
})


@dataclass(frozen=True)
class _Match:
    kind: str  # "spki" | "name"
    position: int
    dn: str
    field: str  # "subject" | "issuer" | "certificate"
    label: str
    root: KnownRoot | None = None
    extra: bool = False


def _signed_by_known_root(cert: x509.Certificate) -> KnownRoot | None:
    """The known root whose key signed ``cert`` (issuer name and signature checked)."""
    for root, root_cert in _root_certs():
        try:
            cert.verify_directly_issued_by(root_cert)
        except Exception:
            continue
        return root
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints cA=TRUE, or self-signed (a root presented as the leaf)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.subject == cert.issuer
    except ValueError:
        return False


def inspect_chain(chain: Sequence[bytes | str], *, extra_spki: Iterable[str] = (),
                  extra_names: Iterable[str | x509.Name] = ()) -> MITMFinding:
    """Look for the Kazakh interception CAs in a certificate chain.

    Args:
        chain: the certificates as the server sent them, leaf first: DER ``bytes``, or
            ``str`` holding base64 DER (the OONI ``peer_certificates`` form) or PEM. It may
            contain garbage; entries that do not parse are listed in ``unparseable`` and
            skipped.
        extra_spki: more SPKI SHA-256 values to treat as interception roots: hex, or HPKP
            form ``sha256/<base64>`` (e.g. from config, for a newly seen root).
        extra_names: more DNs to treat as interception CA names, as RFC 4514 strings
            (``"CN=Example MITM CA,C=KZ"``) or ``x509.Name``: a subject or issuer matches
            when it contains every attribute given (case-insensitive).

    Returns:
        A :class:`MITMFinding`. ``mitm`` is True when any certificate in the chain

        * has the SPKI SHA-256 of a known root (:func:`known_roots`) or of ``extra_spki``
          (an SPKI can only be compared for certificates present in the chain; the
          2019 and 2021-24 boxes did not always send the root), or
        * has a subject or issuer DN matching :data:`KNOWN_NAME_RULES` (``C=KZ`` with CN
          ``Qaznet Trust Network``; ``C=KZ`` with CN ``Security Certificate``; ``O=ISCA``;
          CN starting with ``Information Security Certification Authority``) or
          ``extra_names``. The issuer DN is how a leaf or intermediate points at a root
          that was not sent, and how re-keyed 75-day ISCA intermediates are caught.

        SPKI evidence is reported in preference to names (it is proof; a name can be
        imitated); among equals the lowest position wins, subject before issuer.

        Forged-leaf traits (exponent 3, a ≤1024-bit RSA key, stripped extensions) are
        reported but do not by themselves set ``mitm``: each is weak evidence alone
        (exponent-3 keys and extension-less self-made certificates exist on routers,
        appliances and old servers), and what they add is best judged by the verdict
        together with the control's view of the same site (issuer vs. control).

        The result does not depend on verification: it flags the chain even when the user
        installed the state root and the handshake verified, which is the case this
        module exists for.

    Raises:
        ValueError: an ``extra_spki`` or ``extra_names`` entry is malformed (a caller
            bug, not a measurement result).
        RootDataError: the shipped root data is inconsistent (see :func:`known_roots`).
    """
    spki_index = _spki_index()
    extra_spki_set = {_norm_spki(s) for s in extra_spki}
    extra_rules = [_extra_name_rule(n) for n in extra_names]

    certs: list[x509.Certificate | None] = []
    unparseable: list[int] = []
    for i, item in enumerate(chain):
        try:
            cert = _load_one(item)
            # Touch the lazily-decoded fields we rely on, so a bad name fails here.
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
        except Exception:  # garbage in a captured chain is data, never fatal
            certs.append(None)
            unparseable.append(i)
            continue
        certs.append(cert)

    matches: list[_Match] = []
    for i, cert in enumerate(certs):
        if cert is None:
            continue
        try:
            h = spki_sha256(cert)
        except Exception:  # unsupported key algorithm: no SPKI evidence from this one
            h = None
        if h is not None and h in spki_index:
            root = spki_index[h]
            matches.append(_Match("spki", i, cert.subject.rfc4514_string(), "certificate",
                                  _display_cn(cert.subject), root=root))
        elif h is not None and h in extra_spki_set:
            matches.append(_Match("spki", i, cert.subject.rfc4514_string(), "certificate",
                                  _display_cn(cert.subject), extra=True))
        for which, name in (("subject", cert.subject), ("issuer", cert.issuer)):
            if which == "subject" and i == 0 and not _is_ca(cert):
                # a site's own certificate may name any organisation (an "ISCA" club…):
                # only who *issued* it, and CA certificates' names, are evidence
                continue
            attrs = _attrs(name)
            label = next((r.label for r in KNOWN_NAME_RULES if r.matches(attrs)), None)
            extra = False
            if label is None and any(all(v in attrs.get(k, ()) for k, v in rule)
                                     for rule in extra_rules):
                label, extra = _display_cn(name), True
            if label is not None:
                matches.append(_Match("name", i, name.rfc4514_string(), which, label,
                                      extra=extra))

    leaf = certs[0] if certs else None
    traits = _leaf_traits(leaf) if leaf is not None else ()
    issuer = leaf.issuer.rfc4514_string() if leaf is not None else None

    kinds = {m.kind for m in matches}
    matched_by = tuple(k for k in ("spki", "name") if k in kinds)
    if traits:
        matched_by += ("leaf_traits",)
    spki_matches = [m for m in matches if m.kind == "spki"]
    primary = spki_matches[0] if spki_matches else (matches[0] if matches else None)

    root_tag: str | None = None
    if primary is not None and primary.kind == "spki":
        root_tag = primary.root.tag if primary.root is not None else "extra"
    elif primary is not None:
        for cert in certs:  # a known root key that signed something in this chain
            if cert is None:
                continue
            signer = _signed_by_known_root(cert)
            if signer is not None:
                root_tag = signer.tag
                break

    reason = _reason(primary, root_tag, traits, unparseable, len(chain))
    return MITMFinding(
        mitm=primary is not None,
        matched_by=matched_by,
        root_tag=root_tag,
        matched_subject=primary.dn if primary is not None else None,
        position=primary.position if primary is not None else None,
        leaf_traits=traits,
        issuer=issuer,
        unparseable=tuple(unparseable),
        reason=reason,
    )


def _display_cn(name: x509.Name) -> str:
    cns = [a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)
           if isinstance(a.value, str)]
    return cns[0] if cns else name.rfc4514_string()


def _reason(m: _Match | None, root_tag: str | None, traits: tuple[str, ...],
            unparseable: list[int], n: int) -> str:
    if n == 0:
        return "empty chain: nothing to inspect"
    if m is None:
        s = "no known interception root or CA name in the chain"
        if traits:
            s += f"; leaf has forged-leaf traits ({', '.join(traits)}), not conclusive alone"
    elif m.kind == "spki":
        root = m.root
        if root is not None:
            s = (f"chain contains the Kazakh interception root '{m.label}' "
                 f"(SPKI {root.sha256_spki[:12]}…, tag {root.tag}) at position {m.position}")
        else:
            s = f"chain contains a configured interception key '{m.label}' at position {m.position}"
    else:
        who = "a configured interception CA name" if m.extra else "a Kazakh interception CA name"
        if m.field == "subject":
            s = f"certificate {m.position} is '{m.dn}', {who}"
        else:
            s = f"certificate {m.position} was issued by '{m.dn}', {who}"
        if root_tag is not None:
            s += f" (signed by known root key, tag {root_tag})"
        if traits:
            s += f"; leaf traits: {', '.join(traits)}"
    if unparseable:
        s += f"; unparseable entries at {', '.join(map(str, unparseable))}"
    return s
