"""``notifications:``: where pullguard POSTs a JSON event per deny, quarantine, release, ...

Each entry is ``{url, events, secret_file | secret_env, timeout, max_attempts,
backoff, max_queued}``. The secret that signs the events (HMAC-SHA256) is
never written in the configuration file itself: a file holds it
(``secret_file``), or an environment variable (``secret_env``), so that the
file can be shown, versioned and logged. An inline ``secret:`` is refused
with a message saying so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pullguard.services.runtime.config.reader import Reader

#: The events a subscription may ask for (see gateway/notify/events.py).
EVENTS = ("deny", "quarantine", "release", "revoke", "moved_tag")
KEYS = {
    "url",
    "events",
    "secret",
    "secret_file",
    "secret_env",
    "timeout",
    "max_attempts",
    "backoff",
    "max_queued",
}
#: A secret shorter than this is refused: it would be guessed.
MIN_SECRET_BYTES = 16


@dataclass(frozen=True)
class Subscription:
    """One receiver: the URL, the events it gets, and how hard pullguard tries."""

    url: str
    events: frozenset[str]
    secret: bytes | None = field(default=None, repr=False)
    #: Seconds one POST may take, connecting and reading the answer included.
    timeout: float = 10.0
    #: Deliveries tried at most this many times, then marked dead and logged.
    max_attempts: int = 12
    #: Seconds before the first retry; doubled each time (with jitter), at most MAX_BACKOFF.
    backoff: float = 2.0
    #: Undelivered events for this URL at most; a new event beyond is dropped and logged.
    max_queued: int = 10000

    @property
    def shown(self) -> str:
        """The URL without its query (which may carry a token): for logs."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def read_notifications(reader: Reader, raw: Any) -> tuple[Subscription, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise reader.fail("notifications", "must be a list of {url, events, ...}")
    return tuple(_subscription(reader, item, f"notifications[{i}]") for i, item in enumerate(raw))


def _subscription(reader: Reader, raw: Any, key: str) -> Subscription:
    data = reader.mapping(raw, key)
    reader.known(data, key, KEYS)
    if "secret" in data:
        raise reader.fail(
            f"{key}.secret",
            "a secret is not written into the configuration: use secret_file: PATH"
            " or secret_env: VARIABLE",
        )
    url = _url(reader, data.get("url"), f"{key}.url")
    events = frozenset(EVENTS)
    if "events" in data:
        listed = reader.strings(data["events"], f"{key}.events")
        if not listed:
            raise reader.fail(f"{key}.events", f"lists no event (known: {', '.join(EVENTS)})")
        for i, name in enumerate(listed):
            if name not in EVENTS:
                raise reader.fail(
                    f"{key}.events[{i}]", f"unknown event {name!r} (known: {', '.join(EVENTS)})"
                )
        events = frozenset(listed)
    defaults = Subscription(url="", events=frozenset())
    return Subscription(
        url=url,
        events=events,
        secret=_secret(reader, data, key),
        timeout=reader.number(data.get("timeout", defaults.timeout), f"{key}.timeout", 0.1),
        max_attempts=reader.integer(
            data.get("max_attempts", defaults.max_attempts), f"{key}.max_attempts", 1
        ),
        backoff=reader.number(data.get("backoff", defaults.backoff), f"{key}.backoff", 0.01),
        max_queued=reader.integer(
            data.get("max_queued", defaults.max_queued), f"{key}.max_queued", 1
        ),
    )


def _url(reader: Reader, value: Any, key: str) -> str:
    url = reader.string(value, key)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise reader.fail(key, f"is not a valid URL: {url!r}") from None
    if parts.scheme not in ("http", "https"):
        raise reader.fail(key, f"must be an http:// or https:// URL, got {url!r}")
    if not parts.hostname:
        raise reader.fail(key, "has no host")
    if parts.username is not None or parts.password is not None:
        raise reader.fail(key, "must not carry credentials: sign with secret_file or secret_env")
    if parts.fragment:
        raise reader.fail(key, "must not carry a fragment")
    return url


def _secret(reader: Reader, data: dict[str, Any], key: str) -> bytes | None:
    if "secret_file" in data and "secret_env" in data:
        raise reader.fail(f"{key}.secret_env", "give secret_file or secret_env, not both")
    if "secret_file" in data:
        where = f"{key}.secret_file"
        _, text = reader.read_file(data["secret_file"], where, limit=64 * 1024)
        secret = text.strip()
    elif "secret_env" in data:
        where = f"{key}.secret_env"
        name = reader.string(data["secret_env"], where)
        secret = os.environ.get(name, "").strip()
        if not secret:
            raise reader.fail(where, f"the environment variable {name} is not set or empty")
    else:
        return None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise reader.fail(where, f"the secret is shorter than {MIN_SECRET_BYTES} bytes")
    return secret.encode()
