"""gRPC front of the fetcher: translates protobuf messages to and from the domain."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from pullguard.services.fetcher.models import Exchange, StagedManifest
from pullguard.services.fetcher.operations import Fetcher
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.protoconv import (
    descriptor_from_proto,
    descriptor_to_proto,
    verdict_to_proto,
)
from pullguard.v1 import common_pb2, fetcher_pb2, fetcher_pb2_grpc

SERVICE_NAME = fetcher_pb2.DESCRIPTOR.services_by_name["Fetcher"].full_name


class FetcherServicer(fetcher_pb2_grpc.FetcherServicer):  # type: ignore[misc]
    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher

    async def FetchManifest(  # noqa: N802 - gRPC method name
        self, request: fetcher_pb2.FetchManifestRequest, context: grpc.aio.ServicerContext
    ) -> fetcher_pb2.FetchManifestResponse:
        ref = request.plan.ref
        reference = request.reference or ref.digest or ref.tag
        if not reference:
            raise InvalidRequest("no reference: neither request.reference nor plan.ref is set")
        result = await self._fetcher.fetch_manifest(
            request.session, _alias(request.plan), ref.repository, reference
        )
        return fetcher_pb2.FetchManifestResponse(
            verdict=verdict_to_proto(result.verdict),
            manifest=_manifest(result.manifest),
            provenance=_provenance(result.exchanges),
        )

    async def FetchBlobs(  # noqa: N802
        self, request: fetcher_pb2.FetchBlobsRequest, context: grpc.aio.ServicerContext
    ) -> fetcher_pb2.FetchBlobsResponse:
        result = await self._fetcher.fetch_blobs(
            request.session,
            _alias(request.plan),
            request.plan.ref.repository,
            [descriptor_from_proto(d) for d in request.blobs],
        )
        return fetcher_pb2.FetchBlobsResponse(
            verdict=verdict_to_proto(result.verdict),
            blobs=[
                fetcher_pb2.StagedBlob(
                    digest=b.digest, size=b.size, computed_digest=b.computed_digest
                )
                for b in result.blobs
            ],
            provenance=_provenance(result.exchanges),
        )

    async def FetchArtifact(  # noqa: N802
        self, request: fetcher_pb2.FetchArtifactRequest, context: grpc.aio.ServicerContext
    ) -> fetcher_pb2.FetchArtifactResponse:
        reference = request.reference or request.tag
        if not reference:
            raise InvalidRequest("no artifact: neither reference nor tag is set")
        result = await self._fetcher.fetch_artifact(
            request.session,
            _alias(request.plan),
            request.repository or request.plan.ref.repository,
            reference,
            request.max_blob_size,
            request.max_blobs,
        )
        return fetcher_pb2.FetchArtifactResponse(
            found=result.found,
            verdict=verdict_to_proto(result.verdict),
            manifest=_manifest(result.manifest),
            blobs=[descriptor_to_proto(d) for d in result.blobs],
            provenance=_provenance(result.exchanges),
        )

    async def ListReferrers(  # noqa: N802
        self, request: fetcher_pb2.ListReferrersRequest, context: grpc.aio.ServicerContext
    ) -> fetcher_pb2.ListReferrersResponse:
        result = await self._fetcher.list_referrers(
            _alias(request.plan),
            request.repository or request.plan.ref.repository,
            request.digest,
            request.artifact_type,
        )
        return fetcher_pb2.ListReferrersResponse(
            supported=result.supported,
            verdict=verdict_to_proto(result.verdict),
            referrers=[descriptor_to_proto(d) for d in result.referrers],
            provenance=_provenance(result.exchanges),
            fallback_tag=result.fallback_tag,
        )

    async def ListTags(  # noqa: N802
        self, request: fetcher_pb2.ListTagsRequest, context: grpc.aio.ServicerContext
    ) -> fetcher_pb2.ListTagsResponse:
        tags, exchanges = await self._fetcher.list_tags(
            _alias(request.plan), request.plan.ref.repository, request.last
        )
        return fetcher_pb2.ListTagsResponse(tags=tags, provenance=_provenance(exchanges))


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Fetcher service to ``server``; return its full service name."""
    servicer = FetcherServicer(Fetcher(config))
    fetcher_pb2_grpc.add_FetcherServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return [SERVICE_NAME]


def _alias(plan: common_pb2.Plan) -> str:
    """The upstream alias of a plan; the two places it appears must agree."""
    upstream_alias, ref_alias = plan.upstream.alias, plan.ref.upstream_alias
    if upstream_alias and ref_alias and upstream_alias != ref_alias:
        raise InvalidRequest(
            f"plan names two upstreams: {upstream_alias[:100]!r} and {ref_alias[:100]!r}"
        )
    alias = upstream_alias or ref_alias
    if not alias:
        raise InvalidRequest("plan names no upstream")
    return alias


def _manifest(manifest: StagedManifest | None) -> common_pb2.StagedManifest | None:
    if manifest is None:
        return None
    return common_pb2.StagedManifest(
        staged_key=manifest.staged_key,
        computed_digest=manifest.computed_digest,
        size=manifest.size,
        content_type=manifest.content_type,
        docker_content_digest=manifest.docker_content_digest,
    )


def _provenance(exchanges: Iterable[Exchange]) -> common_pb2.Provenance:
    return common_pb2.Provenance(
        exchanges=[
            common_pb2.HttpExchange(
                method=e.method,
                url=e.url,
                status=e.status,
                location=e.location,
                headers=dict(e.headers),
                purpose=e.purpose,
                digest=e.digest,
                tls_spki_sha256=e.tls_spki_sha256,
                tls_version=e.tls_version,
                peer_address=e.peer_address,
            )
            for e in exchanges
        ]
    )
