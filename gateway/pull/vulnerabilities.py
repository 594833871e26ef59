"""Step 5b of a pull: the vulnerability layer judges the image's merged inventory.

Only for a rule with a vulnerability gate (the plan then asked format for
each layer's inventory). The layers' inventories are merged here, in
manifest order, and the vulnerability layer matches the result against its
OSV database; it never sees a byte of a layer. Its verdict joins the
others; its failure (down, no database, a stale database) is an outage.
The merged inventory and the matches go into the report, so the decision
records what the image held and what it was judged against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pullguard.gateway.pull.one import Pull
from pullguard.gateway.steps import StepName
from pullguard.services.runtime.inventory import merge_layers
from pullguard.v1 import format_pb2, inventory_pb2, vulnerability_pb2

#: Packages and matches kept in a report (the decision record stays bounded).
REPORT_PACKAGES = 5000
REPORT_MATCHES = 500


async def judge_vulnerabilities(
    pull: Pull,
    summary: format_pb2.ManifestSummary,
    inventories: Mapping[int, inventory_pb2.LayerInventory],
) -> None:
    """Ask the vulnerability layer about the image; a refusal raises StepRefused.

    An index holds no packages of its own: each platform's image is judged
    when it is pulled, as its layers are inspected then."""
    if not pull.plan.rule.vulnerabilities.enabled or summary.kind != format_pb2.IMAGE_MANIFEST:
        return
    merged = merge_layers([inventories[i] for i in sorted(inventories)])
    if len(inventories) != len(summary.layers):
        # A layer format did not report on: what it holds is unknown.
        merged.incomplete.append("inventory.layer_not_inspected")
    request = vulnerability_pb2.CheckInventoryRequest(
        plan=pull.plan,
        packages=merged.packages,
        incomplete=merged.incomplete,
        reevaluation=pull.report.reevaluation is not None,
    )
    if merged.os_release is not None:
        request.os_release.CopyFrom(merged.os_release)
    pull.report.inventory = [_package(p) for p in merged.packages[:REPORT_PACKAGES]]
    checked = await pull.call("vulnerability", "CheckInventory", request)
    response: vulnerability_pb2.CheckInventoryResponse = checked.response
    pull.report.vulnerabilities = {
        "database": response.database.version,
        "matches": [_match(m) for m in response.matches[:REPORT_MATCHES]],
    }
    pull.require("vulnerability", StepName.VULNERABILITIES, response.verdict, checked.ms)


def _package(package: inventory_pb2.Package) -> dict[str, Any]:
    return {
        "ecosystem": package.ecosystem,
        "name": package.name,
        "version": package.version,
        "purl": package.purl,
        "source_name": package.source_name,
        "source_version": package.source_version,
    }


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
    }
