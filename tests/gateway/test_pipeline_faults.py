"""O-03: no exception or malformed answer anywhere turns into an ALLOW.

The pipeline runs against a fake set of layer clients that answer like
healthy services, except at one injected point, where they raise or return
something broken. No real service returns these on purpose, which is why a
fake is the right tool here. Every run must end in DENY (or an outage: a
layer or upstream failure, recorded as such), record a decision, and leave
the admitted store untouched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config.database import Database
from pullguard.services.runtime.errors import (
    LayerUnavailable,
    NotFound,
    PullguardError,
    UpstreamError,
)
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import (
    analysis_pb2,
    common_pb2,
    fetcher_pb2,
    format_pb2,
    hashverify_pb2,
    signature_pb2,
    source_pb2,
)
from tests.support.configs import make_config

CONFIG_BLOB = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
LAYER_BLOB = b"layer-bytes"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(CONFIG_BLOB),
            "size": len(CONFIG_BLOB),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _digest(LAYER_BLOB),
                "size": len(LAYER_BLOB),
            }
        ],
    }
).encode()
DIGEST = _digest(MANIFEST)
ALLOW = common_pb2.Verdict(decision=common_pb2.ALLOW)

STEPS = [
    ("analysis", "Plan"),
    ("fetcher", "FetchManifest"),
    ("format", "CheckManifest"),
    ("hashverify", "VerifyManifest"),
    ("source", "CheckSource"),
    ("signature", "VerifySignatures"),
    ("fetcher", "FetchBlobs"),
    ("hashverify", "VerifyBlobs"),
    ("format", "CheckConfig"),
    ("format", "InspectLayers"),
]
FAULTS = [
    "layer_failure",
    "exception",
    "upstream_error",
    "not_found",
    "unset_decision",
    "allow_with_error",
    "allow_with_unspecified_severity",
    "deny",
    "none",
    "wrong_digest",
]


class FakeLayers:
    """Healthy answers everywhere except the injected ``faults`` (step -> fault)."""

    #: The image the fake upstream serves: its manifest and its layers.
    manifest = MANIFEST
    layers: tuple[bytes, ...] = (LAYER_BLOB,)

    def __init__(self, staging: StagingStore, faults: dict[tuple[str, str], str]) -> None:
        self.staging = staging
        self.faults = faults

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Any:
        response = self._healthy(layer, method, request)
        fault = self.faults.get((layer, method), "")
        if not fault:
            return response
        if fault == "layer_failure":
            raise LayerUnavailable(layer, f"{layer}: service unavailable")
        if fault == "exception":
            raise RuntimeError("injected")
        if fault == "upstream_error":
            raise UpstreamError("upstream: injected")
        if fault == "not_found":
            raise NotFound("injected")
        if fault == "none":
            return None
        verdict = getattr(response, "verdict", None)
        if verdict is None:
            raise RuntimeError("injected: no verdict field")
        verdict.Clear()
        if fault == "allow_with_error":
            verdict.decision = common_pb2.ALLOW
            verdict.findings.add(code="x.bad", severity=common_pb2.ERROR, message="bad")
        elif fault == "allow_with_unspecified_severity":
            verdict.decision = common_pb2.ALLOW
            verdict.findings.add(code="x.odd", message="odd")
        elif fault == "deny":
            verdict.decision = common_pb2.DENY
        elif fault == "wrong_digest":
            # Every answer claims content other than what was staged.
            verdict.decision = common_pb2.ALLOW
            if hasattr(response, "digest"):
                response.digest = "sha256:" + "0" * 64
            elif hasattr(response, "manifest"):
                response.manifest.staged_key = "sha256:" + "0" * 64
            elif hasattr(response, "summary") and response.summary.layers:
                response.summary.layers[0].digest = "sha256:" + "0" * 64
            else:
                verdict.decision = common_pb2.DENY
        return response

    def _healthy(self, layer: str, method: str, request: Any) -> Any:
        if method == "Plan":
            plan = common_pb2.Plan(
                ref=common_pb2.ImageRef(upstream_alias="lab", repository="app", tag="v1"),
                upstream=common_pb2.UpstreamInfo(alias="lab", url="http://127.0.0.1:5001"),
                rule=common_pb2.RulePolicy(
                    signature=common_pb2.SignaturePolicy(mode=common_pb2.SignaturePolicy.NONE)
                ),
                policy_version="v",
            )
            return analysis_pb2.PlanResponse(
                verdict=common_pb2.Verdict(decision=common_pb2.ALLOW), plan=plan
            )
        digest = _digest(self.manifest)
        if method == "FetchManifest":
            with self.staging.writer(request.session) as writer:
                writer.write(self.manifest)
                writer.commit(digest)
            return fetcher_pb2.FetchManifestResponse(
                verdict=ALLOW,
                manifest=common_pb2.StagedManifest(
                    staged_key=digest, computed_digest=digest, size=len(self.manifest)
                ),
            )
        if method == "CheckManifest":
            return format_pb2.CheckManifestResponse(
                verdict=ALLOW,
                summary=format_pb2.ManifestSummary(
                    kind=format_pb2.IMAGE_MANIFEST,
                    media_type="application/vnd.oci.image.manifest.v1+json",
                    config=common_pb2.Descriptor(
                        digest=_digest(CONFIG_BLOB), size=len(CONFIG_BLOB)
                    ),
                    layers=[
                        common_pb2.Descriptor(digest=_digest(data), size=len(data))
                        for data in self.layers
                    ],
                ),
            )
        if method == "VerifyManifest":
            return hashverify_pb2.VerifyManifestResponse(verdict=ALLOW, digest=digest)
        if method == "CheckSource":
            return source_pb2.CheckSourceResponse(verdict=ALLOW)
        if method == "VerifySignatures":
            return signature_pb2.VerifySignaturesResponse(verdict=ALLOW)
        if method == "FetchBlobs":
            staged = []
            for data in (CONFIG_BLOB, LAYER_BLOB):
                with self.staging.writer(request.session) as writer:
                    writer.write(data)
                    writer.commit(_digest(data))
                # What the real fetcher reports: the digest it computed while streaming.
                staged.append(
                    fetcher_pb2.StagedBlob(
                        digest=_digest(data), size=len(data), computed_digest=_digest(data)
                    )
                )
            return fetcher_pb2.FetchBlobsResponse(verdict=ALLOW, blobs=staged)
        if method == "VerifyBlobs":
            return hashverify_pb2.VerifyBlobsResponse(verdict=ALLOW)
        if method == "CheckConfig":
            return format_pb2.CheckConfigResponse(verdict=ALLOW)
        if method == "InspectLayers":
            return format_pb2.InspectLayersResponse(verdict=ALLOW)
        raise AssertionError(f"unexpected call {layer}.{method}")

    async def close(self) -> None:
        return None


def _pipeline(
    tmp_path: Path, faults: dict[tuple[str, str], str], database: Database | None = None
) -> Pipeline:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = make_config(tmp_path)
    state = config.state_dir
    staging = StagingStore(state / "staging")
    return Pipeline(
        config,
        FakeLayers(staging, faults),
        DecisionLog(state, database),
        AdmittedStore(state / "admitted"),
        Quarantine(state / "quarantine"),
        staging,
    )


async def test_o03_healthy_fake_allows(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, {})
    result = await pipeline.pull("lab/app", "v1")
    assert result.allowed and result.manifest == MANIFEST
    assert pipeline.admitted.has(DIGEST)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"{s[0]}.{s[1]}")
@pytest.mark.parametrize("fault", FAULTS)
async def test_o03_no_fault_turns_into_allow(
    tmp_path: Path, step: tuple[str, str], fault: str
) -> None:
    pipeline = _pipeline(tmp_path, {step: fault})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed, (step, fault, result.report.as_json())
    assert result.manifest is None
    assert not pipeline.admitted.has(DIGEST)
    assert not pipeline.decisions.blob_admitted("lab/app", _digest(LAYER_BLOB))
    decisions = pipeline.decisions.list_decisions(10)
    assert len(decisions) == 1
    if result.error is not None:
        # No verdict: an outage, retryable, never quarantined.
        assert isinstance(result.error, PullguardError) and decisions[0]["transient"]
        assert decisions[0]["decision"] == "OUTAGE" and decisions[0]["outcome"] == "outage"
        if fault == "layer_failure":
            assert decisions[0]["outage"]["layer"] == step[0]
        assert not pipeline.decisions.list_quarantine()
    else:
        assert decisions[0]["decision"] == "DENY" and decisions[0]["outcome"] == "denied"
        assert decisions[0]["denied_by"], decisions[0]
    # Nothing of the pull is left in staging: it was quarantined or discarded.
    # The pull's session is in this replica's own folder (see Pull.session).
    session = f"{pipeline.config.replica_id}/{result.report.decision_id}"
    assert not pipeline.staging.session_dir(session).exists()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    faults=st.dictionaries(st.sampled_from(STEPS), st.sampled_from(FAULTS), min_size=1, max_size=4),
    run=st.uuids(),
)
async def test_o03_property_combined_faults_never_allow(
    tmp_path: Path, faults: dict[tuple[str, str], str], run: object
) -> None:
    pipeline = _pipeline(tmp_path / str(run), faults)
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed, (faults, result.report.as_json())
    assert not pipeline.admitted.has(DIGEST)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"{s[0]}.{s[1]}")
async def test_layer_failure_is_an_outage_not_a_denial(
    tmp_path: Path, step: tuple[str, str]
) -> None:
    pipeline = _pipeline(tmp_path, {step: "layer_failure"})
    result = await pipeline.pull("lab/app", "v1")
    assert isinstance(result.error, LayerUnavailable), result.report.as_json()
    assert (result.error.http_status, result.error.oci_code) == (503, "UNAVAILABLE")
    assert result.error.retry_after > 0
    report = result.report.as_json()
    assert report["outage"]["kind"] == "layer_unavailable" and report["denied_by"] == ""
    assert not pipeline.decisions.list_quarantine()
    root = pipeline.quarantine.root
    assert not root.exists() or not any(root.iterdir())
