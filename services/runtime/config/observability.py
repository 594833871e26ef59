"""What an operator watches: the console listener, metrics listeners, log settings.

- ``console_listen: HOST:PORT``: the gateway's web console, JSON API and
  ``/metrics`` (absent: no such listener);
- ``metrics_listen: {LAYER: HOST:PORT, ...}``: ``/metrics`` of each layer
  service that is named (absent: that layer serves no metrics);
- ``log_format: text | json`` and ``log_level: debug | info | warning | error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pullguard.services.runtime.config.reader import Reader
from pullguard.services.runtime.config.settings import LAYERS, read_hostport

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"
    level: str = "info"


def read_console_listen(reader: Reader, raw: Any) -> str | None:
    return None if raw is None else read_hostport(reader, raw, "console_listen")


def read_metrics_listen(reader: Reader, raw: Any) -> Mapping[str, str]:
    """One HOST:PORT per layer service that serves ``/metrics``."""
    if raw is None:
        return {}
    data = reader.mapping(raw, "metrics_listen")
    reader.known(data, "metrics_listen", set(LAYERS))
    return {
        name: read_hostport(reader, value, f"metrics_listen.{name}") for name, value in data.items()
    }


def read_log_settings(reader: Reader, log_format: Any, log_level: Any) -> LogSettings:
    fmt = "text" if log_format is None else reader.string(log_format, "log_format")
    if fmt not in LOG_FORMATS:
        raise reader.fail("log_format", f"must be text or json, got {fmt!r}")
    level = "info" if log_level is None else reader.string(log_level, "log_level").lower()
    if level not in LOG_LEVELS:
        raise reader.fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return LogSettings(format=fmt, level=level)
