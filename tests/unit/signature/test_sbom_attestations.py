"""Signed SBOM attestations: only those verified under the rule's signers are read.

THREATS F-15(b) (a fake "no vulnerabilities" SBOM), G-07 (type confusion:
the unsigned predicateType annotation never decides), G-09 (size).
"""

from __future__ import annotations

import hashlib

from pullguard.services.signature import policy
from pullguard.services.signature.sbom import SBOM_INVALID
from pullguard.services.signature.sboms import (
    SBOM_IGNORED,
    SBOM_VERIFIED,
    SbomOutcome,
    verify_sboms,
)
from pullguard.services.signature.trust import Trust
from pullguard.services.signature.verifier import Limits, Subject
from tests.support.cosign import (
    LocalSigner,
    SignatureLayer,
    attestation_layer,
    staged_signature_image,
    statement,
    trusting,
)

DIGEST = "sha256:" + "5a" * 32
REPOSITORY = "ghcr.io/myorg/app"
LIMITS = Limits(64 * 1024, 1 << 20, 10)
CYCLONEDX = "https://cyclonedx.org/bom"
SPDX = "https://spdx.dev/Document"
BOM = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "components": [{"name": "net", "purl": "pkg:golang/golang.org/x/net@v0.10.0"}],
}
SPDX_DOC = {
    "spdxVersion": "SPDX-2.3",
    "packages": [
        {
            "name": "jinja2",
            "versionInfo": "3.1.2",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": "pkg:pypi/jinja2@3.1.2",
                }
            ],
        }
    ],
}

CI = LocalSigner("ci.pub")
MALLORY = LocalSigner("mallory.pub")


def layer(
    signer: LocalSigner,
    predicate_type: str = CYCLONEDX,
    predicate: object = BOM,
    digest: str = DIGEST,
    annotation: str | None = None,
) -> SignatureLayer:
    return attestation_layer(
        signer, statement(digest, predicate_type, predicate, REPOSITORY), annotation
    )


def run(layers: list[SignatureLayer], trust: Trust | None, limits: Limits = LIMITS) -> SbomOutcome:
    staging, artifacts = staged_signature_image(layers, "tag:sha256-5a.att")
    return verify_sboms(
        Subject(DIGEST, (REPOSITORY,), None),
        artifacts,
        trust,
        limits,
        staging,
    )


def codes(outcome: SbomOutcome) -> list[str]:
    return [f.code for f in outcome.verdict.findings]


def test_a_cyclonedx_sbom_signed_by_a_trusted_key_is_read() -> None:
    signed = layer(CI)
    outcome = run([signed], trusting(CI))
    assert outcome.verdict.allowed
    [sbom] = outcome.sboms
    assert (sbom.format, sbom.signer, sbom.found_at) == (
        "cyclonedx",
        "ci.pub",
        "tag:sha256-5a.att/layers[0]",
    )
    assert sbom.digest == "sha256:" + hashlib.sha256(signed.payload).hexdigest()
    assert [(p.ecosystem, p.name, p.version) for p in sbom.packages] == [
        ("Go", "golang.org/x/net", "v0.10.0")
    ]
    assert codes(outcome) == [SBOM_VERIFIED]


def test_an_spdx_sbom_is_read() -> None:
    [sbom] = run([layer(CI, SPDX, SPDX_DOC)], trusting(CI)).sboms
    assert sbom.format == "spdx" and [p.name for p in sbom.packages] == ["jinja2"]


def test_f15b_an_sbom_signed_by_an_untrusted_key_is_ignored_and_said_so() -> None:
    outcome = run([layer(MALLORY)], trusting(CI))
    assert outcome.verdict.allowed and outcome.sboms == ()
    [finding] = outcome.verdict.findings
    assert finding.code == SBOM_IGNORED
    assert finding.evidence["rejected"] == policy.UNTRUSTED_KEY
    assert "not used as an SBOM" in finding.message


def test_without_signers_no_sbom_is_read() -> None:
    outcome = run([layer(CI)], None)
    assert outcome.sboms == () and codes(outcome) == [SBOM_IGNORED]


def test_an_sbom_about_another_image_is_ignored() -> None:
    outcome = run([layer(CI, digest="sha256:" + "77" * 32)], trusting(CI))
    assert outcome.sboms == ()
    assert outcome.verdict.findings[0].evidence["rejected"] == policy.SUBJECT_MISMATCH


def test_g07_the_unsigned_annotation_never_makes_an_sbom() -> None:
    # Signed as a vulnerability scan, annotated as CycloneDX: not an SBOM.
    vuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
    outcome = run([layer(CI, vuln, BOM, annotation=CYCLONEDX)], trusting(CI))
    assert outcome.sboms == ()
    assert policy.UNSIGNED_ANNOTATION_IGNORED in codes(outcome)


def test_g09_an_oversized_sbom_is_not_read() -> None:
    big = {**BOM, "padding": "x" * 4096}
    outcome = run([layer(CI, CYCLONEDX, big)], trusting(CI), Limits(64 * 1024, 2048, 10))
    assert outcome.sboms == ()
    assert outcome.verdict.findings[0].evidence["rejected"] == policy.TOO_LARGE


def test_a_signed_but_malformed_sbom_is_a_warning_naming_what_is_wrong() -> None:
    outcome = run([layer(CI, CYCLONEDX, {"bomFormat": "CycloneDX", "components": 7})], trusting(CI))
    assert outcome.verdict.allowed and outcome.sboms == ()
    [finding] = outcome.verdict.findings
    assert finding.code == SBOM_INVALID and finding.severity.name == "WARNING"
    assert "components is a number" in finding.message
    assert finding.evidence["location"] == "tag:sha256-5a.att/layers[0]"


def test_g08_attestation_floods_are_capped() -> None:
    # A manifest with more attestation layers than the limit is not read at all.
    outcome = run([layer(CI)] * 12, trusting(CI))
    assert outcome.sboms == ()
    assert policy.TOO_MANY in {f.evidence.get("rejected") for f in outcome.verdict.findings}
