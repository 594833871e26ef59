"""Numeric and string fields of a tar header, parsed as Go's archive/tar does.

A number is octal (spaces and NULs trimmed, cut at the first NUL left) or
base-256 (two's complement, big-endian); one Go refuses raises
:class:`FieldError`, which the reader turns into ``format.malformed_tar``.
"""

from __future__ import annotations

_OCTAL_DIGITS = b"01234567"


def cstr(field: bytes) -> bytes:
    """``field`` up to its first NUL byte."""
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


class FieldError(ValueError):
    """A numeric header field that Go's parser refuses."""


def octal(field: bytes) -> int:
    """An octal number field."""
    # Go trims spaces and NULs, cuts at the first NUL left, then wants octal digits.
    trimmed = field.strip(b" \0")
    if not trimmed:
        return 0
    if trimmed.translate(None, _OCTAL_DIGITS):
        trimmed = cstr(trimmed)
        if trimmed.translate(None, _OCTAL_DIGITS):
            raise FieldError("a numeric field is not octal")
    return int(trimmed, 8)


def numeric(field: bytes) -> int:
    """An octal or base-256 number field."""
    if not field[0] & 0x80:
        return octal(field)
    # Base-256: two's complement, big-endian, sign in the second-highest bit.
    value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    if field[0] & 0x40:
        value -= 1 << (len(field) * 8 - 1)
    if not -(2**63) <= value < 2**63:
        raise FieldError("a base-256 field overflows 64 bits")
    return value
