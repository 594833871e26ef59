"""A target cannot make the gateway read without end or wait without end.

Answers are read up to a bound (limits.error_body_bytes, limits.token_bytes)
and the rest is left unread; a target that never answers, or answers a byte
at a time, fails the push with a TargetError once limits.idle_timeout or
the operation's deadline (limits.manifest_deadline, limits.blob_deadline)
has passed. Bounds here are small so each test takes well under a second;
the outer ``asyncio.wait_for`` only keeps a hang from becoming a slow test.
"""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pullguard.services.runtime.errors import TargetError
from tests.support.hostile import (
    BodyStream,
    HostileUpstream,
    Reply,
    bearer_challenge,
    endless,
    trickle,
)

NAME = "mirror/lab/team/app"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MANIFEST_PATH = f"/v2/{NAME}/manifests/v1"
UPLOADS = f"/v2/{NAME}/blobs/uploads/"
BLOB = b"verified layer bytes"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
HUGE = 50 * 1024 * 1024
LIMIT = 64 * 1024
#: Generous: a hang would be caught by this, a slow machine would not be.
PATIENCE = 10.0


def megabytes(total: int, chunk: bytes = b"E" * 1024 * 1024) -> BodyStream:
    """``total`` bytes of body, one preallocated chunk at a time."""

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    return stream


async def peak_memory(operation: Coroutine[Any, Any, Any]) -> tuple[BaseException | None, int]:
    """Run ``operation``; what it raised and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    try:
        await asyncio.wait_for(operation, PATIENCE)
    except TargetError as exc:
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


# -- bounded reads -----------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=500, headers={"Content-Length": str(HUGE)}, stream=megabytes(HUGE)),
        Reply(status=500, stream=megabytes(HUGE)),  # chunked, no length stated
        Reply(status=500, stream=endless(b"E" * 65536)),
    ],
    ids=["50 MB with its length", "50 MB chunked", "endless"],
)
async def test_a_huge_error_body_is_read_only_up_to_the_limit(
    registry: HostileUpstream, make_target, reply: Reply
) -> None:
    registry.reply(MANIFEST_PATH, reply, method="PUT")
    client = make_target(registry.url, limits={"error_body_bytes": LIMIT})

    error, peak = await peak_memory(client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST))

    assert isinstance(error, TargetError)
    assert f"PUT manifest {NAME}:v1 at {registry.url} answered 500: EEE" in str(error)
    # Reading it all would hold 50 MB; the bound holds one network read more
    # than LIMIT. What the server got out before the client hung up sits in
    # socket buffers of a few MB at most.
    assert peak < 8 * 1024 * 1024
    assert registry.seen(MANIFEST_PATH)[0].bytes_sent < HUGE // 2


async def test_a_huge_token_answer_is_read_only_up_to_the_limit(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(MANIFEST_PATH, bearer_challenge(f"{registry.url}/token"), method="PUT")
    registry.reply("/token", Reply(stream=megabytes(HUGE, b'{"token": "' + b"t" * 65536)))
    client = make_target(registry.url, username="u", password="p", limits={"token_bytes": LIMIT})

    error, peak = await peak_memory(client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST))

    assert isinstance(error, TargetError)
    assert "token request" in str(error)
    assert peak < 8 * 1024 * 1024
    assert registry.seen("/token")[0].bytes_sent < HUGE // 2


async def test_a_compressed_error_body_is_not_inflated_past_the_limit(
    registry: HostileUpstream, make_target
) -> None:
    # 64 MB of zeros in about 64 KB of gzip: decoded whole on arrival, one
    # network read would be a thousand times the bound.
    encoder = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    bomb = encoder.compress(b"\0" * (64 * 1024 * 1024)) + encoder.flush()
    registry.reply(
        MANIFEST_PATH,
        Reply(status=500, headers={"Content-Encoding": "gzip"}, body=bomb),
        method="PUT",
    )
    client = make_target(registry.url, limits={"error_body_bytes": LIMIT})

    error, peak = await peak_memory(client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST))

    assert isinstance(error, TargetError)
    assert f"at {registry.url} answered 500: (gzip-encoded body)" in str(error)
    assert peak < 8 * 1024 * 1024
    assert registry.seen(MANIFEST_PATH)[0].headers.get("accept-encoding") == "identity"


async def test_a_compressed_token_answer_is_refused(registry: HostileUpstream, make_target) -> None:
    encoder = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    body = encoder.compress(b'{"token": "push-token"}') + encoder.flush()
    registry.reply(MANIFEST_PATH, bearer_challenge(f"{registry.url}/token"), method="PUT")
    registry.reply("/token", Reply(headers={"Content-Encoding": "gzip"}, body=body))
    client = make_target(registry.url, username="u", password="p")

    with pytest.raises(TargetError, match="token response is gzip-encoded"):
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert registry.seen("/token")[0].headers.get("accept-encoding") == "identity"


# -- stalls --------------------------------------------------------------------------


async def test_a_target_that_never_answers_fails_after_the_idle_timeout(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(MANIFEST_PATH, Reply(status=201, delay=3600), method="PUT")
    client = make_target(registry.url, limits={"idle_timeout": 0.2})

    with pytest.raises(TargetError, match=f"PUT {MANIFEST_PATH} at {registry.url} timed out"):
        await asyncio.wait_for(
            client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST), PATIENCE
        )


async def test_a_target_answering_a_byte_at_a_time_fails_at_the_manifest_deadline(
    registry: HostileUpstream, make_target
) -> None:
    # Never quiet for long enough to trip the idle timeout: only the deadline
    # on the whole operation ends this.
    registry.reply(
        MANIFEST_PATH,
        Reply(status=500, stream=trickle(b"x" * 100_000, interval=0.02)),
        method="PUT",
    )
    client = make_target(registry.url, limits={"idle_timeout": 5.0, "manifest_deadline": 0.5})

    with pytest.raises(TargetError, match=f"at {registry.url} took more than 0.5s"):
        await asyncio.wait_for(
            client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST), PATIENCE
        )


async def test_an_upload_answered_a_byte_at_a_time_fails_at_the_blob_deadline(
    registry: HostileUpstream, make_target, blob_file: Callable[[bytes], Path]
) -> None:
    registry.reply(UPLOADS, Reply(status=202, headers={"Location": "/upload/1"}), method="POST")
    registry.reply(
        "/upload/1",
        Reply(status=201, stream=trickle(b"x" * 100_000, interval=0.02)),
        method="PUT",
    )
    client = make_target(registry.url, limits={"idle_timeout": 5.0, "blob_deadline": 0.5})

    with pytest.raises(TargetError, match=f"upload of blob {BLOB_DIGEST} at .* took more than"):
        await asyncio.wait_for(
            client.push_blob(NAME, BLOB_DIGEST, blob_file(BLOB), len(BLOB)), PATIENCE
        )


async def test_a_token_realm_that_stalls_fails_at_the_deadline(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(MANIFEST_PATH, bearer_challenge(f"{registry.url}/token"), method="PUT")
    registry.reply("/token", Reply(stream=trickle(b" " * 100_000, interval=0.02)))
    client = make_target(
        registry.url,
        username="u",
        password="p",
        limits={"idle_timeout": 5.0, "manifest_deadline": 0.5},
    )

    with pytest.raises(TargetError, match="took more than 0.5s"):
        await asyncio.wait_for(
            client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST), PATIENCE
        )
