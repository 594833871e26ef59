"""Translation between transport-free domain values and protobuf messages."""

from __future__ import annotations

from pullguard.services.runtime.descriptors import Descriptor
from pullguard.services.runtime.findings import Finding, Severity, Verdict
from pullguard.v1 import common_pb2

_SEVERITY_TO_PROTO = {
    Severity.INFO: common_pb2.INFO,
    Severity.WARNING: common_pb2.WARNING,
    Severity.ERROR: common_pb2.ERROR,
}


def finding_to_proto(finding: Finding) -> common_pb2.Finding:
    return common_pb2.Finding(
        code=finding.code,
        severity=_SEVERITY_TO_PROTO[finding.severity],
        message=finding.message,
        evidence=dict(finding.evidence),
    )


def verdict_to_proto(verdict: Verdict) -> common_pb2.Verdict:
    return common_pb2.Verdict(
        decision=common_pb2.ALLOW if verdict.allowed else common_pb2.DENY,
        layer=verdict.layer,
        findings=[finding_to_proto(f) for f in verdict.findings],
    )


def finding_from_proto(message: common_pb2.Finding) -> Finding:
    try:
        severity = Severity(message.severity)
    except ValueError:
        # An unknown severity is treated as the strictest one.
        severity = Severity.ERROR
    return Finding(message.code, severity, message.message, dict(message.evidence))


def verdict_allows(message: common_pb2.Verdict) -> bool:
    """True only for an explicit ALLOW with no denying finding; unset is DENY."""
    if message.decision != common_pb2.ALLOW:
        return False
    return not any(
        f.severity in (common_pb2.ERROR, common_pb2.SEVERITY_UNSPECIFIED) for f in message.findings
    )


def descriptor_from_proto(message: common_pb2.Descriptor) -> Descriptor:
    """Protobuf descriptor to the domain value (its fields stay claims)."""
    return Descriptor(
        media_type=message.media_type,
        digest=message.digest,
        size=message.size,
        urls=tuple(message.urls),
        annotations=dict(message.annotations),
        artifact_type=message.artifact_type,
        platform=message.platform,
    )


def descriptor_to_proto(descriptor: Descriptor) -> common_pb2.Descriptor:
    return common_pb2.Descriptor(
        media_type=descriptor.media_type,
        digest=descriptor.digest,
        size=descriptor.size,
        urls=list(descriptor.urls),
        annotations=dict(descriptor.annotations),
        artifact_type=descriptor.artifact_type,
        platform=descriptor.platform,
    )
