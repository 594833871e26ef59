"""Property tests of layer inspection (THREATS L-01, L-04, O-03).

1. Whatever the bytes, compressed or not, inspecting a layer never raises:
   every problem is a finding.
2. A layer with an entry whose name or hard-link target is unsafe (absolute,
   ``..`` between ``/`` or ``\\``, a Windows drive) is never allowed, whether
   the name sits in the ustar field, the ustar prefix, a PAX record or a GNU
   long name, and whatever else the layer holds.
3. Mutating a valid layer (checksums kept right) never yields an allowed
   layer in which Python's tarfile, a second reader, finds an unsafe name.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pullguard.services.format.layers import LayerStats
from pullguard.services.runtime.findings import Finding
from pullguard.services.runtime.staging import StagingStore
from tests.unit.format.tarbuild import (
    TAR,
    TAR_GZIP,
    TAR_ZSTD,
    archive,
    directory,
    errors,
    file,
    gnu_long,
    hardlink,
    inspect,
    pax,
    symlink,
)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_DRIVE_RE = re.compile(r"[A-Za-z]:[\\/]")


def unsafe(name: str) -> bool:
    """The oracle: a name no runtime should be handed."""
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        return True
    return ".." in re.split(r"[/\\]", name)


def _inspect(
    data: bytes, media_type: str, blob: bytes | None = None
) -> tuple[list[Finding], LayerStats]:
    """Inspect in a staging store of its own, removed afterwards: one example, one folder."""
    with tempfile.TemporaryDirectory(prefix="pg-prop-") as folder:
        return inspect(StagingStore(Path(folder) / "staging"), data, media_type, blob=blob)


components = st.sampled_from(["a", "b", "etc", "..", ".", "", "..\\x", "x\\..", "C:", "\\", "é"])
names = st.lists(components, min_size=1, max_size=6).map("/".join)


@st.composite
def entries(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A tar stream of a few entries, and every name and link target in it."""
    parts: list[bytes] = []
    seen: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        name = draw(names)
        kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink"]))
        carrier = draw(st.sampled_from(["ustar", "pax", "gnu"]))
        target = draw(names)
        # A PAX path or GNU long name replaces the ustar name; empty ones do not.
        ustar_name = "ustar-name" if carrier != "ustar" and name else name
        if carrier == "pax" and name:
            parts.append(pax({"path": name}))
        elif carrier == "gnu" and name:
            parts.append(gnu_long(name))
        if kind == "file":
            parts.append(file(ustar_name, draw(st.binary(max_size=600))))
        elif kind == "dir":
            parts.append(directory(ustar_name))
        elif kind == "symlink":
            parts.append(symlink(ustar_name, target))
        else:
            parts.append(hardlink(ustar_name, target))
            seen.append(target)
        seen.append(name)
    return archive(*parts), seen


@PROPERTY
@given(data=st.binary(max_size=3000), media_type=st.sampled_from([TAR, TAR_GZIP, TAR_ZSTD]))
def test_o03_random_bytes_never_raise(data: bytes, media_type: str) -> None:
    _inspect(data, media_type, blob=data)


@PROPERTY
@given(layer=entries(), media_type=st.sampled_from([TAR, TAR_GZIP, TAR_ZSTD]))
def test_l01_unsafe_names_are_never_allowed(
    layer: tuple[bytes, list[str]], media_type: str
) -> None:
    tar, seen = layer
    findings, _ = _inspect(tar, media_type)
    if any(unsafe(name) for name in seen):
        assert errors(findings), (seen, findings)


_BASE = archive(
    directory("etc"),
    file("etc/passwd", b"root:x:0:0\n"),
    pax({"path": "usr/share/" + "long" * 30}),
    file("short", b"data" * 100),
    gnu_long("opt/" + "g" * 120),
    file("x", b"gnu"),
    symlink("bin", "usr/bin"),
    hardlink("etc/passwd-", "etc/passwd"),
)


def _tarfile_names(data: bytes) -> list[str] | None:
    names: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as stream:
            for member in stream:
                names.append(member.name)
                if member.islnk():
                    names.append(member.linkname)
    except (tarfile.TarError, ValueError, UnicodeError, EOFError, OverflowError):
        return None
    return names


@PROPERTY
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(_BASE) - 1),
            st.one_of(st.sampled_from(b"/.\\\0 0x"), st.integers(0, 255)),
        ),
        min_size=1,
        max_size=8,
    ),
    cut=st.one_of(st.none(), st.integers(0, len(_BASE))),
)
def test_l04_mutated_layers_never_hide_unsafe_names(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_BASE)
    for position, value in edits:
        data[position] = value
    for start in {position - position % 512 for position, _ in edits}:
        # Keep mutated headers' checksums right, so the edit reaches the parsers.
        if data[start + 257 : start + 262] == b"ustar":
            data[start + 148 : start + 156] = b" " * 8
            data[start + 148 : start + 156] = b"%06o\0 " % sum(data[start : start + 512])
    mutated = bytes(data[:cut])
    findings, _ = _inspect(mutated, TAR)
    if errors(findings):
        return
    seen = _tarfile_names(mutated)
    if seen is not None:
        assert not any(unsafe(name) for name in seen), (seen, findings)
