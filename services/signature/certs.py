"""X.509 for keyless signatures: parse, chain to a trusted CA at a time, read the identity.

With ``keys``, the only modules of the signature layer that import
``cryptography``. Everything here works on certificates a signature carries
(untrusted) and certificate authorities from a trusted root (trusted):

- :func:`load_pem_chain` parses PEM text strictly and within bounds;
- :func:`verify_chain` builds a path from the leaf, through intermediates
  the signature offers (never trusted on their own: THREATS G-12 (d)), to a
  root certificate of a trusted-root CA whose ``validFor`` contains the
  signing time, with RFC 5280 path validation (``cryptography``'s verifier)
  at that time, so an expired certificate that was valid when it signed
  passes and one used after its 10 minutes does not (G-10);
- :func:`identity_of` reads the issuer and subject alternative names.

The extension policies follow sigstore-python's: WebPKI defaults, with the
extended key usage left to :func:`check_code_signing`, and (unlike WebPKI)
no key usage required on a CA: own-PKI roots, such as the one in
containers/image's fixtures, often carry none; when present it must allow
certificate signing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from pullguard.services.signature.identity import CertIdentity
from pullguard.services.signature.keys import TrustMaterialError, VerifyingKey, checked_key

#: Most certificates read from one PEM annotation (a chain is 2 or 3).
MAX_CHAIN = 10
#: Longest PEM text read for a certificate or a chain.
MAX_PEM_CHARS = 64 * 1024

#: Fulcio's OIDC issuer extensions: .1.8 is a DER UTF8String, .1.1 the raw
#: (deprecated) form. https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
#: Fulcio's "username" otherName SAN.
USERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")

Certificate = x509.Certificate


class CertificateError(ValueError):
    """A certificate or chain cannot be used; the message says why."""


@dataclass(frozen=True)
class Authority:
    """A trusted-root certificate authority: its chain (leaf-most first) and window."""

    uri: str
    certificates: tuple[x509.Certificate, ...]
    valid_from: datetime
    valid_until: datetime | None

    def valid_at(self, when: datetime) -> bool:
        # TimeRange is a closed interval (sigstore protobuf-specs).
        return self.valid_from <= when and (self.valid_until is None or when <= self.valid_until)


def load_der_certificate(der: bytes) -> x509.Certificate:
    """A DER certificate; raise CertificateError."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"not a DER certificate: {exc}") from None


def load_pem_chain(text: str, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate of PEM ``text`` (at least one, at most MAX_CHAIN)."""
    if len(text) > MAX_PEM_CHARS:
        raise CertificateError(f"{what} of {len(text)} characters is too long")
    if text.count("-----BEGIN") > MAX_CHAIN:
        raise CertificateError(f"{what} holds more than {MAX_CHAIN} PEM blocks")
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("utf-8"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateError(f"{what} is not PEM certificates: {exc}") from None
    if not certificates:
        raise CertificateError(f"{what} holds no certificate")
    return tuple(certificates)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def public_key(certificate: x509.Certificate) -> VerifyingKey:
    """The leaf's key, if it is a type signatures can be checked with."""
    try:
        return checked_key("certificate", certificate.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:
        problem = exc.problem if isinstance(exc, TrustMaterialError) else str(exc)
        raise CertificateError(f"certificate key: {problem}") from None


def check_code_signing(leaf: x509.Certificate) -> None:
    """The leaf may sign code: key usage digitalSignature, EKU absent or code signing."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    except ValueError as exc:
        raise CertificateError(f"certificate extensions: {exc}") from None
    if usage is not None and not usage.digital_signature:
        raise CertificateError("certificate key usage does not allow digital signatures")
    try:
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise CertificateError("certificate extended key usage does not include code signing")


def _ca_key_usage(_policy: object, _certificate: object, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("CA key usage does not allow certificate signing")


def _policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    ca = (
        ExtensionPolicy.webpki_defaults_ca()
        .may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    )
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    return ca, ee


def verify_chain(
    leaf: x509.Certificate,
    offered: Sequence[x509.Certificate],
    authorities: Sequence[Authority],
    when: datetime,
) -> tuple[Authority, list[x509.Certificate]]:
    """The authority ``leaf`` chains to at ``when``, and the path above the leaf.

    Raises CertificateError.

    ``offered`` are intermediates from the signature: candidates for path
    building only. The anchor is always a root certificate of an authority
    valid at ``when``.
    """
    when = when.astimezone(UTC)
    ca_policy, ee_policy = _policies()
    problems: list[str] = []
    for authority in authorities:
        if not authority.valid_at(when):
            continue
        *intermediates, root = authority.certificates
        verifier = (
            PolicyBuilder()
            .store(Store([root]))
            .time(when)
            .max_chain_depth(MAX_CHAIN)
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, [*intermediates, *offered[:MAX_CHAIN]])
        except (VerificationError, x509.UnsupportedGeneralNameType, ValueError) as exc:
            problems.append(str(exc)[:200])
            continue
        return authority, list(verified.chain[1:])
    if not problems:
        raise CertificateError(
            f"no trusted certificate authority is valid at {when:%Y-%m-%dT%H:%M:%SZ}"
        )
    raise CertificateError(f"certificate does not chain to a trusted authority: {problems[0]}")


def valid_at(certificate: x509.Certificate, when: datetime) -> bool:
    return certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc


def identity_of(leaf: x509.Certificate, authority: Authority) -> CertIdentity:
    """Issuer and subjects of a verified leaf (see :class:`CertIdentity`)."""
    return CertIdentity(issuer=issuer_of(leaf) or authority.uri, subjects=subjects_of(leaf))


def issuer_of(leaf: x509.Certificate) -> str:
    """The Fulcio OIDC issuer extension (.1.8, else .1.1), or ""."""
    try:
        value = leaf.extensions.get_extension_for_oid(ISSUER_V2_OID).value
    except x509.ExtensionNotFound:
        pass
    else:
        return _der_utf8(_raw(value))
    try:
        value = leaf.extensions.get_extension_for_oid(ISSUER_V1_OID).value
    except x509.ExtensionNotFound:
        return ""
    try:
        return _raw(value).decode("utf-8")
    except UnicodeDecodeError:
        raise CertificateError("OIDC issuer extension is not UTF-8") from None


def subjects_of(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for name in names:
        if isinstance(name, x509.RFC822Name | x509.UniformResourceIdentifier | x509.DNSName):
            out.append(name.value)
        elif isinstance(name, x509.OtherName) and name.type_id == USERNAME_OID:
            out.append(_der_utf8(name.value))
    return tuple(out)


def _raw(value: x509.ExtensionType) -> bytes:
    raw = getattr(value, "value", None)
    if not isinstance(raw, bytes):
        raise CertificateError("unrecognised OIDC issuer extension")
    return raw


def _der_utf8(data: bytes) -> str:
    """Decode a DER UTF8String (tag 0x0c), short or long length form."""
    if len(data) < 2 or data[0] != 0x0C:
        raise CertificateError("extension value is not a DER UTF8String")
    length = data[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or len(data) < 2 + count:
            raise CertificateError("extension value has a bad DER length")
        length = int.from_bytes(data[2 : 2 + count], "big")
        offset = 2 + count
    if len(data) != offset + length:
        raise CertificateError("extension value has a bad DER length")
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError:
        raise CertificateError("extension value is not UTF-8") from None


def certificate_matches(expected_der: bytes, blob: bytes) -> bool:
    """True when ``blob`` (PEM or DER, from a log entry) is exactly this certificate."""
    try:
        if blob.lstrip().startswith(b"-----BEGIN"):
            found = x509.load_pem_x509_certificates(blob)
            return len(found) == 1 and der(found[0]) == expected_der
        return der(x509.load_der_x509_certificate(blob)) == expected_der
    except ValueError:
        return False


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer`` signed ``certificate`` (names and signature)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True
