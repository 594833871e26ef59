"""Waivers: finding codes an operator's release waived for one repository and digest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pullguard.gateway.decisions.database import Tables, upsert

WAIVERS = upsert(
    "waivers",
    (
        "repository",
        "digest",
        "code",
        "decision_id",
        "quarantine_id",
        "time",
        "reason",
        "operator",
    ),
    key=3,
)


class WaiverRecords(Tables):
    """Waived codes per (repository, digest), with the release that waived them."""

    def waivers(self, repository: str, digest: str) -> list[str]:
        """Finding codes a release waived for exactly this repository and digest."""
        with self._lock:
            rows = self._db.execute(
                "SELECT code FROM waivers WHERE repository=? AND digest=? ORDER BY code",
                (repository, digest),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def add_waivers(
        self,
        repository: str,
        digest: str,
        codes: Iterable[str],
        decision_id: str,
        release: Mapping[str, Any],
    ) -> None:
        """Record a release's waivers, and the quarantine entry it closes."""
        time = str(release.get("time") or "")
        with self._lock:
            self._db.executemany(
                WAIVERS,
                [
                    (
                        repository,
                        digest,
                        code,
                        decision_id,
                        str(release["quarantine_id"]),
                        time,
                        str(release["reason"]),
                        str(release["operator"]),
                    )
                    for code in codes
                ],
            )
            self._db.commit()
