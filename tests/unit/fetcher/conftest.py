"""Fixtures for the fetcher's domain tests: a hostile upstream and a Fetcher on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pullguard.services.fetcher.operations import Fetcher
from tests.support.configs import make_config
from tests.support.hostile import HostileUpstream

MakeFetcher = Callable[..., Fetcher]


@pytest.fixture
async def upstream() -> AsyncIterator[HostileUpstream]:
    async with HostileUpstream() as server:
        yield server


@pytest.fixture
async def other() -> AsyncIterator[HostileUpstream]:
    """A second server: a token realm, a CDN or an attacker on another port."""
    async with HostileUpstream() as server:
        yield server


@pytest.fixture
async def make_fetcher(tmp_path: Path) -> AsyncIterator[MakeFetcher]:
    """``make_fetcher(url, limits={...}, options={...}, **upstream_settings)`` -> Fetcher
    with alias 'lab' (and more upstreams with ``upstreams={alias: settings}``).

    Retries back off in milliseconds, so failure tests stay fast. ``options``
    go to every RegistryClient (``resolver``, ``connector``, ``concurrency``).
    """
    made: list[Fetcher] = []

    def make(
        url: str,
        limits: dict[str, Any] | None = None,
        grace: float = 10.0,
        options: dict[str, Any] | None = None,
        upstreams: dict[str, dict[str, Any]] | None = None,
        **settings: Any,
    ) -> Fetcher:
        config = make_config(
            tmp_path,
            upstreams={
                "lab": {"url": url, "insecure": url.startswith("http:"), **settings},
                **(upstreams or {}),
            },
            default_upstream="lab",
            limits=limits or {},
        )
        fetcher = Fetcher(
            config,
            client_options={
                "retry_backoff": 0.01,
                "max_retry_after": 0.05,
                "throughput_grace": grace,
                **(options or {}),
            },
        )
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


@pytest.fixture
def staged(tmp_path: Path) -> Callable[[], list[Path]]:
    """``staged()`` -> every file in the staging store, partial ones included."""
    root = tmp_path / "state" / "staging"

    def files() -> list[Path]:
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    return files
