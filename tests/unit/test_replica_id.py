"""``replica_id``: the name of a gateway replica's own staging folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullguard.services.runtime.config import parse_config
from pullguard.services.runtime.errors import ConfigError, StagingError
from pullguard.services.runtime.staging import StagingStore

BASE = "upstreams: {lab: {url: 'http://127.0.0.1:5001', insecure: true}}\n"


def _replica(text: str) -> str:
    return parse_config(BASE + text, "test.yaml", Path("/tmp")).replica_id


def test_the_file_names_the_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULLGUARD_REPLICA_ID", "from-env")
    assert _replica("replica_id: gw-1\n") == "gw-1"


def test_the_environment_names_it_when_the_file_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULLGUARD_REPLICA_ID", "pullguard-gateway-7d9f")
    assert _replica("") == "pullguard-gateway-7d9f"


def test_the_host_name_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULLGUARD_REPLICA_ID", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "Build_Host.example")
    assert _replica("") == "build_host.example"


@pytest.mark.parametrize("bad", ["../x", "a/b", "UPPER", ".hidden", "", "x" * 64])
def test_a_name_that_is_not_one_folder_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="replica_id"):
        _replica(f"replica_id: {bad!r}\n")


def test_sessions_stay_inside_their_replica_folder(tmp_path: Path) -> None:
    staging = StagingStore(tmp_path)
    assert staging.session_dir("gw-1/" + "a" * 32) == tmp_path / "gw-1" / ("a" * 32)
    for bad in ("../" + "a" * 32, "gw-1/../x", "a/b/c", "/abs"):
        with pytest.raises(Exception, match="invalid staging session"):
            staging.session_dir(bad)


def test_a_replica_id_held_by_another_gateway_is_refused(tmp_path: Path) -> None:
    first = StagingStore(tmp_path / "staging")
    first.claim_replica("gw-1")
    second = StagingStore(tmp_path / "staging")
    with pytest.raises(StagingError, match="'gw-1' is in use by another gateway"):
        second.claim_replica("gw-1")
    second.claim_replica("gw-2")  # another id is free
