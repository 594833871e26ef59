"""Translation between transport-free domain values and protobuf messages.

The one place where a policy rule (:class:`~pullguard.services.runtime.config.Rule`)
becomes a ``RulePolicy`` and where layers read parts of it back, with every
enum table (severity, signature mode, rekor). An unknown value never travels
as ``*_UNSPECIFIED``, ``NONE`` or ``OPTIONAL``, and an unknown value received
is refused, never guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

from pullguard.services.runtime.config.notation import NotationRule
from pullguard.services.runtime.config.policy import (
    KeylessIdentity,
    LayerRule,
    ProvenanceRule,
    Rule,
    SignatureMode,
    SignatureRule,
    TagRule,
)
from pullguard.services.runtime.config.settings import Limits
from pullguard.services.runtime.config.vulnerabilities import Allowance, VulnerabilityRule
from pullguard.services.runtime.descriptors import Descriptor
from pullguard.services.runtime.errors import InvalidRequest, PullguardError
from pullguard.services.runtime.findings import Finding, Severity, Verdict
from pullguard.services.runtime.inventory import (
    LayerInventory,
    OsRelease,
    Package,
    PackageSource,
)
from pullguard.v1 import common_pb2, inventory_pb2

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


# -- policy rules -----------------------------------------------------------------------

_SIGNATURE_MODES = {
    SignatureMode.NONE: common_pb2.SignaturePolicy.NONE,
    SignatureMode.ENFORCE: common_pb2.SignaturePolicy.ENFORCE,
    SignatureMode.WARN: common_pb2.SignaturePolicy.WARN,
}
_SIGNATURE_MODES_FROM_PROTO = {number: mode for mode, number in _SIGNATURE_MODES.items()}
_REKOR = {
    "required": common_pb2.SignaturePolicy.REQUIRED,
    "optional": common_pb2.SignaturePolicy.OPTIONAL,
}
_REKOR_REQUIRED_FROM_PROTO = {number: word == "required" for word, number in _REKOR.items()}
_Word = TypeVar("_Word", bound=str)
_Enum = TypeVar("_Enum")
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _bounded(value: int, maximum: int) -> int:
    """A configured limit in the proto's range. A larger limit is cut to the
    largest the field holds, which is stricter, never looser."""
    return min(value, maximum)


def _known(table: Mapping[_Word, _Enum], value: _Word, what: str) -> _Enum:
    number = table.get(value)
    if number is None:
        # An unknown value must never travel as *_UNSPECIFIED, NONE or OPTIONAL.
        raise PullguardError(f"unknown {what} {value!r}")
    return number


def signature_to_proto(
    rule: SignatureRule, max_signatures: int, max_signature_bytes: int, where: str
) -> common_pb2.SignaturePolicy:
    """A rule's (or provenance signers') signature requirements, with the limits."""
    return common_pb2.SignaturePolicy(
        mode=_known(_SIGNATURE_MODES, rule.mode, f"{where} signature mode"),
        keys=[common_pb2.PublicKey(name=name, pem=pem) for name, pem in rule.keys],
        threshold=_bounded(rule.threshold, _INT32_MAX),
        keyless=[_keyless_to_proto(identity) for identity in rule.keyless],
        trusted_root_json=rule.trusted_root,
        rekor=_known(_REKOR, rule.rekor, f"{where} rekor setting"),
        signature_repository=rule.repository,
        signed_identity=rule.identity,
        max_signatures=_bounded(max_signatures, _INT32_MAX),
        max_signature_bytes=_bounded(max_signature_bytes, _INT64_MAX),
        notation=_notation_to_proto(rule.notation),
    )


def _notation_to_proto(rule: NotationRule | None) -> common_pb2.NotationPolicy | None:
    if rule is None:
        return None
    return common_pb2.NotationPolicy(
        trust_stores=[
            common_pb2.NotationTrustStore(
                type=store.type, name=store.name, certificates=list(store.certificates)
            )
            for store in rule.trust_stores
        ],
        trusted_identities=list(rule.trusted_identities),
        level=rule.level,
        overrides=dict(rule.overrides),
    )


def _keyless_to_proto(identity: KeylessIdentity) -> common_pb2.KeylessIdentity:
    return common_pb2.KeylessIdentity(
        issuer=identity.issuer, subject=identity.subject, subject_regex=identity.subject_regex
    )


def _tags_to_proto(tags: TagRule) -> common_pb2.TagPolicy:
    return common_pb2.TagPolicy(
        deny=list(tags.deny),
        allow=list(tags.allow),
        require_digest=tags.require_digest,
        digest_pulls=tags.digest_pulls,
    )


def _layers_to_proto(layers: LayerRule, inventory: bool = False) -> common_pb2.LayerPolicy:
    return common_pb2.LayerPolicy(
        inspect=layers.inspect,
        setuid=layers.setuid,
        devices=layers.devices,
        max_uncompressed_bytes=_bounded(layers.max_uncompressed_bytes, _INT64_MAX),
        max_entries=_bounded(layers.max_entries, _INT64_MAX),
        max_ratio=_bounded(layers.max_ratio, _INT64_MAX),
        inventory=layers.inventory or inventory,
    )


def _provenance_to_proto(
    provenance: ProvenanceRule, max_signatures: int, max_signature_bytes: int, where: str
) -> common_pb2.ProvenancePolicy:
    return common_pb2.ProvenancePolicy(
        required=provenance.required,
        builder_ids=list(provenance.builder_ids),
        source_repositories=list(provenance.source_repositories),
        signers=signature_to_proto(
            provenance.signers, max_signatures, max_signature_bytes, f"{where} provenance"
        ),
    )


def rule_to_proto(
    rule: Rule, max_signatures: int, max_signature_bytes: int
) -> common_pb2.RulePolicy:
    """The wire form of the rule a plan applies, with the signature limits it carries.

    Raises :class:`PullguardError` for a mode or rekor setting outside the tables."""
    where = f"rule {rule.index}"
    return common_pb2.RulePolicy(
        index=rule.index,
        match=rule.match,
        signature=signature_to_proto(rule.signature, max_signatures, max_signature_bytes, where),
        pinned_digest=rule.pinned_digest,
        foreign_url_hosts=list(rule.foreign_url_hosts),
        layer_media_types=list(rule.layer_media_types),
        tags=_tags_to_proto(rule.tags),
        # Format reads the package databases only for a rule that judges them.
        layers=_layers_to_proto(rule.layers, inventory=rule.vulnerabilities.enabled),
        approved_sources=list(rule.approved_sources),
        require_source_annotation=rule.require_source_annotation,
        provenance=_provenance_to_proto(
            rule.provenance, max_signatures, max_signature_bytes, where
        ),
        artifact_types=list(rule.artifact_types),
        vulnerabilities=vulnerabilities_to_proto(rule.vulnerabilities),
    )


def vulnerabilities_to_proto(rule: VulnerabilityRule) -> common_pb2.VulnerabilityPolicy:
    return common_pb2.VulnerabilityPolicy(
        enabled=rule.enabled,
        cvss_min=rule.cvss_min,
        ids=list(rule.ids),
        fixed_only=rule.fixed_only,
        max_age_seconds=rule.max_age_seconds,
        allow=[
            common_pb2.VulnerabilityAllowance(
                id=a.id, repository=a.repository, until=a.until, reason=a.reason
            )
            for a in rule.allow
        ],
        on_new=rule.on_new,
        allow_incomplete=not rule.deny_incomplete,
        ignore_sboms=not rule.use_sboms,
        sbom_disagreement=rule.sbom_disagreement,
    )


def signature_mode_from_proto(message: common_pb2.SignaturePolicy) -> SignatureMode:
    """The mode a plan's signature policy states; unset or unknown is refused."""
    mode = _SIGNATURE_MODES_FROM_PROTO.get(message.mode)
    if mode is None:
        # An unset or unknown mode must never pass as "nothing required".
        raise InvalidRequest(f"signature policy has no known mode (got {message.mode})")
    return mode


def signature_limits_from_proto(message: common_pb2.SignaturePolicy) -> tuple[int, int]:
    """(signatures, bytes of each) a plan allows: the plan is their only source.

    Analysis always sets both, 0 included; a plan built without them (by hand)
    gets the built-in defaults, never the receiving service's own settings."""
    defaults = Limits()
    signatures = message.max_signatures if message.HasField("max_signatures") else None
    size = message.max_signature_bytes if message.HasField("max_signature_bytes") else None
    return (
        defaults.signatures if signatures is None else signatures,
        defaults.signature_bytes if size is None else size,
    )


def rekor_required_from_proto(message: common_pb2.SignaturePolicy, where: str) -> bool:
    """Whether a transparency-log entry is required; unset or unknown is refused."""
    required = _REKOR_REQUIRED_FROM_PROTO.get(message.rekor)
    if required is None:
        raise InvalidRequest(f"{where}: signature policy has no known rekor setting")
    return required


def layer_rule_from_proto(message: common_pb2.LayerPolicy) -> LayerRule:
    """The plan's layer policy; all zero means the defaults (inspection on),
    a zero field that field's default. Unknown words are refused, not guessed."""
    defaults = LayerRule()
    if message == common_pb2.LayerPolicy(inventory=message.inventory):
        # The inventory is read during inspection: asking for it alone means
        # the defaults with it.
        return replace(defaults, inventory=message.inventory)
    words = {}
    for name in ("setuid", "devices"):
        value = getattr(message, name) or getattr(defaults, name)
        if value not in ("report", "deny"):
            raise InvalidRequest(
                f"plan.rule.layers.{name}: got {value[:40]!r}, expected report or deny"
            )
        words[name] = value
    numbers = {}
    for name in ("max_uncompressed_bytes", "max_entries", "max_ratio"):
        value = getattr(message, name)
        if value < 0:
            raise InvalidRequest(f"plan.rule.layers.{name}: got {value}, expected >= 0")
        numbers[name] = value or getattr(defaults, name)
    return LayerRule(inspect=message.inspect, inventory=message.inventory, **words, **numbers)


def package_to_proto(package: Package) -> inventory_pb2.Package:
    return inventory_pb2.Package(
        ecosystem=package.ecosystem,
        name=package.name,
        version=package.version,
        purl=package.purl,
        source_name=package.source_name,
        source_version=package.source_version,
        arch=package.arch,
    )


def inventory_to_proto(inventory: LayerInventory) -> inventory_pb2.LayerInventory:
    """One layer's inventory as format sends it in LayerStats."""
    message = inventory_pb2.LayerInventory(
        index=inventory.index,
        sources=[
            inventory_pb2.PackageSource(
                path=source.path,
                kind=source.kind,
                packages=[package_to_proto(p) for p in source.packages],
            )
            for source in inventory.sources
        ],
        removed=list(inventory.removed),
        incomplete=list(inventory.incomplete),
    )
    if inventory.os_release is not None:
        message.os_release.CopyFrom(os_release_to_proto(inventory.os_release))
    return message


def os_release_from_proto(message: inventory_pb2.OsRelease) -> OsRelease:
    return OsRelease(message.path, message.id, message.version_id, message.pretty_name)


def os_release_to_proto(release: OsRelease) -> inventory_pb2.OsRelease:
    return inventory_pb2.OsRelease(
        path=release.path,
        id=release.id,
        version_id=release.version_id,
        pretty_name=release.pretty_name,
    )


def inventory_from_proto(message: inventory_pb2.LayerInventory) -> LayerInventory:
    """The domain form, for :func:`pullguard.services.runtime.inventory.merge_layers`."""
    release = None
    if message.HasField("os_release"):
        r = message.os_release
        release = OsRelease(r.path, r.id, r.version_id, r.pretty_name)
    return LayerInventory(
        index=message.index,
        sources=[
            PackageSource(
                source.path,
                source.kind,
                tuple(
                    Package(
                        p.ecosystem,
                        p.name,
                        p.version,
                        p.purl,
                        p.source_name,
                        p.source_version,
                        p.arch,
                    )
                    for p in source.packages
                ),
            )
            for source in message.sources
        ],
        removed=list(message.removed),
        os_release=release,
        incomplete=list(message.incomplete),
    )


def vulnerabilities_from_proto(message: common_pb2.VulnerabilityPolicy) -> VulnerabilityRule:
    """The plan's vulnerability gate; an on_new other than revoke or warn is refused."""
    if not message.enabled:
        return VulnerabilityRule()
    on_new = message.on_new or "revoke"
    if on_new not in ("revoke", "warn"):
        raise InvalidRequest(
            f"plan.rule.vulnerabilities.on_new: got {on_new[:40]!r}, expected revoke or warn"
        )
    if not 0.0 <= message.cvss_min <= 10.0 or message.max_age_seconds < 0:
        raise InvalidRequest("plan.rule.vulnerabilities: cvss_min or max_age out of range")
    disagreement = message.sbom_disagreement or "warn"
    if disagreement not in ("warn", "deny"):
        raise InvalidRequest(
            "plan.rule.vulnerabilities.sbom_disagreement:"
            f" got {disagreement[:40]!r}, expected warn or deny"
        )
    return VulnerabilityRule(
        enabled=True,
        cvss_min=message.cvss_min,
        ids=tuple(message.ids),
        fixed_only=message.fixed_only,
        max_age_seconds=message.max_age_seconds,
        allow=tuple(Allowance(a.id, a.repository, a.until, a.reason) for a in message.allow),
        on_new=on_new,
        deny_incomplete=not message.allow_incomplete,
        use_sboms=not message.ignore_sboms,
        sbom_disagreement=disagreement,
    )
