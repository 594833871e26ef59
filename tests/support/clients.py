"""Real container clients from Debian's packages, isolated from the host.

Each client keeps all of its state under one folder of the test's: podman
and buildah get their own ``--root``/``--runroot`` (vfs, no mounts), their
own registries.conf and signature policy; containerd and dockerd are started
by the test with their own root, state and socket and stopped by PID
(dockerd uses a containerd of the test's, not one of its own).
Nothing under /etc or /var/lib is written. :func:`remove_tree` unmounts
whatever a daemon left mounted under a folder before deleting it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

COMMAND_TIMEOUT = 120.0
READY_TIMEOUT = 60.0

_MACHINE_TO_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "s390x": "s390x", "ppc64le": "ppc64le"}


def native_arch() -> str:
    """This machine's architecture as Go (and so every client) spells it."""
    machine = platform.machine()
    return _MACHINE_TO_GOARCH.get(machine, machine)


def find(binary: str) -> str | None:
    """``binary`` on PATH, or in /usr/sbin (dockerd) when PATH lacks it."""
    return shutil.which(binary, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")


def require(*binaries: str) -> None:
    for binary in binaries:
        if find(binary) is None:
            pytest.fail(f"{binary} is not installed: run `make system-deps`")


def run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        raw = line.split(" ")[4]
        points.append(raw.encode().decode("unicode_escape"))
    return points


def mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve())
    return [p for p in _mount_points() if p == prefix or p.startswith(prefix + "/")]


def remove_tree(folder: Path) -> None:
    """Unmount everything under ``folder`` (deepest first), then delete it."""
    for _ in range(3):
        points = sorted(set(mounts_under(folder)), key=len, reverse=True)
        if not points:
            break
        for point in points:
            run(["umount", point], timeout=30)
    left = mounts_under(folder)
    assert not left, f"still mounted after umount: {left}"
    shutil.rmtree(folder, ignore_errors=False)


def _stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM by PID, then SIGKILL to the process group the test started."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _start_daemon(
    args: list[str], log_path: Path, ready: Callable[[], bool]
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a session of its own, logging to ``log_path``, until ``ready()``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"{args[0]} exited: {log_path.read_text(errors='replace')[-4000:]}"
            )
        if ready():
            return process
        time.sleep(0.1)
    _stop(process)
    raise AssertionError(f"{args[0]} not ready in {READY_TIMEOUT}s: {log_path.read_text()[-4000:]}")


class ContainersStorage:
    """podman or buildah, rootful, vfs, with a root and a configuration of its own."""

    def __init__(self, binary: str, home: Path, insecure: list[str], registries: str = "") -> None:
        """``insecure``: registries spoken to over plain http; ``registries``: more
        registries.conf text (``[[registry]]`` tables)."""
        self.binary = binary
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.registries_conf = home / "registries.conf"
        self.registries_conf.write_text(
            "unqualified-search-registries = []\n"
            + "".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in insecure)
            + registries
        )
        self.policy = home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        # podman refuses a runroot longer than 50 characters; under parallel
        # workers the temp folders nest one level deeper, so keep it short.
        self.runroot = home / "r"
        assert len(str(self.runroot)) <= 50, f"podman's runroot is too long: {self.runroot}"

    def base(self) -> list[str]:
        args = [
            self.binary,
            "--root",
            str(self.home / "root"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
        ]
        if self.binary == "podman":
            args += [
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "--tmpdir",
                str(self.home / "libpod"),
            ]
        return args

    def env(self) -> dict[str, str]:
        return {
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "TMPDIR": str(self.home),
        }

    def pull(self, reference: str) -> subprocess.CompletedProcess[str]:
        return run(
            [*self.base(), "pull", "--signature-policy", str(self.policy), reference],
            env=self.env(),
        )

    def image_id(self, reference: str) -> str:
        """The ID (its config's digest) of the image the store holds under ``reference``."""
        if self.binary == "podman":
            args = ["image", "inspect", "--format", "{{.Id}}", reference]
        else:
            args = ["inspect", "--type", "image", "--format", "{{.FromImageID}}", reference]
        done = run([*self.base(), *args], env=self.env())
        assert done.returncode == 0, done.stderr
        return "sha256:" + done.stdout.strip()

    def has_image(self, reference: str, config_digest: str) -> bool:
        return self.image_id(reference) == config_digest


class Containerd:
    """containerd started by the test: own root, state, sockets and plugin folder."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.socket = home / "containerd.sock"
        self.log = home / "containerd.log"
        self.hosts_dir = home / "certs.d"
        self.process: subprocess.Popen[bytes] | None = None

    def hosts_toml(self, registry: str, text: str, hosts_dir: Path | None = None) -> Path:
        """Write ``<hosts_dir>/<registry>/hosts.toml``; the default folder is this daemon's."""
        folder = (hosts_dir or self.hosts_dir) / registry
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(text)
        return folder.parent

    def plain_http(self, registry: str) -> None:
        """Pull from ``registry`` itself over plain http.

        containerd 1.6 ignores a hosts.toml without a ``[host]`` table (it logs
        "invalid `host` tree") and goes to the default host instead.
        """
        self.hosts_toml(
            registry,
            f'server = "http://{registry}"\n'
            f'[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n',
        )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.home / "root"}"\n'
            f'state = "{self.home / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.home / "ttrpc.sock"}"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            # Without this containerd creates /opt/containerd.
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.home / "opt"}"\n'
        )
        self.process = _start_daemon(
            ["containerd", "--config", str(config)],
            self.log,
            lambda: self.socket.exists() and self.ctr("version").returncode == 0,
        )

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", str(self.socket), *args])

    def pull(
        self, reference: str, hosts_dir: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        # The native snapshotter copies instead of mounting overlays.
        return self.ctr(
            "images",
            "pull",
            "--hosts-dir",
            str(hosts_dir or self.hosts_dir),
            "--snapshotter",
            "native",
            reference,
        )

    def has_image(self, reference: str, config_digest: str) -> bool:
        """``reference`` is an image here and the content store holds ``config_digest``.

        ctr keeps an index's own digest as the image and fetches only the
        children of the platforms it pulled, so the config shows the choice.
        """
        images = self.ctr("images", "ls", "--quiet")
        content = self.ctr("content", "ls", "--quiet")
        assert images.returncode == 0 and content.returncode == 0, images.stderr + content.stderr
        return reference in images.stdout.split() and config_digest in content.stdout.split()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


class Dockerd:
    """docker 20.10's daemon without networking: no iptables, no bridge, own folders."""

    def __init__(self, home: Path, insecure: list[str]) -> None:
        self.home = home
        self.socket = home / "docker.sock"
        self.log = home / "dockerd.log"
        self.insecure = insecure
        self.process: subprocess.Popen[bytes] | None = None
        # A containerd of its own: the one dockerd would start creates /opt/containerd.
        self.containerd = Containerd(home / "containerd")
        #: dockerd 20.10 always makes /run/docker/plugins; removed again if it made it.
        plugins = Path("/run/docker/plugins")
        self.made = [p for p in (plugins.parent, plugins) if not p.exists()]
        # The client of the same package (/usr/sbin/dockerd, /usr/bin/docker),
        # not another one earlier on PATH.
        self.dockerd = find("dockerd") or "dockerd"
        daemon = Path(self.dockerd)
        packaged = daemon.parent.parent / "bin" / "docker"
        self.docker = str(packaged) if packaged.exists() else "docker"

    def start(self) -> None:
        exec_root = self.home / "exec"
        exec_root.mkdir(parents=True, exist_ok=True)
        config = self.home / "daemon.json"
        settings: dict[str, object] = {"insecure-registries": self.insecure}
        if self.major_version() < 23:
            # Else the daemon writes /etc/docker/key.json (docker 23 dropped the key).
            settings["deprecated-key-path"] = str(self.home / "key.json")
        config.write_text(json.dumps(settings))
        self.containerd.start()
        self.process = _start_daemon(
            [
                self.dockerd,
                "--config-file",
                str(config),
                "--containerd",
                str(self.containerd.socket),
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--data-root",
                str(self.home / "data"),
                "--exec-root",
                str(exec_root),
                "--pidfile",
                str(exec_root / "docker.pid"),
                "--host",
                f"unix://{self.socket}",
            ],
            self.log,
            lambda: self.socket.exists() and self.cli("version").returncode == 0,
        )

    def major_version(self) -> int:
        """``Docker version 20.10.24+dfsg1, build ...`` -> 20."""
        done = run([self.dockerd, "--version"])
        assert done.returncode == 0, done.stderr
        words = done.stdout.split()
        assert len(words) >= 3 and words[2].split(".")[0].isdigit(), done.stdout
        return int(words[2].split(".")[0])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            [self.docker, "--host", f"unix://{self.socket}", *args],
            env={"DOCKER_CONFIG": str(self.home / "client")},
        )

    def pull(self, reference: str) -> subprocess.CompletedProcess[str]:
        return self.cli("pull", reference)

    def has_image(self, reference: str, config_digest: str) -> bool:
        done = self.cli("image", "inspect", "--format", "{{.Id}}", reference)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip() == config_digest

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
        self.containerd.stop()
        for folder in reversed(self.made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
