"""A source layer that misbehaves on purpose, for outage tests.

Run as ``python -m tests.support.fake_source MODE HOST:PORT`` (from the
repository root). It serves the real Source service definition through
pullguard's own server runtime:

- ``crash``: every CheckSource raises, so the caller sees what a crashing
  servicer gives: INTERNAL with the exception's type;
- ``not-serving``: its health service says NOT_SERVING, yet every
  CheckSource answers ALLOW. A gateway that asked such a layer anyway
  would admit what no sound layer judged.

No real layer does either on purpose, which is why a fake is the right tool.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2

from pullguard.services.runtime.server import start_server
from pullguard.v1 import common_pb2, source_pb2, source_pb2_grpc


class FakeSource(source_pb2_grpc.SourceServicer):
    def __init__(self, crash: bool) -> None:
        self._crash = crash

    async def CheckSource(  # noqa: N802 - the gRPC method name
        self, request: source_pb2.CheckSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_pb2.CheckSourceResponse:
        if self._crash:
            raise RuntimeError("injected crash")
        return source_pb2.CheckSourceResponse(
            verdict=common_pb2.Verdict(decision=common_pb2.ALLOW, layer="source")
        )


async def main(mode: str, listen: str) -> None:
    servicer = FakeSource(crash=mode == "crash")

    def register(server: grpc.aio.Server) -> list[str]:
        source_pb2_grpc.add_SourceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        return [source_pb2.DESCRIPTOR.services_by_name["Source"].full_name]

    server, health, _port = await start_server("source", listen, register)
    if mode == "not-serving":
        await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
