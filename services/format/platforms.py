"""Index entries that one runtime request could match (issue 7: an index is one unit).

A runtime runs the *first* entry of an index whose platform matches what it
asks for (containerd's ``platforms`` matcher and ``images.Manifest``). Two
entries one request could match make the second unreachable for that
request, or make what runs depend on the order of the list: either way the
index is refused (``format.index_duplicate_platform``).

Platforms compare as containerd's ``platforms.Normalize`` and matcher do:

- ``os`` in lower case, ``macos`` = ``darwin``;
- ``architecture`` and ``variant`` in lower case, then: ``x86_64``/``x86-64``
  = ``amd64`` and amd64 ``v1`` = no variant; ``aarch64`` = ``arm64`` and arm64
  ``8``/``v8``/``v8.0`` = no variant, ``9``/``9.0``/``v9.0`` = ``v9``;
  ``i386`` = ``386``; ``armhf`` = arm ``v7``, ``armel`` = arm ``v6``; arm
  without a variant or ``7`` = ``v7``, ``5``/``6``/``8`` = ``v5``/``v6``/``v8``.
  So linux/arm64 and linux/arm64/v8 are one platform; linux/arm/v6 and
  linux/arm/v7 are two (a request prefers its own variant);
- ``os.version`` only counts for windows, where entries of different builds
  (major.minor.build) are different platforms and an entry without a version
  matches every build; other systems ignore it;
- ``os.features`` never tells entries apart: a request that carries both
  entries' features matches both.

An entry without ``platform`` matches every request in containerd (after the
entries that have one), so two such entries are duplicates. ``unknown/unknown``
entries (buildx's attestation manifests) name no platform a runtime asks for
and are never duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pullguard.services.runtime.findings import Finding

DUPLICATE_PLATFORM = "format.index_duplicate_platform"

#: (os, architecture, variant) after normalisation.
Key = tuple[str, str, str]

_NOT_A_PLATFORM: Key = ("unknown", "unknown", "")


def normalize(os_name: str, architecture: str, variant: str) -> Key:
    """containerd's ``normalizeOS`` and ``normalizeArch`` (an empty os is left empty)."""
    os_name = os_name.lower()
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = architecture.lower(), variant.lower()
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch = "amd64"
        if variant == "v1":
            variant = ""
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return os_name, arch, variant


def _windows_build(version: str) -> tuple[str, ...]:
    """major.minor.build of a windows os.version; the revision never tells builds apart."""
    return tuple(version.split(".")[:3])


def _shown(key: Key) -> str:
    return "/".join(part for part in key if part)


def _claims(entries: Sequence[Any]) -> Iterable[tuple[int, Key | None, str]]:
    """(position, normalised platform or None when absent, windows os.version)."""
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        platform = entry.get("platform")
        if platform is None and "platform" not in entry:
            yield position, None, ""
            continue
        if not isinstance(platform, Mapping):
            continue  # a malformed platform has its own finding
        parts = [platform.get(name, "") for name in ("os", "architecture", "variant")]
        version = platform.get("os.version", "")
        if not all(isinstance(part, str) for part in (*parts, version)):
            continue
        yield position, normalize(*parts), version


def duplicate_platforms(entries: Sequence[Any]) -> list[Finding]:
    """A finding for every entry whose platform an earlier entry already claims."""
    findings: list[Finding] = []
    # Entries grouped by platform, so the work stays linear in the entry count.
    first_of: dict[Key | None, list[tuple[int, str]]] = {}
    for position, key, version in _claims(entries):
        if key == _NOT_A_PLATFORM:
            continue
        earlier = first_of.setdefault(key, [])
        clash = _clash(earlier, key, version)
        if clash is not None:
            findings.append(_finding(entries, clash, position, key))
        earlier.append((position, version))
    return findings


def _clash(earlier: list[tuple[int, str]], key: Key | None, version: str) -> int | None:
    """The earlier entry one request could match together with this one, if any."""
    if not earlier:
        return None
    if key is None or key[0] != "windows":
        return earlier[0][0]
    for position, other in earlier:
        if not version or not other or _windows_build(version) == _windows_build(other):
            return position
    return None


def _finding(entries: Sequence[Any], first: int, duplicate: int, key: Key | None) -> Finding:
    claimed = "no platform (matches every request)" if key is None else f"platform {_shown(key)}"
    return Finding.error(
        DUPLICATE_PLATFORM,
        f"manifests[{duplicate}] claims {claimed}, as manifests[{first}] does; a runtime"
        " runs the first match, so one request could reach either",
        platform=_shown(key) if key is not None else "",
        first=str(entries[first].get("digest", ""))[:100],
        duplicate=str(entries[duplicate].get("digest", ""))[:100],
    )
