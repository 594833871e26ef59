"""The gateway's background retention run, every ``retention.gc.interval``.

The first run comes one interval after start-up, not at it: a fleet of
replicas restarting together does not all collect at once. A run happens in
a worker thread (it reads the store and the database), and a failed run is
logged and tried again at the next interval; it never stops the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.gc import collect
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config.retention import Retention

log = logging.getLogger("pullguard.gateway")


async def _every_interval(
    retention: Retention, decisions: DecisionLog, admitted: AdmittedStore, quarantine: Quarantine
) -> None:
    while True:
        await asyncio.sleep(retention.gc.interval)
        try:
            report = await asyncio.to_thread(
                collect, retention, decisions, admitted, quarantine, dry=False
            )
        except Exception:  # noqa: BLE001 - a failed run waits for the next one
            log.exception("gc: run failed; next in %.0fs", retention.gc.interval)
            continue
        log.info(
            "gc: removed %d blobs (%d bytes), %d quarantine entries, %d decisions;"
            " %d blobs deferred",
            len(report.blobs.removed),
            report.blobs.removed_bytes,
            report.quarantine.count,
            report.decisions.count,
            report.blobs.deferred,
        )


def start(
    retention: Retention, decisions: DecisionLog, admitted: AdmittedStore, quarantine: Quarantine
) -> asyncio.Task[None] | None:
    """Start the schedule (None when ``retention.gc.interval`` is 0)."""
    if retention.gc.interval <= 0:
        return None
    return asyncio.create_task(
        _every_interval(retention, decisions, admitted, quarantine), name="pullguard-gc"
    )


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
