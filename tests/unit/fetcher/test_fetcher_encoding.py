"""HTTP Content-Encoding: decoded within bounds, or refused (T-10).

Limits exercised: the chain limit (encoding.MAX_CODINGS = 1), the decoded
output cap (descriptor size + 1, or limits.manifest_bytes), the encoded input
cap (encoding.wire_limit) and "redirect and error bodies are never read".
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
import zlib
from collections.abc import Iterator

import pytest

from pullguard.services.fetcher import encoding
from pullguard.services.fetcher.models import Descriptor
from pullguard.services.runtime.errors import UpstreamError
from tests.support.bounds import LIMIT_NOT_FALLBACK
from tests.support.hostile import (
    HostileUpstream,
    Reply,
    empty_deflate_blocks,
    gzip_bomb,
    gzip_bytes,
    trickle,
)

REPO = "team/app"
MANIFEST_PATH = f"/v2/{REPO}/manifests/v1"
OCI = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(data: bytes) -> str:
    return f"/v2/{REPO}/blobs/{sha256(data)}"


def descriptor(data: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", sha256(data), len(data))


def _chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


def _decoded(data: bytes, coding: str = "gzip", limit: int = 1 << 20) -> bytes:
    out = bytearray()
    for piece in encoding.decode(_chunks(data[:7], data[7:]), coding, limit):
        assert len(piece) <= encoding.PIECE
        out.extend(piece)
    return bytes(out)


# -- the decoder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "codings"),
    [
        (["gzip"], ("gzip",)),
        (["identity"], ()),
        (["identity, gzip"], ("gzip",)),
        (["Deflate"], ("deflate",)),
        ([], ()),
    ],
)
def test_t10_content_encoding_parsing(value: list[str], codings: tuple[str, ...]) -> None:
    assert encoding.parse_content_encoding(value) == codings


@pytest.mark.parametrize(
    "value",
    [
        ["br"],
        ["zstd"],
        ["compress"],
        ["x-unknown"],
        ["gzip, gzip"],
        [", ".join(["gzip"] * 1000)],
        ["gzip", "gzip"],  # the chain across two header lines
    ],
)
def test_t10_unsupported_or_chained_encodings_are_refused(value: list[str]) -> None:
    with pytest.raises(encoding.EncodingError):
        encoding.parse_content_encoding(value)


def test_t10_gzip_zlib_and_raw_deflate_decode() -> None:
    data = b"entity bytes " * 1000
    assert _decoded(gzip_bytes(data)) == data
    assert _decoded(gzip_bytes(data, zlib.MAX_WBITS), "deflate") == data
    assert _decoded(gzip_bytes(data, -zlib.MAX_WBITS), "deflate") == data


def test_t10_decoder_output_is_piecewise() -> None:
    # 8 MiB of zeros in 8 KiB: handed out in 64 KiB pieces, never all at once.
    bomb = gzip_bytes(b"\0" * (8 << 20))
    pieces = 0
    for piece in encoding.decode(_chunks(bomb), "gzip", 1 << 30):
        assert len(piece) <= encoding.PIECE
        pieces += 1
    assert pieces >= (8 << 20) // encoding.PIECE


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (gzip_bytes(b"x" * 100)[:-10], "ended before"),  # truncated
        (gzip_bytes(b"x" * 100) + b"garbage", "after the end"),
        (b"\x1f\x8b\x08\x00not gzip at all", "corrupt"),
    ],
)
def test_t10_broken_encoded_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(encoding.EncodingError, match=problem):
        _decoded(body)


def test_t10_encoded_input_is_bounded_even_when_it_decodes_to_nothing() -> None:
    # Limit: wire_limit(1000) encoded bytes; empty deflate blocks never end.
    consumed = 0

    def counted() -> Iterator[bytes]:
        nonlocal consumed
        yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"  # a gzip header, then
        while True:  # empty non-final stored blocks, forever
            chunk = b"\x00\x00\x00\xff\xff" * 4096
            consumed += len(chunk)
            yield chunk

    with pytest.raises(encoding.EncodedTooLarge):
        for _ in encoding.decode(counted(), "gzip", 1000):
            pass  # pragma: no cover - decodes to nothing
    assert encoding.wire_limit(1000) < consumed < encoding.wire_limit(1000) + 65536


# -- through the fetcher ------------------------------------------------------------


async def test_t10_gzip_bomb_manifest_stops_at_the_manifest_limit(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: manifest_bytes (4 MiB default). The body is an endless gzip
    # stream of zeros: about 1 KiB on the wire per MiB decoded.
    upstream.reply(
        MANIFEST_PATH,
        Reply(headers={"Content-Type": OCI, "Content-Encoding": "gzip"}, stream=gzip_bomb()),
    )
    started = time.monotonic()
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert [f.code for f in result.verdict.findings] == ["fetch.manifest_too_large"]
    assert result.manifest is None and staged() == []
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK
    assert upstream.requests[0].bytes_sent < 1 << 20  # a few KiB of the endless body


async def test_t10_gzip_bomb_blob_stops_at_descriptor_size(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Limit: descriptor size + 1 decoded bytes (1000 here), whatever the wire carries.
    claimed = Descriptor("application/octet-stream", sha256(b"a" * 1000), 1000)
    upstream.reply(
        f"/v2/{REPO}/blobs/{claimed.digest}",
        Reply(headers={"Content-Encoding": "gzip"}, body=gzip_bytes(b"\0" * (64 << 20))),
    )
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [claimed])
    assert [f.code for f in result.verdict.findings] == ["fetch.size_exceeded"]
    assert staged() == []


async def test_t10_endless_empty_blocks_stop_at_the_wire_limit(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    # Decodes to nothing, so only the encoded-input cap can stop it in time
    # (the throughput floor would take its 10 s grace).
    claimed = descriptor(b"b" * 1000)
    upstream.reply(
        blob_path(b"b" * 1000),
        Reply(headers={"Content-Encoding": "gzip"}, stream=empty_deflate_blocks()),
    )
    started = time.monotonic()
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [claimed])
    assert [f.code for f in result.verdict.findings] == ["fetch.size_exceeded"]
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK
    assert staged() == []


async def test_t10_chain_of_a_thousand_gzips_is_an_upstream_error_unread(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    upstream.reply(
        MANIFEST_PATH,
        Reply(
            headers={"Content-Encoding": ", ".join(["gzip"] * 1000)},
            stream=gzip_bomb(),
        ),
    )
    with pytest.raises(UpstreamError, match="chain longer than 1"):
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert len(upstream.requests) == 1  # not retried: it will not get better
    assert staged() == []


async def test_t10_legit_transport_gzip_is_decoded_then_hashed(
    upstream: HostileUpstream, make_fetcher
) -> None:
    config = b'{"architecture":"amd64","os":"linux"}' * 50
    upstream.reply(
        blob_path(config), Reply(headers={"Content-Encoding": "gzip"}, body=gzip_bytes(config))
    )
    upstream.reply(
        MANIFEST_PATH,
        Reply(
            headers={"Content-Type": OCI, "Content-Encoding": "deflate"},
            stream=trickle(gzip_bytes(MANIFEST, zlib.MAX_WBITS), 0, 7),
        ),
    )
    fetcher = make_fetcher(upstream.url)
    blobs = await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(config)])
    assert blobs.verdict.allowed
    [staged_blob] = blobs.blobs
    assert staged_blob.computed_digest == sha256(config) and staged_blob.size == len(config)
    assert fetcher.staging.read("s1", sha256(config), 1 << 20) == config
    assert blobs.exchanges[0].headers["content-encoding"] == "gzip"
    manifest = await fetcher.fetch_manifest("s1", "lab", REPO, "v1")
    assert manifest.manifest is not None
    assert manifest.manifest.computed_digest == sha256(MANIFEST)
    assert fetcher.staging.read("s1", sha256(MANIFEST), 1 << 20) == MANIFEST


async def test_t10_tar_gzip_layer_without_content_encoding_is_never_decoded(
    upstream: HostileUpstream, make_fetcher
) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        archive.addfile(info, io.BytesIO(b"hello\n"))
    layer = gzip_bytes(raw.getvalue())
    upstream.reply(blob_path(layer), Reply(body=layer))
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_blobs(
        "s1",
        "lab",
        REPO,
        [Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", sha256(layer), len(layer))],
    )
    [staged_blob] = result.blobs
    assert staged_blob.computed_digest == sha256(layer)  # the compressed bytes, as stored
    assert fetcher.staging.read("s1", sha256(layer), 1 << 20) == layer


async def test_t10_redirect_body_is_never_read_or_decoded(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # A 307 whose body is an endless gzip bomb: reading it would never end.
    upstream.reply(
        MANIFEST_PATH,
        Reply(
            status=307,
            headers={"Location": "/real", "Content-Encoding": "gzip"},
            stream=gzip_bomb(),
        ),
    )
    upstream.reply("/real", Reply(headers={"Content-Type": OCI}, body=MANIFEST))
    started = time.monotonic()
    result = await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert result.verdict.allowed
    assert result.manifest is not None and result.manifest.computed_digest == sha256(MANIFEST)
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


async def test_t10_error_body_is_never_decoded(upstream: HostileUpstream, make_fetcher) -> None:
    upstream.reply(
        MANIFEST_PATH,
        Reply(status=404, headers={"Content-Encoding": "gzip"}, stream=gzip_bomb()),
    )
    started = time.monotonic()
    with pytest.raises(Exception, match="not found"):
        await make_fetcher(upstream.url, limits={"error_body_bytes": 4096}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert time.monotonic() - started < LIMIT_NOT_FALLBACK


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "x-something"])
async def test_t10_unsupported_encoding_is_an_upstream_error(
    upstream: HostileUpstream, make_fetcher, staged, coding: str
) -> None:
    upstream.reply(MANIFEST_PATH, Reply(headers={"Content-Encoding": coding}, body=b"\x28\xb5"))
    with pytest.raises(UpstreamError, match="unsupported Content-Encoding") as caught:
        await make_fetcher(upstream.url).fetch_manifest("s1", "lab", REPO, "v1")
    assert caught.value.http_status == 502
    assert len(upstream.requests) == 1
    assert upstream.requests[0].headers["accept-encoding"] == "identity"
    assert staged() == []


async def test_t10_truncated_encoded_body_is_retried_then_upstream_error(
    upstream: HostileUpstream, make_fetcher, staged
) -> None:
    body = gzip_bytes(MANIFEST)[:-6]
    upstream.reply(MANIFEST_PATH, Reply(headers={"Content-Encoding": "gzip"}, body=body))
    with pytest.raises(UpstreamError, match="ended before its end marker"):
        await make_fetcher(upstream.url, limits={"retries": 1}).fetch_manifest(
            "s1", "lab", REPO, "v1"
        )
    assert len(upstream.requests) == 2
    assert staged() == []
