"""The front door's own failures: an unforeseen exception, a door full of busy
connections, a client that never finishes its request head.

The front door runs on its real server (DoorRunner) on 127.0.0.1 with a real
decision log and admitted store; only the pipeline is replaced, by one that
fails on purpose (no real pipeline raises out of ``pull``: it catches
everything, which is why a fault injected here is the right tool).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.frontdoor import FrontDoor
from pullguard.gateway.httpserver import DoorRunner
from pullguard.gateway.pull import PullResult
from pullguard.gateway.stores import AdmittedStore
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import UpstreamError
from tests.support.configs import make_config


class FailingPipeline:
    """A ``Puller`` whose pulls fail (or wait, then fail) on purpose."""

    def __init__(self, config: Config, failure: BaseException | None) -> None:
        self.config = config
        self.failure = failure
        self.release = asyncio.Event()
        self.started = 0

    async def pull(self, name: str, reference: str, *, admit: bool = True) -> PullResult:
        self.started += 1
        if self.failure is not None:
            raise self.failure
        await self.release.wait()
        raise UpstreamError("released")

    async def repository_of(self, name: str) -> str | None:
        return None

    async def list_tags(self, name: str, last: str) -> list[str]:
        raise UpstreamError("no tag lists here")


async def _serve(
    tmp_path: Path, failure: BaseException | None, **limits: Any
) -> tuple[DoorRunner, str, FailingPipeline]:
    config = make_config(tmp_path)
    pipeline = FailingPipeline(config, failure)
    front = FrontDoor(pipeline, DecisionLog(tmp_path / "state"), AdmittedStore(tmp_path / "a"))
    runner = DoorRunner(
        front.app(),
        max_connections=limits.get("max_connections", 100),
        header_timeout=limits.get("header_timeout", 10.0),
        body_timeout=1.0,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"127.0.0.1:{port}", pipeline


@pytest.fixture
async def cleanup() -> AsyncIterator[list[DoorRunner]]:
    runners: list[DoorRunner] = []
    yield runners
    for runner in runners:
        await runner.cleanup()


async def test_unforeseen_exception_is_an_oci_500_without_detail(
    tmp_path: Path, cleanup: list[DoorRunner], caplog: pytest.LogCaptureFixture
) -> None:
    secret = RuntimeError("boom at http://10.1.2.3:5000/v2/internal")
    runner, address, _pipeline = await _serve(tmp_path, secret)
    cleanup.append(runner)
    with caplog.at_level(logging.ERROR, logger="pullguard.frontdoor"):
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            for method in ("GET", "HEAD"):
                response = await client.request(method, "/v2/lab/app/manifests/v1")
                assert response.status_code == 500
                assert response.headers["content-type"].startswith("application/json")
                if method == "GET":
                    body = response.json()
                    assert body["errors"][0]["code"] == "UNKNOWN"
                    for leak in ("10.1.2.3", "boom", "Traceback", "RuntimeError"):
                        assert leak not in response.text
    # The traceback stays server-side.
    assert any(r.exc_info and r.exc_info[1] is secret for r in caplog.records)


async def test_a_door_full_of_busy_connections_answers_503(
    tmp_path: Path, cleanup: list[DoorRunner]
) -> None:
    runner, address, pipeline = await _serve(tmp_path, None, max_connections=2)
    cleanup.append(runner)
    host, port = address.split(":")
    busy = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /v2/lab/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        busy.append((reader, writer))
    for _ in range(100):
        if pipeline.started == 2:
            break
        await asyncio.sleep(0.05)
    assert pipeline.started == 2
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
    pipeline.release.set()
    for reader, writer in busy:
        answer = await asyncio.wait_for(reader.read(1000), 30)
        assert answer.startswith(b"HTTP/1.1 502")
        writer.close()


async def test_an_unfinished_request_head_is_cut_off(
    tmp_path: Path, cleanup: list[DoorRunner]
) -> None:
    runner, address, _pipeline = await _serve(tmp_path, None, header_timeout=0.5)
    cleanup.append(runner)
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    # Closed by the server (a hung test would fail at the wait_for bound).
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    # An idle keep-alive connection gets the same deadline after its response.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"{}"), 30)
    assert first.startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


async def test_an_escaped_pullguard_error_keeps_its_status_not_its_detail(
    tmp_path: Path, cleanup: list[DoorRunner]
) -> None:
    runner, address, _pipeline = await _serve(
        tmp_path, UpstreamError("upstream: lab: GET http://10.1.2.3:5000/v2/x: refused")
    )
    cleanup.append(runner)
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        response = await client.get("/v2/lab/app/manifests/v1")
    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "10.1.2.3" not in response.text
