"""The HTML console: server-rendered pages and plain forms, no script.

Pages read through the same functions as the JSON API (:mod:`.api`,
:mod:`pullguard.gateway.decisions.browse`, :mod:`pullguard.gateway.operations`).
Everything shown passes through Jinja2 with autoescape on: repository
names, tags, finding messages and reports come from upstream registries and
are hostile.

Who is asking comes from the browser session (:mod:`.sessions`), never
from an Authorization header; every POST carries the session's CSRF token
and is refused (403) without it, before its role is even checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from pullguard.gateway.auth.tokens import LOCAL, Principal
from pullguard.gateway.console import api
from pullguard.gateway.console.context import CONSOLE_KEY, ConsoleContext
from pullguard.gateway.console.inventory import (
    PREVIEW,
    image_os,
    package_filter,
    packages_page,
    vulnerabilities,
    without_inventory,
)
from pullguard.gateway.console.sessions import COOKIE, SESSION_SECONDS, Session
from pullguard.gateway.decisions.browse import OUTCOMES, page_limit
from pullguard.gateway.operations import delete_entry, release_entry, run_reevaluation
from pullguard.services.runtime.errors import NotPermitted, PullguardError, Unauthenticated

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    # Reports read back may lack optional fields (older versions, outages): shown empty.
    undefined=jinja2.ChainableUndefined,
)
CSS = """
body { font-family: sans-serif; margin: 0; color: #222; }
header { background: #234; color: #fff; padding: .5em 1em; display: flex; gap: 2em; }
header { align-items: center; }
header a { color: #fff; margin-right: 1em; }
header .who { margin-left: auto; }
main { padding: 1em; }
table.list { border-collapse: collapse; width: 100%; }
table.list th, table.list td { border-bottom: 1px solid #ccc; padding: .3em; }
table.list th, table.list td { text-align: left; vertical-align: top; }
table.facts th { text-align: left; padding-right: 1em; }
.outcome.allowed { color: #060; } .outcome.denied { color: #a00; } .outcome.outage { color: #a60; }
.error { color: #a00; } form.inline { display: inline; } form.action { margin: .5em 0; }
.filters label { margin-right: .7em; } pre { background: #f4f4f4; padding: .5em; overflow: auto; }
code { word-break: break-all; }
"""


#: The session a page is rendered for, and whether its cookie is still to be set.
SESSION = web.RequestKey("pullguard_console_session", Session)
NEW_SESSION = web.RequestKey("pullguard_console_new_session", bool)


class CsrfRefused(PullguardError):
    """A form was posted without its session's CSRF token."""

    oci_code = "DENIED"
    http_status = 403


def context_of(request: web.Request) -> ConsoleContext:
    return request.app[CONSOLE_KEY]


def current_session(request: web.Request) -> Session | None:
    return context_of(request).sessions.get(request.cookies.get(COOKIE))


def set_cookie(response: web.StreamResponse, request: web.Request, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.session_id,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def render(
    request: web.Request, template: str, http_status: int = 200, **values: Any
) -> web.Response:
    session = request.get(SESSION)
    principal = session.principal if session else None
    text = TEMPLATES.get_template(template).render(
        principal=principal, csrf=session.csrf if session else "", **values
    )
    response = web.Response(text=text, status=http_status, content_type="text/html")
    if session is not None and request.get(NEW_SESSION):
        set_cookie(response, request, session)
    return response


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    response = render(request, "error.html", http_status=status, status=status, message=message)
    if status == 401:
        response.headers["Location"] = "/login"
    return response


def see_other(location: str) -> web.HTTPSeeOther:
    """Raised where a page must go elsewhere (the middleware answers it as a 303)."""
    return web.HTTPSeeOther(location)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def permitted(principal: Principal, action: str) -> Principal:
    if not principal.may(action):
        raise NotPermitted(f"{principal.name} is a {principal.role} and may not {action}")
    return principal


def reader(request: web.Request, action: str = "read") -> Principal:
    """The session's principal, allowed ``action``; opens the local session without tokens.

    With tokens and no login, a GET is sent to the login form.
    """
    context = context_of(request)
    session = current_session(request)
    if not context.authorizer.enabled and (session is None or session.principal is None):
        session = context.sessions.open(LOCAL)
        request[NEW_SESSION] = True
    if session is None or session.principal is None:
        raise see_other("/login")
    request[SESSION] = session
    return permitted(session.principal, action)


async def posted(request: web.Request, action: str) -> tuple[Principal, dict[str, str]]:
    """A form post's fields, once its CSRF token matched its session and its role may ``action``."""
    form = {key: str(value) for key, value in (await request.post()).items()}
    session = current_session(request)
    if session is None or not session.csrf_ok(form.get("csrf")):
        raise CsrfRefused(
            "the form's CSRF token is missing or stale: reload the page and submit it again"
        )
    request[SESSION] = session
    if session.principal is None:
        raise Unauthenticated("log in first")
    return permitted(session.principal, action), form


def next_url(path: str, query: dict[str, str], cursor: str) -> str:
    return f"{path}?{urlencode({**query, 'cursor': cursor})}" if cursor else ""


async def index(request: web.Request) -> web.Response:
    return redirect("/decisions")


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=CSS, content_type="text/css")


async def login_form(request: web.Request) -> web.Response:
    context = context_of(request)
    if not context.authorizer.enabled:
        return redirect("/decisions")
    session = current_session(request)
    if session is None:
        session = context.sessions.open(None)
        request[NEW_SESSION] = True
    request[SESSION] = session
    return render(request, "login.html", failed="")


async def login(request: web.Request) -> web.Response:
    context = context_of(request)
    form = {key: str(value) for key, value in (await request.post()).items()}
    session = current_session(request)
    if session is None or not session.csrf_ok(form.get("csrf")):
        raise CsrfRefused("the login form's CSRF token is missing or stale: reload it")
    token = form.get("token", "").strip()
    try:
        principal = context.authorizer.authorize(f"Bearer {token}", "read")
    except Unauthenticated:
        request[SESSION] = session
        return render(request, "login.html", http_status=401, failed="That token is not valid.")
    # A new id at login: one planted in the browser before it is worth nothing now.
    context.sessions.close(session.session_id)
    fresh = context.sessions.open(principal)
    response = redirect("/decisions")
    set_cookie(response, request, fresh)
    return response


async def logout(request: web.Request) -> web.Response:
    form = {key: str(value) for key, value in (await request.post()).items()}
    session = current_session(request)
    if session is None or not session.csrf_ok(form.get("csrf")):
        raise CsrfRefused("the form's CSRF token is missing or stale")
    context_of(request).sessions.close(session.session_id)
    response = redirect("/login")
    response.del_cookie(COOKIE, path="/")
    return response


async def decisions(request: web.Request) -> web.Response:
    reader(request)
    wanted, cursor, limit = api.decisions_query(request)
    page = context_of(request).decisions_log.decision_page(wanted, cursor, limit)
    query = {**wanted.as_query(), "limit": str(limit)}
    return render(
        request,
        "decisions.html",
        page=page,
        wanted=wanted,
        limit=limit,
        outcomes=OUTCOMES,
        next_url=next_url("/decisions", query, page.next_cursor),
    )


def report_extras(report: dict[str, Any]) -> dict[str, Any]:
    """What a report's page shows beside its facts: the OS, the advisories, the first
    packages by name (the rest are a link away) and the raw JSON without the package lists."""
    return {
        "os": image_os(report),
        "vulnerabilities": vulnerabilities(report),
        "packages": packages_page(report, "", "", PREVIEW),
        "raw": without_inventory(report),
    }


async def decision(request: web.Request) -> web.Response:
    reader(request)
    context = context_of(request)
    report = api.decision_or_404(context, request.match_info["id"])
    quarantined = context.decisions_log.is_quarantined(str(report.get("decision_id", "")))
    return render(
        request,
        "decision.html",
        report=report,
        quarantined=quarantined,
        view=report_extras(report),
    )


async def decision_packages(request: web.Request) -> web.Response:
    """A decision's packages, a page at a time in name order, with a name or purl filter."""
    reader(request)
    report = api.decision_or_404(context_of(request), request.match_info["id"])
    wanted = package_filter(request.query.get("q"))
    limit = page_limit(request.query.get("limit"))
    page = packages_page(report, wanted, request.query.get("cursor", ""), limit)
    query = {"limit": str(limit), **({"q": wanted} if wanted else {})}
    return render(
        request,
        "packages.html",
        report=report,
        os=image_os(report),
        page=page,
        limit=limit,
        next_url=next_url(request.path, query, page.next_cursor),
    )


async def quarantine(request: web.Request) -> web.Response:
    reader(request)
    entries = context_of(request).decisions_log.list_quarantine()
    return render(request, "quarantine.html", entries=entries)


async def quarantine_entry(request: web.Request) -> web.Response:
    principal = reader(request)
    entry = api.quarantine_entry(context_of(request), request.match_info["id"])
    return render(
        request,
        "quarantine_entry.html",
        entry=entry,
        may_release=principal.may("release"),
        view=report_extras(entry["report"]),
    )


async def release(request: web.Request) -> web.Response:
    principal, form = await posted(request, "release")
    context = context_of(request)
    entry_id = request.match_info["id"]
    report = await release_entry(
        context.runner,
        context.decisions_log,
        context.quarantine_store,
        entry_id,
        form.get("reason", ""),
        api.operator_name(principal),
    )
    if report["decision"] != "ALLOW":
        return error_page(request, 409, f"denied again, still quarantined: {report['reason']}")
    return redirect(f"/decisions/{report['decision_id']}")


async def delete(request: web.Request) -> web.Response:
    await posted(request, "delete")
    context = context_of(request)
    delete_entry(context.decisions_log, context.quarantine_store, request.match_info["id"])
    return redirect("/quarantine")


async def reevaluations(request: web.Request) -> web.Response:
    principal = reader(request)
    limit = page_limit(request.query.get("limit"))
    page = context_of(request).decisions_log.reevaluation_page(
        request.query.get("cursor", ""), limit
    )
    return render(
        request,
        "reevaluations.html",
        page=page,
        may_reevaluate=principal.may("reevaluate"),
        next_url=next_url("/reevaluations", {"limit": str(limit)}, page.next_cursor),
    )


async def reevaluation(request: web.Request) -> web.Response:
    reader(request)
    run = api.run_or_404(context_of(request), request.match_info["id"])
    return render(request, "reevaluation.html", run=run)


async def start_reevaluation(request: web.Request) -> web.Response:
    principal, form = await posted(request, "reevaluate")
    context = context_of(request)
    run = await run_reevaluation(
        context.runner,
        context.decisions_log,
        principal.name,
        force=form.get("force") == "yes",
        limit=api.REEVALUATE_LIMIT,
    )
    return redirect(f"/reevaluations/{run['run_id']}")


async def admitted(request: web.Request) -> web.Response:
    reader(request)
    limit = page_limit(request.query.get("limit"))
    page = context_of(request).decisions_log.admitted_page(request.query.get("cursor", ""), limit)
    return render(
        request,
        "admitted.html",
        page=page,
        next_url=next_url("/admitted", {"limit": str(limit)}, page.next_cursor),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", index)
    router.add_get("/console.css", stylesheet)
    router.add_get("/login", login_form)
    router.add_post("/login", login)
    router.add_post("/logout", logout)
    router.add_get("/decisions", decisions)
    # Before the decision itself: a decision id may hold "/" (a replica's prefix).
    router.add_get(f"/decisions/{api.ID}/packages", decision_packages)
    router.add_get(f"/decisions/{api.ID}", decision)
    router.add_get("/quarantine", quarantine)
    router.add_get(f"/quarantine/{api.QUARANTINE_ID}", quarantine_entry)
    router.add_post(f"/quarantine/{api.QUARANTINE_ID}/release", release)
    router.add_post(f"/quarantine/{api.QUARANTINE_ID}/delete", delete)
    router.add_get("/reevaluations", reevaluations)
    router.add_post("/reevaluations", start_reevaluation)
    router.add_get("/reevaluations/{id:[0-9a-f]{32}}", reevaluation)
    router.add_get("/admitted", admitted)
