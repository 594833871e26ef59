"""Token auth across hosts and hostile token responses (T-08), stalled realms (T-09 d).

After a redirect A -> B, a 401 from B is answered with an ANONYMOUS token from
B's own realm; A's token and credentials never reach B. Token bodies are
capped (limits.token_bytes), CR/LF is refused, expiry is clamped.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pullguard.services.fetcher import auth
from pullguard.services.fetcher.models import Descriptor
from pullguard.services.runtime.config import Upstream
from pullguard.services.runtime.errors import UpstreamError, UpstreamTimeout
from tests.support.bounds import LIMIT_NOT_FALLBACK
from tests.support.configs import make_config
from tests.support.hostile import (
    HostileUpstream,
    Reply,
    bearer_challenge,
    stall_after,
    token_reply,
)

REPO = "team/app"
#: Fake CDNs listen on other ports of 127.0.0.1: the upstream may redirect there
#: only because its redirect_hosts name the host.
LOOPBACK_CDN = "127.0.0.1"
MANIFEST_PATH = f"/v2/{REPO}/manifests/v1"
BLOB = b"layer bytes"
SCOPE = f"repository:{REPO}:pull"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def blob_path(data: bytes) -> str:
    return f"/v2/{REPO}/blobs/{sha256(data)}"


def descriptor(data: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", sha256(data), len(data))


def redirecting_registry(upstream: HostileUpstream, cdn: HostileUpstream, data: bytes) -> None:
    """A: bearer auth with its own realm; the blob redirects to ``cdn``."""
    upstream.guard(
        blob_path(data),
        "Bearer a-token",
        Reply(status=307, headers={"Location": f"{cdn.url}/cdn/{sha256(data)}?sig=SECRET"}),
        bearer_challenge(f"{upstream.url}/token", service="a-registry", scope=SCOPE),
    )
    upstream.reply("/token", token_reply("a-token"))


async def test_t08_cross_host_challenge_gets_an_anonymous_token_from_that_hosts_realm(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    second = b"another layer"
    redirecting_registry(upstream, other, BLOB)
    redirecting_registry(upstream, other, second)
    for data in (BLOB, second):
        other.guard(
            f"/cdn/{sha256(data)}",
            "Bearer b-token",
            Reply(body=data),
            bearer_challenge(f"{other.url}/token", service="b-cdn"),
        )
    other.reply("/token", token_reply("b-token"))
    fetcher = make_fetcher(upstream.url, username="u", password="p", redirect_hosts=[LOOPBACK_CDN])
    result = await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(BLOB)])
    assert result.verdict.allowed and [b.computed_digest for b in result.blobs] == [sha256(BLOB)]
    # A's realm (same host and port as A) gets A's credentials; B's gets nothing.
    assert upstream.seen("/token")[0].headers["authorization"] == basic("u", "p")
    [b_token_request] = other.seen("/token")
    assert "authorization" not in b_token_request.headers
    assert "service=b-cdn" in b_token_request.query
    first, retried = other.seen(f"/cdn/{sha256(BLOB)}")
    assert "authorization" not in first.headers
    assert retried.headers["authorization"] == "Bearer b-token"
    assert [(e.purpose, e.status) for e in result.exchanges] == [
        ("blob", 401),
        ("token", 200),
        ("blob", 307),
        ("blob", 401),
        ("token", 200),
        ("blob", 200),
    ]
    # B's token is kept for B: the next redirect there carries it at once.
    await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(second)])
    assert len(other.seen("/token")) == 1
    assert other.seen(f"/cdn/{sha256(second)}")[0].headers["authorization"] == "Bearer b-token"
    # A's token and credentials never reached B.
    for request in other.requests:
        assert request.headers.get("authorization") in (None, "Bearer b-token")


async def test_t08_cross_host_realm_on_a_third_host_is_refused(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    async with HostileUpstream() as third:
        redirecting_registry(upstream, other, BLOB)
        # "localhost" is neither B's host (127.0.0.1) nor a configured realm host.
        other.reply(
            f"/cdn/{sha256(BLOB)}",
            bearer_challenge(f"http://localhost:{third.port}/token"),
        )
        third.reply("/token", token_reply("x"))
        fetcher = make_fetcher(
            upstream.url, username="u", password="p", redirect_hosts=[LOOPBACK_CDN]
        )
        with pytest.raises(UpstreamError, match="is neither on 127.0.0.1"):
            await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(BLOB)])
        assert third.requests == []


async def test_t08_cross_host_basic_challenge_gets_no_credentials(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    redirecting_registry(upstream, other, BLOB)
    other.reply(
        f"/cdn/{sha256(BLOB)}", Reply(status=401, headers={"WWW-Authenticate": 'Basic realm="b"'})
    )
    fetcher = make_fetcher(upstream.url, username="u", password="p", redirect_hosts=[LOOPBACK_CDN])
    with pytest.raises(UpstreamError, match="credentials never cross hosts"):
        await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(BLOB)])
    assert all("authorization" not in r.headers for r in other.requests)
    assert len(other.requests) == 1


async def test_t08_cross_host_challenge_is_answered_once(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    redirecting_registry(upstream, other, BLOB)
    other.guard(
        f"/cdn/{sha256(BLOB)}",
        "Bearer never",
        Reply(body=BLOB),
        bearer_challenge(f"{other.url}/token"),
    )
    other.reply("/token", token_reply("not-it"))
    with pytest.raises(UpstreamError, match="refused access"):
        await make_fetcher(upstream.url, redirect_hosts=[LOOPBACK_CDN]).fetch_blobs(
            "s1", "lab", REPO, [descriptor(BLOB)]
        )
    assert len(other.seen(f"/cdn/{sha256(BLOB)}")) == 2


@pytest.mark.parametrize(
    ("host", "realm", "problem"),
    [
        ("https://cdn.example/x", "https://cdn.example/token", None),
        ("https://cdn.example/x", "https://auth.example/token", None),  # realm_hosts
        ("https://cdn.example/x", "http://cdn.example/token", "not https"),
        ("https://cdn.example/x", "https://attacker.example/token", "neither"),
        ("https://cdn.example/x", "https://cdn.example.attacker.example/t", "neither"),
        ("https://cdn.example/x", "https://u:p@cdn.example/token", "userinfo"),
        ("https://cdn.example/x", "https://169.254.169.254/token", "neither"),
        ("https://cdn.example/x", "file:///etc/passwd", "not an http"),
        ("https://127.0.0.1/x", "https://127.0.0.1/token", "non-public"),
    ],
)
def test_t08_foreign_realm_rules(
    tmp_path: Path, host: str, realm: str, problem: str | None
) -> None:
    config = make_config(
        tmp_path,
        upstreams={"hub": {"url": "https://registry.example", "realm_hosts": ["auth.example"]}},
        default_upstream="hub",
    )
    upstream: Upstream = config.upstreams["hub"]
    found = auth.foreign_realm_problem(upstream, httpx.URL(host), httpx.URL(realm))
    assert (found is None) if problem is None else (found is not None and problem in found)


# -- hostile token responses ---------------------------------------------------------


def challenged_manifest(upstream: HostileUpstream, realm: HostileUpstream) -> None:
    upstream.guard(
        MANIFEST_PATH,
        "Bearer good",
        Reply(body=b"{}"),
        bearer_challenge(f"{realm.url}/t", scope=SCOPE),
    )


def fifty_mib() -> AsyncIterator[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        yield b'{"token": "'
        for _ in range(800):
            yield b"a" * 65536

    return stream()


async def test_t08_fifty_mib_token_body_is_cut_at_the_token_limit(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    # Limit: token_bytes = 1 MiB (default); the realm sends 50 MiB.
    challenged_manifest(upstream, other)
    other.reply("/t", Reply(headers={"Content-Type": "application/json"}, stream=fifty_mib))
    with pytest.raises(UpstreamError, match="token response larger than 1048576"):
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert other.requests[0].bytes_sent < 50 * 1024 * 1024
    assert len(upstream.seen(MANIFEST_PATH)) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"token": "abc\\r\\nX-Evil: 1"}', "control characters"),
        (b"<html>not json</html>", "not JSON"),
        (b'{"token": ""}', "no token"),
        (b'["token"]', "not a JSON object"),
    ],
)
async def test_t08_unusable_token_responses_are_upstream_errors(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher, body: bytes, problem: str
) -> None:
    challenged_manifest(upstream, other)
    other.reply("/t", Reply(body=body))
    with pytest.raises(UpstreamError, match=problem):
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert len(upstream.seen(MANIFEST_PATH)) == 1  # never replayed with a broken token


@pytest.mark.parametrize(("expires_in", "kept_at_most"), [(-1, 60.0), (1e12, 3600.0)])
async def test_t08_token_expiry_is_clamped(
    upstream: HostileUpstream,
    other: HostileUpstream,
    make_fetcher,
    expires_in: float,
    kept_at_most: float,
) -> None:
    challenged_manifest(upstream, other)
    other.reply(
        "/t", Reply(body=b'{"token": "good", "expires_in": ' + str(expires_in).encode() + b"}")
    )
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    tokens = fetcher.client("lab")._session._tokens  # noqa: SLF001 - the clamp is the point
    header, expires = tokens._entries[SCOPE]  # noqa: SLF001
    assert header == "Bearer good"
    assert expires - time.monotonic() <= kept_at_most


async def test_t09_stalled_token_endpoint_times_out(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    # Limit: idle_timeout = 0.3 s; the realm never answers.
    challenged_manifest(upstream, other)
    other.reply("/t", Reply(delay=30))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await make_fetcher(upstream.url, limits={"idle_timeout": 0.3}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


async def test_t09_token_body_stalling_midway_times_out(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    challenged_manifest(upstream, other)
    other.reply("/t", Reply(headers={"Content-Length": "100"}, stream=stall_after(b'{"to', 30)))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="stalled"):
        await make_fetcher(upstream.url, limits={"idle_timeout": 0.3}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK
