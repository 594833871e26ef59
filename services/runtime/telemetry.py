"""OpenTelemetry set-up and trace-context propagation over gRPC metadata.

One trace per pull: the gateway opens the root span, every layer call is a
child span, and the W3C ``traceparent`` travels in gRPC metadata so each
service's server span joins the same trace. The exporter is chosen in the
configuration: none, console or otlp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from pullguard.services.runtime.config import Telemetry

_configured = False


def setup_telemetry(settings: Telemetry, service_name: str) -> None:
    """Install the tracer provider once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"pullguard-{service_name}", "service.namespace": "pullguard"}
        )
    )
    exporter: SpanExporter | None = None
    if settings.exporter == "console":
        exporter = ConsoleSpanExporter()
    elif settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.endpoint, insecure=True)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def shutdown_telemetry() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(f"pullguard.{name}")


def inject_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata pairs."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def extract_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> object:
    carrier: Mapping[str, str] = {
        key: value if isinstance(value, str) else value.decode("latin-1")
        for key, value in (metadata or ())
    }
    return propagate.extract(carrier)
