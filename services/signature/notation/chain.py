"""The certificate chain of a Notation signature, per the Notary Project's rules.

The envelope carries the whole chain, leaf first and root last
(``signature-specification.md``, "Certificate Requirements"). It is checked
as the specification states, without building other paths:

- each certificate is signed by the next, the last one by itself, and no
  other is self-signed (no unrelated or repeated roots);
- CA certificates: basicConstraints present, critical, ``cA`` true, a path
  length that covers the chain below; keyUsage present, critical, with
  ``keyCertSign``;
- the leaf: basicConstraints, if present, not a CA; keyUsage present and
  critical, ``digitalSignature`` and none of the encipherment/agreement/
  certificate-signing bits; extendedKeyUsage, if present, without server
  or client auth, e-mail, time stamping or any-purpose;
- no SHA-1 signatures; RSA keys of at least 2048 bits, EC keys of at least
  256; the signature algorithm is the one the leaf's key calls for (RSA
  2048 → PS256, 3072 → PS384, 4096 → PS512, P-256/384/521 → ES256/384/512).

``cryptography.x509.verification`` (present in the pinned version) builds
paths under the web PKI profile, whose client verifier wants clientAuth and
a SAN: the opposite of this profile, which forbids clientAuth. So the
chain is walked here; each signature between two certificates is still
checked by ``cryptography`` (``verify_directly_issued_by``).

Trust is a certificate of the chain being, byte for byte, in one of the
rule's trust stores of the type the signing scheme needs (what notation
does), and the identity the leaf's subject. Validity in time is a separate
question (:func:`invalid_at`), asked at the time each validation needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from pullguard.services.signature.certs import issued_by
from pullguard.services.signature.notation.envelope import Envelope

_FORBIDDEN_EKU = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}
_RSA_ALGORITHMS = {2048: "sha256", 3072: "sha384", 4096: "sha512"}
_EC_ALGORITHMS = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class ChainError(ValueError):
    """The envelope's certificates break a rule of the specification."""


def load_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    chain = []
    for i, der in enumerate(ders):
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise ChainError(f"certificate {i} is not DER: {exc}") from None
    return chain


def name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()[:200]


def _extension(
    certificate: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return certificate.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise ChainError(f"{name(certificate)}: extensions do not parse: {exc}") from None


def check_structure(chain: Sequence[x509.Certificate]) -> None:
    """The chain is ordered, complete and every certificate fit for its place; ChainError."""
    for position, certificate in enumerate(chain):
        _check_algorithms(certificate)
        last = position == len(chain) - 1
        if last:
            if not issued_by(certificate, certificate):
                raise ChainError(
                    f"the last certificate, {name(certificate)}, is not a self-signed root"
                )
        else:
            if issued_by(certificate, certificate):
                raise ChainError(f"{name(certificate)} is self-signed but not last in the chain")
            if not issued_by(certificate, chain[position + 1]):
                raise ChainError(
                    f"{name(certificate)} is not issued by {name(chain[position + 1])}"
                )
        if position == 0:
            _check_leaf(certificate)
        else:
            _check_ca(certificate, below=position - 1)


def _check_algorithms(certificate: x509.Certificate) -> None:
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        raise ChainError(
            f"{name(certificate)} is signed with {getattr(algorithm, 'name', 'no hash')}"
        )
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ChainError(
                f"{name(certificate)} has a {key.key_size}-bit RSA key, expected >= 2048"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_ALGORITHMS:
            raise ChainError(
                f"{name(certificate)} has EC curve {key.curve.name}, expected P-256/384/521"
            )
    else:
        raise ChainError(f"{name(certificate)} has a key that is neither RSA nor EC")


def _check_ca(certificate: x509.Certificate, below: int) -> None:
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.critical:
        raise ChainError(f"CA {name(certificate)} has no critical basicConstraints")
    value = constraints.value
    assert isinstance(value, x509.BasicConstraints)
    if not value.ca:
        raise ChainError(f"{name(certificate)} issues certificates but is not a CA")
    if value.path_length is not None and value.path_length < below:
        raise ChainError(f"CA {name(certificate)} path length {value.path_length} is below {below}")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is None or not usage.critical:
        raise ChainError(f"CA {name(certificate)} has no critical keyUsage")
    assert isinstance(usage.value, x509.KeyUsage)
    if not usage.value.key_cert_sign:
        raise ChainError(f"CA {name(certificate)} keyUsage lacks keyCertSign")


def _check_leaf(certificate: x509.Certificate) -> None:
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is not None:
        assert isinstance(constraints.value, x509.BasicConstraints)
        if constraints.value.ca:
            raise ChainError(f"signing certificate {name(certificate)} is a CA")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is None or not usage.critical:
        raise ChainError(f"signing certificate {name(certificate)} has no critical keyUsage")
    bits = usage.value
    assert isinstance(bits, x509.KeyUsage)
    if not bits.digital_signature:
        raise ChainError(f"signing certificate {name(certificate)} keyUsage lacks digitalSignature")
    forbidden = [
        bits.key_encipherment,
        bits.data_encipherment,
        bits.key_agreement,
        bits.key_cert_sign,
        bits.crl_sign,
        bits.key_agreement and bits.encipher_only,
        bits.key_agreement and bits.decipher_only,
    ]
    if any(forbidden):
        raise ChainError(
            f"signing certificate {name(certificate)} keyUsage has bits beyond signing"
        )
    extended = _extension(certificate, x509.ExtendedKeyUsage)
    if extended is not None:
        assert isinstance(extended.value, x509.ExtendedKeyUsage)
        for oid in extended.value:
            if oid in _FORBIDDEN_EKU:
                usage_name = _FORBIDDEN_EKU[oid]
                raise ChainError(
                    f"signing certificate {name(certificate)} extendedKeyUsage has {usage_name}"
                )


def verify_signature(envelope: Envelope, leaf: x509.Certificate) -> None:
    """The envelope's signature verifies with the leaf's key, under the alg it calls for."""
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        expected = ("rsa", _RSA_ALGORITHMS.get(key.key_size))
    elif isinstance(key, ec.EllipticCurvePublicKey):
        expected = ("ec", _EC_ALGORITHMS.get(key.curve.name))
    else:
        raise ChainError("the signing key is neither RSA nor EC")
    if expected != (envelope.key_family, envelope.hash_name):
        raise ChainError(
            f"alg {envelope.algorithm} does not match the signing key"
            f" ({expected[0]}, {expected[1] or 'unsupported size'})"
        )
    digest = _HASHES[envelope.hash_name]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                envelope.signature,
                envelope.signed_bytes,
                padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                digest,
            )
        else:
            # JWS and COSE both write r || s, each as wide as the curve.
            width = (key.curve.key_size + 7) // 8
            if len(envelope.signature) != 2 * width:
                raise ChainError(
                    f"ECDSA signature of {len(envelope.signature)} bytes, expected {2 * width}"
                )
            r = int.from_bytes(envelope.signature[:width], "big")
            s = int.from_bytes(envelope.signature[width:], "big")
            key.verify(encode_dss_signature(r, s), envelope.signed_bytes, ec.ECDSA(digest))
    except InvalidSignature:
        raise ChainError(
            "the signature does not verify with the signing certificate's key"
        ) from None


def invalid_at(chain: Sequence[x509.Certificate], when: datetime) -> str:
    """Empty when every certificate is valid at ``when``; else which one is not and why."""
    for certificate in chain:
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if when < start:
            return f"{name(certificate)} is valid only from {start:%Y-%m-%dT%H:%M:%SZ}"
        if when > end:
            return f"{name(certificate)} expired at {end:%Y-%m-%dT%H:%M:%SZ}"
    return ""


def trusted_by(chain: Sequence[x509.Certificate], store_certificates: Sequence[bytes]) -> bool:
    """True when a certificate of the chain is, exactly, one of the store's."""
    trusted = set(store_certificates)
    return any(certificate.public_bytes(Encoding.DER) in trusted for certificate in chain)


def subject_attributes(leaf: x509.Certificate) -> dict[str, str]:
    """The leaf subject as TYPE -> value (RFC 4514 short names); a repeated type keeps none."""
    out: dict[str, str] = {}
    repeated: set[str] = set()
    for attribute in leaf.subject:
        short = attribute.rfc4514_string().split("=", 1)[0].upper()
        value = attribute.value if isinstance(attribute.value, str) else ""
        if short in out:
            repeated.add(short)
        out[short] = value
    # An attribute the subject holds twice cannot match one value unambiguously.
    return {k: v for k, v in out.items() if k not in repeated}
