"""Test tiers: tests/unit (pure domain), tests/service (a real grpc.aio server
on port 0 with a real stub), tests/gateway, tests/e2e (real registries,
skopeo and cosign, marked ``e2e``)."""

from __future__ import annotations

import pytest

from tests import tmpguard


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
