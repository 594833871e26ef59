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

from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

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


_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def checked_key(name: str, public_key: object) -> VerifyingKey:
    """The key if it is a type and size signatures may be checked with; else TrustMaterialError."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _CURVES):
            raise TrustMaterialError(
                name, f"got curve {public_key.curve.name}, expected P-256, P-384 or P-521"
            )
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise TrustMaterialError(
                name, f"got a {public_key.key_size}-bit RSA key, expected >= {MIN_RSA_BITS}"
            )
        return public_key
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key
    raise TrustMaterialError(
        name, f"got a {type(public_key).__name__}, expected an ECDSA, RSA or Ed25519 key"
    )


def spki(public_key: VerifyingKey) -> bytes:
    """DER SubjectPublicKeyInfo: a key's identity."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_with(
    public_key: VerifyingKey, signature: bytes, payload: bytes, hash_name: str = "sha256"
) -> bool:
    """True when ``signature`` is ``public_key``'s signature over exactly ``payload``.

    ECDSA and RSA (PKCS #1 v1.5) hash with ``hash_name``; Ed25519 signs the payload itself.
    """
    algorithm = _HASHES.get(hash_name)
    if algorithm is None and not isinstance(public_key, ed25519.Ed25519PublicKey):
        return False
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            assert algorithm is not None
            public_key.verify(signature, payload, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            assert algorithm is not None
            public_key.verify(signature, payload, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, payload)
        else:
            return False
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def parse_pem_key(blob: bytes) -> VerifyingKey | None:
    """A usable public key from PEM bytes (a log entry's), or None."""
    if len(blob) > MAX_PEM_CHARS:
        return None
    try:
        return checked_key("log entry key", serialization.load_pem_public_key(blob))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def load_der_key(name: str, raw: bytes) -> VerifyingKey:
    """A DER SubjectPublicKeyInfo (a trusted root's log key); TrustMaterialError if unusable."""
    if len(raw) > MAX_PEM_CHARS:
        raise TrustMaterialError(name, f"DER key of {len(raw)} bytes is too long")
    try:
        public_key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TrustMaterialError(name, f"not a DER public key: {exc}") from None
    return checked_key(name, public_key)


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
        return verify_with(self.public_key, signature, payload)

    def verifies_digest(self, signature: bytes, digest: bytes) -> bool:
        """True when ``signature`` signs the SHA-256 ``digest`` itself (a message
        signature over a prehashed artifact). Ed25519 signs messages, never
        digests, so it never verifies this way."""
        if len(digest) != 32:
            return False
        prehashed = utils.Prehashed(hashes.SHA256())
        try:
            if isinstance(self.public_key, ec.EllipticCurvePublicKey):
                self.public_key.verify(signature, digest, ec.ECDSA(prehashed))
            elif isinstance(self.public_key, rsa.RSAPublicKey):
                self.public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)
            else:
                return False
        except (InvalidSignature, ValueError):
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
    checked = checked_key(name, public_key)
    return TrustedKey(name=name, public_key=checked, fingerprint=spki(checked))


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


def key_matches(fingerprint: bytes, blob: bytes) -> bool:
    """True when ``blob`` (PEM ``PUBLIC KEY`` or DER SPKI, from a log entry) is this key."""
    if blob.lstrip().startswith(b"-----BEGIN"):
        found = parse_pem_key(blob)
        return found is not None and spki(found) == fingerprint
    return blob == fingerprint
