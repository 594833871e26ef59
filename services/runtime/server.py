"""How every pullguard process serves gRPC.

:func:`serve` gives a service the standard health service, reflection, the
error/tracing interceptor and a graceful shutdown on SIGINT/SIGTERM. The
interceptor is the one place where errors become gRPC statuses: a
:class:`PullguardError` keeps its declared code, anything else becomes
INTERNAL with the exception's type and no traceback on the wire.

A service may pass a readiness check: a function that lists what keeps it
from working (its staging store gone, its trust material unreadable). The
health service reports NOT_SERVING while the list is not empty, and every
call meanwhile fails with :class:`NotServing` (no verdict). The check touches
the filesystem, so it runs in a thread, on every health Check and every few
seconds (:data:`READINESS_INTERVAL`); a call reads its latest result and costs
no I/O. A store that vanished between two checks fails the call itself, which
is an error too, never a verdict. The gateway polls each layer's health and
treats NOT_SERVING as an outage.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from pullguard.services.runtime.errors import NotServing, PullguardError, error_trailers
from pullguard.services.runtime.metrics import CallMetrics
from pullguard.services.runtime.telemetry import annotate_response, extract_context, tracer

log = logging.getLogger("pullguard.server")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
#: Client channels retry a lost peer within a second, so a restarted layer is
#: used again promptly instead of after gRPC's default backoff of up to two minutes.
CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps errors to statuses and joins each call to the caller's trace."""

    def __init__(
        self, service: str, ready: Callable[[], Awaitable[Sequence[str]]] | None = None
    ) -> None:
        self._service = service
        self._tracer = tracer(service)
        #: What keeps the service from working now; a call then gets no verdict.
        self._ready = ready

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        if method.startswith("/grpc.health") or method.startswith("/grpc.reflection"):
            return handler
        inner = handler.unary_unary
        service = self._service
        span_tracer = self._tracer
        metadata = handler_call_details.invocation_metadata
        ready = self._ready

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = otel_context.attach(extract_context(metadata))  # type: ignore[arg-type]
            measured = CallMetrics(service, method)
            try:
                with span_tracer.start_as_current_span(method, kind=SpanKind.SERVER) as span:
                    try:
                        problems = await ready() if ready is not None else ()
                        if problems:
                            raise NotServing(f"not serving: {problems[0]}")
                        response = await inner(request, context)
                        measured.answered(annotate_response(span, response))
                        return response
                    except PullguardError as exc:
                        measured.code = exc.grpc_code.name
                        span.set_status(Status(StatusCode.ERROR, exc.message))
                        context.set_trailing_metadata(error_trailers(exc))
                        await context.abort(exc.grpc_code, f"{service}: {exc.message}")
                    except (grpc.aio.AbortError, asyncio.CancelledError):
                        measured.aborted(context)
                        raise
                    except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
                        measured.code = "INTERNAL"
                        log.exception("%s: unhandled error in %s", service, method)
                        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                        await context.abort(
                            grpc.StatusCode.INTERNAL,
                            f"{service}: internal error ({type(exc).__name__})",
                        )
            finally:
                measured.done()
                otel_context.detach(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


Registrar = Callable[[grpc.aio.Server], Sequence[str]]
#: What keeps a service from working, one line each; empty when it can work.
Readiness = Callable[[], Sequence[str]]
#: How often readiness is checked for health watchers between Checks.
READINESS_INTERVAL = 2.0


class ReadinessHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service, NOT_SERVING while ``readiness`` lists a problem."""

    def __init__(self, name: str, readiness: Readiness | None) -> None:
        super().__init__()
        self._name = name
        self._readiness = readiness
        self._services: list[str] = [""]
        self._problems: tuple[str, ...] = ()

    async def serve(self, service_names: Sequence[str]) -> None:
        self._services = ["", *service_names]
        await self.refresh(force=True)

    async def refresh(self, force: bool = False) -> None:
        """Run the readiness check; publish the status when it changed."""
        problems: tuple[str, ...] = ()
        if self._readiness is not None:
            try:
                problems = tuple(await asyncio.to_thread(self._readiness))
            except Exception as exc:  # noqa: BLE001 - a failing check means not ready
                problems = (f"readiness check failed ({type(exc).__name__})",)
        if problems == self._problems and not force:
            return
        if problems:
            log.error("%s: not serving: %s", self._name, "; ".join(problems))
        elif self._problems:
            log.info("%s: serving again", self._name)
        self._problems = problems
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if problems
            else health_pb2.HealthCheckResponse.SERVING
        )
        for service in self._services:
            await self.set(service, status)

    async def problems(self) -> tuple[str, ...]:
        """The latest readiness check's problems: a layer refuses calls it cannot answer
        soundly. No I/O: :meth:`watch_readiness` and every health Check keep it fresh."""
        return self._problems

    async def watch_readiness(self, interval: float = READINESS_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    async def Check(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)


async def start_server(
    name: str,
    listen: str,
    register: Registrar,
    credentials: grpc.ServerCredentials | None = None,
    readiness: Readiness | None = None,
) -> tuple[grpc.aio.Server, ReadinessHealth, int]:
    """Build and start a server; ``register`` adds servicers and returns their full names.

    ``listen`` is HOST:PORT or ``unix:/path``. With ``credentials`` (mutual
    TLS, see :mod:`pullguard.services.runtime.tls`) no plaintext port is opened.
    With ``readiness``, health says NOT_SERVING and calls are refused while it fails.
    """
    health_servicer = ReadinessHealth(name, readiness)
    interceptor = ServiceInterceptor(name, health_servicer.problems if readiness else None)
    server = grpc.aio.server(interceptors=[interceptor], options=GRPC_OPTIONS)
    service_names = list(register(server))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = _add_port(server, listen, credentials)
    if port == 0:
        raise PullguardError(f"{name}: cannot listen on {listen}")
    # Readiness is known before the first call, which reads it without checking.
    await health_servicer.serve(service_names)
    await server.start()
    return server, health_servicer, port


def _add_port(
    server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None
) -> int:
    """The bound port (1 for a Unix socket), or 0 when the address cannot be bound."""
    try:
        if credentials is None:
            return int(server.add_insecure_port(listen))
        return int(server.add_secure_port(listen, credentials))
    except RuntimeError:
        # grpcio raises instead of returning 0 when binding fails (its log names the errno).
        return 0


async def start_health_server(
    listen: str, health_servicer: health.aio.HealthServicer
) -> grpc.aio.Server:
    """A plaintext server that answers only the health service.

    Kubernetes' gRPC probes cannot present a client certificate, so a layer
    serving mutual TLS gives them this port: it shares the layer's health
    state and carries no other service.
    """
    server = grpc.aio.server(options=GRPC_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if _add_port(server, listen, None) == 0:
        raise PullguardError(f"health: cannot listen on {listen}")
    await server.start()
    return server


async def serve_forever(
    name: str,
    listen: str,
    register: Registrar,
    grace: float = 5.0,
    on_started: Callable[[int], None] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    health_listen: str | None = None,
    readiness: Readiness | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain: NOT_SERVING first, then stop with grace."""
    server, health_servicer, port = await start_server(
        name, listen, register, credentials, readiness
    )
    watcher = asyncio.create_task(health_servicer.watch_readiness())
    health_server = None
    if health_listen is not None:
        health_server = await start_health_server(health_listen, health_servicer)
        log.info("%s answers health checks in plaintext on %s", name, health_listen)
    log.info(
        "%s listening on %s (port %d, %s)",
        name,
        listen,
        port,
        "mutual TLS" if credentials is not None else "plaintext",
    )
    if on_started is not None:
        on_started(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("%s shutting down", name)
    watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    if on_stopping is not None:
        await on_stopping()
    await server.stop(grace)
    if health_server is not None:
        await health_server.stop(grace)
