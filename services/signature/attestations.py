"""Signed attestations of one manifest digest, for the source layer's provenance check.

Sources: cosign's ``.att`` tag (DSSE envelope layers, with the same
certificate/chain/Rekor annotations as signatures) and sigstore bundle
referrers holding a DSSE envelope. An attestation counts only when:

1. its envelope has exactly one signature, made by a signer of
   ``plan.rule.provenance.signers`` (keys or keyless identities, the same
   machinery as image signatures, Rekor as that policy says);
2. its payload is an in-toto statement whose subject lists this digest
   (every digest of that subject matching: THREATS G-07);

and its predicate type is the one inside the SIGNED statement. The
``predicateType`` layer annotation (and a bundle manifest's
``dev.sigstore.bundle.predicateType``) is unsigned: it is ignored, with an
INFO finding when present (THREATS S-02, G-07; cosign issue #3235).

The verdict is informational (ALLOW, with findings): whether provenance is
required and which builder or source it must name is the source layer's
decision, made on the returned :class:`VerifiedStatement` list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.signature import dsse, policy
from pullguard.services.signature.attachments import Layer
from pullguard.services.signature.policy import SignatureCheck
from pullguard.services.signature.trust import Signer, Trust, identify, sha256_hex
from pullguard.services.signature.verifier import (
    Artifact,
    Budget,
    Limits,
    ReadStaged,
    Subject,
    budgeted_layers,
    read_attachment,
    read_blob,
    too_many_artifacts,
    verified_bundle,
)

PREDICATE_TYPE_ANNOTATION = "predicateType"
BUNDLE_PREDICATE_TYPE_ANNOTATION = "dev.sigstore.bundle.predicateType"
ATTESTATION_VERIFIED = "signature.attestation_verified"


@dataclass(frozen=True)
class VerifiedStatement:
    """An attestation that verified, and what it says."""

    predicate_type: str
    builder_id: str
    source_repository: str
    signer: str
    found_at: str
    #: The source revision, "<alg>:<hex>", when the provenance states it.
    source_digest: str = ""


@dataclass(frozen=True)
class AttestationOutcome:
    verdict: Verdict
    statements: tuple[VerifiedStatement, ...]
    checks: tuple[SignatureCheck, ...]


@dataclass(frozen=True)
class SignedStatement:
    """An in-toto statement whose signature verified and whose subject names the image."""

    statement: dsse.Statement
    signer: str
    found_at: str
    #: The attestation blob's digest (the DSSE envelope or bundle layer).
    blob_digest: str


@dataclass(frozen=True)
class Examined:
    statements: tuple[SignedStatement, ...]
    #: One per attestation examined, accepted or not, in the order met.
    checks: tuple[SignatureCheck, ...]
    #: Unsigned annotations ignored.
    notes: tuple[Finding, ...]


def examine_attestations(
    subject: Subject,
    artifacts: Sequence[Artifact],
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> Examined:
    """Every attestation in ``artifacts``: verified under ``trust`` and bound to
    ``subject``, or the reason it is not; bounded by ``limits`` (G-08, G-09)."""
    notes: list[Finding] = []
    checks: list[SignatureCheck] = []
    statements: list[SignedStatement] = []
    if len(artifacts) > limits.signatures:
        checks.append(too_many_artifacts(len(artifacts), limits, "attestation"))
        artifacts = ()
    budget = Budget(limits.signatures)
    for artifact in artifacts:
        attachment = read_attachment(artifact, subject, limits, read_staged)
        if isinstance(attachment, SignatureCheck):
            checks.append(attachment)
            continue
        claimed = attachment.annotations.get(BUNDLE_PREDICATE_TYPE_ANNOTATION)
        if claimed is not None:
            notes.append(_ignored(artifact.location, BUNDLE_PREDICATE_TYPE_ANNOTATION, claimed))
        chosen, overflow = budgeted_layers(
            attachment,
            artifact.location,
            ("attestation", "bundle"),
            budget,
            f"more than {budget.limit} attestations",
        )
        for location, kind, layer in chosen:
            claimed = layer.annotations.get(PREDICATE_TYPE_ANNOTATION)
            if claimed is not None:
                notes.append(_ignored(location, PREDICATE_TYPE_ANNOTATION, claimed))
            if kind == "attestation":
                result = _envelope(location, layer, subject, trust, limits, read_staged)
            else:
                result = _bundle(location, layer, subject, trust, limits, read_staged)
            if isinstance(result, SignatureCheck):
                checks.append(result)
                continue
            statements.append(result)
            checks.append(
                SignatureCheck.accept(
                    location,
                    result.signer,
                    f"{result.statement.predicate_type[:120]} attestation signed by"
                    f" {result.signer}",
                )
            )
        if overflow is not None:
            checks.append(overflow)
    return Examined(tuple(statements), tuple(checks), tuple(notes))


def verify_attestations(
    subject: Subject,
    artifacts: Sequence[Artifact],
    trust: Trust | None,
    limits: Limits,
    read_staged: ReadStaged,
) -> AttestationOutcome:
    """Every attestation in ``artifacts`` signed under ``trust`` (None: no signers)."""
    if trust is None:
        findings = [Finding.info(policy.NOT_REQUIRED, "the rule names no provenance signers")]
        return AttestationOutcome(Verdict.of(policy.LAYER, findings), (), ())
    examined = examine_attestations(subject, artifacts, trust, limits, read_staged)
    findings = list(examined.notes)
    findings += [check_finding(check) for check in examined.checks]
    statements = tuple(_facts(s) for s in examined.statements)
    return AttestationOutcome(Verdict.of(policy.LAYER, findings), statements, examined.checks)


def check_finding(check: SignatureCheck) -> Finding:
    """An attestation's outcome as an INFO finding (the verdict is someone else's)."""
    code = ATTESTATION_VERIFIED if check.accepted else check.code
    evidence = {"location": check.location}
    if check.signer:
        evidence["signer"] = check.signer
    return Finding.info(code, check.reason, **evidence)


def _ignored(location: str, name: str, value: str) -> Finding:
    return Finding.info(
        policy.UNSIGNED_ANNOTATION_IGNORED,
        f"unsigned annotation {name}={value[:120]} ignored; the signed statement decides",
        location=location,
    )


def _envelope(
    location: str,
    layer: Layer,
    subject: Subject,
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> SignedStatement | SignatureCheck:
    data = read_blob(location, layer, limits, read_staged)
    if isinstance(data, SignatureCheck):
        return data
    try:
        envelope = dsse.parse_envelope(data)
    except dsse.EnvelopeError as exc:
        return SignatureCheck.reject(location, exc.code or policy.INVALID, str(exc))
    signer = identify(
        location,
        envelope.pae(),
        envelope.signature,
        sha256_hex(envelope.payload),
        layer.annotations,
        trust,
    )
    if isinstance(signer, SignatureCheck):
        return signer
    return _statement(location, envelope, signer, subject, layer.digest)


def _statement(
    location: str, envelope: dsse.Envelope, signer: Signer, subject: Subject, blob: str
) -> SignedStatement | SignatureCheck:
    try:
        statement = dsse.parse_statement(envelope)
    except dsse.EnvelopeError as exc:
        return SignatureCheck.reject(location, exc.code or policy.INVALID, str(exc), signer.name)
    if dsse.binds_digest(statement, subject.digest, subject.content) is None:
        return SignatureCheck.reject(
            location,
            policy.SUBJECT_MISMATCH,
            f"statement names no subject with digest {subject.digest}",
            signer.name,
        )
    return SignedStatement(statement, signer.name, location, blob)


def _facts(signed: SignedStatement) -> VerifiedStatement:
    statement = signed.statement
    facts = dsse.provenance_facts(statement)
    return VerifiedStatement(
        predicate_type=statement.predicate_type,
        builder_id=facts.builder_id,
        source_repository=facts.source_repository,
        signer=signed.signer,
        found_at=signed.found_at,
        source_digest=facts.source_digest,
    )


def _bundle(
    location: str,
    layer: Layer,
    subject: Subject,
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> SignedStatement | SignatureCheck:
    verified = verified_bundle(location, layer, subject, trust, limits, read_staged)
    if isinstance(verified, SignatureCheck):
        return verified
    if verified.statement is None:
        return SignatureCheck.reject(
            location, policy.WRONG_TYPE, "bundle holds a message signature, not an attestation"
        )
    return SignedStatement(verified.statement, verified.signer, location, layer.digest)
