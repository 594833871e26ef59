"""The console listener (``console_listen``): ``/metrics`` now; the web console and
the JSON API (``/api/v1/``) join it here.

- :mod:`.app`: the app factory (:func:`console_app`), the one place routes are
  registered (:func:`register_routes`), and :func:`start_console`, which
  refuses to listen beyond loopback unless admin tokens are configured.
"""

from pullguard.gateway.console.app import (
    CONSOLE_KEY,
    ConsoleContext,
    console_app,
    is_loopback_address,
    refuse_open_bind,
    register_routes,
    start_console,
)

__all__ = [
    "CONSOLE_KEY",
    "ConsoleContext",
    "console_app",
    "is_loopback_address",
    "refuse_open_bind",
    "register_routes",
    "start_console",
]
