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
from pullguard.gateway.clients import LayerClients
from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.frontdoor import FrontDoor
from pullguard.gateway.fsck import log_reconciled, reconcile
from pullguard.gateway.grpc_api import GatewayServicer, register
from pullguard.gateway.httpserver import DoorRunner
from pullguard.gateway.publish import Publisher
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.gateway.target import RegistryTarget
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.main import run_process
from pullguard.services.runtime.resources import raise_open_file_limit
from pullguard.services.runtime.server import serve_forever
from pullguard.services.runtime.staging import StagingStore

log = logging.getLogger("pullguard.gateway")


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def build_pipeline(config: Config) -> tuple[Pipeline, DecisionLog, AdmittedStore, Quarantine]:
    state: Path = config.state_dir
    decisions = DecisionLog(state)
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
    clients = LayerClients(config.services, config.limits.layer_timeout, config.services_tls)
    publisher = None
    if config.target.kind == "registry":
        publisher = Publisher(
            config.target,
            RegistryTarget(config.target, config.limits),
            admitted,
            decisions,
            config.limits,
        )
    pipeline = Pipeline(config, clients, decisions, admitted, quarantine, staging, publisher)
    return pipeline, decisions, admitted, quarantine


def run_gateway(config: Config) -> None:
    """Serve the gateway until SIGINT/SIGTERM, telemetry on, as every service runs."""
    run_process("gateway", config, lambda: serve_gateway(config))


async def serve_gateway(config: Config) -> None:
    """Serve until SIGINT/SIGTERM: NOT_SERVING, then the front door, then gRPC drain."""
    pipeline, decisions, admitted, quarantine = build_pipeline(config)
    ratelog.install()
    raise_open_file_limit()
    front = FrontDoor(pipeline, decisions, admitted)
    limits = config.limits
    runner = DoorRunner(
        front.app(),
        max_connections=limits.max_connections,
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    host, port = split_hostport(config.listen)
    site = web.TCPSite(runner, host, port, shutdown_timeout=5.0)
    await site.start()
    servicer = GatewayServicer(pipeline, decisions, quarantine)

    def started(_grpc_port: int) -> None:
        log.info("gateway: front door on http://%s, gRPC on %s", config.listen, config.grpc_listen)

    try:
        await serve_forever(
            "gateway",
            config.grpc_listen,
            lambda server: register(server, servicer),
            on_started=started,
            on_stopping=runner.cleanup,
        )
    finally:
        await pipeline.clients.close()
        if pipeline.publisher is not None:
            await pipeline.publisher.close()
        decisions.close()
