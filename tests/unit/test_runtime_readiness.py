"""Layer readiness: NOT_SERVING on the standard health service while a layer cannot work."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.readiness import readiness_for
from pullguard.services.runtime.server import start_server
from tests.support.configs import make_config


def _signed_config(tmp_path: Path) -> Config:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "cosign.pub").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # Only its presence matters here; the signature layer parses it.
    (tmp_path / "trusted_root.json").write_text("{}")
    return make_config(
        tmp_path,
        policy={
            "rules": [
                {
                    "match": "**",
                    "signature": {"keys": ["cosign.pub"], "trusted_root": "trusted_root.json"},
                }
            ]
        },
    )


def test_signature_layer_does_not_restat_trust_files_it_read_at_start(tmp_path: Path) -> None:
    # Keys and trusted roots are read once, with the configuration: a file
    # deleted later changes nothing the layer uses, so it is not a reason to
    # stop serving (an orchestrator would restart the layer for it).
    check = readiness_for("signature", _signed_config(tmp_path))
    assert check() == []
    (tmp_path / "cosign.pub").unlink()
    (tmp_path / "trusted_root.json").unlink()
    assert check() == []


def test_only_layers_that_use_the_staging_store_need_it(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    staging = config.state_dir / "staging"
    checks = {layer: readiness_for(layer, config) for layer in ("fetcher", "format", "source")}
    assert all(check() == [] for check in checks.values())
    assert staging.is_dir()  # made when absent (the gateway empties it at start)
    staging.rmdir()
    staging.write_text("a file in its place")  # we run as root: modes would not stop us
    assert checks["fetcher"]() and checks["format"]()
    assert checks["source"]() == []


def test_deny_file_is_needed_by_analysis_and_hashverify(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("")
    config = make_config(
        tmp_path,
        policy={"rules": [{"match": "**", "signature": "none"}], "deny_digests_file": str(deny)},
    )
    deny.unlink()
    assert readiness_for("analysis", config)() and readiness_for("hashverify", config)()
    assert readiness_for("format", config)() == []


async def test_health_check_reports_readiness_on_every_check() -> None:
    problems: list[str] = []
    server, _health, port = await start_server(
        "probe", "127.0.0.1:0", lambda _server: [], readiness=lambda: problems
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    try:
        assert (await stub.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
        problems.append("staging store gone")
        assert (await stub.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        problems.clear()
        assert (await stub.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()
        await server.stop(None)


async def test_a_failing_readiness_check_is_not_serving() -> None:
    def broken() -> list[str]:
        raise OSError("disk gone")

    server, _health, port = await start_server(
        "probe", "127.0.0.1:0", lambda _s: [], readiness=broken
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="")
        )
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await channel.close()
        await server.stop(None)


async def test_a_layer_that_is_not_ready_refuses_calls_without_a_verdict(tmp_path: Path) -> None:
    from pullguard.services.source.servicer import register
    from pullguard.v1 import source_pb2, source_pb2_grpc

    config = make_config(tmp_path)
    problems = ["trusted root gone"]
    server, _health, port = await start_server(
        "source", "127.0.0.1:0", lambda s: register(s, config), readiness=lambda: problems
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await source_pb2_grpc.SourceStub(channel).CheckSource(source_pb2.CheckSourceRequest())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not serving: trusted root gone" in (caught.value.details() or "")
        trailing = dict(caught.value.trailing_metadata() or ())
        assert trailing["pullguard-error-class"] == "NotServing"
    finally:
        await channel.close()
        await server.stop(None)


async def test_calls_read_the_latest_readiness_without_checking_again(tmp_path: Path) -> None:
    from pullguard.services.source.servicer import register
    from pullguard.v1 import source_pb2, source_pb2_grpc

    config = make_config(tmp_path)
    threads: list[str] = []

    def readiness() -> list[str]:
        threads.append(threading.current_thread().name)
        return ["staging store gone"]

    server, _health, port = await start_server(
        "source", "127.0.0.1:0", lambda s: register(s, config), readiness=readiness
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        checks = len(threads)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await source_pb2_grpc.SourceStub(channel).CheckSource(
                    source_pb2.CheckSourceRequest()
                )
            assert "not serving: staging store gone" in (caught.value.details() or "")
        assert len(threads) == checks  # no filesystem check per call
        # ... and a check runs off the event loop's thread.
        assert threads and threading.main_thread().name not in threads
    finally:
        await channel.close()
        await server.stop(None)
