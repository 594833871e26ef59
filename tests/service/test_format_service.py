"""The format layer through a real grpc.aio server on port 0 and a real stub."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest

from pullguard.services.format.servicer import register
from pullguard.services.runtime.inventory import merge_layers
from pullguard.services.runtime.protoconv import inventory_from_proto
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, format_pb2, format_pb2_grpc
from tests.support.configs import make_config
from tests.support.grpcserver import running_service
from tests.unit.format.inventory_build import fixture, layer, reg, whiteout
from tests.unit.format.tarbuild import SESSION as LAYER_SESSION
from tests.unit.format.tarbuild import archive, file, stage_blob, stage_layer, symlink

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SESSION = "d-1"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage(store: StagingStore, data: bytes) -> str:
    key = sha256(data)
    with store.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


def staged_manifest(key: str, data: bytes, content_type: str) -> common_pb2.StagedManifest:
    return common_pb2.StagedManifest(
        staged_key=key, computed_digest=key, size=len(data), content_type=content_type
    )


async def test_format_service_manifest_and_config(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    layer = b"layer"
    config_blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(b"diff")]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config_blob),
                "size": len(config_blob),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
            "annotations": {"org.opencontainers.image.source": "https://example.com/src"},
        }
    ).encode()
    key = stage(store, manifest)
    stage(store, config_blob)
    ambiguous = json.loads(manifest)
    ambiguous["manifests"] = []
    del ambiguous["mediaType"]
    ambiguous_bytes = json.dumps(ambiguous).encode()
    ambiguous_key = stage(store, ambiguous_bytes)

    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        plan = common_pb2.Plan()
        response = await stub.CheckManifest(
            format_pb2.CheckManifestRequest(
                session=SESSION,
                plan=plan,
                manifest=staged_manifest(key, manifest, OCI_MANIFEST + "; charset=utf-8"),
            )
        )
        assert response.verdict.decision == common_pb2.ALLOW
        assert response.verdict.layer == "format"
        summary = response.summary
        assert summary.kind == format_pb2.IMAGE_MANIFEST
        assert summary.media_type == OCI_MANIFEST
        assert summary.config.digest == sha256(config_blob)
        assert [d.digest for d in summary.layers] == [sha256(layer)]
        assert summary.annotations["org.opencontainers.image.source"] == "https://example.com/src"

        checked = await stub.CheckConfig(
            format_pb2.CheckConfigRequest(session=SESSION, plan=plan, summary=summary)
        )
        assert checked.verdict.decision == common_pb2.ALLOW

        # Two layers in the manifest, one diff_id in the config.
        summary.layers.append(summary.layers[0])
        mismatched = await stub.CheckConfig(
            format_pb2.CheckConfigRequest(session=SESSION, plan=plan, summary=summary)
        )
        assert mismatched.verdict.decision == common_pb2.DENY
        assert [f.code for f in mismatched.verdict.findings] == ["format.config_mismatch"]

        for content_type in (OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"):
            denied = await stub.CheckManifest(
                format_pb2.CheckManifestRequest(
                    session=SESSION,
                    plan=plan,
                    manifest=staged_manifest(ambiguous_key, ambiguous_bytes, content_type),
                )
            )
            assert denied.verdict.decision == common_pb2.DENY
            assert [f.code for f in denied.verdict.findings] == ["format.ambiguous_manifest"]
            assert not denied.HasField("summary")

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.CheckManifest(
                format_pb2.CheckManifestRequest(
                    session=SESSION,
                    plan=plan,
                    manifest=staged_manifest(sha256(b"never"), b"", OCI_MANIFEST),
                )
            )
        assert missing.value.code() == grpc.StatusCode.INTERNAL
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.CheckManifest(format_pb2.CheckManifestRequest(session=SESSION))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------- InspectLayers


def _image_summary(
    store: StagingStore, tars: list[bytes], *, diff_ids: list[str] | None = None
) -> format_pb2.ManifestSummary:
    layers = [stage_layer(store, tar) for tar in tars]
    config_blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_ids if diff_ids is not None else [d for _, d in layers],
            },
        }
    ).encode()
    config_key = stage_blob(store, config_blob)
    return format_pb2.ManifestSummary(
        kind=format_pb2.IMAGE_MANIFEST,
        media_type=OCI_MANIFEST,
        config=common_pb2.Descriptor(
            media_type="application/vnd.oci.image.config.v1+json",
            digest=config_key,
            size=len(config_blob),
        ),
        layers=[
            common_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size)
            for d, _ in layers
        ],
    )


def _plan(**layers: object) -> common_pb2.Plan:
    return common_pb2.Plan(rule=common_pb2.RulePolicy(layers=common_pb2.LayerPolicy(**layers)))


async def test_inspect_layers_service(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    good = archive(file("etc/hostname", b"box\n"), file("usr/bin/tool", bytes(4000), mode=0o755))
    summary = _image_summary(store, [good, archive(file("var/x", b"x"))])

    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        # An unset LayerPolicy means the defaults: inspection on.
        response = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=common_pb2.Plan(), summary=summary
            )
        )
        assert response.verdict.decision == common_pb2.ALLOW
        assert list(response.verdict.findings) == []
        first = response.layers[0]
        assert first.completed and first.compression == "gzip" and first.entries == 2
        assert first.uncompressed_bytes == len(good) and first.duration_ms >= 0
        assert [layer.index for layer in response.layers] == [0, 1]

        off = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=_plan(inspect=False, setuid="report"), summary=summary
            )
        )
        assert off.verdict.decision == common_pb2.ALLOW
        assert [f.code for f in off.verdict.findings] == ["format.layers_not_inspected"]
        assert list(off.layers) == []

        for bad in (
            _plan(inspect=True, setuid="maybe"),
            _plan(inspect=True, max_entries=-1),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.InspectLayers(
                    format_pb2.InspectLayersRequest(
                        session=LAYER_SESSION, plan=bad, summary=summary
                    )
                )
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        index = format_pb2.ManifestSummary(kind=format_pb2.IMAGE_INDEX)
        with pytest.raises(grpc.aio.AioRpcError) as wrong_kind:
            await stub.InspectLayers(
                format_pb2.InspectLayersRequest(session=LAYER_SESSION, summary=index)
            )
        assert wrong_kind.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_inventory_over_grpc(tmp_path: Path) -> None:
    """Issue 13: with LayerPolicy.inventory the layer's databases come back in
    LayerStats.inventory; without it, nothing is read."""
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    base = layer(
        reg("usr/lib/os-release", fixture("debian-os-release")),
        reg("var/lib/dpkg/status", fixture("dpkg-status")),
    )
    upper = layer(whiteout("var/lib/dpkg/status"), reg("lib/apk/db/installed", b"P:x\n"))
    summary = _image_summary(store, [base, upper])

    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        response = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=_plan(inventory=True), summary=summary
            )
        )
        assert response.verdict.decision == common_pb2.ALLOW
        first, second = (stats.inventory for stats in response.layers)
        assert first.os_release.id == "debian" and first.os_release.version_id == "12"
        assert [s.path for s in first.sources] == ["var/lib/dpkg/status"]
        assert len(first.sources[0].packages) == 7
        assert list(second.removed) == ["var/lib/dpkg/status"]
        assert list(second.incomplete) == ["format.inventory_malformed"]
        [warning] = response.verdict.findings
        assert warning.code == "format.inventory_malformed"
        assert warning.severity == common_pb2.WARNING
        assert "layers[1]: lib/apk/db/installed: a package without P: or V:" in warning.message
        merged = merge_layers([inventory_from_proto(i) for i in (first, second)])
        assert merged.packages == () and merged.os_release is not None

        off = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=common_pb2.Plan(), summary=summary
            )
        )
        assert not any(stats.HasField("inventory") for stats in off.layers)


async def test_l02_and_l05_denials_over_grpc(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    escape = archive(symlink("d1", "../../etc"), file("d1/passwd", b"x"))
    setuid = archive(file("usr/bin/su", b"x", mode=0o4755))
    summary = _image_summary(store, [escape, setuid])

    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        reported = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=common_pb2.Plan(), summary=summary
            )
        )
        assert reported.verdict.decision == common_pb2.DENY
        found = {(f.code, f.severity) for f in reported.verdict.findings}
        assert found == {
            ("format.link_escape", common_pb2.ERROR),
            ("format.setuid", common_pb2.WARNING),
        }
        assert reported.verdict.findings[0].evidence["layer"] == summary.layers[0].digest

        denied = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=_plan(inspect=True, setuid="deny"), summary=summary
            )
        )
        setuid_findings = [f for f in denied.verdict.findings if f.code == "format.setuid"]
        assert [f.severity for f in setuid_findings] == [common_pb2.ERROR]


async def test_l07_diffid_mismatch_over_grpc(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    summary = _image_summary(store, [archive(file("a", b"x"))], diff_ids=[sha256(b"other")])
    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        response = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(
                session=LAYER_SESSION, plan=common_pb2.Plan(), summary=summary
            )
        )
        assert response.verdict.decision == common_pb2.DENY
        assert [f.code for f in response.verdict.findings] == ["format.diffid_mismatch"]
        assert response.layers[0].diff_id == sha256(archive(file("a", b"x")))


async def test_l07_one_layer_at_a_time_still_matches_its_diff_id(tmp_path: Path) -> None:
    # The gateway asks for each layer alone (layer_indexes) as soon as its blob
    # verified; the config's diff_ids are matched with that layer's index.
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    first, second = archive(file("a", b"x")), archive(file("b", b"y"))
    summary = _image_summary(store, [first, second], diff_ids=[sha256(first), sha256(b"other")])
    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)

        async def inspect(*indexes: int) -> format_pb2.InspectLayersResponse:
            request = format_pb2.InspectLayersRequest(
                session=LAYER_SESSION,
                plan=common_pb2.Plan(),
                summary=summary,
                layer_indexes=list(indexes),
            )
            response: format_pb2.InspectLayersResponse = await stub.InspectLayers(request)
            return response

        good = await inspect(0)
        assert good.verdict.decision == common_pb2.ALLOW
        assert [layer.index for layer in good.layers] == [0]
        bad = await inspect(1)
        assert bad.verdict.decision == common_pb2.DENY
        assert [f.code for f in bad.verdict.findings] == ["format.diffid_mismatch"]
        assert [layer.index for layer in bad.layers] == [1]
        for invalid in ((2,), (-1,), (0, 0)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await inspect(*invalid)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_f14_artifact_admitted_by_rule_over_grpc(tmp_path: Path) -> None:
    helm = "application/vnd.cncf.helm.chart.v1"
    empty_digest = sha256(b"{}")
    config = make_config(tmp_path)
    store = StagingStore(config.state_dir / "staging")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": helm,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": empty_digest,
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    "digest": sha256(b"chart"),
                    "size": 5,
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(b"base"), "size": 7},
        }
    ).encode()
    key = stage(store, manifest)
    stage(store, b"{}")
    plan = common_pb2.Plan(rule=common_pb2.RulePolicy(artifact_types=[helm]))
    async with running_service("format", register, config) as channel:
        stub = format_pb2_grpc.FormatStub(channel)
        refused = await stub.CheckManifest(
            format_pb2.CheckManifestRequest(
                session=SESSION,
                plan=common_pb2.Plan(),
                manifest=staged_manifest(key, manifest, OCI_MANIFEST),
            )
        )
        assert refused.verdict.decision == common_pb2.DENY
        admitted = await stub.CheckManifest(
            format_pb2.CheckManifestRequest(
                session=SESSION, plan=plan, manifest=staged_manifest(key, manifest, OCI_MANIFEST)
            )
        )
        assert admitted.verdict.decision == common_pb2.ALLOW
        assert [f.code for f in admitted.verdict.findings] == ["format.referrer"]
        checked = await stub.CheckConfig(
            format_pb2.CheckConfigRequest(session=SESSION, plan=plan, summary=admitted.summary)
        )
        assert checked.verdict.decision == common_pb2.ALLOW
        inspected = await stub.InspectLayers(
            format_pb2.InspectLayersRequest(session=SESSION, plan=plan, summary=admitted.summary)
        )
        assert inspected.verdict.decision == common_pb2.ALLOW
        assert [f.code for f in inspected.verdict.findings] == ["format.layers_not_inspected"]
