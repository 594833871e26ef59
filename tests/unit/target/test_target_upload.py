"""Pushing to the target: where blob bytes may go, what an answer must say.

An upload Location off the target's own scheme, host and port is refused
before a byte (or a credential) is sent to it; a Docker-Content-Digest other
than the one pushed, or a status the push API does not use, is a
TargetError that names the step and the target.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pullguard.services.runtime.errors import TargetError
from tests.support.hostile import HostileUpstream, Reply

NAME = "mirror/lab/team/app"
UPLOADS = f"/v2/{NAME}/blobs/uploads/"
BLOB = b"verified layer bytes"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
USER, PASSWORD = "pusher", "s3cret-push"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BASIC_CHALLENGE = Reply(status=401, headers={"WWW-Authenticate": 'Basic realm="target"'})


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_path(reference: str) -> str:
    return f"/v2/{NAME}/manifests/{reference}"


# -- upload locations ----------------------------------------------------------

#: Locations off the target, as (what differs, template). {target} and
#: {elsewhere} are the two servers' ports; both listen on 127.0.0.1, and
#: "localhost" resolves there too, so a followed Location would arrive.
FOREIGN_LOCATIONS = [
    ("host", "http://localhost:{target}/upload/1"),
    ("port", "http://127.0.0.1:{elsewhere}/upload/1"),
    ("host and port", "http://localhost:{elsewhere}/upload/1"),
    ("scheme", "https://127.0.0.1:{target}/upload/1"),
    ("scheme-relative host", "//localhost:{elsewhere}/upload/1"),
    ("userinfo hiding the host", "http://127.0.0.1:{target}@localhost:{elsewhere}/upload/1"),
    ("unparsable port", "http://127.0.0.1:+{target}/upload/1"),
]


@pytest.mark.parametrize(
    "template", [t for _, t in FOREIGN_LOCATIONS], ids=[d for d, _ in FOREIGN_LOCATIONS]
)
async def test_an_upload_location_off_the_target_is_refused_and_nothing_goes_there(
    registry: HostileUpstream,
    elsewhere: HostileUpstream,
    make_target,
    blob_file: Callable[[bytes], Path],
    template: str,
) -> None:
    location = template.format(target=registry.port, elsewhere=elsewhere.port)
    # Credentials are already in use when the Location arrives: a followed
    # Location would carry them along with the blob.
    registry.guard(
        UPLOADS,
        BASIC,
        Reply(status=202, headers={"Location": location}),
        BASIC_CHALLENGE,
        method="POST",
    )
    client = make_target(registry.url, username=USER, password=PASSWORD)

    with pytest.raises(TargetError) as caught:
        await client.push_blob(NAME, sha256(BLOB), blob_file(BLOB), len(BLOB))

    assert elsewhere.requests == []
    assert [(s.method, s.path) for s in registry.requests] == [("POST", UPLOADS)] * 2
    assert "upload Location" in str(caught.value)
    assert f"leaves {registry.url}" in str(caught.value)


async def test_a_relative_upload_location_on_the_target_receives_the_blob(
    registry: HostileUpstream, make_target, blob_file: Callable[[bytes], Path]
) -> None:
    registry.reply(
        UPLOADS, Reply(status=202, headers={"Location": "/upload/1?state=abc"}), method="POST"
    )
    registry.reply(
        "/upload/1",
        Reply(status=201, headers={"Docker-Content-Digest": sha256(BLOB)}),
        method="PUT",
    )
    client = make_target(registry.url)

    await client.push_blob(NAME, sha256(BLOB), blob_file(BLOB), len(BLOB))

    put = registry.seen("/upload/1")[0]
    assert put.method == "PUT"
    assert sorted(put.query.split("&")) == sorted(
        ["state=abc", "digest=" + sha256(BLOB).replace(":", "%3A")]
    )
    assert put.headers["content-length"] == str(len(BLOB))


# -- digests the target states -------------------------------------------------


async def test_a_blob_put_answered_with_another_digest_is_a_target_error(
    registry: HostileUpstream, make_target, blob_file: Callable[[bytes], Path]
) -> None:
    registry.reply(UPLOADS, Reply(status=202, headers={"Location": "/upload/1"}), method="POST")
    registry.reply(
        "/upload/1",
        Reply(status=201, headers={"Docker-Content-Digest": sha256(b"something else")}),
        method="PUT",
    )
    client = make_target(registry.url)

    with pytest.raises(TargetError) as caught:
        await client.push_blob(NAME, sha256(BLOB), blob_file(BLOB), len(BLOB))

    message = str(caught.value)
    assert f"upload of blob {sha256(BLOB)}" in message
    assert f"stored {sha256(b'something else')}, expected {sha256(BLOB)}" in message


@pytest.mark.parametrize("reference", ["v1", sha256(MANIFEST)])
async def test_a_manifest_put_answered_with_another_digest_is_a_target_error(
    registry: HostileUpstream, make_target, reference: str
) -> None:
    registry.reply(
        manifest_path(reference),
        Reply(status=201, headers={"Docker-Content-Digest": sha256(b"{}")}),
        method="PUT",
    )
    client = make_target(registry.url)

    with pytest.raises(TargetError, match=f"stored {sha256(b'{}')}, expected {sha256(MANIFEST)}"):
        await client.put_manifest(NAME, reference, MANIFEST, MEDIA_TYPE, sha256(MANIFEST))


async def test_answers_stating_the_pushed_digest_or_none_are_accepted(
    registry: HostileUpstream, make_target, blob_file: Callable[[bytes], Path]
) -> None:
    registry.reply(UPLOADS, Reply(status=202, headers={"Location": "/upload/1"}), method="POST")
    registry.reply("/upload/1", Reply(status=201), method="PUT")
    registry.reply(
        manifest_path("v1"),
        Reply(status=201, headers={"Docker-Content-Digest": sha256(MANIFEST)}),
        method="PUT",
    )
    client = make_target(registry.url)

    await client.push_blob(NAME, sha256(BLOB), blob_file(BLOB), len(BLOB))
    await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, sha256(MANIFEST))

    put = registry.seen(manifest_path("v1"))[0]
    assert put.headers["content-type"] == MEDIA_TYPE


# -- statuses the push API does not use ----------------------------------------


async def test_a_manifest_put_answered_500_names_the_step_the_target_and_its_words(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(manifest_path("v1"), Reply(status=500, body=b"storage\nis full"), method="PUT")
    client = make_target(registry.url)

    with pytest.raises(TargetError) as caught:
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, sha256(MANIFEST))

    assert str(caught.value) == (
        f"target: PUT manifest {NAME}:v1 at {registry.url} answered 500: storage is full"
    )


async def test_an_upload_accepted_without_a_location_names_the_step_and_the_target(
    registry: HostileUpstream, make_target, blob_file: Callable[[bytes], Path]
) -> None:
    registry.reply(UPLOADS, Reply(status=202), method="POST")
    client = make_target(registry.url)

    with pytest.raises(TargetError) as caught:
        await client.push_blob(NAME, sha256(BLOB), blob_file(BLOB), len(BLOB))

    assert str(caught.value) == (
        f"target: upload of blob {sha256(BLOB)} at {registry.url} answered 202"
        " without an upload Location"
    )


@pytest.mark.parametrize(
    ("post", "put"),
    [
        (Reply(status=200, headers={"Location": "/upload/1"}), Reply(status=201)),
        (Reply(status=404), Reply(status=201)),
        (Reply(status=202, headers={"Location": "/upload/1"}), Reply(status=202)),
        (Reply(status=202, headers={"Location": "/upload/1"}), Reply(status=200)),
        (Reply(status=202, headers={"Location": "/upload/1"}), Reply(status=400)),
    ],
    ids=["POST 200", "POST 404", "PUT 202", "PUT 200", "PUT 400"],
)
async def test_an_upload_answered_outside_the_protocol_is_a_target_error(
    registry: HostileUpstream,
    make_target,
    blob_file: Callable[[bytes], Path],
    post: Reply,
    put: Reply,
) -> None:
    registry.reply(UPLOADS, post, method="POST")
    registry.reply("/upload/1", put, method="PUT")
    client = make_target(registry.url)

    with pytest.raises(TargetError) as caught:
        await client.push_blob(NAME, sha256(BLOB), blob_file(BLOB), len(BLOB))

    status = put.status if post.status == 202 else post.status
    message = str(caught.value)
    assert f"upload of blob {sha256(BLOB)} at {registry.url} answered {status}" in message


async def test_a_blob_head_or_a_delete_answered_500_is_a_target_error(
    registry: HostileUpstream, make_target
) -> None:
    digest = sha256(BLOB)
    registry.reply(f"/v2/{NAME}/blobs/{digest}", Reply(status=500), method="HEAD")
    registry.reply(manifest_path(digest), Reply(status=500), method="DELETE")
    client = make_target(registry.url)

    with pytest.raises(TargetError, match=f"HEAD blob {digest} at {registry.url} answered 500"):
        await client.has_blob(NAME, digest)
    with pytest.raises(TargetError, match=f"DELETE {NAME}@{digest} at {registry.url} answered 500"):
        await client.delete_manifest(NAME, digest)


async def test_the_targets_words_reach_reports_without_control_characters(
    registry: HostileUpstream, make_target
) -> None:
    body = b"disk\x1b[31m full\x00\rforged: line\x07"
    registry.reply(manifest_path("v1"), Reply(status=500, body=body), method="PUT")
    client = make_target(registry.url)

    with pytest.raises(TargetError) as caught:
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, sha256(MANIFEST))

    message = str(caught.value)
    assert message.endswith("answered 500: disk [31m full  forged: line")
    assert all(c.isprintable() for c in message)
