"""Step 5b of a pull: the vulnerability layer judges the image's merged inventory.

Only for a rule with a vulnerability gate (the plan then asked format for
each layer's inventory). The layers' inventories are merged here, in
manifest order, and the vulnerability layer matches the result against its
OSV database; it never sees a byte of a layer. Its verdict joins the
others; its failure (down, no database, a stale database) is an outage.
The merged inventory and the matches go into the report, so the decision
records what the image held and what it was judged against.

Signed SBOMs (verified by the signature layer under the rule's signers in
step 4) go along as a second source: the vulnerability layer matches what
they add to the scan, never less than the scan, and reports where they
disagree. The report keeps each SBOM's source and packages
(``vulnerabilities.sboms``), so a re-evaluation judges them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pullguard.gateway.pull.manifest import waivers
from pullguard.gateway.pull.one import Pull
from pullguard.gateway.steps import StepName
from pullguard.services.runtime.inventory import merge_layers
from pullguard.services.runtime.protoconv import (
    inventory_from_proto,
    os_release_to_proto,
    package_to_proto,
)
from pullguard.v1 import format_pb2, inventory_pb2, vulnerability_pb2

#: A package's fields in a report, and read back from one (both directions list them once).
_PACKAGE_FIELDS = ("ecosystem", "name", "version", "purl", "source_name", "source_version")
#: A signed SBOM's text fields in a report, and read back from one.
_SBOM_FIELDS = ("digest", "format", "predicate_type", "signer", "found_at")
#: Packages and matches kept in a report (the decision record stays bounded).
REPORT_PACKAGES = 20_000
REPORT_MATCHES = 500
#: Signed SBOMs kept in a report, and packages of each.
REPORT_SBOMS = 16
REPORT_SBOM_PACKAGES = 20_000


async def judge_vulnerabilities(
    pull: Pull,
    summary: format_pb2.ManifestSummary,
    inventories: Mapping[int, inventory_pb2.LayerInventory],
    sboms: Sequence[inventory_pb2.Sbom] = (),
) -> None:
    """Ask the vulnerability layer about the image; a refusal raises StepRefused.

    An index holds no packages of its own: each platform's image is judged
    when it is pulled, as its layers are inspected then."""
    if not pull.plan.rule.vulnerabilities.enabled or summary.kind != format_pb2.IMAGE_MANIFEST:
        return
    merged = merge_layers([inventory_from_proto(inventories[i]) for i in sorted(inventories)])
    incomplete = list(merged.incomplete)
    if len(inventories) != len(summary.layers):
        # A layer format did not report on: what it holds is unknown.
        incomplete.append("inventory.layer_not_inspected")
    packages = [package_to_proto(p) for p in merged.packages]
    request = vulnerability_pb2.CheckInventoryRequest(
        plan=pull.plan,
        packages=packages,
        incomplete=incomplete,
        reevaluation=pull.report.reevaluation is not None,
        sboms=sboms,
    )
    if merged.os_release is not None:
        request.os_release.CopyFrom(os_release_to_proto(merged.os_release))
    pull.report.inventory = [_package(p) for p in packages[:REPORT_PACKAGES]]
    checked = await pull.call("vulnerability", "CheckInventory", request)
    response: vulnerability_pb2.CheckInventoryResponse = checked.response
    pull.report.vulnerabilities = {
        "database": response.database.version,
        "matches": [_match(m) for m in response.matches[:REPORT_MATCHES]],
    }
    if sboms:
        pull.report.vulnerabilities["sboms"] = [_sbom(s) for s in sboms[:REPORT_SBOMS]]
    pull.require("vulnerability", StepName.VULNERABILITIES, response.verdict, checked.ms)


async def rejudge_recorded(pull: Pull) -> None:
    """A re-evaluation judges the inventory recorded at admission against today's database.

    So a CVE published after admission refuses (revokes, or warns under
    ``on_new: warn``) without fetching the image again; an image that still
    passes goes on to the usual re-evaluation. Nothing to re-judge when the
    rule has no gate or the admission recorded no inventory (admitted before
    the gate: its policy version differs, so it is verified in full anyway).
    """
    options = pull.report.reevaluation
    if options is None or not pull.plan.rule.vulnerabilities.enabled or not pull.plan.ref.digest:
        return
    previous = pull.decisions.decision_report(options.previous_decision)
    recorded = (previous or {}).get("inventory")
    if not isinstance(recorded, list) or not recorded:
        return
    packages = [_package_from_record(entry) for entry in recorded[:REPORT_PACKAGES]]
    recorded_sboms = ((previous or {}).get("vulnerabilities") or {}).get("sboms")
    sboms = [_sbom_from_record(entry) for entry in _records(recorded_sboms)[:REPORT_SBOMS]]
    request = vulnerability_pb2.CheckInventoryRequest(
        plan=pull.plan, packages=packages, reevaluation=True, sboms=sboms
    )
    checked = await pull.call("vulnerability", "CheckInventory", request)
    response: vulnerability_pb2.CheckInventoryResponse = checked.response
    pull.report.digest = pull.plan.ref.digest
    # An operator's release of this digest's advisories still holds.
    pull.report.waivers = waivers(pull, pull.plan.ref.digest)
    pull.report.inventory = list(recorded[:REPORT_PACKAGES])
    pull.report.vulnerabilities = {
        "database": response.database.version,
        "matches": [_match(m) for m in response.matches[:REPORT_MATCHES]],
        "rejudged": options.previous_decision,
    }
    if sboms:
        pull.report.vulnerabilities["sboms"] = [_sbom(s) for s in sboms]
    pull.require("vulnerability", StepName.VULNERABILITIES, response.verdict, checked.ms)


def _package_from_record(entry: Any) -> inventory_pb2.Package:
    """A package as a report recorded it (:func:`_package`); what is not a string is left empty."""
    return inventory_pb2.Package(**_strings(entry, _PACKAGE_FIELDS))


def _strings(entry: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The ``fields`` of a recorded ``entry`` that are strings (a record may be damaged)."""
    data = entry if isinstance(entry, dict) else {}
    return {name: data[name] for name in fields if isinstance(data.get(name), str)}


def _records(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _sbom(sbom: inventory_pb2.Sbom) -> dict[str, Any]:
    return {
        **{name: getattr(sbom, name) for name in _SBOM_FIELDS},
        "skipped": sbom.skipped,
        "incomplete": list(sbom.incomplete),
        "packages": [_package(p) for p in sbom.packages[:REPORT_SBOM_PACKAGES]],
    }


def _sbom_from_record(entry: Any) -> inventory_pb2.Sbom:
    """A signed SBOM as an admission recorded it (verified then); odd fields left empty."""
    data = entry if isinstance(entry, dict) else {}
    sbom = inventory_pb2.Sbom(**_strings(data, _SBOM_FIELDS))
    sbom.packages.extend(
        _package_from_record(p) for p in _records(data.get("packages"))[:REPORT_SBOM_PACKAGES]
    )
    return sbom


def _package(package: inventory_pb2.Package) -> dict[str, Any]:
    return {name: getattr(package, name) for name in _PACKAGE_FIELDS}


def _match(match: vulnerability_pb2.VulnerabilityMatch) -> dict[str, Any]:
    return {
        "package": match.package,
        "ecosystem": match.ecosystem,
        "installed_version": match.installed_version,
        "id": match.id,
        "aliases": list(match.aliases),
        "fixed_version": match.fixed_version,
        "cvss": match.cvss_score,
        "outcome": match.outcome,
        "reason": match.reason,
        "origin": match.origin,
    }
