"""gRPC servicer of the hashverify layer: proto in, domain checks, proto out."""

from __future__ import annotations

import asyncio

import grpc

from pullguard.services.hashverify.claims import DenySet, Exchange
from pullguard.services.hashverify.verify import (
    BlobClaim,
    DescriptorClaim,
    ManifestClaims,
    manifest_responses,
    verify_blobs_stamped,
    verify_manifest,
)
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.denylist import DenyList
from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.protoconv import verdict_to_proto
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, hashverify_pb2, hashverify_pb2_grpc


def _exchanges(provenance: common_pb2.Provenance) -> list[Exchange]:
    return [
        Exchange(
            method=e.method,
            url=e.url,
            status=e.status,
            purpose=e.purpose,
            digest=e.digest,
            headers=dict(e.headers),
        )
        for e in provenance.exchanges
    ]


class HashVerifyServicer(hashverify_pb2_grpc.HashVerifyServicer):  # type: ignore[misc]
    """Recomputes digests from the staging store; trusts no claim in the request."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._staging_store = StagingStore(config.state_dir / "staging")
        # Loaded once per service; it re-reads its file when the file changes,
        # and raises when it cannot: the RPC then fails, it never allows.
        self._denylist = DenyList(config.policy.deny_digests, config.policy.deny_digests_file)

    def _deny(self, plan: common_pb2.Plan) -> DenySet:
        return DenySet(self._denylist, plan.deny_digests)

    async def VerifyManifest(  # noqa: N802 - gRPC method name
        self, request: hashverify_pb2.VerifyManifestRequest, context: grpc.aio.ServicerContext
    ) -> hashverify_pb2.VerifyManifestResponse:
        manifest = request.manifest
        if not request.session or not manifest.staged_key:
            raise InvalidRequest("VerifyManifest needs a session and a staged manifest key")
        claims = ManifestClaims(
            staged_key=manifest.staged_key,
            fetcher_digest=manifest.computed_digest,
            size=manifest.size,
            docker_content_digest=manifest.docker_content_digest,
            requested_digest=request.plan.ref.digest,
            tag=request.plan.ref.tag,
            pinned_digest=request.plan.rule.pinned_digest,
            responses=manifest_responses(_exchanges(request.provenance)),
            parent_descriptors=tuple(
                DescriptorClaim(d.digest, d.size) for d in request.parent_descriptors
            ),
        )
        check = await asyncio.to_thread(
            verify_manifest,
            self._staging_store,
            request.session,
            claims,
            self._deny(request.plan),
            self._config.limits.manifest_bytes,
        )
        return hashverify_pb2.VerifyManifestResponse(
            verdict=verdict_to_proto(check.verdict), digest=check.digest
        )

    async def VerifyBlobs(  # noqa: N802 - gRPC method name
        self, request: hashverify_pb2.VerifyBlobsRequest, context: grpc.aio.ServicerContext
    ) -> hashverify_pb2.VerifyBlobsResponse:
        if not request.session or not request.blobs:
            raise InvalidRequest("VerifyBlobs needs a session and at least one blob")
        checked = await verify_blobs_stamped(
            self._staging_store,
            request.session,
            [BlobClaim(b.digest, b.size, b.media_type) for b in request.blobs],
            self._deny(request.plan),
            max_blobs=self._config.limits.layers + 1,
            exchanges=_exchanges(request.provenance),
        )
        return hashverify_pb2.VerifyBlobsResponse(
            verdict=verdict_to_proto(checked.verdict),
            stamps=[
                hashverify_pb2.FileStamp(
                    digest=digest,
                    device=stamp.device,
                    inode=stamp.inode,
                    size=stamp.size,
                    mtime_ns=stamp.mtime_ns,
                    ctime_ns=stamp.ctime_ns,
                )
                for digest, stamp in checked.stamps.items()
            ],
        )


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the HashVerify servicer to ``server``; returns its full service name."""
    hashverify_pb2_grpc.add_HashVerifyServicer_to_server(  # type: ignore[no-untyped-call]
        HashVerifyServicer(config), server
    )
    return [hashverify_pb2.DESCRIPTOR.services_by_name["HashVerify"].full_name]
