"""The gateway's gRPC service for programs and the CLI.

Every method first asks the :class:`~pullguard.gateway.auth.tokens.Authorizer`
(the caller's Bearer token and role; see that module); a release records the
token's name as its operator, never a name the caller sends.
"""

from __future__ import annotations

import json

import grpc

from pullguard.gateway.auth.tokens import LOCAL, Authorizer, Principal
from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.operations import release_entry, run_reevaluation
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.refs import split_reference
from pullguard.gateway.report import report_to_proto
from pullguard.gateway.stores import Quarantine
from pullguard.services.runtime.errors import InvalidRequest, NotFound, StagingError
from pullguard.v1 import gateway_pb2, gateway_pb2_grpc


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        decisions: DecisionLog,
        quarantine: Quarantine,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.decisions = decisions
        self.quarantine = quarantine
        self.authorizer = authorizer or Authorizer(None)

    async def Check(
        self,
        request: gateway_pb2.CheckRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.DecisionReport:
        self.authorizer.grpc(context, "check")
        return await self._pull(request, admit=False)

    async def Admit(
        self,
        request: gateway_pb2.CheckRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.DecisionReport:
        self.authorizer.grpc(context, "admit")
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
        self.authorizer.grpc(context, "read")
        limit = request.limit if 0 < request.limit <= 10000 else 100
        return gateway_pb2.ListDecisionsResponse(
            decisions=[report_to_proto(r) for r in self.decisions.list_decisions(limit)]
        )

    async def ListQuarantine(
        self,
        request: gateway_pb2.ListQuarantineRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.ListQuarantineResponse:
        self.authorizer.grpc(context, "read")
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
        self.authorizer.grpc(context, "read")
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
        operator = release_operator(self.authorizer.grpc(context, "release"), request.operator)
        report = await release_entry(
            self.pipeline, self.decisions, self.quarantine, request.id, request.reason, operator
        )
        return report_to_proto(report)

    async def Reevaluate(
        self,
        request: gateway_pb2.ReevaluateRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.ReevaluateResponse:
        principal = self.authorizer.grpc(context, "reevaluate")
        limit = request.limit if 0 < request.limit <= 100_000 else 10_000
        run = await run_reevaluation(
            self.pipeline, self.decisions, principal.name, force=request.force, limit=limit
        )
        return gateway_pb2.ReevaluateResponse(
            images=[gateway_pb2.ReevaluatedImage(**image) for image in run["images"]]
        )


def release_operator(principal: Principal, typed: str) -> str:
    """Who a release records: the token's name. A different name sent with it is refused.

    Without admin tokens (loopback only) nobody vouches for the caller: the
    name it sends is recorded, marked unverified.
    """
    typed = " ".join(typed.split())[:200]
    if principal is LOCAL:
        return f"{typed or 'unknown'} (unverified: no admin tokens)"
    if typed and typed != principal.name:
        raise InvalidRequest(
            f"operator {typed[:60]!r} was sent, but the token is {principal.name!r}'s:"
            " the operator recorded is the token's name; send none",
            "DENIED",
        )
    return principal.name


def register(server: grpc.aio.Server, servicer: GatewayServicer) -> list[str]:
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    return [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name]
