"""Image config checks: THREATS F-17, and F-03/F-04/F-11 applied to configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pullguard.services.format.config_check import check_config, check_staged_config
from pullguard.services.format.descriptors import Descriptor
from pullguard.services.format.mediatypes import DOCKER_CONFIG, OCI_CONFIG, OCI_EMPTY
from pullguard.services.runtime.config import Limits
from pullguard.services.runtime.errors import StagingError
from pullguard.services.runtime.findings import Severity, Verdict
from pullguard.services.runtime.staging import StagingStore

LIMITS = Limits()
CONFIG = Descriptor(OCI_CONFIG, "sha256:" + "c" * 64, 100)


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def config_doc(layers: int = 2, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/usr/bin"],
            "Entrypoint": ["/bin/sh"],
            "Cmd": None,
            "WorkingDir": "/",
            "Labels": {"a": "b"},
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(f"d{i}") for i in range(layers)]},
        "history": [{"created_by": f"step {i}"} for i in range(layers)]
        + [{"created_by": "ENV", "empty_layer": True}],
    }
    doc.update(fields)
    return doc


def check(doc: Any, layers: int = 2, config: Descriptor = CONFIG) -> Verdict:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return check_config(body, config, layers, LIMITS)


def denied(verdict: Verdict, code: str) -> bool:
    return not verdict.allowed and code in {f.code for f in verdict.findings}


@pytest.mark.parametrize("media_type", [OCI_CONFIG, DOCKER_CONFIG])
def test_valid_config_allowed(media_type: str) -> None:
    verdict = check(config_doc(), config=Descriptor(media_type, CONFIG.digest, 1))
    assert verdict.allowed and verdict.findings == ()


def test_zero_layer_image_with_no_diff_ids() -> None:
    assert check(config_doc(0), layers=0).allowed


def test_null_runtime_config_allowed() -> None:
    assert check(config_doc(config=None)).allowed


def test_f17_rootfs_type() -> None:
    doc = config_doc()
    doc["rootfs"]["type"] = "layerz"
    assert denied(check(doc), "format.config_mismatch")


@pytest.mark.parametrize("layers", [1, 3])
def test_f17_diff_ids_count_must_match_layers(layers: int) -> None:
    assert denied(check(config_doc(2), layers=layers), "format.config_mismatch")


@pytest.mark.parametrize(
    "rootfs", [None, [], {"type": "layers"}, {"type": "layers", "diff_ids": {}}]
)
def test_f17_rootfs_shape(rootfs: Any) -> None:
    assert denied(check(config_doc(rootfs=rootfs)), "format.config_mismatch")


def test_f17_diff_ids_well_formed() -> None:
    doc = config_doc()
    doc["rootfs"]["diff_ids"][1] = "sha256:" + "A" * 64
    assert denied(check(doc), "format.invalid_digest")


def test_f17_volume_path_traversal() -> None:
    doc = config_doc()
    doc["config"]["Volumes"] = {"/../../../../../etc": {}}
    assert denied(check(doc), "format.unsafe_config")


@pytest.mark.parametrize(
    "user", ["2147483648", "4294967296:0", "99999999999999999999", "0:2147483648"]
)
def test_f17_numeric_user_beyond_int32(user: str) -> None:
    doc = config_doc()
    doc["config"]["User"] = user
    assert denied(check(doc), "format.unsafe_config")


@pytest.mark.parametrize("user", ["0", "2147483647", "nobody", "app:app", ""])
def test_f17_ordinary_users(user: str) -> None:
    doc = config_doc()
    doc["config"]["User"] = user
    assert check(doc).allowed


def test_f17_history_mismatch_is_only_a_warning() -> None:
    doc = config_doc(history=[{"created_by": "one"}])
    verdict = check(doc)
    assert verdict.allowed
    assert [(f.code, f.severity) for f in verdict.findings] == [
        ("format.config_history_mismatch", Severity.WARNING)
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Env", "PATH=/bin"),
        ("Env", [1]),
        ("Entrypoint", "/bin/sh"),
        ("Cmd", [None]),
        ("User", 0),
        ("WorkingDir", []),
        ("Labels", {"a": 1}),
        ("ExposedPorts", ["80/tcp"]),
        ("Volumes", {"/data": "x"}),
    ],
)
def test_runtime_config_types(field: str, value: Any) -> None:
    doc = config_doc()
    doc["config"][field] = value
    assert denied(check(doc), "format.invalid_config")


@pytest.mark.parametrize(
    "doc",
    [
        config_doc(architecture=None),
        config_doc(os=7),
        config_doc(config="x"),
        config_doc(history={}),
        config_doc(history=[{"empty_layer": "yes"}]),
        [1, 2],
    ],
)
def test_config_shape(doc: Any) -> None:
    assert denied(check(doc), "format.invalid_config")


def test_f03_duplicate_user_in_config() -> None:
    body = b'{"architecture":"amd64","os":"linux","config":{"User":"1000","User":"0"},'
    body += b'"rootfs":{"type":"layers","diff_ids":[]}}'
    assert denied(check(body, layers=0), "format.duplicate_key")


def test_f04_config_json_hazards() -> None:
    assert denied(check(b'{"architecture": NaN}'), "format.invalid_json")
    assert denied(check(b"\xef\xbb\xbf{}"), "format.invalid_json")


def test_unknown_config_media_type_refused() -> None:
    other = Descriptor("application/vnd.example+json", CONFIG.digest, 1)
    assert denied(check(config_doc(), config=other), "format.unknown_mediatype")


def _stage(tmp_path: Path, data: bytes) -> tuple[StagingStore, Descriptor]:
    store = StagingStore(tmp_path / "staging")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writer("s1") as writer:
        writer.write(data)
        writer.commit(digest)
    return store, Descriptor(OCI_CONFIG, digest, len(data))


def test_f11_staged_config_limit_boundary(tmp_path: Path) -> None:
    doc = config_doc(0, pad="")
    base = len(json.dumps(doc).encode())
    limits = Limits(config_bytes=base + 50)
    doc["pad"] = "x" * 50
    store, descriptor = _stage(tmp_path, json.dumps(doc).encode())
    assert check_staged_config(store, "s1", descriptor, 0, limits).allowed
    doc["pad"] = "x" * 51
    store, descriptor = _stage(tmp_path, json.dumps(doc).encode())
    assert denied(check_staged_config(store, "s1", descriptor, 0, limits), "format.too_large")


def test_missing_staged_config_is_an_error(tmp_path: Path) -> None:
    store = StagingStore(tmp_path / "staging")
    with pytest.raises(StagingError):
        check_staged_config(store, "s1", CONFIG, 0, LIMITS)


def test_f17_env_near_config_limit(tmp_path: Path) -> None:
    # Env is bounded only by the config's size limit: at it passes, past it not.
    doc = config_doc(0)
    doc["config"]["Env"] = []
    base = len(json.dumps(doc).encode())
    limits = Limits(config_bytes=base + 100_000)
    doc["config"]["Env"] = ["X=" + "v" * (100_000 - 4)]
    assert len(json.dumps(doc).encode()) == limits.config_bytes
    store, descriptor = _stage(tmp_path, json.dumps(doc).encode())
    assert check_staged_config(store, "s1", descriptor, 0, limits).allowed
    doc["config"]["Env"].append("Y=1")
    store, descriptor = _stage(tmp_path, json.dumps(doc).encode())
    verdict = check_staged_config(store, "s1", descriptor, 0, limits)
    assert denied(verdict, "format.too_large")


# ---------------------------------------------------------------- F-14 artifact configs

HELM = "application/vnd.cncf.helm.chart.v1"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
EMPTY = Descriptor(OCI_EMPTY, "sha256:" + "4" * 64, 2)


def test_f14_empty_config_must_be_braces() -> None:
    assert check_config(b"{}", EMPTY, 1, LIMITS, HELM, (HELM,)).allowed
    for body in (b"{ }", b"{}\n", b"[]", b"", b'{"a":1}'):
        verdict = check_config(body, EMPTY, 1, LIMITS, HELM, (HELM,))
        assert denied(verdict, "format.invalid_empty_config"), body


def test_f14_empty_config_needs_an_admitted_artifact_type() -> None:
    assert denied(check_config(b"{}", EMPTY, 1, LIMITS), "format.artifact_type_required")
    assert denied(check_config(b"{}", EMPTY, 1, LIMITS, HELM), "format.unknown_mediatype")
    # Listing the empty type itself admits nothing: the artifactType decides.
    verdict = check_config(b"{}", EMPTY, 1, LIMITS, HELM, (OCI_EMPTY,))
    assert denied(verdict, "format.unknown_mediatype")


def test_f14_artifact_config_is_strict_json() -> None:
    helm = Descriptor(HELM_CONFIG, CONFIG.digest, 10)
    verdict = check_config(b'{"name":"chart"}', helm, 1, LIMITS, "", (HELM_CONFIG,))
    assert verdict.allowed and [f.code for f in verdict.findings] == ["format.artifact"]
    duplicate = b'{"name":"a","name":"b"}'
    assert denied(
        check_config(duplicate, helm, 1, LIMITS, "", (HELM_CONFIG,)), "format.duplicate_key"
    )
    assert denied(check_config(b'{"name":"chart"}', helm, 1, LIMITS), "format.unknown_mediatype")


def test_f14_binary_artifact_config_is_size_checked() -> None:
    blob = Descriptor("application/octet-stream", CONFIG.digest, 10)
    limits = Limits(config_bytes=10)
    kind = ("application/vnd.example.thing",)
    assert check_config(b"0123456789", blob, 1, limits, kind[0], kind).allowed
    assert denied(check_config(b"0123456789!", blob, 1, limits, kind[0], kind), "format.too_large")
