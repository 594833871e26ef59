"""A scriptable fake upstream registry that can misbehave on purpose.

It plays whatever a test scripts: statuses, headers (lying ones included),
bodies given whole or produced chunk by chunk (stalls, trickles, endless
streams), redirects and auth challenges. It records every request with all
its headers, so a test can assert that a request was never made or that no
``Authorization`` reached a host. It listens on 127.0.0.1 on a free port;
run several to play a registry, a token realm and a "CDN" on other ports.

Example::

    async with HostileUpstream() as registry, HostileUpstream() as cdn:
        registry.redirect("/v2/x/blobs/sha256:..", f"{cdn.url}/data")
        cdn.reply("/data", Reply(body=b"hello"))
        ...
        assert "authorization" not in cdn.seen("/data")[0].headers
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyStream = Callable[[], AsyncIterator[bytes]]


@dataclass
class Reply:
    """One scripted response.

    ``body`` is sent as is; ``stream`` (if given) produces the body chunk by
    chunk instead. Headers are sent exactly as given, so ``Content-Length``
    or ``Content-Encoding`` can lie. ``delay`` waits before the headers.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: BodyStream | None = None
    delay: float = 0.0


@dataclass
class Seen:
    """One request as the fake upstream received it."""

    method: str
    path: str  # raw path, without the query
    query: str  # raw query string
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    bytes_sent: int = 0  # body bytes written back (before the client hung up)


_SEEN: Any = web.RequestKey("seen", Seen) if hasattr(web, "RequestKey") else "seen"


class HostileUpstream:
    """An aiohttp server on 127.0.0.1:<free port> that plays scripted routes.

    Unscripted paths answer 404 with an OCI error body.
    """

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._routes: dict[tuple[str, str], Handler] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # -- life cycle ----------------------------------------------------------

    async def start(self) -> HostileUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn the bound port
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HostileUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return f"http://{self.host}"

    # -- scripting -----------------------------------------------------------

    def reply(self, path: str, *replies: Reply, method: str = "GET") -> None:
        """Answer ``method path`` with ``replies`` in turn; the last one repeats."""
        script = list(replies) or [Reply()]
        count = 0

        async def handler(request: web.Request) -> web.StreamResponse:
            nonlocal count
            chosen = script[min(count, len(script) - 1)]
            count += 1
            return await self.send(request, chosen)

        self._routes[(method, path)] = handler

    def handle(self, path: str, handler: Handler, method: str = "GET") -> None:
        """Answer ``method path`` with a custom aiohttp handler (use :meth:`send`)."""
        self._routes[(method, path)] = handler

    def redirect(self, path: str, location: str, status: int = 307) -> None:
        """Answer ``GET path`` with a redirect to ``location`` (sent verbatim)."""
        self.reply(path, Reply(status=status, headers={"Location": location}))

    def guard(self, path: str, authorization: str, ok: Reply, challenge: Reply) -> None:
        """Answer ``ok`` when the request's Authorization equals ``authorization``,
        else ``challenge`` (typically :func:`bearer_challenge`)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            chosen = ok if request.headers.get("Authorization") == authorization else challenge
            return await self.send(request, chosen)

        self._routes[("GET", path)] = handler

    def seen(self, path: str | None = None) -> list[Seen]:
        """Requests received, all or those for ``path``."""
        return [r for r in self.requests if path is None or r.path == path]

    # -- serving -------------------------------------------------------------

    async def send(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        """Write ``reply`` to ``request``, counting body bytes into its record."""
        record = request[_SEEN]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        response = web.StreamResponse(status=reply.status)
        for name, value in reply.headers.items():
            response.headers[name] = value
        if reply.stream is None and "Content-Length" not in response.headers:
            response.headers["Content-Length"] = str(len(reply.body))
        await response.prepare(request)
        try:
            if reply.stream is None:
                if reply.body:
                    await response.write(reply.body)
                    record.bytes_sent += len(reply.body)
            else:
                async for chunk in reply.stream():
                    await response.write(chunk)
                    record.bytes_sent += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            # The client hung up: exactly what the fetcher should do to a liar.
            pass
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = Seen(request.method, raw_path, query, headers)
        self.requests.append(record)
        request[_SEEN] = record
        handler = self._routes.get((request.method, raw_path))
        if handler is None:
            body = {"errors": [{"code": "NAME_UNKNOWN", "message": "not scripted"}]}
            return web.json_response(body, status=404)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await handler(request)
        finally:
            if task is not None:
                self._tasks.discard(task)


# -- helpers for scripts -----------------------------------------------------


def bearer_challenge(realm: str, service: str = "", scope: str = "") -> Reply:
    """A 401 with ``WWW-Authenticate: Bearer realm=..,service=..,scope=..``."""
    params = [f'realm="{realm}"']
    if service:
        params.append(f'service="{service}"')
    if scope:
        params.append(f'scope="{scope}"')
    return Reply(status=401, headers={"WWW-Authenticate": "Bearer " + ",".join(params)})


def token_reply(
    token: str = "test-token", expires_in: int | None = 300, key: str = "token"
) -> Reply:
    """A token realm's JSON answer."""
    data: dict[str, Any] = {key: token}
    if expires_in is not None:
        data["expires_in"] = expires_in
    return Reply(headers={"Content-Type": "application/json"}, body=json.dumps(data).encode())


def endless(chunk: bytes = b"\0" * 65536) -> BodyStream:
    """A body that never ends."""

    async def stream() -> AsyncIterator[bytes]:
        while True:
            yield chunk

    return stream


def stall_after(first: bytes, pause: float = 3600.0) -> BodyStream:
    """Send ``first``, then go quiet for ``pause`` seconds (and end)."""

    async def stream() -> AsyncIterator[bytes]:
        yield first
        await asyncio.sleep(pause)

    return stream


def trickle(data: bytes, interval: float, size: int = 1) -> BodyStream:
    """Send ``data`` ``size`` bytes at a time, one piece every ``interval`` seconds."""

    async def stream() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), size):
            yield data[offset : offset + size]
            await asyncio.sleep(interval)

    return stream
