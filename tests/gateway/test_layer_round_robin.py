"""A layer run as several replicas: round-robin over those that are healthy.

Two real grpc.aio servers (the services' own server, health service
included) answer for the source layer; the gateway's LayerClients is given
both addresses, as ``services.source: [A, B]`` gives it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from pullguard.gateway.clients import LayerClients
from pullguard.services.runtime.config import LAYERS, parse_config
from pullguard.services.runtime.server import ReadinessHealth, start_server
from pullguard.v1 import common_pb2, source_pb2, source_pb2_grpc

#: Calls are bounded: the loops below give up after this many.
MAX_CALLS = 400


class CountingSource(source_pb2_grpc.SourceServicer):  # type: ignore[misc]
    def __init__(self, name: str, seen: Counter[str]) -> None:
        self.name = name
        self.seen = seen

    async def CheckSource(  # noqa: N802 - the gRPC method name
        self, request: source_pb2.CheckSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_pb2.CheckSourceResponse:
        self.seen[self.name] += 1
        return source_pb2.CheckSourceResponse(
            verdict=common_pb2.Verdict(decision=common_pb2.ALLOW, layer="source")
        )


async def _replica(name: str, seen: Counter[str]) -> tuple[grpc.aio.Server, ReadinessHealth, str]:
    def register(server: grpc.aio.Server) -> list[str]:
        source_pb2_grpc.add_SourceServicer_to_server(CountingSource(name, seen), server)
        return [source_pb2.DESCRIPTOR.services_by_name["Source"].full_name]

    server, health, port = await start_server(f"source-{name}", "127.0.0.1:0", register)
    return server, health, f"127.0.0.1:{port}"


def _clients(source: list[str]) -> LayerClients:
    listed = ", ".join(f"'{a}'" for a in source)
    others = "".join(f"  {x}: unix:/nonexistent/{x}.sock\n" for x in LAYERS if x != "source")
    text = (
        "upstreams: {lab: {url: 'http://127.0.0.1:5001', insecure: true}}\n"
        f"services:\n{others}  source: [{listed}]\n"
    )
    config = parse_config(text, "test.yaml", Path("/tmp"))
    return LayerClients(config.services, 5.0)


async def _call(clients: LayerClients) -> None:
    response = await clients.call("source", "CheckSource", source_pb2.CheckSourceRequest())
    assert response.verdict.decision == common_pb2.ALLOW


async def test_calls_spread_over_replicas_and_skip_one_not_serving() -> None:
    seen: Counter[str] = Counter()
    first = await _replica("a", seen)
    second = await _replica("b", seen)
    clients = _clients([first[2], second[2]])
    try:
        for _ in range(20):
            await _call(clients)
        assert seen["a"] > 0 and seen["b"] > 0, seen  # round-robin, not pick-first

        # Replica a reports NOT_SERVING: grpc's health checking leaves it out,
        # and no call fails meanwhile (the layer as a whole still serves).
        await first[1].set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        settled = 0
        for _ in range(MAX_CALLS):
            before = seen["a"]
            await _call(clients)
            settled = settled + 1 if seen["a"] == before else 0
            if settled == 20:
                break
            await asyncio.sleep(0.01)
        assert settled == 20, f"calls still reach the replica that is not serving: {seen}"
    finally:
        await clients.close()
        for server, _health, _address in (first, second):
            await server.stop(None)


async def test_one_replica_reporting_not_serving_does_not_refuse_the_layer() -> None:
    seen: Counter[str] = Counter()
    first = await _replica("a", seen)
    second = await _replica("b", seen)
    clients = _clients([first[2], second[2]])
    try:
        await _call(clients)
        # What the background poll records when its Check reaches a replica
        # that is not serving: for one address the layer is down, for a
        # replicated layer grpc's own health checking decides per replica.
        clients.health["source"] = health_pb2.HealthCheckResponse.NOT_SERVING
        await _call(clients)
    finally:
        await clients.close()
        for server, _health, _address in (first, second):
            await server.stop(None)
