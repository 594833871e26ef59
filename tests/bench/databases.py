"""The decision databases the ``database`` section compares: SQLite and PostgreSQL.

PostgreSQL is a throw-away cluster of tests.support.postgres (initdb in a temp
folder, an unprivileged server on 127.0.0.1, stopped by its PID); every cold
pull gets a fresh, empty database of its own, as it gets a fresh state folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.postgres import PostgresCluster

#: A fresh ``database:`` setting for each call; None is SQLite in the state folder.
Setting = Callable[[], dict[str, str] | None]


def sqlite() -> None:
    return None


@contextmanager
def postgresql(root: Path) -> Iterator[Setting]:
    """A PostgreSQL cluster for the run; yields a maker of fresh ``database:`` settings,
    the URL and the password in a file as an operator writes them."""
    cluster = PostgresCluster()
    password = root / "database.password"

    def fresh() -> dict[str, str]:
        return {"url": cluster.create_database().url, "password_file": str(password)}

    try:
        cluster.start()
        password.write_text(f"{cluster.password}\n")
        password.chmod(0o600)
        yield fresh
    finally:
        cluster.stop()
