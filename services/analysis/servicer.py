"""gRPC servicer of the analysis layer: proto in, planner, proto out."""

from __future__ import annotations

import asyncio

import grpc

from pullguard.services.analysis.planner import PlanData, Planner
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.protoconv import rule_to_proto, verdict_to_proto
from pullguard.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2


def plan_to_proto(plan: PlanData) -> common_pb2.Plan:
    """The wire form of a plan. Credentials are not part of PlanData at all."""
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
            realm_hosts=list(plan.upstream.realm_hosts),
            tls=common_pb2.TlsPolicy(
                spki_sha256=list(plan.upstream.tls_spki_sha256),
                custom_ca=plan.upstream.tls_custom_ca,
            ),
        ),
        rule=rule_to_proto(plan.rule, plan.max_signatures, plan.max_signature_bytes),
        policy_version=plan.policy_version,
        client_name=plan.client_name,
        deny_digests=list(plan.deny_digests),
        parent_index=plan.parent_index,
    )


class AnalysisServicer(analysis_pb2_grpc.AnalysisServicer):  # type: ignore[misc]
    """Plans pulls from the configuration and the deny database; no network."""

    def __init__(self, config: Config) -> None:
        self._planner = Planner(config)

    async def Plan(  # noqa: N802 - gRPC method name
        self, request: analysis_pb2.PlanRequest, context: grpc.aio.ServicerContext
    ) -> analysis_pb2.PlanResponse:
        # In a thread: the deny database file may be large, and re-reading it
        # after a change must not stall the event loop (health checks included).
        verdict, plan = await asyncio.to_thread(
            self._planner.plan,
            request.name,
            request.reference,
            request.repository_only,
            request.parent_index,
        )
        response = analysis_pb2.PlanResponse(verdict=verdict_to_proto(verdict))
        if plan is not None and verdict.allowed:
            response.plan.CopyFrom(plan_to_proto(plan))
        return response


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Analysis servicer to ``server``; returns its full service name."""
    analysis_pb2_grpc.add_AnalysisServicer_to_server(AnalysisServicer(config), server)  # type: ignore[no-untyped-call]
    return [analysis_pb2.DESCRIPTOR.services_by_name["Analysis"].full_name]
