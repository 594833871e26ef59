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
from tests.support.hostile import HostileUpstream, Reply, tls_material
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

        tags = await stub.ListTags(fetcher_pb2.ListTagsRequest(plan=plan(config)))
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
    assert trailing["pullguard-error-class"] == "UpstreamUnreachable"


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


async def test_real_registry_without_referrers_api_and_artifact_by_digest(
    tmp_path: Path,
    registry: str,  # noqa: F811
) -> None:
    # distribution 2.8 has no referrers API: it answers 404, which is an answer.
    image = await push_image(registry, REPO, "v1")
    signature_repo = "team/signatures"
    payload = b'{"critical":{}}'
    await push_blob(registry, signature_repo, payload)
    await push_blob(registry, signature_repo, b"{}")
    sig_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(b"{}"),
                "size": 2,
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
    sig_digest = await push_manifest(registry, signature_repo, "sig", sig_manifest)
    config = lab_config(tmp_path, registry)
    async with running_service("fetcher", register, config) as channel:
        stub = fetcher_pb2_grpc.FetcherStub(channel)
        referrers = await stub.ListReferrers(
            fetcher_pb2.ListReferrersRequest(plan=plan(config, tag="v1"), digest=image.digest)
        )
        assert not referrers.supported
        assert referrers.verdict.decision == common_pb2.ALLOW
        assert [(e.purpose, e.status) for e in referrers.provenance.exchanges] == [
            ("referrers", 404),
            ("referrers-tag", 404),
        ]

        # The referrers tag schema: an index at tag sha256-<hex> lists them.
        # (distribution checks that an index's children exist: list the image.)
        referrer = {
            "mediaType": image.media_type,
            "digest": image.digest,
            "size": len(image.manifest),
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        }
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [referrer],
            }
        ).encode()
        fallback = image.digest.replace(":", "-")
        await push_manifest(
            registry, REPO, fallback, index, "application/vnd.oci.image.index.v1+json"
        )
        referrers = await stub.ListReferrers(
            fetcher_pb2.ListReferrersRequest(plan=plan(config, tag="v1"), digest=image.digest)
        )
        assert referrers.supported and referrers.fallback_tag == fallback
        assert [r.digest for r in referrers.referrers] == [referrer["digest"]]

        found = await stub.FetchArtifact(
            fetcher_pb2.FetchArtifactRequest(
                session="d1",
                plan=plan(config, digest=image.digest),
                reference=sig_digest,
                repository=signature_repo,
            )
        )
        assert found.found and found.verdict.decision == common_pb2.ALLOW
        assert found.manifest.staged_key == sig_digest
        assert [b.digest for b in found.blobs] == [sha256(b"{}"), sha256(payload)]
        assert all(f"/v2/{signature_repo}/" in e.url for e in found.provenance.exchanges), (
            "the override repository is used throughout"
        )
        assert found.provenance.exchanges[0].peer_address.startswith("127.0.0.1:")

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FetchArtifact(
                fetcher_pb2.FetchArtifactRequest(
                    session="d1", plan=plan(config, tag="v1"), repository="../etc"
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_referrers_listed_as_stated(tmp_path: Path) -> None:
    subject = "sha256:" + "5" * 64
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "6" * 64,
        "size": 777,
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "annotations": {"a": "b"},
    }
    body = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    async with HostileUpstream() as upstream:
        upstream.reply(f"/v2/{REPO}/referrers/{subject}", Reply(body=body))
        config = lab_config(tmp_path, upstream.url)
        async with running_service("fetcher", register, config) as channel:
            stub = fetcher_pb2_grpc.FetcherStub(channel)
            response = await stub.ListReferrers(
                fetcher_pb2.ListReferrersRequest(plan=plan(config, tag="v1"), digest=subject)
            )
    assert response.supported and response.verdict.decision == common_pb2.ALLOW
    [referrer] = response.referrers
    assert (referrer.digest, referrer.size, referrer.media_type, referrer.artifact_type) == (
        entry["digest"],
        777,
        entry["mediaType"],
        entry["artifactType"],
    )
    assert dict(referrer.annotations) == {"a": "b"}


@pytest.mark.parametrize(
    ("reply", "code", "http_status"),
    [
        (Reply(status=429, headers={"Retry-After": "86400"}), grpc.StatusCode.UNAVAILABLE, "503"),
        (Reply(status=503), grpc.StatusCode.UNAVAILABLE, "503"),
        (Reply(status=500), grpc.StatusCode.UNAVAILABLE, "502"),
        (Reply(delay=10), grpc.StatusCode.DEADLINE_EXCEEDED, "504"),
    ],
)
async def test_o04_upstream_failure_status_reaches_the_trailing_metadata(
    tmp_path: Path, reply: Reply, code: grpc.StatusCode, http_status: str
) -> None:
    async with HostileUpstream() as upstream:
        upstream.reply(f"/v2/{REPO}/manifests/v1", reply)
        config = lab_config(tmp_path, upstream.url, limits={"retries": 0, "idle_timeout": 0.3})
        async with running_service("fetcher", register, config) as channel:
            stub = fetcher_pb2_grpc.FetcherStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.FetchManifest(
                    fetcher_pb2.FetchManifestRequest(session="d1", plan=plan(config, tag="v1"))
                )
    assert caught.value.code() == code
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing["pullguard-http-status"] == http_status


async def test_tls_facts_reach_the_provenance(tmp_path: Path) -> None:
    tls = tls_material(tmp_path / "tls")
    async with HostileUpstream(ssl_context=tls.server_context) as upstream:
        upstream.reply(f"/v2/{REPO}/manifests/v1", Reply(body=b"{}"))
        config = make_config(
            tmp_path,
            upstreams={"lab": {"url": upstream.url, "tls": {"ca_file": str(tls.ca_file)}}},
        )
        async with running_service("fetcher", register, config) as channel:
            stub = fetcher_pb2_grpc.FetcherStub(channel)
            response = await stub.FetchManifest(
                fetcher_pb2.FetchManifestRequest(session="d1", plan=plan(config, tag="v1"))
            )
    [exchange] = response.provenance.exchanges
    assert exchange.tls_spki_sha256 == tls.spki_sha256
    assert exchange.tls_version.startswith("TLSv1.")
    assert exchange.peer_address == f"127.0.0.1:{upstream.port}"
