"""A real HTTP receiver of pullguard's notifications, on 127.0.0.1, in a thread of the test.

It runs its own event loop, so that sync end-to-end tests and async gateway
tests use it alike. It keeps each request's headers and exact body bytes;
``status`` sets its answer, ``hold()`` makes it keep requests unanswered
until ``release()``, and ``stop()`` / ``start()`` take it down and bring it
back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.stack import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, status: int = 200, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = status
        #: Answer redirects here (a 302) instead of ``status``, when set.
        self.redirect_to = ""
        #: Answer 200 with a body that does not end (until the client goes, or a minute).
        self.endless = False
        self.received: list[Received] = []
        #: Requests waiting in hold() now.
        self.holding = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._released = threading.Event()
        self._released.set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def bodies(self, path: str = "/hook") -> list[bytes]:
        with self._lock:
            return [r.body for r in self.received if r.path == path]

    def wait_for(self, count: int, timeout: float = 60.0, path: str = "/hook") -> list[Received]:
        """The first ``count`` requests to ``path``, waiting for them; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got = [r for r in self.received if r.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(got)} requests to {path}, waited for {count}")

    def wait_holding(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.holding == 0:
            if time.monotonic() > deadline:
                raise AssertionError("no request arrived to hold")
            time.sleep(0.02)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.received.append(Received(request.path, dict(request.headers), body))
        if not self._released.is_set():
            self.holding += 1
            try:
                while not self._released.is_set():
                    await asyncio.sleep(0.02)
            finally:
                self.holding -= 1
        if self.redirect_to:
            raise web.HTTPFound(self.redirect_to)
        if self.endless:
            return await self._endless(request)
        return web.Response(status=self.status, text="ok" if self.status < 300 else "refused")

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                await response.write(chunk)
            except (ConnectionError, RuntimeError):
                break
            await asyncio.sleep(0.01)
        return response


def as_json(received: Received) -> Any:
    return json.loads(received.body)
