"""Repeated identical log records are rate-limited, so a flood of one error cannot fill the disk.

Installed on the gateway's log handlers: per distinct message (logger, level
and text), the first ``burst`` records of each ``window`` seconds pass; the
rest are dropped and counted, and the next record of that message that
passes says how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Distinct messages tracked at once; the oldest is forgotten beyond this.
MAX_KEYS = 1024


class RepeatFilter(logging.Filter):
    def __init__(
        self,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> [window start, passed in window, suppressed since last passed]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        key = (record.name, record.levelno, text[:500])
        now = self._clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.window:
                suppressed = int(state[2]) if state is not None else 0
                self._seen.pop(key, None)
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > MAX_KEYS:
                    self._seen.pop(next(iter(self._seen)))
                if suppressed:
                    record.msg = f"{text} [{suppressed} identical messages suppressed]"
                    record.args = None
                return True
            if state[1] < self.burst:
                state[1] += 1
                return True
            state[2] += 1
            return False


def install(
    logger: logging.Logger | None = None, filter_: RepeatFilter | None = None
) -> RepeatFilter:
    """Add one :class:`RepeatFilter` to every handler of ``logger`` (the root by default)."""
    target = logger or logging.getLogger()
    chosen = filter_ or RepeatFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(chosen)
    return chosen
