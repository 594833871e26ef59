"""The admitted store and the records survive damage, crashes and a full disk.

Issues 7 and 14, on real parts: Debian's docker-registry, skopeo, and
`pullguard up` with its gateway SIGKILLed at each write of the admission
path (failpoints, enabled by PULLGUARD_FAILPOINTS, which only tests set).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway import failpoints
from tests.support.images import BuiltImage, build_image, pull, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]
MANIFEST_ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def _image(tmp_path: Path, name: str, seed: int, size: int = 64 * 1024) -> BuiltImage:
    return build_image(tmp_path / f"src-{name}", "v1", random_layers(2, size, seed=seed))


def _db_rows(pg: Pullguard, query: str) -> list[tuple[Any, ...]]:
    uri = f"file:{pg.state_dir / 'decisions.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        return db.execute(query).fetchall()


def _audit_ids(pg: Pullguard) -> list[str]:
    path = pg.state_dir / "audit.jsonl"
    if not path.exists():
        return []
    ids = []
    for line in path.read_bytes().splitlines():
        try:
            ids.append(json.loads(line)["decision_id"])
        except ValueError:
            ids.append("<torn>")
    return ids


def _index_names(pg: Pullguard) -> list[tuple[str, str]]:
    index = json.loads((pg.state_dir / "admitted" / "index.json").read_text())
    return [
        (m["annotations"]["org.opencontainers.image.ref.name"], m["digest"])
        for m in index["manifests"]
    ]


def _held(pg: Pullguard, image: BuiltImage) -> dict[str, Any]:
    """What the state directory holds for ``image``: store, database, audit log."""
    blobs = pg.state_dir / "admitted" / "blobs" / "sha256"
    admitted = _db_rows(pg, f"SELECT decision_id FROM admitted WHERE digest='{image.digest}'")
    decisions = _db_rows(pg, "SELECT id, decision FROM decisions")
    return {
        "blob_files": sum((blobs / d.split(":")[1]).exists() for d in image.blob_digests),
        "manifest_file": (blobs / image.digest.split(":")[1]).exists(),
        "admission_rows": len(admitted),
        "decision_rows": [d[1] for d in decisions],
        "audit_lines": len(_audit_ids(pg)),
        "index_names": [n for n, _d in _index_names(pg)],
        "tmp_files": sorted(p.name for p in (pg.state_dir / "admitted").glob(".tmp-*")),
    }


def _fsck(pg: Pullguard, *args: str) -> tuple[int, dict[str, Any]]:
    done = pg.cli("fsck", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def _assert_served_recorded_verified(pg: Pullguard, image: BuiltImage, tmp_path: Path) -> bool:
    """The invariant; returns whether the image is served."""
    assert not list((pg.state_dir / "admitted").glob(".tmp-*"))
    admissions = {
        (str(r[0]), str(r[1])): str(r[2])
        for r in _db_rows(pg, "SELECT repository, digest, decision_id FROM admitted")
    }
    decisions = {str(r[0]): str(r[1]) for r in _db_rows(pg, "SELECT id, decision FROM decisions")}
    audited = set(_audit_ids(pg))
    for name, digest in _index_names(pg):
        repository = name.partition("@")[0] if "@" in name else name.rpartition(":")[0]
        assert (repository, digest) in admissions, f"index.json names {name} without admission"
    for decision_id in admissions.values():
        assert decisions.get(decision_id) == "ALLOW", decision_id
        assert decision_id in audited, f"admission {decision_id} has no audit line"
    # The upstream is down: only what was admitted can be served.
    response = pg.get(f"/v2/lab/team/app/manifests/{image.digest}", headers=MANIFEST_ACCEPT)
    served = response.status_code == 200
    assert served == (("lab/team/app", image.digest) in admissions), response.text
    if served:
        copied = pull(f"{pg.address}/lab/team/app@{image.digest}", tmp_path / "after", "v1")
        assert copied.returncode == 0, copied.stderr  # skopeo checks every digest
    _code, report = _fsck(pg)
    assert report["damaged"] == [] and report["missing"] == [] and report["unaudited"] == 0
    assert report["layout"] == {"tmp_files": [], "unadmitted_names": [], "unnamed_admissions": []}
    return served


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_a_kill_at_each_admission_write_keeps_served_recorded_verified(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    image = _image(tmp_path, "app", seed=11)
    push(image, upstream.address, "team/app")
    monkeypatch.setenv(failpoints.ENV, f"{point}:kill")
    pg = pullguard_factory(upstream.url)
    monkeypatch.delenv(failpoints.ENV)

    first = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "first", "v1")
    assert first.returncode != 0, "the gateway should have died mid-admission"
    assert pg.process is not None
    pg.process.wait(30)  # `up` leaves when its gateway dies
    crashed = _held(pg, image)

    upstream.stop()
    pg.start()
    served = _assert_served_recorded_verified(pg, image, tmp_path)
    after = _held(pg, image)
    print(f"\nKILL {point}\n  crash left: {crashed}\n  restarted:  {after}  served={served}")

    # Whatever the crash left, the next pull with the upstream back ends admitted.
    upstream.start()
    again = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "again", "v1")
    assert again.returncode == 0, again.stderr + pg.log()
    _assert_served_recorded_verified(pg, image, tmp_path)


def _admitted_app(
    upstream: RegistryProcess, start: StartPullguard, tmp_path: Path, seed: int
) -> tuple[BuiltImage, Pullguard]:
    image = _image(tmp_path, "app", seed=seed)
    push(image, upstream.address, "team/app")
    pg = start(upstream.url)
    assert pull(f"{pg.address}/lab/team/app:v1", tmp_path / "first", "v1").returncode == 0
    return image, pg


def _store_file(pg: Pullguard, digest: str) -> Path:
    return pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]


def test_a_flipped_byte_is_found_never_served_and_replaced_by_verified_bytes(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image, pg = _admitted_app(upstream, pullguard_factory, tmp_path, seed=12)
    layer = image.blob_digests[-1]
    path = _store_file(pg, layer)
    original = path.read_bytes()
    stat = path.stat()
    damaged = bytearray(original)
    damaged[100] ^= 0x01
    path.write_bytes(bytes(damaged))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # hide it from mtime

    code, report = _fsck(pg)
    assert code == 1 and report["damaged"] == [layer], report
    blob = pg.get(f"/v2/lab/team/app/blobs/{layer}")
    assert blob.status_code == 404, blob.status_code
    assert blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"

    # The next pull verifies again, fetches the blob and replaces the damaged file.
    since = len(upstream.requests())
    again = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "again", "v1")
    assert again.returncode == 0, again.stderr + pg.log()
    assert f"GET /v2/team/app/blobs/{layer}" in upstream.requests()[since:]
    assert path.read_bytes() == original
    assert pg.get(f"/v2/lab/team/app/blobs/{layer}").content == original
    assert _fsck(pg)[0] == 0
    assert list((pg.state_dir / "damaged").iterdir()), "the damaged file is kept aside"


def test_fsck_repair_withdraws_an_admission_that_lost_content(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    image, pg = _admitted_app(upstream, pullguard_factory, tmp_path, seed=13)
    pg.stop()
    _store_file(pg, image.blob_digests[0]).unlink()
    code, report = _fsck(pg, "--repair")
    assert code == 1 and report["missing"] == [image.blob_digests[0]]
    assert report["withdrawn"] == [f"lab/team/app@{image.digest}"]
    assert _db_rows(pg, "SELECT 1 FROM admitted") == []
    text = pg.cli("fsck")
    assert text.returncode == 1 and "orphaned" in text.stdout, text.stdout  # its other files
    pg.start()
    assert pull(f"{pg.address}/lab/team/app:v1", tmp_path / "again", "v1").returncode == 0
    assert _fsck(pg)[0] == 0


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """state_dir on a 3 MiB tmpfs: a disk that fills while staging."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(state)],
        capture_output=True,
        text=True,
    )
    assert mounted.returncode == 0, f"mount needs root: {mounted.stderr}"
    try:
        yield state
    finally:
        subprocess.run(["umount", "--lazy", str(state)], check=True)


def test_disk_full_while_staging_is_a_clear_503_and_leaves_nothing(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path, small_state: Path
) -> None:
    small = _image(tmp_path, "small", seed=14)
    push(small, upstream.address, "team/app")
    big = build_image(tmp_path / "src-big", "v1", random_layers(1, 6 * 1024 * 1024, seed=15))
    push(big, upstream.address, "team/big")
    pg = pullguard_factory(upstream.url)
    assert pg.state_dir == small_state
    assert pull(f"{pg.address}/lab/team/app:v1", tmp_path / "first", "v1").returncode == 0

    response = pg.get("/v2/lab/team/big/manifests/v1", headers=MANIFEST_ACCEPT)

    assert response.status_code == 503, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and error["message"] == "fetcher: staging: no space left"
    assert not [p for p in (small_state / "staging").rglob("*") if p.is_file()]
    assert list((small_state / "quarantine").iterdir()) == []
    assert not any(
        (small_state / "admitted" / "blobs" / "sha256" / d.split(":")[1]).exists()
        for d in [big.digest, *big.blob_digests]
    )
    decision = json.loads(pg.cli("decisions", "--json", "--limit", "1").stdout)[0]
    assert decision["transient"] and decision["reason"] == "fetcher: staging: no space left"
    # Admitted images are still served, by tag and by digest.
    for reference in ("v1", small.digest):
        served = pg.get(f"/v2/lab/team/app/manifests/{reference}", headers=MANIFEST_ACCEPT)
        assert served.status_code == 200, served.text
    assert pull(f"{pg.address}/lab/team/app@{small.digest}", tmp_path / "d", "v1").returncode == 0
