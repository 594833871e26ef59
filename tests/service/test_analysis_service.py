"""The Analysis service through a real grpc.aio server and a real stub."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.services.analysis.planner import Planner
from pullguard.services.analysis.servicer import plan_to_proto, register
from pullguard.services.runtime.config import Config, SignatureRule, TlsRule
from pullguard.services.runtime.errors import PullguardError
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
    stub: analysis_pb2_grpc.AnalysisStub, name: str, reference: str, **extra: bool | str
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


# -- every Plan field of issues 3 and 4 arrives over the wire -------------------------------

ROOT = '{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'
SPKI = "5" * 64
ISSUER = "https://token.actions.githubusercontent.com"


def full_config(tmp_path: Path) -> Config:
    """One rule that sets every policy key, and an upstream with TLS pins."""
    (tmp_path / "cosign.pub").write_text(PEM)
    (tmp_path / "builder.pub").write_text(PEM.replace("MFkw", "MFkx"))
    (tmp_path / "root.json").write_text(ROOT)
    (tmp_path / "ca.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    )
    config = make_config(
        tmp_path,
        upstreams={
            "hub": {
                "url": "https://registry-1.docker.io",
                "realm_hosts": ["auth.docker.io", "auth2.example.com"],
            }
        },
        default_upstream="hub",
        limits={"signatures": 7, "signature_bytes": 12345},
        policy={
            "rules": [
                {
                    "match": "hub/library/*",
                    "signature": {
                        "keys": ["cosign.pub"],
                        "keyless": [
                            {"issuer": ISSUER, "subject": "https://github.com/o/r/.github/w.yml@x"},
                            {"issuer": ISSUER, "subject_regex": "^https://github\\.com/o/.*$"},
                        ],
                        "threshold": 2,
                        "mode": "warn",
                        "trusted_root": "root.json",
                        "rekor": "required",
                        "repository": "sigs/library/app",
                        "identity": "docker.io/library/app",
                    },
                    "tags": {
                        "deny": ["latest"],
                        "allow": ["^v\\d+$"],
                        "require_digest": False,
                        "digest_pulls": "pinned",
                    },
                    "layers": {
                        "inspect": False,
                        "setuid": "deny",
                        "devices": "report",
                        "max_uncompressed_bytes": 2**40,
                        "max_entries": 77,
                        "max_ratio": 55,
                    },
                    "sources": ["https://github.com/o/*"],
                    "require_source": True,
                    "provenance": {
                        "required": True,
                        "builder_ids": ["https://github.com/actions/runner"],
                        "source_repositories": ["git+https://github.com/o/r"],
                        "signers": {"keys": ["builder.pub"], "rekor": "optional"},
                    },
                    "artifact_types": ["application/vnd.example.model"],
                }
            ],
            "deny_digests": ["sha256:" + "f" * 64],
        },
    )
    # The configuration does not read upstreams.<alias>.tls yet (its known-key
    # list lacks "tls"); set what _tls() would have produced.
    hub = dataclasses.replace(
        config.upstreams["hub"],
        tls=TlsRule(ca_file=str(tmp_path / "ca.pem"), spki_sha256=(SPKI,)),
    )
    return dataclasses.replace(config, upstreams={"hub": hub})


async def test_every_new_plan_field_arrives(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    async with running_service("analysis", register, config) as channel:
        response = await plan(analysis_pb2_grpc.AnalysisStub(channel), "hub/library/app", "v1")
    assert response.verdict.decision == common_pb2.ALLOW, response.verdict
    p = response.plan

    assert list(p.upstream.realm_hosts) == ["auth.docker.io", "auth2.example.com"]
    assert list(p.upstream.tls.spki_sha256) == [SPKI]
    assert p.upstream.tls.custom_ca is True
    assert str(tmp_path) not in str(p.upstream)  # the CA path stays with the fetcher

    sig = p.rule.signature
    assert sig.mode == common_pb2.SignaturePolicy.WARN
    assert [k.name for k in sig.keys] == ["cosign.pub"]
    assert sig.threshold == 2
    assert [(k.issuer, k.subject, k.subject_regex) for k in sig.keyless] == [
        (ISSUER, "https://github.com/o/r/.github/w.yml@x", ""),
        (ISSUER, "", "^https://github\\.com/o/.*$"),
    ]
    assert sig.trusted_root_json == ROOT
    assert sig.rekor == common_pb2.SignaturePolicy.REQUIRED
    assert sig.signature_repository == "sigs/library/app"
    assert sig.signed_identity == "docker.io/library/app"
    assert (sig.max_signatures, sig.max_signature_bytes) == (7, 12345)

    tags = p.rule.tags
    assert list(tags.deny) == ["latest"]
    assert list(tags.allow) == ["^v\\d+$"]
    assert tags.require_digest is False
    assert tags.digest_pulls == "pinned"

    layers = p.rule.layers
    assert (layers.inspect, layers.setuid, layers.devices) == (False, "deny", "report")
    assert (layers.max_uncompressed_bytes, layers.max_entries, layers.max_ratio) == (
        2**40,
        77,
        55,
    )

    assert list(p.rule.approved_sources) == ["https://github.com/o/*"]
    assert p.rule.require_source_annotation is True
    prov = p.rule.provenance
    assert prov.required is True
    assert list(prov.builder_ids) == ["https://github.com/actions/runner"]
    assert list(prov.source_repositories) == ["git+https://github.com/o/r"]
    assert prov.signers.mode == common_pb2.SignaturePolicy.ENFORCE
    assert [k.name for k in prov.signers.keys] == ["builder.pub"]
    assert prov.signers.rekor == common_pb2.SignaturePolicy.OPTIONAL
    assert (prov.signers.max_signatures, prov.signers.max_signature_bytes) == (7, 12345)
    assert list(p.rule.artifact_types) == ["application/vnd.example.model"]
    assert p.parent_index == ""


async def test_defaults_travel_as_explicit_values(stub: analysis_pb2_grpc.AnalysisStub) -> None:
    """A rule that sets none of the new keys still says what it means."""
    p = (await plan(stub, "lab/team/app", "v1")).plan
    assert p.rule.signature.rekor == common_pb2.SignaturePolicy.OPTIONAL
    assert (p.rule.signature.max_signatures, p.rule.signature.max_signature_bytes) == (
        100,
        4 * 1024 * 1024,
    )
    assert p.rule.tags.digest_pulls == "allow"
    assert (p.rule.layers.inspect, p.rule.layers.setuid, p.rule.layers.devices) == (
        True,
        "report",
        "deny",
    )
    assert p.rule.layers.max_entries == 1_000_000
    assert p.rule.provenance.required is False
    assert p.rule.provenance.signers.mode == common_pb2.SignaturePolicy.NONE
    assert p.upstream.tls.custom_ca is False and not p.upstream.tls.spki_sha256
    assert list(p.upstream.realm_hosts) == []


def test_unknown_enum_values_never_travel(tmp_path: Path) -> None:
    verdict, data = Planner(service_config(tmp_path)).plan("lab/signed/app", "v1")
    assert verdict.allowed and data is not None
    for change in ({"mode": "audit"}, {"rekor": "sometimes"}):
        signature = dataclasses.replace(data.rule.signature, **change)
        broken = dataclasses.replace(data, rule=dataclasses.replace(data.rule, signature=signature))
        with pytest.raises(PullguardError, match="unknown"):
            plan_to_proto(broken)
    provenance = dataclasses.replace(
        data.rule.provenance, signers=SignatureRule(mode="none", rekor="maybe")
    )
    broken = dataclasses.replace(data, rule=dataclasses.replace(data.rule, provenance=provenance))
    with pytest.raises(PullguardError, match="provenance rekor"):
        plan_to_proto(broken)


def test_limits_beyond_the_field_range_are_cut_not_wrapped(tmp_path: Path) -> None:
    verdict, data = Planner(service_config(tmp_path)).plan("lab/signed/app", "v1")
    assert data is not None
    wide = dataclasses.replace(data, max_signatures=2**40, max_signature_bytes=2**70)
    signature = plan_to_proto(wide).rule.signature
    assert (signature.max_signatures, signature.max_signature_bytes) == (2**31 - 1, 2**63 - 1)


# -- parent index and the deny database over the wire ---------------------------------------


async def test_p03d_parent_index_reaches_the_plan(stub: analysis_pb2_grpc.AnalysisStub) -> None:
    child = "sha256:" + "c" * 64
    denied = await plan(stub, "redis", child)
    assert [f.code for f in denied.verdict.findings] == ["analysis.digest_not_pinned"]
    response = await plan(stub, "redis", child, parent_index=PIN)
    assert response.verdict.decision == common_pb2.ALLOW
    assert response.plan.parent_index == PIN
    assert response.plan.ref.digest == child
    assert [f.code for f in response.verdict.findings] == ["analysis.rule", "analysis.parent_index"]
    bad = await plan(stub, "redis", child, parent_index="sha256:../x")
    assert [f.code for f in bad.verdict.findings] == ["analysis.invalid_parent_index"]
    assert not bad.HasField("plan")


async def test_deny_file_denies_and_an_unreadable_one_is_an_error(tmp_path: Path) -> None:
    bad = "sha256:" + "d" * 64
    deny_file = tmp_path / "deny.txt"
    deny_file.write_text(f"{bad}\n")
    config = make_config(
        tmp_path,
        policy={
            "rules": [{"match": "**"}],
            "deny_digests": ["sha256:" + "e" * 64],
            "deny_digests_file": str(deny_file),
        },
    )
    async with running_service("analysis", register, config) as channel:
        stub = analysis_pb2_grpc.AnalysisStub(channel)
        response = await plan(stub, "lab/app", bad)
        assert [f.code for f in response.verdict.findings] == ["analysis.denied_digest"]
        allowed = await plan(stub, "lab/app", "v1")
        assert list(allowed.plan.deny_digests) == ["sha256:" + "e" * 64]
        deny_file.write_text("not a digest\n")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await plan(stub, "lab/app", "sha256:" + "1" * 64)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "deny.txt:1: malformed digest" in (info.value.details() or "")


# -- P-01/P-02: a denial makes no upstream request -------------------------------------------


async def test_p01_p02_denials_open_no_connection(tmp_path: Path) -> None:
    connections: list[object] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    config = make_config(
        tmp_path,
        upstreams={"lab": {"url": f"http://127.0.0.1:{port}", "insecure": True}},
        policy={"rules": [{"match": "lab/library/*", "tags": {"deny": ["latest"]}}]},
    )
    try:
        async with running_service("analysis", register, config) as channel:
            stub = analysis_pb2_grpc.AnalysisStub(channel)
            for name, reference in [
                (f"127.0.0.1:{port}/library/nginx", "v1"),
                ("docker.io@evil.example/library/nginx", "v1"),
                ("xn--dcker-f2e.io/library/nginx", "v1"),
                ("lab/evil/nginx", "v1"),
                ("lab/library/../../admin", "v1"),
                ("lab/library/nginx", "latest"),
                ("lab/library/nginx", "sha256:" + "a" * 64 + "\r\nX-Injected:1"),
            ]:
                response = await plan(stub, name, reference)
                assert response.verdict.decision == common_pb2.DENY, (name, reference)
            assert (await plan(stub, "lab/library/nginx", "v1")).verdict.decision == (
                common_pb2.ALLOW
            )
        await asyncio.sleep(0.05)
        assert connections == []
    finally:
        listener.close()
        await listener.wait_closed()


def test_signature_limits_always_travel_even_when_zero(tmp_path: Path) -> None:
    # The signature service takes these from the plan alone: a configured 0
    # must arrive as a 0, not as an absent field that means "the defaults".
    verdict, data = Planner(service_config(tmp_path)).plan("lab/signed/app", "v1")
    assert verdict.allowed and data is not None
    zero = dataclasses.replace(data, max_signatures=0, max_signature_bytes=0)
    rule = plan_to_proto(zero).rule
    for policy in (rule.signature, rule.provenance.signers):
        assert policy.HasField("max_signatures") and policy.max_signatures == 0
        assert policy.HasField("max_signature_bytes") and policy.max_signature_bytes == 0
