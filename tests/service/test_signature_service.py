"""The Signature service through a real grpc.aio server, with real cosign signatures.

Once per module: Debian's docker-registry starts on 127.0.0.1, two small
images are pushed over raw HTTP, and the real cosign 2.5 signs them offline
(image 1 by alice, image 2 by alice and bob), then, also with cosign:
image 1 gets a SLSA v0.2 attestation by alice as a ``.att`` tag and a SLSA v1
attestation as a sigstore bundle referrer (``--new-bundle-format``), and
image 2 a signature by carol stored as an OCI 1.1 referrer
(``--registry-referrers-mode=oci-1-1``). The manifests and their blobs are
read back with httpx and, per test, staged exactly as the fetcher stages
them before VerifySignatures or VerifyAttestations is called.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.staging import StagingStore
from pullguard.services.signature.servicer import register
from pullguard.v1 import common_pb2, signature_pb2, signature_pb2_grpc
from tests.support.configs import make_config
from tests.support.cosign import (
    OCI_MANIFEST,
    OfflineSigstore,
    SignatureArtifact,
    attest,
    cosign_binary,
    generate_key_pair,
    read_manifest_artifact,
    read_referrers,
    read_signature_artifact,
    sign,
    signature_manifest,
    signature_tag,
    simple_signing_payload,
)
from tests.support.grpcserver import running_service
from tests.support.registry import PushedImage, push_image_sync
from tests.support.registry_process import RegistryProcess

pytestmark = pytest.mark.skipif(
    cosign_binary() is None or shutil.which("docker-registry") is None,
    reason="needs cosign and docker-registry (make system-deps)",
)

SESSION = "sig-session"
REPOSITORY = "signed/app"
Mode = common_pb2.SignaturePolicy.Mode


@dataclass(frozen=True)
class Signed:
    """What the module's registry holds, as the tests need it."""

    address: str  # HOST:PORT, the canonical host the payloads name
    image1: PushedImage  # signed by alice
    image2: PushedImage  # signed by alice and bob
    sig1: SignatureArtifact
    sig2: SignatureArtifact
    keys: dict[str, str]  # alice.pub, bob.pub, carol.pub -> PEM
    att1: SignatureArtifact  # image 1's .att: SLSA v0.2 by alice
    bundle1: SignatureArtifact  # image 1's bundle referrer: SLSA v1 by alice
    referrer2: SignatureArtifact  # image 2's simple-signing referrer by carol


SLSA_V02_PREDICATE = {
    "builder": {"id": "https://ci.example/builder@v1"},
    "buildType": "https://ci.example/build",
    "invocation": {"configSource": {"uri": "git+https://git.example/myorg/app@refs/heads/main"}},
}
SLSA_V1_PREDICATE = {
    "buildDefinition": {
        "buildType": "https://ci.example/build",
        "externalParameters": {"workflow": {"repository": "https://git.example/myorg/app"}},
    },
    "runDetails": {"builder": {"id": "https://ci.example/builder@v2"}},
}


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signed]:
    root = tmp_path_factory.mktemp("signature-service")
    registry = RegistryProcess(root / "registry")
    registry.root.mkdir(parents=True)
    registry.start()
    try:
        image1 = push_image_sync(registry.url, REPOSITORY, "v1")
        image2 = push_image_sync(registry.url, REPOSITORY, "v2", [{"two.txt": b"2\n"}])
        keys: dict[str, str] = {}
        private: dict[str, Path] = {}
        for name in ("alice", "bob", "carol"):
            key, pub = generate_key_pair(root / name)
            private[name], keys[f"{name}.pub"] = key, pub.read_text()
        sign(f"{REPOSITORY}@{image1.digest}", private["alice"], registry.url)
        sign(f"{REPOSITORY}@{image2.digest}", private["alice"], registry.url)
        sign(f"{REPOSITORY}@{image2.digest}", private["bob"], registry.url)
        image1_ref = f"{REPOSITORY}@{image1.digest}"
        attest(image1_ref, private["alice"], SLSA_V02_PREDICATE, "slsaprovenance", registry.url)
        attest(
            image1_ref,
            private["alice"],
            SLSA_V1_PREDICATE,
            "slsaprovenance1",
            registry.url,
            new_bundle=True,
        )
        referrer = sign(
            f"{REPOSITORY}@{image2.digest}", private["carol"], registry.url, referrer=True
        )
        sig1 = read_signature_artifact(registry.url, REPOSITORY, image1.digest)
        sig2 = read_signature_artifact(registry.url, REPOSITORY, image2.digest)
        att1 = read_signature_artifact(registry.url, REPOSITORY, image1.digest, ".att")
        (bundle1,) = read_referrers(registry.url, REPOSITORY, image1.digest)
        referrer2 = read_manifest_artifact(registry.url, REPOSITORY, referrer)
        assert sig1 is not None and sig2 is not None and att1 is not None
        assert referrer2 is not None
        assert len(sig1.descriptors) == 2 and len(sig2.descriptors) == 3  # config + layers
        yield Signed(registry.address, image1, image2, sig1, sig2, keys, att1, bundle1, referrer2)
    finally:
        registry.stop()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def stub(config: Config) -> AsyncIterator[signature_pb2_grpc.SignatureStub]:
    async with running_service("signature", register, config) as channel:
        yield signature_pb2_grpc.SignatureStub(channel)


def stage(
    config: Config, artifact: SignatureArtifact, location: str = ""
) -> signature_pb2.SignatureArtifact:
    """Stage a signature manifest and its blobs as the fetcher does; return the proto."""
    store = StagingStore(config.state_dir / "staging")
    for key, data in ((artifact.digest, artifact.manifest), *artifact.blobs.items()):
        with store.writer(SESSION) as writer:
            writer.write(data)
            writer.commit(key)
    return signature_pb2.SignatureArtifact(
        location=location or f"tag:{artifact.tag}",
        manifest=common_pb2.StagedManifest(
            staged_key=artifact.digest,
            computed_digest=artifact.digest,
            size=len(artifact.manifest),
            content_type=artifact.media_type,
        ),
        blobs=[
            common_pb2.Descriptor(
                media_type=str(d["mediaType"]),
                digest=str(d["digest"]),
                size=int(str(d["size"])),
                annotations=dict(d.get("annotations", {})),  # type: ignore[call-overload]
            )
            for d in artifact.descriptors
        ],
    )


def request(
    signed: Signed,
    digest: str,
    artifacts: list[signature_pb2.SignatureArtifact],
    keys: tuple[str, ...] = ("alice.pub",),
    mode: int = Mode.ENFORCE,
    threshold: int = 0,
    repository: str = REPOSITORY,
    rekor: int = common_pb2.SignaturePolicy.OPTIONAL,
    signed_identity: str = "",
) -> signature_pb2.VerifySignaturesRequest:
    return signature_pb2.VerifySignaturesRequest(
        session=SESSION,
        plan=common_pb2.Plan(
            ref=common_pb2.ImageRef(upstream_alias="lab", repository=repository, digest=digest),
            upstream=common_pb2.UpstreamInfo(
                alias="lab",
                url=f"http://{signed.address}",
                insecure=True,
                canonical_host=signed.address,
            ),
            rule=common_pb2.RulePolicy(
                index=0,
                match="lab/**",
                signature=common_pb2.SignaturePolicy(
                    mode=mode,  # type: ignore[arg-type]
                    keys=[common_pb2.PublicKey(name=k, pem=signed.keys[k]) for k in keys],
                    threshold=threshold,
                    rekor=rekor,  # type: ignore[arg-type]
                    signed_identity=signed_identity,
                ),
            ),
        ),
        digest=digest,
        artifacts=artifacts,
    )


async def call(
    stub: signature_pb2_grpc.SignatureStub, message: signature_pb2.VerifySignaturesRequest
) -> signature_pb2.VerifySignaturesResponse:
    response: signature_pb2.VerifySignaturesResponse = await stub.VerifySignatures(
        message, timeout=10
    )
    return response


def findings(response: signature_pb2.VerifySignaturesResponse) -> list[tuple[str, int]]:
    return [(f.code, f.severity) for f in response.verdict.findings]


async def test_signature_by_the_trusted_key_allows(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    assert artifact.location == f"tag:{signature_tag(signed.image1.digest)}"
    response = await call(stub, request(signed, signed.image1.digest, [artifact]))
    assert response.verdict.decision == common_pb2.ALLOW
    assert response.verdict.layer == "signature"
    assert findings(response) == [("signature.verified", common_pb2.INFO)]
    (result,) = response.signatures
    assert (result.accepted, result.signer, result.code) == (
        True,
        "alice.pub",
        "signature.verified",
    )
    assert result.location == f"{artifact.location}/layers[0]"


async def test_g12_signature_by_another_key_denies(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    response = await call(
        stub, request(signed, signed.image1.digest, [artifact], keys=("carol.pub",))
    )
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.untrusted_key", common_pb2.ERROR)]
    assert [(r.accepted, r.code) for r in response.signatures] == [
        (False, "signature.untrusted_key")
    ]


async def test_g01_no_signature_artifact_denies(
    stub: signature_pb2_grpc.SignatureStub, signed: Signed
) -> None:
    response = await call(stub, request(signed, signed.image1.digest, []))
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.missing", common_pb2.ERROR)]


async def test_warn_mode_allows_with_warnings(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    wrong_key = request(
        signed, signed.image1.digest, [artifact], keys=("carol.pub",), mode=Mode.WARN
    )
    response = await call(stub, wrong_key)
    assert response.verdict.decision == common_pb2.ALLOW
    assert findings(response) == [("signature.untrusted_key", common_pb2.WARNING)]
    unsigned = await call(stub, request(signed, signed.image1.digest, [], mode=Mode.WARN))
    assert unsigned.verdict.decision == common_pb2.ALLOW
    assert findings(unsigned) == [("signature.missing", common_pb2.WARNING)]


async def test_threshold_two_with_one_signer_denies(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    message = request(
        signed, signed.image1.digest, [artifact], keys=("alice.pub", "bob.pub"), threshold=2
    )
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [
        ("signature.threshold_not_met", common_pb2.ERROR),
        ("signature.verified", common_pb2.INFO),
    ]


async def test_threshold_two_with_two_signers_allows(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig2)
    message = request(
        signed, signed.image2.digest, [artifact], keys=("alice.pub", "bob.pub"), threshold=2
    )
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.ALLOW
    assert sorted(r.signer for r in response.signatures if r.accepted) == ["alice.pub", "bob.pub"]


async def test_g02_signature_of_another_image_denies(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    # image 1's .sig presented as image 2's (copied to tag sha256-<image2>.sig)
    artifact = stage(config, signed.sig1)
    response = await call(stub, request(signed, signed.image2.digest, [artifact]))
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.wrong_digest", common_pb2.ERROR)]


async def test_g02_signature_copied_to_another_repository_denies(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    # cosign verify accepts this; the payload names signed/app, not other/app.
    artifact = stage(config, signed.sig1)
    message = request(signed, signed.image1.digest, [artifact], repository="other/app")
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.wrong_repository", common_pb2.ERROR)]


async def test_tampered_staged_payload_denies(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    layer_digest = artifact.blobs[1].digest
    path = StagingStore(config.state_dir / "staging").path(SESSION, layer_digest)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"signed/app", b"signed/apq"))
    response = await call(stub, request(signed, signed.image1.digest, [artifact]))
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.blob_mismatch", common_pb2.ERROR)]


async def test_mode_none_needs_no_artifacts(
    stub: signature_pb2_grpc.SignatureStub, signed: Signed
) -> None:
    message = request(signed, signed.image1.digest, [], keys=(), mode=Mode.NONE)
    message.ClearField("session")
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.ALLOW
    assert findings(response) == [("signature.not_required", common_pb2.INFO)]


async def test_unset_mode_is_an_error_not_an_allow(
    stub: signature_pb2_grpc.SignatureStub, signed: Signed
) -> None:
    message = request(signed, signed.image1.digest, [], mode=Mode.MODE_UNSPECIFIED)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub, message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_malformed_digest_is_an_error(
    stub: signature_pb2_grpc.SignatureStub, signed: Signed
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub, request(signed, signed.image1.digest.upper(), []))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unstaged_artifact_is_an_error(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    StagingStore(config.state_dir / "staging").discard(SESSION)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub, request(signed, signed.image1.digest, [artifact]))
    assert raised.value.code() == grpc.StatusCode.INTERNAL


async def test_unusable_trusted_key_is_an_error(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    message = request(signed, signed.image1.digest, [stage(config, signed.sig1)])
    message.plan.rule.signature.keys[
        0
    ].pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub, message)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "alice.pub" in (raised.value.details() or "")


def attestation_request(
    signed: Signed,
    digest: str,
    artifacts: list[signature_pb2.SignatureArtifact],
    keys: tuple[str, ...] = ("alice.pub",),
) -> signature_pb2.VerifyAttestationsRequest:
    plan = request(signed, digest, []).plan
    plan.rule.provenance.CopyFrom(
        common_pb2.ProvenancePolicy(
            required=True,
            signers=common_pb2.SignaturePolicy(
                mode=Mode.ENFORCE,
                keys=[common_pb2.PublicKey(name=k, pem=signed.keys[k]) for k in keys],
                rekor=common_pb2.SignaturePolicy.OPTIONAL,
            ),
        )
    )
    return signature_pb2.VerifyAttestationsRequest(
        session=SESSION, plan=plan, digest=digest, artifacts=artifacts
    )


async def test_cosign_att_tag_gives_signed_slsa_v02_provenance(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.att1)
    message = attestation_request(signed, signed.image1.digest, [artifact])
    response = await stub.VerifyAttestations(message, timeout=10)
    assert response.verdict.decision == common_pb2.ALLOW
    (found,) = response.statements
    assert found.predicate_type == "https://slsa.dev/provenance/v0.2"
    assert found.builder_id == "https://ci.example/builder@v1"
    assert found.source_repository == "https://git.example/myorg/app"
    assert found.signer == "alice.pub"
    assert found.found_at == f"{artifact.location}/layers[0]"
    # cosign's unsigned predicateType annotation is reported as ignored.
    assert "signature.unsigned_annotation_ignored" in [f.code for f in response.verdict.findings]


async def test_cosign_bundle_referrer_gives_signed_slsa_v1_provenance(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.bundle1, f"referrer:{signed.bundle1.digest}")
    message = attestation_request(signed, signed.image1.digest, [artifact])
    response = await stub.VerifyAttestations(message, timeout=10)
    (found,) = response.statements
    assert (found.predicate_type, found.builder_id, found.source_repository) == (
        "https://slsa.dev/provenance/v1",
        "https://ci.example/builder@v2",
        "https://git.example/myorg/app",
    )
    [result] = response.attestations
    assert (result.accepted, result.signer) == (True, "alice.pub")


async def test_g07_attestations_by_an_untrusted_signer_give_nothing(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifacts = [
        stage(config, signed.att1),
        stage(config, signed.bundle1, f"referrer:{signed.bundle1.digest}"),
    ]
    message = attestation_request(signed, signed.image1.digest, artifacts, keys=("bob.pub",))
    response = await stub.VerifyAttestations(message, timeout=10)
    assert response.verdict.decision == common_pb2.ALLOW  # the source layer decides
    assert list(response.statements) == []
    assert [r.code for r in response.attestations] == ["signature.untrusted_key"] * 2


async def test_g07_attestation_is_not_an_image_signature(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.bundle1, f"referrer:{signed.bundle1.digest}")
    response = await call(stub, request(signed, signed.image1.digest, [artifact]))
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.wrong_type", common_pb2.ERROR)]


async def test_simple_signing_signature_stored_as_a_referrer(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    location = f"referrer:{signed.referrer2.digest}"
    artifact = stage(config, signed.referrer2, location)
    message = request(signed, signed.image2.digest, [artifact], keys=("carol.pub",))
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.ALLOW
    # cosign copies the image's existing signatures (alice, bob) into it too.
    assert [r.signer for r in response.signatures if r.accepted] == ["carol.pub"]


async def test_f15_referrer_presented_for_another_image_is_ignored(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.referrer2, f"referrer:{signed.referrer2.digest}")
    message = request(signed, signed.image1.digest, [artifact], keys=("carol.pub",))
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.subject_mismatch", common_pb2.ERROR)]


async def test_g06_key_signature_without_log_entry_when_rekor_is_required(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    message = request(
        signed, signed.image1.digest, [artifact], rekor=common_pb2.SignaturePolicy.REQUIRED
    )
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.tlog_missing", common_pb2.ERROR)]


async def test_signed_identity_maps_another_repository_to_the_signed_name(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    mirror = request(
        signed,
        signed.image1.digest,
        [artifact],
        repository="mirror/app",
        signed_identity=f"{signed.address}/{REPOSITORY}",
    )
    assert (await call(stub, mirror)).verdict.decision == common_pb2.ALLOW
    wrong = request(
        signed,
        signed.image1.digest,
        [artifact],
        signed_identity=f"{signed.address}/other/app",
    )
    response = await call(stub, wrong)
    assert findings(response) == [("signature.wrong_repository", common_pb2.ERROR)]


async def test_keyless_signature_under_the_rules_trusted_root(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    fulcio = OfflineSigstore("service-fulcio")
    issuer = "https://token.actions.githubusercontent.com"
    workflow = "https://github.com/myorg/app/.github/workflows/release.yml@refs/tags/v1"
    payload = simple_signing_payload(f"{signed.address}/{REPOSITORY}", signed.image1.digest)
    layer = fulcio.keyless_layer(payload, workflow, issuer, fulcio.start + timedelta(days=30))
    manifest, blobs = signature_manifest([layer])
    descriptors: list[dict[str, object]] = json.loads(manifest)["layers"]
    artifact = SignatureArtifact("sha256-x.sig", manifest, OCI_MANIFEST, descriptors, blobs)
    message = request(signed, signed.image1.digest, [stage(config, artifact)], keys=())
    rule = message.plan.rule.signature
    rule.keyless.append(
        common_pb2.KeylessIdentity(issuer=issuer, subject_regex=r"^https://github\.com/myorg/.*$")
    )
    rule.trusted_root_json = fulcio.trusted_root().decode()
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.ALLOW, response.verdict
    assert response.signatures[0].signer.endswith(f"({issuer})")
    # The same signature under the production root: an untrusted CA.
    rule.trusted_root_json = ""
    response = await call(stub, message)
    assert findings(response) == [("signature.tlog_invalid", common_pb2.ERROR)]


async def test_unset_rekor_setting_is_an_error_not_an_allow(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    message = request(signed, signed.image1.digest, [stage(config, signed.sig1)])
    message.plan.rule.signature.ClearField("rekor")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub, message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("root", ["{}", "not json", '{"mediaType": "x"}'])
async def test_unusable_trusted_root_is_an_error(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed, root: str
) -> None:
    message = request(signed, signed.image1.digest, [stage(config, signed.sig1)])
    message.plan.rule.signature.trusted_root_json = root
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub, message)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "trusted_root" in (raised.value.details() or "")


async def test_g08_rule_limit_on_signatures(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig2)  # two signatures
    message = request(signed, signed.image2.digest, [artifact], keys=("alice.pub", "bob.pub"))
    message.plan.rule.signature.max_signatures = 1
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.too_many", common_pb2.ERROR)]


async def test_g08_a_plan_limit_of_zero_is_the_limit_not_a_fallback(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    # The plan is the only source of the limit: a 0 that analysis sent is not
    # replaced by the signature service's own (larger) setting.
    artifact = stage(config, signed.sig1)
    message = request(signed, signed.image1.digest, [artifact])
    message.plan.rule.signature.max_signatures = 0
    response = await call(stub, message)
    assert response.verdict.decision == common_pb2.DENY
    assert findings(response) == [("signature.too_many", common_pb2.ERROR)]


async def test_g09_rule_limit_on_signature_size(
    stub: signature_pb2_grpc.SignatureStub, config: Config, signed: Signed
) -> None:
    artifact = stage(config, signed.sig1)
    message = request(signed, signed.image1.digest, [artifact])
    message.plan.rule.signature.max_signature_bytes = 64
    response = await call(stub, message)
    assert findings(response) == [("signature.too_large", common_pb2.ERROR)]
