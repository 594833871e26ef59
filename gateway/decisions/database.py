"""The decision database's connection and audit file: shared by every table module.

One connection and one lock serve all tables, so that an admission and its
decision row commit in one transaction (see :mod:`.admissions`). The
connection is SQLite under ``state_dir`` by default, or PostgreSQL when the
configuration names one (``database:``); the tables speak one SQL to both
through :class:`Connection`, the dialect seam.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg

from pullguard.services.runtime.errors import PullguardError

#: How much of the audit log's end ``flush_audit`` searches.
AUDIT_TAIL = 16 << 20
DATABASE = "decisions.sqlite3"
AUDIT = "audit.jsonl"
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
WRITES = ("INSERT", "UPDATE", "DELETE")
T = TypeVar("T")


class StateError(PullguardError):
    """The state directory's database or audit log cannot be trusted; names the file."""


class Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection:
    """One connection to SQLite or PostgreSQL, spoken to in one SQL.

    Statements are written once, with ``?`` placeholders, ``ON CONFLICT``
    upserts (:func:`upsert`) and types both engines know. PostgreSQL gets
    ``%s`` placeholders, and a transaction that begins at the first write, as
    sqlite3's does, so that reads never leave one open; a failed statement
    there rolls its transaction back (PostgreSQL refuses every later one
    until then), and a connection the server dropped is opened again before
    the next transaction.
    """

    def __init__(self, raw: Any, dialect: str, name: str, reopen: Callable[[], Any]) -> None:
        self.raw = raw
        self.dialect = dialect
        #: The file or the URL (without its password), for messages.
        self.name = name
        self._reopen = reopen
        self._in_transaction = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        if self.dialect == SQLITE:
            return self.raw.execute(sql, params)  # type: ignore[no-any-return]
        rows: Rows = self._postgres(sql, lambda text: self.raw.execute(text, params))
        return rows

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.dialect == SQLITE:
            self.raw.executemany(sql, rows)
            return
        listed = list(rows)

        def many(text: str) -> None:
            with self.raw.cursor() as cursor:
                cursor.executemany(text, listed)

        self._postgres(sql, many)

    def _postgres(self, sql: str, action: Callable[[str], T]) -> T:
        """Run ``action`` on the PostgreSQL text of ``sql``.

        The first statement of a transaction (or a read outside one) is tried
        once more on a new session when the server dropped the old one (a
        restart, a failover): nothing of that transaction was committed.
        """
        first = not self._in_transaction
        for attempt in range(2):
            try:
                if first:
                    self._begin_if_write(sql)
                return action(_postgres_sql(sql))
            except psycopg.OperationalError:
                dropped = bool(self.raw.broken)
                self.rollback()
                if not (first and dropped) or attempt:
                    raise
            except Exception:
                self.rollback()
                raise
        raise AssertionError("unreachable")

    def begin(self) -> None:
        """Start a transaction that takes the write lock at once (SQLite) or now (PostgreSQL)."""
        if self.dialect == SQLITE:
            self.raw.execute("BEGIN IMMEDIATE")
            return
        self._reopen_if_broken()
        self.raw.execute("BEGIN")
        self._in_transaction = True

    def commit(self) -> None:
        if self.dialect == SQLITE:
            self.raw.commit()
        elif self._in_transaction:
            self._in_transaction = False
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.dialect == SQLITE:
            self.raw.rollback()
        elif self._in_transaction:
            self._in_transaction = False
            if not self.raw.broken:
                self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def quick_check(self) -> list[str]:
        """SQLite's own consistency check; PostgreSQL keeps its own: ``["ok"]`` when it answers."""
        if self.dialect == SQLITE:
            return [str(r[0]) for r in self.raw.execute("PRAGMA quick_check(20)").fetchall()]
        self.execute("SELECT 1").fetchone()
        return ["ok"]

    def columns(self, table: str) -> set[str]:
        """The columns ``table`` has (empty when it does not exist)."""
        if self.dialect == SQLITE:
            return {str(row[1]) for row in self.raw.execute(f"PRAGMA table_info({table})")}
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        ).fetchall()
        return {str(row[0]) for row in rows}

    def _begin_if_write(self, sql: str) -> None:
        if not self._in_transaction:
            self._reopen_if_broken()
            if sql.lstrip()[:6].upper() in WRITES:
                self.raw.execute("BEGIN")
                self._in_transaction = True

    def _reopen_if_broken(self) -> None:
        if self.raw.broken or self.raw.closed:
            self.raw = self._reopen()


@functools.lru_cache(maxsize=256)
def _postgres_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def upsert(table: str, columns: Sequence[str], key: int) -> str:
    """Insert a row, replacing the one with the same first ``key`` columns (both engines)."""
    marks = ",".join("?" * len(columns))
    updates = ", ".join(f"{column}=excluded.{column}" for column in columns[key:])
    # Table and columns are this package's constants, never input.
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
    return f"{insert} ON CONFLICT ({', '.join(columns[:key])}) DO UPDATE SET {updates}"


def open_sqlite(state_dir: Path) -> Connection:
    """Open the SQLite database, refusing one that is damaged or lost (see the package doc)."""
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
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path} is not a usable pullguard database: {exc}") from None
    return Connection(db, SQLITE, str(path), lambda: db)


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


class Tables:
    """What every table module shares: the connection, its lock and the audit file."""

    _db: Connection
    _lock: threading.Lock
    _audit_path: Path
