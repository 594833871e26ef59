"""The ``pullguard`` command as a newcomer meets it: no traceback ever, usage
errors exit 2, every --help states the exit codes, and a command that reads
state says which configuration it used. All through the installed command.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.support.stack import LAYERS, free_port, pullguard_command


def write_config(tmp_path: Path, **extra: object) -> Path:
    data: dict[str, object] = {
        "listen": f"127.0.0.1:{free_port()}",
        "grpc_listen": f"127.0.0.1:{free_port()}",
        "state_dir": str(tmp_path / "state"),
        # Nothing listens there: a check is an outage, which is enough to print a report.
        "upstreams": {"lab": {"url": f"http://127.0.0.1:{free_port()}", "insecure": True}},
        "policy": {"rules": [{"match": "lab/**", "signature": "none"}]},
    }
    data.update(extra)
    path = tmp_path / "pullguard.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PULLGUARD_CONFIG"}
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    done = subprocess.run(
        [*pullguard_command(), *args],
        text=True,
        timeout=180,
        cwd=cwd,
        env={**base, **(env or {})},
        **streams,  # type: ignore[call-overload]
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done  # type: ignore[no-any-return]


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    done = run(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"pullguard {metadata.version('pullguard')}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["up"],
        ["serve"],
        ["check"],
        ["admit"],
        ["reevaluate"],
        ["decisions"],
        ["quarantine"],
        ["policy"],
        ["verify-bundle"],
        ["gc"],
    ],
)
def test_every_help_states_the_exit_codes(tmp_path: Path, command: list[str]) -> None:
    done = run(tmp_path, *command, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "exit status: 0 " in text
    assert " 2 " in text.split("exit status:")[1]


def test_quarantine_of_an_unknown_id_is_a_clear_error(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    unknown = "0123456789abcdef0123456789abcdef"
    for action in ("delete", "show"):
        done = run(tmp_path, "quarantine", action, unknown, "--config", config)
        assert done.returncode == 2
        assert f"no quarantine entry {unknown}" in done.stderr
        done = run(tmp_path, "quarantine", action, "../../etc", "--config", config)
        assert done.returncode == 2
        assert "invalid quarantine id" in done.stderr


@pytest.mark.parametrize(
    "ref", ["NOT A REF", "lab//app", "lab/app:bad tag", "lab/app@sha256:zz", "lab/App", ""]
)
def test_a_malformed_ref_is_a_usage_error_not_a_decision(tmp_path: Path, ref: str) -> None:
    config = str(write_config(tmp_path))
    done = run(tmp_path, "check", ref, "--config", config)
    assert done.returncode == 2
    assert "is not <alias>/<repository>[:tag|@digest]" in done.stderr or "empty" in done.stderr
    listed = run(tmp_path, "decisions", "--json", "--config", config)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    # Nothing was started to judge it either.
    assert not (tmp_path / "state" / "logs").exists()


@pytest.mark.parametrize("limit", ["0", "-1", "10001"])
def test_decisions_limit_out_of_range_is_an_error(tmp_path: Path, limit: str) -> None:
    done = run(tmp_path, "decisions", "--limit", limit, "--config", str(write_config(tmp_path)))
    assert done.returncode == 2
    assert f"--limit wants 1 to 10000, got {limit}" in done.stderr


def _closed_stdout(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = run(tmp_path, *args, stdout=write)
    finally:
        os.close(write)
    return done.returncode, done.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    code, stderr = _closed_stdout(tmp_path, "decisions", "--json", "--config", config)
    assert (code, stderr) == (0, "")
    # check: the verdict's exit status stands, without a word on stderr.
    expected = run(tmp_path, "check", "lab/app:v1", "--json", "--config", config)
    assert expected.returncode in (1, 2) and expected.stdout.startswith("{")
    code, stderr = _closed_stdout(tmp_path, "check", "lab/app:v1", "--json", "--config", config)
    assert (code, stderr) == (expected.returncode, "")
    # And as the issue has it, through a shell pipeline.
    shell = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" check lab/app:v1 --json --config "$1" | head -c 10']
        + [pullguard_command()[0], config],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shell.stdout == expected.stdout[:10]
    assert shell.stderr == "" and shell.returncode == expected.returncode


def _session_members(session: int) -> list[int]:
    """PIDs of live processes in ``session`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.parametrize("taken_key", ["listen", "grpc_listen", "services"])
def test_up_on_a_taken_port_names_it_and_leaves_no_process(tmp_path: Path, taken_key: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        value: object = {"analysis": taken} if taken_key == "services" else taken
        config = write_config(tmp_path, **{taken_key: value})
        process = subprocess.Popen(
            [*pullguard_command(), "up", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()
    assert process.returncode == 2
    assert "Traceback" not in stderr
    assert f"cannot listen on {taken}" in stderr and "already in use" in stderr.lower()
    assert "pullguard is up" not in stdout
    deadline = time.monotonic() + 10
    while _session_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_members(process.pid) == []


def test_commands_reading_state_say_which_configuration(tmp_path: Path) -> None:
    # No --config, no PULLGUARD_CONFIG: the built-in default, state under the current folder.
    done = run(tmp_path, "decisions")
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "using <built-in default configuration>" in lines[0]
    assert str(tmp_path / ".pullguard") in lines[0]
    # PULLGUARD_CONFIG names the file.
    config = write_config(tmp_path)
    done = run(tmp_path, "quarantine", "list", env={"PULLGUARD_CONFIG": str(config)})
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"pullguard: using {config} (from $PULLGUARD_CONFIG); state in {tmp_path / 'state'}"
    ]
    # --config wins over PULLGUARD_CONFIG, and says nothing.
    other = tmp_path / "other"
    other.mkdir()
    done = run(
        tmp_path,
        "decisions",
        "--config",
        str(write_config(other)),
        env={"PULLGUARD_CONFIG": str(tmp_path / "missing.yaml")},
    )
    assert (done.returncode, done.stderr) == (0, "")
    # A PULLGUARD_CONFIG that cannot be read is an error naming it.
    done = run(tmp_path, "decisions", env={"PULLGUARD_CONFIG": str(tmp_path / "missing.yaml")})
    assert done.returncode == 2 and "missing.yaml" in done.stderr


def test_check_without_a_running_stack_says_which_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = run(tmp_path, "check", "lab/app:v1", env={"PULLGUARD_CONFIG": str(config)})
    assert done.returncode in (1, 2)
    assert f"pullguard: using {config} (from $PULLGUARD_CONFIG)" in done.stderr


@pytest.mark.parametrize("service", ["analysis", "gateway"])
def test_serve_on_a_taken_or_malformed_address_is_a_clear_error(
    tmp_path: Path, service: str
) -> None:
    config = str(write_config(tmp_path))
    layers = [f"--service={layer}=127.0.0.1:1" for layer in LAYERS] if service == "gateway" else []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        done = run(tmp_path, "serve", service, "--listen", taken, "--config", config, *layers)
    assert done.returncode == 2
    assert f"cannot listen on {taken} (--listen)" in done.stderr
    done = run(tmp_path, "serve", service, "--listen", "nowhere", "--config", config, *layers)
    assert done.returncode == 2
    assert "--listen wants HOST:PORT, got 'nowhere'" in done.stderr
