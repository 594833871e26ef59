"""What a quarantine release may waive, and how a report applies waivers."""

from __future__ import annotations

from typing import Any

import pytest

from pullguard.gateway.release import (
    WAIVABLE,
    ReleaseRefused,
    check_reason,
    plan_release,
)
from pullguard.gateway.report import Report
from pullguard.services.runtime.errors import InvalidRequest
from pullguard.v1 import common_pb2

DIGEST = "sha256:" + "ab" * 32


def _finding(code: str, severity: str = "ERROR") -> dict[str, Any]:
    return {"code": code, "severity": severity, "message": code, "evidence": {}}


def _report(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "decision": "DENY",
        "digest": DIGEST,
        "repository": "lab/vendor/app",
        "client_name": "lab/vendor/app",
        "layers": [
            {"layer": "analysis", "step": "plan", "decision": "ALLOW", "findings": []},
            *steps,
        ],
        **extra,
    }


def _step(layer: str, step: str, *findings: dict[str, Any], error: str = "") -> dict[str, Any]:
    return {
        "layer": layer,
        "step": step,
        "decision": "ERROR" if error else "DENY",
        "findings": list(findings),
        "error": error,
    }


def test_a_missing_signature_is_waivable() -> None:
    plan = plan_release(
        "q1",
        _report(
            _step(
                "signature",
                "signatures",
                _finding("signature.missing"),
                _finding("signature.not_required", "INFO"),
            )
        ),
    )
    assert plan.waivers == {"signature.missing"}
    assert (plan.digest, plan.repository) == (DIGEST, "lab/vendor/app")


@pytest.mark.parametrize(
    ("layer", "step", "code"),
    [
        ("hashverify", "blobs", "hash.blob_mismatch"),
        ("hashverify", "manifest", "hash.denied_digest"),
        ("hashverify", "manifest", "hash.pin_mismatch"),
        ("format", "manifest", "format.ambiguous_manifest"),
        ("format", "layers", "format.unsafe_path"),
        ("format", "layers", "format.diffid_mismatch"),
        ("signature", "signatures", "signature.invalid"),
        ("signature", "signatures", "signature.wrong_digest"),
        ("source", "source", "source.insecure_redirect"),
        ("source", "source", "source.tls_identity_mismatch"),
        ("analysis", "plan", "analysis.denied_digest"),
        # A waivable code in a step where it is not waivable.
        ("format", "manifest", "format.setuid"),
    ],
)
def test_integrity_and_attack_findings_are_never_waivable(layer: str, step: str, code: str) -> None:
    with pytest.raises(ReleaseRefused, match=f"{code} cannot be waived"):
        plan_release("q1", _report(_step(layer, step, _finding(code))))


def test_one_unwaivable_finding_refuses_the_whole_release() -> None:
    steps = (
        _step("signature", "signatures", _finding("signature.missing")),
        _step("format", "layers", _finding("format.setuid"), _finding("format.link_escape")),
    )
    with pytest.raises(ReleaseRefused, match="format.link_escape"):
        plan_release("q1", _report(*steps))


@pytest.mark.parametrize(
    ("report", "words"),
    [
        (_report(_step("format", "manifest", error="format: service unavailable")), "failure"),
        (_report(_step("signature", "signatures")), "without a finding"),
        (_report(digest=""), "no digest"),
        (_report(decision="ALLOW"), "not a denial"),
        (_report(), "no refusing finding"),
    ],
)
def test_nothing_to_waive_is_refused(report: dict[str, Any], words: str) -> None:
    with pytest.raises(ReleaseRefused, match=words):
        plan_release("q1", report)


def test_a_reason_is_required_bounded_and_printable() -> None:
    assert check_reason("  reviewed in SEC-1  ") == "reviewed in SEC-1"
    for bad in ("", "   ", "x" * 1001, "ok\nforged audit line", "bell\x07", "del\x7f"):
        with pytest.raises(InvalidRequest):
            check_reason(bad)


def _verdict(*findings: tuple[str, int]) -> common_pb2.Verdict:
    return common_pb2.Verdict(
        decision=common_pb2.DENY,
        findings=[common_pb2.Finding(code=c, severity=s, message=c) for c, s in findings],
    )


def test_a_report_waives_only_a_fully_covered_waivable_step() -> None:
    report = Report("d1", "lab/vendor/app", DIGEST)
    report.waivers = frozenset({"signature.missing", "format.setuid", "hash.blob_mismatch"})

    assert report.add("signature", "signatures", _verdict(("signature.missing", 3)), 1.0)
    assert not report.add(
        "format", "layers", _verdict(("format.setuid", 3), ("format.device_node", 3)), 1.0
    )
    # Listed as a waiver, but hashverify is never waivable.
    assert not report.add("hashverify", "blobs", _verdict(("hash.blob_mismatch", 3)), 1.0)
    # A refusal without a finding is not waived by anything.
    assert not report.add("signature", "signatures", _verdict(), 1.0)

    assert [w["code"] for w in report.waived] == ["signature.missing"]
    assert report.denied_by == "format"
    first = report.as_json()["layers"][0]
    assert first["decision"] == "ALLOW" and first["findings"][0]["waived"] is True


def test_without_waivers_a_report_waives_nothing() -> None:
    report = Report("d1", "lab/vendor/app", DIGEST)
    assert not report.add("signature", "signatures", _verdict(("signature.missing", 3)), 1.0)
    assert report.waived == [] and report.denied_by == "signature"


def test_every_waivable_code_is_a_policy_finding_of_its_own_layer() -> None:
    for (layer, _step_name), codes in WAIVABLE.items():
        assert codes and all(code.startswith(f"{layer}.") for code in codes)
