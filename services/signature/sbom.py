"""The package list of a signed SBOM predicate: CycloneDX or SPDX JSON, read with bounds.

Called only on the predicate of an in-toto statement whose signature
verified under the rule's trust and whose subject names the image (see
:mod:`pullguard.services.signature.sboms`); the predicate type read here is
the SIGNED one, never a layer annotation (THREATS G-07).

- CycloneDX (1.4, 1.5, 1.6 JSON; cosign ``--type cyclonedx``,
  ``https://cyclonedx.org/bom``): ``components[]``, nested ``components``
  walked to :data:`MAX_DEPTH`; ``metadata.component`` (the image itself) is
  not a package of it.
- SPDX 2.x JSON (cosign ``--type spdxjson``, ``https://spdx.dev/Document``):
  ``packages[]``, the purl from ``externalRefs`` of category
  ``PACKAGE-MANAGER`` (or ``PACKAGE_MANAGER``) and type ``purl``.

Only entries with a purl of a type OSV has an ecosystem for are packages;
the rest are counted (``skipped``). The ecosystem, the name as OSV files it
(``group:artifact`` for Maven, ``@scope/name`` for npm, the module path for
Go) and the distribution release (from the ``distro`` qualifier, as the
scan names it: ``Debian:12``) come from the purl. Every count, depth and
string is bounded: past a bound the list is kept as read so far and
marked incomplete (:data:`SBOM_LIMIT`); a malformed entry is skipped and
marked (:data:`SBOM_INVALID`); a document that is not an SBOM at all raises
:class:`SbomError`. Nothing is ever a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pullguard.services.runtime.inventory import OsRelease, Package, os_ecosystem
from pullguard.services.runtime.purl import ParsedPurl, PurlError, parse_purl, pypi_name

CYCLONEDX = "cyclonedx"
SPDX = "spdx"
CYCLONEDX_PREDICATE = "https://cyclonedx.org/bom"
SPDX_PREDICATE = "https://spdx.dev/Document"

#: Finding codes (the signature layer's; the vulnerability layer sees them as incomplete).
SBOM_INVALID = "signature.sbom_invalid"
SBOM_LIMIT = "signature.sbom_limit"

#: Most components (CycloneDX, nested ones included) or SPDX packages examined.
MAX_COMPONENTS = 50_000
#: Deepest CycloneDX ``components`` nesting walked (top level is 1).
MAX_DEPTH = 16
#: Most ``externalRefs`` of one SPDX package examined.
MAX_REFS = 64
#: Longest name or version kept; a longer one is an invalid entry.
MAX_FIELD = 512

#: purl type -> OSV ecosystem, for language ecosystems.
_LANGUAGE = {
    "pypi": "PyPI",
    "npm": "npm",
    "golang": "Go",
    "cargo": "crates.io",
    "maven": "Maven",
    "nuget": "NuGet",
    "gem": "RubyGems",
    "composer": "Packagist",
    "hex": "Hex",
    "pub": "Pub",
}
#: purl type -> the scan's package kind, for OS packages.
_OS_KINDS = {"deb": "dpkg", "apk": "apk", "rpm": "rpm"}
#: purl namespace (distribution) -> os-release ID, where they differ.
_NAMESPACE_IDS = {"redhat": "rhel", "opensuse": "opensuse-leap", "suse": "sles"}


class SbomError(ValueError):
    """The predicate is not a readable SBOM; ``code`` is the finding code."""

    def __init__(self, message: str, code: str = SBOM_INVALID) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class SbomContents:
    format: str
    packages: list[Package] = field(default_factory=list)
    #: Entries without a purl OSV can match (no purl, an unknown type).
    skipped: int = 0
    #: (code, what was wrong), in the order met; at most a few are kept.
    problems: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, code: str, message: str) -> None:
        if len(self.problems) < 8:
            self.problems.append((code, message))


def sbom_format(predicate_type: str) -> str | None:
    """``cyclonedx``, ``spdx`` or None for a signed predicate type.

    The bare type (what cosign writes) or a versioned one (``/v1.5``, ``/v2.3``).
    """
    for prefix, name in ((CYCLONEDX_PREDICATE, CYCLONEDX), (SPDX_PREDICATE, SPDX)):
        if predicate_type == prefix or (
            predicate_type.startswith(prefix + "/v") and len(predicate_type) <= len(prefix) + 12
        ):
            return name
    return None


def read_sbom(kind: str, predicate: Any) -> SbomContents:
    """The packages ``predicate`` (of format ``kind``) lists; raise SbomError."""
    if not isinstance(predicate, dict):
        raise SbomError(f"the {kind} predicate is {_type(predicate)}, expected an object")
    contents = SbomContents(kind)
    entries = _cyclonedx(predicate, contents) if kind == CYCLONEDX else _spdx(predicate, contents)
    seen = 0
    for where, purl_text, _name, version in entries:
        seen += 1
        if seen > MAX_COMPONENTS:
            contents.problem(SBOM_LIMIT, f"more than {MAX_COMPONENTS} entries; the rest not read")
            break
        _add(contents, where, purl_text, version)
    return contents


Entry = tuple[str, Any, Any, Any]  # (where, purl, name, version) as the document states them


def _cyclonedx(bom: dict[str, Any], contents: SbomContents) -> Iterator[Entry]:
    if bom.get("bomFormat", "CycloneDX") != "CycloneDX":
        raise SbomError(f"bomFormat is {str(bom.get('bomFormat'))[:40]!r}, expected 'CycloneDX'")
    top = bom.get("components", [])
    if not isinstance(top, list):
        raise SbomError(f"components is {_type(top)}, expected an array")
    # Depth-first without recursion: (where, list, depth).
    stack: list[tuple[str, list[Any], int]] = [("components", top, 1)]
    while stack:
        at, items, depth = stack.pop()
        for i, item in enumerate(items):
            where = f"{at}[{i}]"
            if not isinstance(item, dict):
                contents.problem(SBOM_INVALID, f"{where} is {_type(item)}, expected an object")
                continue
            yield where, item.get("purl"), item.get("name"), item.get("version")
            nested = item.get("components")
            if nested is None:
                continue
            if not isinstance(nested, list):
                contents.problem(SBOM_INVALID, f"{where}.components is not an array")
            elif depth >= MAX_DEPTH:
                contents.problem(
                    SBOM_LIMIT, f"{where}.components nested deeper than {MAX_DEPTH}; not read"
                )
            else:
                stack.append((f"{where}.components", nested, depth + 1))


def _spdx(document: dict[str, Any], contents: SbomContents) -> Iterator[Entry]:
    version = document.get("spdxVersion")
    if not isinstance(version, str) or not version.startswith("SPDX-2."):
        raise SbomError(f"spdxVersion is {str(version)[:40]!r}, expected SPDX-2.x")
    packages = document.get("packages", [])
    if not isinstance(packages, list):
        raise SbomError(f"packages is {_type(packages)}, expected an array")
    for i, item in enumerate(packages):
        where = f"packages[{i}]"
        if not isinstance(item, dict):
            contents.problem(SBOM_INVALID, f"{where} is {_type(item)}, expected an object")
            continue
        yield where, _spdx_purl(item, where, contents), item.get("name"), item.get("versionInfo")


def _spdx_purl(package: dict[str, Any], where: str, contents: SbomContents) -> Any:
    refs = package.get("externalRefs", [])
    if not isinstance(refs, list):
        contents.problem(SBOM_INVALID, f"{where}.externalRefs is not an array")
        return None
    for ref in refs[:MAX_REFS]:
        if (
            isinstance(ref, dict)
            and ref.get("referenceCategory") in ("PACKAGE-MANAGER", "PACKAGE_MANAGER")
            and ref.get("referenceType") == "purl"
        ):
            return ref.get("referenceLocator")
    return None


def _add(contents: SbomContents, where: str, purl_text: Any, version: Any) -> None:
    """One entry: the purl decides what is matched (the entry's name is not used)."""
    if purl_text is None:
        contents.skipped += 1
        return
    try:
        parsed = parse_purl(purl_text)
    except PurlError as exc:
        contents.problem(SBOM_INVALID, f"{where}.purl: {exc}")
        return
    package = package_of(parsed, purl_text)
    if package is None:
        contents.skipped += 1
        return
    if not package.version:
        # A version only in the entry, not its purl (SPDX versionInfo).
        if isinstance(version, str):
            package = replace(package, version=version)
    if not package.version:
        contents.skipped += 1
        return
    if len(package.name) > MAX_FIELD or len(package.version) > MAX_FIELD:
        contents.problem(SBOM_INVALID, f"{where}: name or version longer than {MAX_FIELD}")
        return
    contents.packages.append(package)


def package_of(parsed: ParsedPurl, text: str) -> Package | None:
    """The package a purl names, with its OSV ecosystem; None for a type OSV lacks."""
    version = parsed.version
    if parsed.kind in _LANGUAGE:
        ecosystem = _LANGUAGE[parsed.kind]
        return Package(ecosystem, _language_name(parsed), version, purl=text)
    kind = _OS_KINDS.get(parsed.kind)
    if kind is None or len(parsed.namespace) != 1:
        return None
    distro_id, _, distro_version = parsed.qualifiers.get("distro", "").partition("-")
    namespace = parsed.namespace[0].lower()
    release_id = distro_id.lower() or _NAMESPACE_IDS.get(namespace, namespace)
    ecosystem, _, _ = os_ecosystem(OsRelease("", release_id, distro_version), kind)
    if not distro_version:
        # No release stated: the vulnerability layer applies the image's.
        ecosystem = ecosystem.partition(":")[0]
    epoch = parsed.qualifiers.get("epoch", "")
    if kind == "rpm" and epoch.isdigit() and version:
        version = f"{epoch}:{version}"
    source, _, source_version = parsed.qualifiers.get("upstream", "").partition("@")
    return Package(
        ecosystem,
        parsed.name,
        version,
        purl=text,
        source_name=source if source != parsed.name else "",
        source_version=source_version,
        arch=parsed.qualifiers.get("arch", ""),
    )


def _language_name(parsed: ParsedPurl) -> str:
    namespace = "/".join(parsed.namespace)
    if parsed.kind == "pypi":
        return pypi_name(parsed.name)
    if parsed.kind == "maven":
        return f"{namespace}:{parsed.name}" if namespace else parsed.name
    return f"{namespace}/{parsed.name}" if namespace else parsed.name


def _type(value: Any) -> str:
    """``value``'s JSON type with its article, for messages."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )
