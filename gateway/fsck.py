"""Check (and repair) the state directory: database, audit log, admitted layout, files.

Invariant: served ⇒ recorded ⇒ verified. Every admitted image has a decision
row and an audit line; ``index.json`` names nothing that is not admitted; every
file an admission needs is present and hashes to its name.

:func:`reconcile` runs at every gateway start and fixes what is safe without
hashing: audit lines a crash kept from the log, temporary files, index.json
names with no admission (and admissions index.json lost). :func:`fsck` is
``pullguard fsck``: it also hashes every admitted file, reports damaged,
missing and orphaned files, and with ``repair`` moves damaged files to
``state_dir/damaged/``, withdraws each admission that lost content (so its
next pull fetches and verifies again) and removes orphans.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.stores import AdmittedStore, Reconciled, file_digest
from pullguard.services.runtime.config.database import Database

log = logging.getLogger("pullguard.gateway")


@dataclass
class FsckReport:
    database: list[str] = field(default_factory=lambda: ["ok"])
    #: Decisions whose audit line was missing (appended unless dry).
    unaudited: int = 0
    layout: Reconciled = field(default_factory=Reconciled)
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    #: "repository@digest" of admissions withdrawn because they lost content.
    withdrawn: list[str] = field(default_factory=list)
    checked: int = 0
    repaired: bool = False

    def problems(self) -> int:
        return (
            (self.database != ["ok"])
            + self.unaudited
            + self.layout.problems()
            + len(self.damaged)
            + len(self.missing)
            + len(self.orphaned)
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems()}


def reconcile(decisions: DecisionLog, admitted: AdmittedStore, *, dry: bool = False) -> FsckReport:
    """The start-up pass: audit, temporary files, index.json against the admissions."""
    report = FsckReport()
    if dry:
        report.unaudited = len(decisions.pending_audit())
    else:
        report.unaudited = decisions.flush_audit()
    report.layout = admitted.reconcile(decisions.admission_map(), dry=dry)
    referenced = decisions.referenced_digests()
    report.orphaned = [
        digest or str(path) for digest, path in admitted.files() if digest not in referenced
    ]
    return report


def log_reconciled(report: FsckReport) -> None:
    layout = report.layout
    for text, items in (
        ("audit lines appended after a crash", report.unaudited),
        ("temporary files removed", len(layout.tmp_files)),
        ("index.json names without an admission dropped", len(layout.unadmitted_names)),
        ("admissions index.json lost named again", len(layout.unnamed_admissions)),
        ("admitted files no admission references (run `pullguard fsck`)", len(report.orphaned)),
    ):
        if items:
            log.warning("state: %d %s", items, text)


def fsck(decisions: DecisionLog, admitted: AdmittedStore, *, repair: bool) -> FsckReport:
    """Hash every admitted file and check the database and layout; see the module doc."""
    report = reconcile(decisions, admitted, dry=not repair)
    report.database = decisions.quick_check()
    present = {digest for digest, _path in admitted.files() if digest}
    for digest in sorted(decisions.referenced_digests()):
        if digest not in present:
            report.missing.append(digest)
            continue
        report.checked += 1
        path = admitted.blob_path(digest)
        if file_digest(path, digest.split(":", 1)[0]) != digest:
            report.damaged.append(digest)
    if repair:
        for digest in report.damaged:
            admitted.move_aside(digest)
        for digest in report.damaged + report.missing:
            for repository, manifest in decisions.admissions_needing(digest):
                decisions.revoke(repository, manifest)
                admitted.remove_references(repository, manifest)
                report.withdrawn.append(f"{repository}@{manifest}")
        for digest, path in admitted.files():
            if digest in report.orphaned or str(path) in report.orphaned:
                path.unlink(missing_ok=True)
        report.repaired = True
    return report


def run(state_dir: Path, *, repair: bool, as_json: bool, database: Database | None = None) -> int:
    """``pullguard fsck``: exit 0 clean, 1 problems found (repaired or not), 2 error."""
    decisions = DecisionLog(state_dir, database)
    try:
        report = fsck(decisions, AdmittedStore(state_dir / "admitted"), repair=repair)
    finally:
        decisions.close()
    if as_json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        _print(state_dir, report)
    return 1 if report.problems() else 0


def _print(state_dir: Path, report: FsckReport) -> None:
    layout = report.layout
    done = report.repaired
    print(f"{state_dir}: {report.checked} admitted files hashed, {report.problems()} problems")
    if report.database != ["ok"]:
        print(f"  database: {'; '.join(report.database)}")
    for label, items in (
        ("damaged" + (" (moved to damaged/)" if done else ""), report.damaged),
        ("missing", report.missing),
        ("orphaned" + (" (removed)" if done else ""), report.orphaned),
        ("temporary file" + (" (removed)" if done else ""), layout.tmp_files),
        (
            "index.json name without admission" + (" (dropped)" if done else ""),
            layout.unadmitted_names,
        ),
        ("admission index.json lacks" + (" (named)" if done else ""), layout.unnamed_admissions),
        ("withdrawn (lost content; the next pull verifies again)", report.withdrawn),
    ):
        for item in items:
            print(f"  {label}: {item}")
    if report.unaudited:
        print(
            f"  decisions missing from the audit log: {report.unaudited}"
            + (" (appended)" if done else "")
        )
    if report.problems() and not done:
        print("  run `pullguard fsck --repair` with the gateway stopped to repair")
