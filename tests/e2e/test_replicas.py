"""Issue 10 (2): gateway replicas on one state_dir leave each other's work alone.

Two real gateway processes share one state_dir (and the layers of one
``pullguard up``): replica ``a`` is started by ``up``, replica ``b`` by
``pullguard serve gateway``. A pull through ``a`` is held half-way through a
blob by a proxy in front of the real upstream registry; ``b`` is restarted
meanwhile, and empties only its own staging folder; ``a``'s pull completes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gated_proxy import GatedProxy
from tests.support.gateway_process import Gateway, Process
from tests.support.images import OCI_INDEX, OCI_MANIFEST, build_image, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import LAYERS, Pullguard

StartPullguard = Callable[..., Pullguard]
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX))


def _replica(first: Pullguard, replica_id: str, **extra: Any) -> Gateway:
    """A second gateway on ``first``'s state_dir and layers."""
    services = {layer: str(first.services[layer]["address"]) for layer in LAYERS}
    path = first.config_path.with_name(f"replica-{replica_id}.yaml")
    return Gateway(first.config, path, replica_id=replica_id, services=services, **extra)


@pytest.fixture
def replicas() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for replica in started:
        replica.stop()


def _manifest(address: str, path: str) -> httpx.Response:
    return httpx.get(f"http://{address}{path}", headers={"Accept": ACCEPT}, timeout=180)


def test_a_restarting_replica_leaves_the_others_pull_in_flight_alone(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    replicas: list[Gateway],
    tmp_path: Path,
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(1, 2 * 1024 * 1024, seed=41))
    push(image, upstream.address, "team/slow")
    proxy = GatedProxy(upstream.url, image.blob_digests[1]).start()
    try:
        first = pullguard_factory(proxy.url, replica_id="a")
        second = _replica(first, "b")
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
    # A third gateway given a's replica id would empty a's folder: it is refused.
    duplicate = _replica(first, "a")
    replicas.append(duplicate)
    Process.start(duplicate)
    assert duplicate.process is not None
    assert duplicate.process.wait(60) != 0
    assert "'a' is in use by another gateway" in duplicate.log.read_text()
