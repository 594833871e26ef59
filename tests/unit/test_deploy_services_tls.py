"""deploy/k8s turns mutual TLS on by default: every pod mounts its own
certificate where the shared configuration's ``services_tls`` looks, probes
use the plaintext health-only port, and the certificates the documented
script makes work in a real gRPC handshake."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.services.runtime.channels import open_channel
from pullguard.services.runtime.config import LAYERS, ServicesTls
from pullguard.services.runtime.server import start_server
from pullguard.services.runtime.tls import channel_credentials, server_credentials

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod(component: str) -> dict[str, Any]:
    (deployment,) = [
        d for d in _documents(K8S / "base" / f"{component}.yaml") if d["kind"] == "Deployment"
    ]
    return dict(deployment["spec"]["template"]["spec"])


def _services_tls() -> dict[str, str]:
    (config_map,) = [
        d for d in _documents(K8S / "base" / "config.yaml") if d["kind"] == "ConfigMap"
    ]
    return dict(yaml.safe_load(config_map["data"]["pullguard.yaml"])["services_tls"])


@pytest.mark.parametrize("component", [*LAYERS, "gateway"])
def test_every_pod_mounts_its_own_certificate_where_services_tls_looks(component: str) -> None:
    pod = _pod(component)
    directories = {str(Path(path).parent) for path in _services_tls().values()}
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] in directories]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == f"pullguard-{component}-tls"
    assert mount["readOnly"] is True


@pytest.mark.parametrize("component", LAYERS)
def test_layer_probes_use_the_health_only_port_not_the_tls_one(component: str) -> None:
    (container,) = _pod(component)["containers"]
    args = container["args"]
    listen = args[args.index("--listen") + 1].rsplit(":", 1)[1]
    health = args[args.index("--health-listen") + 1].rsplit(":", 1)[1]
    assert listen != health
    for probe in ("readinessProbe", "livenessProbe"):
        assert str(container[probe]["grpc"]["port"]) == health


def test_cert_manager_makes_the_secrets_the_pods_mount() -> None:
    documents = _documents(K8S / "components" / "cert-manager" / "certificates.yaml")
    secrets = {
        d["spec"]["secretName"]: d["spec"]["usages"]
        for d in documents
        if d["kind"] == "Certificate" and not d["spec"].get("isCA")
    }
    assert secrets.keys() == {f"pullguard-{c}-tls" for c in (*LAYERS, "gateway")}
    assert "client auth" in secrets["pullguard-gateway-tls"]
    assert all("server auth" in secrets[f"pullguard-{c}-tls"] for c in LAYERS)


@pytest.fixture(scope="module")
def script_secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServicesTls]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: run `make system-deps`")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [str(K8S / "make-services-tls.sh"), str(out), "pullguard"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    secrets = {}
    for document in _documents(out / "secrets.yaml"):
        data = {k: base64.b64decode(v) for k, v in document["data"].items()}
        secrets[document["metadata"]["name"]] = ServicesTls(
            ca=data["ca.crt"], certificate=data["tls.crt"], key=data["tls.key"]
        )
    return secrets


async def _health(port: int, client: ServicesTls, server_name: str) -> str:
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        channel_credentials(client),
        options=[("grpc.ssl_target_name_override", server_name)],
    )
    async with channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def test_the_scripts_certificates_carry_a_real_handshake(
    script_secrets: dict[str, ServicesTls],
) -> None:
    assert set(script_secrets) == {f"pullguard-{c}-tls" for c in (*LAYERS, "gateway")}
    hashverify = script_secrets["pullguard-hashverify-tls"]
    server, _health_servicer, port = await start_server(
        "hashverify", "127.0.0.1:0", lambda _server: [], server_credentials(hashverify)
    )
    try:
        gateway = script_secrets["pullguard-gateway-tls"]
        assert await _health(port, gateway, "pullguard-hashverify") == "SERVING"
        # The certificate names the Service the gateway dials, nothing else.
        assert await _health(port, gateway, "pullguard-format") == "UNAVAILABLE"
        # A layer's certificate is for serving: a compromised fetcher cannot
        # use it to call another layer as if it were the gateway.
        fetcher = script_secrets["pullguard-fetcher-tls"]
        assert await _health(port, fetcher, "pullguard-hashverify") == "UNAVAILABLE"
        # What the gateway's channels do with services_tls.server_name.
        named = dataclasses.replace(gateway, server_name="pullguard-hashverify")
        async with open_channel(f"127.0.0.1:{port}", named) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
