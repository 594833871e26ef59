"""Traces of a pull (issue 11 part 2): the layer spans carry the verdict's
outcome and finding codes, and a denied pull's span has an error status.

A real analysis service on a real grpc.aio server answers the gateway's real
layer clients; spans go to an in-memory exporter on the process's provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import generate_latest

from pullguard.gateway.app import build_pipeline
from pullguard.gateway.observe import GatewayMetrics, PullObserver
from pullguard.services.analysis.servicer import register
from pullguard.services.runtime.config import LAYERS
from pullguard.services.runtime.server import start_server
from tests.support.configs import make_config


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def test_a_denied_pull_is_an_error_span_and_its_layer_span_names_the_codes(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    config = make_config(
        tmp_path,
        policy={"rules": [{"match": "lab/**", "signature": "none"}], "deny": ["**/evil/**"]},
    )
    server, _health, port = await start_server(
        "analysis", "127.0.0.1:0", lambda s: register(s, config)
    )
    # Only analysis is asked: the name is refused before any upstream traffic.
    addresses = {layer: f"unix:{tmp_path}/{layer}.sock" for layer in LAYERS}
    addresses["analysis"] = f"127.0.0.1:{port}"
    observer = PullObserver(GatewayMetrics())
    pipeline, decisions, _admitted, _quarantine = build_pipeline(
        config.with_services(addresses), observer
    )
    try:
        result = await pipeline.pull("lab/team/evil/app", "v1")
        assert await pipeline.repository_of("lab/team/app") == "lab/team/app"
    finally:
        await pipeline.clients.close()
        decisions.close()
        await server.stop(None)
    assert result.report.outcome == "denied"

    (pull,) = [
        s for s in _named(spans, "pull") if s.attributes["pullguard.name"] == "lab/team/evil/app"
    ]  # type: ignore[index]
    assert pull.status.status_code is StatusCode.ERROR
    assert pull.attributes["pullguard.outcome"] == "denied"  # type: ignore[index]
    assert pull.attributes["pullguard.finding_codes"] == ("analysis.denied_repository",)  # type: ignore[index]
    assert pull.attributes["pullguard.denied_by"] == "analysis"  # type: ignore[index]

    denied_call, allowed_call = _named(spans, "analysis.Plan")[-2:]
    assert denied_call.parent is not None and denied_call.parent.span_id == pull.context.span_id
    assert denied_call.attributes["pullguard.outcome"] == "DENY"  # type: ignore[index]
    assert denied_call.attributes["pullguard.finding_codes"] == ("analysis.denied_repository",)  # type: ignore[index]
    assert allowed_call.attributes["pullguard.outcome"] == "ALLOW"  # type: ignore[index]

    # The analysis service's own span joins the trace and says the same.
    served = _named(spans, "/pullguard.v1.Analysis/Plan")[-2]
    assert served.context.trace_id == pull.context.trace_id
    assert served.attributes["pullguard.outcome"] == "DENY"  # type: ignore[index]
    assert served.attributes["pullguard.finding_codes"] == ("analysis.denied_repository",)  # type: ignore[index]

    # The observer counted it (the metrics of this pipeline's own registry).
    exposition = generate_latest(observer.metrics.registry).decode()
    assert 'pullguard_pulls_total{kind="pull",layer="analysis",outcome="denied"} 1.0' in exposition
    assert "pullguard_pulls_in_flight 0.0" in exposition
