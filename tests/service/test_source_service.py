"""The source layer through a real grpc.aio server on port 0 and a real stub."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from pullguard.services.source.servicer import register
from pullguard.v1 import common_pb2, source_pb2, source_pb2_grpc
from tests.support.configs import make_config
from tests.support.grpcserver import running_service

BLOB = "sha256:" + "b" * 64
DIGEST = "sha256:" + "d" * 64
HUB = "https://registry-1.docker.io"
PIN = "a" * 64
APP = "https://github.com/org/app"
GHA = "https://github.com/actions/runner/github-hosted"
CDN = "https://production.cloudflare.docker.com/registry-v2/blobs/x/data?verify=REDACTED"


def exchange(url: str, purpose: str, **fields: object) -> common_pb2.HttpExchange:
    return common_pb2.HttpExchange(method="GET", url=url, purpose=purpose, **fields)  # type: ignore[arg-type]


def codes(response: source_pb2.CheckSourceResponse) -> list[str]:
    return [f.code for f in response.verdict.findings]


def hub_plan(**rule: object) -> common_pb2.Plan:
    return common_pb2.Plan(
        upstream=common_pb2.UpstreamInfo(
            alias="docker.io",
            url=HUB,
            redirect_hosts=["production.cloudflare.docker.com"],
            realm_hosts=["auth.docker.io"],
            tls=common_pb2.TlsPolicy(spki_sha256=[PIN]),
        ),
        rule=common_pb2.RulePolicy(**rule),  # type: ignore[arg-type]
    )


GOOD = common_pb2.Provenance(
    exchanges=[
        exchange(
            f"{HUB}/v2/library/alpine/manifests/3.20", "manifest", status=200, tls_spki_sha256=PIN
        ),
        exchange("https://auth.docker.io/token", "token", status=200),
        exchange(
            f"{HUB}/v2/library/alpine/blobs/{BLOB}",
            "blob",
            status=307,
            location=CDN,
            digest=BLOB,
            tls_spki_sha256=PIN,
        ),
        exchange(CDN, "blob", status=200, digest=BLOB),
    ]
)


async def test_source_service(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, upstreams={"docker.io": {"url": HUB}}, default_upstream="docker.io"
    )
    plan = hub_plan(foreign_url_hosts=["mcr.microsoft.com"])
    foreign_ok = common_pb2.Descriptor(
        media_type="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        digest=BLOB,
        size=10,
        urls=["https://mcr.microsoft.com/layer"],
    )

    async with running_service("source", register, config) as channel:
        stub = source_pb2_grpc.SourceStub(channel)
        ok = await stub.CheckSource(
            source_pb2.CheckSourceRequest(
                plan=plan,
                provenance=GOOD,
                descriptors=[foreign_ok],
                annotations={"org.opencontainers.image.source": "https://github.com/x/y"},
            )
        )
        assert ok.verdict.decision == common_pb2.ALLOW and ok.verdict.layer == "source"
        assert codes(ok) == ["source.foreign_layer_allowed", "source.provenance_annotation"]

        evil = common_pb2.Provenance()
        evil.CopyFrom(GOOD)
        evil.exchanges[2].location = "https://evil.example/blob"
        evil.exchanges[0].tls_spki_sha256 = "c" * 64
        attacker = common_pb2.Descriptor(digest=BLOB, size=1, urls=["https://attacker.example/l"])
        denied = await stub.CheckSource(
            source_pb2.CheckSourceRequest(plan=plan, provenance=evil, descriptors=[attacker])
        )
        assert denied.verdict.decision == common_pb2.DENY
        assert codes(denied) == [
            "source.tls_identity_mismatch",
            "source.redirect_host_not_allowed",
            "source.foreign_layer",
        ]

        with pytest.raises(grpc.aio.AioRpcError) as no_upstream:
            await stub.CheckSource(source_pb2.CheckSourceRequest(provenance=GOOD))
        assert no_upstream.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_realm_hosts_come_from_the_plan(tmp_path: Path) -> None:
    # The configuration knows auth.docker.io; a plan without it does not.
    config = make_config(
        tmp_path, upstreams={"docker.io": {"url": HUB}}, default_upstream="docker.io"
    )
    plan = hub_plan()
    del plan.upstream.realm_hosts[:]
    async with running_service("source", register, config) as channel:
        stub = source_pb2_grpc.SourceStub(channel)
        response = await stub.CheckSource(source_pb2.CheckSourceRequest(plan=plan, provenance=GOOD))
        assert response.verdict.decision == common_pb2.ALLOW
        assert [(f.code, f.severity) for f in response.verdict.findings] == [
            ("source.unexpected_host", common_pb2.WARNING)
        ]


async def test_annotation_and_signed_provenance_rules(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    plan = hub_plan(
        approved_sources=["https://github.com/org/*"],
        require_source_annotation=True,
        provenance=common_pb2.ProvenancePolicy(
            required=True, builder_ids=[GHA], source_repositories=[APP]
        ),
    )
    verified = common_pb2.VerifiedProvenance(
        predicate_type="https://slsa.dev/provenance/v1",
        builder_id=GHA,
        source_repository=APP,
        source_digest="sha1:" + "1" * 40,
        signer="keys/release.pub",
        found_at="tag:sha256-dddd.att/layers[0]",
        subject_digest=DIGEST,
    )
    annotated = {"org.opencontainers.image.source": APP}

    async with running_service("source", register, config) as channel:
        stub = source_pb2_grpc.SourceStub(channel)
        manifest = source_pb2.CheckSourceRequest(
            plan=plan,
            provenance=GOOD,
            annotations=annotated,
            stage=source_pb2.CheckSourceRequest.MANIFEST,
            manifest_digest=DIGEST,
            verified_provenance=[verified],
        )
        ok = await stub.CheckSource(manifest)
        assert ok.verdict.decision == common_pb2.ALLOW
        assert codes(ok) == ["source.provenance_annotation", "source.provenance_verified"]

        # An unset stage is the manifest stage: every check runs.
        unset = source_pb2.CheckSourceRequest(plan=plan, provenance=GOOD)
        assert codes(await stub.CheckSource(unset)) == [
            "source.unapproved_source",
            "source.provenance_missing",
        ]
        blobs = source_pb2.CheckSourceRequest(
            plan=plan, provenance=GOOD, stage=source_pb2.CheckSourceRequest.BLOBS
        )
        assert (await stub.CheckSource(blobs)).verdict.decision == common_pb2.ALLOW

        wrong = source_pb2.CheckSourceRequest()
        wrong.CopyFrom(manifest)
        wrong.verified_provenance[0].builder_id = "https://github.com/attacker/runner"
        assert codes(await stub.CheckSource(wrong)) == [
            "source.provenance_annotation",
            "source.provenance_builder_mismatch",
        ]

        unbound = source_pb2.CheckSourceRequest()
        unbound.CopyFrom(manifest)
        unbound.manifest_digest = ""
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.CheckSource(unbound)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
