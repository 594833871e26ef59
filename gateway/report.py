"""A decision report under construction: each layer step's verdict, timing and error.

The report is plain JSON data: it goes to the decision database, the audit
log, quarantine's report.json, the CLI and the denial's ``detail``. This
module is the one place a report is converted: verdicts in (:meth:`Report.add`),
JSON out (:meth:`Report.as_json`), and the gateway proto out
(:func:`report_to_proto`, also for reports read back from the database).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from pullguard.gateway.auth.identity import current_user
from pullguard.gateway.release import ReevaluationOptions, ReleaseOptions, blocking, waives
from pullguard.services.runtime.findings import SEVERITY_NAMES, blocks, severity_number
from pullguard.services.runtime.protoconv import verdict_allows
from pullguard.v1 import common_pb2, gateway_pb2

_DECISIONS = {"ALLOW": common_pb2.ALLOW, "DENY": common_pb2.DENY}


def findings_to_json(verdict: common_pb2.Verdict) -> list[dict[str, Any]]:
    return [
        {
            "code": f.code,
            "severity": SEVERITY_NAMES.get(f.severity, "UNSPECIFIED"),
            "message": f.message,
            "evidence": dict(f.evidence),
        }
        for f in verdict.findings
    ]


def first_error(verdict: common_pb2.Verdict) -> str:
    for finding in verdict.findings:
        if blocks(finding.severity):
            return str(finding.message or finding.code)
    if verdict.decision != common_pb2.ALLOW:
        return "denied without a finding"
    return ""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Phase(enum.StrEnum):
    """The wall-clock phases of a pull, in the order they end (see :meth:`Report.mark`)."""

    #: Plan, fetch the manifest, and every manifest-level check (signatures, source).
    MANIFEST = "manifest"
    #: The fetcher staged every blob.
    FETCH = "fetch"
    #: hashverify, source and format judged the staged blobs.
    VERIFY = "verify"
    #: The verified blobs and manifest moved into the admitted store.
    ADMISSION = "admission"


@dataclass
class Step:
    layer: str
    step: str
    decision: str
    findings: list[dict[str, Any]]
    duration_ms: float
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "step": self.step,
            "decision": self.decision,
            "findings": self.findings,
            "duration_ms": round(self.duration_ms, 2),
            "error": self.error,
        }


@dataclass
class Report:
    decision_id: str
    client_name: str
    reference: str
    time: str = field(default_factory=now)
    repository: str = ""
    digest: str = ""
    policy_version: str = ""
    steps: list[Step] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    #: Per-layer inspection figures from the format layer.
    layers: list[dict[str, Any]] = field(default_factory=list)
    decision: str = "DENY"
    denied_by: str = ""
    reason: str = ""
    transient: bool = False
    cached: bool = False
    admitted: bool = False
    media_type: str = ""
    #: Finding codes an operator's release waives for this repository and
    #: digest (see release.py); set once the manifest's digest is known.
    waivers: frozenset[str] = frozenset()
    #: The waived findings, each with its layer and step.
    waived: list[dict[str, Any]] = field(default_factory=list)
    #: Set on a release's decision: the quarantine entry, reason and operator.
    release: ReleaseOptions | None = None
    #: Set on a re-evaluation's decision: the admission it re-verifies, and
    #: whether an admission under the current policy is verified again too.
    reevaluation: ReevaluationOptions | None = None
    #: What publishing to a registry target did (empty for the embedded target).
    target: dict[str, Any] = field(default_factory=dict)
    #: Set when no verdict was reached: {"layer", "kind", "message"} (see set_outage).
    outage: dict[str, str] = field(default_factory=dict)
    #: Wall-clock ms of each :class:`Phase` that ended, each since the previous one
    #: ended; as_json adds ``total``, the ms from the pull's start to the report.
    timings: dict[str, float] = field(default_factory=dict)
    _started: float = field(default_factory=monotonic, init=False, repr=False, compare=False)
    _phase_started: float = field(default_factory=monotonic, init=False, repr=False, compare=False)
    #: The image's merged package inventory and the vulnerability layer's
    #: matches (only under a rule with a vulnerability gate).
    inventory: list[dict[str, Any]] = field(default_factory=list)
    vulnerabilities: dict[str, Any] = field(default_factory=dict)
    #: The front-door login (auth.htpasswd) whose request started this pull.
    user: str = field(default_factory=current_user)

    def add(self, layer: str, step: str, verdict: common_pb2.Verdict, duration_ms: float) -> bool:
        """Record a verdict; return whether it allows. The first refusal names the layer.

        A refusal whose every blocking finding an operator waived for this
        digest allows, and the findings stay in the report, marked waived.
        """
        allowed = verdict_allows(verdict)
        findings = findings_to_json(verdict)
        if not allowed and self.waivers and waives(layer, step, findings, self.waivers):
            for finding in blocking(findings):
                finding["waived"] = True
                self.waived.append({"layer": layer, "step": step, **finding})
            allowed = True
        decision = "ALLOW" if allowed else "DENY"
        self.steps.append(Step(layer, str(step), decision, findings, duration_ms))
        if not allowed and not self.denied_by:
            self.denied_by = layer
            self.reason = first_error(verdict)
        return allowed

    def add_error(self, layer: str, step: str, message: str, duration_ms: float) -> None:
        self.steps.append(Step(layer, str(step), "ERROR", [], duration_ms, message))
        if not self.denied_by:
            self.denied_by = layer
            self.reason = message

    def mark(self, phase: Phase) -> None:
        """End ``phase`` now; the next phase starts now."""
        ended = monotonic()
        self.timings[str(phase)] = round((ended - self._phase_started) * 1000, 2)
        self._phase_started = ended

    def set_outage(self, layer: str, kind: str, message: str) -> None:
        """Mark this pull as an outage: no verdict, nothing admitted, retry later."""
        self.decision = "OUTAGE"
        self.transient = True
        self.admitted = False
        self.cached = False
        self.denied_by = ""
        self.reason = message
        self.outage = {"layer": layer, "kind": kind, "message": message}

    @property
    def outcome(self) -> str:
        """ "allowed", "denied" or "outage" (no verdict reached)."""
        if self.outage:
            return "outage"
        return "allowed" if self.decision == "ALLOW" else "denied"

    def denial_findings(self) -> list[dict[str, Any]]:
        for step in self.steps:
            if step.layer == self.denied_by and step.decision != "ALLOW":
                if step.error:
                    return [
                        {
                            "code": f"{step.layer}.unavailable",
                            "severity": "ERROR",
                            "message": step.error,
                            "evidence": {},
                        }
                    ]
                return blocking(step.findings)
        return []

    @property
    def reference_text(self) -> str:
        separator = "@" if ":" in self.reference and self.reference.startswith("sha") else ":"
        return f"{self.client_name}{separator}{self.reference}"

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "time": self.time,
            "reference": self.reference_text,
            "client_name": self.client_name,
            "repository": self.repository,
            "digest": self.digest,
            "media_type": self.media_type,
            "decision": self.decision,
            "outcome": self.outcome,
            "denied_by": self.denied_by,
            "reason": self.reason,
            "policy_version": self.policy_version,
            "transient": self.transient,
            "cached": self.cached,
            "admitted": self.admitted,
            "layers": [s.as_json() for s in self.steps],
            "signatures": self.signatures,
            "layer_stats": self.layers,
            "provenance": self.provenance,
            "waived": self.waived,
            **({"release": self.release.as_json()} if self.release is not None else {}),
            **(
                {"reevaluation": self.reevaluation.as_json()}
                if self.reevaluation is not None
                else {}
            ),
            "target": self.target,
            "timings": {
                **self.timings,
                "total": round((monotonic() - self._started) * 1000, 2),
            },
            **({"outage": self.outage} if self.outage else {}),
            **({"inventory": self.inventory} if self.inventory else {}),
            **({"vulnerabilities": self.vulnerabilities} if self.vulnerabilities else {}),
            **({"user": self.user} if self.user else {}),
        }

    def as_proto(self) -> gateway_pb2.DecisionReport:
        return report_to_proto(self.as_json())


def report_to_proto(report: dict[str, Any]) -> gateway_pb2.DecisionReport:
    """A report's JSON (fresh or read back from the database) as the gateway proto."""
    layers = []
    for step in report.get("layers", []):
        findings = [
            common_pb2.Finding(
                code=f["code"],
                severity=common_pb2.Severity.ValueType(severity_number(f["severity"])),
                message=f["message"],
                evidence=f["evidence"],
            )
            for f in step["findings"]
        ]
        layers.append(
            gateway_pb2.LayerResult(
                layer=step["layer"],
                verdict=common_pb2.Verdict(
                    decision=_DECISIONS.get(step["decision"], common_pb2.DENY),
                    layer=step["layer"],
                    findings=findings,
                ),
                duration_ms=step["duration_ms"],
                error=step["error"],
            )
        )
    outage = report.get("outage") or {}
    return gateway_pb2.DecisionReport(
        decision_id=str(report["decision_id"]),
        reference=str(report["reference"]),
        digest=str(report.get("digest", "")),
        decision=_DECISIONS.get(str(report["decision"]), common_pb2.DECISION_UNSPECIFIED),
        layers=layers,
        policy_version=str(report["policy_version"]),
        denied_by=str(report.get("denied_by", "")),
        reason=str(report.get("reason", "")),
        admitted=bool(report.get("admitted")),
        transient=bool(report.get("transient")),
        time=str(report["time"]),
        report_json=json.dumps(report, sort_keys=True),
        outcome=str(report.get("outcome", "")),
        outage_layer=str(outage.get("layer", "")),
        outage_kind=str(outage.get("kind", "")),
    )
