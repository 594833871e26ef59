"""``services.LAYER``: one address, a list of replicas, or ``dns:///NAME:PORT``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullguard.gateway.supervisor import Stack
from pullguard.services.runtime.config import Config, parse_config
from pullguard.services.runtime.errors import ConfigError, PullguardError

BASE = "upstreams: {lab: {url: 'http://127.0.0.1:5001', insecure: true}}\n"


def _config(source: str) -> Config:
    return parse_config(f"{BASE}services:\n  source: {source}\n", "test.yaml", Path("/tmp"))


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("127.0.0.1:7001", "127.0.0.1:7001"),
        ("['127.0.0.1:7001']", "127.0.0.1:7001"),
        ("['127.0.0.1:7001', '127.0.0.2:7001']", "ipv4:127.0.0.1:7001,127.0.0.2:7001"),
        ("['[::1]:7001', '[::1]:7002']", "ipv6:[::1]:7001,[::1]:7002"),
        ("dns:///source.pullguard.svc:50051", "dns:///source.pullguard.svc:50051"),
    ],
)
def test_replicas_become_one_grpc_target(given: str, target: str) -> None:
    assert _config(given).services["source"] == target


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("['source-0:7001', 'source-1:7001']", "for a name use dns:///source-0:7001"),
        ("['127.0.0.1:7001', '[::1]:7001']", "mixes IPv4 and IPv6"),
        ("[]", "must list 1 to 64"),
        ("dns://8.8.8.8/source:7001", "no DNS authority"),
        ("dns:///source", "HOST:PORT"),
        ("['127.0.0.1:7001', 7]", "source[1]"),
    ],
)
def test_a_bad_replica_list_is_refused_by_name(given: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="services.source") as raised:
        _config(given)
    assert problem in str(raised.value)


def test_up_refuses_a_replicated_layer(tmp_path: Path) -> None:
    config = _config("['127.0.0.1:7001', '127.0.0.2:7001']")
    with pytest.raises(PullguardError, match="pullguard serve LAYER"):
        Stack.plan(config, None)
