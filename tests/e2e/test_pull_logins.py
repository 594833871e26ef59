"""Issue 11 (5): pull logins on the front door (``auth.htpasswd``), with real clients.

``pullguard up`` with an htpasswd file of bcrypt hashes: a request without a
login, with a wrong password or an unknown user gets 401, ``WWW-Authenticate:
Basic realm="pullguard"`` and an OCI ``UNAUTHORIZED`` body, as distribution
answers; skopeo (``--src-creds``), podman (``podman login``), containerd's
ctr (``--user``) and docker (``docker login``) log in and pull, each client
started as in test_clients.py, all on 127.0.0.1. The user's name is in the
decision record and the report.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support.clients import Containerd, ContainersStorage, Dockerd, remove_tree, require
from tests.support.clients import run as run_client
from tests.support.images import (
    BuiltImage,
    build_image,
    layout_manifest_digest,
    push,
    random_layers,
    sha256,
    skopeo,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, write_config

USER, PASSWORD = "alice", "correct horse battery staple"
CHALLENGE = 'Basic realm="pullguard"'


@dataclass
class Stack:
    root: Path
    pullguard: Pullguard
    image: BuiltImage

    @property
    def pg(self) -> str:
        return self.pullguard.address

    @property
    def reference(self) -> str:
        return f"{self.pg}/lab/team/app:v1"

    def decisions(self) -> list[dict[str, object]]:
        done = self.pullguard.cli("decisions", "--json", "--limit", "1000")
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, object]] = json.loads(done.stdout)
        return rows


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require("docker-registry", "skopeo")
    # Short: podman refuses a runroot longer than 50 characters.
    root = Path(tempfile.mkdtemp(prefix="pgl-"))
    upstream = RegistryProcess(root / "upstream")
    pullguard: Pullguard | None = None
    try:
        upstream.start()
        image = build_image(root / "src", "v1", random_layers(2, 8192, seed=51))
        push(image, upstream.address, "team/app")
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
        # $2y$ as `htpasswd -B` writes it; a second user so that lookups are not trivial.
        other = bcrypt.hashpw(b"bob's", bcrypt.gensalt(5)).decode()
        (root / "pullers.htpasswd").write_text(
            f"# pullers\n{USER}:{hashed.replace('$2b$', '$2y$')}\nbob:{other}\n"
        )
        path, config = write_config(root, upstream.url, auth={"htpasswd": "pullers.htpasswd"})
        pullguard = Pullguard(path, config)
        pullguard.start()
        yield Stack(root, pullguard, image)
    finally:
        if pullguard is not None:
            pullguard.stop()
        upstream.stop()
        remove_tree(root)


def _oci_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    if response.request.method != "HEAD":
        assert response.json() == {
            "errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]
        }


@pytest.mark.parametrize(
    "auth",
    [None, (USER, "wrong"), ("bob", PASSWORD), ("mallory", PASSWORD), (USER, "")],
    ids=["none", "wrong-password", "another-users-password", "unknown-user", "empty"],
)
def test_without_a_valid_login_every_path_is_401(
    stack: Stack, auth: tuple[str, str] | None
) -> None:
    for method, path in (
        ("GET", "/v2/"),
        ("GET", "/v2/lab/team/app/manifests/v1"),
        ("HEAD", "/v2/lab/team/app/manifests/v1"),
        ("GET", f"/v2/lab/team/app/blobs/{stack.image.digest}"),
        ("GET", "/v2/lab/team/app/tags/list"),
        ("DELETE", "/v2/lab/team/app/manifests/v1"),
    ):
        response = httpx.request(method, f"http://{stack.pg}{path}", auth=auth, timeout=60)
        _oci_401(response)
    assert "Traceback" not in stack.pullguard.log()


def test_a_login_pulls_and_the_user_is_recorded(stack: Stack) -> None:
    ok = httpx.get(f"http://{stack.pg}/v2/", auth=(USER, PASSWORD), timeout=60)
    assert ok.status_code == 200, ok.text
    response = httpx.get(
        f"http://{stack.pg}/v2/lab/team/app/manifests/v1", auth=(USER, PASSWORD), timeout=120
    )
    assert response.status_code == 200, response.text + stack.pullguard.log()
    decision = response.headers["X-Pullguard-Decision"]
    record = next(row for row in stack.decisions() if row["decision_id"] == decision)
    assert record["user"] == USER
    assert PASSWORD not in stack.pullguard.log()


def test_skopeo_logs_in_with_src_creds(stack: Stack) -> None:
    out = stack.root / "skopeo-out"
    args = ["copy", "--src-tls-verify=false", f"docker://{stack.reference}", f"oci:{out}:v1"]
    refused = skopeo(*args[:2], f"--src-creds={USER}:wrong", *args[2:])
    assert refused.returncode != 0
    assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower(), refused.stderr
    done = skopeo(*args[:2], f"--src-creds={USER}:{PASSWORD}", *args[2:])
    assert done.returncode == 0, done.stderr + stack.pullguard.log()
    assert layout_manifest_digest(out, "v1") == stack.image.digest
    assert stack.decisions()[0]["user"] == USER


def test_podman_logs_in_and_pulls(stack: Stack) -> None:
    require("podman")
    podman = ContainersStorage("podman", stack.root / "podman", [stack.pg])
    # Its own credentials file (rootful podman's default is under /run).
    auth_file = podman.home / "auth.json"
    auth_file.write_text('{"auths": {}}')
    env = {**podman.env(), "REGISTRY_AUTH_FILE": str(auth_file)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_client([*podman.base(), *args], env=env)

    refused = run("pull", "--signature-policy", str(podman.policy), stack.reference)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower(), refused.stderr
    wrong = run("login", "--tls-verify=false", "-u", USER, "-p", "wrong", stack.pg)
    assert wrong.returncode != 0, wrong.stdout
    login = run("login", "--tls-verify=false", "-u", USER, "-p", PASSWORD, stack.pg)
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    pulled = run("pull", "--signature-policy", str(podman.policy), stack.reference)
    assert pulled.returncode == 0, pulled.stderr + stack.pullguard.log()
    assert podman.has_image(stack.reference, sha256(stack.image.config))


def test_ctr_pulls_with_user(stack: Stack) -> None:
    require("containerd", "ctr")
    daemon = Containerd(stack.root / "containerd")
    try:
        daemon.start()
        daemon.plain_http(stack.pg)
        pull = ["images", "pull", "--hosts-dir", str(daemon.hosts_dir), "--snapshotter", "native"]
        refused = daemon.ctr(*pull, stack.reference)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        wrong = daemon.ctr(*pull, "--user", f"{USER}:wrong", stack.reference)
        assert wrong.returncode != 0 and "401" in wrong.stderr, wrong.stderr
        done = daemon.ctr(*pull, "--user", f"{USER}:{PASSWORD}", stack.reference)
        assert done.returncode == 0, done.stderr + stack.pullguard.log()
        assert daemon.has_image(stack.reference, sha256(stack.image.config))
    finally:
        daemon.stop()


def test_docker_logs_in_and_pulls(stack: Stack) -> None:
    require("dockerd")
    daemon = Dockerd(stack.root / "docker", [stack.pg])
    try:
        daemon.start()
        refused = daemon.pull(stack.reference)
        assert refused.returncode != 0, refused.stdout
        wrong = daemon.cli("login", "-u", USER, "-p", "wrong", stack.pg)
        assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower(), wrong.stderr
        login = daemon.cli("login", "-u", USER, "-p", PASSWORD, stack.pg)
        assert login.returncode == 0, login.stderr
        assert "Login Succeeded" in login.stdout
        pulled = daemon.pull(stack.reference)
        assert pulled.returncode == 0, pulled.stderr + stack.pullguard.log()
        assert daemon.has_image(stack.reference, sha256(stack.image.config))
    finally:
        daemon.stop()
