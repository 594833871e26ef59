"""Bounded, hashed body copies and the throughput floor (T-03, T-09)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from pullguard.services.fetcher.transfer import TooSlow, copy_body


async def _chunks(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


async def test_copies_and_hashes() -> None:
    out = bytearray()
    copied = await copy_body(
        _chunks(b"abc", b"def"), out.extend, limit=6, algorithm="sha256", min_bytes_per_second=0
    )
    assert bytes(out) == b"abcdef"
    assert copied.size == 6 and not copied.over_limit
    assert copied.digest == "sha256:" + hashlib.sha256(b"abcdef").hexdigest()


async def test_sha512_when_asked() -> None:
    copied = await copy_body(
        _chunks(b"x"), lambda _: None, limit=1, algorithm="sha512", min_bytes_per_second=0
    )
    assert copied.digest == "sha512:" + hashlib.sha512(b"x").hexdigest()


async def test_t03_stops_past_the_limit_and_keeps_nothing_extra() -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 4
            yield b"abcd"

    out = bytearray()
    copied = await copy_body(
        endless(), out.extend, limit=10, algorithm="sha256", min_bytes_per_second=0
    )
    assert copied.over_limit
    assert len(out) <= 10
    assert consumed == 12  # stopped at the first chunk past the limit


async def test_exactly_at_limit_is_fine() -> None:
    copied = await copy_body(
        _chunks(b"12345", b"67890"),
        lambda _: None,
        limit=10,
        algorithm="sha256",
        min_bytes_per_second=0,
    )
    assert not copied.over_limit and copied.size == 10


async def test_t09_trickle_below_floor_is_refused() -> None:
    with pytest.raises(TooSlow):
        await copy_body(
            _chunks(*[b"x"] * 100, pause=0.05),
            lambda _: None,
            limit=1000,
            algorithm="sha256",
            min_bytes_per_second=1000,
            grace=0.2,
        )


async def test_t09_stall_is_caught_when_floor_breaks_not_at_next_byte() -> None:
    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * 10
        await asyncio.sleep(30)
        yield b"y"

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TooSlow):
        await copy_body(
            stalled(),
            lambda _: None,
            limit=1000,
            algorithm="sha256",
            min_bytes_per_second=100,
            grace=0.2,
        )
    assert loop.time() - started < 2


async def test_fast_body_passes_floor() -> None:
    copied = await copy_body(
        _chunks(*[b"x" * 1000] * 20, pause=0.01),
        lambda _: None,
        limit=100_000,
        algorithm="sha256",
        min_bytes_per_second=1000,
        grace=0.05,
    )
    assert copied.size == 20_000
