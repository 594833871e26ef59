"""Trusted public keys and raw signature verification: the ``cryptography`` adapter.

This is the only module of the signature layer that imports ``cryptography``.
It accepts the key types cosign produces and verifies with the same scheme
cosign's verifiers use (sigstore ``signature.LoadVerifier(key, crypto.SHA256)``):

- ECDSA on P-256 (cosign's default), P-384 or P-521: ASN.1 DER signature
  over the SHA-256 of the payload;
- RSA of at least 2048 bits: PKCS #1 v1.5 with SHA-256;
- Ed25519: pure Ed25519 over the payload.

Keys come only from the policy (THREATS G-12): a key or certificate carried
in the signature's annotations is never consulted here. Two policy entries
holding the same key are one signer, so listing a key twice cannot satisfy a
threshold of two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

#: Smallest RSA modulus accepted, in bits.
MIN_RSA_BITS = 2048
#: Largest PEM text accepted for one key.
MAX_PEM_CHARS = 64 * 1024

_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class TrustMaterialError(ValueError):
    """A configured public key cannot be used; the check cannot run."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"public key {name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class TrustedKey:
    """One configured public key, named by the file it came from."""

    name: str
    public_key: VerifyingKey
    #: DER SubjectPublicKeyInfo, the key's identity for de-duplication.
    fingerprint: bytes

    @property
    def kind(self) -> str:
        if isinstance(self.public_key, ec.EllipticCurvePublicKey):
            return f"ecdsa-{self.public_key.curve.name}"
        if isinstance(self.public_key, rsa.RSAPublicKey):
            return f"rsa-{self.public_key.key_size}"
        return "ed25519"

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        """True when ``signature`` is this key's signature over exactly ``payload``."""
        try:
            if isinstance(self.public_key, ec.EllipticCurvePublicKey):
                self.public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.public_key, rsa.RSAPublicKey):
                self.public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.public_key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True


def load_key(name: str, pem: str) -> TrustedKey:
    """Parse one PEM ``PUBLIC KEY``; raise TrustMaterialError if it is unusable."""
    if len(pem) > MAX_PEM_CHARS:
        raise TrustMaterialError(name, f"PEM text of {len(pem)} characters is too long")
    try:
        public_key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise TrustMaterialError(name, f"not a PEM public key: {exc}") from None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _CURVES):
            raise TrustMaterialError(
                name, f"got curve {public_key.curve.name}, expected P-256, P-384 or P-521"
            )
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise TrustMaterialError(
                name, f"got a {public_key.key_size}-bit RSA key, expected >= {MIN_RSA_BITS}"
            )
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise TrustMaterialError(
            name, f"got a {type(public_key).__name__}, expected an ECDSA, RSA or Ed25519 key"
        )
    fingerprint = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TrustedKey(name=name, public_key=public_key, fingerprint=fingerprint)


def load_trusted_keys(entries: Iterable[tuple[str, str]]) -> tuple[TrustedKey, ...]:
    """Load (name, PEM) pairs; a key listed again under another name is dropped."""
    keys: list[TrustedKey] = []
    seen: set[bytes] = set()
    for name, pem in entries:
        key = load_key(name, pem)
        if key.fingerprint in seen:
            continue
        seen.add(key.fingerprint)
        keys.append(key)
    return tuple(keys)


class KeyTrust:
    """Identifies the signer of a simple-signing payload among configured keys.

    Implements the verifier's ``SignerIdentifier`` protocol; a keyless
    (Fulcio certificate + Rekor) identifier can implement it beside this one.
    """

    def __init__(self, keys: Sequence[TrustedKey]) -> None:
        self.keys = tuple(keys)

    def identify(
        self, signature: bytes, payload: bytes, annotations: Mapping[str, str]
    ) -> str | None:
        """The name of the first trusted key that verifies, or None.

        ``annotations`` (certificate, chain, Rekor bundle) are deliberately
        unused: a key-based check trusts only the configured keys.
        """
        for key in self.keys:
            if key.verifies(signature, payload):
                return key.name
        return None
