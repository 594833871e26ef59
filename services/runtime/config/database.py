"""``database:``: where the decision database lives (default: SQLite in ``state_dir``).

``database: postgresql://user@host:5432/name`` puts decisions, admissions,
the quarantine index, waivers and publications in PostgreSQL, so that several
gateway replicas share one truth. The password comes from the URL, from
``password_file`` (``database: {url: ..., password_file: ...}``), or from
libpq's own ``PGPASSWORD`` / ``~/.pgpass``; it is never part of what is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from pullguard.services.runtime.config.reader import Reader

SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Database:
    """A PostgreSQL server: ``url`` holds no password; ``password`` is kept out of repr."""

    url: str
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.url


def read_database(reader: Reader, raw: Any) -> Database | None:
    if raw is None:
        return None
    password_file = None
    if isinstance(raw, dict):
        data = reader.mapping(raw, "database")
        reader.known(data, "database", {"url", "password_file"})
        url = reader.string(data.get("url"), "database.url")
        password_file = data.get("password_file")
    else:
        url = reader.string(raw, "database")
    key = "database.url" if isinstance(raw, dict) else "database"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise reader.fail(key, "is not a valid URL") from None
    if parts.scheme not in SCHEMES:
        raise reader.fail(key, "wants a postgresql:// URL (leave it out for SQLite in state_dir)")
    password = None if parts.password is None else unquote(parts.password)
    if password_file is not None:
        if password is not None:
            raise reader.fail("database.password_file", "the URL holds a password already")
        _, text = reader.read_file(password_file, "database.password_file")
        password = text.strip()
        if not password:
            raise reader.fail("database.password_file", "the file holds no password")
    return Database(url=_without_password(parts), password=password)


def _without_password(parts: SplitResult) -> str:
    if parts.password is None:
        return urlunsplit(parts)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))
