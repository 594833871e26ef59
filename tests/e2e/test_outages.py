"""Outage is not denial, on real processes: `pullguard up`, docker-registry, skopeo.

A layer that is down (SIGKILL), hung (SIGSTOP past ``limits.layer_timeout``),
crashing (INTERNAL) or not ready (its health NOT_SERVING) turns a pull into a
503 UNAVAILABLE with Retry-After, `pullguard check` into exit 2, and the
decision into an outage that names the layer: no quarantine entry, nothing
cached. An upstream 404 is 404 MANIFEST_UNKNOWN. While the upstream is down,
a tag is served from its last admitted digest, with a Warning, unless the
upstream says ``offline_tags: refuse`` or the digest is no longer admitted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullguard.gateway.supervisor import grpc_healthy
from pullguard.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support.images import BuiltImage, build_image, pull, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, pullguard_command

StartPullguard = Callable[..., Pullguard]
MANIFEST = "/v2/lab/team/app/manifests/v1"
ROOT = Path(__file__).resolve().parents[2]


def _image(tmp_path: Path) -> BuiltImage:
    return build_image(tmp_path / "src", "v1", random_layers(2, 32 * 1024, seed=7))


def _pushed(upstream: RegistryProcess, tmp_path: Path) -> BuiltImage:
    image = _image(tmp_path)
    push(image, upstream.address, "team/app")
    return image


def _decision(pg: Pullguard, decision_id: str) -> dict[str, Any]:
    listed = pg.cli("decisions", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["decision_id"]: row for row in json.loads(listed.stdout)}
    return rows[decision_id]


def _assert_outage(pg: Pullguard, response: httpx.Response, layer: str, kind: str) -> None:
    """503 UNAVAILABLE, Retry-After, recorded as an outage of ``layer``, nothing quarantined."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and error["message"].startswith(layer), error
    row = _decision(pg, error["detail"]["decision"])
    assert row["outcome"] == "outage" and row["decision"] == "OUTAGE", row
    assert row["outage"]["layer"] == layer and row["outage"]["kind"] == kind, row
    assert row["transient"] is True and row["admitted"] is False
    text = pg.cli("decisions")
    assert f"outage of {layer}" in text.stdout, text.stdout
    with grpc.insecure_channel(pg.config["grpc_listen"]) as channel:
        listed = gateway_pb2_grpc.GatewayStub(channel).ListDecisions(
            gateway_pb2.ListDecisionsRequest(limit=10), timeout=30
        )
    (proto,) = [d for d in listed.decisions if d.decision_id == row["decision_id"]]
    assert (proto.outcome, proto.outage_layer, proto.outage_kind) == ("outage", layer, kind)
    assert proto.decision == common_pb2.DECISION_UNSPECIFIED and proto.transient
    quarantine = pg.cli("quarantine", "list", "--json")
    assert quarantine.returncode == 0 and json.loads(quarantine.stdout) == [], quarantine.stdout


def _check_exits_2(pg: Pullguard, layer: str) -> None:
    checked = pg.cli("check", "lab/team/app:v1", "--json")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["outcome"] == "outage" and report["outage"]["layer"] == layer, report


def _layer_pid(pg: Pullguard, layer: str) -> int:
    return int(pg.services[layer]["pid"])


@contextlib.contextmanager
def _replacement(
    command: list[str], address: str, serving: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """A process we start on a layer's address; stopped by its pid afterwards."""
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _health(address) != serving:
            assert process.poll() is None, "replacement layer exited"
            assert time.monotonic() < deadline, "replacement layer not healthy"
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _health(address: str) -> bool | None:
    """True SERVING, False another status, None no answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        except grpc.RpcError:
            return None
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A zombie until `up` reaps it: it no longer listens either way.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive")


def _stack_without(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path, layer: str
) -> tuple[Pullguard, str]:
    """A stack whose ``layer`` process was SIGKILLed; and that layer's address."""
    _pushed(upstream, tmp_path)
    # Without --no-restart, `up` would start the layer again on its address.
    pg = pullguard_factory(upstream.url, up_args=("--no-restart",))
    pid = _layer_pid(pg, layer)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    return pg, str(pg.config["services"][layer])


def test_killed_layer_is_a_503_outage_and_a_restarted_layer_serves_again(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, address = _stack_without(upstream, pullguard_factory, tmp_path, "format")

    response = pg.get(MANIFEST)
    _assert_outage(pg, response, "format", "layer_unavailable")
    pulled = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out", "v1")
    assert pulled.returncode != 0
    assert "503" in pulled.stderr or "UNAVAILABLE" in pulled.stderr, pulled.stderr
    _check_exits_2(pg, "format")
    # The outage was not cached: once the layer is back on its address, the
    # gateway reconnects and the same pull is verified and admitted.
    command = [*pullguard_command(), "serve", "format", "--listen", address]
    with _replacement([*command, "--config", str(pg.config_path)], address):
        pulled = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "again", "v1")
        assert pulled.returncode == 0, pulled.stderr + pg.log()


def test_hung_layer_past_layer_timeout_is_a_503_outage(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    _pushed(upstream, tmp_path)
    pg = pullguard_factory(upstream.url, limits={"layer_timeout": 2.0})
    # A check (which admits nothing) connects the gateway to every layer; a
    # process stopped after that holds the connection and never answers.
    assert pg.cli("check", "lab/team/app:v1").returncode == 0
    pid = _layer_pid(pg, "hashverify")
    os.kill(pid, signal.SIGSTOP)
    try:
        response = pg.get(MANIFEST)
        _assert_outage(pg, response, "hashverify", "layer_timeout")
        _check_exits_2(pg, "hashverify")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert pg.get(MANIFEST).status_code == 200


def test_crashing_layer_is_a_503_outage(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, address = _stack_without(upstream, pullguard_factory, tmp_path, "source")
    with _replacement(
        [sys.executable, "-m", "tests.support.fake_source", "crash", address], address
    ):
        response = pg.get(MANIFEST)
        _assert_outage(pg, response, "source", "layer_error")
        assert "RuntimeError" in response.json()["errors"][0]["message"]
        _check_exits_2(pg, "source")
    assert not (pg.state_dir / "admitted" / "index.json").read_text().count("team/app")


def test_gateway_does_not_ask_a_layer_that_reports_not_serving(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, address = _stack_without(upstream, pullguard_factory, tmp_path, "source")
    fake = [sys.executable, "-m", "tests.support.fake_source", "not-serving", address]
    with _replacement(fake, address, serving=False):
        # `check` admits nothing, so a pull the fake allowed is not served from cache later.
        deadline = time.monotonic() + 30
        while True:
            checked = pg.cli("check", "lab/team/app:v1", "--json")
            report = json.loads(checked.stdout)
            if report.get("outage", {}).get("kind") == "layer_not_serving":
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.2)
        assert checked.returncode == 2 and report["outage"]["layer"] == "source", report
        _assert_outage(pg, pg.get(MANIFEST), "source", "layer_not_serving")


def test_upstream_404_is_manifest_unknown(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg = pullguard_factory(upstream.url)
    response = pg.get("/v2/lab/team/missing/manifests/v1")
    assert response.status_code == 404, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "MANIFEST_UNKNOWN", error
    row = _decision(pg, error["detail"]["decision"])
    assert row["outcome"] == "outage" and row["outage"]["kind"] == "not_found", row
    assert row["denied_by"] == "" and row["decision"] != "DENY"
    blob = pg.get(f"/v2/lab/team/missing/blobs/sha256:{'a' * 64}")
    assert blob.status_code == 404 and blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    checked = pg.cli("check", "lab/team/missing:v1")
    assert checked.returncode == 2, checked.stdout + checked.stderr


def _health_is(address: str, serving: bool) -> None:
    deadline = time.monotonic() + 30
    while grpc_healthy(address) != serving:
        assert time.monotonic() < deadline, f"{address} never became serving={serving}"
        time.sleep(0.1)


def _outage_pull(pg: Pullguard, kind: str) -> httpx.Response:
    """A pull once the gateway has seen the layer's new health (it asks every second).

    Pulls before that are outages too (the layer fails when called), of
    another kind; each is read back from the audit log.
    """
    deadline = time.monotonic() + 30
    while True:
        response = pg.get(MANIFEST)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        decision = response.json()["errors"][0]["detail"]["decision"]
        audit = (pg.state_dir / "audit.jsonl").read_text().splitlines()
        (row,) = [r for r in map(json.loads, audit) if r["decision_id"] == decision]
        if row["outage"]["kind"] == kind:
            return response
        time.sleep(0.2)


def test_layer_without_its_staging_store_is_not_serving_and_a_503(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    _pushed(upstream, tmp_path)
    pg = pullguard_factory(upstream.url)
    assert pg.get(MANIFEST).status_code == 200  # the gateway watches every layer now
    staging = pg.state_dir / "staging"
    staging.rename(pg.state_dir / "staging.away")
    staging.write_text("not a directory")  # root ignores modes: a file in its place
    fetcher = pg.config["services"]["fetcher"]
    _health_is(fetcher, serving=False)
    assert grpc_healthy(pg.config["services"]["analysis"])  # analysis needs no staging

    response = _outage_pull(pg, "layer_not_serving")
    _assert_outage(pg, response, "fetcher", "layer_not_serving")

    staging.unlink()
    _health_is(fetcher, serving=True)
    deadline = time.monotonic() + 30
    while (response := pg.get(MANIFEST)).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def test_layer_without_its_deny_file_is_not_serving_and_a_503(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    _pushed(upstream, tmp_path)
    deny_file = tmp_path / "deny.txt"
    deny_file.write_text("# known-bad digests\n")
    pg = pullguard_factory(
        upstream.url,
        policy={
            "rules": [{"match": "lab/**", "signature": "none"}],
            "deny_digests_file": str(deny_file),
        },
    )
    assert pg.get(MANIFEST).status_code == 200
    deny_file.unlink()
    _health_is(pg.config["services"]["hashverify"], serving=False)
    _health_is(pg.config["services"]["analysis"], serving=False)
    response = _outage_pull(pg, "layer_not_serving")
    deny_file.write_text("# back, so that the CLI can load the configuration\n")
    _assert_outage(pg, response, "analysis", "layer_not_serving")


def _admitted_then_offline(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path, **extra: Any
) -> tuple[Pullguard, BuiltImage]:
    """lab/team/app:v1 pulled (admitted) through a new stack, then the upstream stopped."""
    image = _pushed(upstream, tmp_path)
    pg = pullguard_factory(upstream.url, **extra)
    first = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "first", "v1")
    assert first.returncode == 0, first.stderr
    upstream.stop()  # by its pid: the registry process is ours
    return pg, image


def test_upstream_down_serves_a_tags_last_admitted_digest_with_a_warning(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, image = _admitted_then_offline(upstream, pullguard_factory, tmp_path)

    response = pg.get(MANIFEST, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert response.headers["Warning"] == (
        f'299 - "pullguard: upstream unreachable; serving last admitted digest {image.digest}"'
    )
    row = _decision(pg, response.headers["X-Pullguard-Decision"])
    assert row["outcome"] == "outage" and row["outage"]["kind"] == "stale_tag", row
    pulled = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "offline", "v1")
    assert pulled.returncode == 0, pulled.stderr


def test_upstream_down_with_offline_tags_refuse_is_a_502(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    refuse = {"lab": {"url": upstream.url, "insecure": True, "offline_tags": "refuse"}}
    pg, image = _admitted_then_offline(upstream, pullguard_factory, tmp_path, upstreams=refuse)
    response = pg.get(MANIFEST)
    assert response.status_code in (502, 504), response.text
    assert "Warning" not in response.headers
    row = _decision(pg, response.json()["errors"][0]["detail"]["decision"])
    assert row["outcome"] == "outage" and row["outage"]["kind"].startswith("upstream_"), row
    # By digest, admitted content is served whatever the setting.
    assert pg.get(f"/v2/lab/team/app/manifests/{image.digest}").status_code == 200


def test_upstream_down_never_serves_a_digest_the_current_policy_has_not_admitted(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    pg, image = _admitted_then_offline(upstream, pullguard_factory, tmp_path)
    # A new policy version: nothing is admitted under it until verified again.
    pg.stop()
    pg.config["policy"]["rules"][0]["layers"] = {"setuid": "deny"}
    pg.config_path.write_text(yaml.safe_dump(pg.config))
    pg.start()
    response = pg.get(MANIFEST)
    assert response.status_code in (502, 504), response.text
    assert "Warning" not in response.headers
