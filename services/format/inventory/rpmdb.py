"""rpm's sqlite database (``rpmdb.sqlite`` of Fedora 33+, RHEL/UBI 9): the
``Packages`` table holds one header blob per package.

The database is opened read-only and immutable (no journal, no WAL, no
writes) on a private temporary copy, with sqlite's own limits lowered and a
progress handler that stops a query after :data:`MAX_SQLITE_STEPS` virtual
machine steps, so a crafted file (a view in place of the table, a huge blob,
a corrupt page) ends as a finding.

A header blob, as rpm stores it in the database (rpm's ``headerExport``, no
lead and no magic): ``il`` and ``dl`` (big-endian uint32), ``il`` index
entries of 16 bytes (tag, type, offset, count; big-endian), then ``dl`` bytes
of data that the offsets point into. Only NAME, VERSION, RELEASE, EPOCH,
ARCH and SOURCERPM are read; each is checked against the data store's end.

The older Berkeley DB ``Packages`` (RHEL/CentOS 7 and 8, UBI 8) and SUSE's
``Packages.db`` (ndb) are not parsed: their presence is an
``format.inventory_unsupported`` finding and an incomplete inventory.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

from pullguard.services.format.inventory.limits import MAX_FIELD
from pullguard.services.format.inventory.problems import malformed, text
from pullguard.services.runtime.inventory import Package
from pullguard.services.runtime.purl import purl

#: rpm's own bounds (HEADER_TAGS_MAX, HEADER_DATA_MAX).
MAX_TAGS = 0xFFFF
MAX_DATA = 256 * 1024 * 1024
#: sqlite VM steps (in units of the progress handler's period) per database.
MAX_SQLITE_STEPS = 50_000
_PERIOD = 1000
#: Largest blob sqlite may hand over.
MAX_BLOB = 16 * 1024 * 1024

NAME, VERSION, RELEASE, EPOCH, ARCH, SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
_WANTED = frozenset({NAME, VERSION, RELEASE, EPOCH, ARCH, SOURCERPM})
_INT32, _STRING, _I18NSTRING = 4, 6, 9


def packages(path: Path) -> Iterator[Package]:
    """The packages of the sqlite rpmdb copied to ``path``."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise malformed(f"not an sqlite database ({exc})") from None
    try:
        steps = [0]

        def progress() -> int:
            steps[0] += 1
            return 1 if steps[0] > MAX_SQLITE_STEPS else 0

        connection.set_progress_handler(progress, _PERIOD)
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_BLOB)
        connection.execute("PRAGMA trusted_schema = OFF")
        try:
            kind = connection.execute(
                "SELECT type FROM sqlite_master WHERE name = 'Packages'"
            ).fetchone()
            if kind is None or kind[0] != "table":
                raise malformed("no Packages table")
            for number, (blob,) in enumerate(
                connection.execute("SELECT blob FROM Packages ORDER BY hnum"), 1
            ):
                if not isinstance(blob, bytes):
                    raise malformed(f"row {number}: blob is not a BLOB")
                package = header_package(blob, f"row {number}")
                if package is not None:
                    yield package
        except sqlite3.Error as exc:
            if steps[0] > MAX_SQLITE_STEPS:
                raise malformed(
                    f"reading took more than {MAX_SQLITE_STEPS * _PERIOD} steps"
                ) from None
            raise malformed(f"sqlite: {str(exc)[:200]}") from None
    finally:
        connection.close()


def header_package(blob: bytes, where: str) -> Package | None:
    """One package from a header blob; ``None`` for rpm's gpg-pubkey entries."""
    tags = header_tags(blob, where)
    if NAME not in tags or VERSION not in tags or RELEASE not in tags:
        raise malformed(f"{where}: header without NAME, VERSION or RELEASE")
    name = text(str(tags[NAME]), f"{where} NAME", MAX_FIELD)
    if name == "gpg-pubkey":
        return None
    version = text(str(tags[VERSION]), f"{name} VERSION", MAX_FIELD)
    release = text(str(tags[RELEASE]), f"{name} RELEASE", MAX_FIELD)
    arch = text(str(tags.get(ARCH, "")), f"{name} ARCH", MAX_FIELD)
    epoch = tags.get(EPOCH)
    full = f"{version}-{release}"
    stated = f"{epoch}:{full}" if epoch is not None else full
    source_name, source_version = name, full
    source = text(str(tags.get(SOURCERPM, "")), f"{name} SOURCERPM", MAX_FIELD)
    if source:
        source_name, source_version = _split_source(source, name)
        if epoch is not None:
            # A source rpm's file name has no epoch; its packages share the
            # binary's, and advisories write fixed versions with it.
            source_version = f"{epoch}:{source_version}"
    qualifiers = {"arch": arch, "epoch": "" if epoch is None else str(epoch)}
    return Package(
        ecosystem="Red Hat",
        name=name,
        version=stated,
        purl=purl("rpm", "redhat", name, full, qualifiers),
        source_name=source_name,
        source_version=source_version,
        arch=arch,
    )


def header_tags(blob: bytes, where: str) -> dict[int, str | int]:
    """The wanted tags of a header blob, every offset checked."""
    if len(blob) < 8:
        raise malformed(f"{where}: header of {len(blob)} bytes")
    il, dl = struct.unpack_from(">II", blob)
    if not 0 < il <= MAX_TAGS or dl > MAX_DATA:
        raise malformed(f"{where}: header claims {il} tags and {dl} bytes of data")
    store = 8 + 16 * il
    if store + dl > len(blob):
        raise malformed(f"{where}: header claims {store + dl} bytes, blob has {len(blob)}")
    data = memoryview(blob)[store : store + dl]
    tags: dict[int, str | int] = {}
    for entry in range(il):
        tag, kind, offset, count = struct.unpack_from(">iIiI", blob, 8 + 16 * entry)
        if tag not in _WANTED:
            continue
        if not 0 <= offset < dl or count == 0:
            raise malformed(f"{where}: tag {tag} points at {offset}, data has {dl} bytes")
        if tag in tags:
            raise malformed(f"{where}: tag {tag} twice")
        if kind == _INT32 and tag == EPOCH:
            if offset % 4 or offset + 4 > dl:
                raise malformed(f"{where}: EPOCH at {offset} is out of range or unaligned")
            tags[tag] = struct.unpack_from(">i", data, offset)[0]
        elif kind in (_STRING, _I18NSTRING) and tag != EPOCH:
            end = bytes(data[offset : offset + MAX_FIELD + 1]).find(b"\0")
            if end < 0:
                raise malformed(f"{where}: tag {tag} string is unterminated or too long")
            tags[tag] = bytes(data[offset : offset + end]).decode("utf-8", "replace")
        else:
            raise malformed(f"{where}: tag {tag} has type {kind}")
    return tags


def _split_source(source: str, name: str) -> tuple[str, str]:
    """``foo-1.2-3.el9.src.rpm`` -> ``("foo", "1.2-3.el9")``."""
    for suffix in (".src.rpm", ".nosrc.rpm"):
        if source.endswith(suffix):
            source = source[: -len(suffix)]
            break
    else:
        raise malformed(f"{name}: SOURCERPM {source[:80]} is not a source rpm name")
    parts = source.rsplit("-", 2)
    if len(parts) != 3 or not all(parts):
        raise malformed(f"{name}: SOURCERPM {source[:80]} is not name-version-release")
    return parts[0], f"{parts[1]}-{parts[2]}"
