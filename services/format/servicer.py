"""gRPC servicer of the format layer: proto in, domain checks, proto out."""

from __future__ import annotations

import asyncio
import threading

import grpc

from pullguard.services.format.config_check import check_staged_config
from pullguard.services.format.layers import LayerStats, inspect_layers
from pullguard.services.format.manifest import ManifestSummary, check_staged_manifest
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.protoconv import (
    descriptor_from_proto,
    descriptor_to_proto,
    inventory_to_proto,
    layer_rule_from_proto,
    verdict_to_proto,
)
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import format_pb2, format_pb2_grpc

_KINDS = {"image": format_pb2.IMAGE_MANIFEST, "index": format_pb2.IMAGE_INDEX}


def summary_to_proto(summary: ManifestSummary) -> format_pb2.ManifestSummary:
    """Domain summary to the message the gateway reads blobs from."""
    message = format_pb2.ManifestSummary(
        kind=_KINDS[summary.kind],
        media_type=summary.media_type,
        layers=[descriptor_to_proto(d) for d in summary.layers],
        manifests=[descriptor_to_proto(d) for d in summary.manifests],
        artifact_type=summary.artifact_type,
        annotations=dict(summary.annotations),
    )
    if summary.config is not None:
        message.config.CopyFrom(descriptor_to_proto(summary.config))
    if summary.subject is not None:
        message.subject.CopyFrom(descriptor_to_proto(summary.subject))
    return message


def stats_to_proto(stats: LayerStats) -> format_pb2.LayerStats:
    """Domain layer statistics to the message."""
    message = format_pb2.LayerStats(
        index=stats.index,
        digest=stats.digest,
        media_type=stats.media_type,
        compression=stats.compression,
        compressed_bytes=stats.compressed_bytes,
        uncompressed_bytes=stats.uncompressed_bytes,
        entries=stats.entries,
        diff_id=stats.diff_id,
        duration_ms=stats.seconds * 1000,
        completed=stats.completed,
    )
    if stats.inventory is not None:
        message.inventory.CopyFrom(inventory_to_proto(stats.inventory))
    return message


class FormatServicer(format_pb2_grpc.FormatServicer):  # type: ignore[misc]
    """Checks staged manifests and configs; reads the staging store itself."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._staging_store = StagingStore(config.state_dir / "staging")

    async def CheckManifest(  # noqa: N802 - gRPC method name
        self, request: format_pb2.CheckManifestRequest, context: grpc.aio.ServicerContext
    ) -> format_pb2.CheckManifestResponse:
        if not request.session or not request.manifest.staged_key:
            raise InvalidRequest("CheckManifest needs a session and a staged manifest key")
        # Reading and parsing up to 4 MiB is kept off the event loop.
        result = await asyncio.to_thread(
            check_staged_manifest,
            self._staging_store,
            request.session,
            request.manifest.staged_key,
            request.manifest.content_type,
            self._config.limits,
            tuple(request.plan.rule.layer_media_types),
            tuple(request.plan.rule.artifact_types),
        )
        response = format_pb2.CheckManifestResponse(verdict=verdict_to_proto(result.verdict))
        if result.summary is not None and result.verdict.allowed:
            response.summary.CopyFrom(summary_to_proto(result.summary))
        return response

    async def CheckConfig(  # noqa: N802 - gRPC method name
        self, request: format_pb2.CheckConfigRequest, context: grpc.aio.ServicerContext
    ) -> format_pb2.CheckConfigResponse:
        summary = request.summary
        if not request.session or not summary.HasField("config") or not summary.config.digest:
            raise InvalidRequest("CheckConfig needs a session and a summary with a config")
        if summary.kind != format_pb2.IMAGE_MANIFEST:
            raise InvalidRequest("CheckConfig applies to image manifests only")
        verdict = await asyncio.to_thread(
            check_staged_config,
            self._staging_store,
            request.session,
            descriptor_from_proto(summary.config),
            len(summary.layers),
            self._config.limits,
            summary.artifact_type,
            tuple(request.plan.rule.artifact_types),
        )
        return format_pb2.CheckConfigResponse(verdict=verdict_to_proto(verdict))

    async def InspectLayers(  # noqa: N802 - gRPC method name
        self, request: format_pb2.InspectLayersRequest, context: grpc.aio.ServicerContext
    ) -> format_pb2.InspectLayersResponse:
        summary = request.summary
        if not request.session or summary.kind != format_pb2.IMAGE_MANIFEST:
            raise InvalidRequest("InspectLayers needs a session and an image manifest summary")
        indexes = list(request.layer_indexes)
        if any(not 0 <= i < len(summary.layers) for i in indexes) or len(set(indexes)) != len(
            indexes
        ):
            raise InvalidRequest("InspectLayers: layer_indexes must name each layer once")
        rule = layer_rule_from_proto(request.plan.rule.layers)
        cancel = threading.Event()
        try:
            result = await asyncio.to_thread(
                inspect_layers,
                self._staging_store,
                request.session,
                descriptor_from_proto(summary.config) if summary.HasField("config") else None,
                [descriptor_from_proto(layer) for layer in summary.layers],
                rule,
                self._config.limits,
                artifact_type=summary.artifact_type,
                artifact_types=tuple(request.plan.rule.artifact_types),
                cancel=cancel,
                only=indexes or None,
            )
        finally:
            # A cancelled or timed-out RPC stops the decompression threads.
            cancel.set()
        return format_pb2.InspectLayersResponse(
            verdict=verdict_to_proto(result.verdict),
            layers=[stats_to_proto(stats) for stats in result.layers],
        )


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Format servicer to ``server``; returns its full service name."""
    format_pb2_grpc.add_FormatServicer_to_server(FormatServicer(config), server)  # type: ignore[no-untyped-call]
    return [format_pb2.DESCRIPTOR.services_by_name["Format"].full_name]
