"""Manifest and index checks: THREATS F-01, F-06 to F-11, F-14."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from pullguard.services.format.manifest import ManifestResult, check_manifest
from pullguard.services.format.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
)
from pullguard.services.runtime.config import Limits

LIMITS = Limits()
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def descriptor(media_type: str, name: str, size: int = 100, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(name), "size": size, **extra}


def image(media_type: str | None = OCI_MANIFEST, **fields: Any) -> dict[str, Any]:
    config_type = DOCKER_CONFIG if media_type == DOCKER_MANIFEST else OCI_CONFIG
    layer_type = DOCKER_LAYER if media_type == DOCKER_MANIFEST else OCI_LAYER
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        doc["mediaType"] = media_type
    doc["config"] = descriptor(config_type, "config", 1469)
    doc["layers"] = [descriptor(layer_type, "layer0", 3370706), descriptor(layer_type, "l1")]
    doc.update(fields)
    return doc


def index(media_type: str | None = OCI_INDEX, **fields: Any) -> dict[str, Any]:
    child = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        doc["mediaType"] = media_type
    doc["manifests"] = [
        descriptor(child, "amd64", 528, platform={"os": "linux", "architecture": "amd64"}),
        descriptor(
            child, "arm", 528, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}
        ),
    ]
    doc.update(fields)
    return doc


def check(
    doc: Any, content_type: str = OCI_MANIFEST, limits: Limits = LIMITS, **kwargs: Any
) -> ManifestResult:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return check_manifest(body, content_type, limits, **kwargs)


def codes(result: ManifestResult) -> set[str]:
    return {f.code for f in result.verdict.findings}


def denied(result: ManifestResult, code: str) -> bool:
    return not result.verdict.allowed and result.summary is None and code in codes(result)


# ---------------------------------------------------------------- positives


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_image_manifest_allowed_with_summary(media_type: str) -> None:
    result = check(image(media_type), media_type)
    assert result.verdict.allowed, result.verdict.findings
    summary = result.summary
    assert summary is not None and summary.kind == "image"
    assert summary.media_type == media_type
    assert summary.config is not None and summary.config.digest == sha("config")
    assert summary.config.size == 1469
    assert [layer.digest for layer in summary.layers] == [sha("layer0"), sha("l1")]


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST])
def test_index_allowed_with_platforms(media_type: str) -> None:
    result = check(index(media_type), media_type)
    assert result.verdict.allowed, result.verdict.findings
    assert result.summary is not None and result.summary.kind == "index"
    assert [m.platform for m in result.summary.manifests] == ["linux/amd64", "linux/arm64/v8"]


def test_subject_annotations_and_urls_are_summarised() -> None:
    doc = image(
        subject=descriptor(OCI_MANIFEST, "victim", 10),
        annotations={"org.opencontainers.image.source": "https://example.com/x"},
    )
    doc["layers"][0]["urls"] = ["https://example.com/l.tgz"]
    doc["layers"][0]["annotations"] = {"a": "b"}
    result = check(doc)
    assert result.summary is not None and result.summary.subject is not None
    assert result.summary.subject.digest == sha("victim")
    assert result.summary.annotations == {
        "org.opencontainers.image.source": "https://example.com/x"
    }
    assert result.summary.layers[0].urls == ("https://example.com/l.tgz",)
    assert result.summary.layers[0].annotations == {"a": "b"}


def test_unknown_extra_fields_are_allowed() -> None:
    assert check(image(futureField={"x": 1})).verdict.allowed


# ---------------------------------------------------------------- F-01


def _evil_entry() -> dict[str, Any]:
    return descriptor(OCI_MANIFEST, "evil", 528, platform={"os": "linux", "architecture": "amd64"})


@pytest.mark.parametrize(
    "content_type", [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "", "text/html"]
)
def test_f01_ambiguous_manifest_any_header(content_type: str) -> None:
    doc = image(None, manifests=[_evil_entry()])
    assert denied(check(doc, content_type), "format.ambiguous_manifest")


@pytest.mark.parametrize("drop", ["config", "layers"])
def test_f01_ambiguous_manifest_partial(drop: str) -> None:
    doc = image(None, manifests=[_evil_entry()])
    del doc[drop]
    for content_type in (OCI_MANIFEST, OCI_INDEX):
        assert denied(check(doc, content_type), "format.ambiguous_manifest")


@pytest.mark.parametrize("media_type", [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
def test_f01_ambiguous_manifest_with_media_type(media_type: str) -> None:
    doc = index(media_type, layers=[descriptor(OCI_LAYER, "benign")])
    assert denied(check(doc, media_type), "format.ambiguous_manifest")


def test_f01_index_media_type_with_layers_only_is_a_mismatch() -> None:
    doc = image(OCI_INDEX)
    assert denied(check(doc, OCI_INDEX), "format.mediatype_mismatch")


# ---------------------------------------------------------------- F-06


def test_f06_body_and_header_differ() -> None:
    assert denied(check(image(OCI_MANIFEST), DOCKER_MANIFEST), "format.mediatype_mismatch")


def test_f06_index_body_with_manifest_header() -> None:
    assert denied(check(index(OCI_INDEX), OCI_MANIFEST), "format.mediatype_mismatch")


def test_f06_content_type_parameters_are_ignored() -> None:
    result = check(image(), OCI_MANIFEST + "; charset=utf-8")
    assert result.verdict.allowed
    assert result.summary is not None and result.summary.media_type == OCI_MANIFEST


@pytest.mark.parametrize(
    ("doc", "content_type"), [(image(None), OCI_MANIFEST), (index(None), OCI_INDEX)]
)
def test_f06_missing_media_type_with_agreeing_oci_header(
    doc: dict[str, Any], content_type: str
) -> None:
    result = check(doc, content_type)
    assert result.verdict.allowed, result.verdict.findings
    assert result.summary is not None and result.summary.media_type == content_type


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        (image(None), "application/octet-stream"),
        (image(None), "text/html"),
        (image(None), ""),
        (image(None), "application/json"),
        (image(None), OCI_INDEX),
        (index(None), OCI_MANIFEST),
        # Docker schema2 makes mediaType REQUIRED.
        (image(None), DOCKER_MANIFEST),
        (index(None), DOCKER_LIST),
    ],
)
def test_f06_missing_media_type_refused(doc: dict[str, Any], content_type: str) -> None:
    assert denied(check(doc, content_type), "format.missing_mediatype")


def test_f06_media_type_suffix_is_a_mismatch() -> None:
    doc = image(OCI_MANIFEST + "XXX")
    assert denied(check(doc, OCI_MANIFEST), "format.mediatype_mismatch")


def test_f06_unknown_media_type_on_both_sides() -> None:
    weird = "application/vnd.example.manifest+json"
    assert denied(check(image(weird), weird), "format.unknown_mediatype")


def test_f06_media_type_must_be_a_string() -> None:
    assert denied(check(image(7), OCI_MANIFEST), "format.invalid_manifest")


def test_f06_header_case_is_not_folded() -> None:
    assert denied(check(image(), OCI_MANIFEST.upper()), "format.mediatype_mismatch")


# ---------------------------------------------------------------- F-07


SCHEMA1 = {
    "schemaVersion": 1,
    "name": "library/x",
    "tag": "1",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": sha("a")}],
    "history": [{"v1Compatibility": "{}"}],
    "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}],
}


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        (SCHEMA1, "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        (SCHEMA1, "application/vnd.docker.distribution.manifest.v1+json"),
        (SCHEMA1, DOCKER_MANIFEST),
        (SCHEMA1, OCI_MANIFEST),
        ({k: v for k, v in SCHEMA1.items() if k != "signatures"}, DOCKER_MANIFEST),
        (image(DOCKER_MANIFEST, fsLayers=[]), DOCKER_MANIFEST),
        (image(OCI_MANIFEST, signatures=[]), OCI_MANIFEST),
        (
            image("application/vnd.docker.distribution.manifest.v1+json"),
            "application/vnd.docker.distribution.manifest.v1+json",
        ),
        (b"not even json", "application/vnd.docker.distribution.manifest.v1+prettyjws"),
    ],
)
def test_f07_schema1(doc: Any, content_type: str) -> None:
    assert denied(check(doc, content_type), "format.schema1_unsupported")


@pytest.mark.parametrize("version", [2.0, "2", True, 3, None, 0])
def test_f04_schema_version_must_be_integer_two(version: Any) -> None:
    assert denied(check(image(schemaVersion=version)), "format.invalid_schema_version")


def test_f04_schema_version_missing() -> None:
    doc = image()
    del doc["schemaVersion"]
    assert denied(check(doc), "format.invalid_schema_version")


def test_f04_parse_problems_become_findings() -> None:
    assert denied(check(b'{"schemaVersion": NaN}'), "format.invalid_json")
    assert denied(check(b"[1, 2]"), "format.invalid_manifest")
    assert denied(check(b'"text"'), "format.invalid_manifest")


def test_f03_duplicate_layers_key() -> None:
    body = json.dumps(image())[:-1] + ', "layers": []}'
    assert denied(check(body.encode()), "format.duplicate_key")


# ---------------------------------------------------------------- F-08 / F-09


@pytest.mark.parametrize(
    "digest",
    [
        "sha384:" + "a" * 96,
        "blake3:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    ],
)
def test_f08_unsupported_digest_algorithm(digest: str) -> None:
    doc = image()
    doc["layers"][1]["digest"] = digest
    assert denied(check(doc), "format.unsupported_digest_algorithm")


def test_f08_sha512_descriptor_is_accepted() -> None:
    doc = image()
    doc["layers"][1]["digest"] = "sha512:" + "ab" * 64
    assert check(doc).verdict.allowed


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "SHA256:" + "a" * 64,
        "sha256::" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
        "sha256:" + "\uff11" * 64,
        "sha256+:" + "a" * 64,
        "sha256..x:" + "a" * 64,
        "sha256:",
        "sha256:../../../../etc/passwd",
        "",
        7,
        None,
    ],
)
def test_f09_invalid_digest(digest: Any) -> None:
    doc = image()
    doc["config"]["digest"] = digest
    assert denied(check(doc), "format.invalid_digest")


def test_f09_missing_digest() -> None:
    doc = image()
    del doc["layers"][0]["digest"]
    assert denied(check(doc), "format.invalid_digest")


# ---------------------------------------------------------------- F-10 / F-04 sizes


@pytest.mark.parametrize("size", [-1, 1000.0, 1e3, "1000", True, None, 2**53 + 1, [1]])
def test_f10_invalid_size(size: Any) -> None:
    doc = image()
    doc["layers"][0]["size"] = size
    assert denied(check(doc), "format.invalid_size")


def test_f10_size_boundary() -> None:
    doc = image()
    doc["layers"][0]["size"] = 2**53
    assert check(doc).verdict.allowed


def test_f10_index_entry_size_checked() -> None:
    doc = index()
    doc["manifests"][0]["size"] = -5
    assert denied(check(doc, OCI_INDEX), "format.invalid_size")


# ---------------------------------------------------------------- F-11


def _padded(total: int) -> bytes:
    doc = image(annotations={"pad": ""})
    base = len(json.dumps(doc).encode())
    doc["annotations"]["pad"] = "x" * (total - base)
    body = json.dumps(doc).encode()
    assert len(body) == total
    return body


def test_f11_manifest_at_exact_limit_is_accepted() -> None:
    result = check(_padded(LIMITS.manifest_bytes))
    assert result.verdict.allowed, result.verdict.findings


def test_f11_manifest_one_byte_over_is_too_large() -> None:
    assert denied(check(_padded(LIMITS.manifest_bytes + 1)), "format.too_large")


def test_f11_too_many_layers() -> None:
    limits = Limits(layers=3)
    doc = image()
    doc["layers"] = [descriptor(OCI_LAYER, f"l{i}") for i in range(3)]
    assert check(doc, limits=limits).verdict.allowed
    doc["layers"].append(descriptor(OCI_LAYER, "l3"))
    assert denied(check(doc, limits=limits), "format.too_many_layers")


def test_f12_too_many_index_entries() -> None:
    limits = Limits(index_entries=2)
    doc = index()
    assert check(doc, OCI_INDEX, limits).verdict.allowed
    doc["manifests"].append(doc["manifests"][0])
    assert denied(check(doc, OCI_INDEX, limits), "format.too_many_entries")


# ---------------------------------------------------------------- F-14


def test_f14_empty_config_without_artifact_type() -> None:
    doc = image()
    doc["config"] = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    assert denied(check(doc), "format.artifact_type_required")


def test_f14_artifact_not_allowed_by_default() -> None:
    doc = image(artifactType="application/vnd.cncf.helm.chart.v1")
    doc["config"] = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    assert denied(check(doc), "format.artifact_not_allowed")


def test_f14_artifact_type_on_runnable_image() -> None:
    assert denied(check(image(artifactType="text/plain")), "format.artifact_not_allowed")


def test_f14_unknown_config_media_type() -> None:
    doc = image()
    doc["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    assert denied(check(doc), "format.artifact_not_allowed")


def test_f14_artifact_index_refused() -> None:
    doc = index(artifactType="application/vnd.example+json")
    assert denied(check(doc, OCI_INDEX), "format.artifact_not_allowed")


@pytest.mark.parametrize(
    "layer_type", ["application/x-unknown", "application/vnd.oci.image.layer.v1.tar+bzip2"]
)
def test_f14_layer_media_type_not_allowed(layer_type: str) -> None:
    doc = image()
    doc["layers"][1]["mediaType"] = layer_type
    assert denied(check(doc), "format.layer_mediatype_not_allowed")


def test_f14_rule_layer_types_replace_builtin_list() -> None:
    custom = "application/vnd.example.layer.v1+tar"
    doc = image()
    doc["layers"] = [descriptor(custom, "x")]
    assert check(doc, layer_media_types=(custom,)).verdict.allowed
    assert denied(check(image(), layer_media_types=(custom,)), "format.layer_mediatype_not_allowed")


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("field", ["config", "layers"])
def test_required_image_fields(field: str) -> None:
    doc = image()
    del doc[field]
    assert denied(check(doc), "format.invalid_manifest")


def test_index_needs_manifests_list() -> None:
    assert denied(check(index(manifests={"a": 1}), OCI_INDEX), "format.invalid_manifest")
    doc = index()
    del doc["manifests"]
    assert denied(check(doc, OCI_INDEX), "format.invalid_manifest")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"mediaType": ""}, "format.invalid_descriptor"),
        ({"mediaType": "no-slash"}, "format.invalid_descriptor"),
        ({"mediaType": 5}, "format.invalid_descriptor"),
        ({"urls": "https://x"}, "format.invalid_descriptor"),
        ({"urls": [1]}, "format.invalid_descriptor"),
        ({"urls": [""]}, "format.invalid_descriptor"),
        ({"annotations": {"a": 1}}, "format.invalid_manifest"),
        ({"annotations": ["a"]}, "format.invalid_manifest"),
        ({"artifactType": 1}, "format.invalid_descriptor"),
    ],
)
def test_descriptor_shape(change: dict[str, Any], code: str) -> None:
    doc = image()
    doc["layers"][0].update(change)
    assert denied(check(doc), code)


def test_descriptor_must_be_object() -> None:
    doc = image()
    doc["layers"][0] = "sha256:abc"
    assert denied(check(doc), "format.invalid_descriptor")


def test_manifest_annotations_must_be_strings() -> None:
    assert denied(check(image(annotations={"a": ["b"]})), "format.invalid_manifest")


def test_index_entry_must_be_a_manifest_type() -> None:
    doc = index()
    doc["manifests"][0]["mediaType"] = OCI_LAYER
    assert denied(check(doc, OCI_INDEX), "format.unknown_mediatype")


def test_docker_list_entry_needs_platform() -> None:
    doc = index(DOCKER_LIST)
    del doc["manifests"][0]["platform"]
    assert denied(check(doc, DOCKER_LIST), "format.invalid_descriptor")
    doc = index(OCI_INDEX)
    del doc["manifests"][0]["platform"]
    assert check(doc, OCI_INDEX).verdict.allowed


@pytest.mark.parametrize(
    "platform",
    [
        "linux/amd64",
        {"os": "linux"},
        {"os": "linux", "architecture": 1},
        {"os": "linux", "architecture": "amd64/../x"},
        {"os": "linux", "architecture": "amd64", "variant": ""},
        {"os": "linux", "architecture": "amd64", "os.features": "x"},
    ],
)
def test_index_platform_shape(platform: Any) -> None:
    doc = index()
    doc["manifests"][0]["platform"] = platform
    assert denied(check(doc, OCI_INDEX), "format.invalid_descriptor")


def test_embedded_data_must_match_digest_and_size() -> None:
    content = b"{}"
    doc = image()
    doc["config"] = {
        "mediaType": OCI_CONFIG,
        "digest": EMPTY_DIGEST,
        "size": 2,
        "data": base64.b64encode(content).decode(),
    }
    assert check(doc).verdict.allowed
    doc["config"]["data"] = base64.b64encode(b"[]").decode()
    assert denied(check(doc), "format.data_mismatch")
    doc["config"]["data"] = "not base64!"
    assert denied(check(doc), "format.invalid_descriptor")


def test_many_bad_layers_keep_report_short_and_denying() -> None:
    doc = image()
    doc["layers"] = [descriptor("application/x-bad", f"l{i}") for i in range(200)]
    result = check(doc)
    assert not result.verdict.allowed
    assert len(result.verdict.findings) == 51
    assert result.verdict.findings[-1].code == "format.findings_truncated"


# ---------------------------------------------------------------- F-14 artifacts the rule admits

HELM = "application/vnd.cncf.helm.chart.v1"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def test_f14_artifact_allowed_when_listed() -> None:
    doc = image(artifactType=HELM)
    doc["config"] = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    doc["layers"] = [descriptor(HELM_LAYER, "chart")]
    result = check(doc, artifact_types=(HELM,))
    assert result.verdict.allowed, result.verdict.findings
    assert result.summary is not None and result.summary.artifact_type == HELM
    assert denied(
        check(doc, artifact_types=("application/vnd.other",)), "format.artifact_not_allowed"
    )


def test_f14_artifact_by_config_media_type() -> None:
    doc = image()
    doc["config"]["mediaType"] = HELM_CONFIG
    doc["layers"] = [descriptor(HELM_LAYER, "chart")]
    assert check(doc, artifact_types=(HELM_CONFIG,)).verdict.allowed
    # With an artifactType, that is the artifact's type, not the config's.
    doc["artifactType"] = "application/vnd.unlisted"
    assert denied(check(doc, artifact_types=(HELM_CONFIG,)), "format.artifact_not_allowed")


def test_f14_empty_config_needs_artifact_type_even_when_listed() -> None:
    doc = image()
    doc["config"] = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    assert denied(check(doc, artifact_types=(OCI_EMPTY,)), "format.artifact_type_required")


def test_f14_artifact_layers_limited_by_rule_layer_types() -> None:
    doc = image(artifactType=HELM)
    doc["config"] = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    doc["layers"] = [descriptor(HELM_LAYER, "chart")]
    other = ("application/vnd.oci.image.layer.v1.tar",)
    result = check(doc, artifact_types=(HELM,), layer_media_types=other)
    assert denied(result, "format.layer_mediatype_not_allowed")


def test_f14_image_with_listed_artifact_type_is_still_an_image() -> None:
    doc = image(artifactType=HELM)
    assert check(doc, artifact_types=(HELM,)).verdict.allowed
    doc["layers"][0]["mediaType"] = HELM_LAYER
    assert denied(check(doc, artifact_types=(HELM,)), "format.layer_mediatype_not_allowed")


def test_f14_index_artifact_type_listed() -> None:
    doc = index(artifactType=HELM)
    assert check(doc, OCI_INDEX, artifact_types=(HELM,)).verdict.allowed


# ---------------------------------------------------------------- F-15


def test_f15_subject_is_recorded_as_referrer() -> None:
    doc = image(subject=descriptor(OCI_MANIFEST, "victim", 10))
    result = check(doc)
    assert result.verdict.allowed
    assert [(f.code, f.evidence["subject"]) for f in result.verdict.findings] == [
        ("format.referrer", sha("victim"))
    ]


def test_f15_subject_on_an_index() -> None:
    result = check(index(subject=descriptor(OCI_INDEX, "other", 10)), OCI_INDEX)
    assert result.verdict.allowed and codes(result) == {"format.referrer"}


@pytest.mark.parametrize(
    "subject",
    [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "A" * 64, "size": 1},
        {"mediaType": OCI_MANIFEST, "size": 1},
        "sha256:abc",
    ],
)
def test_f15_malformed_subject_denied(subject: Any) -> None:
    assert not check(image(subject=subject)).verdict.allowed


def test_f12_nested_index_is_allowed() -> None:
    # Depth is not visible in one document: the gateway bounds it across pulls.
    doc = index()
    doc["manifests"][0] = descriptor(OCI_INDEX, "child-index", 300)
    assert check(doc, OCI_INDEX).verdict.allowed
