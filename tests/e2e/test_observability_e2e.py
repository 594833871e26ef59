"""Issue 11, parts 1 and 2, on real parts: `pullguard up`, Debian's
docker-registry as upstream, skopeo as the client. After one allowed and one
denied pull, ``/metrics`` (gateway on ``console_listen``, layers on
``metrics_listen``) counts them, and the gateway's log has one access line per
request and one decision line per pull, as text and as JSON, with no secret."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pullguard.services.runtime.config import LAYERS
from tests.support.images import BuiltImage, build_image, pull, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, free_port, pullguard_command, write_config

StartPullguard = Callable[..., Pullguard]
#: What an operator would look at after the test: the gateway's /metrics text
#: and the stack's log after one allowed and one denied pull (not in git).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "observability"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> Samples:
    """Every sample of ``http://address/metrics``, parsed as Prometheus text."""
    response = httpx.get(f"http://{address}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    return sum(
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    )


def _image(tmp_path: Path) -> BuiltImage:
    return build_image(tmp_path / "src", "v1", random_layers(2, 64 * 1024, seed=11))


def _stack(
    tmp_path: Path, upstream: RegistryProcess, factory: StartPullguard, **extra: Any
) -> tuple[Pullguard, BuiltImage]:
    image = _image(tmp_path)
    push(image, upstream.address, "team/app")
    pg = factory(
        upstream.url,
        console_listen=f"127.0.0.1:{free_port()}",
        metrics_listen={
            "fetcher": f"127.0.0.1:{free_port()}",
            "analysis": f"127.0.0.1:{free_port()}",
        },
        **extra,
    )
    return pg, image


def _outcomes(pg: Pullguard) -> dict[str, int]:
    """Decisions the gateway recorded, by outcome (what the metrics must agree with)."""
    listed = pg.cli("decisions", "--json")
    assert listed.returncode == 0, listed.stderr
    counts: dict[str, int] = {}
    for decision in json.loads(listed.stdout):
        counts[decision["outcome"]] = counts.get(decision["outcome"], 0) + 1
    return counts


def _stack_log(pg: Pullguard) -> str:
    """What ``pullguard up`` and every process it started wrote."""
    return pg.log()


def test_metrics_count_an_allowed_and_a_denied_pull(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, image = _stack(tmp_path, upstream, pullguard_factory)
    console = pg.config["console_listen"]
    fetcher = pg.config["metrics_listen"]["fetcher"]
    analysis = pg.config["metrics_listen"]["analysis"]
    before, fetched_before, planned_before = scrape(console), scrape(fetcher), scrape(analysis)

    allowed = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out" / "app", "v1")
    assert allowed.returncode == 0, allowed.stderr
    denied = pull(f"{pg.address}/lab/team/evil/app:v1", tmp_path / "out" / "evil", "v1")
    assert denied.returncode != 0
    assert "denied" in denied.stderr.lower()

    after, fetched, planned = scrape(console), scrape(fetcher), scrape(analysis)
    recorded = _outcomes(pg)
    assert recorded.get("allowed", 0) >= 1 and recorded.get("denied", 0) >= 1, recorded

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Pulls by outcome and deciding layer: exactly what the gateway recorded.
    assert (
        delta("pullguard_pulls_total", kind="pull", outcome="allowed", layer="none")
        == (recorded["allowed"])
    )
    assert (
        delta("pullguard_pulls_total", kind="pull", outcome="denied", layer="analysis")
        == (recorded["denied"])
    )
    assert total(after, "pullguard_pulls_total", outcome="outage") == 0
    # Findings by code; latency histograms per pull and per layer step.
    assert (
        delta(
            "pullguard_findings_total",
            layer="analysis",
            code="analysis.denied_repository",
            severity="ERROR",
        )
        == recorded["denied"]
    )
    assert (
        delta("pullguard_pull_duration_seconds_count", kind="pull", outcome="allowed")
        == (recorded["allowed"])
    )
    for layer in ("analysis", "fetcher", "format", "hashverify", "source", "signature"):
        assert total(after, "pullguard_layer_step_duration_seconds_count", layer=layer) >= 1, layer
    assert value(after, "pullguard_pulls_in_flight") == 0
    # What the front door served, and the stores.
    blob_bytes = sum(len(b) for b in (image.config, *image.layers))
    assert delta("pullguard_served_bytes_total", kind="blob") >= blob_bytes
    assert delta("pullguard_served_bytes_total", kind="manifest") >= len(image.manifest)
    assert delta("pullguard_frontdoor_requests_total", method="GET", status="403") >= 1
    assert value(after, "pullguard_admitted_images") == 1
    assert value(after, "pullguard_admitted_bytes") >= blob_bytes + len(image.manifest)
    assert value(after, "pullguard_quarantine_entries") == 0
    # The gateway's own gRPC service is measured like every layer.
    assert ("pullguard_layer_requests_total", ()) not in after

    # The fetcher: requests to the upstream by alias and status, bytes read.
    requests_200 = value(fetched, "pullguard_upstream_requests_total", upstream="lab", status="200")
    requests_200 -= value(
        fetched_before, "pullguard_upstream_requests_total", upstream="lab", status="200"
    )
    assert requests_200 >= 4  # manifest, config, two layers
    read = value(fetched, "pullguard_upstream_fetched_bytes_total", upstream="lab") - value(
        fetched_before, "pullguard_upstream_fetched_bytes_total", upstream="lab"
    )
    assert read >= blob_bytes + len(image.manifest)
    # The analysis layer: calls answered and the verdicts it gave.
    plans = total(planned, "pullguard_layer_requests_total", service="analysis", code="OK")
    plans -= total(planned_before, "pullguard_layer_requests_total", service="analysis", code="OK")
    assert plans >= 2
    denials = total(planned, "pullguard_layer_verdicts_total", service="analysis", decision="DENY")
    assert denials >= 1

    # Bounded labels: no digest, repository name or reference anywhere.
    for samples in (after, fetched, planned):
        for _name, labels in samples:
            for _key, label in labels:
                assert "sha256" not in label and "team" not in label, label

    # A request aiohttp cannot parse is answered by the door and logged too.
    host, port = pg.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        assert b" 400 " in sock.recv(4096).split(b"\r\n", 1)[0]

    # Its access line is written once the answer is sent: wait for it (bounded).
    for _ in range(100):
        if "pullguard.access: OTHER / 400 " in _stack_log(pg):
            break
        time.sleep(0.1)

    # One decision line per recorded pull, one access line per request.
    log = _stack_log(pg)
    assert "Traceback" not in log, log[-3000:]
    decision_lines = [line for line in log.splitlines() if "pullguard.decision: decision " in line]
    assert len(decision_lines) == sum(recorded.values()), decision_lines
    allowed_line = next(line for line in decision_lines if " pull allowed " in line)
    assert "layer=none reference=lab/team/app:v1" in allowed_line
    assert f"digest={image.digest}" in allowed_line
    assert "client=127.0.0.1" in allowed_line
    denied_line = next(line for line in decision_lines if " pull denied " in line)
    assert "layer=analysis reference=lab/team/evil/app:v1" in denied_line
    assert "findings=analysis.denied_repository" in denied_line
    access = [line for line in log.splitlines() if "pullguard.access: " in line]
    assert any("GET /v2/lab/team/app/manifests/v1 200 " in line for line in access), access
    assert any("GET /v2/lab/team/evil/app/manifests/v1 403 " in line for line in access), access
    assert any("OTHER / 400 " in line for line in access), access
    served = [line for line in access if "/blobs/" in line and " 200 " in line]
    assert len(served) >= 3 and all("client=127.0.0.1 user=-" in line for line in served)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "metrics.txt").write_text(httpx.get(f"http://{console}/metrics", timeout=30).text)
    (ARTIFACTS / "gateway.log").write_text(log)


def test_json_logs_carry_the_fields_and_no_secret(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, image = _stack(tmp_path, upstream, pullguard_factory, log_format="json")
    secret_query, secret_header = "query-secret-6f1d2c", "header-secret-9a8b7c6d"
    response = pg.get(
        f"/v2/lab/team/app/manifests/v1?access_token={secret_query}&n=5",
        headers={
            "Authorization": f"Bearer {secret_header}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        },
    )
    assert response.status_code == 200, response.text
    denied = pg.get(f"/v2/lab/team/evil/app/manifests/v1?password={secret_query}")
    assert denied.status_code == 403

    lines = []
    for line in _stack_log(pg).splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    access = [line for line in lines if line.get("event") == "access"]
    decisions = [line for line in lines if line.get("event") == "decision"]
    allowed = next(d for d in decisions if d["outcome"] == "allowed")
    assert allowed["reference"] == "lab/team/app:v1"
    assert allowed["digest"] == image.digest
    assert allowed["layer"] == "none" and allowed["findings"] == []
    assert allowed["client"] == "127.0.0.1" and allowed["kind"] == "pull"
    assert len(allowed["decision"]) == 32 and allowed["duration_ms"] >= 0
    refused = next(d for d in decisions if d["outcome"] == "denied")
    assert refused["layer"] == "analysis"
    assert refused["findings"] == ["analysis.denied_repository"]
    manifest_line = next(a for a in access if "/manifests/" in a["path"] and a["status"] == 200)
    assert manifest_line["method"] == "GET"
    assert manifest_line["path"] == ("/v2/lab/team/app/manifests/v1?access_token=[redacted]&n=5")
    assert manifest_line["bytes"] >= len(image.manifest)
    assert manifest_line["client"] == "127.0.0.1"
    assert {"time", "level", "logger", "message", "duration_ms", "user"} <= set(manifest_line)
    # No secret in any log of the stack.
    text = _stack_log(pg)
    assert secret_query not in text and secret_header not in text


def test_a_cli_commands_private_stack_opens_no_metrics_listener(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """`pullguard check` without a running gateway starts a private stack; it must
    not take (or fail on) the console and metrics addresses `up` listens on."""
    image = _image(tmp_path)
    push(image, upstream.address, "team/app")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        path, _config = write_config(
            tmp_path,
            upstream.url,
            console_listen=busy,
            metrics_listen={layer: busy for layer in ("analysis", "fetcher")},
        )
        checked = subprocess.run(
            [*pullguard_command(), "check", "lab/team/app:v1", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert checked.returncode == 0, checked.stderr


def test_the_gateway_checks_every_layer_from_its_start(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    """Before any pull, /metrics says each layer answered its health check.

    The checks (and so the layers' connections) start with the gateway, not
    with the first pull, which would otherwise wait for them.
    """
    pg, _ = _stack(tmp_path, upstream, pullguard_factory)
    console = pg.config["console_listen"]
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(console)
        serving = {
            dict(labels)["layer"]: v
            for (name, labels), v in samples.items()
            if name == "pullguard_layer_serving"
        }
        if set(serving) == set(LAYERS) and all(v == 1.0 for v in serving.values()):
            break
        assert time.monotonic() < deadline, f"layers not seen serving: {serving}"
        time.sleep(0.2)
    assert _outcomes(pg) == {}, "the test needs a gateway that has made no pull"
