"""An OCI distribution API client for one upstream registry.

``RegistryClient`` is the only code in pullguard that opens connections to a
registry. Every request is a GET built here from scratch, so no header,
cookie or credential carries over from one request to the next:

- redirects are followed by hand (at most ``limits.redirects`` hops), each
  one recorded; ``Authorization`` is attached only while the URL's origin
  (scheme, host, port) is the upstream's own (T-06, T-07);
- a 401 is answered once, with a bearer token from the challenge's realm or
  with basic credentials; see :mod:`auth` for where credentials may go (T-08);
- bodies are streamed into staging, hashed as they arrive, bounded in bytes
  and in time (T-03, T-09); an encoded body is refused (T-10);
- transient failures (connection errors, 5xx, 429) are retried a few times,
  then raised as :class:`UpstreamError`; nothing here turns a failure into
  content.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from pullguard.services.fetcher import auth
from pullguard.services.fetcher.models import (
    Descriptor,
    Exchange,
    FetchDenied,
    StagedBlob,
    StagedManifest,
)
from pullguard.services.fetcher.transfer import THROUGHPUT_GRACE, Copied, TooSlow, copy_body
from pullguard.services.fetcher.urls import (
    is_loopback_host,
    origin,
    redact_url,
    resolve_redirect,
    upstream_origin,
)
from pullguard.services.runtime.config import Limits, Upstream
from pullguard.services.runtime.digests import is_digest, parse_digest
from pullguard.services.runtime.errors import NotFound, UpstreamError, UpstreamTimeout
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
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Response headers recorded in provenance: the ones later layers rely on.
RECORDED_HEADERS = ("content-type", "content-length", "docker-content-digest", "content-encoding")
USER_AGENT = "pullguard-fetcher/0.1"
#: Longest wait a Retry-After header can impose between attempts.
MAX_RETRY_AFTER = 2.0


class _Transient(Exception):
    """A failure worth another attempt: connection trouble, 5xx, 429."""

    def __init__(self, message: str, *, timeout: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.retry_after = retry_after


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Registries need no cookies; keeping none means none can cross a host."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.upstream = upstream
        self._limits = limits
        self._staging = staging
        self._retry_backoff = retry_backoff
        self._max_retry_after = max_retry_after
        self._grace = throughput_grace
        self._origin = upstream_origin(upstream)
        self._name = f"{upstream.alias} ({upstream.url})"
        self._tokens = auth.TokenCache()
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            timeout=httpx.Timeout(
                connect=limits.connect_timeout,
                read=limits.idle_timeout,
                write=limits.idle_timeout,
                # Waiting for a pooled connection is bounded like an idle read.
                pool=limits.idle_timeout,
            ),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

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

        Raises FetchDenied (``fetch.manifest_too_large``, ``fetch.content_encoding``,
        redirect denials), NotFound, UpstreamError or UpstreamTimeout.
        """
        by_digest = is_digest(reference)
        algorithm = parse_digest(reference)[0] if by_digest else "sha256"
        separator = "@" if by_digest else ":"
        what = f"manifest {repository}{separator}{reference}"
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        limit = self._limits.manifest_bytes

        async def attempt() -> StagedManifest:
            response = await self._open(
                url,
                purpose=purpose,
                digest=reference if by_digest else "",
                scope=_scope(repository),
                accept=MANIFEST_ACCEPT,
                exchanges=exchanges,
            )
            try:
                self._check_status(response, what, "MANIFEST_UNKNOWN")
                self._check_encoding(response)
                declared = _content_length(response)
                if declared is not None and declared > limit:
                    raise _too_large_manifest(limit, declared)
                with self._staging.writer(session) as writer:
                    copied = await self._copy(response, writer.write, limit, algorithm, what)
                    if copied.over_limit:
                        raise _too_large_manifest(limit)
                    writer.commit(copied.digest)
            finally:
                await response.aclose()
            return StagedManifest(
                staged_key=copied.digest,
                computed_digest=copied.digest,
                size=copied.size,
                content_type=_header(response, "content-type"),
                docker_content_digest=_header(response, "docker-content-digest"),
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
        url = self._url(f"/v2/{repository}/blobs/{descriptor.digest}")
        limit = descriptor.size

        async def attempt() -> StagedBlob:
            response = await self._open(
                url,
                purpose=purpose,
                digest=descriptor.digest,
                scope=_scope(repository),
                accept="*/*",
                exchanges=exchanges,
            )
            try:
                self._check_status(response, what, "BLOB_UNKNOWN")
                self._check_encoding(response)
                declared = _content_length(response)
                if declared is not None and declared > limit:
                    raise _size_exceeded(descriptor.digest, limit, declared)
                with self._staging.writer(session) as writer:
                    copied = await self._copy(response, writer.write, limit, algorithm, what)
                    if copied.over_limit:
                        raise _size_exceeded(descriptor.digest, limit)
                    writer.commit(descriptor.digest)
            finally:
                await response.aclose()
            return StagedBlob(descriptor.digest, copied.size, copied.digest)

        return await self._with_retries(what, self._limits.blob_deadline, attempt)

    async def list_tags(
        self, repository: str, n: int, last: str, exchanges: list[Exchange]
    ) -> bytes:
        """GET one page of the tag list; returns the body (at most manifest_bytes)."""
        what = f"tag list of {repository}"
        params = {
            key: value for key, value in (("n", str(n) if n > 0 else ""), ("last", last)) if value
        }
        url = self._url(f"/v2/{repository}/tags/list").copy_merge_params(params)
        limit = self._limits.manifest_bytes

        async def attempt() -> bytes:
            response = await self._open(
                url,
                purpose="tags",
                digest="",
                scope=_scope(repository),
                accept="application/json",
                exchanges=exchanges,
            )
            body = bytearray()
            try:
                self._check_status(response, what, "NAME_UNKNOWN")
                self._check_encoding(response)
                copied = await self._copy(response, body.extend, limit, "sha256", what)
            finally:
                await response.aclose()
            if copied.over_limit:
                raise UpstreamError(f"upstream: {self._name}: {what} is larger than {limit} bytes")
            return bytes(body)

        return await self._with_retries(what, self._limits.manifest_deadline, attempt)

    # -- requests -----------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        return httpx.URL(self.upstream.url + path)

    async def _open(
        self,
        url: httpx.URL,
        *,
        purpose: str,
        digest: str,
        scope: str,
        accept: str,
        exchanges: list[Exchange],
    ) -> httpx.Response:
        """Send a GET, answer one auth challenge, follow redirects; return the
        final response with its body unread (the caller closes it)."""
        authorization = self._tokens.get(scope)
        challenged = False
        hops = 0
        while True:
            own_origin = origin(url) == self._origin
            headers = {"Accept": accept}
            if own_origin and authorization:
                headers["Authorization"] = authorization
            response = await self._send(url, headers)
            exchanges.append(_record(response, purpose, digest))
            status = response.status_code
            if status == 401 and own_origin and not challenged:
                challenges = response.headers.get_list("www-authenticate")
                await response.aclose()
                if authorization:
                    self._tokens.drop(scope)
                authorization = await self._authorize(challenges, scope, exchanges)
                challenged = True
                continue
            if status in REDIRECT_STATUSES:
                location = response.headers.get("location")
                # A redirect body is never read (or decoded): T-10 (d).
                await response.aclose()
                hops += 1
                if hops > self._limits.redirects:
                    raise FetchDenied.of(
                        "fetch.too_many_redirects",
                        f"got more than {self._limits.redirects} redirects, expected at most"
                        f" {self._limits.redirects}",
                        url=redact_url(url),
                    )
                url = resolve_redirect(url, location, self.upstream)
                continue
            return response

    async def _send(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        # A Request built by hand gets none of the client's defaults (cookies,
        # auth, headers): what is sent is exactly what is written here.
        request = httpx.Request(
            "GET",
            url,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        )
        shown = redact_url(url)
        try:
            return await self._http.send(request, stream=True)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Transient(
                f"connect to {shown} timed out ({type(exc).__name__})", timeout=True
            ) from None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"upstream: {self._name}: no answer from {shown} within the idle timeout"
                f" ({type(exc).__name__})"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Transient(f"cannot reach {shown}: {type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UpstreamError(
                f"upstream: {self._name}: request to {shown} failed: {type(exc).__name__}: {exc}"
            ) from None

    async def _authorize(self, challenges: list[str], scope: str, exchanges: list[Exchange]) -> str:
        """The Authorization value that answers a 401 from the upstream itself."""
        try:
            challenge = auth.select_challenge(challenges)
        except auth.ChallengeError as exc:
            raise UpstreamError(
                f"upstream: {self._name}: upstream refused access: unparsable challenge ({exc})"
            ) from None
        if challenge is None:
            raise UpstreamError(
                f"upstream: {self._name}: upstream refused access (401 without a Bearer or"
                " Basic challenge)"
            )
        if challenge.scheme == "basic":
            header = self._basic_header()
            if header is None:
                raise UpstreamError(
                    f"upstream: {self._name}: upstream refused access (401 Basic) and no"
                    " usable credentials are configured"
                )
            self._tokens.put(scope, header, auth.MAX_EXPIRY)
            return header
        token = await self._fetch_token(challenge, scope, exchanges)
        header = f"Bearer {token.value}"
        self._tokens.put(scope, header, token.expires_in)
        return header

    def _basic_header(self) -> str | None:
        upstream = self.upstream
        if upstream.username is None or upstream.password is None:
            return None
        if upstream.scheme != "https" and not is_loopback_host(upstream.host):
            # I-5: credentials travel over https only (loopback labs excepted).
            return None
        return auth.basic_header(upstream.username, upstream.password)

    async def _fetch_token(
        self, challenge: auth.Challenge, scope: str, exchanges: list[Exchange]
    ) -> auth.Token:
        realm_text = challenge.params.get("realm", "")
        try:
            realm = httpx.URL(realm_text)
        except httpx.InvalidURL:
            realm = httpx.URL("")
        problem = auth.realm_problem(self.upstream, realm)
        if problem is not None:
            raise UpstreamError(
                f"upstream: {self._name}: upstream refused access: token realm"
                f" {sanitize(redact_url(realm_text), 200)!r} {problem}"
            )
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        url = realm.copy_merge_params(params)
        headers = {"Accept": "application/json"}
        if auth.credentials_allowed(self.upstream, realm):
            basic = self._basic_header()
            if basic is not None:
                headers["Authorization"] = basic
        # Otherwise the token is fetched anonymously: never send credentials
        # to a realm the operator did not name (T-08).
        response = await self._send(url, headers)
        exchanges.append(_record(response, "token", ""))
        body = bytearray()
        try:
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"token realm answered {response.status_code}")
            if response.status_code != 200:
                raise UpstreamError(
                    f"upstream: {self._name}: upstream refused access: token realm"
                    f" {redact_url(realm)} answered {response.status_code}"
                )
            copied = await self._copy(
                response, body.extend, self._limits.token_bytes, "sha256", "token"
            )
        finally:
            await response.aclose()
        if copied.over_limit:
            raise UpstreamError(
                f"upstream: {self._name}: token response larger than"
                f" {self._limits.token_bytes} bytes"
            )
        try:
            return auth.parse_token_response(bytes(body))
        except auth.TokenError as exc:
            raise UpstreamError(f"upstream: {self._name}: unusable token: {exc}") from None

    # -- bodies, statuses, retries -------------------------------------------

    async def _copy(
        self,
        response: httpx.Response,
        write: Callable[[bytes], None],
        limit: int,
        algorithm: str,
        what: str,
    ) -> Copied:
        try:
            return await copy_body(
                response.aiter_raw(),
                write,
                limit=limit,
                algorithm=algorithm,
                min_bytes_per_second=self._limits.min_bytes_per_second,
                grace=self._grace,
            )
        except TooSlow as exc:
            raise UpstreamTimeout(f"upstream: {self._name}: {what} too slow: {exc}") from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"upstream: {self._name}: {what} stalled: no data within the"
                f" {self._limits.idle_timeout:g} s idle timeout"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Transient(f"body of {what} broke off: {type(exc).__name__}") from None

    def _check_status(self, response: httpx.Response, what: str, unknown_code: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            raise NotFound(f"upstream: {self._name}: {what} not found (404)", oci_code=unknown_code)
        if status in (401, 403):
            raise UpstreamError(
                f"upstream: {self._name}: upstream refused access to {what} ({status})"
            )
        if status == 429 or 500 <= status <= 599:
            raise _Transient(f"answered {status}", retry_after=_retry_after(response))
        raise UpstreamError(f"upstream: {self._name}: {what}: unexpected status {status}")

    def _check_encoding(self, response: httpx.Response) -> None:
        encoding = _header(response, "content-encoding").strip().lower()
        if encoding not in ("", "identity"):
            # We asked for identity; decoding (bounded) may come later. T-10.
            raise FetchDenied.of(
                "fetch.content_encoding",
                f"got Content-Encoding {encoding!r}, expected identity",
                url=redact_url(response.request.url),
            )

    async def _with_retries(
        self, what: str, deadline: float, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``attempt`` until it succeeds or fails for good, all within ``deadline``."""
        attempts = self._limits.retries + 1
        failure: _Transient | None = None
        try:
            async with asyncio.timeout(deadline):
                for number in range(attempts):
                    try:
                        return await attempt()
                    except _Transient as exc:
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
        error = UpstreamTimeout if failure.timeout else UpstreamError
        raise error(f"upstream: {self._name}: {what}: {failure} ({attempts} attempts)")


def _scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _header(response: httpx.Response, name: str) -> str:
    return sanitize(response.headers.get(name, ""), 1024)


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() and len(value) < 10 else 0.0


def _record(response: httpx.Response, purpose: str, digest: str) -> Exchange:
    location = response.headers.get("location", "")
    return Exchange(
        method=response.request.method,
        url=sanitize(redact_url(response.request.url), 2048),
        status=response.status_code,
        purpose=purpose,
        location=sanitize(redact_url(location), 2048) if location else "",
        headers={
            name: _header(response, name) for name in RECORDED_HEADERS if name in response.headers
        },
        digest=digest,
    )


def _too_large_manifest(limit: int, declared: int | None = None) -> FetchDenied:
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
