"""gRPC clients of the six layers, as the gateway sees them.

Every call has a deadline. A call that does not complete becomes one of:

- :class:`LayerUnavailable` — the layer could not give a verdict: unreachable
  (``layer_unavailable``), past its deadline (``layer_timeout``), crashing
  (``layer_error``: INTERNAL, UNKNOWN, a servicer exception) or reporting
  NOT_SERVING on its health service (``layer_not_serving``). An outage: the
  pull is refused as retryable (503), never recorded as a verdict.
- :class:`UpstreamError` / :class:`NotFound` / :class:`StagingFull` — the
  fetcher reported that the upstream failed or has no such content, or that it
  could not stage it (rebuilt from the call's trailers by
  :func:`~pullguard.services.runtime.errors.error_from_trailers`). Not a
  security verdict; never cached.

Each layer's health is polled in the background; a call to a layer whose
last reported status is NOT_SERVING fails at once. A layer run as several
replicas (a list of addresses or ``dns:///``, see
:mod:`~pullguard.services.runtime.channels`) is balanced round-robin over its
replicas that report SERVING; a call that finds its replica gone (UNAVAILABLE
from the channel) is tried once more, on another replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.trace import Span, SpanKind

from pullguard.services.runtime.channels import open_channel
from pullguard.services.runtime.config import LAYERS, ServicesTls
from pullguard.services.runtime.config.settings import is_replicated
from pullguard.services.runtime.errors import (
    LayerUnavailable,
    PullguardError,
    error_class_of,
    error_from_trailers,
)
from pullguard.services.runtime.telemetry import annotate_response, tracer
from pullguard.v1 import (
    analysis_pb2_grpc,
    fetcher_pb2_grpc,
    format_pb2_grpc,
    hashverify_pb2_grpc,
    signature_pb2_grpc,
    source_pb2_grpc,
    vulnerability_pb2_grpc,
)

Response = TypeVar("Response")
log = logging.getLogger("pullguard.gateway")

_STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "analysis": analysis_pb2_grpc.AnalysisStub,
    "fetcher": fetcher_pb2_grpc.FetcherStub,
    "format": format_pb2_grpc.FormatStub,
    "hashverify": hashverify_pb2_grpc.HashVerifyStub,
    "source": source_pb2_grpc.SourceStub,
    "signature": signature_pb2_grpc.SignatureStub,
    "vulnerability": vulnerability_pb2_grpc.VulnerabilityStub,
}


#: How long a call waits for an unreachable layer to come back before refusing.
RECONNECT_WAIT = 2.0
#: How often each layer's health service is asked.
HEALTH_INTERVAL = 1.0
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_SERVING = health_pb2.HealthCheckResponse.SERVING


def _annotated(span: Span, response: Any) -> Any:
    """The layer's answer, its verdict's outcome and finding codes noted on the call's span."""
    annotate_response(span, response)
    return response


def _unreachable(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE raised by the channel itself, not by the service."""
    return exc.code() is grpc.StatusCode.UNAVAILABLE and not error_class_of(
        exc.trailing_metadata() or ()
    )


@dataclass
class CallTiming:
    layer: str
    duration_ms: float


class LayerClients:
    """One channel and stub per layer; calls are timed and traced."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        default_timeout: float,
        tls: ServicesTls | None = None,
    ) -> None:
        missing = [name for name in LAYERS if name not in addresses]
        if missing:
            raise PullguardError(f"no address for layer services: {', '.join(missing)}")
        self._channels = {name: open_channel(addresses[name], tls) for name in LAYERS}
        #: Layers run as several replicas: grpc health-checks each replica and
        #: round-robins over those SERVING, so one replica's NOT_SERVING
        #: (which a poll may reach) does not refuse the layer's calls.
        self._replicated = {name for name in LAYERS if is_replicated(addresses[name])}
        self._stubs = {name: _STUBS[name](self._channels[name]) for name in LAYERS}
        self.default_timeout = default_timeout
        self._tracer = tracer("gateway")
        #: The last status each layer's health service reported (absent: unknown).
        self.health: dict[str, int] = {}
        self._watchers: list[asyncio.Task[None]] = []

    def stub(self, layer: str) -> Any:
        return self._stubs[layer]

    async def call(
        self,
        layer: str,
        method: str,
        request: Any,
        timeout: float | None = None,
        timings: list[CallTiming] | None = None,
    ) -> Any:
        """Call ``layer.method`` and translate every failure (see module doc)."""
        self.watch_health()
        if self.health.get(layer) == _NOT_SERVING and layer not in self._replicated:
            raise LayerUnavailable(
                layer, f"{layer}: not serving (its health check fails)", "layer_not_serving"
            )
        rpc: Callable[..., Awaitable[Any]] = getattr(self._stubs[layer], method)
        started = time.monotonic()
        with self._tracer.start_as_current_span(f"{layer}.{method}", kind=SpanKind.CLIENT) as span:
            try:
                try:
                    return _annotated(
                        span, await rpc(request, timeout=timeout or self.default_timeout)
                    )
                except grpc.aio.AioRpcError as exc:
                    if not _unreachable(exc):
                        raise
                # Every layer RPC is idempotent, so one more try that waits briefly
                # for the connection lets a restarted layer, or another replica
                # of it (round-robin), serve the call.
                try:
                    await asyncio.wait_for(self._channels[layer].channel_ready(), RECONNECT_WAIT)
                except TimeoutError:
                    raise LayerUnavailable(layer, f"{layer}: service unavailable") from None
                return _annotated(span, await rpc(request, timeout=timeout or self.default_timeout))
            except grpc.aio.AioRpcError as exc:
                raise _translate(layer, exc) from None
            finally:
                if timings is not None:
                    timings.append(CallTiming(layer, (time.monotonic() - started) * 1000))

    def serving(self) -> dict[str, bool]:
        """Each layer, and whether its last health check said SERVING (False
        when it said otherwise, failed, or has not answered yet)."""
        return {layer: self.health.get(layer) == _SERVING for layer in LAYERS}

    def watch_health(self) -> None:
        """Start one health poller per layer, once, on the running event loop.

        The gateway starts them when it starts: each poller's first Check
        opens its layer's channel, so the first pull does not wait for seven
        connections (and knows which layers are down). A call starts them
        too, where no gateway did (tests, tools).
        """
        if not self._watchers:
            self._watchers = [asyncio.create_task(self._poll(layer)) for layer in LAYERS]

    async def _poll(self, layer: str) -> None:
        """Ask the layer's health service every HEALTH_INTERVAL; remember the answer.

        A Check, not a Watch: grpc's health servicer forgets every watcher of
        a service when one of them leaves, so a watch from one gateway replica
        could go stale when another disconnects. A Check also runs the layer's
        readiness check afresh.
        """
        stub = health_pb2_grpc.HealthStub(self._channels[layer])
        request = health_pb2.HealthCheckRequest(service="")
        while True:
            try:
                response = await stub.Check(request, timeout=HEALTH_INTERVAL)
            except grpc.aio.AioRpcError as exc:
                # Down, restarting or hung: calls find out for themselves.
                log.debug("health check of %s failed: %s", layer, exc.code().name)
                self.health.pop(layer, None)
            else:
                if response.status == _NOT_SERVING and self.health.get(layer) != _NOT_SERVING:
                    log.error("%s reports NOT_SERVING: its pulls are refused as an outage", layer)
                self.health[layer] = response.status
            await asyncio.sleep(HEALTH_INTERVAL)

    async def close(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        for channel in self._channels.values():
            await channel.close()


def _translate(layer: str, exc: grpc.aio.AioRpcError) -> PullguardError:
    trailing = tuple(exc.trailing_metadata() or ())
    error_class = error_class_of(trailing)
    details = exc.details() or exc.code().name
    if layer == "fetcher":
        # Only the fetcher speaks for the upstream and its staging store.
        error = error_from_trailers(trailing, details)
        if error is not None:
            return error
    if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return LayerUnavailable(layer, f"{layer}: no verdict within the deadline", "layer_timeout")
    if exc.code() is grpc.StatusCode.UNAVAILABLE and not error_class:
        return LayerUnavailable(layer, f"{layer}: service unavailable")
    # INTERNAL, UNKNOWN (a servicer exception), a layer that is not ready, or
    # an error the layer raised on purpose: no verdict either way.
    message = details if details.startswith(layer) else f"{layer}: {details}"
    kind = "layer_not_serving" if error_class == "NotServing" else "layer_error"
    return LayerUnavailable(layer, message, kind)
