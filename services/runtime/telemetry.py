"""OpenTelemetry set-up and trace-context propagation over gRPC metadata.

One trace per pull: the gateway opens the root span, every layer call is a
child span, and the W3C ``traceparent`` travels in gRPC metadata so each
service's server span joins the same trace. The exporter is chosen in the
configuration: none, console or otlp.

The OTLP exporter is left to the SDK's standard ``OTEL_*`` environment
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``_HEADERS``, ``_CERTIFICATE``,
``_INSECURE``, ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``...): only
``telemetry.endpoint``, when the configuration names one, is passed on, and a
bare ``host:port`` there means plaintext (``http://``) as it always did.

A span that carried a verdict (a layer call, a pull) gets the verdict's
outcome and finding codes as attributes (:func:`annotate_verdict`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span

from pullguard.services.runtime.config import Telemetry
from pullguard.services.runtime.protoconv import verdict_allows
from pullguard.v1 import common_pb2

_configured = False


def setup_telemetry(settings: Telemetry, service_name: str) -> None:
    """Install the tracer provider once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    trace.set_tracer_provider(build_provider(settings, service_name))


def build_provider(settings: Telemetry, service_name: str) -> TracerProvider:
    """A tracer provider exporting as configured; sampling and resource come from ``OTEL_*``."""
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"pullguard-{service_name}", "service.namespace": "pullguard"}
        )
    )
    exporter = build_exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def build_exporter(settings: Telemetry) -> SpanExporter | None:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=otlp_endpoint(settings.endpoint))
    return None


def otlp_endpoint(configured: str) -> str | None:
    """The endpoint to hand the OTLP exporter: None leaves it to ``OTEL_*``."""
    if not configured:
        return None
    return configured if "://" in configured else f"http://{configured}"


#: Finding codes put on one span, at most (a verdict may carry many).
MAX_SPAN_CODES = 50


def annotate_verdict(span: Span, decision: str, codes: Iterable[str]) -> None:
    """``pullguard.outcome`` and ``pullguard.finding_codes`` on ``span``."""
    span.set_attribute("pullguard.outcome", decision)
    unique = sorted(set(codes))[:MAX_SPAN_CODES]
    if unique:
        span.set_attribute("pullguard.finding_codes", unique)


def annotate_response(span: Span, response: object) -> str:
    """Annotate ``span`` with the verdict a layer's response carries; return its
    decision ("ALLOW", "DENY", or "" for a response without a verdict)."""
    verdict = getattr(response, "verdict", None)
    if not isinstance(verdict, common_pb2.Verdict):
        return ""
    decision = "ALLOW" if verdict_allows(verdict) else "DENY"
    annotate_verdict(span, decision, (f.code for f in verdict.findings))
    return decision


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
