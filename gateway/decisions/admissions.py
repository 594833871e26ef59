"""Admissions: what is admitted, under which policy, with which blobs and index entries.

An admission and its decision row are one transaction
(:meth:`AdmissionRecords.admit_and_record`): nothing is servable without
its record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pullguard.gateway import failpoints
from pullguard.gateway.decisions.database import upsert
from pullguard.gateway.decisions.records import DecisionRecords

NAMES = upsert("names", ("client_name", "repository"), key=1)
ADMITTED = upsert(
    "admitted",
    ("repository", "digest", "policy_version", "media_type", "size", "decision_id"),
    key=3,
)


@dataclass(frozen=True)
class Admission:
    repository: str
    digest: str
    media_type: str
    size: int
    decision_id: str


class AdmissionRecords(DecisionRecords):
    """Admissions, the blobs and index entries they need, and client names.

    Built on the decision records: admitting records the decision in the
    same connection and transaction.
    """

    def admit_and_record(
        self,
        admission: Admission,
        policy_version: str,
        blobs: Iterable[str],
        children: Iterable[tuple[str, str, int]],
        client_name: str,
        report: Mapping[str, Any],
    ) -> None:
        """Admit an image and record its decision in one transaction, then audit it.

        Nothing is servable without its decision row: both commit together or
        neither does. The audit line follows the commit (see the module doc).
        """
        with self._lock:
            try:
                self._insert_admission(admission, policy_version, list(blobs), children)
                self._db.execute(NAMES, (client_name, admission.repository))
                line = self._insert_decision(report)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            failpoints.hit("admit.after_commit")
            self._audit(admission.decision_id, line)

    def _insert_admission(
        self,
        admission: Admission,
        policy_version: str,
        blobs: list[str],
        children: Iterable[tuple[str, str, int]],
    ) -> None:
        self._db.executemany(
            "INSERT INTO admitted_blobs VALUES (?,?) ON CONFLICT DO NOTHING",
            [(admission.repository, digest) for digest in blobs],
        )
        self._db.executemany(
            "INSERT INTO manifest_blobs VALUES (?,?,?) ON CONFLICT DO NOTHING",
            [(admission.repository, admission.digest, digest) for digest in blobs],
        )
        self._db.executemany(
            "INSERT INTO index_entries VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            [
                (admission.repository, admission.digest, digest, policy_version, media, size)
                for digest, media, size in children
            ],
        )
        # The manifest row goes last: it is what makes the image servable.
        self._db.execute(
            ADMITTED,
            (
                admission.repository,
                admission.digest,
                policy_version,
                admission.media_type,
                admission.size,
                admission.decision_id,
            ),
        )

    def admission_map(self) -> dict[tuple[str, str], tuple[str, int]]:
        """(repository, digest) -> (media type, size) of every admission, under any policy."""
        with self._lock:
            rows = self._db.execute(
                "SELECT repository, digest, MAX(media_type), MAX(size) FROM admitted"
                " GROUP BY repository, digest"
            ).fetchall()
        return {(str(r[0]), str(r[1])): (str(r[2]), int(r[3])) for r in rows}

    def referenced_digests(self) -> set[str]:
        """Every digest an admission needs in the admitted store: manifests and blobs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT digest FROM admitted UNION SELECT digest FROM admitted_blobs"
            ).fetchall()
        return {str(r[0]) for r in rows}

    def manifest_blobs(self, repository: str, digest: str) -> list[str]:
        """The blobs an admitted manifest of ``repository`` lists."""
        with self._lock:
            rows = self._db.execute(
                "SELECT blob_digest FROM manifest_blobs WHERE repository=? AND manifest_digest=?"
                " ORDER BY blob_digest",
                (repository, digest),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def admissions_needing(self, digest: str) -> list[tuple[str, str]]:
        """(repository, manifest digest) of the admissions that need ``digest``'s content."""
        with self._lock:
            rows = self._db.execute(
                "SELECT repository, digest FROM admitted WHERE digest=?"
                " UNION SELECT m.repository, m.manifest_digest FROM manifest_blobs m"
                " JOIN admitted a ON a.repository = m.repository AND a.digest = m.manifest_digest"
                " WHERE m.blob_digest=? ORDER BY 1, 2",
                (digest, digest),
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def admissions(self, limit: int) -> list[tuple[Admission, str]]:
        """Every admitted (repository, digest) once, with its newest admission's policy.

        Indexes come first, so that a signed index admitted under a new policy
        covers its platform manifests when they are re-evaluated after it.
        """
        with self._lock:
            rows = self._db.execute(
                # Per (repository, digest), the row whose decision is newest.
                "SELECT repository, digest, media_type, size, decision_id, policy_version"
                " FROM (SELECT a.*, ROW_NUMBER() OVER (PARTITION BY a.repository, a.digest"
                " ORDER BY COALESCE(d.time, '') DESC, a.policy_version) AS newest"
                " FROM admitted a LEFT JOIN decisions d ON d.id = a.decision_id) ranked"
                " WHERE newest = 1 ORDER BY"
                " media_type NOT LIKE '%index%' AND media_type NOT LIKE '%manifest.list%',"
                " repository, digest LIMIT ?",
                (limit,),
            ).fetchall()
        return [(Admission(*row[:5]), str(row[5])) for row in rows]

    def revoke(
        self, repository: str, digest: str, because: Mapping[str, Any] | None = None
    ) -> None:
        """Withdraw every admission of ``repository@digest``, under any policy.

        Its blobs stop being served for the repository unless another admitted
        manifest of the repository lists them too. ``because``: the decision
        report that revokes it, whose ``revoke`` event commits with the revocation.
        """
        with self._lock:
            self._queue_revoke_event(because)
            self._db.execute(
                "DELETE FROM admitted WHERE repository=? AND digest=?", (repository, digest)
            )
            self._db.execute(
                "DELETE FROM index_entries WHERE repository=? AND index_digest=?",
                (repository, digest),
            )
            self._db.execute(
                "DELETE FROM admitted_blobs WHERE repository=? AND digest IN ("
                " SELECT blob_digest FROM manifest_blobs WHERE repository=? AND manifest_digest=?"
                " EXCEPT SELECT m.blob_digest FROM manifest_blobs m JOIN admitted a"
                " ON a.repository = m.repository AND a.digest = m.manifest_digest"
                " WHERE m.repository=?)",
                (repository, repository, digest, repository),
            )
            self._db.execute(
                "DELETE FROM manifest_blobs WHERE repository=? AND manifest_digest=?",
                (repository, digest),
            )
            self._db.commit()

    def link_name(self, client_name: str, repository: str) -> None:
        """Remember which repository a client's name resolved to, for blob requests."""
        with self._lock:
            self._db.execute(NAMES, (client_name, repository))
            self._db.commit()

    def repository_for(self, client_name: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT repository FROM names WHERE client_name=?", (client_name,)
            ).fetchone()
        return row[0] if row else None

    def admitted(self, repository: str, digest: str, policy_version: str) -> Admission | None:
        with self._lock:
            row = self._db.execute(
                "SELECT repository, digest, media_type, size, decision_id FROM admitted"
                " WHERE repository=? AND digest=? AND policy_version=?",
                (repository, digest, policy_version),
            ).fetchone()
        return Admission(*row) if row else None

    def blob_admitted(self, repository: str, digest: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM admitted_blobs WHERE repository=? AND digest=?",
                (repository, digest),
            ).fetchone()
        return row is not None

    def parent_indexes(self, repository: str, child: str, policy_version: str) -> list[str]:
        """Admitted indexes of this repository that list ``child``."""
        return [entry[0] for entry in self.index_entries(repository, child, policy_version)]

    def index_entries(
        self, repository: str, child: str, policy_version: str
    ) -> list[tuple[str, str, int]]:
        """(index digest, media type, size) of each admitted index entry naming ``child``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT index_digest, media_type, size FROM index_entries"
                " WHERE repository=? AND child_digest=? AND policy_version=?"
                " ORDER BY index_digest",
                (repository, child, policy_version),
            ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
