"""The wrapper around each gzip member's deflate data (RFC 1952), read by pullguard.

The deflate data itself is inflated by ISA-L (python-isal), about twice as
fast as zlib on real layers (see :mod:`decompress`). ISA-L's own gzip
wrapper code differs from zlib's, so it is not used: it accepts the reserved
flag bits that zlib refuses, and it refuses a good header with FHCRC when
the header arrives in more than one read. This module reads the header and
the trailer exactly as zlib did before ISA-L replaced it:

- magic ``1f 8b``, method 8 (deflate), no reserved flag bit set;
- FEXTRA, FNAME and FCOMMENT skipped (zlib sets no limit on their length, so
  neither does this; they are skipped as they arrive, never held);
- FHCRC, when set, equal to the low 16 bits of the header's CRC-32;
- the trailer: CRC-32 of the member's output, then its length modulo 2**32.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from isal import isal_zlib

_MAGIC = b"\x1f\x8b"
_DEFLATE = 8
_FHCRC = 0x02
_FEXTRA = 0x04
_FNAME = 0x08
_FCOMMENT = 0x10
_RESERVED = 0xE0


class WrapperError(Exception):
    """A gzip header or trailer that zlib would refuse; the message says which
    member and what is wrong."""


class PendingInput:
    """The compressed bytes in order: what was read and not used yet, then the source.

    The unused bytes are kept as a buffer and an offset, so taking a header
    or a trailer from a chunk copies only what is taken, not the rest.
    """

    def __init__(self, read: Callable[[int], bytes], read_size: int) -> None:
        self._read = read
        self._read_size = read_size
        self._buffer = b""
        self._offset = 0

    def fill(self) -> bool:
        """Reads more when nothing is pending; False at the end of the source."""
        if self._offset >= len(self._buffer):
            self._buffer = self._read(self._read_size)
            self._offset = 0
        return self._offset < len(self._buffer)

    def startswith(self, prefix: bytes) -> bool:
        """Whether the pending bytes start with ``prefix`` (reading one more
        chunk when fewer are pending, as the zlib code did)."""
        if len(self._buffer) - self._offset < len(prefix):
            self._buffer = self._buffer[self._offset :] + self._read(self._read_size)
            self._offset = 0
        return self._buffer.startswith(prefix, self._offset)

    def piece(self, limit: int) -> bytes | memoryview:
        """The next pending bytes, at most ``limit``, reading when none are
        pending; empty at the end of the source."""
        if not self.fill():
            return memoryview(b"")
        if self._offset == 0 and len(self._buffer) <= limit:
            # A whole read: handed over as it is, not kept here.
            whole, self._buffer = self._buffer, b""
            return whole
        stop = min(self._offset + limit, len(self._buffer))
        piece = memoryview(self._buffer)[self._offset : stop]
        self._offset = stop
        return piece

    def give_back(self, data: bytes) -> None:
        """Bytes the inflater took from :meth:`piece` and left after the end
        of the deflate data.

        They are the bytes just before the offset, unless the inflater held
        some from an earlier piece (from a buffer since replaced): then they
        are put in front of what is pending, a copy of at most one read.
        """
        start = self._offset - len(data)
        if start >= 0 and self._buffer.startswith(data, start):
            self._offset = start
        else:
            self._buffer, self._offset = bytes(data) + self._buffer[self._offset :], 0

    def take(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes (at most 65,535: a field's length), or a
        :class:`WrapperError` naming ``what`` was cut."""
        parts: list[bytes] = []
        missing = size
        while missing:
            if not self.fill():
                raise WrapperError(f"{what} is truncated")
            part = self._buffer[self._offset : self._offset + missing]
            self._offset += len(part)
            missing -= len(part)
            parts.append(part)
        return b"".join(parts)

    def skip_string(self, crc: int, what: str) -> int:
        """Skips a NUL-terminated field, returning ``crc`` updated with its bytes."""
        while True:
            if not self.fill():
                raise WrapperError(f"{what} is truncated")
            end = self._buffer.find(b"\0", self._offset)
            stop = len(self._buffer) if end < 0 else end + 1
            crc = isal_zlib.crc32(memoryview(self._buffer)[self._offset : stop], crc)
            self._offset = stop
            if end >= 0:
                return crc


def read_header(pending: PendingInput, member: int) -> None:
    """Consumes member ``member``'s header, refusing what zlib refuses."""
    where = f"gzip member {member} header"
    fixed = pending.take(10, where)
    if not fixed.startswith(_MAGIC):
        raise WrapperError(f"{where}: incorrect header check")
    if fixed[2] != _DEFLATE:
        raise WrapperError(f"{where}: unknown compression method {fixed[2]}")
    flags = fixed[3]
    if flags & _RESERVED:
        raise WrapperError(f"{where}: unknown header flags set ({flags:#04x})")
    crc = isal_zlib.crc32(fixed)
    if flags & _FEXTRA:
        length = pending.take(2, f"{where} FEXTRA")
        extra = pending.take(struct.unpack("<H", length)[0], f"{where} FEXTRA")
        crc = isal_zlib.crc32(extra, isal_zlib.crc32(length, crc))
    if flags & _FNAME:
        crc = pending.skip_string(crc, f"{where} FNAME")
    if flags & _FCOMMENT:
        crc = pending.skip_string(crc, f"{where} FCOMMENT")
    if flags & _FHCRC:
        (stated,) = struct.unpack("<H", pending.take(2, f"{where} FHCRC"))
        if stated != crc & 0xFFFF:
            raise WrapperError(f"{where}: header crc mismatch")


def check_trailer(pending: PendingInput, member: int, crc: int, size: int) -> None:
    """Consumes member ``member``'s trailer and compares it with its output."""
    trailer = pending.take(8, f"gzip member {member} trailer")
    stated_crc, stated_size = struct.unpack("<II", trailer)
    if stated_crc != crc:
        raise WrapperError(
            f"gzip member {member}: incorrect data check"
            f" (trailer says CRC-32 {stated_crc:08x}, the data has {crc:08x})"
        )
    if stated_size != size & 0xFFFFFFFF:
        raise WrapperError(
            f"gzip member {member}: incorrect length check"
            f" (trailer says {stated_size} bytes modulo 2**32, the data has {size})"
        )
