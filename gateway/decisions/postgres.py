"""PostgreSQL for the decision database, and the leases that keep replicas to one fetch.

The decision tables use one connection (:class:`~.database.Connection`).
A replica verifying an image holds ``pg_advisory_lock`` on its (repository,
digest) for as long as it works on it, so that the other replicas wait and
then find the admission instead of fetching the same blobs again. An
advisory lock lives in its session, so each lease is a session of its own,
opened to take the lock and closed to give it back: a lease never returns
to a pool still held, and a replica that dies, or loses its connection,
releases its leases with its sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from pullguard.gateway.decisions.database import POSTGRESQL, Connection, StateError
from pullguard.services.runtime.config.database import Database

#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT = 10


def _connect(database: Database, **extra: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            database.url,
            password=database.password,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
            **extra,
        )
    except psycopg.Error as exc:
        # libpq's messages name the host and user, never the password.
        raise StateError(f"database {database.url} is not reachable: {exc}") from None


def open_postgres(database: Database) -> Connection:
    return Connection(_connect(database), POSTGRESQL, database.url, lambda: _connect(database))


class Leases:
    """No leases: SQLite means one machine, where the in-process lock is enough."""

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        yield


class AdvisoryLeases(Leases):
    """Cross-replica leases as PostgreSQL advisory locks, one session per held lease."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold the lease on ``name``, waiting while another session holds it."""
        digest = hashlib.sha256(b"pullguard lease " + name.encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        where = f"database {self._database.url}"
        try:
            session = await psycopg.AsyncConnection.connect(
                self._database.url,
                password=self._database.password,
                connect_timeout=CONNECT_TIMEOUT,
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise StateError(f"{where} is not reachable for the lease of {name}: {exc}") from None
        try:
            try:
                await session.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.Error as exc:
                raise StateError(f"{where}: lease of {name}: {exc}") from None
            yield
        finally:
            # Ending the session gives the lock back (the server drops its locks).
            await session.close()
