"""Cosign-signed images through `pullguard up`: signed with the real cosign
binary, stored as cosign stores them (the sha256-<hex>.sig tag) in Debian's
docker-registry, pulled with skopeo."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cosign import cosign_binary, generate_key_pair, sign
from tests.support.images import build_image, layout_manifest_digest, pull, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]


@pytest.fixture
def signed_image(upstream: RegistryProcess, tmp_path: Path) -> tuple[str, Path, Path]:
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    image = build_image(tmp_path / "src", "v1", random_layers(2, 32 * 1024, seed=5))
    push(image, upstream.address, "signed/app")
    key, pub = generate_key_pair(tmp_path / "alice")
    sign(f"signed/app@{image.digest}", key, upstream.address)
    _other_key, other_pub = generate_key_pair(tmp_path / "mallory")
    return image.digest, pub, other_pub


def _policy(key: Path) -> dict[str, object]:
    return {
        "rules": [
            {"match": "lab/signed/*", "signature": {"keys": [str(key)]}},
            {"match": "lab/**", "signature": "none"},
        ]
    }


def test_signed_image_passes_with_the_right_key(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    signed_image: tuple[str, Path, Path],
    tmp_path: Path,
) -> None:
    digest, pub, _other = signed_image
    pg = pullguard_factory(upstream.url, policy=_policy(pub))

    result = pull(f"{pg.address}/lab/signed/app:v1", tmp_path / "out", "v1")

    assert result.returncode == 0, result.stderr + pg.log()
    assert layout_manifest_digest(tmp_path / "out", "v1") == digest


def test_signed_image_denied_with_another_key(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    signed_image: tuple[str, Path, Path],
    tmp_path: Path,
) -> None:
    digest, _pub, other = signed_image
    pg = pullguard_factory(upstream.url, policy=_policy(other))

    result = pull(f"{pg.address}/lab/signed/app:v1", tmp_path / "out", "v1")

    assert result.returncode != 0
    response = pg.get("/v2/lab/signed/app/manifests/v1")
    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["message"].startswith("signature: ")
    assert "signature.untrusted_key" in {f["code"] for f in error["detail"]["findings"]}
    report = _report(pg, error)
    assert report["denied_by"] == "signature"
    assert [s["accepted"] for s in report["signatures"]] == [False]
    assert not (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]).exists()


def test_unsigned_image_denied_under_a_key_rule(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(1, 1024, seed=9))
    push(image, upstream.address, "signed/plain")
    _key, pub = generate_key_pair(tmp_path / "alice")
    pg = pullguard_factory(upstream.url, policy=_policy(pub))

    response = pg.get("/v2/lab/signed/plain/manifests/v1")

    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["detail"]["layer"] == "signature"
    assert "signature.missing" in {f["code"] for f in error["detail"]["findings"]}


def _report(pg: Pullguard, error: dict[str, object]) -> dict[str, object]:
    detail = error["detail"]
    assert isinstance(detail, dict)
    return dict(
        json.loads((pg.state_dir / "quarantine" / detail["decision"] / "report.json").read_text())
    )
