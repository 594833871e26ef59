"""Attestations (cosign .att DSSE layers, sigstore bundle referrers) for signed provenance.

Only statements whose envelope verified under the provenance signers and
whose subject names the digest are returned; what they say comes from the
signed statement, never from the unsigned ``predicateType`` annotation.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.services.signature import dsse, policy
from pullguard.services.signature.attestations import (
    ATTESTATION_VERIFIED,
    AttestationOutcome,
    verify_attestations,
)
from pullguard.services.signature.sigstore_adapter import SigstoreTrust
from pullguard.services.signature.trust import Trust
from pullguard.services.signature.trustroot import parse_trust_root
from pullguard.services.signature.verifier import Artifact, Limits, Subject
from tests.support.cosign import (
    BUNDLE_V03,
    DSSE_ENVELOPE,
    LocalSigner,
    MemoryStaging,
    OfflineSigstore,
    SignatureLayer,
    attestation_layer,
    dsse_envelope,
    make_trust,
    pem_of_cert,
    referrer_manifest,
    staged_signature_image,
    statement,
    trusting,
)
from tests.support.shared import conformance

DIGEST = "sha256:" + "5a" * 32
REPOSITORY = "ghcr.io/myorg/app"
LIMITS = Limits(64 * 1024, 1 << 20, 10)
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
GITHUB_BUILDER = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v2.0.0"

V02_PREDICATE = {
    "builder": {"id": GITHUB_BUILDER},
    "buildType": "https://github.com/slsa-framework/slsa-github-generator/container@v1",
    "invocation": {
        "configSource": {
            "uri": "git+https://github.com/myorg/app@refs/heads/main",
            "digest": {"sha1": "abc"},
            "entryPoint": ".github/workflows/release.yml",
        }
    },
    "materials": [{"uri": "git+https://github.com/other/repo@refs/heads/x"}],
}
V1_PREDICATE = {
    "buildDefinition": {
        "buildType": "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
        "externalParameters": {
            "workflow": {
                "ref": "refs/tags/v1",
                "repository": "https://github.com/myorg/app",
                "path": ".github/workflows/release.yml",
            }
        },
        "resolvedDependencies": [{"uri": "git+https://github.com/myorg/app@refs/tags/v1"}],
    },
    "runDetails": {"builder": {"id": GITHUB_BUILDER}},
}


@pytest.fixture(scope="module")
def alice() -> LocalSigner:
    return LocalSigner("builder.pub")


def att_layer(
    signer: LocalSigner,
    predicate_type: str = SLSA_V02,
    predicate: object = V02_PREDICATE,
    digest: str = DIGEST,
    annotation: str | None = None,
) -> SignatureLayer:
    return attestation_layer(
        signer, statement(digest, predicate_type, predicate, REPOSITORY), annotation
    )


def run(
    layers: list[SignatureLayer], trust: Trust | None, content: bytes | None = None
) -> AttestationOutcome:
    staging, artifacts = staged_signature_image(layers, "tag:sha256-5a.att")
    return verify_attestations(
        Subject(DIGEST, (REPOSITORY,), content),
        artifacts,
        trust,
        LIMITS,
        staging,
    )


def codes(outcome: AttestationOutcome) -> list[str]:
    return [f.code for f in outcome.verdict.findings]


def test_slsa_v02_provenance_from_a_cosign_att_layer(alice: LocalSigner) -> None:
    outcome = run([att_layer(alice)], trusting(alice))
    assert outcome.verdict.allowed
    (found,) = outcome.statements
    assert (found.predicate_type, found.builder_id, found.source_repository, found.signer) == (
        SLSA_V02,
        GITHUB_BUILDER,
        "https://github.com/myorg/app",
        "builder.pub",
    )
    assert found.found_at == "tag:sha256-5a.att/layers[0]"
    assert codes(outcome) == [ATTESTATION_VERIFIED]


def test_slsa_v1_provenance(alice: LocalSigner) -> None:
    outcome = run([att_layer(alice, SLSA_V1, V1_PREDICATE)], trusting(alice))
    (found,) = outcome.statements
    assert (found.builder_id, found.source_repository) == (
        GITHUB_BUILDER,
        "https://github.com/myorg/app",
    )


def _external(value: object) -> dict[str, object]:
    return {"buildDefinition": {"externalParameters": {"source": value}}}


@pytest.mark.parametrize(
    ("predicate_type", "predicate", "source"),
    [
        (SLSA_V02, {"materials": [{"uri": "git+https://h/o/r@x"}]}, "https://h/o/r"),
        (SLSA_V1, _external("git+https://h/o/r@v1"), "https://h/o/r"),
        (SLSA_V1, _external({"uri": "https://h/o/r"}), "https://h/o/r"),
        (
            SLSA_V1,
            {"buildDefinition": {"resolvedDependencies": [{"uri": "git+ssh://git@h/o/r@main"}]}},
            "ssh://git@h/o/r",
        ),
        ("https://example.com/other", {"builder": {"id": "b"}}, ""),
    ],
)
def test_source_repository_fallbacks(predicate_type: str, predicate: object, source: str) -> None:
    statement_ = dsse.Statement("https://in-toto.io/Statement/v1", predicate_type, (), predicate)
    assert dsse.provenance_facts(statement_).source_repository == source


def test_s02_g07_unsigned_predicate_type_annotation_is_ignored(alice: LocalSigner) -> None:
    # The layer claims SLSA v1; the signed statement is a vulnerability scan.
    vuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
    layer = att_layer(alice, vuln, {"scanner": {}}, annotation=SLSA_V1)
    outcome = run([layer], trusting(alice))
    (found,) = outcome.statements
    assert found.predicate_type == vuln
    assert (found.builder_id, found.source_repository) == ("", "")
    assert policy.UNSIGNED_ANNOTATION_IGNORED in codes(outcome)


def test_g07_attestation_for_another_image(alice: LocalSigner) -> None:
    outcome = run([att_layer(alice, digest="sha256:" + "77" * 32)], trusting(alice))
    assert outcome.statements == ()
    assert codes(outcome) == [policy.SUBJECT_MISMATCH]


def test_g07_untrusted_signer(alice: LocalSigner) -> None:
    outcome = run([att_layer(LocalSigner("mallory.pub"))], trusting(alice))
    assert outcome.statements == ()
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g07_payload_altered_after_signing(alice: LocalSigner) -> None:
    layer = att_layer(alice)
    envelope = json.loads(layer.payload)
    envelope["payload"] = base64.b64encode(
        statement(DIGEST, SLSA_V02, {**V02_PREDICATE, "builder": {"id": "evil"}})
    ).decode()
    forged = SignatureLayer(json.dumps(envelope).encode(), layer.annotations, DSSE_ENVELOPE)
    outcome = run([forged], trusting(alice))
    assert outcome.statements == ()
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g07_two_signatures_one_untrusted(alice: LocalSigner) -> None:
    envelope = dsse_envelope([alice, LocalSigner()], statement(DIGEST, SLSA_V02, V02_PREDICATE))
    layer = SignatureLayer(json.dumps(envelope).encode(), {}, DSSE_ENVELOPE)
    outcome = run([layer], trusting(alice))
    assert outcome.statements == ()
    assert codes(outcome) == [policy.INVALID]


def test_g07_invalid_predicate_json_is_refused(alice: LocalSigner) -> None:
    payload = b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"'
    envelope = dsse_envelope([alice], payload + b'5a"}}],"predicateType":"x","predicate":{')
    layer = SignatureLayer(json.dumps(envelope).encode(), {}, DSSE_ENVELOPE)
    assert codes(run([layer], trusting(alice))) == [policy.INVALID]


def test_no_provenance_signers_means_no_statements(alice: LocalSigner) -> None:
    outcome = run([att_layer(alice)], None)
    assert outcome.statements == ()
    assert codes(outcome) == [policy.NOT_REQUIRED]
    assert outcome.verdict.allowed


def test_g08_attestation_count_is_bounded(alice: LocalSigner) -> None:
    outcome = run([att_layer(alice)] * (LIMITS.signatures + 1), trusting(alice))
    assert codes(outcome) == [policy.TOO_MANY]
    assert outcome.statements == ()


def test_keyless_att_layer_with_rekor_dsse_entry() -> None:
    fulcio = OfflineSigstore()
    issuer = "https://token.actions.githubusercontent.com"
    signed_at = datetime(2024, 6, 1, tzinfo=UTC)
    key, cert = fulcio.leaf(GITHUB_BUILDER, issuer, signed_at)
    payload = statement(DIGEST, SLSA_V1, V1_PREDICATE)
    signature = key.sign(dsse.pae(dsse.IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": dsse.IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    }
    body = {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [
                {
                    "signature": base64.b64encode(signature).decode(),
                    "verifier": base64.b64encode(pem_of_cert(cert).encode()).decode(),
                }
            ],
        },
    }
    annotations = {
        "predicateType": SLSA_V1,
        "dev.sigstore.cosign/certificate": pem_of_cert(cert),
        "dev.sigstore.cosign/chain": fulcio.chain_pem(),
        "dev.sigstore.cosign/bundle": fulcio.promise(
            body, int((signed_at + timedelta(seconds=20)).timestamp())
        ),
    }
    layer = SignatureLayer(json.dumps(envelope).encode(), annotations, DSSE_ENVELOPE)
    trust = make_trust(
        (),
        ((issuer, GITHUB_BUILDER, ""),),
        parse_trust_root(fulcio.trusted_root()),
        rekor_required=True,
    )
    outcome = run([layer], trust)
    (found,) = outcome.statements
    assert found.signer == f"{GITHUB_BUILDER} ({issuer})"
    assert found.source_repository == "https://github.com/myorg/app"
    # The same envelope with the SET of another payload is rejected.
    other = statement("sha256:" + "99" * 32, SLSA_V1, V1_PREDICATE)
    body["spec"]["payloadHash"]["value"] = hashlib.sha256(other).hexdigest()  # type: ignore[index]
    annotations["dev.sigstore.cosign/bundle"] = fulcio.promise(
        body, int((signed_at + timedelta(seconds=20)).timestamp())
    )
    layer = SignatureLayer(json.dumps(envelope).encode(), annotations, DSSE_ENVELOPE)
    assert [c.code for c in run([layer], trust).checks] == [policy.TLOG_INVALID]


def test_keyless_bundle_attestation_from_the_conformance_suite() -> None:
    case = conformance("sigstore-bundle-verify") / "intoto-with-custom-trust-root"
    digest = "sha256:" + hashlib.sha256((case / "artifact").read_bytes()).hexdigest()
    root_text = (case / "trusted_root.json").read_bytes()
    identity = (
        "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
        ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
    )
    trust = make_trust(
        (),
        (("https://token.actions.githubusercontent.com", identity, ""),),
        parse_trust_root(root_text),
        bundles=SigstoreTrust(root_text),
    )
    staging = MemoryStaging()
    claimed = {"dev.sigstore.bundle.predicateType": "https://spdx.dev/Document"}
    manifest, blobs = referrer_manifest(
        [((case / "bundle.sigstore.json").read_bytes(), BUNDLE_V03, {})],
        digest,
        annotations=claimed,
    )
    for blob in blobs.values():
        staging.put(blob)
    outcome = verify_attestations(
        Subject(digest, (REPOSITORY,)),
        [Artifact("referrer", staging.put(manifest))],
        trust,
        LIMITS,
        staging,
    )
    (found,) = outcome.statements
    assert found.predicate_type == SLSA_V1
    assert found.source_repository == "https://github.com/sigstore/sigstore-conformance"
    assert found.builder_id.startswith("https://")
    assert policy.UNSIGNED_ANNOTATION_IGNORED in codes(outcome)
