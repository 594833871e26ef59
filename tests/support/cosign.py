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

More real cosign (2.5, offline): :func:`attest` (a ``.att`` tag, or with
``new_bundle`` a sigstore bundle referrer plus the fallback tag
``sha256-<hex>``), :func:`sign` with ``referrer=True`` (cosign's experimental
``--registry-referrers-mode=oci-1-1``: the ``.sig`` form as an OCI 1.1
referrer); :func:`read_manifest_artifact` and :func:`read_referrers` read
them back.

Keyless and bundles without a network
-------------------------------------
:func:`make_trust` builds the domain's ``Trust``; :class:`OfflineSigstore` is
a Fulcio-like CA (root + intermediate, short-lived code-signing leaves with
the OIDC issuer extensions) and a Rekor key writing real SETs over
hashedrekord bodies, with its ``trusted_root.json`` (no CT log, so no SCTs
are expected). :func:`statement`, :func:`dsse_envelope`,
:func:`dsse_key_bundle`, :func:`message_key_bundle` and
:func:`referrer_manifest` build cosign v3's stored forms (DSSE in-toto
statement with predicate ``https://sigstore.dev/cosign/sign/v1`` in a
bundle, in a referrer manifest whose ``subject`` is the image).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from pullguard.services.signature.trust import Trust
from pullguard.services.signature.trustroot import TrustRoot, parse_trust_root
from pullguard.services.signature.verifier import Artifact

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


def _run_cosign(
    arguments: Sequence[str], cwd: Path | None = None, extra_env: Mapping[str, str] | None = None
) -> str:
    binary = cosign_binary()
    if binary is None:
        raise RuntimeError("cosign not found: run `make system-deps`")
    with tempfile.TemporaryDirectory(prefix="cosign-home-") as home:
        result = subprocess.run(
            [str(binary), *arguments],
            cwd=cwd,
            env={**_environment(Path(home)), **(extra_env or {})},
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


def sign(
    image_ref: str, key_path: Path, registry: str | None = None, referrer: bool = False
) -> str:
    """Sign ``image_ref`` with the real cosign, offline; returns the reference signed.

    ``image_ref`` is ``REPO@sha256:...`` with ``registry`` (a base URL such as
    ``http://127.0.0.1:5001`` or ``127.0.0.1:5001``), or ``HOST:PORT/REPO@sha256:...``
    without. The signature is pushed to the registry as the
    ``sha256-<hex>.sig`` tag of the same repository; with ``referrer`` it is
    pushed instead as an OCI 1.1 referrer (``--registry-referrers-mode=oci-1-1``,
    experimental in cosign 2.5) and the referrer manifest's digest is returned.
    """
    reference = _reference(image_ref, registry)
    arguments = ["sign", "-y", "--key", str(key_path), "--tlog-upload=false"]
    if referrer:
        arguments.append("--registry-referrers-mode=oci-1-1")
    output = _run_cosign(
        [*arguments, "--allow-http-registry", reference],
        extra_env=EXPERIMENTAL if referrer else None,
    )
    if referrer:
        found = re.search(r"to \[[^\]]*@(sha256:[0-9a-f]{64})\]", output)
        if found is None:
            raise RuntimeError(f"cosign did not say where the referrer went: {output[-500:]}")
        return found.group(1)
    return reference


def attest(
    image_ref: str,
    key_path: Path,
    predicate: Mapping[str, object],
    predicate_type: str,
    registry: str | None = None,
    new_bundle: bool = False,
) -> str:
    """``cosign attest`` offline: a ``.att`` tag, or with ``new_bundle`` a bundle referrer.

    ``predicate_type`` is cosign's ``--type`` (``slsaprovenance``,
    ``slsaprovenance1``, ``custom``...). Returns the reference attested.
    """
    reference = _reference(image_ref, registry)
    with tempfile.TemporaryDirectory(prefix="predicate-") as folder:
        path = Path(folder) / "predicate.json"
        path.write_text(json.dumps(predicate))
        arguments = ["attest", "-y", "--key", str(key_path), "--type", predicate_type]
        arguments += ["--predicate", str(path), "--tlog-upload=false", "--allow-http-registry"]
        if new_bundle:
            arguments.append("--new-bundle-format")
        _run_cosign([*arguments, reference])
    return reference


#: cosign 2.5 hides the referrers mode behind this switch.
EXPERIMENTAL = {"COSIGN_EXPERIMENTAL": "1"}


def _reference(image_ref: str, registry: str | None) -> str:
    reference = f"{registry_host(registry)}/{image_ref}" if registry else image_ref
    if "@sha256:" not in reference:
        raise ValueError(f"sign by digest, got {reference!r}")
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
    base_url: str, repository: str, digest: str, suffix: str = ".sig"
) -> SignatureArtifact | None:
    """GET the ``.sig`` (or ``.att``) manifest of ``digest`` and every blob it lists."""
    tag = signature_tag(digest)[: -len(".sig")] + suffix
    return read_manifest_artifact(base_url, repository, tag)


def read_manifest_artifact(
    base_url: str, repository: str, reference: str, tag: str | None = None
) -> SignatureArtifact | None:
    """GET a manifest by tag or digest and every blob it lists; None when absent."""
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        response = client.get(
            f"/v2/{repository}/manifests/{reference}",
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
        tag or reference, manifest, response.headers.get("content-type", ""), descriptors, blobs
    )


def read_referrers(base_url: str, repository: str, digest: str) -> list[SignatureArtifact]:
    """The referrers of ``digest`` listed in its fallback tag ``sha256-<hex>`` (an index)."""
    tag = signature_tag(digest)[: -len(".sig")]
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        response = client.get(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        listed = [m["digest"] for m in json.loads(response.content)["manifests"]]
    found = [read_manifest_artifact(base_url, repository, d) for d in listed]
    return [artifact for artifact in found if artifact is not None]


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


def staged_signature_image(
    layers: Sequence[SignatureLayer], location: str
) -> tuple[MemoryStaging, list[Artifact]]:
    """``layers`` as a cosign signature image staged in memory, and the artifact naming it."""
    staging = MemoryStaging()
    manifest, blobs = signature_manifest(layers)
    for blob in blobs.values():
        staging.put(blob)
    return staging, [Artifact(location, staging.put(manifest))]


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

    def sign_digest(self, digest: bytes) -> bytes:
        """A hashedrekord-style signature over a message whose SHA-256 is ``digest``."""
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        raise ValueError("Ed25519 cannot sign a digest")


# --- trust for domain tests, and an offline Fulcio + Rekor ---------------------


def make_trust(
    keys: Sequence[object] = (),
    keyless: Sequence[tuple[str, str, str]] = (),
    root: object = None,
    rekor_required: bool = False,
    now: datetime | None = None,
    bundles: object = None,
) -> Trust:
    """A :class:`Trust` for domain tests: keys (TrustedKey), keyless (issuer, subject, regex)."""
    from pullguard.services.signature.identity import load_signers

    return Trust(
        keys=tuple(keys),  # type: ignore[arg-type]
        keyless=load_signers(keyless),
        root=root,  # type: ignore[arg-type]
        rekor_required=rekor_required,
        now=now or datetime.now(UTC),
        bundles=bundles,  # type: ignore[arg-type]
    )


def trusting(*signers: LocalSigner) -> Trust:
    """A :class:`Trust` in these signers' public keys (make_trust of their keys)."""
    from pullguard.services.signature.keys import load_trusted_keys

    return make_trust(load_trusted_keys((s.name, s.pem) for s in signers))


def production_root() -> TrustRoot:
    from pullguard.services.signature.sigstore_adapter import production_trust_root

    return parse_trust_root(production_trust_root())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem_of_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


#: Fulcio's OIDC issuer extensions (v2: DER UTF8String; v1: raw bytes).
ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")


def _utf8_der(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


class OfflineSigstore:
    """A Fulcio-like CA (root + intermediate) and a Rekor key, made in-process.

    It issues short-lived code-signing certificates with an OIDC issuer
    extension, and writes Rekor SETs (``dev.sigstore.cosign/bundle``) over
    hashedrekord/intoto bodies, exactly as the public-good instance does, so
    legacy keyless signatures can be made for any digest offline.
    """

    def __init__(self, name: str = "test-fulcio", start: datetime | None = None) -> None:
        self.name = name
        self.start = start or datetime(2024, 1, 1, tzinfo=UTC)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = self._ca_cert(self.root_key, self.root_key, f"{name}-root", None)
        self.intermediate_key = ec.generate_private_key(ec.SECP384R1())
        self.intermediate = self._ca_cert(
            self.intermediate_key, self.root_key, f"{name}-intermediate", self.root
        )
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.uri = f"https://{name}.example"

    def _ca_cert(
        self,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        common_name: str,
        issuer: x509.Certificate | None,
    ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start)
            .not_valid_after(self.start + timedelta(days=3650))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0),
                critical=True,
            )
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        )
        return builder.sign(signer, hashes.SHA384())

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(spki_der(self.rekor_key.public_key())).digest()

    def leaf(
        self,
        subject: str,
        issuer: str | None,
        not_before: datetime,
        minutes: int = 10,
        issuer_v1: bool = True,
        issuer_v2: bool = True,
        code_signing: bool = True,
        issuer_v1_value: str | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A Fulcio-style leaf: empty subject, one SAN (email or URI), issuer extensions."""
        key = ec.generate_private_key(ec.SECP256R1())
        san: x509.GeneralName = (
            x509.RFC822Name(subject)
            if "@" in subject and "://" not in subject
            else x509.UniformResourceIdentifier(subject)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(minutes=minutes))
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.ExtendedKeyUsageOID.CODE_SIGNING
                        if code_signing
                        else x509.ExtendedKeyUsageOID.SERVER_AUTH
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.intermediate_key.public_key()
                ),
                critical=False,
            )
        )
        if issuer is not None:
            if issuer_v2:
                builder = builder.add_extension(
                    x509.UnrecognizedExtension(ISSUER_V2_OID, _utf8_der(issuer)), critical=False
                )
            if issuer_v1:
                builder = builder.add_extension(
                    x509.UnrecognizedExtension(ISSUER_V1_OID, (issuer_v1_value or issuer).encode()),
                    critical=False,
                )
        return key, builder.sign(self.intermediate_key, hashes.SHA384())

    def trusted_root(
        self, ca_start: datetime | None = None, ca_end: datetime | None = None, tlog: bool = True
    ) -> bytes:
        """A trusted_root.json naming this CA (and Rekor key)."""
        window: dict[str, str] = {"start": _rfc3339(ca_start or self.start)}
        if ca_end is not None:
            window["end"] = _rfc3339(ca_end)
        document = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self.tlog_entry()] if tlog else [],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "test", "commonName": self.name},
                    "uri": self.uri,
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(_der(self.intermediate))},
                            {"rawBytes": _b64(_der(self.root))},
                        ]
                    },
                    "validFor": window,
                }
            ],
            "ctlogs": [],
            "timestampAuthorities": [],
        }
        return json.dumps(document).encode()

    def tlog_entry(self) -> dict[str, object]:
        return {
            "baseUrl": f"https://rekor.{self.name}.example",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": _b64(spki_der(self.rekor_key.public_key())),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": _rfc3339(self.start)},
            },
            "logId": {"keyId": _b64(self.log_id)},
        }

    def chain_pem(self) -> str:
        return pem_of_cert(self.intermediate) + pem_of_cert(self.root)

    def promise(
        self,
        body: Mapping[str, object],
        integrated_time: int,
        log_index: int = 7,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        log_id: bytes | None = None,
    ) -> str:
        """The ``dev.sigstore.cosign/bundle`` annotation for ``body``, with a valid SET."""
        body_text = _b64(json.dumps(body, separators=(",", ":")).encode())
        payload = {
            "body": body_text,
            "integratedTime": integrated_time,
            "logIndex": log_index,
            "logID": (log_id or self.log_id).hex(),
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        set_signature = (signing_key or self.rekor_key).sign(canonical, ec.ECDSA(hashes.SHA256()))
        return json.dumps({"SignedEntryTimestamp": _b64(set_signature), "Payload": payload})

    def keyless_layer(
        self,
        payload: bytes,
        subject: str,
        issuer: str | None,
        signed_at: datetime,
        integrated_at: datetime | None = None,
        with_promise: bool = True,
        **leaf_options: object,
    ) -> SignatureLayer:
        """A keyless ``.sig`` layer: certificate, chain, signature and SET annotations."""
        key, cert = self.leaf(subject, issuer, signed_at, **leaf_options)  # type: ignore[arg-type]
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        annotations = {
            SIGNATURE_ANNOTATION: _b64(signature),
            "dev.sigstore.cosign/certificate": pem_of_cert(cert),
            "dev.sigstore.cosign/chain": self.chain_pem(),
        }
        if with_promise:
            body = hashedrekord_body(payload, signature, pem_of_cert(cert).encode())
            when = integrated_at or signed_at + timedelta(seconds=30)
            annotations["dev.sigstore.cosign/bundle"] = self.promise(body, int(when.timestamp()))
        return SignatureLayer(payload, annotations)


def hashedrekord_body(payload: bytes, signature: bytes, verifier_pem: bytes) -> dict[str, object]:
    """A Rekor hashedrekord 0.0.1 entry body, as cosign uploads it."""
    return {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {
                "content": _b64(signature),
                "publicKey": {"content": _b64(verifier_pem)},
            },
        },
    }


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- DSSE statements, sigstore bundles and referrer manifests ---------------------

IN_TOTO = "application/vnd.in-toto+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
EMPTY_CONFIG = b"{}"


def statement(
    digest: str,
    predicate_type: str = COSIGN_SIGN_PREDICATE,
    predicate: object = None,
    name: str = "",
    extra_digests: Mapping[str, str] | None = None,
    subjects: Sequence[Mapping[str, object]] | None = None,
) -> bytes:
    """An in-toto v1 statement about ``digest`` (``sha256:<hex>``), cosign v3 style."""
    algorithm, hexdigest = digest.split(":", 1)
    subject: dict[str, object] = {"digest": {algorithm: hexdigest, **(extra_digests or {})}}
    if name:
        subject["name"] = name
    document = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": list(subjects) if subjects is not None else [subject],
        "predicateType": predicate_type,
        "predicate": predicate if predicate is not None else {},
    }
    return json.dumps(document).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def dsse_envelope(
    signers: Sequence[LocalSigner], payload: bytes, payload_type: str = IN_TOTO
) -> dict[str, object]:
    """A DSSE envelope over ``payload`` with one signature per signer."""
    return {
        "payloadType": payload_type,
        "payload": _b64(payload),
        "signatures": [
            {"keyid": "", "sig": _b64(s.sign(pae(payload_type, payload)))} for s in signers
        ],
    }


def attestation_layer(
    signer: LocalSigner, payload: bytes, predicate_type_annotation: str | None = None
) -> SignatureLayer:
    """A cosign attestation layer: ``signer``'s DSSE envelope over the statement
    ``payload``, with cosign's annotations (``predicateType`` only when given:
    it is unsigned, so tests set it to lie)."""
    annotations = {"dev.cosignproject.cosign/signature": ""}
    if predicate_type_annotation is not None:
        annotations["predicateType"] = predicate_type_annotation
    envelope = dsse_envelope([signer], payload)
    return SignatureLayer(json.dumps(envelope).encode(), annotations, DSSE_ENVELOPE)


def key_bundle(
    content: Mapping[str, object],
    tlog_entries: Sequence[object] = (),
    media_type: str = BUNDLE_V03,
    timestamps: Sequence[object] = (),
) -> bytes:
    """A sigstore bundle signed with a key (publicKey hint), as cosign writes it."""
    material: dict[str, object] = {
        "publicKey": {"hint": "test"},
        "tlogEntries": list(tlog_entries),
    }
    if timestamps:
        material["timestampVerificationData"] = {"rfc3161Timestamps": list(timestamps)}
    return json.dumps(
        {"mediaType": media_type, "verificationMaterial": material, **content}
    ).encode()


def dsse_key_bundle(signer: LocalSigner, payload: bytes, **options: object) -> bytes:
    return key_bundle({"dsseEnvelope": dsse_envelope([signer], payload)}, **options)  # type: ignore[arg-type]


def message_key_bundle(
    signer: LocalSigner, digest: str, message_digest: str | None = None
) -> bytes:
    raw = bytes.fromhex(digest.split(":", 1)[1])
    signature: dict[str, object] = {"signature": _b64(signer.sign_digest(raw))}
    shown = bytes.fromhex((message_digest or digest).split(":", 1)[1])
    signature["messageDigest"] = {"algorithm": "SHA2_256", "digest": _b64(shown)}
    return key_bundle({"messageSignature": signature})


def referrer_manifest(
    layers: Sequence[tuple[bytes, str, Mapping[str, str]]],
    subject: str,
    artifact_type: str = BUNDLE_V03,
    annotations: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """An OCI 1.1 referrer of ``subject`` holding ``layers`` (blob, media type, annotations)."""
    blobs = {sha256(EMPTY_CONFIG): EMPTY_CONFIG}
    descriptors = []
    for blob, media_type, layer_annotations in layers:
        blobs[sha256(blob)] = blob
        descriptor: dict[str, object] = {
            "mediaType": media_type,
            "digest": sha256(blob),
            "size": len(blob),
        }
        if layer_annotations:
            descriptor["annotations"] = dict(layer_annotations)
        descriptors.append(descriptor)
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256(EMPTY_CONFIG),
            "size": 2,
        },
        "layers": descriptors,
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1000},
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return json.dumps(document).encode(), blobs
