"""Sigstore bundles found as OCI referrers of an image (cosign v3's layout).

Keyless bundles are the sigstore conformance suite's real ones, attached to
the "image" whose digest they sign (sha256 of a.txt: the signature domain
only needs the digest). Key bundles are made here with in-process keys, in
cosign v3's form: a DSSE in-toto statement, predicate
``https://sigstore.dev/cosign/sign/v1``, subject = the manifest digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket

import pytest

from pullguard.services.signature import bundles, policy
from pullguard.services.signature.keys import load_trusted_keys
from pullguard.services.signature.policy import Mode, Requirement
from pullguard.services.signature.sigstore_adapter import SigstoreTrust, production_trust_root
from pullguard.services.signature.trustroot import parse_trust_root
from pullguard.services.signature.verifier import (
    Artifact,
    Limits,
    Outcome,
    Subject,
    verify_signatures,
)
from tests.support.cosign import (
    BUNDLE_V03,
    LocalSigner,
    MemoryStaging,
    dsse_envelope,
    dsse_key_bundle,
    key_bundle,
    make_trust,
    message_key_bundle,
    referrer_manifest,
    statement,
)
from tests.support.shared import conformance

CASES = conformance("sigstore-bundle-verify")
A_TXT = (CASES / "a.txt").read_bytes()
DIGEST = "sha256:" + hashlib.sha256(A_TXT).hexdigest()
OTHER = "sha256:" + "ee" * 32
REPOSITORY = "ghcr.io/myorg/app"
ISSUER = "https://token.actions.githubusercontent.com"
IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
LIMITS = Limits(64 * 1024, 1 << 20, 10)
PRODUCTION_TEXT = production_trust_root()
PRODUCTION = parse_trust_root(PRODUCTION_TEXT)
BACKEND = SigstoreTrust(PRODUCTION_TEXT)


@pytest.fixture(scope="module")
def alice() -> LocalSigner:
    return LocalSigner("alice.pub")


def case_bundle(name: str) -> bytes:
    return (CASES / name / "bundle.sigstore.json").read_bytes()


def run(
    blobs: list[bytes],
    keys: tuple[LocalSigner, ...] = (),
    keyless: tuple[tuple[str, str, str], ...] = ((ISSUER, IDENTITY, ""),),
    subject: str = DIGEST,
    rekor_required: bool = False,
    content: bytes | None = None,
    media_type: str = BUNDLE_V03,
    backend: SigstoreTrust = BACKEND,
) -> Outcome:
    staging = MemoryStaging()
    manifest, stored = referrer_manifest([(b, media_type, {}) for b in blobs], subject)
    for blob in stored.values():
        staging.put(blob)
    trust = make_trust(
        load_trusted_keys((k.name, k.pem) for k in keys),
        keyless,
        PRODUCTION,
        rekor_required,
        bundles=backend,
    )
    return verify_signatures(
        Requirement(Mode.ENFORCE),
        Subject(DIGEST, (REPOSITORY,), content),
        [Artifact(f"referrer:{sha256_of(manifest)}", staging.put(manifest))],
        trust,
        LIMITS,
        staging,
    )


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def codes(outcome: Outcome) -> list[str]:
    return [f.code for f in outcome.verdict.findings]


@pytest.mark.parametrize(
    "case", ["happy-path-v0.1", "happy-path-v0.2", "happy-path-v0.3", "rekor2-happy-path"]
)
def test_keyless_message_signature_bundle_over_the_digest(case: str) -> None:
    if (CASES / case / "trusted_root.json").exists():
        text = (CASES / case / "trusted_root.json").read_bytes()
        outcome = run_with_root([case_bundle(case)], text)
    else:
        outcome = run([case_bundle(case)])
    assert outcome.verdict.allowed, outcome.verdict.findings
    (check,) = outcome.checks
    assert check.signer == f"{IDENTITY} ({ISSUER})"
    assert "no repository is signed" in check.reason


def run_with_root(blobs: list[bytes], root_text: bytes) -> Outcome:
    staging = MemoryStaging()
    manifest, stored = referrer_manifest([(b, BUNDLE_V03, {}) for b in blobs], DIGEST)
    for blob in stored.values():
        staging.put(blob)
    trust = make_trust(
        (), ((ISSUER, IDENTITY, ""),), parse_trust_root(root_text), bundles=SigstoreTrust(root_text)
    )
    return verify_signatures(
        Requirement(Mode.ENFORCE),
        Subject(DIGEST, (REPOSITORY,)),
        [Artifact("referrer", staging.put(manifest))],
        trust,
        LIMITS,
        staging,
    )


def test_f15_referrer_of_another_subject_is_ignored_and_never_counted() -> None:
    outcome = run([case_bundle("happy-path-v0.3")], subject=OTHER)
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.SUBJECT_MISMATCH]
    assert not outcome.checks[0].accepted


def test_g02_bundle_for_another_digest() -> None:
    staging = MemoryStaging()
    # The referrer claims OTHER and the bundle signs a.txt: checked against OTHER.
    manifest, stored = referrer_manifest([(case_bundle("happy-path-v0.3"), BUNDLE_V03, {})], OTHER)
    for blob in stored.values():
        staging.put(blob)
    outcome = verify_signatures(
        Requirement(Mode.ENFORCE),
        Subject(OTHER, (REPOSITORY,)),
        [Artifact("referrer", staging.put(manifest))],
        make_trust((), ((ISSUER, IDENTITY, ""),), PRODUCTION, bundles=BACKEND),
        LIMITS,
        staging,
    )
    assert codes(outcome) == [policy.WRONG_DIGEST]


def test_g11_keyless_bundle_of_another_identity() -> None:
    other = (
        ISSUER,
        "https://github.com/myorg/app/.github/workflows/release.yml@refs/heads/main",
        "",
    )
    outcome = run([case_bundle("happy-path-v0.3")], keyless=(other,))
    assert codes(outcome) == [policy.WRONG_IDENTITY]
    assert outcome.checks[0].reason.startswith(f"got certificate for {IDENTITY}")


def test_g11_keyless_bundle_matched_by_an_anchored_regex() -> None:
    regex = r"^https://github\.com/sigstore-conformance/.*@refs/heads/main$"
    assert run([case_bundle("happy-path-v0.3")], keyless=((ISSUER, "", regex),)).verdict.allowed


def test_keyless_bundle_needs_a_keyless_rule(alice: LocalSigner) -> None:
    outcome = run([case_bundle("happy-path-v0.3")], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g07_provenance_statement_is_not_an_image_signature() -> None:
    outcome = run([case_bundle("happy-path-intoto-in-dsse-v3")])
    assert codes(outcome) == [policy.WRONG_TYPE]
    assert "https://slsa.dev/provenance/v1 attestation" in outcome.checks[0].reason


@pytest.mark.parametrize(
    "case",
    [
        "bundle-unknown-version_fail",
        "bundle-malformed-json_fail",
        "bundle-invalid-base64-signature_fail",
        "bundle-empty-certificate-chain_fail",
        "bundle-negative-log-index_fail",
    ],
)
def test_g14_malformed_bundles_are_rejected_without_an_exception(case: str) -> None:
    outcome = run([case_bundle(case)])
    assert codes(outcome) == [policy.BUNDLE_INVALID]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong-hashedrekord-cert-and-sig_fail", policy.TLOG_INVALID),
        ("set-invalid-signature_fail", policy.TLOG_INVALID),
        ("checkpoint-wrong-roothash_fail", policy.TLOG_INVALID),
        ("signature-mismatch_fail", policy.INVALID),
    ],
)
def test_g05_g14_log_and_signature_failures_carry_their_code(case: str, code: str) -> None:
    assert codes(run([case_bundle(case)])) == [code]


def test_cosign_v3_key_signature_bundle(alice: LocalSigner) -> None:
    outcome = run([dsse_key_bundle(alice, statement(DIGEST))], keys=(alice,), keyless=())
    assert outcome.verdict.allowed, outcome.verdict.findings
    (check,) = outcome.checks
    assert check.signer == "alice.pub"
    assert "the statement names no repository" in check.reason
    assert "transparency log not checked" in check.reason


def test_key_bundle_without_log_entry_when_rekor_is_required(alice: LocalSigner) -> None:
    outcome = run(
        [dsse_key_bundle(alice, statement(DIGEST))], keys=(alice,), keyless=(), rekor_required=True
    )
    assert codes(outcome) == [policy.TLOG_MISSING]
    assert outcome.checks[0].signer == "alice.pub"


def test_g12_key_bundle_by_another_key(alice: LocalSigner) -> None:
    bob = LocalSigner("bob.pub")
    outcome = run([dsse_key_bundle(bob, statement(DIGEST))], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g07_statement_about_another_digest(alice: LocalSigner) -> None:
    outcome = run([dsse_key_bundle(alice, statement(OTHER))], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.SUBJECT_MISMATCH]


def test_g07_every_digest_of_the_subject_must_match(alice: LocalSigner) -> None:
    manifest = b'{"schemaVersion":2}'
    digest = sha256_of(manifest)
    good = hashlib.sha512(manifest).hexdigest()

    def outcome_for(sha512: str, content: bytes | None) -> Outcome:
        signed = statement(digest, extra_digests={"sha512": sha512})
        staging_bundle = dsse_key_bundle(alice, signed)
        staging = MemoryStaging()
        referrer, stored = referrer_manifest([(staging_bundle, BUNDLE_V03, {})], digest)
        for blob in stored.values():
            staging.put(blob)
        return verify_signatures(
            Requirement(Mode.ENFORCE),
            Subject(digest, (REPOSITORY,), content),
            [Artifact("referrer", staging.put(referrer))],
            make_trust(load_trusted_keys([(alice.name, alice.pem)])),
            LIMITS,
            staging,
        )

    assert outcome_for(good, manifest).verdict.allowed
    assert codes(outcome_for("00" * 64, manifest)) == [policy.SUBJECT_MISMATCH]
    # Without the manifest bytes a sha512 cannot be checked: not counted.
    assert codes(outcome_for(good, None)) == [policy.SUBJECT_MISMATCH]


def test_g02_statement_naming_another_repository(alice: LocalSigner) -> None:
    named = statement(DIGEST, name="ghcr.io/attacker/app")
    outcome = run([dsse_key_bundle(alice, named)], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.WRONG_REPOSITORY]
    ours = statement(DIGEST, name=REPOSITORY)
    assert run([dsse_key_bundle(alice, ours)], keys=(alice,), keyless=()).verdict.allowed


def test_key_message_signature_bundle_over_the_digest(alice: LocalSigner) -> None:
    outcome = run([message_key_bundle(alice, DIGEST)], keys=(alice,), keyless=())
    assert outcome.verdict.allowed, outcome.verdict.findings


def test_g02_key_message_signature_over_another_digest(alice: LocalSigner) -> None:
    assert codes(run([message_key_bundle(alice, OTHER)], keys=(alice,), keyless=())) == [
        policy.WRONG_DIGEST
    ]
    lying = message_key_bundle(alice, OTHER, message_digest=DIGEST)
    assert codes(run([lying], keys=(alice,), keyless=())) == [policy.UNTRUSTED_KEY]


def test_conformance_managed_key_bundle_with_its_log_entry() -> None:
    pem = (CASES / "managed-key-happy-path" / "key.pub").read_text()
    staging_trust = make_trust(
        load_trusted_keys([("key.pub", pem)]), (), PRODUCTION, True, bundles=BACKEND
    )
    data = case_bundle("managed-key-happy-path")
    verified = bundles.verify_bundle(data, bundles.ArtifactRef(DIGEST), staging_trust)
    assert (verified.signer, verified.kind) == ("key.pub", "message")
    assert verified.tlog == "in transparency log (hashedrekord/0.0.1)"
    # Its log entry is from the staging instance: not under the production root.
    other = bundles.ArtifactRef(DIGEST)
    with pytest.raises(bundles.BundleRejected) as caught:
        bundles.verify_bundle(case_bundle("managed-key-and-trusted-root"), other, staging_trust)
    assert caught.value.code == policy.TLOG_INVALID


def test_g05_key_bundle_log_entry_of_another_signature() -> None:
    # managed-key-happy-path's entry under a bundle with another (valid)
    # signature by the same key over the same digest would need the key;
    # instead: its entry pasted into a bundle signed by a trusted local key.
    alice = LocalSigner("alice.pub")
    entry = json.loads(case_bundle("managed-key-happy-path"))["verificationMaterial"]["tlogEntries"]
    raw = bytes.fromhex(DIGEST.split(":")[1])
    data = key_bundle(
        {"messageSignature": {"signature": base64.b64encode(alice.sign_digest(raw)).decode()}},
        tlog_entries=entry,
    )
    outcome = run([data], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.TLOG_INVALID]
    assert "not this signature" in outcome.checks[0].reason


@pytest.mark.parametrize("what", ["tlog", "timestamps"])
def test_g08d_g14_bundle_counts_are_bounded(alice: LocalSigner, what: str) -> None:
    entries = [{"logIndex": "1"}] * 33 if what == "tlog" else []
    stamps = [{"signedTimestamp": "AA=="}] * 33 if what == "timestamps" else []
    data = key_bundle(
        {"dsseEnvelope": dsse_envelope([alice], statement(DIGEST))},
        tlog_entries=entries,
        timestamps=stamps,
    )
    assert codes(run([data], keys=(alice,), keyless=())) == [policy.BUNDLE_INVALID]


def test_g07_subject_counts_are_bounded(alice: LocalSigner) -> None:
    many = [{"digest": {"sha256": "00" * 32}}] * 1025
    outcome = run(
        [dsse_key_bundle(alice, statement(DIGEST, subjects=many))], keys=(alice,), keyless=()
    )
    assert codes(outcome) == [policy.INVALID]
    digests = {f"alg{i}": "00" for i in range(32)}
    wide = statement(DIGEST, extra_digests=digests)
    outcome = run([dsse_key_bundle(alice, wide)], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.INVALID]


def test_g07_envelope_with_a_second_untrusted_signature(alice: LocalSigner) -> None:
    envelope = dsse_envelope([alice, LocalSigner("mallory.pub")], statement(DIGEST))
    outcome = run([key_bundle({"dsseEnvelope": envelope})], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.BUNDLE_INVALID]


@pytest.mark.parametrize(
    "payload_type", ["application/json", "text/plain", "application/vnd.in-toto+jsonx"]
)
def test_g07_payload_type_must_be_in_toto(alice: LocalSigner, payload_type: str) -> None:
    envelope = dsse_envelope([alice], statement(DIGEST), payload_type)
    outcome = run([key_bundle({"dsseEnvelope": envelope})], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.INVALID]


def test_g07_payload_altered_after_signing(alice: LocalSigner) -> None:
    envelope = dsse_envelope([alice], statement(DIGEST))
    envelope["payload"] = base64.b64encode(statement(DIGEST, name="x")).decode()
    outcome = run([key_bundle({"dsseEnvelope": envelope})], keys=(alice,), keyless=())
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


@pytest.mark.parametrize(
    "data",
    [
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","mediaType":"x"}',
        b"[]",
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}',
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",'
        b'"verificationMaterial":{"publicKey":{},"certificate":{}},"messageSignature":{}}',
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",'
        b'"verificationMaterial":{"publicKey":{}},"messageSignature":{},"dsseEnvelope":{}}',
    ],
)
def test_g14_structurally_wrong_bundles(alice: LocalSigner, data: bytes) -> None:
    assert codes(run([data], keys=(alice,))) == [policy.BUNDLE_INVALID]


def test_g09_oversized_bundle_is_not_read(alice: LocalSigner) -> None:
    data = dsse_key_bundle(alice, statement(DIGEST, predicate={"pad": "x" * (2 << 20)}))
    assert codes(run([data], keys=(alice,), keyless=())) == [policy.TOO_LARGE]


def test_verification_is_offline(monkeypatch: pytest.MonkeyPatch, alice: LocalSigner) -> None:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = SigstoreTrust(production_trust_root())
    assert run([case_bundle("happy-path-v0.3")], backend=fresh).verdict.allowed
    assert run([case_bundle("happy-path-intoto-in-dsse-v3")], backend=fresh).checks[0].code == (
        policy.WRONG_TYPE
    )
    trust = make_trust(
        load_trusted_keys(
            [("key.pub", (CASES / "managed-key-happy-path" / "key.pub").read_text())]
        ),
        (),
        PRODUCTION,
        True,
        bundles=fresh,
    )
    bundles.verify_bundle(case_bundle("managed-key-happy-path"), bundles.ArtifactRef(DIGEST), trust)
    assert attempts == []


def test_g10_certificate_authority_outside_its_trusted_root_window() -> None:
    # happy-path-v0.3 was signed in 2023 by the CA valid from 2022-04-13; a
    # root that ends every CA's window before that must not verify it.
    document = json.loads(PRODUCTION_TEXT)
    for authority in document["certificateAuthorities"]:
        authority["validFor"]["end"] = "2022-04-14T00:00:00Z"
    text = json.dumps(document).encode()
    outcome = run_with_root([case_bundle("happy-path-v0.3")], text)
    assert codes(outcome) == [policy.UNTRUSTED_CERTIFICATE]
    assert "certificate authority valid at" in outcome.checks[0].reason
