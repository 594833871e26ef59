"""FetchBlobs, FetchArtifact and ListTags semantics, and request validation."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiohttp import web

from pullguard.services.fetcher.documents import parse_artifact_manifest
from pullguard.services.fetcher.models import Descriptor, FetchDenied
from pullguard.services.runtime.errors import InvalidRequest, UpstreamError
from tests.support.hostile import HostileUpstream, Reply

REPO = "team/app"
OCI = "application/vnd.oci.image.manifest.v1+json"
SIG = "application/vnd.dev.cosign.simplesigning.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    return Descriptor(media_type, sha256(data), len(data))


def serve_blob(upstream: HostileUpstream, data: bytes) -> str:
    upstream.reply(f"/v2/{REPO}/blobs/{sha256(data)}", Reply(body=data))
    return f"/v2/{REPO}/blobs/{sha256(data)}"


# -- FetchBlobs ---------------------------------------------------------------------


async def test_blobs_are_staged_byte_for_byte(upstream: HostileUpstream, make_fetcher) -> None:
    blobs = [b"config", b"layer one", b""]
    for blob in blobs:
        serve_blob(upstream, blob)
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_blobs("s1", "lab", REPO, [descriptor(b) for b in blobs])
    assert result.verdict.allowed
    assert [b.digest for b in result.blobs] == [sha256(b) for b in blobs]
    for staged, blob in zip(result.blobs, blobs, strict=True):
        assert staged.computed_digest == staged.digest
        assert staged.size == len(blob)
        assert fetcher.staging.read("s1", staged.digest, 1 << 20) == blob
    assert {e.digest for e in result.exchanges} == {sha256(b) for b in blobs}


async def test_t01_wrong_bytes_are_staged_under_descriptor_digest_with_true_digest(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # The fetcher does not judge; hashverify compares computed with claimed.
    claimed = descriptor(b"right")
    upstream.reply(f"/v2/{REPO}/blobs/{claimed.digest}", Reply(body=b"wrong"))
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [claimed])
    [staged] = result.blobs
    assert staged.digest == claimed.digest
    assert staged.computed_digest == sha256(b"wrong")


@pytest.mark.parametrize(
    "digest",
    ["sha256:ABC", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256:../../etc", "", "sha256:"],
)
async def test_f09_invalid_descriptor_digest_is_denied_without_request(
    upstream: HostileUpstream, make_fetcher, digest: str
) -> None:
    good = b"good"
    serve_blob(upstream, good)
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_blobs(
        "s1", "lab", REPO, [Descriptor("x", digest, 4), descriptor(good)]
    )
    assert [f.code for f in result.verdict.findings] == ["fetch.invalid_digest"]
    assert [b.digest for b in result.blobs] == [sha256(good)]
    assert [r.path for r in upstream.requests] == [f"/v2/{REPO}/blobs/{sha256(good)}"]


async def test_descriptor_larger_than_blob_limit_is_denied_without_request(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Limit: blob_bytes = 100.
    big = Descriptor("x", sha256(b"big"), 101)
    result = await make_fetcher(upstream.url, limits={"blob_bytes": 100}).fetch_blobs(
        "s1", "lab", REPO, [big]
    )
    assert [f.code for f in result.verdict.findings] == ["fetch.blob_too_large"]
    assert upstream.requests == []


async def test_s01_descriptor_urls_are_never_followed(
    upstream: HostileUpstream, other: HostileUpstream, make_fetcher
) -> None:
    data = b"foreign layer"
    serve_blob(upstream, data)
    foreign = Descriptor(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        sha256(data),
        len(data),
        urls=(f"{other.url}/layer",),
    )
    result = await make_fetcher(upstream.url).fetch_blobs("s1", "lab", REPO, [foreign])
    assert result.verdict.allowed
    assert other.requests == []


async def test_duplicate_descriptors_are_fetched_once(
    upstream: HostileUpstream, make_fetcher
) -> None:
    serve_blob(upstream, b"same")
    result = await make_fetcher(upstream.url).fetch_blobs(
        "s1", "lab", REPO, [descriptor(b"same"), descriptor(b"same")]
    )
    assert len(result.blobs) == 1 and len(upstream.requests) == 1


async def test_o01_blob_fetches_are_bounded_in_concurrency(
    upstream: HostileUpstream, make_fetcher
) -> None:
    active = 0
    peak = 0
    blobs = [f"blob {i}".encode() for i in range(10)]

    def slow(data: bytes):  # noqa: ANN202 - aiohttp handler factory
        async def handler(request: web.Request) -> web.StreamResponse:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.2)  # long enough to overlap even on a slow machine
            active -= 1
            return await upstream.send(request, Reply(body=data))

        return handler

    for blob in blobs:
        upstream.handle(f"/v2/{REPO}/blobs/{sha256(blob)}", slow(blob))
    result = await make_fetcher(upstream.url).fetch_blobs(
        "s1", "lab", REPO, [descriptor(b) for b in blobs]
    )
    assert len(result.blobs) == 10
    assert 1 < peak <= 4


async def test_one_failing_blob_fails_the_call(upstream: HostileUpstream, make_fetcher) -> None:
    serve_blob(upstream, b"fine")
    upstream.reply(f"/v2/{REPO}/blobs/{sha256(b'broken')}", Reply(status=500))
    with pytest.raises(UpstreamError, match="500"):
        await make_fetcher(upstream.url).fetch_blobs(
            "s1", "lab", REPO, [descriptor(b"fine"), descriptor(b"broken")]
        )


# -- FetchArtifact ----------------------------------------------------------------------


def artifact_manifest(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": SIG,
                    "digest": sha256(layer),
                    "size": len(layer),
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUC..."},
                }
                for layer in layers
            ],
        }
    ).encode()


async def test_artifact_manifest_and_blobs_are_staged(
    upstream: HostileUpstream, make_fetcher
) -> None:
    config, payload = b"{}", b'{"critical":{}}'
    body = artifact_manifest(config, [payload])
    tag = "sha256-" + "a" * 64 + ".sig"
    upstream.reply(f"/v2/{REPO}/manifests/{tag}", Reply(headers={"Content-Type": OCI}, body=body))
    serve_blob(upstream, config)
    serve_blob(upstream, payload)
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_artifact("s1", "lab", REPO, tag, 0, 0)
    assert result.found and result.verdict.allowed
    assert result.manifest is not None and result.manifest.computed_digest == sha256(body)
    assert [d.digest for d in result.blobs] == [sha256(config), sha256(payload)]
    assert result.blobs[1].annotations == {"dev.cosignproject.cosign/signature": "MEUC..."}
    assert fetcher.staging.read("s1", sha256(payload), 1 << 20) == payload
    assert [e.purpose for e in result.exchanges] == ["artifact", "artifact-blob", "artifact-blob"]


async def test_g01_absent_artifact_is_an_answer(upstream: HostileUpstream, make_fetcher) -> None:
    result = await make_fetcher(upstream.url).fetch_artifact("s1", "lab", REPO, "nope.sig", 0, 0)
    assert not result.found
    assert result.verdict.allowed
    assert [f.code for f in result.verdict.findings] == ["fetch.artifact_not_found"]


async def test_g01_artifact_lookup_failure_is_an_error(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(f"/v2/{REPO}/manifests/x.sig", Reply(status=503))
    with pytest.raises(UpstreamError):
        await make_fetcher(upstream.url).fetch_artifact("s1", "lab", REPO, "x.sig", 0, 0)


async def test_g08_too_many_artifact_blobs_are_denied_unfetched(
    upstream: HostileUpstream, make_fetcher
) -> None:
    body = artifact_manifest(b"{}", [b"a", b"b", b"c"])
    upstream.reply(f"/v2/{REPO}/manifests/x.sig", Reply(body=body))
    result = await make_fetcher(upstream.url).fetch_artifact("s1", "lab", REPO, "x.sig", 0, 3)
    assert [f.code for f in result.verdict.findings] == ["fetch.too_many_blobs"]
    assert len(upstream.requests) == 1


async def test_g09_oversized_artifact_blob_is_denied_unfetched(
    upstream: HostileUpstream, make_fetcher
) -> None:
    body = artifact_manifest(b"{}", [b"x" * 101])
    upstream.reply(f"/v2/{REPO}/manifests/x.sig", Reply(body=body))
    result = await make_fetcher(upstream.url).fetch_artifact("s1", "lab", REPO, "x.sig", 100, 0)
    assert [f.code for f in result.verdict.findings] == ["fetch.blob_too_large"]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"config": {}, "layers": []}',
        b'{"layers": []}',
        b'{"config": {"mediaType": "a", "digest": "sha256:x", "size": 1}, "layers": []}',
        b'{"config": {"mediaType": "a", "digest": "sha256:' + b"a" * 64 + b'", "size": -1},'
        b' "layers": []}',
        b'{"config": {"mediaType": "a", "digest": "sha256:' + b"a" * 64 + b'", "size": 1},'
        b' "layers": [], "layers": [{}]}',
    ],
)
def test_f03_malformed_artifact_manifests_are_denied(body: bytes) -> None:
    with pytest.raises(FetchDenied) as caught:
        parse_artifact_manifest(body)
    assert caught.value.finding.code == "fetch.artifact_malformed"


# -- ListTags ----------------------------------------------------------------------------


async def test_list_tags(upstream: HostileUpstream, make_fetcher) -> None:
    upstream.reply(
        f"/v2/{REPO}/tags/list",
        Reply(body=json.dumps({"name": REPO, "tags": ["1.0", "latest"]}).encode()),
    )
    tags, exchanges = await make_fetcher(upstream.url).list_tags("lab", REPO, "0.9")
    assert tags == ["1.0", "latest"]
    # Pages of limits.tag_page_size; the whole list is read (the front door pages it).
    assert upstream.requests[0].query == "n=1000&last=0.9"
    assert exchanges[0].purpose == "tags"
    assert exchanges[0].url.endswith("?n=REDACTED&last=REDACTED")


async def test_list_tags_body_is_bounded(upstream: HostileUpstream, make_fetcher) -> None:
    # Limit: manifest_bytes = 1000 bounds a tag list page too.
    upstream.reply(f"/v2/{REPO}/tags/list", Reply(body=b'{"tags": [' + b'"a",' * 400 + b'"b"]}'))
    with pytest.raises(UpstreamError, match="expected at most 1000 bytes"):
        await make_fetcher(upstream.url, limits={"manifest_bytes": 1000}).list_tags("lab", REPO, "")


async def test_list_tags_follows_link_pages_on_the_same_url(
    upstream: HostileUpstream, make_fetcher
) -> None:
    path = f"/v2/{REPO}/tags/list"

    def page(tags: list[str], link: str = "") -> Reply:
        headers = {"Link": link} if link else {}
        return Reply(headers=headers, body=json.dumps({"tags": tags}).encode())

    upstream.reply(
        path,
        page(["a", "b"], f'<{path}?n=2&last=b>; rel="next"'),
        page(["c", "d"], f'<{upstream.url}{path}?n=2&last=d>; rel="next"'),
        page(["e"]),
    )
    tags, _ = await make_fetcher(upstream.url).list_tags("lab", REPO, "")
    assert tags == ["a", "b", "c", "d", "e"]
    assert [r.query for r in upstream.requests] == ["n=1000", "n=2&last=b", "n=2&last=d"]


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        (
            '<http://elsewhere.example/v2/{repo}/tags/list?last=b>; rel="next"',
            "fetch.tags_malformed: got a Link to another host or path, expected the same tags",
        ),
        ('</v2/{repo}/tags/list?n=1000>; rel="next"', "fetch.tags_loop: .* already read"),
        ("garbage", "fetch.tags_malformed: got an unparsable Link header"),
    ],
)
async def test_list_tags_refuses_links_elsewhere_or_back(
    upstream: HostileUpstream, make_fetcher, link: str, problem: str
) -> None:
    upstream.reply(
        f"/v2/{REPO}/tags/list",
        Reply(headers={"Link": link.format(repo=REPO)}, body=b'{"tags": ["a"]}'),
    )
    with pytest.raises(UpstreamError, match=problem):
        await make_fetcher(upstream.url).list_tags("lab", REPO, "")
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("body", [b"nope", b'{"tags": "x"}', b'{"tags": [1]}'])
async def test_list_tags_malformed_is_upstream_error(
    upstream: HostileUpstream, make_fetcher, body: bytes
) -> None:
    upstream.reply(f"/v2/{REPO}/tags/list", Reply(body=body))
    with pytest.raises(UpstreamError):
        await make_fetcher(upstream.url).list_tags("lab", REPO, "")


# -- request validation -------------------------------------------------------------------


async def test_unknown_alias_is_invalid_request(upstream: HostileUpstream, make_fetcher) -> None:
    with pytest.raises(InvalidRequest, match="unknown upstream alias"):
        await make_fetcher(upstream.url).fetch_manifest("s1", "elsewhere", REPO, "v1")


@pytest.mark.parametrize(
    ("session", "repository", "reference"),
    [
        ("../etc", REPO, "v1"),
        ("s1", "../../v2", "v1"),
        ("s1", "Team/App", "v1"),
        ("s1", REPO, "v1/../../x"),
        ("s1", REPO, "sha256:short"),
        ("s1", REPO, "v1?x=1"),
    ],
)
async def test_p02_invalid_request_parts_are_refused_without_request(
    upstream: HostileUpstream, make_fetcher, session: str, repository: str, reference: str
) -> None:
    with pytest.raises(InvalidRequest):
        await make_fetcher(upstream.url).fetch_manifest(session, "lab", repository, reference)
    assert upstream.requests == []
