"""One upstream's HTTP conversation: requests, auth challenges, redirects.

:class:`UpstreamSession` sends every request the fetcher makes to one
configured upstream and the hosts it redirects to. Every request is a GET
built here from scratch, so no header, cookie or credential carries over
from one request to the next:

- redirects are followed by hand (at most ``limits.redirects`` hops), each
  one recorded, their bodies never read (T-07, T-10 d);
- ``Authorization`` is attached only for the origin (scheme, host, port) it
  was obtained for: the upstream's credentials and tokens never reach
  another host (T-06, I-5);
- a 401 from the upstream is answered once per request with a bearer token
  from its realm or with basic credentials (see :mod:`auth`); a 401 from a
  host the upstream redirected to is answered once with an ANONYMOUS token
  from that host's own realm, never with the upstream's (T-08);
- connections go only where :mod:`network` allows after DNS resolution.

Failures are raised as :class:`Transient` (worth another attempt),
:class:`UpstreamError` / :class:`UpstreamTimeout`, or
:class:`FetchDenied` (a rule broken: a DENY verdict).
"""

from __future__ import annotations

import http.cookiejar
import ssl

import httpcore
import httpx

from pullguard.services.fetcher import auth
from pullguard.services.fetcher.metrics import count_request
from pullguard.services.fetcher.models import Exchange, FetchDenied
from pullguard.services.fetcher.network import (
    AddressGuard,
    ForbiddenAddress,
    GuardedBackend,
    Resolver,
    guarded_transport,
    peer_facts,
    ssl_context,
)
from pullguard.services.fetcher.threaded import ThreadedTransport
from pullguard.services.fetcher.urls import (
    Origin,
    is_loopback_host,
    origin,
    redact_url,
    resolve_redirect,
    upstream_origin,
)
from pullguard.services.runtime.config import Limits, Upstream
from pullguard.services.runtime.errors import UpstreamError, UpstreamTimeout
from pullguard.services.runtime.findings import sanitize

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Response headers recorded in provenance: the ones later layers rely on, and
#: Warning, recorded (truncated) for people only: it never drives anything.
RECORDED_HEADERS = (
    "content-type",
    "content-length",
    "docker-content-digest",
    "content-encoding",
    "warning",
)
#: The distribution spec caps warnings at 4096 bytes; a longer one is cut.
MAX_RECORDED_HEADER = {"warning": 4096}
USER_AGENT = "pullguard-fetcher/0.2"
#: Connections kept per upstream (and redirect targets) at most.
MAX_CONNECTIONS = 32
MAX_KEEPALIVE = 8


class Transient(Exception):
    """A failure worth another attempt: connection trouble, 5xx, 429, a short body.

    ``status`` is the HTTP status the front door should answer if every
    attempt fails this way (503 for an overloaded upstream, 504 for a
    timeout, 502 otherwise).
    """

    def __init__(
        self, message: str, *, timeout: bool = False, retry_after: float = 0.0, status: int = 502
    ) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.retry_after = retry_after
        self.status = 504 if timeout else status


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Registries need no cookies; keeping none means none can cross a host."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


class UpstreamSession:
    """Requests to one configured upstream and the hosts it sends us to."""

    def __init__(
        self,
        upstream: Upstream,
        limits: Limits,
        *,
        resolver: Resolver | None = None,
        connector: httpcore.NetworkBackend | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport``, a synchronous httpx transport, replaces the guarded one:
        tests play a public internet with it. ``connector`` dials for the guard."""
        self.upstream = upstream
        self.name = f"{upstream.alias} ({upstream.url})"
        self._limits = limits
        self._origin = upstream_origin(upstream)
        self._tokens = auth.TokenCache()
        pool = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        )
        guard = AddressGuard(upstream, resolver) if resolver else AddressGuard(upstream)
        backend = GuardedBackend(guard, connector)
        inner = transport or guarded_transport(ssl_context(upstream), pool, backend)
        threaded = ThreadedTransport(inner, MAX_CONNECTIONS, backend)
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
            limits=pool,
            transport=threaded,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def open(
        self,
        url: httpx.URL,
        *,
        purpose: str,
        digest: str,
        scope: str,
        accept: str,
        exchanges: list[Exchange],
    ) -> httpx.Response:
        """GET ``url``, answer one challenge per origin, follow redirects; return
        the final response with its body unread (the caller closes it)."""
        challenged: set[Origin] = set()
        hops = 0
        while True:
            here = origin(url)
            key = self._token_key(here, scope)
            authorization = self._tokens.get(key)
            headers = {"Accept": accept}
            if authorization:
                headers["Authorization"] = authorization
            response = await self.send(url, headers)
            exchanges.append(record(response, purpose, digest))
            status = response.status_code
            if status == 401 and here not in challenged:
                challenges = response.headers.get_list("www-authenticate")
                await response.aclose()
                challenged.add(here)
                if authorization:
                    self._tokens.drop(key)
                if here == self._origin:
                    await self._authorize(challenges, scope, exchanges)
                else:
                    await self._authorize_foreign(url, challenges, scope, exchanges)
                continue
            if status in REDIRECT_STATUSES:
                location = response.headers.get("location")
                # A redirect body is never read, let alone decoded (T-10 d).
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

    async def send(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        """One GET, streamed. Transport failures become Transient or Upstream errors."""
        # A Request built by hand gets none of the client's defaults (cookies,
        # auth, headers): what is sent is exactly what is written here.
        request = httpx.Request(
            "GET",
            url,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        )
        shown = redact_url(url)
        status = None
        try:
            response = await self._http.send(request, stream=True)
            status = response.status_code
            return response
        except ForbiddenAddress as exc:
            raise FetchDenied.of(
                "fetch.forbidden_address",
                f"got {exc.host[:100]} resolving to non-public address {exc.address}, expected"
                " public addresses only",
                url=shown,
            ) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Transient(
                f"connect to {shown} timed out ({type(exc).__name__})", timeout=True
            ) from None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"upstream: {self.name}: no answer from {shown} within the idle timeout"
                f" ({type(exc).__name__})"
            ) from None
        except httpx.ConnectError as exc:
            tls = _tls_failure(exc)
            if tls is not None:
                # A certificate that failed verification will fail again: no retry.
                raise UpstreamError(
                    f"upstream: {self.name}: TLS with {shown} failed: {sanitize(tls, 300)}"
                ) from None
            raise Transient(f"cannot reach {shown}: {sanitize(str(exc), 300)}") from None
        except httpx.RemoteProtocolError as exc:
            if isinstance(exc.__cause__ or exc.__context__, httpx.InvalidURL):
                # httpx parses a redirect's Location even when it follows none.
                raise FetchDenied.of(
                    "fetch.bad_redirect", "got an unparsable Location", url=shown
                ) from None
            raise Transient(f"cannot reach {shown}: {type(exc).__name__}: {exc}") from None
        except httpx.NetworkError as exc:
            raise Transient(f"cannot reach {shown}: {type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UpstreamError(
                f"upstream: {self.name}: request to {shown} failed: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            count_request(self.upstream.alias, status)

    # -- auth -------------------------------------------------------------------

    def _token_key(self, here: Origin, scope: str) -> str:
        # The upstream's own tokens are keyed by scope; another host's tokens
        # also by its origin, so neither can be sent to the other.
        if here == self._origin:
            return scope
        return f"{here[0]}://{here[1]}:{here[2]} {scope}"

    async def _authorize(
        self, challenges: list[str], scope: str, exchanges: list[Exchange]
    ) -> None:
        """Answer a 401 from the upstream itself; the answer goes into the token cache."""
        challenge = self._select(challenges, self.upstream.host)
        if challenge.scheme == "basic":
            header = self._basic_header()
            if header is None:
                raise UpstreamError(
                    f"upstream: {self.name}: upstream refused access (401 Basic) and no"
                    " usable credentials are configured"
                )
            self._tokens.put(scope, header, auth.MAX_EXPIRY)
            return
        realm = _realm_url(challenge)
        problem = auth.realm_problem(self.upstream, realm)
        if problem is not None:
            raise UpstreamError(
                f"upstream: {self.name}: upstream refused access: token realm"
                f" {sanitize(redact_url(challenge.params.get('realm', '')), 200)!r} {problem}"
            )
        credentials = None
        if auth.credentials_allowed(self.upstream, realm):
            credentials = self._basic_header()
        # Otherwise the token is fetched anonymously: never send credentials
        # to a realm the operator did not name (T-08).
        token = await self._request_token(realm, challenge, scope, credentials, exchanges)
        self._tokens.put(scope, f"Bearer {token.value}", token.expires_in)

    async def _authorize_foreign(
        self, url: httpx.URL, challenges: list[str], scope: str, exchanges: list[Exchange]
    ) -> None:
        """Answer a 401 from a host the upstream redirected to: an anonymous token
        from that host's own realm, or nothing (T-08)."""
        challenge = self._select(challenges, url.host)
        if challenge.scheme != "bearer":
            raise UpstreamError(
                f"upstream: {self.name}: {redact_url(url)} asked for credentials after a"
                " redirect; credentials never cross hosts"
            )
        realm = _realm_url(challenge)
        problem = auth.foreign_realm_problem(self.upstream, url, realm)
        if problem is not None:
            raise UpstreamError(
                f"upstream: {self.name}: {url.host} refused access: token realm"
                f" {sanitize(redact_url(challenge.params.get('realm', '')), 200)!r} {problem}"
            )
        token = await self._request_token(realm, challenge, scope, None, exchanges)
        self._tokens.put(
            self._token_key(origin(url), scope), f"Bearer {token.value}", token.expires_in
        )

    def _select(self, challenges: list[str], host: str) -> auth.Challenge:
        try:
            challenge = auth.select_challenge(challenges)
        except auth.ChallengeError as exc:
            raise UpstreamError(
                f"upstream: {self.name}: {host} refused access: unparsable challenge ({exc})"
            ) from None
        if challenge is None:
            raise UpstreamError(
                f"upstream: {self.name}: {host} refused access (401 without a Bearer or Basic"
                " challenge)"
            )
        return challenge

    def _basic_header(self) -> str | None:
        upstream = self.upstream
        if upstream.username is None or upstream.password is None:
            return None
        if upstream.scheme != "https" and not is_loopback_host(upstream.host):
            # I-5: credentials travel over https only (loopback labs excepted).
            return None
        return auth.basic_header(upstream.username, upstream.password)

    async def _request_token(
        self,
        realm: httpx.URL,
        challenge: auth.Challenge,
        scope: str,
        credentials: str | None,
        exchanges: list[Exchange],
    ) -> auth.Token:
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        url = realm.copy_merge_params(params)
        headers = {"Accept": "application/json"}
        if credentials is not None:
            headers["Authorization"] = credentials
        try:
            response = await self.send(url, headers)
        except FetchDenied as denied:
            raise UpstreamError(
                f"upstream: {self.name}: token realm {redact_url(realm)} refused:"
                f" {denied.finding.message}"
            ) from None
        exchanges.append(record(response, "token", ""))
        try:
            status = response.status_code
            if status == 429 or status >= 500:
                raise Transient(
                    f"token realm answered {status}", status=503 if status in (429, 503) else 502
                )
            if status != 200:
                raise UpstreamError(
                    f"upstream: {self.name}: upstream refused access: token realm"
                    f" {redact_url(realm)} answered {status}"
                )
            body = await read_small(response, self._limits.token_bytes)
        except BodyTooLarge:
            raise UpstreamError(
                f"upstream: {self.name}: token response larger than"
                f" {self._limits.token_bytes} bytes"
            ) from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"upstream: {self.name}: token realm {redact_url(realm)} stalled"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise Transient(f"token response broke off: {type(exc).__name__}") from None
        finally:
            await response.aclose()
        try:
            return auth.parse_token_response(body)
        except auth.TokenError as exc:
            raise UpstreamError(f"upstream: {self.name}: unusable token: {exc}") from None


class BodyTooLarge(Exception):
    """A small body (token, error) went past its limit."""


async def read_small(response: httpx.Response, limit: int) -> bytes:
    """A whole small body (token, error) of at most ``limit`` bytes, never decoded.

    Each read is bounded by the idle timeout; a body over the limit raises
    :class:`BodyTooLarge` after limit+1 bytes at most.
    """
    body = bytearray()
    async for chunk in response.aiter_raw():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge()
    return bytes(body)


def _realm_url(challenge: auth.Challenge) -> httpx.URL:
    try:
        return httpx.URL(challenge.params.get("realm", ""))
    except httpx.InvalidURL:
        return httpx.URL("")


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS error behind a connect error, if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return f"{type(seen).__name__}: {getattr(seen, 'reason', None) or seen}"
        seen = seen.__cause__ or seen.__context__
    return None


def header(response: httpx.Response, name: str, limit: int = 1024) -> str:
    """A response header (all its lines joined), sanitised and truncated."""
    return sanitize(", ".join(response.headers.get_list(name)), limit)


def record(response: httpx.Response, purpose: str, digest: str) -> Exchange:
    """The provenance of one response: request, status, relied-on headers, TLS facts."""
    location = response.headers.get("location", "")
    facts = peer_facts(response)
    return Exchange(
        method=response.request.method,
        url=sanitize(redact_url(response.request.url), 2048),
        status=response.status_code,
        purpose=purpose,
        location=sanitize(redact_url(location), 2048) if location else "",
        headers={
            name: header(response, name, MAX_RECORDED_HEADER.get(name, 1024))
            for name in RECORDED_HEADERS
            if name in response.headers
        },
        digest=digest,
        tls_spki_sha256=facts.spki_sha256,
        tls_version=facts.tls_version,
        peer_address=facts.address,
    )
