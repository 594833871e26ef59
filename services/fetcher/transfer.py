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
    be broken, so a stalled body is caught on time, not at the next byte.
    """
    hasher = hashlib.new(algorithm)
    size = 0
    started = clock()
    iterator = aiter(chunks)
    while True:
        wait = None
        if min_bytes_per_second > 0:
            # The latest moment the next chunk may arrive with the floor still met.
            breaks_at = started + max(grace, size / min_bytes_per_second)
            wait = max(0.0, breaks_at - clock())
        try:
            chunk = await asyncio.wait_for(anext(iterator), wait)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise TooSlow(size, clock() - started, min_bytes_per_second) from None
        size += len(chunk)
        if size > limit:
            return Copied(size, "", over_limit=True)
        hasher.update(chunk)
        write(chunk)
        elapsed = clock() - started
        if min_bytes_per_second > 0 and elapsed > grace and size < min_bytes_per_second * elapsed:
            raise TooSlow(size, elapsed, min_bytes_per_second)
    return Copied(size, f"{algorithm}:{hasher.hexdigest()}", over_limit=False)
