"""The image from the repository's Containerfile, built by `make image` on a
base made from Debian packages, run with podman: one image for every service,
non-root, no build tools, the generated gRPC code inside.

podman keeps its images under build/image-test (vfs, cgroupfs: no host
configuration is touched); a second run reuses the base image and the layers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.podman_image import IMAGE, RLIMITS, SERVING, free_port, health, podman
from tests.support.shared import REPO

# The first build makes the base image too: minutes on a loaded machine.
pytestmark = pytest.mark.timeout(2400)


def run(*args: str, entrypoint: str | None = None) -> str:
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    return podman("run", "--rm", "--network", "none", *RLIMITS, *extra, IMAGE, *args)


def test_the_image_reports_its_version(image: str) -> None:
    assert run("--version").strip() == "pullguard 0.1.0"


def test_the_image_runs_as_a_non_root_user(image: str) -> None:
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image).strip()
    assert user == "65532:65532"
    assert run("-c", "id -u; id -g", entrypoint="/bin/sh").split() == ["65532", "65532"]


def test_the_final_stage_has_no_build_tools_and_the_generated_code(image: str) -> None:
    script = (
        "for p in python3-venv python3-pip python3-dev python3.11-dev gcc cpp make"
        " build-essential libc6-dev; do"
        ' dpkg-query -W -f="\\${Status}\\n" $p 2>/dev/null | grep -q "install ok installed"'
        ' && echo "installed: $p"; done;'
        ' for t in gcc cc make pip pip3; do command -v $t && echo "tool: $t"; done;'
        " /opt/pullguard/bin/python -m pip --version >/dev/null 2>&1 && echo 'tool: pip module';"
        " test -e /src && echo 'sources: /src'; echo done"
    )
    assert run("-c", script, entrypoint="/bin/sh").strip() == "done"
    imports = ";".join(
        f"import pullguard.v1.{n}_pb2_grpc"
        for n in ("analysis", "fetcher", "format", "gateway", "hashverify", "signature", "source")
    )
    run("-c", imports + "; print('ok')", entrypoint="/opt/pullguard/bin/python")


@pytest.fixture
def analysis(image: str) -> Iterator[int]:
    """The analysis layer from the image, on a loopback port, read-only root."""
    port = free_port()
    name = f"pullguard-image-test-{port}"
    podman(
        "run", "-d", "--name", name, *RLIMITS, "--read-only",
        "--mount", "type=tmpfs,destination=/tmp",
        "--mount", "type=tmpfs,destination=/var/lib/pullguard,tmpfs-mode=1777",
        "-p", f"127.0.0.1:{port}:50051",
        image, "serve", "analysis", "--listen", "0.0.0.0:50051",
    )  # fmt: skip
    try:
        yield port
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)


def test_a_layer_from_the_image_answers_its_grpc_health_check(analysis: int) -> None:
    assert health(f"127.0.0.1:{analysis}", time.monotonic() + 60) == SERVING


def test_the_containerfile_builds_on_the_local_base_only() -> None:
    """No FROM names a registry: the base comes from make-base-image.sh."""
    froms = [
        line.split()[1]
        for line in (REPO / "Containerfile").read_text().splitlines()
        if line.startswith("FROM ")
    ]
    assert froms == ["${BASE}", "${BASE}"]
    assert "ARG BASE=localhost/pullguard-base" in (REPO / "Containerfile").read_text()
    assert Path(REPO / "scripts" / "make-base-image.sh").stat().st_mode & 0o111
