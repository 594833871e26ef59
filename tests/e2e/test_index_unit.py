"""An index is one unit (issue 7, item 2): real docker-registry, real skopeo, real cosign.

Indexes are built here and pushed byte for byte; one pullguard serves every
case. A runtime runs the first entry matching its platform, so one bad or
shadowing entry refuses the whole index, whichever platform is asked for:
skopeo copy --all and skopeo --override-arch alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cosign import cosign_binary, generate_key_pair, sign
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    build_image,
    random_layers,
    sha256,
    skopeo,
)
from tests.support.registry_process import RegistryProcess
from tests.support.signers.oci import Artifact, push_artifact
from tests.support.stack import Pullguard, write_config


@dataclass
class World:
    upstream: RegistryProcess
    pg: Pullguard
    tmp: Path
    images: dict[str, BuiltImage] = field(default_factory=dict)
    indexes: dict[str, bytes] = field(default_factory=dict)


class Builder:
    """Images and indexes pushed to the upstream under ``unit/<repo>:v1``."""

    def __init__(self, upstream: RegistryProcess, tmp: Path) -> None:
        self.upstream = upstream
        self.tmp = tmp
        self.seed = 1000
        self.images: dict[str, BuiltImage] = {}
        self.indexes: dict[str, bytes] = {}

    def image(self, repo: str, name: str) -> dict[str, Any]:
        self.seed += 1
        built = build_image(self.tmp / "src" / name, "v1", random_layers(1, 2048, self.seed))
        blobs = {sha256(b): b for b in (built.config, *built.layers)}
        push_artifact(
            self.upstream.url,
            f"unit/{repo}",
            built.digest,
            Artifact(built.manifest, OCI_MANIFEST, blobs),
        )
        self.images[name] = built
        return {"mediaType": OCI_MANIFEST, "digest": built.digest, "size": len(built.manifest)}

    def index(
        self,
        repo: str,
        name: str,
        entries: list[tuple[dict[str, Any], dict[str, Any] | None]],
        tag: str = "",
    ) -> dict[str, Any]:
        listed = [{**d, **({"platform": p} if p is not None else {})} for d, p in entries]
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}, indent=2
        ).encode()
        push_artifact(
            self.upstream.url, f"unit/{repo}", tag or sha256(body), Artifact(body, OCI_INDEX)
        )
        self.indexes[name] = body
        return {"mediaType": OCI_INDEX, "digest": sha256(body), "size": len(body)}


def _p(os_name: str, arch: str, variant: str = "") -> dict[str, Any]:
    return {"os": os_name, "architecture": arch, **({"variant": variant} if variant else {})}


AMD64, ARM64 = _p("linux", "amd64"), _p("linux", "arm64")


def _build(b: Builder) -> None:
    b.index(
        "good",
        "good",
        [(b.image("good", "good-amd64"), AMD64), (b.image("good", "good-arm64"), ARM64)],
        "v1",
    )
    # The first linux/amd64 entry is deny-listed; arm64 alone would be fine.
    b.index(
        "denied",
        "denied",
        [(b.image("denied", "denied-amd64"), AMD64), (b.image("denied", "denied-arm64"), ARM64)],
        "v1",
    )
    # Signed index, children unsigned: the index's signature covers them.
    b.index(
        "signed",
        "signed",
        [(b.image("signed", "signed-amd64"), AMD64), (b.image("signed", "signed-arm64"), ARM64)],
        "v1",
    )
    # Children signed, index not: the index itself is unsigned.
    b.index("unsigned", "unsigned", [(b.image("unsigned", "unsigned-amd64"), AMD64)], "v1")
    # index -> index -> image works (F-12 d); a deny-listed grandchild refuses the top.
    inner = b.index("nested", "nested-inner", [(b.image("nested", "nested-amd64"), AMD64)])
    b.index("nested", "nested", [(inner, AMD64)], "v1")
    inner = b.index(
        "nested-bad", "nested-bad-inner", [(b.image("nested-bad", "nested-bad-amd64"), AMD64)]
    )
    b.index("nested-bad", "nested-bad", [(inner, None)], "v1")
    # Five levels: the innermost index is 4 levels below the tagged one.
    child = b.image("deep", "deep-amd64")
    for level in range(4, -1, -1):
        child = b.index("deep", f"deep-{level}", [(child, AMD64)], "v1" if level == 0 else "")
    # One entry without platform beside a platform entry; two without.
    b.index(
        "noplatform",
        "noplatform",
        [(b.image("noplatform", "np-any"), None), (b.image("noplatform", "np-amd64"), AMD64)],
        "v1",
    )
    b.index(
        "noplatform2",
        "noplatform2",
        [(b.image("noplatform2", "np2-a"), None), (b.image("noplatform2", "np2-b"), None)],
        "v1",
    )
    # linux/arm64 and linux/arm64/v8 are one platform; arm/v6 and arm/v7 are two.
    b.index(
        "dup",
        "dup",
        [
            (b.image("dup", "dup-arm64"), ARM64),
            (b.image("dup", "dup-arm64v8"), _p("linux", "arm64", "v8")),
        ],
        "v1",
    )
    b.index(
        "dup-amd64",
        "dup-amd64",
        [(b.image("dup-amd64", "dupa-1"), AMD64), (b.image("dup-amd64", "dupa-2"), AMD64)],
        "v1",
    )
    b.index(
        "arm",
        "arm",
        [
            (b.image("arm", "arm-v6"), _p("linux", "arm", "v6")),
            (b.image("arm", "arm-v7"), _p("linux", "arm", "v7")),
        ],
        "v1",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    tmp = tmp_path_factory.mktemp("index-unit")
    upstream = RegistryProcess(tmp / "upstream")
    upstream.start()
    pg: Pullguard | None = None
    try:
        b = Builder(upstream, tmp)
        _build(b)
        key, pub = generate_key_pair(tmp / "alice")
        sign(f"unit/signed@{sha256(b.indexes['signed'])}", key, upstream.address)
        sign(f"unit/unsigned@{b.images['unsigned-amd64'].digest}", key, upstream.address)
        path, config = write_config(
            tmp,
            upstream.url,
            policy={
                "rules": [
                    {"match": "lab/unit/signed", "signature": {"keys": [str(pub)]}},
                    {"match": "lab/unit/unsigned", "signature": {"keys": [str(pub)]}},
                    {"match": "lab/**", "signature": "none"},
                ],
                "deny_digests": [
                    b.images["denied-amd64"].digest,
                    b.images["nested-bad-amd64"].digest,
                ],
            },
        )
        pg = Pullguard(path, config)
        pg.start()
        yield World(upstream, pg, tmp, b.images, b.indexes)
    finally:
        if pg is not None:
            pg.stop()
        upstream.stop()


def _copy(world: World, repo: str, out: str, *options: str) -> Any:
    destination = world.tmp / "out" / out
    destination.parent.mkdir(parents=True, exist_ok=True)
    return skopeo(
        *options,
        "copy",
        "--src-tls-verify=false",
        *(["--all"] if "--all" in out else []),
        f"docker://{world.pg.address}/lab/unit/{repo}:v1",
        f"oci:{destination}:v1",
    )


def _arch(world: World, repo: str, arch: str, variant: str = "") -> Any:
    options = ["--override-arch", arch, *(["--override-variant", variant] if variant else [])]
    return _copy(world, repo, f"{repo}-{arch}{variant}", *options)


def _all(world: World, repo: str) -> Any:
    return _copy(world, repo, f"{repo}--all")


def _denial(world: World, repo: str) -> dict[str, Any]:
    response = world.pg.get(f"/v2/lab/unit/{repo}/manifests/v1", headers={"Accept": OCI_INDEX})
    assert response.status_code == 403, response.text
    error: dict[str, Any] = response.json()["errors"][0]
    assert error["code"] == "DENIED"
    return error


def _blob_gets(world: World, repo: str) -> list[str]:
    return [r for r in world.upstream.requests() if r.startswith(f"GET /v2/unit/{repo}/blobs/")]


def _served(world: World, repo: str) -> bytes:
    response = world.pg.get(f"/v2/lab/unit/{repo}/manifests/v1", headers={"Accept": OCI_INDEX})
    assert response.status_code == 200, response.text
    return response.content


def test_a_good_index_serves_every_platform_and_fetches_blobs_only_when_pulled(
    world: World,
) -> None:
    assert _served(world, "good") == world.indexes["good"]
    # Every listed manifest was checked, but no layer blob was fetched yet.
    assert _blob_gets(world, "good") == []
    result = _arch(world, "good", "arm64")
    assert result.returncode == 0, result.stderr + world.pg.log()[-3000:]
    fetched = " ".join(_blob_gets(world, "good"))
    assert all(d in fetched for d in world.images["good-arm64"].blob_digests)
    assert all(d not in fetched for d in world.images["good-amd64"].blob_digests)
    result = _all(world, "good")
    assert result.returncode == 0, result.stderr + world.pg.log()[-3000:]


def test_a_deny_listed_first_child_refuses_every_platform(world: World) -> None:
    assert _arch(world, "denied", "arm64").returncode != 0
    assert _all(world, "denied").returncode != 0
    error = _denial(world, "denied")
    denied = world.images["denied-amd64"].digest
    [finding] = error["detail"]["findings"]
    assert finding["code"] == "gateway.index_child_refused"
    assert finding["evidence"]["child"] == denied
    assert finding["evidence"]["platform"] == "linux/amd64"
    assert finding["evidence"]["layer"] == "hashverify"
    assert "hash.denied_digest" in finding["evidence"]["codes"]
    assert denied in error["message"]


def test_a_signed_index_covers_its_unsigned_children(world: World) -> None:
    result = _arch(world, "signed", "arm64")
    assert result.returncode == 0, result.stderr + world.pg.log()[-3000:]
    decisions = json.loads(world.pg.cli("decisions", "--json").stdout)
    index_digest = sha256(world.indexes["signed"])
    [report] = [d for d in decisions if d.get("digest") == index_digest]
    covered = [
        step
        for step in report["layers"]
        if step["layer"] == "signature" and step["step"].startswith("index child")
    ]
    assert {s["step"].split()[-1] for s in covered} == {
        world.images["signed-amd64"].digest,
        world.images["signed-arm64"].digest,
    }
    assert all(s["findings"][0]["code"] == "signature.covered_by_index" for s in covered)


def test_an_unsigned_index_with_signed_children_is_refused(world: World) -> None:
    assert _arch(world, "unsigned", "amd64").returncode != 0
    error = _denial(world, "unsigned")
    assert error["detail"]["layer"] == "signature"


def test_a_nested_index_is_checked_to_the_bottom(world: World) -> None:
    assert _served(world, "nested") == world.indexes["nested"]
    error = _denial(world, "nested-bad")
    [finding] = error["detail"]["findings"]
    assert finding["code"] == "gateway.index_child_refused"
    assert finding["evidence"]["entry"] == "manifests[0] > manifests[0]"
    assert finding["evidence"]["child"] == world.images["nested-bad-amd64"].digest


def test_an_index_nested_too_deep_is_refused(world: World) -> None:
    error = _denial(world, "deep")
    [finding] = error["detail"]["findings"]
    assert finding["code"] == "gateway.index_too_deep"
    assert finding["evidence"]["child"] == sha256(world.indexes["deep-4"])


def test_entries_without_platform(world: World) -> None:
    assert _served(world, "noplatform") == world.indexes["noplatform"]
    error = _denial(world, "noplatform2")
    assert [f["code"] for f in error["detail"]["findings"]] == ["format.index_duplicate_platform"]


@pytest.mark.parametrize("repo", ["dup", "dup-amd64"])
def test_duplicated_platforms_refuse_the_index(world: World, repo: str) -> None:
    assert _arch(world, repo, "arm64" if repo == "dup" else "amd64").returncode != 0
    assert _all(world, repo).returncode != 0
    error = _denial(world, repo)
    assert [f["code"] for f in error["detail"]["findings"]] == ["format.index_duplicate_platform"]


def test_arm_variants_are_distinct_platforms(world: World) -> None:
    for variant in ("v6", "v7"):
        result = _arch(world, "arm", "arm", variant)
        assert result.returncode == 0, result.stderr + world.pg.log()[-3000:]
    result = _all(world, "arm")
    assert result.returncode == 0, result.stderr + world.pg.log()[-3000:]
