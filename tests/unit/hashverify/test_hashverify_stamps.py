"""hashverify's stamp of a staged file it found as claimed (see FileStamp).

The gateway takes a stamped file into the admitted store without hashing it
again, so a stamp may only come with a blob every claim of which held, over a
file that did not change while it was read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from pullguard.services.hashverify import verify
from pullguard.services.hashverify.verify import BlobClaim, verify_blobs_stamped
from pullguard.services.runtime.staging import FileStamp, StagingStore

SESSION = "s1"


def _stage(store: StagingStore, data: bytes, key: str = "") -> str:
    key = key or "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


@pytest.fixture
def store(tmp_path: Path) -> StagingStore:
    return StagingStore(tmp_path / "staging")


async def test_a_blob_found_as_claimed_comes_with_the_stamp_of_its_file(
    store: StagingStore,
) -> None:
    data = b"layer bytes" * 1000
    key = _stage(store, data)
    checked = await verify_blobs_stamped(store, SESSION, [BlobClaim(key, len(data))])
    assert checked.verdict.allowed
    assert checked.stamps == {key: FileStamp.of(store.path(SESSION, key).stat())}


async def test_a_blob_that_does_not_hash_to_its_digest_has_no_stamp(store: StagingStore) -> None:
    good = b"what the manifest names"
    key = _stage(
        store, b"other bytes, same length!", key="sha256:" + hashlib.sha256(good).hexdigest()
    )
    checked = await verify_blobs_stamped(store, SESSION, [BlobClaim(key, 25)])
    assert not checked.verdict.allowed
    assert checked.stamps == {}


async def test_a_blob_whose_size_lies_has_no_stamp(store: StagingStore) -> None:
    data = b"twelve bytes"
    key = _stage(store, data)
    checked = await verify_blobs_stamped(store, SESSION, [BlobClaim(key, 11)])
    assert not checked.verdict.allowed
    assert checked.stamps == {}


async def test_a_file_that_changes_while_it_is_hashed_has_no_stamp(
    store: StagingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"layer bytes" * 1000
    key = _stage(store, data)
    path = store.path(SESSION, key)
    real_hash_stream = verify.hash_stream

    def touched_while_read(*args: Any, **kwargs: Any) -> Any:
        hashed = real_hash_stream(*args, **kwargs)
        os.utime(path, ns=(0, 0))  # a write meanwhile would change the stamp as well
        return hashed

    monkeypatch.setattr(verify, "hash_stream", touched_while_read)
    checked = await verify_blobs_stamped(store, SESSION, [BlobClaim(key, len(data))])
    assert checked.verdict.allowed  # the bytes read were the right ones ...
    assert checked.stamps == {}  # ... but the file is not the one they were read from


async def test_a_digest_any_claim_of_which_fails_has_no_stamp(store: StagingStore) -> None:
    data = b"layer bytes" * 1000
    key = _stage(store, data)
    claims = [BlobClaim(key, len(data)), BlobClaim(key, len(data) + 1)]
    checked = await verify_blobs_stamped(store, SESSION, claims)
    assert not checked.verdict.allowed
    assert checked.stamps == {}
