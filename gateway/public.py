"""What an anonymous client may read: no upstream's internal URL or address.

Decision reports keep every detail; the front door's messages and the
``Warning`` header go through :func:`scrub` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from httpx import URL, InvalidURL

#: Longest reason carried in a ``Warning`` header.
WARNING_MAX = 400

_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]*")
#: An IPv6 literal has at least two colons: ``manifests[0]`` is not an address.
_IPV6_RE = re.compile(r"\[(?=[^\]]*:[^\]]*:)[0-9a-fA-F:.]+(?:%[0-9A-Za-z_.-]+)?\](?::\d{1,5})?")
_IPV4_RE = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b")
_HOSTPORT_RE = re.compile(r"\b(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{1,5}\b")


class Scrubber:
    """Replaces URLs, addresses and the configured upstream hosts in client-facing text."""

    def __init__(self, upstream_urls: Iterable[str] = ()) -> None:
        hosts: set[str] = set()
        for url in upstream_urls:
            try:
                host = URL(url).host
            except InvalidURL:
                continue
            if host:
                hosts.add(host)
        self._hosts = (
            re.compile("|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True)))
            if hosts
            else None
        )

    def text(self, value: str) -> str:
        value = _URL_RE.sub("<upstream>", value)
        value = _IPV6_RE.sub("<address>", value)
        value = _IPV4_RE.sub("<address>", value)
        value = _HOSTPORT_RE.sub("<address>", value)
        if self._hosts is not None:
            value = self._hosts.sub("<upstream>", value)
        return value

    def data(self, value: Any) -> Any:
        """``value`` with every string in it scrubbed (dicts, lists, strings)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.data(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.data(item) for item in value]
        return value


def warning_header(message: str) -> str:
    """``299 - "pullguard: <message>"``: ASCII, printable, quotes escaped, bounded."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in message)
    if len(text) > WARNING_MAX:
        text = text[: WARNING_MAX - 3] + "..."
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "pullguard: {text}"'
