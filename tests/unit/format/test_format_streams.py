"""The streaming parts of layer inspection give the same answer whatever the
chunking: tar headers, PAX records and zstd frame headers split anywhere."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard

from pullguard.services.format import decompress
from pullguard.services.format.decompress import sniff
from pullguard.services.format.tarstream import TarEntry, TarError, TarReader
from pullguard.services.format.zstdframes import ZstdFrameError, ZstdFrameWalker
from pullguard.services.runtime.staging import StagingStore
from tests.unit.format.tarbuild import (
    TAR,
    TAR_GZIP,
    TAR_ZSTD,
    archive,
    directory,
    file,
    gnu_long,
    hardlink,
    inspect,
    pax,
    symlink,
)

LAYER = archive(
    directory("etc"),
    file("etc/passwd", b"root:x:0:0\n" * 70),
    pax({"path": "usr/share/" + "p" * 300, "SCHILY.xattr.user.note": "hello"}),
    file("short", b"d" * 1500),
    gnu_long("opt/" + "g" * 600),
    file("ignored", b""),
    symlink("bin", "usr/bin"),
    hardlink("etc/passwd-", "etc/passwd"),
    pax({"comment": "c" * 2000}, b"g"),
    file("last", b"z" * 513),
)


def read_entries(data: bytes, chunk: int) -> list[TarEntry]:
    entries: list[TarEntry] = []
    reader = TarReader(entries.append, max_entry_size=1 << 30)
    for start in range(0, len(data), chunk):
        reader.feed(data[start : start + chunk])
    reader.close()
    return entries


@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 4096])
def test_tar_reader_same_at_any_chunk_size(chunk: int) -> None:
    whole = read_entries(LAYER, len(LAYER))
    assert [e.name for e in whole] == [
        "etc",
        "etc/passwd",
        "usr/share/" + "p" * 300,
        "opt/" + "g" * 600,
        "bin",
        "etc/passwd-",
        "last",
    ]
    assert whole[2].xattrs == (("user.note", "hello"),)
    assert read_entries(LAYER, chunk) == whole


@pytest.mark.parametrize("cut", [1, 511, 700, len(LAYER) - 1024 - 1])
def test_tar_reader_close_finds_truncation(cut: int) -> None:
    with pytest.raises(TarError):
        read_entries(LAYER[:cut], 64)


def test_zstd_walker_byte_by_byte() -> None:
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    stream = compressor.compress(LAYER) + compressor.compress(b"second frame")
    walker = ZstdFrameWalker(1 << 27)
    for i in range(len(stream)):
        walker.feed(stream[i : i + 1])
    walker.finish()
    assert walker.frames == 2
    cut = ZstdFrameWalker(1 << 27)
    cut.feed(stream[:-1])
    with pytest.raises(ZstdFrameError):
        cut.finish()


def test_zstd_walker_refuses_reserved_bits() -> None:
    frame = bytearray(zstandard.ZstdCompressor().compress(b"x" * 100))
    frame[4] |= 0x08
    with pytest.raises(ZstdFrameError):
        ZstdFrameWalker(1 << 27).feed(bytes(frame))


@pytest.mark.parametrize("media_type", [TAR, TAR_GZIP, TAR_ZSTD])
def test_small_chunks_through_every_compression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media_type: str
) -> None:
    monkeypatch.setattr(decompress, "CHUNK", 100)
    store = StagingStore(tmp_path / "staging")
    blob = None
    if media_type == TAR_GZIP:
        blob = gzip.compress(LAYER[:3000]) + gzip.compress(LAYER[3000:])
    findings, stats = inspect(store, LAYER, media_type, blob=blob)
    assert findings == [] and stats.completed
    assert stats.uncompressed_bytes == len(LAYER) and stats.entries == 8


@pytest.mark.parametrize(
    ("head", "found"),
    [
        (b"\x1f\x8b\x08\0", "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x5e\x2a\x4d\x18", "zstd"),
        (b"BZh9", "bzip2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"etc/\0\0", "none"),
        (b"", "none"),
    ],
)
def test_sniff(head: bytes, found: str) -> None:
    assert sniff(head) == found
