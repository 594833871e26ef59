"""Real package databases made by the distributions' own tools, for the
vulnerability tests of every ecosystem (issue 13).

- rpm: tiny noarch packages built by Debian's ``rpmbuild`` from a spec with
  subpackages (so a binary rpm names its source rpm, as in RHEL), installed
  with ``rpm --justdb`` into an sqlite rpmdb, as ``dnf`` leaves one in an image.
- Go: a program built by ``go build`` against a local ``file://`` module
  proxy, so its build info lists the dependency as a real ``dep`` line
  (module path, version, go.sum hash), not a local replacement.
- apk: ``lib/apk/db/installed`` in apk-tools' layout (no apk on Debian).

Nothing here is skipped when a tool is missing: rpm and golang-go are in
scripts/install-system-deps.sh, and a test that needs them fails without them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: Spent by one tool run at most (the machine may be loaded).
TOOL_TIMEOUT = 300


def _run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"{args[0]} failed: {result.stderr[-2000:]}"


# ------------------------------------------------------------------ rpm


@dataclass(frozen=True)
class SourceRpm:
    """One spec: the source package ``name`` and the binary subpackages it builds."""

    name: str
    version: str
    release: str
    subpackages: tuple[str, ...]  # "" is the main package, "libs" is <name>-libs
    epoch: int | None = None

    def spec(self) -> str:
        lines = [
            f"Name: {self.name}",
            f"Version: {self.version}",
            f"Release: {self.release}",
            *([f"Epoch: {self.epoch}"] if self.epoch is not None else []),
            "Summary: pullguard test package",
            "License: MIT",
            "BuildArch: noarch",
            "%description",
            "A package with no files, for its rpmdb entry.",
        ]
        for sub in self.subpackages:
            if sub:
                lines += [f"%package {sub}", f"Summary: {sub}", f"%description {sub}", sub]
        for sub in self.subpackages:
            lines.append(f"%files {sub}" if sub else "%files")
        return "\n".join(lines) + "\n"


def rpmdb_sqlite(work: Path, sources: list[SourceRpm]) -> bytes:
    """The ``rpmdb.sqlite`` of the built packages, installed by rpm itself."""
    for tool in ("rpmbuild", "rpm"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/install-system-deps.sh"
    top, dbpath = work / "rpmbuild", work / "db"
    dbpath.mkdir(parents=True)
    packages: list[str] = []
    for source in sources:
        spec = work / f"{source.name}.spec"
        spec.write_text(source.spec())
        _run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(spec)])
    packages = sorted(str(p) for p in (top / "RPMS" / "noarch").glob("*.rpm"))
    assert packages, "rpmbuild wrote no package"
    _run(
        ["rpm", "--dbpath", str(dbpath), "--define", "_db_backend sqlite"]
        + ["--nodeps", "--justdb", "-i", *packages]
    )
    database = dbpath / "rpmdb.sqlite"
    # rpm keeps the database in WAL mode; fold the log in, as rpm does on close.
    connection = sqlite3.connect(database)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    data = database.read_bytes()
    assert data.startswith(b"SQLite format 3\0"), "rpm did not write an sqlite rpmdb"
    return data


# ------------------------------------------------------------------ Go

GO_MAIN = """package main

import "golang.org/x/net/http2"

func main() { println(http2.Name()) }
"""


def _module_zip(module: str, version: str, files: dict[str, str]) -> bytes:
    """A module zip as the module proxy protocol serves it (``path@version/`` prefix)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in sorted(files.items()):
            archive.writestr(f"{module}@{version}/{name}", text)
    return buffer.getvalue()


def go_module_proxy(root: Path, module: str, versions: list[str]) -> Path:
    """A file:// GOPROXY holding ``module`` at ``versions``, each with one
    package ``http2`` (a stand-in: only the module path and version matter)."""
    base = root / module / "@v"
    base.mkdir(parents=True)
    go_mod = f"module {module}\n\ngo 1.17\n"
    for version in versions:
        (base / f"{version}.info").write_text(
            json.dumps({"Version": version, "Time": "2023-10-01T00:00:00Z"})
        )
        (base / f"{version}.mod").write_text(go_mod)
        source = 'package http2\n\nfunc Name() string { return "http2" }\n'
        (base / f"{version}.zip").write_bytes(
            _module_zip(module, version, {"go.mod": go_mod, "http2/http2.go": source})
        )
    (base / "list").write_text("".join(f"{v}\n" for v in versions))
    return root


def go_binary(work: Path, proxy: Path, module: str, version: str) -> bytes:
    """A stripped program built by ``go build`` that depends on ``module@version``."""
    go = shutil.which("go") or next(iter(sorted(Path("/usr/lib").glob("go-1.*/bin/go"))), None)
    assert go, "go is missing: run scripts/install-system-deps.sh (golang-go)"
    source = work / f"relay-{version}"
    source.mkdir(parents=True)
    (source / "main.go").write_text(GO_MAIN)
    (source / "go.mod").write_text(
        f"module example.com/relay\n\ngo 1.19\n\nrequire {module} {version}\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(work),
        # The toolchain's own cache keeps repeated runs fast; it holds no module.
        "GOCACHE": os.environ.get("GOCACHE") or str(Path.home() / ".cache" / "go-build"),
        "GOMODCACHE": str(work / "modcache"),
        "GOPATH": str(work / "gopath"),
        "GOPROXY": proxy.as_uri(),
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    output = work / f"relay-{version}.bin"
    _run(
        [str(go), "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", str(output)],
        cwd=source,
        env=env,
    )
    return output.read_bytes()


# ------------------------------------------------------------------ apk


@dataclass(frozen=True)
class ApkPackage:
    name: str
    version: str
    origin: str
    description: str
    files: tuple[tuple[str, tuple[str, ...]], ...]  # (folder, files in it)


def apk_installed(packages: list[ApkPackage], commit: str) -> bytes:
    """``lib/apk/db/installed`` as apk-tools writes it: one block per package,
    a letter and a colon per field, F:/R: for the files (checksums made up)."""
    blocks = []
    for number, package in enumerate(packages):
        fields = [
            f"C:Q1{package.name[:8].ljust(8, 'x')}{number:04d}AAAAAAAAAAAAAAAA=",
            f"P:{package.name}",
            f"V:{package.version}",
            "A:x86_64",
            "S:102400",
            "I:307200",
            f"T:{package.description}",
            "U:https://www.openssh.com/portable.html",
            "L:SSH-OpenSSH",
            f"o:{package.origin}",
            "m:Natanael Copa <ncopa@alpinelinux.org>",
            "t:1719835200",
            f"c:{commit}",
            "D:so:libc.musl-x86_64.so.1 so:libcrypto.so.3",
        ]
        for folder, names in package.files:
            fields.append(f"F:{folder}")
            for name in names:
                fields += [f"R:{name}", "a:0:0:755", "Z:Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA="]
        blocks.append("\n".join(fields) + "\n")
    return ("\n".join(blocks) + "\n").encode()
