"""The gateway process: HTTP front door plus the gRPC Gateway service.

It starts like every service: :func:`~pullguard.services.runtime.main.run_process`
(telemetry set up and shut down) around
:func:`~pullguard.services.runtime.server.serve_forever` (health, reflection,
interceptor, signals, drain), with the front door started beside the gRPC
server and stopped in its ``on_stopping`` hook.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from pullguard.gateway import ratelog
from pullguard.gateway.auth.door import protect
from pullguard.gateway.auth.exposure import check_exposure
from pullguard.gateway.auth.tokens import Authorizer
from pullguard.gateway.clients import LayerClients
from pullguard.gateway.console import ConsoleContext, start_console
from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.frontdoor import FrontDoor
from pullguard.gateway.fsck import log_reconciled, reconcile
from pullguard.gateway.gc import schedule as gc_schedule
from pullguard.gateway.grpc_api import GatewayServicer, register
from pullguard.gateway.httpserver import DoorRunner
from pullguard.gateway.notify.sender import outbox_for, start_sender
from pullguard.gateway.observe import (
    GatewayMetrics,
    LayerHealth,
    PullObserver,
    StoreSizes,
    access_log,
    access_log_class,
)
from pullguard.gateway.publish import Publisher
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.main import run_process
from pullguard.services.runtime.metrics import PROCESS_REGISTRY, split_hostport
from pullguard.services.runtime.resources import raise_open_file_limit
from pullguard.services.runtime.server import serve_forever
from pullguard.services.runtime.staging import StagingStore

log = logging.getLogger("pullguard.gateway")


def layer_clients(config: Config) -> LayerClients:
    """The gateway's clients of the configured layer services."""
    return LayerClients(config.services, config.limits.layer_timeout, config.services_tls)


def build_pipeline(
    config: Config, observer: PullObserver | None = None, clients: LayerClients | None = None
) -> tuple[Pipeline, DecisionLog, AdmittedStore, Quarantine]:
    state: Path = config.state_dir
    decisions = DecisionLog(state, config.database)
    decisions.notify_to(outbox_for(config))
    admitted = AdmittedStore(state / "admitted")
    # What a crash left half-done: audit lines, index.json, temporary files.
    log_reconciled(reconcile(decisions, admitted))
    quarantine = Quarantine(state / "quarantine")
    # Whatever this replica's crash left in its own staging folder was never
    # admitted and is not trusted now, so it goes before the first pull.
    # Other replicas' folders (their pulls in flight) are not touched.
    staging = StagingStore(state / "staging")
    if config.replica_id:
        staging.claim_replica(config.replica_id)
        staging.clear_replica(config.replica_id)
    if clients is None:
        clients = layer_clients(config)
    publisher = Publisher.for_target(config, admitted, decisions)
    pipeline = Pipeline(
        config, clients, decisions, admitted, quarantine, staging, publisher, observer
    )
    return pipeline, decisions, admitted, quarantine


def run_gateway(config: Config) -> None:
    """Serve the gateway until SIGINT/SIGTERM, telemetry on, as every service runs."""
    for warning in check_exposure(config):
        log.warning("gateway: %s", warning)
    run_process("gateway", config, lambda: serve_gateway(config))


async def serve_gateway(config: Config) -> None:
    """Serve until SIGINT/SIGTERM: NOT_SERVING, then the front door, then gRPC drain."""
    metrics = GatewayMetrics()
    observer = PullObserver(metrics)
    clients = layer_clients(config)
    # Checked from now on: the first pull does not wait for the layers' connections.
    clients.watch_health()
    pipeline, decisions, admitted, quarantine = build_pipeline(config, observer, clients)
    metrics.registry.register(
        StoreSizes(
            lambda: len(decisions.list_quarantine()),
            lambda: len(decisions.admission_map()),
            admitted.root / "blobs",
        )
    )
    metrics.registry.register(LayerHealth(clients.serving))
    notifier = start_sender(config, decisions, metrics.registry)
    ratelog.install()
    raise_open_file_limit()
    console = None
    if config.console_listen is not None:
        console = await start_console(
            config.console_listen,
            ConsoleContext(
                registries=(metrics.registry, PROCESS_REGISTRY),
                decisions=decisions,
                quarantine=quarantine,
                pipeline=pipeline,
                authorizer=Authorizer(config.auth.admin_tokens),
            ),
            admin_tokens=bool(config.auth.admin_tokens),
            source=config.source,
        )
    attester = pipeline.store.attester
    # While pullguard signs, the .sig/.att tags at its front door are its own
    # (with a registry target, none: they are served by the target).
    front = FrontDoor(pipeline, decisions, admitted, attester.local if attester else None)
    app = front.app()
    door = protect(app, config)
    limits = config.limits
    runner = DoorRunner(
        app,
        max_connections=limits.max_connections,
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        access_log=access_log,
        access_log_class=access_log_class(observer),
        handle_signals=False,
    )
    await runner.setup()
    host, port = split_hostport(config.listen)
    site = web.TCPSite(runner, host, port, shutdown_timeout=5.0, ssl_context=door.ssl_context)
    await site.start()
    door.reload_on_sighup()
    authorizer = Authorizer(config.auth.admin_tokens)
    servicer = GatewayServicer(pipeline, decisions, quarantine, authorizer)

    def started(_grpc_port: int) -> None:
        log.info(
            "gateway: front door on %s://%s, gRPC on %s",
            door.scheme,
            config.listen,
            config.grpc_listen,
        )
        if config.console_listen is not None:
            log.info("gateway: console and /metrics on http://%s", config.console_listen)

    async def stopping() -> None:
        await runner.cleanup()
        if console is not None:
            await console.cleanup()

    gc_task = gc_schedule.start(config.retention, decisions, admitted, quarantine)
    try:
        await serve_forever(
            "gateway",
            config.grpc_listen,
            lambda server: register(server, servicer),
            on_started=started,
            on_stopping=stopping,
        )
    finally:
        if notifier is not None:
            await notifier.stop()
        await gc_schedule.stop(gc_task)
        await pipeline.clients.close()
        if pipeline.publisher is not None:
            await pipeline.publisher.close()
        decisions.close()
