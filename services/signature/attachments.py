"""The ``sha256-<hex>.sig`` manifest: which of its layers are signatures.

cosign stores the signatures of a manifest as one OCI (or Docker schema2)
image manifest tagged ``sha256-<hex>.sig`` in the same repository. Each
signature is one layer: the layer blob is the signed payload and the layer's
``dev.cosignproject.cosign/signature`` annotation is the base64 signature.
Other layers (attestations, SBOMs, other attachments) are skipped.

The manifest is parsed here from the staged bytes, not taken from the
descriptors the fetcher reported, so this layer trusts no other layer's
reading of the document. It is untrusted input, parsed before any signature
is checked: the parser is strict and every count is bounded (THREATS G-08).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict

#: Longest signature annotation accepted, in base64 characters. An RSA-8192
#: signature is 1 KiB; anything near this limit is not a signature.
MAX_SIGNATURE_CHARS = 16 * 1024
#: Annotations kept per layer; cosign writes at most five.
MAX_ANNOTATIONS = 64
#: Largest descriptor size taken as a number (I-JSON's exact integers).
MAX_SIZE = 2**53


class AttachmentError(ValueError):
    """The signature manifest cannot be used; ``code`` is the finding code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Layer:
    """A layer descriptor of the signature manifest, as stated there."""

    index: int
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)


def parse_signature_manifest(data: bytes, max_layers: int) -> tuple[Layer, ...]:
    """The layers of a staged ``.sig`` manifest, in order.

    Raises AttachmentError with ``signature.invalid`` for a malformed
    document and ``signature.too_many`` for more than ``max_layers`` layers.
    """
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise AttachmentError("signature.invalid", f"signature manifest: {exc}") from None
    if not isinstance(document, dict):
        raise AttachmentError("signature.invalid", "signature manifest is not a JSON object")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise AttachmentError(
            "signature.invalid",
            "signature manifest has no layers array, expected an image manifest",
        )
    if len(layers) > max_layers:
        raise AttachmentError(
            "signature.too_many",
            f"got {len(layers)} layers in the signature manifest, expected at most {max_layers}",
        )
    return tuple(_layer(i, item) for i, item in enumerate(layers))


def _layer(index: int, item: Any) -> Layer:
    where = f"layers[{index}]"
    if not isinstance(item, dict):
        raise AttachmentError("signature.invalid", f"{where} is not an object")
    media_type = item.get("mediaType")
    digest = item.get("digest")
    size = item.get("size")
    if not isinstance(media_type, str):
        raise AttachmentError("signature.invalid", f"{where}.mediaType is not a string")
    if not isinstance(digest, str):
        raise AttachmentError("signature.invalid", f"{where}.digest is not a string")
    try:
        parse_digest(digest)
    except DigestSyntaxError as exc:
        raise AttachmentError("signature.invalid", f"{where}.digest: {exc}") from None
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise AttachmentError("signature.invalid", f"{where}.size is not a size, got {size!r}")
    raw_annotations = item.get("annotations", {})
    if raw_annotations is None:
        raw_annotations = {}
    if not isinstance(raw_annotations, dict) or len(raw_annotations) > MAX_ANNOTATIONS:
        raise AttachmentError(
            "signature.invalid",
            f"{where}.annotations is not an object of at most {MAX_ANNOTATIONS} strings",
        )
    annotations: dict[str, str] = {}
    for key, value in raw_annotations.items():
        if not isinstance(value, str):
            raise AttachmentError(
                "signature.invalid", f"{where}.annotations[{key[:60]!r}] is not a string"
            )
        annotations[key] = value
    return Layer(index, media_type, digest, size, annotations)


def decode_signature(text: str) -> bytes:
    """Strict standard base64 (line breaks aside, as in Go); raise AttachmentError."""
    if len(text) > MAX_SIGNATURE_CHARS:
        raise AttachmentError(
            "signature.invalid",
            f"signature annotation of {len(text)} characters, expected at most"
            f" {MAX_SIGNATURE_CHARS}",
        )
    # Go's base64 decoder, which cosign uses, skips CR and LF; signatures made
    # by other signers (containers/image's PKI fixture) carry line breaks.
    compact = text.replace("\r", "").replace("\n", "")
    try:
        signature = binascii.a2b_base64(compact.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise AttachmentError("signature.invalid", f"signature is not base64: {exc}") from None
    if not signature:
        raise AttachmentError("signature.invalid", "signature annotation is empty")
    # One encoding per signature: no excess padding, no stray bits.
    if binascii.b2a_base64(signature, newline=False) != compact.encode("ascii"):
        raise AttachmentError("signature.invalid", "signature is not canonical base64")
    return signature
