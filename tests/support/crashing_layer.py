"""A source layer that crashes on every call, for outage tests.

Run as ``python -m tests.support.crashing_layer HOST:PORT`` (from the
repository root). It serves the real Source service definition through
pullguard's own server runtime, but every CheckSource raises, so the caller
sees what a crashing servicer gives: INTERNAL with the exception's type. No
real layer does this on purpose, which is why a fake is the right tool.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from pullguard.services.runtime.server import serve_forever
from pullguard.v1 import source_pb2, source_pb2_grpc


class CrashingSource(source_pb2_grpc.SourceServicer):
    async def CheckSource(  # noqa: N802 - the gRPC method name
        self, request: source_pb2.CheckSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_pb2.CheckSourceResponse:
        raise RuntimeError("injected crash")


def _register(server: grpc.aio.Server) -> list[str]:
    source_pb2_grpc.add_SourceServicer_to_server(CrashingSource(), server)  # type: ignore[no-untyped-call]
    return [source_pb2.DESCRIPTOR.services_by_name["Source"].full_name]


if __name__ == "__main__":
    asyncio.run(serve_forever("source", sys.argv[1], _register))
