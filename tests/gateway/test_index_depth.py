"""F-12(a): an index nested too deep below admitted indexes is refused."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.decisions import Admission
from pullguard.gateway.pull import MAX_INDEX_DEPTH
from pullguard.gateway.report import Report
from pullguard.v1 import format_pb2
from tests.gateway.test_pipeline_faults import DIGEST, FakeLayers, _pipeline

INDEX = "application/vnd.oci.image.index.v1+json"


def _d(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


class IndexLayers(FakeLayers):
    """Healthy layers serving an index, pulled by digest under ``parent``."""

    parent = ""

    def _healthy(self, layer: str, method: str, request: Any) -> Any:
        response = super()._healthy(layer, method, request)
        if method == "Plan":
            response.plan.ref.tag = ""
            response.plan.ref.digest = DIGEST
            response.plan.parent_index = self.parent
        if method == "CheckManifest":
            response.summary.Clear()
            response.summary.kind = format_pb2.IMAGE_INDEX
            response.summary.media_type = INDEX
        return response


@pytest.mark.parametrize(
    ("depth", "allowed"), [(0, True), (1, True), (3, True), (4, False), (50, False)]
)
async def test_f12a_index_depth(tmp_path: Path, depth: int, allowed: bool) -> None:
    pipeline = _pipeline(tmp_path, {})
    layers = IndexLayers(pipeline.staging, {})
    pipeline.clients = layers
    # A chain of admitted indexes: _d(0) tagged, each lists the next, the last lists DIGEST.
    chain = [_d(i) for i in range(depth)] + [DIGEST]
    for n, (parent, child) in enumerate(itertools.pairwise(chain)):
        allowed_earlier = Report(f"chain{n}", "lab/app", parent, repository="lab/app")
        allowed_earlier.decision, allowed_earlier.digest = "ALLOW", parent
        pipeline.decisions.admit_and_record(
            Admission("lab/app", parent, INDEX, 1, allowed_earlier.decision_id),
            "v",
            blobs=[],
            children=[(child, INDEX, 1)],
            client_name="lab/app",
            report=allowed_earlier.as_json(),
        )
    layers.parent = chain[-2] if depth else ""

    result = await pipeline.pull("lab/app", DIGEST)

    assert result.allowed is allowed, result.report.as_json()
    if not allowed:
        assert result.report.denied_by == "gateway"
        assert result.report.denial_findings()[0]["code"] == "gateway.index_too_deep"
    assert MAX_INDEX_DEPTH == 4
