"""The HTTP front door: the pull half of the OCI distribution API.

Handlers are thin: parse the path exactly, ask the pipeline, and raise what
went wrong as a :class:`Refusal` around a pullguard error; one middleware
(:func:`oci_errors`) maps every error through the one table of
:mod:`pullguard.services.runtime.errors` (each class declares its HTTP status
and OCI code). Repository names are
``<upstream-alias>/<repository>``; blobs are served only from the admitted
store, and only to a repository name whose manifest pull was admitted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from pullguard.gateway.attest import AttachmentStore, is_attachment_tag
from pullguard.gateway.attest.documents import OCI_MANIFEST, sha256
from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.httpserver import API_HEADERS, FileBody, error_body
from pullguard.gateway.observe import requester_context
from pullguard.gateway.public import Scrubber, warning_header
from pullguard.gateway.pull import Puller, PullResult
from pullguard.gateway.stores import AdmittedStore
from pullguard.gateway.syntax import syntax_status
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import (
    BlobUnreadable,
    Denied,
    InvalidRequest,
    NotFound,
    PullguardError,
    Unsupported,
)

log = logging.getLogger("pullguard.frontdoor")

_MANIFEST_RE = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")
_BLOB_RE = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")
_TAGS_RE = re.compile(r"/v2/(?P<name>.+)/tags/list")
MAX_PATH = 2048
#: Most tags one page of the front door's tag list holds.
MAX_PAGE = 10000
#: HTTP statuses aiohttp may raise itself, and the OCI code each gets.
_HTTP_CODES = {404: "NOT_FOUND", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def oci_error(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(code, message, detail),
        content_type="application/json",
        headers={**API_HEADERS, **(headers or {})},
    )


class Refusal(Exception):
    """What a handler raises to answer with ``error``: its message reaches the client.

    ``message`` replaces the error's own (scrubbed of upstream addresses);
    ``detail`` becomes the OCI error's ``detail``; ``headers`` add to those the
    error's class implies (Retry-After, Allow). Any other error that escapes a
    handler is logged and answered with its status and code alone.
    """

    def __init__(
        self,
        error: PullguardError,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        self.message = error.message if message is None else message
        super().__init__(self.message)
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def _implied_headers(error: PullguardError) -> dict[str, str]:
    """The headers an error's class implies on the wire."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    if isinstance(error, Unsupported):
        headers["Allow"] = "GET, HEAD"
    return headers


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Nothing but an OCI error body leaves the front door, whatever went wrong."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return oci_error(exc.status, _HTTP_CODES.get(exc.status, "UNSUPPORTED"), exc.reason)
    except Refusal as refusal:
        error = refusal.error
        headers = {**_implied_headers(error), **refusal.headers}
        return oci_error(
            error.http_status, error.oci_code, refusal.message, refusal.detail, headers
        )
    except PullguardError as exc:
        log.error("front door: %s %s: %s", request.method, request.path[:200], exc.message)
        return oci_error(exc.http_status, exc.oci_code, "request failed; see the gateway's log")
    except Exception:
        log.exception("front door: %s %s failed", request.method, request.path[:200])
        return oci_error(500, "UNKNOWN", "internal error; see the gateway's log")


def _decoded_path(request: web.Request) -> str:
    """Percent-decode the path exactly once; what is still encoded stays invalid."""
    raw = request.raw_path.split("?", 1)[0]
    if len(raw) > MAX_PATH:
        raise PullguardError("path too long")
    return unquote(raw, errors="strict")


class FrontDoor:
    def __init__(
        self,
        pipeline: Puller,
        decisions: DecisionLog,
        admitted: AdmittedStore,
        attachments: AttachmentStore | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.decisions = decisions
        self.admitted = admitted
        #: pullguard's own signatures (``attest:``), the only answer to the
        #: ``sha256-<hex>.sig``/``.att`` tags (empty with a registry target, which
        #: serves them itself); None when pullguard does not sign.
        self.attachments = attachments
        self.scrub = Scrubber(u.url for u in pipeline.config.upstreams.values())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024, middlewares=[requester_context, oci_errors])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    def refusal(self, exc: PullguardError, decision_id: str = "") -> Refusal:
        """A pipeline error for the client: its message scrubbed, its decision as detail."""
        detail = {"decision": decision_id} if decision_id else None
        return Refusal(exc, detail, message=self.scrub.text(exc.message))

    def denial(self, result: PullResult) -> Refusal:
        report = result.report
        layer = report.denied_by or "gateway"
        reason = report.reason or "denied"
        message = self.scrub.text(
            reason if reason.startswith(f"{layer}:") else f"{layer}: {reason}"
        )
        findings = report.denial_findings()
        headers = {"Warning": warning_header(message)}
        syntax = syntax_status(f["code"] for f in findings) if layer == "analysis" else None
        if syntax is not None:
            # Refused by syntax before any policy question: the spec's status.
            status, code = syntax
            return Refusal(Denied(message, status, code), None, headers)
        detail = {"decision": report.decision_id, "layer": layer, "findings": findings}
        return Refusal(Denied(message), self.scrub.data(detail), headers)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise Refusal(Unsupported("pullguard serves pulls only (GET and HEAD)"))
        try:
            path = _decoded_path(request)
        except (PullguardError, UnicodeDecodeError):
            raise Refusal(InvalidRequest("invalid request path")) from None
        if path in ("/v2", "/v2/"):
            return web.Response(body=b"{}", content_type="application/json", headers=API_HEADERS)
        if match := _MANIFEST_RE.fullmatch(path):
            return await self.manifest(request, match["name"], match["reference"])
        if match := _BLOB_RE.fullmatch(path):
            return await self.blob(request, match["name"], match["digest"])
        if match := _TAGS_RE.fullmatch(path):
            return await self.tags(request, match["name"])
        raise Refusal(NotFound("not an OCI distribution pull endpoint", "NOT_FOUND"))

    async def manifest(self, request: web.Request, name: str, reference: str) -> web.StreamResponse:
        if self.attachments is not None and is_attachment_tag(reference):
            return await self.attachment(request, name, reference)
        result = await self.pipeline.pull(name, reference, admit=True)
        if result.error is not None:
            raise self.refusal(result.error, result.report.decision_id)
        if not result.allowed or result.manifest is None:
            raise self.denial(result)
        report = result.report
        headers = {
            **API_HEADERS,
            "Docker-Content-Digest": report.digest,
            "Content-Type": report.media_type,
            "Content-Length": str(len(result.manifest)),
            "X-Pullguard-Decision": report.decision_id,
        }
        if report.outage:  # a tag served while its upstream is unreachable
            headers["Warning"] = warning_header(
                f"upstream unreachable; serving last admitted digest {report.digest}"
            )
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        response = web.Response(status=200, body=result.manifest, headers=headers)
        response.content_type = report.media_type
        return response

    async def attachment(
        self, request: web.Request, name: str, reference: str
    ) -> web.StreamResponse:
        """pullguard's signature or attestation of an admitted manifest.

        While pullguard signs, these tags are its own: an upstream's tag of
        the same name is never fetched in their place, so nothing but
        pullguard's signature can answer for an image it admitted.
        """
        assert self.attachments is not None
        repository = await self._repository(name)
        data = None
        if repository is not None:
            data = await asyncio.to_thread(self.attachments.manifest, repository, reference)
        if data is None:
            raise Refusal(NotFound(f"{reference} of {name}: pullguard signed no such manifest"))
        headers = {
            **API_HEADERS,
            "Docker-Content-Digest": sha256(data),
            "Content-Type": OCI_MANIFEST,
            "Content-Length": str(len(data)),
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=data, headers=headers)

    async def _repository(self, name: str) -> str | None:
        repository = self.decisions.repository_for(name)
        return repository if repository is not None else await self.pipeline.repository_of(name)

    async def _attachment_blob(
        self, request: web.Request, name: str, digest: str
    ) -> web.StreamResponse | None:
        """A blob of one of pullguard's signatures of ``name``, if it is one."""
        if self.attachments is None:
            return None
        repository = await self._repository(name)
        if repository is None:
            return None
        data = await asyncio.to_thread(self.attachments.blob, repository, digest)
        if data is None:
            return None
        headers = {
            **API_HEADERS,
            "Docker-Content-Digest": digest,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=data, headers=headers)

    async def blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        try:
            parse_digest(digest)
        except DigestSyntaxError as exc:
            raise Refusal(InvalidRequest(str(exc), "DIGEST_INVALID")) from None
        repository = self.decisions.repository_for(name)
        if repository is None or not self.decisions.blob_admitted(repository, digest):
            # Not pulled under this spelling: the name as the manifest route reads it.
            repository = await self.pipeline.repository_of(name)
        if repository is None or not self.decisions.blob_admitted(repository, digest):
            signed = await self._attachment_blob(request, name, digest)
            if signed is not None:
                return signed
            raise Refusal(NotFound(f"{digest} is not admitted for {name}", "BLOB_UNKNOWN"))
        try:
            # Hashed again unless unchanged since last verified; damaged is never served.
            verified = await asyncio.to_thread(self.admitted.verified_blob, digest)
        except OSError as exc:
            raise self._unreadable(digest, exc) from None
        if verified is None:
            raise Refusal(NotFound(f"{digest} is not admitted for {name}", "BLOB_UNKNOWN"))
        headers = {
            **API_HEADERS,
            "Docker-Content-Digest": digest,
            "Content-Type": "application/octet-stream",
        }
        try:
            # Opened here, not by aiohttp's FileResponse, which turns every
            # open error (EMFILE too) into an empty 404.
            handle = open(verified, "rb")  # noqa: SIM115 - the response closes it
        except OSError as exc:
            raise self._unreadable(digest, exc) from None
        try:
            info = os.fstat(handle.fileno())
        except OSError:
            handle.close()
            raise Refusal(BlobUnreadable(f"{digest} cannot be read now; retry")) from None
        if not stat.S_ISREG(info.st_mode):
            handle.close()
            raise Refusal(BlobUnreadable(f"{digest} cannot be read now; retry"))
        return FileBody(handle, info.st_size, headers)

    @staticmethod
    def _unreadable(digest: str, exc: OSError) -> Refusal:
        """An admitted blob that cannot be read now (no descriptor left, gone): retry."""
        log.error("front door: cannot open admitted blob %s: %s", digest, exc.strerror or exc)
        return Refusal(BlobUnreadable(f"{digest} cannot be read now; retry"))

    async def tags(self, request: web.Request, name: str) -> web.StreamResponse:
        text = request.query.get("n")
        n = MAX_PAGE
        if text is not None:
            try:
                n = int(text, 10)
            except ValueError:
                n = -1
            if n < 0 or not text.isdigit():
                message = "n must be a non-negative integer"
                raise Refusal(InvalidRequest(message, "PAGINATION_NUMBER_INVALID"))
            n = min(n, MAX_PAGE)
        last = request.query.get("last", "")
        try:
            tags = await self.pipeline.list_tags(name, last)
        except PullguardError as exc:
            raise self.refusal(exc) from None
        page = sorted(t for t in set(tags) if not last or t > last)
        headers = dict(API_HEADERS)
        if len(page) > n:
            page = page[:n]
            if page:
                following = f"/v2/{quote(name)}/tags/list?n={n}&last={quote(page[-1], safe='')}"
                headers["Link"] = f'<{following}>; rel="next"'
        return web.Response(
            body=json.dumps({"name": name, "tags": page}).encode(),
            content_type="application/json",
            headers=headers,
        )
