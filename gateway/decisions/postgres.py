"""PostgreSQL for the decision database, and the leases that keep replicas to one fetch.

The decision tables use one connection (:class:`~.database.Connection`).
Leases use connections of their own from a pool: a replica verifying an
image holds ``pg_advisory_lock`` on its (repository, digest) for as long as
it works on it, so that the other replicas wait and then find the admission
instead of fetching the same blobs again. An advisory lock lives in its
session: a replica that dies, or loses its connection, releases it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pullguard.gateway.decisions.database import POSTGRESQL, Connection, StateError
from pullguard.services.runtime.config.database import Database

#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT = 10
#: Lease connections a gateway holds at most (one per image being verified).
LEASES_MAX = 64


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


async def _unlock_all(connection: psycopg.AsyncConnection[Any]) -> None:
    """A lease connection going back to the pool holds no lock (a failure discards it)."""
    await connection.execute("SELECT pg_advisory_unlock_all()")


class Leases:
    """No leases: SQLite means one machine, where the in-process lock is enough."""

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        yield

    async def aclose(self) -> None:
        return None


class AdvisoryLeases(Leases):
    """Cross-replica leases as PostgreSQL advisory locks, one pooled session per held lease."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    async def _opened(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                self._database.url,
                kwargs={
                    "password": self._database.password,
                    "autocommit": True,
                    "connect_timeout": CONNECT_TIMEOUT,
                },
                min_size=0,
                max_size=LEASES_MAX,
                open=False,
                reset=_unlock_all,
                name="pullguard-leases",
            )
            await pool.open()
            self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold the lease on ``name``, waiting while another session holds it."""
        digest = hashlib.sha256(b"pullguard lease " + name.encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        pool = await self._opened()
        try:
            connection = await pool.getconn()
        except psycopg.Error as exc:  # PoolTimeout too
            raise StateError(f"database {self._database.url}: no lease connection: {exc}") from None
        try:
            try:
                await connection.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.Error as exc:
                raise StateError(f"database {self._database.url}: lease of {name}: {exc}") from None
            yield
        finally:
            # The pool's reset unlocks (_unlock_all); if that fails it closes the
            # session, and the server drops the session's locks.
            await pool.putconn(connection)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
