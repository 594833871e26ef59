"""A walk over the frame and block headers of a zstd stream (RFC 8878).

The decoder that inspects ``tar+zstd`` layers is python-zstandard's stream
reader: it bounds the output of every read, which a layer of unknown
expansion needs. But when its input ends inside a frame it returns quietly,
and it never says where a frame ended. :class:`ZstdFrameWalker` is shown the
same compressed bytes and reads only the headers, so that the inspection can
tell (THREATS L-06b/c):

- a stream cut short inside a frame, or data after the last frame that is
  not another frame (Go's zstd reader, which runtimes use, rejects both);
- a frame asking for a window larger than the limit, before the decoder
  allocates it;
- a block larger than ``Block_Maximum_Size``, or of the reserved type.

Content is never decoded here: a block's content is skipped by arithmetic.
"""

from __future__ import annotations

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Largest block content a frame may carry (``Block_Maximum_Size``).
MAX_BLOCK = 128 * 1024
_FCS_SIZES = (0, 2, 4, 8)
_DICT_ID_SIZES = (0, 1, 2, 4)


class ZstdFrameError(ValueError):
    """The stream is not a well-formed sequence of zstd frames.

    ``limit`` is true when the stream is well-formed but asks for more
    memory than allowed (a window above the limit).
    """

    def __init__(self, message: str, *, limit: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.limit = limit


def is_skippable_magic(head: bytes) -> bool:
    """True for the magic of a skippable frame (0x184D2A50 to 0x184D2A5F)."""
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


class ZstdFrameWalker:
    """Feed it compressed bytes in order; :meth:`finish` at the end of input."""

    def __init__(self, max_window: int) -> None:
        self._max_window = max_window
        self._state = "magic"
        self._need = 4
        self._buf = bytearray()
        self._skip = 0
        self._single_segment = False
        self._checksum = False
        self._header_size = 0
        self._block_max = MAX_BLOCK
        self.offset = 0
        #: Frames of content seen (skippable frames not counted).
        self.frames = 0

    def feed(self, data: bytes) -> None:
        """Walk over ``data``; raises :class:`ZstdFrameError` on the first problem."""
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._need - len(self._buf), end - pos)
            self._buf += view[pos : pos + take]
            pos += take
            if len(self._buf) == self._need:
                self._step(bytes(self._buf))
                self._buf.clear()
        self.offset += end

    def finish(self) -> None:
        """The input ended: it must end exactly after a frame."""
        if self._skip or self._buf or self._state != "magic":
            raise ZstdFrameError(f"zstd stream ends inside a frame after {self.offset} bytes")
        if self.frames == 0:
            raise ZstdFrameError("zstd stream has no frame")

    def _step(self, chunk: bytes) -> None:
        state = self._state
        if state == "magic":
            self._on_magic(chunk)
        elif state == "descriptor":
            self._on_descriptor(chunk[0])
        elif state == "header":
            self._on_header(chunk)
        elif state == "block":
            self._on_block(int.from_bytes(chunk, "little"))
        elif state == "checksum":
            self._frame_done()
        elif state == "skippable":
            self._skip = int.from_bytes(chunk, "little")
            self._expect("magic", 4)

    def _expect(self, state: str, need: int) -> None:
        self._state = state
        self._need = need

    def _on_magic(self, magic: bytes) -> None:
        if magic == ZSTD_MAGIC:
            self._expect("descriptor", 1)
        elif is_skippable_magic(magic):
            self._expect("skippable", 4)
        elif self.frames == 0:
            raise ZstdFrameError("not a zstd stream")
        else:
            raise ZstdFrameError(
                f"data after zstd frame {self.frames} is not a zstd frame (trailing garbage)"
            )

    def _on_descriptor(self, descriptor: int) -> None:
        if descriptor & 0x08:
            raise ZstdFrameError("zstd frame header sets the reserved bit")
        fcs_flag = descriptor >> 6
        self._single_segment = bool(descriptor & 0x20)
        self._checksum = bool(descriptor & 0x04)
        fcs_size = _FCS_SIZES[fcs_flag]
        if fcs_flag == 0 and self._single_segment:
            fcs_size = 1
        self._header_size = fcs_size
        window_size = 0 if self._single_segment else 1
        self._expect("header", window_size + _DICT_ID_SIZES[descriptor & 0x03] + fcs_size)

    def _on_header(self, header: bytes) -> None:
        if self._single_segment:
            fcs = header[len(header) - self._header_size :]
            window = int.from_bytes(fcs, "little") + (256 if len(fcs) == 2 else 0)
        else:
            exponent, mantissa = header[0] >> 3, header[0] & 0x07
            base = 1 << (10 + exponent)
            window = base + (base >> 3) * mantissa
        if window > self._max_window:
            raise ZstdFrameError(
                f"zstd frame window of {window} bytes exceeds the limit of {self._max_window}",
                limit=True,
            )
        self._block_max = min(window, MAX_BLOCK)
        self._expect("block", 3)

    def _on_block(self, header: int) -> None:
        last = header & 0x01
        block_type = (header >> 1) & 0x03
        size = header >> 3
        if block_type == 3:
            raise ZstdFrameError("zstd block of the reserved type")
        if size > self._block_max:
            raise ZstdFrameError(
                f"zstd block of {size} bytes exceeds Block_Maximum_Size {self._block_max}"
            )
        # An RLE block carries one byte, repeated ``size`` times when decoded.
        self._skip = 1 if block_type == 1 else size
        if not last:
            self._expect("block", 3)
        elif self._checksum:
            self._expect("checksum", 4)
        else:
            self._frame_done()

    def _frame_done(self) -> None:
        self.frames += 1
        self._expect("magic", 4)
