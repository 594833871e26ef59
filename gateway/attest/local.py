"""pullguard's attachments kept beside the admitted store, for the embedded target.

With ``target: {kind: embedded}`` clients pull from pullguard's front door,
so the signature and attestation of an admitted manifest are served there
(``GET /v2/<name>/manifests/sha256-<hex>.sig``). They live under
``state_dir/attachments/``, apart from the admitted store (they were made
here, not verified from an upstream)::

    attachments/<sha256 of repository>/<tag>      the manifest's bytes
    attachments/blobs/sha256/<hex>                the config and layer blobs

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
        folder = hashlib.sha256(repository.encode()).hexdigest()
        return self.root / folder / tag

    def _blob_path(self, digest: str) -> Path:
        match = _DIGEST_RE.fullmatch(digest)
        if match is None:
            raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
        return self.root / "blobs" / "sha256" / match.group(1)

    def put(self, repository: str, attachment: Attachment) -> None:
        for digest, data in attachment.blobs.items():
            _write(self._blob_path(digest), data)
        _write(self._manifest_path(repository, attachment.tag), attachment.manifest)

    def manifest(self, repository: str, tag: str) -> bytes | None:
        """The attachment manifest stored under ``tag``, or None."""
        return _read(self._manifest_path(repository, tag))

    def blob(self, repository: str, digest: str) -> bytes | None:
        """A blob that one of ``repository``'s attachments names, verified, or None."""
        if _DIGEST_RE.fullmatch(digest) is None:
            return None
        folder = self.root / hashlib.sha256(repository.encode()).hexdigest()
        if not folder.is_dir():
            return None
        needle = digest.encode()
        # A repository has two attachments per admitted digest; each is tiny.
        named = any(needle in (_read(path) or b"") for path in sorted(folder.iterdir())[:10000])
        data = _read(self._blob_path(digest)) if named else None
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
            if path.exists():
                path.unlink()
                removed.append(tag)
        return removed
