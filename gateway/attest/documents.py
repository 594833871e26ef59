"""The documents pullguard signs and the manifests that carry them, as cosign writes them.

Two attachments per admitted manifest, both OCI image manifests in the
image's own repository, under cosign's tag schema:

- ``sha256-<hex>.sig``: one layer of media type
  ``application/vnd.dev.cosign.simplesigning.v1+json`` whose blob is the
  simple-signing payload (compact JSON, Go's key order)::

      {"critical":{"identity":{"docker-reference":"HOST/REPO"},
                   "image":{"docker-manifest-digest":"sha256:..."},
                   "type":"cosign container image signature"},
       "optional":{"dev.pullguard.decision":"...", ...}}

  and the annotation ``dev.cosignproject.cosign/signature``: base64 of the
  DER ECDSA signature over exactly those bytes. ``cosign verify --key``
  reads this.
- ``sha256-<hex>.att``: one layer of media type
  ``application/vnd.dsse.envelope.v1+json``, annotated ``predicateType``,
  whose blob is a DSSE envelope around an in-toto Statement with predicate
  type :data:`PREDICATE_TYPE`. The signature is over DSSE's pre-authentication
  encoding (``DSSEv1 <len> <type> <len> <payload>``), as cosign signs it.
  ``cosign verify-attestation --key --type PREDICATE_TYPE`` reads this.

With ``attest.mode: referrers`` (or ``both``) the same layer, config and
signature also go out as OCI 1.1 referrers, pushed by digest, as cosign 2.5
writes a signature with ``--registry-referrers-mode=oci-1-1``: the manifest
gains ``artifactType`` and a ``subject`` descriptor naming the admitted
manifest, and its config's media type becomes the artifact type
(:data:`SIGNATURE_ARTIFACT` for the signature, :data:`ATTESTATION_ARTIFACT`
for the attestation, the in-toto type cosign gives attestation referrers).
``cosign verify --experimental-oci11`` finds the signature through the
referrers API or its ``sha256-<hex>`` fallback index (see :mod:`.referrers`).

Each is built from bytes once and never re-serialised: the digest of what is
pushed is the digest of what was signed over.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.attest.keys import SigningKey

PREDICATE_TYPE = "https://pullguard.dev/admission/v1"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT = "https://in-toto.io/Statement/v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
#: cosign's artifact type for a signature referrer (its ``ArtifactType("sig")``).
SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
#: The artifact type cosign gives an attestation referrer: the statement's own type.
ATTESTATION_ARTIFACT = INTOTO_PAYLOAD_TYPE


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attachment_tag(digest: str, suffix: str) -> str:
    """cosign's tag for ``digest``'s attachments: ``sha256-<hex>.sig`` or ``.att``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}.{suffix}"


@dataclass(frozen=True)
class Subject:
    """The admitted manifest a referrer points to (its OCI descriptor)."""

    media_type: str
    digest: str
    size: int

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Attachment:
    """A signature or attestation manifest and its blobs, ready to push or serve."""

    #: cosign's tag; "" for a referrer, which is pushed by digest only.
    tag: str
    manifest: bytes
    #: digest -> bytes: the config and the one layer.
    blobs: dict[str, bytes] = field(default_factory=dict)
    media_type: str = OCI_MANIFEST
    #: A referrer's ``artifactType``; "" for a tag attachment.
    artifact_type: str = ""

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def name(self) -> str:
        """How a report names it: the tag, or the referrer's digest."""
        return self.tag or f"referrer {self.digest}"

    def descriptor(self) -> dict[str, Any]:
        """Its entry in the referrers fallback index."""
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest),
            "artifactType": self.artifact_type,
        }


def simple_signing_payload(
    docker_reference: str, digest: str, optional: Mapping[str, str]
) -> bytes:
    """cosign's payload; Go's encoding/json writes struct fields in this order, maps sorted."""
    return _compact(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": dict(sorted(optional.items())),
        }
    )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(docker_reference: str, digest: str, predicate: Mapping[str, Any]) -> bytes:
    """An in-toto Statement naming the admitted manifest as its one subject."""
    algorithm, _, encoded = digest.partition(":")
    return _compact(
        {
            "_type": INTOTO_STATEMENT,
            "subject": [{"name": docker_reference, "digest": {algorithm: encoded}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }
    )


def dsse_envelope(payload: bytes, key: SigningKey) -> bytes:
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, payload))
    return _compact(
        {
            "payloadType": INTOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    )


def _manifest(
    tag: str,
    layer: bytes,
    media_type: str,
    annotations: dict[str, str],
    referrer: tuple[str, Subject] | None = None,
) -> Attachment:
    """One-layer OCI manifest; its config names the layer as cosign's does.

    ``referrer``: (artifact type, subject) makes it an OCI 1.1 referrer of
    ``subject`` instead of a tagged attachment.
    """
    config = _compact(
        {
            "architecture": "",
            "config": {},
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        }
    )
    artifact_type = referrer[0] if referrer is not None else ""
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": artifact_type or OCI_CONFIG,
            "size": len(config),
            "digest": sha256(config),
        },
        "layers": [
            {
                "mediaType": media_type,
                "size": len(layer),
                "digest": sha256(layer),
                "annotations": annotations,
            }
        ],
    }
    if referrer is not None:
        document["subject"] = referrer[1].descriptor()
        document["artifactType"] = artifact_type
        tag = ""
    blobs = {sha256(config): config, sha256(layer): layer}
    return Attachment(tag, _compact(document), blobs, artifact_type=artifact_type)


def _forms(
    tag: str,
    layer: bytes,
    media_type: str,
    annotations: dict[str, str],
    forms: tuple[str, Subject | None],
) -> list[Attachment]:
    """The tagged attachment and/or the referrer of one signed layer.

    ``forms``: (``attest.mode``, the subject; required unless the mode is tag).
    """
    mode, subject = forms
    made = []
    if mode in ("tag", "both"):
        made.append(_manifest(tag, layer, media_type, annotations))
    if mode in ("referrers", "both"):
        if subject is None:
            raise ValueError("a referrer needs the admitted manifest as its subject")
        artifact = SIGNATURE_ARTIFACT if media_type == SIMPLESIGNING else ATTESTATION_ARTIFACT
        made.append(_manifest(tag, layer, media_type, annotations, (artifact, subject)))
    return made


def signature_attachments(
    key: SigningKey,
    docker_reference: str,
    digest: str,
    optional: Mapping[str, str],
    forms: tuple[str, Subject | None] = ("tag", None),
) -> list[Attachment]:
    """One signature, as the ``.sig`` tag and/or a referrer (``forms``, see :func:`_forms`)."""
    payload = simple_signing_payload(docker_reference, digest, optional)
    signature = base64.b64encode(key.sign(payload)).decode()
    annotations = {SIGNATURE_ANNOTATION: signature}
    return _forms(attachment_tag(digest, "sig"), payload, SIMPLESIGNING, annotations, forms)


def attestation_attachments(
    key: SigningKey,
    docker_reference: str,
    digest: str,
    predicate: Mapping[str, Any],
    forms: tuple[str, Subject | None] = ("tag", None),
) -> list[Attachment]:
    """One attestation, as the ``.att`` tag and/or a referrer."""
    envelope = dsse_envelope(statement(docker_reference, digest, predicate), key)
    # cosign looks for the signature annotation on every layer; on an
    # attestation it is empty, the signature being inside the envelope.
    annotations = {SIGNATURE_ANNOTATION: "", "predicateType": PREDICATE_TYPE}
    return _forms(attachment_tag(digest, "att"), envelope, DSSE_ENVELOPE, annotations, forms)


def signature_attachment(
    key: SigningKey, docker_reference: str, digest: str, optional: Mapping[str, str]
) -> Attachment:
    """The ``.sig`` tag attachment alone."""
    return signature_attachments(key, docker_reference, digest, optional)[0]


def attestation_attachment(
    key: SigningKey, docker_reference: str, digest: str, predicate: Mapping[str, Any]
) -> Attachment:
    """The ``.att`` tag attachment alone."""
    return attestation_attachments(key, docker_reference, digest, predicate)[0]
