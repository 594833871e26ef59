"""Issue 10 (2): a replica serves what another admitted from the target, verified.

Two real gateway processes, each with its own state_dir and layers, share
one real PostgreSQL database and one real docker-registry target. An image
admitted through ``a`` is served by ``b`` with the upstream stopped: ``b``
reads it from the target, the store of record, not from the upstream. A
blob damaged in the target is never served: ``b`` hashes what it read,
refuses it, and (the upstream being down) answers with an outage.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.test_replica_target import ACCEPT, _layers
from tests.support.gateway_process import Gateway, Process
from tests.support.images import build_image, push, random_layers
from tests.support.postgres import PostgresCluster
from tests.support.registry_process import RegistryProcess


def _get(gateway: Gateway, path: str) -> httpx.Response:
    return httpx.get(
        f"http://{gateway.address}/v2/lab/team/app/{path}", headers={"Accept": ACCEPT}, timeout=120
    )


def test_a_replica_serves_from_the_target_what_another_admitted_never_unverified(
    upstream: RegistryProcess,
    target: RegistryProcess,
    processes: list[Process],
    postgres_cluster: PostgresCluster,
    tmp_path: Path,
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(2, 64 * 1024, seed=93))
    push(image, upstream.address, "team/app")
    database = postgres_cluster.create_database()
    password = tmp_path / "database.password"
    password.write_text(f"{database.password}\n")
    setting = {"url": database.url, "password_file": str(password)}
    target_config = {"kind": "registry", "url": target.url, "insecure": True, "prefix": "mirror"}
    gateways: dict[str, Gateway] = {}
    for replica in ("a", "b"):
        config = _layers(tmp_path / replica, upstream, target_config, processes)
        path = tmp_path / f"gateway-{replica}.yaml"
        gateways[replica] = Gateway(config, path, replica_id=replica, database=setting)
        processes.append(gateways[replica])
        gateways[replica].start()
    a, b = gateways["a"], gateways["b"]
    admitted = _get(a, "manifests/v1")
    assert admitted.status_code == 200, admitted.text + a.log.read_text()

    # From here on nothing can be verified from the upstream.
    upstream.stop()
    layer = image.blob_digests[1]
    stored = target.blob_file(layer)
    good = stored.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))

    refused = _get(b, f"manifests/{image.digest}")
    assert refused.status_code in (502, 503, 504), refused.text
    state = tmp_path / "b" / "state"
    assert not (state / "admitted" / "blobs" / "sha256" / layer[7:]).exists()
    # Refused before it reached the store, not caught there later.
    assert not (state / "damaged").exists() or not any((state / "damaged").iterdir())
    assert "not what was admitted" in b.log.read_text()
    assert _get(b, f"blobs/{layer}").status_code == 404

    stored.write_bytes(good)
    served = _get(b, f"manifests/{image.digest}")
    assert served.status_code == 200, served.text + b.log.read_text()
    assert served.content == image.manifest
    for digest, data in zip(image.blob_digests, (image.config, *image.layers), strict=True):
        blob = _get(b, f"blobs/{digest}")
        assert blob.status_code == 200 and blob.content == data
    assert "brought from the target, verified" in b.log.read_text()
