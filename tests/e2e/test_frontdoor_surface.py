"""The front door as an anonymous client meets it, on a real stack.

Every error is an OCI error body (odd paths, methods, unparsable requests);
denials carry a ``Warning`` header; nothing about an upstream's internal
address leaks; blobs follow ``default_upstream`` as manifests do; tag lists
are paginated and read whole; malformed requests cannot fill the disk; slow
clients cannot hold the door; a blob that cannot be opened is 503.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.support.hostile import HostileUpstream, Reply
from tests.support.registry import push_image_sync
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, free_port

OCI_ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def raw(address: str, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; return (status, headers, body) of the answer."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if _ and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def assert_oci_error(body: bytes, code: str | None = None) -> dict[str, Any]:
    document = json.loads(body)
    assert isinstance(document["errors"], list) and document["errors"], document
    error = document["errors"][0]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, document
    return dict(error)


def audit(pg: Pullguard) -> list[dict[str, Any]]:
    path = pg.state_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def shared(shared_upstream: RegistryProcess, module_pullguard_factory) -> Pullguard:
    """One stack with the default config for the tests that need nothing else.

    Each of them uses repositories of its own (or the same bytes: ``app``)
    and counts audit lines from where it began, so the order they run in
    does not matter.
    """
    pg: Pullguard = module_pullguard_factory(shared_upstream.url)
    return pg


def test_every_error_is_an_oci_body(shared_upstream: RegistryProcess, shared: Pullguard) -> None:
    push_image_sync(shared_upstream.url, "app", "v1")
    pg = shared
    cases = [
        (b"GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /v2/lab/app/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /v2/lab/app/manifests/v1%00 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /v2/lab/ap%00p/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v2/lab/app/manifests/v1%0d%0aX: y HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v2/lab/app/manifests/%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v2/lab/app\r/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v2/lab/app\n/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n", 400),
        (b"PUT /v2/lab/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405),
        (b"POST /v2/lab/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /v2/lab/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (
            b"PATCH /v2/lab/app/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        (b"OPTIONS /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /v2/lab/app/tags/list?n=-5 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v2/lab/app/tags/list?n=ten HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ]
    for request, status in cases:
        got, headers, body = raw(pg.address, request)
        assert got == status, (request, got, body)
        assert headers.get("content-type", "").startswith("application/json"), (request, headers)
        assert_oci_error(body)
    # The spec's codes where the spec names one.
    assert_oci_error(pg.get("/v2/lab/app/tags/list?n=-5").content, "PAGINATION_NUMBER_INVALID")
    assert_oci_error(pg.get("/v2/lab/app/manifests/-bad-").content, "MANIFEST_UNKNOWN")
    assert_oci_error(pg.get("/v2/lab/app/manifests/sha256:totallywrong").content, "DIGEST_INVALID")
    assert_oci_error(pg.get("/v2/lab/App/manifests/v1").content, "NAME_INVALID")
    assert_oci_error(pg.get("/v2/lab/App/tags/list").content, "NAME_INVALID")
    denied = pg.get("/v2/lab/evil/app/tags/list")
    assert denied.status_code == 403
    assert_oci_error(denied.content, "DENIED")
    # The gateway still serves after all that.
    assert pg.get("/v2/lab/app/manifests/v1", headers=OCI_ACCEPT).status_code == 200


def test_denial_carries_a_warning_on_get_and_head(
    shared_upstream: RegistryProcess, shared: Pullguard
) -> None:
    push_image_sync(shared_upstream.url, "evil/app", "v1")
    pg = shared
    earlier = len(audit(pg))
    for method in ("GET", "HEAD"):
        response = httpx.request(
            method, f"http://{pg.address}/v2/lab/evil/app/manifests/v1", headers=OCI_ACCEPT
        )
        assert response.status_code == 403
        warning = response.headers["warning"]
        assert warning.startswith('299 - "pullguard: analysis: '), warning
        assert warning.endswith('"') and warning.isascii()
        if method == "GET":
            error = assert_oci_error(response.content, "DENIED")
            assert error["detail"]["layer"] == "analysis"
    # The decision names the full repository, however the client spelled it.
    short = pg.get("/v2/evil/app/manifests/v1", headers=OCI_ACCEPT)
    assert short.status_code == 403
    decisions = audit(pg)[earlier:]
    assert len(decisions) == 3
    assert {d["repository"] for d in decisions} == {"lab/evil/app"}
    assert decisions[-1]["client_name"] == "evil/app"
    # A syntax refusal is still a refusal, with its reason in the header.
    response = httpx.head(f"http://{pg.address}/v2/lab/app/manifests/-bad-")
    assert response.status_code == 404
    assert response.headers["warning"].startswith('299 - "pullguard: analysis: ')


def test_no_upstream_address_reaches_a_client(
    upstream: RegistryProcess, pullguard_factory, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there: an upstream that is down
    pg: Pullguard = pullguard_factory(
        upstream.url,
        upstreams={
            "lab": {"url": upstream.url, "insecure": True},
            "down": {"url": f"http://127.0.0.1:{port}", "insecure": True},
        },
        policy={"rules": [{"match": "**", "signature": "none"}]},
    )
    push_image_sync(upstream.url, "app", "v1")
    # docker-registry answers 500 when what its storage holds does not parse.
    tags = next(upstream.data.rglob("repositories/app/_manifests/tags"))
    (tags / "v1" / "current" / "link").write_text("garbage")
    responses = [
        pg.get("/v2/down/app/manifests/v1", headers=OCI_ACCEPT),
        pg.get("/v2/down/app/tags/list"),
        pg.get("/v2/lab/app/manifests/v1", headers=OCI_ACCEPT),
    ]
    shutil.rmtree(tags)
    tags.write_text("not a folder")
    responses.append(pg.get("/v2/lab/app/tags/list"))
    assert httpx.get(f"{upstream.url}/v2/app/tags/list").status_code == 500
    for response in responses:
        assert response.status_code >= 400, response.text
        assert_oci_error(response.content)
        text = response.text + response.headers.get("warning", "")
        for leak in ("127.0.0.1", f":{port}", f":{upstream.port}", "http://"):
            assert leak not in text, (leak, text)
    # The decision report keeps the detail for the operator.
    reports = json.dumps(audit(pg))
    assert f"127.0.0.1:{port}" in reports or f"127.0.0.1:{upstream.port}" in reports


def test_blob_follows_default_upstream_like_the_manifest(
    shared_upstream: RegistryProcess, shared: Pullguard
) -> None:
    upstream = shared_upstream
    image = push_image_sync(upstream.url, "team/app", "v1", [{"a.txt": b"app"}])
    pg = shared
    earlier = len(audit(pg))
    # Manifest by the short name (default upstream), blobs by the full one, and back.
    assert pg.get("/v2/team/app/manifests/v1", headers=OCI_ACCEPT).status_code == 200
    for name in ("lab/team/app", "team/app"):
        for digest, data in image.blobs.items():
            response = pg.get(f"/v2/{name}/blobs/{digest}")
            assert response.status_code == 200, (name, response.text)
            assert response.content == data
    admitted = [r for r in audit(pg)[earlier:] if r["decision"] == "ALLOW"]
    assert admitted and {r["repository"] for r in admitted} == {"lab/team/app"}
    other = push_image_sync(upstream.url, "team/other", "v1", [{"b.txt": b"other"}])
    assert pg.get("/v2/lab/team/other/manifests/v1", headers=OCI_ACCEPT).status_code == 200
    assert pg.get(f"/v2/team/other/blobs/{other.descriptors[0]['digest']}").status_code == 200
    # A blob of another repository is not served under this one.
    unrelated = pg.get(f"/v2/team/app/blobs/{other.descriptors[1]['digest']}")
    assert unrelated.status_code == 404
    assert_oci_error(unrelated.content, "BLOB_UNKNOWN")


def paginating_upstream(registry: HostileUpstream, repository: str, tags: list[str]) -> None:
    """Tag list pages with ``Link`` headers, as Docker Hub, GHCR and distribution 3 send them
    (Debian's docker-registry 2.8 ignores ``n`` for tags)."""

    async def page(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("n", "100"))
        last = request.query.get("last", "")
        after = [t for t in tags if t > last]
        headers = {"Content-Type": "application/json"}
        if len(after) > size:
            after = after[:size]
            headers["Link"] = f'</v2/{repository}/tags/list?n={size}&last={after[-1]}>; rel="next"'
        body = json.dumps({"name": repository, "tags": after}).encode()
        return await registry.send(request, Reply(headers=headers, body=body))

    registry.handle(f"/v2/{repository}/tags/list", page)


async def test_tag_list_is_paginated_and_read_whole(pullguard_factory) -> None:
    tags = sorted(f"t{i:03d}" for i in range(35))
    async with HostileUpstream() as registry:
        paginating_upstream(registry, "app", tags)
        pg: Pullguard = pullguard_factory(registry.url, limits={"tag_page_size": 10})
        async with httpx.AsyncClient(base_url=f"http://{pg.address}", timeout=60) as client:
            whole = await client.get("/v2/lab/app/tags/list")
            assert whole.status_code == 200, whole.text
            assert whole.json() == {"name": "lab/app", "tags": tags}
            assert "link" not in whole.headers
            # Every upstream page was read, each asked for 10.
            pages = registry.seen("/v2/app/tags/list")
            assert len(pages) == 4 and all("n=10" in p.query for p in pages)
            seen: list[str] = []
            path = "/v2/lab/app/tags/list?n=8"
            for _ in range(10):
                page = await client.get(path)
                assert page.status_code == 200
                seen.extend(page.json()["tags"])
                link = page.headers.get("link")
                if link is None:
                    break
                assert link.endswith('>; rel="next"')
                assert link.startswith("</v2/lab/app/tags/list?n=8&last=")
                path = link[1 : link.index(">")]
            assert seen == tags
            after = await client.get("/v2/lab/app/tags/list?n=5&last=t030")
            assert after.json()["tags"] == tags[31:]
            assert (await client.get("/v2/lab/app/tags/list?n=0")).json()["tags"] == []
            # Past its bounds, the list fails clearly rather than being cut short.
        pg.stop()
        for limits, named in (
            ({"tag_page_size": 10, "tag_pages": 2}, "limits.tag_pages"),
            ({"tag_page_size": 10, "tags": 15}, "limits.tags"),
        ):
            bounded: Pullguard = pullguard_factory(registry.url, limits=limits)
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.get(f"http://{bounded.address}/v2/lab/app/tags/list")
            assert response.status_code == 502
            assert named in assert_oci_error(response.content)["message"]
            bounded.stop()


def test_malformed_requests_cannot_fill_the_disk(
    shared_upstream: RegistryProcess, shared: Pullguard
) -> None:
    push_image_sync(shared_upstream.url, "app", "v1")
    pg = shared
    assert pg.get("/v2/lab/app/manifests/v1", headers=OCI_ACCEPT).status_code == 200

    def size() -> int:
        return sum(p.stat().st_size for p in pg.state_dir.iterdir() if p.is_file())

    before, lines = size(), len(audit(pg))
    paths = [
        "/v2/lab/app/manifests/-bad-{}",
        "/v2/lab/app/manifests/sha256:{}x",
        "/v2/lab/App{}/manifests/v1",
        "/v2/lab/app/manifests/.{}",
    ]
    with httpx.Client(base_url=f"http://{pg.address}", timeout=60) as client:
        for i in range(500):
            response = client.get(paths[i % len(paths)].format(i))
            assert response.status_code in (400, 404), response.text
    assert len(audit(pg)) == lines
    assert size() - before <= 64 * 1024


def _start_with_file_limit(
    pullguard_factory, monkeypatch, upstream_url: str, limit: int, soft: int = 0, **extra
):
    """``pullguard up`` in a child process whose open-file limit is ``limit`` (``ulimit -n``)."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft or limit, limit))

    with monkeypatch.context() as patch:
        patch.setattr(
            subprocess, "Popen", functools.partial(subprocess.Popen, preexec_fn=low_limit)
        )
        return pullguard_factory(upstream_url, **extra)


def test_half_sent_requests_do_not_shut_out_clients(
    upstream: RegistryProcess, pullguard_factory, monkeypatch, tmp_path: Path
) -> None:
    """1100 half-sent requests under ``ulimit -n 1024``: a normal pull still works."""
    image = push_image_sync(upstream.url, "app", "v1")
    # A long header timeout: here the connection cap alone must keep the door open.
    pg: Pullguard = _start_with_file_limit(
        pullguard_factory,
        monkeypatch,
        upstream.url,
        1024,
        limits={"max_connections": 300, "header_timeout": 120.0},
    )
    host, port = pg.address.rsplit(":", 1)
    slow: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET /v2/lab/app/manif")
            slow.append(sock)
        # A normal pull, with a real client, meanwhile.
        pulled = subprocess.run(
            [
                "skopeo",
                "copy",
                "--src-tls-verify=false",
                f"docker://{pg.address}/lab/app:v1",
                f"oci:{tmp_path / 'out'}:v1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert (tmp_path / "out" / "blobs" / "sha256" / image.digest.split(":")[1]).exists()
    finally:
        for sock in slow:
            sock.close()
    assert pg.get("/v2/").status_code == 200
    log = pg.log()
    assert log.count("Traceback") == 0, log[-3000:]


def test_blob_that_cannot_be_opened_is_503(
    shared_upstream: RegistryProcess, shared: Pullguard
) -> None:
    # Bytes of its own: the blob this test breaks is no other test's.
    image = push_image_sync(shared_upstream.url, "unopened", "v1", [{"u.txt": b"unopened\n"}])
    pg = shared
    assert pg.get("/v2/lab/unopened/manifests/v1", headers=OCI_ACCEPT).status_code == 200
    digest = image.descriptors[1]["digest"]
    stored = pg.state_dir / "admitted" / "blobs" / "sha256" / str(digest).split(":")[1]
    assert stored.is_file()
    stored.unlink()
    # A file gone from the admitted store is not admitted content any more
    # (the store's rule; the next verified pull replaces it): 404 with a body.
    for method in ("GET", "HEAD"):
        response = httpx.request(method, f"http://{pg.address}/v2/lab/unopened/blobs/{digest}")
        assert response.status_code == 404
        if method == "GET":
            assert_oci_error(response.content, "BLOB_UNKNOWN")
    stored.mkdir()  # there, but it cannot be read
    response = pg.get(f"/v2/lab/unopened/blobs/{digest}")
    assert response.status_code == 503
    assert_oci_error(response.content, "UNAVAILABLE")


def test_blob_open_error_under_a_low_file_limit_is_503(
    upstream: RegistryProcess, pullguard_factory, monkeypatch
) -> None:
    """Under a low open-file limit, a blob that cannot be opened is 503 with an
    OCI body (never an empty 404), and the repeated error does not flood the log."""
    image = push_image_sync(upstream.url, "app", "v1", [{"big.bin": os.urandom(4096)}])
    limit = 160
    pg: Pullguard = _start_with_file_limit(
        pullguard_factory, monkeypatch, upstream.url, limit, limits={"max_connections": 10000}
    )
    assert pg.get("/v2/lab/app/manifests/v1", headers=OCI_ACCEPT).status_code == 200
    digest = str(image.descriptors[1]["digest"])
    host, port = pg.address.rsplit(":", 1)
    first = socket.create_connection((host, int(port)), timeout=30)
    assert pg.get("/v2/").status_code == 200
    crowd: list[socket.socket] = []
    answers: list[bytes] = []
    try:
        for _ in range(limit + 40):
            crowd.append(socket.create_connection((host, int(port)), timeout=30))
        # Connections still queue in the kernel's backlog while the gateway has
        # no descriptor left; wait until it has taken all it can.
        time.sleep(3)
        request = f"GET /v2/lab/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        reader = first.makefile("rb")
        for _ in range(50):
            first.sendall(request)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                assert line, head
                head += line
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            answers.append(head + reader.read(length))
    finally:
        first.close()
        for sock in crowd:
            sock.close()
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:500]
        assert_oci_error(body, "UNAVAILABLE")
    time.sleep(2)
    assert pg.get(f"/v2/lab/app/blobs/{digest}").status_code == 200
    log = pg.log()
    assert 1 <= log.count("cannot open admitted blob") <= 10, log[-3000:]


def test_gateway_raises_its_soft_open_file_limit(
    upstream: RegistryProcess, pullguard_factory, monkeypatch
) -> None:
    pg: Pullguard = _start_with_file_limit(
        pullguard_factory, monkeypatch, upstream.url, 2048, soft=256
    )
    pid = pg.services["gateway"]["pid"]
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["2048", "2048"], line
    assert "open-file limit is 2048" in pg.log()
