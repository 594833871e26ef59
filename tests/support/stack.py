"""Run pullguard as a user would: ``pullguard up --config FILE``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

# Every layer: the same list `pullguard up` starts.
from pullguard.services.runtime.config import LAYERS

_handed_out: set[int] = set()
#: Starts of one stack when a port it was given is taken by then (see Pullguard._move).
PORT_ATTEMPTS = 3
#: How ``pullguard up`` (and each layer) says its address is taken.
_TAKEN_RE = re.compile(r"cannot listen on (?P<address>127\.0\.0\.1:\d+)\b.*Address already in use")


def _worker_share() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker: (0, 1) when the tests run in one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit()):
        return 0, 1
    return int(worker[2:]), max(int(count), 1)


def free_port() -> int:
    """A free loopback port this test process has not handed out before.

    The kernel may offer a port again once its probe socket is closed, and two
    services given one port would collide. Parallel workers (pytest-xdist)
    each keep to their own share of the port numbers, so two workers never
    hand out the same port either. The share goes by ``port // 2``: Linux
    gives ``bind`` even ports first (odd ones are left for ``connect``).
    """
    index, count = _worker_share()
    for _ in range(100 * count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if (port // 2) % count == index and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh loopback port found")


def pullguard_command() -> list[str]:
    """The installed entry point next to the test interpreter (.venv/bin/pullguard)."""
    candidate = Path(sys.executable).parent / "pullguard"
    return (
        [str(candidate)] if candidate.exists() else [sys.executable, "-m", "pullguard.gateway.cli"]
    )


@dataclass
class Pullguard:
    config_path: Path
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    output: Path | None = None
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Extra arguments of `pullguard up` (e.g. --no-restart).
    up_args: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return str(self.config["listen"])

    @property
    def state_dir(self) -> Path:
        return Path(self.config["state_dir"])

    def start(self, timeout: float = 60) -> None:
        self.output = self.config_path.with_suffix(".log")
        for attempt in range(PORT_ATTEMPTS):
            taken = self._start(timeout)
            if taken is None:
                return
            if attempt + 1 < PORT_ATTEMPTS:
                self._move(taken)
        raise AssertionError(f"pullguard up exited: {self.log()}")

    def _start(self, timeout: float) -> str | None:
        """Start ``pullguard up`` and wait until it is ready; the address another
        process took meanwhile (``up`` then starts nothing and exits), if so."""
        assert self.output is not None
        logged = self.output.stat().st_size if self.output.exists() else 0
        with self.output.open("ab") as log:
            self.process = subprocess.Popen(
                [*pullguard_command(), "up", "--config", str(self.config_path), *self.up_args],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                taken = _TAKEN_RE.search(self.log()[logged:])
                if taken is not None:
                    return taken["address"]
                raise AssertionError(f"pullguard up exited: {self.log()}")
            up = self.state_dir / "up.json"
            if up.exists():
                self.services = json.loads(up.read_text())
                return None
            time.sleep(0.1)
        raise AssertionError(f"pullguard up not ready in {timeout}s: {self.log()}")

    def _move(self, address: str) -> None:
        """Give the listener at ``address`` a fresh port, in the file and in ``config``.

        free_port's port was free when the config was written; an outgoing
        connection of another test may have taken it since. That is the test's
        race, not pullguard's: pullguard rightly refuses to start.
        """
        fresh = f"127.0.0.1:{free_port()}"
        self.config_path.write_text(self.config_path.read_text().replace(address, fresh))
        self.config = _replaced(self.config, address, fresh)

    def log(self) -> str:
        return (
            self.output.read_text(errors="replace") if self.output and self.output.exists() else ""
        )

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``pullguard ARGS --config <this config>``, as an operator would."""
        return subprocess.run(
            [*pullguard_command(), *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"http://{self.address}{path}", timeout=60, **kwargs)

    def serve(self, layer: str) -> subprocess.Popen[bytes]:
        """Start one layer alone on its configured address, as an operator would."""
        assert self.output is not None
        with self.output.open("ab") as log:
            return subprocess.Popen(
                [
                    *pullguard_command(),
                    "serve",
                    layer,
                    "--listen",
                    self.config["services"][layer],
                    "--config",
                    str(self.config_path),
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )


def report_findings(
    report: dict[str, Any], layer: str | None = None, code: str | None = None
) -> list[dict[str, Any]]:
    """The findings of a decision report (``pullguard decisions --json``), of every
    step or of ``layer``'s, of any code or of ``code``, in report order."""
    return [
        finding
        for step in report["layers"]
        if layer is None or step["layer"] == layer
        for finding in step["findings"]
        if code is None or finding["code"] == code
    ]


def _replaced(value: Any, old: str, new: str) -> Any:
    """``value`` (a config) with every string equal to ``old`` replaced by ``new``."""
    if isinstance(value, dict):
        return {key: _replaced(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, old, new) for item in value]
    return new if value == old else value


def write_config(tmp_path: Path, upstream: str, **extra: Any) -> tuple[Path, dict[str, Any]]:
    """A config with upstream alias 'lab' at ``upstream`` and every address on a free port."""
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "grpc_listen": f"127.0.0.1:{free_port()}",
        "state_dir": str(tmp_path / "state"),
        "upstreams": {"lab": {"url": upstream, "insecure": True}},
        "default_upstream": "lab",
        "services": {layer: f"127.0.0.1:{free_port()}" for layer in LAYERS},
        "limits": {"layer_timeout": 20.0},
        "policy": {"rules": [{"match": "lab/**", "signature": "none"}], "deny": ["**/evil/**"]},
    }
    for key, value in extra.items():
        config[key] = value
    path = tmp_path / "pullguard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config
