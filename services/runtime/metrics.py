"""Prometheus metrics: this process's registry, the layer RPC metrics, ``GET /metrics``.

Every metric is named ``pullguard_*`` and lives in a registry of this
process (:data:`PROCESS_REGISTRY`), never in prometheus_client's global
one, so that a test process running several servers in-process gets no
clash. Labels are bounded: service and method names, gRPC codes, decisions;
never a digest, repository name or anything a client chose (:func:`bounded`).

A layer service serves its metrics on ``metrics_listen.<layer>`` (see
:func:`start_metrics_server`); the gateway serves its own on
``console_listen`` (:mod:`pullguard.gateway.console`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

#: The registry of this process: layer RPC metrics, the fetcher's upstream metrics.
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

#: Latency buckets (seconds) from a cached pull (ms) to a large image (minutes).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

LAYER_REQUESTS = Counter(
    "pullguard_layer_requests",
    "Calls a layer service answered, by method and gRPC status code.",
    ("service", "method", "code"),
    registry=PROCESS_REGISTRY,
)
LAYER_VERDICTS = Counter(
    "pullguard_layer_verdicts",
    "Verdicts a layer service returned, by method and decision (ALLOW or DENY).",
    ("service", "method", "decision"),
    registry=PROCESS_REGISTRY,
)
LAYER_SECONDS = Histogram(
    "pullguard_layer_request_duration_seconds",
    "Time a layer service took to answer a call.",
    ("service", "method"),
    buckets=SECONDS_BUCKETS,
    registry=PROCESS_REGISTRY,
)

_LABEL_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,80}")


def bounded(value: str, fallback: str = "other") -> str:
    """A label value from a fixed vocabulary, or ``fallback`` for anything else.

    The values passed here are already bounded (finding codes, method names,
    statuses); this keeps a surprise from growing the series without bound.
    """
    return value if _LABEL_RE.fullmatch(value) else fallback


def method_label(full_method: str) -> str:
    """``/pullguard.v1.Fetcher/FetchBlobs`` -> ``FetchBlobs``."""
    return bounded(full_method.rsplit("/", 1)[-1])


def exposition(registries: Sequence[CollectorRegistry]) -> bytes:
    """The Prometheus text format of every metric in ``registries``."""
    return b"".join(generate_latest(registry) for registry in registries)


def metrics_handler(
    registries: Sequence[CollectorRegistry],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``GET /metrics``: collected in a thread (a collector may read a database)."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        body = await asyncio.to_thread(exposition, registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def metrics_app(registries: Sequence[CollectorRegistry]) -> web.Application:
    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics_handler(registries))
    return app


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def start_http(app: web.Application, listen: str) -> web.AppRunner:
    """Serve ``app`` on HOST:PORT; the caller cleans the runner up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    host, port = split_hostport(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def start_metrics_server(listen: str) -> web.AppRunner:
    """A layer's ``/metrics`` on ``listen`` (HOST:PORT), from this process's registry."""
    return await start_http(metrics_app([PROCESS_REGISTRY]), listen)


class CallMetrics:
    """One layer call being measured: its status code, verdict and duration."""

    def __init__(self, service: str, full_method: str) -> None:
        self.service = bounded(service)
        self.method = method_label(full_method)
        self.code = "CANCELLED"  # until answered or failed otherwise
        self._started = time.monotonic()

    def answered(self, decision: str) -> None:
        self.code = "OK"
        if decision:
            LAYER_VERDICTS.labels(self.service, self.method, decision).inc()

    def aborted(self, context: object) -> None:
        """The servicer aborted the call itself: the code it set, if it tells."""
        code = getattr(context, "code", None)
        status = code() if callable(code) else None
        name = getattr(status, "name", None)
        self.code = bounded(name) if isinstance(name, str) else "UNKNOWN"

    def done(self) -> None:
        LAYER_REQUESTS.labels(self.service, self.method, self.code).inc()
        LAYER_SECONDS.labels(self.service, self.method).observe(time.monotonic() - self._started)
