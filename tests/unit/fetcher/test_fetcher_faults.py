"""Truncation (T-02), lying lengths and unbounded error bodies (T-03), stalls and
per-upstream concurrency (T-09), and the HTTP status of upstream failures (O-04).

Each test names the limit it exercises. Nothing partial is ever staged.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pullguard.services.fetcher.models import Descriptor
from pullguard.services.runtime.errors import NotFound, UpstreamError, UpstreamTimeout
from tests.support.bounds import LIMIT_NOT_FALLBACK
from tests.support.hostile import HostileUpstream, Reply, endless, stall_after, trickle
from tests.support.stack import free_port

REPO = "team/app"
MANIFEST_PATH = f"/v2/{REPO}/manifests/v1"
MANIFEST = b'{"schemaVersion":2}'
DATA = bytes(range(256)) * 8  # 2048 bytes


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(data: bytes) -> str:
    return f"/v2/{REPO}/blobs/{sha256(data)}"


def descriptor(data: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", sha256(data), len(data))


def chunked(data: bytes) -> AsyncIterator[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        yield data

    return stream()


# -- T-02 truncation ---------------------------------------------------------------------


async def test_t02_connection_closed_before_content_length_is_retried_then_error(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: retries = 2. Content-Length says N; the server hangs up after N-100.
    upstream.reply(
        blob_path(DATA),
        Reply(
            headers={"Content-Length": str(len(DATA))},
            body=DATA[:-100],
            hang_up=True,
        ),
    )
    with pytest.raises(UpstreamError, match="broke off") as caught:
        await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert caught.value.http_status == 502
    assert len(upstream.requests) == 3
    assert staged() == []


async def test_t02_chunked_body_ending_early_is_retried_then_error(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # A complete chunked message (valid 0-chunk) that is 100 bytes short of the
    # descriptor size: without a Content-Length, that is a truncation.
    upstream.reply(blob_path(DATA), Reply(stream=lambda: chunked(DATA[:-100])))
    with pytest.raises(UpstreamError, match=f"ended after {len(DATA) - 100} of {len(DATA)}"):
        await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert len(upstream.requests) == 3
    assert staged() == []


async def test_t02_chunked_body_cut_mid_chunk_is_retried(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    upstream.reply(blob_path(DATA), Reply(stream=lambda: chunked(DATA[:-100]), hang_up=True))
    with pytest.raises(UpstreamError):
        await make_fetcher(upstream.url, limits={"retries": 0}).fetch_blobs(
            "s1", "lab", REPO, [descriptor(DATA)]
        )
    assert staged() == []


async def test_t02_retry_restarts_from_zero_without_splicing(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(
        blob_path(DATA),
        Reply(headers={"Content-Length": str(len(DATA))}, body=DATA[:-100], hang_up=True),
        Reply(body=DATA),
    )
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    [blob] = result.blobs
    assert blob.computed_digest == sha256(DATA) and blob.size == len(DATA)
    assert fetcher.staging.read("s1", sha256(DATA), 1 << 20) == DATA
    assert all("range" not in r.headers for r in upstream.requests)


async def test_t02_unsolicited_206_is_never_taken_for_the_whole(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    upstream.reply(
        blob_path(DATA),
        Reply(status=206, headers={"Content-Range": "bytes 0-99/*"}, body=DATA[:100]),
    )
    with pytest.raises(UpstreamError, match="206"):
        await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert len(upstream.requests) == 3
    assert staged() == []


async def test_t02_206_then_full_200_is_a_restart(upstream: HostileUpstream, make_fetcher) -> None:
    upstream.reply(
        blob_path(DATA),
        Reply(status=206, headers={"Content-Range": f"bytes 0-99/{len(DATA)}"}, body=DATA[:100]),
        Reply(body=DATA),
    )
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert [b.computed_digest for b in result.blobs] == [sha256(DATA)]


async def test_f10_short_body_stated_by_content_length_is_staged_for_hashverify(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # The server says the entity IS 999 bytes (Content-Length) while the
    # descriptor claims 1000: not a truncation but a size lie, which
    # hashverify reports from the staged bytes.
    short = b"s" * 999
    claimed = Descriptor("application/octet-stream", sha256(short), 1000)
    upstream.reply(f"/v2/{REPO}/blobs/{claimed.digest}", Reply(body=short))
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_blobs("s1", "lab", REPO, [claimed])
    [blob] = result.blobs
    assert blob.size == 999
    assert len(upstream.requests) == 1


# -- T-03 lengths, error bodies, warnings -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "error body over 4096 bytes"),
        (500, "error body over 4096 bytes"),
        # A 401 without a challenge is refused without reading its body at all.
        (401, "refused access"),
    ],
)
async def test_t03_error_bodies_are_read_at_most_error_body_bytes(
    upstream: HostileUpstream, make_fetcher, status: int, message: str
) -> None:
    # Limit: error_body_bytes = 4096; the error body never ends.
    upstream.reply(MANIFEST_PATH, Reply(status=status, stream=endless(b"e" * 65536)))
    fetcher = make_fetcher(upstream.url, limits={"error_body_bytes": 4096, "retries": 0})
    started = time.monotonic()
    with pytest.raises((NotFound, UpstreamError), match=message):
        await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


async def test_t03_error_body_after_an_answered_challenge_is_bounded(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    upstream.guard(
        MANIFEST_PATH,
        "Bearer t",
        Reply(status=403, stream=endless(b"e" * 65536)),
        Reply(status=401, headers={"WWW-Authenticate": f'Bearer realm="{other.url}/t"'}),
    )
    other.reply("/t", Reply(body=b'{"token": "t"}'))
    fetcher = make_fetcher(upstream.url, limits={"error_body_bytes": 4096})
    with pytest.raises(UpstreamError, match="403: error body over 4096 bytes"):
        await fetcher.fetch_manifest("s1", "lab", REPO, "v1")


async def test_t03_oci_error_of_a_small_error_body_is_reported(
    upstream: HostileUpstream, make_fetcher
) -> None:
    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull\\r\\nlimit\\u001b[2J"}]}'
    upstream.reply(MANIFEST_PATH, Reply(status=500, body=body))
    with pytest.raises(UpstreamError) as caught:
        await make_fetcher(upstream.url, limits={"retries": 0}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert "TOOMANYREQUESTS: pull" in caught.value.message
    assert "\r" not in caught.value.message and "\x1b" not in caught.value.message


async def test_t03_warning_headers_are_recorded_truncated_and_drive_nothing(
    upstream: HostileUpstream, make_fetcher
) -> None:
    warning = '299 - "' + "w" * 4000 + '"'
    upstream.handle(
        MANIFEST_PATH,
        lambda request: _with_warnings(upstream, request, warning, 16),
    )
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    recorded = result.exchanges[0].headers["warning"]
    assert recorded.startswith('299 - "www') and len(recorded) <= 4096


async def test_t03_a_mebibyte_of_warnings_is_an_upstream_error(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Bounded by the HTTP client's header limit (100 KiB in httpcore's h11).
    warning = '299 - "' + "w" * 4000 + '"'
    upstream.handle(
        MANIFEST_PATH,
        lambda request: _with_warnings(upstream, request, warning, 256),
    )
    with pytest.raises(UpstreamError):
        await make_fetcher(upstream.url, limits={"retries": 0}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )


async def _with_warnings(
    upstream: HostileUpstream, request: web.Request, warning: str, count: int
) -> web.StreamResponse:
    response = web.StreamResponse()
    for _ in range(count):
        response.headers.add("Warning", warning)
    response.headers["Content-Length"] = str(len(MANIFEST))
    await response.prepare(request)
    await response.write(MANIFEST)
    await response.write_eof()
    return response


async def test_t03_blob_fetch_is_one_get_never_head(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(blob_path(DATA), Reply(body=DATA))
    upstream.reply(blob_path(DATA), Reply(headers={"Content-Length": "1"}), method="HEAD")
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert result.verdict.allowed
    assert [r.method for r in upstream.requests] == ["GET"]


# -- T-09 stalls and slots -----------------------------------------------------------------


async def test_t09_blob_stalling_midway_times_out_and_stages_nothing(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: idle_timeout = 0.3 s.
    upstream.reply(
        blob_path(DATA),
        Reply(headers={"Content-Length": str(len(DATA))}, stream=stall_after(DATA[:500], 30)),
    )
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="stalled"):
        await make_fetcher(upstream.url, limits={"idle_timeout": 0.3}).fetch_blobs(
            "s1", "lab", REPO, [descriptor(DATA)]
        )
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK
    assert staged() == []


async def test_t09_blob_deadline_interrupts_a_read_blocked_in_its_thread(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: blob_deadline = 0.5 s; the idle timeout (30 s) and the floor would wait far longer.
    # The body is read in a worker thread, blocked in recv: the deadline must wake that read
    # (the socket is shut), or the fetch would only end when the idle timeout fired.
    upstream.reply(
        blob_path(DATA),
        Reply(headers={"Content-Length": str(len(DATA))}, stream=stall_after(DATA[:500], 60)),
    )
    fetcher = make_fetcher(
        upstream.url,
        limits={"blob_deadline": 0.5, "idle_timeout": 30, "min_bytes_per_second": 0},
    )
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="deadline"):
        await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK
    assert staged() == []


async def test_t09_blob_trickle_below_the_floor_times_out(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: min_bytes_per_second = 1000 after a 0.3 s grace; 20 bytes every 50 ms.
    upstream.reply(blob_path(DATA), Reply(stream=trickle(DATA, 0.05, 20)))
    fetcher = make_fetcher(upstream.url, limits={"min_bytes_per_second": 1000}, grace=0.3)
    with pytest.raises(UpstreamTimeout, match="too slow"):
        await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(DATA)])
    assert staged() == []


async def test_t09_a_stalled_upstream_holds_at_most_its_own_slots(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    # Limit: 3 requests in flight per upstream (UPSTREAM_CONCURRENCY is 8 by default).
    release = asyncio.Event()
    active = 0
    peak = 0

    async def stalled(request: web.Request) -> web.StreamResponse:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        return await upstream.send(request, Reply(body=MANIFEST))

    for tag in range(6):
        upstream.handle(f"/v2/{REPO}/manifests/t{tag}", stalled)
    other.reply(MANIFEST_PATH, Reply(body=MANIFEST))
    fetcher = make_fetcher(
        upstream.url,
        options={"concurrency": 3},
        upstreams={"healthy": {"url": other.url, "insecure": True}},
    )
    stuck = [
        asyncio.create_task(fetcher.fetch_manifest("s1", "lab", REPO, f"t{tag}"))
        for tag in range(6)
    ]
    deadline = time.monotonic() + 20  # generous: CI machines can be slow
    while peak < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert peak == 3  # the other three wait for a slot of this upstream
    # Another upstream is served while this one holds all its slots.
    healthy = await asyncio.wait_for(fetcher.fetch_manifest("s1", "healthy", REPO, "v1"), 20)
    assert healthy.verdict.allowed and active == 3
    release.set()
    results = await asyncio.gather(*stuck)
    assert all(r.verdict.allowed for r in results)
    assert peak == 3


# -- O-04 the status an upstream failure maps to --------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(status=429, headers={"Retry-After": "86400"}), 503),
        (Reply(status=503), 503),
        (Reply(status=500), 502),
        (Reply(status=502), 502),
        (Reply(status=504), 504),
    ],
)
async def test_o04_upstream_failures_carry_their_http_status(
    upstream: HostileUpstream, make_fetcher, reply: Reply, status: int
) -> None:
    upstream.reply(MANIFEST_PATH, reply)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert caught.value.http_status == status
    assert len(upstream.requests) == 3
    # Retry-After: 86400 is capped (here at 0.05 s; 2 s in service).
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


async def test_o04_timeouts_are_504(upstream: HostileUpstream, make_fetcher) -> None:
    upstream.reply(MANIFEST_PATH, Reply(delay=30))
    with pytest.raises(UpstreamTimeout) as caught:
        await make_fetcher(upstream.url, limits={"idle_timeout": 0.2}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert caught.value.http_status == 504


async def test_o04_connection_refused_and_dns_failure_are_502(make_fetcher) -> None:
    refused = make_fetcher(f"http://127.0.0.1:{free_port()}", limits={"retries": 0})
    with pytest.raises(UpstreamError) as caught:
        await refused.fetch_manifest("s1", "lab", REPO, "v1")
    assert caught.value.http_status == 502 and "cannot reach" in caught.value.message

    async def nxdomain(host: str, port: int) -> list[str]:
        import socket

        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    unknown = make_fetcher(
        "http://registry.invalid", limits={"retries": 0}, options={"resolver": nxdomain}
    )
    with pytest.raises(UpstreamError) as caught:
        await unknown.fetch_manifest("s1", "lab", REPO, "v1")
    assert caught.value.http_status == 502 and "cannot resolve" in caught.value.message
