"""Decisions and the append-only audit log.

Each audit append starts on a fresh line: a line torn by a crash or a full
disk never swallows the next record. A decision committed with an admission
is noted in ``audit_pending`` in the same transaction; the line is appended
after the commit and the note then cleared, so a crash in between is
repaired at the next start (:meth:`DecisionRecords.flush_audit`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from pullguard.gateway import failpoints
from pullguard.gateway.decisions.database import AUDIT_TAIL, append_line, upsert
from pullguard.gateway.decisions.notifications import NotificationRecords

log = logging.getLogger("pullguard.gateway")

DECISIONS = upsert(
    "decisions",
    (
        "id",
        "time",
        "reference",
        "repository",
        "digest",
        "decision",
        "denied_by",
        "reason",
        "policy_version",
        "transient",
        "report",
        "outage",
    ),
    key=1,
)


class DecisionRecords(NotificationRecords):
    """Every pull's decision row, its audit line, and the events it gives (notifications)."""

    def record(self, report: Mapping[str, Any]) -> None:
        """Write one decision: the database row and an audit line, fsynced."""
        with self._lock:
            line = self._insert_decision(report)
            self._db.commit()
            self._audit(report["decision_id"], line)

    def _insert_decision(self, report: Mapping[str, Any]) -> str:
        """Insert the row and its audit_pending note, uncommitted; return the audit line."""
        line = json.dumps(report, sort_keys=True, ensure_ascii=True)
        self._queue_decision_events(report)
        self._db.execute(
            DECISIONS,
            (
                report["decision_id"],
                report["time"],
                report["reference"],
                report["repository"],
                report.get("digest", ""),
                report["decision"],
                report.get("denied_by", ""),
                report.get("reason", ""),
                report["policy_version"],
                int(bool(report.get("transient"))),
                line,
                # The layer (or "fetcher" for the upstream, "target") that
                # failed when no verdict was reached; empty for verdicts.
                str((report.get("outage") or {}).get("layer", "")),
            ),
        )
        self._db.execute(
            "INSERT INTO audit_pending VALUES (?) ON CONFLICT DO NOTHING", (report["decision_id"],)
        )
        return line

    def _audit(self, decision_id: str, line: str) -> None:
        """Append a committed decision's audit line, then clear its pending note.

        The decision is committed already: a failed append (a full disk) must
        not turn it into another outcome, so it is logged and the pending note
        kept for the next start's :meth:`flush_audit`.
        """
        try:
            append_line(self._audit_path, line.encode())
        except OSError as exc:
            log.error(
                "audit line of %s not written (%s): appended at the next start", decision_id, exc
            )
            return
        failpoints.hit("admit.after_audit")
        self._db.execute("DELETE FROM audit_pending WHERE id=?", (decision_id,))
        self._db.commit()

    def flush_audit(self) -> int:
        """Append the audit lines a crash kept from the log; return how many.

        A pending decision whose id is already in the log's tail was written
        before the crash and is not written twice.
        """
        with self._lock:
            pending = [
                (str(r[0]), str(r[1]))
                for r in self._db.execute(
                    "SELECT p.id, COALESCE(d.report, '') FROM audit_pending p"
                    " LEFT JOIN decisions d ON d.id = p.id"
                ).fetchall()
            ]
            if not pending:
                return 0
            tail = b""
            if self._audit_path.exists():
                with self._audit_path.open("rb") as handle:
                    size = handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, size - AUDIT_TAIL))
                    tail = handle.read(AUDIT_TAIL)
            written = 0
            for decision_id, line in pending:
                if line and f'"decision_id": "{decision_id}"'.encode() not in tail:
                    append_line(self._audit_path, line.encode())
                    written += 1
                self._db.execute("DELETE FROM audit_pending WHERE id=?", (decision_id,))
            self._db.commit()
        return written

    def pending_audit(self) -> list[str]:
        """Decisions committed whose audit line may be missing (a crash came between)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM audit_pending ORDER BY id").fetchall()
        return [str(r[0]) for r in rows]

    def last_admitted_for_tag(self, repository: str, tag: str, reference: str) -> str | None:
        """The digest the newest allowed pull of ``repository:tag`` served, if any.

        ``reference`` is the name as this client spells it (it may omit the
        default upstream's alias). Whether that digest is still admitted is
        the caller's question.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT digest FROM decisions WHERE repository=? AND decision='ALLOW'"
                " AND reference IN (?, ?) AND digest != '' ORDER BY time DESC LIMIT 1",
                (repository, f"{repository}:{tag}", reference),
            ).fetchone()
        return str(row[0]) if row else None

    def decision_report(self, decision_id: str) -> dict[str, Any] | None:
        """One decision's report, as recorded (None: no such decision)."""
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM decisions WHERE id=?", (decision_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list_decisions(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT report FROM decisions ORDER BY time DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]
