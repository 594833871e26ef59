"""The shared main of every service process: settings, servicer, serve."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc

from pullguard.services.runtime.config import Config, load_config
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.logs import configure_logging
from pullguard.services.runtime.metrics import start_metrics_server
from pullguard.services.runtime.readiness import readiness_for
from pullguard.services.runtime.server import serve_forever
from pullguard.services.runtime.telemetry import setup_telemetry, shutdown_telemetry
from pullguard.services.runtime.tls import server_credentials

Register = Callable[[grpc.aio.Server, Config], Sequence[str]]


def run_process(name: str, config: Config, serve: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``serve`` on a fresh event loop with telemetry set up, and shut telemetry down on exit.

    How every pullguard process runs, the gateway included (its spans are flushed).
    """
    setup_telemetry(config.telemetry, name)
    try:
        asyncio.run(serve())
    finally:
        shutdown_telemetry()


def run_service(
    name: str, register: Register, config: Config, listen: str, health_listen: str | None = None
) -> int:
    """Serve one layer until SIGINT/SIGTERM (mutual TLS when ``services_tls`` is set).

    Returns the process exit code."""
    credentials = server_credentials(config.services_tls) if config.services_tls else None

    async def serve() -> None:
        metrics_listen = config.metrics_listen.get(name)
        metrics = await start_metrics_server(metrics_listen) if metrics_listen else None
        try:
            await serve_forever(
                name,
                listen,
                lambda server: register(server, config),
                credentials=credentials,
                health_listen=health_listen,
                readiness=readiness_for(name, config),
            )
        finally:
            if metrics is not None:
                await metrics.cleanup()

    run_process(name, config, serve)
    return 0


def service_main(name: str, register: Register, argv: Sequence[str] | None = None) -> int:
    """``python -m pullguard.services.<name> --listen HOST:PORT [--config FILE]``."""
    parser = argparse.ArgumentParser(prog=f"pullguard-{name}")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pullguard: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging)
    return run_service(name, register, config, args.listen)
