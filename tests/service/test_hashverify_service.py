"""The hashverify layer through a real grpc.aio server on port 0 and a real stub."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import grpc
import pytest

from pullguard.services.hashverify.servicer import register
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, hashverify_pb2, hashverify_pb2_grpc
from tests.support.configs import make_config
from tests.support.grpcserver import running_service

SESSION = "d-2"
MANIFEST = b'{"schemaVersion":2}'


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage(store: StagingStore, data: bytes, key: str | None = None) -> str:
    key = key or sha256(data)
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


def codes(verdict: common_pb2.Verdict) -> list[str]:
    return [f.code for f in verdict.findings]


def staged(key: str, data: bytes = MANIFEST) -> common_pb2.StagedManifest:
    return common_pb2.StagedManifest(
        staged_key=key, computed_digest=key, size=len(data), docker_content_digest=key
    )


BY_TAG = common_pb2.Plan(
    ref=common_pb2.ImageRef(upstream_alias="lab", repository="app", tag="1"),
)


async def test_hashverify_service(tmp_path: Path) -> None:
    config = make_config(tmp_path, policy={"rules": [{"match": "**"}], "deny_digests": []})
    store = StagingStore(config.state_dir / "staging")
    key = stage(store, MANIFEST)
    layer = b"layer content" * 100
    layer_key = stage(store, layer)
    tampered_key = stage(store, b"x" * len(layer), key=sha256(b"y" * len(layer)))

    async with running_service("hashverify", register, config) as channel:
        stub = hashverify_pb2_grpc.HashVerifyStub(channel)
        pinned = common_pb2.Plan()
        pinned.CopyFrom(BY_TAG)
        pinned.rule.pinned_digest = key
        ok = await stub.VerifyManifest(
            hashverify_pb2.VerifyManifestRequest(session=SESSION, plan=pinned, manifest=staged(key))
        )
        assert ok.verdict.decision == common_pb2.ALLOW and ok.verdict.layer == "hashverify"
        assert ok.digest == key

        moved = common_pb2.Plan(
            ref=BY_TAG.ref,
            rule=common_pb2.RulePolicy(pinned_digest=sha256(b"pinned")),
            deny_digests=[key],
        )
        denied = await stub.VerifyManifest(
            hashverify_pb2.VerifyManifestRequest(session=SESSION, plan=moved, manifest=staged(key))
        )
        assert denied.verdict.decision == common_pb2.DENY
        assert codes(denied.verdict) == ["hash.pin_mismatch", "hash.denied_digest"]

        # F-10 (e): the admitted parent index lists this manifest with another size.
        child = await stub.VerifyManifest(
            hashverify_pb2.VerifyManifestRequest(
                session=SESSION,
                plan=BY_TAG,
                manifest=staged(key),
                parent_descriptors=[common_pb2.Descriptor(digest=key, size=len(MANIFEST) + 1)],
            )
        )
        assert codes(child.verdict) == ["hash.size_mismatch"]

        blobs = await stub.VerifyBlobs(
            hashverify_pb2.VerifyBlobsRequest(
                session=SESSION,
                plan=BY_TAG,
                blobs=[
                    common_pb2.Descriptor(digest=layer_key, size=len(layer)),
                    common_pb2.Descriptor(digest=tampered_key, size=len(layer)),
                    common_pb2.Descriptor(digest=sha256(b"absent"), size=3),
                ],
            )
        )
        assert blobs.verdict.decision == common_pb2.DENY
        assert codes(blobs.verdict) == ["hash.blob_mismatch", "hash.blob_missing"]
        # Only the blob found as claimed is stamped, with its file's identity.
        found = store.path(SESSION, layer_key).stat()
        assert [(s.digest, s.inode, s.size, s.ctime_ns) for s in blobs.stamps] == [
            (layer_key, found.st_ino, len(layer), found.st_ctime_ns)
        ]

        # T-01: the right bytes, with a Docker-Content-Digest naming others;
        # T-03: a Content-Length that is not the size.
        lying = common_pb2.Provenance(
            exchanges=[
                common_pb2.HttpExchange(
                    method="GET",
                    url=f"http://127.0.0.1:5001/v2/app/blobs/{layer_key}",
                    status=200,
                    purpose="blob",
                    digest=layer_key,
                    headers={
                        "docker-content-digest": sha256(b"other"),
                        "content-length": str(len(layer) + 1),
                    },
                )
            ]
        )
        headers = await stub.VerifyBlobs(
            hashverify_pb2.VerifyBlobsRequest(
                session=SESSION,
                plan=BY_TAG,
                blobs=[common_pb2.Descriptor(digest=layer_key, size=len(layer))],
                provenance=lying,
            )
        )
        assert codes(headers.verdict) == ["hash.header_mismatch", "hash.size_mismatch"]
        assert list(headers.stamps) == []

        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.VerifyBlobs(hashverify_pb2.VerifyBlobsRequest(session=SESSION))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def write_db(path: Path, digests: list[str]) -> None:
    path.write_text("\n".join(digests) + "\n")
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


async def test_deny_database_file_through_the_service(tmp_path: Path) -> None:
    many = [sha256(str(i).encode()) for i in range(100_000)]
    path = tmp_path / "deny.txt"
    write_db(path, many)
    config = make_config(
        tmp_path, policy={"rules": [{"match": "**"}], "deny_digests_file": str(path)}
    )
    store = StagingStore(config.state_dir / "staging")
    key = stage(store, MANIFEST)
    layer = b"a layer found bad later"
    layer_key = stage(store, layer)
    manifest_request = hashverify_pb2.VerifyManifestRequest(
        session=SESSION, plan=BY_TAG, manifest=staged(key)
    )
    blobs_request = hashverify_pb2.VerifyBlobsRequest(
        session=SESSION,
        plan=BY_TAG,
        blobs=[common_pb2.Descriptor(digest=layer_key, size=len(layer))],
    )

    async with running_service("hashverify", register, config) as channel:
        stub = hashverify_pb2_grpc.HashVerifyStub(channel)
        first = await stub.VerifyManifest(manifest_request)
        assert first.verdict.decision == common_pb2.ALLOW
        assert (await stub.VerifyBlobs(blobs_request)).verdict.decision == common_pb2.ALLOW

        # The operator adds two digests; the running service sees them.
        write_db(path, [*many, key, layer_key])
        second = await stub.VerifyManifest(manifest_request)
        assert codes(second.verdict) == ["hash.denied_digest"]
        blobs = await stub.VerifyBlobs(blobs_request)
        assert codes(blobs.verdict) == ["hash.denied_digest"]

        # A database that cannot be read fails the check; it never allows.
        path.unlink()
        for call in (stub.VerifyManifest(manifest_request), stub.VerifyBlobs(blobs_request)):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
            assert failed.value.code() == grpc.StatusCode.INTERNAL
            assert "deny database" in (failed.value.details() or "")
