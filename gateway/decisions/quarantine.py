"""The quarantine index: open quarantine entries, newest first."""

from __future__ import annotations

from pullguard.gateway.decisions.database import Tables, upsert

QUARANTINE = upsert("quarantine", ("id", "time", "reference", "digest", "reason"), key=1)


class QuarantineIndex(Tables):
    """Open quarantine entries (the content lies in stores.Quarantine)."""

    def quarantined(
        self, entry_id: str, time: str, reference: str, digest: str, reason: str
    ) -> None:
        with self._lock:
            self._db.execute(
                QUARANTINE,
                (entry_id, time, reference, digest, reason),
            )
            self._db.commit()

    def list_quarantine(self) -> list[dict[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, time, reference, digest, reason FROM quarantine ORDER BY time DESC"
            ).fetchall()
        return [
            dict(zip(("id", "time", "reference", "digest", "reason"), r, strict=True)) for r in rows
        ]

    def is_quarantined(self, entry_id: str) -> bool:
        """Whether ``entry_id`` is an open quarantine entry (not deleted or released)."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM quarantine WHERE id=?", (entry_id,)).fetchone()
        return row is not None

    def forget_quarantine(self, entry_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM quarantine WHERE id=?", (entry_id,))
            self._db.commit()
