"""An index is one unit: how the gateway judges the manifests an index lists.

Fake layers answer like healthy services for the index and for each child,
except where a test scripts a fault for one child: faults no real service
gives on purpose (a missing child, a lying media type, a crash). The end to
end cases with real registries, skopeo and cosign are in
tests/e2e/test_index_unit.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.indexcheck import MAX_CHILDREN
from pullguard.services.runtime.errors import LayerUnavailable, NotFound, UpstreamError
from pullguard.v1 import common_pb2, format_pb2
from tests.gateway.test_pipeline_faults import FakeLayers, _pipeline

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _child(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"child {n}".encode()).hexdigest()


class UnitLayers(FakeLayers):
    """The tag names an index listing ``entries``; ``child_faults`` break one child."""

    entries: list[common_pb2.Descriptor] = []
    child_faults: dict[str, str] = {}
    child_calls: list[tuple[str, str]] = []
    cancelled: list[str] = []

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Any:
        plan = getattr(request, "plan", None)
        child = plan.ref.digest if plan is not None and method != "Plan" else ""
        if not child:
            return await super().call(layer, method, request, timeout)
        self.child_calls.append((layer, method))
        fault = self.child_faults.get(child, "")
        if fault == "missing" and method == "FetchManifest":
            raise NotFound("manifest unknown")
        if fault == "upstream" and method == "FetchManifest":
            raise UpstreamError("upstream: injected")
        if fault == "hang" and method == "FetchManifest":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(child)
                raise
        if fault == "crash" and method == "CheckManifest":
            raise LayerUnavailable("format", "format: service unavailable")
        response = self._healthy(layer, method, request)
        if method == "VerifyManifest":
            response.digest = child
        if fault == f"deny:{method}":
            response.verdict.decision = common_pb2.DENY
            response.verdict.findings.add(
                code=f"{layer}.injected", severity=common_pb2.ERROR, message="denied"
            )
        if fault == "index" and method == "CheckManifest":
            response.summary.Clear()
            response.summary.kind = format_pb2.IMAGE_INDEX
            response.summary.media_type = OCI_INDEX
        return response

    def _healthy(self, layer: str, method: str, request: Any) -> Any:
        response = super()._healthy(layer, method, request)
        if method == "CheckManifest" and not request.plan.ref.digest:
            response.summary.Clear()
            response.summary.kind = format_pb2.IMAGE_INDEX
            response.summary.media_type = OCI_INDEX
            response.summary.manifests.extend(self.entries)
        return response


def _entry(n: int, platform: str = "linux/amd64") -> common_pb2.Descriptor:
    return common_pb2.Descriptor(
        digest=_child(n), media_type=OCI_MANIFEST, size=100, platform=platform
    )


def _run(tmp_path: Path, entries: list[common_pb2.Descriptor], faults: dict[str, str]) -> Any:
    pipeline = _pipeline(tmp_path, {})
    layers = UnitLayers(pipeline.staging, {})
    layers.entries = entries
    layers.child_faults = faults
    layers.child_calls = []
    layers.cancelled = []
    pipeline.clients = layers
    return pipeline, layers


async def test_every_listed_manifest_is_checked_without_blobs(tmp_path: Path) -> None:
    entries = [_entry(0), _entry(1, "linux/arm64"), _entry(2, "unknown/unknown")]
    pipeline, layers = _run(tmp_path, entries, {})
    result = await pipeline.pull("lab/app", "v1")
    assert result.allowed, result.report.as_json()
    checked = {step.step for step in result.report.steps if step.step.startswith("index child")}
    assert checked == {f"index child {_child(n)}" for n in (0, 1)}
    assert ("fetcher", "FetchBlobs") not in layers.child_calls
    unit = next(s for s in result.report.steps if s.step == "index unit")
    assert "1 unknown/unknown" in unit.findings[0]["message"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("deny:FetchManifest", "gateway.index_child_refused"),
        ("deny:CheckManifest", "gateway.index_child_refused"),
        ("deny:VerifyManifest", "gateway.index_child_refused"),
        ("deny:CheckSource", "gateway.index_child_refused"),
        ("missing", "gateway.index_child_missing"),
    ],
)
async def test_one_bad_child_refuses_the_index(tmp_path: Path, fault: str, code: str) -> None:
    pipeline, _layers = _run(tmp_path, [_entry(0), _entry(1, "linux/arm64")], {_child(0): fault})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed and not result.report.transient
    assert result.report.denied_by == "gateway"
    [finding] = result.report.denial_findings()
    assert finding["code"] == code
    assert finding["evidence"]["child"] == _child(0)
    assert _child(0) in result.report.reason
    if fault.startswith("deny:"):
        assert finding["evidence"]["codes"].endswith(".injected")
    assert not pipeline.admitted.has(result.report.digest)


async def test_a_child_whose_body_is_not_its_entrys_type_is_refused(tmp_path: Path) -> None:
    pipeline, _layers = _run(tmp_path, [_entry(0)], {_child(0): "index"})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed
    [finding] = result.report.denial_findings()
    assert finding["evidence"]["codes"] == "gateway.index_child_media_type"


async def test_a_layer_failing_on_a_child_fails_closed(tmp_path: Path) -> None:
    pipeline, _layers = _run(tmp_path, [_entry(0)], {_child(0): "crash"})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed
    # No verdict on the child: the index is an outage of format (503), never admitted.
    assert result.report.outcome == "outage" and result.report.outage["layer"] == "format"
    assert result.error is not None and result.error.http_status == 503


async def test_a_failure_stops_the_other_child_checks(tmp_path: Path) -> None:
    # Nothing may keep writing into the session once it is refused and quarantined.
    faults = {_child(0): "crash", _child(1): "hang"}
    pipeline, layers = _run(tmp_path, [_entry(0), _entry(1, "linux/arm64")], faults)
    result = await asyncio.wait_for(pipeline.pull("lab/app", "v1"), 30)
    assert not result.allowed
    assert layers.cancelled == [_child(1)]


async def test_an_upstream_error_on_a_child_is_an_outage(tmp_path: Path) -> None:
    pipeline, _layers = _run(tmp_path, [_entry(0)], {_child(0): "upstream"})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed and result.report.transient


async def test_too_many_children_are_refused_before_any_is_fetched(tmp_path: Path) -> None:
    entries = [_entry(n) for n in range(MAX_CHILDREN + 1)]
    pipeline, layers = _run(tmp_path, entries, {})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed
    assert [f["code"] for f in result.report.denial_findings()] == [
        "gateway.index_too_many_children"
    ]
    assert layers.child_calls == []
