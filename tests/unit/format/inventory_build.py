"""Layers and databases for the inventory tests, written the way real tools
write them: tar layers with Python's tarfile, rpmdb.sqlite with rpm's schema
and header layout, Go binaries with ``go build``."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "inventory"

Member = tuple[tarfile.TarInfo, bytes]


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def link(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def whiteout(path: str) -> Member:
    """``dir/NAME`` -> the empty ``dir/.wh.NAME``; ``dir/`` -> opaque ``dir``."""
    if path.endswith("/"):
        return reg(path + ".wh..wh..opq")
    parent, _, base = path.rpartition("/")
    return reg(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def layer(*members: Member) -> bytes:
    """A tar layer (PAX format, as Docker and buildah write) with parents implied."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


# ------------------------------------------------------------------ rpm

RPM_NAME, RPM_VERSION, RPM_RELEASE, RPM_EPOCH, RPM_ARCH, RPM_SOURCERPM = (
    1000,
    1001,
    1002,
    1003,
    1022,
    1044,
)
_IMMUTABLE = 63
_INT32, _STRING, _BIN = 4, 6, 7


def rpm_header(tags: dict[int, str | int]) -> bytes:
    """A header blob as rpm stores it in rpmdb.sqlite (headerExport: il, dl,
    index entries, data), with the HEADER_IMMUTABLE region tag first as rpm
    writes it. Integers are aligned to 4 as rpm aligns them."""
    entries: list[tuple[int, int, int, int]] = []
    data = bytearray()
    for tag, value in sorted(tags.items()):
        if isinstance(value, int):
            data += bytes(-len(data) % 4)
            entries.append((tag, _INT32, len(data), 1))
            data += struct.pack(">i", value)
        else:
            entries.append((tag, _STRING, len(data), 1))
            data += value.encode() + b"\0"
    # The region trailer: a negative offset into the index, as rpm writes it.
    region = len(data)
    data += struct.pack(">iIiI", _IMMUTABLE, _BIN, -16 * (len(entries) + 1), 16)
    entries.insert(0, (_IMMUTABLE, _BIN, region, 16))
    index = b"".join(struct.pack(">iIiI", *entry) for entry in entries)
    return struct.pack(">II", len(entries), len(data)) + index + bytes(data)


def rpm_package(
    name: str, version: str, release: str, arch: str = "x86_64", epoch: int | None = None
) -> bytes:
    tags: dict[int, str | int] = {
        RPM_NAME: name,
        RPM_VERSION: version,
        RPM_RELEASE: release,
        RPM_ARCH: arch,
        RPM_SOURCERPM: f"{name}-{version}-{release}.src.rpm",
    }
    if epoch is not None:
        tags[RPM_EPOCH] = epoch
    return rpm_header(tags)


def rpmdb_sqlite(directory: Path, blobs: list[bytes]) -> bytes:
    """An rpmdb.sqlite with rpm's own schema (lib/backend/sqlite.c)."""
    path = directory / "rpmdb.sqlite"
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE IF NOT EXISTS 'Packages' ("
        "hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"
    )
    connection.execute(
        "CREATE TABLE IF NOT EXISTS 'Name' (key TEXT NOT NULL, hnum INTEGER NOT NULL,"
        " idx INTEGER NOT NULL, FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum))"
    )
    connection.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
    connection.commit()
    connection.close()
    return path.read_bytes()


# ------------------------------------------------------------------ go

GO_MAIN = """package main

import (
	"fmt"

	"example.com/greeting"
)

func main() { fmt.Println(greeting.Hello()) }
"""
GO_MOD = """module example.com/hello

go 1.18

require example.com/greeting v1.4.2

replace example.com/greeting v1.4.2 => ./greeting
"""


def go_binary(directory: Path) -> bytes:
    """A real Go binary of module example.com/hello v(devel), depending on
    example.com/greeting v1.4.2 (replaced by a local copy: no network)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (Debian package golang-go)")
    source = directory / "hello"
    (source / "greeting").mkdir(parents=True)
    (source / "main.go").write_text(GO_MAIN)
    (source / "go.mod").write_text(GO_MOD)
    (source / "greeting" / "go.mod").write_text("module example.com/greeting\n\ngo 1.18\n")
    (source / "greeting" / "greeting.go").write_text(
        'package greeting\n\nfunc Hello() string { return "hello" }\n'
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(directory),
        "GOCACHE": str(directory / "cache"),
        "GOPATH": str(directory / "gopath"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    subprocess.run(
        [go, "build", "-buildvcs=false", "-trimpath", "-o", str(directory / "hello-bin"), "."],
        cwd=source,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )
    return (directory / "hello-bin").read_bytes()
