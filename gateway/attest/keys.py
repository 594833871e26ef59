"""pullguard's signing key: a cosign private key, decrypted once at start-up.

``cosign generate-key-pair`` writes a PEM block ``ENCRYPTED SIGSTORE PRIVATE
KEY`` (cosign 2; ``ENCRYPTED COSIGN PRIVATE KEY`` in cosign 1) whose body is
JSON in go-securesystemslib's ``encrypted`` form::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": "<b64>"},
     "cipher": {"name": "nacl/secretbox", "nonce": "<b64 24 bytes>"},
     "ciphertext": "<b64>"}

The secretbox key is scrypt(password, salt, N, r, p) of 32 bytes; the
plaintext is the PKCS#8 DER of an ECDSA P-256 key. A plain (unencrypted or
password-protected) PEM PKCS#8 ECDSA P-256 key is taken too.

Every failure is a :class:`AttestKeyError` naming the key file and what is
wrong, never the key or the password. scrypt's cost is bounded: a file asking
for more than :data:`MAX_SCRYPT_N` (or more memory than :data:`SCRYPT_MAXMEM`)
is refused before any work, so a hostile key file cannot stall start-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.services.runtime.errors import PullguardError

ENCRYPTED_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
#: A key file is small; anything larger is not one.
MAX_KEY_FILE_BYTES = 64 * 1024
#: cosign writes N=65536 (2**16); 2**20 is well beyond anything sane.
MAX_SCRYPT_N = 2**20
SCRYPT_MAXMEM = 1024 * 1024 * 1024
_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z ]{1,64})-----\r?\n([A-Za-z0-9+/=\r\n]{1,65536})-----END \1-----"
)


class AttestKeyError(PullguardError):
    """The attestation key cannot be used; pullguard does not start."""


@dataclass(frozen=True)
class SigningKey:
    """An ECDSA P-256 private key and its public half, as cosign uses them."""

    private: ec.EllipticCurvePrivateKey
    source: str

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 over SHA-256 of ``data``, DER-encoded (what cosign writes)."""
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    def public_pem(self) -> bytes:
        """The public key as ``cosign.pub`` holds it (PEM SubjectPublicKeyInfo)."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:  # never the key itself, in a log or a traceback
        return f"SigningKey(source={self.source!r})"


def load_signing_key(path: Path, password: bytes | None) -> SigningKey:
    """Read and decrypt ``path``; an AttestKeyError names it on any failure."""
    where = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise AttestKeyError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise AttestKeyError(f"{where}: larger than {MAX_KEY_FILE_BYTES} bytes")
    match = _PEM_RE.search(data)
    if match is None:
        raise AttestKeyError(f"{where}: no PEM block")
    pem_type = match.group(1).decode()
    if pem_type in ENCRYPTED_PEM_TYPES:
        if password is None:
            raise AttestKeyError(f"{where}: encrypted, and no password is configured")
        der = _decrypt(_body(match.group(2), where), password, where)
        return SigningKey(_ecdsa_p256(der, None, where, serialization.load_der_private_key), where)
    if pem_type in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"):
        # A password (COSIGN_PASSWORD may be set for other reasons) only opens an encrypted one.
        secret = password if pem_type == "ENCRYPTED PRIVATE KEY" else None
        return SigningKey(
            _ecdsa_p256(match.group(0), secret, where, serialization.load_pem_private_key), where
        )
    raise AttestKeyError(
        f"{where}: a {pem_type[:64]!r} PEM block is not a cosign or PKCS#8 private key"
    )


def _body(text: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(base64.b64decode(b"".join(text.split()), validate=True))
    except (binascii.Error, ValueError):
        raise AttestKeyError(f"{where}: the PEM body is not base64 JSON") from None
    if not isinstance(document, dict):
        raise AttestKeyError(f"{where}: the PEM body is not a JSON object")
    return document


def _field(document: Any, path: str, where: str) -> Any:
    value = document
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            raise AttestKeyError(f"{where}: {path} is missing")
        value = value[name]
    return value


def _b64(document: dict[str, Any], path: str, where: str) -> bytes:
    value = _field(document, path, where)
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raise AttestKeyError(f"{where}: {path} is not base64") from None


def _integer(document: dict[str, Any], path: str, where: str, maximum: int) -> int:
    value = _field(document, path, where)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise AttestKeyError(f"{where}: {path} must be an integer 1..{maximum}")
    return value


def _decrypt(document: dict[str, Any], password: bytes, where: str) -> bytes:
    # Imported here: only a gateway with attest: needs libsodium.
    import nacl.exceptions
    import nacl.secret

    if _field(document, "kdf.name", where) != "scrypt":
        raise AttestKeyError(f"{where}: kdf.name must be scrypt")
    if _field(document, "cipher.name", where) != "nacl/secretbox":
        raise AttestKeyError(f"{where}: cipher.name must be nacl/secretbox")
    n = _integer(document, "kdf.params.N", where, MAX_SCRYPT_N)
    r = _integer(document, "kdf.params.r", where, 32)
    p = _integer(document, "kdf.params.p", where, 16)
    if n & (n - 1) or n < 2:
        raise AttestKeyError(f"{where}: kdf.params.N must be a power of two")
    salt = _b64(document, "kdf.salt", where)
    nonce = _b64(document, "cipher.nonce", where)
    ciphertext = _b64(document, "ciphertext", where)
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise AttestKeyError(f"{where}: cipher.nonce must be 24 bytes")
    if 128 * r * (n + p + 2) > SCRYPT_MAXMEM:
        raise AttestKeyError(f"{where}: scrypt parameters ask for too much memory")
    key = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)
    try:
        return nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise AttestKeyError(
            f"{where}: cannot decrypt: wrong password, or the file is damaged"
        ) from None


def _ecdsa_p256(data: bytes, password: bytes | None, where: str, load: Any) -> Any:
    try:
        key = load(data, password=password)
    except TypeError:
        # Encrypted without a password, or a password for an unencrypted key.
        raise AttestKeyError(
            f"{where}: the key's encryption and the configured password disagree"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise AttestKeyError(f"{where}: not a readable private key (or a wrong password)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise AttestKeyError(f"{where}: must be an ECDSA P-256 key, as cosign makes")
    return key
