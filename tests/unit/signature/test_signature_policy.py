"""Mode and threshold: from per-signature checks to the verdict."""

from __future__ import annotations

import pytest

from pullguard.services.runtime.findings import Severity
from pullguard.services.signature import policy
from pullguard.services.signature.policy import Mode, Requirement, SignatureCheck, evaluate

A = SignatureCheck.accept("tag:x.sig/layers[0]", "alice.pub", "ok")
A2 = SignatureCheck.accept("tag:x.sig/layers[1]", "alice.pub", "ok again")
B = SignatureCheck.accept("tag:x.sig/layers[2]", "bob.pub", "ok")
BAD = SignatureCheck.reject("tag:x.sig/layers[3]", policy.UNTRUSTED_KEY, "no trusted key")


def summary(mode: Mode, threshold: int, checks: list[SignatureCheck]) -> list[tuple[str, Severity]]:
    verdict = evaluate(Requirement(mode, threshold), checks)
    return [(f.code, f.severity) for f in verdict.findings]


def test_none_allows_with_info() -> None:
    verdict = evaluate(Requirement(Mode.NONE), [BAD])
    assert verdict.allowed
    assert [f.code for f in verdict.findings] == [policy.NOT_REQUIRED]


@pytest.mark.parametrize(
    ("mode", "severity"), [(Mode.ENFORCE, Severity.ERROR), (Mode.WARN, Severity.WARNING)]
)
def test_missing(mode: Mode, severity: Severity) -> None:
    assert summary(mode, 1, []) == [(policy.MISSING, severity)]


def test_met_threshold_records_rejections_as_info() -> None:
    assert summary(Mode.ENFORCE, 1, [BAD, A]) == [
        (policy.VERIFIED, Severity.INFO),
        (policy.UNTRUSTED_KEY, Severity.INFO),
    ]


def test_unmet_threshold_leads_with_the_summary() -> None:
    verdict = evaluate(Requirement(Mode.ENFORCE, 2), [A, A2, BAD])
    assert not verdict.allowed
    assert [f.code for f in verdict.findings] == [
        policy.THRESHOLD_NOT_MET,
        policy.VERIFIED,
        policy.UNTRUSTED_KEY,
    ]
    assert verdict.reason == "got 1 distinct trusted signers, expected at least 2"
    assert verdict.findings[0].evidence["signers"] == "alice.pub"


def test_two_distinct_signers_meet_two() -> None:
    verdict = evaluate(Requirement(Mode.ENFORCE, 2), [A, A2, B])
    assert verdict.allowed
    assert [f.evidence["signer"] for f in verdict.findings] == ["alice.pub", "bob.pub"]


def test_warn_never_denies() -> None:
    for checks in ([], [BAD], [A]):
        assert evaluate(Requirement(Mode.WARN, 3), checks).allowed
    assert summary(Mode.WARN, 2, [A])[0] == (policy.THRESHOLD_NOT_MET, Severity.WARNING)


def test_single_rejection_with_threshold_one_is_the_reason() -> None:
    verdict = evaluate(Requirement(Mode.ENFORCE, 1), [BAD])
    assert not verdict.allowed
    assert [f.code for f in verdict.findings] == [policy.UNTRUSTED_KEY]
