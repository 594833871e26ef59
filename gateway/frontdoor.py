"""The HTTP front door: the pull half of the OCI distribution API.

Handlers are thin: parse the path exactly, ask the pipeline, and map the
outcome through one table (:func:`error_response`). Repository names are
``<upstream-alias>/<repository>``; blobs are served only from the admitted
store, and only to a repository name whose manifest pull was admitted.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.pipeline import Pipeline, PullResult
from pullguard.gateway.stores import AdmittedStore
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import PullguardError

log = logging.getLogger("pullguard.frontdoor")

API_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
_MANIFEST_RE = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")
_BLOB_RE = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")
_TAGS_RE = re.compile(r"/v2/(?P<name>.+)/tags/list")
MAX_PATH = 2048


def oci_error(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return web.Response(
        status=status,
        body=json.dumps({"errors": [error]}).encode(),
        content_type="application/json",
        headers={**API_HEADERS, **(headers or {})},
    )


def error_response(exc: PullguardError, decision_id: str = "") -> web.Response:
    """The one mapping from pullguard errors to HTTP: each class declares its status and code."""
    detail = {"decision": decision_id} if decision_id else None
    retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return oci_error(exc.http_status, exc.oci_code, exc.message, detail, retry)


def denial_response(result: PullResult) -> web.Response:
    report = result.report
    layer = report.denied_by or "gateway"
    reason = report.reason or "denied"
    message = reason if reason.startswith(f"{layer}:") else f"{layer}: {reason}"
    return oci_error(
        403,
        "DENIED",
        message,
        {"decision": report.decision_id, "layer": layer, "findings": report.denial_findings()},
    )


def _decoded_path(request: web.Request) -> str:
    """Percent-decode the path exactly once; what is still encoded stays invalid."""
    raw = request.raw_path.split("?", 1)[0]
    if len(raw) > MAX_PATH:
        raise PullguardError("path too long")
    return unquote(raw, errors="strict")


class FrontDoor:
    def __init__(self, pipeline: Pipeline, decisions: DecisionLog, admitted: AdmittedStore) -> None:
        self.pipeline = pipeline
        self.decisions = decisions
        self.admitted = admitted

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return oci_error(405, "UNSUPPORTED", "pullguard serves pulls only (GET and HEAD)")
        try:
            path = _decoded_path(request)
        except (PullguardError, UnicodeDecodeError):
            return oci_error(400, "NAME_INVALID", "invalid request path")
        if path in ("/v2", "/v2/"):
            return web.Response(body=b"{}", content_type="application/json", headers=API_HEADERS)
        if match := _MANIFEST_RE.fullmatch(path):
            return await self.manifest(request, match["name"], match["reference"])
        if match := _BLOB_RE.fullmatch(path):
            return await self.blob(request, match["name"], match["digest"])
        if match := _TAGS_RE.fullmatch(path):
            return await self.tags(request, match["name"])
        return oci_error(404, "NOT_FOUND", "not an OCI distribution pull endpoint")

    async def manifest(self, request: web.Request, name: str, reference: str) -> web.StreamResponse:
        result = await self.pipeline.pull(name, reference, admit=True)
        if result.error is not None:
            return error_response(result.error, result.report.decision_id)
        if not result.allowed or result.manifest is None:
            return denial_response(result)
        report = result.report
        headers = {
            **API_HEADERS,
            "Docker-Content-Digest": report.digest,
            "Content-Type": report.media_type,
            "Content-Length": str(len(result.manifest)),
            "X-Pullguard-Decision": report.decision_id,
        }
        if report.outage:  # a tag served while its upstream is unreachable
            headers["Warning"] = (
                '299 - "pullguard: upstream unreachable; serving last admitted digest'
                f' {report.digest}"'
            )
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        response = web.Response(status=200, body=result.manifest, headers=headers)
        response.content_type = report.media_type
        return response

    async def blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        try:
            parse_digest(digest)
        except DigestSyntaxError as exc:
            return oci_error(400, "DIGEST_INVALID", str(exc))
        repository = self.decisions.repository_for(name)
        if (
            repository is None
            or not self.decisions.blob_admitted(repository, digest)
            or not self.admitted.has(digest)
        ):
            return oci_error(404, "BLOB_UNKNOWN", f"{digest} is not admitted for {name}")
        path = self.admitted.blob_path(digest)
        headers = {
            **API_HEADERS,
            "Docker-Content-Digest": digest,
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(path.stat().st_size)
            return web.Response(status=200, headers=headers)
        return web.FileResponse(path, headers=headers)

    async def tags(self, request: web.Request, name: str) -> web.StreamResponse:
        try:
            n = int(request.query.get("n", "1000"))
        except ValueError:
            return oci_error(400, "PAGINATION_NUMBER_INVALID", "n must be an integer")
        try:
            tags = await self.pipeline.list_tags(
                name, max(0, min(n, 10000)), request.query.get("last", "")
            )
        except PullguardError as exc:
            return error_response(exc)
        return web.Response(
            body=json.dumps({"name": name, "tags": tags}).encode(),
            content_type="application/json",
            headers=API_HEADERS,
        )
