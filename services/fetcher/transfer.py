"""Bounded, hashed streaming of a response body into the staging store.

Three clocks guard a body (T-09): the HTTP client's read timeout bounds each
read (idle timeout); the caller's ``asyncio.timeout`` bounds the whole
object (absolute deadline); and here a throughput floor refuses a trickle
that would beat both, once a grace period has passed. The byte bound (T-03)
is the caller's limit: at most ``limit + 1`` bytes are consumed, whatever
``Content-Length`` claims.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

#: Bytes hashed and written in one step off the event loop.
BATCH = 1024 * 1024
#: Seconds before the throughput floor applies: connection set-up and a slow
#: first byte are normal.
THROUGHPUT_GRACE = 10.0


class TooSlow(Exception):
    """The body arrived below the configured minimum throughput."""

    def __init__(self, received: int, elapsed: float, floor: int) -> None:
        super().__init__(f"{received} bytes in {elapsed:.1f} s, below the floor of {floor} bytes/s")


@dataclass(frozen=True)
class Copied:
    """What :func:`copy_body` consumed: ``over_limit`` means the body is larger
    than the limit and nothing should be kept."""

    size: int
    digest: str
    over_limit: bool


async def copy_body(
    chunks: AsyncIterator[bytes],
    write: Callable[[bytes], None],
    *,
    limit: int,
    algorithm: str,
    min_bytes_per_second: int,
    grace: float = THROUGHPUT_GRACE,
    clock: Callable[[], float] = time.monotonic,
) -> Copied:
    """Copy ``chunks`` to ``write`` while hashing, stopping past ``limit`` bytes.

    Raises :class:`TooSlow` when the running average falls below
    ``min_bytes_per_second`` after ``grace`` seconds (0 disables the floor).
    The wait for each chunk is itself bounded by the moment the floor would
    be broken, so a stalled body is caught on time, not at the next byte:
    one deadline for the whole transfer, moved on as bytes arrive (no timer
    task per chunk).

    Chunks are gathered into batches of :data:`BATCH` bytes; each batch is
    hashed and written in a worker thread (hashlib and file writes release
    the GIL) while the next one is read, so the event loop only moves bytes.
    At most two batches are held at once.
    """
    hasher = hashlib.new(algorithm)
    size = 0
    started = clock()
    loop = asyncio.get_running_loop()
    batch: list[bytes] = []
    batched = 0
    pending: asyncio.Future[None] | None = None

    def consume(parts: list[bytes]) -> None:
        for part in parts:  # not joined: no second copy of the batch
            hasher.update(part)
            write(part)

    async def flush() -> None:
        nonlocal pending, batch, batched
        if pending is not None:
            await pending
            pending = None
        if batch:
            pending = loop.run_in_executor(None, consume, batch)
            batch, batched = [], 0

    floor = min_bytes_per_second > 0
    try:
        async with asyncio.timeout(loop.time() + grace if floor else None) as deadline:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    return Copied(size, "", over_limit=True)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH:
                    await flush()
                if floor:
                    elapsed = clock() - started
                    if elapsed > grace and size < min_bytes_per_second * elapsed:
                        raise TooSlow(size, elapsed, min_bytes_per_second)
                    # The latest moment the next chunk may arrive with the floor still met.
                    breaks_at = started + max(grace, size / min_bytes_per_second)
                    deadline.reschedule(loop.time() + max(0.0, breaks_at - clock()))
            deadline.reschedule(None)
        await flush()
        await flush()
    except TimeoutError:
        raise TooSlow(size, clock() - started, min_bytes_per_second) from None
    finally:
        if pending is not None and not pending.done():
            # Never leave a write running into a file the caller will discard.
            await asyncio.wait([pending])
    return Copied(size, f"{algorithm}:{hasher.hexdigest()}", over_limit=False)
