"""The format layer through a real grpc.aio server on port 0 and a real stub."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest

from pullguard.services.format.servicer import register
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, format_pb2, format_pb2_grpc
from tests.support.configs import make_config
from tests.support.grpcserver import running_service

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SESSION = "d-1"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage(store: StagingStore, data: bytes) -> str:
    key = sha256(data)
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


def staged_manifest(key: str, data: bytes, content_type: str) -> common_pb2.StagedManifest:
    return common_pb2.StagedManifest(
        staged_key=key, computed_digest=key, size=len(data), content_type=content_type
    )


async def test_format_service_manifest_and_config(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    layer = b"layer"
    config_blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(b"diff")]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config_blob),
                "size": len(config_blob),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
            "annotations": {"org.opencontainers.image.source": "https://example.com/src"},
        }
    ).encode()
    key = stage(store, manifest)
    stage(store, config_blob)
    ambiguous = json.loads(manifest)
    ambiguous["manifests"] = []
    del ambiguous["mediaType"]
    ambiguous_bytes = json.dumps(ambiguous).encode()
    ambiguous_key = stage(store, ambiguous_bytes)

    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        plan = common_pb2.Plan()
        response = await stub.CheckManifest(
            format_pb2.CheckManifestRequest(
                session=SESSION,
                plan=plan,
                manifest=staged_manifest(key, manifest, OCI_MANIFEST + "; charset=utf-8"),
            )
        )
        assert response.verdict.decision == common_pb2.ALLOW
        assert response.verdict.layer == "format"
        summary = response.summary
        assert summary.kind == format_pb2.IMAGE_MANIFEST
        assert summary.media_type == OCI_MANIFEST
        assert summary.config.digest == sha256(config_blob)
        assert [d.digest for d in summary.layers] == [sha256(layer)]
        assert summary.annotations["org.opencontainers.image.source"] == "https://example.com/src"

        checked = await stub.CheckConfig(
            format_pb2.CheckConfigRequest(session=SESSION, plan=plan, summary=summary)
        )
        assert checked.verdict.decision == common_pb2.ALLOW

        # Two layers in the manifest, one diff_id in the config.
        summary.layers.append(summary.layers[0])
        mismatched = await stub.CheckConfig(
            format_pb2.CheckConfigRequest(session=SESSION, plan=plan, summary=summary)
        )
        assert mismatched.verdict.decision == common_pb2.DENY
        assert [f.code for f in mismatched.verdict.findings] == ["format.config_mismatch"]

        for content_type in (OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"):
            denied = await stub.CheckManifest(
                format_pb2.CheckManifestRequest(
                    session=SESSION,
                    plan=plan,
                    manifest=staged_manifest(ambiguous_key, ambiguous_bytes, content_type),
                )
            )
            assert denied.verdict.decision == common_pb2.DENY
            assert [f.code for f in denied.verdict.findings] == ["format.ambiguous_manifest"]
            assert not denied.HasField("summary")

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.CheckManifest(
                format_pb2.CheckManifestRequest(
                    session=SESSION,
                    plan=plan,
                    manifest=staged_manifest(sha256(b"never"), b"", OCI_MANIFEST),
                )
            )
        assert missing.value.code() == grpc.StatusCode.INTERNAL
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.CheckManifest(format_pb2.CheckManifestRequest(session=SESSION))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
