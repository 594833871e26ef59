"""The console listener (``console_listen``): ``/metrics``, the JSON API
(``/api/v1/``) and the web console.

- :mod:`.app`: the app factory (:func:`console_app`), the one place routes are
  registered (:func:`register_routes`), and :func:`start_console`, which
  refuses to listen beyond loopback unless admin tokens are configured.
- :mod:`.context`: :class:`ConsoleContext`, what every handler reads.
- :mod:`.api`: the JSON API; :mod:`.pages`: the HTML pages and forms
  (templates in ``templates/``); both read through the same functions.
- :mod:`.sessions`: browser logins and CSRF tokens; :mod:`.web`: security
  headers, errors, and the loopback host check.
"""

from pullguard.gateway.console.app import (
    console_app,
    is_loopback_address,
    refuse_open_bind,
    register_routes,
    start_console,
)
from pullguard.gateway.console.context import CONSOLE_KEY, ConsoleContext

__all__ = [
    "CONSOLE_KEY",
    "ConsoleContext",
    "console_app",
    "is_loopback_address",
    "refuse_open_bind",
    "register_routes",
    "start_console",
]
