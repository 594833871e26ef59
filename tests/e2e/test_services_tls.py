"""Issue 14 (1): mutual TLS between the gateway and the layers (``services_tls``).

A throw-away CA is made in the test. ``pullguard up`` with ``services_tls``
runs the layers on TCP with mutual TLS: pulls work, a client without a
certificate or with one of another CA is refused by a layer, and a real
hashverify holding a certificate of another CA is refused by the gateway, so
the pull is not allowed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.gateway.supervisor import grpc_healthy
from pullguard.v1 import hashverify_pb2, hashverify_pb2_grpc
from tests.support.images import BuiltImage, build_image, pull, push, random_layers
from tests.support.mtls import Issued, make_ca
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, free_port, pullguard_command

StartPullguard = Callable[..., Pullguard]


def _image(tmp_path: Path, name: str, seed: int) -> BuiltImage:
    return build_image(tmp_path / f"src-{name}", "v1", random_layers(2, 32 * 1024, seed=seed))


def _admitted(pg: Pullguard, digest: str) -> bool:
    return (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]).exists()


def _health(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    """SERVING, or the gRPC status code the call ended with."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)  # type: ignore[attr-defined]
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _credentials(issued: Issued | None, trust: Path) -> grpc.ChannelCredentials:
    if issued is None:
        return grpc.ssl_channel_credentials(root_certificates=trust.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=trust.read_bytes(),
        private_key=issued.key.read_bytes(),
        certificate_chain=issued.certificate.read_bytes(),
    )


@pytest.fixture
def trusted(tmp_path: Path) -> Issued:
    return make_ca(tmp_path / "ca", "pullguard services CA").issue("pullguard")


@pytest.fixture
def stranger(tmp_path: Path) -> Issued:
    return make_ca(tmp_path / "other-ca", "someone else's CA").issue("stranger")


def test_pulls_work_over_mutual_tls_and_a_layer_refuses_strangers(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    trusted: Issued,
    stranger: Issued,
    tmp_path: Path,
) -> None:
    image = _image(tmp_path, "app", seed=11)
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(upstream.url, services=None, services_tls=trusted.config())
    address = str(pg.services["hashverify"]["address"])
    assert address.startswith("127.0.0.1:"), address

    result = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out", "v1")

    assert result.returncode == 0, result.stderr + pg.log()[-3000:]
    assert _admitted(pg, image.digest)
    assert _health(address, _credentials(trusted, trusted.ca)) == "SERVING"
    assert _health(address, None) == "UNAVAILABLE"  # plaintext
    assert _health(address, _credentials(None, trusted.ca)) == "UNAVAILABLE"  # no certificate
    assert _health(address, _credentials(stranger, trusted.ca)) == "UNAVAILABLE"


def test_the_gateway_refuses_a_layer_with_a_certificate_of_another_ca(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    trusted: Issued,
    stranger: Issued,
    tmp_path: Path,
) -> None:
    first, second = _image(tmp_path, "first", seed=12), _image(tmp_path, "second", seed=13)
    push(first, upstream.address, "team/first")
    push(second, upstream.address, "team/second")
    pg = pullguard_factory(upstream.url, services_tls=trusted.config())
    assert pull(f"{pg.address}/lab/team/first:v1", tmp_path / "out1", "v1").returncode == 0
    address = pg.config["services"]["hashverify"]

    # The real hashverify stops; a real hashverify that trusts the gateway but
    # holds a certificate of another CA takes its address. It would allow
    # `second`: only the gateway's check of its certificate stands in the way.
    os.kill(int(pg.services["hashverify"]["pid"]), signal.SIGTERM)
    while grpc_healthy(address, timeout=0.5, tls=trusted.services_tls()):
        time.sleep(0.1)
    rogue_config = dict(pg.config)
    rogue_config["services_tls"] = {**stranger.config(), "ca": str(trusted.ca)}
    rogue_path = tmp_path / "rogue.yaml"
    rogue_path.write_text(yaml.safe_dump(rogue_config))
    health_address = f"127.0.0.1:{free_port()}"
    assert pg.output is not None
    with pg.output.open("ab") as log:
        rogue = _start_rogue(rogue_path, address, health_address, log.fileno())
    try:
        deadline = time.monotonic() + 60
        while not grpc_healthy(health_address, timeout=0.5):
            assert rogue.poll() is None and time.monotonic() < deadline, pg.log()[-3000:]
            time.sleep(0.1)
        # The plaintext health port carries nothing but health.
        with grpc.insecure_channel(health_address) as channel, pytest.raises(grpc.RpcError) as exc:
            hashverify_pb2_grpc.HashVerifyStub(channel).VerifyBlobs(
                hashverify_pb2.VerifyBlobsRequest(), timeout=5
            )
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        assert grpc_healthy(address, tls=trusted.services_tls(trust=stranger.ca))

        refused = pull(f"{pg.address}/lab/team/second:v1", tmp_path / "out2", "v1")

        assert refused.returncode != 0, refused.stdout
        # A layer the gateway cannot authenticate gives no verdict: an outage (503).
        assert "503" in refused.stderr, refused.stderr
        for digest in (second.digest, *second.blob_digests):
            assert not _admitted(pg, digest), f"{digest} reached the admitted store"
        decisions = json.loads(pg.cli("decisions", "--json").stdout)
        assert decisions[0]["reference"].startswith("lab/team/second")
        assert decisions[0]["decision"] != "ALLOW"
        assert decisions[0]["outage"]["layer"] == "hashverify", decisions[0]
    finally:
        rogue.send_signal(signal.SIGTERM)
        rogue.wait(15)


def _start_rogue(
    config: Path, address: str, health_address: str, log: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *pullguard_command(),
            "serve",
            "hashverify",
            "--listen",
            address,
            "--health-listen",
            health_address,
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
