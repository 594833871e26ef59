"""The fetcher against a hostile upstream: auth, redirects, limits, timeouts, retries.

Each test names the limit or rule it exercises; each would fail if that check
were removed.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pullguard.services.fetcher.client import MANIFEST_ACCEPT
from pullguard.services.fetcher.models import Descriptor
from pullguard.services.runtime.errors import NotFound, UpstreamError, UpstreamTimeout
from tests.support.bounds import LIMIT_NOT_FALLBACK
from tests.support.hostile import (
    HostileUpstream,
    Reply,
    bearer_challenge,
    endless,
    stall_after,
    token_reply,
    trickle,
)
from tests.support.stack import free_port

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
OCI = "application/vnd.oci.image.manifest.v1+json"
REPO = "team/app"
#: Fake CDNs listen on other ports of 127.0.0.1: the upstream may redirect there
#: only because its redirect_hosts name the host.
LOOPBACK_CDN = "127.0.0.1"
MANIFEST_PATH = f"/v2/{REPO}/manifests/v1"
SCOPE = f"repository:{REPO}:pull"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_reply(body: bytes = MANIFEST, **headers: str) -> Reply:
    return Reply(
        headers={"Content-Type": OCI, "Docker-Content-Digest": sha256(body), **headers}, body=body
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- manifests ----------------------------------------------------------------


async def test_manifest_by_tag_is_staged_under_computed_digest(
    upstream: HostileUpstream, make_fetcher: Callable[..., object], tmp_path: Path
) -> None:
    upstream.reply(MANIFEST_PATH, manifest_reply())
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    staged = result.manifest
    assert staged is not None
    assert staged.computed_digest == staged.staged_key == sha256(MANIFEST)
    assert staged.size == len(MANIFEST)
    assert staged.content_type == OCI
    assert staged.docker_content_digest == sha256(MANIFEST)
    assert fetcher.staging.read("s1", staged.staged_key, 1 << 20) == MANIFEST
    # One GET resolves the tag: no HEAD first, no second look.
    [seen] = upstream.requests
    assert seen.method == "GET"
    assert seen.headers["accept"] == MANIFEST_ACCEPT
    assert seen.headers["accept-encoding"] == "identity"
    assert "authorization" not in seen.headers
    [exchange] = result.exchanges
    assert (exchange.method, exchange.status, exchange.purpose) == ("GET", 200, "manifest")
    assert exchange.url == f"{upstream.url}{MANIFEST_PATH}"
    assert exchange.headers["docker-content-digest"] == sha256(MANIFEST)
    assert exchange.headers["content-type"] == OCI


async def test_manifest_by_sha512_digest_is_hashed_with_sha512(
    upstream: HostileUpstream, make_fetcher: Callable[..., object]
) -> None:
    digest = "sha512:" + hashlib.sha512(MANIFEST).hexdigest()
    upstream.reply(f"/v2/{REPO}/manifests/{digest}", manifest_reply())
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, digest)
    assert result.manifest is not None and result.manifest.computed_digest == digest
    assert result.exchanges[0].digest == digest


async def test_manifest_404_is_not_found(upstream: HostileUpstream, make_fetcher) -> None:
    with pytest.raises(NotFound) as caught:
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "missing")
    assert caught.value.oci_code == "MANIFEST_UNKNOWN"


async def test_f11_manifest_over_limit_is_denied_and_nothing_staged(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: manifest_bytes = 1000; the body is 1001 bytes, sent chunked
    # without Content-Length so only the byte count can catch it.
    body = b"x" * 1001
    upstream.reply(
        MANIFEST_PATH, Reply(headers={"Content-Type": OCI}, stream=trickle(body, 0, 500))
    )
    result = await make_fetcher(upstream.url, limits={"manifest_bytes": 1000}).fetch_manifest(
        "s1", "lab", REPO, "v1"
    )
    assert not result.verdict.allowed
    assert [f.code for f in result.verdict.findings] == ["fetch.manifest_too_large"]
    assert result.manifest is None
    assert staged() == []


async def test_f11_manifest_content_length_over_limit_is_denied_unread(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # The body stalls: only the header can give the answer in time.
    upstream.reply(
        MANIFEST_PATH, Reply(headers={"Content-Length": "5000000000"}, stream=stall_after(b"{", 30))
    )
    fetcher = make_fetcher(upstream.url, limits={"manifest_bytes": 1000, "idle_timeout": 1})
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.findings[0].code == "fetch.manifest_too_large"
    assert staged() == []


async def test_f11_manifest_exactly_at_limit_is_staged(
    upstream: HostileUpstream, make_fetcher
) -> None:
    body = b"y" * 1000
    upstream.reply(
        MANIFEST_PATH, Reply(headers={"Content-Type": OCI}, stream=trickle(body, 0, 300))
    )
    result = await make_fetcher(upstream.url, limits={"manifest_bytes": 1000}).fetch_manifest(
        "s1", "lab", REPO, "v1"
    )
    assert result.verdict.allowed
    assert result.manifest is not None and result.manifest.size == 1000


# -- token auth (T-08) ----------------------------------------------------------


async def test_t08_token_flow_with_realm_on_another_port(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    realm = f"{other.url}/token"
    upstream.guard(
        MANIFEST_PATH,
        "Bearer good-token",
        manifest_reply(),
        bearer_challenge(realm, service="lab-registry", scope=SCOPE),
    )
    upstream.guard(
        f"/v2/{REPO}/manifests/v2",
        "Bearer good-token",
        manifest_reply(),
        bearer_challenge(realm, service="lab-registry", scope=SCOPE),
    )
    other.reply("/token", token_reply("good-token", expires_in=300))
    fetcher = make_fetcher(
        upstream.url, username="puller", password="s3cret", realm_hosts=[other.host]
    )
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed and result.manifest is not None
    [token_request] = other.seen("/token")
    # The realm is listed for this upstream: it gets the credentials.
    assert token_request.headers["authorization"] == basic("puller", "s3cret")
    assert "service=lab-registry" in token_request.query
    assert "scope=repository%3Ateam%2Fapp%3Apull" in token_request.query
    first, second = upstream.seen(MANIFEST_PATH)
    assert "authorization" not in first.headers
    assert second.headers["authorization"] == "Bearer good-token"
    assert [e.purpose for e in result.exchanges] == ["manifest", "token", "manifest"]
    assert [e.status for e in result.exchanges] == [401, 200, 200]
    # The token is cached per scope: the next fetch sends it at once.
    await fetcher.fetch_manifest("s1", "lab", REPO, "v2")
    assert len(other.seen("/token")) == 1
    assert upstream.seen(f"/v2/{REPO}/manifests/v2")[0].headers["authorization"] == (
        "Bearer good-token"
    )


async def test_t08_credentials_not_sent_to_foreign_realm(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    # The realm is on another port that the configuration does not name.
    upstream.guard(
        MANIFEST_PATH,
        "Bearer anon-token",
        manifest_reply(),
        bearer_challenge(f"{other.url}/token", service="x"),
    )
    other.reply("/token", token_reply("anon-token", key="access_token"))
    fetcher = make_fetcher(upstream.url, username="puller", password="s3cret")
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    [token_request] = other.seen("/token")
    assert "authorization" not in token_request.headers
    # Scope missing from the challenge: the repository's pull scope is asked for.
    assert "scope=repository%3Ateam%2Fapp%3Apull" in token_request.query


async def test_t08_token_with_crlf_is_refused(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    upstream.guard(MANIFEST_PATH, "never", manifest_reply(), bearer_challenge(f"{other.url}/t"))
    other.reply("/t", token_reply("abc\r\nX-Evil: 1"))
    with pytest.raises(UpstreamError) as caught:
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert caught.value.message.startswith("upstream: lab")
    assert "token" in caught.value.message
    assert len(upstream.seen(MANIFEST_PATH)) == 1  # never replayed with a broken token


async def test_t08_token_body_over_limit_is_refused(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    # Limit: token_bytes = 1024; the realm streams an endless body.
    upstream.guard(MANIFEST_PATH, "never", manifest_reply(), bearer_challenge(f"{other.url}/t"))
    other.reply("/t", Reply(stream=endless(b"{" * 4096)))
    with pytest.raises(UpstreamError, match="larger than 1024"):
        await make_fetcher(upstream.url, limits={"token_bytes": 1024}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )


async def test_t08_refused_after_auth_is_upstream_error(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    upstream.guard(
        MANIFEST_PATH, "Bearer wanted", manifest_reply(), bearer_challenge(f"{other.url}/t")
    )
    other.reply("/t", token_reply("not-what-it-wants"))
    with pytest.raises(UpstreamError) as caught:
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert "refused access" in caught.value.message
    assert caught.value.http_status == 502
    assert len(upstream.seen(MANIFEST_PATH)) == 2  # one challenge answered, no loop


async def test_basic_challenge_uses_configured_credentials(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.guard(
        MANIFEST_PATH,
        basic("u", "p"),
        manifest_reply(),
        Reply(status=401, headers={"WWW-Authenticate": 'Basic realm="lab"'}),
    )
    result = await make_fetcher(upstream.url, username="u", password="p").fetch_manifest(
        "s1", "lab", REPO, "v1"
    )
    assert result.verdict.allowed


async def test_basic_challenge_without_credentials_is_refused(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(MANIFEST_PATH, Reply(status=401, headers={"WWW-Authenticate": "Basic"}))
    with pytest.raises(UpstreamError, match="refused access"):
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")


# -- redirects (T-06, T-07) ---------------------------------------------------------


async def test_t06_authorization_and_cookies_never_cross_hosts(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    blob = b"layer bytes"
    digest = sha256(blob)
    path = f"/v2/{REPO}/blobs/{digest}"
    cdn_path = "/cdn/data"
    upstream.guard(
        path,
        basic("u", "p"),
        Reply(
            status=307,
            headers={
                "Location": f"{other.url}{cdn_path}?sig=SECRET&se=1",
                "Set-Cookie": "session=abc; Path=/",
            },
        ),
        Reply(
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="lab"', "Set-Cookie": "tracking=1; Path=/"},
        ),
    )
    other.reply(cdn_path, Reply(body=blob))
    fetcher = make_fetcher(upstream.url, username="u", password="p", redirect_hosts=[LOOPBACK_CDN])
    result = await fetcher.fetch_blobs("s1", "lab", REPO, [_descriptor(blob)])
    assert result.verdict.allowed
    assert [b.digest for b in result.blobs] == [digest]
    [cdn_request] = other.seen(cdn_path)
    for header in ("authorization", "cookie", "proxy-authorization"):
        assert header not in cdn_request.headers
    assert all("cookie" not in r.headers for r in upstream.requests)
    redirect = [e for e in result.exchanges if e.status == 307][0]
    assert redirect.location == f"{other.url}{cdn_path}?sig=REDACTED&se=REDACTED"
    assert all("SECRET" not in e.url + e.location for e in result.exchanges)
    assert [e.purpose for e in result.exchanges] == ["blob", "blob", "blob"]


@pytest.mark.parametrize(("hops", "allowed"), [(3, True), (4, False)])
async def test_t07_redirect_hop_limit(
    upstream: HostileUpstream, make_fetcher, hops: int, allowed: bool
) -> None:
    # Limit: redirects = 3.
    path = MANIFEST_PATH
    for hop in range(hops):
        upstream.redirect(path, f"/hop{hop}")
        path = f"/hop{hop}"
    upstream.reply(path, manifest_reply())
    result = await make_fetcher(upstream.url, limits={"redirects": 3}).fetch_manifest(
        "s1", "lab", REPO, "v1"
    )
    assert result.verdict.allowed is allowed
    if not allowed:
        assert result.verdict.findings[0].code == "fetch.too_many_redirects"
        assert len(upstream.requests) == 4  # the fourth redirect is not followed


async def test_t07_redirect_loop_is_cut(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    upstream.redirect(MANIFEST_PATH, f"{other.url}/b")
    other.redirect("/b", f"{upstream.url}{MANIFEST_PATH}")
    fetcher = make_fetcher(upstream.url, redirect_hosts=[LOOPBACK_CDN])
    result = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.findings[0].code == "fetch.too_many_redirects"
    assert len(upstream.requests) + len(other.requests) == 6  # limit 5, default


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://x/"])
async def test_t07_redirect_to_other_scheme_is_denied(
    upstream: HostileUpstream, make_fetcher, location: str
) -> None:
    upstream.redirect(MANIFEST_PATH, location)
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert [f.code for f in result.verdict.findings] == ["fetch.bad_redirect"]
    assert len(upstream.requests) == 1


# -- blobs (T-03) -----------------------------------------------------------------


def _descriptor(data: bytes, size: int | None = None) -> Descriptor:
    return Descriptor("application/octet-stream", sha256(data), len(data) if size is None else size)


async def test_t03_blob_larger_than_descriptor_reads_at_most_size_plus_one(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: the descriptor's size (1000). The body has no Content-Length and never ends.
    descriptor = _descriptor(b"z" * 1000)
    upstream.reply(f"/v2/{REPO}/blobs/{descriptor.digest}", Reply(stream=endless(b"z" * 1000)))
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [descriptor])
    assert [f.code for f in result.verdict.findings] == ["fetch.size_exceeded"]
    assert result.blobs == []
    assert staged() == []
    # The fetcher hung up after a bounded read, not after gigabytes. What the
    # upstream managed to write includes what the loopback socket buffers took
    # in, which the fetcher never read: the kernel autotunes each up to the
    # largest net.ipv4.tcp_wmem / tcp_rmem value (4 MiB and 32 MiB here).
    assert upstream.requests[0].bytes_sent < _socket_buffers_max() + 1024 * 1024


def _socket_buffers_max() -> int:
    """The most a loopback connection's send and receive buffers can hold."""
    total = 0
    for name in ("tcp_wmem", "tcp_rmem"):
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            total += int(f.read().split()[-1])
    return total


async def test_t03_content_length_over_descriptor_size_is_denied_unread(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # The body stalls: only the header can give the answer in time.
    descriptor = _descriptor(b"z" * 10)
    upstream.reply(
        f"/v2/{REPO}/blobs/{descriptor.digest}",
        Reply(headers={"Content-Length": "11"}, stream=stall_after(b"z", 30)),
    )
    fetcher = make_fetcher(upstream.url, limits={"idle_timeout": 1})
    result = await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor])
    assert [f.code for f in result.verdict.findings] == ["fetch.size_exceeded"]


async def test_blob_404_is_blob_unknown(upstream: HostileUpstream, make_fetcher) -> None:
    with pytest.raises(NotFound) as caught:
        await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [_descriptor(b"nope")])
    assert caught.value.oci_code == "BLOB_UNKNOWN"


# -- timeouts and retries (T-09, O-04) ----------------------------------------------


async def test_t09_stalled_body_times_out(upstream: HostileUpstream, make_fetcher) -> None:
    # Limit: idle_timeout = 0.3 s; the body stalls after 10 bytes.
    upstream.reply(
        MANIFEST_PATH, Reply(headers={"Content-Length": "100"}, stream=stall_after(b"{" * 10, 30))
    )
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await make_fetcher(upstream.url, limits={"idle_timeout": 0.3}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert caught.value.message.startswith("upstream: lab")
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK
    assert len(upstream.requests) == 1  # a stall is not retried into a longer stall


async def test_t09_trickle_below_throughput_floor_times_out(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Limit: min_bytes_per_second = 1000 after a 0.3 s grace; the body trickles
    # one byte every 50 ms, which beats the idle timeout.
    upstream.reply(MANIFEST_PATH, Reply(stream=trickle(b"{" * 500, 0.05)))
    fetcher = make_fetcher(upstream.url, limits={"min_bytes_per_second": 1000}, grace=0.3)
    with pytest.raises(UpstreamTimeout, match="too slow"):
        await fetcher.fetch_manifest("s1", "lab", REPO, "v1")


async def test_t09_manifest_deadline(upstream: HostileUpstream, make_fetcher) -> None:
    # Limit: manifest_deadline = 0.4 s, although each read is within the idle timeout.
    upstream.reply(MANIFEST_PATH, Reply(stream=trickle(b"{" * 100, 0.1, 10)))
    fetcher = make_fetcher(
        upstream.url, limits={"manifest_deadline": 0.4, "min_bytes_per_second": 0}
    )
    with pytest.raises(UpstreamTimeout, match="deadline"):
        await fetcher.fetch_manifest("s1", "lab", REPO, "v1")


async def test_o04_503_is_retried_then_upstream_error(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Limit: retries = 2, so three GETs in all.
    upstream.reply(MANIFEST_PATH, Reply(status=503))
    with pytest.raises(UpstreamError) as caught:
        await make_fetcher(upstream.url, limits={"retries": 2}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert not isinstance(caught.value, UpstreamTimeout)
    assert caught.value.message.startswith(f"upstream: lab ({upstream.url})")
    assert "503" in caught.value.message
    assert len(upstream.requests) == 3


async def test_o04_transient_failure_then_success(upstream: HostileUpstream, make_fetcher) -> None:
    upstream.reply(
        MANIFEST_PATH,
        Reply(status=503),
        Reply(status=429, headers={"Retry-After": "86400"}),
        manifest_reply(),
    )
    started = time.monotonic()
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    assert [e.status for e in result.exchanges] == [503, 429, 200]
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK  # Retry-After is capped


async def test_o04_connection_refused_is_upstream_error(make_fetcher) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamError, match="cannot reach"):
        await make_fetcher(url).fetch_manifest("s1", "lab", REPO, "v1")


async def test_400_is_not_retried(upstream: HostileUpstream, make_fetcher) -> None:
    upstream.reply(MANIFEST_PATH, Reply(status=400))
    with pytest.raises(UpstreamError, match="unexpected status 400"):
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert len(upstream.requests) == 1
