"""The deny database: known-bad manifest and blob digests.

Inline ``policy.deny_digests`` plus an optional ``policy.deny_digests_file``:
one digest per line, ``#`` comments and blank lines ignored. The file may be
large (100k+ entries); it is re-read when its size or modification time
changes, so operators update it without a restart. A file that becomes
unreadable or malformed is an error, never an empty list: a check that cannot
consult the deny database does not pass.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Container, Iterable
from pathlib import Path

from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import PullguardError

#: Upper bounds on the file, so a runaway file cannot exhaust memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_ENTRIES = 2_000_000


class DenyListError(PullguardError):
    """The deny database file cannot be read or parsed."""


def parse_denylist(lines: Iterable[str], source: str) -> frozenset[str]:
    digests: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parse_digest(line)
        except DigestSyntaxError as exc:
            raise DenyListError(f"{source}:{number}: {exc}") from None
        digests.add(line)
        if len(digests) > MAX_ENTRIES:
            raise DenyListError(f"{source}: more than {MAX_ENTRIES} entries")
    return frozenset(digests)


class DenyList:
    """Inline digests plus a file reloaded on change; safe across threads."""

    def __init__(self, inline: Iterable[str], path: Path | None) -> None:
        self._inline = frozenset(inline)
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._from_file: frozenset[str] = frozenset()

    def _refresh(self) -> frozenset[str]:
        """The file's entries, re-read when its size or modification time changed."""
        if self._path is None:
            return frozenset()
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            raise DenyListError(f"deny database {self._path}: {exc.strerror or exc}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                if stat.st_size > MAX_FILE_BYTES:
                    raise DenyListError(
                        f"deny database {self._path} exceeds {MAX_FILE_BYTES} bytes"
                    )
                try:
                    with open(self._path, encoding="utf-8") as handle:
                        self._from_file = parse_denylist(handle, str(self._path))
                except (OSError, UnicodeDecodeError) as exc:
                    raise DenyListError(f"deny database {self._path}: {exc}") from None
                self._stamp = stamp
            return self._from_file

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, str):
            return False
        from_file = self._refresh()
        return digest in self._inline or digest in from_file

    def __len__(self) -> int:
        return len(self._inline | self._refresh())

    def algorithms(self) -> frozenset[str]:
        """The digest algorithms its entries use: content must be hashed with each."""
        return algorithms_of(self._inline | self._refresh())


def algorithms_of(digests: Iterable[str]) -> frozenset[str]:
    return frozenset(d.partition(":")[0] for d in digests)


def algorithms_in(deny: Container[str]) -> frozenset[str]:
    """The algorithms a deny container lists digests in: asked of a database
    that can say (``algorithms()``), read off a plain collection, else none."""
    stated = getattr(deny, "algorithms", None)
    if callable(stated):
        return frozenset(stated())
    if isinstance(deny, (set, frozenset, list, tuple)):
        return algorithms_of(deny)
    return frozenset()
