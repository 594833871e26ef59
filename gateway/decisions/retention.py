"""What retention and the garbage collector ask of the database: expired rows, live references.

Decisions and quarantine entries are deleted in bounded batches, oldest
first. A decision that something still names is never deleted: the
admission it made, an open quarantine entry (whose id is its decision's
id), a waiver (the release and the quarantined pull it waived) and an audit
line not yet written. The check is part of each ``DELETE``, so a row that
became named after it was selected survives.

"Older than" compares the ISO 8601 UTC times the records hold as text
(``2026-12-06T08:29:10.123+00:00``): the same order on both engines.
"""

from __future__ import annotations

from collections.abc import Sequence

from pullguard.gateway.decisions.database import Tables

#: Decisions something still names (see the module doc).
_NAMED = (
    " AND NOT EXISTS (SELECT 1 FROM admitted a WHERE a.decision_id = d.id)"
    " AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.id = d.id)"
    " AND NOT EXISTS (SELECT 1 FROM waivers w WHERE w.decision_id = d.id OR w.quarantine_id = d.id)"
    " AND NOT EXISTS (SELECT 1 FROM audit_pending p WHERE p.id = d.id)"
)


#: Rows older than a cutoff time, or at or past a (time, id) boundary.
_EXPIRED = "({a}.time < ? OR ({a}.time, {a}.id) <= (?, ?))"
#: A boundary nothing reaches: ids are hex, "" sorts first.
_NO_BOUNDARY = ("", "")


def _marks(count: int) -> str:
    return ",".join("?" * count)


class RetentionRecords(Tables):
    """Expired decisions and quarantine entries; which digests admissions still need."""

    def retention_boundary(self, table: str, keep_newest: int | None) -> tuple[str, str]:
        """(time, id) of the newest row past the newest ``keep_newest`` of ``table``.

        Found once per run: rows that arrive meanwhile only move it newer, so
        a run that keeps to it deletes no row it should keep. None or too
        few rows: a boundary no row reaches.
        """
        if keep_newest is None or table not in ("decisions", "quarantine"):
            return _NO_BOUNDARY
        with self._lock:
            row = self._db.execute(
                f"SELECT time, id FROM {table} ORDER BY time DESC, id DESC"  # noqa: S608
                " LIMIT 1 OFFSET ?",
                (keep_newest,),
            ).fetchone()
        return (str(row[0]), str(row[1])) if row else _NO_BOUNDARY

    def expired_decisions(
        self, cutoff: str, boundary: tuple[str, str], limit: int
    ) -> list[tuple[str, str, str]]:
        """(id, time, reference) of up to ``limit`` deletable decisions, oldest first.

        ``cutoff``: an ISO time (``""``: no age limit); ``boundary``: from
        :meth:`retention_boundary`.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT d.id, d.time, d.reference FROM decisions d WHERE "  # noqa: S608
                + _EXPIRED.format(a="d")
                + _NAMED
                + " ORDER BY d.time, d.id LIMIT ?",
                (cutoff, *boundary, limit),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def delete_decisions(self, ids: Sequence[str]) -> int:
        """Delete these decisions unless something names them now; return how many went."""
        if not ids:
            return 0
        with self._lock:
            try:
                deleted = self._db.execute(
                    f"DELETE FROM decisions WHERE id IN ({_marks(len(ids))})"  # noqa: S608
                    " AND id IN (SELECT d.id FROM decisions d WHERE 1=1" + _NAMED + ")"
                    " RETURNING id",
                    tuple(ids),
                ).fetchall()
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        return len(deleted)

    def expired_quarantine(
        self, cutoff: str, boundary: tuple[str, str], limit: int
    ) -> list[tuple[str, str, str]]:
        """(id, time, reference) of up to ``limit`` open quarantine entries past retention."""
        with self._lock:
            rows = self._db.execute(
                "SELECT q.id, q.time, q.reference FROM quarantine q WHERE "  # noqa: S608
                + _EXPIRED.format(a="q")
                + " ORDER BY q.time, q.id LIMIT ?",
                (cutoff, *boundary, limit),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def quarantine_ids(self) -> set[str]:
        """Every open quarantine entry's id."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM quarantine").fetchall()
        return {str(r[0]) for r in rows}

    def referenced_among(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` an admission needs (a manifest or one of its blobs) now."""
        if not digests:
            return set()
        marks = _marks(len(digests))
        with self._lock:
            rows = self._db.execute(
                f"SELECT digest FROM admitted WHERE digest IN ({marks})"  # noqa: S608
                f" UNION SELECT digest FROM admitted_blobs WHERE digest IN ({marks})",
                (*digests, *digests),
            ).fetchall()
        return {str(r[0]) for r in rows}
