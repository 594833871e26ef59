"""From per-signature checks to the layer's verdict: mode and threshold; the finding codes.

A rule's requirement is met when at least ``threshold`` DISTINCT signers each
have an accepted signature. A signer is one policy entry: a trusted key
(two files holding the same key are one), or one ``keyless`` identity
(however many certificates it matches). In ENFORCE mode an unmet
requirement denies; in WARN mode the same findings are warnings and the
verdict allows. When the requirement is met, the signatures that were
rejected (say, one by a key this policy does not trust) are recorded as
INFO findings: they do not deny.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pullguard.services.runtime.config.policy import SignatureMode
from pullguard.services.runtime.findings import Finding, Verdict

LAYER = "signature"

NOT_REQUIRED = "signature.not_required"
VERIFIED = "signature.verified"
MISSING = "signature.missing"
THRESHOLD_NOT_MET = "signature.threshold_not_met"
#: The signature verifies under no configured key (or its certificate is
#: not trust material for this rule).
UNTRUSTED_KEY = "signature.untrusted_key"
#: Malformed signature material, or a signature that does not verify.
INVALID = "signature.invalid"
WRONG_DIGEST = "signature.wrong_digest"
WRONG_REPOSITORY = "signature.wrong_repository"
TOO_MANY = "signature.too_many"
TOO_LARGE = "signature.too_large"
BLOB_MISMATCH = "signature.blob_mismatch"
#: A valid certificate for an issuer/subject the rule does not accept.
WRONG_IDENTITY = "signature.wrong_identity"
#: The certificate does not chain to a trusted CA (valid at the signed time).
UNTRUSTED_CERTIFICATE = "signature.untrusted_certificate"
#: The certificate was not valid at the signed time (THREATS G-10).
CERTIFICATE_EXPIRED = "signature.certificate_expired"
#: No transparency-log promise where one is required.
TLOG_MISSING = "signature.tlog_missing"
#: A log promise that does not verify or is about another signature.
TLOG_INVALID = "signature.tlog_invalid"
#: A sigstore bundle that is malformed or over a limit (THREATS G-14).
BUNDLE_INVALID = "signature.bundle_invalid"
#: A referrer whose subject is another manifest, or a statement that does
#: not name this digest (THREATS F-15, G-07).
SUBJECT_MISMATCH = "signature.subject_mismatch"
#: A signed statement that is not an image signature (another predicate).
WRONG_TYPE = "signature.wrong_type"
#: INFO: an unsigned claim (a predicateType annotation) was ignored.
UNSIGNED_ANNOTATION_IGNORED = "signature.unsigned_annotation_ignored"


#: The policy's signature modes (none, enforce, warn), one enum from YAML to here.
Mode = SignatureMode


@dataclass(frozen=True)
class Requirement:
    """What a policy rule asks of signatures."""

    mode: Mode
    #: Distinct trusted signers needed; 0 means 1.
    threshold: int = 1

    @property
    def signers_needed(self) -> int:
        return max(1, self.threshold)


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome for one signature (or one unusable signature artifact)."""

    location: str
    accepted: bool
    #: Finding code: VERIFIED when accepted, else why it was rejected.
    code: str
    reason: str
    #: The trusted signer whose signature verified, if any (even when the
    #: payload was then rejected).
    signer: str = ""

    @classmethod
    def accept(cls, location: str, signer: str, reason: str) -> SignatureCheck:
        return cls(location, True, VERIFIED, reason, signer)

    @classmethod
    def reject(cls, location: str, code: str, reason: str, signer: str = "") -> SignatureCheck:
        return cls(location, False, code, reason, signer)


def evaluate(requirement: Requirement, checks: Sequence[SignatureCheck]) -> Verdict:
    """The verdict for ``checks`` under ``requirement``."""
    if requirement.mode is Mode.NONE:
        return Verdict.of(LAYER, [Finding.info(NOT_REQUIRED, "the rule requires no signature")])
    needed = requirement.signers_needed
    first_by_signer: dict[str, SignatureCheck] = {}
    for check in checks:
        if check.accepted and check.signer not in first_by_signer:
            first_by_signer[check.signer] = check
    met = len(first_by_signer) >= needed
    failure: Callable[..., Finding] = (
        Finding.error if requirement.mode is Mode.ENFORCE else Finding.warning
    )
    findings: list[Finding] = []
    # The summary comes first so that the verdict's reason names it.
    if not checks:
        findings.append(
            failure(
                MISSING,
                f"got no signature, expected at least {needed} by a trusted signer",
            )
        )
    elif not met and needed > 1:
        findings.append(
            failure(
                THRESHOLD_NOT_MET,
                f"got {len(first_by_signer)} distinct trusted signers, expected at least {needed}",
                signers=", ".join(first_by_signer) or "none",
            )
        )
    findings.extend(
        Finding.info(VERIFIED, check.reason, signer=signer, location=check.location)
        for signer, check in first_by_signer.items()
    )
    rejected = Finding.info if met else failure
    for check in checks:
        if check.accepted:
            continue
        evidence = {"location": check.location}
        if check.signer:
            evidence["signer"] = check.signer
        findings.append(rejected(check.code, check.reason, **evidence))
    return Verdict.of(LAYER, findings)
