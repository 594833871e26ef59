"""Client channels between pullguard services, carrying the trace context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from pullguard.services.runtime.config import ServicesTls
from pullguard.services.runtime.server import CHANNEL_OPTIONS
from pullguard.services.runtime.telemetry import inject_metadata
from pullguard.services.runtime.tls import channel_credentials, channel_options


class _TraceClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        metadata.extend(inject_metadata())
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*metadata),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def open_channel(address: str, tls: ServicesTls | None = None) -> grpc.aio.Channel:
    """A channel to a layer: ``HOST:PORT`` or ``unix:/path``, with mutual TLS when ``tls``.

    Without ``tls`` nothing authenticates the peer: only a Unix socket in a
    directory no other user can open (what ``pullguard up`` uses) or a
    network no one else can reach makes that safe.
    """
    interceptors = [_TraceClientInterceptor()]
    if tls is None:
        return grpc.aio.insecure_channel(
            address, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        address,
        channel_credentials(tls),
        options=[*CHANNEL_OPTIONS, *channel_options(tls)],
        interceptors=interceptors,
    )
