"""Layer blobs as bounded streams of uncompressed chunks (THREATS L-06, L-07).

A layer is never decompressed in one piece: :func:`uncompressed_chunks` yields
chunks of at most :data:`CHUNK` bytes, so the caller can stop at its limits
after at most one chunk too many, whatever the compressed data claims.

The compression is read from the content's magic bytes (:func:`sniff`), as
containerd does when it applies a layer; the caller compares it with what
the media type says. Streams are read the way Go's readers (used by the
runtimes) read them:

- gzip: every member, one after the other (Go's multistream default), and
  nothing after the last member: trailing garbage, even zeros, is an error.
  Each member's header, CRC-32 and length are checked by
  :mod:`~pullguard.services.format.gzipwrapper`, exactly as zlib checked
  them; the deflate data is inflated by ISA-L (python-isal), which does the
  same work in less than half zlib's CPU time on real, compressible layers.
  There is no fallback to zlib: isal is a required dependency.
- zstd: every frame, skippable frames skipped, no data after the last frame,
  a window of at most :data:`MAX_ZSTD_WINDOW` (checked by
  :class:`~pullguard.services.format.zstdframes.ZstdFrameWalker` before the
  decoder allocates it, and by the decoder itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

import zstandard
from isal import isal_zlib

from pullguard.services.format.gzipwrapper import (
    PendingInput,
    WrapperError,
    check_trailer,
    read_header,
)
from pullguard.services.format.zstdframes import (
    ZSTD_MAGIC,
    ZstdFrameError,
    ZstdFrameWalker,
    is_skippable_magic,
)

#: Bytes read or produced per step; also the most one step can overshoot a limit.
CHUNK = 1024 * 1024
#: Largest zstd window accepted (zstd's own default limit for decoders is 128 MiB).
MAX_ZSTD_WINDOW = 128 * 1024 * 1024
#: Bytes needed to tell compressions apart.
SNIFF_BYTES = 6

_GZIP_MAGIC = b"\x1f\x8b"
# Raw deflate, window of 2**15: the gzip wrapper is read by gzipwrapper.
_RAW_DEFLATE_WBITS = -15
# Compressed bytes given to ISA-L in its first call on a member, doubled on
# each further call up to CHUNK. At the end of a member ISA-L copies what it
# was given and did not use (unused_data): a read full of tiny members would
# otherwise cost a copy of the rest of the read per member (quadratic); this
# way the copy is at most about twice what the member itself took.
_FIRST_PIECE = 1024
# ISA-L's inflate error; isal's stub types it as an instance, not a class.
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)


class CompressionError(Exception):
    """The compressed stream cannot be read as its compression requires.

    ``code`` is the finding code: ``format.invalid_compression``, or
    ``format.decompression_limit`` when the stream asks for more than allowed.
    """

    def __init__(self, message: str, code: str = "format.invalid_compression") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def sniff(head: bytes) -> str:
    """The compression the first bytes of a blob show: gzip, zstd, bzip2, xz,
    lz4, or ``none`` (anything else, such as a plain tar)."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or is_skippable_magic(head):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    return "none"


class CompressedSource:
    """The staged blob as read: counted, and shown to an observer.

    python-zstandard pulls from it with ``read``; the gzip and plain paths
    call ``read`` themselves, so every byte passes through one place. The
    compressed bytes are not hashed here: that is hashverify's check, made
    before the gateway asks for an inspection (see :mod:`layers`).
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.size = 0
        self.observer: Callable[[bytes], None] | None = None

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > CHUNK:
            size = CHUNK
        data = self._handle.read(size)
        if data:
            self.size += len(data)
            if self.observer is not None:
                self.observer(data)
        return data


def uncompressed_chunks(source: CompressedSource, compression: str) -> Iterator[bytes]:
    """The uncompressed stream of ``source`` in chunks of at most :data:`CHUNK`.

    Raises :class:`CompressionError` for a stream that is corrupt, truncated,
    followed by garbage, or of a compression pullguard does not read.
    """
    if compression == "none":
        while data := source.read(CHUNK):
            yield data
    elif compression == "gzip":
        yield from _gunzip(source)
    elif compression == "zstd":
        yield from _unzstd(source)
    else:
        raise CompressionError(f"{compression} compression is not supported in layers")


def _gunzip(source: CompressedSource) -> Iterator[bytes]:
    pending = PendingInput(source.read, CHUNK)
    members = 0
    try:
        while pending.fill():
            if members and not pending.startswith(_GZIP_MAGIC):
                raise CompressionError(
                    f"data after gzip member {members} is not a gzip member (trailing garbage)"
                )
            members += 1
            read_header(pending, members)
            yield from _inflate_member(pending, members)
    except WrapperError as exc:
        raise CompressionError(str(exc)) from None
    if members == 0:
        raise CompressionError("gzip stream is empty")


def _inflate_member(pending: PendingInput, member: int) -> Iterator[bytes]:
    """The output of one member's deflate data, then its trailer checked.

    The chunk that ends the member is yielded only after its trailer matched,
    as zlib did when the trailer arrived with the end of the data.
    """
    decompressor = isal_zlib.decompressobj(_RAW_DEFLATE_WBITS)
    piece_size = _FIRST_PIECE
    data: bytes | memoryview = pending.piece(piece_size)
    crc = size = 0
    while True:
        try:
            out = decompressor.decompress(data, CHUNK)
        except _ISAL_ERROR as exc:
            raise CompressionError(f"gzip member {member}: {exc}") from None
        crc = isal_zlib.crc32(out, crc)
        size += len(out)
        if decompressor.eof:
            pending.give_back(decompressor.unused_data)
            check_trailer(pending, member, crc, size)
            if out:
                yield out
            return
        if out:
            yield out
        data = decompressor.unconsumed_tail
        # A full chunk may leave output pending inside the inflater with no input left.
        if len(out) == CHUNK or data:
            continue
        piece_size = min(piece_size * 2, CHUNK)
        data = pending.piece(piece_size)
        if not data:
            raise CompressionError(f"gzip member {member} is truncated")


def _unzstd(source: CompressedSource) -> Iterator[bytes]:
    walker = ZstdFrameWalker(MAX_ZSTD_WINDOW)
    source.observer = walker.feed
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    try:
        # Any object with read() will do; the stub asks for a file.
        with decompressor.stream_reader(
            cast(BinaryIO, source), read_size=CHUNK, read_across_frames=True, closefd=False
        ) as reader:
            while chunk := reader.read(CHUNK):
                yield chunk
        # The walker must see every byte, also any the decoder left unread.
        while source.read(CHUNK):
            pass
        walker.finish()
    except ZstdFrameError as exc:
        code = "format.decompression_limit" if exc.limit else "format.invalid_compression"
        raise CompressionError(exc.message, code) from None
    except zstandard.ZstdError as exc:
        raise CompressionError(f"zstd: {exc}") from None
