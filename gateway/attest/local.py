"""pullguard's attachments kept beside the admitted store, for the embedded target.

With ``target: {kind: embedded}`` clients pull from pullguard's front door,
so the signature and attestation of an admitted manifest are served there
(``GET /v2/<name>/manifests/sha256-<hex>.sig``). They live under
``state_dir/attachments/``, apart from the admitted store (they were made
here, not verified from an upstream)::

    attachments/<sha256 of repository>/<tag>          the manifest's bytes
    attachments/<sha256 of repository>/blobs/<hex>    empty: this repository may serve it
    attachments/blobs/sha256/<hex>                    the config and layer blobs

A manifest is written after its blobs and removed before them, each write
atomic, so a reader sees a whole attachment or none. Every read is bounded
and re-hashed: a file that no longer matches its name is not served.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from pullguard.gateway.attest.documents import Attachment, sha256

#: An attachment manifest or blob is a few KiB; this bounds every read.
MAX_ATTACHMENT_BYTES = 256 * 1024
_TAG_RE = re.compile(r"sha256-[0-9a-f]{64}\.(sig|att)")
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")


def is_attachment_tag(reference: str) -> bool:
    return _TAG_RE.fullmatch(reference) is not None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_ATTACHMENT_BYTES + 1)
    except FileNotFoundError:
        return None
    return data if len(data) <= MAX_ATTACHMENT_BYTES else None


class AttachmentStore:
    """Signatures and attestations by (repository, tag); blobs by digest."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _manifest_path(self, repository: str, tag: str) -> Path:
        if not is_attachment_tag(tag):
            raise ValueError(f"not an attachment tag: {tag[:80]!r}")
        return self._folder(repository) / tag

    def _blob_path(self, digest: str) -> Path:
        match = _DIGEST_RE.fullmatch(digest)
        if match is None:
            raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
        return self.root / "blobs" / "sha256" / match.group(1)

    def _folder(self, repository: str) -> Path:
        return self.root / hashlib.sha256(repository.encode()).hexdigest()

    def _marker(self, repository: str, digest: str) -> Path:
        """An empty file saying that one of ``repository``'s attachments names ``digest``."""
        match = _DIGEST_RE.fullmatch(digest)
        if match is None:
            raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
        return self._folder(repository) / "blobs" / match.group(1)

    def put(self, repository: str, attachment: Attachment) -> None:
        for digest, data in attachment.blobs.items():
            _write(self._blob_path(digest), data)
            _write(self._marker(repository, digest), b"")
        _write(self._manifest_path(repository, attachment.tag), attachment.manifest)

    def manifest(self, repository: str, tag: str) -> bytes | None:
        """The attachment manifest stored under ``tag``, or None."""
        return _read(self._manifest_path(repository, tag))

    def blob(self, repository: str, digest: str) -> bytes | None:
        """A blob that one of ``repository``'s attachments names, verified, or None."""
        if _DIGEST_RE.fullmatch(digest) is None or not self._marker(repository, digest).exists():
            return None
        data = _read(self._blob_path(digest))
        return data if data is not None and sha256(data) == digest else None

    def remove(self, repository: str, image_digest: str) -> list[str]:
        """Drop ``image_digest``'s attachments in ``repository``; return the tags removed.

        Blobs stay (another repository's attachment may name the same
        config); without a manifest they are served to no one.
        """
        removed = []
        algorithm, _, encoded = image_digest.partition(":")
        for suffix in ("sig", "att"):
            tag = f"{algorithm}-{encoded}.{suffix}"
            path = self._manifest_path(repository, tag)
            manifest = _read(path)
            if manifest is None:
                continue
            path.unlink()
            removed.append(tag)
            # Its blobs are no longer served for this repository.
            for named in set(_DIGEST_RE.findall(manifest.decode("utf-8", "replace"))):
                self._marker(repository, f"sha256:{named}").unlink(missing_ok=True)
        return removed
