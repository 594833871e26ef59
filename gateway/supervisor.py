"""``pullguard up``: every layer as its own process, then the gateway.

Each layer runs as ``pullguard serve <layer>``; the supervisor waits until
every one answers the gRPC health check, starts the gateway pointed at them,
waits for the front door, and on SIGINT/SIGTERM stops the gateway first and
the layers after it. Pids and addresses are written to ``state_dir/up.json``
so that operators (and tests) can find each process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.services.runtime.config import LAYERS, Config
from pullguard.services.runtime.errors import PullguardError

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def free_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def grpc_healthy(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def running_gateway(config: Config, wait: float = 20.0) -> str | None:
    """The gRPC address of the gateway serving ``config``'s state, or None if there is none.

    A stack started by ``up`` owns its state_dir (``up.json`` names its
    gateway). While that gateway process lives, commands use it, waiting
    for it if it is slow: a second gateway on the same state would purge
    the staging area under the first one's pulls. Without ``up.json``, a
    gateway run alone (``serve gateway``) is found at ``grpc_listen``.
    """
    try:
        entries = json.loads((config.state_dir / "up.json").read_text())
        pid, address = int(entries["gateway"]["pid"]), str(entries["gateway"]["grpc"])
    except (OSError, ValueError, KeyError, TypeError):
        return config.grpc_listen if grpc_healthy(config.grpc_listen, timeout=2.0) else None
    if not _alive(pid):
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if grpc_healthy(address, timeout=2.0):
            return address
        if not _alive(pid):
            return None
        time.sleep(0.2)
    raise PullguardError(
        f"the pullguard stack of {config.state_dir} (gateway pid {pid}) does not answer"
        f" on {address}; not starting a second gateway on the same state"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def http_ready(address: str, timeout: float = 1.0) -> bool:
    """True when an OCI front door answers /v2/ there; anything else is "not yet"."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException, ValueError):
        # Not only "nothing listens": something that is not our front door
        # (another protocol on that port) answers too.
        return False


@dataclass
class Stack:
    """The processes of one pullguard deployment on this machine."""

    config: Config
    config_path: str | None
    listen: str
    grpc_listen: str
    addresses: dict[str, str] = field(default_factory=dict)
    #: When set, each process's output goes to <log_dir>/<name>.log instead of ours.
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def plan(cls, config: Config, config_path: str | None, ephemeral: bool = False) -> Stack:
        """Use the configured addresses; pick free loopback ports for the rest
        (for all of them when ``ephemeral``, as ``check`` does without a gateway)."""
        addresses = {
            name: (config.services.get(name) if not ephemeral else None) or free_address()
            for name in LAYERS
        }
        listen = free_address() if ephemeral else config.listen
        grpc_listen = free_address() if ephemeral else config.grpc_listen
        return cls(config, config_path, listen, grpc_listen, addresses)

    def _command(self, service: str, listen: str) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "pullguard.gateway.cli",
            "serve",
            service,
            "--listen",
            listen,
        ]
        if self.config_path:
            command += ["--config", self.config_path]
        return command

    def _spawn(self, name: str, command: list[str]) -> None:
        if self.log_dir is None:
            self.processes[name] = subprocess.Popen(command)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            self.processes[name] = subprocess.Popen(command, stdout=log_file, stderr=log_file)

    def start(self) -> None:
        taken: dict[str, str] = {}
        for name, address in [
            *self.addresses.items(),
            ("gateway", self.listen),
            ("gateway gRPC", self.grpc_listen),
        ]:
            if address in taken:
                raise PullguardError(f"{name} and {taken[address]} would both listen on {address}")
            taken[address] = name
        try:
            for layer in LAYERS:
                self._spawn(layer, self._command(layer, self.addresses[layer]))
            self._wait(
                "layer services",
                lambda: all(grpc_healthy(self.addresses[layer]) for layer in LAYERS),
            )
            command = self._command("gateway", self.listen) + ["--grpc-listen", self.grpc_listen]
            for layer in LAYERS:
                command += ["--service", f"{layer}={self.addresses[layer]}"]
            self._spawn("gateway", command)
            self._wait(
                "gateway", lambda: http_ready(self.listen) and grpc_healthy(self.grpc_listen)
            )
        except BaseException:
            self.stop()
            raise
        self._write_state()

    def _wait(self, what: str, ready: object) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise PullguardError(
                        f"{name} exited with code {process.returncode} while starting"
                    )
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise PullguardError(f"{what} not healthy within {START_TIMEOUT:.0f} s")

    def _write_state(self) -> None:
        state: Path = self.config.state_dir
        state.mkdir(parents=True, exist_ok=True)
        entries = {
            name: {"pid": p.pid, "address": self.addresses.get(name, self.listen)}
            for name, p in self.processes.items()
        }
        entries["gateway"]["grpc"] = self.grpc_listen
        (state / "up.json").write_text(json.dumps(entries, indent=2))

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.processes.items() if p.poll() is not None]

    def stop(self) -> None:
        """Gateway first (no new pulls), then the layers; SIGKILL after a grace period."""
        order = [name for name in ("gateway", *LAYERS) if name in self.processes]
        for group in (order[:1], order[1:]):
            for name in group:
                process = self.processes[name]
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
            for name in group:
                process = self.processes[name]
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.config.state_dir / "up.json").unlink()


def run_up(config: Config, config_path: str | None) -> int:
    """Start everything, print where the front door listens, stop on SIGINT/SIGTERM."""
    stack = Stack.plan(config, config_path)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stack.start()
    except PullguardError as exc:
        print(f"pullguard: {exc}", file=sys.stderr)
        return 2
    print(
        f"pullguard is up: front door http://{stack.listen} (gRPC {stack.grpc_listen})", flush=True
    )
    for layer in LAYERS:
        print(
            f"  {layer:<10} {stack.addresses[layer]}  pid {stack.processes[layer].pid}", flush=True
        )
    print("press Ctrl-C to stop", flush=True)
    code = 0
    reported: set[str] = set()
    while not stopping:
        for name, returncode in stack.exited():
            if name not in reported:
                reported.add(name)
                print(
                    f"pullguard: {name} exited with code {returncode}; pulls that need it are"
                    " refused",
                    file=sys.stderr,
                    flush=True,
                )
        if "gateway" in reported:
            code = 1
            break
        time.sleep(0.2)
    print("pullguard: stopping", file=sys.stderr, flush=True)
    stack.stop()
    return code


def ephemeral_stack(config: Config, config_path: str | None) -> Stack:
    """A private stack on free ports for one CLI command, its logs under state_dir/logs."""
    stack = Stack.plan(config, config_path, ephemeral=True)
    stack.log_dir = config.state_dir / "logs"
    stack.start()
    return stack
