"""The front door's HTTPS: one server context, its certificate and key read again on SIGHUP.

A reload loads the new files into a fresh context first; only when that
works are they loaded into the serving context, so new connections get the
new certificate while a broken pair (half-copied files, a key that does not
match) leaves the old one serving, with an error in the log.
"""

from __future__ import annotations

import logging
import ssl

from pullguard.services.runtime.config.access import FrontTls, server_context

log = logging.getLogger("pullguard.gateway")


class ReloadableTls:
    def __init__(self, tls: FrontTls) -> None:
        self.tls = tls
        self.context = server_context(tls)

    def reload(self) -> bool:
        """Load the files again; False (and the old certificate kept) when they do not load."""
        try:
            server_context(self.tls)
            self.context.load_cert_chain(str(self.tls.certificate), str(self.tls.key))
        except (ssl.SSLError, OSError) as exc:
            log.error(
                "gateway: tls: cannot reload %s with %s (still serving the previous"
                " certificate): %s",
                self.tls.certificate,
                self.tls.key,
                getattr(exc, "strerror", None) or exc,
            )
            return False
        log.info("gateway: tls: reloaded %s", self.tls.certificate)
        return True
