"""Step 5 of a pull: the fetcher stages the blobs; hashverify, source and format judge them.

Each blob is judged as soon as it is staged (see :class:`_BlobFlow`).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from pullguard.gateway.pull.manifest import JudgedManifest
from pullguard.gateway.pull.one import Pull, StepRefused
from pullguard.gateway.report import Phase
from pullguard.gateway.steps import StepName
from pullguard.services.runtime.protoconv import inventory_from_proto
from pullguard.services.runtime.staging import FileStamp
from pullguard.v1 import (
    common_pb2,
    fetcher_pb2,
    format_pb2,
    hashverify_pb2,
    inventory_pb2,
    source_pb2,
)

#: Blobs of one pull fetched at once (as many as one FetchBlobs call fetched before).
PARALLEL_FETCHES = 4
#: Layers of one pull inspected at once (format inspected two at a time before).
PARALLEL_INSPECTIONS = 2
#: What a descriptor claims about a blob: digest, size and media type.
Claim = tuple[str, int, str]


@dataclass
class StagedBlobs:
    """The blobs a manifest lists, and the digest the fetcher computed while writing each.

    Empty for an index: its manifests' blobs are fetched when each is pulled.
    """

    keys: list[str] = field(default_factory=list)
    streamed: dict[str, str] = field(default_factory=dict)
    #: Each layer's package databases, by layer index (when the plan asked).
    inventories: dict[int, inventory_pb2.LayerInventory] = field(default_factory=dict)
    #: The staged file hashverify hashed for a digest, as it found it (see FileStamp).
    stamps: dict[str, FileStamp] = field(default_factory=dict)


async def stage_and_judge_blobs(pull: Pull, judged: JudgedManifest) -> StagedBlobs:
    summary = judged.summary
    if summary.kind == format_pb2.IMAGE_INDEX:
        return StagedBlobs()
    if summary.kind != format_pb2.IMAGE_MANIFEST:
        pull.fail("format", StepName.MANIFEST, "format: manifest kind not stated")
    return await _BlobFlow(pull, judged).run()


class _BlobFlow:
    """Each blob on its own path: fetched, verified by hashverify, then judged by format.

    A blob's checks start as soon as that blob is staged, not when every blob
    is: hashverify hashes it (itself, from staging) while other blobs still
    arrive, and format inspects a layer once hashverify allowed it and the
    config, and the fetcher's streaming digest of it matched (decompression
    only after the compressed digest verified, L-06).
    Any refusal, error or outage ends every other blob's path at once and
    fails the whole pull: nothing is admitted unless every path allowed.
    """

    def __init__(self, pull: Pull, judged: JudgedManifest) -> None:
        self.pull = pull
        self.judged = judged
        self.summary = judged.summary
        self.deadline = pull.limits.blob_deadline
        self.blobs = [self.summary.config, *self.summary.layers]
        #: A digest is fetched once (its staging file is written once); every
        #: distinct descriptor of it is verified (a size may lie, F-10).
        self.fetched: dict[str, asyncio.Task[common_pb2.Provenance]] = {}
        self.verified: dict[Claim, asyncio.Task[None]] = {}
        self.streamed: dict[str, str] = {}
        #: None for a digest whose verifications saw different files.
        self.stamps: dict[str, FileStamp | None] = {}
        self.provenance = common_pb2.Provenance()
        #: Layer statistics for the report, by layer index.
        self.inspected: dict[int, list[dict[str, Any]]] = {}
        self.inventories: dict[int, inventory_pb2.LayerInventory] = {}
        self.fetches = asyncio.Semaphore(PARALLEL_FETCHES)
        self.inspections = asyncio.Semaphore(PARALLEL_INSPECTIONS)

    async def run(self) -> StagedBlobs:
        summary = self.summary
        try:
            async with asyncio.TaskGroup() as group:
                for blob in self.blobs:
                    if blob.digest not in self.fetched:
                        self.fetched[blob.digest] = group.create_task(self._fetch(blob))
                    if _claim(blob) not in self.verified:
                        self.verified[_claim(blob)] = group.create_task(self._verify(blob))
                group.create_task(self._config())
                group.create_task(self._source())
                for index, layer in enumerate(summary.layers):
                    group.create_task(self._layer(index, layer))
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        self.pull.report.mark(Phase.VERIFY)
        stamps = {digest: stamp for digest, stamp in self.stamps.items() if stamp is not None}
        return StagedBlobs([b.digest for b in self.blobs], self.streamed, self.inventories, stamps)

    async def _source(self) -> None:
        """Blob downloads have their own redirects (CDNs): source judges them too,
        once every blob is staged, while the blobs are still being verified."""
        pull = self.pull
        for fetched in list(self.fetched.values()):
            await fetched
        pull.report.mark(Phase.FETCH)
        sourced = await pull.call(
            "source",
            "CheckSource",
            source_pb2.CheckSourceRequest(
                plan=pull.plan,
                provenance=self.provenance,
                descriptors=self.blobs,
                stage=source_pb2.CheckSourceRequest.BLOBS,
                manifest_digest=self.judged.digest,
            ),
        )
        pull.require("source", StepName.BLOB_SOURCE, sourced.response.verdict, sourced.ms)

    async def _fetch(self, blob: common_pb2.Descriptor) -> common_pb2.Provenance:
        """Stage one blob; the fetcher's records of its download are returned."""
        pull = self.pull
        async with self.fetches:
            got = await pull.call(
                "fetcher",
                "FetchBlobs",
                fetcher_pb2.FetchBlobsRequest(session=pull.session, plan=pull.plan, blobs=[blob]),
                timeout=self.deadline + 5,
            )
        provenance: common_pb2.Provenance = got.response.provenance
        pull.record_provenance(provenance)
        self.provenance.exchanges.extend(provenance.exchanges)
        pull.require("fetcher", StepName.BLOBS, got.response.verdict, got.ms)
        self.streamed.update({b.digest: b.computed_digest for b in got.response.blobs})
        return provenance

    async def _verify(self, blob: common_pb2.Descriptor) -> None:
        """hashverify hashes the staged blob against this descriptor's claims."""
        pull = self.pull
        provenance = await self.fetched[blob.digest]
        hashed = await pull.call(
            "hashverify",
            "VerifyBlobs",
            hashverify_pb2.VerifyBlobsRequest(
                session=pull.session, plan=pull.plan, blobs=[blob], provenance=provenance
            ),
            timeout=self.deadline,
        )
        pull.require("hashverify", StepName.BLOBS, hashed.response.verdict, hashed.ms)
        stamped = {s.digest: s for s in hashed.response.stamps}.get(blob.digest)
        stamp = _file_stamp(stamped) if stamped is not None else None
        earlier = self.stamps.get(blob.digest, stamp)
        self.stamps[blob.digest] = stamp if earlier == stamp else None

    async def _verified_intact(self, blob: common_pb2.Descriptor) -> None:
        """Return once hashverify allowed ``blob`` and the fetcher's streaming digest
        of it is the descriptor's digest: two independent checks of the
        compressed digest before format decompresses it (L-06).

        The second costs nothing (the fetcher hashed the bytes as it wrote
        them) and keeps a blob streamed under another digest from being
        decompressed even if hashverify allowed it: the pull is refused here
        (``gateway.staged_digest_mismatch``, as the admission would refuse it).
        Inspecting on the streaming digest alone, at the same time as
        hashverify, was measured for issue 9 and gained nothing on two CPUs.
        """
        await self.verified[_claim(blob)]
        streamed = self.streamed.get(blob.digest, "")
        if streamed != blob.digest:
            refused = _streamed_verdict([(blob.digest, streamed)])
            self.pull.require("gateway", StepName.STAGED_DIGESTS, refused, 0.0)

    async def _config(self) -> None:
        pull = self.pull
        await self.verified[_claim(self.summary.config)]
        config = await pull.call(
            "format",
            "CheckConfig",
            format_pb2.CheckConfigRequest(
                session=pull.session, plan=pull.plan, summary=self.summary
            ),
        )
        pull.require("format", StepName.CONFIG, config.response.verdict, config.ms)

    async def _layer(self, index: int, layer: common_pb2.Descriptor) -> None:
        """Inspect one layer once its blob and the config (its diff_ids) verified."""
        pull = self.pull
        await self.verified[_claim(self.summary.config)]
        await self._verified_intact(layer)
        async with self.inspections:
            inspected = await pull.call(
                "format",
                "InspectLayers",
                format_pb2.InspectLayersRequest(
                    session=pull.session,
                    plan=pull.plan,
                    summary=self.summary,
                    layer_indexes=[index],
                ),
                timeout=self.deadline,
            )
        self.inspected[index] = [
            {
                "digest": stats.digest,
                "compression": stats.compression,
                "compressed_bytes": stats.compressed_bytes,
                "uncompressed_bytes": stats.uncompressed_bytes,
                "entries": stats.entries,
                "diff_id": stats.diff_id,
                "duration_ms": stats.duration_ms,
                **_inventory_json(stats),
            }
            for stats in inspected.response.layers
        ]
        # Only what format read: a layer it answered without an inventory (a
        # replica that ignores the plan's flag) is unknown, not empty.
        self.inventories.update(
            {s.index: s.inventory for s in inspected.response.layers if s.HasField("inventory")}
        )
        pull.report.layers = [entry for i in sorted(self.inspected) for entry in self.inspected[i]]
        pull.require("format", StepName.LAYERS, inspected.response.verdict, inspected.ms)


def _inventory_json(stats: format_pb2.LayerStats) -> dict[str, Any]:
    """The layer's package inventory for the report, when the plan asked for one."""
    if not stats.HasField("inventory"):
        return {}
    return {"inventory": asdict(inventory_from_proto(stats.inventory))}


def _file_stamp(stamp: hashverify_pb2.FileStamp) -> FileStamp:
    return FileStamp(stamp.device, stamp.inode, stamp.size, stamp.mtime_ns, stamp.ctime_ns)


def _claim(blob: common_pb2.Descriptor) -> Claim:
    return (blob.digest, blob.size, blob.media_type)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The exception that failed the pull, for the pipeline's usual handling.

    An outage or an unforeseen error outranks a refusal: the refusal may only
    be the consequence of another path's failure.
    """
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for error in leaves:
        if not isinstance(error, StepRefused):
            return error
    return leaves[0]


def streamed_verdict(
    digest: str, staged: common_pb2.StagedManifest, blobs: StagedBlobs
) -> common_pb2.Verdict:
    """The gateway's own check that the fetcher streamed exactly the verified digests."""
    claims = [(digest, staged.computed_digest)]
    claims += [(key, blobs.streamed.get(key, "")) for key in blobs.keys]
    return _streamed_verdict(claims)


def _streamed_verdict(claims: list[tuple[str, str]]) -> common_pb2.Verdict:
    """DENY for each (expected, streamed) digest pair that differs; else ALLOW."""
    verdict = common_pb2.Verdict(decision=common_pb2.ALLOW, layer="gateway")
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
