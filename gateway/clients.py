"""gRPC clients of the six layers, as the gateway sees them.

Every call has a deadline. A call that does not complete becomes one of:

- :class:`LayerFailure` — the layer could not give a verdict (unreachable,
  timed out, internal error). The pull is refused: fail closed.
- :class:`UpstreamError` / :class:`NotFound` — the fetcher reported that the
  upstream failed or has no such content. Not a security verdict; never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.trace import SpanKind

from pullguard.services.runtime.channels import open_channel
from pullguard.services.runtime.config import LAYERS, ServicesTls
from pullguard.services.runtime.errors import (
    NotFound,
    PullguardError,
    StagingFull,
    UpstreamError,
    UpstreamTimeout,
)
from pullguard.services.runtime.server import ERROR_CLASS_KEY, ERROR_HTTP_KEY, ERROR_OCI_KEY
from pullguard.services.runtime.telemetry import tracer
from pullguard.v1 import (
    analysis_pb2_grpc,
    fetcher_pb2_grpc,
    format_pb2_grpc,
    hashverify_pb2_grpc,
    signature_pb2_grpc,
    source_pb2_grpc,
)

Response = TypeVar("Response")

_STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "analysis": analysis_pb2_grpc.AnalysisStub,
    "fetcher": fetcher_pb2_grpc.FetcherStub,
    "format": format_pb2_grpc.FormatStub,
    "hashverify": hashverify_pb2_grpc.HashVerifyStub,
    "source": source_pb2_grpc.SourceStub,
    "signature": signature_pb2_grpc.SignatureStub,
}


#: How long a call waits for an unreachable layer to come back before refusing.
RECONNECT_WAIT = 2.0


def _unreachable(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE raised by the channel itself, not by the service."""
    trailing = dict(exc.trailing_metadata() or ())
    return exc.code() is grpc.StatusCode.UNAVAILABLE and ERROR_CLASS_KEY not in trailing


class LayerFailure(PullguardError):
    """A layer did not return a verdict; the gateway refuses the pull."""

    oci_code = "DENIED"
    http_status = 403

    def __init__(self, layer: str, message: str) -> None:
        super().__init__(message)
        self.layer = layer


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
        self._stubs = {name: _STUBS[name](self._channels[name]) for name in LAYERS}
        self.default_timeout = default_timeout
        self._tracer = tracer("gateway")

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
        rpc: Callable[..., Awaitable[Any]] = getattr(self._stubs[layer], method)
        started = time.monotonic()
        with self._tracer.start_as_current_span(f"{layer}.{method}", kind=SpanKind.CLIENT):
            try:
                try:
                    return await rpc(request, timeout=timeout or self.default_timeout)
                except grpc.aio.AioRpcError as exc:
                    if not _unreachable(exc):
                        raise
                # Every layer RPC is idempotent, so one more try that waits briefly
                # for the connection lets a restarted layer serve the next pull.
                try:
                    await asyncio.wait_for(self._channels[layer].channel_ready(), RECONNECT_WAIT)
                except TimeoutError:
                    raise LayerFailure(layer, f"{layer}: service unavailable") from None
                return await rpc(request, timeout=timeout or self.default_timeout)
            except grpc.aio.AioRpcError as exc:
                raise _translate(layer, exc) from None
            finally:
                if timings is not None:
                    timings.append(CallTiming(layer, (time.monotonic() - started) * 1000))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def _translate(layer: str, exc: grpc.aio.AioRpcError) -> PullguardError:
    trailing = {key: value for key, value in (exc.trailing_metadata() or ())}
    error_class = trailing.get(ERROR_CLASS_KEY, "")
    details = exc.details() or exc.code().name
    if layer == "fetcher":
        if error_class == "UpstreamTimeout":
            return UpstreamTimeout(details)
        if error_class == "UpstreamError":
            error = UpstreamError(details)
            status = trailing.get(ERROR_HTTP_KEY, "")
            if isinstance(status, str) and status.isdigit():
                error.http_status = int(status)
            return error
        if error_class == "StagingFull":
            return StagingFull(details)
        if error_class == "NotFound":
            oci_code = trailing.get(ERROR_OCI_KEY, "MANIFEST_UNKNOWN")
            return NotFound(details, oci_code=str(oci_code))
    if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return LayerFailure(layer, f"{layer}: no verdict within the deadline")
    if exc.code() is grpc.StatusCode.UNAVAILABLE and not error_class:
        return LayerFailure(layer, f"{layer}: service unavailable")
    return LayerFailure(layer, details if details.startswith(layer) else f"{layer}: {details}")
