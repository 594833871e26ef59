"""Issue 11 (4): admin tokens and roles on the gRPC ``Gateway`` service, end to end.

``pullguard up`` with ``auth.admin_tokens``: a call without a token, or with
an unknown one, is UNAUTHENTICATED; a viewer reads but may not release,
admit or re-evaluate; an operator releases, and the release records the
token's name, never a name the caller sends. Without admin tokens the gRPC
listener refuses to start beyond loopback. Real registry, skopeo, cosign.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from pullguard.gateway.auth.tokens import entry_line, new_token
from pullguard.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.cosign import cosign_binary, generate_key_pair
from tests.support.images import build_image, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, free_port, pullguard_command, write_config

StartPullguard = Callable[..., Pullguard]
REASON = "vendor image without signatures; reviewed in SEC-1234"


def _admins(tmp_path: Path) -> tuple[Path, str, str]:
    operator, viewer = new_token(), new_token()
    path = tmp_path / "admins.yaml"
    path.write_text(
        entry_line("alice", "operator", operator) + "\n" + entry_line("view.bot", "viewer", viewer)
    )
    return path, operator, viewer


def _call(pg: Pullguard, method: str, request: Any, token: str | None = None) -> Any:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(pg.config["grpc_listen"]) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        return getattr(stub, method)(request, metadata=metadata, timeout=120)


def _code(pg: Pullguard, method: str, request: Any, token: str | None = None) -> str:
    try:
        _call(pg, method, request, token)
    except grpc.RpcError as exc:
        return str(exc.code().name)  # type: ignore[attr-defined]
    return "OK"


@pytest.fixture
def quarantined(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> tuple[Pullguard, str, str, str]:
    """A stack with admin tokens and one unsigned image denied by a key rule."""
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    _, pub = generate_key_pair(tmp_path / "alice")
    admins, operator, viewer = _admins(tmp_path)
    image = build_image(tmp_path / "src", "v1", random_layers(2, 32 * 1024, seed=41))
    push(image, upstream.address, "vendor/app")
    pg = pullguard_factory(
        upstream.url,
        policy={"rules": [{"match": "lab/**", "signature": {"keys": [str(pub)]}}]},
        auth={"admin_tokens": str(admins)},
    )
    denied = pg.get("/v2/lab/vendor/app/manifests/v1")
    assert denied.status_code == 403, denied.text
    return pg, str(denied.json()["errors"][0]["detail"]["decision"]), operator, viewer


def test_every_gateway_method_needs_a_token_and_the_right_role(
    quarantined: tuple[Pullguard, str, str, str],
) -> None:
    pg, entry, operator, viewer = quarantined
    read = gateway_pb2.ListDecisionsRequest(limit=10)
    reads = (
        ("ListDecisions", read),
        ("ListQuarantine", gateway_pb2.ListQuarantineRequest()),
        ("ShowQuarantine", gateway_pb2.ShowQuarantineRequest(id=entry)),
        ("Check", gateway_pb2.CheckRequest(reference="lab/vendor/app:v1")),
    )
    for method, request in reads:
        for token in (None, "pgt_not-a-token", operator + "x"):
            assert _code(pg, method, request, token) == "UNAUTHENTICATED", (method, token)
    listed = _call(pg, "ListDecisions", read, viewer)
    assert entry in [d.decision_id for d in listed.decisions]
    quarantine = _call(pg, "ListQuarantine", gateway_pb2.ListQuarantineRequest(), viewer)
    assert [e.id for e in quarantine.entries] == [entry]
    show = gateway_pb2.ShowQuarantineRequest(id=entry)
    assert json.loads(_call(pg, "ShowQuarantine", show, viewer).report_json)["decision_id"] == entry
    check = gateway_pb2.CheckRequest(reference="lab/vendor/app:v1")
    assert json.loads(_call(pg, "Check", check, viewer).report_json)["decision"] == "DENY"

    release = gateway_pb2.ReleaseQuarantineRequest(id=entry, reason=REASON)
    for method, request in (
        ("ReleaseQuarantine", release),
        ("Admit", check),
        ("Reevaluate", gateway_pb2.ReevaluateRequest()),
    ):
        assert _code(pg, method, request, viewer) == "PERMISSION_DENIED", method
        assert _code(pg, method, request) == "UNAUTHENTICATED", method
    # Nothing was released, admitted or revoked by the refused calls.
    assert _call(pg, "ListQuarantine", gateway_pb2.ListQuarantineRequest(), viewer).entries


def test_a_release_records_the_tokens_name_never_a_typed_one(
    quarantined: tuple[Pullguard, str, str, str],
) -> None:
    pg, entry, operator, _ = quarantined
    typed = gateway_pb2.ReleaseQuarantineRequest(id=entry, reason=REASON, operator="mallory")
    with pytest.raises(grpc.RpcError) as caught:
        _call(pg, "ReleaseQuarantine", typed, operator)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "the operator recorded is the token's name" in caught.value.details()  # type: ignore[attr-defined]
    assert not (pg.state_dir / "quarantine" / entry / "release.json").exists()

    # The CLI sends the token from the environment, and no name of its own.
    released = subprocess.run(
        [*pullguard_command(), "quarantine", "release", entry, "--reason", REASON, "--config"]
        + [str(pg.config_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PULLGUARD_TOKEN": operator, "USER": "mallory", "LOGNAME": "mallory"},
    )
    assert released.returncode == 0, released.stdout + released.stderr + pg.log()
    assert "by alice:" in released.stdout
    record = json.loads((pg.state_dir / "quarantine" / entry / "release.json").read_text())
    assert record["decision"] == "ALLOW"
    assert record["release"]["operator"] == "alice"
    assert operator not in pg.log()


def test_the_cli_without_a_token_is_refused(quarantined: tuple[Pullguard, str, str, str]) -> None:
    pg, _, _, viewer = quarantined
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLGUARD_TOKEN")}
    command = [*pullguard_command(), "check", "lab/vendor/app:v1", "--config", str(pg.config_path)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2
    assert "an admin token is required" in refused.stderr
    allowed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**env, "PULLGUARD_TOKEN": viewer}
    )
    assert allowed.returncode == 1, allowed.stderr  # denied: signature.missing
    assert "signature.missing" in allowed.stdout


def _start(tmp_path: Path, command: str, **extra: Any) -> subprocess.CompletedProcess[str]:
    path, config = write_config(tmp_path, "http://127.0.0.1:1", **extra)
    args = [*pullguard_command(), command]
    if command == "serve":
        args += ["gateway", "--listen", config["listen"], "--grpc-listen", config["grpc_listen"]]
    process = subprocess.Popen(
        [*args, "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # it started: the refusal is missing
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("command", ["up", "serve"])
def test_grpc_beyond_loopback_without_admin_tokens_refuses_to_start(
    tmp_path: Path, command: str
) -> None:
    # Refused before anything binds: no traffic leaves loopback.
    done = _start(tmp_path, command, grpc_listen=f"0.0.0.0:{free_port()}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "grpc_listen: 0.0.0.0:" in done.stderr
    assert "is beyond loopback, but no auth.admin_tokens are set" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "up.json").exists()


def test_pull_logins_over_plain_http_beyond_loopback_refuse_to_start(tmp_path: Path) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (tmp_path / "p.htpasswd").write_text(f"alice:{hashed}\n")
    done = _start(tmp_path, "up", listen=f"0.0.0.0:{free_port()}", auth={"htpasswd": "p.htpasswd"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "auth.htpasswd over plain HTTP would send passwords in clear text" in done.stderr
