"""The notification queue: events waiting for delivery, in the verdict's own transaction.

A decision's events are inserted by :meth:`NotificationRecords._queue_decision_events`
inside the transaction that records the decision (and the admission), so a
verdict and its events commit together or not at all, and survive a
restart. The pull path only inserts rows: :mod:`pullguard.gateway.notify.sender`
delivers them later. One row is one delivery (an event to one URL); the
secret that signs it stays in the configuration, never in the database.

Deliveries are claimed with a lease (``lease_owner``, ``lease_until``): a
replica that dies mid-delivery lets its claim expire and another sends it
(receivers drop repeats by the event id). On PostgreSQL the claim skips rows
another replica holds (``FOR UPDATE SKIP LOCKED``), so each delivery goes
out from one replica at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.decisions.database import POSTGRESQL, Connection, Tables
from pullguard.gateway.notify.events import DecisionFacts, Event, decision_events, revoke_event
from pullguard.services.runtime.config.notifications import Subscription

log = logging.getLogger("pullguard.notify")

#: The queue's table (schema version 2, see .schema).
TABLE = """CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt DOUBLE PRECISION NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
)"""
INDEX = "CREATE INDEX IF NOT EXISTS notifications_due ON notifications(state, next_attempt)"
PENDING = "pending"
DEAD = "dead"
#: Dead deliveries kept for an operator to look at; older ones are deleted.
DEAD_KEPT = 1000
MAX_ERROR = 500


def create_tables(db: Connection) -> None:
    """The queue's table: a migration (see .schema)."""
    db.execute(TABLE)
    db.execute(INDEX)


@dataclass
class Outbox:
    """Who gets which events, and whom to tell when one is queued or dropped."""

    subscriptions: tuple[Subscription, ...]
    #: The replica named in events.
    replica: str
    on_queued: Callable[[], None] = field(default=lambda: None)
    on_dropped: Callable[[str], None] = field(default=lambda _kind: None)

    def wants(self, kind: str) -> bool:
        return any(kind in sub.events for sub in self.subscriptions)


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: send ``body`` to ``url``; ``attempts`` counts this one."""

    id: str
    event_id: str
    kind: str
    url: str
    body: bytes
    attempts: int
    owner: str


class NotificationRecords(Tables):
    """The queue's rows: inserted with decisions, claimed and settled by the sender."""

    outbox: Outbox | None = None

    def notify_to(self, outbox: Outbox | None) -> None:
        """Queue events for ``outbox``'s subscriptions from now on (None: queue nothing)."""
        self.outbox = outbox if outbox is not None and outbox.subscriptions else None

    # -- queued with the verdict (lock held, transaction open) ------------------

    def _queue_decision_events(self, report: Mapping[str, Any]) -> None:
        """Queue a decision's events, before its row is inserted (moved_tag looks back)."""
        outbox = self.outbox
        if outbox is None or report.get("decision") not in ("ALLOW", "DENY"):
            return
        facts = DecisionFacts(
            quarantined=outbox.wants("quarantine") and self._is_quarantined(report),
            previous_digest=self._moved_from(report) if outbox.wants("moved_tag") else "",
        )
        self._queue(outbox, decision_events(report, facts, outbox.replica))

    def _queue_revoke_event(self, report: Mapping[str, Any] | None) -> None:
        if self.outbox is not None and report is not None and self.outbox.wants("revoke"):
            self._queue(self.outbox, [revoke_event(report, self.outbox.replica)])

    def _queue(self, outbox: Outbox, events: Sequence[Event]) -> None:
        created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        queued = False
        for event in events:
            for sub in outbox.subscriptions:
                if event.kind not in sub.events:
                    continue
                row = self._db.execute(
                    "SELECT COUNT(*) FROM notifications WHERE url=? AND state=?",
                    (sub.url, PENDING),
                ).fetchone()
                if int(row[0]) >= sub.max_queued:
                    log.error(
                        "notification %s (%s) to %s dropped: %d events wait already (max_queued)",
                        event.id,
                        event.kind,
                        sub.shown,
                        sub.max_queued,
                    )
                    outbox.on_dropped(event.kind)
                    continue
                self._db.execute(
                    "INSERT INTO notifications (id, event_id, kind, url, body, created, state,"
                    " attempts, next_attempt) VALUES (?,?,?,?,?,?,?,0,0)",
                    (
                        uuid.uuid4().hex,
                        event.id,
                        event.kind,
                        sub.url,
                        event.body.decode(),
                        created,
                        PENDING,
                    ),
                )
                queued = True
        if queued:
            outbox.on_queued()

    def _is_quarantined(self, report: Mapping[str, Any]) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM quarantine WHERE id=?", (str(report.get("decision_id", "")),)
        ).fetchone()
        return row is not None

    def _moved_from(self, report: Mapping[str, Any]) -> str:
        """The digest a tag named before this decision, when it names another now.

        Before: the digest its pin names (a ``hash.pin_mismatch`` finding), or
        the one its newest allowed pull served. A move is told once: not
        again while the tag's newest verdict already names this digest.
        """
        digest = str(report.get("digest") or "")
        client = str(report.get("client_name") or "")
        reference = str(report.get("reference") or "")
        repository = str(report.get("repository") or "")
        if not digest or not repository or not reference.startswith(client + ":"):
            return ""
        tag_reference = (f"{repository}:{reference[len(client) + 1 :]}", reference)
        previous = _pinned(report)
        if not previous:
            row = self._db.execute(
                "SELECT digest FROM decisions WHERE repository=? AND decision='ALLOW'"
                " AND reference IN (?, ?) AND digest != '' ORDER BY time DESC LIMIT 1",
                (repository, *tag_reference),
            ).fetchone()
            previous = str(row[0]) if row else ""
        if not previous or previous == digest:
            return ""
        row = self._db.execute(
            "SELECT digest FROM decisions WHERE repository=? AND decision IN ('ALLOW', 'DENY')"
            " AND reference IN (?, ?) AND digest != '' ORDER BY time DESC LIMIT 1",
            (repository, *tag_reference),
        ).fetchone()
        if row and str(row[0]) == digest:
            return ""
        return previous

    # -- the sender's side -------------------------------------------------------

    def claim_notifications(self, now: float, lease: float, limit: int) -> list[Delivery]:
        """Take up to ``limit`` due deliveries for ``lease`` seconds; count the attempt."""
        owner = uuid.uuid4().hex
        skip = " FOR UPDATE SKIP LOCKED" if self._db.dialect == POSTGRESQL else ""
        due = "state='pending' AND next_attempt <= ? AND lease_until <= ?"
        with self._lock:
            try:
                self._db.execute(
                    "UPDATE notifications SET lease_owner=?, lease_until=?,"  # noqa: S608
                    f" attempts=attempts+1 WHERE {due} AND id IN (SELECT id FROM notifications"
                    f" WHERE {due} ORDER BY next_attempt LIMIT ?{skip})",
                    (owner, now + lease, now, now, now, now, limit),
                )
                rows = self._db.execute(
                    "SELECT id, event_id, kind, url, body, attempts FROM notifications"
                    " WHERE lease_owner=? AND state='pending' ORDER BY next_attempt",
                    (owner,),
                ).fetchall()
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        return [
            Delivery(
                str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]).encode(), int(r[5]), owner
            )
            for r in rows
        ]

    def notification_delivered(self, delivery: Delivery) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM notifications WHERE id=? AND lease_owner=?",
                (delivery.id, delivery.owner),
            )
            self._db.commit()

    def notification_failed(self, delivery: Delivery, error: str, retry_at: float | None) -> None:
        """Try again at ``retry_at``, or (None) give up: the delivery is dead."""
        state = DEAD if retry_at is None else PENDING
        with self._lock:
            self._db.execute(
                "UPDATE notifications SET state=?, next_attempt=?, lease_owner='', lease_until=0,"
                " last_error=? WHERE id=? AND lease_owner=?",
                (state, retry_at or 0.0, error[:MAX_ERROR], delivery.id, delivery.owner),
            )
            if state == DEAD:
                self._db.execute(
                    "DELETE FROM notifications WHERE state='dead' AND id NOT IN (SELECT id FROM"
                    " notifications WHERE state='dead' ORDER BY created DESC LIMIT ?)",
                    (DEAD_KEPT,),
                )
            self._db.commit()

    def notification_counts(self) -> dict[str, int]:
        """Deliveries in the queue by state (pending, dead)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM notifications GROUP BY state"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def list_notifications(self, limit: int = 100) -> list[dict[str, Any]]:
        """Queued and dead deliveries, oldest first (for operators and tests)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, event_id, kind, url, state, attempts, last_error, body"
                " FROM notifications ORDER BY created, id LIMIT ?",
                (limit,),
            ).fetchall()
        names = ("id", "event_id", "kind", "url", "state", "attempts", "last_error", "body")
        return [dict(zip(names, row, strict=True)) for row in rows]


def _pinned(report: Mapping[str, Any]) -> str:
    """The digest a pin named, from the deciding ``hash.pin_mismatch`` finding."""
    for step in report.get("layers") or []:
        for finding in step.get("findings") or []:
            if finding.get("code") == "hash.pin_mismatch":
                return str((finding.get("evidence") or {}).get("pinned", ""))
    return ""
