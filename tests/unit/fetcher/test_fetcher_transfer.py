"""Bounded, hashed body copies and the throughput floor (T-03, T-09).

The copy runs in a worker thread, as it does over a real connection
(:mod:`pullguard.services.fetcher.threaded`); :class:`ThreadBody` plays the
body: its pieces come from a plain iterator, and ``interrupt`` wakes a read
blocked on a stalled "socket" as shutting the real socket does.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from pullguard.services.fetcher.transfer import TooSlow, copy_body

T = TypeVar("T")


class Interrupted(Exception):
    """A read woken by interrupt(): what a shut socket makes recv raise."""


class ThreadBody:
    """A Body whose pieces come from ``pieces(stalled)``: a stall waits on ``stalled``."""

    def __init__(self, pieces: Callable[[threading.Event], Iterator[bytes]]) -> None:
        self._pieces = pieces
        self.stalled = threading.Event()
        self.threads = ThreadPoolExecutor(1)
        self.interrupted = False

    def start(self, copy: Callable[[Iterator[bytes]], T]) -> asyncio.Future[T]:
        return asyncio.wrap_future(self.threads.submit(copy, self._pieces(self.stalled)))

    def interrupt(self) -> None:
        self.interrupted = True
        self.stalled.set()


def body(*parts: bytes, pause: float = 0.0) -> ThreadBody:
    def pieces(_: threading.Event) -> Iterator[bytes]:
        for part in parts:
            if pause:
                time.sleep(pause)
            yield part

    return ThreadBody(pieces)


async def test_copies_and_hashes() -> None:
    out = bytearray()
    copied = await copy_body(
        body(b"abc", b"def"), out.extend, limit=6, algorithm="sha256", min_bytes_per_second=0
    )
    assert bytes(out) == b"abcdef"
    assert copied.size == 6 and not copied.over_limit
    assert copied.digest == "sha256:" + hashlib.sha256(b"abcdef").hexdigest()


async def test_sha512_when_asked() -> None:
    copied = await copy_body(
        body(b"x"), lambda _: None, limit=1, algorithm="sha512", min_bytes_per_second=0
    )
    assert copied.digest == "sha512:" + hashlib.sha512(b"x").hexdigest()


async def test_decode_sees_every_piece_before_the_hash() -> None:
    def upper(pieces: Iterator[bytes]) -> Iterator[bytes]:
        return (piece.upper() for piece in pieces)

    out = bytearray()
    copied = await copy_body(
        body(b"ab", b"c"),
        out.extend,
        limit=3,
        algorithm="sha256",
        min_bytes_per_second=0,
        decode=upper,
    )
    assert bytes(out) == b"ABC"
    assert copied.digest == "sha256:" + hashlib.sha256(b"ABC").hexdigest()


async def test_t03_stops_past_the_limit_and_keeps_nothing_extra() -> None:
    consumed = 0

    def endless(_: threading.Event) -> Iterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 4
            yield b"abcd"

    out = bytearray()
    copied = await copy_body(
        ThreadBody(endless), out.extend, limit=10, algorithm="sha256", min_bytes_per_second=0
    )
    assert copied.over_limit
    assert len(out) <= 10
    assert consumed == 12  # stopped at the first chunk past the limit


async def test_exactly_at_limit_is_fine() -> None:
    copied = await copy_body(
        body(b"12345", b"67890"),
        lambda _: None,
        limit=10,
        algorithm="sha256",
        min_bytes_per_second=0,
    )
    assert not copied.over_limit and copied.size == 10


async def test_t09_trickle_below_floor_is_refused() -> None:
    trickle = body(*[b"x"] * 100, pause=0.05)
    with pytest.raises(TooSlow):
        await copy_body(
            trickle,
            lambda _: None,
            limit=1000,
            algorithm="sha256",
            min_bytes_per_second=1000,
            grace=0.2,
        )
    assert trickle.interrupted


async def test_t09_stall_is_caught_when_floor_breaks_not_at_next_byte() -> None:
    written: list[bytes] = []

    def stalled(wake: threading.Event) -> Iterator[bytes]:
        yield b"x" * 10
        if wake.wait(30):  # a read blocked on a silent socket, until it is shut
            raise Interrupted()
        yield b"y"

    stall = ThreadBody(stalled)
    started = time.monotonic()
    with pytest.raises(TooSlow):
        await copy_body(
            stall,
            written.append,
            limit=1000,
            algorithm="sha256",
            min_bytes_per_second=100,
            grace=0.2,
        )
    assert time.monotonic() - started < 2
    # The blocked read was woken, and the copy had ended before copy_body returned:
    # nothing more is written into a file the caller is about to discard.
    assert stall.interrupted
    assert stall.threads.submit(lambda: None).result(1) is None
    assert written == [b"x" * 10]


async def test_a_caller_that_gives_up_stops_the_copy_first() -> None:
    """The caller's own deadline (asyncio.timeout) ends the copy too, and waits for it."""
    written: list[bytes] = []

    def stalled(wake: threading.Event) -> Iterator[bytes]:
        yield b"x"
        if wake.wait(30):
            raise Interrupted()
        yield b"late"

    stall = ThreadBody(stalled)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await copy_body(
                stall, written.append, limit=1000, algorithm="sha256", min_bytes_per_second=0
            )
    assert stall.interrupted
    assert written == [b"x"]


async def test_fast_body_passes_floor() -> None:
    copied = await copy_body(
        body(*[b"x" * 1000] * 20, pause=0.01),
        lambda _: None,
        limit=100_000,
        algorithm="sha256",
        min_bytes_per_second=1000,
        grace=0.05,
    )
    assert copied.size == 20_000
