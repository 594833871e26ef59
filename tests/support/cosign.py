"""cosign signatures for tests: the real cosign binary, and their stored form.

The real signer (end-to-end and service tests)
----------------------------------------------
``cosign_binary()`` finds cosign 2.5 on PATH or at ``.tools/bin/cosign``
(``make system-deps`` installs it there). ``generate_key_pair(dir)`` makes an
ECDSA P-256 key pair (``cosign.key`` encrypted with :data:`COSIGN_PASSWORD`,
``cosign.pub``). ``sign(ref, key, registry)`` runs::

    cosign sign -y --key KEY --tlog-upload=false --allow-http-registry HOST:PORT/REPO@sha256:...

against a plain-http registry on 127.0.0.1. ``--allow-http-registry`` alone
is enough for http (``--allow-insecure-registry`` is for https with a bad
certificate). Every run gets a fresh ``HOME`` (so ``~/.sigstore`` and
``~/.docker`` stay out of the way) and proxies that point at a closed local
port, so cosign cannot reach anything beyond 127.0.0.1 (no Rekor, no TUF).

What cosign stores: in the same repository, an OCI image manifest tagged
``sha256-<hex>.sig`` (see :func:`signature_tag`) with a small config blob and
one layer per signature: media type
``application/vnd.dev.cosign.simplesigning.v1+json``, the blob is the
simple-signing payload (compact JSON, in this key order)::

    {"critical":{"identity":{"docker-reference":"HOST:PORT/REPO"},
                 "image":{"docker-manifest-digest":"sha256:..."},
                 "type":"cosign container image signature"},"optional":null}

and the annotation ``dev.cosignproject.cosign/signature`` is the base64 DER
ECDSA signature over exactly those bytes. Signing again with another key
appends a layer to the same manifest. :func:`read_signature_artifact` reads
it all back with httpx.

In-process helpers (unit tests)
-------------------------------
:func:`simple_signing_payload` and :func:`signature_manifest` build the same
documents without cosign; :func:`read_containers_image_signature` reads
containers/image's file form of a cosign signature (``\\0sigstore-json\\n`` +
JSON ``{mimeType, payload, annotations}``) from the conformance fixtures;
:class:`MemoryStaging` stands in for the staging store in pure domain tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

COSIGN_PASSWORD = "pullguard-test-password"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
#: Where ``make system-deps`` puts cosign on Debian 12.
TOOLS_COSIGN = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "cosign"
#: cosign runs are short; a hung one fails the test instead of the session.
TIMEOUT = 60
CONTAINERS_IMAGE_PREFIX = b"\x00sigstore-json\n"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def cosign_binary() -> Path | None:
    """cosign on PATH, else ``.tools/bin/cosign``, else None."""
    found = shutil.which("cosign")
    if found:
        return Path(found)
    return TOOLS_COSIGN if os.access(TOOLS_COSIGN, os.X_OK) else None


def _environment(home: Path) -> dict[str, str]:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens, nothing leaves
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "COSIGN_PASSWORD": COSIGN_PASSWORD,
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "NO_PROXY": "127.0.0.1,localhost",
        "TUF_ROOT": str(home / ".sigstore" / "root"),
    }


def _run_cosign(arguments: Sequence[str], cwd: Path | None = None) -> str:
    binary = cosign_binary()
    if binary is None:
        raise RuntimeError("cosign not found: run `make system-deps`")
    with tempfile.TemporaryDirectory(prefix="cosign-home-") as home:
        result = subprocess.run(
            [str(binary), *arguments],
            cwd=cwd,
            env=_environment(Path(home)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"cosign {arguments[0]} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return result.stdout + result.stderr


def generate_key_pair(directory: Path) -> tuple[Path, Path]:
    """``cosign generate-key-pair`` in ``directory``; returns (cosign.key, cosign.pub)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run_cosign(["generate-key-pair"], cwd=directory)
    return directory / "cosign.key", directory / "cosign.pub"


def registry_host(registry: str) -> str:
    """``HOST:PORT`` of a registry given as a base URL or as ``HOST:PORT``."""
    return httpx.URL(registry).netloc.decode() if "://" in registry else registry


def sign(image_ref: str, key_path: Path, registry: str | None = None) -> str:
    """Sign ``image_ref`` with the real cosign, offline; returns the reference signed.

    ``image_ref`` is ``REPO@sha256:...`` with ``registry`` (a base URL such as
    ``http://127.0.0.1:5001`` or ``127.0.0.1:5001``), or ``HOST:PORT/REPO@sha256:...``
    without. The signature is pushed to the registry as the
    ``sha256-<hex>.sig`` tag of the same repository.
    """
    reference = f"{registry_host(registry)}/{image_ref}" if registry else image_ref
    if "@sha256:" not in reference:
        raise ValueError(f"sign by digest, got {reference!r}")
    _run_cosign(
        [
            "sign",
            "-y",
            "--key",
            str(key_path),
            "--tlog-upload=false",
            "--allow-http-registry",
            reference,
        ]
    )
    return reference


def signature_tag(digest: str) -> str:
    """The tag cosign stores a digest's signatures under: ``sha256-<hex>.sig``."""
    algorithm, encoded = digest.split(":", 1)
    return f"{algorithm}-{encoded}.sig"


@dataclass(frozen=True)
class SignatureArtifact:
    """A ``.sig`` manifest and its blobs, exactly as the registry served them."""

    tag: str
    manifest: bytes
    media_type: str
    descriptors: list[dict[str, object]]  # config first, then layers, as stated
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def read_signature_artifact(
    base_url: str, repository: str, digest: str
) -> SignatureArtifact | None:
    """GET the ``.sig`` manifest of ``digest`` and every blob it lists; None when absent."""
    tag = signature_tag(digest)
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        response = client.get(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"},
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        manifest = response.content
        document = json.loads(manifest)
        descriptors = [document["config"], *document["layers"]]
        blobs: dict[str, bytes] = {}
        for descriptor in descriptors:
            blob = client.get(
                f"/v2/{repository}/blobs/{descriptor['digest']}", follow_redirects=True
            )
            blob.raise_for_status()
            assert sha256(blob.content) == descriptor["digest"]
            blobs[str(descriptor["digest"])] = blob.content
    return SignatureArtifact(
        tag, manifest, response.headers.get("content-type", ""), descriptors, blobs
    )


# --- in-process helpers -----------------------------------------------------


def simple_signing_payload(
    docker_reference: str, digest: str, optional: Mapping[str, object] | None = None
) -> bytes:
    """A payload in cosign's exact byte form (compact JSON, keys in cosign's order)."""
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": dict(optional) if optional is not None else None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SignatureLayer:
    """One signature: the payload blob and the layer annotations."""

    payload: bytes
    annotations: dict[str, str]
    media_type: str = SIMPLESIGNING

    @classmethod
    def signed(cls, payload: bytes, signature: bytes) -> SignatureLayer:
        return cls(payload, {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()})


def signature_manifest(layers: Sequence[SignatureLayer]) -> tuple[bytes, dict[str, bytes]]:
    """A ``.sig`` manifest as cosign writes it; returns (manifest bytes, {digest: blob})."""
    config = json.dumps(
        {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    blobs = {sha256(config): config}
    descriptors = []
    for layer in layers:
        blobs[sha256(layer.payload)] = layer.payload
        descriptors.append(
            {
                "mediaType": layer.media_type,
                "size": len(layer.payload),
                "digest": sha256(layer.payload),
                "annotations": layer.annotations,
            }
        )
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": sha256(config),
        },
        "layers": descriptors,
    }
    return json.dumps(document, separators=(",", ":")).encode(), blobs


def read_containers_image_signature(path: Path) -> SignatureLayer:
    """Read a ``signature-N`` file of containers/image's fixtures.

    The fixtures come from a git checkout where symbolic links may be stored
    as small text files naming their target (``../dir-img-cosign-valid/signature-1``);
    such a file is followed.
    """
    data = resolve_git_link(path).read_bytes()
    assert data.startswith(CONTAINERS_IMAGE_PREFIX), path
    document = json.loads(data[len(CONTAINERS_IMAGE_PREFIX) :])
    return SignatureLayer(
        payload=base64.b64decode(document["payload"], validate=True),
        annotations=dict(document["annotations"]),
        media_type=document["mimeType"],
    )


def resolve_git_link(path: Path, hops: int = 4) -> Path:
    """``path``, or the file it names when it is a git symbolic link stored as text."""
    for _ in range(hops):
        if path.stat().st_size > 200:
            return path
        text = path.read_bytes()
        if not text.startswith(b"../") or b"\n" in text.strip() or b"\0" in text:
            return path
        target = (path.parent / text.decode().strip()).resolve()
        if not target.exists():
            raise FileNotFoundError(f"{path} links to {target}, which is absent")
        path = target
    return path


class MemoryStaging:
    """``read_staged`` for pure domain tests: content by staging key."""

    def __init__(self, objects: Mapping[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})
        self.reads: list[tuple[str, int]] = []

    def put(self, data: bytes, key: str | None = None) -> str:
        key = key or sha256(data)
        self.objects[key] = data
        return key

    def __call__(self, key: str, limit: int) -> bytes:
        self.reads.append((key, limit))
        if key not in self.objects:
            raise KeyError(f"{key} is not staged")
        return self.objects[key][: limit + 1]


class LocalSigner:
    """A key pair made in-process with ``cryptography``, signing as cosign does.

    ``kind`` is ``ecdsa`` (P-256, SHA-256, DER: cosign's default), ``rsa``
    (2048-bit, PKCS #1 v1.5, SHA-256) or ``ed25519``.
    """

    def __init__(self, name: str = "local.pub", kind: str = "ecdsa") -> None:
        self.name = name
        self.kind = kind
        self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if kind == "ecdsa":
            self._key = ec.generate_private_key(ec.SECP256R1())
        elif kind == "rsa":
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "ed25519":
            self._key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(kind)

    @property
    def pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, payload: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return self._key.sign(payload)

    def layer(self, payload: bytes) -> SignatureLayer:
        """A signature layer over ``payload``, signed by this key."""
        return SignatureLayer.signed(payload, self.sign(payload))
