"""Hash verification: THREATS P-03, T-01, F-08, F-10 and the pin/deny databases."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from pullguard.services.hashverify.verify import (
    BlobClaim,
    ManifestClaims,
    hash_stream,
    verify_blobs,
    verify_manifest,
)
from pullguard.services.runtime.errors import StagingError
from pullguard.services.runtime.findings import Verdict
from pullguard.services.runtime.staging import StagingStore

SESSION = "s1"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> StagingStore:
    return StagingStore(tmp_path / "staging")


def stage(store: StagingStore, data: bytes, key: str | None = None) -> str:
    key = key or sha256(data)
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


def codes(verdict: Verdict) -> list[str]:
    return [f.code for f in verdict.findings]


# ---------------------------------------------------------------- manifests


def claims(key: str, **fields: object) -> ManifestClaims:
    values: dict[str, object] = {"fetcher_digest": key, "size": len(MANIFEST)}
    values.update(fields)
    return ManifestClaims(staged_key=key, **values)  # type: ignore[arg-type]


def test_manifest_by_tag_allowed(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, docker_content_digest=key, tag="1"))
    assert check.verdict.allowed and check.verdict.findings == ()
    assert check.digest == key


def test_p03_requested_digest_mismatch(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    wanted = sha256(b"something else")
    check = verify_manifest(
        store, SESSION, claims(key, requested_digest=wanted, docker_content_digest=wanted)
    )
    assert not check.verdict.allowed
    assert codes(check.verdict) == ["hash.manifest_mismatch", "hash.header_mismatch"]
    assert check.digest == key


def test_p03_header_mismatch_alone(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, docker_content_digest=sha256(b"x")))
    assert codes(check.verdict) == ["hash.header_mismatch"]


@pytest.mark.parametrize("header", ["sha256:" + "A" * 64, "md5:abc", "garbage"])
def test_malformed_header_is_a_mismatch(store: StagingStore, header: str) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, docker_content_digest=header))
    assert codes(check.verdict) == ["hash.header_mismatch"]


def test_f08_pull_by_sha512_is_verified_with_sha512(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    wanted = sha512(MANIFEST)
    check = verify_manifest(
        store, SESSION, claims(key, requested_digest=wanted, docker_content_digest=wanted)
    )
    assert check.verdict.allowed, check.verdict.findings
    assert check.digest == wanted


def test_f08_sha512_mismatch_is_caught(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    wanted = sha512(MANIFEST + b" ")
    check = verify_manifest(store, SESSION, claims(key, requested_digest=wanted))
    assert codes(check.verdict) == ["hash.manifest_mismatch"]


def test_fetcher_claims_are_not_trusted(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(
        store, SESSION, claims(key, fetcher_digest=sha256(b"lie"), size=len(MANIFEST) + 1)
    )
    assert codes(check.verdict) == ["hash.staged_mismatch", "hash.size_mismatch"]


def test_staged_under_wrong_key(store: StagingStore) -> None:
    wrong = sha256(b"the key says this")
    stage(store, MANIFEST, key=wrong)
    check = verify_manifest(store, SESSION, claims(wrong, fetcher_digest=""))
    assert codes(check.verdict) == ["hash.staged_mismatch"]
    assert check.digest == sha256(MANIFEST)


def test_f10_manifest_size_claim(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, size=len(MANIFEST) - 1))
    assert codes(check.verdict) == ["hash.size_mismatch"]


def test_p03_tag_moved_against_pin(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    pinned = sha256(b"the pinned manifest")
    check = verify_manifest(store, SESSION, claims(key, tag="7.2", pinned_digest=pinned))
    assert codes(check.verdict) == ["hash.pin_mismatch"]
    assert check.verdict.findings[0].message == f"tag 7.2 moved: got {key}, expected {pinned}"


def test_p03_pin_holds(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, tag="7.2", pinned_digest=key))
    assert check.verdict.allowed


def test_p03_sha512_pin(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, pinned_digest=sha512(MANIFEST)))
    assert check.verdict.allowed
    assert check.digest == key


@pytest.mark.parametrize("form", [sha256, sha512])
def test_denied_manifest_digest(store: StagingStore, form: object) -> None:
    key = stage(store, MANIFEST)
    deny = [sha256(b"other"), form(MANIFEST)]  # type: ignore[operator]
    check = verify_manifest(store, SESSION, claims(key), deny)
    assert codes(check.verdict) == ["hash.denied_digest"]


def test_missing_staged_manifest_is_an_error(store: StagingStore) -> None:
    with pytest.raises(StagingError):
        verify_manifest(store, SESSION, claims(sha256(b"never staged")))


# ---------------------------------------------------------------- blobs


async def test_blobs_allowed(store: StagingStore) -> None:
    layer = b"layer bytes" * 1000
    config = b"{}"
    blobs = [BlobClaim(stage(store, config), 2), BlobClaim(stage(store, layer), len(layer))]
    verdict = await verify_blobs(store, SESSION, blobs)
    assert verdict.allowed and verdict.findings == ()


async def test_t01_blob_mismatch(store: StagingStore) -> None:
    good = b"x" * 4096
    key = sha256(good)
    stage(store, b"x" * 4095 + b"y", key=key)  # one byte flipped, same length
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(good))])
    assert codes(verdict) == ["hash.blob_mismatch"]


@pytest.mark.parametrize(("actual", "claimed"), [(1001, 1000), (999, 1000), (10, 0)])
async def test_f10_blob_size_lies(store: StagingStore, actual: int, claimed: int) -> None:
    data = b"z" * actual
    key = stage(store, data)  # the digest is true; only the size lies
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, claimed)])
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_f10_huge_claimed_size(store: StagingStore) -> None:
    key = stage(store, b"small")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 2**62)])
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_blob_missing(store: StagingStore) -> None:
    stage(store, b"present")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(sha256(b"absent"), 6)])
    assert codes(verdict) == ["hash.blob_missing"]


async def test_denied_blob(store: StagingStore) -> None:
    key = stage(store, b"known bad")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 9)], deny_digests=[key])
    assert codes(verdict) == ["hash.denied_digest"]


@pytest.mark.parametrize("digest", ["sha384:" + "a" * 96, "sha256:" + "A" * 64, "x"])
async def test_f08_unverifiable_blob_digest(store: StagingStore, digest: str) -> None:
    verdict = await verify_blobs(store, SESSION, [BlobClaim(digest, 1)])
    assert codes(verdict) == ["hash.unverifiable_digest"]


async def test_f08_sha512_blob(store: StagingStore) -> None:
    data = b"sha512 addressed"
    key = stage(store, data, key=sha512(data))
    assert (await verify_blobs(store, SESSION, [BlobClaim(key, len(data))])).allowed
    wrong = sha512(b"other")
    stage(store, data, key=wrong)
    assert codes(await verify_blobs(store, SESSION, [BlobClaim(wrong, len(data))])) == [
        "hash.blob_mismatch"
    ]


async def test_blobs_larger_than_a_chunk(store: StagingStore) -> None:
    data = bytes(range(256)) * (3 * 4096 + 7)  # a little over 3 MiB
    key = stage(store, data)
    assert (await verify_blobs(store, SESSION, [BlobClaim(key, len(data))])).allowed


async def test_repeated_blob_reported_once(store: StagingStore) -> None:
    data = b"same layer twice"
    key = sha256(data)
    stage(store, data + b"!", key=key)
    blob = BlobClaim(key, len(data))
    verdict = await verify_blobs(store, SESSION, [blob, blob])
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_too_many_blobs(store: StagingStore) -> None:
    blobs = [BlobClaim(sha256(str(i).encode()), 1) for i in range(4)]
    verdict = await verify_blobs(store, SESSION, blobs, max_blobs=3)
    assert codes(verdict) == ["hash.too_many_blobs"]


async def test_many_missing_blobs_stay_denied_and_bounded(store: StagingStore) -> None:
    blobs = [BlobClaim(sha256(str(i).encode()), 1) for i in range(120)]
    verdict = await verify_blobs(store, SESSION, blobs)
    assert not verdict.allowed
    assert len(verdict.findings) == 51


async def test_invalid_session_is_an_error(store: StagingStore) -> None:
    with pytest.raises(StagingError):
        await verify_blobs(store, "../escape", [BlobClaim(sha256(b"x"), 1)])


def test_hash_stream_reads_at_most_limit() -> None:
    digests, size = hash_stream(io.BytesIO(b"abcdef"), ["sha256"], limit=3)
    assert size == 3 and digests["sha256"] == sha256(b"abc")
