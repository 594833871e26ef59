"""Run one pullguard servicer on a real grpc.aio server on 127.0.0.1:0."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from pullguard.services.runtime.channels import open_channel
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.server import start_server

Register = Callable[[grpc.aio.Server, Config], Sequence[str]]


@contextlib.asynccontextmanager
async def running_service(
    name: str, register: Register, config: Config
) -> AsyncIterator[grpc.aio.Channel]:
    """Start the service, yield a channel to it, stop it afterwards."""
    server, _health, port = await start_server(name, "127.0.0.1:0", lambda s: register(s, config))
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)
