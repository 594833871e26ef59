"""Publishing admitted images to a registry target (gateway/publish.py), in process.

The target is a real docker-registry on 127.0.0.1; the pipeline admits
through the typed ``LayerClients`` of test_pipeline_faults, and the
publisher pushes from the real admitted store with the real RegistryTarget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.publish import Publisher
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.errors import TargetError
from pullguard.services.runtime.staging import StagingStore
from tests.gateway.test_pipeline_faults import (
    CONFIG_BLOB,
    DIGEST,
    LAYER_BLOB,
    MANIFEST,
    FakeLayers,
    _digest,
)
from tests.support.configs import make_config
from tests.support.registry import registry  # noqa: F401 - a fixture
from tests.support.stack import free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Published:
    pipeline: Pipeline
    publisher: Publisher


@asynccontextmanager
async def _publishing(tmp_path: Path, target_url: str) -> AsyncIterator[Published]:
    config = make_config(tmp_path, target={"kind": "registry", "url": target_url, "insecure": True})
    state = config.state_dir
    staging = StagingStore(state / "staging")
    decisions = DecisionLog(state)
    admitted = AdmittedStore(state / "admitted")
    publisher = Publisher.for_target(config, admitted, decisions)
    assert publisher is not None
    quarantine = Quarantine(state / "quarantine")
    layers = FakeLayers(staging, {})
    pipeline = Pipeline(config, layers, decisions, admitted, quarantine, staging, publisher)
    try:
        yield Published(pipeline, publisher)
    finally:
        await publisher.close()


@pytest.fixture
async def target(tmp_path: Path, registry: str) -> AsyncIterator[Published]:  # noqa: F811
    async with _publishing(tmp_path, registry) as published:
        yield published


def _get(url: str) -> httpx.Response:
    return httpx.get(url, headers={"Accept": OCI_MANIFEST}, timeout=30)


async def test_an_admitted_image_is_in_the_target_byte_for_byte(
    target: Published,
    registry: str,  # noqa: F811
) -> None:
    result = await target.pipeline.pull("lab/app", "v1")
    assert result.allowed and result.report.admitted, result.report.as_json()
    published = result.report.target
    assert published["state"] == "published" and published["pushed"] == [DIGEST, "v1"]
    assert (published["blobs_uploaded"], published["blobs_present"]) == (2, 0)
    for reference in (DIGEST, "v1"):
        served = _get(f"{registry}/v2/lab/app/manifests/{reference}")
        assert served.status_code == 200 and served.content == MANIFEST
    for blob in (CONFIG_BLOB, LAYER_BLOB):
        assert _get(f"{registry}/v2/lab/app/blobs/{_digest(blob)}").content == blob

    # Served from the admitted store again: the target already has it all.
    again = await target.pipeline.pull("lab/app", "v1")
    assert again.allowed and again.report.cached
    assert again.report.target["pushed"] == []
    assert again.report.target["blobs_uploaded"] == 0


async def test_a_withdrawn_image_is_gone_from_the_target(
    target: Published,
    registry: str,  # noqa: F811
) -> None:
    assert (await target.pipeline.pull("lab/app", "v1")).allowed
    withdrawn = await target.publisher.withdraw("lab/app", DIGEST)
    assert sorted(withdrawn) == sorted([DIGEST, "v1"])
    assert _get(f"{registry}/v2/lab/app/manifests/{DIGEST}").status_code == 404
    assert await target.publisher.withdraw("lab/app", DIGEST) == []


async def test_admitted_bytes_that_changed_are_never_pushed(
    target: Published,
    registry: str,  # noqa: F811
) -> None:
    assert (await target.pipeline.pull("lab/app", "v1")).allowed
    path = target.pipeline.admitted.blob_path(DIGEST)
    path.write_bytes(MANIFEST.replace(b"layers", b"Layers"))
    with pytest.raises(TargetError, match="does not match its digest"):
        await target.publisher.publish("lab/app", DIGEST, OCI_MANIFEST, ["v2"], "v")
    assert _get(f"{registry}/v2/lab/app/manifests/v2").status_code == 404


async def test_a_target_that_is_down_makes_the_pull_an_outage_not_an_admission(
    tmp_path: Path,
) -> None:
    async with _publishing(tmp_path, f"http://127.0.0.1:{free_port()}") as down:
        result = await down.pipeline.pull("lab/app", "v1")
    assert isinstance(result.error, TargetError)
    assert result.report.outage["layer"] == "target"
    assert not result.report.admitted
    assert down.pipeline.decisions.admitted("lab/app", DIGEST, "v") is None
    (decision,) = down.pipeline.decisions.list_decisions(10)
    assert decision["decision"] == "OUTAGE"
