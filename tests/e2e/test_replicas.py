"""Issue 10 (2): gateway replicas on one state_dir leave each other's work alone.

Two real gateway processes share one state_dir (and the layers of one
``pullguard up``): replica ``a`` is started by ``up``, replica ``b`` by
``pullguard serve gateway``. A pull through ``a`` is held half-way through a
blob by a proxy in front of the real upstream registry; ``b`` is restarted
meanwhile, and empties only its own staging folder; ``a``'s pull completes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pullguard.gateway.supervisor import grpc_healthy
from tests.support.gated_proxy import GatedProxy
from tests.support.images import OCI_INDEX, OCI_MANIFEST, build_image, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import LAYERS, Pullguard, free_port, pullguard_command

StartPullguard = Callable[..., Pullguard]
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX))


class Replica:
    """A second gateway on another stack's state_dir and layers (``serve gateway``)."""

    def __init__(self, first: Pullguard, replica_id: str, **extra: Any) -> None:
        config = dict(first.config)
        config.update(
            listen=f"127.0.0.1:{free_port()}",
            grpc_listen=f"127.0.0.1:{free_port()}",
            replica_id=replica_id,
            services={layer: str(first.services[layer]["address"]) for layer in LAYERS},
            **extra,
        )
        self.config = config
        self.path = first.config_path.with_name(f"replica-{replica_id}.yaml")
        self.path.write_text(yaml.safe_dump(config))
        self.log = first.config_path.with_name(f"replica-{replica_id}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return str(self.config["listen"])

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *pullguard_command(),
                    "serve",
                    "gateway",
                    "--listen",
                    self.address,
                    "--grpc-listen",
                    str(self.config["grpc_listen"]),
                    "--config",
                    str(self.path),
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            if grpc_healthy(str(self.config["grpc_listen"]), timeout=0.5):
                return
            time.sleep(0.1)
        raise AssertionError(f"replica not ready: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pullguard_command(), *args, "--config", str(self.path)],
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


def _manifest(address: str, path: str) -> httpx.Response:
    return httpx.get(f"http://{address}{path}", headers={"Accept": ACCEPT}, timeout=180)


def test_a_restarting_replica_leaves_the_others_pull_in_flight_alone(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    replicas: list[Replica],
    tmp_path: Path,
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(1, 2 * 1024 * 1024, seed=41))
    push(image, upstream.address, "team/slow")
    proxy = GatedProxy(upstream.url, image.blob_digests[1]).start()
    try:
        first = pullguard_factory(proxy.url, replica_id="a")
        second = Replica(first, "b")
        replicas.append(second)
        second.start()
        staging = first.state_dir / "staging"
        # What a crash of b left: b's to empty at its start.
        leftover = staging / "b" / ("0" * 32) / "sha256" / ("1" * 64)
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"never admitted")

        with ThreadPoolExecutor(1) as pool:
            pulling = pool.submit(_manifest, first.address, "/v2/lab/team/slow/manifests/v1")
            assert proxy.reached.wait(120), first.log()
            in_flight = sorted(p.name for p in (staging / "a").iterdir())
            assert len(in_flight) == 1
            # b restarts while a's pull is half-way through its layer.
            second.stop()
            second.start()
            assert not leftover.exists()
            assert [p.name for p in (staging / "a").iterdir()] == in_flight
            proxy.release()
            response = pulling.result(timeout=300)
    finally:
        proxy.stop()

    assert response.status_code == 200, response.text + first.log()
    assert response.content == image.manifest
    assert list((staging / "a").iterdir()) == []
    # b serves what a admitted, from the shared admitted store.
    again = _manifest(second.address, "/v2/lab/team/slow/manifests/v1")
    assert again.status_code == 200 and again.content == image.manifest
