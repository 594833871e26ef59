"""Issue 10 (3): every layer runs as two processes; one dies mid-pull.

Twelve real layer processes on loopback (two per layer, ``pullguard serve
LAYER``) and a gateway whose ``services:`` lists both addresses of each
layer: gRPC client-side round-robin with health checking. During a pull of
a ~200 MiB image, the fetcher replica that is downloading a layer, or the
hashverify or format replica that is checking one (whichever has a staged
blob open) is SIGKILLed by pid. The pull in flight either
finishes, every check having run, or is refused cleanly as an outage (503);
nothing unverified is admitted or served, and the next pull (of another
image, so every layer is asked again) succeeds on the survivor.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway_process import Gateway, Process, layer_process
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    build_image,
    push,
    random_layers,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import LAYERS, free_port, write_config

ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX))
LAYER_BYTES = 100 * 1024 * 1024
POLL = 0.01


def _reads_staging(pid: int, staging: Path) -> bool:
    """Whether process ``pid`` has a file under ``staging`` open right now."""
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{staging}/"):
            return True
    return False


def _kill_when_reading(
    replicas: list[Process], staging: Path, pulling: Future[Any]
) -> Process | None:
    """SIGKILL the first of ``replicas`` seen reading a staged blob, or None once the pull ended."""
    while not pulling.done():
        for process in replicas:
            if _reads_staging(process.pid, staging):
                process.kill()
                return process
        time.sleep(POLL)
    return None


def _pull(
    gateway: Gateway, image: BuiltImage, repository: str = "team/big"
) -> tuple[httpx.Response, list[httpx.Response]]:
    """The manifest, and each blob when the manifest was served."""
    base = f"http://{gateway.address}/v2/lab/{repository}"
    with httpx.Client(timeout=600) as client:
        manifest = client.get(f"{base}/manifests/v1", headers={"Accept": ACCEPT})
        if manifest.status_code != 200:
            return manifest, []
        return manifest, [client.get(f"{base}/blobs/{d}") for d in image.blob_digests]


@pytest.mark.parametrize("victim", ["fetcher", "hashverify", "format"])
def test_a_layer_replica_killed_mid_pull_costs_a_retry_or_a_503(
    upstream: RegistryProcess, processes: list[Process], tmp_path: Path, victim: str
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(2, LAYER_BYTES, seed=77))
    push(image, upstream.address, "team/big")
    other = build_image(tmp_path / "next", "v1", random_layers(2, 1024 * 1024, seed=78))
    push(other, upstream.address, "team/next")
    addresses = {layer: [f"127.0.0.1:{free_port()}" for _ in range(2)] for layer in LAYERS}
    path, config = write_config(
        tmp_path,
        upstream.url,
        services=addresses,
        replica_id="gw",
        limits={"layer_timeout": 300.0},
    )
    layers = {layer: [layer_process(layer, a, path) for a in addresses[layer]] for layer in LAYERS}
    for replicas in layers.values():
        for process in replicas:
            process.start()
            processes.append(process)
    for process in processes:
        process.wait_healthy()
    gateway = Gateway(config, tmp_path / "gateway.yaml")
    processes.append(gateway)
    gateway.start()

    with ThreadPoolExecutor(1) as pool:
        pulling = pool.submit(_pull, gateway, image)
        staging = Path(config["state_dir"]) / "staging" / "gw"
        killed = _kill_when_reading(layers[victim], staging, pulling)
        killed_at = time.monotonic()
        manifest, blobs = pulling.result(timeout=900)
        in_flight_ended = time.monotonic() - killed_at

    assert killed is not None, f"no {victim} replica was seen at work: {manifest.text}"
    assert killed.process is not None and killed.process.returncode == -9
    survivor = next(p for p in layers[victim] if p is not killed)
    assert survivor.process is not None and survivor.process.poll() is None
    admitted = Path(config["state_dir"]) / "admitted"
    manifest_file = admitted / "blobs" / "sha256" / image.digest.split(":")[1]
    decision = manifest.headers.get("X-Pullguard-Decision", "")
    if manifest.status_code == 200:
        # Finished: the same bytes, every blob as pushed, and every check ran.
        assert manifest.content == image.manifest
        assert [b.content for b in blobs] == [image.config, *image.layers]
        report = gateway.decision(decision)
        ran = {(s["layer"], s["decision"]) for s in report["layers"]}
        assert {("hashverify", "ALLOW"), ("format", "ALLOW")} <= ran
        outcome = "finished"
    else:
        # Refused cleanly: an outage, nothing admitted, nothing served.
        assert manifest.status_code == 503, manifest.text
        assert not manifest_file.exists()
        outcome = "503"
    assert manifest_file.exists() == (outcome == "finished")
    # The next pull, of another image, succeeds on the survivor.
    again, blobs_again = _pull(gateway, other, "team/next")
    recovered = time.monotonic() - killed_at
    assert again.status_code == 200, again.text
    assert again.content == other.manifest
    assert [b.content for b in blobs_again] == [other.config, *other.layers]
    report = gateway.decision(again.headers["X-Pullguard-Decision"])
    assert ("hashverify", "ALLOW") in {(s["layer"], s["decision"]) for s in report["layers"]}
    print(
        f"\nkilled {victim} pid {killed.pid} mid-pull: pull in flight {outcome}"
        f" {in_flight_ended:.1f} s after the kill; next pull (another image) served"
        f" {recovered:.1f} s after the kill"
    )
