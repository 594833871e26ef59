"""``target: {kind: registry}`` end to end: a second real docker-registry on
127.0.0.1 receives what pullguard admits, under ``<prefix>/<alias>/<repo>``,
and nothing else."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    build_image,
    build_index,
    layout_manifest_digest,
    pull,
    push,
    push_index,
    random_layers,
    skopeo,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, pullguard_command

StartPullguard = Callable[..., Pullguard]
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX))


def _target_config(registry: RegistryProcess, prefix: str = "mirror") -> dict[str, object]:
    return {"kind": "registry", "url": registry.url, "insecure": True, "prefix": prefix}


def _image(tmp_path: Path, name: str, seed: int = 0) -> BuiltImage:
    return build_image(tmp_path / f"src-{name}", "v1", random_layers(2, 64 * 1024, seed=seed))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _get(registry: RegistryProcess, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{registry.url}{path}", headers={"Accept": ACCEPT}, timeout=30)


def _catalog(registry: RegistryProcess) -> list[str]:
    response = _get(registry, "/v2/_catalog")
    assert response.status_code == 200, response.text
    return list(response.json()["repositories"] or [])


def _writes(registry: RegistryProcess) -> list[str]:
    return [r for r in registry.requests() if r.split(" ", 1)[0] in ("POST", "PUT", "PATCH")]


def _assert_nothing_of(registry: RegistryProcess, name: str, digests: list[str]) -> None:
    assert _catalog(registry) == []
    assert _get(registry, f"/v2/{name}/tags/list").status_code == 404
    for digest in digests:
        assert _get(registry, f"/v2/{name}/blobs/{digest}", "HEAD").status_code == 404
        assert _get(registry, f"/v2/{name}/manifests/{digest}", "HEAD").status_code == 404
        assert not registry.has_blob(digest), f"{digest} reached the target's storage"
    assert _writes(registry) == []


def _decision(pg: Pullguard, decision_id: str) -> dict[str, object]:
    listed = subprocess.run(
        [*pullguard_command(), "decisions", "--json", "--config", str(pg.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    for report in json.loads(listed.stdout):
        if report["decision_id"] == decision_id:
            return dict(report)
    raise AssertionError(f"no decision {decision_id}")


def test_admitted_image_lands_in_the_target_byte_for_byte(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
) -> None:
    image = _image(tmp_path, "good")
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(upstream.url, target=_target_config(target))

    result = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out", "v1")

    assert result.returncode == 0, result.stderr + pg.log()
    name = "mirror/lab/team/app"
    assert _catalog(target) == [name]
    assert _get(target, f"/v2/{name}/tags/list").json()["tags"] == ["v1"]
    for reference in ("v1", image.digest):
        manifest = _get(target, f"/v2/{name}/manifests/{reference}")
        assert manifest.status_code == 200, manifest.text
        assert manifest.content == image.manifest  # the exact bytes, never re-serialised
        assert manifest.headers["Docker-Content-Digest"] == image.digest
        assert manifest.headers["Content-Type"] == OCI_MANIFEST
    for digest, data in zip(image.blob_digests, (image.config, *image.layers), strict=True):
        blob = _get(target, f"/v2/{name}/blobs/{digest}")
        assert blob.status_code == 200 and _sha256(blob.content) == digest
        assert blob.content == data
    # A client of the private registry gets the very image pullguard admitted.
    copied = pull(f"{target.address}/{name}:v1", tmp_path / "from-target", "v1")
    assert copied.returncode == 0, copied.stderr
    assert layout_manifest_digest(tmp_path / "from-target", "v1") == image.digest
    # The decision says where the image went.
    decision_id = pg.get("/v2/lab/team/app/manifests/v1").headers["X-Pullguard-Decision"]
    report = _decision(pg, decision_id)
    assert report["decision"] == "ALLOW"
    # A published image is not pushed again: the second pull only asked the target
    # whether it still holds the manifest (the store of record, see test_replica_target).
    seen = len(target.requests())
    again = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out2", "v1")
    assert again.returncode == 0, again.stderr
    assert target.requests()[seen:] == [f"HEAD /v2/{name}/manifests/{image.digest}"]


def test_first_publish_reports_what_it_pushed(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
) -> None:
    image = _image(tmp_path, "report", seed=5)
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(upstream.url, target=_target_config(target, prefix="pg"))

    admitted = subprocess.run(
        [*pullguard_command(), "admit", "lab/team/app:v1", "--config", str(pg.config_path)]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert admitted.returncode == 0, admitted.stdout + admitted.stderr + pg.log()
    report = json.loads(admitted.stdout)
    published = report["target"]
    assert published["repository"] == "pg/lab/team/app"
    assert published["state"] == "published"
    assert published["pushed"] == [image.digest, "v1"]
    assert published["blobs_uploaded"] == len(image.blob_digests)
    assert [s["decision"] for s in report["layers"] if s["layer"] == "target"] == ["ALLOW"]
    # Blobs first, manifest last, then the tag.
    writes = [w for w in _writes(target) if w.startswith("PUT ")]
    assert [w.split("?")[0].rsplit("/", 2)[-2] for w in writes] == ["uploads"] * len(
        image.blob_digests
    ) + ["manifests", "manifests"]
    assert writes[-2].endswith(f"/manifests/{image.digest}")
    assert writes[-1].endswith("/manifests/v1")
    manifest = _get(target, "/v2/pg/lab/team/app/manifests/v1")
    assert manifest.content == image.manifest


def test_tampered_image_leaves_nothing_in_the_target(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
) -> None:
    image = _image(tmp_path, "bad", seed=3)
    push(image, upstream.address, "team/bad")
    blob = upstream.blob_file(image.blob_digests[1])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    pg = pullguard_factory(upstream.url, target=_target_config(target))

    result = pull(f"{pg.address}/lab/team/bad:v1", tmp_path / "out", "v1")

    assert result.returncode != 0
    denial = pg.get("/v2/lab/team/bad/manifests/v1")
    assert denial.status_code == 403
    assert denial.json()["errors"][0]["detail"]["layer"] == "hashverify"
    _assert_nothing_of(target, "mirror/lab/team/bad", [image.digest, *image.blob_digests])


def test_target_down_fails_the_pull_and_nothing_lands(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "app", seed=4)
    push(image, upstream.address, "team/app")
    target = RegistryProcess(tmp_path / "target-down")  # its port has no listener yet
    pg = pullguard_factory(upstream.url, target=_target_config(target))

    result = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out", "v1")

    assert result.returncode != 0
    response = pg.get("/v2/lab/team/app/manifests/v1")
    assert response.status_code == 503, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"].startswith("target: ")
    # The target's address is for the operator: in the report, not for clients.
    assert target.address not in error["message"]
    report = _decision(pg, error["detail"]["decision"])
    assert target.url in report["outage"]["message"]
    assert report["outcome"] == "outage" and report["outage"]["layer"] == "target"
    assert report["transient"] is True and report["admitted"] is False
    # Not admitted: the embedded store does not list it, nothing is quarantined.
    index = json.loads((pg.state_dir / "admitted" / "index.json").read_text())
    assert all(m["digest"] != image.digest for m in index["manifests"])
    assert list((pg.state_dir / "quarantine").iterdir()) == []

    target.start()
    try:
        _assert_nothing_of(target, "mirror/lab/team/app", [image.digest, *image.blob_digests])
        # Once the target is back, the next pull publishes the image.
        retried = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out2", "v1")
        assert retried.returncode == 0, retried.stderr + pg.log()
        manifest = _get(target, "/v2/mirror/lab/team/app/manifests/v1")
        assert manifest.content == image.manifest
    finally:
        target.stop()


def test_index_is_pushed_once_every_listed_manifest_is_there(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
) -> None:
    index = build_index(tmp_path / "multi", "v1", [("linux", "amd64"), ("linux", "arm64")])
    push_index(index, upstream.address, "team/multi")
    pg = pullguard_factory(upstream.url, target=_target_config(target))
    name = "mirror/lab/team/multi"
    amd64, arm64 = index.children

    # One platform: skopeo reads the index by tag, then the amd64 manifest.
    single = pull(f"{pg.address}/lab/team/multi:v1", tmp_path / "out", "v1")

    assert single.returncode == 0, single.stderr + pg.log()
    assert _get(target, f"/v2/{name}/manifests/{amd64.digest}").content == amd64.manifest
    # The index would be partial: neither it nor its tag is in the target yet.
    assert _get(target, f"/v2/{name}/manifests/{index.digest}", "HEAD").status_code == 404
    assert _get(target, f"/v2/{name}/manifests/v1", "HEAD").status_code == 404

    # `pullguard admit` of the last platform completes the index, tag included.
    admitted = subprocess.run(
        [
            *pullguard_command(),
            "admit",
            f"lab/team/multi@{arm64.digest}",
            "--config",
            str(pg.config_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert admitted.returncode == 0, admitted.stdout + admitted.stderr + pg.log()
    assert json.loads(admitted.stdout)["target"]["indexes"] == {index.digest: "published"}
    for reference in ("v1", index.digest):
        got = _get(target, f"/v2/{name}/manifests/{reference}")
        assert got.status_code == 200 and got.content == index.index
        assert got.headers["Content-Type"] == OCI_INDEX
    everything = skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{target.address}/{name}:v1",
        f"oci:{tmp_path / 'all'}:v1",
    )
    assert everything.returncode == 0, everything.stderr
    assert layout_manifest_digest(tmp_path / "all", "v1") == index.digest


def _reevaluate(pg: Pullguard) -> tuple[int, dict[str, dict[str, str]]]:
    done = pg.cli("reevaluate", "--json")
    assert done.stdout, done.stderr + pg.log()
    return done.returncode, {i["repository"]: i for i in json.loads(done.stdout)}


def test_o07_a_revoked_image_is_withdrawn_from_the_target(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
) -> None:
    import yaml

    image, keep = _image(tmp_path, "app", seed=11), _image(tmp_path, "keep", seed=12)
    push(image, upstream.address, "team/app")
    push(keep, upstream.address, "team/keep")
    pg = pullguard_factory(upstream.url, target=_target_config(target))
    for repo in ("app", "keep"):
        pulled = pull(f"{pg.address}/lab/team/{repo}:v1", tmp_path / f"out-{repo}", "v1")
        assert pulled.returncode == 0, pulled.stderr + pg.log()
    assert _get(target, "/v2/mirror/lab/team/app/manifests/v1").status_code == 200

    # The repository is denied now; the target is down when the job runs.
    pg.stop()
    pg.config["policy"]["deny"] = ["**/evil/**", "lab/team/app"]
    pg.config_path.write_text(yaml.safe_dump(pg.config))
    pg.start()
    target.stop()
    code, images = _reevaluate(pg)

    assert code == 2  # revoked here, but the private registry still serves it
    assert images["lab/team/app"]["outcome"] == "revoked"
    assert images["lab/team/app"]["target"].startswith("failed: ")
    assert pg.get("/v2/lab/team/app/manifests/v1").status_code == 403

    # The next run, with the target back, takes it out there too.
    target.start()
    code, images = _reevaluate(pg)

    assert code == 1
    withdrawn = images["lab/team/app"]["target"]
    assert withdrawn.startswith("withdrawn: ") and image.digest in withdrawn and "v1" in withdrawn
    for reference in ("v1", image.digest):
        assert _get(target, f"/v2/mirror/lab/team/app/manifests/{reference}").status_code == 404
    assert _get(target, "/v2/mirror/lab/team/keep/manifests/v1").content == keep.manifest
    assert images["lab/team/keep"]["outcome"] == "current"
    # Nothing is left to withdraw.
    code, images = _reevaluate(pg)
    assert code == 0 and set(images) == {"lab/team/keep"}
