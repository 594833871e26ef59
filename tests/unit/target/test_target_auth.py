"""Credentials for the target go to the target and nowhere else.

Basic credentials are sent only once the target asked for them with a 401,
and only to the target (redirects are not followed). A Bearer challenge is
answered only when its token realm is on the target's own host: the token
request carries the Basic credentials, the retried request the token. A realm
anywhere else is refused before anything is sent to it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from urllib.parse import parse_qs

import pytest

from pullguard.services.runtime.errors import TargetError
from tests.support.hostile import HostileUpstream, Reply, bearer_challenge, token_reply

NAME = "mirror/lab/team/app"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MANIFEST_PATH = f"/v2/{NAME}/manifests/v1"
BLOB_PATH = f"/v2/{NAME}/blobs/{DIGEST}"
USER, PASSWORD = "pusher", "s3cret-push"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BASIC_CHALLENGE = Reply(status=401, headers={"WWW-Authenticate": 'Basic realm="target"'})
STORED = Reply(status=201, headers={"Docker-Content-Digest": DIGEST})


def leaks(server: HostileUpstream) -> list[str]:
    """Requests to ``server`` that carry a credential or the password."""
    return [
        f"{seen.method} {seen.path}"
        for seen in server.requests
        if "authorization" in seen.headers or PASSWORD in f"{seen.path} {seen.query}"
    ]


# -- Basic -----------------------------------------------------------------------


async def test_basic_credentials_are_sent_only_after_the_target_asks(
    registry: HostileUpstream, make_target
) -> None:
    registry.guard(MANIFEST_PATH, BASIC, STORED, BASIC_CHALLENGE, method="PUT")
    registry.guard(BLOB_PATH, BASIC, Reply(status=404), BASIC_CHALLENGE, method="HEAD")
    client = make_target(registry.url, username=USER, password=PASSWORD)

    await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)
    assert await client.has_blob(NAME, DIGEST) is False

    sent = [(s.method, s.headers.get("authorization")) for s in registry.requests]
    # The first request goes bare; once asked, the credentials go along
    # without another round trip.
    assert sent == [("PUT", None), ("PUT", BASIC), ("HEAD", BASIC)]
    assert registry.seen(MANIFEST_PATH)[1].headers["content-length"] == str(len(MANIFEST))


async def test_without_configured_credentials_a_challenge_is_a_target_error(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(MANIFEST_PATH, BASIC_CHALLENGE, method="PUT")
    client = make_target(registry.url)

    with pytest.raises(TargetError, match="answered 401"):
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert len(registry.requests) == 1


async def test_wrong_basic_credentials_are_tried_once(
    registry: HostileUpstream, make_target
) -> None:
    registry.reply(MANIFEST_PATH, BASIC_CHALLENGE, method="PUT")
    client = make_target(registry.url, username=USER, password=PASSWORD)

    with pytest.raises(TargetError, match=f"at {registry.url} answered 401"):
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert [s.headers.get("authorization") for s in registry.requests] == [None, BASIC]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_from_the_target_is_not_followed_with_the_credentials(
    registry: HostileUpstream, elsewhere: HostileUpstream, make_target, status: int
) -> None:
    registry.guard(
        MANIFEST_PATH,
        BASIC,
        Reply(status=status, headers={"Location": f"{elsewhere.url}{MANIFEST_PATH}"}),
        BASIC_CHALLENGE,
        method="PUT",
    )
    elsewhere.reply(MANIFEST_PATH, STORED, method="PUT")
    client = make_target(registry.url, username=USER, password=PASSWORD)

    with pytest.raises(TargetError, match=f"answered {status}"):
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert elsewhere.requests == []


# -- Bearer ----------------------------------------------------------------------


async def test_a_token_realm_on_the_target_gets_the_credentials_and_its_token_is_used(
    registry: HostileUpstream, make_target
) -> None:
    registry.guard(
        MANIFEST_PATH,
        "Bearer push-token",
        STORED,
        bearer_challenge(f"{registry.url}/token", service="target-registry"),
        method="PUT",
    )
    registry.guard(
        BLOB_PATH,
        "Bearer push-token",
        Reply(status=200),
        bearer_challenge(f"{registry.url}/token", service="target-registry"),
        method="HEAD",
    )
    registry.guard("/token", BASIC, token_reply("push-token"), Reply(status=403))
    client = make_target(registry.url, username=USER, password=PASSWORD)

    await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)
    assert await client.has_blob(NAME, DIGEST) is True

    sent = [(s.method, s.path, s.headers.get("authorization")) for s in registry.requests]
    assert sent == [
        ("PUT", MANIFEST_PATH, None),
        ("GET", "/token", BASIC),
        ("PUT", MANIFEST_PATH, "Bearer push-token"),
        # The token is kept for the repository: no second token request.
        ("HEAD", BLOB_PATH, "Bearer push-token"),
    ]
    query = parse_qs(registry.seen("/token")[0].query)
    assert query == {"scope": [f"repository:{NAME}:pull,push"], "service": ["target-registry"]}


#: Token realms off the target's host, as (what, template); {target} and
#: {elsewhere} are ports. Every one of them resolves to a listening server.
FOREIGN_REALMS = [
    ("another host", "http://localhost:{elsewhere}/token"),
    ("another host, the target's port", "http://localhost:{target}/token"),
    ("userinfo hiding the host", "http://127.0.0.1:{target}@localhost:{elsewhere}/token"),
    ("scheme-relative", "//localhost:{elsewhere}/token"),
    ("relative path", "/token"),
    ("not http", "ftp://127.0.0.1:{elsewhere}/token"),
]


@pytest.mark.parametrize(
    "template", [t for _, t in FOREIGN_REALMS], ids=[d for d, _ in FOREIGN_REALMS]
)
async def test_a_token_realm_off_the_target_host_is_not_asked(
    registry: HostileUpstream,
    elsewhere: HostileUpstream,
    make_target,
    template: str,
) -> None:
    realm = template.format(target=registry.port, elsewhere=elsewhere.port)
    registry.reply(MANIFEST_PATH, bearer_challenge(realm, service="s"), method="PUT")
    registry.reply("/token", token_reply("push-token"))
    elsewhere.reply("/token", token_reply("push-token"))
    client = make_target(registry.url, username=USER, password=PASSWORD)

    with pytest.raises(TargetError) as caught:
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert elsewhere.requests == []
    assert [(s.method, s.path) for s in registry.requests] == [("PUT", MANIFEST_PATH)]
    assert leaks(registry) == []
    assert f"token realm {realm!r} is not on the target's host" in str(caught.value)


async def test_a_token_realm_that_redirects_elsewhere_is_not_followed(
    registry: HostileUpstream, elsewhere: HostileUpstream, make_target
) -> None:
    registry.reply(MANIFEST_PATH, bearer_challenge(f"{registry.url}/token"), method="PUT")
    registry.redirect("/token", f"{elsewhere.url}/token")
    elsewhere.reply("/token", token_reply("push-token"))
    client = make_target(registry.url, username=USER, password=PASSWORD)

    with pytest.raises(TargetError, match="token request at .* answered 307"):
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert elsewhere.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"token": ""}',
        b'{"expires_in": 300}',
        b'{"token": "a\\u00e9b"}',
        b'{"token": "a\\r\\nX-Injected: 1"}',
    ],
    ids=["not json", "a list", "empty token", "no token", "non-ascii token", "CR LF in token"],
)
async def test_a_token_answer_without_a_usable_token_is_a_target_error(
    registry: HostileUpstream, make_target, body: bytes
) -> None:
    registry.reply(MANIFEST_PATH, bearer_challenge(f"{registry.url}/token"), method="PUT")
    registry.reply("/token", Reply(body=body))
    client = make_target(registry.url, username=USER, password=PASSWORD)

    with pytest.raises(TargetError, match="token"):
        await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert [s.path for s in registry.requests] == [MANIFEST_PATH, "/token"]


@pytest.mark.parametrize("expires_in", [10**12, "Infinity"])
async def test_a_token_is_fetched_again_within_an_hour_whatever_it_claims(
    registry: HostileUpstream, make_target, monkeypatch: pytest.MonkeyPatch, expires_in: object
) -> None:
    body = b'{"token": "push-token", "expires_in": %s}' % str(expires_in).encode()
    registry.guard(
        MANIFEST_PATH,
        "Bearer push-token",
        STORED,
        bearer_challenge(f"{registry.url}/token"),
        method="PUT",
    )
    registry.guard("/token", BASIC, Reply(body=body), Reply(status=403))
    client = make_target(registry.url, username=USER, password=PASSWORD)
    await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)
    later = time.monotonic() + 3601
    monkeypatch.setattr("pullguard.gateway.target.time.monotonic", lambda: later)

    await client.put_manifest(NAME, "v1", MANIFEST, MEDIA_TYPE, DIGEST)

    assert len(registry.seen("/token")) == 2
