"""podman for the image tests (tests/image): a private store under
build/image-test (vfs, cgroupfs: no host configuration is touched), runc with
explicit rlimits (crun cannot raise rlimits in this sandbox), and the image
built once per session by `make image`."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.shared import REPO

STORE = REPO / "build" / "image-test"
IMAGE = "localhost/pullguard:image-test"
PODMAN = [
    "podman",
    "--root",
    str(STORE / "root"),
    "--runroot",
    str(STORE / "runroot"),
    "--storage-driver",
    "vfs",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "file",
    "--runtime",
    "runc",
]
RLIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
#: `podman kube play` has no --ulimit: the same limits through containers.conf.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
"""


SERVING = health_pb2.HealthCheckResponse.SERVING


def podman(*args: str, timeout: float = 300, check: bool = True, stdin: str | None = None) -> str:
    conf = STORE / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(CONTAINERS_CONF)
    done = subprocess.run(
        [*PODMAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
        env={**os.environ, "CONTAINERS_CONF": str(conf)},
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def build_image() -> str:
    """`make image` into the private store; returns the image name."""
    STORE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={IMAGE}", f"PODMAN={' '.join(PODMAN)}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    assert done.returncode == 0, f"make image:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def health(address: str, deadline: float, service: str = "") -> int:
    """The gRPC health status at address, retried until deadline (bounded)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=3
                )
                status: int = reply.status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return status
                last = AssertionError(f"status {status}")
            except grpc.RpcError as exc:
                last = exc
        time.sleep(0.5)
    raise AssertionError(f"{address} did not answer SERVING to its health check: {last}")
