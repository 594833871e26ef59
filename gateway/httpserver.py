"""The front door's connection handling: a bounded number of connections, slow
clients cut off, and an OCI error body even for requests aiohttp cannot parse.

aiohttp answers a request line it cannot parse with a plain-text 400 of its
own and waits for a request's headers as long as the client likes. Here:

- a connection must deliver a complete request head within
  ``header_timeout`` of being opened or of its previous response (idle
  keep-alive connections are closed after the same time);
- a body the handler did not read (pullguard accepts no bodies) is drained for
  at most ``body_timeout``, then the connection is closed;
- at ``max_connections``, a new connection evicts the oldest one that is not
  in the middle of a request (half-sent requests and idle keep-alives go
  first); when every connection is busy, the new one gets 503 and is closed.
  So a crowd of half-sent requests cannot shut other clients out;
- a request aiohttp cannot parse is answered with an OCI error body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("pullguard.frontdoor")

API_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Docker-Distribution-API-Version: registry/2.0\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    """``{"errors":[{"code":...,"message":...}]}``: the only error shape the front door sends."""
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}).encode()


_BUSY_BODY = error_body("UNAVAILABLE", "too many connections; retry")
BUSY_RESPONSE = _BUSY % (len(_BUSY_BODY), _BUSY_BODY)


class _Connection(RequestHandler):
    """One client connection, under the door's deadlines."""

    def __init__(self, door: DoorServer, **kwargs: Any) -> None:
        super().__init__(door, **kwargs)
        self._door = door
        self._waiting_since = 0.0
        self._busy = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._door.admit(self):
            transport.write(BUSY_RESPONSE)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self._waiting_since = self._loop.time()
        self._arm(self._door.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._door.release(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    @property
    def evictable(self) -> bool:
        return not self._busy

    @property
    def waiting_since(self) -> float:
        return self._waiting_since

    def _arm(self, delay: float) -> None:
        self._deadline = self._loop.call_later(max(delay, 0.05), self._check_deadline)

    def _check_deadline(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        if self._busy:
            self._arm(self._door.header_timeout)
            return
        waited = self._loop.time() - self._waiting_since
        if waited >= self._door.header_timeout:
            self.transport.close()
            self.force_close()
            return
        self._arm(self._door.header_timeout - waited)

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        self._busy = True
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._busy = False
            self._waiting_since = self._loop.time()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own errors (an unparsable request, a failing handler) as OCI bodies."""
        if status >= 500:
            log.error("front door: internal error", exc_info=exc)
            code, text = "UNKNOWN", "internal error"
        else:
            log.debug("front door: unparsable request: %s", message)
            code, text = "UNSUPPORTED", "the request could not be parsed as HTTP/1.1"
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        response = web.Response(
            status=status,
            body=error_body(code, text),
            content_type="application/json",
            headers=API_HEADERS,
        )
        response.force_close()
        return response


class DoorServer(web.Server):
    """aiohttp's low-level server with the door's connection class and limits."""

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._open: dict[_Connection, None] = {}

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def admit(self, connection: _Connection) -> bool:
        """Make room for ``connection``; False when every slot is busy with a request."""
        if len(self._open) >= self.max_connections:
            idle = [c for c in self._open if c.evictable]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c.waiting_since)
            self._open.pop(oldest, None)
            if oldest.transport is not None:
                oldest.transport.close()
            oldest.force_close()
        self._open[connection] = None
        return True

    def release(self, connection: _Connection) -> None:
        self._open.pop(connection, None)


class DoorRunner(web.AppRunner):
    """An AppRunner whose server is a :class:`DoorServer`."""

    def __init__(
        self,
        app: web.Application,
        *,
        max_connections: int,
        header_timeout: float,
        body_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, lingering_time=body_timeout, **kwargs)
        self._max_connections = max_connections
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return DoorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            max_connections=self._max_connections,
            header_timeout=self._header_timeout,
            **server._kwargs,
        )


class FileBody(web.StreamResponse):
    """A 200 whose body is an open file, sent by the kernel (``sendfile(2)``).

    The file is the one the handler opened and checked: the response takes it
    and closes it. Its body never passes through Python, so a 256 MiB layer
    costs a few system calls, not thousands of reads in a worker thread and
    writes through aiohttp. Where the kernel cannot send (TLS), asyncio reads
    and writes in its place. A file that ends before ``size`` bytes (cut short
    under the door) ends the connection, so the client sees a short body, not
    the next response in its place.
    """

    def __init__(self, handle: BinaryIO, size: int, headers: dict[str, str]) -> None:
        super().__init__(status=200, headers=headers)
        self.content_length = size
        self._handle = handle
        self._size = size
        self._sent = 0

    @property
    def body_length(self) -> int:
        """Bytes sent, headers included, as aiohttp counts for a written body."""
        return super().body_length + self._sent

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        try:
            writer = await super().prepare(request)
            if request.method != "HEAD" and self._size > 0 and not self._sent:
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("the client went away")
                loop = asyncio.get_running_loop()
                self._sent = await loop.sendfile(transport, self._handle, 0, self._size)
                if self._sent != self._size:
                    log.error(
                        "front door: file ended after %d of %d bytes; connection closed",
                        self._sent,
                        self._size,
                    )
                    transport.abort()
                    raise ConnectionResetError("file shorter than its Content-Length")
            await self.write_eof()
            return writer
        finally:
            self._handle.close()
