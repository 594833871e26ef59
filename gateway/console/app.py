"""The console's aiohttp application: what it serves, and where it may listen.

Whatever a handler needs (metric registries, the decision log, the
quarantine, the pipeline, the token store and the browser sessions) travels
in one :class:`ConsoleContext` kept in the app under :data:`CONSOLE_KEY`;
:func:`register_routes` is the one place routes are added: ``/metrics``,
the JSON API (:mod:`.api`) and the HTML pages (:mod:`.pages`).

**Where it listens.** The console will let operators read decisions and
release quarantined images. Without ``auth.admin_tokens`` nobody is asked
who they are, so it listens on loopback only: :func:`refuse_open_bind`
refuses any other address (0.0.0.0, a LAN address, a host name other than
``localhost``) before anything binds.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from pullguard.gateway.console.context import CONSOLE_KEY, ConsoleContext
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.metrics import metrics_handler, split_hostport, start_http


def register_routes(app: web.Application, context: ConsoleContext) -> None:
    """Every route of the console listener."""
    app.router.add_get("/metrics", metrics_handler(context.registries))
    if context.decisions is not None:
        from pullguard.gateway.console import api, pages

        api.add_routes(app.router)
        pages.add_routes(app.router)


def console_app(context: ConsoleContext) -> web.Application:
    from pullguard.gateway.console.pages import error_page
    from pullguard.gateway.console.web import console_middleware

    app = web.Application(client_max_size=64 * 1024, middlewares=[console_middleware(error_page)])
    app[CONSOLE_KEY] = context
    register_routes(app, context)
    return app


def is_loopback_address(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_open_bind(listen: str, admin_tokens: bool, source: str) -> None:
    """Refuse ``console_listen`` beyond loopback unless admin tokens guard it."""
    host, _port = split_hostport(listen)
    if admin_tokens or is_loopback_address(host):
        return
    raise ConfigError(
        source,
        "console_listen",
        f"{listen} is beyond loopback; the console and JSON API listen there only with"
        " auth.admin_tokens set (use 127.0.0.1:PORT otherwise)",
    )


async def start_console(
    listen: str, context: ConsoleContext, *, admin_tokens: bool, source: str
) -> web.AppRunner:
    """Serve the console on ``listen``; the caller cleans the runner up."""
    refuse_open_bind(listen, admin_tokens, source)
    return await start_http(console_app(context), listen)
