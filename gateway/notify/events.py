"""The events: which ones a decision gives, and their JSON body (schema ``pullguard.event/v1``).

Every event body has the same keys, so a receiver can read each with one
schema (a key that does not apply is ``""`` or ``[]``):

- ``schema``: ``"pullguard.event/v1"``;
- ``event``: ``deny``, ``quarantine``, ``release``, ``revoke`` or ``moved_tag``;
- ``id``: unique per event, the same on every retry: receivers drop repeats by it;
- ``time``: when the event happened (UTC, ISO 8601);
- ``decision``: the decision id (``pullguard decisions``, the console);
- ``reference``, ``repository``, ``digest``; ``previous_digest`` (moved_tag:
  the digest the tag named before);
- ``outcome``: ``allowed``, ``denied`` or ``revoked``; ``layer``: the deciding
  layer; ``reason``; ``findings``: the deciding layer's blocking finding codes;
- ``operator``, ``release_reason``: who released the image and why (release);
- ``replica``: the gateway replica that decided.

A quarantined denial gives both ``deny`` and ``quarantine`` (same decision
id, different event ids); a revocation gives ``revoke`` besides the
re-evaluation's ``deny``. Bodies carry no secret: only what a decision report shows.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pullguard.services.runtime.findings import blocks

SCHEMA = "pullguard.event/v1"
#: Report text is cut to this many characters in an event.
MAX_TEXT = 1000
MAX_FINDINGS = 50


@dataclass(frozen=True)
class Event:
    """One event, its body already the exact bytes every receiver gets (and signs)."""

    id: str
    kind: str
    body: bytes


@dataclass(frozen=True)
class DecisionFacts:
    """What the decision tables know beside the report when the verdict is recorded."""

    quarantined: bool = False
    #: The digest the tag named before, when this decision moved it (moved_tag).
    previous_digest: str = ""


def decision_events(report: Mapping[str, Any], facts: DecisionFacts, replica: str) -> list[Event]:
    """The events one recorded decision gives (an outage gives none)."""
    decision = report.get("decision")
    kinds: list[str] = []
    if decision == "DENY":
        kinds.append("deny")
        if facts.quarantined:
            kinds.append("quarantine")
    elif decision == "ALLOW" and report.get("release") and report.get("admitted"):
        kinds.append("release")
    if facts.previous_digest and decision in ("ALLOW", "DENY"):
        kinds.append("moved_tag")
    return [build(kind, report, replica, previous_digest=facts.previous_digest) for kind in kinds]


def revoke_event(report: Mapping[str, Any], replica: str) -> Event:
    """The event of a re-evaluation that withdrew an admitted image (``report`` is its decision)."""
    return build("revoke", report, replica, outcome="revoked")


def build(
    kind: str,
    report: Mapping[str, Any],
    replica: str,
    *,
    previous_digest: str = "",
    outcome: str = "",
) -> Event:
    event_id = uuid.uuid4().hex
    release = report.get("release") or {}
    body = {
        "schema": SCHEMA,
        "event": kind,
        "id": event_id,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "decision": str(report.get("decision_id", "")),
        "reference": _text(report.get("reference")),
        "repository": _text(report.get("repository")),
        "digest": _text(report.get("digest")),
        "previous_digest": previous_digest if kind == "moved_tag" else "",
        "outcome": outcome or str(report.get("outcome", "")),
        "layer": _text(report.get("denied_by")),
        "reason": _text(report.get("reason")),
        "findings": finding_codes(report),
        "operator": _text(release.get("operator")),
        "release_reason": _text(release.get("reason")),
        "replica": replica,
    }
    data = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return Event(event_id, kind, data.encode())


def finding_codes(report: Mapping[str, Any]) -> list[str]:
    """The deciding layer's blocking finding codes (a failed step: ``<layer>.unavailable``)."""
    layer = report.get("denied_by")
    codes: list[str] = []
    for step in report.get("layers") or []:
        if step.get("layer") != layer or step.get("decision") == "ALLOW":
            continue
        if step.get("error"):
            codes.append(f"{layer}.unavailable")
        codes.extend(
            str(f.get("code", ""))
            for f in step.get("findings") or []
            if blocks(str(f.get("severity", "")))
        )
        break
    return list(dict.fromkeys(codes))[:MAX_FINDINGS]


def _text(value: Any) -> str:
    return str(value or "")[:MAX_TEXT]
