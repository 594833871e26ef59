"""The Analysis service through a real grpc.aio server and a real stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.services.analysis.servicer import register
from pullguard.services.runtime.config import Config
from pullguard.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2
from tests.support.configs import make_config
from tests.support.grpcserver import running_service

PIN = "sha256:" + "a" * 64
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def service_config(tmp_path: Path) -> Config:
    (tmp_path / "pins.yaml").write_text(f"'7.2': '{PIN}'\n")
    (tmp_path / "cosign.pub").write_text(PEM)
    return make_config(
        tmp_path,
        upstreams={
            "docker.io": {"url": "https://registry-1.docker.io"},
            "lab": {
                "url": "http://127.0.0.1:5001",
                "insecure": True,
                "username": "puller",
                "password": "lab-secret-password",
                "redirect_hosts": ["*.cdn.example.com"],
            },
        },
        default_upstream="docker.io",
        policy={
            "rules": [
                {"match": "docker.io/library/redis", "pins": "pins.yaml"},
                {
                    "match": "lab/signed/*",
                    "signature": {"keys": ["cosign.pub"]},
                    "foreign_urls": ["*.example.com"],
                    "layer_media_types": ["application/vnd.oci.image.layer.v1.tar+gzip"],
                },
                {"match": "lab/**", "signature": "none"},
            ],
            "deny": ["**/evil/**"],
            "deny_digests": ["sha256:" + "f" * 64, "sha256:" + "0" * 64],
        },
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return service_config(tmp_path)


@pytest.fixture
async def stub(config: Config) -> AsyncIterator[analysis_pb2_grpc.AnalysisStub]:
    async with running_service("analysis", register, config) as channel:
        yield analysis_pb2_grpc.AnalysisStub(channel)


async def plan(
    stub: analysis_pb2_grpc.AnalysisStub, name: str, reference: str, **extra: bool
) -> analysis_pb2.PlanResponse:
    request = analysis_pb2.PlanRequest(name=name, reference=reference, **extra)
    response: analysis_pb2.PlanResponse = await stub.Plan(request, timeout=5)
    return response


async def test_allow_returns_the_full_plan(
    stub: analysis_pb2_grpc.AnalysisStub, config: Config
) -> None:
    response = await plan(stub, "lab/signed/app", "v1.2")
    verdict = response.verdict
    assert verdict.decision == common_pb2.ALLOW
    assert verdict.layer == "analysis"
    assert [(f.code, f.severity) for f in verdict.findings] == [("analysis.rule", common_pb2.INFO)]
    assert verdict.findings[0].evidence["rule"] == "1"

    p = response.plan
    assert (p.ref.upstream_alias, p.ref.repository, p.ref.tag, p.ref.digest) == (
        "lab",
        "signed/app",
        "v1.2",
        "",
    )
    assert p.upstream.alias == "lab"
    assert p.upstream.url == "http://127.0.0.1:5001"
    assert p.upstream.insecure is True
    assert list(p.upstream.redirect_hosts) == ["*.cdn.example.com"]
    assert p.upstream.canonical_host == "127.0.0.1:5001"
    assert p.rule.index == 1
    assert p.rule.match == "lab/signed/*"
    assert p.rule.signature.mode == common_pb2.SignaturePolicy.ENFORCE
    assert [(k.name, k.pem) for k in p.rule.signature.keys] == [("cosign.pub", PEM)]
    assert p.rule.signature.threshold == 1
    assert p.rule.pinned_digest == ""
    assert list(p.rule.foreign_url_hosts) == ["*.example.com"]
    assert list(p.rule.layer_media_types) == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    assert p.policy_version == config.policy_version
    assert p.client_name == "lab/signed/app"
    assert list(p.deny_digests) == ["sha256:" + "0" * 64, "sha256:" + "f" * 64]
    wire = response.SerializeToString()
    assert b"lab-secret-password" not in wire and b"puller" not in wire


async def test_signature_none_and_library_prefix(stub: analysis_pb2_grpc.AnalysisStub) -> None:
    response = await plan(stub, "lab/team/app", "latest")
    assert response.plan.rule.signature.mode == common_pb2.SignaturePolicy.NONE
    response = await plan(stub, "redis", "7.2")
    assert response.verdict.decision == common_pb2.ALLOW
    assert response.plan.ref.upstream_alias == "docker.io"
    assert response.plan.ref.repository == "library/redis"
    assert response.plan.rule.pinned_digest == PIN
    assert response.plan.upstream.canonical_host == "docker.io"
    assert response.plan.client_name == "redis"


@pytest.mark.parametrize(
    ("name", "reference", "code"),
    [
        ("lab/app", f"latest@{PIN}", "analysis.invalid_reference"),
        ("lab/app", "../../x", "analysis.invalid_reference"),
        ("lab/app", "sha256:../../../../etc/passwd", "analysis.invalid_digest"),
        ("lab/app", "md5:" + "a" * 32, "analysis.unsupported_digest_algorithm"),
        ("Lab/App", "v1", "analysis.invalid_name"),
        ("lab/a//b", "v1", "analysis.invalid_name"),
        ("lab/app%00", "v1", "analysis.invalid_name"),
        ("dоcker.io/library/redis", "7.2", "analysis.invalid_name"),
        ("registry-1.docker.io/library/redis", "7.2", "analysis.unknown_upstream"),
        ("lab/x/evil/y", "v1", "analysis.denied_repository"),
        ("nginx", "v1", "analysis.no_rule"),
        ("redis", "7.3", "analysis.tag_not_pinned"),
        ("redis", "sha256:" + "b" * 64, "analysis.digest_not_pinned"),
        ("lab/app", "sha256:" + "f" * 64, "analysis.denied_digest"),
    ],
)
async def test_denials_are_verdicts_without_a_plan(
    stub: analysis_pb2_grpc.AnalysisStub, name: str, reference: str, code: str
) -> None:
    response = await plan(stub, name, reference)
    assert response.verdict.decision == common_pb2.DENY
    assert [f.code for f in response.verdict.findings] == [code]
    assert response.verdict.findings[0].severity == common_pb2.ERROR
    assert response.verdict.findings[0].message
    assert not response.HasField("plan")


async def test_repository_only_plan(stub: analysis_pb2_grpc.AnalysisStub) -> None:
    response = await plan(stub, "lab/team/app", "", repository_only=True)
    assert response.verdict.decision == common_pb2.ALLOW
    assert (response.plan.ref.repository, response.plan.ref.tag, response.plan.ref.digest) == (
        "team/app",
        "",
        "",
    )
    response = await plan(stub, "lab/evil/app", "", repository_only=True)
    assert response.verdict.decision == common_pb2.DENY
    assert not response.HasField("plan")


async def test_empty_request_is_denied_not_an_error(stub: analysis_pb2_grpc.AnalysisStub) -> None:
    response = await plan(stub, "", "")
    assert response.verdict.decision == common_pb2.DENY
    assert response.verdict.findings[0].code == "analysis.invalid_name"


async def test_health_reports_serving(config: Config) -> None:
    async with running_service("analysis", register, config) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="pullguard.v1.Analysis"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
