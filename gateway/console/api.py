"""The JSON API under ``/api/v1/``: the console's data for scripts.

Every handler authorises first, with the request's ``Authorization:
Bearer`` header only (never a cookie: a page on another site cannot make
a browser call this API with the operator's rights). ``viewer`` tokens
read; ``operator`` tokens also release, delete and re-evaluate, and the
operator recorded is the token's name. Without ``auth.admin_tokens``
(loopback only) every caller is the local operator.

A POST takes a JSON body and says so (``Content-Type: application/json``):
a cross-site HTML form cannot send that type, so even the token-less
loopback console cannot be driven by a form on another site.

Lists are pages cut by keyset (:mod:`pullguard.gateway.decisions.browse`):
``limit`` (1 to 500, default 50) and the opaque ``cursor`` of the previous
page's ``next_cursor``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from pullguard.gateway.auth.tokens import Principal
from pullguard.gateway.console.context import CONSOLE_KEY, ConsoleContext
from pullguard.gateway.console.inventory import (
    image_os,
    package_filter,
    packages_page,
    vulnerabilities,
)
from pullguard.gateway.decisions.browse import DecisionFilter, Page, page_limit
from pullguard.gateway.grpc_api import release_operator
from pullguard.gateway.operations import (
    delete_entry,
    quarantine_report,
    release_entry,
    run_reevaluation,
)
from pullguard.services.runtime.errors import InvalidRequest, NotFound

PREFIX = "/api/v1"
#: Longest JSON body a POST may send (a reason is at most 1000 characters).
MAX_BODY = 16 * 1024
#: Images one re-evaluation run verifies at most, unless asked for fewer.
REEVALUATE_LIMIT = 10_000


def context_of(request: web.Request) -> ConsoleContext:
    return request.app[CONSOLE_KEY]


def authorize(request: web.Request, action: str) -> Principal:
    return context_of(request).authorizer.http(request.headers, action)


def operator_name(principal: Principal) -> str:
    """The name a release records: the token's, or the local operator marked unverified."""
    return release_operator(principal, principal.name)


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise InvalidRequest("send the body as JSON (Content-Type: application/json)")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise InvalidRequest(f"the body is over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body is not a JSON object")
    return body


def page_json(request: web.Request, name: str, page: Page, query: dict[str, str]) -> web.Response:
    """A page as ``{name: [...], "next_cursor": ..., "next": URL}``."""
    return web.json_response(page_body(request, name, page.items, page.next_cursor, query))


def page_body(
    request: web.Request, name: str, items: list[Any], next_cursor: str, query: dict[str, str]
) -> dict[str, Any]:
    """``{name: items, "next_cursor": ...}``, and the next page's URL when there is one."""
    body: dict[str, Any] = {name: items, "next_cursor": next_cursor}
    if next_cursor:
        body["next"] = f"{request.path}?{urlencode({**query, 'cursor': next_cursor})}"
    return body


def decisions_query(request: web.Request) -> tuple[DecisionFilter, str, int]:
    query = dict(request.query)
    return DecisionFilter.parse(query), query.get("cursor", ""), page_limit(query.get("limit"))


async def list_decisions(request: web.Request) -> web.Response:
    authorize(request, "read")
    wanted, cursor, limit = decisions_query(request)
    page = context_of(request).decisions_log.decision_page(wanted, cursor, limit)
    return page_json(request, "decisions", page, {**wanted.as_query(), "limit": str(limit)})


def decision_or_404(context: ConsoleContext, decision_id: str) -> dict[str, Any]:
    report = context.decisions_log.decision_report(decision_id)
    if report is None:
        raise NotFound(f"no decision {decision_id[:80]!r}", oci_code="NOT_FOUND")
    return report


async def show_decision(request: web.Request) -> web.Response:
    authorize(request, "read")
    return web.json_response(decision_or_404(context_of(request), request.match_info["id"]))


async def decision_packages(request: web.Request) -> web.Response:
    """The image's OS and packages in name order, a page at a time, ``q`` filtering."""
    authorize(request, "read")
    report = decision_or_404(context_of(request), request.match_info["id"])
    wanted = package_filter(request.query.get("q"))
    limit = page_limit(request.query.get("limit"))
    page = packages_page(report, wanted, request.query.get("cursor", ""), limit)
    query = {"limit": str(limit), **({"q": wanted} if wanted else {})}
    return web.json_response(
        {
            "decision_id": report.get("decision_id"),
            "os_release": image_os(report),
            "total": page.total,
            **page_body(request, "packages", page.packages, page.next_cursor, query),
        }
    )


async def decision_vulnerabilities(request: web.Request) -> web.Response:
    """The advisories the image's packages matched, each with its verdict."""
    authorize(request, "read")
    report = decision_or_404(context_of(request), request.match_info["id"])
    return web.json_response({"decision_id": report.get("decision_id"), **vulnerabilities(report)})


def quarantine_entry(context: ConsoleContext, entry_id: str) -> dict[str, Any]:
    """An entry's report, whether it is still open, and its release (if it was released)."""
    report = quarantine_report(context.quarantine_store, entry_id)
    entry: dict[str, Any] = {
        "id": entry_id,
        "open": context.decisions_log.is_quarantined(entry_id),
        "report": report,
    }
    released = context.quarantine_store.entry_dir(entry_id) / "release.json"
    if released.is_file():
        entry["released_by"] = json.loads(released.read_text()).get("decision_id", "")
    return entry


async def list_quarantine(request: web.Request) -> web.Response:
    authorize(request, "read")
    return web.json_response({"entries": context_of(request).decisions_log.list_quarantine()})


async def show_quarantine(request: web.Request) -> web.Response:
    authorize(request, "read")
    return web.json_response(quarantine_entry(context_of(request), request.match_info["id"]))


async def release_quarantine(request: web.Request) -> web.Response:
    principal = authorize(request, "release")
    body = await json_body(request)
    context = context_of(request)
    report = await release_entry(
        context.runner,
        context.decisions_log,
        context.quarantine_store,
        request.match_info["id"],
        str(body.get("reason") or ""),
        operator_name(principal),
    )
    if report["decision"] != "ALLOW":
        return web.json_response(
            {
                "error": {"code": "DENIED", "message": f"denied again: {report['reason']}"},
                "released": False,
                "report": report,
            },
            status=409,
        )
    return web.json_response({"released": True, "report": report})


async def delete_quarantine(request: web.Request) -> web.Response:
    authorize(request, "delete")
    context = context_of(request)
    entry_id = request.match_info["id"]
    delete_entry(context.decisions_log, context.quarantine_store, entry_id)
    return web.json_response({"deleted": entry_id})


async def list_reevaluations(request: web.Request) -> web.Response:
    authorize(request, "read")
    cursor = request.query.get("cursor", "")
    limit = page_limit(request.query.get("limit"))
    page = context_of(request).decisions_log.reevaluation_page(cursor, limit)
    return page_json(request, "runs", page, {"limit": str(limit)})


def run_or_404(context: ConsoleContext, run_id: str) -> dict[str, Any]:
    run = context.decisions_log.reevaluation_run(run_id)
    if run is None:
        raise NotFound(f"no re-evaluation run {run_id[:80]!r}", oci_code="NOT_FOUND")
    return run


async def show_reevaluation(request: web.Request) -> web.Response:
    authorize(request, "read")
    return web.json_response(run_or_404(context_of(request), request.match_info["id"]))


def reevaluation_options(force: object, limit: object) -> tuple[bool, int]:
    if not isinstance(force, bool):
        raise InvalidRequest("force is true or false")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
        raise InvalidRequest("limit wants 1 to 100000 images")
    return force, limit


async def start_reevaluation(request: web.Request) -> web.Response:
    principal = authorize(request, "reevaluate")
    body = await json_body(request)
    force, limit = reevaluation_options(
        body.get("force", False), body.get("limit", REEVALUATE_LIMIT)
    )
    context = context_of(request)
    run = await run_reevaluation(
        context.runner, context.decisions_log, principal.name, force=force, limit=limit
    )
    return web.json_response(run)


async def list_admitted(request: web.Request) -> web.Response:
    authorize(request, "read")
    cursor = request.query.get("cursor", "")
    limit = page_limit(request.query.get("limit"))
    page = context_of(request).decisions_log.admitted_page(cursor, limit)
    return page_json(request, "images", page, {"limit": str(limit)})


#: Decision ids may carry a replica's prefix (``replica/<32 hex>``).
ID = "{id:[A-Za-z0-9_./-]{1,120}}"
QUARANTINE_ID = "{id:[0-9a-f]{32}}"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(f"{PREFIX}/decisions", list_decisions)
    # Before the decision itself: a decision id may hold "/" (a replica's prefix).
    router.add_get(f"{PREFIX}/decisions/{ID}/packages", decision_packages)
    router.add_get(f"{PREFIX}/decisions/{ID}/vulnerabilities", decision_vulnerabilities)
    router.add_get(f"{PREFIX}/decisions/{ID}", show_decision)
    router.add_get(f"{PREFIX}/quarantine", list_quarantine)
    router.add_get(f"{PREFIX}/quarantine/{QUARANTINE_ID}", show_quarantine)
    router.add_post(f"{PREFIX}/quarantine/{QUARANTINE_ID}/release", release_quarantine)
    router.add_delete(f"{PREFIX}/quarantine/{QUARANTINE_ID}", delete_quarantine)
    router.add_get(f"{PREFIX}/reevaluations", list_reevaluations)
    router.add_post(f"{PREFIX}/reevaluations", start_reevaluation)
    router.add_get(f"{PREFIX}/reevaluations/{{id:[0-9a-f]{{32}}}}", show_reevaluation)
    router.add_get(f"{PREFIX}/admitted", list_admitted)
