"""Notation signatures end to end (issue 12): Debian's docker-registry as the
upstream, a Notation signature attached as an OCI 1.1 referrer, pulled
through `pullguard up` with skopeo.

docker-registry 2.8 has no referrers API, so the signature manifest is
pushed by digest and listed in the ``sha256-<hex>`` fallback index, which is
what notation (and oras) write to such a registry. Two writers: the real
``oras attach`` (oras 1.2, Debian 13's package, fetched by
scripts/install-system-deps.sh) for one image, plain HTTP PUTs from the
test, byte for byte, for the others. The envelopes are made with
``cryptography`` (tests/support/notation.py): the Notary Project's own
fixtures sign manifests that are not in this registry.

One stack for the module: four images under one rule, each with its own
signature: good (admitted), good attached by oras (admitted), by an
untrusted CA (denied), expired (denied at the strict level, THREATS G-13).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.support.images import build_image, layout_manifest_digest, pull, push, random_layers
from tests.support.notation import CA, JWS, NOW, Signing, der, envelope, target
from tests.support.registry_process import RegistryProcess
from tests.support.signers.oci import Artifact, add_referrer
from tests.support.stack import Pullguard, write_config

pytestmark = pytest.mark.e2e

ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
TOOLS = Path(__file__).resolve().parents[2] / ".tools" / "bin"
EMPTY = b"{}"


def oras_binary() -> Path:
    found = shutil.which("oras") or str(TOOLS / "oras")
    if not os.access(found, os.X_OK):
        pytest.fail("oras is not installed: run `make system-deps`")
    return Path(found)


def _oras_attach(
    registry: RegistryProcess, repository: str, digest: str, data: bytes, tmp: Path
) -> None:
    """``oras attach`` as notation's users attach a signature made elsewhere."""
    work = tmp / "oras"
    work.mkdir(exist_ok=True)
    (work / "signature.jws").write_bytes(data)
    result = subprocess.run(
        [
            str(oras_binary()),
            "attach",
            "--plain-http",
            "--disable-path-validation",
            "--artifact-type",
            ARTIFACT_TYPE,
            f"{registry.address}/{repository}@{digest}",
            f"signature.jws:{JWS}",
        ],
        cwd=work,
        env={"HOME": str(work), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _attach(
    registry: RegistryProcess, repository: str, digest: str, size: int, data: bytes
) -> None:
    from tests.support.signers.oci import sha256

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256(EMPTY),
            "size": len(EMPTY),
        },
        "layers": [{"mediaType": JWS, "digest": sha256(data), "size": len(data)}],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
        },
    }
    referrer = Artifact(
        json.dumps(manifest).encode(), blobs={sha256(EMPTY): EMPTY, sha256(data): data}
    )
    add_referrer(registry.url, repository, digest, referrer, ARTIFACT_TYPE)


class Stack:
    def __init__(self, pg: Pullguard, digests: dict[str, str], tmp: Path) -> None:
        self.pg = pg
        self.digests = digests
        self.tmp = tmp


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("notation")
    registry = RegistryProcess(tmp / "upstream")
    registry.start()
    pg: Pullguard | None = None
    try:
        ca, stranger = CA(), CA("Stranger Root")
        key, leaf = ca.issue()
        other_key, other_leaf = stranger.issue()
        store = tmp / "truststore" / "x509" / "ca" / "acme"
        store.mkdir(parents=True)
        (store / "root.crt").write_bytes(der(ca.certificate))
        digests = {}
        for seed, name in enumerate(("good", "oras", "stranger", "expired")):
            image = build_image(tmp / name, "v1", random_layers(1, 4096, seed=40 + seed))
            push(image, registry.address, f"notation/{name}")
            media_type = json.loads(image.manifest)["mediaType"]
            payload = target(image.digest, media_type, len(image.manifest))
            signing = Signing(payload=payload)
            signer, chain = key, [leaf, ca.certificate]
            if name == "stranger":
                signer, chain = other_key, [other_leaf, stranger.certificate]
            if name == "expired":
                signing = Signing(
                    payload=payload,
                    signing_time=NOW - timedelta(hours=10),
                    expiry=NOW - timedelta(hours=1),
                )
            data = envelope(JWS, signer, chain, signing)
            if name == "oras":
                _oras_attach(registry, f"notation/{name}", image.digest, data, tmp)
            else:
                _attach(registry, f"notation/{name}", image.digest, len(image.manifest), data)
            digests[name] = image.digest
        rule = {
            "match": "lab/notation/*",
            "signature": {
                "notation": {
                    "trust_store_dir": str(tmp / "truststore"),
                    "trust_stores": ["ca:acme"],
                    "trusted_identities": ["x509.subject: O=Acme, CN=Acme Signer"],
                    "signature_verification": "strict",
                }
            },
        }
        path, config = write_config(tmp, registry.url, policy={"rules": [rule]})
        assert yaml.safe_load(path.read_text())["policy"]["rules"][0] == rule
        pg = Pullguard(path, config)
        pg.start()
        yield Stack(pg, digests, tmp)
    finally:
        if pg is not None:
            pg.stop()
        registry.stop()


@pytest.mark.parametrize("name", ["good", "oras"])
def test_a_good_notation_signature_is_admitted(stack: Stack, name: str) -> None:
    out = stack.tmp / f"out-{name}"
    result = pull(f"{stack.pg.address}/lab/notation/{name}:v1", out, "v1")
    assert result.returncode == 0, result.stderr + stack.pg.log()
    assert layout_manifest_digest(out, "v1") == stack.digests[name]


@pytest.mark.parametrize(
    ("name", "code"),
    [("stranger", "signature.untrusted_certificate"), ("expired", "signature.notation_expired")],
)
def test_a_bad_notation_signature_is_denied(stack: Stack, name: str, code: str) -> None:
    result = pull(f"{stack.pg.address}/lab/notation/{name}:v1", stack.tmp / f"out-{name}", "v1")
    assert result.returncode != 0
    response = stack.pg.get(f"/v2/lab/notation/{name}/manifests/v1")
    assert response.status_code == 403, response.text
    error = response.json()["errors"][0]
    assert error["detail"]["layer"] == "signature"
    assert code in {f["code"] for f in error["detail"]["findings"]}, error
