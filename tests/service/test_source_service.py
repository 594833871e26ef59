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
HUB = "https://registry-1.docker.io"


async def test_source_service(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        upstreams={"docker.io": {"url": HUB}},
        default_upstream="docker.io",
    )
    hub = config.upstreams["docker.io"]
    plan = common_pb2.Plan(
        upstream=common_pb2.UpstreamInfo(
            alias="docker.io", url=hub.url, redirect_hosts=list(hub.redirect_hosts)
        ),
        rule=common_pb2.RulePolicy(foreign_url_hosts=["mcr.microsoft.com"]),
    )
    cdn = "https://production.cloudflare.docker.com/registry-v2/blobs/x/data?verify=REDACTED"
    good = common_pb2.Provenance(
        exchanges=[
            common_pb2.HttpExchange(
                method="GET",
                url=f"{HUB}/v2/library/alpine/manifests/3.20",
                status=200,
                purpose="manifest",
            ),
            # The realm host comes from the service's own configuration.
            common_pb2.HttpExchange(
                method="GET", url="https://auth.docker.io/token", status=200, purpose="token"
            ),
            common_pb2.HttpExchange(
                method="GET",
                url=f"{HUB}/v2/library/alpine/blobs/{BLOB}",
                status=307,
                location=cdn,
                purpose="blob",
                digest=BLOB,
            ),
            common_pb2.HttpExchange(method="GET", url=cdn, status=200, purpose="blob", digest=BLOB),
        ]
    )
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
                provenance=good,
                descriptors=[foreign_ok],
                annotations={"org.opencontainers.image.source": "https://github.com/x/y"},
            )
        )
        assert ok.verdict.decision == common_pb2.ALLOW and ok.verdict.layer == "source"
        assert [f.code for f in ok.verdict.findings] == [
            "source.foreign_layer_allowed",
            "source.provenance_annotation",
        ]

        evil = common_pb2.Provenance()
        evil.CopyFrom(good)
        evil.exchanges[2].location = "https://evil.example/blob"
        attacker = common_pb2.Descriptor(digest=BLOB, size=1, urls=["https://attacker.example/l"])
        denied = await stub.CheckSource(
            source_pb2.CheckSourceRequest(plan=plan, provenance=evil, descriptors=[attacker])
        )
        assert denied.verdict.decision == common_pb2.DENY
        assert [f.code for f in denied.verdict.findings] == [
            "source.redirect_host_not_allowed",
            "source.foreign_layer",
        ]

        with pytest.raises(grpc.aio.AioRpcError) as no_upstream:
            await stub.CheckSource(source_pb2.CheckSourceRequest(provenance=good))
        assert no_upstream.value.code() == grpc.StatusCode.INVALID_ARGUMENT
