"""Step 5 per blob: each blob is judged as soon as it is staged, and fails the whole pull.

The pipeline runs against the healthy fake layers of test_pipeline_faults,
with two layers, and calls that can be held back or refused per blob. What
must hold while blobs run concurrently:

- format never inspects a layer before hashverify allowed its blob and the
  config, and the fetcher's streaming digest of it matched its descriptor
  (L-06: no decompression of unverified bytes);
- one blob's refusal or outage ends every other blob's calls (they are
  cancelled) and the pull is denied or an outage, nothing admitted;
- a layer whose checks finished early does not wait for the other blobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.errors import UpstreamError
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, fetcher_pb2, format_pb2, hashverify_pb2, source_pb2
from tests.gateway.test_pipeline_faults import FakeLayers
from tests.support.configs import make_config

CONFIG = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
LAYERS = [b"first-layer", b"second-layer"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(data: bytes) -> dict[str, Any]:
    return {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": _digest(data),
        "size": len(data),
    }


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [_descriptor(layer) for layer in LAYERS],
    }
).encode()
DIGEST = _digest(MANIFEST)
ALLOW = common_pb2.Verdict(decision=common_pb2.ALLOW)
DENY = common_pb2.Verdict(
    decision=common_pb2.DENY,
    findings=[common_pb2.Finding(code="hash.blob_mismatch", severity=common_pb2.ERROR)],
)


class BlobLayers(FakeLayers):
    """Two layers; per-blob calls, each of which a test can hold or refuse."""

    manifest = MANIFEST
    layers = tuple(LAYERS)

    def __init__(self, staging: StagingStore) -> None:
        super().__init__(staging, {})
        #: (method, digest) -> event the call waits for before answering.
        self.hold: dict[tuple[str, str], asyncio.Event] = {}
        #: (method, digest) of calls that answer DENY / raise an upstream error.
        self.deny: set[tuple[str, str]] = set()
        self.fail: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []
        #: When set, source refuses where the blobs were downloaded from.
        self.deny_blob_source = False
        #: When set, the first layer is listed again with this size.
        self.repeat_with_size = 0
        #: digest -> the digest the fake fetcher says it streamed instead.
        self.streamed_as: dict[str, str] = {}

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Any:
        key = (method, _subject(request))
        self.calls.append(key)
        if key in self.hold:
            try:
                await self.hold[key].wait()
            except asyncio.CancelledError:
                self.cancelled.append(key)
                raise
        if key in self.fail:
            raise UpstreamError("upstream: injected")
        if method == "CheckManifest" and self.repeat_with_size:
            response = await super().call(layer, method, request, timeout)
            response.summary.layers.add(digest=FIRST, size=self.repeat_with_size)
            return response
        if method == "CheckSource" and self.deny_blob_source:
            if request.stage == source_pb2.CheckSourceRequest.BLOBS:
                return source_pb2.CheckSourceResponse(verdict=DENY)
        if method == "FetchBlobs":
            return self._fetch(request)
        if method == "VerifyBlobs":
            verdict = DENY if key in self.deny else ALLOW
            return hashverify_pb2.VerifyBlobsResponse(verdict=verdict)
        if method == "InspectLayers":
            verdict = DENY if key in self.deny else ALLOW
            return format_pb2.InspectLayersResponse(verdict=verdict)
        return await super().call(layer, method, request, timeout)

    def _fetch(self, request: fetcher_pb2.FetchBlobsRequest) -> fetcher_pb2.FetchBlobsResponse:
        by_digest = {_digest(data): data for data in (CONFIG, *LAYERS)}
        staged = []
        for blob in request.blobs:
            data = by_digest[blob.digest]
            with self.staging.writer(request.session) as writer:
                writer.write(data)
                writer.commit(blob.digest)
            staged.append(
                fetcher_pb2.StagedBlob(
                    digest=blob.digest,
                    size=len(data),
                    computed_digest=self.streamed_as.get(blob.digest, blob.digest),
                )
            )
        return fetcher_pb2.FetchBlobsResponse(verdict=ALLOW, blobs=staged)


def _subject(request: Any) -> str:
    """The blob a per-blob call is about ('' for calls about the whole image)."""
    if isinstance(request, fetcher_pb2.FetchBlobsRequest | hashverify_pb2.VerifyBlobsRequest):
        return ",".join(blob.digest for blob in request.blobs)
    if isinstance(request, format_pb2.InspectLayersRequest):
        return ",".join(request.summary.layers[i].digest for i in request.layer_indexes)
    return ""


def _pipeline(tmp_path: Path) -> tuple[Pipeline, BlobLayers]:
    config = make_config(tmp_path)
    state = config.state_dir
    staging = StagingStore(state / "staging")
    layers = BlobLayers(staging)
    pipeline = Pipeline(
        config,
        layers,
        DecisionLog(state),
        AdmittedStore(state / "admitted"),
        Quarantine(state / "quarantine"),
        staging,
    )
    return pipeline, layers


FIRST, SECOND = (_digest(layer) for layer in LAYERS)


async def test_every_blob_verified_and_each_layer_inspected_once(tmp_path: Path) -> None:
    pipeline, layers = _pipeline(tmp_path)
    result = await pipeline.pull("lab/app", "v1")
    assert result.allowed, result.report.as_json()
    assert pipeline.admitted.has(DIGEST)
    for blob in (_digest(CONFIG), FIRST, SECOND):
        assert layers.calls.count(("FetchBlobs", blob)) == 1
        assert layers.calls.count(("VerifyBlobs", blob)) == 1
    assert layers.calls.count(("InspectLayers", FIRST)) == 1
    assert layers.calls.count(("InspectLayers", SECOND)) == 1


def _admitted_nothing(pipeline: Pipeline) -> bool:
    return not any(pipeline.admitted.has(d) for d in (DIGEST, _digest(CONFIG), FIRST, SECOND))


async def test_l06_a_layer_is_inspected_only_after_hashverify_allowed_it(tmp_path: Path) -> None:
    pipeline, layers = _pipeline(tmp_path)
    layers.deny.add(("VerifyBlobs", FIRST))
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed and result.report.denied_by == "hashverify"
    assert ("InspectLayers", FIRST) not in layers.calls
    assert _admitted_nothing(pipeline)


async def test_l06_a_mismatched_stream_is_refused_even_if_hashverify_allowed(
    tmp_path: Path,
) -> None:
    pipeline, layers = _pipeline(tmp_path)
    layers.streamed_as[FIRST] = _digest(b"what the upstream sent instead")
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed and result.report.denied_by == "gateway"
    codes = [finding["code"] for finding in result.report.denial_findings()]
    assert codes == ["gateway.staged_digest_mismatch"]
    assert ("InspectLayers", FIRST) not in layers.calls
    assert _admitted_nothing(pipeline)


async def test_a_layer_is_judged_while_another_blob_still_arrives(tmp_path: Path) -> None:
    pipeline, layers = _pipeline(tmp_path)
    slow = ("FetchBlobs", SECOND)
    layers.hold[slow] = asyncio.Event()
    pull = asyncio.create_task(pipeline.pull("lab/app", "v1"))
    while ("InspectLayers", FIRST) not in layers.calls:
        await asyncio.sleep(0.01)
    assert ("VerifyBlobs", SECOND) not in layers.calls
    layers.hold[slow].set()
    result = await pull
    assert result.allowed, result.report.as_json()


async def test_source_judges_where_the_blobs_came_from(tmp_path: Path) -> None:
    pipeline, layers = _pipeline(tmp_path)
    layers.deny_blob_source = True
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed and result.report.denied_by == "source"
    assert not pipeline.admitted.has(DIGEST)


async def test_f10_a_blob_listed_twice_is_fetched_once_and_each_claim_verified(
    tmp_path: Path,
) -> None:
    pipeline, layers = _pipeline(tmp_path)
    layers.repeat_with_size = len(LAYERS[0]) + 1  # a size hashverify must get to refuse
    await pipeline.pull("lab/app", "v1")
    assert layers.calls.count(("FetchBlobs", FIRST)) == 1
    assert layers.calls.count(("VerifyBlobs", FIRST)) == 2


@pytest.mark.parametrize("refusal", ["deny", "outage"])
async def test_one_blob_failing_cancels_the_others_and_fails_the_pull(
    tmp_path: Path, refusal: str
) -> None:
    pipeline, layers = _pipeline(tmp_path)
    stuck = ("FetchBlobs", SECOND)
    layers.hold[stuck] = asyncio.Event()  # never set: only cancellation ends it
    if refusal == "deny":
        layers.deny.add(("InspectLayers", FIRST))
    else:
        layers.fail.add(("VerifyBlobs", FIRST))
    result = await asyncio.wait_for(pipeline.pull("lab/app", "v1"), 30)
    assert not result.allowed
    assert layers.cancelled == [stuck]
    assert not pipeline.admitted.has(DIGEST)
    decision = pipeline.decisions.list_decisions(1)[0]
    if refusal == "deny":
        assert decision["decision"] == "DENY" and decision["denied_by"] == "format"
    else:
        assert decision["decision"] == "OUTAGE" and isinstance(result.error, UpstreamError)
    # The pull's session is in this replica's own folder (see Pull.session).
    session = f"{pipeline.config.replica_id}/{result.report.decision_id}"
    assert not pipeline.staging.session_dir(session).exists()
