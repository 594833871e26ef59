"""gzip layers where ISA-L could differ from zlib (THREATS L-06, L-07).

format inflates gzip with ISA-L and reads each member's header and trailer
itself (gzipwrapper). These cases are where two inflaters most often part:
the trailer, the optional header fields, read sizes that cut a header or a
trailer, stored blocks, empty members and bombs. Each stream is also read
with small chunk sizes, so a field split across reads is tried.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import pytest

from pullguard.services.format import decompress
from pullguard.services.format.decompress import (
    CHUNK,
    CompressedSource,
    CompressionError,
    uncompressed_chunks,
)

PAYLOAD = b"".join(b"line %d of a layer\n" % n for n in range(4000))
SPLITS = [1, 3, 7, 4096, CHUNK]


def member(
    payload: bytes,
    *,
    flags: int = 0,
    extra: bytes = b"",
    name: bytes = b"",
    comment: bytes = b"",
    header_crc: int | None = None,
    method: int = 8,
    level: int = 6,
    crc: int | None = None,
    size: int | None = None,
) -> bytes:
    """One gzip member built field by field (RFC 1952), so every field can be wrong."""
    header = b"\x1f\x8b" + bytes([method, flags]) + bytes(4) + b"\x00\x03"
    if flags & 0x04:
        header += struct.pack("<H", len(extra)) + extra
    if flags & 0x08:
        header += name + b"\0"
    if flags & 0x10:
        header += comment + b"\0"
    if flags & 0x02:
        stated = zlib.crc32(header) & 0xFFFF if header_crc is None else header_crc
        header += struct.pack("<H", stated)
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = deflater.compress(payload) + deflater.flush()
    trailer = struct.pack(
        "<II",
        zlib.crc32(payload) if crc is None else crc,
        len(payload) if size is None else size,
    )
    return header + body + trailer


def gunzip(blob: bytes) -> bytes:
    chunks = list(uncompressed_chunks(CompressedSource(io.BytesIO(blob)), "gzip"))
    assert all(0 < len(chunk) <= decompress.CHUNK for chunk in chunks)
    return b"".join(chunks)


@pytest.fixture(params=SPLITS, ids=[f"read{size}" for size in SPLITS])
def read_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Every test reads its stream in pieces of this size: fields fall across reads."""
    monkeypatch.setattr(decompress, "CHUNK", request.param)
    yield request.param


def refused(blob: bytes, words: str) -> None:
    with pytest.raises(CompressionError) as caught:
        gunzip(blob)
    assert caught.value.code == "format.invalid_compression"
    assert words in caught.value.message


def test_good_member_reads_whole(read_size: int) -> None:
    assert gunzip(member(PAYLOAD)) == PAYLOAD


def test_corrupted_crc32_trailer(read_size: int) -> None:
    good = zlib.crc32(PAYLOAD)
    refused(member(PAYLOAD, crc=good ^ 0x1), "incorrect data check")
    refused(member(PAYLOAD, crc=good ^ 0x80000000), "incorrect data check")


def test_wrong_isize_trailer(read_size: int) -> None:
    refused(member(PAYLOAD, size=len(PAYLOAD) + 1), "incorrect length check")
    # ISIZE is the length modulo 2**32: a length 2**32 larger is still wrong here.
    refused(member(PAYLOAD, size=0), "incorrect length check")


@pytest.mark.parametrize("missing", range(1, 9))
def test_member_cut_inside_its_trailer(read_size: int, missing: int) -> None:
    blob = member(PAYLOAD)
    refused(blob[:-missing], "truncated")
    # The same cut in the first of two members: what follows is not a trailer.
    with pytest.raises(CompressionError):
        gunzip(blob[:-missing] + member(b"next"))


@pytest.mark.parametrize("kept", [11, 40, 500])
def test_member_cut_inside_its_deflate_data(read_size: int, kept: int) -> None:
    refused(member(PAYLOAD)[:kept], "truncated")


def test_invalid_deflate_block(read_size: int) -> None:
    blob = bytearray(member(PAYLOAD))
    blob[10] |= 0x07  # final block of type 3, which does not exist
    refused(bytes(blob), "gzip member 1: ")


HEADERS = {
    "fextra": {"flags": 0x04, "extra": b"AB\x04\x00\x00\x1f\x8b\x00"},
    "fname": {"flags": 0x08, "name": b"layer.tar"},
    "fcomment": {"flags": 0x10, "comment": b"built by a tool"},
    "fhcrc": {"flags": 0x02},
    "ftext": {"flags": 0x01},
    "all": {
        "flags": 0x1F,
        "extra": b"\x1f\x8b" * 300,
        "name": b"n" * 5000,
        "comment": b"c" * 3000,
    },
}


@pytest.mark.parametrize("fields", HEADERS.values(), ids=HEADERS.keys())
def test_header_fields_are_skipped(read_size: int, fields: dict[str, object]) -> None:
    blob = member(PAYLOAD, **fields)  # type: ignore[arg-type]
    assert gunzip(blob) == PAYLOAD
    # And as the second member, after a member that ends anywhere in a read.
    assert gunzip(member(b"first") + blob) == b"first" + PAYLOAD


def test_header_crc_mismatch(read_size: int) -> None:
    refused(member(PAYLOAD, flags=0x02, header_crc=0x1234), "header crc mismatch")
    refused(
        member(PAYLOAD, flags=0x1E, name=b"n", comment=b"c", extra=b"e", header_crc=0),
        "header crc mismatch",
    )


@pytest.mark.parametrize("flag", [0x20, 0x40, 0x80])
def test_reserved_header_flags(read_size: int, flag: int) -> None:
    # zlib refuses them, so pullguard did before ISA-L; ISA-L alone would accept.
    refused(member(PAYLOAD, flags=flag), "unknown header flags")
    refused(member(b"x") + member(PAYLOAD, flags=flag), "unknown header flags")


def test_method_other_than_deflate() -> None:
    refused(member(PAYLOAD, method=7), "unknown compression method")


@pytest.mark.parametrize("cut", [3, 9, 11, 14])
def test_header_cut(read_size: int, cut: int) -> None:
    blob = member(PAYLOAD, flags=0x0C, extra=b"xy", name=b"name")
    refused(blob[:cut], "truncated")


@pytest.mark.parametrize("read", [16, 64, 4096])
def test_deflate_data_ending_on_a_read_boundary(monkeypatch: pytest.MonkeyPatch, read: int) -> None:
    # The inflater may hold a full chunk of output when its input runs out
    # exactly at the end of a read: that output is taken before reading on.
    monkeypatch.setattr(decompress, "CHUNK", read)
    payload = bytes(97 * read)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflater.compress(payload) + deflater.flush()
    for extra in range(read, 3 * read):
        if (10 + 2 + extra + len(body)) % read == 0:
            break
    blob = member(payload, flags=0x04, extra=b"e" * extra, level=9)
    assert (len(blob) - 8) % read == 0
    assert gunzip(blob) == payload


def test_stored_blocks(read_size: int) -> None:
    # Level 0: stored blocks of at most 65,535 bytes, LEN and NLEN checked.
    payload = PAYLOAD * 3
    blob = member(payload, level=0)
    assert gunzip(blob) == payload
    # NLEN no longer the complement of LEN (first stored block header, after 10 bytes).
    broken = bytearray(blob)
    broken[10 + 3] ^= 0xFF
    with pytest.raises(CompressionError):
        gunzip(bytes(broken))


def test_empty_member_then_a_real_one(read_size: int) -> None:
    assert gunzip(member(b"") + member(PAYLOAD)) == PAYLOAD
    assert gunzip(member(b"") + member(b"") + member(PAYLOAD) + member(b"")) == PAYLOAD
    refused(member(b"") + b"\0\0", "trailing garbage")


def test_thousands_of_members_in_one_read() -> None:
    # Each member ends inside a read; what follows it is given back and read on.
    members = [member(b"%d\n" % n) for n in range(5000)]
    assert gunzip(b"".join(members)) == b"".join(b"%d\n" % n for n in range(5000))
    refused(b"".join(members) + b"x", "trailing garbage")


def test_bomb_stops_after_one_chunk_too_many() -> None:
    # 512 MiB of zeros in about 500 KiB: a ratio of about a thousand.
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(CHUNK)
    bomb = b"".join(deflater.compress(zeros) for _ in range(512)) + deflater.flush()
    source = CompressedSource(io.BytesIO(bomb))
    cap = 4 * CHUNK + 5
    total = 0
    for chunk in uncompressed_chunks(source, "gzip"):
        assert len(chunk) <= CHUNK
        total += len(chunk)
        if total > cap:
            break
    assert cap < total <= cap + CHUNK
    # Only the compressed bytes for those chunks were read, not the whole bomb.
    assert source.size <= 2 * CHUNK
