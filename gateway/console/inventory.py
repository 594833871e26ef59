"""What a decision's report says the image held, for the console's pages and the API.

A report under a vulnerability gate carries the merged package inventory
(up to 20,000 packages), each layer's own inventory in ``layer_stats``, and
the advisories the vulnerability layer matched (up to 500). This module
reads them back for people: the distribution (os-release), the packages a
page at a time (keyset by name, so a page costs the same wherever it is,
with an optional filter), which layer put each package there, and each
match with its verdict. Pages and the JSON API call the same functions, so
they show the same thing.

Every string here came from an image: it is data to show (escaped by the
templates), never markup, a path or a query.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from pullguard.gateway.decisions.browse import decode_cursor, encode_cursor
from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.inventory import (
    LayerInventory,
    OsRelease,
    PackageSource,
    merge_layers,
)

#: Packages the decision page lists before it links to the rest.
PREVIEW = 50
#: Longest package filter (a substring of the name or purl).
MAX_FILTER = 100
#: The fields of a package shown and returned, in order.
PACKAGE_FIELDS = ("name", "version", "ecosystem", "purl", "source_name", "source_version")
SortKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class PackagePage:
    """One page of a decision's packages, in name order."""

    #: Packages in the report (after the filter, if one was given).
    total: int
    packages: list[dict[str, Any]]
    next_cursor: str
    filter: str = ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _layer_inventories(report: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Each inspected layer's inventory as format reported it, with its position."""
    found = []
    for position, stats in enumerate(report.get("layer_stats") or []):
        inventory = stats.get("inventory") if isinstance(stats, dict) else None
        if isinstance(inventory, dict):
            index = inventory.get("index")
            found.append((index if isinstance(index, int) else position, inventory))
    return found


def _os_release(data: object) -> OsRelease | None:
    if not isinstance(data, dict):
        return None
    return OsRelease(
        path=_text(data.get("path")),
        id=_text(data.get("id")),
        version_id=_text(data.get("version_id")),
        pretty_name=_text(data.get("pretty_name")),
    )


def _skeleton(index: int, inventory: dict[str, Any]) -> LayerInventory:
    """A layer's inventory without its packages: enough to merge paths and os-release."""
    sources = [
        PackageSource(path=_text(s.get("path")), kind=_text(s.get("kind")))
        for s in inventory.get("sources") or []
        if isinstance(s, dict)
    ]
    removed = [r for r in inventory.get("removed") or [] if isinstance(r, str)]
    return LayerInventory(index, sources, removed, _os_release(inventory.get("os_release")))


def _package_key(ecosystem: str, name: str, version: str) -> tuple[str, str, str]:
    # The merged inventory applies the release ("Debian" -> "Debian:12").
    return ecosystem.split(":", 1)[0], name, version


def image_os(report: dict[str, Any]) -> dict[str, str] | None:
    """The distribution the image's layers add up to (as the gate merged them), or None."""
    layers = [_skeleton(i, inv) for i, inv in _layer_inventories(report)]
    merged = merge_layers(layers).os_release
    if merged is None:
        return None
    return {
        "id": merged.id,
        "version_id": merged.version_id,
        "pretty_name": merged.pretty_name,
        "path": merged.path,
    }


def package_layers(
    report: dict[str, Any], wanted: set[tuple[str, str, str]] | None = None
) -> dict[tuple[str, str, str], int]:
    """(ecosystem, name, version) -> the layer whose database file lists it in the image
    (only the ``wanted`` keys, when given).

    That is the last layer holding the surviving file at that path (a later
    layer's file replaces an earlier one's); whiteouts are applied the same
    way the gate applied them (:func:`merge_layers`).
    """
    layers = _layer_inventories(report)
    surviving = {s.path for s in merge_layers([_skeleton(i, inv) for i, inv in layers]).sources}
    holder: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, inventory in sorted(layers, key=lambda item: item[0]):
        for source in inventory.get("sources") or []:
            if isinstance(source, dict) and _text(source.get("path")) in surviving:
                holder[_text(source.get("path"))] = (index, source)
    found: dict[tuple[str, str, str], int] = {}
    for index, source in holder.values():
        for package in source.get("packages") or []:
            if isinstance(package, dict):
                key = _package_key(
                    _text(package.get("ecosystem")),
                    _text(package.get("name")),
                    _text(package.get("version")),
                )
                if wanted is None or key in wanted:
                    found[key] = index
    return found


def _package(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: _text(entry.get(name)) for name in PACKAGE_FIELDS}


def _sort_key(entry: dict[str, Any]) -> SortKey:
    return (
        _text(entry.get("name")),
        _text(entry.get("version")),
        _text(entry.get("ecosystem")),
        _text(entry.get("purl")),
    )


def package_filter(text: str | None) -> str:
    if text is None:
        return ""
    if len(text) > MAX_FILTER:
        raise InvalidRequest(f"the package filter is {len(text)} characters; at most {MAX_FILTER}")
    return text.strip()


def packages_page(report: dict[str, Any], wanted: str, cursor: str, limit: int) -> PackagePage:
    """The packages after ``cursor`` (name order), ``limit`` of them, matching ``wanted``.

    ``wanted`` is a case-insensitive substring of the name or the purl.
    The cursor is the last row's sort key: a page is found by bisection, so
    the thousandth page costs what the first does. Only the page's rows are
    built (a report holds up to 20,000 packages).
    """
    needle = wanted.lower()
    rows = [
        (_sort_key(entry), entry)
        for entry in report.get("inventory") or []
        if isinstance(entry, dict)
    ]
    if needle:
        rows = [(k, e) for k, e in rows if needle in k[0].lower() or needle in k[3].lower()]
    rows.sort(key=lambda row: row[0])
    start = 0
    if cursor:
        after = tuple(decode_cursor(cursor, 4))
        start = bisect.bisect_right(rows, after, key=lambda row: row[0])
    chosen = rows[start : start + limit]
    packages = [_package(entry) for _, entry in chosen]
    keys = {_package_key(p["ecosystem"], p["name"], p["version"]) for p in packages}
    layers = package_layers(report, keys)
    for package in packages:
        package["layer"] = layers.get(
            _package_key(package["ecosystem"], package["name"], package["version"])
        )
    more = start + limit < len(rows)
    next_cursor = encode_cursor(chosen[-1][0]) if more and chosen else ""
    return PackagePage(len(rows), packages, next_cursor, wanted)


def severity(score: object) -> str:
    """CVSS's qualitative rating of a base score (the same scale in v3.1 and v4.0)."""
    if not isinstance(score, int | float) or isinstance(score, bool) or score < 0:
        return "unknown"
    if score == 0:
        return "none"
    if score < 4:
        return "low"
    if score < 7:
        return "medium"
    return "high" if score < 9 else "critical"


#: A match's outcome (the vulnerability layer's word) as the console says it.
VERDICTS = {"deny": "denied", "allowed": "waived", "report": "reported"}


def _advisory_findings(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The vulnerability layer's findings by (advisory id, package, installed version)."""
    found = {}
    for step in report.get("layers") or []:
        if not isinstance(step, dict) or step.get("layer") != "vulnerability":
            continue
        for finding in step.get("findings") or []:
            evidence = finding.get("evidence") if isinstance(finding, dict) else None
            if isinstance(evidence, dict) and evidence.get("id"):
                key = (
                    _text(evidence.get("id")),
                    _text(evidence.get("package")),
                    _text(evidence.get("installed_version")),
                )
                found[key] = finding
    return found


def _match(
    entry: dict[str, Any], findings: dict[tuple[str, str, str], dict[str, Any]]
) -> dict[str, Any]:
    match: dict[str, Any] = {
        "package": _text(entry.get("package")),
        "ecosystem": _text(entry.get("ecosystem")),
        "installed_version": _text(entry.get("installed_version")),
        "id": _text(entry.get("id")),
        "aliases": [a for a in entry.get("aliases") or [] if isinstance(a, str)],
        "fixed_version": _text(entry.get("fixed_version")),
        "cvss": entry.get("cvss") if isinstance(entry.get("cvss"), int | float) else -1,
        "outcome": _text(entry.get("outcome")),
        "reason": _text(entry.get("reason")),
        # "scan", or "sbom sha256:..." for a package only a signed SBOM listed.
        "origin": _text(entry.get("origin")) or "scan",
    }
    match["severity"] = severity(match["cvss"])
    match["verdict"] = VERDICTS.get(match["outcome"], match["outcome"] or "unknown")
    finding = findings.get((match["id"], match["package"], match["installed_version"]), {})
    binary = _text(finding.get("evidence", {}).get("binary"))
    match["binary"] = binary if binary != match["package"] else ""
    if finding.get("waived"):
        match["verdict"] = "waived by release"
    return match


def vulnerabilities(report: dict[str, Any]) -> dict[str, Any]:
    """The matched advisories, denials first, then by CVSS score (highest first)."""
    data = report.get("vulnerabilities")
    if not isinstance(data, dict):
        return {"gated": False, "database": "", "matches": []}
    findings = _advisory_findings(report)
    matches = [_match(m, findings) for m in data.get("matches") or [] if isinstance(m, dict)]
    order = {"denied": 0, "waived by release": 1, "waived": 2}
    matches.sort(key=lambda m: (order.get(m["verdict"], 3), -m["cvss"], m["package"], m["id"]))
    return {
        "gated": True,
        "database": _text(data.get("database")),
        "rejudged": _text(data.get("rejudged")),
        "matches": matches,
        "sboms": [_sbom(s) for s in data.get("sboms") or [] if isinstance(s, dict)],
    }


def _sbom(entry: dict[str, Any]) -> dict[str, Any]:
    """A signed SBOM the gate used, without its package list (the scan's page lists packages)."""
    packages = entry.get("packages")
    return {
        "digest": _text(entry.get("digest")),
        "format": _text(entry.get("format")),
        "signer": _text(entry.get("signer")),
        "packages": len(packages) if isinstance(packages, list) else 0,
    }


def without_inventory(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its package lists replaced by their counts (the page's raw JSON)."""
    trimmed = dict(report)
    if isinstance(report.get("inventory"), list):
        trimmed["inventory"] = f"{len(report['inventory'])} packages: see Packages"
    stats = report.get("layer_stats")
    if isinstance(stats, list):
        trimmed["layer_stats"] = [
            {**s, "inventory": "see Packages"} if isinstance(s, dict) and "inventory" in s else s
            for s in stats
        ]
    vulns = report.get("vulnerabilities")
    if isinstance(vulns, dict) and isinstance(vulns.get("sboms"), list):
        trimmed["vulnerabilities"] = {
            **vulns,
            "sboms": [
                {**s, "packages": f"{len(s['packages'])} packages"}
                if isinstance(s, dict) and isinstance(s.get("packages"), list)
                else s
                for s in vulns["sboms"]
            ],
        }
    return trimmed
