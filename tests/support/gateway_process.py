"""A gateway run alone with ``pullguard serve gateway`` (a replica), and layer
processes run alone with ``pullguard serve LAYER``, as an operator who runs
several of each would start them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from pullguard.gateway.supervisor import grpc_healthy
from tests.support.stack import free_port, pullguard_command


class Process:
    """One ``pullguard serve SERVICE`` process, its output in ``log``."""

    def __init__(self, command: list[str], log: Path, health: str) -> None:
        self.command = command
        self.log = log
        self.health = health
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=log, start_new_session=True
            )

    def wait_healthy(self, timeout: float = 90) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            if grpc_healthy(self.health, timeout=0.5):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.command} not healthy: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL, by pid: no drain, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def layer_process(layer: str, listen: str, config_path: Path) -> Process:
    command = [*pullguard_command(), "serve", layer, "--listen", listen]
    command += ["--config", str(config_path)]
    log = config_path.with_name(f"{layer}-{listen.rpartition(':')[2]}.log")
    return Process(command, log, listen)


class Gateway(Process):
    """A gateway with its own config file: ``config`` plus fresh listen addresses."""

    def __init__(self, config: dict[str, Any], path: Path, **extra: Any) -> None:
        self.config = {
            **config,
            "listen": f"127.0.0.1:{free_port()}",
            "grpc_listen": f"127.0.0.1:{free_port()}",
            **extra,
        }
        self.path = path
        path.write_text(yaml.safe_dump(self.config))
        command = [*pullguard_command(), "serve", "gateway", "--listen", self.address]
        command += ["--grpc-listen", str(self.config["grpc_listen"]), "--config", str(path)]
        super().__init__(command, path.with_suffix(".log"), str(self.config["grpc_listen"]))

    @property
    def address(self) -> str:
        return str(self.config["listen"])

    def start(self) -> None:
        super().start()
        self.wait_healthy()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``pullguard ARGS --config <this gateway's config>``."""
        return subprocess.run(
            [*pullguard_command(), *args, "--config", str(self.path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def decision(self, decision_id: str) -> dict[str, Any]:
        """The recorded report of ``decision_id``, as ``pullguard decisions --json`` lists it."""
        listed = self.cli("decisions", "--json")
        assert listed.returncode == 0, listed.stderr
        found = [r for r in json.loads(listed.stdout) if r["decision_id"] == decision_id]
        assert found, f"no decision {decision_id}"
        return dict(found[0])
