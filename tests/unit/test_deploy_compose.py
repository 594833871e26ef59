"""deploy/compose.yaml, as Debian's docker-compose resolves it (`config`
validates it against the compose schema): the same image for every service,
PostgreSQL and a registry target, the layers on a network with no way out
but fetcher's, and credentials only where they are used."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullguard.services.runtime.config import LAYERS, load_config
from tests.support.shared import REPO

COMPOSE = REPO / "deploy" / "compose.yaml"
PULLGUARD = [f"pullguard-{s}" for s in (*LAYERS, "gateway")]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: run make system-deps"
    done = subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert isinstance(resolved, dict)
    return resolved


def _config(service: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The host file a service reads as --config, and its contents."""
    command = service["command"]
    inside = command[command.index("--config") + 1]
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == inside:
            path = Path(source)
            loaded = yaml.safe_load(path.read_text())
            assert isinstance(loaded, dict)
            return path, loaded
    raise AssertionError(f"{inside} is not mounted")


def test_one_image_for_every_service_started_with_serve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*PULLGUARD, "reevaluate", "postgres", "registry"}
    images = {services[name]["image"] for name in [*PULLGUARD, "reevaluate"]}
    assert images == {"localhost/pullguard:latest"}
    for name in PULLGUARD:
        assert services[name]["command"][:2] == ["serve", name.removeprefix("pullguard-")]
    assert services["reevaluate"]["command"][0] == "reevaluate"


def test_every_pullguard_container_is_hardened(compose: dict[str, Any]) -> None:
    for name in [*PULLGUARD, "reevaluate"]:
        service = compose["services"][name]
        assert service["user"] == "65532:65532", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_only_fetcher_and_the_gateway_have_a_network_with_a_way_out(
    compose: dict[str, Any],
) -> None:
    networks = compose["networks"]
    closed = {name for name, spec in networks.items() if (spec or {}).get("internal")}
    assert closed == {"internal"}
    for name, service in compose["services"].items():
        outside = set(service["networks"]) - closed
        expected = {"pullguard-fetcher": {"egress"}, "pullguard-gateway": {"front"}}
        assert outside == expected.get(name, set()), name
    # The gateway publishes on loopback unless the operator says otherwise.
    published = compose["services"]["pullguard-gateway"]["ports"]
    assert all(p.startswith("127.0.0.1:") for p in published), published


def test_the_gateway_uses_postgresql_and_the_registry_service_as_target(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    _, gateway = _config(services["pullguard-gateway"])
    assert gateway["database"]["url"].startswith("postgresql://pullguard@postgres:5432/")
    assert gateway["target"]["kind"] == "registry"
    assert gateway["target"]["url"] == "http://registry:5000"
    assert services["registry"]["environment"]["REGISTRY_HTTP_ADDR"] == "0.0.0.0:5000"
    assert "postgres" in services["pullguard-gateway"]["depends_on"]
    # The layers read the same configuration without database and target.
    for layer in LAYERS:
        _, config = _config(services[f"pullguard-{layer}"])
        assert {k: v for k, v in gateway.items() if k not in ("database", "target")} == config
    # Both load (TLS files are checked by their own tests).
    for name in ("pullguard-gateway", "pullguard-analysis"):
        _, config = _config(services[name])
        config.pop("services_tls")
        if "database" in config:  # the Secret compose mounts, here a file of the test's own
            secret = tmp_path / "database-password"
            secret.write_text("secret\n")
            config["database"]["password_file"] = str(secret)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert set(load_config(path).services) == set(LAYERS)


def test_the_database_password_reaches_only_who_uses_it(compose: dict[str, Any]) -> None:
    holders = {
        name
        for name, service in compose["services"].items()
        if any(s["source"] == "database-password" for s in service.get("secrets", []))
    }
    assert holders == {"pullguard-gateway", "reevaluate", "postgres"}


def test_every_pullguard_service_shares_one_staging_volume(compose: dict[str, Any]) -> None:
    for name in PULLGUARD:
        volumes = compose["services"][name]["volumes"]
        if name == "pullguard-vulnerability":
            # It judges the inventory the gateway sends, never a staged byte.
            assert not any(v.startswith("staging:") for v in volumes)
            continue
        assert "staging:/var/lib/pullguard/staging:rw" in volumes, name
