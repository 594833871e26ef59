"""An OCI distribution API client for one upstream registry.

``RegistryClient`` is the only code in pullguard that fetches from a
registry (its requests go through :class:`session.UpstreamSession`). On top
of the session it reads bodies and decides what a response means:

- bodies are streamed into staging, hashed as they arrive, bounded in bytes
  (descriptor size + 1, or the manifest limit, whatever ``Content-Length``
  says; a ``Content-Length`` over the bound is refused unread) and in time
  (idle timeout, throughput floor, deadline) (T-03, T-09);
- a body the server encoded although we asked for identity is decoded within
  bounds and the decoded entity is hashed; unsupported encodings are upstream
  errors (T-10, see :mod:`encoding`);
- a body that ends early (connection closed before ``Content-Length``, a
  chunked or encoded body shorter than the descriptor size) or an unsolicited
  ``206`` is retried from zero, then an upstream error: nothing partial is
  ever committed to staging (T-02). There is no resume with ``Range``;
  restarting keeps one code path and cannot splice two bodies;
- error bodies are read only up to ``limits.error_body_bytes``, for a short
  diagnostic (T-03 d); HEAD is never used, so no HEAD ``Content-Length`` is
  ever relied on (T-03 e);
- transient failures (connection errors, 5xx, 429, short bodies) are retried
  a few times, then raised as :class:`UpstreamError` carrying the HTTP status
  the front door should answer: 503 for 429/503, 504 for timeouts, 502
  otherwise (O-04);
- at most ``concurrency`` requests run against this upstream at once, so a
  stalled upstream cannot take every slot of the service (T-09 e).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import httpcore
import httpx

from pullguard.services.fetcher import encoding
from pullguard.services.fetcher.metrics import counted
from pullguard.services.fetcher.models import (
    Descriptor,
    Exchange,
    FetchDenied,
    StagedBlob,
    StagedManifest,
)
from pullguard.services.fetcher.network import Resolver
from pullguard.services.fetcher.session import (
    BodyTooLarge,
    Transient,
    UpstreamSession,
    header,
    read_small,
)
from pullguard.services.fetcher.threaded import body_of
from pullguard.services.fetcher.transfer import THROUGHPUT_GRACE, Copied, TooSlow, copy_body
from pullguard.services.runtime.config import Limits, Upstream
from pullguard.services.runtime.digests import is_digest, parse_digest
from pullguard.services.runtime.errors import (
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from pullguard.services.runtime.findings import sanitize
from pullguard.services.runtime.staging import StagingStore

T = TypeVar("T")

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        # Asked for so that format can refuse schema1 by name rather than by
        # a confusing fallback.
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    )
)
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
#: Longest wait a Retry-After header can impose between attempts (O-04).
MAX_RETRY_AFTER = 2.0
#: Requests in flight against one upstream at most (T-09 e).
UPSTREAM_CONCURRENCY = 8
#: Longest time spent reading an error body for its diagnostic.
ERROR_BODY_SECONDS = 5.0

TooLarge = Callable[[int | None], FetchDenied]


class RegistryClient:
    """The distribution API of one configured upstream."""

    def __init__(
        self,
        upstream: Upstream,
        limits: Limits,
        staging: StagingStore,
        *,
        retry_backoff: float = 0.2,
        max_retry_after: float = MAX_RETRY_AFTER,
        throughput_grace: float = THROUGHPUT_GRACE,
        concurrency: int = UPSTREAM_CONCURRENCY,
        resolver: Resolver | None = None,
        connector: httpcore.NetworkBackend | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.upstream = upstream
        self._limits = limits
        self._staging = staging
        self._retry_backoff = retry_backoff
        self._max_retry_after = max_retry_after
        self._grace = throughput_grace
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._session = UpstreamSession(
            upstream, limits, resolver=resolver, connector=connector, transport=transport
        )
        self._name = self._session.name

    async def aclose(self) -> None:
        await self._session.aclose()

    def url(self, path: str) -> httpx.URL:
        return httpx.URL(self.upstream.url + path)

    # -- operations ---------------------------------------------------------

    async def fetch_manifest(
        self,
        session: str,
        repository: str,
        reference: str,
        exchanges: list[Exchange],
        purpose: str = "manifest",
    ) -> StagedManifest:
        """GET a manifest by tag or digest, once, into staging under its computed digest.

        Raises FetchDenied (``fetch.manifest_too_large``, redirect denials),
        NotFound, UpstreamError or UpstreamTimeout.
        """
        by_digest = is_digest(reference)
        algorithm = parse_digest(reference)[0] if by_digest else "sha256"
        separator = "@" if by_digest else ":"
        what = f"manifest {repository}{separator}{reference}"
        url = self.url(f"/v2/{repository}/manifests/{reference}")
        limit = self._limits.manifest_bytes

        def too_large(declared: int | None) -> FetchDenied:
            return _too_large_manifest(limit, declared)

        async def attempt() -> StagedManifest:
            response = await self._session.open(
                url,
                purpose=purpose,
                digest=reference if by_digest else "",
                scope=_scope(repository),
                accept=MANIFEST_ACCEPT,
                exchanges=exchanges,
            )
            try:
                await self._check_status(response, what, "MANIFEST_UNKNOWN")
                with self._staging.writer(session) as writer:
                    copied = await self._read_entity(
                        response, writer.write, limit, algorithm, what, too_large
                    )
                    writer.commit(copied.digest)
            finally:
                await response.aclose()
            return StagedManifest(
                staged_key=copied.digest,
                computed_digest=copied.digest,
                size=copied.size,
                content_type=header(response, "content-type"),
                docker_content_digest=header(response, "docker-content-digest"),
            )

        return await self._with_retries(what, self._limits.manifest_deadline, attempt)

    async def fetch_blob(
        self,
        session: str,
        repository: str,
        descriptor: Descriptor,
        exchanges: list[Exchange],
        purpose: str = "blob",
    ) -> StagedBlob:
        """GET a blob into staging under its descriptor digest, reading at most size+1 bytes.

        The descriptor digest must already be valid syntax. Raises FetchDenied
        (``fetch.size_exceeded``, ...), NotFound (BLOB_UNKNOWN), UpstreamError.
        """
        algorithm, _ = parse_digest(descriptor.digest)
        what = f"blob {repository}@{descriptor.digest}"
        url = self.url(f"/v2/{repository}/blobs/{descriptor.digest}")
        limit = descriptor.size

        def too_large(declared: int | None) -> FetchDenied:
            return _size_exceeded(descriptor.digest, limit, declared)

        async def attempt() -> StagedBlob:
            response = await self._session.open(
                url,
                purpose=purpose,
                digest=descriptor.digest,
                scope=_scope(repository),
                accept="*/*",
                exchanges=exchanges,
            )
            try:
                await self._check_status(response, what, "BLOB_UNKNOWN")
                with self._staging.writer(session) as writer:
                    copied = await self._read_entity(
                        response, writer.write, limit, algorithm, what, too_large
                    )
                    if copied.size < limit and not _length_is_final(response):
                        # Without a Content-Length that said so, a short body
                        # is a truncation, not an answer: start again (T-02).
                        raise Transient(
                            f"body of {what} ended after {copied.size} of {limit} bytes"
                        )
                    # fsync waits for the disk: not on the event loop.
                    await asyncio.to_thread(writer.commit, descriptor.digest)
            finally:
                await response.aclose()
            return StagedBlob(descriptor.digest, copied.size, copied.digest)

        return await self._with_retries(what, self._limits.blob_deadline, attempt)

    def tags_url(self, repository: str, last: str) -> httpx.URL:
        """The first page of the tag list (``limits.tag_page_size`` tags), after ``last``."""
        params = {"n": str(max(1, self._limits.tag_page_size)), **({"last": last} if last else {})}
        return self.url(f"/v2/{repository}/tags/list").copy_merge_params(params)

    async def list_tags(
        self, url: httpx.URL, repository: str, exchanges: list[Exchange]
    ) -> tuple[bytes, str]:
        """GET one page of the tag list: (body of at most manifest_bytes, Link header)."""
        what = f"tag list of {repository}"
        return await self._small_document(
            url, repository, "", "tags", "application/json", what, "fetch.tags_too_large", exchanges
        )

    async def referrers_page(
        self, url: httpx.URL, repository: str, digest: str, exchanges: list[Exchange]
    ) -> tuple[bytes, str]:
        """GET one page of the referrers API: (body, Link header). NotFound on 404."""
        what = f"referrers of {repository}@{digest}"
        return await self._small_document(
            url,
            repository,
            digest,
            "referrers",
            INDEX_MEDIA_TYPE,
            what,
            "fetch.referrers_too_large",
            exchanges,
        )

    async def referrers_tag(
        self, repository: str, tag: str, digest: str, exchanges: list[Exchange]
    ) -> bytes:
        """GET the referrers fallback tag's index (at most manifest_bytes). NotFound on 404."""
        what = f"referrers tag {repository}:{tag}"
        body, _ = await self._small_document(
            self.url(f"/v2/{repository}/manifests/{tag}"),
            repository,
            digest,
            "referrers-tag",
            INDEX_MEDIA_TYPE,
            what,
            "fetch.referrers_too_large",
            exchanges,
        )
        return body

    async def _small_document(
        self,
        url: httpx.URL,
        repository: str,
        digest: str,
        purpose: str,
        accept: str,
        what: str,
        code: str,
        exchanges: list[Exchange],
    ) -> tuple[bytes, str]:
        """GET a small JSON document into memory (at most manifest_bytes); NotFound on 404."""
        limit = self._limits.manifest_bytes

        def too_large(declared: int | None) -> FetchDenied:
            got = f"Content-Length {declared}" if declared is not None else f"over {limit} bytes"
            return FetchDenied.of(
                code,
                f"got a {what} of {got}, expected at most {limit} bytes",
                limit=limit,
            )

        async def attempt() -> tuple[bytes, str]:
            response = await self._session.open(
                url,
                purpose=purpose,
                digest=digest,
                scope=_scope(repository),
                accept=accept,
                exchanges=exchanges,
            )
            body = bytearray()
            try:
                await self._check_status(response, what, "NAME_UNKNOWN")
                await self._read_entity(response, body.extend, limit, "sha256", what, too_large)
                link = ", ".join(response.headers.get_list("link"))
            finally:
                await response.aclose()
            return bytes(body), link

        return await self._with_retries(what, self._limits.manifest_deadline, attempt)

    # -- bodies, statuses, retries -------------------------------------------

    async def _read_entity(
        self,
        response: httpx.Response,
        write: Callable[[bytes], None],
        limit: int,
        algorithm: str,
        what: str,
        too_large: TooLarge,
    ) -> Copied:
        """Copy a 200 body (decoded if the server encoded it) to ``write``, bounded."""
        try:
            codings = encoding.parse_content_encoding(response.headers.get_list("content-encoding"))
        except encoding.EncodingError as exc:
            raise UpstreamError(f"upstream: {self._name}: {what}: {exc}") from None
        declared = _content_length(response)
        if not codings and declared is not None and declared > limit:
            raise too_large(declared)
        alias, coding = self.upstream.alias, codings[0] if codings else None

        def decode(pieces: Iterator[bytes]) -> Iterator[bytes]:
            pieces = counted(alias, pieces)
            return encoding.decode(pieces, coding, limit) if coding else pieces

        try:
            copied = await copy_body(
                body_of(response),
                write,
                limit=limit,
                algorithm=algorithm,
                min_bytes_per_second=self._limits.min_bytes_per_second,
                grace=self._grace,
                decode=decode,
            )
        except encoding.EncodedTooLarge:
            raise too_large(None) from None
        except encoding.EncodingError as exc:
            # Corrupt or cut short in transit; a retry may get it whole.
            raise Transient(str(exc)) from None
        except TooSlow as exc:
            raise UpstreamTimeout(f"upstream: {self._name}: {what} too slow: {exc}") from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"upstream: {self._name}: {what} stalled: no data within the"
                f" {self._limits.idle_timeout:g} s idle timeout"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise Transient(f"body of {what} broke off: {type(exc).__name__}") from None
        if copied.over_limit:
            raise too_large(None)
        return copied

    async def _check_status(self, response: httpx.Response, what: str, unknown_code: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 206:
            # We never send Range: a partial answer is never taken for the whole.
            raise Transient("answered 206 Partial Content to a request without Range")
        detail = await self._error_detail(response)
        if status == 404:
            raise NotFound(
                f"upstream: {self._name}: {what} not found (404{detail})", oci_code=unknown_code
            )
        if status in (401, 403):
            raise UpstreamError(
                f"upstream: {self._name}: upstream refused access to {what} ({status}{detail})"
            )
        if status == 429 or 500 <= status <= 599:
            raise Transient(
                f"answered {status}{detail}",
                retry_after=_retry_after(response),
                status=503 if status in (429, 503) else 504 if status == 504 else 502,
            )
        raise UpstreamError(f"upstream: {self._name}: {what}: unexpected status {status}{detail}")

    async def _error_detail(self, response: httpx.Response) -> str:
        """ ": CODE: message" from an OCI error body read within bounds, or ""."""
        limit = self._limits.error_body_bytes
        try:
            async with asyncio.timeout(min(ERROR_BODY_SECONDS, self._limits.idle_timeout)):
                body = await read_small(response, limit)
        except BodyTooLarge:
            return f": error body over {limit} bytes, not read further"
        except (TimeoutError, httpx.HTTPError):
            return ""
        return _oci_error(body)

    async def _with_retries(
        self, what: str, deadline: float, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``attempt`` until it succeeds or fails for good, all within ``deadline``."""
        attempts = self._limits.retries + 1
        failure: Transient | None = None
        try:
            async with asyncio.timeout(deadline):
                for number in range(attempts):
                    try:
                        async with self._slots:
                            return await attempt()
                    except Transient as exc:
                        failure = exc
                    if number + 1 < attempts:
                        delay = self._retry_backoff * (2**number)
                        await asyncio.sleep(
                            max(delay, min(failure.retry_after, self._max_retry_after))
                        )
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream: {self._name}: {what} not complete within the {deadline:g} s deadline"
            ) from None
        assert failure is not None
        kind = UpstreamTimeout if failure.timeout else UpstreamUnreachable
        error = kind(f"upstream: {self._name}: {what}: {failure} ({attempts} attempts)")
        error.http_status = failure.status
        raise error


def _scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _content_length(response: httpx.Response) -> int | None:
    values = response.headers.get_list("content-length")
    if len(values) != 1:
        return None
    value = values[0].strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


def _length_is_final(response: httpx.Response) -> bool:
    """Did an unencoded body end where its Content-Length said it would?

    httpx raises when a connection closes before Content-Length bytes, so a
    body read to the end with a single Content-Length and no encoding is the
    whole entity as the server states it.
    """
    no_encoding = all(
        c.strip().lower() in ("", "identity")
        for v in response.headers.get_list("content-encoding")
        for c in v.split(",")
    )
    return no_encoding and _content_length(response) is not None


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() and len(value) < 10 else 0.0


def _oci_error(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return ""
    code, message = errors[0].get("code"), errors[0].get("message")
    parts = [p for p in (code, message) if isinstance(p, str) and p]
    return ": " + sanitize(": ".join(parts), 200) if parts else ""


def _too_large_manifest(limit: int, declared: int | None) -> FetchDenied:
    got = f"Content-Length {declared}" if declared is not None else f"more than {limit} bytes"
    return FetchDenied.of(
        "fetch.manifest_too_large",
        f"got a manifest of {got}, expected at most {limit} bytes",
        limit=limit,
    )


def _size_exceeded(digest: str, limit: int, declared: int | None = None) -> FetchDenied:
    got = f"Content-Length {declared}" if declared is not None else f"more than {limit} bytes"
    return FetchDenied.of(
        "fetch.size_exceeded",
        f"got {got} for {digest}, expected the descriptor size {limit}",
        digest=digest,
        limit=limit,
    )
