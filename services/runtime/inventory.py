"""An image's software inventory: what each layer's package databases list,
and the image as the layers add up to it.

Format reads one :class:`LayerInventory` per layer during layer inspection
(:mod:`pullguard.services.format.inventory`); the vulnerability layer merges
them with :func:`merge_layers` and matches the result. The types mirror
``protos/pullguard/v1/inventory.proto`` (converted in :mod:`protoconv`) so that
both sides stay free of generated code. Every string here came out of an
untrusted layer: it is data to match, never a path to open.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from pullguard.services.runtime.purl import purl

#: OS package kinds, whose ecosystem takes the distribution's release.
OS_KINDS = frozenset({"dpkg", "apk", "rpm"})
#: The os-release files, most authoritative first (os-release(5)).
OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")


@dataclass(frozen=True)
class Package:
    ecosystem: str
    name: str
    version: str
    purl: str = ""
    source_name: str = ""
    source_version: str = ""
    arch: str = ""


@dataclass(frozen=True)
class PackageSource:
    """One database file in a layer (normalised path) and what it lists."""

    path: str
    kind: str
    packages: tuple[Package, ...] = ()


@dataclass(frozen=True)
class OsRelease:
    path: str
    id: str = ""
    version_id: str = ""
    pretty_name: str = ""


@dataclass
class LayerInventory:
    """What one layer adds (``sources``, ``os_release``) and removes."""

    index: int
    sources: list[PackageSource] = field(default_factory=list)
    #: Whiteouts: ``dir/NAME`` for ``.wh.NAME``, ``dir/`` for an opaque ``dir``.
    removed: list[str] = field(default_factory=list)
    os_release: OsRelease | None = None
    #: Finding codes of limits hit and databases that lie about themselves.
    incomplete: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.sources or self.removed or self.os_release or self.incomplete)


@dataclass(frozen=True)
class MergedInventory:
    """The image as its layers add up to it."""

    os_release: OsRelease | None
    #: Every package, OS packages with the release applied ("Debian:12").
    packages: tuple[Package, ...]
    #: Finding codes from any layer, sorted; non-empty means "maybe more".
    incomplete: tuple[str, ...]
    #: Surviving database files, for the report.
    sources: tuple[PackageSource, ...] = ()


def merge_layers(layers: Sequence[LayerInventory]) -> MergedInventory:
    """Apply ``layers`` in manifest order, as a runtime extracts them.

    A later layer's database at the same path replaces an earlier one; a
    whiteout ``dir/NAME`` removes that path and everything under it from the
    layers below, an opaque ``dir/`` everything under ``dir`` from the layers
    below (not the layer's own files). Returns the surviving packages, the
    distribution (``etc/os-release`` before ``usr/lib/os-release``) and
    whether any layer was incomplete.
    """
    sources: dict[str, PackageSource] = {}
    releases: dict[str, OsRelease] = {}
    incomplete: set[str] = set()
    for layer in sorted(layers, key=lambda item: item.index):
        for removed in layer.removed:
            for table in (sources, releases):
                for path in [p for p in table if _removes(removed, p)]:
                    del table[path]
        for source in layer.sources:
            sources[source.path] = source
        if layer.os_release is not None:
            releases[layer.os_release.path] = layer.os_release
        incomplete.update(layer.incomplete)
    os_release = next((releases[p] for p in OS_RELEASE_PATHS if p in releases), None)
    packages = [
        _with_release(package, source.kind, os_release)
        for path in sorted(sources)
        for source in (sources[path],)
        for package in source.packages
    ]
    return MergedInventory(
        os_release=os_release,
        packages=tuple(_unique(packages)),
        incomplete=tuple(sorted(incomplete)),
        sources=tuple(sources[p] for p in sorted(sources)),
    )


def _removes(removed: str, path: str) -> bool:
    if removed.endswith("/"):
        return removed == "/" or path.startswith(removed)
    return path == removed or path.startswith(removed + "/")


def _unique(packages: Iterable[Package]) -> Iterable[Package]:
    """The same package listed twice (a wheel's dist-info in two site dirs,
    one module in two Go binaries) is matched once."""
    seen: set[tuple[str, str, str, str]] = set()
    for package in packages:
        key = (package.ecosystem, package.name, package.version, package.arch)
        if key not in seen:
            seen.add(key)
            yield package


#: os-release ID -> (OSV ecosystem, purl namespace) for OS package kinds; the
#: names are osv-schema's (ecosystems.json), the release is added by
#: :func:`os_ecosystem`. Fedora has no OSV ecosystem: its name matches nothing.
_DISTROS = {
    "debian": ("Debian", "debian"),
    "ubuntu": ("Ubuntu", "ubuntu"),
    "alpine": ("Alpine", "alpine"),
    "wolfi": ("Wolfi", "wolfi"),
    "chainguard": ("Chainguard", "chainguard"),
    "rhel": ("Red Hat", "redhat"),
    "centos": ("Red Hat", "centos"),
    "fedora": ("Fedora", "fedora"),
    "rocky": ("Rocky Linux", "rocky"),
    "almalinux": ("AlmaLinux", "almalinux"),
    "opensuse-leap": ("openSUSE", "opensuse"),
    "opensuse-tumbleweed": ("openSUSE", "opensuse"),
    "sles": ("SUSE", "suse"),
    "sle-micro": ("SUSE", "suse"),
    "mageia": ("Mageia", "mageia"),
    "photon": ("Photon OS", "photon"),
}
_PURL_TYPES = {"dpkg": "deb", "apk": "apk", "rpm": "rpm"}
#: Ecosystems of rolling distributions: OSV names them without a release.
_UNRELEASED = frozenset({"Wolfi", "Chainguard"})


def os_ecosystem(os_release: OsRelease | None, kind: str) -> tuple[str, str, str]:
    """(OSV ecosystem with release, purl namespace, purl distro) for an OS
    package of ``kind`` on ``os_release``; the kind's default without one."""
    default = {"dpkg": "debian", "apk": "alpine", "rpm": "redhat"}[kind]
    if os_release is None or os_release.id not in _DISTROS:
        name, namespace = next(v for v in _DISTROS.values() if v[1] == default)
        return name, namespace, ""
    name, namespace = _DISTROS[os_release.id]
    version = os_release.version_id
    distro = f"{os_release.id}-{version}" if version else ""
    release = _release(name, version, os_release.pretty_name)
    ecosystem = f"{name}:{release}" if release else name
    return ecosystem, namespace, distro


def _release(name: str, version: str, pretty_name: str) -> str:
    """The release part of an OSV ecosystem name, as each publisher writes it."""
    if name in _UNRELEASED:
        return ""
    if name == "Alpine":
        # OSV and secdb name Alpine branches "v3.20", not the point release.
        return "v" + ".".join(version.split(".")[:2]) if version else ""
    if name == "Red Hat":
        # Red Hat files by CPE ("enterprise_linux:9::baseos"); the vulnerability
        # layer reads every repository and minor release of it as this name.
        return f"enterprise_linux:{version.split('.')[0]}" if version else ""
    if name in ("Rocky Linux", "AlmaLinux"):
        return version.split(".")[0]
    if name in ("openSUSE", "SUSE"):
        # SUSE files by product name, os-release's PRETTY_NAME without the
        # vendor: "openSUSE Leap 15.5" -> "openSUSE:Leap 15.5".
        vendor = name + " "
        return pretty_name[len(vendor) :] if pretty_name.startswith(vendor) else ""
    if name == "Ubuntu" and _ubuntu_lts(version, pretty_name):
        # OSV files LTS releases as "Ubuntu:22.04:LTS": without the suffix no
        # record of an LTS release would ever match.
        return f"{version}:LTS"
    return version


def _ubuntu_lts(version: str, pretty_name: str) -> bool:
    """An Ubuntu LTS release: its PRETTY_NAME says so ("Ubuntu 22.04.4 LTS"),
    and every April release of an even year has been one (6.06 aside)."""
    year, dot, month = version.partition(".")
    by_number = bool(dot) and year.isdigit() and int(year) % 2 == 0 and month == "04"
    return by_number or pretty_name.split()[-1:] == ["LTS"]


def _with_release(package: Package, kind: str, os_release: OsRelease | None) -> Package:
    if kind not in OS_KINDS:
        return package
    ecosystem, namespace, distro = os_ecosystem(os_release, kind)
    qualifiers = {"arch": package.arch, "distro": distro}
    version = package.version
    if kind == "rpm":
        # purl keeps rpm's epoch apart from the version.
        epoch, colon, rest = version.partition(":")
        if colon and epoch.isdigit():
            qualifiers["epoch"], version = epoch, rest
    if package.source_name and package.source_name != package.name:
        qualifiers["upstream"] = package.source_name
    return replace(
        package,
        ecosystem=ecosystem,
        purl=purl(_PURL_TYPES[kind], namespace, package.name, version, qualifiers),
    )
