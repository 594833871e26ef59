"""Signature artifacts: the manifests that carry signatures, and their layers.

Three forms reach this layer, each an OCI (or Docker schema2) image manifest:

- cosign's ``sha256-<hex>.sig`` tag: one layer per signature, media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``, the blob is the
  signed payload and the ``dev.cosignproject.cosign/signature`` annotation
  the signature (with, optionally, certificate, chain and Rekor bundle
  annotations);
- cosign's ``sha256-<hex>.att`` tag: layers ``application/vnd.dsse.envelope.v1+json``,
  each blob a DSSE envelope (an attestation; its ``predicateType``
  annotation is unsigned);
- OCI 1.1 referrers (found by the referrers API or its fallback tag): a
  manifest with ``subject`` = the image, holding a sigstore bundle layer
  (cosign v3) or the ``.sig`` form above (cosign 2 ``--registry-referrers-mode=oci-1-1``).

Each layer is classified by its own media type (:func:`layer_kind`); others
(SBOMs, other attachments) are skipped. A manifest's ``subject``, when it
has one, must be the image being verified (THREATS F-15), see
:attr:`Attachment.subject_digest`.

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
from pullguard.services.runtime.goschemas import MANIFEST
from pullguard.services.signature.strictjson import (
    StrictJsonError,
    key_case_problem,
    loads_strict,
)

#: Longest signature annotation accepted, in base64 characters. An RSA-8192
#: signature is 1 KiB; anything near this limit is not a signature.
MAX_SIGNATURE_CHARS = 16 * 1024
#: Annotations kept per layer; cosign writes at most five.
MAX_ANNOTATIONS = 64
#: Largest descriptor size taken as a number (I-JSON's exact integers).
MAX_SIZE = 2**53
#: A key that cosign (Go) reads as a manifest or descriptor field under another spelling.
KEY_CASE_COLLISION = "signature.manifest_key_case_collision"


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


SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
#: Notation envelope media types (JWS, COSE); read only in a Notation artifact.
NOTATION_ENVELOPES = ("application/jose+json", "application/cose")


@dataclass(frozen=True)
class Attachment:
    """A parsed signature artifact manifest."""

    layers: tuple[Layer, ...]
    #: ``subject.digest`` of a referrer; "" for a tag-based artifact.
    subject_digest: str = ""
    artifact_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


def layer_kind(media_type: str) -> str:
    """ "signature", "attestation", "bundle", "notation" or "other" for a layer media type."""
    if media_type == SIMPLE_SIGNING:
        return "signature"
    if media_type == DSSE_ENVELOPE:
        return "attestation"
    if media_type.startswith(BUNDLE_PREFIX):
        return "bundle"
    if media_type in NOTATION_ENVELOPES:
        return "notation"
    return "other"


def parse_attachment(data: bytes, max_layers: int) -> Attachment:
    """A staged signature artifact manifest.

    Raises AttachmentError with ``signature.invalid`` for a malformed
    document, :data:`KEY_CASE_COLLISION` for one a Go client reads otherwise,
    and ``signature.too_many`` for more than ``max_layers`` layers.
    """
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise AttachmentError("signature.invalid", f"signature manifest: {exc}") from None
    if not isinstance(document, dict):
        raise AttachmentError("signature.invalid", "signature manifest is not a JSON object")
    problem = key_case_problem(document, MANIFEST)
    if problem is not None:
        raise AttachmentError(KEY_CASE_COLLISION, f"signature manifest: {problem}")
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
    subject = document.get("subject")
    subject_digest = ""
    if subject is not None:
        if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
            raise AttachmentError("signature.invalid", "subject is not a descriptor")
        subject_digest = subject["digest"]
    artifact_type = document.get("artifactType", "")
    if not isinstance(artifact_type, str):
        raise AttachmentError("signature.invalid", "artifactType is not a string")
    return Attachment(
        layers=tuple(_layer(i, item) for i, item in enumerate(layers)),
        subject_digest=subject_digest,
        artifact_type=artifact_type,
        annotations=_annotations(document.get("annotations"), "annotations"),
    )


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
    annotations = _annotations(item.get("annotations"), f"{where}.annotations")
    return Layer(index, media_type, digest, size, annotations)


def _annotations(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_ANNOTATIONS:
        raise AttachmentError(
            "signature.invalid", f"{where} is not an object of at most {MAX_ANNOTATIONS} strings"
        )
    annotations: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise AttachmentError("signature.invalid", f"{where}[{key[:60]!r}] is not a string")
        annotations[key] = value
    return annotations


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
