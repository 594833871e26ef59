"""Which gateway a CLI command talks to: never a second one on a live stack's state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pullguard.gateway.supervisor import running_gateway
from pullguard.services.runtime.errors import PullguardError
from tests.support.configs import make_config
from tests.support.stack import free_port


def _up_json(state: Path, pid: int, grpc_address: str) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "up.json").write_text(
        json.dumps({"gateway": {"pid": pid, "address": "127.0.0.1:1", "grpc": grpc_address}})
    )


def test_no_stack_and_nothing_listening_means_none(tmp_path: Path) -> None:
    config = make_config(tmp_path, grpc_listen=f"127.0.0.1:{free_port()}")
    assert running_gateway(config) is None


def test_a_dead_stack_leaves_the_state_free(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _up_json(config.state_dir, dead.pid, f"127.0.0.1:{free_port()}")
    assert running_gateway(config) is None


def test_a_live_stack_that_does_not_answer_is_an_error_not_a_second_gateway(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    # This test's own process stands in for a live gateway that never answers.
    _up_json(config.state_dir, os.getpid(), f"127.0.0.1:{free_port()}")
    with pytest.raises(PullguardError, match="not starting a second gateway"):
        running_gateway(config, wait=0.5)


def test_an_unreadable_up_json_falls_back_to_grpc_listen(tmp_path: Path) -> None:
    config = make_config(tmp_path, grpc_listen=f"127.0.0.1:{free_port()}")
    config.state_dir.mkdir(parents=True)
    (config.state_dir / "up.json").write_text("{not json")
    assert running_gateway(config) is None
