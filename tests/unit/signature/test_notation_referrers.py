"""Notation signatures as the verifier meets them: referrers of the manifest,
counted towards the rule's requirement with cosign's, bound to the staged bytes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pullguard.services.signature import policy
from pullguard.services.signature.notation.envelope import COSE, JWS
from pullguard.services.signature.notation.layer import NOT_A_REFERRER
from pullguard.services.signature.notation.verify import NotationTrust
from pullguard.services.signature.policy import Mode, Requirement
from pullguard.services.signature.verifier import Artifact, Limits, Subject, verify_signatures
from tests.support.cosign import MemoryStaging, make_trust
from tests.support.notation import CA, Signing, der, envelope, signature_manifest, target

MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}
).encode()
LIMITS = Limits(manifest_bytes=64 * 1024, payload_bytes=64 * 1024, signatures=5)
REQUIRE = Requirement(Mode.ENFORCE)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


def _sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(
    ca: CA,
    manifest: bytes = MANIFEST,
    subject_content: bytes | None = MANIFEST,
    media_type: str = JWS,
    drop_subject: bool = False,
    artifact_type: str = "",
    with_notation: bool = True,
) -> tuple[bool, list[policy.SignatureCheck]]:
    digest = _sha(MANIFEST)
    key, leaf = ca.issue()
    payload = target(digest, "application/vnd.oci.image.manifest.v1+json", len(MANIFEST))
    data = envelope(media_type, key, [leaf, ca.certificate], Signing(payload=payload))
    referrer, blobs = signature_manifest(digest, len(MANIFEST), data, media_type)
    document = json.loads(referrer)
    if drop_subject:
        del document["subject"]
    if artifact_type:
        document["artifactType"] = artifact_type
    referrer = json.dumps(document).encode()
    staging = MemoryStaging(blobs)
    key_of = staging.put(referrer)
    notation = NotationTrust.of([("ca", [der(ca.certificate)])], ["*"], "strict", {})
    trust = replace(make_trust(), notation=notation if with_notation else None)
    subject = Subject(digest, ("127.0.0.1:5000/app",), subject_content)
    outcome = verify_signatures(
        REQUIRE, subject, [Artifact("referrer:app@x", key_of)], trust, LIMITS, staging
    )
    return outcome.verdict.allowed, list(outcome.checks)


@pytest.mark.parametrize("media_type", [JWS, COSE])
def test_a_notation_referrer_meets_the_requirement(ca: CA, media_type: str) -> None:
    allowed, checks = run(ca, media_type=media_type)
    assert allowed and [c.code for c in checks] == [policy.VERIFIED]
    assert checks[0].location == "referrer:app@x/layers[0]"


def test_without_a_notation_policy_it_is_untrusted(ca: CA) -> None:
    allowed, checks = run(ca, with_notation=False)
    assert not allowed and [c.code for c in checks] == [policy.UNTRUSTED_KEY]


def test_a_notation_signature_must_be_a_referrer(ca: CA) -> None:
    allowed, checks = run(ca, drop_subject=True)
    assert not allowed and [c.code for c in checks] == [NOT_A_REFERRER]


def test_envelopes_outside_a_notation_artifact_are_not_read(ca: CA) -> None:
    allowed, checks = run(ca, artifact_type="application/vnd.example.other")
    assert not allowed and checks == []


def test_the_manifest_bytes_must_be_staged_to_bind_media_type_and_size(ca: CA) -> None:
    allowed, checks = run(ca, subject_content=None)
    assert not allowed and [c.code for c in checks] == [policy.INVALID]
    assert "not staged" in checks[0].reason


def test_notation_layers_count_against_the_signature_budget(ca: CA) -> None:
    """THREATS G-15 (g) / G-08: more envelopes than the limit are refused, none beyond read."""
    digest = _sha(MANIFEST)
    key, leaf = ca.issue()
    payload = target(digest, "application/vnd.oci.image.manifest.v1+json", len(MANIFEST))
    data = envelope(JWS, key, [leaf, ca.certificate], Signing(payload=payload))
    referrer, blobs = signature_manifest(digest, len(MANIFEST), data)
    document = json.loads(referrer)
    document["layers"] = document["layers"] * (LIMITS.signatures + 1)
    staging = MemoryStaging(blobs)
    key_of = staging.put(json.dumps(document).encode())
    notation = NotationTrust.of([("ca", [der(ca.certificate)])], ["*"], "strict", {})
    trust = replace(make_trust(), notation=notation)
    subject = Subject(digest, ("127.0.0.1:5000/app",), MANIFEST)
    outcome = verify_signatures(
        Requirement(Mode.ENFORCE, threshold=1),
        subject,
        [Artifact("referrer:app@x", key_of)],
        trust,
        LIMITS,
        staging,
    )
    assert policy.TOO_MANY in [c.code for c in outcome.checks]
