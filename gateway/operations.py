"""What an operator does to the quarantine and the admissions, whoever asks.

The gRPC ``Gateway`` service, the console's JSON API and its HTML forms
all call these, so there is one release path, one delete and one
re-evaluation, each recording the operator the caller's token names (the
caller authorises first; see :mod:`pullguard.gateway.auth.tokens`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.release import ReleaseRefused, check_reason, plan_release
from pullguard.gateway.report import now
from pullguard.gateway.stores import Quarantine
from pullguard.services.runtime.errors import NotFound, StagingError

if TYPE_CHECKING:
    from pullguard.gateway.pull import Pipeline


def quarantine_report(quarantine: Quarantine, entry_id: str) -> dict[str, Any]:
    """A quarantine entry's report; NotFound when there is none (or the id is malformed)."""
    try:
        text = quarantine.report(entry_id)
    except StagingError as exc:
        raise NotFound(exc.message, oci_code="NOT_FOUND") from None
    try:
        report: dict[str, Any] = json.loads(text)
    except ValueError:
        raise ReleaseRefused(f"quarantine entry {entry_id}: report.json is unreadable") from None
    return report


async def release_entry(
    pipeline: Pipeline,
    decisions: DecisionLog,
    quarantine: Quarantine,
    entry_id: str,
    reason: str,
    operator: str,
) -> dict[str, Any]:
    """Release an open quarantine entry: verify it again with its findings waived.

    Returns the new decision's report; when it passes, the entry is marked
    released and leaves the open quarantine. Raises NotFound, ReleaseRefused
    (not waivable) or InvalidRequest (no reason).
    """
    reason = check_reason(reason)
    if not decisions.is_quarantined(entry_id):
        raise NotFound(f"no open quarantine entry {entry_id[:80]!r}", oci_code="NOT_FOUND")
    plan = plan_release(entry_id, quarantine_report(quarantine, entry_id))
    result = await pipeline.release(plan, reason, operator)
    report = result.report.as_json()
    if result.allowed:
        quarantine.mark_released(entry_id, report)
        decisions.forget_quarantine(entry_id)
    return report


def delete_entry(decisions: DecisionLog, quarantine: Quarantine, entry_id: str) -> None:
    """Delete a quarantine entry's content and report; NotFound when there is none."""
    try:
        present = quarantine.entry_dir(entry_id).is_dir()
    except StagingError as exc:
        raise NotFound(exc.message, oci_code="NOT_FOUND") from None
    if not present:
        raise NotFound(f"no quarantine entry {entry_id}", oci_code="NOT_FOUND")
    quarantine.delete(entry_id)
    decisions.forget_quarantine(entry_id)


async def run_reevaluation(
    pipeline: Pipeline, decisions: DecisionLog, operator: str, *, force: bool, limit: int
) -> dict[str, Any]:
    """Verify every admitted image again, and record the run (who, when, each outcome)."""
    started = now()
    outcomes = await pipeline.reevaluate(force=force, limit=limit)
    images = [asdict(outcome) for outcome in outcomes]
    run_id = uuid.uuid4().hex
    decisions.record_reevaluation(run_id, started, operator, force, images)
    return {
        "run_id": run_id,
        "time": started,
        "operator": operator,
        "force": force,
        "images": images,
    }
