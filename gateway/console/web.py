"""What every console response shares: security headers, errors, and who is asking.

- Headers: a Content-Security-Policy that allows this origin only (the
  console runs no script at all), no framing, no MIME sniffing, no
  referrer, and ``Cache-Control: no-store`` (reports name images and
  findings; they stay out of shared caches and the browser's disk).
- Without admin tokens the console is on loopback, and a request must name
  a loopback host: a web page whose own name was re-pointed at 127.0.0.1
  (DNS rebinding) gets 421, not the console.
- Errors: a :class:`PullguardError` (or an aiohttp HTTP error) becomes
  ``{"error": {"code", "message"}}`` under ``/api/``, and an HTML page
  elsewhere; anything else is logged and answered 500 without detail.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pullguard.gateway.auth.tokens import challenge
from pullguard.gateway.console.app import is_loopback_address
from pullguard.gateway.console.context import CONSOLE_KEY
from pullguard.services.runtime.errors import PullguardError

log = logging.getLogger("pullguard.gateway")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
API_PREFIX = "/api/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Renders an error page: (request, HTTP status, message) -> response.
ErrorPage = Callable[[web.Request, int, str], web.StreamResponse]


def error_json(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}, **extra}, status=status)


def host_is_loopback(host: str) -> bool:
    """Whether a Host header names this machine (``localhost``, 127.0.0.0/8, ``[::1]``)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return is_loopback_address(name.strip("[]"))


def console_middleware(error_page: ErrorPage) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        api = request.path.startswith(API_PREFIX)
        try:
            context = request.app[CONSOLE_KEY]
            if not context.authorizer.enabled and not host_is_loopback(request.host):
                raise Misdirected(
                    f"host {request.host[:100]!r} is not a loopback name; without"
                    " auth.admin_tokens the console answers to 127.0.0.1 or localhost only"
                )
            response = await handler(request)
        except PullguardError as exc:
            status = exc.http_status
            if api:
                response = error_json(status, _code(exc), exc.message)
                response.headers.update(challenge(exc))
            else:
                response = error_page(request, status, exc.message)
        except web.HTTPException as exc:
            if exc.status >= 400:
                message = exc.reason if exc.status != 404 else f"no such page: {request.path[:200]}"
                response = (
                    error_json(exc.status, "HTTP_ERROR", message)
                    if api
                    else error_page(request, exc.status, message)
                )
            else:
                response = web.Response(status=exc.status, headers=exc.headers)
        except Exception:
            log.exception("console: %s %s failed", request.method, request.path[:200])
            message = "internal error; the gateway's log has the details"
            response = (
                error_json(500, "INTERNAL", message) if api else error_page(request, 500, message)
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return middleware


class Misdirected(PullguardError):
    """A request for a host name this console does not answer to."""

    oci_code = "MISDIRECTED"
    http_status = 421


def _code(exc: PullguardError) -> str:
    code = getattr(exc, "oci_code", "") or ""
    return str(code) if code else type(exc).__name__
