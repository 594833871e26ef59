"""Step 4's signature and index-unit parts: which signatures count for a manifest.

Signatures and attestations are found by :mod:`pullguard.gateway.discovery`
and verified by the signature layer; a signature on an admitted index covers
the manifests it lists; an index is one unit (:mod:`pullguard.gateway.indexcheck`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.discovery import Discovery, Found
from pullguard.gateway.indexcheck import IndexUnit, covered_by_index
from pullguard.gateway.pull.one import Pull, StepRefused, Stopwatch
from pullguard.gateway.steps import StepName
from pullguard.services.runtime.protoconv import verdict_allows
from pullguard.v1 import common_pb2, format_pb2, inventory_pb2, signature_pb2

#: Admitted indexes that list a manifest, tried at most for a covering signature.
MAX_COVERING_INDEXES = 4


@dataclass
class Signed:
    """The signature verdict, its duration, the signed provenance statements for
    source and the signed SBOMs for the vulnerability gate."""

    verdict: common_pb2.Verdict
    ms: float
    statements: list[common_pb2.VerifiedProvenance] = field(default_factory=list)
    sboms: list[inventory_pb2.Sbom] = field(default_factory=list)


async def signatures(pull: Pull, digest: str, image: bool = True) -> Signed:
    """The signature verdict for ``digest`` under the pull's rule; ``image``: an
    image manifest, whose signed SBOMs the vulnerability gate reads."""
    watch = Stopwatch()
    plan = pull.plan
    sboms: list[inventory_pb2.Sbom] = []
    verdict, statements = await _verify_signed(pull, digest, sboms=sboms if image else None)
    if _wants_signatures(plan) and not verdict_allows(verdict):
        covered = await _covered_by_index(pull, digest)
        if covered is not None:
            verdict = covered
    if _wants_provenance(plan) and not statements and plan.parent_index:
        # A platform manifest's provenance may be attested on its index.
        _parent_verdict, statements = await _verify_signed(
            pull, plan.parent_index, signatures=False
        )
    return Signed(verdict, watch.ms, statements, sboms)


async def check_index_unit(
    pull: Pull,
    digest: str,
    summary: format_pb2.ManifestSummary,
    depth: int,
    signed: Signed,
    max_depth: int,
) -> None:
    """Refuse the index unless every manifest it lists passes (see :mod:`indexcheck`)."""
    watch = Stopwatch()
    plan = pull.plan
    unit = IndexUnit(
        pull.call_tuple,
        pull.record_provenance,
        pull.limits,
        pull.session,
        depth=depth,
        max_depth=max_depth,
        signed=_wants_signatures(plan)
        and verdict_allows(signed.verdict)
        and all(f.severity == common_pb2.INFO for f in signed.verdict.findings),
        statements=signed.statements,
    )
    verdict = await unit.check(plan, digest, summary)
    # The unit's verdict first: a refusal names the child, then each child's steps.
    allowed = pull.judge("gateway", StepName.INDEX_UNIT, verdict, watch.ms)
    for step in unit.outcome.steps:
        pull.judge(step.layer, step.step, step.verdict, step.duration_ms)
    if not allowed:
        raise StepRefused


def _wants_signatures(plan: common_pb2.Plan) -> bool:
    return plan.rule.signature.mode != common_pb2.SignaturePolicy.NONE


def _wants_sboms(plan: common_pb2.Plan) -> bool:
    """A gate that reads signed SBOMs, under a rule that names signers to verify them."""
    gate = plan.rule.vulnerabilities
    return (
        gate.enabled
        and not gate.ignore_sboms
        and plan.rule.signature.mode
        not in (common_pb2.SignaturePolicy.MODE_UNSPECIFIED, common_pb2.SignaturePolicy.NONE)
    )


def _wants_provenance(plan: common_pb2.Plan) -> bool:
    provenance = plan.rule.provenance
    return provenance.required or provenance.signers.mode not in (
        common_pb2.SignaturePolicy.MODE_UNSPECIFIED,
        common_pb2.SignaturePolicy.NONE,
    )


async def _verify_signed(
    pull: Pull,
    digest: str,
    signatures: bool = True,
    sboms: list[inventory_pb2.Sbom] | None = None,
) -> tuple[common_pb2.Verdict, list[common_pb2.VerifiedProvenance]]:
    """Signatures and provenance of ``digest``; its signed SBOMs go into ``sboms`` when given."""
    plan = pull.plan
    need_signatures = signatures and _wants_signatures(plan)
    need_sboms = sboms is not None and _wants_sboms(plan)
    need_attestations = _wants_provenance(plan) or need_sboms
    found = Found()
    if need_signatures or need_attestations:
        discovery = Discovery(pull.call_tuple, pull.require, pull.record_provenance, pull.limits)
        found = await discovery.find(
            pull.session,
            plan,
            digest,
            signatures=need_signatures,
            attestations=need_attestations,
        )
    verdict = common_pb2.Verdict(decision=common_pb2.ALLOW)
    if signatures:
        checked = await pull.call(
            "signature",
            "VerifySignatures",
            signature_pb2.VerifySignaturesRequest(
                session=pull.session, plan=plan, digest=digest, artifacts=found.signatures
            ),
        )
        verdict = checked.response.verdict
        pull.report.signatures.extend(_results(checked.response.signatures, digest, "signature"))
    statements: list[common_pb2.VerifiedProvenance] = []
    if _wants_provenance(plan):
        attested, ms = await pull.call(
            "signature",
            "VerifyAttestations",
            signature_pb2.VerifyAttestationsRequest(
                session=pull.session, plan=plan, digest=digest, artifacts=found.attestations
            ),
        )
        pull.judge("signature", f"attestations {digest}", attested.verdict, ms)
        pull.report.signatures.extend(_results(attested.attestations, digest, "attestation"))
        statements = [_bound(statement, digest) for statement in attested.statements]
    if sboms is not None and need_sboms:
        sboms.extend(await _signed_sboms(pull, digest, found.attestations))
    return verdict, statements


async def _signed_sboms(
    pull: Pull, digest: str, artifacts: list[signature_pb2.SignatureArtifact]
) -> list[inventory_pb2.Sbom]:
    """The SBOMs among ``artifacts`` that the signature layer verified under the rule's
    signers (the others are INFO findings there: ignored, never matched)."""
    checked, ms = await pull.call(
        "signature",
        "VerifySboms",
        signature_pb2.VerifySbomsRequest(
            session=pull.session, plan=pull.plan, digest=digest, artifacts=artifacts
        ),
    )
    pull.judge("signature", f"sboms {digest}", checked.verdict, ms)
    pull.report.signatures.extend(_results(checked.attestations, digest, "sbom"))
    return list(checked.sboms)


def _bound(statement: common_pb2.VerifiedProvenance, digest: str) -> common_pb2.VerifiedProvenance:
    """The statement as source is asked about it: bound to the digest this pull verified,
    whatever the signature layer's reply says (the gateway trusts no layer's word for that)."""
    bound = common_pb2.VerifiedProvenance()
    bound.CopyFrom(statement)
    bound.subject_digest = digest
    return bound


async def _covered_by_index(pull: Pull, digest: str) -> common_pb2.Verdict | None:
    """A signature on an admitted index covers the manifests it lists."""
    parents = pull.decisions.parent_indexes(
        pull.report.repository, digest, pull.plan.policy_version
    )
    for parent in parents[:MAX_COVERING_INDEXES]:
        verdict, _statements = await _verify_signed(pull, parent)
        if verdict_allows(verdict):
            verdict.findings.append(covered_by_index(parent))
            return verdict
    return None


def _results(results: Any, digest: str, kind: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": kind,
            "location": r.location,
            "accepted": r.accepted,
            "signer": r.signer,
            "reason": r.reason,
            "code": r.code,
            "digest": digest,
        }
        for r in results
    ]
