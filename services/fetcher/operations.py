"""The fetcher's operations: what each RPC does, without gRPC.

:class:`Fetcher` owns one :class:`RegistryClient` per configured upstream.
Upstream settings and credentials come from the service's own configuration,
looked up by alias; a request can name an upstream but never supply its URL
or credentials. A limit broken while fetching is a DENY verdict (data); an
upstream that fails is an :class:`UpstreamError` (the check could not run).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

import httpx

from pullguard.services.fetcher.client import RegistryClient
from pullguard.services.fetcher.documents import (
    next_link,
    parse_artifact_manifest,
    parse_referrers_index,
)
from pullguard.services.fetcher.models import (
    LAYER,
    ArtifactResult,
    BlobsResult,
    Descriptor,
    Exchange,
    FetchDenied,
    ManifestResult,
    ReferrersResult,
    StagedBlob,
    StagedManifest,
)
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.digests import DigestSyntaxError, is_digest, parse_digest
from pullguard.services.runtime.errors import InvalidRequest, NotFound, StagingError, UpstreamError
from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.staging import StagingStore
from pullguard.services.runtime.tasks import gather_or_cancel

#: The distribution spec's repository name grammar.
_NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
MAX_NAME = 255
#: Blobs fetched at once per FetchBlobs call.
BLOB_CONCURRENCY = 4
#: Pages of the referrers API followed at most (F-15 e).
REFERRERS_PAGES = 5
#: A media type (RFC 6838 names), as an artifactType filter.
_MEDIA_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


class Fetcher:
    """Fetches manifests, blobs, artifacts and tag lists into staging."""

    def __init__(
        self,
        config: Config,
        *,
        blob_concurrency: int = BLOB_CONCURRENCY,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._config = config
        self._limits = config.limits
        self.staging = StagingStore(config.state_dir / "staging")
        self._blob_concurrency = max(1, blob_concurrency)
        self._client_options = client_options or {}
        self._clients: dict[str, RegistryClient] = {}
        # Built now, so trust stores are loaded at start-up, not by the first pull.
        for alias in config.upstreams:
            self.client(alias)

    def client(self, alias: str) -> RegistryClient:
        """The client of a configured upstream; InvalidRequest for an unknown alias."""
        upstream = self._config.upstreams.get(alias)
        if upstream is None:
            raise InvalidRequest(f"unknown upstream alias {alias[:100]!r}")
        client = self._clients.get(alias)
        if client is None:
            client = RegistryClient(upstream, self._limits, self.staging, **self._client_options)
            self._clients[alias] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # -- operations ---------------------------------------------------------

    async def fetch_manifest(
        self, session: str, alias: str, repository: str, reference: str
    ) -> ManifestResult:
        """Fetch one manifest by tag or digest (a tag is resolved by exactly one GET)."""
        self._check_session(session)
        _check_repository(repository)
        _check_reference(reference)
        client = self.client(alias)
        exchanges: list[Exchange] = []
        try:
            manifest = await client.fetch_manifest(session, repository, reference, exchanges)
        except FetchDenied as denied:
            return ManifestResult(_deny(denied.finding), None, exchanges)
        return ManifestResult(Verdict(LAYER), manifest, exchanges)

    async def fetch_blobs(
        self, session: str, alias: str, repository: str, descriptors: Sequence[Descriptor]
    ) -> BlobsResult:
        """Stream each blob into staging, bounded by its descriptor size."""
        self._check_session(session)
        _check_repository(repository)
        client = self.client(alias)
        exchanges: list[Exchange] = []
        blobs, findings = await self._fetch_blobs(
            client, session, repository, descriptors, exchanges, "blob"
        )
        return BlobsResult(Verdict.of(LAYER, findings), blobs, exchanges)

    async def fetch_artifact(
        self,
        session: str,
        alias: str,
        repository: str,
        reference: str,
        max_blob_size: int,
        max_blobs: int,
    ) -> ArtifactResult:
        """Fetch a small artifact (a manifest by tag or digest, then the blobs it lists).

        Absent (404) is an answer: ``found`` is false. Any other failure is
        an error. Unset bounds (0) fall back to the signature limits. Fetched
        by digest, a manifest whose bytes hash to another digest is a DENY
        (``fetch.digest_mismatch``) and none of its blobs is fetched.
        """
        self._check_session(session)
        _check_repository(repository)
        _check_reference(reference)
        blob_limit = max_blob_size if max_blob_size > 0 else self._limits.signature_bytes
        count_limit = max_blobs if max_blobs > 0 else self._limits.layers
        client = self.client(alias)
        exchanges: list[Exchange] = []
        try:
            manifest = await client.fetch_manifest(
                session, repository, reference, exchanges, purpose="artifact"
            )
        except NotFound:
            absent = Finding.info("fetch.artifact_not_found", f"no artifact {reference}")
            return ArtifactResult(False, Verdict.of(LAYER, [absent]), None, [], exchanges)
        except FetchDenied as denied:
            return ArtifactResult(True, _deny(denied.finding), None, [], exchanges)
        if is_digest(reference) and manifest.computed_digest != reference:
            mismatch = Finding.error(
                "fetch.digest_mismatch",
                f"got an artifact manifest hashing to {manifest.computed_digest}, expected"
                f" {reference}",
                digest=reference,
                computed=manifest.computed_digest,
            )
            return ArtifactResult(True, _deny(mismatch), manifest, [], exchanges)
        try:
            descriptors = self._artifact_descriptors(session, manifest, blob_limit, count_limit)
        except FetchDenied as denied:
            return ArtifactResult(True, _deny(denied.finding), manifest, [], exchanges)
        _, findings = await self._fetch_blobs(
            client, session, repository, descriptors, exchanges, "artifact-blob"
        )
        return ArtifactResult(True, Verdict.of(LAYER, findings), manifest, descriptors, exchanges)

    async def list_referrers(
        self, alias: str, repository: str, digest: str, artifact_type: str
    ) -> ReferrersResult:
        """The OCI 1.1 referrers of ``digest``: ``GET /v2/<repo>/referrers/<digest>``,
        or, when the upstream has no referrers API (404), the referrers tag
        schema's index at tag ``<alg>-<hex>`` (distribution-spec).

        Neither present (both 404) is an answer: ``supported`` is false (not an
        error). Bounded: each page at most ``manifest_bytes``, at most
        ``limits.signatures * 10`` entries over at most :data:`REFERRERS_PAGES`
        pages, ``Link`` pagination only within the same URL path on the
        upstream, no page twice. Breaking a bound is a DENY. With
        ``artifact_type``, entries of other types are dropped (whether or not
        the server applied the filter); the rest are returned exactly as stated.
        """
        _check_repository(repository)
        try:
            parse_digest(digest)
        except DigestSyntaxError as exc:
            raise InvalidRequest(str(exc), oci_code="DIGEST_INVALID") from None
        if artifact_type and not _MEDIA_TYPE_RE.fullmatch(artifact_type):
            raise InvalidRequest(f"invalid artifact type {artifact_type[:140]!r}")
        client = self.client(alias)
        exchanges: list[Exchange] = []
        room = max(1, self._limits.signatures * 10)
        fallback = ""
        try:
            try:
                referrers = await self._referrers_api(
                    client, repository, digest, artifact_type, room, exchanges
                )
            except NotFound:
                fallback = referrers_tag(digest)
                try:
                    body = await client.referrers_tag(repository, fallback, digest, exchanges)
                except NotFound:
                    return ReferrersResult(False, Verdict(LAYER), [], exchanges)
                referrers = parse_referrers_index(body, room)
        except FetchDenied as denied:
            return ReferrersResult(True, _deny(denied.finding), [], exchanges, fallback)
        if artifact_type:
            referrers = [r for r in referrers if r.artifact_type == artifact_type]
        return ReferrersResult(True, Verdict(LAYER), referrers, exchanges, fallback)

    async def _referrers_api(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        artifact_type: str,
        room: int,
        exchanges: list[Exchange],
    ) -> list[Descriptor]:
        """Every page of the referrers API; NotFound when its first page is a 404."""
        first = client.url(f"/v2/{repository}/referrers/{digest}")
        if artifact_type:
            first = first.copy_merge_params({"artifactType": artifact_type})
        referrers: list[Descriptor] = []
        url: httpx.URL | None = first
        seen: set[str] = set()
        for page in range(REFERRERS_PAGES + 1):
            if url is None:
                break
            if page == REFERRERS_PAGES:
                raise FetchDenied.of(
                    "fetch.too_many_referrers",
                    f"got more than {REFERRERS_PAGES} pages of referrers, expected at most"
                    f" {REFERRERS_PAGES}",
                )
            seen.add(str(url))
            try:
                body, link = await client.referrers_page(url, repository, digest, exchanges)
            except NotFound:
                if page == 0:
                    raise
                raise UpstreamError(
                    f"upstream: {client.upstream.alias}: page {page + 1} of the referrers of"
                    f" {digest} answered 404"
                ) from None
            referrers.extend(parse_referrers_index(body, room - len(referrers)))
            url = _next_page("referrers", link, url, first, seen)
        return referrers

    async def list_tags(
        self, alias: str, repository: str, last: str
    ) -> tuple[list[str], list[Exchange]]:
        """Every tag of the upstream's list after ``last``: each page, following its
        ``Link``, at most ``limits.tag_pages`` pages and ``limits.tags`` tags (an
        error past them, never a silent cut). The front door pages it for its client."""
        _check_repository(repository)
        if last and not _TAG_RE.fullmatch(last):
            raise InvalidRequest(f"invalid tag {last[:140]!r} in last", oci_code="TAG_INVALID")
        client = self.client(alias)
        limits = self._config.limits
        exchanges: list[Exchange] = []
        where = f"upstream: {client.upstream.alias}: tag list of {repository}"
        first = url = client.tags_url(repository, last)
        seen = {str(url)}
        tags: list[str] = []
        for _ in range(limits.tag_pages):
            try:
                body, link = await client.list_tags(url, repository, exchanges)
                following = _next_page("tags", link, url, first, seen)
            except FetchDenied as denied:
                # A tag list is not checked content: a broken bound is an upstream failure.
                finding = denied.finding
                raise UpstreamError(f"{where}: {finding.code}: {finding.message}") from None
            tags.extend(_page_tags(body, where))
            if len(tags) > limits.tags:
                raise UpstreamError(f"{where} has more than limits.tags = {limits.tags} tags")
            if following is None:
                return tags, exchanges
            url = following
            seen.add(str(url))
        raise UpstreamError(f"{where} has more than limits.tag_pages = {limits.tag_pages} pages")

    # -- helpers ------------------------------------------------------------

    def _check_session(self, session: str) -> None:
        try:
            self.staging.session_dir(session)
        except StagingError as exc:
            raise InvalidRequest(exc.message) from None

    async def _fetch_blobs(
        self,
        client: RegistryClient,
        session: str,
        repository: str,
        descriptors: Sequence[Descriptor],
        exchanges: list[Exchange],
        purpose: str,
    ) -> tuple[list[StagedBlob], list[Finding]]:
        findings: list[Finding] = []
        if len(descriptors) > self._limits.layers + 1:
            findings.append(
                Finding.error(
                    "fetch.too_many_blobs",
                    f"got {len(descriptors)} blobs, expected at most {self._limits.layers + 1}",
                )
            )
            return [], findings
        wanted: dict[str, Descriptor] = {}
        for descriptor in descriptors:
            problem = self._blob_problem(descriptor)
            if problem is not None:
                findings.append(problem)
            elif descriptor.digest not in wanted:
                wanted[descriptor.digest] = descriptor
        staged: dict[str, StagedBlob] = {}
        slots = asyncio.Semaphore(self._blob_concurrency)

        async def fetch_one(descriptor: Descriptor) -> None:
            async with slots:
                try:
                    staged[descriptor.digest] = await client.fetch_blob(
                        session, repository, descriptor, exchanges, purpose
                    )
                except FetchDenied as denied:
                    findings.append(denied.finding)

        await gather_or_cancel(fetch_one(d) for d in wanted.values())
        return [staged[d] for d in wanted if d in staged], findings

    def _blob_problem(self, descriptor: Descriptor) -> Finding | None:
        try:
            parse_digest(descriptor.digest)
        except DigestSyntaxError as exc:
            return Finding.error(
                "fetch.invalid_digest",
                f"got {exc}, expected sha256 or sha512 hex",
                digest=descriptor.digest[:140],
            )
        if descriptor.size < 0:
            return Finding.error(
                "fetch.invalid_size",
                f"got size {descriptor.size}, expected 0 or more",
                digest=descriptor.digest,
            )
        if descriptor.size > self._limits.blob_bytes:
            return Finding.error(
                "fetch.blob_too_large",
                f"got a descriptor size of {descriptor.size}, expected at most"
                f" {self._limits.blob_bytes}",
                digest=descriptor.digest,
            )
        return None

    def _artifact_descriptors(
        self, session: str, manifest: StagedManifest, blob_limit: int, count_limit: int
    ) -> list[Descriptor]:
        body = self.staging.read(session, manifest.staged_key, self._limits.manifest_bytes)
        descriptors = parse_artifact_manifest(body)
        if len(descriptors) > count_limit:
            raise FetchDenied.of(
                "fetch.too_many_blobs",
                f"got {len(descriptors)} blobs in the artifact, expected at most {count_limit}",
            )
        for descriptor in descriptors:
            if descriptor.size > blob_limit:
                raise FetchDenied.of(
                    "fetch.blob_too_large",
                    f"got an artifact blob of {descriptor.size} bytes, expected at most"
                    f" {blob_limit}",
                    digest=descriptor.digest[:140],
                )
        return descriptors


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag of a digest: ``<alg>-<ref>``, with <alg> cut
    to 32 and <ref> to 64 characters so that it is a valid tag (distribution-spec)."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


def _next_page(
    kind: str, link: str, current: httpx.URL, first: httpx.URL, seen: set[str]
) -> httpx.URL | None:
    """The next page named by ``Link``, which must stay on the first page's origin and path.

    ``kind`` (``referrers`` or ``tags``) names the paged document in the
    finding codes: ``fetch.<kind>_malformed``, ``fetch.<kind>_loop``."""
    target = next_link(link, current, f"fetch.{kind}_malformed")
    if target is None:
        return None
    if (target.scheme, target.host, target.port, target.path) != (
        first.scheme,
        first.host,
        first.port,
        first.path,
    ):
        raise FetchDenied.of(
            f"fetch.{kind}_malformed",
            f"got a Link to another host or path, expected the same {kind} URL",
            link=target.path[:200],
        )
    if str(target) in seen:
        raise FetchDenied.of(
            f"fetch.{kind}_loop", "got a Link back to a page already read, expected a new page"
        )
    return target


def _page_tags(body: bytes, where: str) -> list[str]:
    """The ``tags`` of one tag-list page (null means none)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamError(f"{where} is not JSON") from None
    tags = data.get("tags") if isinstance(data, dict) else None
    if tags is None and isinstance(data, dict):
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UpstreamError(f"{where} has no list of tags")
    return tags


def _check_repository(repository: str) -> None:
    if len(repository) > MAX_NAME or not _NAME_RE.fullmatch(repository):
        raise InvalidRequest(f"invalid repository name {repository[:140]!r}")


def _check_reference(reference: str) -> None:
    if ":" in reference:
        try:
            parse_digest(reference)
        except DigestSyntaxError as exc:
            raise InvalidRequest(str(exc), oci_code="DIGEST_INVALID") from None
    elif not _TAG_RE.fullmatch(reference):
        raise InvalidRequest(f"invalid tag {reference[:140]!r}", oci_code="TAG_INVALID")


def _deny(finding: Finding) -> Verdict:
    return Verdict(LAYER, (finding,))
