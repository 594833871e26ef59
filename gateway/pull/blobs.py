"""Step 5 of a pull: the fetcher stages the blobs; hashverify, source and format judge them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pullguard.gateway.pull.manifest import JudgedManifest
from pullguard.gateway.pull.one import Pull, StepRefused
from pullguard.gateway.report import Phase
from pullguard.gateway.steps import StepName
from pullguard.v1 import common_pb2, fetcher_pb2, format_pb2, hashverify_pb2, source_pb2


@dataclass
class StagedBlobs:
    """The blobs a manifest lists, and the digest the fetcher computed while writing each.

    Empty for an index: its manifests' blobs are fetched when each is pulled.
    """

    keys: list[str] = field(default_factory=list)
    streamed: dict[str, str] = field(default_factory=dict)


async def stage_and_judge_blobs(pull: Pull, judged: JudgedManifest) -> StagedBlobs:
    summary = judged.summary
    if summary.kind == format_pb2.IMAGE_INDEX:
        return StagedBlobs()
    if summary.kind != format_pb2.IMAGE_MANIFEST:
        pull.fail("format", StepName.MANIFEST, "format: manifest kind not stated")
    plan = pull.plan
    session = pull.session
    deadline = pull.limits.blob_deadline
    blobs = [summary.config, *summary.layers]
    got, ms = await pull.call(
        "fetcher",
        "FetchBlobs",
        fetcher_pb2.FetchBlobsRequest(session=session, plan=plan, blobs=blobs),
        timeout=deadline + 5,
    )
    pull.record_provenance(got.provenance)
    pull.report.mark(Phase.FETCH)
    pull.require("fetcher", StepName.BLOBS, got.verdict, ms)
    # Blob downloads have their own redirects (CDNs): source judges them too.
    hashed, sourced = await asyncio.gather(
        pull.call(
            "hashverify",
            "VerifyBlobs",
            hashverify_pb2.VerifyBlobsRequest(
                session=session, plan=plan, blobs=blobs, provenance=got.provenance
            ),
            timeout=deadline,
        ),
        pull.call(
            "source",
            "CheckSource",
            source_pb2.CheckSourceRequest(
                plan=plan,
                provenance=got.provenance,
                descriptors=blobs,
                stage=source_pb2.CheckSourceRequest.BLOBS,
                manifest_digest=judged.digest,
            ),
        ),
    )
    blobs_ok = pull.judge("hashverify", StepName.BLOBS, hashed.response.verdict, hashed.ms)
    blob_source_ok = pull.judge(
        "source", StepName.BLOB_SOURCE, sourced.response.verdict, sourced.ms
    )
    if not (blobs_ok and blob_source_ok):
        raise StepRefused
    # Decompression only after the compressed digests verified (L-06):
    # heavy processing of unverified bytes is what bombs count on.
    config, layers = await asyncio.gather(
        pull.call(
            "format",
            "CheckConfig",
            format_pb2.CheckConfigRequest(session=session, plan=plan, summary=summary),
        ),
        pull.call(
            "format",
            "InspectLayers",
            format_pb2.InspectLayersRequest(session=session, plan=plan, summary=summary),
            timeout=deadline,
        ),
    )
    config_ok = pull.judge("format", StepName.CONFIG, config.response.verdict, config.ms)
    layers_ok = pull.judge("format", StepName.LAYERS, layers.response.verdict, layers.ms)
    pull.report.layers = [
        {
            "digest": stats.digest,
            "compression": stats.compression,
            "compressed_bytes": stats.compressed_bytes,
            "uncompressed_bytes": stats.uncompressed_bytes,
            "entries": stats.entries,
            "diff_id": stats.diff_id,
            "duration_ms": stats.duration_ms,
        }
        for stats in layers.response.layers
    ]
    pull.report.mark(Phase.VERIFY)
    if not (config_ok and layers_ok):
        raise StepRefused
    return StagedBlobs([b.digest for b in blobs], {b.digest: b.computed_digest for b in got.blobs})


def streamed_verdict(
    digest: str, staged: common_pb2.StagedManifest, blobs: StagedBlobs
) -> common_pb2.Verdict:
    """The gateway's own check that the fetcher streamed exactly the verified digests."""
    verdict = common_pb2.Verdict(decision=common_pb2.ALLOW, layer="gateway")
    claims = [(digest, staged.computed_digest)]
    claims += [(key, blobs.streamed.get(key, "")) for key in blobs.keys]
    for expected, got in claims:
        if got != expected:
            verdict.decision = common_pb2.DENY
            verdict.findings.add(
                code="gateway.staged_digest_mismatch",
                severity=common_pb2.ERROR,
                message=f"got {got or 'no digest'} from the fetcher's stream, expected {expected}",
                evidence={"descriptor": expected, "streamed": got},
            )
    return verdict
