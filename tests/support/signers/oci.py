"""Signature artifacts in a registry: read, copy, push, and the referrers fallback index.

Everything speaks the distribution API over plain http on 127.0.0.1 with
exact bytes (nothing is re-serialised on the way). :class:`Artifact` is a
manifest and every blob it lists; :func:`read_artifact` fetches one,
:func:`push_artifact` writes one to any repository and reference, and
:func:`add_referrer` lists a pushed referrer in the ``sha256-<hex>``
fallback index as go-containerregistry (and so cosign) does when the
registry has no referrers API.

:func:`serve_minimal_registry` scripts the hostile upstream
(tests/support/hostile.py) as a small, well-behaved registry that does
have the OCI 1.1 referrers API: Debian's docker-registry (distribution
2.8) answers ``GET /v2/<name>/referrers/<digest>`` with 404, and no other
registry runs here, so that one case needs a scripted server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.hostile import HostileUpstream, Reply
from tests.support.registry import push_blob_sync, push_manifest_sync

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_tag(digest: str) -> str:
    """cosign's legacy signature tag: ``sha256-<hex>.sig``."""
    return digest.replace(":", "-", 1) + ".sig"


def attestation_tag(digest: str) -> str:
    """cosign's legacy attestation tag: ``sha256-<hex>.att``."""
    return digest.replace(":", "-", 1) + ".att"


def fallback_tag(digest: str) -> str:
    """The OCI 1.1 referrers fallback tag: ``sha256-<hex>``."""
    return digest.replace(":", "-", 1)


@dataclass(frozen=True)
class Artifact:
    """A manifest (exact bytes) and the blobs it lists, by digest."""

    manifest: bytes
    media_type: str = OCI_MANIFEST
    blobs: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def document(self) -> Any:
        """The manifest parsed (for assertions; verification never reads this)."""
        return json.loads(self.manifest)

    def descriptor(self, artifact_type: str | None = None) -> dict[str, object]:
        """This manifest's descriptor, as an index lists it."""
        out: dict[str, object] = {
            "mediaType": self.media_type,
            "size": len(self.manifest),
            "digest": self.digest,
        }
        if artifact_type:
            out["artifactType"] = artifact_type
        return out


def read_artifact(base_url: str, repository: str, reference: str) -> Artifact | None:
    """GET a manifest and every blob it lists (config, layers); None when absent."""
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        response = client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        document = json.loads(response.content)
        blobs: dict[str, bytes] = {}
        for descriptor in [document.get("config"), *document.get("layers", [])]:
            if not descriptor:
                continue
            blob = client.get(
                f"/v2/{repository}/blobs/{descriptor['digest']}", follow_redirects=True
            )
            blob.raise_for_status()
            blobs[str(descriptor["digest"])] = blob.content
    media_type = response.headers.get("content-type", OCI_MANIFEST).split(";")[0]
    return Artifact(response.content, media_type, blobs)


def push_artifact(base_url: str, repository: str, reference: str, artifact: Artifact) -> str:
    """Push every blob, then the manifest under ``reference`` (a tag or its digest)."""
    for data in artifact.blobs.values():
        push_blob_sync(base_url, repository, data)
    return push_manifest_sync(
        base_url, repository, reference, artifact.manifest, artifact.media_type
    )


def copy_artifact(
    base_url: str,
    repository: str,
    reference: str,
    to_repository: str,
    to_reference: str | None = None,
) -> Artifact:
    """Copy ``repository:reference`` byte for byte to ``to_repository:to_reference``."""
    artifact = read_artifact(base_url, repository, reference)
    if artifact is None:
        raise AssertionError(f"{repository}:{reference} is absent")
    push_artifact(base_url, to_repository, to_reference or reference, artifact)
    return artifact


def index_document(descriptors: Iterable[Mapping[str, object]]) -> bytes:
    """An OCI index listing ``descriptors``, in go-containerregistry's compact form."""
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)}
    return json.dumps(document, separators=(",", ":")).encode()


def add_referrer(
    base_url: str,
    repository: str,
    subject_digest: str,
    referrer: Artifact,
    artifact_type: str,
) -> bytes:
    """Push ``referrer`` by digest and list it in the ``sha256-<hex>`` fallback index.

    ``artifact_type`` is what the index states for it (go-containerregistry
    copies the referrer's config media type there). The entries are sorted
    by digest, as go-containerregistry keeps them. Returns the new index.
    """
    push_artifact(base_url, repository, referrer.digest, referrer)
    tag = fallback_tag(subject_digest)
    existing = read_artifact(base_url, repository, tag)
    manifests = list(existing.document["manifests"]) if existing else []
    manifests.append(referrer.descriptor(artifact_type))
    index = index_document(sorted(manifests, key=lambda d: str(d["digest"])))
    push_manifest_sync(base_url, repository, tag, index, OCI_INDEX)
    return index


def tags(base_url: str, repository: str) -> list[str]:
    response = httpx.get(f"{base_url}/v2/{repository}/tags/list", timeout=30, trust_env=False)
    response.raise_for_status()
    return list(response.json().get("tags") or [])


# -- a minimal registry with the referrers API, on the hostile upstream ------


def _manifest_replies(data: bytes, media_type: str) -> tuple[Reply, Reply]:
    headers = {
        "Content-Type": media_type,
        "Docker-Content-Digest": sha256(data),
        "Content-Length": str(len(data)),
    }
    return Reply(headers=headers, body=data), Reply(headers=headers)


def serve_minimal_registry(
    upstream: HostileUpstream,
    repository: str,
    manifests: Mapping[str, Artifact],
    referrers: Mapping[str, Iterable[Mapping[str, object]]] | None = None,
) -> None:
    """Script ``upstream`` as a registry serving ``repository``.

    ``manifests`` maps each reference (tag or digest) to an artifact; every
    artifact is also served under its digest, and its blobs under
    ``/v2/<repository>/blobs/<digest>``. ``referrers`` maps a subject
    digest to the descriptors ``GET /v2/<repository>/referrers/<digest>``
    lists (an OCI index, as distribution-spec 1.1 says). Tags not given,
    among them ``sha256-<hex>.sig`` and the fallback tag, answer 404
    ``MANIFEST_UNKNOWN``; the fake's default 404 covers everything else.
    """
    upstream.reply("/v2/", Reply(headers={"Content-Type": "application/json"}, body=b"{}"))
    served: dict[str, Artifact] = {}
    for reference, artifact in manifests.items():
        served[reference] = artifact
        served[artifact.digest] = artifact
    for reference, artifact in served.items():
        get, head = _manifest_replies(artifact.manifest, artifact.media_type)
        path = f"/v2/{repository}/manifests/{reference}"
        upstream.reply(path, get)
        upstream.reply(path, head, method="HEAD")
        for digest, data in artifact.blobs.items():
            blob_headers = {
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": digest,
                "Content-Length": str(len(data)),
            }
            blob_path = f"/v2/{repository}/blobs/{digest}"
            upstream.reply(blob_path, Reply(headers=blob_headers, body=data))
            upstream.reply(blob_path, Reply(headers=blob_headers), method="HEAD")
    unknown = json.dumps(
        {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
    ).encode()
    for artifact in {a.digest: a for a in served.values()}.values():
        digest = artifact.digest
        for tag in (signature_tag(digest), attestation_tag(digest), fallback_tag(digest)):
            if tag in served:
                continue
            path = f"/v2/{repository}/manifests/{tag}"
            missing = Reply(status=404, headers={"Content-Type": "application/json"}, body=unknown)
            upstream.reply(path, missing)
            upstream.reply(path, Reply(status=404), method="HEAD")
    for subject, descriptors in (referrers or {}).items():
        index = index_document(descriptors)
        upstream.reply(
            f"/v2/{repository}/referrers/{subject}",
            Reply(headers={"Content-Type": OCI_INDEX}, body=index),
        )
