"""``pullguard gc [--dry-run] [-v] [--json]``: one retention run, beside a running gateway.

Safe while the gateway serves: the blob sweep takes the same locks as
admissions (see :mod:`.gate`), and records are deleted in short batches.
Exit status: 0 done (or nothing to do), 2 error.
"""

from __future__ import annotations

import json

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.gc import GcReport, collect
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config import Config


def run(config: Config, *, dry: bool, verbose: bool, as_json: bool) -> int:
    state = config.state_dir
    decisions = DecisionLog(state, config.database)
    try:
        report = collect(
            config.retention,
            decisions,
            AdmittedStore(state / "admitted"),
            Quarantine(state / "quarantine"),
            dry=dry,
        )
    finally:
        decisions.close()
    if as_json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        print_report(report, verbose=verbose)
    return 0


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"


def print_report(report: GcReport, *, verbose: bool) -> None:
    verb = "would remove" if report.dry else "removed"
    blobs = report.blobs
    print(
        f"blobs: {verb} {len(blobs.removed)} ({_bytes(blobs.removed_bytes)});"
        f" {blobs.live} in use, {blobs.young} younger than min_age,"
        f" {blobs.deferred} deferred (admissions in progress)"
    )
    if verbose:
        for digest, size in blobs.removed:
            print(f"  blob {digest} {size}")
    for label, pruned in (
        ("quarantine entries", report.quarantine),
        ("decisions", report.decisions),
    ):
        sized = f" ({_bytes(pruned.bytes)})" if label.startswith("quarantine") else ""
        print(f"{label}: {verb} {pruned.count}{sized}")
        if verbose:
            for item_id, time, reference in pruned.items:
                print(f"  {item_id} {time} {reference}")
            if pruned.count > len(pruned.items):
                print(f"  ... and {pruned.count - len(pruned.items)} more")
