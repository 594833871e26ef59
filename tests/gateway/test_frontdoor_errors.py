"""The one front-door error handler (``frontdoor.oci_errors``): handlers raise, it maps.

A real aiohttp server on 127.0.0.1 whose handlers only raise; every answer is
an OCI error body with the status and code its error class declares.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pullguard.gateway.frontdoor import Refusal, oci_errors
from pullguard.services.runtime.errors import (
    BlobUnreadable,
    Denied,
    InvalidRequest,
    LayerUnavailable,
    NotFound,
    Unsupported,
)

RAISED: dict[str, Callable[[], BaseException]] = {
    "unsupported": lambda: Refusal(Unsupported("pulls only")),
    "digest": lambda: Refusal(InvalidRequest("bad digest", "DIGEST_INVALID")),
    "blob": lambda: Refusal(NotFound("sha256:x is not admitted", "BLOB_UNKNOWN")),
    "unreadable": lambda: Refusal(BlobUnreadable("sha256:x cannot be read now; retry")),
    "outage": lambda: Refusal(
        LayerUnavailable("format", "format: down"), {"decision": "d1"}, message="format: <down>"
    ),
    "denied": lambda: Refusal(Denied("format: no"), {"layer": "format"}, {"Warning": "299 - x"}),
    "syntax": lambda: Refusal(Denied("analysis: bad name", 400, "NAME_INVALID")),
    "escaped": lambda: LayerUnavailable("analysis", "analysis: secret detail"),
    "bug": lambda: RuntimeError("secret detail"),
}


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise RAISED[request.match_info["case"]]()

    app = web.Application(middlewares=[oci_errors])
    app.router.add_get("/{case}", handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("case", "status", "code", "message", "headers"),
    [
        ("unsupported", 405, "UNSUPPORTED", "pulls only", {"Allow": "GET, HEAD"}),
        ("digest", 400, "DIGEST_INVALID", "bad digest", {}),
        ("blob", 404, "BLOB_UNKNOWN", "sha256:x is not admitted", {}),
        ("unreadable", 503, "UNAVAILABLE", "sha256:x cannot be read now; retry", {}),
        ("outage", 503, "UNAVAILABLE", "format: <down>", {"Retry-After": "5"}),
        ("denied", 403, "DENIED", "format: no", {"Warning": "299 - x"}),
        ("syntax", 400, "NAME_INVALID", "analysis: bad name", {}),
        ("escaped", 503, "UNAVAILABLE", "request failed; see the gateway's log", {}),
        ("bug", 500, "UNKNOWN", "internal error; see the gateway's log", {}),
    ],
)
async def test_each_error_is_answered_as_its_class_declares(
    client: TestClient[Any, Any],
    case: str,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str],
) -> None:
    response = await client.get(f"/{case}")
    body = json.loads(await response.read())
    assert response.status == status
    [error] = body["errors"]
    assert (error["code"], error["message"]) == (code, message)
    assert "secret" not in json.dumps(body)
    for name, value in headers.items():
        assert response.headers[name] == value
    for name in {"Retry-After", "Allow", "Warning"} - set(headers):
        assert name not in response.headers
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
