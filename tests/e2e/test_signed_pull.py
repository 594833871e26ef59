"""Cosign-signed images through `pullguard up`: signed with the real cosign
binary, stored as cosign stores them (the sha256-<hex>.sig tag) in Debian's
docker-registry, pulled with skopeo.

The three tests share one upstream and one stack (a stack start is most of
an end-to-end test's time): its policy trusts alice for ``signed/app`` and
``signed/*``, and only mallory for ``signed/stranger``, and each test has
a repository and bytes of its own.
"""

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


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Cosign key pairs (private, public) of alice and mallory."""
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    folder = tmp_path_factory.mktemp("keys")
    return {who: generate_key_pair(folder / who) for who in ("alice", "mallory")}


def _rule(match: str, key: Path) -> dict[str, object]:
    return {"match": match, "signature": {"keys": [str(key)]}}


@pytest.fixture(scope="module")
def stack(
    shared_upstream: RegistryProcess,
    keys: dict[str, tuple[Path, Path]],
    module_pullguard_factory: StartPullguard,
) -> Pullguard:
    alice, mallory = keys["alice"][1], keys["mallory"][1]
    policy = {
        "rules": [
            _rule("lab/signed/app", alice),
            _rule("lab/signed/stranger", mallory),
            _rule("lab/signed/*", alice),
            {"match": "lab/**", "signature": "none"},
        ]
    }
    pg: Pullguard = module_pullguard_factory(shared_upstream.url, policy=policy)
    return pg


def _signed_by_alice(
    upstream: RegistryProcess, keys: dict[str, tuple[Path, Path]], tmp_path: Path, repository: str
) -> str:
    """An image pushed to ``repository`` and signed there with alice's key; its digest."""
    seed = {"signed/app": 5, "signed/stranger": 6}[repository]
    image = build_image(tmp_path / "src", "v1", random_layers(2, 32 * 1024, seed=seed))
    push(image, upstream.address, repository)
    sign(f"{repository}@{image.digest}", keys["alice"][0], upstream.address)
    return image.digest


def test_signed_image_passes_with_the_right_key(
    shared_upstream: RegistryProcess,
    keys: dict[str, tuple[Path, Path]],
    stack: Pullguard,
    tmp_path: Path,
) -> None:
    digest = _signed_by_alice(shared_upstream, keys, tmp_path, "signed/app")
    pg = stack  # signed/app: alice's key

    result = pull(f"{pg.address}/lab/signed/app:v1", tmp_path / "out", "v1")

    assert result.returncode == 0, result.stderr + pg.log()
    assert layout_manifest_digest(tmp_path / "out", "v1") == digest


def test_signed_image_denied_with_another_key(
    shared_upstream: RegistryProcess,
    keys: dict[str, tuple[Path, Path]],
    stack: Pullguard,
    tmp_path: Path,
) -> None:
    digest = _signed_by_alice(shared_upstream, keys, tmp_path, "signed/stranger")
    pg = stack  # signed/stranger: mallory's key only

    result = pull(f"{pg.address}/lab/signed/stranger:v1", tmp_path / "out", "v1")

    assert result.returncode != 0
    response = pg.get("/v2/lab/signed/stranger/manifests/v1")
    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["message"].startswith("signature: ")
    assert "signature.untrusted_key" in {f["code"] for f in error["detail"]["findings"]}
    report = _report(pg, error)
    assert report["denied_by"] == "signature"
    assert [s["accepted"] for s in report["signatures"]] == [False]
    assert not (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]).exists()


def test_unsigned_image_denied_under_a_key_rule(
    shared_upstream: RegistryProcess, stack: Pullguard, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(1, 1024, seed=9))
    push(image, shared_upstream.address, "signed/plain")
    pg = stack  # signed/*: alice's key

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
