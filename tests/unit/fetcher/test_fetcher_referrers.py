"""FetchArtifact by digest and from another repository; the OCI 1.1 referrers API
with its bounds (F-15 e: entries, pages, pagination loops)."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from pullguard.services.fetcher.documents import next_link, parse_referrers_index
from pullguard.services.fetcher.models import FetchDenied
from pullguard.services.fetcher.operations import referrers_tag
from pullguard.services.runtime.errors import InvalidRequest, UpstreamError
from tests.support.hostile import HostileUpstream, Reply

REPO = "team/app"
SIGS = "team/signatures"
OCI = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SUBJECT = "sha256:" + "5" * 64
REFERRERS_PATH = f"/v2/{REPO}/referrers/{SUBJECT}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def artifact(layer: bytes) -> bytes:
    config = b"{}"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI,
            "artifactType": BUNDLE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256(config),
                "size": 2,
            },
            "layers": [{"mediaType": BUNDLE, "digest": sha256(layer), "size": len(layer)}],
            "subject": {"mediaType": OCI, "digest": SUBJECT, "size": 100},
        }
    ).encode()


def serve_artifact(upstream: HostileUpstream, repository: str, layer: bytes) -> bytes:
    body = artifact(layer)
    upstream.reply(
        f"/v2/{repository}/manifests/{sha256(body)}",
        Reply(headers={"Content-Type": OCI}, body=body),
    )
    upstream.reply(f"/v2/{repository}/blobs/{sha256(b'{}')}", Reply(body=b"{}"))
    upstream.reply(f"/v2/{repository}/blobs/{sha256(layer)}", Reply(body=layer))
    return body


def entry(n: int, artifact_type: str = BUNDLE, **extra: object) -> dict[str, object]:
    return {
        "mediaType": OCI,
        "digest": "sha256:" + f"{n:064x}",
        "size": 500 + n,
        "artifactType": artifact_type,
        "annotations": {"org.opencontainers.image.created": f"2026-01-0{n % 9 + 1}"},
        **extra,
    }


def page(entries: list[dict[str, object]], link: str = "") -> Reply:
    headers = {"Content-Type": INDEX}
    if link:
        headers["Link"] = link
    body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()
    return Reply(headers=headers, body=body)


# -- FetchArtifact ---------------------------------------------------------------------------


async def test_artifact_by_digest_is_staged_under_its_computed_digest(
    upstream: HostileUpstream, make_fetcher
) -> None:
    body = serve_artifact(upstream, REPO, b'{"bundle": 1}')
    fetcher = make_fetcher(upstream.url)
    result = await fetcher.fetch_artifact("s1", "lab", REPO, sha256(body), 0, 0)
    assert result.found and result.verdict.allowed
    assert result.manifest is not None
    assert result.manifest.staged_key == result.manifest.computed_digest == sha256(body)
    assert [d.digest for d in result.blobs] == [sha256(b"{}"), sha256(b'{"bundle": 1}')]
    assert result.exchanges[0].digest == sha256(body)


async def test_artifact_by_digest_with_other_bytes_is_denied_blobs_unfetched(
    upstream: HostileUpstream, make_fetcher
) -> None:
    wanted = "sha256:" + "a" * 64
    upstream.reply(f"/v2/{REPO}/manifests/{wanted}", Reply(body=artifact(b"x")))
    result = await make_fetcher(upstream.url).fetch_artifact("s1", "lab", REPO, wanted, 0, 0)
    assert result.found and not result.verdict.allowed
    assert [f.code for f in result.verdict.findings] == ["fetch.digest_mismatch"]
    assert result.blobs == []
    assert len(upstream.requests) == 1


async def test_artifact_from_another_repository(upstream: HostileUpstream, make_fetcher) -> None:
    body = serve_artifact(upstream, SIGS, b"sig")
    result = await make_fetcher(upstream.url).fetch_artifact("s1", "lab", SIGS, sha256(body), 0, 0)
    assert result.found and result.verdict.allowed
    assert {r.path.split("/")[3] for r in upstream.requests} == {"signatures"}


@pytest.mark.parametrize(
    ("repository", "reference"),
    [
        ("../team", "x.sig"),
        ("Team/Sigs", "x.sig"),
        (REPO, "sha256:" + "A" * 64),
        (REPO, "sha256:short"),
        (REPO, "../x"),
    ],
)
async def test_p02_artifact_repository_and_reference_are_validated(
    upstream: HostileUpstream, make_fetcher, repository: str, reference: str
) -> None:
    with pytest.raises(InvalidRequest):
        await make_fetcher(upstream.url).fetch_artifact("s1", "lab", repository, reference, 0, 0)
    assert upstream.requests == []


# -- ListReferrers ------------------------------------------------------------------------------


async def test_referrers_are_returned_exactly_as_stated_across_pages(
    upstream: HostileUpstream, make_fetcher
) -> None:
    fetcher = make_fetcher(upstream.url)
    # The second page has the same path: route on the query via a handler.
    first = page([entry(1), entry(2)], link=f'<{REFERRERS_PATH}?last=2>; rel="next"')
    second = page([entry(3, "application/spdx+json")])

    async def paged(request):  # noqa: ANN001, ANN202 - aiohttp handler
        return await upstream.send(request, second if request.query_string else first)

    upstream.handle(REFERRERS_PATH, paged)
    result = await fetcher.list_referrers("lab", REPO, SUBJECT, "")
    assert result.supported and result.verdict.allowed
    assert [r.digest for r in result.referrers] == [entry(n)["digest"] for n in (1, 2, 3)]
    first_entry = result.referrers[0]
    assert (first_entry.media_type, first_entry.size, first_entry.artifact_type) == (
        OCI,
        501,
        BUNDLE,
    )
    assert first_entry.annotations == entry(1)["annotations"]
    assert [e.purpose for e in result.exchanges] == ["referrers", "referrers"]
    assert upstream.requests[0].headers["accept"] == INDEX


async def test_referrers_artifact_type_filter_is_sent_and_applied(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # This server ignores the filter: pullguard applies it itself.
    upstream.reply(REFERRERS_PATH, page([entry(1), entry(2, "application/spdx+json")]))
    result = await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, BUNDLE)
    assert [r.digest for r in result.referrers] == [entry(1)["digest"]]
    assert (
        upstream.requests[0].query
        == "artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"
    )


async def test_g01_neither_referrers_api_nor_fallback_tag_is_an_answer(
    upstream: HostileUpstream, make_fetcher
) -> None:
    result = await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, "")
    assert not result.supported and result.verdict.allowed and result.referrers == []
    assert [r.path for r in upstream.requests] == [
        REFERRERS_PATH,
        f"/v2/{REPO}/manifests/sha256-{'5' * 64}",
    ]
    assert [e.purpose for e in result.exchanges] == ["referrers", "referrers-tag"]


async def test_g01_fallback_tag_lists_the_referrers_without_the_api(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(
        f"/v2/{REPO}/manifests/sha256-{'5' * 64}",
        page([entry(1), entry(2, "application/spdx+json")]),
    )
    result = await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, BUNDLE)
    assert result.supported and result.verdict.allowed
    assert result.fallback_tag == f"sha256-{'5' * 64}"
    assert [r.digest for r in result.referrers] == [entry(1)["digest"]]
    assert upstream.requests[1].headers["accept"] == INDEX


async def test_g01_fallback_tag_failure_is_an_error(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(f"/v2/{REPO}/manifests/sha256-{'5' * 64}", Reply(status=503))
    with pytest.raises(UpstreamError):
        await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, "")


async def test_f15_fallback_tag_index_is_bounded(upstream: HostileUpstream, make_fetcher) -> None:
    # Limit: signatures * 10 = 10 entries.
    upstream.reply(f"/v2/{REPO}/manifests/sha256-{'5' * 64}", page([entry(n) for n in range(11)]))
    result = await make_fetcher(upstream.url, limits={"signatures": 1}).list_referrers(
        "lab", REPO, SUBJECT, ""
    )
    assert [f.code for f in result.verdict.findings] == ["fetch.too_many_referrers"]
    assert result.fallback_tag == f"sha256-{'5' * 64}"


def test_referrers_tag_schema_names() -> None:
    assert referrers_tag(SUBJECT) == f"sha256-{'5' * 64}"
    # sha512: the encoded part is cut to 64 characters to stay a valid tag.
    assert referrers_tag("sha512:" + "a" * 128) == "sha512-" + "a" * 64


async def test_g01_referrers_lookup_failure_is_an_error(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(REFERRERS_PATH, Reply(status=500))
    with pytest.raises(UpstreamError):
        await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, "")


async def test_f15_referrers_beyond_the_entry_cap_are_denied(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Limit: signatures * 10 = 20 entries.
    upstream.reply(REFERRERS_PATH, page([entry(n) for n in range(21)]))
    result = await make_fetcher(upstream.url, limits={"signatures": 2}).list_referrers(
        "lab", REPO, SUBJECT, ""
    )
    assert [f.code for f in result.verdict.findings] == ["fetch.too_many_referrers"]
    assert result.referrers == []


async def test_f15_referrers_cap_counts_across_pages(
    upstream: HostileUpstream, make_fetcher
) -> None:
    # Limit: 20 entries; two pages of 15.
    first = page([entry(n) for n in range(15)], link=f'<{REFERRERS_PATH}?p=2>; rel="next"')
    second = page([entry(n) for n in range(15, 30)])

    async def paged(request):  # noqa: ANN001, ANN202
        return await upstream.send(request, second if request.query_string else first)

    upstream.handle(REFERRERS_PATH, paged)
    result = await make_fetcher(upstream.url, limits={"signatures": 2}).list_referrers(
        "lab", REPO, SUBJECT, ""
    )
    assert [f.code for f in result.verdict.findings] == ["fetch.too_many_referrers"]


async def test_f15_referrers_pagination_loop_is_cut(
    upstream: HostileUpstream, make_fetcher
) -> None:
    upstream.reply(REFERRERS_PATH, page([entry(1)], link=f'<{REFERRERS_PATH}>; rel="next"'))
    result = await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, "")
    assert [f.code for f in result.verdict.findings] == ["fetch.referrers_loop"]
    assert len(upstream.requests) == 1


async def test_f15_referrers_pages_are_bounded(upstream: HostileUpstream, make_fetcher) -> None:
    # Limit: 5 pages; every page links to a new one.
    async def endless_pages(request):  # noqa: ANN001, ANN202
        number = int(request.query.get("p", "0"))
        link = f'<{REFERRERS_PATH}?p={number + 1}>; rel="next"'
        return await upstream.send(request, page([entry(number)], link=link))

    upstream.handle(REFERRERS_PATH, endless_pages)
    result = await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, "")
    assert [f.code for f in result.verdict.findings] == ["fetch.too_many_referrers"]
    assert len(upstream.requests) == 5


@pytest.mark.parametrize(
    "link",
    [
        '<http://169.254.169.254/v2/x>; rel="next"',
        '<http://127.0.0.1:1/v2/team/app/referrers/x>; rel="next"',
        '</v2/team/other/referrers/sha256:x>; rel="next"',
    ],
)
async def test_f15_referrers_link_elsewhere_is_denied_unfollowed(
    upstream: HostileUpstream, make_fetcher, link: str
) -> None:
    upstream.reply(REFERRERS_PATH, page([entry(1)], link=link))
    result = await make_fetcher(upstream.url).list_referrers("lab", REPO, SUBJECT, "")
    assert [f.code for f in result.verdict.findings] == ["fetch.referrers_malformed"]
    assert len(upstream.requests) == 1


async def test_f15_referrers_body_is_bounded(upstream: HostileUpstream, make_fetcher) -> None:
    # Limit: manifest_bytes = 1000 per page.
    upstream.reply(REFERRERS_PATH, page([entry(n) for n in range(10)]))
    result = await make_fetcher(upstream.url, limits={"manifest_bytes": 1000}).list_referrers(
        "lab", REPO, SUBJECT, ""
    )
    assert [f.code for f in result.verdict.findings] == ["fetch.referrers_too_large"]


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b'{"manifests": {}}',
        b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "manifests": []}',
        b'{"manifests": [{"mediaType": "x", "digest": "sha256:ABC", "size": 1}]}',
        b'{"manifests": [], "manifests": []}',
    ],
)
def test_f15_malformed_referrers_index(body: bytes) -> None:
    with pytest.raises(FetchDenied) as caught:
        parse_referrers_index(body, 100)
    assert caught.value.finding.code == "fetch.referrers_malformed"


@pytest.mark.parametrize(
    ("digest", "artifact_type"),
    [("sha256:short", ""), (SUBJECT, "not a media type"), (SUBJECT, "a/b\r\nX: 1")],
)
async def test_p02_referrers_request_is_validated(
    upstream: HostileUpstream, make_fetcher, digest: str, artifact_type: str
) -> None:
    with pytest.raises(InvalidRequest):
        await make_fetcher(upstream.url).list_referrers("lab", REPO, digest, artifact_type)
    assert upstream.requests == []


def test_link_header_parsing() -> None:
    here = httpx.URL("https://r.example/v2/a/referrers/sha256:x")
    assert next_link("", here) is None
    assert next_link('<https://r.example/p2>; rel="prev"', here) is None
    assert str(next_link("</v2/a/referrers/sha256:x?last=b>; rel=next", here)) == (
        "https://r.example/v2/a/referrers/sha256:x?last=b"
    )
    with pytest.raises(FetchDenied):
        next_link("garbage", here)
