"""The inventory of one layer, read during format's tar walk.

:meth:`InventoryCollector.offer` sees every entry's header (after
:class:`~pullguard.services.format.layertree.LayerTree` judged it) and answers
with a sink for its content only when the path names a package database, an
os-release file, or an executable that may be a Go binary; the tar reader
then hands that sink the entry's bytes as they stream past, and nothing else
is kept. Paths are checked before any content is touched, so a layer without
databases costs one string test per entry.

Whiteouts become :attr:`LayerInventory.removed`. Symlinks and hard links are
not followed: an ``etc/os-release`` that is a link (to
``../usr/lib/os-release``, as on Debian and Fedora) is skipped and the file
itself is read at ``usr/lib/os-release``.

A database is parsed when its last byte has passed; what it lies about or
what exceeds :mod:`limits` is a WARNING finding naming the file and layer,
and its code goes into :attr:`LayerInventory.incomplete`.
"""

from __future__ import annotations

import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pullguard.services.format.inventory import gobuildinfo, langdb, limits, osdb, rpmdb
from pullguard.services.format.inventory.problems import (
    LIMIT,
    MALFORMED,
    UNSUPPORTED,
    InventoryProblem,
)
from pullguard.services.format.layertree import FindingSink, normalize
from pullguard.services.format.tarstream import TarEntry
from pullguard.services.runtime.findings import Severity
from pullguard.services.runtime.inventory import (
    OS_RELEASE_PATHS,
    LayerInventory,
    Package,
    PackageSource,
)

_RPM_SQLITE = frozenset({"var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"})
_RPM_OTHER = frozenset(
    {
        "var/lib/rpm/Packages",
        "usr/lib/sysimage/rpm/Packages",
        "var/lib/rpm/Packages.db",
        "usr/lib/sysimage/rpm/Packages.db",
    }
)
#: Last path components worth a closer look; anything else is passed over
#: by one ``endswith``.
_TAILS = (
    "status",
    "installed",
    "rpmdb.sqlite",
    "Packages",
    "Packages.db",
    "METADATA",
    "PKG-INFO",
    "package.json",
    "os-release",
)
#: Executables smaller than this cannot be Go binaries (the runtime alone is larger).
MIN_GO_BINARY = 64 * 1024
_SEVERITY = {LIMIT: Severity.WARNING, MALFORMED: Severity.WARNING, UNSUPPORTED: Severity.INFO}
_PARSERS: dict[str, Callable[[bytes], Iterable[Package]]] = {
    "dpkg": osdb.dpkg,
    "apk": osdb.apk,
    "python": langdb.python,
    "npm": langdb.npm,
}


def database_kind(path: str) -> str | None:
    """What the database at normalised ``path`` is, or ``None``."""
    parent, _, base = path.rpartition("/")
    if path == "var/lib/dpkg/status":
        return "dpkg"
    if parent == "var/lib/dpkg/status.d" and not base.endswith(".md5sums"):
        return "dpkg"
    if path == "lib/apk/db/installed":
        return "apk"
    if path in _RPM_SQLITE:
        return "rpm"
    if path in _RPM_OTHER:
        return "rpm-unsupported"
    if path in OS_RELEASE_PATHS:
        return "os-release"
    if (base == "METADATA" and parent.endswith(".dist-info")) or (
        base == "PKG-INFO" and parent.endswith(".egg-info")
    ):
        return "python"
    if base == "package.json":
        parts = parent.split("/")
        if len(parts) >= 2 and parts[-2] == "node_modules":
            return "npm"
        if len(parts) >= 3 and parts[-3] == "node_modules" and parts[-2].startswith("@"):
            return "npm"
    return None


class InventoryCollector:
    """Builds :attr:`inventory` from the entries of one layer."""

    def __init__(self, index: int, sink: FindingSink) -> None:
        self.inventory = LayerInventory(index)
        self._findings = sink
        self._files = 0
        self._captured = 0
        self._packages = 0
        self._go_binaries = 0
        self._limits_noted: set[str] = set()

    # ------------------------------------------------------------ entries

    def offer(self, entry: TarEntry) -> _Sink | None:
        """A sink for ``entry``'s content when the inventory needs it."""
        name = entry.name.rstrip("/")
        if name.rpartition("/")[2].startswith(".wh."):
            self._whiteout(name)
            return None
        if entry.typeflag != "0":
            return None
        if name.endswith(_TAILS) or "/status.d/" in name:
            path, problem = normalize(name)
            kind = database_kind(path) if not problem else None
            if kind is not None:
                return self._database(kind, _printable(path), entry.size)
        if entry.mode & 0o111 and entry.size >= MIN_GO_BINARY:
            return self._executable(entry)
        return None

    def _whiteout(self, name: str) -> None:
        path, problem = normalize(name)
        parent, _, base = path.rpartition("/")
        if problem or not base.startswith(".wh."):
            return
        if base == ".wh..wh..opq":
            self.inventory.removed.append(_printable(parent + "/"))
        elif not base.startswith(".wh..wh."):
            target = base[len(".wh.") :]
            self.inventory.removed.append(_printable(f"{parent}/{target}" if parent else target))

    def _database(self, kind: str, path: str, size: int) -> _Sink | None:
        if kind == "rpm-unsupported":
            self._problem(
                path,
                InventoryProblem(
                    UNSUPPORTED,
                    "rpm Berkeley DB / ndb database is not read; its packages are not listed",
                ),
            )
            return None
        if kind == "npm" and path.split("/").count("node_modules") > limits.MAX_NPM_DEPTH:
            self._limit(path, f"node_modules nested more than {limits.MAX_NPM_DEPTH} deep")
            return None
        self._files += 1
        if self._files > limits.MAX_FILES:
            self._limit(path, f"more than {limits.MAX_FILES} database files in the layer")
            return None
        cap = limits.MAX_FILE_BYTES[kind]
        if size > cap and kind not in limits.HEAD_ONLY:
            self._limit(path, f"{kind} database of {size} bytes, limit {cap}")
            return None
        take = min(size, cap)
        if self._captured + take > limits.MAX_LAYER_BYTES:
            self._limit(path, f"databases of more than {limits.MAX_LAYER_BYTES} bytes in the layer")
            return None
        self._captured += take
        if kind == "rpm":
            return _FileCapture(take, lambda file: self._parsed_rpm(path, file))
        return _Capture(take, lambda data: self._parsed(kind, path, data))

    def _executable(self, entry: TarEntry) -> _Sink | None:
        self._go_binaries += 1
        if self._go_binaries > limits.MAX_GO_BINARIES:
            self._limit(
                _printable(entry.name),
                f"more than {limits.MAX_GO_BINARIES} executables to scan for Go build info",
            )
            return None
        path, problem = normalize(entry.name)
        if problem:
            return None
        return _GoCapture(self, _printable(path))

    # ------------------------------------------------------------ results

    def _parsed(self, kind: str, path: str, data: bytes) -> None:
        if kind == "os-release":
            try:
                release = langdb.os_release(data, path)
            except InventoryProblem as exc:
                self._problem(path, exc)
                return
            current = self.inventory.os_release
            # etc/os-release outranks usr/lib/os-release (os-release(5)).
            if current is None or OS_RELEASE_PATHS.index(path) < OS_RELEASE_PATHS.index(
                current.path
            ):
                self.inventory.os_release = release
            return
        self._add_source(path, kind, _PARSERS[kind](data))

    def _parsed_rpm(self, path: str, file: Path) -> None:
        self._add_source(path, "rpm", rpmdb.packages(file))

    def parsed_go(self, path: str, scanner: gobuildinfo.Scanner) -> None:
        if scanner.found is None:
            if scanner.truncated:
                self._limit(path, f"no Go build info in the first {limits.MAX_GO_SCAN_BYTES} bytes")
            return
        try:
            _, packages = gobuildinfo.parse(bytes(scanner.found))
        except InventoryProblem as exc:
            self._problem(path, exc)
            return
        self._add_source(path, "go", packages)

    def _add_source(self, path: str, kind: str, packages: Iterable[Package]) -> None:
        listed: list[Package] = []
        try:
            for package in packages:
                if self._packages >= limits.MAX_PACKAGES:
                    self._limit(path, f"more than {limits.MAX_PACKAGES} packages in the layer")
                    break
                self._packages += 1
                listed.append(package)
        except InventoryProblem as exc:
            self._problem(path, exc)
        except (ValueError, struct.error, sqlite3.Error, OSError, RecursionError) as exc:
            self._problem(path, InventoryProblem(MALFORMED, f"unreadable: {str(exc)[:200]}"))
        self.inventory.sources.append(PackageSource(path, kind, tuple(listed)))

    def _limit(self, path: str, message: str) -> None:
        self._problem(path, InventoryProblem(LIMIT, message))

    def _problem(self, path: str, problem: InventoryProblem) -> None:
        self._findings.add(
            problem.code,
            _SEVERITY[problem.code],
            f"{path[:200]}: {problem.message}",
            path=path[:200],
        )
        if problem.code not in self.inventory.incomplete:
            self.inventory.incomplete.append(problem.code)


def _printable(path: str) -> str:
    """A path as valid UTF-8 (a protobuf string must be), bytes that are not replaced."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Sink:
    """What the tar reader hands an entry's bytes to (see TarReader)."""

    def write(self, data: memoryview) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Capture(_Sink):
    """Keeps up to ``limit`` bytes in memory and parses them at the end."""

    def __init__(self, limit: int, done: Callable[[bytes], None]) -> None:
        self._limit = limit
        self._data = bytearray()
        self._done = done

    def write(self, data: memoryview) -> None:
        room = self._limit - len(self._data)
        if room > 0:
            self._data += data[:room]

    def close(self) -> None:
        self._done(bytes(self._data))


class _FileCapture(_Sink):
    """Writes to a private temporary file (sqlite needs a file) and parses
    it at the end; the file is removed whatever happens."""

    def __init__(self, limit: int, done: Callable[[Path], None]) -> None:
        self._limit = limit
        self._written = 0
        self._done = done
        self._file = tempfile.NamedTemporaryFile(prefix="pullguard-rpmdb-", suffix=".sqlite")

    def write(self, data: memoryview) -> None:
        room = self._limit - self._written
        if room > 0:
            self._file.write(data[:room])
            self._written += min(room, len(data))

    def close(self) -> None:
        try:
            self._file.flush()
            self._done(Path(self._file.name))
        finally:
            self._file.close()


class _GoCapture(_Sink):
    def __init__(self, collector: InventoryCollector, path: str) -> None:
        self._collector = collector
        self._path = path
        self._scanner = gobuildinfo.Scanner(limits.MAX_GO_SCAN_BYTES, limits.MAX_BUILDINFO_BYTES)

    def write(self, data: memoryview) -> None:
        if not self._scanner.done:
            self._scanner.write(bytes(data))

    def close(self) -> None:
        if self._scanner.object_file:
            self._collector.parsed_go(self._path, self._scanner)
