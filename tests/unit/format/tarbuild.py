"""Byte-exact tar layers for the layer-inspection tests (THREATS section F).

Python's tarfile refuses to write most hostile headers, so the blocks are
built here field by field: every field can be given raw, and the checksum is
right unless a test says otherwise. Layers are small, built in memory, and
staged through the real StagingStore.
"""

from __future__ import annotations

import gzip
import hashlib
import threading

import zstandard

from pullguard.services.format.descriptors import Descriptor
from pullguard.services.format.layers import LayerStats, inspect_layer
from pullguard.services.runtime.config import LayerRule
from pullguard.services.runtime.findings import Finding, Severity
from pullguard.services.runtime.staging import StagingStore

BLOCK = 512
END = bytes(2 * BLOCK)
TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COMPRESSION = {
    TAR: "none",
    TAR_GZIP: "gzip",
    TAR_ZSTD: "zstd",
    DOCKER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
}
SESSION = "layers-1"


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def base256(value: int, width: int) -> bytes:
    """Go/GNU base-256: two's complement with the top bit set."""
    raw = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def header(
    name: str | bytes,
    *,
    typeflag: str | bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    linkname: str | bytes = b"",
    magic: bytes = b"ustar\0",
    version: bytes = b"00",
    prefix: bytes = b"",
    fields: dict[str, bytes] | None = None,
    checksum: int | None = None,
) -> bytes:
    """One 512-byte header; ``fields`` replaces named fields with raw bytes."""
    block = bytearray(BLOCK)
    raw = {
        "name": _bytes(name),
        "mode": octal(mode, 8),
        "uid": octal(uid, 8),
        "gid": octal(gid, 8),
        "size": octal(size, 12),
        "mtime": octal(mtime, 12),
        "typeflag": _bytes(typeflag),
        "linkname": _bytes(linkname),
        "magic": magic,
        "version": version,
        "devmajor": octal(0, 8),
        "devminor": octal(0, 8),
        "prefix": prefix,
    }
    raw.update(fields or {})
    spans = {
        "name": (0, 100),
        "mode": (100, 108),
        "uid": (108, 116),
        "gid": (116, 124),
        "size": (124, 136),
        "mtime": (136, 148),
        "typeflag": (156, 157),
        "linkname": (157, 257),
        "magic": (257, 263),
        "version": (263, 265),
        "devmajor": (329, 337),
        "devminor": (337, 345),
        "prefix": (345, 500),
    }
    for key, value in raw.items():
        start, end = spans[key]
        block[start : start + len(value[: end - start])] = value[: end - start]
    block[148:156] = b" " * 8
    total = sum(block) if checksum is None else checksum
    block[148:156] = b"%06o\0 " % total
    return bytes(block)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def file(name: str | bytes, data: bytes = b"", **kwargs: object) -> bytes:
    """A regular file entry with its data."""
    return header(name, size=len(data), **kwargs) + pad(data)  # type: ignore[arg-type]


def directory(name: str, mode: int = 0o755, **kwargs: object) -> bytes:
    return header(name, typeflag=b"5", mode=mode, **kwargs)  # type: ignore[arg-type]


def symlink(name: str, target: str) -> bytes:
    return header(name, typeflag=b"2", linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> bytes:
    return header(name, typeflag=b"1", linkname=target)


def pax_record(key: str | bytes, value: str | bytes) -> bytes:
    body = b" " + _bytes(key) + b"=" + _bytes(value) + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: dict[str, str | bytes] | bytes, typeflag: bytes = b"x") -> bytes:
    """A PAX extended header (``x``) or global header (``g``)."""
    data = (
        records
        if isinstance(records, bytes)
        else b"".join(pax_record(k, v) for k, v in records.items())
    )
    return header(b"PaxHeader", typeflag=typeflag, size=len(data)) + pad(data)


def gnu_long(value: str | bytes, typeflag: bytes = b"L") -> bytes:
    """A GNU long name (``L``) or long link (``K``) header, NUL-terminated."""
    data = _bytes(value) + b"\0"
    gnu = header(
        b"././@LongLink", typeflag=typeflag, size=len(data), magic=b"ustar ", version=b" \0"
    )
    return gnu + pad(data)


def archive(*parts: bytes, end: bool = True) -> bytes:
    return b"".join(parts) + (END if end else b"")


def compress(tar: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(tar, 1)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(tar)
    return tar


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage_blob(store: StagingStore, blob: bytes, key: str | None = None) -> str:
    key = key or digest(blob)
    with store.writer(SESSION) as writer:
        writer.write(blob)
        writer.commit(key)
    return key


def stage_layer(
    store: StagingStore, tar: bytes, media_type: str = TAR_GZIP, blob: bytes | None = None
) -> tuple[Descriptor, str]:
    """Stage ``tar`` compressed as ``media_type`` says (or ``blob`` as given);
    returns its descriptor and the diff_id of ``tar``."""
    if blob is None:
        blob = compress(tar, COMPRESSION[media_type])
    key = stage_blob(store, blob)
    return Descriptor(media_type, key, len(blob)), digest(tar)


def inspect(
    store: StagingStore,
    tar: bytes,
    media_type: str = TAR_GZIP,
    *,
    rule: LayerRule | None = None,
    blob: bytes | None = None,
    diff_id: str | None = None,
) -> tuple[list[Finding], LayerStats]:
    """Stage one layer and inspect it; the diff_id is the true one unless given."""
    descriptor, true_diff_id = stage_layer(store, tar, media_type, blob)
    return inspect_layer(
        store,
        SESSION,
        0,
        descriptor,
        diff_id or true_diff_id,
        rule or LayerRule(),
        threading.Event(),
    )


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def errors(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings if f.severity is Severity.ERROR}
