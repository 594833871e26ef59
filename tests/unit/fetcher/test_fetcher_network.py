"""Where connections may go after DNS resolution (T-07), and TLS trust and facts.

A "public" upstream is played by a name the test resolver maps to a global
address (93.184.216.34) that the test connector then dials on 127.0.0.1:
nothing ever leaves loopback, and no real DNS query is made except for
``localhost``.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpcore
import pytest

from pullguard.services.fetcher.network import (
    AddressGuard,
    ForbiddenAddress,
    spki_sha256,
    system_resolve,
)
from pullguard.services.runtime.config import Upstream
from pullguard.services.runtime.errors import UpstreamError
from tests.support.bounds import LIMIT_NOT_FALLBACK
from tests.support.configs import make_config
from tests.support.hostile import HostileUpstream, Reply, tls_material

REPO = "team/app"
MANIFEST_PATH = f"/v2/{REPO}/manifests/v1"
MANIFEST = b'{"schemaVersion":2}'
#: Global addresses the resolver hands out; the connector dials them on loopback.
PUBLIC = ("93.184.216.34", "93.184.216.35")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeDns:
    """Answers from a table; ``localhost`` from the system; anything else fails."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host in self.table:
            return self.table[host]
        if host == "localhost":
            return await system_resolve(host, port)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class LoopbackConnector(httpcore.NetworkBackend):
    """Dials PUBLIC addresses (and private ones a test maps) on 127.0.0.1; records each."""

    def __init__(self, mapped: Iterable[str] = PUBLIC) -> None:
        self.inner = httpcore.SyncBackend()
        self.mapped = set(mapped)
        self.dialled: list[tuple[str, int]] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        self.dialled.append((host, port))
        target = "127.0.0.1" if host in self.mapped else host
        assert target in ("127.0.0.1", "::1"), f"test tried to dial {target}"
        return self.inner.connect_tcp(target, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _upstream(tmp_path: Path, url: str, **extra: object) -> Upstream:
    config = make_config(tmp_path, upstreams={"up": {"url": url, **extra}}, default_upstream="up")
    return config.upstreams["up"]


# -- the guard -----------------------------------------------------------------------


async def test_t07_localhost_resolves_to_loopback_and_is_refused(tmp_path: Path) -> None:
    # A public upstream (an IP literal: no DNS for it) must not send us to a
    # name that the system resolver maps to 127.0.0.1.
    guard = AddressGuard(_upstream(tmp_path, f"https://{PUBLIC[0]}"), system_resolve)
    with pytest.raises(ForbiddenAddress) as caught:
        await guard.addresses("localhost", 80, 2.0)
    assert caught.value.address in ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1"],
        [PUBLIC[0], "10.0.0.5"],  # ANY non-public address refuses the name
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["fe80::1%1"],
        ["0.0.0.0"],
        ["224.0.0.1"],
        ["64:ff9b::a9fe:a9fe"],  # NAT64 of the metadata address
        ["not an address"],
    ],
)
async def test_t07_names_resolving_to_non_public_addresses_are_refused(
    tmp_path: Path, answer: list[str]
) -> None:
    guard = AddressGuard(
        _upstream(tmp_path, "https://registry.test"),
        FakeDns({"registry.test": [PUBLIC[0]], "rebind.test": answer}),
    )
    with pytest.raises(ForbiddenAddress):
        await guard.addresses("rebind.test", 443, 1.0)


async def test_t07_public_answers_and_the_upstream_itself_pass(tmp_path: Path) -> None:
    dns = FakeDns({"registry.test": ["10.1.2.3"], "cdn.test": [PUBLIC[1], PUBLIC[0]]})
    guard = AddressGuard(_upstream(tmp_path, "https://registry.test"), dns)
    assert await guard.addresses("cdn.test", 443, 1.0) == [PUBLIC[1], PUBLIC[0]]
    # The operator chose the upstream's host: its addresses are not judged.
    assert await guard.addresses("registry.test", 443, 1.0) == ["10.1.2.3"]


async def test_t07_upstream_on_a_private_address_may_send_us_to_private_ones(
    tmp_path: Path,
) -> None:
    dns = FakeDns({"registry.lan": ["10.1.2.3"], "cache.lan": ["10.1.2.4"]})
    guard = AddressGuard(_upstream(tmp_path, "https://registry.lan"), dns)
    assert await guard.addresses("cache.lan", 443, 1.0) == ["10.1.2.4"]
    lab = AddressGuard(_upstream(tmp_path, "http://127.0.0.1:5001", insecure=True), dns)
    assert await lab.addresses("cache.lan", 80, 1.0) == ["10.1.2.4"]


async def test_t07_resolution_is_bounded_in_time(tmp_path: Path) -> None:
    async def stalled(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return [PUBLIC[0]]  # pragma: no cover

    guard = AddressGuard(_upstream(tmp_path, f"https://{PUBLIC[0]}"), stalled)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await guard.addresses("slow.test", 443, 0.2)
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


# -- through the fetcher --------------------------------------------------------------


@pytest.fixture
def public(upstream: HostileUpstream, make_fetcher):  # noqa: ANN201 - returns a tuple
    """(fetcher, dns, connector) for upstream 'lab' at http://registry.test:<port>."""
    dns = FakeDns({"registry.test": [PUBLIC[0]]})
    connector = LoopbackConnector()
    fetcher = make_fetcher(
        f"http://registry.test:{upstream.port}",
        options={"resolver": dns, "connector": connector},
        redirect_hosts=["cdn.test", "rebind.test"],
    )
    return fetcher, dns, connector


@pytest.mark.parametrize("answer", [["127.0.0.1"], [PUBLIC[1], "127.0.0.1"]])
async def test_t07_redirect_to_name_resolving_to_loopback_is_refused_unconnected(
    upstream: HostileUpstream, other: HostileUpstream, public, answer: list[str]
) -> None:
    fetcher, dns, connector = public
    dns.table["rebind.test"] = answer
    upstream.redirect(MANIFEST_PATH, f"http://rebind.test:{other.port}/data")
    other.reply("/data", Reply(body=MANIFEST))
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert [f.code for f in result.verdict.findings] == ["fetch.forbidden_address"]
    assert "rebind.test" in result.verdict.findings[0].message
    assert other.requests == []
    assert all(port != other.port for _, port in connector.dialled)


async def test_t07_redirect_to_public_name_is_followed_to_the_checked_address(
    upstream: HostileUpstream, other: HostileUpstream, public
) -> None:
    fetcher, dns, connector = public
    dns.table["cdn.test"] = [PUBLIC[1]]
    upstream.redirect(MANIFEST_PATH, f"http://cdn.test:{other.port}/data")
    other.reply("/data", Reply(body=MANIFEST))
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    # The socket went to the address that was checked, not to the name again.
    assert (PUBLIC[1], other.port) in connector.dialled
    assert dns.asked.count("cdn.test") == 1
    assert other.requests[0].headers["host"] == f"cdn.test:{other.port}"


async def test_t08_token_realm_resolving_to_loopback_is_never_asked(
    upstream: HostileUpstream, other: HostileUpstream, public
) -> None:
    fetcher, dns, connector = public
    dns.table["auth.test"] = ["127.0.0.1"]
    upstream.reply(
        MANIFEST_PATH,
        Reply(
            status=401,
            headers={"WWW-Authenticate": f'Bearer realm="http://auth.test:{other.port}/token"'},
        ),
    )
    with pytest.raises(UpstreamError, match="non-public address 127.0.0.1"):
        await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert other.requests == []


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}/x",
        "http://[::1]:{port}/x",
        "http://[::ffff:127.0.0.1]:{port}/x",
        "http://2130706433:{port}/x",
        "http://0177.0.0.1:{port}/x",
        "http://127.1:{port}/x",
        "http://localhost:{port}/x",
        "http://localhost.:{port}/x",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_t07_redirect_to_loopback_spellings_is_refused(
    upstream: HostileUpstream, other: HostileUpstream, public, location: str
) -> None:
    fetcher, _, _ = public
    upstream.redirect(MANIFEST_PATH, location.format(port=other.port))
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert [f.code for f in result.verdict.findings] in (
        ["fetch.bad_redirect"],
        ["fetch.forbidden_address"],
    )
    assert other.requests == []


async def test_t07_thirty_hop_chain_stops_at_the_limit(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Limit: redirects = 5 (default); the chain has 30 hops.
    path = MANIFEST_PATH
    for hop in range(30):
        upstream.redirect(path, f"/hop{hop}")
        path = f"/hop{hop}"
    upstream.reply(path, Reply(body=MANIFEST))
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert [f.code for f in result.verdict.findings] == ["fetch.too_many_redirects"]
    assert len(upstream.requests) == 6


async def test_t07_location_with_bare_cr_is_never_followed(make_fetcher) -> None:
    # aiohttp will not send such a header, so a raw socket server plays it.
    lines: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append(await reader.readline())
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: /next\rX-Evil: 1\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        fetcher = make_fetcher(f"http://127.0.0.1:{port}", limits={"retries": 0})
        with pytest.raises(UpstreamError):
            await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    finally:
        server.close()
        await server.wait_closed()
    assert lines == [f"GET {MANIFEST_PATH} HTTP/1.1\r\n".encode()]


# -- TLS ----------------------------------------------------------------------------------


async def test_tls_ca_file_is_the_trust_store_and_the_peer_is_recorded(
    tmp_path: Path, make_fetcher
) -> None:
    tls = tls_material(tmp_path / "tls")
    async with HostileUpstream(ssl_context=tls.server_context) as server:
        server.reply(MANIFEST_PATH, Reply(body=MANIFEST))
        fetcher = make_fetcher(server.url, tls={"ca_file": str(tls.ca_file)})
        result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    [exchange] = result.exchanges
    assert exchange.tls_spki_sha256 == tls.spki_sha256
    assert spki_sha256(tls.certificate_der) == tls.spki_sha256
    assert exchange.tls_version in ("TLSv1.2", "TLSv1.3")
    assert exchange.peer_address == f"127.0.0.1:{server.port}"


async def test_o04_tls_system_store_rejects_an_unknown_ca(tmp_path: Path, make_fetcher) -> None:
    tls = tls_material(tmp_path / "tls")
    async with HostileUpstream(ssl_context=tls.server_context) as server:
        server.reply(MANIFEST_PATH, Reply(body=MANIFEST))
        fetcher = make_fetcher(server.url)
        with pytest.raises(UpstreamError, match="TLS") as caught:
            await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert caught.value.http_status == 502
    assert server.requests == []  # no HTTP request went over the refused handshake


async def test_o04_tls_another_ca_file_rejects_the_server(tmp_path: Path, make_fetcher) -> None:
    served = tls_material(tmp_path / "served")
    trusted = tls_material(tmp_path / "trusted")
    async with HostileUpstream(ssl_context=served.server_context) as server:
        fetcher = make_fetcher(server.url, tls={"ca_file": str(trusted.ca_file)})
        with pytest.raises(UpstreamError, match="TLS"):
            await fetcher.fetch_manifest("s1", "lab", REPO, "v1")


async def test_plain_http_records_peer_address_without_tls_facts(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(MANIFEST_PATH, Reply(body=MANIFEST))
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    [exchange] = result.exchanges
    assert exchange.peer_address == f"127.0.0.1:{upstream.port}"
    assert (exchange.tls_spki_sha256, exchange.tls_version) == ("", "")


def test_spki_of_garbage_is_empty() -> None:
    assert spki_sha256(b"not a certificate") == ""
