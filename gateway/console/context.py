"""What the console's handlers read, kept in the app under :data:`CONSOLE_KEY`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from pullguard.gateway.auth.tokens import Authorizer
from pullguard.gateway.console.sessions import Sessions
from pullguard.services.runtime.errors import PullguardError

if TYPE_CHECKING:
    from pullguard.gateway.decisions import DecisionLog
    from pullguard.gateway.pull import Pipeline
    from pullguard.gateway.stores import Quarantine


@dataclass(frozen=True)
class ConsoleContext:
    """What the console's handlers read.

    Without ``decisions`` the listener serves ``/metrics`` only (a layer
    service's, or a test's). ``pipeline`` runs releases and re-evaluations.
    """

    #: Rendered, in order, by ``GET /metrics``.
    registries: Sequence[CollectorRegistry]
    decisions: DecisionLog | None = None
    quarantine: Quarantine | None = None
    pipeline: Pipeline | None = None
    #: ``auth.admin_tokens``; without tokens everyone is the local operator (loopback only).
    authorizer: Authorizer = field(default_factory=lambda: Authorizer(None))
    sessions: Sessions = field(default_factory=Sessions)

    @property
    def decisions_log(self) -> DecisionLog:
        if self.decisions is None:
            raise Unavailable("this listener has no decision log")
        return self.decisions

    @property
    def quarantine_store(self) -> Quarantine:
        if self.quarantine is None:
            raise Unavailable("this listener has no quarantine")
        return self.quarantine

    @property
    def runner(self) -> Pipeline:
        """The pipeline that runs releases and re-evaluations."""
        if self.pipeline is None:
            raise Unavailable("this listener cannot verify images (no pipeline)")
        return self.pipeline


class Unavailable(PullguardError):
    oci_code = "UNAVAILABLE"
    http_status = 503


CONSOLE_KEY = web.AppKey("pullguard_console", ConsoleContext)
