"""Issue 10 (2): with ``target: {kind: registry}``, the target is the store of record.

Two real gateway processes (``pullguard serve gateway``, replicas ``a`` and
``b``) on one set of layer processes publish to one real docker-registry
target with deletes enabled. Either they share one state_dir (one SQLite
database, one admitted store), or each has its own (each its own records
and cache: only the target is shared). An image admitted through ``a`` is
served by ``b``; its upstream blob then goes bad, ``reevaluate --force`` on
``b`` revokes it and deletes it from the target, and ``a`` no longer serves
it: it verifies again, from the upstream, and refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway_process import Gateway, Process, layer_process
from tests.support.images import OCI_INDEX, OCI_MANIFEST, build_image, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import LAYERS, free_port, write_config

ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX))
NAME = "mirror/lab/team/app"


def _manifest(gateway: Gateway) -> httpx.Response:
    return httpx.get(
        f"http://{gateway.address}/v2/lab/team/app/manifests/v1",
        headers={"Accept": ACCEPT},
        timeout=120,
    )


def _in_target(target: RegistryProcess, digest: str) -> int:
    return httpx.head(
        f"{target.url}/v2/{NAME}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=30
    ).status_code


def _layers(
    folder: Path, upstream: RegistryProcess, target: dict[str, Any], processes: list[Process]
) -> dict[str, Any]:
    """Start one process per layer on ``folder``'s config; return that config."""
    folder.mkdir()
    services = {layer: f"127.0.0.1:{free_port()}" for layer in LAYERS}
    path, config = write_config(folder, upstream.url, services=services, target=target)
    started = [layer_process(layer, address, path) for layer, address in services.items()]
    for process in started:
        process.start()
        processes.append(process)
    for process in started:
        process.wait_healthy()
    return config


@pytest.mark.parametrize("shared_state", [True, False], ids=["one-state-dir", "own-state-dirs"])
def test_a_revocation_on_one_replica_withdraws_the_image_from_all(
    upstream: RegistryProcess,
    target: RegistryProcess,
    processes: list[Process],
    tmp_path: Path,
    shared_state: bool,
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(2, 64 * 1024, seed=91))
    push(image, upstream.address, "team/app")
    target_config = {"kind": "registry", "url": target.url, "insecure": True, "prefix": "mirror"}
    gateways: dict[str, Gateway] = {}
    config: dict[str, Any] = {}
    for replica in ("a", "b"):
        if not config or not shared_state:
            # Layers share the gateway's state_dir (staging): one set per state_dir.
            config = _layers(tmp_path / replica, upstream, target_config, processes)
        path = tmp_path / f"gateway-{replica}.yaml"
        gateways[replica] = Gateway(config, path, replica_id=replica)
        processes.append(gateways[replica])
        gateways[replica].start()
    a, b = gateways["a"], gateways["b"]

    admitted = _manifest(a)
    assert admitted.status_code == 200, admitted.text + a.log.read_text()
    assert _in_target(target, image.digest) == 200
    # b did not admit it, and serves it: the same bytes, every blob verified.
    served = _manifest(b)
    assert served.status_code == 200, served.text + b.log.read_text()
    assert served.content == image.manifest
    for digest, data in zip(image.blob_digests, (image.config, *image.layers), strict=True):
        blob = httpx.get(f"http://{b.address}/v2/lab/team/app/blobs/{digest}", timeout=60)
        assert blob.status_code == 200 and blob.content == data

    # The upstream's layer goes bad; a forced re-evaluation on b revokes the image.
    stored = upstream.blob_file(image.blob_digests[1])
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    done = b.cli("reevaluate", "--force", "--json")
    assert done.returncode == 1, done.stdout + done.stderr + b.log.read_text()
    outcomes = {i["repository"]: i for i in json.loads(done.stdout)}
    assert outcomes["lab/team/app"]["outcome"] == "revoked"
    assert outcomes["lab/team/app"]["target"].startswith("withdrawn")
    assert _in_target(target, image.digest) == 404

    # a, which admitted it, no longer serves it: it verifies again and refuses.
    refused = _manifest(a)
    assert refused.status_code == 403, refused.text + a.log.read_text()
    assert refused.json()["errors"][0]["detail"]["layer"] == "hashverify"
    assert _in_target(target, image.digest) == 404
    again = _manifest(b)
    assert again.status_code == 403, again.text
