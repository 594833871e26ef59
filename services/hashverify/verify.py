"""Digests recomputed from the staged bytes, read here and nowhere else.

Nothing the fetcher or the upstream says about content is taken as fact
(THREATS I-2): the requested digest, the ``Docker-Content-Digest`` header,
the fetcher's own computed digest and size, descriptor digests and sizes
are all claims, compared with what this module computes over the exact
staged bytes. The pin database (tag -> digest) and the deny database of
known-bad digests are consulted on the computed digests.

Hashing streams in 1 MiB chunks; a blob's size is compared (from ``fstat``)
before any of it is hashed, and no read goes past the claimed size + 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from pullguard.services.runtime.digests import CHUNK, DigestSyntaxError, parse_digest
from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.staging import StagingStore

LAYER = "hashverify"
#: Blobs hashed at the same time; hashlib releases the GIL on large updates.
PARALLEL_BLOBS = 4
#: Findings kept per verdict (the first ones); the verdict is a DENY either way.
MAX_FINDINGS = 50


def _algorithm(digest: str) -> str | None:
    try:
        return parse_digest(digest)[0]
    except DigestSyntaxError:
        return None


def hash_stream(
    stream: BinaryIO, algorithms: Iterable[str], limit: int | None = None
) -> tuple[dict[str, str], int]:
    """Hash ``stream`` with each algorithm in one pass; return ({alg: digest}, size).

    With ``limit``, at most ``limit`` bytes are read.
    """
    hashers = {name: hashlib.new(name) for name in algorithms}
    size = 0
    while limit is None or size < limit:
        want = CHUNK if limit is None else min(CHUNK, limit - size)
        chunk = stream.read(want)
        if not chunk:
            break
        for hasher in hashers.values():
            hasher.update(chunk)
        size += len(chunk)
    return {name: f"{name}:{h.hexdigest()}" for name, h in hashers.items()}, size


@dataclass(frozen=True)
class ManifestClaims:
    """What was said about a staged manifest; every field may be empty."""

    staged_key: str
    #: Digest and size the fetcher computed: claims like any other.
    fetcher_digest: str = ""
    size: int = 0
    docker_content_digest: str = ""
    requested_digest: str = ""
    tag: str = ""
    pinned_digest: str = ""


@dataclass(frozen=True)
class ManifestCheck:
    """The manifest verdict and the digest computed here."""

    verdict: Verdict
    #: The digest computed here, in the requested digest's algorithm (sha256 by default).
    digest: str


def verify_manifest(
    staging_store: StagingStore,
    session: str,
    claims: ManifestClaims,
    deny_digests: Iterable[str] = (),
) -> ManifestCheck:
    """Recompute a staged manifest's digest and check every claim against it."""
    deny = [d for d in deny_digests if _algorithm(d) is not None]
    primary = _algorithm(claims.requested_digest) or "sha256"
    needed = {primary}
    for claim in (
        claims.docker_content_digest,
        claims.pinned_digest,
        claims.fetcher_digest,
        claims.staged_key,
        *deny,
    ):
        algorithm = _algorithm(claim)
        if algorithm is not None:
            needed.add(algorithm)
    with staging_store.open(session, claims.staged_key) as handle:
        computed, size = hash_stream(handle, sorted(needed))
    findings = list(_manifest_findings(claims, computed, size))
    findings.extend(
        Finding.error("hash.denied_digest", f"manifest {d} is in the deny list", digest=d)
        for d in deny
        if computed[parse_digest(d)[0]] == d
    )
    return ManifestCheck(Verdict.of(LAYER, findings), computed[primary])


def _compare(claim: str, computed: dict[str, str]) -> str | None:
    """None when ``claim`` names the computed digest, else what was computed."""
    algorithm = _algorithm(claim)
    if algorithm is None:
        return "(malformed claim)"
    return None if computed[algorithm] == claim else computed[algorithm]


def _manifest_findings(
    claims: ManifestClaims, computed: dict[str, str], size: int
) -> Iterable[Finding]:
    if claims.requested_digest:
        got = _compare(claims.requested_digest, computed)
        if got is not None:
            yield Finding.error(
                "hash.manifest_mismatch",
                f"got {got}, expected requested {claims.requested_digest[:140]}",
                computed=got,
                requested=claims.requested_digest,
            )
    if claims.docker_content_digest:
        got = _compare(claims.docker_content_digest, computed)
        if got is not None:
            yield Finding.error(
                "hash.header_mismatch",
                f"got {got}, expected Docker-Content-Digest {claims.docker_content_digest[:140]}",
                computed=got,
                header=claims.docker_content_digest,
            )
    for name, claim in (("staged key", claims.staged_key), ("fetcher", claims.fetcher_digest)):
        got = _compare(claim, computed) if claim else None
        if got is not None:
            # The bytes changed between the fetcher and here, or the fetcher lied.
            yield Finding.error(
                "hash.staged_mismatch", f"got {got}, expected {name} digest {claim[:140]}"
            )
    if claims.size != size:
        yield Finding.error(
            "hash.size_mismatch",
            f"manifest: got {size} bytes, expected {claims.size}",
            actual=size,
            claimed=claims.size,
        )
    if claims.pinned_digest:
        got = _compare(claims.pinned_digest, computed)
        if got is not None:
            prefix = f"tag {claims.tag[:128]} moved: " if claims.tag else "tag moved: "
            yield Finding.error(
                "hash.pin_mismatch",
                f"{prefix}got {got}, expected {claims.pinned_digest}",
                computed=got,
                pinned=claims.pinned_digest,
            )


@dataclass(frozen=True)
class BlobClaim:
    """A blob as a descriptor states it."""

    digest: str
    size: int
    media_type: str = ""


def verify_blob(
    staging_store: StagingStore, session: str, blob: BlobClaim, deny_digests: frozenset[str]
) -> list[Finding]:
    """Findings for one staged blob; an empty list means digest and size hold."""
    findings: list[Finding] = []
    if blob.digest in deny_digests:
        findings.append(
            Finding.error("hash.denied_digest", f"blob {blob.digest} is in the deny list")
        )
    try:
        algorithm, _ = parse_digest(blob.digest)
    except DigestSyntaxError as exc:
        findings.append(Finding.error("hash.unverifiable_digest", f"blob: {exc}"))
        return findings
    path = staging_store.path(session, blob.digest)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        findings.append(
            Finding.error(
                "hash.blob_missing", f"blob {blob.digest} is not staged", digest=blob.digest
            )
        )
        return findings
    with handle:
        actual_size = os.fstat(handle.fileno()).st_size
        if blob.size < 0 or actual_size != blob.size:
            # Also catches F-10 (a): a true digest over bytes the size lies about.
            findings.append(
                Finding.error(
                    "hash.size_mismatch",
                    f"blob {blob.digest}: got {actual_size} bytes, expected {blob.size}",
                    digest=blob.digest,
                    actual=actual_size,
                    claimed=blob.size,
                )
            )
            return findings
        computed, read = hash_stream(handle, [algorithm], limit=blob.size + 1)
    if read != blob.size:
        findings.append(
            Finding.error(
                "hash.size_mismatch",
                f"blob {blob.digest}: changed size while read, expected {blob.size}",
                digest=blob.digest,
            )
        )
    elif computed[algorithm] != blob.digest:
        findings.append(
            Finding.error(
                "hash.blob_mismatch",
                f"got {computed[algorithm]}, expected {blob.digest}",
                computed=computed[algorithm],
                digest=blob.digest,
            )
        )
    return findings


async def verify_blobs(
    staging_store: StagingStore,
    session: str,
    blobs: Sequence[BlobClaim],
    deny_digests: Iterable[str] = (),
    max_blobs: int = 1001,
) -> Verdict:
    """Verify every blob, hashing in worker threads so the event loop stays free.

    A blob listed twice with the same size is hashed once.
    """
    if len(blobs) > max_blobs:
        return Verdict.of(
            LAYER,
            [Finding.error("hash.too_many_blobs", f"got {len(blobs)} blobs, limit {max_blobs}")],
        )
    staging_store.session_dir(session)  # an invalid session is an error, not a finding
    deny = frozenset(deny_digests)
    unique = list(dict.fromkeys(blobs))
    slots = asyncio.Semaphore(PARALLEL_BLOBS)

    async def one(blob: BlobClaim) -> list[Finding]:
        async with slots:
            return await asyncio.to_thread(verify_blob, staging_store, session, blob, deny)

    results = await asyncio.gather(*(one(blob) for blob in unique))
    findings = [finding for found in results for finding in found]
    if len(findings) > MAX_FINDINGS:
        # Every blob finding is an ERROR, so the cut keeps the verdict a DENY.
        dropped = len(findings) - MAX_FINDINGS
        findings = [
            *findings[:MAX_FINDINGS],
            Finding.info("hash.findings_truncated", f"{dropped} more findings not shown"),
        ]
    return Verdict.of(LAYER, findings)
