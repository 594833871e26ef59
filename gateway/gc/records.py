"""Retention of decisions and quarantine entries (``retention.decisions`` / ``.quarantine``).

Both are deleted oldest first, in batches of :data:`BATCH` rows, at most
:data:`MAX_PER_RUN` per run (the next run goes on). A quarantine entry's
files go before its row, so that a failure leaves a row to try again, never
files nothing lists. Folders of entries that have no row any more (released
ones, kept for the record, or the files of an entry another replica
deleted) go once they are older than ``max_age``.

The database rows go; the append-only audit log (``audit.jsonl``) keeps
every decision: rotate it with the system's own tools.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.stores import Quarantine
from pullguard.services.runtime.config.retention import Keep

log = logging.getLogger("pullguard.gateway")

BATCH = 500
#: A quarantine entry's folder: its decision id.
ENTRY_NAME = re.compile(r"[0-9a-f]{32}")
MAX_PER_RUN = 1_000_000
#: Items a report lists one by one; past this it only counts.
LISTED = 10_000
#: Files counted when sizing one quarantine entry.
_SIZE_FILES = 100_000


@dataclass
class Pruned:
    """Records removed (or, dry, that would be): how many, how many bytes of files, which."""

    count: int = 0
    bytes: int = 0
    #: (id, time, reference) of the first LISTED.
    items: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, item: tuple[str, str, str], size: int = 0) -> None:
        self.count += 1
        self.bytes += size
        if len(self.items) < LISTED:
            self.items.append(item)

    def as_json(self) -> dict[str, Any]:
        return {
            "removed": self.count,
            "removed_bytes": self.bytes,
            "items": [{"id": i, "time": t, "reference": r} for i, t, r in self.items],
        }


def _cutoff(keep: Keep, now: float) -> str:
    if keep.max_age is None:
        return ""
    moment = dt.datetime.fromtimestamp(now - keep.max_age, dt.UTC)
    return moment.isoformat(timespec="milliseconds")


def prune_decisions(decisions: DecisionLog, keep: Keep, *, dry: bool) -> Pruned:
    """Delete decisions past ``keep`` that nothing names (see decisions.retention)."""
    pruned = Pruned()
    if not keep.limited:
        return pruned
    cutoff = _cutoff(keep, time.time())
    newest = decisions.retention_boundary("decisions", keep.max_count)
    if dry:
        for item in decisions.expired_decisions(cutoff, newest, MAX_PER_RUN):
            pruned.add(item)
        return pruned
    while pruned.count < MAX_PER_RUN:
        batch = decisions.expired_decisions(cutoff, newest, BATCH)
        if not batch:
            break
        gone = decisions.delete_decisions([i for i, _t, _r in batch])
        for item in batch[:gone]:
            pruned.add(item)
        if gone == 0:
            break  # every one became named meanwhile: nothing to gain by asking again
    return pruned


def prune_quarantine(
    decisions: DecisionLog, quarantine: Quarantine, keep: Keep, *, dry: bool, min_age: float
) -> Pruned:
    """Delete quarantine entries past ``keep``, files first; then old folders with no row.

    ``min_age`` also protects row-less folders: an entry being quarantined
    has its folder a moment before its row.
    """
    pruned = Pruned()
    if not keep.limited:
        return pruned
    now = time.time()
    cutoff = _cutoff(keep, now)
    newest = decisions.retention_boundary("quarantine", keep.max_count)
    if dry:
        for item in decisions.expired_quarantine(cutoff, newest, MAX_PER_RUN):
            pruned.add(item, _size(quarantine.entry_dir(item[0])))
    failed: set[str] = set()
    while not dry and pruned.count < MAX_PER_RUN:
        listed = decisions.expired_quarantine(cutoff, newest, BATCH + len(failed))
        batch = [item for item in listed if item[0] not in failed]
        if not batch:
            break
        for item in batch:
            folder = quarantine.entry_dir(item[0])
            size = _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                log.error("gc: quarantine entry %s: %s not removed", item[0], folder)
                failed.add(item[0])
                continue
            decisions.forget_quarantine(item[0])
            pruned.add(item, size)
    if keep.max_age is not None:
        _prune_orphan_folders(decisions, quarantine, now - max(keep.max_age, min_age), dry, pruned)
    return pruned


def _prune_orphan_folders(
    decisions: DecisionLog, quarantine: Quarantine, before: float, dry: bool, pruned: Pruned
) -> None:
    listed = decisions.quarantine_ids()
    with os.scandir(quarantine.root) as entries:
        folders = [e for e in entries if e.is_dir(follow_symlinks=False) and e.name not in listed]
    for entry in folders[:MAX_PER_RUN]:
        if not ENTRY_NAME.fullmatch(entry.name):
            continue  # not an entry's folder: not ours to remove
        try:
            changed = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if changed > before:
            continue
        folder = Path(entry.path)
        size = _size(folder)
        if not dry:
            shutil.rmtree(folder, ignore_errors=True)
        stamp = dt.datetime.fromtimestamp(changed, dt.UTC).isoformat(timespec="milliseconds")
        pruned.add((entry.name, stamp, "(released or without a record)"), size)


def _size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (the first _SIZE_FILES of them)."""
    total = 0
    for count, path in enumerate(folder.rglob("*")):
        if count >= _SIZE_FILES:
            break
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total
