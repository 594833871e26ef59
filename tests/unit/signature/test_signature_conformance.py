"""Real cosign signatures from containers/image's fixtures, verified by the domain.

The fixtures are read from ../shared/conformance/cosign-simplesigning (never
copied into the repository). Each ``signature-N`` becomes one layer of a
``.sig`` manifest staged in memory, exactly as cosign stores it in a registry.
"""

from __future__ import annotations

import pytest

from pullguard.services.signature import policy
from pullguard.services.signature.keys import KeyTrust, load_trusted_keys
from pullguard.services.signature.policy import Mode, Requirement
from pullguard.services.signature.verifier import (
    Artifact,
    Limits,
    Outcome,
    Subject,
    verify_signatures,
)
from tests.support.cosign import (
    MemoryStaging,
    SignatureLayer,
    read_containers_image_signature,
    resolve_git_link,
    sha256,
    signature_manifest,
)
from tests.support.shared import conformance, shared_dir

FIXTURES = shared_dir() / "conformance" / "cosign-simplesigning"


@pytest.fixture(autouse=True)
def _fixtures_present() -> None:
    conformance("cosign-simplesigning")


#: The docker-reference the containers/image fixtures were signed for.
REFERENCE = "192.168.64.2:5000/cosign-signed-single-sample"
#: The manifest in dir-img-cosign-valid, which its signatures name.
VALID_DIGEST = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
LIMITS = Limits(manifest_bytes=4 << 20, payload_bytes=4 << 20, signatures=100)
LOCATION = "tag:sha256-634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00.sig"


def trust(*names: str) -> KeyTrust:
    return KeyTrust(load_trusted_keys((name, (FIXTURES / name).read_text()) for name in names))


def case_layers(case: str) -> list[SignatureLayer]:
    files = sorted((FIXTURES / case).glob("signature-*"))
    assert files, case
    return [read_containers_image_signature(path) for path in files]


def manifest_digest(case: str) -> str:
    return sha256(resolve_git_link(FIXTURES / case / "manifest.json").read_bytes())


def verify(
    layers: list[SignatureLayer],
    digest: str,
    keys: tuple[str, ...] = ("cosign.pub",),
    reference: str = REFERENCE,
    threshold: int = 1,
    mode: Mode = Mode.ENFORCE,
) -> Outcome:
    staging = MemoryStaging()
    manifest, blobs = signature_manifest(layers)
    for blob in blobs.values():
        staging.put(blob)
    return verify_signatures(
        Requirement(mode, threshold),
        Subject(digest, (reference,)),
        [Artifact(LOCATION, staging.put(manifest))],
        trust(*keys),
        LIMITS,
        staging,
    )


def codes(outcome: Outcome) -> list[str]:
    return [f.code for f in outcome.verdict.findings]


@pytest.mark.parametrize("case", ["dir-img-cosign-valid", "dir-img-cosign-valid-2"])
def test_valid_cosign_signatures_verify(case: str) -> None:
    digest = manifest_digest(case)
    assert digest == VALID_DIGEST
    outcome = verify(case_layers(case), digest)
    assert outcome.verdict.allowed
    assert codes(outcome) == [policy.VERIFIED]
    assert all(check.accepted and check.signer == "cosign.pub" for check in outcome.checks)
    assert [c.location for c in outcome.checks] == [
        f"{LOCATION}/layers[{i}]" for i in range(len(outcome.checks))
    ]


def test_valid_with_tag_names_its_repository_with_the_tag_stripped() -> None:
    layers = case_layers("dir-img-cosign-valid-with-tag")
    digest = manifest_digest("dir-img-cosign-valid-with-tag")
    # Its payload says 192.168.64.2:5000/skopeo-signed:tag.
    outcome = verify(layers, digest, reference="192.168.64.2:5000/skopeo-signed")
    assert outcome.verdict.allowed
    assert codes(outcome) == [policy.VERIFIED]


def test_g02_valid_with_tag_does_not_name_another_repository() -> None:
    outcome = verify(case_layers("dir-img-cosign-valid-with-tag"), VALID_DIGEST)
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.WRONG_REPOSITORY]
    assert outcome.checks[0].signer == "cosign.pub"


def test_g12_unknown_cosign_key_is_rejected() -> None:
    layer = read_containers_image_signature(FIXTURES / "unknown-cosign-key.signature")
    outcome = verify([layer], VALID_DIGEST)
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.UNTRUSTED_KEY]
    assert outcome.checks[0].signer == ""


def test_g12_rsa_key_configured_ecdsa_signature_is_untrusted() -> None:
    outcome = verify(case_layers("dir-img-cosign-valid"), VALID_DIGEST, keys=("some-rsa-key.pub",))
    assert codes(outcome) == [policy.UNTRUSTED_KEY]
    assert not outcome.verdict.allowed


def test_g02_modified_manifest_is_not_the_signed_digest() -> None:
    digest = manifest_digest("dir-img-cosign-modified-manifest")
    assert digest != VALID_DIGEST
    outcome = verify(case_layers("dir-img-cosign-modified-manifest"), digest)
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.WRONG_DIGEST]


def test_g02_manifest_digest_error_is_not_the_signed_digest() -> None:
    case = FIXTURES / "dir-img-cosign-manifest-digest-error"
    # In containers/image the manifest is a schema1 document whose digest
    # cannot be computed; this copy keeps only the dangling link to it.
    with pytest.raises(FileNotFoundError):
        resolve_git_link(case / "manifest.json")
    digest = sha256((case / "manifest.json").read_bytes())
    outcome = verify(case_layers("dir-img-cosign-manifest-digest-error"), digest)
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.WRONG_DIGEST]


def test_no_manifest_means_no_subject_to_verify() -> None:
    assert not (FIXTURES / "dir-img-cosign-no-manifest" / "manifest.json").exists()
    with pytest.raises(ValueError):
        Subject("", (REFERENCE,))


def test_g01_other_attachment_is_not_a_signature() -> None:
    layers = case_layers("dir-img-cosign-other-attachment")
    assert layers[0].media_type == "text/plain"
    outcome = verify(layers, VALID_DIGEST)
    assert outcome.checks == ()
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.MISSING]


def test_mixed_one_valid_signature_is_enough() -> None:
    outcome = verify(case_layers("dir-img-cosign-mixed"), VALID_DIGEST)
    assert outcome.verdict.allowed
    assert [(c.accepted, c.code) for c in outcome.checks] == [
        (False, policy.UNTRUSTED_KEY),
        (True, policy.VERIFIED),
    ]
    # The stranger's signature is recorded, but does not deny.
    assert [(f.code, f.severity.name) for f in outcome.verdict.findings] == [
        (policy.VERIFIED, "INFO"),
        (policy.UNTRUSTED_KEY, "INFO"),
    ]


def test_g06_key_rekor_signature_verifies_on_the_key_alone() -> None:
    case = "dir-img-cosign-key-rekor-valid"
    layers = case_layers(case)
    assert "dev.sigstore.cosign/bundle" in layers[0].annotations
    # Signed by the key in cosign2.pub (the Rekor entry embeds that key).
    outcome = verify(
        layers,
        manifest_digest(case),
        keys=("cosign.pub", "cosign2.pub"),
        reference="192.168.64.2:5000/cosign-signed/key-1",
    )
    assert outcome.verdict.allowed
    assert outcome.checks[0].signer == "cosign2.pub"
    # The report must not claim transparency-log inclusion.
    assert "transparency log not checked" in outcome.checks[0].reason


def test_g12_key_rekor_signature_is_untrusted_under_another_key() -> None:
    case = "dir-img-cosign-key-rekor-valid"
    outcome = verify(
        case_layers(case),
        manifest_digest(case),
        reference="192.168.64.2:5000/cosign-signed/key-1",
    )
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


@pytest.mark.parametrize("case", ["dir-img-cosign-fulcio-rekor-valid", "dir-img-cosign-pki-valid"])
def test_g12_certificate_in_annotations_is_not_trust_material(case: str) -> None:
    layers = case_layers(case)
    assert "dev.sigstore.cosign/certificate" in layers[0].annotations
    outcome = verify(layers, manifest_digest(case), keys=("cosign.pub", "cosign2.pub"))
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g02_signature_of_one_image_attached_to_another() -> None:
    other = manifest_digest("dir-img-cosign-key-rekor-valid")
    outcome = verify(case_layers("dir-img-cosign-valid"), other)
    assert codes(outcome) == [policy.WRONG_DIGEST]


def test_threshold_counts_distinct_keys_not_signatures() -> None:
    # valid-2 holds two different signatures, both by cosign.pub.
    outcome = verify(
        case_layers("dir-img-cosign-valid-2"),
        VALID_DIGEST,
        keys=("cosign.pub", "cosign2.pub"),
        threshold=2,
    )
    assert not outcome.verdict.allowed
    assert codes(outcome)[0] == policy.THRESHOLD_NOT_MET


def test_warn_mode_allows_with_warnings() -> None:
    layer = read_containers_image_signature(FIXTURES / "unknown-cosign-key.signature")
    outcome = verify([layer], VALID_DIGEST, mode=Mode.WARN)
    assert outcome.verdict.allowed
    assert [(f.code, f.severity.name) for f in outcome.verdict.findings] == [
        (policy.UNTRUSTED_KEY, "WARNING")
    ]
