"""Signed SBOMs of one manifest digest: the vulnerability gate's second source.

An SBOM counts only when its attestation verified under the rule's
signature trust (the keys and identities that sign the image) and its
statement's subject names this digest: :func:`examine_attestations`, the
same checks as provenance. Its format is the SIGNED ``predicateType``
(CycloneDX or SPDX, :func:`sbom.sbom_format`); the layer annotation is
unsigned and ignored (THREATS G-07).

Anyone who can push to the upstream can attach an SBOM (THREATS F-15(b): a
fake "no vulnerabilities" SBOM), so one that did not verify is never read:
it is reported (INFO ``signature.sbom_ignored``, with why) and left out.
A verified SBOM that cannot be read whole is a WARNING (``sbom_invalid``,
``sbom_limit``) and what was read is kept, marked incomplete. The verdict
is always ALLOW: what the SBOM lists is judged by the vulnerability layer,
where it can only add packages to the match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.inventory import Package
from pullguard.services.signature import policy
from pullguard.services.signature.attestations import SignedStatement, examine_attestations
from pullguard.services.signature.sbom import SbomError, read_sbom, sbom_format
from pullguard.services.signature.trust import Trust
from pullguard.services.signature.verifier import Artifact, Limits, ReadStaged, Subject

SBOM_VERIFIED = "signature.sbom_verified"
SBOM_IGNORED = "signature.sbom_ignored"
#: Most findings about ignored attestations; the rest are counted in one.
MAX_IGNORED_FINDINGS = 20


@dataclass(frozen=True)
class VerifiedSbom:
    format: str
    predicate_type: str
    signer: str
    found_at: str
    digest: str
    packages: tuple[Package, ...]
    skipped: int
    incomplete: tuple[str, ...]


@dataclass(frozen=True)
class SbomOutcome:
    verdict: Verdict
    sboms: tuple[VerifiedSbom, ...]
    checks: tuple[policy.SignatureCheck, ...]


def verify_sboms(
    subject: Subject,
    artifacts: Sequence[Artifact],
    trust: Trust | None,
    limits: Limits,
    read_staged: ReadStaged,
) -> SbomOutcome:
    """The SBOMs among ``artifacts`` signed under ``trust`` (None: the rule names no signers)."""
    if trust is None:
        finding = Finding.info(
            SBOM_IGNORED, "the rule names no signers: no SBOM can be verified, none is read"
        )
        return SbomOutcome(Verdict.of(policy.LAYER, [finding]), (), ())
    examined = examine_attestations(subject, artifacts, trust, limits, read_staged)
    findings = list(examined.notes)
    ignored = [check for check in examined.checks if not check.accepted]
    for check in ignored[:MAX_IGNORED_FINDINGS]:
        findings.append(
            Finding.info(
                SBOM_IGNORED,
                f"attestation not verified under the rule's signers ({check.code}:"
                f" {check.reason[:200]}): not used as an SBOM",
                location=check.location,
                rejected=check.code,
            )
        )
    if len(ignored) > MAX_IGNORED_FINDINGS:
        findings.append(
            Finding.info(
                SBOM_IGNORED, f"{len(ignored) - MAX_IGNORED_FINDINGS} more attestations ignored"
            )
        )
    sboms = []
    for signed in examined.statements:
        kind = sbom_format(signed.statement.predicate_type)
        if kind is None:
            continue
        sbom = _read(kind, signed, findings)
        if sbom is not None:
            sboms.append(sbom)
    return SbomOutcome(Verdict.of(policy.LAYER, findings), tuple(sboms), examined.checks)


def _read(kind: str, signed: SignedStatement, findings: list[Finding]) -> VerifiedSbom | None:
    where = {"location": signed.found_at, "signer": signed.signer, "digest": signed.blob_digest}
    try:
        contents = read_sbom(kind, signed.statement.predicate)
    except SbomError as exc:
        findings.append(
            Finding.warning(
                exc.code, f"signed {kind} SBOM is not readable: {exc}; not used", **where
            )
        )
        return None
    for code, problem in contents.problems:
        findings.append(
            Finding.warning(code, f"signed {kind} SBOM: {problem}; the rest is used", **where)
        )
    findings.append(
        Finding.info(
            SBOM_VERIFIED,
            f"{kind} SBOM signed by {signed.signer} lists {len(contents.packages)} packages"
            f" ({contents.skipped} entries without a matchable purl)",
            packages=len(contents.packages),
            **where,
        )
    )
    return VerifiedSbom(
        format=kind,
        predicate_type=signed.statement.predicate_type,
        signer=signed.signer,
        found_at=signed.found_at,
        digest=signed.blob_digest,
        packages=tuple(contents.packages),
        skipped=contents.skipped,
        incomplete=tuple(sorted({code for code, _ in contents.problems})),
    )
