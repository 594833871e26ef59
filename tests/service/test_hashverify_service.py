"""The hashverify layer through a real grpc.aio server on port 0 and a real stub."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from pullguard.services.hashverify.servicer import register
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, hashverify_pb2, hashverify_pb2_grpc
from tests.support.configs import make_config
from tests.support.grpcserver import running_service

SESSION = "d-2"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage(store: StagingStore, data: bytes, key: str | None = None) -> str:
    key = key or sha256(data)
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


async def test_hashverify_service(tmp_path: Path) -> None:
    config = make_config(tmp_path, policy={"rules": [{"match": "**"}], "deny_digests": []})
    store = StagingStore(config.state_dir / "staging")
    manifest = b'{"schemaVersion":2}'
    key = stage(store, manifest)
    layer = b"layer content" * 100
    layer_key = stage(store, layer)
    tampered_key = stage(store, b"x" * len(layer), key=sha256(b"y" * len(layer)))

    async with running_service("hashverify", register, config) as channel:
        stub = hashverify_pb2_grpc.HashVerifyStub(channel)
        by_tag = common_pb2.Plan(
            ref=common_pb2.ImageRef(upstream_alias="lab", repository="app", tag="1"),
            rule=common_pb2.RulePolicy(pinned_digest=key),
        )
        staged = common_pb2.StagedManifest(
            staged_key=key, computed_digest=key, size=len(manifest), docker_content_digest=key
        )
        ok = await stub.VerifyManifest(
            hashverify_pb2.VerifyManifestRequest(session=SESSION, plan=by_tag, manifest=staged)
        )
        assert ok.verdict.decision == common_pb2.ALLOW and ok.verdict.layer == "hashverify"
        assert ok.digest == key

        moved = common_pb2.Plan(
            ref=by_tag.ref,
            rule=common_pb2.RulePolicy(pinned_digest=sha256(b"pinned")),
            deny_digests=[key],
        )
        denied = await stub.VerifyManifest(
            hashverify_pb2.VerifyManifestRequest(session=SESSION, plan=moved, manifest=staged)
        )
        assert denied.verdict.decision == common_pb2.DENY
        assert [f.code for f in denied.verdict.findings] == [
            "hash.pin_mismatch",
            "hash.denied_digest",
        ]

        blobs = await stub.VerifyBlobs(
            hashverify_pb2.VerifyBlobsRequest(
                session=SESSION,
                plan=by_tag,
                blobs=[
                    common_pb2.Descriptor(digest=layer_key, size=len(layer)),
                    common_pb2.Descriptor(digest=tampered_key, size=len(layer)),
                    common_pb2.Descriptor(digest=sha256(b"absent"), size=3),
                ],
            )
        )
        assert blobs.verdict.decision == common_pb2.DENY
        assert [f.code for f in blobs.verdict.findings] == [
            "hash.blob_mismatch",
            "hash.blob_missing",
        ]

        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.VerifyBlobs(hashverify_pb2.VerifyBlobsRequest(session=SESSION))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
