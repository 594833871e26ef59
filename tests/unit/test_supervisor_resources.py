"""`pullguard up`'s process resources: the layers' socket directory, the
restart backoff and the open-file limit its children inherit."""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pullguard.gateway.supervisor import Backoff, Restarter, Stack, private_socket_dir
from pullguard.services.runtime.errors import PullguardError
from tests.support.configs import make_config

# A child that raises its limit as `up` does, then reports what its own child got.
_CHILD = """
import subprocess, sys
from pullguard.gateway.supervisor import raise_open_file_limit
raise_open_file_limit()
subprocess.run([sys.executable, "-c",
    "import resource; print(*resource.getrlimit(resource.RLIMIT_NOFILE))"], check=True)
"""


def _spawned_limits(soft: int, hard: int) -> tuple[tuple[int, int], str]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    result = subprocess.run(
        [sys.executable, "-c", _CHILD],
        preexec_fn=lower,  # noqa: PLW1509 - only lowers a limit, before exec
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    child_soft, child_hard = result.stdout.split()[-2:]
    return (int(child_soft), int(child_hard)), result.stderr


def test_up_raises_the_soft_open_file_limit_to_the_hard_one_for_its_children() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    assert hard > 256
    limits, stderr = _spawned_limits(256, hard)
    assert limits == (hard, hard)
    assert "warning" not in stderr


def test_a_low_hard_open_file_limit_is_raised_to_and_warned_about() -> None:
    limits, stderr = _spawned_limits(256, 1024)
    assert limits == (1024, 1024)
    assert "the hard open-file limit is 1024" in stderr


@pytest.fixture
def short_path() -> Iterator[Path]:
    """A folder with a short path: pytest's own can push a socket past 107 bytes,
    which sends the sockets to a /tmp folder of their own (tested below)."""
    path = Path(tempfile.mkdtemp(prefix="pgsock-"))
    yield path
    shutil.rmtree(path)


def test_restart_backoff_doubles_to_thirty_seconds_and_resets_after_a_minute() -> None:
    backoff = Backoff()
    delays = [backoff.delay(ran_for=1.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.delay(ran_for=60.0) == 0.5
    assert backoff.delay(ran_for=3.0) == 1.0


def test_layers_get_unix_sockets_in_a_private_directory(short_path: Path) -> None:
    config = make_config(short_path)
    stack = Stack.plan(config, None)
    try:
        assert stack.socket_dir == config.state_dir / "run"
        assert stat.S_IMODE(os.lstat(stack.socket_dir).st_mode) == 0o700
        assert stack.addresses["hashverify"] == f"unix:{stack.socket_dir}/hashverify.sock"
        assert stack.exposed() == []
    finally:
        stack.stop()
    assert not (config.state_dir / "run").exists()


def test_a_loose_socket_directory_is_tightened(short_path: Path) -> None:
    run = short_path / "state" / "run"
    run.mkdir(parents=True)
    run.chmod(0o777)
    assert private_socket_dir(short_path / "state") == (run, False)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700


def test_a_socket_directory_of_another_user_is_refused(short_path: Path) -> None:
    run = short_path / "state" / "run"
    run.mkdir(parents=True, mode=0o700)
    os.chown(run, 65534, 65534)
    with pytest.raises(PullguardError, match="not a directory of this user"):
        private_socket_dir(short_path / "state")


def test_a_symlinked_socket_directory_is_refused(short_path: Path) -> None:
    elsewhere = short_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (short_path / "state").mkdir()
    (short_path / "state" / "run").symlink_to(elsewhere)
    with pytest.raises(PullguardError, match="not a directory of this user"):
        private_socket_dir(short_path / "state")


@pytest.mark.parametrize("why", ["long", "shared"])
def test_a_private_tmp_directory_when_state_dir_does_not_fit(tmp_path: Path, why: str) -> None:
    state = tmp_path / ("x" * 90 if why == "long" else "state")
    state.mkdir()
    if why == "shared":
        state.chmod(0o777)
    directory, temporary = private_socket_dir(state)
    try:
        assert temporary and directory.parent == Path("/tmp")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert len(str(directory / "hashverify.sock")) <= 107
    finally:
        directory.rmdir()


def test_ephemeral_stacks_get_a_directory_of_their_own(short_path: Path) -> None:
    config = make_config(short_path)
    first, second = Stack.plan(config, None, ephemeral=True), Stack.plan(config, None, True)
    try:
        assert first.socket_dir != second.socket_dir
        assert first.socket_dir is not None and first.socket_dir.parent == config.state_dir
    finally:
        first.stop()
        second.stop()
    assert not first.socket_dir.exists()


def test_a_state_dir_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PullguardError, match="cannot make a private directory"):
        private_socket_dir(tmp_path / "file" / "state")


class _DeadLayerStack:
    """The part of a Stack the Restarter uses: one layer that keeps dying."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {"format": 0.0}
        self.addresses = {"format": "unix:/run/format.sock"}
        self.respawned: list[str] = []

    def exited(self) -> list[tuple[str, int]]:
        return [("format", -9)] if not self.respawned else []

    def respawn(self, layer: str) -> int:
        self.respawned.append(layer)
        return 4242


def test_a_dead_layer_is_restarted_after_its_backoff() -> None:
    stack = _DeadLayerStack()
    restarter = Restarter(stack)  # type: ignore[arg-type]
    assert restarter.step(100.0) and stack.respawned == []
    assert restarter.step(100.0 + 0.5) and stack.respawned == ["format"]


def test_no_restart_leaves_a_dead_layer_down() -> None:
    stack = _DeadLayerStack()
    restarter = Restarter(stack, enabled=False)  # type: ignore[arg-type]
    for now in (100.0, 101.0, 200.0):
        assert restarter.step(now)
    assert stack.respawned == []


def test_up_json_is_replaced_whole_so_a_reader_never_sees_half_of_it(tmp_path: Path) -> None:
    """`up` rewrites up.json when it restarts a layer; the CLI and tests read it meanwhile."""
    names = ["gateway", "analysis", "fetcher", "format", "hashverify", "signature", "source"]
    processes = {name: SimpleNamespace(pid=1000 + i) for i, name in enumerate(names)}
    stack = Stack(
        config=SimpleNamespace(state_dir=tmp_path),  # type: ignore[arg-type]
        config_path=None,
        listen="127.0.0.1:5000",
        grpc_listen="127.0.0.1:5050",
        processes=processes,  # type: ignore[arg-type]
    )
    stack._write_state()
    torn: list[str] = []
    writing = threading.Event()
    writing.set()

    def read() -> None:
        while writing.is_set():
            text = (tmp_path / "up.json").read_text()
            try:
                json.loads(text)
            except ValueError:
                torn.append(text)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3000):
            stack._write_state()
    finally:
        writing.clear()
        reader.join()
    assert torn == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.json"]
