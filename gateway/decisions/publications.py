"""What pullguard pushed to a registry target, per reference."""

from __future__ import annotations

from pullguard.gateway.decisions.database import Tables, upsert

PUBLISHED = upsert("published", ("target", "repository", "reference", "digest"), key=3)


class PublicationRecords(Tables):
    """Manifests the target acknowledged, by (target, repository, reference)."""

    def published(self, target: str, repository: str, reference: str) -> str | None:
        """The digest pullguard last pushed to ``target`` under a digest or tag, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT digest FROM published WHERE target=? AND repository=? AND reference=?",
                (target, repository, reference),
            ).fetchone()
        return str(row[0]) if row else None

    def published_references(self, target: str, repository: str, digest: str) -> list[str]:
        """The references (digest, tags) under which ``digest`` was published to ``target``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reference FROM published WHERE target=? AND repository=? AND digest=?"
                " ORDER BY reference",
                (target, repository, digest),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def published_without_admission(self, target: str, limit: int) -> list[tuple[str, str]]:
        """(repository, digest) still published to ``target`` but admitted under no policy."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT p.repository, p.digest FROM published p"
                " LEFT JOIN admitted a ON a.repository = p.repository AND a.digest = p.digest"
                " WHERE p.target=? AND a.digest IS NULL ORDER BY p.repository, p.digest LIMIT ?",
                (target, limit),
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def forget_published(self, target: str, repository: str, digest: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM published WHERE target=? AND repository=? AND digest=?",
                (target, repository, digest),
            )
            self._db.commit()

    def mark_published(self, target: str, repository: str, reference: str, digest: str) -> None:
        """Record a manifest PUT the target acknowledged."""
        with self._lock:
            self._db.execute(
                PUBLISHED,
                (target, repository, reference, digest),
            )
            self._db.commit()
