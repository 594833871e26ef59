"""pullguard's admission attestation (``attest:``) checked by the real cosign 2.5, offline.

Real parts only: docker-registry as upstream and as the target, ``pullguard
up``, and cosign verifying with ``--insecure-ignore-tlog=true`` (no Rekor on
127.0.0.1). What pullguard admitted verifies; an image pushed to the target
behind pullguard's back does not; after ``reevaluate`` revokes an image its
signature and attestation are gone and cosign refuses it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.cosign import COSIGN_PASSWORD, cosign_binary, generate_key_pair, sign
from tests.support.images import build_image, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

pytestmark = pytest.mark.e2e
StartPullguard = Callable[..., Pullguard]
PREDICATE_TYPE = "https://pullguard.dev/admission/v1"
INDEX = "application/vnd.oci.image.index.v1+json"


def cosign(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the real cosign offline: a fresh HOME, proxies pointing at a closed port."""
    binary = cosign_binary()
    if binary is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    closed = "http://127.0.0.1:9"
    with tempfile.TemporaryDirectory(prefix="cosign-home-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "HTTP_PROXY": closed,
            "HTTPS_PROXY": closed,
            "NO_PROXY": "127.0.0.1,localhost",
            "TUF_ROOT": str(Path(home) / "tuf"),
        }
        return subprocess.run(
            [str(binary), *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def verify(pub: Path, reference: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cosign(
        "verify", "--key", str(pub), "--insecure-ignore-tlog=true", "--allow-http-registry",
        *extra, reference,
    )  # fmt: skip


def verify_attestation(pub: Path, reference: str) -> subprocess.CompletedProcess[str]:
    return cosign(
        "verify-attestation", "--key", str(pub), "--type", PREDICATE_TYPE,
        "--insecure-ignore-tlog=true", "--allow-http-registry", reference,
    )  # fmt: skip


def predicate_of(output: str) -> dict[str, Any]:
    """The admission predicate from verify-attestation's output (one envelope per line)."""
    for line in output.splitlines():
        if line.startswith("{") and "payload" in line:
            statement = json.loads(base64.b64decode(json.loads(line)["payload"]))
            assert statement["predicateType"] == PREDICATE_TYPE
            return dict(statement["predicate"])
    raise AssertionError(f"no envelope in {output[-500:]}")


def revoke_team_images(pg: Pullguard, repository: str) -> None:
    """Deny ``**/team/**``, restart, and let ``reevaluate`` revoke ``repository``."""
    pg.stop()
    pg.config["policy"]["deny"] = ["**/team/**"]
    pg.config_path.write_text(yaml.safe_dump(pg.config))
    pg.start()
    done = pg.cli("reevaluate", "--json")
    outcomes = {i["repository"]: i for i in json.loads(done.stdout)}
    assert outcomes[repository]["outcome"] == "revoked", done.stdout + done.stderr


@pytest.fixture
def pullguard_key(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """``cosign generate-key-pair`` and the ``attest:`` block naming it."""
    key, pub = generate_key_pair(tmp_path / "pullguard-key")
    password = tmp_path / "pullguard-key" / "password"
    password.write_text(COSIGN_PASSWORD + "\n")
    return {"key": str(key), "password_file": str(password)}, pub


def test_admitted_image_verifies_in_the_target_and_stops_verifying_when_revoked(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    pullguard_key: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    attest, pub = pullguard_key
    image = build_image(tmp_path / "src", "v1", random_layers(1, 16 * 1024, seed=71))
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(
        upstream.url,
        target={"kind": "registry", "url": target.url, "insecure": True, "prefix": "mirror"},
        attest=attest,
    )
    pulled = pg.get("/v2/lab/team/app/manifests/v1")
    assert pulled.status_code == 200, pulled.text + pg.log()
    decision = pulled.headers["X-Pullguard-Decision"]
    admitted = f"{target.address}/mirror/lab/team/app@{image.digest}"

    signed = verify(pub, admitted)
    assert signed.returncode == 0, signed.stderr
    assert image.digest in signed.stdout
    attested = verify_attestation(pub, f"{target.address}/mirror/lab/team/app:v1")
    assert attested.returncode == 0, attested.stderr
    predicate = predicate_of(attested.stdout)
    assert predicate["decision"]["id"] == decision
    assert predicate["image"]["digest"] == image.digest
    assert predicate["upstream"]["alias"] == "lab"
    assert predicate["policy"]["rule"]["match"] == "lab/**"
    assert predicate["policy"]["version"]
    layers = {v["layer"] for v in predicate["verdicts"]}
    assert {"analysis", "format", "hashverify", "source"} <= layers
    assert all(v["decision"] == "ALLOW" for v in predicate["verdicts"])

    # Pushed to the target behind pullguard's back: no pullguard signature.
    other = build_image(tmp_path / "other", "v1", random_layers(1, 16 * 1024, seed=72))
    push(other, target.address, "mirror/lab/team/app")
    unadmitted = f"{target.address}/mirror/lab/team/app@{other.digest}"
    assert verify(pub, unadmitted).returncode != 0
    assert verify_attestation(pub, unadmitted).returncode != 0

    sig_tag = image.digest.replace(":", "-") + ".sig"
    sig_url = target.url + f"/v2/mirror/lab/team/app/manifests/{sig_tag}"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    assert httpx.head(sig_url, headers=accept, timeout=30).status_code == 200

    # Revoked by reevaluate under a policy that now denies it: both are gone.
    revoke_team_images(pg, "lab/team/app")
    assert verify(pub, admitted).returncode != 0
    assert verify_attestation(pub, admitted).returncode != 0
    assert httpx.head(sig_url, headers=accept, timeout=30).status_code == 404


def test_embedded_target_serves_pullguards_signature_at_the_front_door(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    pullguard_key: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    attest, pub = pullguard_key
    image = build_image(tmp_path / "src", "v1", random_layers(1, 16 * 1024, seed=73))
    push(image, upstream.address, "team/tool")
    pg = pullguard_factory(upstream.url, attest=attest)
    assert pg.get("/v2/lab/team/tool/manifests/v1").status_code == 200, pg.log()
    reference = f"{pg.address}/lab/team/tool@{image.digest}"

    signed = verify(pub, reference)
    assert signed.returncode == 0, signed.stderr + pg.log()
    attested = verify_attestation(pub, reference)
    assert attested.returncode == 0, attested.stderr
    assert predicate_of(attested.stdout)["image"]["digest"] == image.digest
    # Never admitted, but signed upstream (by another key): pullguard's tags are its own,
    # so the upstream's signature is not fetched in their place.
    other = build_image(tmp_path / "other", "v2", random_layers(1, 16 * 1024, seed=74))
    push(other, upstream.address, "team/tool")
    mallory, _ = generate_key_pair(tmp_path / "mallory")
    sign(f"team/tool@{other.digest}", mallory, upstream.address)
    sig_tag = other.digest.replace(":", "-") + ".sig"
    refused = pg.get(f"/v2/lab/team/tool/manifests/{sig_tag}")
    assert refused.status_code == 404, refused.text
    assert refused.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_referrers_mode_verifies_through_the_fallback_index_until_revoked(
    upstream: RegistryProcess,
    target: RegistryProcess,
    pullguard_factory: StartPullguard,
    pullguard_key: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    """``mode: referrers``: no ``.sig`` tag, so cosign can only find the referrer.

    distribution 2.8 has no referrers API: cosign (go-containerregistry)
    reads the ``sha256-<hex>`` fallback index pullguard keeps.
    """
    attest, pub = pullguard_key
    image = build_image(tmp_path / "src", "v1", random_layers(1, 16 * 1024, seed=75))
    push(image, upstream.address, "team/ref")
    # Someone else's referrer already listed (distribution wants it present): kept as it is.
    sbom = build_image(tmp_path / "sbom", "s", random_layers(1, 1024, seed=76))
    push(sbom, target.address, "mirror/lab/team/ref")
    other_entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sbom.digest,
        "size": len(sbom.manifest),
        "artifactType": "application/example.sbom",
        "annotations": {"org.example": "kept"},
    }
    index_url = target.url + f"/v2/mirror/lab/team/ref/manifests/{image.digest.replace(':', '-')}"
    seeded = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [other_entry]})
    put = httpx.put(index_url, content=seeded, headers={"Content-Type": INDEX}, timeout=30)
    assert put.status_code == 201, put.text
    attest = {**attest, "mode": "referrers"}
    pg = pullguard_factory(
        upstream.url,
        target={"kind": "registry", "url": target.url, "insecure": True, "prefix": "mirror"},
        attest=attest,
    )
    assert pg.get("/v2/lab/team/ref/manifests/v1").status_code == 200, pg.log()
    admitted = f"{target.address}/mirror/lab/team/ref@{image.digest}"
    sig_url = target.url + f"/v2/mirror/lab/team/ref/manifests/{image.digest.replace(':', '-')}.sig"
    accept = {"Accept": f"{INDEX}, application/vnd.oci.image.manifest.v1+json"}
    assert httpx.get(sig_url, headers=accept, timeout=30).status_code == 404
    assert verify(pub, admitted).returncode != 0  # no tag: plain verify finds nothing

    signed = verify(pub, admitted, "--experimental-oci11")
    assert signed.returncode == 0, signed.stderr + pg.log()
    assert image.digest in signed.stdout
    listed = httpx.get(index_url, headers=accept, timeout=30).json()["manifests"]
    assert listed[0] == other_entry
    types = sorted(entry["artifactType"] for entry in listed[1:])
    assert types == [
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.in-toto+json",
    ]
    for entry in listed[1:]:
        url = target.url + f"/v2/mirror/lab/team/ref/manifests/{entry['digest']}"
        referrer = httpx.get(url, headers=accept, timeout=30).json()
        assert referrer["subject"]["digest"] == image.digest
        assert referrer["artifactType"] == entry["artifactType"]
    # cosign 2.5's verify-attestation reads only the .att tag: the attestation
    # referrer's envelope is checked against the image's manifest bytes instead.
    att = next(e for e in listed[1:] if e["artifactType"] == "application/vnd.in-toto+json")
    att_url = target.url + f"/v2/mirror/lab/team/ref/manifests/{att['digest']}"
    layer = httpx.get(att_url, headers=accept, timeout=30).json()["layers"][0]["digest"]
    blob_url = target.url + f"/v2/mirror/lab/team/ref/blobs/{layer}"
    (tmp_path / "envelope.json").write_bytes(httpx.get(blob_url, timeout=30).content)
    (tmp_path / "manifest.json").write_bytes(image.manifest)
    attested = cosign(
        "verify-blob-attestation", "--key", str(pub), "--type", PREDICATE_TYPE,
        "--insecure-ignore-tlog=true", "--signature", str(tmp_path / "envelope.json"),
        str(tmp_path / "manifest.json"),
    )  # fmt: skip
    assert attested.returncode == 0, attested.stderr

    revoke_team_images(pg, "lab/team/ref")
    assert verify(pub, admitted, "--experimental-oci11").returncode != 0
    assert httpx.get(index_url, headers=accept, timeout=30).json()["manifests"] == [other_entry]
    for entry in listed[1:]:
        url = target.url + f"/v2/mirror/lab/team/ref/manifests/{entry['digest']}"
        assert httpx.get(url, headers=accept, timeout=30).status_code == 404
