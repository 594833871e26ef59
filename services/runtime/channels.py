"""Client channels between pullguard services, carrying the trace context."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from pullguard.services.runtime.config import ServicesTls
from pullguard.services.runtime.config.settings import is_replicated
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


#: A layer run as several replicas: calls are spread round-robin over the
#: replicas whose grpc health service says SERVING (client-side health
#: checking); a replica that dies or stops serving is left out until it is back.
REPLICATED_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


def replica_options(address: str) -> list[tuple[str, Any]]:
    """Round-robin with health checking for a replicated layer (a list or ``dns:///``)."""
    if not is_replicated(address):
        return []
    return [("grpc.service_config", REPLICATED_SERVICE_CONFIG)]


def open_channel(address: str, tls: ServicesTls | None = None) -> grpc.aio.Channel:
    """A channel to a layer, with mutual TLS when ``tls``.

    ``address`` is ``HOST:PORT``, ``unix:/path``, or a replicated layer:
    ``ipv4:A:P,B:P`` (a list in the configuration) or ``dns:///NAME:PORT``.
    Without ``tls`` nothing authenticates the peer: only a Unix socket in a
    directory no other user can open (what ``pullguard up`` uses) or a
    network no one else can reach makes that safe.
    """
    interceptors = [_TraceClientInterceptor()]
    options = [*CHANNEL_OPTIONS, *replica_options(address)]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address,
        channel_credentials(tls),
        options=[*options, *channel_options(tls)],
        interceptors=interceptors,
    )
