"""The benchmark's images: random gzip layers, pushed to the upstream registry once.

Layers come from tests.support.images.random_layers (tar + gzip, mtime 0),
as every test's; only the digests and the blob files of the OCI layout are
kept, so a 1 GiB image does not stay in memory.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import build_image, push, random_layers

TAG = "v1"
#: Bytes read at a time by the sha256 pass.
READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class BenchImage:
    """An image in the upstream registry, and its blobs on local disk."""

    repository: str
    mib: int
    layer_count: int
    digest: str
    blob_digests: tuple[str, ...]
    blob_paths: tuple[Path, ...]

    @property
    def compressed_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.blob_paths)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{TAG}"

    def describe(self) -> str:
        return (
            f"{self.repository}: {self.layer_count} gzip layers,"
            f" {self.compressed_bytes / 2**20:.1f} MiB compressed, {self.digest}"
        )


def make_image(
    root: Path,
    registry: str,
    mib: int,
    layer_count: int,
    seed: int,
    first_layer: dict[str, bytes] | None = None,
    name: str = "",
) -> BenchImage:
    """Build ``mib`` MiB of random data in ``layer_count`` gzip layers; push it to ``registry``.

    ``first_layer`` adds files to the first layer (a package database), ``name``
    tells such an image apart from the plain one in the repository's name."""
    repository = f"bench/m{mib}-l{layer_count}{name}"
    layout = root / "images" / repository.replace("/", "-")
    size = mib * 1024 * 1024 // layer_count
    layers = random_layers(layer_count, size, seed=seed)
    layers[0].update(first_layer or {})
    image = build_image(layout, TAG, layers)
    push(image, registry, repository)
    blobs = tuple(image.blob_digests)
    paths = tuple(layout / "blobs" / "sha256" / d.split(":", 1)[1] for d in blobs)
    return BenchImage(repository, mib, layer_count, image.digest, blobs, paths)


def sha256_pass(paths: tuple[Path, ...]) -> float:
    """Seconds for one sha256 pass over the files (read in 1 MiB pieces, as a verifier would)."""
    started = time.perf_counter()
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            while piece := stream.read(READ_SIZE):
                digest.update(piece)
    return time.perf_counter() - started
