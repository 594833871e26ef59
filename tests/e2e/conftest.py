"""Real parts for end-to-end tests: Debian's docker-registry processes on
127.0.0.1, the real skopeo, and pullguard started with ``pullguard up``."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.gateway_process import Process
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, write_config


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(
            f"{binary} is not installed: run `make system-deps` (the Makefile's test target does)"
        )


def _registry(root: Path) -> Iterator[RegistryProcess]:
    _require("docker-registry")
    _require("skopeo")
    registry = RegistryProcess(root)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[RegistryProcess]:
    yield from _registry(tmp_path / "upstream")


@pytest.fixture(scope="module")
def shared_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One upstream for the tests of a module, each using repositories (and
    image seeds) of its own: a registry start per test saved."""
    yield from _registry(tmp_path_factory.mktemp("upstream"))


@pytest.fixture
def target(tmp_path: Path) -> Iterator[RegistryProcess]:
    """A second registry: the private registry of ``target: {kind: registry}`` (deletes on)."""
    yield from _registry(tmp_path / "target")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """``pullguard serve`` processes a test started; stopped, last first, after it."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


def _factory(folder: Callable[[], Path]) -> Iterator[Callable[..., Pullguard]]:
    started: list[Pullguard] = []

    def start(upstream_url: str, up_args: tuple[str, ...] = (), **extra: object) -> Pullguard:
        path, config = write_config(folder(), upstream_url, **extra)
        instance = Pullguard(path, config, up_args=up_args)
        started.append(instance)
        instance.start()
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def pullguard_factory(tmp_path: Path) -> Iterator[Callable[..., Pullguard]]:
    yield from _factory(lambda: tmp_path)


@pytest.fixture(scope="module")
def module_pullguard_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Pullguard]]:
    """``pullguard_factory`` for a stack that the tests of a module share (a
    stack start is the main cost of an end-to-end test); each stack gets a
    folder of its own and is stopped, by pid, after the module's last test."""
    yield from _factory(lambda: tmp_path_factory.mktemp("stack"))
