"""Legacy keyless signatures (certificate + chain + Rekor SET annotations) from an offline
Fulcio and Rekor made in the test: signed time, chain, identity, log binding.

``OfflineSigstore`` (tests/support/cosign.py) issues Fulcio-style certificates
and SETs like the public-good instance; each test changes one thing.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.services.signature import policy
from pullguard.services.signature.identity import CertIdentity, IdentityConfigError, KeylessSigner
from pullguard.services.signature.keys import load_trusted_keys
from pullguard.services.signature.policy import Mode, Requirement
from pullguard.services.signature.trustroot import TrustRootError, parse_trust_root
from pullguard.services.signature.verifier import (
    Artifact,
    Limits,
    Outcome,
    Subject,
    verify_signatures,
)
from tests.support.cosign import (
    LocalSigner,
    MemoryStaging,
    OfflineSigstore,
    SignatureLayer,
    hashedrekord_body,
    make_trust,
    pem_of_cert,
    signature_manifest,
    simple_signing_payload,
)

DIGEST = "sha256:" + "12" * 32
REPOSITORY = "registry.example/team/app"
ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/myorg/app/.github/workflows/release.yml@refs/tags/v1.2.0"
SIGNED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2025, 1, 1, tzinfo=UTC)
LIMITS = Limits(64 * 1024, 64 * 1024, 10)
PAYLOAD = simple_signing_payload(REPOSITORY, DIGEST)
BUNDLE = "dev.sigstore.cosign/bundle"


@pytest.fixture(scope="module")
def fulcio() -> OfflineSigstore:
    return OfflineSigstore()


def run(
    layers: list[SignatureLayer],
    fulcio: OfflineSigstore,
    signers: tuple[tuple[str, str, str], ...] = ((ISSUER, WORKFLOW, ""),),
    root: bytes | None = None,
    rekor_required: bool = False,
    now: datetime = NOW,
    keys: tuple[LocalSigner, ...] = (),
) -> Outcome:
    staging = MemoryStaging()
    manifest, blobs = signature_manifest(layers)
    for blob in blobs.values():
        staging.put(blob)
    trust = make_trust(
        load_trusted_keys((k.name, k.pem) for k in keys),
        signers,
        parse_trust_root(root if root is not None else fulcio.trusted_root()),
        rekor_required,
        now,
    )
    return verify_signatures(
        Requirement(Mode.ENFORCE),
        Subject(DIGEST, (REPOSITORY,)),
        [Artifact("tag:sig", staging.put(manifest))],
        trust,
        LIMITS,
        staging,
    )


def codes(outcome: Outcome) -> list[str]:
    return [f.code for f in outcome.verdict.findings]


def test_keyless_signature_with_set_is_accepted(fulcio: OfflineSigstore) -> None:
    outcome = run([fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)], fulcio)
    assert outcome.verdict.allowed, outcome.verdict.findings
    (check,) = outcome.checks
    assert check.signer == f"{WORKFLOW} ({ISSUER})"
    assert "in transparency log https://rekor.test-fulcio.example at index 7" in check.reason


def test_g10g_certificate_expired_now_but_valid_when_signed(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    # Six months later: the 10-minute certificate is long expired.
    assert run([layer], fulcio, now=SIGNED_AT + timedelta(days=180)).verdict.allowed


def test_g10a_entry_logged_after_the_certificate_expired(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(
        PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT, integrated_at=SIGNED_AT + timedelta(hours=1)
    )
    outcome = run([layer], fulcio)
    assert codes(outcome) == [policy.CERTIFICATE_EXPIRED]


def test_g10a_entry_logged_before_the_certificate_existed(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(
        PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT, integrated_at=SIGNED_AT - timedelta(minutes=5)
    )
    assert codes(run([layer], fulcio)) == [policy.CERTIFICATE_EXPIRED]


def test_g10d_integrated_time_in_the_future(fulcio: OfflineSigstore) -> None:
    later = NOW + timedelta(days=2)
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, later)
    outcome = run([layer], fulcio)
    assert codes(outcome) == [policy.TLOG_INVALID]
    assert "in the future" in outcome.checks[0].reason


def test_g10e_chain_to_a_foreign_ca(fulcio: OfflineSigstore) -> None:
    stranger = OfflineSigstore("stranger")
    layer = stranger.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    # The stranger's Rekor is trusted too, so only the CA is wrong.
    document = json.loads(fulcio.trusted_root())
    document["tlogs"].append(stranger.tlog_entry())
    outcome = run([layer], fulcio, root=json.dumps(document).encode())
    assert codes(outcome) == [policy.UNTRUSTED_CERTIFICATE]


def test_g10e_self_signed_leaf_is_not_a_ca(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    # The attacker's "chain" holds only the leaf itself.
    annotations = dict(layer.annotations)
    annotations["dev.sigstore.cosign/chain"] = annotations["dev.sigstore.cosign/certificate"]
    document = json.loads(fulcio.trusted_root())
    document["certificateAuthorities"][0]["certChain"]["certificates"].pop(0)
    outcome = run(
        [SignatureLayer(layer.payload, annotations)], fulcio, root=json.dumps(document).encode()
    )
    assert codes(outcome) == [policy.UNTRUSTED_CERTIFICATE]


def test_g10_ca_outside_its_trusted_root_window(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    root = fulcio.trusted_root(ca_end=SIGNED_AT - timedelta(days=1))
    outcome = run([layer], fulcio, root=root)
    assert codes(outcome) == [policy.UNTRUSTED_CERTIFICATE]
    assert "no trusted certificate authority is valid" in outcome.checks[0].reason


def test_g10f_set_signed_by_another_log_key(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    key, cert = fulcio.leaf(WORKFLOW, ISSUER, SIGNED_AT)
    signature = key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    body = hashedrekord_body(PAYLOAD, signature, pem_of_cert(cert).encode())
    forged = fulcio.promise(
        body, int(SIGNED_AT.timestamp()) + 30, signing_key=ec.generate_private_key(ec.SECP256R1())
    )
    annotations = {
        **layer.annotations,
        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode(),
        "dev.sigstore.cosign/certificate": pem_of_cert(cert),
        BUNDLE: forged,
    }
    outcome = run([SignatureLayer(PAYLOAD, annotations)], fulcio)
    assert codes(outcome) == [policy.TLOG_INVALID]
    assert "does not verify under the log's key" in outcome.checks[0].reason


def test_g10f_set_from_a_log_the_root_does_not_name(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    outcome = run([layer], fulcio, root=fulcio.trusted_root(tlog=False))
    assert codes(outcome) == [policy.TLOG_INVALID]
    assert "not in the trusted root" in outcome.checks[0].reason


def test_keyless_without_set_is_rejected_even_when_rekor_is_optional(
    fulcio: OfflineSigstore,
) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT, with_promise=False)
    # Even at a moment the certificate is valid: its signing time is unproven.
    outcome = run([layer], fulcio, now=SIGNED_AT + timedelta(minutes=1))
    assert codes(outcome) == [policy.TLOG_MISSING]


def test_g05_set_of_another_signature_with_this_certificate(fulcio: OfflineSigstore) -> None:
    # CVE-2022-36056: signature 2's certificate and signature, signature 1's SET.
    first = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    other_payload = simple_signing_payload(REPOSITORY, "sha256:" + "34" * 32)
    second = fulcio.keyless_layer(other_payload, WORKFLOW, ISSUER, SIGNED_AT)
    mixed = SignatureLayer(PAYLOAD, {**first.annotations, BUNDLE: second.annotations[BUNDLE]})
    outcome = run([mixed], fulcio)
    assert codes(outcome) == [policy.TLOG_INVALID]


@pytest.mark.parametrize("part", ["signature", "certificate", "hash"])
def test_g05_entry_that_records_another_part(fulcio: OfflineSigstore, part: str) -> None:
    key, cert = fulcio.leaf(WORKFLOW, ISSUER, SIGNED_AT)
    signature = key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    recorded_signature, recorded_cert, recorded_payload = signature, cert, PAYLOAD
    if part == "signature":
        recorded_signature = key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))  # ECDSA: differs
    if part == "certificate":
        recorded_cert = fulcio.leaf(WORKFLOW, ISSUER, SIGNED_AT)[1]
    if part == "hash":
        recorded_payload = PAYLOAD + b" "
    body = hashedrekord_body(
        recorded_payload, recorded_signature, pem_of_cert(recorded_cert).encode()
    )
    annotations = {
        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode(),
        "dev.sigstore.cosign/certificate": pem_of_cert(cert),
        "dev.sigstore.cosign/chain": fulcio.chain_pem(),
        BUNDLE: fulcio.promise(body, int(SIGNED_AT.timestamp()) + 30),
    }
    outcome = run([SignatureLayer(PAYLOAD, annotations)], fulcio)
    assert codes(outcome) == [policy.TLOG_INVALID], part


@pytest.mark.parametrize(
    ("subject", "issuer"),
    [
        # (a) another repository's workflow
        ("https://github.com/attacker/app/.github/workflows/release.yml@refs/tags/v1.2.0", ISSUER),
        # (b) the right workflow, another issuer
        (WORKFLOW, "https://accounts.google.com"),
        # (e) a pull-request ref where tags are required
        ("https://github.com/myorg/app/.github/workflows/release.yml@refs/pull/1/merge", ISSUER),
    ],
)
def test_g11_wrong_identity_is_rejected(fulcio: OfflineSigstore, subject: str, issuer: str) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, subject, issuer, SIGNED_AT)
    regex = r"^https://github\.com/myorg/app/\.github/workflows/release\.yml@refs/tags/v.*$"
    outcome = run([layer], fulcio, signers=((ISSUER, "", regex),))
    assert codes(outcome) == [policy.WRONG_IDENTITY]
    assert outcome.checks[0].reason.startswith(f"got certificate for {subject}")


@pytest.mark.parametrize(
    "subject",
    [
        "https://github.com/myorg-evil/app/.github/workflows/release.yml@refs/tags/v1",
        "https://github.com/attacker/x?https://github.com/myorg/",
        "xhttps://github.com/myorg/app",
    ],
)
def test_g11d_regex_is_anchored(fulcio: OfflineSigstore, subject: str) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, subject, ISSUER, SIGNED_AT)
    outcome = run([layer], fulcio, signers=((ISSUER, "", r"^https://github\.com/myorg/.*$"),))
    assert codes(outcome) == [policy.WRONG_IDENTITY]


def test_g11d_anchored_regex_accepts_the_organisation(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    signer = (ISSUER, "", r"^https://github\.com/myorg/.*$")
    outcome = run([layer], fulcio, signers=(signer,))
    assert outcome.verdict.allowed
    assert outcome.checks[0].signer == f"~{signer[2]} ({ISSUER})"


@pytest.mark.parametrize(
    ("issuer", "subject", "regex"),
    [
        (ISSUER, "", "https://github.com/myorg/.*"),
        (ISSUER, "", "^https://github.com/myorg/.*"),
        (ISSUER, "", "^(unclosed$"),
        ("", WORKFLOW, ""),
        (ISSUER, WORKFLOW, "^x$"),
        (ISSUER, "", ""),
    ],
)
def test_g11d_unanchored_or_incomplete_identities_are_configuration_errors(
    issuer: str, subject: str, regex: str
) -> None:
    with pytest.raises(IdentityConfigError):
        KeylessSigner.create(issuer, subject, regex)


@pytest.mark.parametrize(("v1", "v2"), [(True, False), (False, True)])
def test_issuer_from_either_extension(fulcio: OfflineSigstore, v1: bool, v2: bool) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT, issuer_v1=v1, issuer_v2=v2)
    assert run([layer], fulcio).verdict.allowed


def test_v2_issuer_extension_wins_over_v1(fulcio: OfflineSigstore) -> None:
    # Both present and different: the DER (.1.8) value is the issuer.
    layer = fulcio.keyless_layer(
        PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT, issuer_v1_value="https://accounts.google.com"
    )
    assert run([layer], fulcio).verdict.allowed
    google = run([layer], fulcio, signers=(("https://accounts.google.com", WORKFLOW, ""),))
    assert codes(google) == [policy.WRONG_IDENTITY]


def test_certificate_without_code_signing_usage(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT, code_signing=False)
    assert codes(run([layer], fulcio)) == [policy.UNTRUSTED_CERTIFICATE]


def test_signature_not_made_by_the_certificate_key(fulcio: OfflineSigstore) -> None:
    layer = fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT)
    stranger = LocalSigner()
    annotations = {
        **layer.annotations,
        "dev.cosignproject.cosign/signature": base64.b64encode(stranger.sign(PAYLOAD)).decode(),
    }
    assert codes(run([SignatureLayer(PAYLOAD, annotations)], fulcio)) == [policy.INVALID]


def test_g12b_key_and_certificate_offered_only_configured_material_counts(
    fulcio: OfflineSigstore,
) -> None:
    # A signature by a configured key that also carries a certificate is a
    # key signature: the certificate is not consulted.
    alice = LocalSigner("alice.pub")
    layer = alice.layer(PAYLOAD)
    layer.annotations["dev.sigstore.cosign/certificate"] = pem_of_cert(
        fulcio.leaf(WORKFLOW, ISSUER, SIGNED_AT)[1]
    )
    outcome = run([layer], fulcio, keys=(alice,))
    assert outcome.verdict.allowed
    assert outcome.checks[0].signer == "alice.pub"


def test_threshold_counts_a_keyless_identity_once(fulcio: OfflineSigstore) -> None:
    layers = [
        fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT),
        fulcio.keyless_layer(PAYLOAD, WORKFLOW, ISSUER, SIGNED_AT + timedelta(minutes=1)),
    ]
    staging = MemoryStaging()
    manifest, blobs = signature_manifest(layers)
    for blob in blobs.values():
        staging.put(blob)
    alice = LocalSigner("alice.pub")
    trust = make_trust(
        load_trusted_keys([(alice.name, alice.pem)]),
        ((ISSUER, WORKFLOW, ""),),
        parse_trust_root(fulcio.trusted_root()),
        now=NOW,
    )
    outcome = verify_signatures(
        Requirement(Mode.ENFORCE, 2),
        Subject(DIGEST, (REPOSITORY,)),
        [Artifact("tag:sig", staging.put(manifest))],
        trust,
        LIMITS,
        staging,
    )
    assert codes(outcome)[0] == policy.THRESHOLD_NOT_MET
    # A key and the keyless identity are two signers.
    staging2 = MemoryStaging()
    manifest2, blobs2 = signature_manifest([layers[0], alice.layer(PAYLOAD)])
    for blob in blobs2.values():
        staging2.put(blob)
    both = verify_signatures(
        Requirement(Mode.ENFORCE, 2),
        Subject(DIGEST, (REPOSITORY,)),
        [Artifact("tag:sig", staging2.put(manifest2))],
        trust,
        LIMITS,
        staging2,
    )
    assert both.verdict.allowed


@pytest.mark.parametrize(
    "change",
    [
        {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=9"},
        {"certificateAuthorities": [{"uri": "x", "certChain": {"certificates": []}}]},
        {"tlogs": [{"publicKey": {"rawBytes": "AAAA", "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}]},
        {"tlogs": "nope"},
    ],
)
def test_unusable_trusted_roots_are_refused(
    fulcio: OfflineSigstore, change: dict[str, object]
) -> None:
    document = json.loads(fulcio.trusted_root())
    document.update(change)
    with pytest.raises(TrustRootError):
        parse_trust_root(json.dumps(document).encode())


def test_trusted_root_log_without_window_start_is_refused(fulcio: OfflineSigstore) -> None:
    document = json.loads(fulcio.trusted_root())
    document["tlogs"][0]["publicKey"]["validFor"] = {}
    with pytest.raises(TrustRootError, match="start is missing"):
        parse_trust_root(json.dumps(document).encode())


def test_g11d_regex_must_match_the_whole_subject_not_up_to_a_newline() -> None:
    # re.search("^...$") accepts a trailing newline; fullmatch does not.
    signer = KeylessSigner.create(ISSUER, subject_regex=r"^https://github\.com/myorg/.*$")
    assert signer.matches(CertIdentity(ISSUER, ("https://github.com/myorg/app",)))
    assert not signer.matches(CertIdentity(ISSUER, ("https://github.com/myorg/app\n",)))
    assert not signer.matches(CertIdentity(ISSUER + "/", ("https://github.com/myorg/app",)))
