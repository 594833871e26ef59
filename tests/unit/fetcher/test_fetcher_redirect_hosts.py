"""Redirects are judged before a connection is made (issue 7, item 3).

A blob redirect to a host the upstream may not send the fetcher to is refused
with ``fetch.redirect_host_not_allowed`` naming the host, and the host never
sees a connection: a counting TCP server on 127.0.0.2 proves it. Hosts
compare exactly (IDNA form, port of the upstream's own host) or by the
configured glob, never by prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pullguard.services.fetcher.models import Descriptor
from pullguard.services.fetcher.urls import redirect_host_allowed
from pullguard.services.runtime.config import Upstream
from tests.support.configs import make_config
from tests.support.hostile import HostileUpstream, Reply, tls_material

REPO = "team/app"
BLOB = b"layer bytes"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_PATH = f"/v2/{REPO}/blobs/{DIGEST}"
OTHER_HOST = "127.0.0.2"


class CountingServer:
    """Counts the TCP connections it accepts on 127.0.0.2 and answers each with BLOB."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(BLOB), BLOB)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> CountingServer:
        self._server = await asyncio.start_server(self._serve, OTHER_HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def counting() -> AsyncIterator[CountingServer]:
    async with CountingServer() as server:
        yield server


def _blob() -> list[Descriptor]:
    return [Descriptor("application/octet-stream", DIGEST, len(BLOB))]


async def test_redirect_to_a_disallowed_host_is_refused_without_a_connection(
    upstream: HostileUpstream, counting: CountingServer, make_fetcher
) -> None:
    upstream.redirect(BLOB_PATH, f"http://{OTHER_HOST}:{counting.port}/data?sig=SECRET")
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, _blob())
    [finding] = result.verdict.findings
    assert finding.code == "fetch.redirect_host_not_allowed"
    assert f"{OTHER_HOST}:{counting.port}" in finding.message
    assert finding.evidence["host"] == OTHER_HOST
    assert "SECRET" not in finding.message + str(finding.evidence)
    assert result.blobs == []
    assert counting.accepted == 0
    # The refused redirect is still recorded: source judges it again.
    assert [e.status for e in result.exchanges] == [307]


async def test_redirect_to_an_allowed_host_is_followed(
    upstream: HostileUpstream, counting: CountingServer, make_fetcher
) -> None:
    # Positive control: the same hop, once redirect_hosts names the host.
    upstream.redirect(BLOB_PATH, f"http://{OTHER_HOST}:{counting.port}/data")
    fetcher = make_fetcher(upstream.url, redirect_hosts=[OTHER_HOST])
    result = await fetcher.fetch_blobs("s1", "lab", REPO, _blob())
    assert result.verdict.allowed, result.verdict.findings
    assert counting.accepted == 1


async def test_redirect_to_the_upstream_host_on_another_port_is_refused_unconnected(
    upstream: HostileUpstream, make_fetcher
) -> None:
    async with HostileUpstream() as elsewhere:
        elsewhere.reply("/data", Reply(body=BLOB))
        upstream.redirect(BLOB_PATH, f"{elsewhere.url}/data")
        result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, _blob())
        assert [f.code for f in result.verdict.findings] == ["fetch.redirect_host_not_allowed"]
        assert elsewhere.requests == []


async def test_https_to_http_redirect_is_refused_without_a_connection(
    tmp_path: Path, counting: CountingServer, make_fetcher
) -> None:
    tls = tls_material(tmp_path / "tls")
    async with HostileUpstream(ssl_context=tls.server_context) as secure:
        secure.redirect(BLOB_PATH, f"http://{OTHER_HOST}:{counting.port}/data")
        fetcher = make_fetcher(
            secure.url, tls={"ca_file": str(tls.ca_file)}, redirect_hosts=[OTHER_HOST]
        )
        result = await fetcher.fetch_blobs("s1", "lab", REPO, _blob())
    assert [f.code for f in result.verdict.findings] == ["fetch.bad_redirect"]
    assert "https to http" in result.verdict.findings[0].message
    assert counting.accepted == 0


def _upstream(tmp_path: Path, url: str, **extra: object) -> Upstream:
    config = make_config(tmp_path, upstreams={"up": {"url": url, **extra}}, default_upstream="up")
    return config.upstreams["up"]


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("http://127.0.0.1:5001/x", True),  # the upstream itself
        ("http://127.0.0.1:6000/x", False),  # its host, another port
        ("http://127.0.0.2:5001/x", False),  # another host, same port
        ("http://127.0.0.10:5001/x", False),
        ("http://localhost:5001/x", False),  # same machine, another name
    ],
)
def test_lab_redirect_hosts_compare_host_and_port(
    tmp_path: Path, target: str, allowed: bool
) -> None:
    lab = _upstream(tmp_path, "http://127.0.0.1:5001", insecure=True)
    assert redirect_host_allowed(httpx.URL(target), lab) is allowed


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("http://127.0.0.1:7000/x", True),  # a listed host: any port
        ("http://127.0.0.10/x", False),  # never by prefix
        ("http://127.0.0.1.evil.example/x", False),
    ],
)
def test_listed_redirect_host_matches_exactly(tmp_path: Path, target: str, allowed: bool) -> None:
    lab = _upstream(tmp_path, "http://127.0.0.2:5001", insecure=True, redirect_hosts=["127.0.0.1"])
    assert redirect_host_allowed(httpx.URL(target), lab) is allowed


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("https://registry-1.docker.io/x", True),
        ("https://registry-1.docker.io:8443/x", False),
        ("https://production.cloudflare.docker.com/x", True),
        ("https://PRODUCTION.Cloudflare.Docker.COM/x", True),  # DNS names have no case
        ("https://edge.cloudflare.docker.com/x", True),  # the *.cloudflare.docker.com glob
        ("https://production.cloudflare.docker.com./x", False),  # trailing dot: another name
        ("https://production.cloudflare.docker.com.evil.example/x", False),
        ("https://evilcloudflare.docker.com/x", False),
        ("https://cloudflare.docker.com/x", False),  # the glob needs a label
        ("https://prоduction.cloudflare.docker.com.evil/x", False),  # Cyrillic о
        ("https://auth.docker.io/x", False),  # a realm host is no blob host
    ],
)
def test_docker_hub_default_redirect_hosts(tmp_path: Path, target: str, allowed: bool) -> None:
    hub = _upstream(tmp_path, "https://registry-1.docker.io")
    assert redirect_host_allowed(httpx.URL(target), hub) is allowed


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("https://pkg-containers.githubusercontent.com/x", True),
        ("https://pkg-containers.githubusercontent.com.attacker.io/x", False),
        ("https://xpkg-containers.githubusercontent.com/x", False),
        ("https://pkg-cоntainers.githubusercontent.com/x", False),  # Cyrillic о: xn-- form
    ],
)
def test_ghcr_default_redirect_hosts(tmp_path: Path, target: str, allowed: bool) -> None:
    ghcr = _upstream(tmp_path, "https://ghcr.io")
    assert redirect_host_allowed(httpx.URL(target), ghcr) is allowed
