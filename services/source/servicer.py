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
from pullguard.services.source.provenance import (
    ManifestEvidence,
    SourceRule,
    VerifiedProvenance,
)
from pullguard.v1 import common_pb2, source_pb2, source_pb2_grpc


def upstream_source(plan: common_pb2.Plan) -> UpstreamSource:
    """The upstream facts of the plan, which analysis resolved from the
    configuration: the plan is authoritative, this service reads no policy."""
    info = plan.upstream
    return UpstreamSource(
        url=info.url,
        insecure=info.insecure,
        redirect_hosts=tuple(info.redirect_hosts),
        realm_hosts=tuple(info.realm_hosts),
        spki_sha256=tuple(info.tls.spki_sha256),
    )


def source_rule(rule: common_pb2.RulePolicy) -> SourceRule:
    """The rule's source requirements, as analysis resolved them."""
    return SourceRule(
        foreign_url_hosts=tuple(rule.foreign_url_hosts),
        approved_sources=tuple(rule.approved_sources),
        require_source_annotation=rule.require_source_annotation,
        provenance_required=rule.provenance.required,
        builder_ids=tuple(rule.provenance.builder_ids),
        source_repositories=tuple(rule.provenance.source_repositories),
    )


def manifest_evidence(request: source_pb2.CheckSourceRequest) -> ManifestEvidence | None:
    """The manifest-stage evidence; None for the blob stage.

    An unset stage counts as the manifest stage, so that a caller that forgets
    to say gets every check rather than fewer.
    """
    if request.stage == source_pb2.CheckSourceRequest.BLOBS:
        return None
    return ManifestEvidence(
        digest=request.manifest_digest,
        annotations=dict(request.annotations),
        parent_index=request.plan.parent_index,
        provenance=tuple(
            VerifiedProvenance(
                predicate_type=p.predicate_type,
                builder_id=p.builder_id,
                source_repository=p.source_repository,
                subject_digest=p.subject_digest,
                source_digest=p.source_digest,
                signer=p.signer,
                found_at=p.found_at,
            )
            for p in request.verified_provenance
        ),
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
            upstream_source(request.plan),
            [
                Exchange(
                    url=e.url,
                    purpose=e.purpose,
                    location=e.location,
                    status=e.status,
                    digest=e.digest,
                    tls_spki_sha256=e.tls_spki_sha256,
                )
                for e in request.provenance.exchanges
            ],
            [DescriptorUrls(d.digest, d.media_type, tuple(d.urls)) for d in request.descriptors],
            source_rule(request.plan.rule),
            manifest_evidence(request),
        )
        return source_pb2.CheckSourceResponse(verdict=verdict_to_proto(verdict))


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Source servicer to ``server``; returns its full service name."""
    source_pb2_grpc.add_SourceServicer_to_server(  # type: ignore[no-untyped-call]
        SourceServicer(config), server
    )
    return [source_pb2.DESCRIPTOR.services_by_name["Source"].full_name]
