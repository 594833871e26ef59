"""Build OCI image layouts in Python and move them with the real skopeo.

Layers are deterministic (tar with fixed metadata, gzip with mtime=0), so a
test knows every digest before it pushes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Executable(bytes):
    """File content that goes into a layer with mode 0755 (a program, e.g. a Go binary)."""


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A tar+gzip layer; returns (compressed bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o755 if isinstance(content, Executable) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    compressed = gzip.compress(tar_bytes, mtime=0)
    return compressed, sha256(tar_bytes)


@dataclass
class BuiltImage:
    layout: Path
    tag: str
    manifest: bytes
    config: bytes
    layers: list[bytes]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blob_digests(self) -> list[str]:
        return [sha256(self.config), *(sha256(layer) for layer in self.layers)]


def _write_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def build_image(
    layout: Path,
    tag: str,
    layer_files: list[dict[str, bytes]],
    annotations: dict[str, str] | None = None,
    architecture: str = "amd64",
) -> BuiltImage:
    """Write an OCI layout with one image under ``tag``, for linux/``architecture``."""
    layers, diff_ids = [], []
    for files in layer_files:
        blob, diff_id = make_layer(files)
        layers.append(blob)
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        },
        sort_keys=True,
    ).encode()
    manifest_doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": sha256(b), "size": len(b)} for b in layers
        ],
    }
    if annotations:
        manifest_doc["annotations"] = annotations
    manifest = json.dumps(manifest_doc, indent=2).encode()
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for blob in (config, *layers, manifest):
        _write_blob(layout, blob)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return BuiltImage(layout, tag, manifest, config, layers)


def random_layers(count: int, size: int, seed: int = 0) -> list[dict[str, bytes]]:
    """Layers of incompressible data, ``size`` bytes each, reproducible by seed."""
    out = []
    for i in range(count):
        data = hashlib.shake_256(f"pullguard-{seed}-{i}".encode()).digest(size)
        out.append({f"data/file-{i}.bin": data})
    return out


def skopeo(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def push(image: BuiltImage, registry: str, repository: str) -> None:
    """Push an OCI layout with skopeo, byte for byte (no conversion)."""
    result = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"oci:{image.layout}:{image.tag}",
        f"docker://{registry}/{repository}:{image.tag}",
    )
    assert result.returncode == 0, result.stderr


def pull(source: str, destination: Path, tag: str) -> subprocess.CompletedProcess[str]:
    """``skopeo copy docker://<source> oci:<destination>:<tag>`` over plain http."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return skopeo(
        "copy", "--src-tls-verify=false", f"docker://{source}", f"oci:{destination}:{tag}"
    )


def layout_manifest_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return str(entry["digest"])
    raise AssertionError(f"{tag} not in {layout}")


@dataclass
class BuiltIndex:
    layout: Path
    tag: str
    index: bytes
    children: list[BuiltImage]

    @property
    def digest(self) -> str:
        return sha256(self.index)


def build_index(
    layout: Path, tag: str, platforms: list[tuple[str, str]], seed: int = 0
) -> BuiltIndex:
    """An OCI layout whose ``tag`` is an image index with one image per (os, arch)."""
    children = []
    for i, (os_name, arch) in enumerate(platforms):
        child = build_image(
            layout,
            f"{tag}-{os_name}-{arch}",
            random_layers(1, 4096, seed=seed + i),
            architecture=arch,
        )
        children.append(child)
    index_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": c.digest,
                "size": len(c.manifest),
                "platform": {"os": os_name, "architecture": arch},
            }
            for c, (os_name, arch) in zip(children, platforms, strict=True)
        ],
    }
    index = json.dumps(index_doc, indent=2).encode()
    _write_blob(layout, index)
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_INDEX,
                        "digest": sha256(index),
                        "size": len(index),
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return BuiltIndex(layout, tag, index, children)


def push_index(image: BuiltIndex, registry: str, repository: str) -> None:
    result = skopeo(
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"oci:{image.layout}:{image.tag}",
        f"docker://{registry}/{repository}:{image.tag}",
    )
    assert result.returncode == 0, result.stderr
