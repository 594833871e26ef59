"""Fixtures for RegistryTarget's tests: a hostile target registry, a second
server playing "somewhere else", and a RegistryTarget pointed at the first.

A real registry never answers with a foreign upload Location, a lying
digest or a 50 MB error body; the checks against those can only be shown
to work against a scripted fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.target import RegistryTarget
from tests.support.configs import make_config
from tests.support.hostile import HostileUpstream

MakeTarget = Callable[..., RegistryTarget]


@pytest.fixture
async def registry() -> AsyncIterator[HostileUpstream]:
    """The target registry pullguard pushes to."""
    async with HostileUpstream() as server:
        yield server


@pytest.fixture
async def elsewhere() -> AsyncIterator[HostileUpstream]:
    """Another server on 127.0.0.1: where a hostile answer points the client."""
    async with HostileUpstream() as server:
        yield server


@pytest.fixture
async def make_target(tmp_path: Path) -> AsyncIterator[MakeTarget]:
    """``make_target(url, limits={...}, **target_settings)`` -> RegistryTarget
    on an insecure (http) target, closed after the test."""
    made: list[RegistryTarget] = []

    def make(url: str, limits: dict[str, Any] | None = None, **settings: Any) -> RegistryTarget:
        config = make_config(
            tmp_path,
            target={"kind": "registry", "url": url, "insecure": True, **settings},
            limits=limits or {},
        )
        client = RegistryTarget(config.target, config.limits)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def blob_file(tmp_path: Path) -> Callable[[bytes], Path]:
    """``blob_file(data)`` -> a file holding ``data``, as in the admitted store."""

    def write(data: bytes) -> Path:
        path = tmp_path / "blobs" / data.hex()[:16]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return write
