"""`podman kube play` of deploy/k8s/overlays/single's rendered Deployments, on
this machine's loopback: no cluster can run here, so this is the next best
test. The gateway and the six layers run from the image with the rendered
ConfigMap, volumes (the PVCs become podman volumes; staging is one volume
every pod shares) and mutual TLS (Secrets from make-services-tls.sh).

What podman 4.3 (Debian 12) needs changed, and nothing else:
- Services, NetworkPolicies, PodDisruptionBudgets and the CronJob are not
  played (podman has no such objects); one replica per Deployment;
- the gateway dials the Service names, so it gets hostAliases that map each
  pullguard-<layer> to that layer's pod address (what a Service does);
- containerPorts are not published (podman would publish each on 0.0.0.0,
  and all six layers' health ports collide), except the gateway's gRPC API on
  a free 127.0.0.1 port;
- Secrets go into podman's secret store with their data as plain text (podman
  4.3 does not decode base64 there), and secret volumes say optional: false
  (podman 4.3 dereferences it without a default).
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullguard.services.runtime.config import LAYERS
from tests.support.kustomize import K8S, render
from tests.support.podman_image import SERVING, free_port, health, podman

pytestmark = pytest.mark.timeout(2400)

COMPONENTS = (*LAYERS, "gateway")
PLAYED = ("ConfigMap", "PersistentVolumeClaim", "Deployment")

# Health of each layer's mTLS port, from inside the gateway's pod, with the
# gateway's own client certificate and the Service names it dials.
PROBE = """
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
read = lambda name: open(f"/etc/pullguard-tls/{name}", "rb").read()
creds = grpc.ssl_channel_credentials(read("ca.crt"), read("tls.key"), read("tls.crt"))
for address in sys.argv[1:]:
    with grpc.secure_channel(address, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        print(address, stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status)
"""


def _for_podman(doc: dict[str, Any], image: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    if doc["kind"] != "Deployment":
        return doc
    doc["spec"]["replicas"] = 1
    spec = doc["spec"]["template"]["spec"]
    for volume in spec["volumes"]:
        if "secret" in volume:
            volume["secret"]["optional"] = False
    for container in spec["containers"]:
        container["image"] = image
        container.pop("ports", None)
    return doc


def _secrets(tmp_path: Path) -> list[str]:
    """make-services-tls.sh's Secrets, stored in podman with plain-text data."""
    tls = tmp_path / "tls"
    subprocess.run(
        [str(K8S / "make-services-tls.sh"), str(tls), "pullguard"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    names = []
    for component in COMPONENTS:
        stem = f"pullguard-{component}"
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{stem}-tls"},
            "data": {
                "ca.crt": (tls / "ca.crt").read_text(),
                "tls.crt": (tls / f"{stem}.crt").read_text(),
                "tls.key": (tls / f"{stem}.key").read_text(),
            },
        }
        path = tmp_path / f"{stem}-tls.yaml"
        path.write_text(yaml.safe_dump(secret))
        podman("secret", "rm", f"{stem}-tls", check=False)
        podman("secret", "create", f"{stem}-tls", str(path))
        names.append(f"{stem}-tls")
    return names


def _pod_address(deployment: str) -> str:
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", f"{deployment}-pod-0")
    address = podman(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        infra.strip(),
    ).strip()  # fmt: skip
    assert address, f"{deployment}: no pod address"
    return address


@pytest.fixture
def played(image: str, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """The single overlay played; yields the gateway's gRPC port on 127.0.0.1 and its container."""
    docs = [
        _for_podman(d, image) for d in render(K8S / "overlays" / "single") if d["kind"] in PLAYED
    ]
    config = [d for d in docs if d["kind"] == "ConfigMap"]
    gateway = [d for d in docs if d["metadata"]["name"] in ("pullguard-gateway", "pullguard-state")]
    layers = [d for d in docs if d not in gateway and d not in config]
    secrets = _secrets(tmp_path)
    volumes = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
    first, second = tmp_path / "layers.yaml", tmp_path / "gateway.yaml"
    try:
        first.write_text(yaml.safe_dump_all(config + layers))
        podman("kube", "play", str(first), timeout=600)
        deployment = next(d for d in gateway if d["kind"] == "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        spec["hostAliases"] = [
            {"ip": _pod_address(f"pullguard-{layer}"), "hostnames": [f"pullguard-{layer}"]}
            for layer in LAYERS
        ]
        port = free_port()
        spec["containers"][0]["ports"] = [
            {"containerPort": 5050, "hostPort": port, "hostIP": "127.0.0.1"}
        ]
        second.write_text(yaml.safe_dump_all(config + gateway))
        podman("kube", "play", str(second), timeout=600)
        yield port, "pullguard-gateway-pod-0-gateway"
    finally:
        for path in (second, first):
            if path.exists():
                podman("kube", "down", str(path), check=False, timeout=120)
        # The PVCs' volumes, and those podman 4.3 makes for each ConfigMap and
        # Secret (stale files in them would outlive the next run's Secrets).
        for name in [*volumes, "pullguard-config", *secrets]:
            podman("volume", "rm", "-f", name, check=False)
        for name in secrets:
            podman("secret", "rm", name, check=False)


def test_the_rendered_deployments_run_and_talk_mutual_tls(played: tuple[int, str]) -> None:
    port, gateway = played
    assert health(f"127.0.0.1:{port}", time.monotonic() + 120) == SERVING
    addresses = [f"pullguard-{layer}:{50051 + i}" for i, layer in enumerate(LAYERS)]
    deadline = time.monotonic() + 120
    while True:
        done = podman(
            "exec", gateway, "/opt/pullguard/bin/python", "-c", PROBE, *addresses, check=False
        )
        answers = dict(line.split() for line in done.splitlines() if line.startswith("pullguard-"))
        if answers == {a: str(SERVING) for a in addresses} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert answers == {a: str(SERVING) for a in addresses}, done
    for component in COMPONENTS:
        state = podman(
            "inspect", "--format", "{{.State.Status}} {{.RestartCount}}",
            f"pullguard-{component}-pod-0-{component}",
        ).split()  # fmt: skip
        assert state[0] == "running", (component, state)
