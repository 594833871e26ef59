"""What one layer's entries would do to a root filesystem (THREATS L-01 to L-05).

:class:`LayerTree` is given the entries of one layer in order and keeps a
map from each normalised path to what the layer put there, so that it can
judge every entry against the entries before it, the way a runtime that
extracts the layer would meet them:

- L-01 names: absolute paths, ``..`` components (also between backslashes,
  which Windows runtimes take as separators), Windows drive paths, a root
  replaced by a non-directory -> ``format.unsafe_path``;
- L-02 links: an entry written through a symlink this layer created, and a
  hard link that is absolute, climbs with ``..``, or names anything but a
  file earlier in this layer (a symlink included) -> ``format.link_escape``;
- L-03 whiteouts: ``.wh..``/``.wh...`` and AUFS ``.wh..wh.*`` names, a
  whiteout that is not an empty regular file, a whiteout and an entry for the
  same path in one layer, a ``.wh.*`` name used as a directory ->
  ``format.invalid_whiteout``; an opaque whiteout of the root is a WARNING;
- L-04 the same path twice (``./a``, ``a/`` and ``a`` are one path), or a
  directory with entries replaced by something else -> ``format.duplicate_path``;
- L-05 setuid/setgid files and device nodes (policy: WARNING or ERROR),
  ``security.capability`` xattrs, world-writable directories without the
  sticky bit, uid/gid 4294967295 (WARNINGs), FIFOs (INFO), overlayfs
  ``*.overlay.*`` xattrs (ERROR: they make a directory opaque or redirect it
  behind the whiteout rules' back), ids outside 0..2**32-1 and negative
  times (``format.malformed_tar``).

Symlinks of lower layers are not visible here; runtimes resolve them inside
the root filesystem (containerd's ``fs.RootPath``), so they cannot lead out.
"""

from __future__ import annotations

import re
from collections import Counter

from pullguard.services.format.tarstream import TarEntry, TarError
from pullguard.services.runtime.findings import Finding, Severity

#: Path bytes kept per layer (paths and their parent directories); beyond
#: it the layer is refused rather than letting memory grow with it.
MAX_PATH_BYTES = 64 * 1024 * 1024
_MAX_ID = 2**32 - 1
_WINDOWS_ABSOLUTE_RE = re.compile(r"\\|[A-Za-z]:[\\/]")
_OPAQUE = ".wh..wh..opq"
_WHITEOUT = ".wh."
_AUFS_META = ".wh..wh."

_IMPLICIT, _DIR, _FILE, _SYMLINK, _WHITEOUT_ENTRY, _WHITED = range(6)
_FACTORIES = {
    Severity.ERROR: Finding.error,
    Severity.WARNING: Finding.warning,
    Severity.INFO: Finding.info,
}


def normalize(name: str) -> tuple[str, str]:
    """``(path, "")`` with ``./``, ``//`` and a trailing ``/`` removed (``""`` is
    the root), or ``("", problem)`` for a name no runtime should be given."""
    if name.startswith("/"):
        return "", "is absolute"
    if _WINDOWS_ABSOLUTE_RE.match(name):
        return "", "is a Windows absolute path"
    parts = [part for part in name.split("/") if part not in ("", ".")]
    for part in parts:
        if part == ".." or ("\\" in part and ".." in part.split("\\")):
            return "", "climbs out with .."
    return "/".join(parts), ""


class FindingSink:
    """Findings of one layer: at most :attr:`per_code` of each code are kept,
    the rest are counted; :attr:`full` tells the caller to stop reading."""

    per_code = 10
    max_errors = 20

    def __init__(self, layer_digest: str, index: int) -> None:
        self._layer = layer_digest
        self._where = f"layers[{index}]: "
        self._counts: Counter[str] = Counter()
        self._kept: list[Finding] = []
        self.errors = 0

    def add(self, code: str, severity: Severity, message: str, **evidence: object) -> None:
        self._counts[code] += 1
        if severity is Severity.ERROR:
            self.errors += 1
        if self._counts[code] <= self.per_code:
            make = _FACTORIES[severity]
            self._kept.append(make(code, self._where + message, layer=self._layer, **evidence))

    @property
    def full(self) -> bool:
        return self.errors >= self.max_errors

    def findings(self) -> list[Finding]:
        notes = [
            Finding.info(
                "format.findings_truncated",
                f"{self._where}{count - self.per_code} more {code} findings not shown",
                layer=self._layer,
            )
            for code, count in self._counts.items()
            if count > self.per_code
        ]
        return [*self._kept, *notes]


class LayerTree:
    """The entries of one layer so far; :meth:`add` judges the next one."""

    def __init__(self, sink: FindingSink, *, deny_setuid: bool, deny_devices: bool) -> None:
        self._sink = sink
        self._setuid = Severity.ERROR if deny_setuid else Severity.WARNING
        self._devices = Severity.ERROR if deny_devices else Severity.WARNING
        self._kinds: dict[str, int] = {}
        self._root_seen = False
        self.path_bytes = 0

    def add(self, entry: TarEntry) -> None:
        """Judge ``entry``; raises :class:`TarError` when the layer is too big to track."""
        self._check_attributes(entry)
        path, problem = normalize(entry.name)
        if problem:
            self._error("format.unsafe_path", entry, f"{entry.name[:200]} {problem}")
            return
        if path == "":
            if entry.typeflag != "5":
                self._error("format.unsafe_path", entry, "the root is replaced by a non-directory")
            elif self._root_seen:
                self._error("format.duplicate_path", entry, "the root directory appears twice")
            self._root_seen = True
            return
        parent, _, base = path.rpartition("/")
        if base.startswith(_WHITEOUT):
            self._add_whiteout(entry, path, parent, base)
            return
        if entry.typeflag == "1" and not self._hardlink_ok(entry):
            return
        kind = {"5": _DIR, "2": _SYMLINK}.get(entry.typeflag, _FILE)
        self._register(entry, path, kind)

    # ------------------------------------------------------------ attributes

    def _check_attributes(self, entry: TarEntry) -> None:
        name = entry.name[:200]
        if entry.typeflag == "0" and entry.mode & 0o6000:
            bits = "setuid" if entry.mode & 0o4000 else "setgid"
            self._add(
                "format.setuid", self._setuid, entry, f"{name} is {bits} (mode {entry.mode:o})"
            )
        elif entry.typeflag in "34":
            kind = "character" if entry.typeflag == "3" else "block"
            self._add("format.device_node", self._devices, entry, f"{name} is a {kind} device")
        elif entry.typeflag == "6":
            self._add("format.fifo", Severity.INFO, entry, f"{name} is a FIFO")
        elif entry.typeflag == "5" and entry.mode & 0o002 and not entry.mode & 0o1000:
            self._add(
                "format.world_writable_dir",
                Severity.WARNING,
                entry,
                f"{name} is world-writable without the sticky bit",
            )
        for key, _ in entry.xattrs:
            if key == "security.capability":
                self._add(
                    "format.file_capability", self._setuid, entry, f"{name} has file capabilities"
                )
            elif key.startswith(("trusted.overlay.", "user.overlay.")):
                self._error(
                    "format.overlay_xattr", entry, f"{name} sets overlayfs xattr {key[:80]}"
                )
        for what, value in (("uid", entry.uid), ("gid", entry.gid)):
            if not 0 <= value <= _MAX_ID:
                self._error(
                    "format.malformed_tar", entry, f"{name}: {what} {value} is out of range"
                )
            elif value == _MAX_ID:
                self._add(
                    "format.unusual_owner", Severity.WARNING, entry, f"{name}: {what} is {value}"
                )
        if entry.mtime < 0:
            self._error("format.malformed_tar", entry, f"{name}: negative mtime {entry.mtime}")

    # ------------------------------------------------------------ paths

    def _hardlink_ok(self, entry: TarEntry) -> bool:
        target, problem = normalize(entry.linkname)
        what = f"hard link {entry.name[:200]} -> {entry.linkname[:200]}"
        if problem or not target:
            self._error("format.link_escape", entry, f"{what}: target {problem or 'is the root'}")
            return False
        kind = self._kinds.get(target)
        if kind is None:
            self._error("format.link_escape", entry, f"{what}: target is not earlier in this layer")
            return False
        if kind != _FILE:
            target_kind = "a symlink" if kind == _SYMLINK else "not a file"
            self._error("format.link_escape", entry, f"{what}: target is {target_kind}")
            return False
        return True

    def _add_whiteout(self, entry: TarEntry, path: str, parent: str, base: str) -> None:
        if entry.typeflag != "0" or entry.size:
            self._error("format.invalid_whiteout", entry, f"{path[:200]} is not an empty file")
        if base == _OPAQUE:
            if not parent:
                self._add(
                    "format.opaque_root",
                    Severity.WARNING,
                    entry,
                    "opaque whiteout of the root hides every lower layer",
                )
            self._register(entry, path, _WHITEOUT_ENTRY)
            return
        target = base[len(_WHITEOUT) :]
        if base.startswith(_AUFS_META) or target in ("", ".", ".."):
            self._error("format.invalid_whiteout", entry, f"{path[:200]} is not a valid whiteout")
            return
        if not self._register(entry, path, _WHITEOUT_ENTRY):
            return
        removed = f"{parent}/{target}" if parent else target
        if removed in self._kinds:
            self._error(
                "format.invalid_whiteout",
                entry,
                f"{path[:200]} removes {removed[:200]}, which this layer also adds",
            )
            return
        self._remember(removed, _WHITED)

    def _register(self, entry: TarEntry, path: str, kind: int) -> bool:
        """Record ``path``; False (with a finding) when it conflicts with the layer so far."""
        existing = self._kinds.get(path)
        if existing is not None:
            if existing == _IMPLICIT and kind == _DIR:
                self._kinds[path] = _DIR
                return True
            if existing == _WHITED:
                self._error(
                    "format.invalid_whiteout",
                    entry,
                    f"{path[:200]} is added and whited out in one layer",
                )
            elif existing == _IMPLICIT:
                self._error(
                    "format.duplicate_path",
                    entry,
                    f"{path[:200]} replaces a directory that has entries in this layer",
                )
            else:
                self._error("format.duplicate_path", entry, f"{path[:200]} appears twice")
            return False
        new_parents: list[str] = []
        end = len(path)
        while (end := path.rfind("/", 0, end)) >= 0:
            parent = path[:end]
            parent_kind = self._kinds.get(parent)
            if parent_kind is None:
                new_parents.append(parent)
                continue
            if parent_kind == _SYMLINK:
                self._error(
                    "format.link_escape",
                    entry,
                    f"{path[:200]} is written through symlink {parent[:200]} of this layer",
                )
                return False
            if parent_kind == _FILE:
                self._error(
                    "format.duplicate_path", entry, f"{path[:200]} is under file {parent[:200]}"
                )
                return False
            if parent_kind in (_WHITED, _WHITEOUT_ENTRY):
                self._error(
                    "format.invalid_whiteout",
                    entry,
                    f"{path[:200]} is under {parent[:200]}, whited out in this layer",
                )
                return False
            break
        for parent in new_parents:
            if parent.rpartition("/")[2].startswith(_WHITEOUT):
                self._error(
                    "format.invalid_whiteout",
                    entry,
                    f"{parent[:200]} is a whiteout used as a directory",
                )
                return False
        for parent in new_parents:
            self._remember(parent, _IMPLICIT)
        self._remember(path, kind)
        return True

    def _remember(self, path: str, kind: int) -> None:
        self._kinds[path] = kind
        self.path_bytes += len(path) + 1
        if self.path_bytes > MAX_PATH_BYTES:
            raise TarError(
                "format.decompression_limit",
                f"paths of this layer exceed {MAX_PATH_BYTES} bytes",
                0,
            )

    # ------------------------------------------------------------ findings

    def _add(self, code: str, severity: Severity, entry: TarEntry, message: str) -> None:
        self._sink.add(code, severity, message, path=entry.name[:200], offset=entry.offset)

    def _error(self, code: str, entry: TarEntry, message: str) -> None:
        self._add(code, Severity.ERROR, entry, message)
