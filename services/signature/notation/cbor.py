"""The part of CBOR (RFC 8949) a COSE_Sign1 envelope needs, decoded with bounds.

Definite lengths only, integers, byte and text strings, arrays, maps, tags
and the simple values false, true and null. Floats, indefinite lengths,
duplicate map keys and trailing bytes are refused: a Notary Project
envelope needs none of them, and each is a way for two readers to see two
documents. Depth and item counts are bounded, and every length is checked
against the bytes that are left before anything is allocated.

``encode`` writes the same subset (deterministically: shortest heads); the
verifier needs it for the COSE ``Sig_structure``, the tests for envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 8
MAX_ITEMS = 4096


class CborError(ValueError):
    """Bytes that are not the accepted subset of CBOR; says what and where."""


@dataclass(frozen=True)
class Tag:
    number: int
    value: Any


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.items = 0

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.at:
            raise CborError(
                f"at byte {self.at}: {count} bytes announced, {len(self.data) - self.at} left"
            )
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def head(self) -> tuple[int, int]:
        start = self.at
        (initial,) = self.take(1)
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        if info in (24, 25, 26, 27):
            return major, int.from_bytes(self.take(1 << (info - 24)), "big")
        raise CborError(f"at byte {start}: indefinite or reserved length (info {info})")

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CborError(f"at byte {self.at}: nested deeper than {MAX_DEPTH}")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise CborError(f"more than {MAX_ITEMS} items")
        start = self.at
        major, value = self.head()
        if major == 0:
            return value
        if major == 1:
            return -1 - value
        if major == 2:
            return self.take(value)
        if major == 3:
            try:
                return self.take(value).decode("utf-8")
            except UnicodeDecodeError:
                raise CborError(f"at byte {start}: text string is not UTF-8") from None
        if major == 4:
            self._room(value, start)
            return [self.item(depth + 1) for _ in range(value)]
        if major == 5:
            self._room(2 * value, start)
            out: dict[Any, Any] = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, int | str):
                    raise CborError(f"at byte {start}: map key is not an integer or text")
                if key in out:
                    raise CborError(f"at byte {start}: map key {key!r} given twice")
                out[key] = self.item(depth + 1)
            return out
        if major == 6:
            return Tag(value, self.item(depth + 1))
        simple = {20: False, 21: True, 22: None}
        if value in simple and self.data[start] & 0x1F == value:
            return simple[value]
        raise CborError(f"at byte {start}: floats and other simple values are not accepted")

    def _room(self, count: int, start: int) -> None:
        # Every item takes at least one byte: a count beyond the bytes left is a lie.
        if count > len(self.data) - self.at:
            raise CborError(
                f"at byte {start}: {count} items announced, {len(self.data) - self.at} bytes left"
            )


def decode(data: bytes) -> Any:
    """The one CBOR item ``data`` holds; CborError otherwise."""
    reader = _Reader(data)
    value = reader.item(0)
    if reader.at != len(data):
        raise CborError(f"{len(data) - reader.at} bytes after the item")
    return value


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise CborError(f"integer {value} does not fit in 64 bits")


def encode(value: Any) -> bytes:
    """``value`` (int, bytes, str, list, dict, Tag, bool, None) as CBOR."""
    if value is False or value is True or value is None:
        return bytes([{False: 0xF4, True: 0xF5, None: 0xF6}[value]])
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(value, list | tuple):
        return _head(4, len(value)) + b"".join(encode(item) for item in value)
    if isinstance(value, dict):
        body = b"".join(encode(k) + encode(v) for k, v in value.items())
        return _head(5, len(value)) + body
    if isinstance(value, Tag):
        return _head(6, value.number) + encode(value.value)
    raise CborError(f"cannot encode {type(value).__name__}")
