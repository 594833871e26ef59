"""Issue 2's end-to-end pull path, on real parts only: Debian's docker-registry
as upstream (and as a pull-through cache), the real skopeo as the client,
pullguard started with ``pullguard up``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pullguard.gateway.supervisor import grpc_healthy
from tests.support.images import (
    BuiltImage,
    build_image,
    build_index,
    layout_manifest_digest,
    pull,
    push,
    push_index,
    random_layers,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, pullguard_command, write_config

StartPullguard = Callable[..., Pullguard]


def _image(tmp_path: Path, name: str, tag: str = "v1", seed: int = 0) -> BuiltImage:
    return build_image(tmp_path / f"src-{name}", tag, random_layers(2, 64 * 1024, seed=seed))


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _assert_same_bytes(layout: Path, image: BuiltImage) -> None:
    assert layout_manifest_digest(layout, image.tag) == image.digest
    for digest in (image.digest, *image.blob_digests):
        data = (layout / "blobs" / "sha256" / _hex(digest)).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest


def _denial(pg: Pullguard, path: str) -> dict[str, object]:
    response = pg.get(path)
    assert response.status_code == 403, response.text
    errors = response.json()["errors"]
    assert errors[0]["code"] == "DENIED"
    return errors[0]


def _raw_get(pg: Pullguard, path: str) -> tuple[int, dict[str, object]]:
    """Send the path byte for byte: HTTP client libraries normalise dot segments."""
    host, port = pg.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {pg.address}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _tamper(upstream: RegistryProcess, digest: str) -> None:
    path = upstream.blob_file(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def shared(shared_upstream: RegistryProcess, module_pullguard_factory: StartPullguard) -> Pullguard:
    """One stack with the default config for the tests that need nothing else.

    Each of them pulls repositories and bytes (image seeds) of its own and
    reads the upstream's request log from where it began: the upstream keeps
    blobs by digest, so a shared seed would share (or tamper) blobs.
    """
    return module_pullguard_factory(shared_upstream.url)


def test_good_image_passes_byte_for_byte(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "good")
    push(image, shared_upstream.address, "team/app")
    pg = shared

    result = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out", "v1")

    assert result.returncode == 0, result.stderr + pg.log()
    _assert_same_bytes(tmp_path / "out", image)
    # The admitted store is an OCI layout skopeo reads as it is.
    again = subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            f"oci:{pg.state_dir / 'admitted'}:lab/team/app:v1",
            f"oci:{tmp_path / 'from-store'}:v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    _assert_same_bytes(tmp_path / "from-store", image)
    check = subprocess.run(
        [
            *pullguard_command(),
            "check",
            "lab/team/app:v1",
            "--config",
            str(pg.config_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["decision"] == "ALLOW" and report["digest"] == image.digest
    assert {step["layer"] for step in report["layers"]} >= {
        "analysis",
        "fetcher",
        "format",
        "hashverify",
        "source",
        "signature",
    }


def test_tampered_blob_is_denied_by_hashverify_and_quarantined(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream = shared_upstream
    image = _image(tmp_path, "bad", seed=10)
    push(image, upstream.address, "team/bad")
    _tamper(upstream, image.blob_digests[1])
    pg = shared

    result = pull(f"{pg.address}/lab/team/bad:v1", tmp_path / "out", "v1")

    assert result.returncode != 0
    assert "hashverify" in result.stderr
    error = _denial(pg, "/v2/lab/team/bad/manifests/v1")
    assert str(error["message"]).startswith("hashverify: ")
    detail = error["detail"]
    assert isinstance(detail, dict) and detail["layer"] == "hashverify"
    assert any(f["code"] == "hash.blob_mismatch" for f in detail["findings"])
    entry = pg.state_dir / "quarantine" / str(detail["decision"])
    report = json.loads((entry / "report.json").read_text())
    assert report["denied_by"] == "hashverify" and report["digest"] == image.digest
    # L-06: bytes that do not have their digest are never decompressed (other
    # layers may have been inspected while this blob was still being hashed).
    assert image.blob_digests[1] not in {stats["digest"] for stats in report["layer_stats"]}
    assert (entry / "content").is_dir()
    admitted = pg.state_dir / "admitted" / "blobs" / "sha256"
    for digest in (image.digest, *image.blob_digests):
        assert not (admitted / _hex(digest)).exists(), f"{digest} reached the admitted store"
    index = json.loads((pg.state_dir / "admitted" / "index.json").read_text())
    assert all(m["digest"] != image.digest for m in index["manifests"])


def test_deny_glob_refused_by_analysis_without_upstream_traffic(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream = shared_upstream
    image = _image(tmp_path, "evil", seed=11)
    push(image, upstream.address, "team/evil/app")
    pg = shared
    seen_before = len(upstream.requests())

    result = pull(f"{pg.address}/lab/team/evil/app:v1", tmp_path / "out", "v1")

    assert result.returncode != 0
    error = _denial(pg, "/v2/lab/team/evil/app/manifests/v1")
    assert str(error["message"]).startswith("analysis: ")
    assert "**/evil/**" in str(error["message"])
    assert upstream.requests()[seen_before:] == []


def test_malformed_references_refused_with_clear_message(
    shared_upstream: RegistryProcess, shared: Pullguard
) -> None:
    upstream = shared_upstream
    pg = shared
    seen_before = len(upstream.requests())
    # Refused by syntax, with the spec's status (the OCI conformance suite's
    # reading: a tag that cannot exist is 404), never fetched.
    cases = {
        "/v2/lab/Team/App/manifests/v1": ("name", 400, "NAME_INVALID"),
        "/v2/lab/team/app/manifests/-bad": ("tag", 404, "MANIFEST_UNKNOWN"),
        "/v2/lab/team/app/manifests/sha256:abc": ("digest", 400, "DIGEST_INVALID"),
        "/v2/lab/team/app/manifests/sha256:" + "A" * 64: ("digest", 400, "DIGEST_INVALID"),
    }
    for path, (what, status, code) in cases.items():
        response = pg.get(path)
        assert response.status_code == status, response.text
        error = response.json()["errors"][0]
        assert error["code"] == code
        message = str(error["message"])
        assert message.startswith("analysis: "), (path, message)
        assert what in message.lower(), (path, message)
    for raw in (
        "/v2/lab/team/../../admin/manifests/v1",
        "/v2/lab/team%2F..%2F..%2Fadmin/manifests/v1",
        "/v2/lab/team/app%00/manifests/v1",
    ):
        status, body = _raw_get(pg, raw)
        assert status == 400, (raw, body)
        message = body["errors"][0]["message"]  # type: ignore[index]
        assert message.startswith("analysis: ") and "name" in message, (raw, message)
    check = subprocess.run(
        [*pullguard_command(), "check", "lab/team/app:bad tag", "--config", str(pg.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A malformed REF on the command line is a usage error, not a verdict (issue 7).
    assert check.returncode == 2, check.stdout + check.stderr
    assert "tag 'bad tag': whitespace" in check.stderr and "Traceback" not in check.stderr
    assert upstream.requests()[seen_before:] == []


def test_stopped_layer_is_an_outage_then_recovers(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "app")
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(upstream.url)
    pid = int(pg.services["format"]["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while (
        grpc_healthy(pg.config["services"]["format"], timeout=0.5) and time.monotonic() < deadline
    ):
        time.sleep(0.1)

    denied = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out1", "v1")

    assert denied.returncode != 0
    response = pg.get("/v2/lab/team/app/manifests/v1")
    assert response.status_code == 503, response.text  # an outage, not a denial
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"] == "format: service unavailable"
    assert not (pg.state_dir / "admitted" / "blobs" / "sha256" / _hex(image.digest)).exists()

    replacement = pg.serve("format")
    try:
        deadline = time.monotonic() + 30
        while not grpc_healthy(pg.config["services"]["format"], timeout=0.5):
            assert time.monotonic() < deadline, pg.log()
            time.sleep(0.1)
        passed = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out2", "v1")
        assert passed.returncode == 0, passed.stderr + pg.log()
        _assert_same_bytes(tmp_path / "out2", image)
    finally:
        replacement.send_signal(signal.SIGTERM)
        replacement.wait(15)


def test_second_pull_fetches_no_blob_again(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream = shared_upstream
    image = _image(tmp_path, "app", seed=12)
    push(image, upstream.address, "team/again")
    pg = shared
    pushed = len(upstream.requests())
    assert pull(f"{pg.address}/lab/team/again:v1", tmp_path / "out1", "v1").returncode == 0
    first = upstream.requests()

    second = pull(f"{pg.address}/lab/team/again:v1", tmp_path / "out2", "v1")

    assert second.returncode == 0, second.stderr
    _assert_same_bytes(tmp_path / "out2", image)
    new = upstream.requests()[len(first) :]
    assert [r for r in new if "/blobs/" in r] == []
    # The tag is resolved upstream again (it may have moved), once.
    assert [r for r in new if "/manifests/" in r] == ["GET /v2/team/again/manifests/v1"]
    assert sum(1 for r in first[pushed:] if "/blobs/" in r) == len(image.blob_digests)


def test_private_registry_pull_through_cache(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream = shared_upstream
    good = _image(tmp_path, "good", seed=1)
    bad = _image(tmp_path, "bad", seed=2)
    push(good, upstream.address, "team/good")
    push(bad, upstream.address, "team/worse")
    _tamper(upstream, bad.blob_digests[2])
    pg = shared
    private = RegistryProcess(tmp_path / "private", proxy_remote=f"http://{pg.address}")
    private.start()
    try:
        ok = pull(f"{private.address}/lab/team/good:v1", tmp_path / "good-out", "v1")
        assert ok.returncode == 0, ok.stderr + private.log_text()[-2000:]
        _assert_same_bytes(tmp_path / "good-out", good)

        refused = pull(f"{private.address}/lab/team/worse:v1", tmp_path / "bad-out", "v1")
        assert refused.returncode != 0
        for digest in (bad.digest, *bad.blob_digests):
            assert not private.has_blob(digest), f"private registry stored {digest}"
        repositories = private.data / "docker/registry/v2/repositories/lab/team"
        assert not (repositories / "worse").exists()
    finally:
        private.stop()


def test_p03d_platform_child_of_a_pinned_index(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    index = build_index(tmp_path / "multi", "v1", [("linux", "amd64"), ("linux", "arm64")])
    push_index(index, upstream.address, "team/multi")
    stray = _image(tmp_path, "stray", tag="debug", seed=42)
    push(stray, upstream.address, "team/multi")
    pins = tmp_path / "pins.yaml"
    pins.write_text(f"v1: {index.digest}\n")
    pg = pullguard_factory(
        upstream.url,
        policy={"rules": [{"match": "lab/team/multi", "signature": "none", "pins": str(pins)}]},
    )

    # skopeo reads the index by tag, then the amd64 manifest by digest.
    result = pull(f"{pg.address}/lab/team/multi:v1", tmp_path / "out", "v1")

    assert result.returncode == 0, result.stderr + pg.log()
    amd64 = index.children[0]
    assert layout_manifest_digest(tmp_path / "out", "v1") == amd64.digest
    # A digest no pinned index lists stays refused, before any upstream request.
    seen = len(upstream.requests())
    error = _denial(pg, f"/v2/lab/team/multi/manifests/{stray.digest}")
    assert error["detail"]["findings"][0]["code"] == "analysis.digest_not_pinned"  # type: ignore[index]
    assert upstream.requests()[seen:] == []


def test_check_and_admit_without_a_running_stack_use_a_private_one(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    # No `pullguard up`: the command starts its own stack on free ports for
    # the one command, on the configured state, and stops it again.
    image = _image(tmp_path, "app")
    push(image, upstream.address, "team/app")
    path, config = write_config(tmp_path, upstream.url)
    state = Path(config["state_dir"])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pullguard_command(), *args, "--config", str(path), "--json"],
            capture_output=True,
            text=True,
            timeout=180,
        )

    checked, admitted = run("check", "lab/team/app:v1"), run("admit", "lab/team/app:v1")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["admitted"] is False
    assert admitted.returncode == 0, admitted.stdout + admitted.stderr
    assert json.loads(admitted.stdout)["digest"] == image.digest
    assert (state / "admitted" / "blobs" / "sha256" / image.digest.split(":")[1]).exists()
    assert not (state / "up.json").exists()  # the private stack is gone
    assert not grpc_healthy(config["grpc_listen"], timeout=0.5)
