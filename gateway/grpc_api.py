"""The gateway's gRPC service for programs and the CLI."""

from __future__ import annotations

import json
from dataclasses import asdict

import grpc

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.refs import split_reference
from pullguard.gateway.release import ReleaseRefused, check_reason, plan_release
from pullguard.gateway.report import report_to_proto
from pullguard.gateway.stores import Quarantine
from pullguard.services.runtime.errors import NotFound, StagingError
from pullguard.v1 import gateway_pb2, gateway_pb2_grpc


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, pipeline: Pipeline, decisions: DecisionLog, quarantine: Quarantine) -> None:
        self.pipeline = pipeline
        self.decisions = decisions
        self.quarantine = quarantine

    async def Check(
        self,
        request: gateway_pb2.CheckRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.DecisionReport:
        return await self._pull(request, admit=False)

    async def Admit(
        self,
        request: gateway_pb2.CheckRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.DecisionReport:
        return await self._pull(request, admit=True)

    async def _pull(
        self, request: gateway_pb2.CheckRequest, *, admit: bool
    ) -> gateway_pb2.DecisionReport:
        name, reference = split_reference(request.reference)
        return (await self.pipeline.pull(name, reference, admit=admit)).report.as_proto()

    async def ListDecisions(
        self,
        request: gateway_pb2.ListDecisionsRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.ListDecisionsResponse:
        limit = request.limit if 0 < request.limit <= 10000 else 100
        return gateway_pb2.ListDecisionsResponse(
            decisions=[report_to_proto(r) for r in self.decisions.list_decisions(limit)]
        )

    async def ListQuarantine(
        self,
        request: gateway_pb2.ListQuarantineRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.ListQuarantineResponse:
        return gateway_pb2.ListQuarantineResponse(
            entries=[
                gateway_pb2.QuarantineEntry(**entry) for entry in self.decisions.list_quarantine()
            ]
        )

    async def ShowQuarantine(
        self,
        request: gateway_pb2.ShowQuarantineRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.ShowQuarantineResponse:
        try:
            text = self.quarantine.report(request.id)
        except StagingError as exc:
            raise NotFound(exc.message, oci_code="NOT_FOUND") from None
        json.loads(text)
        return gateway_pb2.ShowQuarantineResponse(report_json=text)

    async def ReleaseQuarantine(
        self,
        request: gateway_pb2.ReleaseQuarantineRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.DecisionReport:
        reason = check_reason(request.reason)
        operator = " ".join(request.operator.split())[:200] or "unknown"
        if not self.decisions.is_quarantined(request.id):
            raise NotFound(f"no open quarantine entry {request.id[:80]!r}", oci_code="NOT_FOUND")
        try:
            text = self.quarantine.report(request.id)
        except StagingError as exc:
            raise NotFound(exc.message, oci_code="NOT_FOUND") from None
        try:
            original = json.loads(text)
        except ValueError:
            raise ReleaseRefused(
                f"quarantine entry {request.id}: report.json is unreadable"
            ) from None
        plan = plan_release(request.id, original)
        result = await self.pipeline.release(plan, reason, operator)
        report = result.report.as_json()
        if result.allowed:
            self.quarantine.mark_released(request.id, report)
            self.decisions.forget_quarantine(request.id)
        return report_to_proto(report)

    async def Reevaluate(
        self,
        request: gateway_pb2.ReevaluateRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.ReevaluateResponse:
        limit = request.limit if 0 < request.limit <= 100_000 else 10_000
        outcomes = await self.pipeline.reevaluate(force=request.force, limit=limit)
        return gateway_pb2.ReevaluateResponse(
            images=[gateway_pb2.ReevaluatedImage(**asdict(outcome)) for outcome in outcomes]
        )


def register(server: grpc.aio.Server, servicer: GatewayServicer) -> list[str]:
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    return [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name]
