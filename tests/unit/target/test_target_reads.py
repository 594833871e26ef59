"""The target's read half (a replica serving what another admitted): bounded, and
credentials only for the target's own origin.

A manifest is read up to limits.manifest_bytes and refused when encoded; a blob
is streamed up to limits.blob_bytes; a blob redirect (object storage) is
followed up to limits.redirects times, and the Basic credentials never go along
to another origin. What comes back is only a claim: the caller hashes it
(tests/e2e/test_replica_restore.py).
"""

from __future__ import annotations

import hashlib

import pytest

from pullguard.services.runtime.errors import TargetError
from tests.support.hostile import HostileUpstream, Reply, endless, gzip_bytes
from tests.unit.target.test_target_auth import BASIC, BASIC_CHALLENGE, PASSWORD, USER

NAME = "mirror/lab/team/app"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB = b"verified layer bytes"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANIFEST_PATH = f"/v2/{NAME}/manifests/{DIGEST}"
BLOB_PATH = f"/v2/{NAME}/blobs/{BLOB_DIGEST}"


async def _blob(client, digest: str = BLOB_DIGEST) -> bytes:  # type: ignore[no-untyped-def]
    received = bytearray()
    size = await client.get_blob(NAME, digest, received.extend)
    assert size == len(received)
    return bytes(received)


async def test_a_manifest_and_a_blob_are_read_after_the_target_asks_for_credentials(
    registry: HostileUpstream, make_target
) -> None:
    registry.guard(MANIFEST_PATH, BASIC, Reply(body=MANIFEST), BASIC_CHALLENGE)
    registry.guard(BLOB_PATH, BASIC, Reply(body=BLOB), BASIC_CHALLENGE)
    client = make_target(registry.url, username=USER, password=PASSWORD)
    assert await client.get_manifest(NAME, DIGEST) == MANIFEST
    assert await _blob(client) == BLOB
    registry.reply(f"/v2/{NAME}/manifests/sha256:{'0' * 64}", Reply(status=404))
    assert await client.get_manifest(NAME, f"sha256:{'0' * 64}") is None


async def test_a_manifest_past_its_bound_or_encoded_is_refused(
    registry: HostileUpstream, make_target
) -> None:
    client = make_target(registry.url, limits={"manifest_bytes": 1024})
    registry.reply(MANIFEST_PATH, Reply(stream=endless()))
    with pytest.raises(TargetError, match="limits.manifest_bytes"):
        await client.get_manifest(NAME, DIGEST)
    registry.reply(
        MANIFEST_PATH, Reply(body=gzip_bytes(MANIFEST), headers={"Content-Encoding": "gzip"})
    )
    with pytest.raises(TargetError, match="gzip-encoded"):
        await client.get_manifest(NAME, DIGEST)


async def test_a_blob_past_limits_blob_bytes_is_refused(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(BLOB_PATH, Reply(stream=endless()))
    client = make_target(registry.url, limits={"blob_bytes": 1 << 20})
    with pytest.raises(TargetError, match="limits.blob_bytes"):
        await _blob(client)


async def test_a_redirect_is_followed_without_the_credentials(
    registry: HostileUpstream, elsewhere: HostileUpstream, make_target
) -> None:
    registry.guard(
        BLOB_PATH,
        BASIC,
        Reply(status=307, headers={"Location": f"{elsewhere.url}/bucket/blob?sig=1"}),
        BASIC_CHALLENGE,
    )
    elsewhere.reply("/bucket/blob", Reply(body=BLOB))
    client = make_target(registry.url, username=USER, password=PASSWORD)
    assert await _blob(client) == BLOB
    assert [s.headers.get("authorization") for s in elsewhere.requests] == [None]


async def test_redirects_are_bounded(registry: HostileUpstream, make_target) -> None:
    registry.redirect(BLOB_PATH, BLOB_PATH)
    client = make_target(registry.url, limits={"redirects": 2})
    with pytest.raises(TargetError, match="more than 2 redirects"):
        await _blob(client)
    assert len(registry.seen(BLOB_PATH)) == 4
