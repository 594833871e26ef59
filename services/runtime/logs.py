"""Log lines: readable text by default, one JSON object a line with ``log_format: json``.

A record may carry structured fields (``extra={"fields": {...}}``, see
:func:`fields`): the JSON form puts them beside ``time``, ``level``,
``logger`` and ``message``; the text form shows the message alone, which
already says the same in words (the access and decision lines do).

No secret reaches a log: every line, in either form, is passed through
:func:`scrub` (bearer and basic credentials, ``Authorization`` values,
credential-like query parameters, passwords in URLs), whatever logger wrote it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

from pullguard.services.runtime.config import LogSettings

FIELDS = "pullguard_fields"
_HANDLER = "pullguard"
REDACTED = "[redacted]"

_CREDENTIAL_WORDS = (
    r"access_token|refresh_token|id_token|token|password|passwd|pwd|secret|client_secret"
    r"|api_key|apikey|key|sig|signature|credential|x-amz-signature|x-amz-credential"
    r"|x-amz-security-token|x-goog-signature|x-goog-credential|code|auth"
)
_SCRUBS = (
    # A query parameter that names a credential: ?token=..., &X-Amz-Signature=...
    (
        re.compile(rf"(?i)([?&;](?:{_CREDENTIAL_WORDS})=)[^&;\s\"'#]*"),
        rf"\g<1>{REDACTED}",
    ),
    # Authorization: <anything>, as a header line or a key/value.
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"),
        rf"\g<1>{REDACTED}",
    ),
    # Bearer / Basic credentials wherever they appear.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\g<1>\g<2>{REDACTED}"),
    # user:password@ in a URL.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\g<1>{REDACTED}@"),
)


def scrub(text: str) -> str:
    """``text`` with every credential-looking part replaced by ``[redacted]``."""
    for pattern, replacement in _SCRUBS:
        text = pattern.sub(replacement, text)
    return text


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call carrying structured fields."""
    return {FIELDS: values}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, FIELDS, None)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                line.setdefault(str(key), value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(_scrubbed(line), default=str, ensure_ascii=False))


def _scrubbed(value: Any) -> Any:
    """Scrub the strings inside ``value`` before JSON escaping can hide a pattern."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def configure_logging(settings: LogSettings | None = None) -> None:
    """Log to stderr in the configured format and level (again when called again)."""
    settings = settings or LogSettings()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
