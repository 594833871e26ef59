"""A push client for the registry admitted images are published to.

It speaks the push half of the OCI distribution API and nothing else:

- ``HEAD /v2/<name>/blobs/<digest>`` skips a blob the target already has;
- ``POST /v2/<name>/blobs/uploads/`` then one ``PUT <location>?digest=`` with
  the blob streamed from its file (never held in memory), its size stated;
- ``PUT /v2/<name>/manifests/<reference>`` with the manifest's exact bytes and
  its own media type as Content-Type.

Every request has connect/read/write timeouts and every operation a
deadline; response bodies are asked for without content coding and read up
to a bound, as sent (never inflated). Upload locations must stay
on the target's own scheme, host and port, so credentials never travel
elsewhere. Credentials answer a Basic challenge, or a Bearer challenge whose
token realm is on the target's own host. Any failure is a
:class:`TargetError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from pullguard.services.runtime.config import Limits, Target
from pullguard.services.runtime.errors import TargetError

_CHUNK = 1024 * 1024
_AUTH_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
#: RFC 6750's b64token: what a Bearer token may hold in a header, bounded.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]{1,8192}=*")
#: distribution's limit on a repository name.
MAX_NAME_LENGTH = 255
#: A target token is fetched again at least this often (seconds), whatever it says.
MAX_TOKEN_LIFETIME = 3600.0

ContentFactory = Callable[[], AsyncIterator[bytes]]
#: Every manifest media type pullguard admits, for a HEAD by digest.
_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


@dataclass(frozen=True)
class Answer:
    """A response whose body was read up to a bound, as sent."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def encoding(self) -> str:
        """The content coding the target applied although none was asked for, or ''."""
        codings = self.headers.get("Content-Encoding", "").strip().lower()
        return "" if codings in ("", "identity") else codings


class RegistryTarget:
    """Pushes verified content to ``target.url``; one instance per gateway."""

    def __init__(self, target: Target, limits: Limits) -> None:
        self.target = target
        self.limits = limits
        self._origin = urlsplit(target.url)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=limits.connect_timeout,
                read=limits.idle_timeout,
                write=limits.idle_timeout,
                pool=limits.connect_timeout,
            ),
            follow_redirects=False,
            trust_env=False,
            verify=True,
            # A compressed body inflates a thousandfold and more on arrival,
            # before any bound applies: ask for none, and never decode one.
            headers={"Accept-Encoding": "identity"},
        )
        #: Bearer tokens per repository, with the monotonic time they expire.
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False

    async def close(self) -> None:
        await self._client.aclose()

    def describe(self, name: str) -> str:
        return f"{self.target.url}/{name}"

    # -- the push API -------------------------------------------------------

    async def has_blob(self, name: str, digest: str) -> bool:
        async with self._deadline(self.limits.manifest_deadline, f"HEAD blob {digest}"):
            response = await self._send("HEAD", name, f"/v2/{name}/blobs/{digest}")
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._failed(response, f"HEAD blob {digest}")

    async def has_manifest(self, name: str, digest: str) -> bool:
        """Whether the target still holds manifest ``digest`` of ``name`` (HEAD by digest)."""
        what = f"HEAD manifest {name}@{digest}"
        async with self._deadline(self.limits.manifest_deadline, what):
            response = await self._send(
                "HEAD", name, f"/v2/{name}/manifests/{digest}", headers={"Accept": _ACCEPT}
            )
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise self._failed(response, what)
        self._check_digest(response, digest, what)
        return True

    async def push_blob(self, name: str, digest: str, path: Path, size: int) -> None:
        """Upload one blob from ``path``, streamed, in one monolithic PUT."""
        if size > self.limits.blob_bytes:
            raise TargetError(f"target: blob {digest} is {size} bytes, more than limits.blob_bytes")
        what = f"upload of blob {digest}"
        async with self._deadline(self.limits.blob_deadline, what):
            started = await self._send("POST", name, f"/v2/{name}/blobs/uploads/")
            if started.status_code != 202:
                raise self._failed(started, what)
            location = self._location(started, what)
            url = httpx.URL(location).copy_merge_params({"digest": digest})

            def content() -> AsyncIterator[bytes]:
                return _stream_file(path, size, digest)

            await self._finish_upload(name, url, content, size, digest, what)

    async def push_small_blob(self, name: str, digest: str, data: bytes) -> None:
        """Upload a blob held in memory (a signature's few KiB), in one monolithic PUT."""
        what = f"upload of blob {digest}"
        async with self._deadline(self.limits.manifest_deadline, what):
            started = await self._send("POST", name, f"/v2/{name}/blobs/uploads/")
            if started.status_code != 202:
                raise self._failed(started, what)
            url = httpx.URL(self._location(started, what)).copy_merge_params({"digest": digest})

            async def content() -> AsyncIterator[bytes]:
                yield data

            await self._finish_upload(name, url, content, len(data), digest, what)

    async def _finish_upload(
        self, name: str, url: httpx.URL, content: ContentFactory, size: int, digest: str, what: str
    ) -> None:
        finished = await self._send(
            "PUT",
            name,
            url,
            content=content,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if finished.status_code != 201:
            raise self._failed(finished, what)
        self._check_digest(finished, digest, what)

    async def put_manifest(
        self, name: str, reference: str, data: bytes, media_type: str, digest: str
    ) -> None:
        """PUT the manifest's exact bytes under a digest or a tag."""
        what = f"PUT manifest {name}:{reference}" if ":" not in reference else f"PUT {digest}"

        async def content() -> AsyncIterator[bytes]:
            yield data

        async with self._deadline(self.limits.manifest_deadline, what):
            response = await self._send(
                "PUT",
                name,
                f"/v2/{name}/manifests/{reference}",
                content=content,
                headers={"Content-Type": media_type, "Content-Length": str(len(data))},
            )
        if response.status_code not in (200, 201):
            raise self._failed(response, what)
        self._check_digest(response, digest, what)

    async def delete_manifest(self, name: str, digest: str) -> None:
        """DELETE a manifest by digest (distribution also drops the tags naming it).

        Gone already (404) is success. The target must allow deletes
        (distribution: ``storage.delete.enabled``).
        """
        what = f"DELETE {name}@{digest}"
        async with self._deadline(self.limits.manifest_deadline, what):
            response = await self._send("DELETE", name, f"/v2/{name}/manifests/{digest}")
        if response.status_code not in (200, 202, 404):
            raise self._failed(response, what)

    # -- the read API (a replica serving what another admitted) ---------------
    #
    # What these return is a claim: the caller hashes it before anything is
    # served (see pull.restore).

    async def get_manifest(self, name: str, digest: str) -> bytes | None:
        """The bytes the target holds as manifest ``digest`` of ``name``; None when it has none."""
        what = f"GET manifest {name}@{digest}"
        limit = self.limits.manifest_bytes
        async with self._deadline(self.limits.manifest_deadline, what):
            response = await self._send(
                "GET",
                name,
                f"/v2/{name}/manifests/{digest}",
                headers={"Accept": _ACCEPT},
                limit=limit,
            )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failed(response, what)
        if response.encoding:
            raise TargetError(f"target: {what}: body is {response.encoding[:40]}-encoded")
        if len(response.content) > limit:
            raise TargetError(f"target: {what}: larger than limits.manifest_bytes ({limit})")
        return response.content

    async def get_blob(self, name: str, digest: str, sink: Callable[[bytes], None]) -> int:
        """Stream blob ``digest`` of ``name`` into ``sink``; return its size.

        At most ``limits.blob_bytes``, within ``limits.blob_deadline``. A
        redirect (a registry on object storage) is followed up to
        ``limits.redirects`` times; credentials go only to the target's own origin.
        """
        what = f"GET blob {name}@{digest}"
        url = httpx.URL(self.target.url).join(f"/v2/{name}/blobs/{digest}")
        challenged = False
        async with self._deadline(self.limits.blob_deadline, what):
            for _hop in range(self.limits.redirects + 2):
                own = self._same_origin(str(url))
                headers = {}
                authorization = self._authorization(name) if own else ""
                if authorization:
                    headers["Authorization"] = authorization
                request = self._client.build_request("GET", url, headers=headers)
                try:
                    response = await self._client.send(request, stream=True)
                except (httpx.HTTPError, OSError) as exc:
                    raise TargetError(f"target: {what}: {type(exc).__name__}: {exc}") from None
                try:
                    status = response.status_code
                    if status == 401 and own and not challenged and self.target.username:
                        challenged = True
                        challenge = response.headers.get("WWW-Authenticate", "")
                        if await self._authorise(name, challenge):
                            continue
                    if status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = url.join(response.headers["Location"])
                        continue
                    if status != 200:
                        raise self._failed(Answer(status, response.headers, b""), what)
                    return await self._drain(response, sink, what)
                except httpx.HTTPError as exc:
                    raise TargetError(f"target: {what}: {type(exc).__name__}: {exc}") from None
                finally:
                    await response.aclose()
        raise TargetError(f"target: {what}: more than {self.limits.redirects} redirects")

    async def _drain(
        self, response: httpx.Response, sink: Callable[[bytes], None], what: str
    ) -> int:
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.limits.blob_bytes:
                raise TargetError(f"target: {what}: larger than limits.blob_bytes")
            sink(chunk)
        return size

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        try:
            port = parts.port or _default_port(parts.scheme)
        except ValueError:
            return False
        return (parts.scheme, parts.hostname, port) == (
            self._origin.scheme,
            self.target.host,
            self.target.port,
        )

    # -- transport ----------------------------------------------------------

    def _deadline(self, seconds: float, what: str) -> _Deadline:
        return _Deadline(seconds, f"target: {what} at {self.target.url} took more than {seconds}s")

    async def _send(
        self,
        method: str,
        name: str,
        url: str | httpx.URL,
        *,
        content: ContentFactory | None = None,
        headers: dict[str, str] | None = None,
        limit: int = 0,
    ) -> Answer:
        """One request, answered once with credentials when the target challenges.

        The answer's body is read up to ``limit`` bytes (default: an error body's bound).
        """
        full = httpx.URL(self.target.url).join(url) if isinstance(url, str) else url
        response = await self._once(method, full, name, content, headers, limit)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        if self.target.username is None or not await self._authorise(name, challenge):
            return response
        return await self._once(method, full, name, content, headers, limit)

    async def _once(
        self,
        method: str,
        url: httpx.URL,
        name: str,
        content: ContentFactory | None,
        headers: dict[str, str] | None,
        limit: int = 0,
    ) -> Answer:
        request_headers = dict(headers or {})
        authorization = self._authorization(name)
        if authorization:
            request_headers["Authorization"] = authorization
        request = self._client.build_request(
            method, url, headers=request_headers, content=content() if content else None
        )
        return await self._exchange(request, limit or self.limits.error_body_bytes)

    async def _exchange(self, request: httpx.Request, limit: int) -> Answer:
        """Send; read at most ``limit`` bytes of the answer (registries answer small)."""
        what = f"{request.method} {request.url.path}"
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > limit:
                        break
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise TargetError(
                f"target: {what} at {self.target.url} timed out ({type(exc).__name__})"
            ) from None
        except (httpx.HTTPError, OSError) as exc:
            raise TargetError(
                f"target: {what}: {self.target.url} cannot be reached ({type(exc).__name__}: {exc})"
            ) from None
        return Answer(response.status_code, response.headers, body[: limit + 1])

    def _authorization(self, name: str) -> str:
        token = self._tokens.get(name)
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if self._basic and self.target.username is not None:
            return _basic(self.target.username, self.target.password or "")
        return ""

    async def _authorise(self, name: str, challenge: str) -> bool:
        """Answer a challenge; False when there is nothing new to try."""
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self._basic:
                return False
            self._basic = True
            return True
        if scheme.lower() != "bearer":
            return False
        params = dict(_AUTH_PARAM_RE.findall(params_text))
        realm = params.get("realm", "")
        parts = urlsplit(realm)
        # The token realm receives the password: only on the target's own host.
        if parts.scheme not in ("https", "http") or parts.hostname != self.target.host:
            raise TargetError(
                f"target: token realm {realm[:200]!r} is not on the target's host"
                f" {self.target.host}; credentials are sent only there"
            )
        if parts.scheme == "http" and not self.target.insecure:
            raise TargetError("target: token realm is plain http; the target is not insecure")
        query = {"scope": f"repository:{name}:pull,push"}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": _basic(self.target.username or "", self.target.password or "")}
        request = self._client.build_request("GET", realm, params=query, headers=headers)
        async with self._deadline(self.limits.manifest_deadline, "token request"):
            response = await self._exchange(request, self.limits.token_bytes)
        if response.status_code != 200 or len(response.content) > self.limits.token_bytes:
            raise self._failed(response, "token request")
        if response.encoding:
            raise TargetError(
                f"target: token response is {response.encoding[:40]}-encoded;"
                " it was asked for without content coding"
            )
        try:
            data = json.loads(response.content)
            token = str(data.get("token") or data.get("access_token") or "")
            lifetime = float(data.get("expires_in", 60))
        except (ValueError, AttributeError, TypeError):
            raise TargetError("target: token response is not JSON with a token") from None
        if not token:
            raise TargetError("target: token response holds no token")
        if not _TOKEN_RE.fullmatch(token):
            # Anything else would fail in the header encoder, outside TargetError.
            raise TargetError("target: token response holds a token that is not a b64token")
        if not math.isfinite(lifetime):
            lifetime = 60.0
        # Bounded both ways: a token is re-fetched at least every hour.
        lifetime = min(max(10.0, lifetime - 10.0), MAX_TOKEN_LIFETIME)
        self._tokens[name] = (token, time.monotonic() + lifetime)
        return True

    def _location(self, response: Answer, what: str) -> str:
        location = str(response.headers.get("Location", ""))
        if not location:
            raise TargetError(
                f"target: {what} at {self.target.url} answered {response.status_code}"
                " without an upload Location"
            )
        absolute = urljoin(self.target.url + "/", location)
        parts = urlsplit(absolute)
        try:
            port = parts.port or _default_port(parts.scheme)
        except ValueError:
            port = -1
        if (parts.scheme, parts.hostname, port) != (
            self._origin.scheme,
            self.target.host,
            self.target.port,
        ):
            raise TargetError(
                f"target: {what}: upload Location {absolute[:200]!r} leaves {self.target.url}"
            )
        return absolute

    def _check_digest(self, response: Answer, digest: str, what: str) -> None:
        stated = response.headers.get("Docker-Content-Digest")
        if stated is not None and stated != digest:
            raise TargetError(f"target: {what}: target stored {stated[:100]}, expected {digest}")

    def _failed(self, response: Answer, what: str) -> TargetError:
        text = response.content[:300].decode("utf-8", errors="replace")
        # The target's words go into reports and logs: no control characters.
        text = "".join(c if c.isprintable() else " " for c in text).strip()
        if response.encoding:
            text = f"({response.encoding[:40]}-encoded body)"
        return TargetError(
            f"target: {what} at {self.target.url} answered {response.status_code}"
            + (f": {text}" if text else "")
        )


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def _stream_file(path: Path, size: int, digest: str) -> AsyncIterator[bytes]:
    """The file in chunks; fails when it holds other than ``size`` bytes."""
    sent = 0
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            sent += len(chunk)
            if sent > size:
                break
            yield chunk
    if sent != size:
        raise TargetError(f"target: admitted blob {digest} is not {size} bytes on disk")


class _Deadline:
    """An overall deadline for one operation, reported as a TargetError."""

    def __init__(self, seconds: float, message: str) -> None:
        self._timeout = asyncio.timeout(seconds)
        self._message = message

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._timeout.__aexit__(*exc_info)  # type: ignore[arg-type]
        except TimeoutError:
            raise TargetError(self._message) from None
