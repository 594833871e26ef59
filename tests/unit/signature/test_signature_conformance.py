"""Real cosign signatures from containers/image's fixtures, verified by the domain.

The fixtures are kept in tests/data/conformance/cosign-simplesigning (their
origin and licence: tests/data/README.md). Each ``signature-N`` becomes one
layer of a ``.sig`` manifest staged in memory, exactly as cosign stores it in a registry.

The four kinds the README lists, and what differs from it:

- key: ``cosign.pub``;
- key + Rekor: the README says ``cosign.pub``, but the signature (and the
  public key recorded in its Rekor entry) is ``cosign2.pub``'s; ``rekor.pub``
  is a dangling link in this copy. The entry's logID (c0d23d6a...) is the
  public-good Rekor, whose key the Sigstore production trusted root (shipped
  with sigstore-python) holds, so the SET is checked against that root;
- keyless: Fulcio CA ``fulcio_v1.crt.pem`` is the production root's
  "sigstore" CA; issuer https://github.com/login/oauth, subject
  mitr@redhat.com; Rekor as above;
- own PKI: a trusted root built here from ``pki_root_crts.pem`` with the
  ``uri`` ``pki://linuxera``, which the rule names as the issuer (the
  certificate has no OIDC issuer extension); no Rekor, ``rekor: optional``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pullguard.services.signature import policy
from pullguard.services.signature.keys import load_trusted_keys
from pullguard.services.signature.policy import Mode, Requirement
from pullguard.services.signature.sigstore_adapter import SigstoreTrust
from pullguard.services.signature.trustroot import TrustRoot, parse_trust_root
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
    make_trust,
    production_root,
    read_containers_image_signature,
    resolve_git_link,
    sha256,
    signature_manifest,
)
from tests.support.shared import DATA, conformance

FIXTURES = DATA / "conformance" / "cosign-simplesigning"


@pytest.fixture(autouse=True)
def _fixtures_present() -> None:
    conformance("cosign-simplesigning")


#: The docker-reference the containers/image fixtures were signed for.
REFERENCE = "192.168.64.2:5000/cosign-signed-single-sample"
#: The manifest in dir-img-cosign-valid, which its signatures name.
VALID_DIGEST = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
LIMITS = Limits(manifest_bytes=4 << 20, payload_bytes=4 << 20, signatures=100)
LOCATION = "tag:sha256-634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00.sig"
PRODUCTION = production_root()
KEY_REKOR = "dir-img-cosign-key-rekor-valid"
KEY_REKOR_REFERENCE = "192.168.64.2:5000/cosign-signed/key-1"
FULCIO = "dir-img-cosign-fulcio-rekor-valid"
FULCIO_REFERENCE = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1"
FULCIO_SIGNER = ("https://github.com/login/oauth", "mitr@redhat.com", "")
PKI = "dir-img-cosign-pki-valid"
PKI_SIGNER = ("pki://linuxera", "qiwan@redhat.com", "")
BUNDLE = "dev.sigstore.cosign/bundle"


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
    keyless: tuple[tuple[str, str, str], ...] = (),
    root: TrustRoot | None = None,
    rekor_required: bool = False,
) -> Outcome:
    staging = MemoryStaging()
    manifest, blobs = signature_manifest(layers)
    for blob in blobs.values():
        staging.put(blob)
    root = root if root is not None else PRODUCTION
    rule = make_trust(
        load_trusted_keys((name, (FIXTURES / name).read_text()) for name in keys),
        keyless,
        root,
        rekor_required,
        bundles=SigstoreTrust(root.text),
    )
    return verify_signatures(
        Requirement(mode, threshold),
        Subject(digest, (reference,)),
        [Artifact(LOCATION, staging.put(manifest))],
        rule,
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


def test_key_rekor_signature_with_its_set_checked_against_the_production_root() -> None:
    layers = case_layers(KEY_REKOR)
    assert BUNDLE in layers[0].annotations
    outcome = verify(
        layers,
        manifest_digest(KEY_REKOR),
        keys=("cosign.pub", "cosign2.pub"),
        reference=KEY_REKOR_REFERENCE,
        rekor_required=True,
    )
    assert outcome.verdict.allowed, outcome.verdict.findings
    (check,) = outcome.checks
    assert check.signer == "cosign2.pub"
    assert "in transparency log https://rekor.sigstore.dev at index 11608800" in check.reason


def test_g12_key_rekor_signature_is_untrusted_under_another_key() -> None:
    outcome = verify(
        case_layers(KEY_REKOR), manifest_digest(KEY_REKOR), reference=KEY_REKOR_REFERENCE
    )
    assert codes(outcome) == [policy.UNTRUSTED_KEY]


def test_g06_set_checked_with_the_wrong_key_is_rejected_when_rekor_is_required() -> None:
    # The README's negative case: the SET checked with cosign.pub instead of
    # the Rekor key. A trusted root naming cosign.pub as that log's key.
    outcome = verify(
        case_layers(KEY_REKOR),
        manifest_digest(KEY_REKOR),
        keys=("cosign2.pub",),
        reference=KEY_REKOR_REFERENCE,
        root=root_with_log_key("cosign.pub"),
        rekor_required=True,
    )
    assert not outcome.verdict.allowed
    assert codes(outcome) == [policy.TLOG_INVALID]
    assert "does not verify under the log's key" in outcome.checks[0].reason


def test_g06_set_removed_while_rekor_is_required() -> None:
    outcome = verify(
        [without(case_layers(KEY_REKOR)[0], BUNDLE)],
        manifest_digest(KEY_REKOR),
        keys=("cosign2.pub",),
        reference=KEY_REKOR_REFERENCE,
        rekor_required=True,
    )
    assert codes(outcome) == [policy.TLOG_MISSING]
    assert outcome.checks[0].signer == "cosign2.pub"


def test_g06_key_signature_stands_when_rekor_is_optional_but_no_log_is_claimed() -> None:
    outcome = verify(
        case_layers(KEY_REKOR),
        manifest_digest(KEY_REKOR),
        keys=("cosign2.pub",),
        reference=KEY_REKOR_REFERENCE,
        root=root_with_log_key("cosign.pub"),
    )
    assert outcome.verdict.allowed
    accepted, ignored = outcome.checks
    assert accepted.accepted and "transparency log entry ignored" in accepted.reason
    assert "in transparency log" not in accepted.reason
    assert (ignored.accepted, ignored.code) == (False, policy.TLOG_INVALID)
    assert [(f.code, f.severity.name) for f in outcome.verdict.findings] == [
        (policy.VERIFIED, "INFO"),
        (policy.TLOG_INVALID, "INFO"),
    ]


def test_g06_unrelated_set_pasted_onto_another_signature_is_not_its_log_entry() -> None:
    # CVE-2022-23649: the key-rekor SET (a valid SET of another entry) added
    # to the plain key signature of dir-img-cosign-valid.
    foreign = case_layers(KEY_REKOR)[0].annotations[BUNDLE]
    layer = with_annotation(case_layers("dir-img-cosign-valid")[0], BUNDLE, foreign)
    outcome = verify([layer], VALID_DIGEST, rekor_required=True)
    assert codes(outcome) == [policy.TLOG_INVALID]
    assert "not this payload's" in outcome.checks[0].reason


def test_fulcio_keyless_signature_is_accepted() -> None:
    outcome = verify(
        case_layers(FULCIO),
        manifest_digest(FULCIO),
        keys=(),
        reference=FULCIO_REFERENCE,
        keyless=(FULCIO_SIGNER,),
    )
    assert outcome.verdict.allowed, outcome.verdict.findings
    (check,) = outcome.checks
    assert check.signer == "mitr@redhat.com (https://github.com/login/oauth)"
    assert "https://rekor.sigstore.dev at index 11605770" in check.reason


def test_fulcio_signature_under_the_fulcio_v1_ca_alone_uses_the_offered_chain() -> None:
    outcome = verify(
        case_layers(FULCIO),
        manifest_digest(FULCIO),
        keys=(),
        reference=FULCIO_REFERENCE,
        keyless=(FULCIO_SIGNER,),
        root=fulcio_v1_root(),
    )
    assert outcome.verdict.allowed, outcome.verdict.findings


def test_fulcio_certificate_sct_must_come_from_a_trusted_ct_log() -> None:
    # The production root with another CT log key: the certificate's SCT
    # (from ctfe.sigstore.dev) no longer verifies.
    document = json.loads(PRODUCTION.text)
    key = serialization.load_pem_public_key((FIXTURES / "cosign.pub").read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for log in document["ctlogs"]:
        log["publicKey"]["rawBytes"] = base64.b64encode(der).decode()
    outcome = verify(
        case_layers(FULCIO),
        manifest_digest(FULCIO),
        keys=(),
        reference=FULCIO_REFERENCE,
        keyless=(FULCIO_SIGNER,),
        root=parse_trust_root(json.dumps(document).encode()),
    )
    assert codes(outcome) == [policy.UNTRUSTED_CERTIFICATE]
    assert "certificate transparency" in outcome.checks[0].reason


def test_g10_fulcio_certificate_expired_now_but_valid_at_the_signed_time() -> None:
    # The certificate lived ten minutes in January 2023: checking it against
    # "now" would reject it; the SET's integrated time is what counts.
    cert = x509.load_pem_x509_certificate(
        case_layers(FULCIO)[0].annotations["dev.sigstore.cosign/certificate"].encode()
    )
    assert cert.not_valid_after_utc < datetime.now(UTC)
    outcome = verify(
        case_layers(FULCIO),
        manifest_digest(FULCIO),
        keys=(),
        reference=FULCIO_REFERENCE,
        keyless=(FULCIO_SIGNER,),
    )
    assert outcome.verdict.allowed


@pytest.mark.parametrize(
    ("signer", "why"),
    [
        (("https://github.com/login/oauth", "someone@redhat.com", ""), "subject"),
        (("https://accounts.google.com", "mitr@redhat.com", ""), "issuer"),
        (("https://github.com/login/oauth", "", "^mitr@redhat\\.co$"), "regex"),
    ],
)
def test_g11_fulcio_signature_with_another_identity(signer: tuple[str, str, str], why: str) -> None:
    outcome = verify(
        case_layers(FULCIO),
        manifest_digest(FULCIO),
        keys=(),
        reference=FULCIO_REFERENCE,
        keyless=(signer,),
    )
    assert codes(outcome) == [policy.WRONG_IDENTITY], why
    assert "got certificate for mitr@redhat.com from https://github.com/login/oauth" in (
        outcome.checks[0].reason
    )


@pytest.mark.parametrize(
    ("annotation", "code"),
    [
        ("dev.sigstore.cosign/certificate", policy.UNTRUSTED_KEY),
        ("dev.sigstore.cosign/chain", policy.UNTRUSTED_CERTIFICATE),
        (BUNDLE, policy.TLOG_MISSING),
    ],
)
def test_fulcio_signature_without_certificate_chain_or_set_is_rejected(
    annotation: str, code: str
) -> None:
    # As containers/image configures it: the CA is fulcio_v1.crt.pem alone,
    # so the intermediate must come from the chain annotation.
    layer = without(case_layers(FULCIO)[0], annotation)
    outcome = verify(
        [layer],
        manifest_digest(FULCIO),
        keys=(),
        reference=FULCIO_REFERENCE,
        keyless=(FULCIO_SIGNER,),
        root=fulcio_v1_root(),
    )
    assert not outcome.verdict.allowed
    assert codes(outcome) == [code]


def test_pki_signature_is_accepted_under_a_trusted_root_of_that_pki() -> None:
    outcome = verify(
        case_layers(PKI),
        manifest_digest(PKI),
        keys=(),
        reference="localhost:5000/test",
        keyless=(PKI_SIGNER,),
        root=pki_root(),
    )
    assert outcome.verdict.allowed, outcome.verdict.findings
    assert outcome.checks[0].signer == "qiwan@redhat.com (pki://linuxera)"
    assert "transparency log not checked" in outcome.checks[0].reason


def test_pki_signature_also_matches_its_dns_name() -> None:
    signer = ("pki://linuxera", "myhost.example.com", "")
    outcome = verify(
        case_layers(PKI),
        manifest_digest(PKI),
        keys=(),
        reference="localhost:5000/test",
        keyless=(signer,),
        root=pki_root(),
    )
    assert outcome.verdict.allowed


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("production root", policy.UNTRUSTED_CERTIFICATE),
        ("rekor required", policy.TLOG_MISSING),
        ("no chain", policy.UNTRUSTED_CERTIFICATE),
    ],
)
def test_pki_signature_negative(change: str, code: str) -> None:
    layers = case_layers(PKI)
    root = pki_root()
    if change == "production root":
        root = PRODUCTION
    if change == "no chain":
        layers = [without(layers[0], "dev.sigstore.cosign/chain")]
    outcome = verify(
        layers,
        manifest_digest(PKI),
        keys=(),
        reference="localhost:5000/test",
        keyless=(PKI_SIGNER,),
        root=root,
        rekor_required=change == "rekor required",
    )
    assert codes(outcome) == [code]


def test_pki_intermediates_in_the_trusted_root_replace_the_chain_annotation() -> None:
    layer = without(case_layers(PKI)[0], "dev.sigstore.cosign/chain")
    outcome = verify(
        [layer],
        manifest_digest(PKI),
        keys=(),
        reference="localhost:5000/test",
        keyless=(PKI_SIGNER,),
        root=pki_root(intermediates=True),
    )
    assert outcome.verdict.allowed


def test_g12_certificate_is_not_trust_material_without_keyless_signers() -> None:
    outcome = verify(case_layers(FULCIO), manifest_digest(FULCIO), keys=("cosign.pub",))
    assert codes(outcome) == [policy.UNTRUSTED_KEY]
    assert "names no keyless signer" in outcome.checks[0].reason


def without(layer: SignatureLayer, annotation: str) -> SignatureLayer:
    annotations = dict(layer.annotations)
    del annotations[annotation]
    return SignatureLayer(layer.payload, annotations, layer.media_type)


def with_annotation(layer: SignatureLayer, name: str, value: str) -> SignatureLayer:
    return SignatureLayer(layer.payload, {**layer.annotations, name: value}, layer.media_type)


def root_with_log_key(key_file: str) -> TrustRoot:
    """The production root with its Rekor log's key replaced by ``key_file``."""
    document = json.loads(PRODUCTION.text)
    key = serialization.load_pem_public_key((FIXTURES / key_file).read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document["tlogs"][0]["publicKey"]["rawBytes"] = base64.b64encode(der).decode()
    return parse_trust_root(json.dumps(document).encode())


def fulcio_v1_root() -> TrustRoot:
    """The production root's logs, with fulcio_v1.crt.pem as the only CA."""
    document = json.loads(PRODUCTION.text)
    cert = x509.load_pem_x509_certificate((FIXTURES / "fulcio_v1.crt.pem").read_bytes())
    raw = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    document["certificateAuthorities"] = [
        {
            "subject": {"organization": "sigstore.dev", "commonName": "sigstore"},
            "uri": "https://fulcio.sigstore.dev",
            "certChain": {"certificates": [{"rawBytes": raw}]},
            "validFor": {"start": "2021-10-07T13:56:59Z"},
        }
    ]
    return parse_trust_root(json.dumps(document).encode())


def pki_root(intermediates: bool = False) -> TrustRoot:
    """A trusted root whose only CA is containers/image's test PKI."""
    files = (
        ["pki_intermediate_crts.pem", "pki_root_crts.pem"]
        if intermediates
        else ["pki_root_crts.pem"]
    )
    chain: list[dict[str, str]] = []
    for name in files:
        for cert in x509.load_pem_x509_certificates((FIXTURES / name).read_bytes()):
            raw = cert.public_bytes(serialization.Encoding.DER)
            chain.append({"rawBytes": base64.b64encode(raw).decode()})
    document = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "certificateAuthorities": [
            {
                "subject": {"organization": "Linuxera"},
                "uri": "pki://linuxera",
                "certChain": {"certificates": chain},
                "validFor": {"start": "2024-10-01T00:00:00Z"},
            }
        ],
    }
    return parse_trust_root(json.dumps(document).encode())


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
