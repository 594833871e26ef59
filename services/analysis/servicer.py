"""gRPC servicer of the analysis layer: proto in, planner, proto out."""

from __future__ import annotations

import grpc

from pullguard.services.analysis.planner import PlanData, Planner
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import PullguardError
from pullguard.services.runtime.protoconv import verdict_to_proto
from pullguard.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2

_SIGNATURE_MODES = {
    "none": common_pb2.SignaturePolicy.NONE,
    "enforce": common_pb2.SignaturePolicy.ENFORCE,
    "warn": common_pb2.SignaturePolicy.WARN,
}


def plan_to_proto(plan: PlanData) -> common_pb2.Plan:
    """The wire form of a plan. Credentials are not part of PlanData at all."""
    rule = plan.rule
    mode = _SIGNATURE_MODES.get(rule.signature_mode)
    if mode is None:
        # An unknown mode must never travel as MODE_UNSPECIFIED or NONE.
        raise PullguardError(
            f"rule {rule.index} has unknown signature mode {rule.signature_mode!r}"
        )
    return common_pb2.Plan(
        ref=common_pb2.ImageRef(
            upstream_alias=plan.upstream_alias,
            repository=plan.repository,
            tag=plan.tag,
            digest=plan.digest,
        ),
        upstream=common_pb2.UpstreamInfo(
            alias=plan.upstream.alias,
            url=plan.upstream.url,
            insecure=plan.upstream.insecure,
            redirect_hosts=list(plan.upstream.redirect_hosts),
            canonical_host=plan.upstream.canonical_host,
        ),
        rule=common_pb2.RulePolicy(
            index=rule.index,
            match=rule.match,
            signature=common_pb2.SignaturePolicy(
                mode=mode,
                keys=[common_pb2.PublicKey(name=name, pem=pem) for name, pem in rule.keys],
                threshold=rule.threshold,
            ),
            pinned_digest=rule.pinned_digest,
            foreign_url_hosts=list(rule.foreign_url_hosts),
            layer_media_types=list(rule.layer_media_types),
        ),
        policy_version=plan.policy_version,
        client_name=plan.client_name,
        deny_digests=list(plan.deny_digests),
    )


class AnalysisServicer(analysis_pb2_grpc.AnalysisServicer):  # type: ignore[misc]
    """Plans pulls; pure computation over the configuration, no I/O."""

    def __init__(self, config: Config) -> None:
        self._planner = Planner(config)

    async def Plan(  # noqa: N802 - gRPC method name
        self, request: analysis_pb2.PlanRequest, context: grpc.aio.ServicerContext
    ) -> analysis_pb2.PlanResponse:
        verdict, plan = self._planner.plan(
            request.name, request.reference, repository_only=request.repository_only
        )
        response = analysis_pb2.PlanResponse(verdict=verdict_to_proto(verdict))
        if plan is not None and verdict.allowed:
            response.plan.CopyFrom(plan_to_proto(plan))
        return response


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Analysis servicer to ``server``; returns its full service name."""
    analysis_pb2_grpc.add_AnalysisServicer_to_server(AnalysisServicer(config), server)  # type: ignore[no-untyped-call]
    return [analysis_pb2.DESCRIPTOR.services_by_name["Analysis"].full_name]
