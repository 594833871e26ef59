"""Digests recomputed from the staged bytes, read here and nowhere else.

Nothing the fetcher or the upstream says about content is taken as fact
(THREATS I-2): the requested digest, the ``Docker-Content-Digest`` and
``Content-Length`` headers, the fetcher's own computed digest and size,
descriptor digests and sizes (the parent index's too) and embedded ``data``
are all claims, compared with what this module computes over the exact
staged bytes. The pin (tag -> digest) and the deny database of known-bad
digests are consulted on the computed digests.

Every manifest is hashed with both sha256 and sha512, and every blob with
its address algorithm and sha256, so a deny entry in sha256 matches content
addressed by sha512 too (F-08: sha512 is verified fully, never skipped).
When the deny database lists sha512 digests, every blob is hashed with
sha512 as well, so such an entry matches content addressed by sha256.
Hashing streams in 1 MiB chunks; a blob's size is compared (from ``fstat``)
before any of it is hashed, and no read goes past the claimed size + 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from pullguard.services.hashverify.claims import (
    CANONICAL,
    MAX_EXCHANGES,
    Exchange,
    ResponseClaim,
    algorithm_of,
    claims_by_digest,
    header_algorithms,
    response_findings,
    unusable_claim,
)
from pullguard.services.hashverify.embedded import data_findings
from pullguard.services.runtime.denylist import algorithms_in
from pullguard.services.runtime.digests import CHUNK
from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.staging import FileStamp, StagingStore

LAYER = "hashverify"
#: Blobs hashed at the same time; hashlib releases the GIL on large updates.
PARALLEL_BLOBS = 4
#: Findings kept per verdict (the first ones); the verdict is a DENY either way.
MAX_FINDINGS = 50
#: Every manifest is hashed with both algorithms: a few MiB at most.
_BOTH = ("sha256", "sha512")
#: Manifests up to this size are read whole, to check embedded ``data``.
MAX_PARSE_BYTES = 4 * 1024 * 1024


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


def _denied(what: str, digests: Iterable[str], deny: Container[str]) -> list[Finding]:
    return [
        Finding.error("hash.denied_digest", f"{what} {d} is in the deny database", digest=d)
        for d in dict.fromkeys(digests)
        if d in deny
    ]


@dataclass(frozen=True)
class DescriptorClaim:
    """A digest and size some descriptor states for an object."""

    digest: str
    size: int


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
    #: Headers of the responses that carried the manifest.
    responses: tuple[ResponseClaim, ...] = ()
    #: Descriptors naming this manifest in a parent index (F-10 (e)).
    parent_descriptors: tuple[DescriptorClaim, ...] = ()


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
    deny: Container[str] = frozenset(),
    max_parse_bytes: int = MAX_PARSE_BYTES,
) -> ManifestCheck:
    """Recompute a staged manifest's digest and check every claim against it."""
    with staging_store.open(session, claims.staged_key) as handle:
        whole = os.fstat(handle.fileno()).st_size <= max_parse_bytes
        if whole:
            data = handle.read(max_parse_bytes + 1)
            computed = {name: f"{name}:{hashlib.new(name, data).hexdigest()}" for name in _BOTH}
            size = len(data)
        else:
            computed, size = hash_stream(handle, _BOTH)
    findings = list(_manifest_findings(claims, computed, size))
    findings.extend(
        response_findings(
            claims.responses,
            "manifest",
            computed,
            size,
            already_checked=claims.docker_content_digest,
        )
    )
    if whole:
        findings.extend(data_findings(data))
    findings.extend(_denied("manifest", computed.values(), deny))
    primary = algorithm_of(claims.requested_digest) or CANONICAL
    return ManifestCheck(Verdict.of(LAYER, findings), computed[primary])


def _compare(claim: str, computed: Mapping[str, str]) -> str | None:
    """None when ``claim`` names the computed digest, else what was computed."""
    algorithm = algorithm_of(claim)
    if algorithm is None:
        return "(malformed claim)"
    return None if computed[algorithm] == claim else computed[algorithm]


def _digest_claim(
    claim: str, computed: Mapping[str, str], where: str, code: str, label: str, key: str
) -> Iterable[Finding]:
    """A finding when a stated digest is unusable or names other bytes; none if unstated."""
    if not claim:
        return
    unusable = unusable_claim(claim, where)
    if unusable is not None:
        yield unusable
        return
    got = _compare(claim, computed)
    if got is not None:
        yield Finding.error(
            code, f"got {got}, expected {label} {claim}", **{"computed": got, key: claim}
        )


def _manifest_findings(
    claims: ManifestClaims, computed: Mapping[str, str], size: int
) -> Iterable[Finding]:
    yield from _digest_claim(
        claims.requested_digest,
        computed,
        "requested digest",
        "hash.manifest_mismatch",
        "requested",
        "requested",
    )
    yield from _digest_claim(
        claims.docker_content_digest,
        computed,
        "manifest: Docker-Content-Digest",
        "hash.header_mismatch",
        "Docker-Content-Digest",
        "header",
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
        yield from _pin_findings(claims, computed)
    for parent in claims.parent_descriptors:
        yield from _parent_findings(parent, computed, size)


def _pin_findings(claims: ManifestClaims, computed: Mapping[str, str]) -> Iterable[Finding]:
    unusable = unusable_claim(claims.pinned_digest, "pinned digest")
    if unusable is not None:
        yield unusable
        return
    got = _compare(claims.pinned_digest, computed)
    if got is not None:
        prefix = f"tag {claims.tag[:128]} moved: " if claims.tag else "tag moved: "
        yield Finding.error(
            "hash.pin_mismatch",
            f"{prefix}got {got}, expected {claims.pinned_digest}",
            computed=got,
            pinned=claims.pinned_digest,
        )


def _parent_findings(
    parent: DescriptorClaim, computed: Mapping[str, str], size: int
) -> Iterable[Finding]:
    unusable = unusable_claim(parent.digest, "parent index entry")
    if unusable is not None:
        yield unusable
        return
    got = _compare(parent.digest, computed)
    if got is not None:
        yield Finding.error(
            "hash.manifest_mismatch",
            f"got {got}, expected parent index entry {parent.digest}",
            computed=got,
            requested=parent.digest,
        )
    if parent.size != size:
        yield Finding.error(
            "hash.size_mismatch",
            f"manifest: got {size} bytes, expected parent index entry size {parent.size}",
            actual=size,
            claimed=parent.size,
        )


@dataclass(frozen=True)
class BlobClaim:
    """A blob as a descriptor states it."""

    digest: str
    size: int
    media_type: str = ""


def verify_blob(
    staging_store: StagingStore,
    session: str,
    blob: BlobClaim,
    deny: Container[str],
    responses: Sequence[ResponseClaim] = (),
) -> list[Finding]:
    """Findings for one staged blob; an empty list means every claim holds.

    The deny database is consulted first, before any hashing: when it cannot
    be read, its error ends the request before gigabytes are hashed.
    """
    return verify_blob_stamped(staging_store, session, blob, deny, responses).findings


@dataclass(frozen=True)
class BlobCheck:
    """One blob's findings, and the stamp of the file hashed when every claim held."""

    findings: list[Finding]
    #: Set only for a blob without findings whose file did not change while it was read.
    stamp: FileStamp | None = None


def verify_blob_stamped(
    staging_store: StagingStore,
    session: str,
    blob: BlobClaim,
    deny: Container[str],
    responses: Sequence[ResponseClaim] = (),
) -> BlobCheck:
    """:func:`verify_blob`, with the stamp of the staged file it hashed (see FileStamp)."""
    what = f"blob {blob.digest[:140]}"
    # A claimed digest on the deny list is refused whatever the bytes are.
    findings = _denied("blob", [blob.digest], deny)
    unusable = unusable_claim(blob.digest, "blob digest")
    if unusable is not None:
        return BlobCheck([*findings, unusable])
    algorithm = algorithm_of(blob.digest)
    assert algorithm is not None
    path = staging_store.path(session, blob.digest)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        findings.append(
            Finding.error("hash.blob_missing", f"{what} is not staged", digest=blob.digest)
        )
        return BlobCheck(findings)
    with handle:
        before = FileStamp.of(os.fstat(handle.fileno()))
        actual_size = before.size
        if blob.size < 0 or actual_size != blob.size:
            # F-10 (a)-(d): a true digest over bytes the size lies about.
            findings.append(
                Finding.error(
                    "hash.size_mismatch",
                    f"{what}: got {actual_size} bytes, expected {blob.size}",
                    digest=blob.digest,
                    actual=actual_size,
                    claimed=blob.size,
                )
            )
            return BlobCheck(findings)
        # A deny entry in an algorithm we cannot compute cannot match anyway.
        denied_in = algorithms_in(deny) & frozenset(_BOTH)
        needed = {algorithm, CANONICAL, *header_algorithms(responses), *denied_in}
        computed, read = hash_stream(handle, sorted(needed), limit=blob.size + 1)
        unchanged = FileStamp.of(os.fstat(handle.fileno())) == before
    if read != blob.size:
        findings.append(
            Finding.error(
                "hash.size_mismatch",
                f"{what}: changed size while read, expected {blob.size}",
                digest=blob.digest,
            )
        )
        return BlobCheck(findings)
    if computed[algorithm] != blob.digest:
        findings.append(
            Finding.error(
                "hash.blob_mismatch",
                f"got {computed[algorithm]}, expected {blob.digest}",
                computed=computed[algorithm],
                digest=blob.digest,
            )
        )
    findings.extend(response_findings(responses, what, computed, read))
    # Known-bad bytes are refused under any name they are served as.
    findings.extend(
        _denied("blob content", (d for d in computed.values() if d != blob.digest), deny)
    )
    return BlobCheck(findings, before if unchanged and not findings else None)


async def verify_blobs(
    staging_store: StagingStore,
    session: str,
    blobs: Sequence[BlobClaim],
    deny: Container[str] = frozenset(),
    max_blobs: int = 1001,
    exchanges: Sequence[Exchange] = (),
) -> Verdict:
    """Verify every blob, hashing in worker threads so the event loop stays free.

    ``exchanges`` are the fetcher's records of the blob downloads: the headers
    of each response for a blob's digest are checked against that blob. A
    blob listed twice with the same size is hashed once.
    """
    verified = await verify_blobs_stamped(staging_store, session, blobs, deny, max_blobs, exchanges)
    return verified.verdict


@dataclass(frozen=True)
class BlobsCheck:
    """The verdict on a set of blobs, and the stamp of each staged file found as claimed."""

    verdict: Verdict
    #: By digest; a digest whose every claim held and whose file stayed unchanged.
    stamps: dict[str, FileStamp]


async def verify_blobs_stamped(
    staging_store: StagingStore,
    session: str,
    blobs: Sequence[BlobClaim],
    deny: Container[str] = frozenset(),
    max_blobs: int = 1001,
    exchanges: Sequence[Exchange] = (),
) -> BlobsCheck:
    """:func:`verify_blobs`, with the stamps of the files it hashed (see FileStamp)."""
    if len(blobs) > max_blobs:
        return BlobsCheck(
            Verdict.of(
                LAYER,
                [
                    Finding.error(
                        "hash.too_many_blobs", f"got {len(blobs)} blobs, limit {max_blobs}"
                    )
                ],
            ),
            {},
        )
    staging_store.session_dir(session)  # an invalid session is an error, not a finding
    first: list[Finding] = []
    if len(exchanges) > MAX_EXCHANGES:
        first.append(
            Finding.error(
                "hash.too_many_exchanges",
                f"got {len(exchanges)} exchanges, limit {MAX_EXCHANGES}",
            )
        )
    responses = claims_by_digest(exchanges, "blob")
    unique = list(dict.fromkeys(blobs))
    slots = asyncio.Semaphore(PARALLEL_BLOBS)

    async def one(blob: BlobClaim) -> BlobCheck:
        async with slots:
            return await asyncio.to_thread(
                verify_blob_stamped,
                staging_store,
                session,
                blob,
                deny,
                responses.get(blob.digest, ()),
            )

    results = await asyncio.gather(*(one(blob) for blob in unique))
    findings = first + [finding for check in results for finding in check.findings]
    if len(findings) > MAX_FINDINGS:
        # Every blob finding is an ERROR, so the cut keeps the verdict a DENY.
        dropped = len(findings) - MAX_FINDINGS
        findings = [
            *findings[:MAX_FINDINGS],
            Finding.info("hash.findings_truncated", f"{dropped} more findings not shown"),
        ]
    return BlobsCheck(Verdict.of(LAYER, findings), _agreed_stamps(unique, results))


def _agreed_stamps(blobs: Sequence[BlobClaim], checks: Sequence[BlobCheck]) -> dict[str, FileStamp]:
    """The stamp of each digest all of whose claims held on one unchanged file."""
    seen: dict[str, FileStamp | None] = {}
    for blob, check in zip(blobs, checks, strict=True):
        earlier = seen.get(blob.digest, check.stamp)
        seen[blob.digest] = check.stamp if earlier == check.stamp else None
    return {digest: stamp for digest, stamp in seen.items() if stamp is not None}


def manifest_responses(exchanges: Sequence[Exchange]) -> tuple[ResponseClaim, ...]:
    """Response claims of the exchanges that fetched a manifest."""
    grouped = claims_by_digest(exchanges, "manifest")
    return tuple(claim for claims in grouped.values() for claim in claims)
