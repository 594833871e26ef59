"""Bounded, hashed streaming of a response body into the staging store.

Three clocks guard a body (T-09): the HTTP client's read timeout bounds each
read (idle timeout); the caller's ``asyncio.timeout`` bounds the whole
object (absolute deadline); and here a throughput floor refuses a trickle
that would beat both, once a grace period has passed. The body is read,
hashed and written in a worker thread (see :mod:`threaded`); the clocks are
watched from the event loop, which stops the thread when one runs out. The byte bound (T-03)
is the caller's limit: at most ``limit + 1`` bytes are consumed, whatever
``Content-Length`` claims.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

#: Seconds before the throughput floor applies: connection set-up and a slow
#: first byte are normal.
THROUGHPUT_GRACE = 10.0
#: Shortest wait between two looks at the floor (no busy loop at its edge).
MIN_WATCH = 0.005

T = TypeVar("T")


class TooSlow(Exception):
    """The body arrived below the configured minimum throughput."""

    def __init__(self, received: int, elapsed: float, floor: int) -> None:
        super().__init__(f"{received} bytes in {elapsed:.1f} s, below the floor of {floor} bytes/s")


class Abandoned(Exception):
    """The copy was stopped from outside: its caller gave up on the body."""


@dataclass(frozen=True)
class Copied:
    """What :func:`copy_body` consumed: ``over_limit`` means the body is larger
    than the limit and nothing should be kept."""

    size: int
    digest: str
    over_limit: bool


class Body(Protocol):
    """A response body that is read, piece by piece, in a worker thread."""

    def start(self, copy: Callable[[Iterator[bytes]], T]) -> asyncio.Future[T]:
        """Run ``copy(pieces)`` in a worker thread over the body's pieces."""
        ...

    def interrupt(self) -> None:
        """Make a read blocked in that thread return at once (with an error)."""
        ...


@dataclass
class _Progress:
    """Bytes received so far, written by the copying thread, read by its watcher."""

    size: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


async def copy_body(
    body: Body,
    write: Callable[[bytes], None],
    *,
    limit: int,
    algorithm: str,
    min_bytes_per_second: int,
    grace: float = THROUGHPUT_GRACE,
    clock: Callable[[], float] = time.monotonic,
    decode: Callable[[Iterator[bytes]], Iterator[bytes]] | None = None,
) -> Copied:
    """Copy ``body`` (through ``decode``, if given) to ``write`` while hashing,
    stopping past ``limit`` bytes.

    The reads, the hash and the writes all happen in the body's worker thread,
    one piece at a time: the event loop only watches. It raises
    :class:`TooSlow` when the running average falls below
    ``min_bytes_per_second`` after ``grace`` seconds (0 disables the floor).
    The watcher wakes at the moment the floor would break, so a stalled body
    is caught on time, not at its next byte. Whenever the copy ends early
    (the floor, the caller's own deadline or cancellation), the thread is
    stopped and its blocked read interrupted, and it is waited for, so no
    write runs into a file the caller is about to discard.
    """
    progress = _Progress()

    def copy(pieces: Iterator[bytes]) -> Copied:
        return _copy(decode(pieces) if decode else pieces, write, limit, algorithm, progress)

    done = body.start(copy)
    try:
        return await _watch(done, progress, min_bytes_per_second, grace, clock)
    finally:
        if not done.done():
            progress.stop.set()
            body.interrupt()
            await asyncio.wait([done])
        if done.done() and not done.cancelled():
            done.exception()  # retrieved: an abandoned copy's error is not news


def _copy(
    pieces: Iterable[bytes],
    write: Callable[[bytes], None],
    limit: int,
    algorithm: str,
    progress: _Progress,
) -> Copied:
    """The copy itself, in the worker thread: at most ``limit + 1`` bytes consumed."""
    hasher = hashlib.new(algorithm)
    size = 0
    for piece in pieces:
        if progress.stop.is_set():
            raise Abandoned()
        size += len(piece)
        progress.size = size
        if size > limit:
            return Copied(size, "", over_limit=True)
        hasher.update(piece)
        write(piece)
    return Copied(size, f"{algorithm}:{hasher.hexdigest()}", over_limit=False)


async def _watch(
    done: asyncio.Future[Copied],
    progress: _Progress,
    floor: int,
    grace: float,
    clock: Callable[[], float],
) -> Copied:
    """``done``'s result, or :class:`TooSlow` once the throughput floor breaks."""
    started = clock()
    while True:
        wait = None
        if floor > 0:
            # The latest moment more bytes may arrive with the floor still met.
            breaks_at = started + max(grace, progress.size / floor)
            wait = max(MIN_WATCH, breaks_at - clock())
        finished, _ = await asyncio.wait([done], timeout=wait)
        if finished:
            return done.result()
        elapsed = clock() - started
        if elapsed > grace and progress.size < floor * elapsed:
            raise TooSlow(progress.size, elapsed, floor)
