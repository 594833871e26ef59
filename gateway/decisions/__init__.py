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

The tables are split by concern, one module each, over one connection:
decisions and the audit log (:mod:`.records`), admissions (:mod:`.admissions`),
publications to the target (:mod:`.publications`), waivers (:mod:`.waivers`)
and the quarantine index (:mod:`.quarantine`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pullguard.gateway.decisions.admissions import Admission, AdmissionRecords
from pullguard.gateway.decisions.database import (
    AUDIT,
    StateError,
    add_outage_column,
    open_database,
)
from pullguard.gateway.decisions.publications import PublicationRecords
from pullguard.gateway.decisions.quarantine import QuarantineIndex
from pullguard.gateway.decisions.waivers import WaiverRecords

__all__ = ["Admission", "DecisionLog", "StateError"]


class DecisionLog(AdmissionRecords, PublicationRecords, WaiverRecords, QuarantineIndex):
    """SQLite database plus a JSON-lines audit log, both under ``state_dir``.

    The gateway is the only writer. Calls are short and synchronous; a lock
    serialises them across the threads the gateway may use.
    """

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._db = open_database(state_dir)
        add_outage_column(self._db)
        self._audit_path = state_dir / AUDIT
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def quick_check(self) -> list[str]:
        """SQLite's own consistency check: ``["ok"]`` or the problems it found."""
        with self._lock:
            return [str(r[0]) for r in self._db.execute("PRAGMA quick_check(20)").fetchall()]
