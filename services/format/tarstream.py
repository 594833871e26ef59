"""A streaming tar header reader with Go archive/tar's semantics.

Container runtimes (containerd, moby, CRI-O) read layers with Go's
``archive/tar``, so a header means what that reader makes of it, and this
module follows it where readers disagree (THREATS L-01, L-04):

- the format comes from the magic: ``ustar\\0`` (USTAR/PAX, and STAR with the
  ``tar\\0`` trailer) uses the prefix field, GNU ``ustar  `` does not (unless
  its atime/ctime do not parse, Go's pre-1.8 fallback), V7 never does;
- numbers are octal or base-256, and one that does not parse fails the
  header, as does a checksum that matches neither the signed nor the unsigned
  sum;
- a PAX ``x`` header applies to the next entry only, a PAX value that is
  empty keeps the ustar field, a GNU long name or link (``L``/``K``) wins over
  PAX ``path``/``linkpath``; a global ``g`` header applies to nothing;
- links, devices, directories and FIFOs carry no data, whatever their size.

Where readers differ and an attacker could use it to show a scanner one tree
and a runtime another, the stream is refused instead (``format.malformed_tar``):
two PAX headers or two long names for one entry, a PAX ``path`` that is empty
or given twice, a size on an entry that carries no data, a V7 header with
bytes in the prefix area, GNU sparse files, and entry types runtimes do not
extract. A GNU long name and a PAX path that disagree are two names for one
entry (``format.duplicate_path``).

Nothing is extracted and file contents are never kept: the reader is fed the
uncompressed stream chunk by chunk, parses the 512-byte headers and the PAX
and long-name records (at most :data:`MAX_META` bytes each), and passes over
file data by arithmetic. Each entry goes to ``on_entry`` as a
:class:`TarEntry`; when ``on_entry`` answers with a :class:`ContentSink`, the
entry's data bytes (padding excluded) are written to it as they pass and it
is closed after the last one (the inventory reads package databases so).
Problems that end the reading raise :class:`TarError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pullguard.services.format.tarfields import FieldError, cstr, numeric, octal

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
#: Largest PAX header or GNU long name/link accepted (Go allows 1 MiB).
MAX_META = 64 * 1024
#: Most records in one PAX header; real ones carry a handful, and each
#: record costs a step of Python.
MAX_PAX_RECORDS = 256
#: Longest name or link target, in bytes (Linux PATH_MAX).
MAX_NAME = 4096
#: Largest entry size that could be real; beyond it a size is a lie.
MAX_ENTRY_SIZE = 2**53
#: Entry types runtimes extract: regular (also ``\\0``), hard link, symlink,
#: character and block device, directory, FIFO.
ENTRY_TYPES = frozenset("0123456")
#: Types that carry no data in the archive (Go's isHeaderOnlyType).
HEADER_ONLY = frozenset("123456")
_META_TYPES = frozenset("xgLK")
_DECIMAL_RE = re.compile(rb"[+-]?[0-9]{1,19}")
_PAX_TIME_RE = re.compile(rb"[+-]?[0-9]{1,19}(?:\.[0-9]*)?")
_HIGH_BYTES = bytes(range(0x80, 0x100))
_XATTR_PREFIX = b"SCHILY.xattr."
#: PAX keys whose repetition in one header would be a parser differential.
_SINGLE_KEYS = frozenset({b"path", b"linkpath", b"size", b"uid", b"gid"})


class ContentSink(Protocol):
    """Takes one entry's data as it streams past; must not raise."""

    def write(self, data: memoryview) -> None: ...

    def close(self) -> None: ...


class TarError(Exception):
    """The stream cannot be read further; ``code`` is the finding code."""

    def __init__(self, code: str, message: str, offset: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.offset = offset


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One entry as Go's reader returns it. Names are the raw bytes decoded
    with ``surrogateescape``, so no byte is lost or changed."""

    name: str
    linkname: str
    #: One of :data:`ENTRY_TYPES`; ``\\0`` is reported as ``0``.
    typeflag: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    #: ``SCHILY.xattr.*`` PAX records, keys without the prefix.
    xattrs: tuple[tuple[str, str], ...]
    #: Offset of the entry's header (the first meta header) in the tar stream.
    offset: int


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    """PAX records (``"%d %s=%s\\n"``) as Go parses them, with empty values
    removed; raises :class:`TarError` on any malformed record."""
    records: dict[bytes, bytes] = {}
    pos = 0
    count = 0
    while pos < len(data):
        count += 1
        if count > MAX_PAX_RECORDS:
            raise TarError(
                "format.malformed_tar", f"more than {MAX_PAX_RECORDS} PAX records", offset
            )
        space = data.find(b" ", pos, pos + 21)
        length_text = data[pos:space] if space > pos else b""
        if not _DECIMAL_RE.fullmatch(length_text):
            raise TarError("format.malformed_tar", "PAX record without a length", offset)
        length = int(length_text)
        end = pos + length
        if length < 5 or end > len(data) or end <= space + 1 or data[end - 1] != 0x0A:
            raise TarError("format.malformed_tar", "PAX record length is wrong", offset)
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise TarError("format.malformed_tar", "PAX record without key=value", offset)
        if key in (b"path", b"linkpath"):
            if b"\0" in value:
                raise TarError(
                    "format.unsafe_path", f"PAX {_decode(key)} contains a NUL byte", offset
                )
            if not value:
                # Go keeps the ustar name, other readers take the empty one.
                raise TarError("format.malformed_tar", f"PAX {_decode(key)} is empty", offset)
        elif b"\0" in key:
            raise TarError("format.malformed_tar", "PAX key contains a NUL byte", offset)
        if key.startswith(b"GNU.sparse."):
            raise TarError("format.malformed_tar", "GNU sparse files are not supported", offset)
        if key.startswith(_XATTR_PREFIX) and not 0 < len(key) - len(_XATTR_PREFIX) <= 255:
            raise TarError("format.malformed_tar", "xattr name is empty or too long", offset)
        if key in records and key in _SINGLE_KEYS:
            raise TarError(
                "format.malformed_tar", f"PAX {_decode(key)} given twice in one header", offset
            )
        if value:
            records[key] = value
        else:
            records.pop(key, None)
        pos = end
    return records


class TarReader:
    """Feed it the uncompressed stream in order, then call :meth:`close`."""

    def __init__(
        self, on_entry: Callable[[TarEntry], ContentSink | None], max_entry_size: int
    ) -> None:
        self._on_entry = on_entry
        self._max_entry_size = max_entry_size
        self._offset = 0
        self._skip = 0
        # Where the current entry's data goes, and how many data bytes are left.
        self._content: ContentSink | None = None
        self._content_left = 0
        self._header = bytearray()
        self._meta_type = ""
        self._meta_need = 0
        self._meta_data = bytearray()
        self._meta_pad = 0
        # Meta headers read for the next entry, by type: "x" -> PAX records,
        # "L"/"K" -> GNU long name/link.
        self._pending: dict[str, dict[bytes, bytes] | bytes] = {}
        self._pending_offset = 0
        self._zero_blocks = 0
        self._ended = False
        #: Entries seen, global PAX headers included.
        self.entries = 0

    # ------------------------------------------------------------ stream

    def feed(self, data: bytes) -> None:
        """Read ``data``, the next piece of the uncompressed stream."""
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                if self._content is not None:
                    self._deliver(view[pos : pos + take])
                self._skip -= take
                pos += take
            elif self._ended:
                rest = view[pos:].tobytes()
                if rest.count(0) != len(rest):
                    raise TarError(
                        "format.malformed_tar",
                        "data after the end-of-archive marker",
                        self._offset + pos,
                    )
                pos = end
            elif self._meta_need:
                take = min(self._meta_need, end - pos)
                self._meta_data += view[pos : pos + take]
                self._meta_need -= take
                pos += take
                if not self._meta_need:
                    self._finish_meta(self._offset + pos)
            else:
                if self._header or end - pos < BLOCK:
                    take = min(BLOCK - len(self._header), end - pos)
                    self._header += view[pos : pos + take]
                    pos += take
                    if len(self._header) < BLOCK:
                        continue
                    block = bytes(self._header)
                    self._header.clear()
                else:
                    block = view[pos : pos + BLOCK].tobytes()
                    pos += BLOCK
                self._read_header(block, self._offset + pos - BLOCK)
        self._offset += end

    def _deliver(self, data: memoryview) -> None:
        give = min(len(data), self._content_left)
        content = self._content
        assert content is not None
        if give:
            content.write(data[:give])
            self._content_left -= give
        if not self._content_left:
            self._content = None
            content.close()

    def close(self) -> None:
        """The stream ended: it must not end inside a header or an entry."""
        if self._skip or self._header or self._meta_need:
            raise TarError("format.malformed_tar", "tar stream is truncated", self._offset)
        if self._pending:
            raise TarError(
                "format.malformed_tar",
                "tar stream ends after a PAX or long-name header",
                self._offset,
            )

    # ------------------------------------------------------------ headers

    def _read_header(self, block: bytes, offset: int) -> None:
        if block == ZERO_BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                if self._pending:
                    raise TarError(
                        "format.malformed_tar",
                        "end of archive after a PAX or long-name header",
                        offset,
                    )
                self._ended = True
            return
        if self._zero_blocks:
            raise TarError("format.malformed_tar", "a zero block followed by a header", offset)
        try:
            tar_format = self._format(block, offset)
            typeflag = chr(block[156])
            name = block[0:100].partition(b"\0")[0]
            linkname = block[157:257].partition(b"\0")[0]
            size = numeric(block[124:136])
            mode = numeric(block[100:108])
            uid = numeric(block[108:116])
            gid = numeric(block[116:124])
            mtime = numeric(block[136:148])
            prefix = b""
            if tar_format == "v7":
                # Python's tarfile reads a prefix here; Go does not.
                if block[345:500].strip(b"\0"):
                    raise TarError("format.malformed_tar", "V7 header with a prefix field", offset)
            else:
                numeric(block[329:337])
                numeric(block[337:345])
                if tar_format == "ustar":
                    prefix = block[345:500].partition(b"\0")[0]
                elif tar_format == "star":
                    prefix = block[345:476].partition(b"\0")[0]
                    numeric(block[476:488])
                    numeric(block[488:500])
                else:
                    prefix = self._gnu_prefix(block)
        except FieldError as exc:
            raise TarError("format.malformed_tar", str(exc), offset) from None
        if prefix:
            name = prefix + b"/" + name
        if not self._pending:
            self._pending_offset = offset
        if typeflag in _META_TYPES:
            self._start_meta(typeflag, size, offset)
            return
        self._entry(typeflag, name, linkname, size, mode, uid, gid, mtime)

    @staticmethod
    def _format(block: bytes, offset: int) -> str:
        try:
            expected = octal(block[148:156])
        except FieldError:
            expected = -1
        # The checksum field counts as eight spaces.
        unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
        if expected != unsigned:
            high = BLOCK - len(block.translate(None, _HIGH_BYTES))
            high -= 8 - len(block[148:156].translate(None, _HIGH_BYTES))
            if expected != unsigned - 256 * high:
                raise TarError("format.malformed_tar", "header checksum mismatch", offset)
        magic = block[257:263]
        if magic == b"ustar\0":
            return "star" if block[508:512] == b"tar\0" else "ustar"
        if magic == b"ustar " and block[263:265] == b" \0":
            return "gnu"
        return "v7"

    @staticmethod
    def _gnu_prefix(block: bytes) -> bytes:
        """Go reads the GNU atime/ctime, and when they do not parse falls back
        to the ustar prefix field if it is ASCII (files of Go before 1.8)."""
        try:
            for field in (block[345:357], block[357:369]):
                if field[0] != 0:
                    numeric(field)
        except FieldError:
            prefix = cstr(block[345:500])
            return prefix if prefix.isascii() else b""
        return b""

    def _start_meta(self, typeflag: str, size: int, offset: int) -> None:
        if typeflag == "g" and self._pending:
            raise TarError(
                "format.malformed_tar", "global PAX header between a header and its entry", offset
            )
        if typeflag in self._pending:
            raise TarError(
                "format.malformed_tar",
                f"two {'PAX' if typeflag == 'x' else 'long-name'} headers for one entry",
                offset,
            )
        if not 0 <= size <= MAX_META:
            raise TarError(
                "format.malformed_tar",
                f"{'PAX' if typeflag in 'xg' else 'long-name'} header of {size} bytes,"
                f" limit {MAX_META}",
                offset,
            )
        self._meta_type = typeflag
        self._meta_need = size
        self._meta_pad = -size % BLOCK
        self._meta_data.clear()
        if size == 0:
            self._finish_meta(offset + BLOCK)

    def _finish_meta(self, offset: int) -> None:
        data = bytes(self._meta_data)
        self._meta_data.clear()
        self._skip = self._meta_pad
        typeflag = self._meta_type
        if typeflag in "xg":
            records = parse_pax(data, offset)
            if typeflag == "g":
                # Go returns it as an entry of its own and applies it to nothing.
                self.entries += 1
                return
            self._pending["x"] = records
            return
        name = cstr(data)
        if data[len(name) :].strip(b"\0"):
            raise TarError("format.unsafe_path", "GNU long name contains a NUL byte", offset)
        self._pending[typeflag] = name

    # ------------------------------------------------------------ entries

    def _entry(
        self,
        typeflag: str,
        name: bytes,
        linkname: bytes,
        size: int,
        mode: int,
        uid: int,
        gid: int,
        mtime: int,
    ) -> None:
        offset = self._pending_offset
        pending = self._pending
        self._pending = {}
        records = pending.get("x")
        if not isinstance(records, dict):
            records = {}
        xattrs: list[tuple[str, str]] = []
        for key, value in records.items():
            if key == b"path":
                name = value
            elif key == b"linkpath":
                linkname = value
            elif key in (b"uid", b"gid", b"size"):
                if not _DECIMAL_RE.fullmatch(value):
                    raise TarError(
                        "format.malformed_tar", f"PAX {_decode(key)} is not a number", offset
                    )
                number = int(value)
                if not -(2**63) <= number < 2**63:
                    raise TarError("format.malformed_tar", f"PAX {_decode(key)} overflows", offset)
                if key == b"uid":
                    uid = number
                elif key == b"gid":
                    gid = number
                else:
                    size = number
            elif key in (b"mtime", b"atime", b"ctime"):
                if not _PAX_TIME_RE.fullmatch(value):
                    raise TarError(
                        "format.malformed_tar", f"PAX {_decode(key)} is not a time", offset
                    )
                if key == b"mtime":
                    mtime = int(value.split(b".", 1)[0])
            elif key.startswith(_XATTR_PREFIX):
                xattrs.append((_decode(key[len(_XATTR_PREFIX) :]), _decode(value)))
        long_name = pending.get("L")
        long_link = pending.get("K")
        for long_value, pax_key, what in (
            (long_name, b"path", "name"),
            (long_link, b"linkpath", "link"),
        ):
            if isinstance(long_value, bytes) and long_value and pax_key in records:
                if long_value != records[pax_key]:
                    raise TarError(
                        "format.duplicate_path",
                        f"GNU long {what} {_decode(long_value)[:200]} and PAX {_decode(pax_key)}"
                        f" {_decode(records[pax_key])[:200]} name one entry differently",
                        offset,
                    )
        if isinstance(long_name, bytes) and long_name:
            name = long_name
        if isinstance(long_link, bytes) and long_link:
            linkname = long_link
        if typeflag == "\0":
            typeflag = "5" if name.endswith(b"/") else "0"
        if typeflag == "S":
            raise TarError("format.malformed_tar", "GNU sparse files are not supported", offset)
        if typeflag not in ENTRY_TYPES:
            raise TarError(
                "format.malformed_tar",
                f"entry type {typeflag!r} is not one runtimes extract",
                offset,
            )
        if len(name) > MAX_NAME or len(linkname) > MAX_NAME:
            raise TarError(
                "format.malformed_tar",
                f"name of {max(len(name), len(linkname))} bytes, limit {MAX_NAME}",
                offset,
            )
        if size < 0:
            raise TarError("format.malformed_tar", f"negative size {size}", offset)
        if typeflag in HEADER_ONLY:
            if size:
                # Go skips no data here; readers that trust the size would.
                raise TarError(
                    "format.malformed_tar",
                    f"{_decode(name)[:200]}: size {size} on an entry that carries no data",
                    offset,
                )
        elif size >= MAX_ENTRY_SIZE:
            raise TarError("format.malformed_tar", f"entry size {size} is not real", offset)
        elif size > self._max_entry_size:
            raise TarError(
                "format.decompression_limit",
                f"entry of {size} bytes exceeds the layer limit of {self._max_entry_size}",
                offset,
            )
        self.entries += 1
        self._skip = size + (-size % BLOCK)
        content = self._on_entry(
            TarEntry(
                name=_decode(name),
                linkname=_decode(linkname),
                typeflag=typeflag,
                mode=mode,
                uid=uid,
                gid=gid,
                size=size,
                mtime=mtime,
                xattrs=tuple(xattrs),
                offset=offset,
            )
        )
        if content is not None:
            if typeflag in HEADER_ONLY or not size:
                content.close()
            else:
                self._content = content
                self._content_left = size
