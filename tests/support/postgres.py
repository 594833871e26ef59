"""Debian's PostgreSQL as a throw-away cluster: ``initdb`` and ``pg_ctl`` in a temp folder.

One cluster per test session, one database per test. The server runs as an
unprivileged user (uid 65534 through ``setpriv`` when the tests run as root:
PostgreSQL refuses root), listens on 127.0.0.1 on a free port and on a unix
socket in its folder, wants a password over TCP (scram-sha-256), and is
stopped by the PID in its ``postmaster.pid`` at the end.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from pullguard.services.runtime.config.database import Database
from tests.support.stack import free_port

NOBODY = 65534
USER = "pullguard"


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run `make system-deps` (Debian's postgresql)")
    return Path(found[-1]).parent


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = _binaries()
        self.as_root = os.geteuid() == 0
        # The server's user must reach its folder: under root's private
        # temporary folder it could not, so the cluster gets one of its own.
        parent = "/tmp" if self.as_root else None  # noqa: S108 - removed by stop()
        self.root = Path(tempfile.mkdtemp(prefix="pullguard-pg-", dir=parent))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = os.urandom(12).hex()
        self.log = self.root / "server.log"
        self._names = itertools.count()

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.as_root:
            command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{args[0]} failed: {done.stdout}{done.stderr}{self._log()}")

    def _log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.as_root:
            os.chown(self.root, NOBODY, NOBODY)
            os.chown(password_file, NOBODY, NOBODY)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Fast shutdown by the postmaster's PID, then the folder goes."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            pid = 0
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def admin_url(self, name: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def create_database(self) -> Database:
        """A fresh, empty database of its own."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.admin_url(), password=self.password, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return Database(url=self.admin_url(name), password=self.password)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still answers; the server is not our child (pg_ctl forked it).
    return True
