"""Running awaitables together without leaving any behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(jobs: Iterable[Awaitable[T]]) -> list[T]:
    """Await every job at once; their results in order.

    When one raises, the others are cancelled and awaited before the error
    goes on, so none of them still writes (to a staging session, say) after
    the caller has moved on.
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
