"""Publishing admitted images to the target registry (``target: {kind: registry}``).

Only content already in the admitted store is published: its digests were
verified before it got there, and the manifest is re-hashed here before it
is sent. The order is what makes a partial image impossible to see:

1. every blob the manifest names (config, layers), each skipped when the
   target already has it (HEAD), otherwise uploaded streamed from its file;
2. the manifest, its exact bytes under its own media type, by digest;
3. then by tag, when the pull named one.

An index is pushed only once every manifest it lists is in the target (a
registry refuses an index whose children it lacks, and a tag on a
half-present index would be a partial image). Platform manifests are admitted
as clients pull them, so an index stays *pending* until then; each time a
child is published, its admitted parent indexes are looked at again, and an
index whose children are all present is pushed, with the tags that, in the
admitted store, still point at it.

Every acknowledged manifest PUT is recorded in the decision database, so a
later pull of a published image costs the target one HEAD: the target is the
store of record, and a manifest gone from it (withdrawn by another replica's
``reevaluate``) is not served from any replica's cache. A failure raises
:class:`TargetError`; blobs uploaded before it may stay in the target,
unreferenced (no manifest, no tag: no image), until its garbage collector
runs. They are verified bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.stores import AdmittedStore
from pullguard.gateway.target import MAX_NAME_LENGTH, RegistryTarget
from pullguard.services.runtime.config import Config, Limits, Target
from pullguard.services.runtime.digests import computed_digest
from pullguard.services.runtime.errors import TargetError

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
#: Levels of parent index looked at after a child is published (as the
#: pipeline's MAX_INDEX_DEPTH), and parents per level.
MAX_CASCADE_DEPTH = 4
MAX_PARENTS = 16


@dataclass
class Publication:
    """What one publish did; goes into the decision report under ``target``."""

    url: str
    repository: str
    digest: str
    state: str = "published"  # or "pending": an index whose children are not all there
    pushed: list[str] = field(default_factory=list)  # manifest references PUT now
    blobs_uploaded: int = 0
    blobs_present: int = 0
    pending: list[str] = field(default_factory=list)  # an index's children not yet there
    indexes: dict[str, str] = field(default_factory=dict)  # parent index -> its outcome

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "repository": self.repository,
            "digest": self.digest,
            "state": self.state,
            "pushed": self.pushed,
            "blobs_uploaded": self.blobs_uploaded,
            "blobs_present": self.blobs_present,
            "pending": self.pending,
            "indexes": self.indexes,
        }


class Publisher:
    def __init__(
        self,
        target: Target,
        client: RegistryTarget,
        admitted: AdmittedStore,
        decisions: DecisionLog,
        limits: Limits,
    ) -> None:
        self.target = target
        self.client = client
        self.admitted = admitted
        self.decisions = decisions
        self.limits = limits
        #: The key published references are recorded under: a new URL or
        #: prefix is a new target, and everything is pushed there again.
        self.key = f"{target.url}/{target.prefix}"

    @classmethod
    def for_target(
        cls, config: Config, admitted: AdmittedStore, decisions: DecisionLog
    ) -> Publisher | None:
        """The publisher of ``target: {kind: registry}``; None for the embedded target."""
        if config.target.kind != "registry":
            return None
        client = RegistryTarget(config.target, config.limits)
        return cls(config.target, client, admitted, decisions, config.limits)

    async def close(self) -> None:
        await self.client.close()

    async def publish(
        self,
        repository: str,
        digest: str,
        media_type: str,
        tags: list[str],
        policy_version: str,
        depth: int = 0,
    ) -> Publication:
        """Publish an admitted manifest of ``<alias>/<repository>``, then look at its parents."""
        name = self.target.repository(repository)
        if len(name) > MAX_NAME_LENGTH:
            raise TargetError(
                f"target: repository name {name[:80]}... is longer than {MAX_NAME_LENGTH}"
            )
        outcome = Publication(self.client.describe(name), name, digest)
        data = self._manifest(digest)
        already = self.decisions.published(self.key, repository, digest) == digest
        if media_type in INDEX_MEDIA_TYPES:
            outcome.pending = [
                child
                for child in _children(data, digest)
                if self.decisions.published(self.key, repository, child) != child
            ]
            if outcome.pending:
                outcome.state = "pending"
                return outcome
        elif not already:
            await self._blobs(name, data, digest, outcome)
        if not already:
            await self.client.put_manifest(name, digest, data, media_type, digest)
            self.decisions.mark_published(self.key, repository, digest, digest)
            outcome.pushed.append(digest)
        for tag in tags:
            if self.decisions.published(self.key, repository, tag) != digest:
                await self.client.put_manifest(name, tag, data, media_type, digest)
                self.decisions.mark_published(self.key, repository, tag, digest)
                outcome.pushed.append(tag)
        if depth < MAX_CASCADE_DEPTH:
            await self._parents(repository, digest, policy_version, depth, outcome)
        return outcome

    async def withdrawn_elsewhere(self, repository: str, digest: str) -> bool:
        """Whether an image recorded as published here is gone from the target.

        The target is the store of record that every replica shares: a
        manifest deleted there (a ``reevaluate`` on another replica, or an
        operator) is no longer admitted, whatever this replica's records say.
        One HEAD; an image not yet recorded as published is not asked about
        (its publish pushes it). A target that cannot answer raises TargetError.
        """
        if self.decisions.published(self.key, repository, digest) != digest:
            return False
        name = self.target.repository(repository)
        return not await self.client.has_manifest(name, digest)

    async def withdraw(self, repository: str, digest: str) -> list[str]:
        """Delete a revoked manifest from the target; return the references it had there.

        Its blobs stay until the target's garbage collector runs: without a
        manifest they are no image.
        """
        references = self.decisions.published_references(self.key, repository, digest)
        if references:
            await self.client.delete_manifest(self.target.repository(repository), digest)
            self.decisions.forget_published(self.key, repository, digest)
        return references

    def _manifest(self, digest: str) -> bytes:
        """The admitted manifest's bytes, checked against the digest they are pushed under."""
        if not self.admitted.has(digest):
            raise TargetError(f"target: {digest} is not in the admitted store")
        data = self.admitted.read_manifest(digest, self.limits.manifest_bytes)
        if computed_digest(data, digest) != digest:
            raise TargetError(f"target: the admitted store's {digest} does not match its digest")
        return data

    async def _blobs(self, name: str, data: bytes, digest: str, outcome: Publication) -> None:
        for blob, size in _blobs(data, digest):
            path = self.admitted.blob_path(blob)
            if not path.is_file():
                raise TargetError(f"target: blob {blob} of {digest} is not in the admitted store")
            if path.stat().st_size != size:
                raise TargetError(
                    f"target: admitted blob {blob} holds {path.stat().st_size} bytes,"
                    f" its descriptor says {size}"
                )
            if await self.client.has_blob(name, blob):
                outcome.blobs_present += 1
                continue
            await self.client.push_blob(name, blob, path, size)
            outcome.blobs_uploaded += 1

    async def _parents(
        self, repository: str, digest: str, policy_version: str, depth: int, outcome: Publication
    ) -> None:
        """Push admitted indexes listing ``digest`` whose children are now all there."""
        parents = self.decisions.parent_indexes(repository, digest, policy_version)
        for parent in parents[:MAX_PARENTS]:
            admission = self.decisions.admitted(repository, parent, policy_version)
            if admission is None or not self.admitted.has(parent):
                continue
            try:
                published = await self.publish(
                    repository,
                    parent,
                    admission.media_type,
                    self.admitted.tags_for(repository, parent),
                    policy_version,
                    depth + 1,
                )
            except TargetError as exc:
                # The child itself is in the target; the index is tried again
                # the next time it or one of its children is pulled.
                outcome.indexes[parent] = f"failed: {exc.message}"
            else:
                outcome.indexes[parent] = published.state


def _document(data: bytes, digest: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        raise TargetError(f"target: admitted manifest {digest} is not JSON") from None
    if not isinstance(document, dict):
        raise TargetError(f"target: admitted manifest {digest} is not a JSON object")
    return document


def _descriptor(item: Any, digest: str) -> tuple[str, int]:
    if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
        raise TargetError(f"target: admitted manifest {digest} has a malformed descriptor")
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TargetError(f"target: admitted manifest {digest} has a descriptor without a size")
    return item["digest"], size


def _blobs(data: bytes, digest: str) -> list[tuple[str, int]]:
    """The config and layers of an image manifest, as (digest, size)."""
    document = _document(data, digest)
    layers = document.get("layers", [])
    if not isinstance(layers, list):
        raise TargetError(f"target: admitted manifest {digest} has malformed layers")
    return [_descriptor(item, digest) for item in (document.get("config"), *layers)]


def _children(data: bytes, digest: str) -> list[str]:
    """The manifests an index lists."""
    manifests = _document(data, digest).get("manifests", [])
    if not isinstance(manifests, list):
        raise TargetError(f"target: admitted index {digest} has malformed manifests")
    return [_descriptor(item, digest)[0] for item in manifests]
