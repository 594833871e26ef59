"""An image's inventory: its layers' package databases merged in order.

A placeholder of the vulnscan branch's module of the same name (the
integrator keeps theirs): later layers replace a database file at the same
path, whiteouts remove paths, and the distribution's release is applied to
the distribution ecosystems ("Debian" + VERSION_ID 12 -> "Debian:12",
"Alpine" + 3.20.3 -> "Alpine:v3.20").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pullguard.v1 import inventory_pb2

_RELEASE_OF = {"debian": "Debian", "ubuntu": "Ubuntu", "alpine": "Alpine"}


@dataclass
class MergedInventory:
    packages: list[inventory_pb2.Package] = field(default_factory=list)
    os_release: inventory_pb2.OsRelease | None = None
    incomplete: list[str] = field(default_factory=list)


def merge_layers(layers: Sequence[inventory_pb2.LayerInventory]) -> MergedInventory:
    """The inventory of the image whose layers are ``layers``, bottom first."""
    sources: dict[str, inventory_pb2.PackageSource] = {}
    releases: dict[str, inventory_pb2.OsRelease] = {}
    merged = MergedInventory()
    for layer in layers:
        for removed in layer.removed:
            for held in (sources, releases):
                for path in [
                    p for p in held if p == removed or p.startswith(removed.rstrip("/") + "/")
                ]:
                    del held[path]
        for source in layer.sources:
            sources[source.path] = source
        if layer.HasField("os_release"):
            releases[layer.os_release.path] = layer.os_release
        merged.incomplete.extend(layer.incomplete)
    # etc/os-release wins over usr/lib/os-release, as os-release(5) says.
    release = releases.get("etc/os-release") or next(iter(releases.values()), None)
    merged.os_release = release
    for path in sorted(sources):
        for package in sources[path].packages:
            copy = inventory_pb2.Package()
            copy.CopyFrom(package)
            copy.ecosystem = _with_release(package.ecosystem, release)
            merged.packages.append(copy)
    return merged


def _with_release(ecosystem: str, release: inventory_pb2.OsRelease | None) -> str:
    if release is None or ":" in ecosystem or _RELEASE_OF.get(release.id) != ecosystem:
        return ecosystem
    version = release.version_id
    if ecosystem == "Alpine":
        major_minor = ".".join(version.split(".")[:2])
        return f"Alpine:v{major_minor}" if major_minor else ecosystem
    return f"{ecosystem}:{version}" if version else ecosystem
