"""Issue 11 parts 1 and 2 without a stack: the new configuration keys, the
scrubbing of secrets from log lines, the JSON log form, the console's refusal
to listen beyond loopback, and the OTLP exporter left to ``OTEL_*``."""

from __future__ import annotations

import io
import json
import logging
import socket
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pullguard.gateway.console import ConsoleContext, refuse_open_bind, start_console
from pullguard.gateway.observe import LayerHealth, logged_path, step_label
from pullguard.services.runtime.config import ConfigErrors, LogSettings, Telemetry
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.logs import JsonFormatter, TextFormatter, fields, scrub
from pullguard.services.runtime.telemetry import build_exporter, build_provider, otlp_endpoint
from tests.support.configs import make_config


def _errors(tmp_path: Path, **overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, **overrides)
    error = caught.value
    errors = error.errors if isinstance(error, ConfigErrors) else [error]
    return "\n".join(e.message for e in errors)


def test_new_keys_default_to_no_console_no_layer_metrics_and_text_logs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.console_listen is None
    assert dict(config.metrics_listen) == {}
    assert config.logging == LogSettings(format="text", level="info")


def test_new_keys_are_read(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        console_listen="127.0.0.1:5080",
        metrics_listen={"fetcher": "127.0.0.1:9102"},
        log_format="json",
        log_level="DEBUG",
    )
    assert config.console_listen == "127.0.0.1:5080"
    assert dict(config.metrics_listen) == {"fetcher": "127.0.0.1:9102"}
    assert config.logging == LogSettings(format="json", level="debug")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"console_listen": "5080"}, "console_listen: must be HOST:PORT"),
        ({"metrics_listen": {"gateway": "127.0.0.1:1"}}, "metrics_listen.gateway: unknown key"),
        ({"metrics_listen": {"fetcher": "nowhere"}}, "metrics_listen.fetcher: must be HOST:PORT"),
        ({"metrics_listen": ["127.0.0.1:1"]}, "metrics_listen"),
        ({"log_format": "xml"}, "log_format: must be text or json, got 'xml'"),
        ({"log_level": "loud"}, "log_level: must be one of debug, info, warning, error"),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    message = _errors(tmp_path, **overrides)
    assert "pullguard.yaml" in message
    assert expected in message


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /v2/x/manifests/1?access_token=s3cr3tvalue&n=1", "s3cr3tvalue"),
        ("redirect to https://cdn/blob?X-Amz-Signature=abcdef123&x=1", "abcdef123"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9"),
        ('{"authorization": "Basic cHVsbGVyOnNlY3JldA=="}', "cHVsbGVyOnNlY3JldA"),
        ("sent bearer abcdefghijklmnop to the realm", "abcdefghijklmnop"),
        ("upstream https://puller:hunter2@registry.example.com/v2/", "hunter2"),
        ("token realm https://auth/token?service=x&password=pw123456", "pw123456"),
    ],
)
def test_scrub_removes_credentials(line: str, secret: str) -> None:
    cleaned = scrub(line)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_scrub_keeps_ordinary_lines() -> None:
    line = "GET /v2/lab/team/app/manifests/v1?n=5&last=v0 200 1234B 3.2ms client=127.0.0.1"
    assert scrub(line) == line


def test_logged_path_keeps_only_the_pull_apis_query_values() -> None:
    request = make_mocked_request("GET", "/v2/lab/app/tags/list?n=5&last=v1&token=abc&flag")
    assert logged_path(request) == "/v2/lab/app/tags/list?n=5&last=v1&token=[redacted]&flag"


def test_step_label_drops_what_the_step_looked_at() -> None:
    assert step_label("attestations sha256:" + "a" * 64) == "attestations"
    assert step_label("staged digests") == "staged_digests"
    assert step_label("FetchManifest") == "FetchManifest"


def _record(message: str, **values: object) -> logging.LogRecord:
    logger = logging.getLogger("pullguard.test")
    return logger.makeRecord(
        "pullguard.test", logging.INFO, __file__, 1, "%s", (message,), None, extra=fields(**values)
    )


def test_json_lines_carry_fields_and_are_scrubbed() -> None:
    record = _record(
        "GET /v2/x?token=abcdef 200", event="access", path="/v2/x?token=abcdef", status=200
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "access" and line["status"] == 200
    assert line["level"] == "info" and line["logger"] == "pullguard.test"
    assert line["path"] == "/v2/x?token=[redacted]"
    assert "abcdef" not in json.dumps(line)


def test_text_lines_are_scrubbed() -> None:
    text = TextFormatter().format(_record("Authorization: Bearer abcdefghijkl"))
    assert "abcdefghijkl" not in text and "pullguard.test: Authorization: [redacted]" in text


def test_log_level_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    from pullguard.services.runtime import logs

    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    root = logging.getLogger()
    level = root.level
    try:
        logs.configure_logging(LogSettings(format="json", level="warning"))
        logging.getLogger("pullguard.test").info("not shown")
        logging.getLogger("pullguard.test").warning("shown")
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == "pullguard":
                root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["shown"]


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:5080", "192.168.1.10:5080", "console.example.com:5080", "[::]:5080"]
)
def test_console_refuses_beyond_loopback_without_admin_tokens(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        refuse_open_bind(listen, admin_tokens=False, source="pullguard.yaml")
    assert "pullguard.yaml: console_listen:" in caught.value.message
    assert "auth.admin_tokens" in caught.value.message
    refuse_open_bind(listen, admin_tokens=True, source="pullguard.yaml")


@pytest.mark.parametrize("listen", ["127.0.0.1:5080", "127.0.0.2:5080", "localhost:5080"])
def test_console_listens_on_loopback(listen: str) -> None:
    refuse_open_bind(listen, admin_tokens=False, source="pullguard.yaml")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_console_serves_metrics_of_its_registries() -> None:
    registry = CollectorRegistry()
    Counter("pullguard_example", "An example.", registry=registry).inc(3)
    port = _free_port()
    runner = await start_console(
        f"127.0.0.1:{port}",
        ConsoleContext(registries=(registry,)),
        admin_tokens=False,
        source="pullguard.yaml",
    )
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await runner.cleanup()
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["pullguard_example"].samples[0].value == 3


async def test_console_refuses_before_binding() -> None:
    with pytest.raises(ConfigError):
        await start_console(
            "0.0.0.0:1",
            ConsoleContext(registries=()),
            admin_tokens=False,
            source="pullguard.yaml",
        )


def test_otlp_endpoint_is_left_to_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.invalid:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k1")
    exporter = build_exporter(Telemetry(exporter="otlp"))
    try:
        assert exporter is not None
        assert exporter._endpoint == "collector.invalid:4317"  # type: ignore[attr-defined]
        assert exporter._insecure is False  # type: ignore[attr-defined]
        assert ("x-api-key", "k1") in tuple(exporter._headers)  # type: ignore[attr-defined]
    finally:
        exporter.shutdown()  # type: ignore[union-attr]


def test_a_configured_bare_endpoint_stays_plaintext() -> None:
    assert otlp_endpoint("") is None
    assert otlp_endpoint("127.0.0.1:4317") == "http://127.0.0.1:4317"
    assert otlp_endpoint("https://otel:4317") == "https://otel:4317"


def test_sampling_and_resource_come_from_otel_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=lab")
    provider = build_provider(Telemetry(), "fetcher")
    assert provider.sampler is ALWAYS_OFF
    attributes = provider.resource.attributes
    assert attributes["deployment.environment"] == "lab"
    assert attributes["service.name"] == "pullguard-fetcher"


def test_layer_health_is_one_only_for_a_layer_seen_serving() -> None:
    registry = CollectorRegistry()
    registry.register(LayerHealth(lambda: {"format": True, "source": False, "fetcher": False}))
    text = generate_latest(registry).decode()
    values = {
        sample.labels["layer"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pullguard_layer_serving"
    }
    assert values == {"format": 1.0, "source": 0.0, "fetcher": 0.0}
