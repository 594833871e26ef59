"""The admitted store and the quarantine.

The admitted store is an OCI image layout under ``state_dir/admitted`` that
``skopeo copy oci:<dir>:<ref>`` can read: ``oci-layout``, ``index.json`` and
``blobs/<alg>/<hex>``. Content arrives there only by rename from a staging
session whose every check passed; ``index.json`` is rewritten atomically and
last. The quarantine keeps a failing pull's staged content and a
``report.json`` under ``state_dir/quarantine/<decision-id>/``; nothing there
is ever served.

The admitted store is never trusted blindly:

- **At admission** a staged object is hashed again before it is moved, and
  must equal its key (and the digest the fetcher computed while streaming).
  The verified file then *replaces* whatever has that name: a damaged file
  never survives a verified pull because "a file of that name exists".
- **While serving**, a manifest is hashed on every serve (it is small). A
  blob carries a verified-at stamp (size, ctime, inode) taken when its hash
  was last checked; a blob whose stamp no longer matches is hashed again
  before it is served, and one whose hash differs is moved to
  ``state_dir/damaged/`` and never served. Stamps live in memory, so after a
  restart each blob is hashed once, at its first serve.
- **By** ``pullguard fsck`` (see :mod:`pullguard.gateway.fsck`), every admitted
  file is hashed again; ``--repair`` moves damaged files aside and withdraws
  the admissions that lost content, so the next pull fetches and verifies
  again.
- **At start-up** :meth:`AdmittedStore.reconcile` removes temporary files a
  crash left, and makes ``index.json`` agree with the database's admissions.

Several gateway processes (replicas) may share one state_dir: every
read-modify-write of ``index.json`` (and the start-up sweep of temporary
files, which could otherwise take another replica's half-written index)
holds an exclusive ``flock`` on ``index.json.lock`` beside it, besides the
in-process lock; the write itself stays an atomic rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullguard.gateway import failpoints
from pullguard.services.runtime.digests import DigestSyntaxError, digest_stream, parse_digest
from pullguard.services.runtime.errors import StagingError
from pullguard.services.runtime.staging import FileStamp, StagingStore

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_DECISION_ID_RE = re.compile(r"[0-9a-f]{32}")
_REF_NAME = "org.opencontainers.image.ref.name"
_TMP_PREFIX = ".tmp-"
_INDEX_LOCK = "index.json.lock"

log = logging.getLogger("pullguard.gateway")


def _atomic_write(path: Path, data: bytes, failpoint: str = "") -> None:
    fd, temp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if failpoint:
            failpoints.hit(failpoint)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def file_digest(path: Path, algorithm: str) -> str:
    """``<algorithm>:<hex>`` of a file's bytes, read in bounded chunks."""
    with path.open("rb") as handle:
        return digest_stream(handle, algorithm)[0]


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    # ctime, not mtime: any write changes it, and no one can set it back (utime cannot).
    return (stat.st_size, stat.st_ctime_ns, stat.st_ino)


def _ref_repository(name: str) -> str:
    """The repository part of an index.json reference name (``repo@digest`` or ``repo:tag``)."""
    if "@" in name:
        return name.partition("@")[0]
    return name.rpartition(":")[0]


@dataclass
class Reconciled:
    """What :meth:`AdmittedStore.reconcile` found (and, unless dry, fixed)."""

    tmp_files: list[str] = field(default_factory=list)
    #: index.json names whose (repository, digest) has no admission.
    unadmitted_names: list[str] = field(default_factory=list)
    #: ``repository@digest`` of admissions index.json did not name.
    unnamed_admissions: list[str] = field(default_factory=list)

    def problems(self) -> int:
        return len(self.tmp_files) + len(self.unadmitted_names) + len(self.unnamed_admissions)


class AdmittedStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        layout = root / "oci-layout"
        if not layout.exists():
            _atomic_write(layout, b'{"imageLayoutVersion":"1.0.0"}')
        self._lock = threading.Lock()
        with self._index_locked():
            if not (root / "index.json").exists():
                empty = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": []}
                _atomic_write(root / "index.json", json.dumps(empty).encode())
        #: digest -> (size, ctime_ns, inode) of the file when its hash was last checked.
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self.damaged_dir = root.parent / "damaged"

    @contextlib.contextmanager
    def _index_locked(self) -> Iterator[None]:
        """Hold index.json for a read-modify-write: against threads here and other processes."""
        with self._lock, (self.root / _INDEX_LOCK).open("ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        index: dict[str, Any] = json.loads((self.root / "index.json").read_bytes())
        return index

    def _write_index(self, index: dict[str, Any], failpoint: str = "") -> None:
        _atomic_write(
            self.root / "index.json", json.dumps(index, indent=1).encode(), failpoint=failpoint
        )

    def blob_path(self, digest: str) -> Path:
        algorithm, encoded = parse_digest(digest)
        return self.root / "blobs" / algorithm / encoded

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def take_from_staging(
        self,
        staging: StagingStore,
        session: str,
        key: str,
        streamed: str = "",
        verified: FileStamp | None = None,
    ) -> None:
        """Move a verified staged object into the store (same filesystem: a rename).

        The staged file must hash to ``key`` (and equal ``streamed``, the
        digest the fetcher computed while writing it, when given). It is
        hashed here unless ``verified``, the stamp hashverify took of the file
        it hashed, still matches it: same file, no write since. It then
        replaces whatever file has that name, which may be damaged.
        """
        if streamed and streamed != key:
            raise StagingError(f"fetcher streamed {streamed} for {key}")
        source = staging.path(session, key)
        try:
            found = source.stat()
        except FileNotFoundError:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            raise StagingError(f"{key} is not staged in session {session}")
        if verified is None or FileStamp.of(found) != verified:
            algorithm = parse_digest(key)[0]
            actual = file_digest(source, algorithm)
            if actual != key:
                raise StagingError(f"staged {key} hashes to {actual}")
        target = self.blob_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        self._stamps[key] = _stamp(target.stat())

    def verified_blob(self, digest: str) -> Path | None:
        """The admitted file of ``digest`` if its bytes still hash to it; else None.

        Cheap when the file's stamp is unchanged since its hash was last
        checked; otherwise the file is hashed again. A damaged file is moved to
        ``damaged/`` so that it is never served and the next pull replaces it.
        """
        path = self.blob_path(digest)
        try:
            stamp = _stamp(path.stat())
        except FileNotFoundError:
            return None
        if self._stamps.get(digest) == stamp:
            return path
        if file_digest(path, parse_digest(digest)[0]) != digest:
            log.error(
                "admitted %s does not match its digest: moved to %s", digest, self.damaged_dir
            )
            self.move_aside(digest)
            return None
        self._stamps[digest] = stamp
        return path

    def move_aside(self, digest: str) -> Path | None:
        """Move an admitted file to ``damaged/`` (kept for inspection, never served)."""
        self._stamps.pop(digest, None)
        self.damaged_dir.mkdir(parents=True, exist_ok=True)
        algorithm, encoded = parse_digest(digest)
        target = self.damaged_dir / f"{algorithm}-{encoded}-{time.time_ns()}"
        try:
            os.replace(self.blob_path(digest), target)
        except FileNotFoundError:
            return None
        return target

    def files(self) -> Iterator[tuple[str, Path]]:
        """(digest, path) of every file under ``blobs/``; a misnamed file gets digest ""."""
        blobs = self.root / "blobs"
        for algorithm_dir in sorted(blobs.iterdir()):
            if not algorithm_dir.is_dir():
                yield "", algorithm_dir
                continue
            for path in sorted(algorithm_dir.iterdir()):
                digest = f"{algorithm_dir.name}:{path.name}"
                try:
                    parse_digest(digest)
                except DigestSyntaxError:
                    digest = ""
                yield digest, path

    def reconcile(
        self, admissions: Mapping[tuple[str, str], tuple[str, int]], *, dry: bool
    ) -> Reconciled:
        """Make the layout agree with the database's ``admissions``.

        ``admissions`` maps (repository, digest) to (media type, size).

        Removes temporary files a crash left, drops index.json names with no
        admission, and names each admission that index.json lost by digest
        (its tags come back at its next pull). ``dry`` only reports.
        """
        found = Reconciled()
        with self._index_locked():
            for temp in sorted(self.root.glob(f"{_TMP_PREFIX}*")):
                found.tmp_files.append(temp.name)
                if not dry:
                    temp.unlink(missing_ok=True)
            index = self._read_index()
            manifests: list[dict[str, Any]] = index["manifests"]
            kept = []
            named = set()
            for entry in manifests:
                name = str(entry.get("annotations", {}).get(_REF_NAME, ""))
                key = (_ref_repository(name), str(entry.get("digest", "")))
                if key in admissions:
                    kept.append(entry)
                    named.add(key)
                else:
                    found.unadmitted_names.append(name)
            for repository, digest in sorted(set(admissions) - named):
                if not self.blob_path(digest).is_file():
                    continue  # lost content: fsck reports it, --repair withdraws it
                media_type, size = admissions[(repository, digest)]
                found.unnamed_admissions.append(f"{repository}@{digest}")
                kept.append(
                    {
                        "mediaType": media_type,
                        "digest": digest,
                        "size": size,
                        "annotations": {_REF_NAME: f"{repository}@{digest}"},
                    }
                )
            if not dry and (found.unadmitted_names or found.unnamed_admissions):
                manifests[:] = kept
                self._write_index(index)
        return found

    def read_manifest(self, digest: str, limit: int) -> bytes:
        with self.blob_path(digest).open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StagingError(f"admitted manifest {digest} is larger than {limit} bytes")
        return data

    def tags_for(self, repository: str, digest: str) -> list[str]:
        """Tags of ``repository`` whose latest resolution, as recorded here, is ``digest``."""
        with self._lock:
            index = self._read_index()
        prefix = f"{repository}:"
        tags = []
        for entry in index["manifests"]:
            name = entry.get("annotations", {}).get(_REF_NAME, "")
            if entry.get("digest") == digest and name.startswith(prefix):
                tags.append(name[len(prefix) :])
        return sorted(tags)

    def add_reference(
        self, digest: str, media_type: str, size: int, ref_names: Iterable[str]
    ) -> None:
        """Record the manifest in index.json, once per reference name (written last).

        Rewritten (and fsynced) only when a name is new or pointed elsewhere:
        a cached pull of a tag that already names this manifest writes nothing.
        """
        with self._index_locked():
            index = self._read_index()
            manifests: list[dict[str, Any]] = index["manifests"]
            changed = False
            for name in ref_names:
                entry = {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": size,
                    "annotations": {_REF_NAME: name},
                }
                named = [m for m in manifests if m.get("annotations", {}).get(_REF_NAME) == name]
                if named == [entry]:
                    continue
                manifests[:] = [m for m in manifests if m not in named]
                manifests.append(entry)
                changed = True
            if changed:
                self._write_index(index, failpoint="index.before_replace")

    def remove_references(self, repository: str, digest: str) -> int:
        """Drop index.json's names for ``repository`` that point at ``digest``; return how many.

        Blobs stay: they are content-addressed and may belong to other images.
        """
        prefixes = (f"{repository}@", f"{repository}:")
        with self._index_locked():
            index = self._read_index()
            manifests: list[dict[str, Any]] = index["manifests"]
            kept = [
                m
                for m in manifests
                if m.get("digest") != digest
                or not str(m.get("annotations", {}).get(_REF_NAME, "")).startswith(prefixes)
            ]
            removed = len(manifests) - len(kept)
            if removed:
                manifests[:] = kept
                self._write_index(index)
        return removed


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def entry_dir(self, decision_id: str) -> Path:
        if not _DECISION_ID_RE.fullmatch(decision_id):
            raise StagingError(f"invalid quarantine id {decision_id[:80]!r}")
        return self.root / decision_id

    def put(
        self, staging: StagingStore, session: str, report: Mapping[str, Any], decision_id: str
    ) -> Path:
        """Move a session's staged content here, as entry ``decision_id``, and write its report."""
        entry = self.entry_dir(decision_id)
        entry.mkdir(parents=True, exist_ok=True)
        staged = staging.session_dir(session)
        if staged.is_dir():
            os.replace(staged, entry / "content")
        _atomic_write(entry / "report.json", json.dumps(report, indent=2, sort_keys=True).encode())
        return entry

    def report(self, decision_id: str) -> str:
        try:
            return (self.entry_dir(decision_id) / "report.json").read_text()
        except FileNotFoundError:
            raise StagingError(f"no quarantine entry {decision_id}") from None

    def mark_released(self, decision_id: str, release_report: Mapping[str, Any]) -> None:
        """Keep the entry for the record, with the decision that released it."""
        _atomic_write(
            self.entry_dir(decision_id) / "release.json",
            json.dumps(release_report, indent=2, sort_keys=True).encode(),
        )

    def delete(self, decision_id: str) -> None:
        shutil.rmtree(self.entry_dir(decision_id))
