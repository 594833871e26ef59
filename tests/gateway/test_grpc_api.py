"""The gateway's gRPC API (gateway/grpc_api.py) on a real grpc.aio server.

The servicer runs in the shared runtime's server on 127.0.0.1 port 0 with a
real stub, decision log, admitted store and quarantine; the pipeline behind
it asks the typed ``LayerClients`` of test_pipeline_faults, whose layers
answer like healthy services (or, here, deny a signature as a real
signature layer would for an unsigned image).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from pullguard.gateway.grpc_api import GatewayServicer, register
from pullguard.gateway.pull import Pipeline
from pullguard.services.runtime.server import start_server
from pullguard.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.gateway.test_pipeline_faults import DIGEST, FakeLayers, _pipeline


class UnsignedLayers(FakeLayers):
    """Healthy layers, except that the signature layer finds no signature."""

    def _healthy(self, layer: str, method: str, request: Any) -> Any:
        response = super()._healthy(layer, method, request)
        if method == "VerifySignatures":
            response.verdict.decision = common_pb2.DENY
            response.verdict.findings.add(
                code="signature.missing", severity=common_pb2.ERROR, message="no signature"
            )
        return response


@dataclass
class Api:
    stub: gateway_pb2_grpc.GatewayStub
    pipeline: Pipeline


async def _serve(
    tmp_path: Path, *, unsigned: bool = False, faults: dict[tuple[str, str], str] | None = None
) -> AsyncIterator[Api]:
    pipeline = _pipeline(tmp_path, faults or {})
    if unsigned:
        pipeline.clients = UnsignedLayers(pipeline.staging, {})
    servicer = GatewayServicer(pipeline, pipeline.decisions, pipeline.quarantine)
    server, _health, port = await start_server(
        "gateway", "127.0.0.1:0", lambda s: register(s, servicer)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Api(gateway_pb2_grpc.GatewayStub(channel), pipeline)
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for served in _serve(tmp_path):
        yield served


@pytest.fixture
async def unsigned_api(tmp_path: Path) -> AsyncIterator[Api]:
    async for served in _serve(tmp_path, unsigned=True):
        yield served


async def test_check_reports_without_admitting_and_admit_admits(api: Api) -> None:
    checked = await api.stub.Check(gateway_pb2.CheckRequest(reference="lab/app:v1"))
    assert checked.decision == common_pb2.ALLOW and not checked.admitted
    assert checked.digest == DIGEST and checked.outcome == "allowed"
    assert not api.pipeline.admitted.has(DIGEST)

    admitted = await api.stub.Admit(gateway_pb2.CheckRequest(reference="lab/app:v1"))
    assert admitted.decision == common_pb2.ALLOW and admitted.admitted
    assert api.pipeline.admitted.has(DIGEST)
    assert json.loads(admitted.report_json)["decision_id"] == admitted.decision_id

    listed = await api.stub.ListDecisions(gateway_pb2.ListDecisionsRequest(limit=0))
    assert {d.decision_id for d in listed.decisions} == {
        checked.decision_id,
        admitted.decision_id,
    }


async def test_reevaluate_lists_every_admitted_image(api: Api) -> None:
    await api.stub.Admit(gateway_pb2.CheckRequest(reference="lab/app:v1"))
    response = await api.stub.Reevaluate(gateway_pb2.ReevaluateRequest(force=True))
    (image,) = response.images
    assert (image.repository, image.digest) == ("lab/app", DIGEST)
    assert image.outcome and image.decision_id


async def test_a_denial_is_quarantined_shown_and_released(unsigned_api: Api) -> None:
    stub = unsigned_api.stub
    denied = await stub.Admit(gateway_pb2.CheckRequest(reference="lab/app:v1"))
    assert denied.decision == common_pb2.DENY and denied.denied_by == "signature"

    (entry,) = (await stub.ListQuarantine(gateway_pb2.ListQuarantineRequest())).entries
    assert entry.id == denied.decision_id and entry.digest == DIGEST
    shown = await stub.ShowQuarantine(gateway_pb2.ShowQuarantineRequest(id=entry.id))
    assert json.loads(shown.report_json)["decision"] == "DENY"

    released = await stub.ReleaseQuarantine(
        gateway_pb2.ReleaseQuarantineRequest(id=entry.id, reason="reviewed", operator="ops")
    )
    assert released.decision == common_pb2.ALLOW and released.admitted
    assert unsigned_api.pipeline.admitted.has(DIGEST)
    assert not (await stub.ListQuarantine(gateway_pb2.ListQuarantineRequest())).entries


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("show_unknown", grpc.StatusCode.NOT_FOUND),
        ("release_unknown", grpc.StatusCode.NOT_FOUND),
        ("release_without_reason", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_errors_keep_their_status_and_say_what(
    api: Api, call: str, code: grpc.StatusCode
) -> None:
    stub = api.stub
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if call == "show_unknown":
            await stub.ShowQuarantine(gateway_pb2.ShowQuarantineRequest(id="0" * 32))
        elif call == "release_unknown":
            await stub.ReleaseQuarantine(
                gateway_pb2.ReleaseQuarantineRequest(id="0" * 32, reason="ok")
            )
        else:
            await stub.ReleaseQuarantine(gateway_pb2.ReleaseQuarantineRequest(id="0" * 32))
    assert caught.value.code() == code
    assert "Traceback" not in (caught.value.details() or "")


async def test_a_denial_without_a_waivable_finding_is_not_released(tmp_path: Path) -> None:
    faults = {("hashverify", "VerifyManifest"): "deny"}
    async for served in _serve(tmp_path, faults=faults):
        denied = await served.stub.Admit(gateway_pb2.CheckRequest(reference="lab/app:v1"))
        assert denied.denied_by == "hashverify"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.ReleaseQuarantine(
                gateway_pb2.ReleaseQuarantineRequest(id=denied.decision_id, reason="ok")
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "nothing to waive" in (caught.value.details() or "")
        assert not served.pipeline.admitted.has(DIGEST)
