"""``pullguard up``: every layer as its own process, then the gateway.

Each layer runs as ``pullguard serve <layer>``; the supervisor waits until
every one answers the gRPC health check, starts the gateway pointed at them,
waits for the front door, and on SIGINT/SIGTERM stops the gateway first and
the layers after it. Pids and addresses are written to ``state_dir/up.json``
so that operators (and tests) can find each process.

**Who may answer on a layer's address.** The gateway believes whatever
answers there: a process of another user that takes a dead layer's TCP port
could answer ALLOW to everything. Without explicit ``services:`` addresses,
``up`` therefore puts the layers on Unix domain sockets in a directory only
this user can open (``<state_dir>/run``, mode 0700; a fresh ``mkdtemp``
directory under /tmp when that path is too long for ``sun_path`` or
``state_dir`` is writable by others). Unix sockets were chosen over mutual
TLS with a CA made at each start because the kernel does the checking: no
key material to make, store or rotate, no handshake, and a bind or connect by
another user fails with EACCES on the directory. Across machines, and with
``services_tls`` configured, the layers listen on TCP with mutual TLS instead.
Explicit ``services:`` addresses are used as given (for ``pullguard serve``
deployments); plain TCP ones get a warning.

**Restarts.** A layer that dies (a signal or a non-zero exit code) is
started again on the same address after a backoff of 0.5 s doubling to
30 s, back to 0.5 s once it has run for a minute; each restart is logged and
``up.json`` gets the new pid. The gateway's channels reconnect by themselves.
A layer that exits with code 0 was stopped on purpose (SIGTERM) and stays
stopped, as with systemd's ``Restart=on-failure``. A gateway that dies is not
restarted: ``up`` stops the layers and exits 1, so that the service manager
running ``up`` restarts the whole stack (the gateway owns the state
directory, and a crash-looping gateway should be seen, not hidden).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.services.runtime.config import LAYERS, MAX_SOCKET_PATH, Config, ServicesTls
from pullguard.services.runtime.config.settings import is_replicated
from pullguard.services.runtime.errors import PullguardError
from pullguard.services.runtime.resources import raise_open_file_limit
from pullguard.services.runtime.tls import channel_credentials, channel_options

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def free_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def grpc_healthy(address: str, timeout: float = 1.0, tls: ServicesTls | None = None) -> bool:
    if tls is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(
            address, channel_credentials(tls), options=channel_options(tls)
        )
    with channel:
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


def http_ready(address: str, timeout: float = 1.0, https: bool = False) -> bool:
    """True when an OCI front door answers /v2/ there; anything else is "not yet".

    A door that asks for a login answers 401; over HTTPS, only readiness is
    asked here, so the certificate is not checked.
    """
    context = ssl._create_unverified_context() if https else None  # noqa: S323
    url = f"{'https' if https else 'http'}://{address}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401 and exc.headers.get("Docker-Distribution-API-Version") is not None
    except (OSError, http.client.HTTPException, ValueError):
        # Not only "nothing listens": something that is not our front door
        # (another protocol on that port) answers too.
        return False


_SOCKET_NAME_ROOM = len("/hashverify.sock")


def private_socket_dir(state_dir: Path, unique: bool = False) -> tuple[Path, bool]:
    """A directory for the layers' Unix sockets that no other user can open.

    ``<state_dir>/run`` (or a fresh ``run-*`` directory in it when ``unique``),
    mode 0700 and owned by this user; the bool is True when it is a fresh
    ``mkdtemp`` directory under /tmp instead, because the socket paths would be
    longer than ``sun_path`` allows or ``state_dir`` is writable by others
    (who could then swap the directory). Anyone who can write ``state_dir``
    owns the admitted store already, so nothing above it is checked.
    """
    try:
        return _socket_dir(state_dir, unique)
    except OSError as exc:
        raise PullguardError(
            f"cannot make a private directory for the layers' sockets under {state_dir}:"
            f" {exc.strerror or exc}"
        ) from None


def _socket_dir(state_dir: Path, unique: bool) -> tuple[Path, bool]:
    state_dir.mkdir(parents=True, exist_ok=True)
    info = os.stat(state_dir)
    shared = info.st_uid not in (os.geteuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    candidate = state_dir / "run"
    # mkdtemp's "run-" plus 8 random characters is 9 longer than "run".
    longest = len(os.fsencode(candidate)) + (9 if unique else 0) + _SOCKET_NAME_ROOM
    if not shared and longest <= MAX_SOCKET_PATH:
        if unique:
            return Path(tempfile.mkdtemp(prefix="run-", dir=state_dir)), False
        with contextlib.suppress(FileExistsError):
            candidate.mkdir(mode=0o700)
        own = os.lstat(candidate)
        if not stat.S_ISDIR(own.st_mode) or own.st_uid != os.geteuid():
            raise PullguardError(
                f"{candidate} is not a directory of this user; not putting the layers' sockets"
                " there"
            )
        if stat.S_IMODE(own.st_mode) != 0o700:
            os.chmod(candidate, 0o700)
        return candidate, False
    short = "/tmp" if os.path.isdir("/tmp") else None  # noqa: S108 - mkdtemp: 0700, random name
    return Path(tempfile.mkdtemp(prefix="pullguard-", dir=short)), True


def _private(address: str) -> bool:
    return address.startswith("unix:")


@dataclass
class Backoff:
    """Delays before restarting one process: 0.5 s doubling to 30 s, back to
    0.5 s once it has run for a minute."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 60.0
    upcoming: float = 0.5

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after:
            self.upcoming = self.initial
        delay = self.upcoming
        self.upcoming = min(self.upcoming * 2, self.maximum)
        return delay


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
    #: When each process was last started (time.monotonic()).
    started: dict[str, float] = field(default_factory=dict)
    #: The private directory of the layers' sockets, removed by stop().
    socket_dir: Path | None = None
    #: Whether the processes open console_listen and metrics_listen (not a
    #: CLI command's private stack, which would collide with ``up``'s).
    metrics: bool = True

    @classmethod
    def plan(cls, config: Config, config_path: str | None, ephemeral: bool = False) -> Stack:
        """Use the configured addresses; the other layers get Unix sockets in a
        private directory, or free loopback ports with mutual TLS when
        ``services_tls`` is set (all of them when ``ephemeral``, as ``check``
        does without a gateway)."""
        configured = {} if ephemeral else dict(config.services)
        replicated = sorted(name for name, address in configured.items() if is_replicated(address))
        if replicated:
            raise PullguardError(
                f"services.{replicated[0]} in {config.source} names several replicas: `up` runs"
                " one process per layer; run each replica with `pullguard serve LAYER` and the"
                " gateway with `pullguard serve gateway`"
            )
        socket_dir = None
        if config.services_tls is None and any(name not in configured for name in LAYERS):
            socket_dir, _ = private_socket_dir(config.state_dir, unique=ephemeral)
        addresses = {
            name: configured.get(name)
            or (f"unix:{socket_dir}/{name}.sock" if socket_dir else free_address())
            for name in LAYERS
        }
        listen = free_address() if ephemeral else config.listen
        grpc_listen = free_address() if ephemeral else config.grpc_listen
        return cls(
            config,
            config_path,
            listen,
            grpc_listen,
            addresses,
            socket_dir=socket_dir,
            metrics=not ephemeral,
        )

    def exposed(self) -> list[str]:
        """Layers on plain TCP: any local user who takes such a port can answer for them."""
        if self.config.services_tls is not None:
            return []
        return [name for name in LAYERS if not _private(self.addresses[name])]

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
        if not self.metrics:
            command.append("--no-metrics")
        return command

    def _spawn(self, name: str, command: list[str]) -> None:
        self.started[name] = time.monotonic()
        if self.log_dir is None:
            self.processes[name] = subprocess.Popen(command)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            self.processes[name] = subprocess.Popen(command, stdout=log_file, stderr=log_file)

    def respawn(self, layer: str) -> int:
        """Start a dead layer again on its address; returns the new pid."""
        self._spawn(layer, self._command(layer, self.addresses[layer]))
        self._write_state()
        return self.processes[layer].pid

    def healthy(self, layer: str) -> bool:
        return grpc_healthy(self.addresses[layer], tls=self.config.services_tls)

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
                lambda: all(self.healthy(layer) for layer in LAYERS),
            )
            command = self._command("gateway", self.listen) + ["--grpc-listen", self.grpc_listen]
            for layer in LAYERS:
                command += ["--service", f"{layer}={self.addresses[layer]}"]
            self._spawn("gateway", command)
            self._wait(
                "gateway",
                lambda: (
                    http_ready(self.listen, https=self.config.tls is not None)
                    and grpc_healthy(self.grpc_listen)
                ),
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
        # Replaced whole (it is rewritten when a layer restarts): a reader, the
        # CLI or a script, never sees a truncated file.
        temp = state / f".up.json.{os.getpid()}"
        temp.write_text(json.dumps(entries, indent=2))
        os.replace(temp, state / "up.json")

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
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@dataclass
class Restarter:
    """Restarts the layers of a running stack that die (see the module doc)."""

    stack: Stack
    #: False (``up --no-restart``): a dead layer stays down, and its pulls are outages.
    enabled: bool = True
    backoffs: dict[str, Backoff] = field(default_factory=dict)
    #: Layers waiting for their restart, and when it is due (time.monotonic()).
    due: dict[str, float] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    def step(self, now: float) -> bool:
        """Handle exits and due restarts; False once the gateway has died."""
        for name, returncode in self.stack.exited():
            if name == "gateway":
                _say(f"gateway exited with code {returncode}; stopping the stack")
                return False
            if name in self.due or name in self.reported:
                continue
            if returncode == 0 or not self.enabled:
                self.reported.add(name)
                _say(
                    f"{name} exited with code {returncode}; not restarted,"
                    " pulls that need it are outages (503)"
                )
                continue
            ran_for = now - self.stack.started.get(name, now)
            delay = self.backoffs.setdefault(name, Backoff()).delay(ran_for)
            self.due[name] = now + delay
            _say(f"{name} exited with code {returncode}; restarting it in {delay:.1f} s")
        for name, when in list(self.due.items()):
            if now >= when:
                del self.due[name]
                pid = self.stack.respawn(name)
                _say(f"{name} restarted (pid {pid}) on {self.stack.addresses[name]}")
        return True


def _say(message: str) -> None:
    print(f"pullguard: {message}", file=sys.stderr, flush=True)


def run_up(config: Config, config_path: str | None, restart: bool = True) -> int:
    """Start everything, print where the front door listens, stop on SIGINT/SIGTERM.

    Layers that die are restarted unless ``restart`` is False (``--no-restart``).
    """
    raise_open_file_limit()
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stack = Stack.plan(config, config_path)
        stack.start()
    except PullguardError as exc:
        print(f"pullguard: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if config.tls else "http"
    print(
        f"pullguard is up: front door {scheme}://{stack.listen} (gRPC {stack.grpc_listen})",
        flush=True,
    )
    for layer in LAYERS:
        print(
            f"  {layer:<10} {stack.addresses[layer]}  pid {stack.processes[layer].pid}", flush=True
        )
    exposed = stack.exposed()
    if exposed:
        _say(
            f"warning: {', '.join(exposed)} listen on plain TCP from services:, where any local"
            " user who takes a port can answer for that layer; leave services: out (private"
            " Unix sockets) or set services_tls"
        )
    print("press Ctrl-C to stop", flush=True)
    restarter = Restarter(stack, enabled=restart)
    code = 0
    while not stopping:
        if not restarter.step(time.monotonic()):
            code = 1
            break
        time.sleep(0.2)
    print("pullguard: stopping", file=sys.stderr, flush=True)
    stack.stop()
    return code


def ephemeral_stack(config: Config, config_path: str | None) -> Stack:
    """A private stack for one CLI command (its own sockets), logs in state_dir/logs."""
    stack = Stack.plan(config, config_path, ephemeral=True)
    stack.log_dir = config.state_dir / "logs"
    stack.start()
    return stack
