"""No two index entries may claim one platform (issue 7: an index is one unit).

Platforms compare as containerd's platforms matcher does (see
services/format/platforms.py); every case goes through check_manifest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from pullguard.services.format.manifest import check_manifest
from pullguard.services.format.mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from pullguard.services.format.platforms import DUPLICATE_PLATFORM, normalize
from pullguard.services.runtime.config import Limits


def _entry(
    n: int, platform: dict[str, Any] | None, media_type: str = OCI_MANIFEST
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(str(n).encode()).hexdigest(),
        "size": 500 + n,
    }
    if platform is not None:
        entry["platform"] = platform
    return entry


def _p(os_name: str, arch: str, variant: str | None = None, **extra: Any) -> dict[str, Any]:
    platform: dict[str, Any] = {"os": os_name, "architecture": arch, **extra}
    if variant is not None:
        platform["variant"] = variant
    return platform


def _codes(platforms: list[dict[str, Any] | None], media_type: str = OCI_INDEX) -> list[str]:
    child = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [_entry(i, p, child) for i, p in enumerate(platforms)],
        }
    ).encode()
    result = check_manifest(body, media_type, Limits())
    return [f.code for f in result.verdict.findings if f.severity.name == "ERROR"]


@pytest.mark.parametrize(
    "pair",
    [
        (_p("linux", "amd64"), _p("linux", "amd64")),
        (_p("linux", "arm64"), _p("linux", "arm64", "v8")),
        (_p("linux", "arm64", "v8"), _p("linux", "aarch64")),
        (_p("linux", "arm64", "8"), _p("linux", "arm64", "v8.0")),
        (_p("linux", "arm64", "v9"), _p("linux", "arm64", "9.0")),
        (_p("linux", "amd64"), _p("linux", "amd64", "v1")),
        (_p("linux", "amd64"), _p("linux", "x86_64")),
        (_p("linux", "amd64"), _p("Linux", "AMD64")),
        (_p("linux", "arm"), _p("linux", "arm", "v7")),
        (_p("linux", "armhf"), _p("linux", "arm", "7")),
        (_p("linux", "armel"), _p("linux", "arm", "v6")),
        (_p("linux", "386"), _p("linux", "i386")),
        (_p("darwin", "arm64"), _p("macos", "arm64")),
        # os.version counts only for windows; os.features never tells entries apart.
        (_p("linux", "amd64", **{"os.version": "5.1"}), _p("linux", "amd64")),
        (_p("linux", "amd64", **{"os.features": ["sse4"]}), _p("linux", "amd64")),
        (
            _p("windows", "amd64", **{"os.version": "10.0.17763.1"}),
            _p("windows", "amd64", **{"os.version": "10.0.17763.5000"}),
        ),
        (_p("windows", "amd64", **{"os.version": "10.0.17763.1"}), _p("windows", "amd64")),
        (
            _p("windows", "amd64", **{"os.features": ["win32k"]}),
            _p("windows", "amd64"),
        ),
        (None, None),  # no platform: containerd matches both for every request
    ],
)
def test_duplicated_platforms_are_refused(pair: tuple[Any, Any]) -> None:
    assert _codes([_p("linux", "s390x"), *pair]) == [DUPLICATE_PLATFORM]


@pytest.mark.parametrize(
    "pair",
    [
        (_p("linux", "arm", "v6"), _p("linux", "arm", "v7")),
        (_p("linux", "arm64"), _p("linux", "arm64", "v9")),
        (_p("linux", "amd64"), _p("linux", "amd64", "v2")),
        (_p("linux", "amd64"), _p("linux", "arm64")),
        (_p("linux", "amd64"), _p("windows", "amd64")),
        (
            _p("windows", "amd64", **{"os.version": "10.0.17763.1"}),
            _p("windows", "amd64", **{"os.version": "10.0.20348.1"}),
        ),
        # buildx attestation manifests: no runtime asks for unknown/unknown.
        (_p("unknown", "unknown"), _p("unknown", "unknown")),
        # One entry without platform beside entries with one: containerd ranks it last.
        (None, _p("linux", "amd64")),
    ],
)
def test_distinct_platforms_pass(pair: tuple[Any, Any]) -> None:
    assert _codes([_p("linux", "s390x"), *pair]) == []


def test_duplicate_platform_names_both_entries() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [_entry(0, _p("linux", "arm64")), _entry(1, _p("linux", "arm64", "v8"))],
        }
    ).encode()
    [finding] = check_manifest(body, OCI_INDEX, Limits()).verdict.findings
    assert finding.code == DUPLICATE_PLATFORM
    assert "manifests[1]" in finding.message and "manifests[0]" in finding.message
    assert finding.evidence["platform"] == "linux/arm64"
    assert finding.evidence["first"] == _entry(0, None)["digest"]
    assert finding.evidence["duplicate"] == _entry(1, None)["digest"]


def test_docker_manifest_list_duplicates_are_refused() -> None:
    codes = _codes([_p("linux", "amd64"), _p("linux", "amd64")], DOCKER_LIST)
    assert codes == [DUPLICATE_PLATFORM]


def test_normalize_matches_containerd() -> None:
    assert normalize("linux", "aarch64", "8") == ("linux", "arm64", "")
    assert normalize("linux", "arm", "") == ("linux", "arm", "v7")
    assert normalize("linux", "arm", "5") == ("linux", "arm", "v5")
    assert normalize("linux", "i386", "v9") == ("linux", "386", "")
    assert normalize("linux", "riscv64", "") == ("linux", "riscv64", "")
