"""From per-signature checks to the layer's verdict: mode and threshold.

A rule's requirement is met when at least ``threshold`` DISTINCT signers each
have an accepted signature (a signer is a trusted key today; a keyless
identity later). In ENFORCE mode an unmet requirement denies; in WARN mode
the same findings are warnings and the verdict allows. When the requirement
is met, the signatures that were rejected (say, one by a key this policy does
not trust) are recorded as INFO findings: they do not deny.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pullguard.services.runtime.findings import Finding, Verdict

LAYER = "signature"

NOT_REQUIRED = "signature.not_required"
VERIFIED = "signature.verified"
MISSING = "signature.missing"
THRESHOLD_NOT_MET = "signature.threshold_not_met"
UNTRUSTED_KEY = "signature.untrusted_key"
INVALID = "signature.invalid"
WRONG_DIGEST = "signature.wrong_digest"
WRONG_REPOSITORY = "signature.wrong_repository"
TOO_MANY = "signature.too_many"
TOO_LARGE = "signature.too_large"
BLOB_MISMATCH = "signature.blob_mismatch"


class Mode(enum.Enum):
    NONE = "none"
    ENFORCE = "enforce"
    WARN = "warn"


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
                f"got no cosign signature, expected at least {needed} by a trusted key",
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
