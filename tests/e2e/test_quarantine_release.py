"""`pullguard quarantine release` end to end: Debian's docker-registry, skopeo,
a real cosign key pair and `pullguard up`.

A release verifies the denied digest again with the reviewed findings
waived; it never waives integrity or attack findings.

The tests that leave the policy as it is share one upstream and one stack
(``shared``: vendor/** needs alice's key, the rest no signature), each
with a repository and an image of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cosign import cosign_binary, generate_key_pair, sign
from tests.support.images import (
    BuiltImage,
    build_image,
    layout_manifest_digest,
    pull,
    push,
    random_layers,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]
REASON = "vendor image without signatures; reviewed in SEC-1234"


def _keyed_policy(pub: Path) -> dict[str, Any]:
    return {"rules": [{"match": "lab/**", "signature": {"keys": [str(pub)]}}]}


def _shared_policy(pub: Path) -> dict[str, Any]:
    return {
        "rules": [
            {"match": "lab/vendor/**", "signature": {"keys": [str(pub)]}},
            {"match": "lab/**", "signature": "none"},
        ],
        "deny": ["**/evil/**"],
    }


def _image(tmp_path: Path, name: str, seed: int) -> BuiltImage:
    return build_image(tmp_path / f"src-{name}", "v1", random_layers(2, 32 * 1024, seed=seed))


def _denied(pg: Pullguard, path: str) -> dict[str, Any]:
    response = pg.get(path)
    assert response.status_code == 403, response.text
    detail: dict[str, Any] = response.json()["errors"][0]["detail"]
    return detail


def _admitted(pg: Pullguard, digest: str) -> bool:
    return (pg.state_dir / "admitted" / "blobs" / "sha256" / digest.split(":")[1]).exists()


def _open_entries(pg: Pullguard) -> list[str]:
    listed = pg.cli("quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [entry["id"] for entry in json.loads(listed.stdout)]


def _unsigned_and_denied(
    upstream: RegistryProcess,
    pg: Pullguard,
    tmp_path: Path,
    seed: int,
    repository: str = "vendor/app",
) -> tuple[BuiltImage, dict[str, Any]]:
    """An unsigned image under a key rule: pulled through ``pg``, denied, quarantined."""
    image = _image(tmp_path, "app", seed=seed)
    push(image, upstream.address, repository)
    return image, _denied(pg, f"/v2/lab/{repository}/manifests/v1")


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    return generate_key_pair(tmp_path_factory.mktemp("keys") / "alice")


@pytest.fixture(scope="module")
def shared(
    shared_upstream: RegistryProcess,
    module_pullguard_factory: StartPullguard,
    key_pair: tuple[Path, Path],
) -> Pullguard:
    pg: Pullguard = module_pullguard_factory(
        shared_upstream.url, policy=_shared_policy(key_pair[1])
    )
    return pg


def test_release_admits_the_reviewed_digest_and_only_it(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream, pg = shared_upstream, shared
    image, detail = _unsigned_and_denied(upstream, pg, tmp_path, seed=31)
    assert {f["code"] for f in detail["findings"]} == {"signature.missing"}
    entry = str(detail["decision"])
    assert entry in _open_entries(pg)

    released = pg.cli("quarantine", "release", entry, "--reason", REASON)

    assert released.returncode == 0, released.stdout + released.stderr + pg.log()
    assert f"released quarantine entry {entry}" in released.stdout
    assert "WAIVED  signature.missing" in released.stdout
    result = pull(f"{pg.address}/lab/vendor/app:v1", tmp_path / "out", "v1")
    assert result.returncode == 0, result.stderr + pg.log()
    assert layout_manifest_digest(tmp_path / "out", "v1") == image.digest
    assert entry not in _open_entries(pg)
    record = json.loads((pg.state_dir / "quarantine" / entry / "release.json").read_text())
    assert record["decision"] == "ALLOW" and record["digest"] == image.digest
    assert record["release"]["reason"] == REASON
    assert record["release"]["quarantine_id"] == entry
    assert [(w["layer"], w["code"]) for w in record["waived"]] == [
        ("signature", "signature.missing")
    ]

    # The waiver is for this digest only: another unsigned image is still refused.
    other = build_image(tmp_path / "src-other", "v2", random_layers(2, 32 * 1024, seed=32))
    push(other, upstream.address, "vendor/app")
    assert {f["code"] for f in _denied(pg, "/v2/lab/vendor/app/manifests/v2")["findings"]} == {
        "signature.missing"
    }
    assert not _admitted(pg, other.digest)


def test_release_waiver_survives_a_policy_change_but_not_a_new_finding(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    key_pair: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    pg = pullguard_factory(upstream.url, policy=_keyed_policy(key_pair[1]))
    image, detail = _unsigned_and_denied(upstream, pg, tmp_path, seed=33)
    entry = str(detail["decision"])
    assert pg.cli("quarantine", "release", entry, "--reason", REASON).returncode == 0

    # A new policy version verifies every image again; the waiver still holds.
    pg.stop()
    pg.config["policy"]["deny"] = ["**/evil/**"]
    pg.config_path.write_text(yaml.safe_dump(pg.config))
    pg.start()
    checked = pg.cli("check", "lab/vendor/app:v1", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert not report["cached"]
    assert [w["code"] for w in report["waived"]] == ["signature.missing"]

    # Someone signs the digest with a key nobody trusts: a new finding, not
    # the reviewed one, so the released digest is refused again.
    mallory, _pub = generate_key_pair(tmp_path / "mallory")
    sign(f"vendor/app@{image.digest}", mallory, upstream.address)
    detail = _denied(pg, "/v2/lab/vendor/app/manifests/v1")
    assert "signature.untrusted_key" in {f["code"] for f in detail["findings"]}


def test_release_refuses_an_integrity_finding(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream, pg = shared_upstream, shared  # team/app: no signature rule, as by default
    image = _image(tmp_path, "app", seed=35)
    push(image, upstream.address, "team/app")
    path = upstream.blob_file(image.blob_digests[-1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    detail = _denied(pg, "/v2/lab/team/app/manifests/v1")
    assert detail["layer"] == "hashverify"
    entry = str(detail["decision"])
    code = detail["findings"][0]["code"]

    released = pg.cli("quarantine", "release", entry, "--reason", "I trust it")

    assert released.returncode == 1, released.stdout + released.stderr
    assert "release refused" in released.stderr and code in released.stderr
    assert "cannot be waived" in released.stderr
    assert entry in _open_entries(pg)
    assert not _admitted(pg, image.digest)
    assert not any(_admitted(pg, d) for d in image.blob_digests)


def test_release_needs_a_reason_and_an_open_entry(
    shared_upstream: RegistryProcess, shared: Pullguard, tmp_path: Path
) -> None:
    upstream, pg = shared_upstream, shared
    image, detail = _unsigned_and_denied(upstream, pg, tmp_path, seed=36, repository="vendor/held")
    entry = str(detail["decision"])

    no_reason = pg.cli("quarantine", "release", entry)
    blank = pg.cli("quarantine", "release", entry, "--reason", "   ")
    unknown = pg.cli("quarantine", "release", "0" * 32, "--reason", REASON)

    for outcome in (no_reason, blank):
        assert outcome.returncode == 2, outcome.stdout + outcome.stderr
        assert "--reason" in outcome.stderr
    assert unknown.returncode == 2
    assert "pullguard: gateway: no open quarantine entry" in unknown.stderr
    assert "gateway: gateway:" not in unknown.stderr
    assert entry in _open_entries(pg)
    assert not _admitted(pg, image.digest)
