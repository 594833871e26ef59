"""Claims checked by hashverify: embedded ``data`` (I-2), digest classes
(F-08, F-09), and the deny database file (reloaded on change, never skipped)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from pullguard.services.hashverify.claims import DenySet, DigestKind, classify
from pullguard.services.hashverify.embedded import data_findings
from pullguard.services.hashverify.verify import (
    BlobClaim,
    ManifestClaims,
    verify_blobs,
    verify_manifest,
)
from pullguard.services.runtime.denylist import DenyList, DenyListError
from pullguard.services.runtime.staging import StagingStore
from tests.support.bounds import LIMIT_NOT_FALLBACK

SESSION = "s1"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def descriptor(content: bytes, data: bytes | None = None, **fields: object) -> dict[str, object]:
    value: dict[str, object] = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": sha256(content),
        "size": len(content),
    }
    if data is not None:
        value["data"] = base64.b64encode(data).decode()
    value.update(fields)
    return value


def image(**parts: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **parts}).encode()


def codes_of(findings: list) -> list[str]:  # type: ignore[type-arg]
    return [f.code for f in findings]


# ---------------------------------------------------------------- embedded data


def test_i2_data_that_matches_is_fine() -> None:
    config = b'{"os":"linux"}'
    manifest = image(config=descriptor(config, config), layers=[descriptor(b"l", b"l")])
    assert data_findings(manifest) == []


def test_i2_data_with_other_bytes_than_the_digest() -> None:
    manifest = image(config=descriptor(b'{"os":"linux"}', b'{"os":"LINUX"}'))
    found = data_findings(manifest)
    assert codes_of(found) == ["hash.data_mismatch"]
    assert found[0].message.startswith("config.data: got sha256:")


def test_i2_data_longer_than_the_size() -> None:
    manifest = image(layers=[descriptor(b"abc"), descriptor(b"abc", b"abcd")])
    found = data_findings(manifest)
    assert codes_of(found) == ["hash.data_mismatch"]
    assert found[0].message == "layers[1].data: got 4 bytes, expected size 3"


@pytest.mark.parametrize("data", ["not base64!", 7, "YWJj\n"])
def test_i2_data_that_is_not_base64(data: object) -> None:
    manifest = image(layers=[{**descriptor(b"abc"), "data": data}])
    assert codes_of(data_findings(manifest)) == ["hash.data_mismatch"]


def test_i2_data_in_an_index_entry_and_subject() -> None:
    child = b'{"schemaVersion":2}'
    index = image(
        manifests=[descriptor(child, child + b" ")],
        subject=descriptor(b"subject", b"subject"),
    )
    assert codes_of(data_findings(index)) == ["hash.data_mismatch"]


def test_i2_data_with_an_unverifiable_digest() -> None:
    manifest = image(layers=[descriptor(b"abc", b"abc", digest="sha384:" + "a" * 96)])
    assert codes_of(data_findings(manifest)) == ["hash.unverifiable_digest"]


def test_i2_data_without_digest_or_size() -> None:
    manifest = image(
        layers=[{"data": "YWJj", "size": 3}, {"data": "YWJj", "digest": sha256(b"abc")}]
    )
    assert codes_of(data_findings(manifest)) == ["hash.data_mismatch"] * 2


@pytest.mark.parametrize("body", [b"not json", b"[" * 100_000, b'{"layers": 5}', b"[]"])
def test_i2_no_descriptors_nothing_to_compare(body: bytes) -> None:
    assert data_findings(body) == []


def test_i2_data_mismatch_denies_the_manifest(tmp_path: Path) -> None:
    store = StagingStore(tmp_path)
    manifest = image(config=descriptor(b"{}", b"[]"))
    key = sha256(manifest)
    with store.writer(SESSION) as writer:
        writer.write(manifest)
        writer.commit(key)
    check = verify_manifest(store, SESSION, ManifestClaims(key, key, len(manifest)))
    assert [f.code for f in check.verdict.findings] == ["hash.data_mismatch"]


# ---------------------------------------------------------------- digest classes


@pytest.mark.parametrize(
    ("digest", "kind"),
    [
        ("sha256:" + "a" * 64, DigestKind.VERIFIABLE),
        ("sha512:" + "a" * 128, DigestKind.VERIFIABLE),
        ("sha384:" + "a" * 96, DigestKind.UNVERIFIABLE),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", DigestKind.UNVERIFIABLE),
        ("sha256:" + "A" * 64, DigestKind.INVALID),
        ("sha512:" + "a" * 64, DigestKind.INVALID),
        ("", DigestKind.INVALID),
    ],
)
def test_f08_f09_digest_classes(digest: str, kind: DigestKind) -> None:
    assert classify(digest)[0] is kind


# ---------------------------------------------------------------- deny database


def write_db(path: Path, digests: list[str]) -> None:
    path.write_text("# known-bad digests\n" + "\n".join(digests) + "\n")
    # Guarantee a new stamp even on coarse-grained file systems.
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def stage(store: StagingStore, data: bytes, key: str | None = None) -> str:
    key = key or sha256(data)
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


@pytest.fixture
def many() -> list[str]:
    return [sha256(str(i).encode()) for i in range(100_000)]


async def test_deny_database_of_100k_entries(tmp_path: Path, many: list[str]) -> None:
    store = StagingStore(tmp_path / "staging")
    manifest = b'{"schemaVersion":2}'
    layer = b"known bad layer"
    key, layer_key = stage(store, manifest), stage(store, layer)
    path = tmp_path / "deny.txt"
    write_db(path, [*many[:50_000], key, *many[50_000:], layer_key])
    deny = DenySet(DenyList((), path))
    started = time.monotonic()
    check = verify_manifest(store, SESSION, ManifestClaims(key, key, len(manifest)), deny)
    verdict = await verify_blobs(store, SESSION, [BlobClaim(layer_key, len(layer))], deny)
    assert [f.code for f in check.verdict.findings] == ["hash.denied_digest"]
    assert [f.code for f in verdict.findings] == ["hash.denied_digest"]
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


def test_deny_database_updated_without_restart(tmp_path: Path, many: list[str]) -> None:
    store = StagingStore(tmp_path / "staging")
    manifest = b'{"schemaVersion":2}'
    key = stage(store, manifest)
    path = tmp_path / "deny.txt"
    write_db(path, many)
    deny = DenySet(DenyList((), path))
    claims = ManifestClaims(key, key, len(manifest))
    assert verify_manifest(store, SESSION, claims, deny).verdict.allowed
    write_db(path, [*many, sha512(manifest)])  # the operator adds the sha512 form
    assert not verify_manifest(store, SESSION, claims, deny).verdict.allowed
    write_db(path, many)  # ... and takes it out again
    assert verify_manifest(store, SESSION, claims, deny).verdict.allowed


@pytest.mark.parametrize("damage", ["deleted", "directory", "malformed", "not utf-8"])
async def test_deny_database_unreadable_is_an_error(tmp_path: Path, damage: str) -> None:
    store = StagingStore(tmp_path / "staging")
    manifest = b'{"schemaVersion":2}'
    key = stage(store, manifest)
    path = tmp_path / "deny.txt"
    write_db(path, [sha256(b"x")])
    deny = DenySet(DenyList((), path), [])
    claims = ManifestClaims(key, key, len(manifest))
    assert verify_manifest(store, SESSION, claims, deny).verdict.allowed
    path.unlink()
    if damage == "directory":
        path.mkdir()
    elif damage == "malformed":
        write_db(path, ["sha256:" + "A" * 64])
    elif damage == "not utf-8":
        path.write_bytes(b"\xff\xfe\n")
    with pytest.raises(DenyListError):
        verify_manifest(store, SESSION, claims, deny)
    with pytest.raises(DenyListError):
        await verify_blobs(store, SESSION, [BlobClaim(key, len(manifest))], deny)


async def test_deny_database_error_comes_before_any_hashing(tmp_path: Path) -> None:
    # Even a blob that is not staged at all: the database is consulted first.
    deny = DenySet(DenyList((), tmp_path / "absent.txt"))
    with pytest.raises(DenyListError):
        await verify_blobs(StagingStore(tmp_path), SESSION, [BlobClaim(sha256(b"x"), 1)], deny)


def test_plan_entries_join_the_database(tmp_path: Path) -> None:
    deny = DenySet(DenyList([sha256(b"config")], None), [sha256(b"plan")])
    assert sha256(b"config") in deny and sha256(b"plan") in deny
    assert sha256(b"neither") not in deny
    assert deny.denied([sha256(b"plan"), sha256(b"plan"), sha256(b"x")]) == [sha256(b"plan")]
