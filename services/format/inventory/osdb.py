"""OS package databases: dpkg status (and distroless status.d), apk installed.

Packages get the ecosystem of the family ("Debian", "Alpine"); the release
(and purl distro) is applied when the layers are merged, once the image's
os-release is known (:func:`pullguard.services.runtime.inventory.merge_layers`).
"""

from __future__ import annotations

from collections.abc import Iterator

from pullguard.services.format.inventory.limits import MAX_FIELD
from pullguard.services.format.inventory.problems import malformed, text
from pullguard.services.format.inventory.stanzas import apk_records, deb822
from pullguard.services.runtime.inventory import Package
from pullguard.services.runtime.purl import purl

_DPKG_FIELDS = frozenset({"Package", "Status", "Version", "Architecture", "Source"})
#: dpkg states whose files are on disk (dpkg(1) "package states").
_PRESENT = frozenset(
    {
        "installed",
        "half-installed",
        "unpacked",
        "half-configured",
        "triggers-awaited",
        "triggers-pending",
    }
)


def dpkg(data: bytes) -> Iterator[Package]:
    """Packages of a dpkg status file (or one status.d file), in order; a
    lie raises :class:`InventoryProblem` after the packages before it."""
    for stanza in deb822(data, _DPKG_FIELDS):
        if "Status" in stanza:
            words = stanza["Status"].split()
            if len(words) != 3:
                raise malformed(f"package {_name(stanza)}: Status is not three words")
            if words[2].decode("ascii", "replace") not in _PRESENT:
                continue
        if "Package" not in stanza or "Version" not in stanza:
            raise malformed(f"a package stanza without Package or Version ({_name(stanza)})")
        name = text(stanza["Package"], "Package", MAX_FIELD)
        version = text(stanza["Version"], f"{name} Version", MAX_FIELD)
        arch = text(stanza.get("Architecture", b""), f"{name} Architecture", MAX_FIELD)
        source_name, source_version = name, version
        if "Source" in stanza:
            # "Source: name (version)" when the source version differs.
            source = text(stanza["Source"], f"{name} Source", MAX_FIELD)
            source_name, _, rest = source.partition(" ")
            if rest:
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise malformed(f"{name}: Source is not 'name (version)'")
                source_version = rest[1:-1].strip()
        yield Package(
            ecosystem="Debian",
            name=name,
            version=version,
            purl=purl("deb", "debian", name, version, {"arch": arch}),
            source_name=source_name,
            source_version=source_version,
            arch=arch,
        )


def apk(data: bytes) -> Iterator[Package]:
    """Packages of apk's ``lib/apk/db/installed``, in order."""
    for record in apk_records(data):
        if "P" not in record or "V" not in record:
            raise malformed("a package without P: or V:")
        name = text(record["P"], "P:", MAX_FIELD)
        version = text(record["V"], f"{name} V:", MAX_FIELD)
        arch = text(record.get("A", b""), f"{name} A:", MAX_FIELD)
        origin = text(record.get("o", b""), f"{name} o:", MAX_FIELD) or name
        yield Package(
            ecosystem="Alpine",
            name=name,
            version=version,
            purl=purl("apk", "alpine", name, version, {"arch": arch}),
            source_name=origin,
            source_version=version,
            arch=arch,
        )


def _name(stanza: dict[str, bytes]) -> str:
    return stanza.get("Package", b"(unnamed)")[:80].decode("utf-8", "replace")
