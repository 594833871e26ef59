"""The decision database (SQLite under state_dir) and the append-only audit log.

Every pull's decision is recorded with each layer's verdict. Admissions are
recorded per (repository, digest, policy version): the next pull of the same
digest under the same policy is served without verifying again, and a policy
change (new keys, pins, rules) makes every image verify again.

Durability:

- An admission and its decision row are one SQLite transaction
  (:meth:`DecisionLog.admit_and_record`): nothing is servable without its
  record. The same transaction notes the decision in ``audit_pending``; the
  audit line is appended after the commit and the note then cleared, so a
  crash in between is repaired at the next start (:meth:`DecisionLog.flush_audit`
  appends the lines the log lacks).
- Each audit append starts on a fresh line: a line torn by a crash or a full
  disk never swallows the next record.
- At start-up the database must pass ``PRAGMA quick_check``; a file that is not
  SQLite, is damaged, or is missing or empty while the audit log holds
  records is refused with a message naming the file, never replaced by an
  empty database.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullguard.gateway import failpoints
from pullguard.services.runtime.errors import PullguardError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    reference TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    decision TEXT NOT NULL,
    denied_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    transient INTEGER NOT NULL,
    report TEXT NOT NULL,
    outage TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time);
CREATE INDEX IF NOT EXISTS decisions_repository ON decisions(repository, time);
CREATE TABLE IF NOT EXISTS admitted (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (repository, digest, policy_version)
);
CREATE TABLE IF NOT EXISTS admitted_blobs (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE TABLE IF NOT EXISTS manifest_blobs (
    repository TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    PRIMARY KEY (repository, manifest_digest, blob_digest)
);
CREATE TABLE IF NOT EXISTS index_entries (
    repository TEXT NOT NULL,
    index_digest TEXT NOT NULL,
    child_digest TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (repository, index_digest, child_digest, policy_version)
);
CREATE TABLE IF NOT EXISTS names (
    client_name TEXT PRIMARY KEY,
    repository TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS waivers (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    code TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    quarantine_id TEXT NOT NULL,
    time TEXT NOT NULL,
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    PRIMARY KEY (repository, digest, code)
);
CREATE TABLE IF NOT EXISTS published (
    target TEXT NOT NULL,
    repository TEXT NOT NULL,
    reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (target, repository, reference)
);
CREATE TABLE IF NOT EXISTS audit_pending (
    id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


log = logging.getLogger("pullguard.gateway")

#: How much of the audit log's end :meth:`DecisionLog.flush_audit` searches.
_AUDIT_TAIL = 16 << 20
_DATABASE = "decisions.sqlite3"
_AUDIT = "audit.jsonl"


class StateError(PullguardError):
    """The state directory's database or audit log cannot be trusted; names the file."""


def _open_database(state_dir: Path) -> sqlite3.Connection:
    """Open the database, refusing one that is damaged or lost (see the module doc)."""
    path = state_dir / _DATABASE
    audit = state_dir / _AUDIT
    fresh = not path.exists() or path.stat().st_size == 0
    if fresh and audit.exists() and audit.stat().st_size > 0:
        raise StateError(
            f"{path} is missing or empty but {audit} holds records: restore the database"
            " from a backup, or move the state directory aside to start anew"
        )
    try:
        db = sqlite3.connect(path, check_same_thread=False)
        if not fresh:
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                db.close()
                raise StateError(f"{path} is damaged: {'; '.join(problems)[:500]}")
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path} is not a usable pullguard database: {exc}") from None
    return db


def _append_line(path: Path, line: bytes) -> None:
    """Append ``line`` and a newline, on a fresh line, fsynced."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # the previous line was torn: never join it
        os.write(fd, line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _add_outage_column(db: sqlite3.Connection) -> None:
    """Databases made before outages were recorded get the column (empty: a verdict)."""
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(decisions)")}
    if "outage" not in columns:
        db.execute("ALTER TABLE decisions ADD COLUMN outage TEXT NOT NULL DEFAULT ''")
        db.commit()


@dataclass(frozen=True)
class Admission:
    repository: str
    digest: str
    media_type: str
    size: int
    decision_id: str


class DecisionLog:
    """SQLite database plus a JSON-lines audit log, both under ``state_dir``.

    The gateway is the only writer. Calls are short and synchronous; a lock
    serialises them across the threads the gateway may use.
    """

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._db = _open_database(state_dir)
        _add_outage_column(self._db)
        self._audit_path = state_dir / _AUDIT
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def record(self, report: Mapping[str, Any]) -> None:
        """Write one decision: the database row and an audit line, fsynced."""
        with self._lock:
            line = self._insert_decision(report)
            self._db.commit()
            self._audit(report["decision_id"], line)

    def _insert_decision(self, report: Mapping[str, Any]) -> str:
        """Insert the row and its audit_pending note, uncommitted; return the audit line."""
        line = json.dumps(report, sort_keys=True, ensure_ascii=True)
        self._db.execute(
            "INSERT OR REPLACE INTO decisions (id, time, reference, repository, digest,"
            " decision, denied_by, reason, policy_version, transient, report, outage)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
        self._db.execute("INSERT OR IGNORE INTO audit_pending VALUES (?)", (report["decision_id"],))
        return line

    def _audit(self, decision_id: str, line: str) -> None:
        """Append a committed decision's audit line, then clear its pending note.

        The decision is committed already: a failed append (a full disk) must
        not turn it into another outcome, so it is logged and the pending note
        kept for the next start's :meth:`flush_audit`.
        """
        try:
            _append_line(self._audit_path, line.encode())
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
                    handle.seek(max(0, size - _AUDIT_TAIL))
                    tail = handle.read(_AUDIT_TAIL)
            written = 0
            for decision_id, line in pending:
                if line and f'"decision_id": "{decision_id}"'.encode() not in tail:
                    _append_line(self._audit_path, line.encode())
                    written += 1
                self._db.execute("DELETE FROM audit_pending WHERE id=?", (decision_id,))
            self._db.commit()
        return written

    def pending_audit(self) -> list[str]:
        """Decisions committed whose audit line may be missing (a crash came between)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM audit_pending ORDER BY id").fetchall()
        return [str(r[0]) for r in rows]

    def quick_check(self) -> list[str]:
        """SQLite's own consistency check: ``["ok"]`` or the problems it found."""
        with self._lock:
            return [str(r[0]) for r in self._db.execute("PRAGMA quick_check(20)").fetchall()]

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
                self._db.execute(
                    "INSERT OR REPLACE INTO names VALUES (?,?)", (client_name, admission.repository)
                )
                line = self._insert_decision(report)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            failpoints.hit("admit.after_commit")
            self._audit(admission.decision_id, line)

    def admit(
        self,
        admission: Admission,
        policy_version: str,
        blobs: Iterable[str],
        children: Iterable[tuple[str, str, int]] = (),
    ) -> None:
        """Record an admission; ``children`` are an index's entries (digest, media type, size)."""
        with self._lock:
            self._insert_admission(admission, policy_version, list(blobs), children)
            self._db.commit()

    def _insert_admission(
        self,
        admission: Admission,
        policy_version: str,
        blobs: list[str],
        children: Iterable[tuple[str, str, int]],
    ) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO admitted_blobs VALUES (?,?)",
            [(admission.repository, digest) for digest in blobs],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO manifest_blobs VALUES (?,?,?)",
            [(admission.repository, admission.digest, digest) for digest in blobs],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO index_entries VALUES (?,?,?,?,?,?)",
            [
                (admission.repository, admission.digest, digest, policy_version, media, size)
                for digest, media, size in children
            ],
        )
        # The manifest row goes last: it is what makes the image servable.
        self._db.execute(
            "INSERT OR REPLACE INTO admitted VALUES (?,?,?,?,?,?)",
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
                "SELECT repository, digest, media_type, MAX(size) FROM admitted"
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
                # SQLite takes bare columns from the row that holds MAX().
                "SELECT a.repository, a.digest, a.media_type, a.size, a.decision_id,"
                " a.policy_version, MAX(COALESCE(d.time, '')) FROM admitted a"
                " LEFT JOIN decisions d ON d.id = a.decision_id"
                " GROUP BY a.repository, a.digest ORDER BY"
                " a.media_type NOT LIKE '%index%' AND a.media_type NOT LIKE '%manifest.list%',"
                " a.repository, a.digest LIMIT ?",
                (limit,),
            ).fetchall()
        return [(Admission(*row[:5]), str(row[5])) for row in rows]

    def revoke(self, repository: str, digest: str) -> None:
        """Withdraw every admission of ``repository@digest``, under any policy.

        Its blobs stop being served for the repository unless another admitted
        manifest of the repository lists them too.
        """
        with self._lock:
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
            self._db.execute("INSERT OR REPLACE INTO names VALUES (?,?)", (client_name, repository))
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
                "INSERT OR REPLACE INTO published VALUES (?,?,?,?)",
                (target, repository, reference, digest),
            )
            self._db.commit()

    def quarantined(
        self, entry_id: str, time: str, reference: str, digest: str, reason: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?,?,?,?,?)",
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
                "INSERT OR REPLACE INTO waivers VALUES (?,?,?,?,?,?,?,?)",
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

    def list_decisions(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT report FROM decisions ORDER BY time DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]
