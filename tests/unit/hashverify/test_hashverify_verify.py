"""Hash verification of staged bytes: THREATS P-03, T-01, F-08, F-09, F-10."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path

import pytest

from pullguard.services.hashverify.claims import DenySet, Exchange, ResponseClaim
from pullguard.services.hashverify.verify import (
    BlobClaim,
    DescriptorClaim,
    ManifestClaims,
    hash_stream,
    verify_blobs,
    verify_manifest,
)
from pullguard.services.runtime.denylist import DenyList
from pullguard.services.runtime.errors import StagingError
from pullguard.services.runtime.findings import Verdict
from pullguard.services.runtime.staging import StagingStore

SESSION = "s1"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"

#: F-08: well-formed by the OCI grammar, but not recomputable here.
UNVERIFIABLE = [
    "sha384:" + "a" * 96,
    "blake3:" + "a" * 64,
    "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
    "md5:" + "a" * 32,
]
#: F-09: malformed; never normalised into something that could match.
INVALID = [
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "SHA256:" + "a" * 64,
    "sha256::" + "a" * 64,
    "sha256:" + "a" * 64 + "\n",
    "sha256:" + "\uff11" * 64,  # fullwidth digit one
    "sha256+:" + "a" * 64,
    "sha256..x:" + "a" * 64,
    "x",
]


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


def blob_exchange(digest: str, status: int = 200, method: str = "GET", **headers: str) -> Exchange:
    return Exchange(
        method=method,
        url=f"https://registry.example/v2/app/blobs/{digest}",
        status=status,
        purpose="blob",
        digest=digest,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


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


def test_p03b_body_differs_from_requested_digest_and_header(store: StagingStore) -> None:
    # A request for @AAA returns a body hashing to BBB, with header AAA.
    key = stage(store, MANIFEST)
    wanted = sha256(b"something else")
    check = verify_manifest(
        store, SESSION, claims(key, requested_digest=wanted, docker_content_digest=wanted)
    )
    assert not check.verdict.allowed
    assert codes(check.verdict) == ["hash.manifest_mismatch", "hash.header_mismatch"]
    assert check.digest == key  # what was computed, never what was asked


def test_p03b_truthful_header_does_not_rescue_the_wrong_body(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(
        store, SESSION, claims(key, requested_digest=sha256(b"other"), docker_content_digest=key)
    )
    assert codes(check.verdict) == ["hash.manifest_mismatch"]


def test_t01_manifest_correct_bytes_wrong_header(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, docker_content_digest=sha256(b"x")))
    assert codes(check.verdict) == ["hash.header_mismatch"]


@pytest.mark.parametrize("header", INVALID)
def test_f09_malformed_header_is_invalid(store: StagingStore, header: str) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, docker_content_digest=header))
    assert codes(check.verdict) == ["hash.invalid_digest"]


@pytest.mark.parametrize("header", UNVERIFIABLE)
def test_f08_header_in_unknown_algorithm_is_unverifiable(store: StagingStore, header: str) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, docker_content_digest=header))
    assert codes(check.verdict) == ["hash.unverifiable_digest"]


@pytest.mark.parametrize("requested", UNVERIFIABLE)
def test_f08_pull_by_unknown_algorithm_is_unverifiable(store: StagingStore, requested: str) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, requested_digest=requested))
    assert codes(check.verdict) == ["hash.unverifiable_digest"]
    assert check.digest == key


@pytest.mark.parametrize("requested", INVALID)
def test_f09_pull_by_malformed_digest_is_invalid(store: StagingStore, requested: str) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, requested_digest=requested))
    assert codes(check.verdict) == ["hash.invalid_digest"]


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


def test_manifest_size_claim_of_the_fetcher(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, size=len(MANIFEST) - 1))
    assert codes(check.verdict) == ["hash.size_mismatch"]


def test_f10e_index_entry_with_wrong_size(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    parent = DescriptorClaim(key, len(MANIFEST) + 1)
    check = verify_manifest(store, SESSION, claims(key, parent_descriptors=(parent,)))
    assert codes(check.verdict) == ["hash.size_mismatch"]
    assert "parent index entry" in check.verdict.findings[0].message


def test_f10e_index_entry_with_wrong_digest(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    parent = DescriptorClaim(sha256(b"another child"), len(MANIFEST))
    check = verify_manifest(store, SESSION, claims(key, parent_descriptors=(parent,)))
    assert codes(check.verdict) == ["hash.manifest_mismatch"]


def test_f10e_index_entry_that_holds(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    entries = (
        DescriptorClaim(key, len(MANIFEST)),
        DescriptorClaim(sha512(MANIFEST), len(MANIFEST)),
    )
    assert verify_manifest(store, SESSION, claims(key, parent_descriptors=entries)).verdict.allowed


def test_t03_manifest_content_length_lie(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    responses = (ResponseClaim("GET m", 200, key, str(len(MANIFEST) + 10)),)
    check = verify_manifest(store, SESSION, claims(key, responses=responses))
    assert codes(check.verdict) == ["hash.size_mismatch"]
    truthful = (ResponseClaim("GET m", 200, key, str(len(MANIFEST))),)
    assert verify_manifest(store, SESSION, claims(key, responses=truthful)).verdict.allowed


def test_t01_manifest_header_of_an_earlier_response(store: StagingStore) -> None:
    # HEAD said one digest, GET (StagedManifest's header) the true one.
    key = stage(store, MANIFEST)
    responses = (
        ResponseClaim("HEAD m", 200, sha256(b"moved"), ""),
        ResponseClaim("GET m", 200, key, ""),
    )
    check = verify_manifest(
        store, SESSION, claims(key, docker_content_digest=key, responses=responses)
    )
    assert codes(check.verdict) == ["hash.header_mismatch"]


def test_p03a_tag_moved_against_pin(store: StagingStore) -> None:
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


def test_f08_pin_in_unknown_algorithm(store: StagingStore) -> None:
    key = stage(store, MANIFEST)
    check = verify_manifest(store, SESSION, claims(key, pinned_digest=UNVERIFIABLE[0]))
    assert codes(check.verdict) == ["hash.unverifiable_digest"]


@pytest.mark.parametrize("form", [sha256, sha512])
def test_denied_manifest_digest(store: StagingStore, form: object) -> None:
    key = stage(store, MANIFEST)
    deny = [sha256(b"other"), form(MANIFEST)]  # type: ignore[operator]
    check = verify_manifest(store, SESSION, claims(key), deny)
    assert codes(check.verdict) == ["hash.denied_digest"]


def test_large_manifest_is_streamed(store: StagingStore) -> None:
    big = b"{" + b" " * (3 << 20) + b"}"
    key = stage(store, big)
    check = verify_manifest(store, SESSION, claims(key, size=len(big)), max_parse_bytes=1024)
    assert check.verdict.allowed and check.digest == key


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


async def test_t01_blob_one_byte_flipped(store: StagingStore) -> None:
    good = b"x" * 4096
    key = sha256(good)
    stage(store, b"x" * 4095 + b"y", key=key)  # one byte flipped, same length
    exchanges = [blob_exchange(key, docker_content_digest=key, content_length="4096")]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(good))], exchanges=exchanges)
    # The header repeats the (wrong) claim: the body does not match it either.
    assert codes(verdict) == ["hash.blob_mismatch", "hash.header_mismatch"]


async def test_t02d_spliced_resume_fails_the_digest(store: StagingStore) -> None:
    # The resume got 206 with bytes of a different blob: same size, other content.
    blob_a, blob_b = b"A" * 2048, b"B" * 2048
    key = sha256(blob_a)
    stage(store, blob_a[:1024] + blob_b[1024:], key=key)
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(blob_a))])
    assert codes(verdict) == ["hash.blob_mismatch"]


async def test_t01_correct_bytes_wrong_header(store: StagingStore) -> None:
    data = b"the right bytes"
    key = stage(store, data)
    wrong = sha256(b"another blob")
    exchanges = [blob_exchange(key, docker_content_digest=wrong, content_length=str(len(data)))]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(data))], exchanges=exchanges)
    assert codes(verdict) == ["hash.header_mismatch"]


async def test_t01_wrong_bytes_with_a_header_that_matches_them(store: StagingStore) -> None:
    data = b"substituted bytes"
    key = sha256(b"the bytes the manifest names")
    stage(store, data, key=key)
    exchanges = [blob_exchange(key, docker_content_digest=sha256(data))]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(data))], exchanges=exchanges)
    assert codes(verdict) == ["hash.blob_mismatch"]


async def test_t01_config_blob_mismatch(store: StagingStore) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    key = sha256(config)
    stage(store, config.replace(b"amd64", b"arm64"), key=key)
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(config), CONFIG_TYPE)])
    assert codes(verdict) == ["hash.blob_mismatch"]


async def test_t01_cdn_redirect_target_serves_wrong_bytes(store: StagingStore) -> None:
    good = b"layer" * 100
    key = sha256(good)
    stage(store, b"LAYER" * 100, key=key)
    exchanges = [
        blob_exchange(key, status=307),
        Exchange("GET", "https://cdn.example/x?sig=REDACTED", 200, "blob", key, {}),
    ]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(good))], exchanges=exchanges)
    assert codes(verdict) == ["hash.blob_mismatch"]


async def test_t01_redirect_naming_another_digest(store: StagingStore) -> None:
    data = b"layer" * 100
    key = stage(store, data)
    exchanges = [blob_exchange(key, status=307, docker_content_digest=sha256(b"x"))]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(data))], exchanges=exchanges)
    assert codes(verdict) == ["hash.header_mismatch"]


async def test_f10a_blob_one_byte_longer_than_its_size(store: StagingStore) -> None:
    data = b"z" * 1001
    key = stage(store, data)  # the digest is true; only the size lies
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)])
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_f10b_blob_one_byte_shorter_than_its_size(store: StagingStore) -> None:
    key = stage(store, b"z" * 999)
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)])
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_f10c_size_zero_for_a_non_empty_blob(store: StagingStore) -> None:
    key = stage(store, b"not empty")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 0)])
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_f10d_size_2_62_allocates_nothing(store: StagingStore) -> None:
    key = stage(store, b"small")
    tracemalloc.start()
    try:
        verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 2**62)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes(verdict) == ["hash.size_mismatch"]
    assert peak < 4 * 1024 * 1024


async def test_f10_negative_size(store: StagingStore) -> None:
    key = stage(store, b"")
    assert codes(await verify_blobs(store, SESSION, [BlobClaim(key, -1)])) == ["hash.size_mismatch"]


async def test_t03a_body_longer_than_content_length(store: StagingStore) -> None:
    # The fetcher stops at size + 1 bytes; what it staged is one byte too long.
    data = b"q" * 1001
    key = sha256(data[:1000])
    stage(store, data, key=key)
    exchanges = [blob_exchange(key, content_length="1000")]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)], exchanges=exchanges)
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_t03c_content_length_larger_than_the_size(store: StagingStore) -> None:
    data = b"q" * 1000
    key = stage(store, data)
    exchanges = [blob_exchange(key, content_length="2000")]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)], exchanges=exchanges)
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_t03e_head_content_length_differs(store: StagingStore) -> None:
    data = b"q" * 1000
    key = stage(store, data)
    exchanges = [
        blob_exchange(key, method="HEAD", content_length="999"),
        blob_exchange(key, content_length="1000"),
    ]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)], exchanges=exchanges)
    assert codes(verdict) == ["hash.size_mismatch"]


@pytest.mark.parametrize("length", ["-1", "1e3", " 1000x", "9" * 30, "\uff11"])
async def test_t03_content_length_not_a_number(store: StagingStore, length: str) -> None:
    key = stage(store, b"q" * 1000)
    exchanges = [blob_exchange(key, content_length=length)]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)], exchanges=exchanges)
    assert codes(verdict) == ["hash.size_mismatch"]


async def test_t03_encoded_and_partial_responses_are_no_size_claims(store: StagingStore) -> None:
    # T-10 (c): a transport-gzipped blob's Content-Length counts encoded bytes;
    # a 206 counts a range; an error page counts itself.
    key = stage(store, b"q" * 1000)
    exchanges = [
        blob_exchange(key, content_length="40", content_encoding="gzip"),
        blob_exchange(key, status=206, content_length="100"),
        blob_exchange(key, status=404, content_length="19", docker_content_digest="junk"),
        blob_exchange(key, content_length="1000", content_encoding="identity"),
    ]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)], exchanges=exchanges)
    assert verdict.allowed and verdict.findings == ()


async def test_headers_of_other_blobs_do_not_count(store: StagingStore) -> None:
    key = stage(store, b"q" * 1000)
    other = sha256(b"other")
    exchanges = [blob_exchange(other, content_length="5", docker_content_digest=other)]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 1000)], exchanges=exchanges)
    assert verdict.allowed


async def test_blob_missing(store: StagingStore) -> None:
    stage(store, b"present")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(sha256(b"absent"), 6)])
    assert codes(verdict) == ["hash.blob_missing"]


async def test_denied_blob(store: StagingStore) -> None:
    key = stage(store, b"known bad")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 9)], deny=[key])
    assert codes(verdict) == ["hash.denied_digest"]


async def test_denied_blob_re_addressed_by_sha512(store: StagingStore) -> None:
    data = b"known bad"
    key = stage(store, data, key=sha512(data))
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 9)], deny={sha256(data)})
    assert codes(verdict) == ["hash.denied_digest"]


async def test_sha512_deny_entry_matches_a_blob_addressed_by_sha256(store: StagingStore) -> None:
    data = b"known bad"
    key = stage(store, data)
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 9)], deny={sha512(data)})
    assert codes(verdict) == ["hash.denied_digest"]
    assert verdict.findings[0].evidence["digest"] == sha512(data)


async def test_sha512_entry_in_the_deny_file_matches_through_the_service_objects(
    store: StagingStore, tmp_path: Path
) -> None:
    data, other = b"known bad", b"fine"
    database = tmp_path / "deny.txt"
    database.write_text(f"{sha512(data)}\n")
    deny = DenySet(DenyList([], database))
    bad, good = stage(store, data), stage(store, other)
    verdict = await verify_blobs(store, SESSION, [BlobClaim(bad, 9), BlobClaim(good, 4)], deny=deny)
    assert codes(verdict) == ["hash.denied_digest"]


async def test_denied_bytes_served_under_another_name(store: StagingStore) -> None:
    bad = b"known bad"
    key = stage(store, bad, key=sha256(b"innocent"))
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 9)], deny={sha256(bad)})
    assert codes(verdict) == ["hash.blob_mismatch", "hash.denied_digest"]


@pytest.mark.parametrize("digest", UNVERIFIABLE)
async def test_f08_unverifiable_blob_digest(store: StagingStore, digest: str) -> None:
    verdict = await verify_blobs(store, SESSION, [BlobClaim(digest, 1)])
    assert codes(verdict) == ["hash.unverifiable_digest"]


@pytest.mark.parametrize("digest", INVALID)
async def test_f09_invalid_blob_digest(store: StagingStore, digest: str) -> None:
    verdict = await verify_blobs(store, SESSION, [BlobClaim(digest, 1)])
    assert codes(verdict) == ["hash.invalid_digest"]


async def test_f09_uppercase_twin_of_a_staged_blob_is_not_normalised(store: StagingStore) -> None:
    key = stage(store, b"data")
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key.upper(), 4)])
    assert codes(verdict) == ["hash.invalid_digest"]


async def test_f08_sha512_blob_verified_fully(store: StagingStore) -> None:
    data = b"sha512 addressed"
    key = stage(store, data, key=sha512(data))
    exchanges = [blob_exchange(key, docker_content_digest=key, content_length=str(len(data)))]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, len(data))], exchanges=exchanges)
    assert verdict.allowed and verdict.findings == ()
    wrong = sha512(b"other")
    stage(store, data, key=wrong)
    assert codes(await verify_blobs(store, SESSION, [BlobClaim(wrong, len(data))])) == [
        "hash.blob_mismatch"
    ]


async def test_f08_sha256_header_on_a_sha512_blob(store: StagingStore) -> None:
    data = b"sha512 addressed"
    key = stage(store, data, key=sha512(data))
    good = [blob_exchange(key, docker_content_digest=sha256(data))]
    assert (await verify_blobs(store, SESSION, [BlobClaim(key, 16)], exchanges=good)).allowed
    bad = [blob_exchange(key, docker_content_digest=sha256(b"x"))]
    verdict = await verify_blobs(store, SESSION, [BlobClaim(key, 16)], exchanges=bad)
    assert codes(verdict) == ["hash.header_mismatch"]


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
