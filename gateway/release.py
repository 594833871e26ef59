"""Releasing a quarantined image: an operator waives the findings they reviewed.

A release never admits the quarantined bytes as they lie. It runs every
layer again on the exact manifest digest that was denied, with the denial's
findings waived for that repository and digest, and admits only if nothing
else refuses. The image is fetched and hashed again, so a release cannot
admit content that fails integrity, and a finding that was not reviewed
(a new signature problem, a changed upstream) still denies.

Only policy findings can be waived: a missing or untrusted signature, an
unapproved source, a setuid file. Evidence of tampering or of an attack on
the puller (a digest mismatch, a forged signature, a path-traversal entry, a
downgraded redirect) and layer failures are never waivable; for those the
answer is to change the policy or the upstream, not to release.

Waivers are recorded per (repository, digest, code) with the operator's
reason, and keep applying to that digest when the policy changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from pullguard.gateway.steps import StepName
from pullguard.services.runtime.errors import InvalidRequest, PullguardError
from pullguard.services.runtime.findings import blocks

MAX_REASON = 1000

#: The steps whose findings a release may waive, and the codes it may waive
#: there. Steps not listed (analysis, fetcher, hashverify, format's manifest
#: step) are never waivable: the pipeline cannot go on safely without them.
WAIVABLE: Mapping[tuple[str, str], frozenset[str]] = {
    ("signature", StepName.SIGNATURES): frozenset(
        {
            "signature.missing",
            "signature.threshold_not_met",
            "signature.untrusted_key",
            "signature.untrusted_certificate",
            "signature.certificate_expired",
            "signature.wrong_identity",
            "signature.wrong_repository",
            "signature.tlog_missing",
        }
    ),
    ("source", StepName.SOURCE): frozenset(
        {
            "source.foreign_layer",
            "source.unapproved_source",
            "source.provenance_missing",
            "source.provenance_builder_mismatch",
            "source.provenance_source_mismatch",
            "source.redirect_host_not_allowed",
            "source.unexpected_host",
        }
    ),
    ("source", StepName.BLOB_SOURCE): frozenset(
        {"source.redirect_host_not_allowed", "source.unexpected_host"}
    ),
    ("format", StepName.LAYERS): frozenset(
        {
            "format.setuid",
            "format.device_node",
            "format.fifo",
            "format.file_capability",
            "format.world_writable_dir",
            "format.unusual_owner",
        }
    ),
    # A known advisory is policy, not tampering: an operator may accept it
    # for one digest (a standing acceptance is an allowlist entry instead).
    ("vulnerability", StepName.VULNERABILITIES): frozenset({"vulnerability.advisory"}),
}


class ReleaseRefused(PullguardError):
    """The quarantine entry cannot be released; the message says why."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    oci_code = "DENIED"
    http_status = 409


def blocking(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if blocks(str(f.get("severity")))]


def waives(layer: str, step: str, findings: list[dict[str, Any]], waivers: frozenset[str]) -> bool:
    """Whether ``waivers`` cover every blocking finding of a refusing step."""
    allowed = WAIVABLE.get((layer, step), frozenset())
    codes = {f.get("code", "") for f in blocking(findings)}
    return bool(codes) and codes <= (waivers & allowed)


@dataclass(frozen=True)
class ReleasePlan:
    """What a release will run: the exact image, and the codes it waives."""

    quarantine_id: str
    client_name: str
    repository: str
    digest: str
    waivers: frozenset[str]


@dataclass(frozen=True)
class ReleaseOptions:
    """A release's run: the quarantine entry, the waived codes, and who released it and why."""

    quarantine_id: str
    digest: str
    waivers: frozenset[str]
    reason: str
    operator: str

    def as_json(self) -> dict[str, Any]:
        return {
            "quarantine_id": self.quarantine_id,
            "digest": self.digest,
            "waivers": sorted(self.waivers),
            "reason": self.reason,
            "operator": self.operator,
        }


@dataclass(frozen=True)
class ReevaluationOptions:
    """A re-evaluation's run: the admission it re-verifies, and whether a current one is too."""

    previous_decision: str
    previous_policy: str
    force: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "previous_decision": self.previous_decision,
            "previous_policy": self.previous_policy,
            "force": self.force,
        }


def plan_release(quarantine_id: str, report: Mapping[str, Any]) -> ReleasePlan:
    """Check that a quarantined decision's refusal is waivable; raise ReleaseRefused."""
    digest = str(report.get("digest") or "")
    repository = str(report.get("repository") or "")
    client_name = str(report.get("client_name") or "")
    if report.get("decision") != "DENY":
        raise ReleaseRefused(f"decision {quarantine_id} was not a denial")
    if not digest or not repository or not client_name:
        raise ReleaseRefused(
            f"decision {quarantine_id} was refused before its manifest was verified:"
            " there is no digest to release; pull it again"
        )
    codes: set[str] = set()
    for step in report.get("layers") or []:
        if step.get("decision") == "ALLOW":
            continue
        where = f"{step.get('layer')} {step.get('step')}"
        if step.get("error"):
            raise ReleaseRefused(
                f"{where} failed ({step['error']}): a failure is not a finding and cannot be"
                " waived; pull it again"
            )
        findings = blocking(list(step.get("findings") or []))
        if not findings:
            raise ReleaseRefused(f"{where} refused without a finding; nothing to waive")
        allowed = WAIVABLE.get((str(step.get("layer")), str(step.get("step"))), frozenset())
        for finding in findings:
            code = str(finding.get("code"))
            if code not in allowed:
                raise ReleaseRefused(
                    f"{where}: {code} cannot be waived (only policy findings can be;"
                    " integrity and attack findings never are)"
                )
            codes.add(code)
    if not codes:
        raise ReleaseRefused(f"decision {quarantine_id} has no refusing finding to waive")
    return ReleasePlan(quarantine_id, client_name, repository, digest, frozenset(codes))


def check_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise InvalidRequest("a release needs --reason: say why the findings are acceptable")
    if len(text) > MAX_REASON:
        raise InvalidRequest(f"--reason is {len(text)} characters; at most {MAX_REASON}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidRequest("--reason holds a control character")
    return text
