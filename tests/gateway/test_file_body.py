"""FileBody: an admitted blob sent by the kernel, on the door's real server.

Each test serves one file through DoorRunner on 127.0.0.1 and reads it with
httpx: the bytes, the headers, the count the access log reports, and what a
client sees when the file is shorter than the length the door promised.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from pullguard.gateway.httpserver import DoorRunner, FileBody

Serve = Callable[[Path, int], Awaitable[tuple[str, list[FileBody]]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a door whose one route answers with ``path``, claiming ``size`` bytes."""
    runners: list[DoorRunner] = []

    async def start(path: Path, size: int) -> tuple[str, list[FileBody]]:
        answered: list[FileBody] = []

        async def blob(request: web.Request) -> web.StreamResponse:
            response = FileBody(path.open("rb"), size, {"Content-Type": "application/octet-stream"})
            answered.append(response)
            return response

        app = web.Application()
        app.router.add_route("*", "/blob", blob)
        runner = DoorRunner(
            app,
            max_connections=10,
            header_timeout=10.0,
            body_timeout=1.0,
            access_log=None,
            handle_signals=False,
        )
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}/blob", answered

    yield start
    for runner in runners:
        await runner.cleanup()


def _closed(responses: list[FileBody]) -> list[bool]:
    return [r._handle.closed for r in responses]


async def test_the_file_goes_out_whole_by_sendfile_and_is_counted(
    tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    calls: list[int] = []
    real = os.sendfile

    def counted(*args: Any) -> int:
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counted)
    url, answered = await serve(path, len(data))
    async with httpx.AsyncClient(timeout=10) as client:
        got = await client.get(url)
    assert got.status_code == 200
    assert got.headers["Content-Length"] == str(len(data))
    assert got.content == data
    assert calls, "the body did not go through sendfile(2)"
    # What the access log and pullguard_served_bytes count: the body and the head.
    assert answered[0].body_length > len(data)
    assert _closed(answered) == [True]


async def test_head_states_the_length_and_sends_no_body(tmp_path: Path, serve: Serve) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 5000)
    url, answered = await serve(path, 5000)
    async with httpx.AsyncClient(timeout=10) as client:
        head = await client.head(url)
        # The connection is still in step: a GET on it gets the whole body.
        got = await client.get(url)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "5000"
    assert head.content == b""
    assert answered[0].body_length < 5000
    assert got.content == b"x" * 5000
    assert _closed(answered) == [True, True]


async def test_a_file_shorter_than_its_length_ends_the_connection(
    tmp_path: Path, serve: Serve
) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"y" * 1000)
    url, answered = await serve(path, 4000)
    async with httpx.AsyncClient(timeout=5) as client:
        # Not a read timeout: the door closes the connection at once.
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)
    assert _closed(answered) == [True]


async def test_an_empty_file_is_an_empty_200(tmp_path: Path, serve: Serve) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"")
    url, answered = await serve(path, 0)
    async with httpx.AsyncClient(timeout=10) as client:
        got = await client.get(url)
    assert (got.status_code, got.headers["Content-Length"], got.content) == (200, "0", b"")
    assert _closed(answered) == [True]


async def test_a_client_that_leaves_mid_body_does_not_leave_the_file_open(
    tmp_path: Path, serve: Serve
) -> None:
    size = 64 * 1024 * 1024
    path = tmp_path / "blob"
    with path.open("wb") as handle:
        handle.truncate(size)
    url, answered = await serve(path, size)
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.readexactly(1024 * 1024)  # headers and the first MiB of the body
    writer.transport.abort()
    for _ in range(200):
        if answered and _closed(answered) == [True]:
            break
        await asyncio.sleep(0.05)
    assert _closed(answered) == [True]
