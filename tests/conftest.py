"""Test tiers: tests/unit (pure domain), tests/service (a real grpc.aio server
on port 0 with a real stub), tests/gateway, tests/e2e (real registries,
skopeo and cosign, marked ``e2e``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pullguard.services.runtime.config.database import Database
from tests import tmpguard
from tests.support.postgres import PostgresCluster


def pytest_configure(config: pytest.Config) -> None:
    tmpguard.start(config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    tmpguard.check(session)


def pytest_unconfigure(config: pytest.Config) -> None:
    tmpguard.finish(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL server for the session, started on first use."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database | None:
    """The decision database of a test: None (SQLite in state_dir) or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()
