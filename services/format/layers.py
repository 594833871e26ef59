"""Layer inspection: each staged layer as a stream, never extracted (THREATS F).

Called after hashverify has checked every blob's compressed digest, so
nothing is decompressed that the manifest did not name (L-06). For each
layer of an image:

1. the compression the content's magic shows must be the one its media type
   names (L-07b-d, ``format.mediatype_content_mismatch``);
2. the blob is decompressed chunk by chunk (:mod:`decompress`) under three
   caps from the rule: total uncompressed bytes, uncompressed/compressed ratio
   (past :data:`RATIO_FLOOR`), and entries (L-06, ``format.decompression_limit``);
3. the tar headers are read (:mod:`tarstream`) and judged (:mod:`layertree`);
   file contents are skipped;
4. the sha256 of the whole uncompressed stream must equal the config's
   ``rootfs.diff_ids[i]`` (L-07a/e, F-17c, ``format.diffid_mismatch``).

One pass per layer: each compressed byte is read once, gunzipped once, and
each uncompressed byte hashed once (the diff_id) and walked once (the tar
headers), in the same loop.

Why the compressed bytes are not hashed here. Their digest is hashverify's
check, and format must still be sure that the bytes it inspects are the ones
that have that digest. They are, because the gateway asks for an inspection
only after hashverify allowed that blob (and the fetcher's streaming digest
of it matched its descriptor), and hashverify hashed the same staging file
itself. Between its read and format's there is no writer: a
staged key is a file the fetcher wrote to a temporary name and renamed into
place on commit (so a reader sees the whole file or none); no part of
pullguard opens a committed file for writing; the staging session belongs to
this one pull; and the fetcher commits each digest of a FetchBlobs call once,
before the gateway asks hashverify about it. So there is no time-of-check/
time-of-use gap on the staging file within pullguard. Something outside
pullguard writing the staging directory as the services' user could change
the bytes after format's read just as well as before it (up to the admission
rename), so a second hash here would not close that gap either; the size
check below is only a cheap tripwire for a file replaced after hashverify
(``format.staged_size_mismatch``).

Layers are inspected in threads, :data:`PARALLEL_LAYERS` at a time (the
gateway asks for each layer alone, as soon as its blob verified); zlib, zstd
and hashlib release the GIL on large buffers, so two layers use two cores. In
each, the diff_id hash runs in a worker thread of its own (:class:`_HashAside`)
while the next chunks are decompressed and walked: one large layer uses two
cores too.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pullguard.services.format.decompress import (
    SNIFF_BYTES,
    CompressedSource,
    CompressionError,
    sniff,
    uncompressed_chunks,
)
from pullguard.services.format.descriptors import Descriptor
from pullguard.services.format.inventory import InventoryCollector
from pullguard.services.format.jsonstrict import StrictJsonError, loads_strict
from pullguard.services.format.layertree import FindingSink, LayerTree
from pullguard.services.format.manifest import LAYER, bounded_verdict, read_staged
from pullguard.services.format.mediatypes import IMAGE_CONFIG_TYPES, LAYER_COMPRESSION, OCI_EMPTY
from pullguard.services.format.tarstream import ContentSink, TarEntry, TarError, TarReader
from pullguard.services.runtime.config import LayerRule, Limits
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.findings import Finding, Severity, Verdict
from pullguard.services.runtime.inventory import LayerInventory
from pullguard.services.runtime.staging import StagingStore

#: Layers inspected at once for one image.
PARALLEL_LAYERS = 2
#: Uncompressed chunks waiting for the diff_id hash at most (each at most 1 MiB).
HASH_QUEUE = 4
#: The ratio cap applies only past this much output: a small layer cannot be a bomb.
RATIO_FLOOR = 16 * 1024 * 1024


class InspectionCancelled(Exception):
    """The caller gave up (its RPC was cancelled); no verdict is produced."""


@dataclass
class LayerStats:
    """What inspecting one layer found out, for the report."""

    index: int
    digest: str
    media_type: str
    compression: str = ""
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    entries: int = 0
    #: Digest of the uncompressed stream; set only when it was read to the end.
    diff_id: str = ""
    seconds: float = 0.0
    #: True when the whole layer was read and judged.
    completed: bool = False
    #: The layer's package databases, when the rule asks for an inventory.
    inventory: LayerInventory | None = None


@dataclass
class LayersResult:
    verdict: Verdict
    layers: list[LayerStats] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    index: int
    layer: Descriptor
    diff_id: str | None


def inspect_layers(
    staging_store: StagingStore,
    session: str,
    config: Descriptor | None,
    layers: Sequence[Descriptor],
    rule: LayerRule,
    limits: Limits,
    *,
    artifact_type: str = "",
    artifact_types: Sequence[str] = (),
    cancel: threading.Event | None = None,
    only: Sequence[int] | None = None,
) -> LayersResult:
    """Inspect the staged ``layers`` of an image whose config is ``config``.

    With ``only``, just those indexes of ``layers`` are inspected (the
    config's diff_ids are still matched with all of them).
    """
    if not rule.inspect:
        note = Finding.info("format.layers_not_inspected", "layer inspection is off for this rule")
        return LayersResult(Verdict.of(LAYER, [note]))
    if config is None or config.media_type not in IMAGE_CONFIG_TYPES:
        return LayersResult(
            Verdict.of(LAYER, [_not_an_image(config, artifact_type, artifact_types)])
        )
    findings: list[Finding] = []
    diff_ids = _diff_ids(staging_store, session, config, len(layers), limits, findings)
    indexes = range(len(layers)) if only is None else only
    jobs = [_Job(i, layers[i], diff_ids[i] if diff_ids else None) for i in indexes]
    cancel = cancel or threading.Event()
    with ThreadPoolExecutor(PARALLEL_LAYERS, thread_name_prefix="inspect") as pool:
        futures = [
            pool.submit(
                inspect_layer,
                staging_store,
                session,
                job.index,
                job.layer,
                job.diff_id,
                rule,
                cancel,
            )
            for job in jobs
        ]
        try:
            results = [future.result() for future in futures]
        finally:
            # A failure in one layer stops the others at their next chunk.
            cancel.set()
    stats: list[LayerStats] = []
    for layer_findings, layer_stats in results:
        findings.extend(layer_findings)
        stats.append(layer_stats)
    return LayersResult(bounded_verdict(findings), stats)


def _not_an_image(config: Descriptor | None, artifact_type: str, allowed: Sequence[str]) -> Finding:
    """Artifacts the rule admits have no image layers to inspect; anything
    else without an image config was refused by CheckManifest already."""
    config_type = config.media_type if config is not None else ""
    if artifact_type:
        admitted = artifact_type in allowed
    else:
        admitted = config_type != OCI_EMPTY and config_type in allowed
    if admitted:
        return Finding.info(
            "format.layers_not_inspected",
            f"artifact {artifact_type or config_type}: its layers are not image layers",
        )
    return Finding.error(
        "format.artifact_not_allowed",
        f"got config mediaType {config_type[:100] or '(none)'}, expected an image config",
    )


def _diff_ids(
    staging_store: StagingStore,
    session: str,
    config: Descriptor,
    layer_count: int,
    limits: Limits,
    findings: list[Finding],
) -> list[str] | None:
    """The config's diff_ids, one per layer, or ``None`` with a finding."""
    data = read_staged(staging_store, session, config.digest, limits.config_bytes)
    try:
        document: Any = loads_strict(data, limits.config_bytes)
        diff_ids = document["rootfs"]["diff_ids"]
    except (StrictJsonError, TypeError, KeyError):
        diff_ids = None
    if (
        not isinstance(diff_ids, list)
        or len(diff_ids) != layer_count
        or not all(isinstance(d, str) and _parses(d) for d in diff_ids)
    ):
        findings.append(
            Finding.error(
                "format.config_mismatch",
                "config rootfs.diff_ids cannot be matched with the layers",
            )
        )
        return None
    return diff_ids


def _parses(digest: str) -> bool:
    try:
        parse_digest(digest)
    except DigestSyntaxError:
        return False
    return True


def inspect_layer(
    staging_store: StagingStore,
    session: str,
    index: int,
    layer: Descriptor,
    diff_id: str | None,
    rule: LayerRule,
    cancel: threading.Event,
) -> tuple[list[Finding], LayerStats]:
    """Inspect one staged layer; ``diff_id`` is what the config says its
    uncompressed content hashes to (``None``: not compared)."""
    started = time.monotonic()
    stats = LayerStats(index, layer.digest, layer.media_type)
    sink = FindingSink(layer.digest, index)
    try:
        _inspect(staging_store, session, index, layer, diff_id, rule, cancel, sink, stats)
    finally:
        stats.seconds = time.monotonic() - started
    return sink.findings(), stats


def _inspect(
    staging_store: StagingStore,
    session: str,
    index: int,
    layer: Descriptor,
    diff_id: str | None,
    rule: LayerRule,
    cancel: threading.Event,
    sink: FindingSink,
    stats: LayerStats,
) -> None:
    expected = LAYER_COMPRESSION.get(layer.media_type)
    if expected is None:
        sink.add(
            "format.layer_not_inspectable",
            Severity.ERROR,
            f"got {layer.media_type[:100]}, which is not a tar layer type;"
            " turn layer inspection off for this rule to admit it",
        )
        return
    with staging_store.open(session, layer.digest) as handle:
        stats.compressed_bytes = os.fstat(handle.fileno()).st_size
        if stats.compressed_bytes != layer.size:
            sink.add(
                "format.staged_size_mismatch",
                Severity.ERROR,
                f"staged blob has {stats.compressed_bytes} bytes, descriptor says {layer.size}",
            )
            return
        stats.compression = sniff(handle.read(SNIFF_BYTES))
        handle.seek(0)
        if stats.compression != expected:
            sink.add(
                "format.mediatype_content_mismatch",
                Severity.ERROR,
                f"content is {stats.compression}, media type {layer.media_type} says {expected}",
            )
            return
        _read_layer(handle, index, layer, diff_id, rule, cancel, sink, stats)


def _read_layer(
    handle: Any,
    index: int,
    layer: Descriptor,
    diff_id: str | None,
    rule: LayerRule,
    cancel: threading.Event,
    sink: FindingSink,
    stats: LayerStats,
) -> None:
    diff_algorithm = parse_digest(diff_id)[0] if diff_id else "sha256"
    source = CompressedSource(handle)
    with _HashAside(diff_algorithm) as uncompressed:
        tree = LayerTree(
            sink, deny_setuid=rule.setuid != "report", deny_devices=rule.devices != "report"
        )
        on_entry: Callable[[TarEntry], ContentSink | None] = tree.add
        if rule.inventory:
            # Same pass: the collector sees each header after the tree judged
            # it and takes the content of package databases only.
            collector = InventoryCollector(index, sink)
            stats.inventory = collector.inventory

            def on_entry(entry: TarEntry) -> ContentSink | None:
                tree.add(entry)
                return collector.offer(entry)

        reader = TarReader(on_entry, max_entry_size=rule.max_uncompressed_bytes)
        ratio_cap = rule.max_ratio * max(stats.compressed_bytes, 1)
        try:
            for chunk in uncompressed_chunks(source, stats.compression):
                if cancel.is_set():
                    raise InspectionCancelled(f"layers[{index}]")
                stats.uncompressed_bytes += len(chunk)
                total = stats.uncompressed_bytes
                if total > rule.max_uncompressed_bytes:
                    raise TarError(
                        "format.decompression_limit",
                        f"more than {rule.max_uncompressed_bytes} bytes uncompressed",
                        total,
                    )
                if stats.compression != "none" and total > max(ratio_cap, RATIO_FLOOR):
                    raise TarError(
                        "format.decompression_limit",
                        f"expands more than {rule.max_ratio} times"
                        f" ({stats.compressed_bytes} bytes compressed)",
                        total,
                    )
                uncompressed.update(chunk)
                reader.feed(chunk)
                stats.entries = reader.entries
                if reader.entries > rule.max_entries:
                    raise TarError(
                        "format.decompression_limit",
                        f"more than {rule.max_entries} entries",
                        total,
                    )
                if sink.full:
                    return
            reader.close()
        except TarError as exc:
            sink.add(exc.code, Severity.ERROR, exc.message, offset=exc.offset)
            return
        except CompressionError as exc:
            sink.add(exc.code, Severity.ERROR, exc.message)
            return
        stats.entries = reader.entries
        stats.completed = True
        stats.diff_id = f"{diff_algorithm}:{uncompressed.hexdigest()}"
        if diff_id is not None and stats.diff_id != diff_id:
            sink.add(
                "format.diffid_mismatch",
                Severity.ERROR,
                f"uncompressed content is {stats.diff_id}, config diff_ids[{index}] says {diff_id}",
                diff_id=stats.diff_id,
            )


class _HashAside:
    """The diff_id hash, computed in a worker thread while the caller decompresses
    and walks the next chunks, so one large layer uses two cores (hashlib
    releases the GIL). The worker hashes the chunks in order; at most
    :data:`HASH_QUEUE` wait for it, so memory stays bounded."""

    def __init__(self, algorithm: str) -> None:
        self._hasher = hashlib.new(algorithm)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="diff-id")
        self._queued: deque[Future[None]] = deque()

    def update(self, chunk: bytes) -> None:
        if len(self._queued) >= HASH_QUEUE:
            self._queued.popleft().result()
        self._queued.append(self._worker.submit(self._hasher.update, chunk))

    def hexdigest(self) -> str:
        while self._queued:
            self._queued.popleft().result()
        return self._hasher.hexdigest()

    def __enter__(self) -> _HashAside:
        return self

    def __exit__(self, *exc: object) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
