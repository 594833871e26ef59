"""gRPC servicer of the source layer: proto in, domain checks, proto out."""

from __future__ import annotations

import grpc

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.protoconv import verdict_to_proto
from pullguard.services.source.checks import (
    DescriptorUrls,
    Exchange,
    UpstreamSource,
    check_source,
)
from pullguard.v1 import common_pb2, source_pb2, source_pb2_grpc


def upstream_source(plan: common_pb2.Plan, config: Config) -> UpstreamSource:
    """The upstream facts of the plan, plus the token realm hosts of this
    service's configuration when it names the same upstream (UpstreamInfo
    does not carry them)."""
    info = plan.upstream
    configured = config.upstreams.get(info.alias)
    realm_hosts = configured.realm_hosts if configured and configured.url == info.url else ()
    return UpstreamSource(
        url=info.url,
        insecure=info.insecure,
        redirect_hosts=tuple(info.redirect_hosts),
        realm_hosts=realm_hosts,
    )


class SourceServicer(source_pb2_grpc.SourceServicer):  # type: ignore[misc]
    """Checks provenance and descriptors against the plan's upstream and rule."""

    def __init__(self, config: Config) -> None:
        self._config = config

    async def CheckSource(  # noqa: N802 - gRPC method name
        self, request: source_pb2.CheckSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_pb2.CheckSourceResponse:
        # Pure computation over the request, linear in its size: no thread needed.
        verdict = check_source(
            upstream_source(request.plan, self._config),
            [
                Exchange(
                    url=e.url,
                    purpose=e.purpose,
                    location=e.location,
                    status=e.status,
                    digest=e.digest,
                )
                for e in request.provenance.exchanges
            ],
            [DescriptorUrls(d.digest, d.media_type, tuple(d.urls)) for d in request.descriptors],
            dict(request.annotations),
            tuple(request.plan.rule.foreign_url_hosts),
        )
        return source_pb2.CheckSourceResponse(verdict=verdict_to_proto(verdict))


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Source servicer to ``server``; returns its full service name."""
    source_pb2_grpc.add_SourceServicer_to_server(  # type: ignore[no-untyped-call]
        SourceServicer(config), server
    )
    return [source_pb2.DESCRIPTOR.services_by_name["Source"].full_name]
