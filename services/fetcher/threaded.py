"""The fetcher's HTTP transport: httpx's synchronous one, run in worker threads.

The session (:mod:`session`) stays asynchronous: one event loop decides what
is requested, answers challenges and follows redirects. Every blocking step
of a request happens in a thread of this transport's own pool instead: the
connection (through :class:`~pullguard.services.fetcher.network.GuardedBackend`),
the request, and each read of the response body. Socket reads, TLS
decryption and the HTTP parser of several blobs then run on several cores at
once, where on the event loop they took turns on one. A blob body is copied
whole in its thread (read, hash, write: :func:`transfer.copy_body`), so the
event loop is not woken per piece (issue 9: a cold pull of 256 MiB in four
layers cost the fetcher 0.60-0.68 CPU-s on the event loop, 0.42-0.48 here).

Timeouts are the sync transport's: the connect, idle-read and pool timeouts
of the request's ``timeout`` extension apply to each blocking call. The
caller's deadlines still hold: a caller that stops waiting (a deadline, the
throughput floor, another blob's refusal) is answered at once, and the
thread it leaves behind is woken by shutting the connection's socket, then
closes the response. A connection is never closed under a read in progress.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import httpx

from pullguard.services.fetcher.network import GuardedBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
#: The response extension that holds its :class:`_ThreadedBody`.
BODY = "pullguard.threaded_body"
#: Bytes of a body read in one step of a worker thread.
BATCH = 1024 * 1024


class ThreadedTransport(httpx.AsyncBaseTransport):
    """An async transport whose requests and body reads run on the synchronous
    transport ``inner`` (:func:`guarded_transport`), in ``threads`` worker threads.
    ``backend`` is the guard of ``inner``'s connections, told which event loop
    the requests come from."""

    def __init__(
        self, inner: httpx.BaseTransport, threads: int, backend: GuardedBackend | None = None
    ) -> None:
        self._sync = inner
        self._backend = backend
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="upstream-io")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._backend is not None:
            self._backend.serve_from(asyncio.get_running_loop())
        response = await _in_thread(
            self._threads, self._sync.handle_request, request, on_abandon=_close
        )
        body = _ThreadedBody(response, self._threads)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=body,
            extensions={**response.extensions, BODY: body},
        )

    async def aclose(self) -> None:
        await _in_thread(self._threads, self._sync.close)
        self._threads.shutdown(wait=False, cancel_futures=True)


def body_of(response: httpx.Response) -> _ThreadedBody:
    """The body of a response this transport gave, to copy in its worker thread."""
    body = response.extensions.get(BODY)
    if not isinstance(body, _ThreadedBody):
        raise TypeError("the response did not come from the fetcher's ThreadedTransport")
    return body


class _ThreadedBody(httpx.AsyncByteStream):
    """A response body read in worker threads: copied there whole (:meth:`start`),
    or iterated from the event loop about :data:`BATCH` bytes per step."""

    def __init__(self, response: httpx.Response, threads: ThreadPoolExecutor) -> None:
        self._response = response
        self._threads = threads
        self._reading: Future[object] | None = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks: Iterator[bytes] = iter(self._response.stream)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        while not self._closed:
            reading = self._threads.submit(_batch, chunks)
            self._reading = reading  # type: ignore[assignment]
            batch = await asyncio.wrap_future(reading, loop=loop)
            if not batch:
                return
            for chunk in batch:
                yield chunk

    def start(self, copy: Callable[[Iterator[bytes]], T]) -> asyncio.Future[T]:
        """Run ``copy`` over the body's pieces in a worker thread (see transfer.Body)."""
        chunks: Iterator[bytes] = iter(self._response.stream)  # type: ignore[arg-type]
        future = self._threads.submit(copy, chunks)
        self._reading = future  # type: ignore[assignment]
        return asyncio.wrap_future(future)

    def interrupt(self) -> None:
        _shut_socket(self._response)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        reading = self._reading
        if reading is not None and not reading.done():
            # The caller stopped waiting while a thread still reads: wake the
            # read, and close once it has returned.
            _shut_socket(self._response)
            reading.add_done_callback(lambda _: _close(self._response))
            return
        await _in_thread(self._threads, self._response.close)


async def _in_thread(
    threads: ThreadPoolExecutor,
    call: Callable[..., T],
    *args: object,
    on_abandon: Callable[[T], None] | None = None,
) -> T:
    """``call(*args)`` in a worker thread. If the caller stops waiting while it
    runs, its result is handed to ``on_abandon`` when it comes (a response to
    close, so its connection is not lost)."""
    future = threads.submit(call, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if on_abandon is not None:
            future.add_done_callback(lambda done: _abandoned(done, on_abandon))
        raise


def _batch(chunks: Iterator[bytes]) -> list[bytes]:
    """The next chunks of a body, about :data:`BATCH` bytes of them (none at its end).

    A socket read returns what has arrived, often a few dozen KiB; one step
    of the event loop per read would cost more than the read itself.
    """
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= BATCH:
            break
    return batch


def _abandoned(done: Future[T], on_abandon: Callable[[T], None]) -> None:
    if not done.cancelled() and done.exception() is None:
        on_abandon(done.result())


def _close(response: httpx.Response) -> None:
    """Close a response nobody reads any more; its connection leaves the pool."""
    try:
        response.close()
    except (httpx.HTTPError, OSError) as exc:
        log.debug("closing an abandoned upstream response: %s", exc)


def _shut_socket(response: httpx.Response) -> None:
    """Shut down the response's socket, so a read blocked on it returns now."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError as exc:
            log.debug("shutting an abandoned upstream socket: %s", exc)
