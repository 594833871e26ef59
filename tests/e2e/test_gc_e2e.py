"""Retention on real parts (issue 11, part 7): after a revocation the gateway's
background collector removes the revoked image's own blobs, keeps the blob it
shares with an admitted image, and every admitted image still pulls with skopeo
through `pullguard up`, byte for byte."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.images import (
    BuiltImage,
    build_image,
    layout_manifest_digest,
    pull,
    push,
    random_layers,
    sha256,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]


def _present(pg: Pullguard, digest: str) -> bool:
    return (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":", 1)[1]).is_file()


def _files(image: BuiltImage) -> list[str]:
    return [image.digest, *image.blob_digests]


def _gc(pg: Pullguard, *args: str) -> dict[str, dict[str, int]]:
    done = pg.cli("gc", "--json", *args)
    assert done.returncode == 0, done.stderr
    report: dict[str, dict[str, int]] = json.loads(done.stdout)
    return report


def test_gc_removes_a_revoked_images_own_blobs_and_every_admitted_image_still_pulls(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    shared, own_a, own_b = random_layers(3, 48 * 1024, seed=71)
    kept = build_image(tmp_path / "src-a", "v1", [shared, own_a])
    revoked = build_image(tmp_path / "src-b", "v1", [shared, own_b])
    push(kept, upstream.address, "gc/a")
    push(revoked, upstream.address, "gc/b")
    pg = pullguard_factory(upstream.url, retention={"gc": {"interval": 0, "min_age": 0}})
    for name in ("a", "b"):
        done = pull(f"{pg.address}/lab/gc/{name}:v1", tmp_path / f"out-{name}", "v1")
        assert done.returncode == 0, done.stderr + pg.log()
    assert all(_present(pg, d) for d in _files(kept) + _files(revoked))
    # Both admitted: nothing to collect.
    assert _gc(pg)["blobs"]["removed"] == 0

    # gc/b is denied from now on and the re-evaluation revokes it; the
    # gateway now collects every second in the background.
    pg.stop()
    pg.config["policy"]["deny"] = ["**/evil/**", "lab/gc/b"]
    pg.config["retention"] = {"gc": {"interval": 1, "min_age": 0}}
    pg.config_path.write_text(yaml.safe_dump(pg.config))
    pg.start()
    done = pg.cli("reevaluate", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    outcomes = {i["repository"]: i["outcome"] for i in json.loads(done.stdout)}
    assert outcomes == {"lab/gc/a": "readmitted", "lab/gc/b": "revoked"}

    own = [revoked.digest, sha256(revoked.config), sha256(revoked.layers[1])]
    deadline = time.monotonic() + 120
    while any(_present(pg, d) for d in own) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_present(pg, d) for d in own), pg.log()
    assert all(_present(pg, d) for d in _files(kept)), "the shared blob and gc/a's stay"
    assert "gc: removed" in pg.log()
    assert _gc(pg, "--dry-run")["blobs"]["removed"] == 0

    # gc/a pulls from the store as it was admitted; gc/b is refused.
    again = pull(f"{pg.address}/lab/gc/a:v1", tmp_path / "again-a", "v1")
    assert again.returncode == 0, again.stderr + pg.log()
    assert layout_manifest_digest(tmp_path / "again-a", "v1") == kept.digest
    assert pg.get("/v2/lab/gc/b/manifests/v1").status_code == 403
