"""One pull's state: its report, plan, layer clients and staging session.

Every step of :func:`pullguard.gateway.pull.steps.run` takes a :class:`Pull`
instead of a report and half a dozen loose parameters. A step that refuses
raises :class:`StepRefused`; the report already says which layer and why.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.report import Report
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import LayerUnavailable, PullguardError
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2


class LayerClients(Protocol):
    """What a pull needs of the layer services (gateway.clients.LayerClients is one)."""

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Any: ...

    async def close(self) -> None: ...


class Puller(Protocol):
    """What the front door asks of the pipeline (:class:`~.pipeline.Pipeline` is one)."""

    config: Config

    async def pull(self, name: str, reference: str, *, admit: bool = True) -> PullResult: ...

    async def repository_of(self, name: str) -> str | None: ...

    async def list_tags(self, name: str, last: str) -> list[str]: ...


class StepRefused(Exception):
    """Internal control flow: a step refused; the report says which."""


class Reply(NamedTuple):
    """A layer's answer and how long the call took."""

    response: Any
    ms: float


@dataclass
class PullResult:
    """The outcome of one pull. ``manifest`` is set only when allowed."""

    report: Report
    manifest: bytes | None = None
    error: PullguardError | None = None

    @property
    def allowed(self) -> bool:
        return self.report.decision == "ALLOW" and self.error is None


class Pull:
    """One pull in flight. ``plan`` is set once analysis has planned it."""

    def __init__(
        self,
        report: Report,
        *,
        admit: bool,
        config: Config,
        clients: LayerClients,
        decisions: DecisionLog,
        staging: StagingStore,
    ) -> None:
        self.report = report
        self.admit = admit
        self.config = config
        self.limits = config.limits
        self.clients = clients
        self.decisions = decisions
        self.staging = staging
        self._plan: common_pb2.Plan | None = None
        #: What the pull holds until its verdict is recorded (the digest lock and
        #: the cross-replica lease): closed by the pipeline after the conclusion,
        #: so another pull of the digest finds the admission, never a half-made one.
        self.held = contextlib.AsyncExitStack()

    @property
    def session(self) -> str:
        """The staging session: ``<replica id>/<decision id>``, in this replica's own folder."""
        replica = self.config.replica_id
        return f"{replica}/{self.report.decision_id}" if replica else self.report.decision_id

    @property
    def plan(self) -> common_pb2.Plan:
        if self._plan is None:
            raise PullguardError("pull used before it was planned")
        return self._plan

    @plan.setter
    def plan(self, plan: common_pb2.Plan) -> None:
        self._plan = plan

    @property
    def forced(self) -> bool:
        """A forced re-evaluation verifies even what this policy admitted."""
        return bool(self.report.reevaluation and self.report.reevaluation.force)

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Reply:
        """Ask a layer; a failure is kept in the report as an error step and raised."""
        started = time.monotonic()
        try:
            response = await self.clients.call(layer, method, request, timeout=timeout)
        except LayerUnavailable as exc:
            # An outage, not a verdict: the step is kept in the report, and
            # the pipeline records the pull as an outage.
            self.report.add_error(layer, method, exc.message, _since(started))
            raise
        return Reply(response, _since(started))

    async def call_tuple(
        self, layer: str, method: str, request: Any, timeout: float | None
    ) -> tuple[Any, float]:
        """:meth:`call` in the shape discovery and the index unit take."""
        return await self.call(layer, method, request, timeout)

    def judge(self, layer: str, step: str, verdict: common_pb2.Verdict, ms: float) -> bool:
        """Record a verdict in the report; return whether it allows."""
        return self.report.add(layer, step, verdict, ms)

    def require(self, layer: str, step: str, verdict: common_pb2.Verdict, ms: float) -> None:
        """Record a verdict; a refusal ends the pull."""
        if not self.judge(layer, step, verdict, ms):
            raise StepRefused

    def fail(self, layer: str, step: str, message: str) -> None:
        """A step that could not judge: recorded as an error, and the pull is refused."""
        self.report.add_error(layer, step, message, 0.0)
        raise StepRefused

    def record_provenance(self, provenance: common_pb2.Provenance) -> None:
        for exchange in provenance.exchanges:
            self.report.provenance.append(
                {
                    "method": exchange.method,
                    "url": exchange.url,
                    "status": exchange.status,
                    "location": exchange.location,
                    "purpose": exchange.purpose,
                    "digest": exchange.digest,
                    "headers": dict(exchange.headers),
                }
            )


class Stopwatch:
    """Milliseconds since it was made: one step's duration, measured once."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    @property
    def ms(self) -> float:
        return _since(self._started)


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000
