"""A headless Debian ``chromium`` driven over the DevTools protocol (CDP), for console tests.

Small on purpose: start the browser on a free port with a throw-away
profile, attach to its page over a websocket (aiohttp's client), navigate,
click an element where it is drawn (real mouse events, as a user's), type
into a focused field, read the page, and save screenshots. Stopped by its
PID (its process group: chromium starts helpers of its own).

The console runs no script; ``Runtime.evaluate`` here is the test reading
the page (element positions, text), which the DevTools protocol may do
whatever the page's Content-Security-Policy says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.stack import free_port

#: Generous: the test machine is loaded.
START_SECONDS = 90
STEP_SECONDS = 120


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(Exception):
    """The browser did not start, or a DevTools call failed."""


class Page:
    """One browser tab over CDP."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._answers:
                self._answers.pop(data["id"]).set_result(data)
            elif data.get("method") == "Page.loadEventFired":
                self._loaded.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[self._next_id] = answer
        await self._ws.send_str(
            json.dumps({"id": self._next_id, "method": method, "params": params})
        )
        data = await asyncio.wait_for(answer, STEP_SECONDS)
        if "error" in data:
            raise BrowserError(f"{method}: {data['error']}")
        result: dict[str, Any] = data.get("result", {})
        return result

    async def _until_loaded(self, action: Callable[[], Awaitable[Any]]) -> None:
        self._loaded.clear()
        await action()
        await asyncio.wait_for(self._loaded.wait(), STEP_SECONDS)

    async def goto(self, url: str) -> None:
        await self._until_loaded(lambda: self.call("Page.navigate", url=url))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def _center(self, selector: str) -> tuple[float, float]:
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"
            " })()"
        )
        if box is None:
            raise BrowserError(f"no element {selector} on {await self.evaluate('location.href')}")
        return float(box[0]), float(box[1])

    async def _mouse_click(self, selector: str) -> None:
        x, y = await self._center(selector)
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def click(self, selector: str) -> None:
        """Click where the element is drawn, and wait for the page it leads to."""
        await self._until_loaded(lambda: self._mouse_click(selector))

    async def type_into(self, selector: str, text: str) -> None:
        """Click into a field and type ``text``, as a user would."""
        await self._mouse_click(selector)
        await self.call("Input.insertText", text=text)

    async def text(self, selector: str = "body") -> str:
        value = await self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
        )
        return str(value)

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """A headless chromium with one page, stopped (by PID) afterwards."""
    binary = chromium_binary()
    if binary is None:
        raise BrowserError("chromium is not installed: run `make system-deps`")
    port = free_port()
    args = [
        binary,
        "--headless=new",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--window-size=1280,900",
        "about:blank",
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # chromium refuses root with its sandbox on
    log = (profile.parent / "chromium.log").open("wb")
    # A TMPDIR of its own, removed afterwards: chromium leaves folders there that
    # outlive it. Short, since its socket paths there must fit in 108 bytes.
    scratch = tempfile.mkdtemp(prefix="pgchr")
    env = {**os.environ, "TMPDIR": scratch}
    process = subprocess.Popen(args, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        async with aiohttp.ClientSession() as http:
            target = await _page_target(http, port, process)
            ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 << 20)
            page = Page(ws)
            try:
                await page.call("Page.enable")
                yield page
            finally:
                await page.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


async def _page_target(
    http: aiohttp.ClientSession, port: int, process: subprocess.Popen[bytes]
) -> dict[str, Any]:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with status {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                for target in await response.json():
                    if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                        return dict(target)
        await asyncio.sleep(0.5)
    raise BrowserError(f"chromium's DevTools did not answer on port {port} in {START_SECONDS}s")
