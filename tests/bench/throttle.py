"""A TCP proxy on 127.0.0.1 in front of one target, its replies paced to a byte rate.

Put in front of the upstream registry, it makes a registry across the
internet: every connection shares one link of ``rate`` bytes a second (the
replies; requests pass unpaced). It runs its own event loop in a thread, so
the benchmark can start it, point distribution's cache and pullguard at it,
and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

#: Bytes read and forwarded at a time.
CHUNK = 256 * 1024
#: How long start() and stop() wait for the proxy's thread.
THREAD_TIMEOUT = 10.0


class Pace:
    """One link's schedule: bytes leave no faster than ``rate`` a second, over all connections.

    ``rate`` None is an unpaced link.
    """

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"got a rate of {rate} bytes a second, expected more than 0")
        self.rate = rate
        self._free_at = 0.0

    def delay(self, now: float, size: int) -> float:
        """Seconds from ``now`` until ``size`` more bytes have passed the link."""
        if self.rate is None:
            return 0.0
        start = max(now, self._free_at)
        self._free_at = start + size / self.rate
        return self._free_at - now


class ThrottleProxy:
    """Listens on a free loopback port; forwards each connection to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int], rate: float | None) -> None:
        self.target = target
        self.pace = Pace(rate)
        self.port = 0
        #: Connections accepted so far.
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._failure: BaseException | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="throttle-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT):
            raise RuntimeError("throttle proxy did not start listening")
        if self._failure is not None:
            raise RuntimeError(f"throttle proxy failed to start: {self._failure}")

    def stop(self) -> None:
        if self._loop is None or self._thread is None or self._stopped is None:
            return
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(THREAD_TIMEOUT)

    def __enter__(self) -> ThrottleProxy:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - reported to start()'s caller
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            target_r, target_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pump(client_r, target_w, None),
                _pump(target_r, client_w, self.pace),
            )
        finally:
            for writer in (client_w, target_w):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pace: Pace | None
) -> None:
    """Copy until end of stream, then pass the end on; a broken connection ends the copy."""
    loop = asyncio.get_running_loop()
    try:
        while chunk := await reader.read(CHUNK):
            wait = pace.delay(loop.time(), len(chunk)) if pace is not None else 0.0
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        # The other side went away: closing both ends (in _serve) tells its peer.
        writer.close()
