"""The verification steps, with keys made in-process: every check has a test
that fails when the check is removed."""

from __future__ import annotations

import json

import pytest

from pullguard.services.runtime.findings import Severity
from pullguard.services.signature import policy
from pullguard.services.signature.keys import load_trusted_keys
from pullguard.services.signature.policy import Mode, Requirement
from pullguard.services.signature.verifier import (
    Artifact,
    Limits,
    Outcome,
    Subject,
    verify_signatures,
)
from tests.support.cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING,
    LocalSigner,
    MemoryStaging,
    SignatureLayer,
    make_trust,
    referrer_manifest,
    sha256,
    signature_manifest,
    simple_signing_payload,
)

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
REPOSITORY = "127.0.0.1:5001/team/app"
LOCATION = f"tag:sha256-{'ab' * 32}.sig"
LIMITS = Limits(manifest_bytes=64 * 1024, payload_bytes=4096, signatures=5)


@pytest.fixture(scope="module")
def alice() -> LocalSigner:
    return LocalSigner("alice.pub")


@pytest.fixture(scope="module")
def bob() -> LocalSigner:
    return LocalSigner("bob.pub")


def payload(reference: str = REPOSITORY, digest: str = DIGEST) -> bytes:
    return simple_signing_payload(reference, digest)


def stage(
    layers: list[SignatureLayer], staging: MemoryStaging | None = None
) -> tuple[Artifact, MemoryStaging]:
    staging = staging or MemoryStaging()
    manifest, blobs = signature_manifest(layers)
    for blob in blobs.values():
        staging.put(blob)
    return Artifact(LOCATION, staging.put(manifest)), staging


def run(
    artifacts: list[Artifact],
    staging: MemoryStaging,
    signers: list[LocalSigner],
    mode: Mode = Mode.ENFORCE,
    threshold: int = 1,
    limits: Limits = LIMITS,
    repositories: tuple[str, ...] = (REPOSITORY,),
) -> Outcome:
    trust = make_trust(load_trusted_keys((s.name, s.pem) for s in signers))
    return verify_signatures(
        Requirement(mode, threshold),
        Subject(DIGEST, repositories),
        artifacts,
        trust,
        limits,
        staging,
    )


def verify(layers: list[SignatureLayer], signers: list[LocalSigner], **options: object) -> Outcome:
    artifact, staging = stage(layers)
    return run([artifact], staging, signers, **options)  # type: ignore[arg-type]


def codes(outcome: Outcome) -> list[str]:
    return [f.code for f in outcome.verdict.findings]


def test_accepts_a_signature_by_a_trusted_key(alice: LocalSigner) -> None:
    outcome = verify([alice.layer(payload())], [alice])
    assert outcome.verdict.allowed
    assert codes(outcome) == [policy.VERIFIED]
    (check,) = outcome.checks
    assert (check.accepted, check.signer, check.location) == (
        True,
        "alice.pub",
        f"{LOCATION}/layers[0]",
    )


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_accepts_rsa_and_ed25519_keys(kind: str) -> None:
    signer = LocalSigner(f"{kind}.pub", kind)
    assert verify([signer.layer(payload())], [signer]).verdict.allowed


def test_none_mode_needs_no_artifacts() -> None:
    outcome = verify_signatures(
        Requirement(Mode.NONE),
        Subject(DIGEST, (REPOSITORY,)),
        [],
        make_trust(),
        LIMITS,
        MemoryStaging(),
    )
    assert outcome.verdict.allowed
    assert codes(outcome) == [policy.NOT_REQUIRED]


def test_g01_no_artifact_is_missing(alice: LocalSigner) -> None:
    outcome = run([], MemoryStaging(), [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.MISSING]


def test_g01_signature_manifest_without_layers_is_missing(alice: LocalSigner) -> None:
    outcome = verify([], [alice])
    assert codes(outcome) == [policy.MISSING]
    assert not outcome.verdict.allowed


def test_g12_untrusted_key(alice: LocalSigner, bob: LocalSigner) -> None:
    outcome = verify([bob.layer(payload())], [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_signature_over_other_bytes_is_untrusted(alice: LocalSigner) -> None:
    signed = alice.layer(payload())
    tampered = SignatureLayer(payload(reference="127.0.0.1:5001/team/evil"), signed.annotations)
    assert codes(verify([tampered], [alice])) == [policy.UNTRUSTED_KEY]


def test_payload_is_not_parsed_before_the_signature_verifies(
    bob: LocalSigner, alice: LocalSigner
) -> None:
    # Garbage signed by a stranger is "untrusted", never "invalid": the
    # parser only ever sees bytes a trusted key signed.
    outcome = verify([bob.layer(b"{not json")], [alice])
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g02_wrong_digest(alice: LocalSigner) -> None:
    outcome = verify([alice.layer(payload(digest=OTHER_DIGEST))], [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.WRONG_DIGEST]
    assert outcome.checks[0].signer == "alice.pub"


def test_g02_uppercase_digest_is_not_the_digest(alice: LocalSigner) -> None:
    upper = "sha256:" + ("ab" * 32).upper()
    assert codes(verify([alice.layer(payload(digest=upper))], [alice])) == [policy.WRONG_DIGEST]


@pytest.mark.parametrize(
    "reference",
    [
        "127.0.0.1:5001/team/other",
        "127.0.0.1:5001/team/app/sub",
        "127.0.0.1:5001/team",
        "127.0.0.2:5001/team/app",
        "127.0.0.1:5001/team/app:bad tag",
        "127.0.0.1:5001/team/app@sha256:short",
        "team/app",
    ],
)
def test_g02_wrong_repository(alice: LocalSigner, reference: str) -> None:
    outcome = verify([alice.layer(payload(reference=reference))], [alice])
    assert codes(outcome) == [policy.WRONG_REPOSITORY]
    assert not outcome.verdict.allowed


@pytest.mark.parametrize(
    "reference",
    [REPOSITORY, f"{REPOSITORY}:v1", f"{REPOSITORY}@{DIGEST}", f"{REPOSITORY}:v1@{DIGEST}"],
)
def test_reference_with_tag_or_digest_names_the_repository(
    alice: LocalSigner, reference: str
) -> None:
    assert verify([alice.layer(payload(reference=reference))], [alice]).verdict.allowed


@pytest.mark.parametrize(
    "document",
    [
        # G-04 (a): an extra member in critical, critical.image, critical.identity
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "cosign container image signature",
                "extra": 1,
            },
            "optional": None,
        },
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": DIGEST, "other-digest": DIGEST},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY, "x": ""},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        # G-04 (b): a wrong type
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "atomic container signature",
            },
            "optional": None,
        },
        # a missing member, a wrong JSON type, an extra top-level member
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": [DIGEST]},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "cosign container image signature",
            },
            "optional": None,
            "more": 1,
        },
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "cosign container image signature",
            },
            "optional": [],
        },
        [],
    ],
)
def test_g04_over_permissive_payload_is_invalid(alice: LocalSigner, document: object) -> None:
    outcome = verify([alice.layer(json.dumps(document).encode())], [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.INVALID]
    assert outcome.checks[0].signer == "alice.pub"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        payload()[:-7],  # G-04 (c): truncated
        # G-04 (d): docker-manifest-digest given twice; Python's json keeps the last
        b'{"critical":{"identity":{"docker-reference":"' + REPOSITORY.encode() + b'"},'
        b'"image":{"docker-manifest-digest":"' + OTHER_DIGEST.encode() + b'",'
        b'"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}',
        payload().replace(b'"optional":null', b'"optional":NaN'),
        b"\xef\xbb\xbf" + payload(),
        b"[" * 100_000,
    ],
)
def test_g04_malformed_payload_is_invalid(alice: LocalSigner, data: bytes) -> None:
    limits = Limits(manifest_bytes=64 * 1024, payload_bytes=200_000, signatures=5)
    outcome = verify([alice.layer(data)], [alice], limits=limits)
    assert codes(outcome) == [policy.INVALID]


def test_g04_large_optional_text_is_accepted_and_reports_stay_bounded(alice: LocalSigner) -> None:
    # G-04 (e): 1 MiB of HTML and ANSI text in optional.
    noisy = "\x1b[31m<script>" * (1 << 16)
    data = simple_signing_payload(REPOSITORY, DIGEST, {"creator": noisy, "note": "<b>" * 1000})
    limits = Limits(manifest_bytes=64 * 1024, payload_bytes=4 << 20, signatures=5)
    outcome = verify([alice.layer(data)], [alice], limits=limits)
    assert outcome.verdict.allowed
    assert all(len(f.message) <= 512 for f in outcome.verdict.findings)


def test_wrong_reference_text_is_sanitized_in_findings(alice: LocalSigner) -> None:
    outcome = verify([alice.layer(payload(reference="evil\x1b[2J\n" + "x" * 5000))], [alice])
    (finding,) = outcome.verdict.findings
    assert "\x1b" not in finding.message and "\n" not in finding.message
    assert len(finding.message) <= 512


def test_missing_signature_annotation_is_invalid(alice: LocalSigner) -> None:
    layer = SignatureLayer(payload(), {"other": "x"})
    assert codes(verify([layer], [alice])) == [policy.INVALID]


@pytest.mark.parametrize(
    "text", ["not base64!", "YWJj=", "YWJj====", "YWJ", "YWJ=", "", "YW Jj", "x" * 20_000]
)
def test_malformed_signature_annotation_is_invalid(alice: LocalSigner, text: str) -> None:
    layer = SignatureLayer(payload(), {SIGNATURE_ANNOTATION: text})
    assert codes(verify([layer], [alice])) == [policy.INVALID]


def test_other_attachments_are_skipped(alice: LocalSigner) -> None:
    other = SignatureLayer(b"sbom", {}, media_type="text/spdx")
    outcome = verify([other, alice.layer(payload())], [alice])
    assert outcome.verdict.allowed
    assert [c.location for c in outcome.checks] == [f"{LOCATION}/layers[1]"]


def test_g09_payload_larger_than_the_limit_is_not_read(alice: LocalSigner) -> None:
    big = simple_signing_payload(REPOSITORY, DIGEST, {"pad": "x" * 5000})
    artifact, staging = stage([alice.layer(big)])
    outcome = run([artifact], staging, [alice])
    assert codes(outcome) == [policy.TOO_LARGE]
    assert sha256(big) not in [key for key, _ in staging.reads]


def test_g09_staged_payload_longer_than_its_descriptor(alice: LocalSigner) -> None:
    # The descriptor says a small size; the staged bytes are larger than the
    # limit. At most limit + 1 bytes are read.
    layer = alice.layer(payload())
    artifact, staging = stage([layer])
    staging.objects[sha256(layer.payload)] = b"x" * 10_000
    outcome = run([artifact], staging, [alice])
    assert codes(outcome) == [policy.TOO_LARGE]
    assert (sha256(layer.payload), LIMITS.payload_bytes) in staging.reads


def test_staged_payload_that_does_not_hash_to_its_descriptor(alice: LocalSigner) -> None:
    layer = alice.layer(payload())
    artifact, staging = stage([layer])
    other = payload(digest=OTHER_DIGEST)
    assert len(other) == len(layer.payload)
    staging.objects[sha256(layer.payload)] = other
    assert codes(run([artifact], staging, [alice])) == [policy.BLOB_MISMATCH]


def test_staged_payload_of_another_size(alice: LocalSigner) -> None:
    layer = alice.layer(payload())
    artifact, staging = stage([layer])
    staging.objects[sha256(layer.payload)] = layer.payload + b" "
    assert codes(run([artifact], staging, [alice])) == [policy.BLOB_MISMATCH]


def test_staged_manifest_that_does_not_hash_to_its_key(alice: LocalSigner) -> None:
    artifact, staging = stage([alice.layer(payload())])
    staging.objects[artifact.manifest_key] += b" "
    outcome = run([artifact], staging, [alice])
    assert codes(outcome) == [policy.BLOB_MISMATCH]
    assert outcome.checks[0].location == LOCATION


def test_oversized_manifest(alice: LocalSigner) -> None:
    artifact, staging = stage([alice.layer(payload())])
    limits = Limits(manifest_bytes=100, payload_bytes=4096, signatures=5)
    assert codes(run([artifact], staging, [alice], limits=limits)) == [policy.TOO_LARGE]


def test_g08_too_many_layers_are_refused_before_any_is_verified(alice: LocalSigner) -> None:
    layers = [alice.layer(payload())] * (LIMITS.signatures + 1)
    artifact, staging = stage(layers)
    outcome = run([artifact], staging, [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.TOO_MANY]
    assert staging.reads == [(artifact.manifest_key, LIMITS.manifest_bytes)]


def test_g08_too_many_artifacts(alice: LocalSigner) -> None:
    artifact, staging = stage([alice.layer(payload())])
    outcome = run([artifact] * (LIMITS.signatures + 1), staging, [alice])
    assert codes(outcome) == [policy.TOO_MANY]
    assert staging.reads == []


@pytest.mark.parametrize(
    "manifest",
    [
        b"not json",
        b'{"layers":[],"layers":[]}',
        b'{"manifests":[]}',
        b"[]",
        b'{"layers":[{"mediaType":"x","digest":"sha256:AB","size":1}]}',
        b'{"layers":[{"mediaType":"x","digest":"' + DIGEST.encode() + b'","size":-1}]}',
        b'{"layers":[{"mediaType":"x","digest":"' + DIGEST.encode() + b'","size":1.0}]}',
        b'{"layers":[{"mediaType":"x","digest":"' + DIGEST.encode() + b'","size":1,'
        b'"annotations":{"a":1}}]}',
        b'{"layers":[1]}',
        b"[" * 50_000,
    ],
)
def test_malformed_signature_manifest_is_invalid(alice: LocalSigner, manifest: bytes) -> None:
    staging = MemoryStaging()
    artifact = Artifact(LOCATION, staging.put(manifest))
    outcome = run([artifact], staging, [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.INVALID]


def test_missing_staged_content_is_an_error_not_a_verdict(alice: LocalSigner) -> None:
    with pytest.raises(KeyError):
        run([Artifact(LOCATION, DIGEST)], MemoryStaging(), [alice])


def test_warn_mode_turns_failures_into_warnings(alice: LocalSigner, bob: LocalSigner) -> None:
    outcome = verify([bob.layer(payload())], [alice], mode=Mode.WARN)
    assert outcome.verdict.allowed
    assert [(f.code, f.severity) for f in outcome.verdict.findings] == [
        (policy.UNTRUSTED_KEY, Severity.WARNING)
    ]
    assert run([], MemoryStaging(), [alice], mode=Mode.WARN).verdict.allowed


def test_threshold_two_needs_two_distinct_keys(alice: LocalSigner, bob: LocalSigner) -> None:
    one = verify([alice.layer(payload())], [alice, bob], threshold=2)
    assert not one.verdict.allowed
    assert codes(one)[0] == policy.THRESHOLD_NOT_MET
    same_twice = verify([alice.layer(payload()), alice.layer(payload())], [alice, bob], threshold=2)
    assert not same_twice.verdict.allowed
    both = verify([alice.layer(payload()), bob.layer(payload())], [alice, bob], threshold=2)
    assert both.verdict.allowed
    assert codes(both) == [policy.VERIFIED, policy.VERIFIED]


def test_g12_one_key_listed_under_two_names_is_one_signer(alice: LocalSigner) -> None:
    artifact, staging = stage([alice.layer(payload())])
    trust = make_trust(load_trusted_keys([("a.pub", alice.pem), ("copy-of-a.pub", alice.pem)]))
    outcome = verify_signatures(
        Requirement(Mode.ENFORCE, 2),
        Subject(DIGEST, (REPOSITORY,)),
        [artifact],
        trust,
        LIMITS,
        staging,
    )
    assert not outcome.verdict.allowed
    assert codes(outcome)[0] == policy.THRESHOLD_NOT_MET


def test_threshold_zero_means_one(alice: LocalSigner) -> None:
    assert verify([alice.layer(payload())], [alice], threshold=0).verdict.allowed
    assert not run([], MemoryStaging(), [alice], threshold=0).verdict.allowed


def test_signatures_across_artifacts_count_together(alice: LocalSigner, bob: LocalSigner) -> None:
    first, staging = stage([alice.layer(payload())])
    second, staging = stage([bob.layer(payload())], staging)
    outcome = run([first, second], staging, [alice, bob], threshold=2)
    assert outcome.verdict.allowed


def test_subject_digest_must_be_exact() -> None:
    for digest in ("", "sha256:AB", "md5:" + "a" * 32, DIGEST.upper()):
        with pytest.raises(ValueError):
            Subject(digest, (REPOSITORY,))
    with pytest.raises(ValueError):
        Subject(DIGEST, ())


def test_g08_signatures_are_counted_across_artifacts(alice: LocalSigner) -> None:
    # Each artifact is under the per-manifest limit; together they are not.
    staging = MemoryStaging()
    artifacts = []
    for _ in range(3):
        artifact, staging = stage([alice.layer(payload()), alice.layer(payload())], staging)
        artifacts.append(artifact)
    outcome = run(artifacts, staging, [alice])
    assert outcome.verdict.allowed  # the first five verified
    assert [c.code for c in outcome.checks].count(policy.VERIFIED) == LIMITS.signatures
    assert outcome.checks[-1].code == policy.TOO_MANY


def test_f15_referrer_of_another_manifest_is_not_counted(alice: LocalSigner) -> None:
    layer = alice.layer(payload())
    staging = MemoryStaging()
    manifest, blobs = referrer_manifest(
        [(layer.payload, SIMPLESIGNING, layer.annotations)], OTHER_DIGEST
    )
    for blob in blobs.values():
        staging.put(blob)
    outcome = run([Artifact("referrer", staging.put(manifest))], staging, [alice])
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.SUBJECT_MISMATCH]
    ours, blobs = referrer_manifest([(layer.payload, SIMPLESIGNING, layer.annotations)], DIGEST)
    for blob in blobs.values():
        staging.put(blob)
    assert run([Artifact("referrer", staging.put(ours))], staging, [alice]).verdict.allowed
