"""The referrers tag schema: the ``sha256-<hex>`` index listing a manifest's referrers.

A registry without the OCI 1.1 referrers API (distribution 2.8, Debian's
docker-registry) cannot answer ``GET /v2/<name>/referrers/<digest>``.
Clients then read the image index tagged ``sha256-<hex>`` (the subject's
digest, ``:`` made ``-``) and take its ``manifests`` as the referrers, as
go-containerregistry does for cosign. Whoever pushes a referrer keeps that
index up to date: read it, change it, write it back.

Other writers (a user's ``cosign sign --registry-referrers-mode=oci-1-1``)
share the index, so pullguard changes only its own entries: every other
entry is kept as it was read (same fields, same order; only JSON whitespace
may differ, the index itself being re-written), and an index that is not an
OCI image index is refused rather than overwritten. distribution 2.8 has no
conditional PUT: after writing, pullguard reads the index again and, if a
concurrent writer's version replaced its own, starts over, at most
:data:`MAX_ATTEMPTS` times. The index is never deleted, only emptied:
distribution deletes by digest, and an empty index of another image has the
same digest and would lose its tag too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pullguard.gateway.attest.documents import sha256
from pullguard.services.runtime.errors import TargetError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: Entries in one fallback index pullguard will read and write.
MAX_ENTRIES = 1000
#: Reads and writes of one change before giving up on a busy index.
MAX_ATTEMPTS = 3
_FALLBACK_RE = re.compile(r"sha256-[0-9a-f]{64}")


class ManifestClient(Protocol):
    async def get_manifest(self, name: str, digest: str) -> bytes | None: ...

    async def put_manifest(
        self, name: str, reference: str, data: bytes, media_type: str, digest: str
    ) -> None: ...


def fallback_tag(digest: str) -> str:
    """The tag of ``digest``'s referrers index: ``sha256-<hex>``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}"


def is_fallback_tag(tag: str) -> bool:
    return _FALLBACK_RE.fullmatch(tag) is not None


def entries(data: bytes | None, where: str) -> list[dict[str, Any]]:
    """The descriptors a fallback index lists; TargetError naming ``where`` if it is not one."""
    if data is None:
        return []
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise TargetError(f"attest: {where} is not JSON; not overwritten") from None
    if (
        not isinstance(document, dict)
        or document.get("schemaVersion") != 2
        or document.get("mediaType") != OCI_INDEX
        or not isinstance(document.get("manifests"), list)
    ):
        raise TargetError(f"attest: {where} is not an OCI image index; not overwritten")
    listed: list[dict[str, Any]] = document["manifests"]
    if len(listed) > MAX_ENTRIES:
        raise TargetError(f"attest: {where} lists more than {MAX_ENTRIES} referrers")
    if not all(isinstance(entry, dict) for entry in listed):
        raise TargetError(f"attest: {where} lists a referrer that is not a descriptor")
    return listed


def index_bytes(listed: Iterable[dict[str, Any]]) -> bytes:
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(listed)}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def with_entries(listed: list[dict[str, Any]], add: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``listed`` plus the descriptors of ``add`` it lacks, in order."""
    present = {entry.get("digest") for entry in listed}
    return listed + [entry for entry in add if entry["digest"] not in present]


def without_entries(listed: list[dict[str, Any]], digests: set[str]) -> list[dict[str, Any]]:
    return [entry for entry in listed if entry.get("digest") not in digests]


async def update_index(
    client: ManifestClient,
    name: str,
    subject: str,
    change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    done: Callable[[list[dict[str, Any]]], bool],
) -> None:
    """Read-modify-write ``subject``'s fallback index in ``name`` until ``done`` holds.

    ``change`` maps the entries read to the entries to write; ``done`` says
    whether entries read back hold pullguard's change. TargetError when the
    index is not one, or another writer kept replacing it.
    """
    tag = fallback_tag(subject)
    where = f"referrers index {name}:{tag}"
    for _ in range(MAX_ATTEMPTS):
        listed = entries(await client.get_manifest(name, tag), where)
        if done(listed):
            return
        changed = change(listed)
        if len(changed) > MAX_ENTRIES:
            raise TargetError(f"attest: {where} would list more than {MAX_ENTRIES} referrers")
        data = index_bytes(changed)
        await client.put_manifest(name, tag, data, OCI_INDEX, sha256(data))
    listed = entries(await client.get_manifest(name, tag), where)
    if not done(listed):
        raise TargetError(f"attest: {where} kept changing under pullguard; try again")
