"""The gateway's vulnerability step: format's layer inventories, merged, judged by the real layer.

Every other layer is the healthy fake of test_pipeline_faults; the
vulnerability layer is a real ``pullguard serve vulnerability`` process,
reached through the gateway's real LayerClients. The inventory is built
here: reading it from the layers' package databases is format's part; the
full-stack pull of a real Debian image is tests/e2e/test_vulnerability_pull.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.clients import LayerClients
from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.channels import open_channel
from pullguard.services.runtime.config import LAYERS
from pullguard.services.runtime.errors import LayerUnavailable
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import (
    analysis_pb2,
    common_pb2,
    inventory_pb2,
    vulnerability_pb2,
    vulnerability_pb2_grpc,
)
from tests.gateway.test_pipeline_faults import DIGEST, FakeLayers
from tests.support.configs import make_config
from tests.support.osv import fixture_records, osv_folder, vulnerability_layer, write_zip
from tests.support.stack import free_port

GATE = common_pb2.VulnerabilityPolicy(enabled=True, cvss_min=7.0, on_new="revoke")


def layer_inventory(xz_version: str) -> inventory_pb2.LayerInventory:
    """What format reads from a Debian trixie layer's var/lib/dpkg/status."""
    dpkg = inventory_pb2.PackageSource(
        path="var/lib/dpkg/status",
        kind="dpkg",
        packages=[
            inventory_pb2.Package(
                ecosystem="Debian",
                name="liblzma5",
                version=xz_version,
                source_name="xz-utils",
                purl=f"pkg:deb/debian/liblzma5@{xz_version}?arch=amd64",
            ),
            inventory_pb2.Package(ecosystem="Debian", name="base-files", version="13.5"),
        ],
    )
    release = inventory_pb2.OsRelease(path="etc/os-release", id="debian", version_id="13")
    return inventory_pb2.LayerInventory(index=0, sources=[dpkg], os_release=release)


class Layers(FakeLayers):
    """The fake layers, a plan with ``gate``, format reporting ``inventory``; the
    vulnerability layer is the real one behind ``real``."""

    def __init__(
        self,
        staging: StagingStore,
        real: LayerClients,
        inventory: inventory_pb2.LayerInventory | None,
        gate: common_pb2.VulnerabilityPolicy,
    ) -> None:
        super().__init__(staging, {})
        self.real, self.inventory, self.gate = real, inventory, gate
        self.calls: list[str] = []

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Any:
        self.calls.append(layer)
        if layer == "vulnerability":
            return await self.real.call(layer, method, request, timeout)
        response = await super().call(layer, method, request, timeout)
        if method == "Plan":
            assert isinstance(response, analysis_pb2.PlanResponse)
            response.plan.rule.vulnerabilities.CopyFrom(self.gate)
            if request.reference.startswith("sha256:"):  # a re-evaluation pulls by digest
                response.plan.ref.tag, response.plan.ref.digest = "", request.reference
        if method == "InspectLayers":
            stats = response.layers.add(index=0, completed=True)
            if self.inventory is not None:
                stats.inventory.CopyFrom(self.inventory)
        return response

    async def close(self) -> None:
        await self.real.close()


@pytest.fixture(scope="module")
def layer_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with vulnerability_layer(tmp_path_factory.mktemp("vulnerability")) as (address, _config):
        yield address


def pipeline(
    tmp_path: Path,
    address: str,
    xz_version: str,
    gate: common_pb2.VulnerabilityPolicy = GATE,
) -> tuple[Pipeline, Layers]:
    (tmp_path / "gateway").mkdir()
    config = make_config(tmp_path / "gateway")
    addresses = {name: "unix:/nonexistent/never-called.sock" for name in LAYERS}
    addresses["vulnerability"] = address
    real = LayerClients(addresses, default_timeout=60)
    staging = StagingStore(config.state_dir / "staging")
    layers = Layers(staging, real, layer_inventory(xz_version), gate)
    state = config.state_dir
    built = Pipeline(
        config,
        layers,
        DecisionLog(state),
        AdmittedStore(state / "admitted"),
        Quarantine(state / "quarantine"),
        staging,
    )
    return built, layers


async def test_an_image_with_a_vulnerable_package_is_denied_naming_the_cve(
    tmp_path: Path, layer_address: str
) -> None:
    built, layers = pipeline(tmp_path, layer_address, "5.6.0-0.2")
    result = await built.pull("lab/app", "v1")
    await layers.close()
    report = result.report.as_json()
    assert not result.allowed and result.error is None, report
    assert report["denied_by"] == "vulnerability"
    assert "CVE-2024-3094" in report["reason"] and "xz-utils (liblzma5)" in report["reason"]
    assert not built.admitted.has(DIGEST)
    # The decision records what the image held and what matched.
    [recorded] = built.decisions.list_decisions(1)
    assert {"name": "liblzma5", "ecosystem": "Debian:13"}.items() <= recorded["inventory"][
        0
    ].items()
    [match] = recorded["vulnerabilities"]["matches"]
    assert (match["id"], match["fixed_version"]) == ("DEBIAN-CVE-2024-3094", "5.6.1+really5.4.5-1")


async def test_the_same_image_with_the_fixed_version_is_admitted(
    tmp_path: Path, layer_address: str
) -> None:
    built, layers = pipeline(tmp_path, layer_address, "5.6.1+really5.4.5-1")
    result = await built.pull("lab/app", "v1")
    await layers.close()
    assert result.allowed, result.report.as_json()
    assert built.admitted.has(DIGEST) and "vulnerability" in layers.calls
    steps = [s["layer"] for s in result.report.as_json()["layers"]]
    assert "vulnerability" in steps


async def test_a_rule_without_a_gate_never_asks(tmp_path: Path, layer_address: str) -> None:
    built, layers = pipeline(
        tmp_path, layer_address, "5.6.0-0.2", gate=common_pb2.VulnerabilityPolicy()
    )
    result = await built.pull("lab/app", "v1")
    await layers.close()
    assert result.allowed and "vulnerability" not in layers.calls


async def test_the_vulnerability_layer_down_is_an_outage_never_an_admission(
    tmp_path: Path,
) -> None:
    built, layers = pipeline(tmp_path, f"127.0.0.1:{free_port()}", "5.6.1+really5.4.5-1")
    result = await built.pull("lab/app", "v1")
    await layers.close()
    assert isinstance(result.error, LayerUnavailable), result.report.as_json()
    assert result.report.as_json()["outage"]["layer"] == "vulnerability"
    assert not built.admitted.has(DIGEST)


async def test_a_layer_format_answered_without_its_inventory_is_not_an_empty_layer(
    tmp_path: Path, layer_address: str
) -> None:
    # A format replica that ignores the plan's inventory flag (an older one
    # in a rolling upgrade): the layer's packages are unknown, not absent.
    built, layers = pipeline(tmp_path, layer_address, "5.6.0-0.2")
    layers.inventory = None
    result = await built.pull("lab/app", "v1")
    await layers.close()
    [step] = [s for s in result.report.as_json()["layers"] if s["layer"] == "vulnerability"]
    codes = {(f["code"], f["evidence"].get("finding")) for f in step["findings"]}
    assert ("vulnerability.incomplete_inventory", "inventory.layer_not_inspected") in codes
    # What was not inspected cannot be shown clean: refused.
    assert not built.admitted.has(DIGEST)


@pytest.mark.parametrize(("on_new", "outcome"), [("revoke", "revoked"), ("warn", "current")])
async def test_a_cve_published_after_admission_revokes_on_reevaluation(
    tmp_path: Path, on_new: str, outcome: str
) -> None:
    gate = common_pb2.VulnerabilityPolicy(enabled=True, cvss_min=7.0, on_new=on_new)
    # The database knows no Debian advisory yet: the image is admitted.
    with vulnerability_layer(tmp_path, osv=str(osv_folder(tmp_path / "osv", ("npm",)))) as (
        address,
        _config,
    ):
        built, layers = pipeline(tmp_path, address, "5.6.0-0.2", gate)
        assert (await built.pull("lab/app", "v1")).allowed
        # `pullguard vulndb` swaps the Debian archive in; the layer reloads it.
        write_zip(tmp_path / ".Debian.zip", fixture_records("Debian"))
        os.replace(tmp_path / ".Debian.zip", tmp_path / "osv" / "Debian.zip")
        await wait_for_records(address, "Debian")
        fetches = layers.calls.count("fetcher")
        [seen] = await built.reevaluate(force=False, limit=10)
        await layers.close()
    assert seen.outcome == outcome, seen
    # Judged from the inventory recorded at admission: nothing fetched again.
    assert layers.calls.count("fetcher") == fetches
    [decision] = built.decisions.list_decisions(1)
    steps = [s for s in decision["layers"] if s["layer"] == "vulnerability"]
    assert steps and "CVE-2024-3094" in str(steps[0]["findings"])
    admission = built.decisions.admitted("lab/app", DIGEST, "v")
    if on_new == "revoke":
        assert seen.denied_by == "vulnerability" and admission is None
    else:
        assert admission is not None
        assert {f["severity"] for f in steps[0]["findings"] if "CVE" in f["message"]} == {"WARNING"}


async def wait_for_records(address: str, ecosystem: str) -> None:
    """Until the layer's database lists ``ecosystem`` (it rechecks its files every 5 s)."""
    channel = open_channel(address)
    try:
        stub = vulnerability_pb2_grpc.VulnerabilityStub(channel)
        for _ in range(120):
            status = await stub.DatabaseStatus(vulnerability_pb2.DatabaseStatusRequest())
            if ecosystem in {e.ecosystem for e in status.ecosystems}:
                return
            await asyncio.sleep(0.5)
    finally:
        await channel.close()
    raise AssertionError(f"the layer never loaded {ecosystem}")
