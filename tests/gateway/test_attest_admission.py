"""pullguard's signature around an admission (gateway/attest), in process.

The pipeline admits through test_pipeline_faults' typed fake layers; the
target is a real docker-registry on 127.0.0.1, or the embedded store. The
signatures are checked here with ``cryptography``; tests/e2e/test_attestation_e2e
checks them with the real cosign.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.gateway.attest.documents import PREDICATE_TYPE, pae, signature_attachment
from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.publish import Publisher
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.errors import TargetError
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2
from tests.gateway.test_pipeline_faults import DIGEST, FakeLayers
from tests.support.configs import make_config
from tests.support.registry import registry  # noqa: F401 - a fixture

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIG_TAG = DIGEST.replace(":", "-") + ".sig"
ATT_TAG = DIGEST.replace(":", "-") + ".att"


def _key(tmp_path: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "pullguard.key"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, private.public_key()


class TaggedLayers(FakeLayers):
    """FakeLayers whose plan keeps the tag the client asked for."""

    def _healthy(self, layer: str, method: str, request: Any) -> Any:
        response = super()._healthy(layer, method, request)
        if method == "Plan":
            response.plan.ref.tag = request.reference
        return response


def _pipeline(
    tmp_path: Path, layers_class: type[FakeLayers] = FakeLayers, **overrides: Any
) -> Pipeline:
    config = make_config(tmp_path, **overrides)
    state = config.state_dir
    staging = StagingStore(state / "staging")
    decisions = DecisionLog(state)
    admitted = AdmittedStore(state / "admitted")
    publisher = Publisher.for_target(config, admitted, decisions)
    quarantine = Quarantine(state / "quarantine")
    layers = layers_class(staging, {})
    return Pipeline(config, layers, decisions, admitted, quarantine, staging, publisher)


@pytest.fixture
async def registry_pipeline(
    tmp_path: Path,
    registry: str,  # noqa: F811
) -> AsyncIterator[tuple[Pipeline, ec.EllipticCurvePublicKey]]:
    key, public = _key(tmp_path)
    target = {"kind": "registry", "url": registry, "insecure": True}
    pipeline = _pipeline(tmp_path, target=target, attest={"key": str(key)})
    try:
        yield pipeline, public
    finally:
        assert pipeline.publisher is not None
        await pipeline.publisher.close()


def _artifact(base_url: str, tag: str) -> tuple[dict[str, Any], bytes] | None:
    """The attachment manifest at ``tag`` and its one layer's blob; None when absent."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        manifest = client.get(f"/v2/lab/app/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        if manifest.status_code == 404:
            return None
        layer = manifest.json()["layers"][0]
        blob = client.get(f"/v2/lab/app/blobs/{layer['digest']}")
        assert blob.status_code == 200
    return layer, blob.content


def _check_signature(
    public: ec.EllipticCurvePublicKey, layer: dict[str, Any], payload: bytes
) -> None:
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))


async def test_an_admission_is_signed_and_attested_beside_the_image(
    registry_pipeline: tuple[Pipeline, ec.EllipticCurvePublicKey],
    registry: str,  # noqa: F811
) -> None:
    pipeline, public = registry_pipeline
    result = await pipeline.pull("lab/app", "v1")
    assert result.allowed and result.report.admitted, result.report.as_json()
    steps = {(s.layer, s.step) for s in result.report.steps}
    assert ("target", "attest") in steps

    signed = _artifact(registry, SIG_TAG)
    assert signed is not None
    layer, payload = signed
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    _check_signature(public, layer, payload)
    critical = json.loads(payload)["critical"]
    assert critical["image"]["docker-manifest-digest"] == DIGEST
    assert critical["identity"]["docker-reference"].endswith("/lab/app")
    assert payload.startswith(b'{"critical":{"identity":')  # cosign's exact field order

    attested = _artifact(registry, ATT_TAG)
    assert attested is not None
    layer, blob = attested
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == PREDICATE_TYPE
    envelope = json.loads(blob)
    statement = base64.b64decode(envelope["payload"])
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    public.verify(signature, pae(envelope["payloadType"], statement), ec.ECDSA(hashes.SHA256()))
    document = json.loads(statement)
    assert document["subject"][0]["digest"] == {"sha256": DIGEST.split(":")[1]}
    assert document["predicate"]["decision"]["id"] == result.report.decision_id

    # Served again from the admitted store: not signed again.
    again = await pipeline.pull("lab/app", "v1")
    assert again.allowed and again.report.cached
    assert _artifact(registry, SIG_TAG) == signed

    # Revoked and withdrawn: the signature and attestation go with the image.
    pipeline.store.revoke("lab/app", DIGEST)
    withdrawn = await pipeline.store.withdraw("lab/app", DIGEST)
    assert SIG_TAG in withdrawn and ATT_TAG in withdrawn, withdrawn
    assert _artifact(registry, SIG_TAG) is None
    assert _artifact(registry, ATT_TAG) is None


async def test_a_signature_the_target_refuses_admits_nothing_and_leaves_no_attestation(
    registry_pipeline: tuple[Pipeline, ec.EllipticCurvePublicKey],
    registry: str,  # noqa: F811
) -> None:
    pipeline, _ = registry_pipeline
    assert pipeline.publisher is not None
    client = pipeline.publisher.client
    put_manifest = client.put_manifest

    async def refuse_signatures(
        name: str, reference: str, data: bytes, media_type: str, digest: str
    ) -> None:
        # A target that takes the attestation, then fails on the signature.
        if reference.endswith(".sig"):
            raise TargetError("target: PUT refused (test)")
        await put_manifest(name, reference, data, media_type, digest)

    client.put_manifest = refuse_signatures  # type: ignore[method-assign]
    result = await pipeline.pull("lab/app", "v1")
    assert isinstance(result.error, TargetError), result.report.as_json()
    assert "attest" in result.error.message
    assert not result.report.admitted
    assert result.report.outage["layer"] == "target"
    assert pipeline.decisions.admitted("lab/app", DIGEST, pipeline.config.policy_version) is None
    # The attestation already pushed was taken back: nothing says "admitted".
    assert _artifact(registry, ATT_TAG) is None
    assert _artifact(registry, SIG_TAG) is None

    # The target works again: the next pull admits and signs.
    client.put_manifest = put_manifest  # type: ignore[method-assign]
    again = await pipeline.pull("lab/app", "v1")
    assert again.allowed and again.report.admitted
    assert _artifact(registry, SIG_TAG) is not None


async def test_embedded_target_keeps_the_signature_beside_the_admitted_store(
    tmp_path: Path,
) -> None:
    key, public = _key(tmp_path)
    pipeline = _pipeline(tmp_path, attest={"key": str(key)})
    attester = pipeline.store.attester
    assert attester is not None
    result = await pipeline.pull("lab/app", "v1")
    assert result.allowed and result.report.admitted
    manifest = attester.local.manifest("lab/app", SIG_TAG)
    assert manifest is not None
    layer = json.loads(manifest)["layers"][0]
    payload = attester.local.blob("lab/app", layer["digest"])
    assert payload is not None
    _check_signature(public, layer, payload)
    assert attester.local.manifest("lab/other", SIG_TAG) is None  # per repository
    assert attester.local.blob("lab/other", layer["digest"]) is None
    other = signature_attachment(attester.key, "x/lab/other", "sha256:" + "0" * 64, {})
    attester.local.put("lab/other", other)
    assert attester.local.blob("lab/other", layer["digest"]) is None
    # A damaged blob file is never served.
    blob_file = attester.local.root / "blobs" / "sha256" / layer["digest"].split(":")[1]
    blob_file.write_bytes(payload.replace(b"critical", b"CRITICAL"))
    assert attester.local.blob("lab/app", layer["digest"]) is None
    blob_file.write_bytes(payload)

    pipeline.store.revoke("lab/app", DIGEST)
    assert attester.local.manifest("lab/app", SIG_TAG) is None
    assert attester.local.manifest("lab/app", ATT_TAG) is None
    assert attester.local.blob("lab/app", layer["digest"]) is None


async def test_embedded_attachments_that_cannot_be_stored_admit_nothing(tmp_path: Path) -> None:
    key, _ = _key(tmp_path)
    pipeline = _pipeline(tmp_path, attest={"key": str(key)})
    (pipeline.config.state_dir / "attachments").write_text("not a folder")
    result = await pipeline.pull("lab/app", "v1")
    assert isinstance(result.error, TargetError)
    assert not result.report.admitted
    assert pipeline.decisions.admitted("lab/app", DIGEST, pipeline.config.policy_version) is None


async def test_an_image_removed_from_the_target_loses_pullguards_signature_there(
    registry_pipeline: tuple[Pipeline, ec.EllipticCurvePublicKey],
    registry: str,  # noqa: F811
) -> None:
    pipeline, _ = registry_pipeline
    assert (await pipeline.pull("lab/app", "v1")).report.admitted
    assert _artifact(registry, SIG_TAG) is not None
    # Deleted in the target behind pullguard's back (an operator, another replica).
    deleted = httpx.delete(f"{registry}/v2/lab/app/manifests/{DIGEST}", timeout=30)
    assert deleted.status_code == 202
    assert pipeline.publisher is not None
    client = pipeline.publisher.client

    async def refuse(name: str, reference: str, data: bytes, media_type: str, digest: str) -> None:
        raise TargetError("target: PUT refused (test)")

    # The re-verification cannot publish again, so nothing re-signs it either.
    client.put_manifest = refuse  # type: ignore[method-assign]
    result = await pipeline.pull("lab/app", "v1")
    assert not result.report.admitted
    assert _artifact(registry, SIG_TAG) is None
    assert _artifact(registry, ATT_TAG) is None


async def test_an_upstream_tag_in_cosigns_schema_is_never_published_as_a_tag(
    tmp_path: Path,
    registry: str,  # noqa: F811
) -> None:
    key, _ = _key(tmp_path)
    target = {"kind": "registry", "url": registry, "insecure": True}
    pipeline = _pipeline(tmp_path, TaggedLayers, target=target, attest={"key": str(key)})
    assert pipeline.publisher is not None
    # An "image" tagged like a signature upstream (a replayed, revoked pullguard .sig):
    # whatever it holds, the target's sha256-<hex>.sig tag stays pullguard's to write.
    forged = "sha256-" + "5" * 64 + ".sig"
    try:
        result = await pipeline.pull("lab/app", forged)
    finally:
        await pipeline.publisher.close()
    assert result.allowed, result.report.as_json()
    assert forged not in result.report.target["pushed"]
    assert _artifact(registry, forged) is None


async def test_signing_again_leaves_no_older_signature_behind(
    registry_pipeline: tuple[Pipeline, ec.EllipticCurvePublicKey],
    registry: str,  # noqa: F811
) -> None:
    pipeline, _ = registry_pipeline
    first = await pipeline.pull("lab/app", "v1")
    assert first.report.admitted
    attester = pipeline.store.attester
    assert attester is not None
    old = {tag: _manifest_digest(registry, tag) for tag in (SIG_TAG, ATT_TAG)}
    # A re-admission (e.g. reevaluate --force) signs again.
    plan = common_pb2.Plan(policy_version="v2")
    await attester.attach(first.report, plan, DIGEST, OCI_MANIFEST, 100)
    for tag, digest in old.items():
        assert _manifest_digest(registry, tag) != digest
        gone = httpx.head(
            f"{registry}/v2/lab/app/manifests/{digest}",
            headers={"Accept": OCI_MANIFEST},
            timeout=30,
        )
        assert gone.status_code == 404, tag


def _manifest_digest(base_url: str, reference: str) -> str:
    response = httpx.head(
        f"{base_url}/v2/lab/app/manifests/{reference}",
        headers={"Accept": OCI_MANIFEST},
        timeout=30,
    )
    assert response.status_code == 200
    return response.headers["Docker-Content-Digest"]


def _listed(base_url: str) -> list[dict[str, Any]]:
    """The entries of DIGEST's referrers fallback index (``sha256-<hex>``)."""
    index = httpx.get(
        f"{base_url}/v2/lab/app/manifests/{DIGEST.replace(':', '-')}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        timeout=30,
    )
    assert index.status_code == 200, index.text
    return list(index.json()["manifests"])


def _present(base_url: str, digest: str) -> bool:
    response = httpx.head(
        f"{base_url}/v2/lab/app/manifests/{digest}", headers={"Accept": OCI_MANIFEST}, timeout=30
    )
    return response.status_code == 200


async def test_mode_both_signs_as_tags_and_referrers_and_replaces_then_withdraws_them(
    tmp_path: Path,
    registry: str,  # noqa: F811
) -> None:
    key, public = _key(tmp_path)
    target = {"kind": "registry", "url": registry, "insecure": True}
    pipeline = _pipeline(tmp_path, target=target, attest={"key": str(key), "mode": "both"})
    assert pipeline.publisher is not None
    client = pipeline.publisher.client
    put_manifest = client.put_manifest

    async def refuse_signature_referrers(
        name: str, reference: str, data: bytes, media_type: str, digest: str
    ) -> None:
        if b'"artifactType":"application/vnd.dev.cosign.artifact.sig' in data:
            raise TargetError("target: PUT refused (test)")
        await put_manifest(name, reference, data, media_type, digest)
        if b'"subject"' in data:
            pushed.append(digest)

    pushed: list[str] = []

    try:
        client.put_manifest = refuse_signature_referrers  # type: ignore[method-assign]
        refused = await pipeline.pull("lab/app", "v1")
        assert isinstance(refused.error, TargetError) and not refused.report.admitted
        assert _artifact(registry, SIG_TAG) is None and _artifact(registry, ATT_TAG) is None
        # The attestation referrer already pushed was taken back too.
        assert len(pushed) == 1 and not _present(registry, pushed[0])
        client.put_manifest = put_manifest  # type: ignore[method-assign]

        first = await pipeline.pull("lab/app", "v1")
        assert first.report.admitted, first.report.as_json()
        assert _artifact(registry, SIG_TAG) is not None and _artifact(registry, ATT_TAG) is not None
        listed = _listed(registry)
        assert sorted(e["artifactType"] for e in listed) == [
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            "application/vnd.in-toto+json",
        ]
        size = len(pipeline.admitted.blob_path(DIGEST).read_bytes())
        for entry in listed:
            referrer = httpx.get(
                f"{registry}/v2/lab/app/manifests/{entry['digest']}",
                headers={"Accept": OCI_MANIFEST},
                timeout=30,
            ).json()
            assert referrer["subject"] == {
                "mediaType": OCI_MANIFEST,
                "digest": DIGEST,
                "size": size,
            }
            if entry["artifactType"].endswith("sig.v1+json"):
                layer = referrer["layers"][0]
                payload = httpx.get(
                    f"{registry}/v2/lab/app/blobs/{layer['digest']}", timeout=30
                ).content
                _check_signature(public, layer, payload)

        # Signed again: the new referrers replace the old in the index and the registry.
        attester = pipeline.store.attester
        assert attester is not None
        plan = common_pb2.Plan(policy_version="v2")
        await attester.attach(first.report, plan, DIGEST, OCI_MANIFEST, size)
        again = _listed(registry)
        assert len(again) == 2 and not {e["digest"] for e in again} & {e["digest"] for e in listed}
        assert not any(_present(registry, e["digest"]) for e in listed)

        withdrawn = await pipeline.store.withdraw("lab/app", DIGEST)
        assert SIG_TAG in withdrawn and "referrer " in withdrawn, withdrawn
        assert _listed(registry) == []
        assert not any(_present(registry, e["digest"]) for e in again)
    finally:
        await pipeline.publisher.close()
