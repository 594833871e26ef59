"""The decision database (SQLite under state_dir, or PostgreSQL) and the append-only audit log.

Every pull's decision is recorded with each layer's verdict. Admissions are
recorded per (repository, digest, policy version): the next pull of the same
digest under the same policy is served without verifying again, and a policy
change (new keys, pins, rules) makes every image verify again.

Durability:

- An admission and its decision row are one transaction
  (:meth:`DecisionLog.admit_and_record`): nothing is servable without its
  record. The same transaction notes the decision in ``audit_pending``; the
  audit line is appended after the commit and the note then cleared, so a
  crash in between is repaired at the next start (:meth:`DecisionLog.flush_audit`
  appends the lines the log lacks).
- Each audit append starts on a fresh line: a line torn by a crash or a full
  disk never swallows the next record.
- At start-up a SQLite database must pass ``PRAGMA quick_check``; a file that
  is not SQLite, is damaged, or is missing or empty while the audit log holds
  records is refused with a message naming the file, never replaced by an
  empty database. A PostgreSQL database without pullguard's schema is
  refused likewise while the audit log holds records.
- The schema migrates forward by itself at start-up; a database newer than
  this code is refused (:mod:`.schema`).

``database: postgresql://...`` moves the tables to PostgreSQL (the audit log
stays in ``state_dir``): replicas then share one truth, and hold leases
there while verifying an image, so that they fetch it once between them
(:mod:`.postgres`).

The tables are split by concern, one module each, over one connection:
decisions and the audit log (:mod:`.records`), admissions (:mod:`.admissions`),
publications to the target (:mod:`.publications`), waivers (:mod:`.waivers`)
the quarantine index (:mod:`.quarantine`), what retention and the
garbage collector ask (:mod:`.retention`), and the console's pages
(:mod:`.browse`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pullguard.gateway.decisions.admissions import Admission, AdmissionRecords
from pullguard.gateway.decisions.browse import BrowseRecords
from pullguard.gateway.decisions.database import AUDIT, StateError, open_sqlite
from pullguard.gateway.decisions.postgres import AdvisoryLeases, Leases, open_postgres
from pullguard.gateway.decisions.publications import PublicationRecords
from pullguard.gateway.decisions.quarantine import QuarantineIndex
from pullguard.gateway.decisions.retention import RetentionRecords
from pullguard.gateway.decisions.schema import migrate
from pullguard.gateway.decisions.waivers import WaiverRecords
from pullguard.services.runtime.config.database import Database

__all__ = ["Admission", "DecisionLog", "StateError"]


class DecisionLog(
    AdmissionRecords,
    PublicationRecords,
    WaiverRecords,
    QuarantineIndex,
    RetentionRecords,
    BrowseRecords,
):
    """The decision database plus a JSON-lines audit log under ``state_dir``.

    The database is SQLite under ``state_dir``, or ``database`` (PostgreSQL).
    Calls are short and synchronous; a lock serialises them across the
    threads the gateway may use.
    """

    def __init__(self, state_dir: Path, database: Database | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._audit_path = state_dir / AUDIT
        self._lock = threading.Lock()
        lost = None
        self.leases: Leases = Leases()
        if database is None:
            self._db = open_sqlite(state_dir)
        else:
            self._db = open_postgres(database)
            self.leases = AdvisoryLeases(database)
            if self._audit_path.exists() and self._audit_path.stat().st_size > 0:
                lost = (
                    f"database {database} holds no pullguard schema but {self._audit_path}"
                    " holds records: restore the database from a backup, or move the state"
                    " directory aside to start anew"
                )
        try:
            migrate(self._db, refuse_fresh=lost)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def quick_check(self) -> list[str]:
        """The database's consistency check: ``["ok"]`` or the problems it found."""
        with self._lock:
            return self._db.quick_check()
