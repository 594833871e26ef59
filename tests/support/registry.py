"""A real upstream for tests: Debian's docker-registry, filled over raw HTTP.

``registry`` is a pytest fixture (import it into a test module) that starts
``docker-registry serve CONFIG`` on a free 127.0.0.1 port with a temporary
root folder and yields its base URL; the process is stopped by PID. The push
helpers speak the distribution API directly (monolithic blob upload, then
the manifest), so a test knows the exact bytes that the upstream holds.

Each helper exists in a blocking form (``push_blob_sync`` ...) and an async
form (``push_blob`` ...) that runs the blocking one in a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, make_layer, sha256
from tests.support.registry_process import RegistryProcess

READY_TIMEOUT = 10.0


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:<port>``) of a fresh docker-registry."""
    process = RegistryProcess(tmp_path / "upstream-registry")
    process.root.mkdir(parents=True, exist_ok=True)
    process.start(timeout=READY_TIMEOUT)
    try:
        yield process.url
    finally:
        process.stop()


@dataclass(frozen=True)
class PushedImage:
    """An image as pushed: exact bytes, digests and descriptors (as manifest dicts)."""

    repository: str
    tag: str
    manifest: bytes
    media_type: str
    config: bytes
    layers: list[bytes]
    descriptors: list[dict[str, object]] = field(default_factory=list)  # config, then layers

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        """Digest -> bytes of every blob (config and layers)."""
        return {sha256(b): b for b in (self.config, *self.layers)}


def push_blob_sync(base_url: str, repository: str, data: bytes) -> str:
    """Monolithic upload: POST /v2/<repo>/blobs/uploads/, then PUT <location>&digest=.

    Returns the blob's digest.
    """
    digest = sha256(data)
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        started = client.post(f"/v2/{repository}/blobs/uploads/")
        assert started.status_code == 202, (started.status_code, started.text)
        location = httpx.URL(base_url).join(started.headers["Location"])
        done = client.put(
            location.copy_merge_params({"digest": digest}),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, (done.status_code, done.text)
    return digest


def push_manifest_sync(
    base_url: str, repository: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
) -> str:
    """PUT /v2/<repo>/manifests/<reference> with ``body`` exactly; returns its digest."""
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        response = client.put(
            f"/v2/{repository}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
        )
        assert response.status_code == 201, (response.status_code, response.text)
    return sha256(body)


def push_image_sync(
    base_url: str,
    repository: str,
    tag: str,
    layer_files: list[dict[str, bytes]] | None = None,
    annotations: dict[str, str] | None = None,
) -> PushedImage:
    """Build a small OCI image (tar+gzip layers, a config), push blobs, then the manifest by tag."""
    layers: list[bytes] = []
    diff_ids: list[str] = []
    for files in layer_files if layer_files is not None else [{"hello.txt": b"hello\n"}]:
        blob, diff_id = make_layer(files)
        layers.append(blob)
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    descriptors: list[dict[str, object]] = [
        {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        *({"mediaType": OCI_LAYER_GZIP, "digest": sha256(b), "size": len(b)} for b in layers),
    ]
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptors[0],
        "layers": descriptors[1:],
    }
    if annotations:
        document["annotations"] = annotations
    manifest = json.dumps(document, indent=2).encode()
    for blob in (config, *layers):
        push_blob_sync(base_url, repository, blob)
    push_manifest_sync(base_url, repository, tag, manifest, OCI_MANIFEST)
    return PushedImage(repository, tag, manifest, OCI_MANIFEST, config, layers, descriptors)


async def push_blob(base_url: str, repository: str, data: bytes) -> str:
    return await asyncio.to_thread(push_blob_sync, base_url, repository, data)


async def push_manifest(
    base_url: str, repository: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
) -> str:
    return await asyncio.to_thread(
        push_manifest_sync, base_url, repository, reference, body, media_type
    )


async def push_image(
    base_url: str,
    repository: str,
    tag: str,
    layer_files: list[dict[str, bytes]] | None = None,
    annotations: dict[str, str] | None = None,
) -> PushedImage:
    return await asyncio.to_thread(
        push_image_sync, base_url, repository, tag, layer_files, annotations
    )
