"""Go module information embedded in binaries (what ``go version -m`` shows),
read from the bytes, never by running anything.

The linker writes a 32-byte header at a 16-byte aligned offset of the data
segment (section ``.go.buildinfo`` on ELF): the magic ``\\xff Go buildinf:``,
the pointer size, a flags byte, and padding. Since Go 1.18 (flag bit 2) the
Go version and the module information follow as two strings, each a uvarint
length and the bytes. The module information is framed by 16 sentinel bytes
on each side and holds tab-separated lines: ``path`` (main package), ``mod``
(main module path, version, sum), ``dep`` (path, version, sum), ``=>`` (the
replacement of the ``dep`` before it) and ``build`` settings.

Older binaries point at the strings through the data segment's virtual
addresses instead; reading them needs the section table, so they are reported
as ``format.inventory_unsupported``.
"""

from __future__ import annotations

from collections.abc import Iterator

from pullguard.services.format.inventory.limits import MAX_FIELD
from pullguard.services.format.inventory.problems import (
    UNSUPPORTED,
    InventoryProblem,
    malformed,
    text,
)
from pullguard.services.runtime.inventory import Package
from pullguard.services.runtime.purl import golang_purl

MAGIC = b"\xff Go buildinf:"
ALIGN = 16
HEADER = 32
_INLINE = 0x2
#: ELF, Mach-O (32/64, both byte orders, fat) and PE: the only files scanned.
OBJECT_MAGICS = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"MZ",
)
_MAX_LINES = 100_000


def parse(blob: bytes) -> tuple[str, list[Package]]:
    """``(go version, packages)`` from the bytes at the magic on: the
    standard library as package ``stdlib``, the main module and each dep."""
    if len(blob) < HEADER or not blob.startswith(MAGIC):
        raise malformed("build info header is cut short")
    if not blob[15] & _INLINE:
        raise InventoryProblem(UNSUPPORTED, "build info of Go before 1.18 (pointer format)")
    position = HEADER
    version_raw, position = _string(blob, position)
    modinfo, position = _string(blob, position)
    go_version = text(version_raw, "Go version", MAX_FIELD)
    if not go_version.startswith("go"):
        raise malformed(f"Go version {go_version[:40]!r} does not start with go")
    if len(modinfo) >= 33 and modinfo[-17] == 0x0A:
        modinfo = modinfo[16:-16]
    else:
        modinfo = b""
    packages = [_package("stdlib", go_version.split()[0])]
    packages.extend(_modules(modinfo))
    return go_version, packages


def _string(blob: bytes, position: int) -> tuple[bytes, int]:
    length, shift = 0, 0
    while True:
        if position >= len(blob) or shift > 35:
            raise malformed("build info string length is cut short or too long")
        byte = blob[position]
        position += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if position + length > len(blob):
        raise malformed(f"build info string of {length} bytes runs past the data read")
    return blob[position : position + length], position + length


def _modules(modinfo: bytes) -> Iterator[Package]:
    pending: Package | None = None
    for number, line in enumerate(modinfo.split(b"\n"), 1):
        if number > _MAX_LINES:
            raise malformed(f"module info of more than {_MAX_LINES} lines")
        fields = line.split(b"\t")
        kind = fields[0]
        if kind in (b"mod", b"dep"):
            if pending is not None:
                yield pending
            if len(fields) < 3:
                raise malformed(f"module info line {number} has {len(fields)} fields")
            pending = _package(
                text(fields[1], "module path", MAX_FIELD), text(fields[2], "version", MAX_FIELD)
            )
        elif kind == b"=>":
            # A replacement by another module is what was built: match that.
            # One by a local directory has no version to match, so the
            # module it stands in for is kept (a match is then a question
            # for a human, not a silent miss).
            if pending is None or len(fields) < 3:
                raise malformed(f"module info line {number}: a replacement of nothing")
            path = text(fields[1], "module path", MAX_FIELD)
            if not path.startswith((".", "/")):
                pending = _package(path, text(fields[2], "version", MAX_FIELD))
    if pending is not None:
        yield pending


def _package(module: str, version: str) -> Package:
    return Package(ecosystem="Go", name=module, version=version, purl=golang_purl(module, version))


class Scanner:
    """Fed one executable's bytes in order; keeps only a tail for the magic
    split across chunks and, once the magic is found at an aligned offset,
    up to ``keep`` bytes from it."""

    def __init__(self, scan_limit: int, keep: int) -> None:
        self._scan_limit = scan_limit
        self._keep = keep
        self._offset = 0
        self._tail = b""
        self._head = b""
        self.found: bytearray | None = None
        self.object_file: bool | None = None
        self.truncated = False

    @property
    def done(self) -> bool:
        if self.object_file is False:
            return True
        if self.found is not None:
            return len(self.found) >= self._keep
        return self.truncated

    def write(self, chunk: bytes) -> None:
        if self.done:
            return
        if self.object_file is None:
            self._head += chunk[: 4 - len(self._head)]
            if len(self._head) < 4:
                # No magic fits in a file's first four bytes: nothing to scan yet.
                self._tail = (self._tail + chunk)[-(len(MAGIC) - 1) :]
                self._offset += len(chunk)
                return
            self.object_file = self._head.startswith(OBJECT_MAGICS)
            if not self.object_file:
                return
        if self.found is not None:
            self.found += chunk[: self._keep - len(self.found)]
            self._offset += len(chunk)
            return
        if self._offset >= self._scan_limit:
            self.truncated = True
            return
        data = self._tail + chunk
        base = self._offset - len(self._tail)
        at = data.find(MAGIC)
        while at >= 0 and (base + at) % ALIGN:
            at = data.find(MAGIC, at + 1)
        if at >= 0:
            self.found = bytearray(data[at : at + self._keep])
        else:
            self._tail = data[-(len(MAGIC) - 1) :]
        self._offset += len(chunk)
