"""The ways an image is pulled in the benchmark, each timed from a fresh start.

- direct: skopeo copy from the upstream registry;
- distribution: Debian's docker-registry as a pull-through cache
  (``proxy.remoteurl``), a fresh one for every cold pull;
- pullguard: ``pullguard up`` with a fresh state folder for every cold pull.

Every pull is ``skopeo copy docker://… oci:DIR`` into an emptied folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from tests.bench.workload import BenchImage
from tests.support.images import pull
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, write_config

#: A verdict may take long on a loaded machine with a 1 GiB image: the default, not the tests'.
LAYER_TIMEOUT = 120.0
#: Seconds ``pullguard up`` may take to be ready (a 50,000-record database on a loaded machine).
START_TIMEOUT = 300.0
#: The prefix of the upstream in pullguard's config (write_config's alias).
ALIAS = "lab"


def timed_pull(source: str, destination: Path) -> float:
    """Seconds for skopeo to copy ``source`` into an empty OCI layout; a failure raises."""
    shutil.rmtree(destination, ignore_errors=True)
    started = time.perf_counter()
    result = pull(source, destination, "v1")
    elapsed = time.perf_counter() - started
    shutil.rmtree(destination, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"pull of {source} failed: {result.stderr.strip()}")
    return elapsed


class _Process(Protocol):
    def start(self) -> None: ...

    def stop(self) -> object: ...


P = TypeVar("P", bound=_Process)


@contextmanager
def _running(process: P, root: Path) -> Iterator[P]:
    """Start ``process``; stop it and remove ``root``, its files, after."""
    process.start()
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(root, ignore_errors=True)


def pull_through_cache(root: Path, remote: str) -> AbstractContextManager[RegistryProcess]:
    """A fresh distribution pull-through cache of ``remote``."""
    shutil.rmtree(root, ignore_errors=True)
    return _running(RegistryProcess(root, proxy_remote=remote), root)


def pullguard_stack(
    root: Path,
    upstream_url: str,
    database: dict[str, str] | None = None,
    vulnerabilities: dict[str, object] | None = None,
) -> AbstractContextManager[Pullguard]:
    """``pullguard up`` with a fresh state folder, upstream ``lab`` at ``upstream_url``;
    ``database`` is the config's ``database:`` setting (None: SQLite in the state folder),
    ``vulnerabilities`` its vulnerability gate (None: no gate)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    extra: dict[str, object] = {"limits": {"layer_timeout": LAYER_TIMEOUT}}
    if database is not None:
        extra["database"] = database
    if vulnerabilities is not None:
        extra["vulnerabilities"] = vulnerabilities
    path, config = write_config(root, upstream_url, **extra)
    return _running(SlowStart(path, config), root)


class SlowStart(Pullguard):
    """A stack given time to start: the vulnerability layer loads its whole database first."""

    def start(self, timeout: float = START_TIMEOUT) -> None:
        try:
            super().start(timeout)
        except AssertionError:
            self.stop()  # not ready in time: stopped by its PID, not left behind
            raise


def via_pullguard(stack: Pullguard, image: BenchImage) -> str:
    return f"{stack.address}/{ALIAS}/{image.reference}"


def via_registry(registry_address: str, image: BenchImage) -> str:
    return f"{registry_address}/{image.reference}"


def peak_rss_mib(stack: Pullguard) -> dict[str, float]:
    """Each process of the stack's peak resident set (VmHWM) so far, in MiB.

    The gateway and every layer service from up.json, and ``up`` itself.
    """
    pids = {name: int(entry["pid"]) for name, entry in stack.services.items()}
    if stack.process is not None:
        pids["up"] = stack.process.pid
    return {name: _vm_hwm_kb(pid) / 1024 for name, pid in sorted(pids.items())}


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
