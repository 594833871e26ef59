"""The decision database's connection, schema and audit file: shared by every table module.

One SQLite connection and one lock serve all tables, so that an admission
and its decision row commit in one transaction (see :mod:`.admissions`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from pullguard.services.runtime.errors import PullguardError

SCHEMA = """
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

#: How much of the audit log's end ``flush_audit`` searches.
AUDIT_TAIL = 16 << 20
DATABASE = "decisions.sqlite3"
AUDIT = "audit.jsonl"


class StateError(PullguardError):
    """The state directory's database or audit log cannot be trusted; names the file."""


def open_database(state_dir: Path) -> sqlite3.Connection:
    """Open the database, refusing one that is damaged or lost (see the module doc)."""
    path = state_dir / DATABASE
    audit = state_dir / AUDIT
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
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path} is not a usable pullguard database: {exc}") from None
    return db


def append_line(path: Path, line: bytes) -> None:
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


def add_outage_column(db: sqlite3.Connection) -> None:
    """Databases made before outages were recorded get the column (empty: a verdict)."""
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(decisions)")}
    if "outage" not in columns:
        db.execute("ALTER TABLE decisions ADD COLUMN outage TEXT NOT NULL DEFAULT ''")
        db.commit()


class Tables:
    """What every table module shares: the connection, its lock and the audit file."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    _audit_path: Path
