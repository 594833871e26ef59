"""Catalogue section G (operational) end to end, on real parts: Debian's
docker-registry, skopeo, cosign and `pullguard up`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.cosign import generate_key_pair, sign
from tests.support.gated_proxy import GatedProxy
from tests.support.images import BuiltImage, build_image, pull, push, random_layers, skopeo
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]
MANIFEST_ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def _image(tmp_path: Path, name: str, seed: int = 0, **kwargs: object) -> BuiltImage:
    return build_image(
        tmp_path / f"src-{name}", "v1", random_layers(2, 64 * 1024, seed=seed), **kwargs
    )  # type: ignore[arg-type]


def _blob_gets(upstream: RegistryProcess, since: int) -> list[str]:
    return [r for r in upstream.requests()[since:] if r.startswith("GET") and "/blobs/" in r]


def _admitted(pg: Pullguard, digest: str) -> bool:
    return (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]).exists()


async def _many(pg: Pullguard, paths: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=f"http://{pg.address}", timeout=120) as client:
        return await asyncio.gather(*(client.get(p, headers=MANIFEST_ACCEPT) for p in paths))


@pytest.fixture(scope="module")
def shared(shared_upstream: RegistryProcess, module_pullguard_factory: StartPullguard) -> Pullguard:
    """One default stack for the tests that leave it running as it was; each
    pulls a repository and bytes (seed) of its own."""
    return module_pullguard_factory(shared_upstream.url)


def test_o01_concurrent_pulls_of_one_image_fetch_it_once(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "app")
    push(image, upstream.address, "team/app")
    # A second tag naming the same digest.
    copied = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"oci:{image.layout}:v1",
        f"docker://{upstream.address}/team/app:same",
    )
    assert copied.returncode == 0, copied.stderr
    # Only pulls in flight are shared: a pull that arrives after the first
    # has finished rightly resolves the tag again. So the upstream holds one
    # layer half-sent until every client has asked, and the 40 pulls meet in
    # one flight per tag however fast or loaded the machine is.
    proxy = GatedProxy(upstream.url, image.blob_digests[1]).start()
    try:
        pg = pullguard_factory(proxy.url)
        since = len(upstream.requests())
        paths = ["/v2/lab/team/app/manifests/v1"] * 30 + ["/v2/lab/team/app/manifests/same"] * 10

        async def stampede() -> list[httpx.Response]:
            pulls = asyncio.ensure_future(_many(pg, paths))
            assert await asyncio.to_thread(proxy.reached.wait, 120), pg.log()
            await asyncio.sleep(2)  # the clients all send within a fraction of that
            proxy.release()
            return await pulls

        responses = asyncio.run(stampede())
    finally:
        proxy.stop()

    assert {r.status_code for r in responses} == {200}
    assert {r.headers["Docker-Content-Digest"] for r in responses} == {image.digest}
    blob_gets = _blob_gets(upstream, since)
    assert sorted(blob_gets) == sorted(f"GET /v2/team/app/blobs/{d}" for d in image.blob_digests), (
        blob_gets
    )
    manifest_gets = [r for r in upstream.requests()[since:] if "/manifests/" in r]
    assert len(manifest_gets) <= 2, manifest_gets  # one per tag, not one per client


def test_o02_crash_mid_pull_leaves_nothing_admitted(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(3, 24 * 1024 * 1024, seed=3))
    push(image, upstream.address, "team/big")
    pg = pullguard_factory(upstream.url)
    gateway_pid = int(pg.services["gateway"]["pid"])
    staging = pg.state_dir / "staging"

    async def pull_and_crash() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            request = asyncio.create_task(
                client.get(f"http://{pg.address}/v2/lab/team/big/manifests/v1")
            )
            deadline = time.monotonic() + 30
            # Kill the gateway once a blob download is under way.
            while not any(staging.rglob(".partial-*")) and not any(
                p.is_file() and p.stat().st_size > 1 << 20 for p in staging.rglob("*")
            ):
                assert time.monotonic() < deadline, "no blob download seen"
                await asyncio.sleep(0.005)
            os.kill(gateway_pid, signal.SIGKILL)
            try:
                await request
            except httpx.HTTPError:
                pass

    asyncio.run(pull_and_crash())
    assert pg.process is not None
    pg.process.wait(30)  # `up` leaves when its gateway dies, stopping the layers
    assert not _admitted(pg, image.digest)
    assert all(not _admitted(pg, d) for d in image.blob_digests)
    index = json.loads((pg.state_dir / "admitted" / "index.json").read_text())
    assert index["manifests"] == []
    leftovers = [p for p in staging.rglob("*") if p.is_file()]
    assert leftovers, "the crash should have left staged data behind"

    pg.start()  # restart on the same state: staging is purged, then the pull works
    assert not any(p.is_file() for p in staging.rglob("*"))
    result = pull(f"{pg.address}/lab/team/big:v1", tmp_path / "out", "v1")
    assert result.returncode == 0, result.stderr + pg.log()
    assert _admitted(pg, image.digest)


def test_o04_upstream_outage_keeps_admitted_digests_and_refuses_the_rest(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "app")
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(upstream.url)
    assert pull(f"{pg.address}/lab/team/app:v1", tmp_path / "first", "v1").returncode == 0
    upstream.stop()

    by_digest = pull(f"{pg.address}/lab/team/app@{image.digest}", tmp_path / "digest", "v1")
    # A tag never admitted is refused; an admitted one is served (offline_tags,
    # tests/e2e/test_outages.py).
    by_tag = pg.get("/v2/lab/team/app/manifests/other")

    assert by_digest.returncode == 0, by_digest.stderr
    assert by_tag.status_code in (502, 503, 504), by_tag.text
    error = by_tag.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and "upstream" in error["message"]
    decisions = {d["decision_id"]: d for d in _decisions(pg)}
    assert decisions[error["detail"]["decision"]]["transient"] is True
    # The outage was not cached as a verdict: the next pull verifies and passes.
    upstream.start()
    tagged = skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:v1",
        f"docker://{upstream.address}/team/app:other",
    )
    assert tagged.returncode == 0, tagged.stderr
    assert pg.get("/v2/lab/team/app/manifests/other").status_code == 200


def test_o06_quarantined_content_is_unreachable_and_reports_are_clean(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream = shared_upstream
    hostile = "https://example.invalid/\x1b[2J\r\nX-Injected: 1 <script>"
    # Layers of its own (seed): the upstream keeps blobs by digest, and this one is damaged.
    image = _image(
        tmp_path, "bad", seed=6, annotations={"org.opencontainers.image.source": hostile}
    )
    push(image, upstream.address, "team/bad")
    path = upstream.blob_file(image.blob_digests[1])
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    pg = shared

    denied = pg.get("/v2/lab/team/bad/manifests/v1")
    assert denied.status_code == 403
    for digest in image.blob_digests:
        assert pg.get(f"/v2/lab/team/bad/blobs/{digest}").status_code == 404
    # By digest it is verified again, not served from quarantine.
    assert pg.get(f"/v2/lab/team/bad/manifests/{image.digest}").status_code == 403
    decision = denied.json()["errors"][0]["detail"]["decision"]
    report = (pg.state_dir / "quarantine" / decision / "report.json").read_text()
    assert (
        "\x1b" not in report and "\r" not in report and "X-Injected" not in report.split("\\n")[0]
    )
    for line in (pg.state_dir / "audit.jsonl").read_text().splitlines():
        assert "\x1b" not in line and "\r" not in line


def test_o07_policy_change_makes_admitted_images_verify_again(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image = _image(tmp_path, "signed")
    push(image, upstream.address, "signed/app")
    key, pub = generate_key_pair(tmp_path / "alice")
    _other, other_pub = generate_key_pair(tmp_path / "bob")
    sign(f"signed/app@{image.digest}", key, upstream.address)

    def policy(trusted: Path) -> dict[str, object]:
        return {"rules": [{"match": "lab/**", "signature": {"keys": [str(trusted)]}}]}

    pg = pullguard_factory(upstream.url, policy=policy(pub))
    assert pg.get("/v2/lab/signed/app/manifests/v1").status_code == 200
    pg.stop()
    # Key rotation: the same state, a policy that no longer trusts alice.
    second = pullguard_factory(upstream.url, policy=policy(other_pub))
    assert second.state_dir == pg.state_dir

    by_tag = second.get("/v2/lab/signed/app/manifests/v1")
    by_digest = second.get(f"/v2/lab/signed/app/manifests/{image.digest}")

    assert by_tag.status_code == 403 and by_digest.status_code == 403
    assert by_tag.json()["errors"][0]["detail"]["layer"] == "signature"
    # The audit trail shows the old verdict under the old policy and the new one under the new.
    verdicts = [(d["decision"], d["policy_version"]) for d in _decisions(second)]
    old_version, new_version = verdicts[0][1], verdicts[-1][1]
    assert old_version != new_version
    assert verdicts == [("ALLOW", old_version), ("DENY", new_version), ("DENY", new_version)]


def _decisions(pg: Pullguard) -> list[dict[str, object]]:
    return [json.loads(line) for line in (pg.state_dir / "audit.jsonl").read_text().splitlines()]
