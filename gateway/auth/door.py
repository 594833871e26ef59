"""What the front door asks of a client: HTTPS (``tls``) and a login (``auth.htpasswd``).

:func:`protect` adds the login check to the front door's application and
makes the TLS context; :meth:`DoorSecurity.reload` reads the certificate,
key and htpasswd file again, which the gateway does on SIGHUP.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass

from aiohttp import web

from pullguard.gateway.auth.front_tls import ReloadableTls
from pullguard.gateway.auth.logins import Htpasswd, login_middleware
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import ConfigError

log = logging.getLogger("pullguard.gateway")


@dataclass
class DoorSecurity:
    tls: ReloadableTls | None
    htpasswd: Htpasswd | None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.context if self.tls is not None else None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def reload(self) -> None:
        """Read the certificate, key and htpasswd file again; a broken file keeps the old."""
        if self.tls is not None:
            self.tls.reload()
        if self.htpasswd is not None:
            try:
                self.htpasswd.reload()
            except (ConfigError, OSError, UnicodeDecodeError) as exc:
                message = exc.message if isinstance(exc, ConfigError) else str(exc)
                log.error("gateway: htpasswd not reloaded (previous users kept): %s", message)
            else:
                log.info("gateway: reloaded %s", self.htpasswd.path)

    def reload_on_sighup(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)


def protect(app: web.Application, config: Config) -> DoorSecurity:
    """Add the login check to ``app`` when ``auth.htpasswd`` is set; the TLS context if any."""
    htpasswd = None
    if config.auth.htpasswd is not None:
        htpasswd = Htpasswd(config.auth.users, config.auth.htpasswd)
        app.middlewares.append(login_middleware(htpasswd))
    tls = ReloadableTls(config.tls) if config.tls is not None else None
    return DoorSecurity(tls, htpasswd)
