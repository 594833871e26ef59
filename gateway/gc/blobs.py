"""Mark and sweep of the admitted store: remove the files no admitted manifest needs.

*Mark*: every digest the database says an admission needs (each admitted
manifest and the blobs it lists, in every repository) plus every digest
``index.json`` names is live; every other well-named file under ``blobs/``
is a candidate. That covers the blobs of revoked images, which the
revocation stopped serving but left on disk, and the leftovers of
admissions that failed after moving content in. A blob two images share
stays while either is admitted.

*Sweep*, stripe by stripe (see :mod:`.gate`): under the stripe's exclusive
lock the candidates' references are read again and their age checked
again, and only what is still unreferenced is unlinked. The lock keeps out
an admission that is between moving blobs in and committing them; the
second look catches an admission that committed since the mark. Files
written less than ``min_age`` ago are spared besides (a writer that takes no lock,
such as an older gateway during a rolling upgrade).

Misnamed files and ``damaged/`` are ``pullguard fsck``'s, and staging
belongs to each replica: neither is touched here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.gc.gate import AdmissionGate, stripe_of
from pullguard.gateway.stores import AdmittedStore

log = logging.getLogger("pullguard.gateway")

#: Candidates re-checked and unlinked per lock hold.
BATCH = 256
#: Seconds the sweep waits for one stripe before deferring it to the next run.
STRIPE_WAIT = 5.0


@dataclass
class BlobSweep:
    """What one run did to the admitted store (or, dry, would do)."""

    #: (digest, bytes) removed, or that a dry run would remove.
    removed: list[tuple[str, int]] = field(default_factory=list)
    #: Unreferenced but younger than min_age: kept this time.
    young: int = 0
    #: Unreferenced, but their stripe was held by admissions past STRIPE_WAIT: next run.
    deferred: int = 0
    deferred_items: list[str] = field(default_factory=list)
    #: Files that an admission needed (at the mark or under the lock).
    live: int = 0

    @property
    def removed_bytes(self) -> int:
        return sum(size for _digest, size in self.removed)

    def as_json(self) -> dict[str, Any]:
        return {
            "removed": len(self.removed),
            "removed_bytes": self.removed_bytes,
            "young": self.young,
            "deferred": self.deferred,
            "live": self.live,
            "items": [{"digest": d, "bytes": s} for d, s in self.removed],
        }


def _written_at(stat: os.stat_result) -> float:
    # The rename into the store keeps the time the fetcher wrote the bytes:
    # content of a pull in flight is always recent.
    return stat.st_mtime


def named_in_index(admitted: AdmittedStore) -> set[str]:
    """Digests index.json names (a subset of the admissions, unless a crash came between)."""
    try:
        index = json.loads((admitted.root / "index.json").read_bytes())
    except (OSError, ValueError):
        return set()
    return {str(m.get("digest", "")) for m in index.get("manifests", []) if isinstance(m, dict)}


class BlobCollector:
    """Mark and sweep over one admitted store, against the admissions in ``decisions``."""

    def __init__(
        self,
        decisions: DecisionLog,
        admitted: AdmittedStore,
        *,
        min_age: float,
        gate: AdmissionGate | None = None,
        stripe_wait: float = STRIPE_WAIT,
    ) -> None:
        self.decisions = decisions
        self.admitted = admitted
        self.min_age = min_age
        self.stripe_wait = stripe_wait
        self.gate = gate if gate is not None else AdmissionGate(admitted.root)

    def mark(self, sweep: BlobSweep) -> dict[str, list[str]]:
        """Unreferenced digests present in the store, by stripe (live ones are counted)."""
        live = self.decisions.referenced_digests() | named_in_index(self.admitted)
        candidates: dict[str, list[str]] = {}
        for digest, _path in self.admitted.files():
            if not digest:
                continue
            if digest in live:
                sweep.live += 1
                continue
            candidates.setdefault(stripe_of(digest), []).append(digest)
        return candidates

    def collect(self, *, dry: bool) -> BlobSweep:
        """One mark and one sweep; ``dry`` only reports what the sweep would remove."""
        sweep = BlobSweep()
        self.sweep(self.mark(sweep), sweep, dry=dry)
        return sweep

    def sweep(self, candidates: dict[str, list[str]], sweep: BlobSweep, *, dry: bool) -> None:
        """Remove the candidates still unreferenced, a locked stripe and a batch at a time."""
        for stripe in sorted(candidates):
            for batch in _batches(candidates[stripe], BATCH):
                if dry:
                    self._remove_unreferenced(batch, sweep, dry=True)
                    continue
                with self.gate.collecting(stripe, self.stripe_wait) as locked:
                    if not locked:
                        log.info("gc: stripe %s busy with admissions: next run", stripe)
                        sweep.deferred += len(batch)
                        sweep.deferred_items.extend(batch)
                        continue
                    self._remove_unreferenced(batch, sweep, dry=False)

    def _remove_unreferenced(self, batch: list[str], sweep: BlobSweep, *, dry: bool) -> None:
        """Under the stripe's lock: look again, then unlink what is still garbage."""
        referenced = self.decisions.referenced_among(batch)
        cutoff = time.time() - self.min_age
        for digest in batch:
            if digest in referenced:
                sweep.live += 1
                continue
            path: Path = self.admitted.blob_path(digest)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if _written_at(stat) > cutoff:
                sweep.young += 1
                continue
            if not dry:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
            sweep.removed.append((digest, stat.st_size))


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
