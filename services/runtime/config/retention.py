"""``retention:``: how long decisions and quarantine entries are kept, and the GC's schedule.

```yaml
retention:
  decisions:  {max_age: 90d, max_count: 1000000}   # absent: kept for ever
  quarantine: {max_age: 30d, max_count: 10000}     # the entry's files go with its row
  gc: {interval: 6h, min_age: 1h}                  # interval 0: no schedule in the gateway
```

A duration is a whole number with a unit (``45s``, ``30m``, ``6h``, ``90d``,
``2w``) or a number of seconds. Nothing is deleted unless a key says so,
except blobs no admitted manifest lists, which the garbage collector removes
(see :mod:`pullguard.gateway.gc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pullguard.services.runtime.config.reader import Reader


@dataclass(frozen=True)
class Keep:
    """How much of one kind of record is kept: None means no limit of that kind."""

    #: Seconds: older records are deleted.
    max_age: float | None = None
    #: Only the newest this many records are kept.
    max_count: int | None = None

    @property
    def limited(self) -> bool:
        return self.max_age is not None or self.max_count is not None


@dataclass(frozen=True)
class GcSettings:
    #: Seconds between runs of the gateway's background GC; 0: never.
    interval: float = 6 * 3600.0
    #: Seconds: an admitted file younger than this is never removed (see gateway.gc).
    min_age: float = 3600.0


@dataclass(frozen=True)
class Retention:
    decisions: Keep = Keep()
    quarantine: Keep = Keep()
    gc: GcSettings = GcSettings()


def read_duration(reader: Reader, raw: Any, key: str) -> float:
    """``45s`` / ``30m`` / ``6h`` / ``90d`` / ``2w``, or a number of seconds (>= 0)."""
    return reader.duration(raw, key)


def _read_keep(reader: Reader, raw: Any, key: str) -> Keep:
    data = reader.mapping(raw, key)
    reader.known(data, key, {"max_age", "max_count"})
    max_age = data.get("max_age")
    max_count = data.get("max_count")
    return Keep(
        max_age=None if max_age is None else read_duration(reader, max_age, f"{key}.max_age"),
        max_count=None if max_count is None else reader.integer(max_count, f"{key}.max_count", 0),
    )


def read_retention(reader: Reader, raw: Any) -> Retention:
    data = reader.mapping(raw, "retention")
    reader.known(data, "retention", {"decisions", "quarantine", "gc"})
    gc = reader.mapping(data.get("gc"), "retention.gc")
    reader.known(gc, "retention.gc", {"interval", "min_age"})
    defaults = GcSettings()
    return Retention(
        decisions=_read_keep(reader, data.get("decisions"), "retention.decisions"),
        quarantine=_read_keep(reader, data.get("quarantine"), "retention.quarantine"),
        gc=GcSettings(
            interval=read_duration(reader, gc["interval"], "retention.gc.interval")
            if "interval" in gc
            else defaults.interval,
            min_age=read_duration(reader, gc["min_age"], "retention.gc.min_age")
            if "min_age" in gc
            else defaults.min_age,
        ),
    )
