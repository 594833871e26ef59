"""The gate between admissions and the garbage collector: striped file locks.

An admission moves verified blobs into the admitted store some time before
the transaction that records them commits (publishing to a registry target
comes in between). In that window the blobs are on disk and referenced by
nothing, which is exactly what the collector removes. So an admission holds
a *shared* lock on the stripe of every digest it moves in, from before the
first rename until its commit (it rides on ``Pull.held``), and the collector
takes the stripe *exclusively*, checks the references again, and only then
unlinks. Either the collector goes first (the blob is gone, and the
admission's rename puts the verified file back), or the admission commits
first (the blob is referenced, and the collector spares it).

The locks are ``flock`` s on files beside the store (``admitted/gc.locks/``),
like ``index.json.lock``: the store is a folder, possibly shared by
replicas on one filesystem, and a process that dies drops its locks with
its descriptors. A database lease would guard the database, not the folder.

Stripes, 256 by the digest's first two hex characters, keep an admission
from blocking the collector's whole sweep: the collector holds one stripe
at a time, briefly, and never waits on an admission for long; it defers what
it could not lock to its next run. Admissions only take shared locks and the
collector never holds two stripes, so no cycle can form.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from pullguard.services.runtime.digests import parse_digest
from pullguard.services.runtime.errors import StagingFull

LOCKS = "gc.locks"
#: Seconds between tries of a lock that is taken.
POLL = 0.02
#: Seconds an admission waits for a stripe the collector holds (it holds one briefly).
ADMISSION_WAIT = 300.0


class StoreBusy(StagingFull):
    """The collector held a stripe far longer than a batch takes: an outage, retry."""

    outage = "store_busy"


def stripe_of(digest: str) -> str:
    """The stripe a digest's lock lives in: the first two characters of its encoded part."""
    return parse_digest(digest)[1][:2].lower()


class AdmissionGate:
    """Shared stripe locks for admissions, exclusive ones for the collector."""

    def __init__(self, store_root: Path) -> None:
        self.root = store_root / LOCKS
        self.root.mkdir(parents=True, exist_ok=True)

    def _open(self, stripe: str) -> int:
        return os.open(self.root / stripe, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.asynccontextmanager
    async def admitting(self, digests: Iterable[str]) -> AsyncIterator[None]:
        """Hold the stripes of ``digests`` shared: the collector removes none of them meanwhile.

        Waits without blocking the event loop; a collector holds a stripe only
        for one bounded batch, so the wait is short. Past :data:`ADMISSION_WAIT`
        the admission fails as an outage (no verdict, nothing admitted).
        """
        held: list[int] = []
        try:
            deadline = time.monotonic() + ADMISSION_WAIT
            for stripe in sorted({stripe_of(d) for d in digests}):
                fd = self._open(stripe)
                held.append(fd)
                while not _try_lock(fd, fcntl.LOCK_SH):
                    if time.monotonic() > deadline:
                        raise StoreBusy(
                            f"admitted store: lock {self.root / stripe} held for more than"
                            f" {ADMISSION_WAIT:.0f}s"
                        )
                    await asyncio.sleep(POLL)
            yield
        finally:
            for fd in held:
                os.close(fd)  # closing drops the lock

    @contextlib.contextmanager
    def collecting(self, stripe: str, wait: float) -> Iterator[bool]:
        """Hold ``stripe`` exclusively; yields False (holding nothing) when ``wait`` ran out."""
        fd = self._open(stripe)
        try:
            deadline = time.monotonic() + wait
            locked = _try_lock(fd, fcntl.LOCK_EX)
            while not locked and time.monotonic() < deadline:
                time.sleep(POLL)
                locked = _try_lock(fd, fcntl.LOCK_EX)
            yield locked
        finally:
            os.close(fd)


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
