"""Digest syntax and local hashing.

Only algorithms pullguard can recompute are accepted (sha256, sha512). The
encoded part must be lowercase hex of the exact length: nothing is
normalised, so a digest that looks like a pinned one is never treated as it.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([0-9a-f]+)")
#: The OCI grammar for any digest, registered or not.
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

CHUNK = 1 << 20


class DigestSyntaxError(ValueError):
    pass


def parse_digest(text: str) -> tuple[str, str]:
    """Split a digest into (algorithm, hex); raise DigestSyntaxError if it is not exact."""
    match = _DIGEST_RE.fullmatch(text)
    if match is None:
        if _ANY_DIGEST_RE.fullmatch(text):
            algorithm = text.split(":", 1)[0]
            if algorithm not in _ALGORITHMS:
                raise DigestSyntaxError(f"unsupported digest algorithm {algorithm!r}")
        raise DigestSyntaxError(f"malformed digest {text[:100]!r}")
    algorithm, encoded = match.group(1), match.group(2)
    if len(encoded) != _ALGORITHMS[algorithm]:
        raise DigestSyntaxError(
            f"malformed digest: {algorithm} needs {_ALGORITHMS[algorithm]} hex characters,"
            f" got {len(encoded)}"
        )
    return algorithm, encoded


def is_digest(text: str) -> bool:
    try:
        parse_digest(text)
    except DigestSyntaxError:
        return False
    return True


def hasher_for(digest: str) -> hashlib._Hash:
    algorithm, _ = parse_digest(digest)
    return hashlib.new(algorithm)


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def computed_digest(data: bytes, digest: str) -> str:
    """``data`` hashed with ``digest``'s algorithm, spelled as a digest to compare with it.

    Raises :class:`DigestSyntaxError` when ``digest`` is not a digest pullguard can recompute.
    """
    algorithm, _ = parse_digest(digest)
    return digest_bytes(data, algorithm)


def digest_stream(stream: BinaryIO, algorithm: str = "sha256") -> tuple[str, int]:
    """Hash a file object to its end; return (digest, size)."""
    hasher = hashlib.new(algorithm)
    size = 0
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return f"{algorithm}:{hasher.hexdigest()}", size
