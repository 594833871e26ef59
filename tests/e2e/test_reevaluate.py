"""O-07, the re-evaluation job: `pullguard reevaluate` verifies every admitted
image again under the current policy, on real parts (docker-registry, skopeo,
cosign, `pullguard up`), and revokes what no longer passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cosign import cosign_binary, generate_key_pair, sign
from tests.support.images import BuiltImage, build_image, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]


def _reevaluate(pg: Pullguard, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    done = pg.cli("reevaluate", "--json", *args)
    assert done.returncode in (0, 1, 2), done.stdout + done.stderr
    assert done.stdout, done.stderr + pg.log()
    return done.returncode, {i["repository"]: i for i in json.loads(done.stdout)}


def _policy(keys: list[Path], deny: list[str] | None = None) -> dict[str, Any]:
    return {
        "rules": [
            {"match": "lab/signed/*", "signature": {"keys": [str(k) for k in keys]}},
            {"match": "lab/**", "signature": "none"},
        ],
        "deny": deny or ["**/evil/**"],
    }


def _names(pg: Pullguard) -> set[str]:
    index = json.loads((pg.state_dir / "admitted" / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}


@pytest.fixture
def two_images(upstream: RegistryProcess, tmp_path: Path) -> tuple[BuiltImage, BuiltImage, Path]:
    """signed/app signed by alice's key, and an unsigned plain/tool."""
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    signed = build_image(tmp_path / "src-signed", "v1", random_layers(2, 32 * 1024, seed=41))
    plain = build_image(tmp_path / "src-plain", "v1", random_layers(2, 32 * 1024, seed=42))
    push(signed, upstream.address, "signed/app")
    push(plain, upstream.address, "plain/tool")
    key, pub = generate_key_pair(tmp_path / "alice")
    sign(f"signed/app@{signed.digest}", key, upstream.address)
    return signed, plain, pub


def _restart(pg: Pullguard, policy: dict[str, Any]) -> None:
    import yaml

    pg.stop()
    pg.config["policy"] = policy
    pg.config_path.write_text(yaml.safe_dump(pg.config))
    pg.start()


def test_o07_key_removed_revokes_the_image_it_signed_and_keeps_the_rest(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    two_images: tuple[BuiltImage, BuiltImage, Path],
    tmp_path: Path,
) -> None:
    signed, plain, alice = two_images
    _bob_key, bob = generate_key_pair(tmp_path / "bob")
    pg = pullguard_factory(upstream.url, policy=_policy([alice]))
    for path in ("/v2/lab/signed/app/manifests/v1", "/v2/lab/plain/tool/manifests/v1"):
        assert pg.get(path).status_code == 200, pg.log()
    layer = signed.blob_digests[-1]
    assert pg.get(f"/v2/lab/signed/app/blobs/{layer}").status_code == 200
    first = [d for d in _audit(pg) if d["decision"] == "ALLOW" and "signed" in d["reference"]]

    # Key rotation: alice is no longer trusted.
    _restart(pg, _policy([bob]))
    code, images = _reevaluate(pg)

    assert code == 1
    assert images["lab/signed/app"]["outcome"] == "revoked"
    assert images["lab/signed/app"]["denied_by"] == "signature"
    assert images["lab/signed/app"]["previous_decision"] == first[0]["decision_id"]
    assert images["lab/plain/tool"]["outcome"] == "readmitted"
    # Revoked: not served, its names gone from the admitted layout, its blobs
    # no longer served, its content quarantined with the new report.
    assert not any(name.startswith("lab/signed/app") for name in _names(pg))
    assert f"lab/plain/tool@{plain.digest}" in _names(pg)
    assert pg.get(f"/v2/lab/signed/app/blobs/{layer}").status_code == 404
    entry = images["lab/signed/app"]["decision_id"]
    listed = json.loads(pg.cli("quarantine", "list", "--json").stdout)
    assert entry in {e["id"] for e in listed}
    report = json.loads((pg.state_dir / "quarantine" / entry / "report.json").read_text())
    assert report["reevaluation"]["previous_decision"] == first[0]["decision_id"]
    assert "signature.untrusted_key" in {
        f["code"] for step in report["layers"] for f in step["findings"]
    }
    # The audit trail holds the old verdict and the new one.
    verdicts = [
        (d["decision"], d["policy_version"]) for d in _audit(pg) if d["digest"] == signed.digest
    ]
    assert verdicts[0][0] == "ALLOW" and verdicts[-1][0] == "DENY"
    assert verdicts[0][1] != verdicts[-1][1]

    # A second run under the same policy: the survivor is current, nothing left to revoke.
    code, images = _reevaluate(pg)
    assert code == 0 and set(images) == {"lab/plain/tool"}
    assert images["lab/plain/tool"]["outcome"] == "current"


def test_o07_a_digest_denied_later_is_revoked_only_when_verified(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    two_images: tuple[BuiltImage, BuiltImage, Path],
) -> None:
    signed, plain, alice = two_images
    pg = pullguard_factory(upstream.url, policy=_policy([alice]))
    assert pg.get("/v2/lab/plain/tool/manifests/v1").status_code == 200

    # The repository joins the deny globs: analysis refuses it, with a finding.
    _restart(pg, _policy([alice], deny=["**/evil/**", "lab/plain/**"]))
    code, images = _reevaluate(pg)

    assert code == 1
    assert images["lab/plain/tool"]["outcome"] == "revoked"
    assert images["lab/plain/tool"]["denied_by"] == "analysis"
    assert not any(name.startswith("lab/plain/tool") for name in _names(pg))


def test_o07_an_upstream_outage_revokes_nothing(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    two_images: tuple[BuiltImage, BuiltImage, Path],
) -> None:
    signed, plain, alice = two_images
    pg = pullguard_factory(upstream.url, policy=_policy([alice]))
    assert pg.get("/v2/lab/plain/tool/manifests/v1").status_code == 200

    upstream.stop()
    code, images = _reevaluate(pg, "--force")

    assert code == 2
    assert images["lab/plain/tool"]["outcome"] == "undecided"
    assert f"lab/plain/tool@{plain.digest}" in _names(pg)
    # Still served under the same policy: an outage is not a verdict.
    assert pg.get(f"/v2/lab/plain/tool/manifests/{plain.digest}").status_code == 200


def _audit(pg: Pullguard) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (pg.state_dir / "audit.jsonl").read_text().splitlines()]


def test_o07_a_rule_that_refuses_pulls_by_digest_revokes_nothing(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    two_images: tuple[BuiltImage, BuiltImage, Path],
) -> None:
    # The job asks by digest; a rule that admits only pulls by tag refuses
    # the question, not the image.
    signed, plain, alice = two_images
    policy = _policy([alice])
    policy["rules"][1]["tags"] = {"digest_pulls": "deny"}
    pg = pullguard_factory(upstream.url, policy=policy)
    assert pg.get("/v2/lab/plain/tool/manifests/v1").status_code == 200

    code, images = _reevaluate(pg, "--force")

    assert code == 2
    assert images["lab/plain/tool"]["outcome"] == "undecided"
    assert "digest" in images["lab/plain/tool"]["reason"]
    assert f"lab/plain/tool@{plain.digest}" in _names(pg)
    assert pg.get("/v2/lab/plain/tool/manifests/v1").status_code == 200
