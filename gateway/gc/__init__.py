"""Retention: the garbage collector of the admitted store, and how long records are kept.

One run (:func:`collect`) does three things, each bounded:

- :mod:`.blobs`: mark and sweep of the admitted store, which never races an
  admission (:mod:`.gate`);
- :mod:`.records`: decisions and quarantine entries past ``retention:``
  (``max_age``, ``max_count``); a quarantine entry's files go with it.

``pullguard gc [--dry-run] [-v]`` runs it once (:mod:`.command`); the gateway
runs it every ``retention.gc.interval`` in the background (:mod:`.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.gc.blobs import BlobCollector, BlobSweep
from pullguard.gateway.gc.gate import AdmissionGate
from pullguard.gateway.gc.records import Pruned, prune_decisions, prune_quarantine
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config.retention import Retention

__all__ = ["AdmissionGate", "GcReport", "collect"]


@dataclass
class GcReport:
    dry: bool
    blobs: BlobSweep = field(default_factory=BlobSweep)
    quarantine: Pruned = field(default_factory=Pruned)
    decisions: Pruned = field(default_factory=Pruned)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry,
            "blobs": self.blobs.as_json(),
            "quarantine": self.quarantine.as_json(),
            "decisions": self.decisions.as_json(),
        }


def collect(
    retention: Retention,
    decisions: DecisionLog,
    admitted: AdmittedStore,
    quarantine: Quarantine,
    *,
    dry: bool,
) -> GcReport:
    """One run: quarantine and decisions past retention, then unreferenced blobs.

    Records first: a quarantine entry's decision is named by the entry, so it
    can go only once the entry went.
    """
    report = GcReport(dry=dry)
    report.quarantine = prune_quarantine(
        decisions, quarantine, retention.quarantine, dry=dry, min_age=retention.gc.min_age
    )
    report.decisions = prune_decisions(decisions, retention.decisions, dry=dry)
    collector = BlobCollector(decisions, admitted, min_age=retention.gc.min_age)
    report.blobs = collector.collect(dry=dry)
    return report
