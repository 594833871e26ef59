"""Debian's docker-registry (CNCF distribution) as a real process on 127.0.0.1.

Its request log is kept, so tests can assert which requests reached it, and
its storage folder is known, so tests can tamper with a stored blob.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.stack import free_port


class RegistryProcess:
    def __init__(self, root: Path, proxy_remote: str | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.proxy_remote = proxy_remote
        self.log_path = root / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 15) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.address},
        }
        if self.proxy_remote:
            config["proxy"] = {"remoteurl": self.proxy_remote}
        config_path = self.root / "config.yml"
        config_path.write_text(json.dumps(config))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config_path)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"docker-registry exited: {self.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"docker-registry not ready: {self.log_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[str]:
        """Every request the registry's access log shows, as "METHOD /path", in order."""
        seen = []
        for line in self.log_text().splitlines():
            # Access log lines are Apache combined format: ... "GET /v2/... HTTP/1.1" ...
            if line.startswith("{") or '"' not in line:
                continue
            request = line.split('"', 2)[1].split(" ")
            if len(request) == 3 and request[2].startswith("HTTP/"):
                seen.append(f"{request[0]} {request[1]}")
        return seen

    def blob_file(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.data / "docker/registry/v2/blobs" / algorithm / encoded[:2] / encoded / "data"

    def has_blob(self, digest: str) -> bool:
        return self.blob_file(digest).exists()
