"""The admitted store and the quarantine.

The admitted store is an OCI image layout under ``state_dir/admitted`` that
``skopeo copy oci:<dir>:<ref>`` can read: ``oci-layout``, ``index.json`` and
``blobs/<alg>/<hex>``. Content arrives there only by rename from a staging
session whose every check passed; ``index.json`` is rewritten atomically and
last. The quarantine keeps a failing pull's staged content and a
``report.json`` under ``state_dir/quarantine/<decision-id>/``; nothing there
is ever served.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pullguard.services.runtime.digests import parse_digest
from pullguard.services.runtime.errors import StagingError
from pullguard.services.runtime.staging import StagingStore

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_DECISION_ID_RE = re.compile(r"[0-9a-f]{32}")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class AdmittedStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        layout = root / "oci-layout"
        if not layout.exists():
            _atomic_write(layout, b'{"imageLayoutVersion":"1.0.0"}')
        if not (root / "index.json").exists():
            _atomic_write(
                root / "index.json",
                json.dumps({"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": []}).encode(),
            )
        self._lock = threading.Lock()

    def blob_path(self, digest: str) -> Path:
        algorithm, encoded = parse_digest(digest)
        return self.root / "blobs" / algorithm / encoded

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def take_from_staging(self, staging: StagingStore, session: str, key: str) -> None:
        """Move a verified staged object into the store (same filesystem: a rename)."""
        target = self.blob_path(key)
        if target.is_file():
            return
        source = staging.path(session, key)
        if not source.is_file():
            raise StagingError(f"{key} is not staged in session {session}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def read_manifest(self, digest: str, limit: int) -> bytes:
        with self.blob_path(digest).open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StagingError(f"admitted manifest {digest} is larger than {limit} bytes")
        return data

    def tags_for(self, repository: str, digest: str) -> list[str]:
        """Tags of ``repository`` whose latest resolution, as recorded here, is ``digest``."""
        with self._lock:
            index = json.loads((self.root / "index.json").read_bytes())
        prefix = f"{repository}:"
        tags = []
        for entry in index["manifests"]:
            name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            if entry.get("digest") == digest and name.startswith(prefix):
                tags.append(name[len(prefix) :])
        return sorted(tags)

    def add_reference(
        self, digest: str, media_type: str, size: int, ref_names: Iterable[str]
    ) -> None:
        """Record the manifest in index.json, once per reference name (written last)."""
        with self._lock:
            index = json.loads((self.root / "index.json").read_bytes())
            manifests: list[dict[str, Any]] = index["manifests"]
            for name in ref_names:
                manifests[:] = [
                    m
                    for m in manifests
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != name
                ]
                manifests.append(
                    {
                        "mediaType": media_type,
                        "digest": digest,
                        "size": size,
                        "annotations": {"org.opencontainers.image.ref.name": name},
                    }
                )
            _atomic_write(self.root / "index.json", json.dumps(index, indent=1).encode())

    def remove_references(self, repository: str, digest: str) -> int:
        """Drop index.json's names for ``repository`` that point at ``digest``; return how many.

        Blobs stay: they are content-addressed and may belong to other images.
        """
        prefixes = (f"{repository}@", f"{repository}:")
        with self._lock:
            index = json.loads((self.root / "index.json").read_bytes())
            manifests: list[dict[str, Any]] = index["manifests"]
            kept = [
                m
                for m in manifests
                if m.get("digest") != digest
                or not str(
                    m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
                ).startswith(prefixes)
            ]
            removed = len(manifests) - len(kept)
            manifests[:] = kept
            _atomic_write(self.root / "index.json", json.dumps(index, indent=1).encode())
        return removed


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def entry_dir(self, decision_id: str) -> Path:
        if not _DECISION_ID_RE.fullmatch(decision_id):
            raise StagingError(f"invalid quarantine id {decision_id[:80]!r}")
        return self.root / decision_id

    def put(self, staging: StagingStore, session: str, report: Mapping[str, Any]) -> Path:
        """Move a session's staged content here and write its report."""
        entry = self.entry_dir(session)
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
