"""The Fetcher gRPC service on a real grpc.aio server, against a real registry
(Debian's docker-registry) and, for failure mapping, the hostile upstream."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from pullguard.services.fetcher.servicer import register
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, fetcher_pb2, fetcher_pb2_grpc
from tests.support.configs import make_config
from tests.support.grpcserver import running_service
from tests.support.hostile import HostileUpstream, Reply
from tests.support.images import sha256
from tests.support.registry import push_blob, push_image, push_manifest, registry  # noqa: F401
from tests.support.stack import free_port

REPO = "team/app"


def plan(config: Config, tag: str = "", digest: str = "", alias: str = "lab") -> common_pb2.Plan:
    upstream = config.upstreams.get(alias)
    return common_pb2.Plan(
        ref=common_pb2.ImageRef(upstream_alias=alias, repository=REPO, tag=tag, digest=digest),
        upstream=common_pb2.UpstreamInfo(
            alias=alias, url=upstream.url if upstream else "", insecure=True
        ),
    )


def lab_config(tmp_path: Path, url: str, **overrides: object) -> Config:
    return make_config(tmp_path, upstreams={"lab": {"url": url, "insecure": True}}, **overrides)


def staging(config: Config) -> StagingStore:
    return StagingStore(config.state_dir / "staging")


async def test_fetches_a_real_image_by_tag_and_digest(tmp_path: Path, registry: str) -> None:  # noqa: F811
    image = await push_image(registry, REPO, "v1", [{"a.txt": b"alpha\n"}, {"b.txt": b"beta\n"}])
    config = lab_config(tmp_path, registry)
    store = staging(config)
    async with running_service("fetcher", register, config) as channel:
        stub = fetcher_pb2_grpc.FetcherStub(channel)

        by_tag = await stub.FetchManifest(
            fetcher_pb2.FetchManifestRequest(session="d1", plan=plan(config, tag="v1"))
        )
        assert by_tag.verdict.decision == common_pb2.ALLOW
        assert by_tag.verdict.layer == "fetcher"
        staged = by_tag.manifest
        assert staged.computed_digest == staged.staged_key == image.digest
        assert staged.size == len(image.manifest)
        assert staged.content_type == image.media_type
        assert staged.docker_content_digest == image.digest
        assert store.read("d1", staged.staged_key, 1 << 20) == image.manifest
        [exchange] = by_tag.provenance.exchanges
        assert (exchange.method, exchange.status, exchange.purpose) == ("GET", 200, "manifest")
        assert exchange.url == f"{registry}/v2/{REPO}/manifests/v1"
        assert exchange.headers["docker-content-digest"] == image.digest

        by_digest = await stub.FetchManifest(
            fetcher_pb2.FetchManifestRequest(
                session="d2", plan=plan(config, tag="v1"), reference=image.digest
            )
        )
        assert by_digest.manifest.computed_digest == image.digest
        assert store.read("d2", image.digest, 1 << 20) == image.manifest

        descriptors = [
            common_pb2.Descriptor(
                media_type=str(d["mediaType"]), digest=str(d["digest"]), size=int(d["size"])
            )  # type: ignore[call-overload]
            for d in image.descriptors
        ]
        blobs = await stub.FetchBlobs(
            fetcher_pb2.FetchBlobsRequest(
                session="d1", plan=plan(config, tag="v1"), blobs=descriptors
            )
        )
        assert blobs.verdict.decision == common_pb2.ALLOW
        assert [b.digest for b in blobs.blobs] == [d.digest for d in descriptors]
        for staged_blob in blobs.blobs:
            assert staged_blob.computed_digest == staged_blob.digest
            assert store.read("d1", staged_blob.digest, 1 << 20) == image.blobs[staged_blob.digest]
        assert {e.purpose for e in blobs.provenance.exchanges} == {"blob"}

        tags = await stub.ListTags(fetcher_pb2.ListTagsRequest(plan=plan(config), n=10))
        assert list(tags.tags) == ["v1"]


async def test_fetches_a_real_artifact_and_reports_absence(
    tmp_path: Path,
    registry: str,  # noqa: F811
) -> None:
    image = await push_image(registry, REPO, "v1")
    payload = b'{"critical":{"image":{"docker-manifest-digest":"' + image.digest.encode() + b'"}}}'
    config_blob = b"{}"
    await push_blob(registry, REPO, payload)
    await push_blob(registry, REPO, config_blob)
    sig_tag = image.digest.replace(":", "-") + ".sig"
    sig_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config_blob),
                "size": len(config_blob),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": sha256(payload),
                    "size": len(payload),
                }
            ],
        }
    ).encode()
    await push_manifest(registry, REPO, sig_tag, sig_manifest)
    config = lab_config(tmp_path, registry)
    async with running_service("fetcher", register, config) as channel:
        stub = fetcher_pb2_grpc.FetcherStub(channel)
        found = await stub.FetchArtifact(
            fetcher_pb2.FetchArtifactRequest(
                session="d1",
                plan=plan(config, digest=image.digest),
                tag=sig_tag,
                max_blob_size=4096,
                max_blobs=10,
            )
        )
        assert found.found and found.verdict.decision == common_pb2.ALLOW
        assert found.manifest.computed_digest == sha256(sig_manifest)
        assert [b.digest for b in found.blobs] == [sha256(config_blob), sha256(payload)]
        assert staging(config).read("d1", sha256(payload), 4096) == payload

        absent = await stub.FetchArtifact(
            fetcher_pb2.FetchArtifactRequest(
                session="d1",
                plan=plan(config, digest=image.digest),
                tag="sha256-" + "0" * 64 + ".sig",
            )
        )
        assert not absent.found
        assert absent.verdict.decision == common_pb2.ALLOW


async def test_missing_manifest_is_not_found(tmp_path: Path, registry: str) -> None:  # noqa: F811
    config = lab_config(tmp_path, registry)
    async with running_service("fetcher", register, config) as channel:
        stub = fetcher_pb2_grpc.FetcherStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FetchManifest(
                fetcher_pb2.FetchManifestRequest(session="d1", plan=plan(config, tag="nope"))
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing["pullguard-error-class"] == "NotFound"
    assert trailing["pullguard-oci-code"] == "MANIFEST_UNKNOWN"


async def test_unreachable_upstream_is_unavailable(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        upstreams={"lab": {"url": f"http://127.0.0.1:{free_port()}", "insecure": True}},
        limits={"retries": 0},
    )
    async with running_service("fetcher", register, config) as channel:
        stub = fetcher_pb2_grpc.FetcherStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FetchManifest(
                fetcher_pb2.FetchManifestRequest(session="d1", plan=plan(config, tag="v1"))
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (caught.value.details() or "").startswith("fetcher: upstream: lab")
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing["pullguard-error-class"] == "UpstreamError"


async def test_limit_breach_is_a_deny_verdict(tmp_path: Path) -> None:
    async with HostileUpstream() as upstream:
        upstream.reply(f"/v2/{REPO}/manifests/v1", Reply(body=b"{" * 2000))
        config = lab_config(tmp_path, upstream.url, limits={"manifest_bytes": 1000})
        async with running_service("fetcher", register, config) as channel:
            stub = fetcher_pb2_grpc.FetcherStub(channel)
            response = await stub.FetchManifest(
                fetcher_pb2.FetchManifestRequest(session="d1", plan=plan(config, tag="v1"))
            )
    assert response.verdict.decision == common_pb2.DENY
    assert [f.code for f in response.verdict.findings] == ["fetch.manifest_too_large"]
    assert response.verdict.findings[0].severity == common_pb2.ERROR
    assert not response.HasField("manifest")
    assert len(response.provenance.exchanges) == 1


@pytest.mark.parametrize(
    ("alias", "ref_alias"), [("nowhere", "nowhere"), ("lab", "other"), ("", "")]
)
async def test_bad_plan_is_invalid_argument(tmp_path: Path, alias: str, ref_alias: str) -> None:
    config = lab_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    request_plan = plan(config, tag="v1")
    request_plan.upstream.alias = alias
    request_plan.ref.upstream_alias = ref_alias
    async with running_service("fetcher", register, config) as channel:
        stub = fetcher_pb2_grpc.FetcherStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FetchManifest(
                fetcher_pb2.FetchManifestRequest(session="d1", plan=request_plan)
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
