"""Issue 14 (1): nobody else can answer for a dead layer, and ``up`` restarts it.

On real processes: ``pullguard up`` with no ``services:`` addresses puts the
layers on Unix sockets in a private directory. A layer is SIGKILLed, and an
unprivileged user (uid 65534, through ``setpriv``) tries to serve a fake
hashverify that answers ALLOW on the freed address; the kernel refuses, and
the layer ``up`` restarts still denies a tampered blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pullguard.gateway.supervisor import grpc_healthy
from tests.support import impostor
from tests.support.images import BuiltImage, build_image, pull, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _image(tmp_path: Path, name: str, seed: int) -> BuiltImage:
    return build_image(tmp_path / f"src-{name}", "v1", random_layers(2, 64 * 1024, seed=seed))


def _admitted(pg: Pullguard, digest: str) -> bool:
    return (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]).exists()


def _up_json(pg: Pullguard) -> dict[str, dict[str, object]]:
    return dict(json.loads((pg.state_dir / "up.json").read_text()))


def _wait_restarted(pg: Pullguard, layer: str, old_pid: int) -> int:
    """The new pid ``up`` wrote for ``layer``, once that process answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entry = _up_json(pg)[layer]
        pid = int(str(entry["pid"]))
        if pid != old_pid and grpc_healthy(str(entry["address"]), timeout=0.5):
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{layer} was not restarted: {pg.log()[-3000:]}")


def _try_takeover(address: str) -> subprocess.CompletedProcess[str]:
    """Run the ALLOW-everything hashverify as uid 65534 on ``address``."""
    process = subprocess.Popen(
        [*NOBODY, sys.executable, impostor.__file__, address],
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    if first.startswith("BOUND"):
        process.kill()
        _, stderr = process.communicate(timeout=30)
        return subprocess.CompletedProcess(process.args, 0, first, stderr)
    stdout, stderr = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, first + stdout, stderr)


@pytest.fixture
def tampered(upstream: RegistryProcess, tmp_path: Path) -> BuiltImage:
    """An image whose second blob's bytes no longer have its digest upstream."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is not installed")
    if os.geteuid() != 0:
        pytest.fail("this test switches to uid 65534 and must run as root")
    image = _image(tmp_path, "bad", seed=7)
    push(image, upstream.address, "team/bad")
    path = upstream.blob_file(image.blob_digests[1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "sha256:" + hashlib.sha256(data).hexdigest() != image.blob_digests[1]
    return image


def test_another_user_cannot_take_a_dead_layers_address(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    tampered: BuiltImage,
    tmp_path: Path,
) -> None:
    pg = pullguard_factory(upstream.url, services=None)
    layer = _up_json(pg)["hashverify"]
    address, pid = str(layer["address"]), int(str(layer["pid"]))
    assert address.startswith("unix:"), address
    socket_dir = Path(address.removeprefix("unix:")).parent
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700

    os.kill(pid, signal.SIGKILL)
    takeover = _try_takeover(address)

    assert takeover.returncode == impostor.REFUSED, takeover.stdout + takeover.stderr
    assert "Permission denied" in takeover.stderr, takeover.stderr
    _wait_restarted(pg, "hashverify", pid)
    result = pull(f"{pg.address}/lab/team/bad:v1", tmp_path / "out", "v1")
    assert result.returncode != 0, result.stdout
    assert "hashverify" in result.stderr, result.stderr
    for digest in (tampered.digest, *tampered.blob_digests):
        assert not _admitted(pg, digest), f"{digest} reached the admitted store"


def test_up_restarts_a_killed_layer_and_pulls_work_again(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "good", seed=8)
    push(image, upstream.address, "team/good")
    pg = pullguard_factory(upstream.url, services=None)
    old_pid = int(str(_up_json(pg)["format"]["pid"]))

    os.kill(old_pid, signal.SIGKILL)
    new_pid = _wait_restarted(pg, "format", old_pid)

    result = pull(f"{pg.address}/lab/team/good:v1", tmp_path / "out", "v1")
    assert result.returncode == 0, result.stderr + pg.log()[-3000:]
    assert _admitted(pg, image.digest)
    log = pg.log()
    assert "format exited with code -9; restarting it in 0.5 s" in log
    assert f"format restarted (pid {new_pid})" in log
